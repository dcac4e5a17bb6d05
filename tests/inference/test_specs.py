"""Specs, memory model and performance model: catalog numbers and physical sanity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab.errors import ConfigError, DataNotFoundError
from fleetlab.inference import (
    GpuSpec,
    ModelSpec,
    ReplicaSpec,
    builtin_gpus,
    builtin_models,
    compile_model,
    gpu_spec,
    load_spec,
    memory_plan,
    model_spec,
)

# parameter counts published with each model (billions, rounded as on the model cards)
PUBLISHED_PARAMS_B = {
    "llama-2-7b": 6.74,
    "llama-2-70b": 68.98,
    "llama-3-8b": 8.03,
    "llama-3-70b": 70.55,
    "mistral-7b": 7.24,
    "mixtral-8x7b": 46.70,
    "qwen2.5-7b": 7.62,
    "qwen2.5-72b": 72.71,
    "qwen3-235b-a22b": 235.0,
    "bloom-176b": 176.2,
}


@pytest.mark.parametrize("name,billions", sorted(PUBLISHED_PARAMS_B.items()))
def test_parameter_counts_match_model_cards(name: str, billions: float) -> None:
    assert model_spec(name).num_params / 1e9 == pytest.approx(billions, rel=0.005)


def test_mixtral_active_parameters() -> None:
    # Mixtral's paper: 12.9B active parameters per token
    assert model_spec("mixtral-8x7b").active_params / 1e9 == pytest.approx(12.9, rel=0.01)
    # Qwen3-235B-A22B's card: 235B in total, 22B activated
    assert model_spec("qwen3-235b-a22b").active_params / 1e9 == pytest.approx(22.0, rel=0.01)


def test_catalog_covers_the_issue() -> None:
    models, gpus = builtin_models(), builtin_gpus()
    for m in (
        "llama-2-7b",
        "llama-2-70b",
        "llama-3-8b",
        "llama-3.1-8b",
        "llama-3-70b",
        "llama-3.1-70b",
        "mistral-7b",
        "mixtral-8x7b",
        "qwen2.5-7b",
        "qwen2.5-72b",
    ):
        assert m in models
    for g in ("a100", "h100", "h200", "l40s", "mi300x"):
        assert g in gpus
    assert gpu_spec("H100-SXM").name == "h100"
    assert gpu_spec("a100-80gb").name == "a100"


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="llama-3-8b"):
        model_spec("gpt-5")
    with pytest.raises(ConfigError, match="h100"):
        gpu_spec("tpu-v9")


def test_yaml_specs(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: tiny\nnum_layers: 2\nhidden_size: 64\nnum_heads: 4\nnum_kv_heads: 2\n"
        "intermediate_size: 128\nvocab_size: 1000\n"
    )
    spec = model_spec(str(path))
    assert isinstance(spec, ModelSpec) and spec.dhead == 16
    path.write_text("name: x\nbf16_flops: -1\n")
    with pytest.raises(ConfigError, match="bf16_flops"):
        load_spec(path, GpuSpec)
    with pytest.raises(DataNotFoundError):
        load_spec(tmp_path / "missing.yaml", GpuSpec)


def test_memory_plan_golden_llama3_8b_h100() -> None:
    plan = memory_plan(ReplicaSpec(model="llama-3-8b", gpu="h100"))
    assert plan.weights_bytes == pytest.approx(16.06e9, rel=0.001)
    assert plan.kv_bytes_per_token == 131072  # 2 * 32 layers * 8 kv heads * 128 * 2 bytes
    # 72 GB usable - 16.06 GB weights - activations - 1.5 GB runtime = ~50 GB of KV
    assert 45e9 < plan.kv_bytes < 54e9
    assert plan.kv_tokens == plan.kv_blocks * 16


def test_tp_splits_weights_and_kv() -> None:
    one = memory_plan(ReplicaSpec(model="llama-3-70b", gpu="h100", tp=4))
    four = memory_plan(ReplicaSpec(model="llama-3-70b", gpu="h100", tp=8))
    assert one.weights_bytes == pytest.approx(2 * four.weights_bytes)
    assert four.kv_bytes_per_token == pytest.approx(one.kv_bytes_per_token / 2)
    assert four.kv_tokens > 2 * one.kv_tokens


def test_model_that_does_not_fit_says_how_much_is_needed() -> None:
    with pytest.raises(ConfigError, match=r"needs 1\d\d\.\d GB per GPU"):
        memory_plan(ReplicaSpec(model="llama-2-70b", gpu="a100", tp=1))


def test_fp8_needs_fp8_hardware() -> None:
    with pytest.raises(ConfigError, match="fp8"):
        gpu_spec("a100").peak_flops("fp8")


def test_decode_batch1_never_beats_weight_streaming_llama3_8b_h100() -> None:
    perf = compile_model(model_spec("llama-3-8b"), gpu_spec("h100"))
    tpot = perf.time(1, 0.0, 100.0, 1)
    assert tpot >= 4.8e-3  # 16.06 GB / 3.35 TB/s


@settings(max_examples=60, deadline=None)
@given(
    model=st.sampled_from(sorted(PUBLISHED_PARAMS_B)),
    gpu=st.sampled_from(["a100", "h100", "h200", "l40s", "mi300x"]),
    tp=st.sampled_from([1, 2, 4, 8]),
    batch=st.integers(1, 256),
    ctx=st.integers(1, 4096),
)
def test_roofline_bounds_hold_for_every_config(
    model: str, gpu: str, tp: int, batch: int, ctx: int
) -> None:
    m, g = model_spec(model), gpu_spec(gpu)
    perf = compile_model(m, g, tp=tp, max_tokens=4096, max_seqs=256)
    # decode: every GPU streams its share of the weights a token touches at least once
    t_dec = perf.time(batch, 0.0, float(batch * ctx), batch)
    assert t_dec >= m.active_params * 2.0 / tp / g.hbm_bytes_per_s
    # prefill: never faster than the FLOPs at peak
    p = min(4096, ctx)
    t_pre = perf.time(p, p * (p + 1) / 2.0, 0.0, 1)
    flops = 2.0 * m.active_params * p / tp
    assert t_pre >= flops / g.bf16_flops * (1 - 1e-9)


def test_iteration_time_grows_with_work() -> None:
    perf = compile_model(model_spec("llama-3-8b"), gpu_spec("h100"))
    times = [perf.time(t, 0.0, 0.0, 1) for t in (1, 64, 512, 2048, 8192)]
    assert times == sorted(times)
    assert perf.time(8, 0.0, 8 * 4000.0, 8) > perf.time(8, 0.0, 8 * 100.0, 8)
    assert np.all(np.diff(perf.linear[1:]) >= -1e-12)
