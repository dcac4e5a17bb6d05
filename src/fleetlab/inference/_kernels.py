"""Calibrate the roofline efficiencies from aiconfigurator's measured kernel tables.

``aiconfigurator-core`` (NVIDIA, Apache-2.0) ships per-GPU, per-backend, per-version
Parquet tables of measured kernel latencies (``systems/data/<system>/<kind>/<backend>/
<version>/*.parquet``, latency in ms): GEMMs by ``m x n x k`` and dtype, context
(prefill) attention by batch, prompt length and head layout, generation (decode)
attention by batch and cached length, and the custom all-reduce by message size and GPU
count. :func:`calibrate_kernels` fits fleetlab's :class:`Efficiency` to them: the GEMM
curve (``compute_max``, ``compute_half_tokens``, ``memory``, ``kernel_overhead_s``), the
FlashAttention prefill efficiency (``attn_prefill``), the paged decode-attention
bandwidth efficiency (``attn_decode``), the MoE experts' grouped-GEMM curve and the
all-reduce latency / bandwidth. These are
kernel measurements, not end-to-end rows, so ``silicon_sample.csv`` stays a hold-out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
from scipy.optimize import least_squares

from fleetlab.errors import DataNotFoundError, InputFormatError
from fleetlab.inference._calibrate import fit_rate
from fleetlab.inference._perf import allreduce_time, experts_time, gemm_time
from fleetlab.inference._specs import Efficiency, GpuSpec, gpu_spec

__all__ = ["KernelFit", "aiconfigurator_systems_dir", "calibrate_kernels", "read_kernel_table"]

Backend = Literal["vllm", "sglang", "trtllm"]
#: fleetlab GPU name -> aiconfigurator system directory
_SYSTEMS = {"a100": "a100_sxm", "h100": "h100_sxm", "h200": "h200_sxm", "l40s": "l40s"}
_TABLES = {
    "gemm": ("gemm", "gemm_perf.parquet"),
    "context_attention": ("attention", "context_attention_perf.parquet"),
    "generation_attention": ("attention", "generation_attention_perf.parquet"),
    "allreduce": ("comm", "custom_allreduce_perf.parquet"),
    "moe": ("moe", "moe_perf.parquet"),
}
_NEED = {
    "gemm": ("gemm_dtype", "m", "n", "k", "latency"),
    "context_attention": (
        "batch_size",
        "isl",
        "num_heads",
        "num_key_value_heads",
        "head_dim",
        "kv_cache_dtype",
        "latency",
    ),
    "generation_attention": (
        "batch_size",
        "step",
        "num_heads",
        "num_key_value_heads",
        "head_dim",
        "kv_cache_dtype",
        "latency",
    ),
    "allreduce": ("num_gpus", "message_size", "latency"),
    "moe": (
        "moe_dtype",
        "num_tokens",
        "hidden_size",
        "inter_size",
        "topk",
        "num_experts",
        "moe_tp_size",
        "moe_ep_size",
        "distribution",
        "latency",
    ),
}


def aiconfigurator_systems_dir() -> Path:
    """The ``systems/data`` folder of the installed ``aiconfigurator-core`` (not imported).

    Raises
    ------
    DataNotFoundError
        The package is not installed or has no kernel data.
    """
    import importlib.util

    spec = importlib.util.find_spec("aiconfigurator_core")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(
            "aiconfigurator-core is not installed "
            "(pip install aiconfigurator-core; it works offline)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "systems" / "data"
    if not path.is_dir():
        raise DataNotFoundError(f"{path}: no kernel tables in aiconfigurator-core")
    return path


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", name)[:4])


def read_kernel_table(
    gpu: str,
    kind: Literal["gemm", "context_attention", "generation_attention", "allreduce", "moe"],
    *,
    backend: Backend = "vllm",
    root: Path | None = None,
) -> pl.DataFrame:
    """Read one measured kernel table (the newest version the backend has) for a GPU.

    Parameters
    ----------
    gpu : str
        fleetlab GPU name (``a100``, ``h100``, ``h200``, ``l40s``).
    kind : {"gemm", "context_attention", "generation_attention", "allreduce", "moe"}
        Which table.
    backend : {"vllm", "sglang", "trtllm"}
        Serving framework whose kernels were measured.
    root : Path, optional
        A folder laid out like aiconfigurator's ``systems/data`` (default: the installed one).

    Returns
    -------
    pl.DataFrame
        The table as stored (latency in ms) plus a ``source`` column (the file read).

    Raises
    ------
    DataNotFoundError
        No table of that kind for the GPU and backend.
    InputFormatError
        A required column is missing.
    """
    name = gpu_spec(gpu).name
    system = _SYSTEMS.get(name)
    if system is None:
        raise DataNotFoundError(
            f"no aiconfigurator kernel tables for GPU {gpu!r} "
            f"(expected one of: {', '.join(sorted(_SYSTEMS))})"
        )
    base = (root or aiconfigurator_systems_dir()) / system
    folder, fname = _TABLES[kind]
    candidates = sorted(
        (base / folder / backend).glob(f"*/{fname}"), key=lambda p: _version_key(p.parent.name)
    )
    if not candidates:
        raise DataNotFoundError(f"{base / folder / backend}: no {fname} for {gpu} / {backend}")
    path = candidates[-1]
    df = pl.read_parquet(path)
    for col in _NEED[kind]:
        if col not in df.columns:
            raise InputFormatError(
                path, "missing column", field=col, expected=f"{kind} columns", found=df.columns
            )
    if kind.endswith("attention") and "window_size" not in df.columns:
        df = df.with_columns(pl.lit(0, dtype=pl.Int64).alias("window_size"))  # older tables
    # a non-positive latency is a failed measurement: it is dropped, not fitted
    return df.filter(pl.col("latency") > 0).with_columns(pl.lit(str(path)).alias("source"))


@dataclass(frozen=True)
class KernelFit:
    """Result of :func:`calibrate_kernels`: the efficiencies and how well each part fits.

    Attributes
    ----------
    efficiency : Efficiency
        The calibrated efficiencies (CPU overheads keep the GPU's values).
    stats : dict of str to float
        Per part: rows used and MAPE (percent) of the fitted kernel times.
    """

    efficiency: Efficiency
    stats: dict[str, float]


def _fit(
    resid: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, lo: list[float], hi: list[float]
) -> np.ndarray:
    """Robust least squares (soft L1 on log residuals) within bounds."""
    return np.asarray(least_squares(resid, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.2).x)


def _mape(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(pred - true) / true) * 100)


def _fit_moe(
    moe: pl.DataFrame,
    g: GpuSpec,
    eff: Efficiency,
    wb: float,
    dtype: Literal["bf16", "fp8"],
    stats: dict[str, float],
) -> Efficiency:
    """``moe_compute_max`` / ``moe_compute_half_tokens`` / ``moe_memory`` fitted to MoE rows."""
    t_moe = moe["latency"].to_numpy() * 1e-3
    col = {c: moe[c].to_numpy().astype(np.float64) for c in _NEED["moe"][1:-2]}

    def make(x: np.ndarray) -> Efficiency:
        return eff.model_copy(
            update={
                "moe_compute_max": float(min(x[0], 1.0)),
                "moe_compute_half_tokens": float(x[1]),
                "moe_memory": float(min(x[2], 1.0)),
            }
        )

    def pred(e: Efficiency) -> np.ndarray:
        # every row at once: the shapes broadcast like the token counts
        return experts_time(
            col["num_tokens"],
            hidden=col["hidden_size"],
            inter=col["inter_size"],  # the expert's full width, split over moe_tp ranks
            num_experts=col["num_experts"],
            experts_per_token=col["topk"],
            tp=col["moe_tp_size"] * col["moe_ep_size"],
            ep=col["moe_ep_size"],
            gated=True,
            gpu=g,
            eff=e,
            weight_bytes=wb,
            dtype=dtype,
        )

    x = _fit(
        lambda x: np.log(pred(make(x))) - np.log(t_moe),
        np.array([eff.compute_max, 100.0, eff.memory]),
        [0.05, 0.0, 0.05],
        [1.0, 8192.0, 1.0],
    )
    fitted = make(x)
    stats["moe_rows"] = float(moe.height)
    stats["moe_mape"] = _mape(pred(fitted), t_moe)
    stats["moe_mape_dense_curve"] = _mape(pred(eff), t_moe)
    return fitted


def calibrate_kernels(
    gpu: str | GpuSpec,
    *,
    backend: Backend = "vllm",
    dtype: Literal["bf16", "fp8"] = "bf16",
    root: Path | None = None,
) -> KernelFit:
    """Fit a GPU's efficiencies to aiconfigurator's measured kernels for one backend.

    GEMMs: rows of LLM-like shapes (``n, k >= 1024``, ``m <= 16384``) of the given dtype,
    fitted with :func:`gemm_time` on log time. Prefill attention: causal FlashAttention
    rows (no sliding window, head width 128), ``time = fixed + query tokens × heads ×
    attn_query_s + pair FLOPs / (peak · attn_prefill)``. Decode attention: ``time =
    fixed + sequences × heads × attn_query_s + KV bytes / (HBM · attn_decode)``, the
    per-query cost held at the prefill fit. MoE experts (where the backend has an MoE
    table): grouped GEMMs of :func:`~fleetlab.inference._perf.experts_time` under
    balanced routing, the fastest kernel per shape, fitting ``moe_compute_max``,
    ``moe_compute_half_tokens`` and ``moe_memory``.
    All-reduce: the CUDA-graph custom all-reduce, ring model of :func:`allreduce_time`.

    Parameters
    ----------
    gpu : str or GpuSpec
        The GPU (its peaks are not fitted).
    backend : {"vllm", "sglang", "trtllm"}
        Framework whose kernel tables to use.
    dtype : {"bf16", "fp8"}
        GEMM precision to fit (fp8 GEMMs run against the fp8 peak).
    root : Path, optional
        A folder laid out like aiconfigurator's ``systems/data``.

    Returns
    -------
    KernelFit
        ``norm_efficiency`` and ``elementwise_efficiency`` are None (element-wise kernels
        stream at the fitted ``memory`` rate): the tables have no element-wise kernels,
        the engines they measure fuse the residual add into the RMSNorm, and the GPU's
        built-in values describe the unfused kernels of vidur's profiles.

    Raises
    ------
    DataNotFoundError, InputFormatError
        Missing or malformed tables.
    """
    g = gpu_spec(gpu)
    # RMSNorm / SiLU / rotary bandwidths: the built-ins come from vidur's profiles of
    # unfused kernels; the engines these tables measure fuse the residual add into the
    # norm and have no element-wise table here, so they stream at the GEMMs' rate
    base = g.efficiency.model_copy(
        update={
            "norm_efficiency": None,
            "elementwise_efficiency": None,
            # the MoE curve is fitted below from the dense one, not from the built-in
            "moe_compute_max": None,
            "moe_compute_half_tokens": None,
            "moe_memory": None,
        }
    )
    stats: dict[str, float] = {}
    g.peak_flops(dtype)  # raises ConfigError where the GPU has no fp8

    # -- GEMM
    gd = "bfloat16" if dtype == "bf16" else "fp8"
    gemm = read_kernel_table(g.name, "gemm", backend=backend, root=root).filter(
        (pl.col("gemm_dtype") == gd)
        & (pl.col("n") >= 1024)
        & (pl.col("k") >= 1024)
        & (pl.col("n") <= 65536)
        & (pl.col("k") <= 65536)
        & (pl.col("m") <= 16384)
    )
    if gemm.height == 0:
        raise DataNotFoundError(f"no {gd} GEMM rows for {g.name} / {backend}")
    m = gemm["m"].to_numpy().astype(np.float64)
    n = gemm["n"].to_numpy().astype(np.float64)
    k = gemm["k"].to_numpy().astype(np.float64)
    t_gemm = gemm["latency"].to_numpy() * 1e-3
    wb = 1.0 if dtype == "fp8" else 2.0

    def make_gemm(x: np.ndarray) -> Efficiency:
        return base.model_copy(
            update={
                "compute_max": float(min(x[0], 1.0)),
                "compute_half_tokens": float(x[1]),
                "memory": float(min(x[2], 1.0)),
                "kernel_overhead_s": float(x[3]) * 1e-6,
            }
        )

    def gemm_pred(e: Efficiency) -> np.ndarray:
        return gemm_time(m, k, n, gpu=g, eff=e, weight_bytes=wb, dtype=dtype)

    xg = _fit(
        lambda x: np.log(gemm_pred(make_gemm(x))) - np.log(t_gemm),
        np.array([0.7, 100.0, 0.8, 5.0]),
        [0.05, 0.0, 0.05, 0.0],
        [1.0, 4096.0, 1.0, 100.0],
    )
    eff = make_gemm(xg)
    stats["gemm_rows"] = float(gemm.height)
    stats["gemm_mape"] = _mape(gemm_pred(eff), t_gemm)

    # -- prefill attention (bf16 activations; peak of the attention dtype is bf16)
    ctx = read_kernel_table(g.name, "context_attention", backend=backend, root=root).filter(
        (pl.col("window_size") == 0)
        & (pl.col("head_dim") == 128)
        & (pl.col("kv_cache_dtype") == "bfloat16")
        & (pl.col("isl") >= 128)
    )
    if ctx.height == 0:
        raise DataNotFoundError(f"no context-attention rows for {g.name} / {backend}")
    isl = ctx["isl"].to_numpy().astype(np.float64)
    pair_flops = (
        ctx["batch_size"].to_numpy()
        * isl
        * (isl + 1)
        / 2.0
        * 4.0
        * ctx["num_heads"].to_numpy()
        * ctx["head_dim"].to_numpy()
    )
    t_ctx = ctx["latency"].to_numpy() * 1e-3

    queries = ctx["batch_size"].to_numpy() * isl * ctx["num_heads"].to_numpy()
    e_ctx, fixed_ctx, per_query, mape_ctx = fit_rate(
        pair_flops, t_ctx, g.peak_flops("bf16"), guess=0.4, units=queries
    )
    stats["prefill_attention_rows"] = float(ctx.height)
    stats["prefill_attention_mape"] = mape_ctx
    stats["prefill_attention_fixed_us"] = fixed_ctx * 1e6
    stats["attention_query_ns"] = per_query * 1e9

    # -- decode attention
    gen = read_kernel_table(g.name, "generation_attention", backend=backend, root=root).filter(
        (pl.col("window_size") == 0)
        & (pl.col("head_dim") == 128)
        & (pl.col("kv_cache_dtype") == "bfloat16")
    )
    if gen.height == 0:
        raise DataNotFoundError(f"no generation-attention rows for {g.name} / {backend}")
    kv_bytes = (
        gen["batch_size"].to_numpy()
        * gen["step"].to_numpy().astype(np.float64)
        * 2.0
        * gen["num_key_value_heads"].to_numpy()
        * gen["head_dim"].to_numpy()
        * 2.0
    )
    t_gen = gen["latency"].to_numpy() * 1e-3

    e_gen, fixed_gen, _, mape_gen = fit_rate(
        kv_bytes,
        t_gen,
        g.hbm_bytes_per_s,
        guess=0.6,
        units=gen["batch_size"].to_numpy() * gen["num_heads"].to_numpy(),
        unit_s=per_query,
    )
    stats["decode_attention_rows"] = float(gen.height)
    stats["decode_attention_mape"] = mape_gen
    stats["decode_attention_fixed_us"] = fixed_gen * 1e6
    eff = eff.model_copy(
        update={"attn_prefill": e_ctx, "attn_decode": e_gen, "attn_query_s": per_query}
    )

    # -- MoE experts (grouped GEMMs; balanced routing, as fleetlab's expected load)
    try:
        moe = read_kernel_table(g.name, "moe", backend=backend, root=root)
    except DataNotFoundError:
        moe = None
    if moe is not None:
        want = ("fp8", "fp8_block") if dtype == "fp8" else ("bfloat16",)
        moe = (
            moe.filter(
                pl.col("moe_dtype").is_in(list(want))
                & (pl.col("distribution") == "balanced")
                & (pl.col("num_tokens") <= 16384)
                & (pl.col("moe_tp_size") * pl.col("moe_ep_size") <= 8)
            )
            # several kernels per shape (Triton, CUTLASS...): the engine runs its fastest
            .group_by(_NEED["moe"][1:-2])
            .agg(pl.col("latency").min())
        )
    if moe is not None and moe.height:
        eff = _fit_moe(moe, g, eff, wb, dtype, stats)

    # -- all-reduce (CUDA-graph custom all-reduce, as serving engines run it)
    try:
        ar = read_kernel_table(g.name, "allreduce", backend=backend, root=root)
    except DataNotFoundError:
        ar = None
    if ar is not None and "kernel_source" in ar.columns:
        graph = ar.filter(pl.col("kernel_source").str.contains("(?i)graph"))
        ar = graph if graph.height else ar
    if ar is not None and ar.height:
        ar = ar.filter(pl.col("num_gpus") > 1)
        # message_size counts bf16 elements (aiconfigurator's CustomAllReduce(tokens x h))
        size = ar["message_size"].to_numpy().astype(np.float64) * 2.0
        workers = ar["num_gpus"].to_numpy()
        t_ar = ar["latency"].to_numpy() * 1e-3

        def ar_pred(e: Efficiency) -> np.ndarray:
            out = np.empty(size.shape)
            for w in np.unique(workers):
                sel = workers == w
                out[sel] = allreduce_time(
                    size[sel], int(w), link_bytes_per_s=g.intra_node_bytes_per_s, eff=e
                )
            return out

        def make_ar(x: np.ndarray) -> Efficiency:
            return eff.model_copy(
                update={
                    "allreduce_latency_s": float(x[0]) * 1e-6,
                    "allreduce_efficiency": float(min(x[1], 1.0)),
                }
            )

        xa = _fit(
            lambda x: np.log(ar_pred(make_ar(x))) - np.log(t_ar),
            np.array([10.0, 0.6]),
            [0.0, 0.01],
            [500.0, 1.0],
        )
        eff = make_ar(xa)
        stats["allreduce_rows"] = float(ar.height)
        stats["allreduce_mape"] = _mape(ar_pred(eff), t_ar)
    return KernelFit(efficiency=eff, stats=stats)
