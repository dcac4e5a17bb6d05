"""Formats the mirror has no real rows of, on fixtures in their published layouts, and the
bring-your-own canonical readers. Golden values are worked out by hand from the fixtures.
"""

from __future__ import annotations

import gzip
import tarfile
from pathlib import Path

import polars as pl
import pytest
from fleet_fixtures import (
    LLM_2024_ROWS,
    READING_ROWS,
    V2018_INSTANCES,
    V2018_TASKS,
    VMTABLE_ROWS,
    functions_2019_day,
    jsonl,
    servegen_folder,
    write_csv,
)

from fleetlab import traces
from fleetlab.errors import InputFormatError


def test_vmtable(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "vmtable.csv", VMTABLE_ROWS)
    assert traces.detect(path).name == "azure-vmtable"
    vms = traces.load(path)
    assert vms["vm_id"].to_list() == ["x/XU6ge9", "Pp4aFTd", "8oHsmOK"]
    assert vms["cores"].to_list() == [2.0, 4.0, 24.0]  # ">24" -> its lower bound
    assert vms["memory_gb"].to_list() == [4.0, 8.0, 64.0]
    assert vms["deleted_s"][1] == 1200.0 and vms["p95_cpu"][0] == 48.5
    assert vms["tenant"][0] == "Ve5GUtn1" and vms["category"][1] == "Delay-insensitive"
    gz = write_csv(tmp_path / "vmtable.csv.gz", VMTABLE_ROWS, compress=True)
    assert traces.load(gz).equals(vms)


def test_vm_cpu_readings(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "vm_cpu_readings-file-1-of-125.csv", READING_ROWS)
    assert traces.detect(path).name == "azure-vm-cpu-readings"
    usage = traces.load(path)
    assert usage.columns[:4] == ["vm_id", "ts_s", "cpu_avg", "cpu_max"]
    assert usage.row(1) == ("x/XU6ge9", 300.0, 5.0, 12.5, 1.9)
    assert traces.inspect(path)["quality"]["vms"] == 3


def test_azure_llm_2024_with_utc_offsets(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "AzureLLMInferenceTrace_code_1week.csv",
        LLM_2024_ROWS,
        ["TIMESTAMP", "ContextTokens", "GeneratedTokens"],
    )
    frame = traces.load(path)
    assert frame["arrival_s"].to_list() == pytest.approx([0.0, 0.501371, 1.99007])
    assert frame["prompt_tokens"].to_list() == [2048, 17, 880]
    assert traces.inspect(path)["quality"]["zero_output_tokens"] == 1


def test_functions_2019_original_day_files(tmp_path: Path) -> None:
    invocations = functions_2019_day(tmp_path / "day")
    for target in (invocations, tmp_path / "day"):
        frame = traces.load(target).sort("function", "minute")
        assert frame["count"].sum() == 12
        assert frame.select("function", "minute", "count").rows() == [
            ("e" * 64, 1440, 2),
            ("f" * 64, 1, 3),
            ("f" * 64, 60, 7),
        ]
        assert frame["ts_s"].to_list() == [1439 * 60.0, 0.0, 59 * 60.0]
        # durations joined per function, app memory (no HashFunction) per app
        assert frame["duration_ms"].to_list() == [40.0, 120.0, 120.0]
        assert frame["memory_mb"].to_list() == [256.0, 256.0, 256.0]
        assert frame["trigger"].to_list() == ["timer", "http", "http"]
    info = traces.inspect(invocations)
    assert info["time_span"]["duration_s"] == 1440 * 60


def test_functions_2019_without_siblings(tmp_path: Path) -> None:
    invocations = functions_2019_day(tmp_path / "day", minutes=3)
    lonely = tmp_path / "alone.csv"
    lonely.write_bytes(invocations.read_bytes())
    frame = traces.load(lonely)
    assert frame["duration_ms"].null_count() == frame.height == 3


