"""fleetlab's LLM serving simulator vs vidur 0.0.26, side by side, in one run.

Both simulate the same request list (the Azure LLM 2023 conversation trace's token sizes,
clipped to 4,096 tokens the way vidur clips them, with Poisson arrivals at 4 req/s) on the
same deployment: Llama-2-7B, H100, TP 1, 4 replicas, Sarathi-Serve chunked prefill (chunk
512, batch cap 128), round-robin routing. vidur runs as a subprocess in its own venv
(see ../shared/peers/vidur/README.md); its operator times come from vidur's own H100
profiles (attention synthesised by the peer folder's gen_attention.py).

Prints p50/p90/p99 TTFT, TPOT and E2E for each, the wall-time ratio (vidur's whole run,
and its simulation phase alone, without the random-forest training), and then the scale
measurement: 1M requests of the conversation trace's token sizes through 16 replicas.

Usage::

    python benchmarks/inference_vs_vidur.py [--requests 19000] [--replicas 4]
        [--vidur-python /tmp/vidur-venv/bin/python] [--skip-vidur] [--scale 1000000]
"""

from __future__ import annotations

import argparse
import lzma
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from fleetlab.inference import ClusterSpec, Efficiency, ReplicaSpec, gpu_spec, simulate

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FLEETLAB_SHARED", REPO.parent / "shared"))
DATA = Path(os.environ.get("FLEETLAB_MIRROR", SHARED / "data"))
PEER = SHARED / "peers" / "vidur"
MAX_TOKENS = 4096


def requests(n: int, qps: float, seed: int) -> pl.DataFrame:
    """The conversation trace's token sizes (cycled to n), vidur's clipping, Poisson arrivals."""
    trace = pl.read_csv(DATA / "vidur-profiles/processed_traces/splitwise_conv.csv")
    idx = np.arange(n) % trace.height
    p = trace["num_prefill_tokens"].to_numpy()[idx]
    o = trace["num_decode_tokens"].to_numpy()[idx]
    p = p - np.maximum(p + o - MAX_TOKENS, 0)  # vidur: shorten the prompt to fit
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / qps, size=n)
    t = np.cumsum(gaps) - gaps[0]
    return pl.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": t,
            "prompt_tokens": p.astype(np.int64),
            "output_tokens": o.astype(np.int64),
        }
    )


def _xz(src: Path, dst: Path) -> None:
    with lzma.open(dst, "wb") as f:
        f.write(src.read_bytes())


def prepare_vidur(work: Path, req: pl.DataFrame) -> None:
    """Lay out vidur's offline work dir as ../shared/peers/vidur/README.md describes."""
    prof = DATA / "vidur-profiles/profiling"
    (work / "ds/compute").mkdir(parents=True)
    (work / "ds/network").mkdir(parents=True)
    shutil.copy(PEER / "run_offline.py", work)
    _xz(prof / "compute/h100/meta-llama/Llama-2-7b-hf/mlp.csv", work / "ds/compute/mlp.csv.xz")
    for name in ("all_reduce", "send_recv"):
        _xz(prof / f"network/h100_dgx/{name}.csv", work / f"ds/network/{name}.csv.xz")
    shutil.copy(PEER / "compute-config.json", work / "ds/compute/config.json")
    shutil.copy(PEER / "network-config.json", work / "ds/network/config.json")
    subprocess.run(
        [sys.executable, str(PEER / "gen_attention.py")], cwd=work, check=True, capture_output=True
    )
    pl.DataFrame(
        {
            "Date": ["2023-08-21"] * req.height,
            "Time": req["arrival_s"],
            "PromptTokenCount": req["prompt_tokens"],
            "CompletionTokenCount": req["output_tokens"],
        }
    ).write_csv(work / "requests.csv")


def run_vidur(python: str, work: Path, replicas: int) -> tuple[pl.DataFrame, dict[str, float]]:
    """Run vidur on requests.csv; returns its per-request metrics and timings."""
    common = (PEER / "common_args.txt").read_text().split()
    drop = {
        "--length_generator_config_type",
        "--trace_request_length_generator_config_trace_file",
        "--trace_request_length_generator_config_max_tokens",
        "--interval_generator_config_type",
        "--poisson_request_interval_generator_config_qps",
        "--cluster_config_num_replicas",
    }
    args: list[str] = []
    skip = False
    for tok in common:
        if skip:
            skip = False
            continue
        if tok in drop:
            skip = True
            continue
        args.append(tok)
    args += [
        "--cluster_config_num_replicas",
        str(replicas),
        "--global_scheduler_config_type",
        "round_robin",
        "--request_generator_config_type",
        "trace_replay",
        "--trace_request_generator_config_trace_file",
        "requests.csv",
        "--trace_request_generator_config_prefill_scale_factor",
        "1",
        "--trace_request_generator_config_decode_scale_factor",
        "1",
        "--trace_request_generator_config_time_scale_factor",
        "1",
        "--trace_request_generator_config_max_tokens",
        str(MAX_TOKENS),
        "--no-metrics_config_enable_chrome_trace",
        "--metrics_config_output_dir",
        "out",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [python, "run_offline.py", *args],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"vidur failed:\n{proc.stderr[-3000:]}")
    log = proc.stdout + proc.stderr
    stamps = {}
    for key, pat in (("start", "Starting simulation"), ("end", "Simulation ended")):
        m = re.search(r"(\d\d-\d\d \d\d:\d\d:\d\d) [^\n]*" + pat, log)
        if m:
            stamps[key] = datetime.strptime(m.group(1), "%m-%d %H:%M:%S")
    sim = (stamps["end"] - stamps["start"]).total_seconds() if len(stamps) == 2 else float("nan")
    metrics = pl.read_csv(next((work / "out").glob("*/request_metrics.csv")))
    table = metrics.sort("Request Id").select(
        pl.col("prefill_e2e_time").alias("ttft_s"),
        pl.col("decode_time_execution_plus_preemption_normalized").alias("tpot_s"),
        pl.col("request_e2e_time").alias("e2e_s"),
        pl.col("request_scheduling_delay").alias("queueing_s"),
        pl.col("request_num_restarts").alias("preemptions"),
    )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return table, {"wall_s": wall, "cpu_s": cpu, "simulation_phase_s": sim}


