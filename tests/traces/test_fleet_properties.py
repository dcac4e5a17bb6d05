"""Property tests: every fleet reader (and detect) on random, truncated and corrupted input.

The contract (docs/formats.md, "Bad input"): a reader returns correct rows or raises a
FleetlabError subclass; never a polars traceback, never silently wrong rows. A cut last
line is an error, except when the cut falls inside its last field and the line still
parses (the file then looks complete; fleetlab cannot tell ``...,1`` from ``...,10``).
"""

from __future__ import annotations

import contextlib
import gzip
import shutil
import tarfile
from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

import polars as pl
import pytest
from fleet_fixtures import samples, servegen_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetlab import traces
from fleetlab.errors import FleetlabError, InputFormatError, UnknownFormatError
from fleetlab.traces._readers_fleet import FORMATS as FLEET_FORMATS

SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def fleet_samples(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    return samples(shared_data, tmp_path_factory.mktemp("samples"))


#: formats whose last field may legitimately be empty (model of a CPU node, a deletion
#: time after the trace end, an unpublished plan_mem, an unused percentile)
EMPTY_LAST_FIELD_OK = {
    "alibaba-2017-batch-task",
    "alibaba-gpu-2023-pods",
    "alibaba-gpu-2023-nodes",
    "alibaba-gpu-2025-dlrm",
    "alibaba-2018-batch-task",
    "alibaba-2018-batch-instance",
    "azure-functions-2019-durations",
}


def _rows(frame: pl.DataFrame) -> Counter[tuple[object, ...]]:
    # floats compare to 1e-9 relative: polars may divide by multiplying by the reciprocal
    def cell(v: object) -> str:
        return f"{v:.9g}" if isinstance(v, float) else str(v)

    return Counter(tuple(cell(v) for v in row) for row in frame.iter_rows())


def _single_files(fleet_samples: dict[str, Path]) -> list[str]:
    return [name for name, p in fleet_samples.items() if p.is_file()]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".csv.gz", ".tar.gz", ".parquet", ""])
@SETTINGS
@given(data=st.binary(max_size=400))
def test_random_bytes_give_only_documented_errors(suffix: str, data: bytes) -> None:
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / f"random{suffix}"
        path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
        try:
            frame = traces.load(path)
        except (InputFormatError, UnknownFormatError):
            return
        assert isinstance(frame, pl.DataFrame)


FLEET_FORMAT_NAMES = [f.name for f in FLEET_FORMATS]


@pytest.mark.parametrize("name", FLEET_FORMAT_NAMES)
@settings(max_examples=12, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.text(alphabet='0123456789,.:-ej_x {}[]"\n\r', max_size=300).map(str.encode),
    ),
    gz=st.booleans(),
)
def test_every_fleet_reader_on_random_input(name: str, data: bytes, gz: bool) -> None:
    """Forced past detection, each reader still only raises the documented errors."""
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / ("input.csv.gz" if gz else "input.csv")
        path.write_bytes(gzip.compress(data) if gz else data)
        try:
            frame = traces.load(path, format=name)
        except (InputFormatError, UnknownFormatError):
            return
        assert isinstance(frame, pl.DataFrame)
        assert set(traces.TABLES[traces.format_named(name).table].required) <= set(frame.columns)


@SETTINGS
@given(
    text=st.lists(
        st.text(alphabet='0123456789,.-:ej_ x\n"{}[]', max_size=40), min_size=1, max_size=8
    ),
    header=st.sampled_from(
        [
            "TIMESTAMP,ContextTokens,GeneratedTokens",
            "app,func,end_timestamp,duration",
            "arrival_s,prompt_tokens,output_tokens",
            "sn,cpu_milli,memory_mib,gpu,model",
            "gpu_model,gpu_capacity_num,cpu_num,node_name",
            "",
        ]
    ),
)
def test_csv_like_garbage_under_known_headers(text: list[str], header: str) -> None:
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "garbage.csv"
        path.write_text(header + "\n" + "\n".join(text))
        with contextlib.suppress(InputFormatError, UnknownFormatError):
            traces.load(path)


