"""Small files in the published layouts of formats the mirror has no real rows of.

Every fixture is generated here, by test code, from fixed values; the schemas follow the
published documentation exactly (see docs/formats.md, "Fixtures").
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

#: Azure VM 2017/2019 vmtable.csv: no header, 11 columns (core/memory sizes are buckets)
VMTABLE_ROWS = [
    ["x/XU6ge9", "Ve5GUtn1", "S1nc+Ha9", 0, 2591700, 98.2, 7.14, 48.5, "Interactive", "2", "4"],
    ["Pp4aFTd", "Ve5GUtn1", "S1nc+Ha9", 300, 1200, 35.1, 3.9, 22.0, "Delay-insensitive", "4", "8"],
    ["8oHsmOK", "bYmT9ujE", "3fWaQz+r", 86400, 2591700, 100.0, 51.7, 99.9, "Unknown", ">24", ">64"],
]

#: Azure VM vm_cpu_readings-file-N-of-M.csv: timestamp, vmid, min, max, avg CPU %
READING_ROWS = [
    [0, "x/XU6ge9", 2.1, 9.8, 4.4],
    [300, "x/XU6ge9", 1.9, 12.5, 5.0],
    [300, "Pp4aFTd", 0.5, 35.1, 3.9],
    [600, "8oHsmOK", 40.0, 100.0, 51.7],
]

#: Azure LLM inference 2024 (AzureLLMInferenceTrace_{code,conv}_1week.csv): UTC offsets
LLM_2024_ROWS = [
    ("2024-05-10 00:00:00.009930+00:00", 2048, 28),
    ("2024-05-10 00:00:00.511301+00:00", 17, 254),
    ("2024-05-10 00:00:02.000000+00:00", 880, 0),
]

#: cluster-trace-v2018 batch_task.csv (no header)
V2018_TASKS = [
    ["M1", 1, "j_3", 1, "Terminated", 157213, 157295, 100, 0.59],
    ["R2_1", 4, "j_3", 1, "Terminated", 157296, 157300, 50, 0.39],
    ["M5", 2, "j_7", 1, "Running", 157500, 0, 200, 1.18],
]

#: cluster-trace-v2018 batch_instance.csv (no header)
V2018_INSTANCES = [
    ["ins_1", "M1", "j_3", 1, "Terminated", 157213, 157295, "m_1932", 1, 1, 87.0, 100.0, 0.21, 0.3],
    ["ins_2", "R2_1", "j_3", 1, "Terminated", 157296, 157300, "m_77", 1, 1, 40.0, 51.0, 0.1, 0.12],
]


def write_csv(
    path: Path,
    rows: list[list[object]] | list[tuple[object, ...]],
    header: list[str] | None = None,
    *,
    compress: bool = False,
) -> Path:
    """Write ``rows`` as CSV (LF, final newline), optionally gzip-compressed."""
    lines = ([",".join(header)] if header else []) + [",".join(str(v) for v in r) for r in rows]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def functions_2019_day(folder: Path, *, minutes: int = 1440) -> Path:
    """The three original Azure Functions 2019 files of day 01 (two functions, one app)."""
    folder.mkdir(parents=True, exist_ok=True)
    owner, app = "o" * 64, "a" * 64
    funcs = ["f" * 64, "e" * 64]
    cols = [str(m) for m in range(1, minutes + 1)]
    counts = [[0] * minutes, [0] * minutes]
    counts[0][0], counts[0][min(59, minutes - 2)], counts[1][minutes - 1] = 3, 7, 2
    write_csv(
        folder / "invocations_per_function_md.anon.d01.csv",
        [[owner, app, funcs[i], "http" if i == 0 else "timer", *counts[i]] for i in range(2)],
        ["HashOwner", "HashApp", "HashFunction", "Trigger", *cols],
    )
    write_csv(
        folder / "function_durations_percentiles.anon.d01.csv",
        [
            [owner, app, funcs[0], 120, 10, 5, 900, 5, 6, 50, 100, 150, 800, 900],
            [owner, app, funcs[1], 40, 2, 30, 50, 30, 30, 35, 40, 45, 50, 50],
        ],
        [
            "HashOwner",
            "HashApp",
            "HashFunction",
            "Average",
            "Count",
            "Minimum",
            "Maximum",
            "percentile_Average_0",
            "percentile_Average_1",
            "percentile_Average_25",
            "percentile_Average_50",
            "percentile_Average_75",
            "percentile_Average_99",
            "percentile_Average_100",
        ],
    )
    write_csv(
        folder / "app_memory_percentiles.anon.d01.csv",
        [[owner, app, 5, 256, 200, 210, 230, 250, 260, 280, 300, 310]],
        [
            "HashOwner",
            "HashApp",
            "SampleCount",
            "AverageAllocatedMb",
            "AverageAllocatedMb_pct1",
            "AverageAllocatedMb_pct5",
            "AverageAllocatedMb_pct25",
            "AverageAllocatedMb_pct50",
            "AverageAllocatedMb_pct75",
            "AverageAllocatedMb_pct95",
            "AverageAllocatedMb_pct99",
            "AverageAllocatedMb_pct100",
        ],
    )
    return folder / "invocations_per_function_md.anon.d01.csv"


def servegen_folder(root: Path) -> Path:
    """A ServeGen-layout folder: two clients, one of them without its dataset.json."""
    model = root / "data" / "language" / "m-test"
    model.mkdir(parents=True)
    trace = [
        "0,0.5,1.2,Gamma,0.6944444444444444,2.88",
        "600,0,0,,0,0",
        "1200,0.25,0.8,Weibull,1.3,4.2",
    ]
    (model / "chunk-1-trace.csv").write_text("\n".join(trace) + "\n")
    (model / "chunk-1-dataset.json").write_text(
        json.dumps(
            {
                "0": {"input_tokens": "{10: 0.25, 20: 0.75}", "output_tokens": "{5: 1.0}"},
                "1200": {"input_tokens": "{}", "output_tokens": "{7: 0.5, 9: 0.5}"},
            }
        )
    )
    (model / "chunk-2-trace.csv").write_text("0,1.5,1.0,Gamma,1.0,0.6666666666666666\n")
    return root


def jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    """Write ``rows`` as JSON lines."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def head_of(source: Path, target: Path, lines: int) -> Path:
    """The first ``lines`` lines of a real (maybe gzipped) file, written uncompressed."""
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rb") as f:
        data = b"".join(f.readline() for _ in range(lines))
    target.write_bytes(data)
    return target