#: vidur's assumptions here: no CPU overhead modelled, attention from gen_attention.py's
#: roofline (60 % of peak FLOP/s for prefill, 80 % of HBM bandwidth for decode)
VIDUR_LIKE = gpu_spec("h100").efficiency.model_copy(
    update={
        "iteration_overhead_s": 0.0,
        "per_seq_overhead_s": 0.0,
        "attn_prefill": 0.6,
        "attn_decode": 0.8,
        "attn_query_s": 0.0,
    }
)


def run_fleetlab(
    req: pl.DataFrame, replicas: int, efficiency: Efficiency | None = None
) -> tuple[pl.DataFrame, dict[str, float]]:
    spec = ClusterSpec(
        replica=ReplicaSpec(
            model="llama-2-7b",
            gpu="h100",
            tp=1,
            scheduler="sarathi",
            chunk_size=512,
            max_num_seqs=128,
            block_size=16,
        ),
        replicas=replicas,
        router="round_robin",
    )
    t0, c0 = time.perf_counter(), time.process_time()
    res = simulate(req, spec, efficiency=efficiency)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return res.requests, {"wall_s": wall, "cpu_s": cpu, "simulation_phase_s": wall}


def percentiles(table: pl.DataFrame) -> dict[str, float]:
    out = {}
    for col in ("ttft_s", "tpot_s", "e2e_s"):
        v = table[col].drop_nulls().to_numpy()
        for q in (50, 90, 99):
            out[f"{col[:-2]}_p{q}_ms"] = float(np.percentile(v, q)) * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=19000)
    ap.add_argument("--replicas", type=int, default=4)
    ap.add_argument("--qps", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--vidur-python", default=os.environ.get("VIDUR_PYTHON", "/tmp/vidur-venv/bin/python")
    )
    ap.add_argument("--skip-vidur", action="store_true")
    ap.add_argument(
        "--scale",
        type=int,
        default=1_000_000,
        help="requests for the scale run through 16 replicas (0 to skip)",
    )
    a = ap.parse_args()

    req = requests(a.requests, a.qps, a.seed)
    print(
        f"# {a.requests:,} conversation requests, Poisson {a.qps} req/s, Llama-2-7B, H100, "
        f"TP1, {a.replicas} replicas, sarathi chunk 512, batch cap 128, round robin"
    )
    fl_table, fl_time = run_fleetlab(req, a.replicas)
    rows = {"fleetlab": {**percentiles(fl_table), **fl_time}}
    like_table, like_time = run_fleetlab(req, a.replicas, VIDUR_LIKE)
    rows["fl-vidur-eff"] = {**percentiles(like_table), **like_time}
    if not a.skip_vidur:
        if not Path(a.vidur_python).exists():
            raise SystemExit(
                f"no vidur python at {a.vidur_python}: create the venv as in "
                f"{PEER / 'README.md'} or pass --skip-vidur"
            )
        with tempfile.TemporaryDirectory(prefix="vidur-") as tmp:
            work = Path(tmp)
            prepare_vidur(work, req)
            vd_table, vd_time = run_vidur(a.vidur_python, work, a.replicas)
        rows["vidur"] = {**percentiles(vd_table), **vd_time}
    keys = list(rows["fleetlab"])
    print(
        f"{'metric':24s}"
        + "".join(f"{k:>14s}" for k in rows)
        + ("   vidur/fleetlab" if "vidur" in rows else "")
    )
    for k in keys:
        line = f"{k:24s}" + "".join(f"{rows[s][k]:14.3f}" for s in rows)
        if "vidur" in rows and rows["fleetlab"][k]:
            line += f"   {rows['vidur'][k] / rows['fleetlab'][k]:10.2f}"
        print(line)
    if "vidur" in rows:
        f, v = rows["fleetlab"], rows["vidur"]
        print(
            f"speed-up (whole run, wall): {v['wall_s'] / f['wall_s']:.1f}x; "
            f"(CPU time): {v['cpu_s'] / f['cpu_s']:.1f}x; "
            f"(vidur's simulation phase only): {v['simulation_phase_s'] / f['wall_s']:.1f}x"
        )

    if a.scale:
        big = requests(a.scale, a.qps * 16 / 4 * 1.4, a.seed + 1)
        spec = ClusterSpec(
            replica=ReplicaSpec(
                model="llama-2-7b",
                gpu="h100",
                scheduler="sarathi",
                chunk_size=512,
                max_num_seqs=128,
            ),
            replicas=16,
            router="round_robin",
        )
        t0, c0 = time.perf_counter(), time.process_time()
        res = simulate(big, spec)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"# scale: {a.scale:,} requests through 16 replicas in {wall:.1f} s wall "
            f"({cpu:.1f} s CPU): {a.scale / wall:,.0f} simulated requests per wall-second; "
            f"e2e p50 {res.metrics['e2e_p50_s']:.3f} s, utilization "
            f"{res.metrics['mean_utilization']:.2f}"
        )


if __name__ == "__main__":
    main()