def _check_truncation(name: str, source: Path, cut: int) -> None:
    data = source.read_bytes()
    cut = min(cut, len(data) - 1)
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / source.name  # alone: no sibling files joined in either read
        path.write_bytes(data)
        full = traces.load(path, format=name)
        path.write_bytes(data[:cut])
        try:
            got = traces.load(path, format=name)
        except FleetlabError as exc:
            assert isinstance(exc, (InputFormatError, UnknownFormatError))
            return
    extra = _rows(got) - _rows(full)
    if not extra:
        return
    # only the cut last line may differ, and only when the cut is inside its last field
    kept = data[:cut]
    last = kept[kept.rfind(b"\n") + 1 :]
    complete_line = data[kept.rfind(b"\n") + 1 :].split(b"\n")[0]
    assert last and last.count(b",") == complete_line.count(b","), (name, cut, extra)
    # a cut right after a separator reads as an empty last field: only where the format
    # allows that field to be empty (then the file is indistinguishable from a valid one)
    assert not last.endswith(b",") or name in EMPTY_LAST_FIELD_OK, (name, cut)
    distinct_lines = {tuple(r) for r in extra}
    assert len(distinct_lines) <= 1 or name == "azure-vm-cpu-wide", (name, extra)


@pytest.mark.parametrize(
    "name",
    [
        "azure-llm",
        "mooncake",
        "azure-functions-2021",
        "azure-functions-2019-durations",
        "azure-vm-cpu-wide",
        "alibaba-2018-spar-tasks",
        "alibaba-2018-spar-instances",
        "alibaba-2017-batch-task",
        "alibaba-gpu-2023-pods",
        "alibaba-gpu-2023-nodes",
        "alibaba-gpu-2025-dlrm",
        "alibaba-spot-gpu-nodes",
        "azure-vmtable",
        "azure-vm-cpu-readings",
        "alibaba-2018-batch-task",
        "alibaba-2018-batch-instance",
        "requests-csv",
        "flows-jsonl",
    ],
)
@SETTINGS
@given(fraction=st.floats(min_value=0.0, max_value=1.0))
def test_truncated_files_never_give_wrong_rows(
    fleet_samples: dict[str, Path], name: str, fraction: float
) -> None:
    source = fleet_samples[name]
    _check_truncation(name, source, int(fraction * source.stat().st_size))


@SETTINGS
@given(fraction=st.floats(min_value=0.0, max_value=0.999))
def test_truncated_functions_2019_day(fleet_samples: dict[str, Path], fraction: float) -> None:
    invocations = fleet_samples["azure-functions-2019"]
    _check_truncation(
        "azure-functions-2019", invocations, int(fraction * invocations.stat().st_size)
    )


@SETTINGS
@given(fraction=st.floats(min_value=0.0, max_value=0.999))
def test_truncated_gzip_is_an_error(fleet_samples: dict[str, Path], fraction: float) -> None:
    source = fleet_samples["alibaba-2018-spar-tasks"]
    packed = gzip.compress(source.read_bytes())
    with TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv.gz"
        path.write_bytes(packed[: int(fraction * len(packed))])
        with pytest.raises((InputFormatError, UnknownFormatError)):
            traces.load(path, format="alibaba-2018-spar-tasks")


@SETTINGS
@given(fraction=st.floats(min_value=0.0, max_value=0.999))
def test_truncated_servegen_archive_is_an_error(tmp_path: Path, fraction: float) -> None:
    with TemporaryDirectory() as tmp:
        root = servegen_folder(Path(tmp) / "sg")
        archive = Path(tmp) / "m-test.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(root / "data", arcname="data")
        full = traces.load(archive)
        assert full.height == 4
        data = archive.read_bytes()
        archive.write_bytes(data[: int(fraction * len(data))])
        with pytest.raises(FleetlabError):
            traces.load(archive, format="servegen")
        shutil.rmtree(root)


