"""Splitwise's mixed pool: a replica of one pool takes the other's phase when it is overloaded."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from fleetlab.cli import app
from fleetlab.errors import ConfigError
from fleetlab.inference import ClusterSpec, ReplicaSpec, poisson_requests, simulate

REQUESTS = poisson_requests(1500, qps=20.0, seed=5)


def _run(mixed: bool, **spec: object) -> tuple[pl.DataFrame, dict]:
    cluster = ClusterSpec(replica=ReplicaSpec(model="llama-3.1-8b"), mixed_pool=mixed, **spec)  # type: ignore[arg-type]
    out = simulate(REQUESTS, cluster, seed=1)
    return out.requests, out.metrics


def test_an_overloaded_prefill_pool_lends_prompts_to_decoders() -> None:
    pools = {"prefill_replicas": 1, "decode_replicas": 3}
    _, off = _run(False, **pools)
    table, on = _run(True, **pools)
    assert off["mixed_requests"] == 0
    assert on["mixed_requests"] > 0
    assert on["ttft_p90_s"] < 0.8 * off["ttft_p90_s"]
    # requests served end to end ran on decode replicas (ids 1..3), never moved
    mixed = table.filter(pl.col("replica") == pl.col("prefill_replica"))
    assert mixed.height == on["mixed_requests"]
    assert mixed["replica"].min() >= 1  # type: ignore[operator]
    assert table["e2e_s"].is_finite().all()


def test_a_full_decode_pool_keeps_requests_on_their_prefill_replica() -> None:
    small = ReplicaSpec(model="llama-3.1-8b", gpu_memory_utilization=0.25)
    pools = {"prefill_replicas": 3, "decode_replicas": 1, "decode_replica": small}
    _, off = _run(False, **pools)
    table, on = _run(True, **pools)
    assert on["preemptions"] < off["preemptions"] / 2
    assert on["tpot_p50_s"] < off["tpot_p50_s"] / 10
    kept = table.filter(pl.col("replica") == pl.col("prefill_replica"))
    assert kept.height == on["mixed_requests"] > 0
    # mostly on the prefill replicas (0..2); a few prompts also overflowed to the decoder
    assert (kept["replica"] <= 2).mean() > 0.9  # type: ignore[operator]


def test_a_light_load_never_mixes() -> None:
    light = poisson_requests(200, qps=1.0, seed=2)
    cluster = ClusterSpec(
        replica=ReplicaSpec(model="llama-3.1-8b"), prefill_replicas=2, decode_replicas=2
    )
    off = simulate(light, cluster, seed=1)
    on = simulate(light, cluster.model_copy(update={"mixed_pool": True}), seed=1)
    assert on.metrics["mixed_requests"] == 0
    assert on.requests["ttft_s"].to_list() == pytest.approx(off.requests["ttft_s"].to_list())


def test_mixed_pool_needs_two_pools() -> None:
    with pytest.raises(ValueError, match="mixed_pool needs disaggregation"):
        ClusterSpec(mixed_pool=True)
    with pytest.raises(ValueError, match="pp == 1"):
        ClusterSpec(
            replica=ReplicaSpec(model="llama-3.1-8b", pp=2),
            prefill_replicas=1,
            decode_replicas=1,
            mixed_pool=True,
        )
    runner = CliRunner()
    res = runner.invoke(app, ["inference", "simulate", "--qps", "2", "--mixed-pool"])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    assert "mixed_pool needs disaggregation" in str(res.exception)
    res = runner.invoke(
        app,
        ["inference", "simulate", "--qps", "8", "--disaggregate", "1:2", "--mixed-pool", "--json"],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"]["mixed_requests"] >= 0
