"""Calibration from aiconfigurator's measured kernel tables, and the all-reduce step latency."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fleetlab.errors import DataNotFoundError, InputFormatError
from fleetlab.inference import Efficiency, gpu_spec
from fleetlab.inference._kernels import calibrate_kernels, read_kernel_table
from fleetlab.inference._perf import allreduce_time, gemm_time

needs_aic = pytest.mark.skipif(
    importlib.util.find_spec("aiconfigurator_core") is None,
    reason="aiconfigurator-core not installed",
)


def _write_synthetic(root: Path, eff: Efficiency) -> None:
    """Kernel tables in aiconfigurator's layout whose times follow ``eff`` exactly."""
    g = gpu_spec("h100")
    base = root / "h100_sxm"
    m, n, k = np.meshgrid([1, 16, 128, 1024, 8192], [1024, 4096, 14336], [1024, 4096, 8192])
    m, n, k = m.ravel(), n.ravel(), k.ravel()
    t = gemm_time(m, k, n, gpu=g, eff=eff)  # type: ignore[arg-type]
    gemm = pl.DataFrame({"gemm_dtype": "bfloat16", "m": m, "n": n, "k": k, "latency": t * 1e3})
    (base / "gemm/vllm/0.1.0").mkdir(parents=True)
    gemm.write_parquet(base / "gemm/vllm/0.1.0/gemm_perf.parquet")
    b, s = np.meshgrid([1, 4, 16], [256, 1024, 4096])
    b, s = b.ravel(), s.ravel()
    pairs = b * s * (s + 1) / 2 * 4 * 32 * 128
    ctx = pl.DataFrame(
        {
            "batch_size": b,
            "isl": s,
            "num_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "kv_cache_dtype": "bfloat16",
            "window_size": 0,
            "latency": (20e-6 + pairs / (g.bf16_flops * eff.attn_prefill)) * 1e3,
        }
    )
    kv = b * s * 2.0 * 8 * 128 * 2
    gen = ctx.drop("isl").with_columns(
        step=pl.Series(s),
        latency=pl.Series((10e-6 + kv / (g.hbm_bytes_per_s * eff.attn_decode)) * 1e3),
    )
    (base / "attention/vllm/0.1.0").mkdir(parents=True)
    ctx.write_parquet(base / "attention/vllm/0.1.0/context_attention_perf.parquet")
    gen.write_parquet(base / "attention/vllm/0.1.0/generation_attention_perf.parquet")
    w, size = np.meshgrid([2, 4, 8], 2.0 ** np.arange(10, 28, 2))
    w, size = w.ravel(), size.ravel()
    ar = np.concatenate(
        [
            allreduce_time(
                size[w == x] * 2, int(x), link_bytes_per_s=g.intra_node_bytes_per_s, eff=eff
            )
            for x in (2, 4, 8)
        ]
    )
    order = np.concatenate([np.flatnonzero(w == x) for x in (2, 4, 8)])
    comm = pl.DataFrame(
        {
            "kernel_source": "custom_graph",
            "num_gpus": w[order],
            "message_size": size[order].astype(np.int64),
            "latency": ar * 1e3,
        }
    )
    (base / "comm/vllm/0.1.0").mkdir(parents=True)
    comm.write_parquet(base / "comm/vllm/0.1.0/custom_allreduce_perf.parquet")


