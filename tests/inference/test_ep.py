"""Expert parallelism for MoE models: closed-form golden case and invariants."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab.errors import ConfigError
from fleetlab.inference import (
    ClusterSpec,
    Efficiency,
    GpuSpec,
    ModelSpec,
    ReplicaSpec,
    compile_model,
    gpu_spec,
    model_spec,
    simulate,
)
from fleetlab.inference._ep import alltoall_time, expert_load
from fleetlab.inference._perf import linear_time

#: a 1-layer MoE (4 experts, top-2) on a compute-bound toy GPU: every GEMM costs exactly
#: 2·t·k·n / 1e12 s, streaming is free, and a collective costs 1 us + bytes / 1 GB/s
TINY = ModelSpec(
    name="tiny-moe",
    num_layers=1,
    hidden_size=64,
    num_heads=4,
    num_kv_heads=4,
    intermediate_size=128,
    vocab_size=100,
    num_experts=4,
    experts_per_token=2,
)
TOY_EFF = Efficiency(
    compute_max=1.0,
    compute_half_tokens=0.0,
    memory=1.0,
    kernel_overhead_s=0.0,
    allreduce_latency_s=1e-6,
    allreduce_efficiency=1.0,
)
TOY_GPU = GpuSpec(
    name="toy",
    bf16_flops=1e12,
    hbm_bytes_per_s=1e18,
    memory_bytes=1e12,
    intra_node_bytes_per_s=1e9,
    inter_node_bytes_per_s=1e9,
    tdp_w=100,
    idle_w=10,
    usd_per_hour=1.0,
    efficiency=TOY_EFF,
)


def test_expert_load_closed_form() -> None:
    # E=4, k=2: touched = 4 (1 - (1/2)^T); T=1 -> 2 experts of 1 row, T=2 -> 3 of 4/3 rows
    one = expert_load(np.array([0.0, 1.0, 2.0]), num_experts=4, experts_per_token=2, ep=1)
    assert one.touched_experts.tolist() == pytest.approx([0.0, 2.0, 3.0])
    assert one.rows_per_expert.tolist() == pytest.approx([0.0, 1.0, 4 / 3])
    two = expert_load(np.array([2.0]), num_experts=4, experts_per_token=2, ep=2)
    assert two.touched_experts[0] == pytest.approx(1.5)
    assert two.routed_rows[0] == pytest.approx(2.0)  # T·k / ep


def test_alltoall_closed_form() -> None:
    # T=4, h=8, k=2, ep=2, 2-byte activations: each all-to-all moves (4/2)·2·8·2·1/2 = 32 B,
    # the all-gather 4·8·2·1/2 = 32 B, at 1000 B/s · 0.5; three 1 ms latencies
    t = alltoall_time(
        np.array([0.0, 4.0]),
        hidden_size=8,
        experts_per_token=2,
        ep=2,
        link_bytes_per_s=1000.0,
        latency_s=1e-3,
        efficiency=0.5,
    )
    assert t.tolist() == pytest.approx([0.0, 3e-3 + 2 * 32 / 500 + 32 / 500])
    assert alltoall_time(
        np.array([4.0]),
        hidden_size=8,
        experts_per_token=2,
        ep=1,
        link_bytes_per_s=1e3,
        latency_s=1e-3,
        efficiency=0.5,
    ).tolist() == [0.0]


def test_golden_moe_layer_with_and_without_ep() -> None:
    """tp=2, T=2 tokens, worked by hand (see the comments); streaming terms are ~1e-14 s."""
    t = np.array([2.0])
    ep1 = linear_time(TINY, TOY_GPU, t, tp=2, ep=1)[0]
    ep2 = linear_time(TINY, TOY_GPU, t, tp=2, ep=2)[0]
    # attention projections: q = 4·16/2 = 32, kv = 2·16 = 32 -> 2·2·64·96 + 2·2·32·64 FLOPs
    attn = (2 * 2 * 64 * 96 + 2 * 2 * 32 * 64) / 1e12
    router = 2 * 2 * 64 * 4 / 1e12
    # experts: 3 touched x 4/3 rows; ep=1: width 128/2 = 64 (up 128); ep=2: 1.5 per rank,
    # width 128 (up 256): 2·(4/3)·64·192·3 = 2·(4/3)·64·384·1.5 = 98,304 FLOPs either way
    experts = 98304 / 1e12
    ar = 1e-6 + 2 * (1 / 2) * 256 / 1e9  # ring all-reduce of 2·64·2 bytes over 2 GPUs
    a2a = 3e-6 + 2 * 128 / 1e9 + 128 / 1e9  # (2/2)·2·64·2·1/2 = 128 B; gather 2·64·2·1/2
    # + one more all-reduce either way: the vocab-parallel embedding sums the 2 ranks' rows
    assert ep1 == pytest.approx(attn + router + experts + 2 * ar + ar, rel=1e-6)
    assert ep2 == pytest.approx(attn + router + experts + ar + a2a + ar, rel=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    tokens=st.integers(min_value=1, max_value=4096),
    tp_ep=st.sampled_from([(2, 2), (4, 2), (4, 4), (8, 2), (8, 4), (8, 8)]),
)
def test_ep_moves_work_but_never_changes_it(tokens: int, tp_ep: tuple[int, int]) -> None:
    tp, ep = tp_ep
    m = model_spec("mixtral-8x7b")
    load = expert_load(np.array([float(tokens)]), num_experts=8, experts_per_token=2, ep=ep)
    assert load.routed_rows[0] * ep == pytest.approx(tokens * 2)  # every routed row runs once
    base = expert_load(np.array([float(tokens)]), num_experts=8, experts_per_token=2, ep=1)
    assert load.touched_experts[0] * ep == pytest.approx(base.touched_experts[0])
    a = compile_model(m, gpu_spec("h100"), tp=tp, max_tokens=64, max_seqs=8, ep=1)
    b = compile_model(m, gpu_spec("h100"), tp=tp, max_tokens=64, max_seqs=8, ep=ep)
    assert a.linear_flops_per_token == b.linear_flops_per_token
    assert a.weight_bytes_per_gpu == b.weight_bytes_per_gpu
    np.testing.assert_array_equal(a.head, b.head)  # LM head and sampling are untouched
    assert a.attn_prefill_per_pair == b.attn_prefill_per_pair


def test_ep_one_is_the_tensor_parallel_model() -> None:
    m, g = model_spec("mixtral-8x7b"), gpu_spec("h100")
    for tp in (1, 2, 4, 8):
        default = compile_model(m, g, tp=tp, max_tokens=256, cuda_graph_tokens=64)
        explicit = compile_model(m, g, tp=tp, max_tokens=256, cuda_graph_tokens=64, ep=1)
        np.testing.assert_array_equal(default.linear, explicit.linear)


def test_experts_run_as_one_grouped_gemm_per_projection() -> None:
    """Touched experts share two kernels per layer: one fixed cost, everyone's bytes."""
    from fleetlab.inference._perf import gemm_time, linear_ops

    m, g = model_spec("qwen3-235b-a22b"), gpu_spec("h100")
    eff = g.efficiency.model_copy(  # the experts' own GEMM curve
        update={
            "compute_max": g.efficiency.moe_compute_max,
            "compute_half_tokens": g.efficiency.moe_compute_half_tokens,
            "memory": g.efficiency.moe_memory,
        }
    )
    for t in (1.0, 16.0, 512.0):
        load = expert_load(np.array([t]), num_experts=128, experts_per_token=8, ep=4)
        rows = load.rows_per_expert
        h, inter = m.hidden_size, m.intermediate_size  # tp 4, ep 4: whole experts
        one = gemm_time(rows, h, 2 * inter, gpu=g, eff=eff) + gemm_time(
            rows, inter, h, gpu=g, eff=eff
        )
        want = load.touched_experts * (one - 2 * eff.kernel_overhead_s) + 2 * eff.kernel_overhead_s
        got = linear_ops(m, g, np.array([t]), tp=4, ep=4)["experts"]
        assert got[0] == pytest.approx(m.num_layers * want[0], rel=1e-12)


