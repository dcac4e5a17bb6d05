"""The serving engine: golden timings, invariants, schedulers, routers, disaggregation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab.errors import InputFormatError
from fleetlab.inference import (
    ClusterSpec,
    ReplicaSpec,
    compile_model,
    gpu_spec,
    memory_plan,
    model_spec,
    poisson_requests,
    simulate,
)


def _requests(rows: list[tuple[float, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "arrival_s": [r[0] for r in rows],
            "prompt_tokens": [r[1] for r in rows],
            "output_tokens": [r[2] for r in rows],
        }
    )


def _cluster(replicas: int = 1, **kw: object) -> ClusterSpec:
    return ClusterSpec(
        replica=ReplicaSpec(model="llama-3-8b", gpu="h100", **kw),  # type: ignore[arg-type]
        replicas=replicas,
    )


@pytest.mark.parametrize("scheduler", ["vllm", "orca"])
def test_single_request_golden_timing(scheduler: str) -> None:
    spec = _cluster(scheduler=scheduler)
    perf = compile_model(
        model_spec("llama-3-8b"),
        gpu_spec("h100"),
        max_tokens=8192 + 256,
        max_seqs=256,
        cuda_graph_tokens=512,
    )
    p, o = 1000, 50
    res = simulate(_requests([(2.0, p, o)]), spec)
    ttft = perf.time(p, p * (p + 1) / 2, 0.0, 1)
    a = perf.linear[1] + perf.head[1] + perf.attn_fixed
    decode = sum(a + perf.attn_decode_per_token * (p + 1 + j) for j in range(o - 1))
    row = res.requests.row(0, named=True)
    assert row["ttft_s"] == pytest.approx(ttft, rel=1e-9)
    assert row["e2e_s"] == pytest.approx(ttft + decode, rel=1e-9)
    assert row["tpot_s"] == pytest.approx(decode / (o - 1), rel=1e-9)
    last = a + perf.attn_decode_per_token * (p + 1 + o - 2)
    assert row["tbt_max_s"] == pytest.approx(last, rel=1e-9)
    assert row["queueing_s"] == 0.0


def test_sarathi_chunks_a_long_prompt() -> None:
    perf = compile_model(
        model_spec("llama-3-8b"), gpu_spec("h100"), max_tokens=8192 + 256, cuda_graph_tokens=512
    )
    res = simulate(_requests([(0.0, 1200, 2)]), _cluster(scheduler="sarathi", chunk_size=512))
    chunks = [(0, 512), (512, 512), (1024, 176)]
    ttft = sum(
        perf.time(ln, ln * (s + (ln + 1) / 2), 0.0, 1 if s + ln == 1200 else 0) for s, ln in chunks
    )
    assert res.requests["ttft_s"][0] == pytest.approx(ttft, rel=1e-9)


def test_decode_stretch_is_cut_when_a_request_arrives() -> None:
    # the second request must start right after the iteration running at its arrival
    res = simulate(_requests([(0.0, 100, 400), (1.0, 100, 5)]), _cluster())
    r = res.requests
    assert r["queueing_s"][1] < 0.03  # at most one decode iteration
    assert r["ttft_s"][1] < 0.06


@pytest.mark.parametrize("scheduler", ["vllm", "sarathi", "orca"])
def test_kv_capacity_never_exceeded_and_preemption_recovers(scheduler: str) -> None:
    # a tiny KV cache (gpu_memory_utilization just above what weights need) forces preemption
    spec = _cluster(scheduler=scheduler, gpu_memory_utilization=0.26, max_num_seqs=128)
    plan = memory_plan(spec.replica)
    reqs = poisson_requests(400, qps=40.0, seed=3, max_tokens=4000)
    res = simulate(reqs, spec, sample_every_s=0.0)
    assert res.requests["e2e_s"].is_finite().all()
    assert res.timeseries["kv_used"].max() <= 1.0
    assert plan.kv_tokens < 30000
    if scheduler != "orca":  # orca reserves the whole output up front: never preempts
        assert res.metrics["preemptions"] > 0
    else:
        assert res.metrics["preemptions"] == 0


@pytest.mark.parametrize("scheduler", ["vllm", "sarathi", "orca"])
def test_littles_law_on_the_simulated_system(scheduler: str) -> None:
    res = simulate(poisson_requests(1500, qps=8.0, seed=1), _cluster(2, scheduler=scheduler))
    m = res.metrics
    lam = m["requests"] / m["duration_s"]
    assert m["mean_in_system"] == pytest.approx(lam * m["e2e_mean_s"], rel=1e-6)


def test_more_replicas_never_raise_p50_latency() -> None:
    reqs = poisson_requests(1500, qps=20.0, seed=2)
    p50 = [
        simulate(reqs, _cluster(n, scheduler="sarathi")).metrics["e2e_p50_s"] for n in (1, 2, 4, 8)
    ]
    assert all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(p50))


@settings(max_examples=15, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 20), st.integers(1, 3000), st.integers(1, 500)),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from(["vllm", "sarathi", "orca"]),
    st.integers(1, 3),
)
def test_every_request_completes_in_causal_order(
    rows: list[tuple[float, int, int]], scheduler: str, replicas: int
) -> None:
    res = simulate(_requests(rows), _cluster(replicas, scheduler=scheduler))
    r = res.requests
    assert r.height == len(rows)
    assert (r["queueing_s"] >= 0).all()
    assert (r["ttft_s"] > 0).all()
    assert (r["e2e_s"] >= r["ttft_s"]).all()
    assert (r["tpot_s"] >= 0).all()
    multi = r.filter(pl.col("output_tokens") > 1)
    assert (multi["tbt_max_s"] >= multi["tpot_s"] * (1 - 1e-9)).all()
    out = int(r["output_tokens"].sum())
    produced = int(res.replicas["tokens"].sum())
    # every prompt token is prefilled once and every later token decoded once (the first
    # output token comes out of the prefill); recomputation after preemption only adds
    expected = int(r["prompt_tokens"].sum()) + out - r.height
    if res.metrics["preemptions"] == 0:
        assert produced == expected
    else:
        assert produced > expected


def test_routers_spread_and_affinity() -> None:
    reqs = poisson_requests(400, qps=50.0, seed=4)
    rr = simulate(reqs, ClusterSpec(replica=ReplicaSpec(), replicas=4, router="round_robin"))
    counts = rr.requests["replica"].value_counts()["count"].to_list()
    assert counts == [100] * 4
    for router in ("least_outstanding", "least_kv", "power_of_two"):
        res = simulate(reqs, ClusterSpec(replica=ReplicaSpec(), replicas=4, router=router), seed=1)
        assert res.requests["replica"].n_unique() == 4
    # at moderate load, prefix affinity keeps each prefix on its home replica
    prefixed = poisson_requests(400, qps=10.0, seed=4).with_columns(
        prefix_ids=pl.Series([[i % 4, 100 + i] for i in range(400)])
    )

    def home_share(router: str) -> float:
        res = simulate(prefixed, ClusterSpec(replica=ReplicaSpec(), replicas=4, router=router))
        homes = res.requests.with_columns(key=pl.Series([i % 4 for i in range(400)]))
        top = homes.group_by("key", "replica").len().group_by("key").agg(pl.col("len").max())
        return float(top["len"].sum()) / 400

    assert home_share("prefix") > 0.9
    assert home_share("prefix") > 2 * home_share("least_outstanding")


def test_prefix_caching_cuts_prefill_work() -> None:
    n = 200
    reqs = poisson_requests(n, qps=5.0, seed=5).with_columns(
        prompt_tokens=pl.lit(2048, dtype=pl.Int64),
        prefix_ids=pl.Series([[1, 2, 3, 1000 + i] for i in range(n)]),
    )
    base = simulate(reqs, ClusterSpec(replica=ReplicaSpec()))
    cached = simulate(reqs, ClusterSpec(replica=ReplicaSpec(prefix_caching=True)))
    assert cached.requests["cached_tokens"][1:].min() == 3 * 512
    assert cached.metrics["ttft_mean_s"] < 0.5 * base.metrics["ttft_mean_s"]


def test_disaggregation_moves_kv_and_splits_pools() -> None:
    reqs = poisson_requests(500, qps=10.0, seed=6)
    spec = ClusterSpec(replica=ReplicaSpec(), prefill_replicas=1, decode_replicas=2)
    res = simulate(reqs, spec)
    r = res.requests
    assert set(r["prefill_replica"].unique()) == {0}
    assert set(r["replica"].unique()) <= {1, 2}
    assert res.replicas["pool"].to_list() == ["prefill", "decode", "decode"]
    # decode pool never runs prefill: its TPOT has no prefill stalls, lower than co-located
    mixed = simulate(reqs, ClusterSpec(replica=ReplicaSpec(), replicas=3))
    assert res.metrics["tpot_p99_s"] < mixed.metrics["tpot_p99_s"]
    slow = simulate(reqs, spec.model_copy(update={"kv_link": "inter_node"}))
    fast = simulate(reqs, spec.model_copy(update={"kv_link": "intra_node"}))
    assert fast.metrics["e2e_mean_s"] < slow.metrics["e2e_mean_s"]


def test_energy_and_cost_are_consistent() -> None:
    reqs = poisson_requests(500, qps=5.0, seed=7)
    res = simulate(reqs, _cluster(2))
    m, g = res.metrics, gpu_spec("h100")
    assert g.idle_w * 2 <= m["mean_power_w"] <= g.tdp_w * 2
    assert m["cost_usd"] == pytest.approx(2 * m["duration_s"] / 3600 * g.usd_per_hour)
    assert m["energy_per_output_token_j"] == pytest.approx(
        m["energy_j"] / res.requests["output_tokens"].sum()
    )


def test_bad_inputs_fail_before_simulating() -> None:
    with pytest.raises(InputFormatError, match="empty"):
        simulate(_requests([]).cast({"arrival_s": pl.Float64}), _cluster())
    with pytest.raises(InputFormatError, match=r"row 1.*context window.*found 9000"):
        simulate(_requests([(0, 10, 10), (1, 8000, 1000)]), _cluster())
    with pytest.raises(InputFormatError, match="output_tokens"):
        simulate(pl.DataFrame({"arrival_s": [0.0], "prompt_tokens": [5]}), _cluster())
    with pytest.raises(InputFormatError, match=">= 1"):
        simulate(_requests([(0, 0, 5)]), _cluster())


def test_metrics_are_finite_and_percentiles_ordered() -> None:
    res = simulate(poisson_requests(1000, qps=10.0, seed=8), _cluster(2, scheduler="sarathi"))
    m = res.metrics
    for k in ("ttft", "tpot", "e2e"):
        assert m[f"{k}_p50_s"] <= m[f"{k}_p90_s"] <= m[f"{k}_p99_s"]
    assert all(math.isfinite(v) for v in m.values() if isinstance(v, float))
    assert np.isclose(
        res.replicas["utilization"].to_numpy(), res.replicas["busy_s"].to_numpy() / m["duration_s"]
    ).all()


def test_chunked_prefill_removes_generation_stalls() -> None:
    # Sarathi-Serve's point: vLLM's prefill iterations stall running decodes, chunking does not
    reqs = poisson_requests(800, qps=12.0, seed=9)
    vllm = simulate(reqs, _cluster(scheduler="vllm")).metrics
    sarathi = simulate(reqs, _cluster(scheduler="sarathi", chunk_size=512)).metrics
    assert sarathi["tbt_max_p99_s"] < 0.7 * vllm["tbt_max_p99_s"]
    assert vllm["ttft_p50_s"] < sarathi["ttft_p50_s"]  # and prefill-first has lower TTFT