def test_calibration_recovers_known_efficiencies(tmp_path: Path) -> None:
    truth = gpu_spec("h100").efficiency.model_copy(
        update={
            "compute_max": 0.7,
            "compute_half_tokens": 64.0,
            "memory": 0.85,
            "kernel_overhead_s": 5e-6,
            "attn_prefill": 0.55,
            "attn_decode": 0.7,
            "allreduce_latency_s": 8e-6,
            "allreduce_efficiency": 0.6,
            "allreduce_step_latency_s": 0.0,
        }
    )
    _write_synthetic(tmp_path, truth)
    fit = calibrate_kernels("h100", backend="vllm", root=tmp_path)
    e = fit.efficiency
    assert e.compute_max == pytest.approx(0.7, rel=1e-3)
    assert e.compute_half_tokens == pytest.approx(64.0, rel=1e-2)
    assert e.memory == pytest.approx(0.85, rel=1e-3)
    assert e.kernel_overhead_s == pytest.approx(5e-6, rel=1e-2)
    assert e.attn_prefill == pytest.approx(0.55, rel=1e-3)
    assert e.attn_decode == pytest.approx(0.7, rel=1e-3)
    assert e.allreduce_efficiency == pytest.approx(0.6, rel=1e-3)
    assert e.allreduce_latency_s == pytest.approx(8e-6, rel=1e-2)
    assert fit.stats["prefill_attention_fixed_us"] == pytest.approx(20.0, rel=1e-2)
    for part in ("gemm", "prefill_attention", "decode_attention", "allreduce"):
        assert fit.stats[f"{part}_mape"] < 0.5


def test_bad_kernel_tables_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="mi300x"):
        read_kernel_table("mi300x", "gemm", root=tmp_path)
    with pytest.raises(DataNotFoundError, match=r"gemm_perf\.parquet"):
        read_kernel_table("h100", "gemm", root=tmp_path)
    bad = tmp_path / "h100_sxm/gemm/vllm/1.0"
    bad.mkdir(parents=True)
    pl.DataFrame({"m": [1], "latency": [0.1]}).write_parquet(bad / "gemm_perf.parquet")
    with pytest.raises(InputFormatError, match="gemm_dtype"):
        read_kernel_table("h100", "gemm", root=tmp_path)


@needs_aic
def test_real_h100_kernels_fit_and_match_the_builtin_attention() -> None:
    fit = calibrate_kernels("h100", backend="vllm")
    s = fit.stats
    # measured: GEMM 6.8 %, prefill attention 12.9 %, decode attention 17.2 %, all-reduce 14 %
    assert s["gemm_rows"] > 10000 and s["gemm_mape"] < 8
    assert s["prefill_attention_mape"] < 14 and s["decode_attention_mape"] < 18
    assert s["allreduce_mape"] < 15
    builtin = gpu_spec("h100").efficiency
    assert fit.efficiency.attn_prefill == pytest.approx(builtin.attn_prefill, abs=0.005)
    assert fit.efficiency.attn_decode == pytest.approx(builtin.attn_decode, abs=0.005)
    assert fit.efficiency.attn_query_s == pytest.approx(builtin.attn_query_s, rel=0.01)
    # MoE grouped GEMMs: their own curve fits the measured MoE kernels better than the
    # dense one (measured 20.1 % against 24.6 %), and it is the built-in
    assert s["moe_mape"] < s["moe_mape_dense_curve"] < 30
    assert fit.efficiency.moe_compute_max == pytest.approx(builtin.moe_compute_max, abs=0.005)
    assert fit.efficiency.moe_memory == pytest.approx(builtin.moe_memory, abs=0.005)
    # fp8 GEMMs reach a smaller fraction of their (2x) peak than bf16 ones
    fp8 = calibrate_kernels("h100", backend="vllm", dtype="fp8").efficiency
    assert fp8.compute_max < fit.efficiency.compute_max


def test_allreduce_step_latency_closed_form() -> None:
    eff = Efficiency(
        allreduce_latency_s=1e-5, allreduce_step_latency_s=2e-5, allreduce_efficiency=0.5
    )
    t = allreduce_time(np.array([0.0, 1e6]), 8, link_bytes_per_s=1e11, eff=eff)
    # 1e-5 + 2e-5 * log2(8) + 2 * 7/8 * 1e6 / (1e11 * 0.5)
    assert t.tolist() == pytest.approx([0.0, 1e-5 + 6e-5 + 3.5e-5])
    flat = eff.model_copy(update={"allreduce_step_latency_s": 0.0})
    assert allreduce_time(np.array([1e6]), 2, link_bytes_per_s=1e11, eff=flat)[0] == (
        pytest.approx(1e-5 + 1e6 / 5e10)
    )
