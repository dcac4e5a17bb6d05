"""A GPU locked at a lower SM clock (DVFS): slower prefill, unchanged decode, less power."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetlab.errors import ConfigError
from fleetlab.inference import (
    ClusterSpec,
    ReplicaSpec,
    compile_model,
    gpu_spec,
    model_spec,
    poisson_requests,
    simulate,
)
from fleetlab.inference._perf import prefill_breakdown


@given(f=st.floats(min_value=0.11, max_value=1.0))
def test_clock_scales_the_tensor_cores_not_the_memory(f: float) -> None:
    g = gpu_spec("h100")
    low = g.at_clock(f)
    assert low.bf16_flops == pytest.approx(g.bf16_flops * f)
    assert low.fp8_flops == pytest.approx(g.fp8_flops * f)  # type: ignore[operator]
    assert (low.hbm_bytes_per_s, low.tdp_w, low.idle_w) == (
        g.hbm_bytes_per_s,
        g.tdp_w,
        g.idle_w,
    )
    # the same work draws no more power at a lower clock, and streaming alone barely less
    for u_c, u_m in ((0.0, 0.9), (0.05, 0.85), (0.6, 0.1)):
        assert low.power_w(u_c / f, u_m) <= g.power_w(u_c, u_m) + 1e-9


def test_full_clock_is_the_gpu_and_bad_clocks_are_refused() -> None:
    g = gpu_spec("h100")
    assert g.at_clock(1.0) is g
    for bad in (0.0, 0.1, 1.2):
        with pytest.raises(ConfigError, match="gpu clock"):
            g.at_clock(bad)


def test_prefill_stretches_and_decode_does_not() -> None:
    """Splitwise's power-capped H100 table assumes prompt x1.3 and equal token times."""
    m, g = model_spec("llama-2-70b"), gpu_spec("h100")
    low = g.at_clock(1 / 1.3)
    for tp in (2, 8):
        for tokens in (2048, 8192):
            ratio = sum(prefill_breakdown(m, low, tokens, tp=tp).values()) / sum(
                prefill_breakdown(m, g, tokens, tp=tp).values()
            )
            assert 1.1 < ratio <= 1.3  # memory-bound parts and the CPU do not stretch
        fast = compile_model(m, g, tp=tp, max_tokens=64, max_seqs=64)
        slow = compile_model(m, low, tp=tp, max_tokens=64, max_seqs=64)
        dec = (8, 0.0, 8 * 1024.0, 8)
        assert slow.time(*dec) == pytest.approx(fast.time(*dec), rel=0.01)


def test_lower_clock_saves_energy_at_a_latency_cost() -> None:
    req = poisson_requests(200, qps=4.0, seed=5)
    out = {}
    for clock in (1.0, 0.7):
        spec = ClusterSpec(
            replica=ReplicaSpec(
                model="llama-3.1-8b", scheduler="sarathi", chunk_size=512, gpu_clock=clock
            )
        )
        out[clock] = simulate(req, spec, seed=1).metrics
    assert out[0.7]["ttft_p50_s"] > out[1.0]["ttft_p50_s"]
    assert out[0.7]["energy_j"] < 0.9 * out[1.0]["energy_j"]
    with pytest.raises(ValueError, match="gpu_clock"):
        ReplicaSpec(gpu_clock=1.5)