def samples(mirror: Path, folder: Path) -> dict[str, Path]:
    """One small valid file per fleet format: real heads where the mirror has the format."""
    folder.mkdir(parents=True, exist_ok=True)
    m = mirror
    out = {
        "azure-llm": head_of(
            m / "azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv", folder / "llm.csv", 25
        ),
        "mooncake": head_of(
            m / "mooncake-kimi-2025/conversation_trace.jsonl", folder / "mooncake.jsonl", 12
        ),
        "azure-functions-2021": head_of(
            m / "azure-functions-2021-sample/Azure2021_200.csv", folder / "f2021.csv", 20
        ),
        "azure-functions-2019-durations": head_of(
            m / "azure-functions-2019-sample/invitro-traces-10/durations.csv",
            folder / "durations.csv",
            8,
        ),
        "azure-vm-cpu-wide": head_of(
            m / "azure-vm-2017-cpu-100vms/microsoft_avg_100.csv.gz", folder / "wide.csv", 12
        ),
        "alibaba-2018-spar-tasks": head_of(
            m / "alibaba-2018-batch-spar-sample/sample_tasks.csv.gz", folder / "t.csv", 20
        ),
        "alibaba-2018-spar-instances": head_of(
            m / "alibaba-2018-batch-spar-sample/sample_instances.csv.gz", folder / "i.csv", 20
        ),
        "alibaba-2017-batch-task": head_of(
            m / "alibaba-2017-batch-task/batch_task.csv.gz", folder / "b2017.csv", 20
        ),
        "alibaba-gpu-2023-pods": head_of(
            m / "alibaba-gpu-2023-openb/openb_pod_list_default.csv", folder / "pods.csv", 20
        ),
        "alibaba-gpu-2023-nodes": head_of(
            m / "alibaba-gpu-2023-openb/openb_node_list_gpu_node.csv", folder / "nodes.csv", 20
        ),
        "alibaba-gpu-2025-dlrm": head_of(
            m / "alibaba-gpu-2025-dlrm/disaggregated_DLRM_trace.csv", folder / "dlrm.csv", 20
        ),
        "alibaba-spot-gpu-nodes": head_of(
            m / "alibaba-spot-gpu-2026/node_info_df.csv", folder / "spot.csv", 20
        ),
        "azure-vmtable": write_csv(folder / "vmtable.csv", VMTABLE_ROWS),
        "azure-vm-cpu-readings": write_csv(folder / "readings.csv", READING_ROWS),
        "alibaba-2018-batch-task": write_csv(folder / "batch_task.csv", V2018_TASKS),
        "alibaba-2018-batch-instance": write_csv(folder / "batch_instance.csv", V2018_INSTANCES),
        "azure-functions-2019": functions_2019_day(folder / "f2019", minutes=30),
        "requests-csv": write_csv(
            folder / "req.csv",
            [[0.5, 10, 3], [1.25, 7, 1]],
            ["arrival_s", "prompt_tokens", "output_tokens"],
        ),
        "flows-jsonl": jsonl(
            folder / "flows.jsonl",
            [
                {"ts_us": 1, "src": "a", "dst": "b", "port": 80},
                {"ts_us": 5, "src": "b", "dst": "c", "bytes": 120},
            ],
        ),
    }
    return out
