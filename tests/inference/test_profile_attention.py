"""The attention profiler, its reader and calibration, and the profiles measured on an H100."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from fleetlab.cli import app
from fleetlab.errors import ConfigError, InputFormatError
from fleetlab.inference import (
    AttentionShape,
    ModelSpec,
    NumpyTimer,
    calibrate,
    gpu_spec,
    model_spec,
    profile_attention,
    read_vidur_attention,
    read_vidur_compute,
)

H100_RUN = Path(__file__).parents[2] / "benchmarks" / "results" / "h100-2026-11-26"
H200_RUN = H100_RUN.with_name("h200-2026-11-26")


def _gemm_s(parts: dict[str, float]) -> float:
    """The GEMM part of a modelled prefill (prefill_breakdown), seconds."""
    return sum(parts[k] for k in ("qkv", "o_proj", "mlp_up", "mlp_down", "lm_head"))


def _gemm_ratio(ours: Path, base: Path) -> tuple[float, float]:
    """Median time ratio of two profiles' GEMMs: of >= 1,024 tokens, and of <= 16."""
    both = read_vidur_compute(ours).join(
        read_vidur_compute(base), on=["op", "num_tokens", "tp"], suffix="_base"
    )
    ratio = both.filter(pl.col("op").str.ends_with("_proj")).with_columns(
        r=pl.col("time_ms") / pl.col("time_ms_base")
    )
    big = ratio.filter(pl.col("num_tokens") >= 1024)["r"].median()
    small = ratio.filter(pl.col("num_tokens") <= 16)["r"].median()
    return float(big), float(small)  # type: ignore[arg-type]


TINY = ModelSpec(
    name="tiny",
    num_layers=2,
    hidden_size=256,
    num_heads=8,
    num_kv_heads=4,
    intermediate_size=688,
    vocab_size=1000,
)


def test_attention_profile_has_vidurs_columns_and_grid() -> None:
    table = profile_attention(
        TINY,
        timer=NumpyTimer(seed=0),
        tp_degrees=[1, 2],
        prefill_chunks=[16, 64],
        prefix_lengths=[0, 32],
        decode_batches=[1, 4],
        decode_contexts=[32, 128],
        max_model_len=96,
        repeats=2,
    )
    # per TP: prefill (16, 0) (16, 32) (64, 0) (64, 32); decode 2 batches x 32 (128 > 96)
    assert table.height == 2 * (4 + 2)
    assert {
        "time_stats.attn_prefill.median",
        "time_stats.attn_decode.median",
        "time_stats.attn_kv_cache_save.median",
        "n_q_head",
        "n_kv_head",
        "block_size",
        "prefill_chunk_size",
        "kv_cache_size",
        "is_prefill",
        "attention_backend",
    } <= set(table.columns)
    prefill = table.filter(pl.col("is_prefill"))
    assert (prefill["time_stats.attn_prefill.median"] > 0).all()
    assert (prefill["time_stats.attn_decode.median"] == 0).all()
    assert (table["attention_backend"] == "NUMPY").all()


def test_numpy_attention_is_lower_right_causal() -> None:
    """A chunk after a prefix sees the prefix and its own earlier tokens (checked by value)."""
    timer = NumpyTimer(seed=0)
    shape = AttentionShape(batch=1, q_len=3, kv_len=5, q_heads=4, kv_heads=2, head_dim=8)
    ms, backend = timer.attention(shape, repeats=1)
    assert backend == "NUMPY" and ms[0] > 0
    hidden = np.arange(5)[None, :] > (5 - 3 + np.arange(3))[:, None]
    # token 0 of the chunk sees keys 0..2, token 2 sees all five
    assert hidden.tolist() == [[False] * 3 + [True] * 2, [False] * 4 + [True], [False] * 5]