def test_alibaba_2018_original_tables(tmp_path: Path) -> None:
    tasks = write_csv(tmp_path / "batch_task.csv", V2018_TASKS)
    frame = traces.load(tasks)
    assert traces.detect(tasks).name == "alibaba-2018-batch-task"
    assert frame["vm_id"].to_list() == ["j_3/M1", "j_3/R2_1", "j_7/M5"]
    assert frame["cores"].to_list() == [1.0, 0.5, 2.0]
    assert frame["memory_norm"].to_list() == pytest.approx([0.0059, 0.0039, 0.0118])
    assert frame["deleted_s"].to_list() == [157295.0, 157300.0, None]  # still running
    instances = write_csv(tmp_path / "batch_instance.csv", V2018_INSTANCES)
    inst = traces.load(instances)
    assert inst["used_cores"].to_list() == [0.87, 0.4]
    assert inst["job"].to_list() == ["j_3", "j_3"]


def test_alibaba_2017_without_header(tmp_path: Path, shared_data: Path) -> None:
    source = shared_data / "alibaba-2017-batch-task" / "batch_task.csv.gz"
    with gzip.open(source, "rt", newline="") as f:
        lines = [next(f) for _ in range(30)]
    path = tmp_path / "batch_task.csv"
    path.write_text("".join(lines[1:]))  # the original v2017 file has no header
    headerless = traces.load(path)
    with_header = tmp_path / "with_header.csv"
    with_header.write_text("".join(lines))
    assert headerless.equals(traces.load(with_header))
    assert headerless.height == 29 and headerless["vm_id"][0] == "3/4"


def test_servegen_folder_and_single_trace(tmp_path: Path) -> None:
    root = servegen_folder(tmp_path / "sg")
    frame = traces.load(root)
    assert frame.select("client", "window_start_s", "rate_per_s").rows() == [
        ("chunk-1", 0.0, 0.5),
        ("chunk-1", 600.0, 0.0),
        ("chunk-1", 1200.0, 0.25),
        ("chunk-2", 0.0, 1.5),
    ]
    assert frame["pattern"].to_list() == ["Gamma", None, "Weibull", "Gamma"]
    first = frame.row(0, named=True)
    assert first["input_tokens_values"] == [10.0, 20.0]
    assert first["input_tokens_probs"] == [0.25, 0.75]
    assert first["dist_window_s"] == 1200.0
    assert frame.row(2, named=True)["input_tokens_values"] == []  # "{}": an empty window
    assert frame.row(1, named=True)["output_tokens_values"] is None  # between PDF windows
    info = traces.inspect(root)
    assert info["quality"]["clients_without_distributions"] == 1
    single = next(root.rglob("chunk-1-trace.csv"))
    assert (
        traces.load(single)
        .drop("model")
        .equals(frame.filter(pl.col("client") == "chunk-1").drop("model"))
    )
    archive = tmp_path / "language_m-test.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "data", arcname="data")
    assert traces.load(archive).equals(frame)


def test_canonical_files_round_trip(tmp_path: Path) -> None:
    flows = jsonl(
        tmp_path / "flows.jsonl",
        [
            {"ts_us": 1, "src": "a", "dst": "b", "port": 80},
            {"ts_us": 5, "src": "b", "dst": "c", "bytes": 120},
        ],
    )
    frame = traces.load(flows)
    assert traces.detect(flows).name == "flows-jsonl"
    assert frame["port"].to_list() == [80, None] and frame["bytes"].to_list() == [None, 120]
    csv_path = tmp_path / "flows.csv"
    frame.write_csv(csv_path)
    assert traces.detect(csv_path).name == "flows-csv"
    assert traces.load(csv_path).equals(frame)
    out = tmp_path / "flows.parquet"
    traces.convert(csv_path, out)
    assert traces.detect(out).table == "flows" and traces.load(out).equals(frame)
    requests = tmp_path / "requests.csv"
    requests.write_text(
        "arrival_s,prompt_tokens,output_tokens,tenant,my_note\n0.5,10,3,acme,x\n1.0,,4,acme,y\n"
    )
    with pytest.raises(InputFormatError) as info:
        traces.load(requests)
    assert (info.value.row, info.value.field) == (3, "prompt_tokens")


def test_parquet_that_is_not_canonical(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pl.DataFrame({"a": [1]}).write_parquet(path)
    with pytest.raises(InputFormatError, match="not a canonical"):
        traces.detect(path)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1garbage")
    with pytest.raises(InputFormatError):
        traces.load(broken)
