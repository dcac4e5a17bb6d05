"""Validation against measured hardware: Splitwise's perf_model.csv and aiconfigurator's
silicon_sample.csv.

Splitwise (ISCA'24) measured Llama2-70B and BLOOM-176B on DGX-A100 and DGX-H100 (TP 2/4/8):
prompt time, per-token time and end-to-end time by prompt size and batch size. The
operator efficiencies come from kernel measurements (vidur's profiles, aiconfigurator's
attention kernels); the *serving-stack* parameters that no kernel table contains (CPU
overheads per iteration and per sequence, the all-reduce synchronisation cost's growth with
TP and the stack's all-reduce bandwidth) are fitted on other rows than those tested (held
out by model, or by GPU), so no tested row is ever fitted. Rows faster than the GPUs' peak
allows are flagged and not scored.

aiconfigurator's silicon_sample.csv holds measured TTFT/TPOT of real deployments; they are
predicted with efficiencies fitted to aiconfigurator's *kernel* tables only
(:mod:`fleetlab.inference._kernels`), and aiconfigurator's own estimator can be run offline
beside fleetlab's as the peer figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from scipy.interpolate import interp1d
from scipy.optimize import least_squares

from fleetlab.errors import ConfigError, DataNotFoundError, FleetlabError, InputFormatError
from fleetlab.inference._config import Frontend
from fleetlab.inference._kernels import calibrate_kernels
from fleetlab.inference._perf import clocked_attention, clocked_linear_time, head_time
from fleetlab.inference._specs import Efficiency, GpuSpec, gpu_spec, model_spec

__all__ = [
    "aiconfigurator_predict",
    "predict_static",
    "silicon_sample_path",
    "validate_silicon",
    "validate_splitwise",
]

_SPLITWISE_COLS = (
    "model",
    "hardware",
    "prompt_size",
    "batch_size",
    "token_size",
    "prompt_time",
    "token_time",
    "e2e_time",
    "tensor_parallel",
)
#: the serving-stack parameters fitted on the other model's (or GPU's) rows; the
#: kernel-level ones (``kernel_overhead_s`` and ``allreduce_latency_s`` from vidur's
#: profiles, ``attn_prefill`` from aiconfigurator's FlashAttention kernels) stay the GPU's
#: calibrated values, so the fit has no collinear parameters (BLOOM has TP 8 rows only)
_STACK = (
    "iteration_overhead_s",
    "per_seq_overhead_s",
    "allreduce_step_latency_s",
    "allreduce_efficiency",
)
#: Splitwise's power-capped H100 table is derived, not measured: every prompt time is the
#: H100 one times 1.3 and every token time is the H100 one (checked in the tests)
_DERIVED_HARDWARE = ("h100-80gb-pcap",)
#: its cap: splitwise-sim's DGX-H100-pcap server has 7,140 W of the DGX-H100's 10,200 W
#: (configs/hardware_repo/skus), 70 %, taken as 70 % of each GPU's 700 W
_POWER_LIMIT_W = {"h100-80gb-pcap": 490.0}


def predict_static(
    model: str,
    gpu: GpuSpec,
    *,
    tp: int,
    prompt: np.ndarray,
    batch: np.ndarray,
    output: np.ndarray,
    efficiency: Efficiency | None = None,
    dtype: str = "bf16",
    power_limit_w: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Static-batch latencies: prefill of ``batch`` prompts, then mean decode iteration.

    Parameters
    ----------
    model : str
        Catalog model name.
    gpu : GpuSpec
        The GPU.
    tp : int
        Tensor-parallel degree.
    prompt, batch, output : ndarray
        Prompt tokens, batch size and output tokens per case.
    efficiency : Efficiency, optional
        Overrides the GPU's efficiencies.
    dtype : {"bf16", "fp8"}
        GEMM precision.
    power_limit_w : float, optional
        A board power cap per GPU (default: the TDP).

    Returns
    -------
    (prompt_s, token_s) : ndarrays
        Seconds for the batched prefill and for the mean decode iteration (context
        growing from ``prompt`` to ``prompt + output``).
    """
    spec = model_spec(model)
    eff = efficiency or gpu.efficiency
    p = np.asarray(prompt, dtype=np.float64)
    b = np.asarray(batch, dtype=np.float64)
    o = np.asarray(output, dtype=np.float64)
    lin = {"tp": tp, "dtype": dtype, "efficiency": eff, "power_limit_w": power_limit_w}
    lin_p = clocked_linear_time(spec, gpu, p * b, **lin)  # type: ignore[arg-type]
    lin_d = clocked_linear_time(spec, gpu, b, **lin)  # type: ignore[arg-type]
    head = head_time(spec, gpu, b, tp=tp, dtype=dtype, efficiency=eff)  # type: ignore[arg-type]
    per_pair, per_ctx = clocked_attention(spec, gpu, **lin)  # type: ignore[arg-type]
    fixed = spec.num_layers * 2 * eff.kernel_overhead_s
    prompt_s = lin_p + head + per_pair * b * p * (p + 1) / 2 + fixed
    token_s = lin_d + head + per_ctx * b * (p + (o - 1) / 2) + fixed
    return prompt_s, token_s