class _KnownAttention:
    """Attention times of a known efficiency: calibration must recover them."""

    def __init__(self, gpu: str = "h100", prefill: float = 0.55, decode: float = 0.8) -> None:
        self.g, self.prefill, self.decode = gpu_spec(gpu), prefill, decode
        self.query_s = 0.3e-9

    def attention(self, shape: AttentionShape, repeats: int) -> tuple[list[float], str]:
        b, q, kv, hq, hkv, d = shape
        s = self.query_s * b * q * hq
        if q > 1:
            pairs = b * (q * (kv - q) + q * (q + 1) / 2)
            s += 8e-6 + pairs * 4 * hq * d / (self.g.peak_flops("bf16") * self.prefill)
        else:
            s += 6e-6 + b * kv * 2 * hkv * d * 2 / (self.g.hbm_bytes_per_s * self.decode)
        return [s * 1e3] * repeats, "KNOWN"

    def kv_save(self, tokens: int, kv_heads: int, head_dim: int, repeats: int) -> list[float]:
        return [1e-3] * repeats


def test_calibration_recovers_the_attention_efficiencies(tmp_path: Path) -> None:
    table = profile_attention("qwen3-32b", timer=_KnownAttention(), tp_degrees=[1, 8], repeats=1)
    path = tmp_path / "attention.csv"
    table.write_csv(path)
    mlp = H100_RUN / "qwen3-32b" / "mlp.csv"
    eff, stats = calibrate(gpu_spec("h100"), [mlp], attention=path)
    # Qwen3's head width (128) is not hidden / heads (80): the profile records it
    assert eff.attn_prefill == pytest.approx(0.55, rel=0.02)
    assert eff.attn_decode == pytest.approx(0.8, rel=0.02)
    assert eff.attn_query_s == pytest.approx(0.3e-9, rel=0.05)
    assert stats["prefill_attention_fixed_us"] == pytest.approx(8.0, rel=0.1)
    assert stats["prefill_attention_mape"] < 1 and stats["decode_attention_mape"] < 1


_ROW = {
    "time_stats.attn_prefill.median": 0.5,
    "time_stats.attn_decode.median": 0.0,
    "n_embd": 4096,
    "n_q_head": 32,
    "n_kv_head": 8,
    "num_tensor_parallel_workers": 2,
    "batch_size": 1,
    "prefill_chunk_size": 512,
    "kv_cache_size": 1024,
    "is_prefill": True,
}


@given(
    chunk=st.integers(1, 8192),
    prefix=st.integers(0, 8192),
    tp=st.sampled_from([1, 2, 4, 8]),
    ms=st.floats(1e-4, 1e3),
)
def test_attention_reader_work_matches_the_shape(
    tmp_path_factory: pytest.TempPathFactory, chunk: int, prefix: int, tp: int, ms: float
) -> None:
    path = tmp_path_factory.mktemp("att") / "attention.csv"
    row = _ROW | {
        "prefill_chunk_size": chunk,
        "kv_cache_size": prefix,
        "num_tensor_parallel_workers": tp,
        "time_stats.attn_prefill.median": ms,
    }
    pl.DataFrame([row]).write_csv(path)
    got = read_vidur_attention(path).row(0, named=True)
    pairs = chunk * prefix + chunk * (chunk + 1) / 2
    assert got["pair_flops"] == pytest.approx(pairs * 4 * (32 / tp) * 128)
    assert got["time_ms"] == pytest.approx(ms)
    assert got["is_prefill"] is True


@given(bad=st.sampled_from([0.0, -1.0, float("nan")]), where=st.integers(0, 4))
def test_attention_reader_names_a_bad_row(
    tmp_path_factory: pytest.TempPathFactory, bad: float, where: int
) -> None:
    path = tmp_path_factory.mktemp("att") / "attention.csv"
    rows = [dict(_ROW) for _ in range(5)]
    rows[where]["time_stats.attn_prefill.median"] = bad
    pl.DataFrame(rows).write_csv(path)
    with pytest.raises(InputFormatError) as e:
        read_vidur_attention(path)
    msg = str(e.value)
    assert str(path) in msg and f"row {where + 1}" in msg and "attn_prefill" in msg


