"""The traces stop of ``fleetlab tour``: detect and read public trace formats.

It lives in ``tour`` because the layers contract keeps ``traces`` from importing
``report`` (they are independent siblings of the core layer).

With ``FLEETLAB_MIRROR`` pointing at a mirror of the public datasets, real files are read
(Azure LLM 2023, Mooncake, Azure Functions 2019, Alibaba GPU 2023, ServeGen). Without it,
small files in the same published layouts are written from parameters set here and read
back through the same auto-detection, so the stop runs offline with no data at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import plotly.graph_objects as go
import polars as pl

from fleetlab.report import Report
from fleetlab.sim import Streams
from fleetlab.traces import detect, inspect, load

#: files read from the mirror when it is there (dataset folder / file)
REAL = (
    "azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv",
    "mooncake-kimi-2025/conversation_trace.jsonl",
    "azure-functions-2019-sample/invitro-traces-500",
    "alibaba-gpu-2023-openb/openb_pod_list_default.csv",
    "servegen-alibaba-bailian-2025/multimodal_mm-image.tar.gz",
)


#: the synthetic stand-ins: 10 minutes of chat requests at 2 req/s (lognormal sizes with
#: the Azure 2023 conversation medians 1,020 / 129 tokens), Mooncake-style requests with
#: 512-token prefix blocks shared by 30 % of requests, and 20 functions' per-minute counts
class _Synth(TypedDict):
    """The parameters of the synthesized traces (used when no mirror is set)."""

    rate_per_s: float
    duration_s: float
    prompt_median: int
    output_median: int
    sigma: float
    shared_prefix: float
    functions: int
    minutes: int


SYNTH: _Synth = {
    "rate_per_s": 2.0,
    "duration_s": 600.0,
    "prompt_median": 1020,
    "output_median": 129,
    "sigma": 1.0,
    "shared_prefix": 0.3,
    "functions": 20,
    "minutes": 60,
}


def _synthesize(folder: Path, seed: int) -> list[Path]:
    streams = Streams(seed)
    rng = streams["traces-tour"]
    n = int(rng.poisson(SYNTH["rate_per_s"] * SYNTH["duration_s"]))
    arrivals = np.sort(rng.uniform(0, SYNTH["duration_s"], n))
    prompt = np.ceil(rng.lognormal(np.log(SYNTH["prompt_median"]), SYNTH["sigma"], n)).astype(int)
    output = np.ceil(rng.lognormal(np.log(SYNTH["output_median"]), SYNTH["sigma"], n)).astype(int)
    start = np.datetime64("2023-11-16T18:15:00.000000")
    stamps = (start + (arrivals * 1e6).astype("timedelta64[us]")).astype(str)
    llm = folder / "AzureLLMInferenceTrace_synthetic.csv"
    pl.DataFrame(
        {
            "TIMESTAMP": [s.replace("T", " ") for s in stamps],
            "ContextTokens": prompt,
            "GeneratedTokens": output,
        }
    ).write_csv(llm)
    shared = rng.random(n) < SYNTH["shared_prefix"]
    blocks, next_id = [], 1
    for tokens, is_shared in zip(prompt, shared, strict=True):
        k = max(1, int(np.ceil(tokens / 512)))
        own = list(range(next_id, next_id + k - 1))
        next_id += k - 1
        blocks.append(([0] if is_shared else [next_id + 10**6]) + own)
    mooncake = folder / "mooncake_synthetic.jsonl"
    pl.DataFrame(
        {
            "timestamp": (arrivals * 1000).astype(int),
            "input_length": prompt,
            "output_length": output,
            "hash_ids": blocks,
        }
    ).write_ndjson(mooncake)
    minutes = SYNTH["minutes"]
    rates = rng.lognormal(0.0, 2.0, SYNTH["functions"])
    counts = rng.poisson(rates[:, None], (SYNTH["functions"], minutes))
    wide: dict[str, list[str] | np.ndarray] = {
        "HashOwner": [f"owner{i % 5}" for i in range(SYNTH["functions"])],
        "HashApp": [f"app{i % 8}" for i in range(SYNTH["functions"])],
        "HashFunction": [f"func{i}" for i in range(SYNTH["functions"])],
        "Trigger": ["http" if i % 2 else "timer" for i in range(SYNTH["functions"])],
    }
    wide.update({str(m + 1): counts[:, m] for m in range(minutes)})
    functions = folder / "invocations_per_function_md.anon.d01.csv"
    pl.DataFrame(wide).write_csv(functions)
    return [llm, mooncake, functions]


def _inputs(workdir: Path, seed: int) -> tuple[list[Path], str]:
    mirror = os.environ.get("FLEETLAB_MIRROR")
    if mirror:
        real = [Path(mirror) / rel for rel in REAL]
        found = [p for p in real if p.exists()]
        if found:
            return found, f"real public traces from the mirror at {mirror}"
    folder = workdir / "traces-synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    return _synthesize(folder, seed), "files synthesized from parameters written in the code"


def tour_stop(workdir: Path, *, seed: int) -> tuple[Report, dict[str, Any]]:
    """Detect and read trace files in several public formats; summarise each.

    Parameters
    ----------
    workdir
        Folder for the synthetic stand-in files (used only without a mirror).
    seed
        Seed of the synthetic stand-ins.

    Returns
    -------
    tuple
        A report (one section) and a summary dict: ``source`` (real or synthetic),
        ``formats`` read, total ``rows`` and per-format row counts.
    """
    paths, source = _inputs(workdir, seed)
    rows: list[dict[str, Any]] = []
    frames: dict[str, pl.DataFrame] = {}
    for path in paths:
        fmt = detect(path)
        info = inspect(path)
        frames[fmt.name] = load(path)
        span = info.get("time_span", {}).get("duration_s")
        rows.append(
            {
                "file": path.name,
                "format": fmt.name,
                "table": fmt.table,
                "rows": info["rows"],
                "time span (s)": span,
            }
        )
    report = Report("traces")
    sec = report.section("Traces: public formats into canonical tables")
    sec.text(
        f"Input: {source}. Each file's format was detected from its first bytes and read "
        "lazily into a canonical table (requests, invocations, vms, client_profiles); the "
        "same code reads the full public datasets (`fleetlab traces inspect PATH`)."
    )
    sec.table(rows)
    requests = frames.get("azure-llm")
    if requests is not None:
        per_min = requests.group_by((pl.col("arrival_s") // 60).alias("minute")).len()
        per_min = per_min.sort("minute")
        fig = go.Figure(go.Bar(x=per_min["minute"], y=per_min["len"]))
        fig.update_layout(
            title="Azure LLM trace: requests per minute",
            height=280,
            xaxis_title="minute",
            yaxis_title="requests",
            margin={"t": 40, "b": 40},
        )
        sec.figure(fig)
        sec.metrics(
            {
                "median prompt tokens": requests["prompt_tokens"].median(),
                "median output tokens": requests["output_tokens"].median(),
            }
        )
    prefixes = frames.get("mooncake")
    if prefixes is not None:
        ids = prefixes["prefix_ids"].explode()
        reuse = 1 - ids.n_unique() / max(len(ids), 1)
        sec.metrics({"Mooncake prefix blocks": len(ids), "blocks seen before": round(reuse, 3)})
    summary = {
        "source": "mirror" if "mirror" in source else "synthetic",
        "formats": [r["format"] for r in rows],
        "rows": sum(r["rows"] for r in rows),
        "rows_by_format": {r["format"]: r["rows"] for r in rows},
    }
    return report, summary