def _read_splitwise(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such file (Splitwise perf_model.csv)")
    df = pl.read_csv(path)
    for col in _SPLITWISE_COLS:
        if col not in df.columns:
            raise InputFormatError(
                path,
                "missing column",
                field=col,
                expected="Splitwise perf_model.csv columns",
                found=df.columns,
            )
    return df.with_columns(
        pl.col("model").str.replace("llama2-70b", "llama-2-70b").alias("fl_model"),
        pl.col("hardware").str.extract(r"^(a100|h100)").alias("fl_gpu"),
    )


def _predict(df: pl.DataFrame, eff_by_gpu: dict[str, Efficiency]) -> pl.DataFrame:
    parts = []
    for (model, gpu, hardware, tp), part in df.group_by(
        ["fl_model", "fl_gpu", "hardware", "tensor_parallel"], maintain_order=True
    ):
        g = gpu_spec(str(gpu))
        ps, ts = predict_static(
            str(model),
            g,
            tp=int(tp),
            prompt=part["prompt_size"].to_numpy(),
            batch=part["batch_size"].to_numpy(),
            output=part["token_size"].to_numpy(),
            efficiency=eff_by_gpu[str(gpu)],
            power_limit_w=_POWER_LIMIT_W.get(str(hardware)),
        )
        # average power over the request (fraction of TDP), from the GpuSpec power curve
        m = model_spec(str(model))
        b = part["batch_size"].to_numpy().astype(float)
        p = part["prompt_size"].to_numpy().astype(float)
        o = part["token_size"].to_numpy().astype(float)
        peak = g.bf16_flops * int(tp)
        u_p = 2.0 * m.active_params * b * p / (ps * peak)
        u_t = 2.0 * m.active_params * b / (ts * peak)
        w_bytes = m.active_params * 2.0 / int(tp)
        kv_bytes = m.kv_bytes_per_token() / int(tp) * b * (p + o / 2.0)
        m_p = w_bytes / (ps * g.hbm_bytes_per_s)
        m_t = (w_bytes + kv_bytes) / (ts * g.hbm_bytes_per_s)
        watts = np.vectorize(g.power_w)
        energy = watts(u_p, m_p) * ps + watts(u_t, m_t) * ts * o
        avg = energy / (ps + ts * o) / g.tdp_w
        parts.append(
            part.with_columns(
                pred_prompt_time=ps * 1e3, pred_token_time=ts * 1e3, pred_average_power=avg
            )
        )
    out = pl.concat(parts)
    return out.with_columns(
        pred_e2e_time=pl.col("pred_prompt_time") + pl.col("token_size") * pl.col("pred_token_time")
    )


def _fit_stack(train: pl.DataFrame, gpus: list[str]) -> dict[str, Efficiency]:
    base = {g: gpu_spec(g).efficiency for g in gpus}

    def make(x: np.ndarray) -> dict[str, Efficiency]:
        upd = {
            "iteration_overhead_s": float(x[0]) * 1e-3,
            "per_seq_overhead_s": float(x[1]) * 1e-6,
            "allreduce_step_latency_s": float(x[2]) * 1e-6,
            "allreduce_efficiency": float(min(x[3], 1.0)),
        }
        return {g: e.model_copy(update=upd) for g, e in base.items()}

    def resid(x: np.ndarray) -> np.ndarray:
        p = _predict(train, make(x))
        return np.concatenate(
            [
                np.log(p["pred_prompt_time"].to_numpy() / p["prompt_time"].to_numpy()),
                np.log(p["pred_token_time"].to_numpy() / p["token_time"].to_numpy()),
            ]
        )

    fit = least_squares(
        resid,
        np.array([2.0, 15.0, 0.0, 0.5]),
        bounds=([0.0, 0.0, 0.0, 0.01], [50.0, 2000.0, 1000.0, 1.0]),
        loss="soft_l1",
        f_scale=0.1,
    )
    return make(fit.x)


def _plausible(df: pl.DataFrame) -> pl.DataFrame:
    """Flag rows that no GPU could have produced for the stated work.

    A prompt can never take less than its layers' GEMM FLOPs (``2 · layer params · batch ·
    prompt``) at the GPUs' dense peak, and a decode step never less than one read of the
    layers' weights at peak HBM bandwidth. Rows below either bound did not run the batch
    they are labelled with (Splitwise's Llama2-70B TP 2 batch-64 rows: 4.8–9.0× faster
    than peak, while no other row exceeds 66 % of it);
    ``plausible`` is False for them and ``derived`` is True for the power-capped table.
    """
    parts = []
    for (model, gpu, tp), part in df.group_by(
        ["fl_model", "fl_gpu", "tensor_parallel"], maintain_order=True
    ):
        m, g = model_spec(str(model)), gpu_spec(str(gpu))
        # the layers' weights only (embedding and LM head left out: a lower bound)
        layer_params = m.active_params - m.vocab_size * m.hidden_size * (
            1 if m.tied_embeddings else 2
        )
        tokens = (part["prompt_size"] * part["batch_size"]).to_numpy().astype(np.float64)
        prompt_min_ms = 2.0 * layer_params * tokens / (g.bf16_flops * int(tp)) * 1e3
        token_min_ms = 2.0 * layer_params / (g.hbm_bytes_per_s * int(tp)) * 1e3
        parts.append(
            part.with_columns(
                prompt_bound_ms=pl.Series(prompt_min_ms),
                plausible=(pl.col("prompt_time") >= pl.Series(prompt_min_ms))
                & (pl.col("token_time") >= token_min_ms),
            )
        )
    return pl.concat(parts).with_columns(derived=pl.col("hardware").is_in(list(_DERIVED_HARDWARE)))


def _splitwise_sim_predict(train: pl.DataFrame, test: pl.DataFrame) -> pl.DataFrame:
    """Splitwise's own simulator's performance model (splitwise-sim ``performance_model.py``,
    ``DatabasePerformanceModel``): per (model, hardware, TP), the medians of prompt and
    token time by ``batch_tokens = prompt_size · batch_size``, linearly interpolated and
    extrapolated (``interp1d(fill_value="extrapolate")``). It is a lookup table keyed by
    model, so it predicts nothing for a model it has no rows of; ``test`` rows of a
    (model, hardware, TP) that ``train`` lacks get nulls."""
    keys = ["model", "hardware", "tensor_parallel"]
    med = (
        train.with_columns(bt=pl.col("prompt_size") * pl.col("batch_size"))
        .group_by([*keys, "bt"])
        .agg(pl.col("prompt_time").median(), pl.col("token_time").median())
        .sort("bt")
    )
    out = []
    for key, part in test.group_by(keys, maintain_order=True):
        ref = med.filter(
            (pl.col("model") == key[0])
            & (pl.col("hardware") == key[1])
            & (pl.col("tensor_parallel") == key[2])
        )
        bt = (part["prompt_size"] * part["batch_size"]).to_numpy().astype(np.float64)
        preds = {}
        for col in ("prompt_time", "token_time"):
            if ref.height >= 2:
                f = interp1d(
                    ref["bt"].to_numpy().astype(np.float64),
                    ref[col].to_numpy(),
                    fill_value="extrapolate",
                )
                preds[f"peer_{col}"] = pl.Series(f(bt), dtype=pl.Float64)
            else:
                preds[f"peer_{col}"] = pl.Series([None] * part.height, dtype=pl.Float64)
        out.append(part.with_columns(**preds))
    return pl.concat(out)


def _mape(pred: pl.Expr, true: pl.Expr) -> pl.Expr:
    return ((pred - true).abs() / true).mean() * 100


def validate_splitwise(
    path: Path, *, holdout: Literal["model", "gpu"] = "model", peer: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Predict Splitwise's measured latencies with stack parameters fitted on other rows.

    The serving-stack parameters no kernel table contains (``iteration_overhead_s``,
    ``per_seq_overhead_s``, the all-reduce synchronisation cost per doubling of the GPU
    count ``allreduce_step_latency_s`` and the stack's all-reduce bandwidth
    ``allreduce_efficiency``) are fitted by least squares on log prompt and token time,
    never on the rows they predict: ``holdout="model"`` fits each GPU's stack on the other
    model's rows of that GPU (BLOOM → Llama2-70B and back); ``holdout="gpu"`` fits on the
    A100 rows to predict the H100 rows (and power-capped H100 rows) and on the H100 rows to
    predict the A100 rows. GEMM, memory, per-kernel and all-reduce-latency efficiencies stay
    those calibrated from vidur's profiles, attention those from aiconfigurator's kernels.

    Rows no GPU could have produced (a prompt faster than its linear-layer FLOPs at the
    GPUs' dense peak, or a decode step faster than one weight read at peak HBM bandwidth)
    are neither fitted nor scored; the
    power-capped H100 table is scored but marked ``derived`` (its prompt times are the
    H100 ones × 1.3, its token times the H100 ones).

    Parameters
    ----------
    path : Path
        Splitwise ``perf_model.csv``.
    holdout : {"model", "gpu"}
        What the fitted stack parameters never see: the tested model, or the tested GPU.
    peer : bool
        Also score Splitwise's own simulator's performance model (interpolation of the
        measured table by batch tokens, splitwise-sim ``performance_model.py``). It is
        keyed by (model, hardware, TP), so under either hold-out it has no prediction;
        it is scored leaving one ``batch_tokens`` value of its own (model, hardware, TP)
        table out at a time (``peer_*`` columns), its most favourable out-of-sample
        protocol.

    Returns
    -------
    (rows, summary) : (pl.DataFrame, pl.DataFrame)
        Every row with its predictions (ms) and ``plausible`` / ``derived`` flags, and
        MAPE (percent) of prompt, token and end-to-end time per (model, hardware, TP) plus
        an ``all`` row per hardware, over the plausible rows (``rows``;
        ``implausible_rows`` are left out).

    Raises
    ------
    DataNotFoundError, InputFormatError
        Missing file or columns.
    """
    df = _plausible(
        _read_splitwise(Path(path)).filter(
            (pl.col("prompt_time") > 0)
            & (pl.col("token_time") > 0)
            & (pl.col("prompt_size") + pl.col("token_size") <= 8192 * 2)
        )
    )
    fit_rows = df.filter(pl.col("plausible") & ~pl.col("derived"))
    out = []
    if holdout == "gpu":
        for test_gpu, train_gpu in (("h100", "a100"), ("a100", "h100")):
            train = fit_rows.filter(pl.col("fl_gpu") == train_gpu)
            test = df.filter(pl.col("fl_gpu") == test_gpu)
            fitted = _fit_stack(train, [train_gpu])
            out.append(_predict(test, {test_gpu: fitted[train_gpu]}))
    else:
        models = df["fl_model"].unique(maintain_order=True).to_list()
        for test_model in models:
            for gpu in ("a100", "h100"):
                train = fit_rows.filter(
                    (pl.col("fl_model") != test_model) & (pl.col("fl_gpu") == gpu)
                )
                test = df.filter((pl.col("fl_model") == test_model) & (pl.col("fl_gpu") == gpu))
                out.append(_predict(test, _fit_stack(train, [gpu])))
    rows = pl.concat(out).with_columns(
        # rows whose e2e implies fewer generated tokens than token_size stopped early (EOS);
        # their e2e is not comparable and is left out of the e2e error
        e2e_comparable=(
            (pl.col("e2e_time") - pl.col("prompt_time"))
            / (pl.col("token_time") * pl.col("token_size"))
        ).is_between(0.9, 1.1)
    )
    if peer:
        rows = _with_peer(rows)
    scored = rows.filter(pl.col("plausible"))
    e2e = scored.filter(pl.col("e2e_comparable"))
    metrics = [
        _mape(pl.col("pred_prompt_time"), pl.col("prompt_time")).alias("prompt_time_mape"),
        _mape(pl.col("pred_token_time"), pl.col("token_time")).alias("token_time_mape"),
        pl.len().alias("rows"),
    ]
    if peer:
        metrics += [
            _mape(pl.col("peer_prompt_time"), pl.col("prompt_time")).alias("peer_prompt_time_mape"),
            _mape(pl.col("peer_token_time"), pl.col("token_time")).alias("peer_token_time_mape"),
        ]
    power = scored.filter(pl.col("average_power") > 0)
    power_m = [
        _mape(pl.col("pred_average_power"), pl.col("average_power")).alias("average_power_mape"),
        pl.len().alias("power_rows"),
    ]
    e2e_m = [
        _mape(pl.col("pred_e2e_time"), pl.col("e2e_time")).alias("e2e_time_mape"),
        pl.len().alias("e2e_rows"),
    ]
    bad_m = [(~pl.col("plausible")).sum().cast(pl.UInt32).alias("implausible_rows")]
    keys = ["model", "hardware", "tensor_parallel"]
    by_group = (
        scored.group_by(keys)
        .agg(metrics)
        .join(e2e.group_by(keys).agg(e2e_m), on=keys, how="left")
        .join(power.group_by(keys).agg(power_m), on=keys, how="left")
        .join(rows.group_by(keys).agg(bad_m), on=keys, how="left")
        .sort(keys)
    )
    by_hw = (
        scored.group_by("hardware")
        .agg(metrics)
        .join(e2e.group_by("hardware").agg(e2e_m), on="hardware", how="left")
        .join(power.group_by("hardware").agg(power_m), on="hardware", how="left")
        .join(rows.group_by("hardware").agg(bad_m), on="hardware", how="left")
        .with_columns(
            pl.lit("all").alias("model"), pl.lit(0, dtype=pl.Int64).alias("tensor_parallel")
        )
        .select(by_group.columns)
        .sort("hardware")
    )
    summary = pl.concat([by_group, by_hw]).with_columns(
        derived=pl.col("hardware").is_in(list(_DERIVED_HARDWARE))
    )
    return rows, summary


def _with_peer(rows: pl.DataFrame) -> pl.DataFrame:
    """Splitwise-sim's predictions, one ``batch_tokens`` value of each (model, hardware,
    TP) table left out at a time (fitted on the plausible rows of the rest)."""
    keyed = rows.with_columns(
        _bt=pl.col("prompt_size") * pl.col("batch_size"), _row=pl.int_range(pl.len())
    )
    keys = ["model", "hardware", "tensor_parallel"]
    out = []
    for _key, group in keyed.group_by(keys, maintain_order=True):
        train_all = group.filter(pl.col("plausible"))
        for bt in group["_bt"].unique().to_list():
            test = group.filter(pl.col("_bt") == bt)
            out.append(_splitwise_sim_predict(train_all.filter(pl.col("_bt") != bt), test))
    return pl.concat(out).sort("_row").drop("_bt", "_row")


#: aiconfigurator's model paths -> (catalog model, weight dtype override or None)
_SILICON_MODELS = {
    "meta-llama/Llama-3.1-8B-Instruct": "llama-3.1-8b",
    "nvidia/Llama-3.1-8B-Instruct-FP8": "llama-3.1-8b",
    "meta-llama/Llama-3.1-70B": "llama-3.1-70b",
    "Qwen/Qwen3-32B": "qwen3-32b",
    "Qwen/Qwen3-235B-A22B-FP8": "qwen3-235b-a22b",
}


def _moe_paths() -> list[str]:
    """The silicon_sample model paths whose catalog model is a mixture of experts."""
    return [p for p, m in _SILICON_MODELS.items() if model_spec(m).num_experts > 1]


_SILICON_GPUS = {"h100_sxm": "h100", "h200_sxm": "h200", "a100_sxm": "a100", "l40s": "l40s"}


#: ``engine="backend_defaults"`` of :func:`validate_silicon`: fleetlab's nearest scheduler
#: to each backend's stock one at its stock 8,192-token step — vLLM V1's chunked prefill
#: mixed with decodes (Sarathi; ``max_num_batched_tokens`` 8,192 for the OpenAI server on
#: GPUs of 70 GiB and more), SGLang's prefill batches that pause decoding
#: (``enable_mixed_chunk`` off, ``chunked_prefill_size`` 8,192 on H100/H200: fleetlab's
#: ``vllm`` scheduler, which cannot split a request over steps, so rows whose prompt plus
#: output exceed 8,192 tokens are not simulated), and TensorRT-LLM (``max_num_tokens``
#: 8,192; its unchunked in-flight batching is approximated by Sarathi, since fleetlab's
#: ``orca`` scheduler caps prompt plus output at the step budget)
_BACKEND_SCHEDULERS: dict[str, Literal["vllm", "sarathi", "orca"]] = {
    "vllm": "sarathi",
    "trtllm": "sarathi",
    "sglang": "vllm",
}


def silicon_sample_path() -> Path:
    """Where ``aiconfigurator-core`` keeps ``silicon_sample.csv`` (without importing it).

    Raises
    ------
    DataNotFoundError
        The package is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(
            "aiconfigurator-core is not installed "
            "(pip install aiconfigurator-core; it works offline)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "systems" / "silicon_sample.csv"
    if not path.exists():
        raise DataNotFoundError(f"{path}: no silicon_sample.csv in aiconfigurator-core")
    return path


#: catalog model -> the model path aiconfigurator's bundled configs use (offline)
_AIC_MODEL_PATHS = {
    "llama-3.1-8b": "meta-llama/Meta-Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Meta-Llama-3.1-70B",
    "qwen3-32b": "Qwen/Qwen3-32B",
    "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B-FP8",
}


def aiconfigurator_predict(rows: pl.DataFrame) -> pl.DataFrame:
    """aiconfigurator's own predictions of silicon_sample rows, computed offline (the peer).

    For each row, aiconfigurator-core's backend ``run_agg`` estimator (its newest kernel
    database for the row's system and backend) with ``batch_size`` as the running batch,
    ``ctx_tokens = isl`` (one prompt per mixed step, as vLLM's default of one partial
    prefill schedules it) and the row's GEMM / KV dtype. aiconfigurator's TTFT is the
    per-request prefill time times an empirical queueing factor (``1 + log2(b)/8`` for
    vLLM, ``min(2 + (steps - 3)/20, 4)`` otherwise) plus, for vLLM, 0.8 ms per layer of
    dispatch; those factors were calibrated by NVIDIA on its silicon corpus, so this peer
    figure is partly in-sample.

    Parameters
    ----------
    rows : pl.DataFrame
        Rows as selected by :func:`validate_silicon` (``fl_model``, ``system``, ``backend``,
        ``fl_dtype``, ``tp_size``, ``isl``, ``osl``, ``batch_size``).

    Returns
    -------
    pl.DataFrame
        ``rows`` with ``aic_ttft_ms`` and ``aic_tpot_ms`` (NaN where aiconfigurator fails).

    Raises
    ------
    DataNotFoundError
        aiconfigurator-core is not installed.
    """
    import importlib.util
    import logging

    if importlib.util.find_spec("aiconfigurator_core") is None:
        raise DataNotFoundError(
            "aiconfigurator-core is not installed (pip install aiconfigurator-core)"
        )
    from aiconfigurator_core.sdk import common
    from aiconfigurator_core.sdk import perf_database as pdb
    from aiconfigurator_core.sdk.backends.factory import get_backend
    from aiconfigurator_core.sdk.config import ModelConfig, RuntimeConfig
    from aiconfigurator_core.sdk.models import get_model

    logging.getLogger("aiconfigurator_core").setLevel(logging.ERROR)
    dbs: dict[tuple[str, str], pdb.PerfDatabase | None] = {}
    ttft, tpot = [], []
    for r in rows.iter_rows(named=True):
        try:
            key = (str(r["system"]), str(r["backend"]))
            if key not in dbs:
                version = pdb.get_latest_database_version(key[0], key[1])
                dbs[key] = None if version is None else pdb.get_database(key[0], key[1], version)
            db = dbs[key]
            if db is None:
                raise ValueError(f"no aiconfigurator database for {key[0]}/{key[1]}")
            fp8 = r["fl_dtype"] == "fp8"
            moe: dict[str, Any] = {}
            if model_spec(r["fl_model"]).num_experts > 1:
                moe = {
                    "moe_tp_size": int(r["moe_tp_size"] or 1),
                    "moe_ep_size": int(r["moe_ep_size"] or 1),
                    "moe_quant_mode": (
                        common.MoEQuantMode.fp8 if fp8 else common.MoEQuantMode.bfloat16
                    ),
                }
            res = None
            # fp8 KV first where the weights are fp8; bf16 KV where the backend's tables
            # have no fp8-KV attention (SGLang's default KV dtype follows the activations)
            for kv_fp8 in (fp8, False) if fp8 else (False,):
                mc = ModelConfig(
                    tp_size=int(r["tp_size"]),
                    pp_size=1,
                    gemm_quant_mode=(
                        common.GEMMQuantMode.fp8 if fp8 else common.GEMMQuantMode.bfloat16
                    ),
                    kvcache_quant_mode=(
                        common.KVCacheQuantMode.fp8 if kv_fp8 else common.KVCacheQuantMode.bfloat16
                    ),
                    fmha_quant_mode=common.FMHAQuantMode.bfloat16,
                    num_gpus_per_node=8,
                    **moe,
                )
                model = get_model(_AIC_MODEL_PATHS[r["fl_model"]], mc, key[1])
                rc = RuntimeConfig(
                    batch_size=int(r["batch_size"]), isl=int(r["isl"]), osl=int(r["osl"])
                )
                try:
                    res = get_backend(key[1]).run_agg(model, db, rc, ctx_tokens=int(r["isl"]))
                    break
                except Exception:  # missing kernel data for this KV dtype: try the next
                    res = None
            if res is None:
                raise ValueError("no aiconfigurator estimate")
            out = res.get_summary_df()
            ttft.append(float(out["ttft"].iloc[0]))
            tpot.append(float(out["tpot"].iloc[0]))
        except Exception:  # a peer failure on one row is reported as NaN, not raised
            ttft.append(float("nan"))
            tpot.append(float("nan"))
    return rows.with_columns(aic_ttft_ms=pl.Series(ttft), aic_tpot_ms=pl.Series(tpot))


def _closed_loop(
    model: str,
    gpu: str,
    *,
    tp: int,
    dtype: str,
    isl: int,
    osl: int,
    concurrency: int,
    ep: int = 1,
    clients: Literal["benchmark", "staggered"] = "benchmark",
    requests_per_client: int = 20,
    efficiency: Efficiency | None = None,
    token_budget: int = 8192,
    scheduler: Literal["vllm", "sarathi", "orca"] = "sarathi",
    send_delay_s: np.ndarray | None = None,
    prompt_pool: int | None = None,
    seed: int = 0,
    output_tokens: np.ndarray | None = None,
    frontend: Frontend | None = None,
    max_running: int | None = None,
) -> tuple[float, float]:
    """Mean TTFT and TPOT (s) of ``concurrency`` clients in a closed loop (EP ``ep`` for MoE).

    The engine runs ``scheduler`` with ``token_budget`` tokens per step (``sarathi``:
    decodes first, then prefill chunks; ``orca``: whole prompts mixed with decodes;
    ``vllm``: prefill steps that pause the decodes). ``benchmark``: the load generator's profiled
    phase — every client starts at t = 0 and sends ``requests_per_client`` requests back
    to back, its next one the moment the previous one's last token arrives (plus
    ``send_delay_s[i]`` for request ``i`` when given), simulated exactly by the engine's
    closed-loop option; the means are over all requests, the synchronised first wave
    included. With ``prompt_pool``, the prompts are drawn from that many distinct ones
    (shuffled, each used once per pass through the pool, from ``seed``) and the engine
    reuses the KV of a prompt it has seen (prefix caching). ``output_tokens`` (one per
    request, ``benchmark`` only) replaces the fixed ``osl``. With ``frontend``
    (``benchmark`` only) each request passes the HTTP server and the one shared
    tokenizer before the engine and every token reaches its client ``token_out_s``
    late; TTFT is then measured at the client, from the send. ``max_running`` caps the
    requests the engine runs at once (default: all ``concurrency``). ``staggered``: client ``i`` starts at ``i / c`` of one request's duration
    and the first wave is left out (a desynchronised steady state, solved by
    re-simulating until the send times are a fixed point).
    """
    from fleetlab.inference._config import ClusterSpec, ReplicaSpec
    from fleetlab.inference._engine import make_router, run_engine
    from fleetlab.inference._simulate import _check_requests, _pool, simulate

    rspec = ReplicaSpec(
        model=model,
        gpu=gpu,
        tp=tp,
        ep=ep,
        dtype=dtype,
        kv_dtype=dtype,
        scheduler=scheduler,
        chunk_size=token_budget,
        max_batched_tokens=token_budget,
        max_num_seqs=max(256, concurrency) if max_running is None else max_running,
        prefix_caching=prompt_pool is not None,
    )
    c = concurrency
    waves = max(2, requests_per_client)
    n = c * waves
    base = pl.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": np.zeros(n),
            "prompt_tokens": np.full(n, isl),
            "output_tokens": np.full(n, osl) if output_tokens is None else output_tokens,
        }
    )
    if clients == "benchmark":
        cfg, plan = _pool(rspec, "mixed", efficiency)
        _check_requests(base, [rspec], [plan], "silicon_sample row")
        ids = np.arange(n)
        prefixes = None
        if prompt_pool is not None:
            from fleetlab.inference._simulate import _PREFIX_BLOCK_TOKENS

            rng = np.random.default_rng(seed)
            passes = -(-n // prompt_pool)
            entry = np.concatenate([rng.permutation(prompt_pool) for _ in range(passes)])[:n]
            blocks = -(-isl // _PREFIX_BLOCK_TOKENS)
            # a prompt is its entry's chain of block hashes: equal prompts share all of them
            prefixes = [[int(e) * blocks + k for k in range(blocks)] for e in entry]
        delay = send_delay_s
        pre = None
        lead = 0.0
        if frontend is not None:
            lead = frontend.request_s
            # the client sends its next request once the last token has reached it, and
            # the request then spends request_s in the HTTP server before tokenization
            delay = (0.0 if send_delay_s is None else send_delay_s) + np.full(
                n, frontend.token_out_s + frontend.request_s
            )
            pre = base["prompt_tokens"].to_numpy() * frontend.tokenize_s_per_token
        eng = run_engine(
            np.concatenate([np.full(c, lead), np.full(n - c, np.inf)]),
            base["prompt_tokens"].to_numpy(),
            base["output_tokens"].to_numpy(),
            [cfg],
            [1],
            routers=[make_router("round_robin")],
            # request i belongs to client i mod c, whose next request is i + c
            successor=np.where(ids + c < n, ids + c, -1),
            send_delay_s=delay,
            prefixes=prefixes,
            sample_every_s=math.inf,
            preprocess_s=pre,
        )
        assert eng.arrival_s is not None
        if frontend is not None:
            assert eng.sent_s is not None
            # from the client's send (request_s before the tokenizer queue) to the
            # first token reaching it
            ttft = eng.first_token_s + frontend.token_out_s - (eng.sent_s - frontend.request_s)
        else:
            ttft = eng.first_token_s - eng.arrival_s
        out = base["output_tokens"].to_numpy()
        tpot = np.where(out > 1, (eng.finish_s - eng.first_token_s) / np.maximum(out - 1, 1), 0.0)
        return float(ttft.mean()), float(tpot.mean())
    spec = ClusterSpec(replica=rspec)
    first = simulate(base.head(c), spec, efficiency=efficiency).requests
    offsets = np.arange(c) * float(first["e2e_s"].to_numpy().mean()) / c
    arrival = np.concatenate([offsets, np.full(n - c, np.inf)])
    res = None
    for _ in range(2 * waves):  # waves passes reveal every send time, the rest converge
        # requests whose send time is not known yet arrive after everything else, so they
        # cannot change the known ones: simulate the known prefix only
        known = int(np.isfinite(arrival).sum())
        req = base.head(known).with_columns(arrival_s=pl.Series(arrival[:known]))
        res = simulate(req, spec, efficiency=efficiency).requests.sort("request_id")
        finish = (res["arrival_s"] + res["e2e_s"]).to_numpy()
        new = np.concatenate([offsets, finish[: n - c], np.full(n - c - min(known, n - c), np.inf)])
        if np.allclose(new, arrival, rtol=0, atol=1e-9, equal_nan=False) and known == n:
            break
        arrival = new
    assert res is not None
    kept = res.slice(c)
    return float(kept["ttft_s"].to_numpy().mean()), float(kept["tpot_s"].to_numpy().mean())


def validate_silicon(
    path: Path | None = None,
    *,
    limit: int | None = None,
    efficiency: Literal["kernels", "builtin"] = "kernels",
    clients: Literal["benchmark", "staggered"] = "benchmark",
    requests_per_client: int = 20,
    engine: Literal["aiconfigurator", "backend_defaults", "sarathi_8192"] = "aiconfigurator",
    send_jitter_s: float = 0.0,
    prompt_pool: int | None = None,
    output_spread: float = 0.0,
    seed: int = 0,
    peer: bool = False,
    frontend: Frontend | None = None,
    slots_below_concurrency: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Predict aiconfigurator's measured deployments (TTFT, TPOT) with no fitting on them.

    Uses the aggregated (co-located) rows of ``silicon_sample.csv`` whose model and GPU are
    in the catalog (Llama-3.1-8B/70B, Qwen3-32B on H100/H200, vLLM/TensorRT-LLM/SGLang,
    bf16 and fp8, PP 1). Each row is a load-generator run of ``batch_size`` concurrent
    clients sending ``isl``-token prompts for exactly ``osl`` tokens (aiconfigurator's
    benchmark: aiperf at fixed concurrency, ``20 · batch_size`` requests, warm-up
    excluded, ``ignore_eos``); fleetlab simulates that run with Sarathi-style mixed
    batching (see ``clients`` and ``engine``) and averages TTFT and TPOT over its
    requests. Efficiencies come from kernel measurements (or vidur's profiles) and the
    built-in defaults: these rows are a pure hold-out.

    Parameters
    ----------
    path : Path, optional
        ``silicon_sample.csv`` (default: the installed aiconfigurator-core's copy).
    limit : int, optional
        Use only the first ``limit`` matching rows (for quick checks).
    efficiency : {"kernels", "builtin"}
        ``kernels``: efficiencies fitted by :func:`calibrate_kernels` to aiconfigurator's
        measured kernel tables of the row's GPU, backend and GEMM dtype (kernel
        measurements, not these rows); ``builtin``: the GPU spec's vidur-calibrated ones.
    clients : {"benchmark", "staggered"}
        ``benchmark``: every client starts at t = 0 and sends ``requests_per_client``
        requests back to back, each the moment the previous one ends (an exact closed
        loop in the engine); means over all of them (the load generator's profiled
        phase, which starts together once the warm-up requests have drained).
        ``staggered``: clients spread over one request's duration, first wave left out.
    requests_per_client : int
        Requests each client sends (at least 2); 20 is aiconfigurator's benchmark
        (``--request-count 20 · concurrency``).
    engine : {"aiconfigurator", "backend_defaults", "sarathi_8192"}
        The serving engine's scheduler and tokens per step. ``aiconfigurator``: Sarathi
        with ``batch_size + isl + 1500`` tokens per step, the limit aiconfigurator's
        generator writes into the deployments it benchmarks (vLLM and TRT-LLM
        ``max_num_tokens``; SGLang ``max_prefill_tokens`` with mixed chunks on), so a
        whole prompt fits one step; ``backend_defaults``: each backend's stock
        scheduler and 8,192-token step (``_BACKEND_SCHEDULERS``); ``sarathi_8192``:
        Sarathi at 8,192 tokens for every backend (the previous setting).
    send_jitter_s : float
        Mean of an exponential client-side delay (seconds) between a request's last
        token and the client's next request (HTTP, tokenisation); 0 (default) sends at
        once. Drawn from ``seed``.
    prompt_pool : int, optional
        Draw the prompts from this many distinct ones, with prefix caching on (aiperf's
        default ``--num-dataset-entries`` is 100; aiconfigurator's Slurm flow passes
        ``20 · concurrency``, i.e. every prompt distinct: the default, None).
    output_spread : float
        Diagnostic, off by default: each request generates ``osl · (1 - output_spread ·
        u)`` tokens (``u`` uniform in [0, 1), from ``seed``) instead of exactly ``osl``.
        aiconfigurator's protocol fixes the output length (``ignore_eos``,
        ``min_tokens = max_tokens``), so this is not that protocol; it measures how much
        length variation would de-synchronise the clients.
    seed : int
        Seed of the send-delay draws, the prompt-pool shuffle and the output spread.
    peer : bool
        Also run aiconfigurator's own agg estimator offline on every row
        (:func:`aiconfigurator_predict`) and report its MAPE beside fleetlab's.
    frontend : Frontend, optional
        Model the serving frontend (HTTP server, one shared tokenizer, detokenizer and
        streaming; ``Frontend()`` holds vLLM's published costs) and measure TTFT at the
        client; None (default) measures it at the engine. ``clients="benchmark"`` only.
    slots_below_concurrency : int
        Diagnostic, 0 (off) by default: the engine runs at most ``batch_size -
        slots_below_concurrency`` requests at once (at least 1), so that many clients
        always wait for a running request to finish. aiconfigurator's generator sets the
        engines' ``max_batch_size`` to the deployment's batch size; 1 reproduces the
        Llama-3.1-8B TensorRT-LLM rows (docs/inference-validation.md §1b), whose TTFT
        grows with the output length as if one request always waited for a free slot.

    Returns
    -------
    (rows, summary) : (pl.DataFrame, pl.DataFrame)
        Rows with predictions (ms) and MAPE (%) of TTFT and TPOT per (model, GPU, backend,
        dtype); with ``peer``, also ``aic_ttft_mape`` / ``aic_tpot_mape``.

    Raises
    ------
    DataNotFoundError
        aiconfigurator-core is not installed and no path was given.
    ConfigError
        ``requests_per_client`` < 2, ``send_jitter_s`` < 0, ``prompt_pool`` < 1 or
        ``output_spread`` outside [0, 1), ``slots_below_concurrency`` < 0, or
        ``frontend`` with ``clients="staggered"``.
    """
    src = Path(path) if path is not None else silicon_sample_path()
    df = pl.read_csv(src, infer_schema_length=20000)
    df = df.filter(
        (pl.col("mode") == "agg")
        & pl.col("model_path").is_in(list(_SILICON_MODELS))
        & pl.col("system").is_in(list(_SILICON_GPUS))
        & (pl.col("pp_size") == 1)
        & (pl.col("attention_dp_size").fill_null(1) == 1)
        # MoE rows: experts split over moe_tp ranks within each of moe_ep groups, on the
        # same tp GPUs (fleetlab's EP layout); other layouts imply attention data parallelism
        & (
            ~pl.col("model_path").is_in(_moe_paths())
            | (
                pl.col("moe_tp_size").fill_null(1) * pl.col("moe_ep_size").fill_null(1)
                == pl.col("tp_size")
            )
        )
        & pl.col("silicon_ttft_ms").is_not_null()
        & pl.col("silicon_tpot_ms").is_not_null()
    ).with_columns(
        pl.col("model_path").replace_strict(_SILICON_MODELS).alias("fl_model"),
        pl.col("system").replace_strict(_SILICON_GPUS).alias("fl_gpu"),
        pl.when(pl.col("gemm_quant_mode").fill_null("bf16").str.starts_with("fp8"))
        .then(pl.lit("fp8"))
        .otherwise(pl.lit("bf16"))
        .alias("fl_dtype"),
    )
    if limit is not None:
        df = df.head(limit)
    if send_jitter_s < 0:
        raise ConfigError(f"send_jitter_s: expected >= 0 seconds, found {send_jitter_s}")
    if requests_per_client < 2:
        raise ConfigError(f"requests_per_client: expected >= 2, found {requests_per_client}")
    if not 0.0 <= output_spread < 1.0:
        raise ConfigError(f"output_spread: expected in [0, 1), found {output_spread}")
    if slots_below_concurrency < 0:
        raise ConfigError(
            f"slots_below_concurrency: expected >= 0 requests, found {slots_below_concurrency}"
        )
    if frontend is not None and clients != "benchmark":
        raise ConfigError(
            f"frontend: modelled for clients='benchmark' only, found clients={clients!r}"
        )
    if prompt_pool is not None and prompt_pool < 1:
        raise ConfigError(f"prompt_pool: expected >= 1 distinct prompts, found {prompt_pool}")
    rng = np.random.default_rng(seed)
    preds_ttft, preds_tpot = [], []
    effs: dict[tuple[str, str, str], Efficiency | None] = {}
    for r in df.iter_rows(named=True):
        key = (r["fl_gpu"], r["backend"], r["fl_dtype"])
        if key not in effs:
            effs[key] = (
                calibrate_kernels(key[0], backend=key[1], dtype=key[2]).efficiency
                if efficiency == "kernels"
                else None
            )
        try:
            moe = model_spec(r["fl_model"]).num_experts > 1
            ttft, tpot = _closed_loop(
                r["fl_model"],
                r["fl_gpu"],
                tp=int(r["tp_size"]),
                ep=int(r["moe_ep_size"] or 1) if moe else 1,
                dtype=r["fl_dtype"],
                isl=int(r["isl"]),
                osl=int(r["osl"]),
                concurrency=int(r["batch_size"]),
                clients=clients,
                requests_per_client=requests_per_client,
                efficiency=effs[key],
                token_budget=(
                    int(r["batch_size"]) + int(r["isl"]) + 1500
                    if engine == "aiconfigurator"
                    else 8192
                ),
                scheduler=(
                    _BACKEND_SCHEDULERS[r["backend"]] if engine == "backend_defaults" else "sarathi"
                ),
                prompt_pool=prompt_pool,
                seed=seed,
                frontend=frontend,
                max_running=(
                    max(1, int(r["batch_size"]) - slots_below_concurrency)
                    if slots_below_concurrency > 0
                    else None
                ),
                output_tokens=(
                    np.maximum(
                        2,
                        np.round(
                            int(r["osl"])
                            * (
                                1.0
                                - output_spread
                                * rng.random(int(r["batch_size"]) * max(2, requests_per_client))
                            )
                        ),
                    ).astype(np.int64)
                    if output_spread > 0
                    else None
                ),
                send_delay_s=(
                    rng.exponential(send_jitter_s, int(r["batch_size"]) * requests_per_client)
                    if send_jitter_s > 0
                    else None
                ),
            )
        except FleetlabError:
            ttft = tpot = float("nan")
        preds_ttft.append(ttft * 1e3)
        preds_tpot.append(tpot * 1e3)
    rows = df.with_columns(pred_ttft_ms=pl.Series(preds_ttft), pred_tpot_ms=pl.Series(preds_tpot))
    if peer:
        rows = aiconfigurator_predict(rows)
    ok = rows.filter(pl.col("pred_ttft_ms").is_not_nan())
    keys = ["fl_model", "fl_gpu", "backend", "fl_dtype"]
    metrics = [
        _mape(pl.col("pred_ttft_ms"), pl.col("silicon_ttft_ms")).alias("ttft_mape"),
        _mape(pl.col("pred_tpot_ms"), pl.col("silicon_tpot_ms")).alias("tpot_mape"),
        ((pl.col("pred_tpot_ms") / pl.col("silicon_tpot_ms") - 1).abs().median() * 100).alias(
            "tpot_median_ape"
        ),
        pl.len().alias("rows"),
    ]
    if peer:
        for col, true in (("aic_ttft_ms", "silicon_ttft_ms"), ("aic_tpot_ms", "silicon_tpot_ms")):
            ape = ((pl.col(col) - pl.col(true)).abs() / pl.col(true)).filter(
                pl.col(col).is_not_nan()
            )
            metrics.append((ape.mean() * 100).alias(col.replace("_ms", "_mape")))
        metrics.append(pl.col("aic_ttft_ms").is_not_nan().sum().alias("aic_rows"))
    summary = ok.group_by(keys).agg(metrics).sort(keys)
    total = (
        ok.select(metrics)
        .with_columns(*[pl.lit("all").alias(k) for k in keys])
        .select(summary.columns)
    )
    return rows, pl.concat([summary, total])