def test_attention_reader_names_a_missing_column(tmp_path: Path) -> None:
    path = tmp_path / "attention.csv"
    pl.DataFrame([{k: v for k, v in _ROW.items() if k != "kv_cache_size"}]).write_csv(path)
    with pytest.raises(InputFormatError, match="kv_cache_size"):
        read_vidur_attention(path)


def test_cli_profile_writes_both_tables_and_keeps_existing_files(tmp_path: Path) -> None:
    runner = CliRunner()
    args = [
        "inference",
        "profile",
        "--model",
        "llama-3-8b",
        "--tp",
        "8",
        "--tokens",
        "4",
        "--device",
        "cpu",
        "--repeats",
        "1",
        "--max-context",
        "256",
        "-o",
        str(tmp_path / "new" / "mlp.csv"),
        "--json",
    ]
    res = runner.invoke(app, args, env={"FLEETLAB_HOME": str(tmp_path / "home")})
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["attention_rows"] > 0 and out["attention_backends"] == "NUMPY"
    att = read_vidur_attention(tmp_path / "new" / "attention.csv")
    assert att.filter(pl.col("is_prefill"))["prefill_chunk_size"].max() <= 256
    again = runner.invoke(app, args, env={"FLEETLAB_HOME": str(tmp_path / "home")})
    assert isinstance(again.exception, ConfigError) and "--force" in str(again.exception)


# -- the profiles measured on an H100 SXM (benchmarks/results/h100-2026-11-26) ------------


def test_own_h100_profile_agrees_with_vidurs(shared_data: Path) -> None:
    """Per-layer GEMM time of fleetlab's H100 profile against vidur's (another H100)."""
    vidur = shared_data / "vidur-profiles/profiling/compute/h100/meta-llama"
    for ours, theirs in (("llama-2-7b", "Llama-2-7b-hf"), ("llama-2-70b", "Llama-2-70b-hf")):
        a = read_vidur_compute(H100_RUN / ours / "mlp.csv")
        b = read_vidur_compute(vidur / theirs / "mlp.csv")
        both = a.join(b, on=["op", "num_tokens", "tp"], suffix="_v").filter(
            pl.col("op").str.ends_with("_proj") & (pl.col("num_tokens") >= 1024)
        )
        ratio = (both["time_ms"] / both["time_ms_v"]).to_numpy()
        assert 0.85 < np.median(ratio) < 1.1, ours


def test_own_h100_profile_calibrates_near_the_built_in_efficiencies() -> None:
    from fleetlab.inference._perf import prefill_breakdown

    g = gpu_spec("h100")
    for m in ("llama-3.1-8b", "llama-3.1-70b", "qwen3-32b"):
        eff, _ = calibrate(g, [H100_RUN / m / "mlp.csv"], attention=H100_RUN / m / "attention.csv")
        assert 0.85 < eff.attn_decode <= 1.0
        assert 0.75 < eff.compute_max < 0.9
        assert eff.attn_query_s > 0
        # the built-ins come from vidur's profiles and aiconfigurator's FA3 tables: an 8k
        # prompt's attention on PyTorch's fastest kernel (cuDNN) takes a little longer
        ours = prefill_breakdown(model_spec(m), g, 8192, efficiency=eff)["attention"]
        built_in = prefill_breakdown(model_spec(m), g, 8192)["attention"]
        assert 1.0 < ours / built_in < 1.25, m


def test_h100_power_curve_matches_the_measured_gemms() -> None:
    runs = json.loads((H100_RUN / "power.json").read_text())["rows"]
    g = gpu_spec("h100")
    gemms = [r for r in runs if r["workload"].startswith("gemm")]
    assert len(gemms) == 7
    for r in gemms:
        assert g.power_w(r["u_compute"], r["u_memory"]) == pytest.approx(r["w"], rel=0.03)


