"""Ingest: real public traces into canonical tables, fleetlab vs plain pandas.

Reads, in one process, the Azure LLM inference 2023 traces (code + conversation CSVs ->
``requests``) and the Alibaba cluster-trace-v2018 batch instances sample (3,056,536 rows,
gzip, joined with its 67,634 tasks -> ``vms``) twice: with ``fleetlab.traces.load`` and
with ``pandas.read_csv`` plus the equivalent transforms (timestamps to seconds from the
first request, renames, the task join, cores = plan_cpu / 100, ...). Both results are
checked to be equal, then rows/s of each and the ratio are printed (goal: >= 5x).

Usage: ``python benchmarks/ingest.py [--repeat 3]`` (FLEETLAB_MIRROR or ../shared/data).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl

from fleetlab import traces

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("FLEETLAB_MIRROR", REPO.parent / "shared" / "data"))
LLM = [
    MIRROR / "azure-llm-inference-2023" / f"AzureLLMInferenceTrace_{k}.csv"
    for k in ("code", "conv")
]
INSTANCES = MIRROR / "alibaba-2018-batch-spar-sample" / "sample_instances.csv.gz"
TASKS = MIRROR / "alibaba-2018-batch-spar-sample" / "sample_tasks.csv.gz"


def fleetlab_llm(path: Path) -> pl.DataFrame:
    return traces.load(path)


def pandas_llm(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path)
    ts = pd.to_datetime(raw["TIMESTAMP"], format="%Y-%m-%d %H:%M:%S.%f")
    return pd.DataFrame(
        {
            "arrival_s": (ts - ts.min()).dt.total_seconds(),
            "prompt_tokens": raw["ContextTokens"].astype("int64"),
            "output_tokens": raw["GeneratedTokens"].astype("int64"),
            "request_id": np.arange(len(raw), dtype="int64"),
        }
    )


def fleetlab_instances(path: Path) -> pl.DataFrame:
    return traces.load(path)


def pandas_instances(path: Path) -> pd.DataFrame:
    names = ["arrival_s", "job", "task", "instance", "duration_s", "cpu_avg", "mem_avg"]
    inst = pd.read_csv(path, header=None, names=names)
    tasks = pd.read_csv(
        TASKS, header=None, usecols=[1, 2, 4, 5], names=["job", "task", "plan_cpu", "plan_mem"]
    )
    both = inst.merge(tasks, on=["job", "task"], how="left")
    return pd.DataFrame(
        {
            "vm_id": both["instance"],
            "created_s": both["arrival_s"].astype("float64"),
            "deleted_s": (both["arrival_s"] + both["duration_s"]).astype("float64"),
            "cores": both["plan_cpu"] / 100.0,
            "cpu_avg": both["cpu_avg"] / both["plan_cpu"] * 100.0,
            "job": both["job"],
            "task": both["task"],
            "memory_norm": both["plan_mem"] / 100.0,
            "used_cores": both["cpu_avg"] / 100.0,
            "used_memory_norm": both["mem_avg"] / 100.0,
        }
    )


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def same(ours: pl.DataFrame, theirs: pd.DataFrame) -> bool:
    cols = list(theirs.columns)
    a = ours.select(cols)
    b = pl.from_pandas(theirs)
    return a.height == b.height and all(
        np.allclose(a[c].to_numpy(), b[c].to_numpy(), equal_nan=True)
        if a[c].dtype.is_numeric()
        else (a[c] == b[c]).all()
        for c in cols
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per reader")
    args = parser.parse_args()
    print(
        f"mirror: {MIRROR}  (polars {pl.__version__}, pandas {pd.__version__}, "
        f"{os.cpu_count()} CPUs)"
    )
    cases = [(p.name, lambda p=p: fleetlab_llm(p), lambda p=p: pandas_llm(p)) for p in LLM]
    cases.append(
        (INSTANCES.name, lambda: fleetlab_instances(INSTANCES), lambda: pandas_instances(INSTANCES))
    )
    total = {"fleetlab": [0.0, 0], "pandas": [0.0, 0]}
    print(
        f"{'input':34} {'rows':>10} {'fleetlab s':>11} {'pandas s':>9} "
        f"{'fleetlab rows/s':>16} {'pandas rows/s':>14} {'ratio':>6}"
    )
    for name, ours_fn, theirs_fn in cases:
        t_ours, ours = best_of(args.repeat, ours_fn)
        t_theirs, theirs = best_of(args.repeat, theirs_fn)
        assert isinstance(ours, pl.DataFrame) and isinstance(theirs, pd.DataFrame)
        if not same(ours, theirs):
            raise SystemExit(f"{name}: fleetlab and pandas disagree")
        rows = ours.height
        total["fleetlab"][0] += t_ours
        total["pandas"][0] += t_theirs
        total["fleetlab"][1] += rows
        total["pandas"][1] += rows
        print(
            f"{name:34} {rows:>10,} {t_ours:>11.3f} {t_theirs:>9.3f} "
            f"{rows / t_ours:>16,.0f} {rows / t_theirs:>14,.0f} {t_theirs / t_ours:>6.1f}x"
        )
    (t_o, n), (t_p, _) = total["fleetlab"], total["pandas"]
    print(
        f"{'all':34} {n:>10,} {t_o:>11.3f} {t_p:>9.3f} {n / t_o:>16,.0f} {n / t_p:>14,.0f} "
        f"{t_p / t_o:>6.1f}x"
    )
    print(
        f"fleetlab ingests {n / t_o:,.0f} rows/s, pandas {n / t_p:,.0f} rows/s: "
        f"ratio {t_p / t_o:.1f}x (goal >= 5x)"
    )
    # what fleetlab users do after the first read: `traces convert` once (what `data pull`
    # does), then read the canonical Parquet; reported apart, not part of the ratio above
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "instances.parquet"
        t_conv, _ = best_of(1, lambda: traces.convert(INSTANCES, out))
        t_parq, table = best_of(args.repeat, lambda: traces.load(out))
        assert isinstance(table, pl.DataFrame)
        rows = table.height
        pandas_rate = total["pandas"][1] / total["pandas"][0]
        print(
            f"{INSTANCES.name} as canonical Parquet: convert once {t_conv:.3f} s, then "
            f"{rows / t_parq:,.0f} rows/s ({rows / t_parq / pandas_rate:.1f}x the pandas rate)"
        )


if __name__ == "__main__":
    main()