def test_ep_token_counts_in_a_simulation() -> None:
    reqs = pl.DataFrame(
        {
            "arrival_s": np.linspace(0.0, 2.0, 24),
            "prompt_tokens": np.full(24, 300),
            "output_tokens": np.arange(24) % 7 + 5,
        }
    )
    out = []
    for ep in (1, 2):
        spec = ClusterSpec(replica=ReplicaSpec(model="mixtral-8x7b", gpu="h100", tp=2, ep=ep))
        res = simulate(reqs, spec)
        out.append(res)
        assert res.requests.height == 24
    assert out[0].replicas["tokens"].sum() == out[1].replicas["tokens"].sum()
    assert out[0].metrics["requests"] == out[1].metrics["requests"] == 24
    # the simulator uses the EP model: same tokens, different iteration times
    e2e = [r.requests["e2e_s"].sum() for r in out]
    assert e2e[0] != pytest.approx(e2e[1], rel=1e-6)


def test_bad_ep_is_named() -> None:
    with pytest.raises(ConfigError, match=r"field ep.*dense"):
        compile_model(model_spec("llama-3-8b"), gpu_spec("h100"), tp=2, max_tokens=8, ep=2)
    with pytest.raises(ConfigError, match="divisor of tp"):
        compile_model(model_spec("mixtral-8x7b"), gpu_spec("h100"), tp=2, max_tokens=8, ep=4)
    with pytest.raises(ValueError, match="must divide tp"):
        ReplicaSpec(model="mixtral-8x7b", tp=4, ep=3)
