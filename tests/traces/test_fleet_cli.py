"""`fleetlab traces inspect|convert --json` on every real fleet file of the mirror."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fleetlab import traces
from fleetlab.cli import app
from fleetlab.errors import InputFormatError, UnknownFormatError

MIRROR = Path(
    os.environ.get("FLEETLAB_MIRROR", Path(__file__).resolve().parents[3] / "shared" / "data")
)

#: dataset folder -> the format every data file in it has (None: no supported format)
FLEET_DATASETS = (
    "azure-llm-inference-2023",
    "mooncake-kimi-2025",
    "servegen-alibaba-bailian-2025",
    "azure-functions-2019-sample",
    "azure-functions-2021-sample",
    "azure-vm-2017-cpu-100vms",
    "alibaba-2018-batch-spar-sample",
    "alibaba-2017-batch-task",
    "alibaba-gpu-2023-openb",
    "alibaba-gpu-2025-dlrm",
    "alibaba-spot-gpu-2026",
    "vidur-profiles/processed_traces",
)
#: files that are no trace (they only decorate another file): a clean "unknown format"
NOT_TRACES = {"memory.csv", "memory.csv.gz"}
#: big inputs (3M rows, 27-100 MB of JSON PDFs) run in the slow set
SLOW = {
    "sample_instances.csv.gz",
    "language_m-large.tar.gz",
    "language_m-mid.tar.gz",
    "language_m-small.tar.gz",  # also read in test_fleet_real
}
#: files of a fleet dataset folder that are no trace of any kind
NOT_TRACES_EITHER = {"arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"}


def _real_inputs() -> list[object]:
    out: list[object] = []
    for name in FLEET_DATASETS:
        folder = MIRROR / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.name.startswith(("SOURCES", "README", "LICENSE")):
                continue
            if path.is_dir() and not any(p.name.startswith("invocations") for p in path.iterdir()):
                continue
            marks = [pytest.mark.slow] if path.name in SLOW else []
            out.append(pytest.param(path, id=str(path.relative_to(MIRROR)), marks=marks))
    return out


runner = CliRunner()


@pytest.mark.parametrize("path", _real_inputs())
def test_inspect_and_convert_every_real_file(path: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["traces", "inspect", str(path), "--json"])
    if path.name in NOT_TRACES | NOT_TRACES_EITHER:
        assert result.exit_code != 0
        assert "Supported formats" in str(result.exception)
        return
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["rows"] > 0
    assert info["table"] in traces.TABLES
    assert {c["name"] for c in info["columns"]} >= set(traces.TABLES[info["table"]].required)
    out = tmp_path / "out.parquet"
    converted = runner.invoke(app, ["traces", "convert", str(path), "-o", str(out), "--json"])
    assert converted.exit_code == 0, converted.output
    summary = json.loads(converted.stdout)
    assert summary["rows"] == info["rows"]
    assert summary["table"] == info["table"]
    # the Parquet reads back as the same canonical table, with the canonical dtypes
    back = pl.read_parquet(out)
    assert back.height == info["rows"]
    expected = traces.TABLES[info["table"]].columns
    assert {c: back.schema[c] for c in expected} == expected
    assert traces.detect(out).table == info["table"]


def test_convert_refuses_to_overwrite(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "azure-functions-2021-sample" / "Azure2021_30.csv"
    out = tmp_path / "out.parquet"
    out.write_text("precious")
    refused = runner.invoke(app, ["traces", "convert", str(path), "-o", str(out)])
    assert refused.exit_code != 0
    assert out.read_text() == "precious"
    forced = runner.invoke(app, ["traces", "convert", str(path), "-o", str(out), "--force"])
    assert forced.exit_code == 0, forced.output
    assert pl.read_parquet(out).height == 29


def test_inspect_prints_a_table_without_json(shared_data: Path) -> None:
    path = shared_data / "alibaba-spot-gpu-2026" / "node_info_df.csv"
    result = runner.invoke(app, ["traces", "inspect", str(path)])
    assert result.exit_code == 0, result.output
    assert "alibaba-spot-gpu-nodes" in result.stdout and "4,278" in result.stdout


def test_formats_lists_every_fleet_format() -> None:
    result = runner.invoke(app, ["traces", "formats", "--json"])
    assert result.exit_code == 0
    names = {row["format"] for row in json.loads(result.stdout)}
    assert {
        "azure-llm",
        "mooncake",
        "servegen",
        "azure-functions-2019",
        "azure-functions-2021",
        "azure-vmtable",
        "azure-vm-cpu-readings",
        "azure-vm-cpu-wide",
        "alibaba-2018-spar-instances",
        "alibaba-2017-batch-task",
        "alibaba-gpu-2023-pods",
        "alibaba-gpu-2023-nodes",
        "alibaba-gpu-2025-dlrm",
        "alibaba-spot-gpu-nodes",
        "flows-csv",
        "requests-jsonl",
    } <= names


def test_bad_file_exits_with_the_input_error(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,12,x\n")
    result = runner.invoke(app, ["traces", "inspect", str(path), "--json"])
    err = result.exception
    assert isinstance(err, InputFormatError) and err.exit_code == 3
    assert (err.row, err.field, err.found) == (2, "GeneratedTokens", "x")
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello\n")
    result = runner.invoke(app, ["traces", "inspect", str(unknown)])
    assert isinstance(result.exception, UnknownFormatError)
    assert result.exception.exit_code == 4


def _other_files() -> list[object]:
    """Data files of the mirror that no fleet reader claims (metrics, profiles, ...)."""
    out: list[object] = []
    for name in (
        "alibaba-genai-2026",
        "azure-vm-noise-2024-sample",
        "splitwise-perf-model",
        "vidur-profiles/profiling",
    ):
        for path in sorted((MIRROR / name).rglob("*")) if (MIRROR / name).is_dir() else []:
            if path.is_file() and not path.name.startswith(("SOURCES", "README", "LICENSE")):
                out.append(pytest.param(path, id=str(path.relative_to(MIRROR))))
    return out


@pytest.mark.parametrize("path", _other_files())
def test_other_mirror_files_fail_cleanly(path: Path) -> None:
    result = runner.invoke(app, ["traces", "inspect", str(path), "--json"])
    if result.exit_code == 0:  # some other area taught fleetlab this format
        assert json.loads(result.stdout)["rows"] >= 0
    else:
        assert isinstance(result.exception, (UnknownFormatError, InputFormatError))