def test_model_of_a_whole_prefill_against_the_h100_kernels() -> None:
    """GEMM and attention kernel time of a real prefill (PyTorch profiler) vs the model."""
    from fleetlab.inference._perf import prefill_breakdown

    g = gpu_spec("h100")
    for m in ("llama-3.1-8b", "qwen3-32b"):
        profiled, _ = calibrate(
            g, [H100_RUN / m / "mlp.csv"], attention=H100_RUN / m / "attention.csv"
        )
        for r in json.loads((H100_RUN / f"prefill-{m}.json").read_text()):
            if r["tokens"] < 2048:
                continue
            parts = prefill_breakdown(model_spec(m), g, r["tokens"])
            gemm = _gemm_s(parts)
            assert gemm * 1e3 == pytest.approx(r["kernels_gemm_ms"], rel=0.15)
            # attention as calibrated from the same GPU's profile (the same PyTorch kernels)
            attn = prefill_breakdown(model_spec(m), g, r["tokens"], efficiency=profiled)
            assert attn["attention"] * 1e3 == pytest.approx(r["kernels_attention_ms"], rel=0.15)


def test_attention_query_cost_is_linear_in_the_batch_tokens() -> None:
    from fleetlab.inference import compile_model

    m, g = model_spec("llama-3.1-70b"), gpu_spec("h100")
    none = g.efficiency.model_copy(update={"attn_query_s": 0.0})
    with_q = compile_model(m, g, tp=4, efficiency=g.efficiency)
    without = compile_model(m, g, tp=4, efficiency=none)
    per_token = m.num_layers * (m.num_heads / 4) * g.efficiency.attn_query_s
    for t in (1, 64, 4096):
        extra = with_q.time(t, 0.0, 0.0, 1) - without.time(t, 0.0, 0.0, 1)
        assert extra == pytest.approx(per_token * t, rel=1e-9)


def test_cli_calibrate_writes_a_gpu_spec_that_simulate_runs_with(tmp_path: Path) -> None:
    """The profile -> calibrate -> simulate path a user takes with their own GPU."""
    runner = CliRunner()
    env = {"FLEETLAB_HOME": str(tmp_path / "home")}
    prof = H100_RUN / "llama-3.1-8b"
    gpu_yaml = tmp_path / "h100-mine.yaml"
    res = runner.invoke(
        app,
        [
            "inference",
            "calibrate",
            str(prof / "mlp.csv"),
            "--attention",
            str(prof / "attention.csv"),
            "--gpu",
            "h100",
            "-o",
            str(gpu_yaml),
            "--json",
        ],
        env=env,
    )
    assert res.exit_code == 0, res.output
    fitted = json.loads(res.stdout)["efficiency"]
    sim = [
        "inference",
        "simulate",
        "--model",
        "llama-3.1-8b",
        "--qps",
        "4",
        "-n",
        "40",
        "--seed",
        "1",
        "--json",
    ]
    mine = runner.invoke(app, [*sim, "--gpu", str(gpu_yaml)], env=env)
    assert mine.exit_code == 0, mine.output
    stock = runner.invoke(app, [*sim, "--gpu", "h100"], env=env)
    assert stock.exit_code == 0, stock.output
    assert fitted["attn_decode"] != gpu_spec("h100").efficiency.attn_decode
    # same requests, other efficiencies: other latencies
    ttft = [json.loads(r.stdout)["metrics"]["ttft_p50_s"] for r in (mine, stock)]
    assert ttft[0] != ttft[1]


