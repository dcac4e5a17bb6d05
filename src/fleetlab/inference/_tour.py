"""The inference stop of ``fleetlab tour``: a small simulation on a real trace."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import polars as pl

from fleetlab.inference._arrivals import poisson_requests
from fleetlab.inference._config import ClusterSpec, ReplicaSpec
from fleetlab.inference._report import simulation_report
from fleetlab.inference._simulate import simulate
from fleetlab.report import Report

__all__ = ["tour_stop"]

_CONV = "azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv"
#: 10 simulated minutes of conversation traffic on 2 H100 replicas of Llama-3.1-8B
_MINUTES = 10.0
_SYNTH_QPS = 5.0


def _requests(seed: int) -> tuple[pl.DataFrame, str]:
    mirror = os.environ.get("FLEETLAB_MIRROR")
    if mirror:
        path = Path(mirror) / _CONV
        if path.exists():
            from fleetlab import traces

            frame = traces.load(path)
            frame = frame.filter(pl.col("arrival_s") < _MINUTES * 60)
            return frame, f"Azure LLM inference 2023 conversation trace ({path})"
    n = int(_SYNTH_QPS * _MINUTES * 60)
    return (
        poisson_requests(n, qps=_SYNTH_QPS, seed=seed),
        f"synthetic: Poisson {_SYNTH_QPS} req/s, log-normal token sizes written in the code",
    )


def tour_stop(workdir: Path, *, seed: int) -> tuple[Report, dict[str, Any]]:
    """Simulate 10 minutes of conversation traffic on 2 Llama-3.1-8B / H100 replicas.

    Uses the Azure LLM 2023 conversation trace from ``$FLEETLAB_MIRROR`` when present,
    otherwise Poisson requests with token sizes drawn from parameters in the code.

    Parameters
    ----------
    workdir : Path
        Where the per-request Parquet file is written.
    seed : int
        Seed of the synthetic fallback and the router.

    Returns
    -------
    (Report, dict)
        The report sections and headline numbers (including which data was used).
    """
    requests, source = _requests(seed)
    spec = ClusterSpec(
        replica=ReplicaSpec(model="llama-3.1-8b", gpu="h100", scheduler="sarathi", chunk_size=512),
        replicas=2,
        router="least_outstanding",
    )
    t0 = time.perf_counter()
    result = simulate(requests, spec, seed=seed, source=source)
    wall = time.perf_counter() - t0
    workdir.mkdir(parents=True, exist_ok=True)
    result.requests.write_parquet(workdir / "inference_requests.parquet")
    report = simulation_report(
        result,
        title="inference",
        config={
            "data": source,
            "model": "llama-3.1-8b",
            "gpu": "h100 x 2 replicas (tp 1)",
            "scheduler": "sarathi, chunk 512",
            "router": "least_outstanding",
        },
    )
    report.sections[0].title = "Inference: serving-cluster simulation"
    report.sections[0].text(
        f"{result.metrics['requests']:,} requests from {source} simulated in {wall:.2f} s "
        "of wall time."
    )
    m = result.metrics
    # the same traffic with the GPUs' SM clock locked at 80 %, and under a 450 W power cap:
    # the trades of energy against latency a planner can make
    slow = {}
    for name, update in (
        ("80 % of the SM clock", {"gpu_clock": 0.8}),
        ("a 450 W cap", {"power_cap_w": 450.0}),
    ):
        replica = spec.replica.model_copy(update=update)
        slow[name] = simulate(
            requests, spec.model_copy(update={"replica": replica}), seed=seed
        ).metrics

    def change(key: str, s: dict[str, Any]) -> str:
        return f"{s[key] / m[key] - 1:+.0%}".replace("-0%", "+0%")

    report.sections[0].text(
        "; ".join(
            f"{'at' if i else 'At'} {name}: TTFT p50 {change('ttft_p50_s', s)}, TPOT p50 "
            f"{change('tpot_p50_s', s)}, energy per output token "
            f"{change('energy_per_output_token_j', s)}"
            for i, (name, s) in enumerate(slow.items())
        )
        + "."
    )
    summary = {
        "data": source,
        "requests": m["requests"],
        "ttft_p50_s": m["ttft_p50_s"],
        "tpot_p50_s": m["tpot_p50_s"],
        "e2e_p99_s": m["e2e_p99_s"],
        "output_tokens_per_s": m["output_tokens_per_s"],
        "energy_per_output_token_j": m["energy_per_output_token_j"],
        "energy_per_token_j_80pct_clock": slow["80 % of the SM clock"]["energy_per_output_token_j"],
        "energy_per_token_j_450w_cap": slow["a 450 W cap"]["energy_per_output_token_j"],
        "wall_s": wall,
    }
    return report, summary
