"""The serving frontend model (HTTP server, one tokenizer, streaming) and the engine's
serial preprocessing queue that carries it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from fleetlab.errors import ConfigError
from fleetlab.inference._config import Frontend, ReplicaSpec
from fleetlab.inference._engine import make_router, run_engine
from fleetlab.inference._simulate import _pool
from fleetlab.inference._validate import _closed_loop

#: Llama-3.1-8B, TensorRT-LLM 1.0, H100, TP 1, 1,024-token prompts (15 rows): TTFT MAPE
#: 44.4 % with every client running at once (rounded down), 14.3 % and TPOT 8.6 % when the
#: engine runs one request fewer than there are clients (rounded up)
TTFT_MAPE_8B_TRT_FREE = 44
TTFT_MAPE_8B_TRT_LAG = 15
TPOT_MAPE_8B_TRT_LAG = 9


def _cfg() -> object:
    cfg, _ = _pool(
        ReplicaSpec(
            model="llama-3.1-8b",
            gpu="h100",
            scheduler="sarathi",
            chunk_size=8192,
            max_batched_tokens=8192,
        ),
        "mixed",
        None,
    )
    return cfg


def test_preprocessing_queue_is_first_come_first_served() -> None:
    cfg = _cfg()
    n = 4
    prompt = np.full(n, 600)
    output = np.full(n, 20)
    arrival = np.array([0.0, 0.0, 0.0, 0.5])
    pre = np.array([0.010, 0.020, 0.005, 0.001])
    res = run_engine(
        arrival,
        prompt,
        output,
        [cfg],  # type: ignore[list-item]
        [1],
        routers=[make_router("round_robin")],
        preprocess_s=pre,
    )
    assert res.sent_s is not None and res.arrival_s is not None
    np.testing.assert_array_equal(res.sent_s, arrival)
    # one worker: the three simultaneous requests leave it at 10, 30 and 35 ms; the last
    # one finds it idle and leaves 1 ms after it came
    np.testing.assert_allclose(res.arrival_s, [0.010, 0.030, 0.035, 0.501], rtol=0, atol=1e-12)
    # the engine then sees exactly the open-loop trace of those times
    plain = run_engine(
        res.arrival_s,
        prompt,
        output,
        [cfg],  # type: ignore[list-item]
        [1],
        routers=[make_router("round_robin")],
    )
    assert plain.sent_s is None
    np.testing.assert_allclose(plain.first_token_s, res.first_token_s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(plain.finish_s, res.finish_s, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="preprocess_s"):
        run_engine(
            arrival,
            prompt,
            output,
            [cfg],  # type: ignore[list-item]
            [1],
            routers=[make_router("round_robin")],
            preprocess_s=pre[:-1],
        )


def test_frontend_adds_its_latency_to_a_lone_clients_ttft() -> None:
    fe = Frontend(request_s=0.004, tokenize_s_per_token=2e-6, token_out_s=0.003)
    args = dict(tp=1, dtype="bf16", isl=700, osl=40, concurrency=1, token_budget=8192)
    ttft, tpot = _closed_loop("llama-3.1-8b", "h100", **args)  # type: ignore[arg-type]
    ttft_fe, tpot_fe = _closed_loop("llama-3.1-8b", "h100", frontend=fe, **args)  # type: ignore[arg-type]
    # one client: every request runs alone, so the client sees the engine's TTFT plus
    # 4 ms of HTTP, 700 x 2 us of tokenization and 3 ms for the token to come back
    assert ttft_fe - ttft == pytest.approx(0.004 + 700 * 2e-6 + 0.003, abs=1e-9)
    # the per-token latency shifts every token alike: TPOT does not change
    assert tpot_fe == pytest.approx(tpot, rel=1e-12)


def test_frontend_serialises_simultaneous_clients() -> None:
    # a tokenizer as slow as 50 ms per 1,000-token prompt: four clients that send at
    # once reach the engine 50 ms apart, so the first wave's mean TTFT includes
    # (0 + 1 + 2 + 3) / 4 = 1.5 tokenizations of queueing beyond the lone one
    fe = Frontend(request_s=0.0, tokenize_s_per_token=5e-5, token_out_s=0.0)
    args = dict(tp=1, dtype="bf16", isl=1000, osl=30, token_budget=8192, requests_per_client=2)
    lone, _ = _closed_loop("llama-3.1-8b", "h100", concurrency=1, frontend=fe, **args)  # type: ignore[arg-type]
    four, _ = _closed_loop("llama-3.1-8b", "h100", concurrency=4, frontend=fe, **args)  # type: ignore[arg-type]
    assert lone == pytest.approx(
        0.05 + _closed_loop("llama-3.1-8b", "h100", concurrency=1, **args)[0]
    )  # type: ignore[arg-type]
    # (the second wave starts spread out, so over both waves at least half of that)
    assert four - lone > 0.5 * 1.5 * 0.05


def test_frontend_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="tokenize_s_per_token"):
        Frontend(tokenize_s_per_token=-1.0)


@pytest.mark.skipif(
    importlib.util.find_spec("aiconfigurator_core") is None,
    reason="aiconfigurator-core not installed",
)
def test_frontend_needs_the_benchmark_clients() -> None:
    from fleetlab.inference._validate import validate_silicon

    with pytest.raises(ConfigError, match="frontend"):
        validate_silicon(limit=1, clients="staggered", frontend=Frontend())


@pytest.mark.skipif(
    importlib.util.find_spec("aiconfigurator_core") is None,
    reason="aiconfigurator-core not installed",
)
def test_llama8b_trtllm_rows_wait_for_a_free_slot(tmp_path: Path) -> None:
    import polars as pl

    from fleetlab.inference._validate import silicon_sample_path, validate_silicon

    sub = pl.read_csv(silicon_sample_path(), infer_schema_length=20000).filter(
        (pl.col("model_path") == "meta-llama/Llama-3.1-8B-Instruct")
        & (pl.col("system") == "h100_sxm")
        & (pl.col("backend") == "trtllm")
        & (pl.col("mode") == "agg")
        & (pl.col("tp_size") == 1)
        & (pl.col("isl") == 1024)
    )
    path = tmp_path / "llama8b_h100_trtllm_tp1_1k.csv"
    sub.with_columns(pl.col("attention_dp_size").fill_null(1)).write_csv(path)
    rows, summary = validate_silicon(path)
    assert rows.height == 15
    free = summary.filter(pl.col("fl_model") == "all").row(0, named=True)
    _, lag = validate_silicon(path, slots_below_concurrency=1)
    lagged = lag.filter(pl.col("fl_model") == "all").row(0, named=True)
    # every client may run at once: TTFT 44.4 % off; one client always waiting for a free
    # slot: 14.3 % (TPOT 9.1 -> 8.6 %)
    assert free["ttft_mape"] > TTFT_MAPE_8B_TRT_FREE
    assert lagged["ttft_mape"] < TTFT_MAPE_8B_TRT_LAG
    assert lagged["tpot_mape"] < TPOT_MAPE_8B_TRT_LAG
    with pytest.raises(ConfigError, match="slots_below_concurrency"):
        validate_silicon(path, slots_below_concurrency=-1)


def test_simulate_puts_the_frontend_before_the_engine() -> None:
    import polars as pl

    from fleetlab.inference import ClusterSpec, simulate

    spec = ClusterSpec(
        replica=ReplicaSpec(model="llama-3.1-8b", gpu="h100", scheduler="sarathi", chunk_size=2048)
    )
    # far apart: each request is alone in the engine, with or without the frontend
    reqs = pl.DataFrame(
        {"arrival_s": [0.0, 5.0], "prompt_tokens": [1000, 3000], "output_tokens": [20, 20]}
    )
    fe = Frontend(request_s=0.002, tokenize_s_per_token=1e-6, token_out_s=0.001)
    plain = simulate(reqs, spec).requests
    front = simulate(reqs, spec, frontend=fe).requests
    extra = front["ttft_s"] - plain["ttft_s"]
    np.testing.assert_allclose(extra, [0.002 + 0.001 + 0.001, 0.002 + 0.003 + 0.001], atol=1e-9)
    np.testing.assert_allclose(front["e2e_s"] - plain["e2e_s"], extra, atol=1e-9)
    np.testing.assert_allclose(front["tpot_s"], plain["tpot_s"], rtol=1e-12)