@pytest.mark.parametrize(
    ("name", "line", "column", "field"),
    [
        ("azure-llm", 17, 1, "ContextTokens"),
        ("azure-llm", 5, 0, "TIMESTAMP"),
        ("azure-functions-2021", 9, 3, "duration"),
        ("azure-functions-2019-durations", 4, 3, "Average"),
        ("azure-vm-cpu-wide", 7, 4, None),
        ("alibaba-2018-spar-tasks", 17, 4, "plan_cpu"),
        ("alibaba-2018-spar-instances", 3, 4, "duration_s"),
        ("alibaba-2017-batch-task", 11, 0, "task_create_time"),
        ("alibaba-gpu-2023-pods", 6, 1, "cpu_milli"),
        ("alibaba-gpu-2023-nodes", 6, 3, "gpu"),
        ("alibaba-gpu-2025-dlrm", 8, 3, "cpu_request"),
        ("alibaba-spot-gpu-nodes", 2, 1, "gpu_capacity_num"),
        ("azure-vmtable", 2, 3, "vmcreated"),
        ("azure-vm-cpu-readings", 3, 4, "avgcpu"),
        ("alibaba-2018-batch-task", 2, 1, "instance_num"),
        ("requests-csv", 3, 1, "prompt_tokens"),
    ],
)
def test_a_bad_value_is_named_by_line_and_field(
    fleet_samples: dict[str, Path],
    tmp_path: Path,
    name: str,
    line: int,
    column: int,
    field: str | None,
) -> None:
    source = fleet_samples[name]
    lines = source.read_bytes().split(b"\n")
    cells = lines[line - 1].split(b",")
    cells[column] = b"abc"
    lines[line - 1] = b",".join(cells)
    path = tmp_path / source.name
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(InputFormatError) as info:
        traces.load(path, format=name)
    err = info.value
    assert err.row == line, str(err)
    assert err.found == "abc"
    if field is not None:
        assert err.field == field
    assert str(path) in str(err) and "expected" in str(err)
    # inspect and convert surface the same error, and convert leaves no file behind
    with pytest.raises(InputFormatError):
        traces.inspect(path, format=name)
    with pytest.raises(InputFormatError):
        traces.convert(path, tmp_path / "out.parquet", format=name)
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*tmp*"))


def test_a_short_line_is_named(fleet_samples: dict[str, Path], tmp_path: Path) -> None:
    source = fleet_samples["azure-llm"]
    lines = source.read_text().split("\n")
    lines[16] = lines[16].rsplit(",", 1)[0]
    path = tmp_path / "short.csv"
    path.write_text("\n".join(lines))
    with pytest.raises(InputFormatError) as info:
        traces.load(path)
    assert info.value.row == 17 and "fields" in str(info.value)


def test_bad_mooncake_line(fleet_samples: dict[str, Path], tmp_path: Path) -> None:
    lines = fleet_samples["mooncake"].read_text().splitlines()
    lines[4] = lines[4].replace('"input_length": ', '"input_length": "many" ,"x": ')
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputFormatError) as info:
        traces.load(path)
    assert (info.value.row, info.value.field, info.value.found) == (5, "input_length", "many")


def test_bad_servegen_pdf_names_member_and_window(tmp_path: Path) -> None:
    root = servegen_folder(tmp_path / "sg")
    dataset = next(root.rglob("chunk-1-dataset.json"))
    dataset.write_text(dataset.read_text().replace("{5: 1.0}", "{5: lots}"))
    with pytest.raises(InputFormatError) as info:
        traces.load(root)
    assert "chunk-1-dataset.json" in str(info.value)
    assert info.value.field == "0.output_tokens"


@pytest.mark.parametrize("pdf", ["{5 6: 1.0}", "{5: 1.0,}", "5: 1.0", "{5: 1.0}}", "{5:: 1}"])
def test_malformed_servegen_pdfs_are_errors(tmp_path: Path, pdf: str) -> None:
    root = servegen_folder(tmp_path / "sg")
    dataset = next(root.rglob("chunk-1-dataset.json"))
    dataset.write_text(dataset.read_text().replace("{5: 1.0}", pdf))
    with pytest.raises(InputFormatError) as info:
        traces.load(root)
    assert info.value.field == "0.output_tokens" and info.value.found == pdf


def test_bad_servegen_trace_line(tmp_path: Path) -> None:
    root = servegen_folder(tmp_path / "sg")
    trace = next(root.rglob("chunk-1-trace.csv"))
    trace.write_text(trace.read_text().replace("1200,0.25", "1200,fast"))
    with pytest.raises(InputFormatError) as info:
        traces.load(root)
    assert info.value.row == 3 and info.value.field == "rate"


def test_unknown_and_empty_files(tmp_path: Path) -> None:
    odd = tmp_path / "notes.txt"
    odd.write_text("hello\nworld\n")
    with pytest.raises(UnknownFormatError) as info:
        traces.detect(odd)
    assert "azure-llm" in str(info.value) and "servegen" in str(info.value)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputFormatError):
        traces.load(empty)