def test_compute_reader_names_the_files_row_and_operator(tmp_path: Path) -> None:
    table = profile_operators_tiny()
    bad = table.with_columns(
        pl.when(pl.int_range(pl.len()) == 2)
        .then(float("nan"))
        .otherwise(pl.col("time_stats.mlp_down_proj.median"))
        .alias("time_stats.mlp_down_proj.median")
    )
    path = tmp_path / "mlp.csv"
    bad.write_csv(path)
    with pytest.raises(InputFormatError) as e:
        read_vidur_compute(path)
    assert "row 3" in str(e.value) and "mlp_down_proj" in str(e.value)


def profile_operators_tiny() -> pl.DataFrame:
    from fleetlab.inference import profile_operators

    return profile_operators(
        TINY, timer=NumpyTimer(seed=1), tp_degrees=[1], token_counts=[1, 2, 4, 8], repeats=1
    )


# -- measured on an H200 (benchmarks/results/h200-2026-11-26) ----------------------------


def test_h200_profile_is_the_h100_with_more_bandwidth() -> None:
    """Same GH100 tensor cores, 4.8 instead of 3.35 TB/s of HBM."""
    big, small = _gemm_ratio(
        H200_RUN / "llama-3.1-70b" / "mlp.csv", H100_RUN / "llama-3.1-70b" / "mlp.csv"
    )
    assert 0.95 < big < 1.05
    assert 0.65 < small < 0.8
    eff, _ = calibrate(
        gpu_spec("h200"),
        [H200_RUN / "llama-3.1-70b" / "mlp.csv"],
        attention=H200_RUN / "llama-3.1-70b" / "attention.csv",
    )
    assert 0.75 < eff.compute_max < 0.9
    assert 0.8 < eff.memory <= 1.0
    assert 0.85 < eff.attn_decode <= 1.0


def test_model_of_a_whole_prefill_against_the_h200_kernels() -> None:
    from fleetlab.inference._perf import prefill_breakdown

    g = gpu_spec("h200")
    for m in ("llama-3.1-8b", "qwen3-32b"):
        for r in json.loads((H200_RUN / f"prefill-{m}.json").read_text()):
            if r["tokens"] < 2048:
                continue
            parts = prefill_breakdown(model_spec(m), g, r["tokens"])
            gemm = _gemm_s(parts)
            assert gemm * 1e3 == pytest.approx(r["kernels_gemm_ms"], rel=0.15)
            # the built-in attention is FA3's; PyTorch's SDPA kernels are up to 25 % slower
            assert parts["attention"] * 1e3 == pytest.approx(r["kernels_attention_ms"], rel=0.25)


def test_sustained_profile_times_gemms_at_the_loaded_clock() -> None:
    """`profile --sustain 0.5` against the burst profile of the same H200, and a prefill."""
    from fleetlab.inference._perf import prefill_breakdown

    g = gpu_spec("h200")
    big, small = _gemm_ratio(
        H200_RUN / "sustained" / "llama-3.1-70b" / "mlp.csv",
        H200_RUN / "llama-3.1-70b" / "mlp.csv",
    )
    assert 1.08 < big < 1.25
    assert 0.95 < small < 1.02
    eff, _ = calibrate(g, [H200_RUN / "sustained" / "llama-3.1-8b" / "mlp.csv"])
    assert 0.65 < eff.compute_max < 0.78
    m = model_spec("llama-3.1-8b")
    for r in json.loads((H200_RUN / "prefill-sustained-llama-3.1-8b.json").read_text()):
        if r["tokens"] >= 4096:  # long enough to run at the power-limited clock
            parts = prefill_breakdown(m, g, r["tokens"], efficiency=eff)
            gemm = _gemm_s(parts)
            assert gemm * 1e3 == pytest.approx(r["kernels_gemm_ms"], rel=0.08)


def test_cli_profile_refuses_a_negative_sustain(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "inference",
            "profile",
            "--model",
            "llama-3.1-8b",
            "--device",
            "cpu",
            "--sustain",
            "-1",
            "-o",
            str(tmp_path / "mlp.csv"),
        ],
    )
    assert res.exit_code != 0
    assert "--sustain" in res.output
