"""Calibrate the roofline efficiencies from operator profiles in vidur's CSV format.

vidur's ``mlp.csv`` holds, per model, token count and tensor-parallel degree, the measured
time of every non-attention operator of one layer (``time_stats.<op>.median``, ms).
``all_reduce.csv`` / ``send_recv.csv`` hold collective times by message size (bytes) and
world size. :func:`calibrate` fits the GEMM efficiency curve, the streaming (memory)
efficiency, the per-kernel cost, the bandwidth fractions of the RMSNorm and of the
SiLU-and-multiply / rotary kernels, and the all-reduce latency/bandwidth to such files by
least squares on log time (relative error), and returns a new :class:`Efficiency`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
from scipy.optimize import least_squares

from fleetlab.errors import DataNotFoundError, InputFormatError
from fleetlab.inference._perf import allreduce_time, gemm_time
from fleetlab.inference._specs import Efficiency, GpuSpec

__all__ = [
    "VIDUR_GEMM_OPS",
    "calibrate",
    "fit_rate",
    "read_vidur_attention",
    "read_vidur_compute",
    "read_vidur_network",
]

#: vidur operator name -> (input width, output width) as functions of the model columns
VIDUR_GEMM_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
_ELEMENTWISE = ("input_layernorm", "post_attention_layernorm", "add", "mlp_act", "attn_rope")
_NORMS = ("input_layernorm", "post_attention_layernorm")
_ACT_ROPE = ("mlp_act", "attn_rope")
#: bytes moved per output element (2-byte activations): reads + writes of each kernel
_PASSES = {"mlp_act": 3.0}
_MODEL_COLS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp")


def read_vidur_compute(path: Path) -> pl.DataFrame:
    """Read a vidur ``mlp.csv`` profile into a long table of (op, tokens, tp, shape, ms).

    Parameters
    ----------
    path : Path
        A vidur compute profile (``profiling/compute/<gpu>/<org>/<model>/mlp.csv``).

    Returns
    -------
    pl.DataFrame
        Columns op, num_tokens, tp, k, n, time_ms (median), one row per measurement.

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    InputFormatError
        A required column is missing or a time is not a positive number.
    """
    need = ["num_tokens", "num_tensor_parallel_workers", *_MODEL_COLS]
    need += [f"time_stats.{op}.median" for op in VIDUR_GEMM_OPS]
    df = _read_profile(path, need, "vidur mlp.csv columns")
    hd = _head_dim(df, "n_head")
    df = df.with_row_index("row")
    rows = []
    for op in (*VIDUR_GEMM_OPS, *_ELEMENTWISE):
        col = f"time_stats.{op}.median"
        if col not in df.columns:
            continue
        part = df.select(
            "row",
            pl.lit(op).alias("op"),
            pl.col("num_tokens").cast(pl.Int64),
            pl.col("num_tensor_parallel_workers").cast(pl.Int64).alias("tp"),
            *[pl.col(c) for c in _MODEL_COLS],
            hd.alias("head_dim"),
            pl.col(col).cast(pl.Float64).alias("time_ms"),
        )
        rows.append(part)
    long = pl.concat(rows)
    _check_times(long, path, lambda r: f"time_stats.{r['op']}.median")
    hd = pl.col("head_dim")
    q = pl.col("n_head") * hd / pl.col("tp")
    kv = (pl.col("n_kv_head") / pl.col("tp")).clip(lower_bound=1) * hd
    inter = pl.col("n_expanded_embd") / pl.col("tp")
    up = inter * pl.when(pl.col("use_gated_mlp")).then(2).otherwise(1)
    k = (
        pl.when(pl.col("op") == "attn_post_proj")
        .then(q)
        .when(pl.col("op") == "mlp_down_proj")
        .then(inter)
        .otherwise(pl.col("n_embd"))
    )
    n = (
        pl.when(pl.col("op") == "attn_pre_proj")
        .then(q + 2 * kv)
        .when(pl.col("op") == "mlp_up_proj")
        .then(up)
        .when(pl.col("op") == "mlp_act")
        .then(inter)
        .when(pl.col("op") == "attn_rope")
        .then(q + kv)
        .otherwise(pl.col("n_embd"))
    )
    return long.with_columns(k=k.cast(pl.Float64), n=n.cast(pl.Float64)).select(
        "op", "num_tokens", "tp", "k", "n", "time_ms"
    )


def _read_profile(path: Path, need: Sequence[str], expected: str) -> pl.DataFrame:
    """A profile CSV with the columns ``need``; names the file and the first one missing."""
    if not Path(path).exists():
        raise DataNotFoundError(f"{path}: no such profile")
    df = pl.read_csv(path, infer_schema_length=10000)
    for col in need:
        if col not in df.columns:
            raise InputFormatError(
                path, "missing column", field=col, expected=expected, found=df.columns[:6]
            )
    return df


def _check_times(long: pl.DataFrame, path: Path, field: Callable[[dict], str]) -> None:
    """Name the first row (of the file) whose ``time_ms`` is missing, NaN or <= 0.

    NaN needs its own test: polars orders it above every number, so ``NaN > 0`` holds.
    """
    t = pl.col("time_ms")
    bad = long.filter(t.is_null() | t.is_nan() | (t <= 0))
    if bad.height:
        r = bad.row(0, named=True)
        raise InputFormatError(
            path,
            "time must be a positive number",
            row=int(r["row"]) + 1,
            field=field(r),
            expected="ms > 0",
            found=r["time_ms"],
        )


def _head_dim(df: pl.DataFrame, heads: str) -> pl.Expr:
    """Head width: the ``head_dim`` column fleetlab's profiler writes, else vidur's rule."""
    if "head_dim" in df.columns:
        return pl.col("head_dim").cast(pl.Float64)
    return pl.col("n_embd") / pl.col(heads)


_ATTENTION_COLS = (
    "n_embd",
    "n_q_head",
    "n_kv_head",
    "num_tensor_parallel_workers",
    "batch_size",
    "prefill_chunk_size",
    "kv_cache_size",
    "is_prefill",
)


def read_vidur_attention(path: Path) -> pl.DataFrame:
    """Read a vidur ``attention.csv`` profile into the work and time of each row.

    Parameters
    ----------
    path : Path
        An attention profile in vidur's format (``fleetlab inference profile`` writes one).

    Returns
    -------
    pl.DataFrame
        Columns is_prefill, backend (``attention_backend``, or "unknown"), tp, batch_size,
        prefill_chunk_size, kv_cache_size,
        pair_flops (causal query-key pairs × 4 × query heads per GPU × head width: the
        FLOPs of a prefill row), query_heads (query tokens × query heads per GPU),
        kv_bytes (bf16 keys and values read by a decode row), time_ms (the row's phase,
        median).

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    InputFormatError
        A required column is missing or a row's time is not a positive number.
    """
    need = [*_ATTENTION_COLS, "time_stats.attn_prefill.median", "time_stats.attn_decode.median"]
    df = _read_profile(path, need, "vidur attention.csv columns")
    prefill = pl.col("is_prefill").cast(pl.Utf8).str.to_lowercase() == "true"
    time_ms = (
        pl.when(prefill)
        .then(pl.col("time_stats.attn_prefill.median"))
        .otherwise(pl.col("time_stats.attn_decode.median"))
        .cast(pl.Float64)
    )
    long = df.select(
        prefill.alias("is_prefill"),
        pl.col("num_tensor_parallel_workers").cast(pl.Int64).alias("tp"),
        *[pl.col(c).cast(pl.Int64) for c in _ATTENTION_COLS[:3]],
        *[pl.col(c).cast(pl.Int64) for c in _ATTENTION_COLS[4:7]],
        _head_dim(df, "n_q_head").alias("head_dim"),
        (
            pl.col("attention_backend").cast(pl.Utf8)
            if "attention_backend" in df.columns
            else pl.lit("unknown")
        ).alias("backend"),
        time_ms.alias("time_ms"),
    )
    _check_times(
        long.with_row_index("row"),
        path,
        lambda r: f"time_stats.attn_{'prefill' if r['is_prefill'] else 'decode'}.median",
    )
    dh = pl.col("head_dim")
    hq = pl.col("n_q_head") / pl.col("tp")
    hkv = (pl.col("n_kv_head") / pl.col("tp")).clip(lower_bound=1)
    c, k, b = pl.col("prefill_chunk_size"), pl.col("kv_cache_size"), pl.col("batch_size")
    pairs = b * (c * k + c * (c + 1) / 2)
    return long.select(
        "is_prefill",
        "backend",
        "tp",
        "batch_size",
        "prefill_chunk_size",
        "kv_cache_size",
        (pairs * 4.0 * hq * dh).alias("pair_flops"),
        (b * pl.when(pl.col("is_prefill")).then(c).otherwise(1) * hq).alias("query_heads"),
        (b * (k + 1) * 2.0 * hkv * dh * 2.0).alias("kv_bytes"),
        "time_ms",
    )


def fit_rate(
    work: np.ndarray,
    seconds: np.ndarray,
    peak: float,
    *,
    guess: float = 0.5,
    units: np.ndarray | None = None,
    unit_s: float | None = None,
) -> tuple[float, float, float, float]:
    """Fit ``seconds = fixed + units · unit_s + work / (peak · efficiency)`` on log time.

    The form of FlashAttention prefill (work: FLOPs, units: query tokens × query heads)
    and of decode attention (work: KV bytes) in fleetlab's model. Robust least squares
    (soft L1 on log residuals).

    Parameters
    ----------
    work, seconds : ndarray
        Work and measured time of each call.
    peak : float
        Peak rate of the work (FLOP/s or bytes/s).
    guess : float
        Starting efficiency.
    units, unit_s : ndarray, float, optional
        Per-call counts with a cost of their own: ``unit_s`` is fitted when None and held
        at the given value otherwise; without ``units`` there is no such term.

    Returns
    -------
    (float, float, float, float)
        Efficiency (fraction of ``peak``, at most 1), fixed cost and cost per unit in
        seconds, MAPE in percent of the fitted times.
    """
    n = np.zeros_like(work) if units is None else np.asarray(units, dtype=np.float64)
    free = units is not None and unit_s is None

    def pred(x: np.ndarray) -> np.ndarray:
        per_unit = x[2] * 1e-9 if free else (unit_s or 0.0)
        return x[1] * 1e-6 + n * per_unit + work / (peak * min(x[0], 1.0))

    x0, lo, hi = [guess, 10.0], [0.01, 0.0], [1.0, 500.0]
    if free:
        x0, lo, hi = [*x0, 0.1], [*lo, 0.0], [*hi, 1e3]
    x = least_squares(
        lambda x: np.log(pred(x)) - np.log(seconds),
        np.array(x0),
        bounds=(lo, hi),
        loss="soft_l1",
        f_scale=0.2,
    ).x
    mape = float(np.mean(np.abs(pred(x) - seconds) / seconds) * 100)
    per_unit = float(x[2]) * 1e-9 if free else (unit_s or 0.0)
    return float(min(x[0], 1.0)), float(x[1]) * 1e-6, per_unit, mape


def read_vidur_network(path: Path) -> pl.DataFrame:
    """Read a vidur ``all_reduce.csv`` or ``send_recv.csv`` (size in bytes, time in ms).

    Returns
    -------
    pl.DataFrame
        Columns collective, workers, size_bytes, time_ms.

    Raises
    ------
    DataNotFoundError, InputFormatError
    """
    if not Path(path).exists():
        raise DataNotFoundError(f"{path}: no such profile")
    df = pl.read_csv(path, infer_schema_length=10000)
    for col in ("num_workers", "size", "collective"):
        if col not in df.columns:
            raise InputFormatError(
                path,
                "missing column",
                field=col,
                expected="vidur network profile columns",
                found=df.columns,
            )
    tcol = [c for c in df.columns if c.startswith("time_stats.") and c.endswith(".median")]
    if not tcol:
        raise InputFormatError(
            path,
            "no time column",
            field="time_stats.<op>.median",
            expected="a median time column",
            found=df.columns,
        )
    if "devices_per_node" in df.columns:
        # intra-node rows only: every worker on one node
        df = df.filter(pl.col("devices_per_node") == pl.col("num_workers"))
    return df.select(
        pl.col("collective"),
        pl.col("num_workers").cast(pl.Int64).alias("workers"),
        pl.col("size").cast(pl.Float64).alias("size_bytes"),
        pl.col(tcol[0]).cast(pl.Float64).alias("time_ms"),
    )


def _predict(ops: pl.DataFrame, gpu: GpuSpec, eff: Efficiency) -> np.ndarray:
    out = np.empty(ops.height)
    tokens = ops["num_tokens"].to_numpy().astype(np.float64)
    k = ops["k"].to_numpy()
    n = ops["n"].to_numpy()
    is_gemm = ops["op"].is_in(list(VIDUR_GEMM_OPS)).to_numpy()
    idx = np.flatnonzero(is_gemm)
    out[idx] = gemm_time(tokens[idx], k[idx], n[idx], gpu=gpu, eff=eff)
    rest = np.flatnonzero(~is_gemm)
    names = ops["op"].to_numpy()[rest]
    factor = np.array([_PASSES.get(str(o), 2.0) for o in names])
    nbytes = tokens[rest] * n[rest] * 2.0 * factor
    norm = eff.norm_efficiency if eff.norm_efficiency is not None else eff.memory
    elem = eff.elementwise_efficiency if eff.elementwise_efficiency is not None else eff.memory
    frac = np.where(
        np.isin(names, _NORMS), norm, np.where(np.isin(names, _ACT_ROPE), elem, eff.memory)
    )
    out[rest] = nbytes / (gpu.hbm_bytes_per_s * frac) + eff.kernel_overhead_s
    return out * 1e3


def _fit_bandwidth(sel: pl.DataFrame, gpu: GpuSpec, eff: Efficiency, field: str) -> float:
    """Least-squares fraction of HBM bandwidth (``field`` of ``eff``) for memory-bound rows."""
    t_ms = sel["time_ms"].to_numpy()

    def resid(x: np.ndarray) -> np.ndarray:
        e = eff.model_copy(update={field: float(min(x[0], 1.0))})
        return np.log(_predict(sel, gpu, e)) - np.log(t_ms)

    fit = least_squares(resid, np.array([0.5]), bounds=([0.01], [1.0]))
    return float(min(fit.x[0], 1.0))


def calibrate(
    gpu: GpuSpec,
    compute: Sequence[Path],
    *,
    network: Path | None = None,
    attention: Path | None = None,
) -> tuple[Efficiency, dict[str, float]]:
    """Fit ``gpu``'s efficiency parameters to vidur-format profiles.

    Parameters
    ----------
    gpu : GpuSpec
        The GPU the profiles were measured on (its peaks are not fitted).
    compute : sequence of Path
        One or more ``mlp.csv`` files (any models, any TP degrees).
    network : Path, optional
        An ``all_reduce.csv`` measured on the same kind of node.
    attention : Path, optional
        An ``attention.csv`` (vidur's format; ``fleetlab inference profile`` writes one):
        fits ``attn_prefill`` (fraction of peak bf16 FLOP/s) and ``attn_decode``
        (fraction of HBM bandwidth), each with a fixed cost per call, as
        :func:`~fleetlab.inference.calibrate_kernels` does on aiconfigurator's tables,
        and keeps the most efficient of the backends the profile records.

    Returns
    -------
    (Efficiency, dict)
        The calibrated efficiencies (CPU overheads, and attention unless ``attention``
        is given, keep ``gpu``'s values)
        and fit statistics: ``gemm_mape``, ``norm_mape``, ``elementwise_mape``,
        ``network_mape`` (percent), row counts. ``norm_efficiency`` is fitted to the
        profiles' RMSNorm rows, ``elementwise_efficiency`` to their residual-add,
        SiLU-and-multiply and rotary rows (rows moving at least 1 MB).

    Raises
    ------
    DataNotFoundError, InputFormatError
        A profile file is missing or malformed.
    """
    if not compute:
        raise DataNotFoundError("calibrate needs at least one vidur mlp.csv profile")
    every = pl.concat([read_vidur_compute(Path(p)) for p in compute])
    ops = every.filter(pl.col("op").is_in(list(VIDUR_GEMM_OPS)))
    measured = ops["time_ms"].to_numpy()
    base = gpu.efficiency

    def make(x: np.ndarray) -> Efficiency:
        return base.model_copy(
            update={
                "compute_max": float(min(x[0], 1.0)),
                "compute_half_tokens": float(x[1]),
                "memory": float(min(x[2], 1.0)),
                "kernel_overhead_s": float(x[3]) * 1e-6,
            }
        )

    def resid(x: np.ndarray) -> np.ndarray:
        return np.log(_predict(ops, gpu, make(x))) - np.log(measured)

    x0 = np.array(
        [base.compute_max, base.compute_half_tokens, base.memory, base.kernel_overhead_s * 1e6]
    )
    fit = least_squares(resid, x0, bounds=([0.05, 0.0, 0.05, 0.0], [1.0, 4096.0, 1.0, 100.0]))
    eff = make(fit.x)
    pred = _predict(ops, gpu, eff)
    stats = {
        "compute_rows": float(ops.height),
        "gemm_mape": float(np.mean(np.abs(pred - measured) / measured) * 100),
    }
    # memory-bound kernels: RMSNorm, and SiLU-and-multiply with rotary, each a fraction of
    # HBM bandwidth on top of the per-kernel cost just fitted (the residual add streams at
    # the GEMMs' ``memory`` rate: 0.9-1.0 in the same profiles). Rows of >= 16 MB only:
    # the prefill regime, where bandwidth rather than launch cost decides.
    elem = every.filter(
        pl.col("op").is_in(list(_ELEMENTWISE)) & (pl.col("num_tokens") * pl.col("n") * 2 >= 16e6)
    )
    for field, names in (("norm_efficiency", _NORMS), ("elementwise_efficiency", _ACT_ROPE)):
        sel = elem.filter(pl.col("op").is_in(list(names)))
        if sel.height == 0:
            continue
        x = _fit_bandwidth(sel, gpu, eff, field)
        eff = eff.model_copy(update={field: x})
        t_ms = sel["time_ms"].to_numpy()
        pred_e = _predict(sel, gpu, eff)
        key = field.removesuffix("_efficiency")
        stats[f"{key}_rows"] = float(sel.height)
        stats[f"{key}_mape"] = float(np.mean(np.abs(pred_e - t_ms) / t_ms) * 100)
    if network is not None:
        net = read_vidur_network(Path(network)).filter(pl.col("workers") > 1)
        size = net["size_bytes"].to_numpy()
        workers = net["workers"].to_numpy()
        t_ms = net["time_ms"].to_numpy()

        def net_pred(e: Efficiency) -> np.ndarray:
            out = np.empty(size.shape)
            for w in np.unique(workers):
                m = workers == w
                out[m] = allreduce_time(
                    size[m], int(w), link_bytes_per_s=gpu.intra_node_bytes_per_s, eff=e
                )
            return out * 1e3

        def make_net(x: np.ndarray) -> Efficiency:
            return eff.model_copy(
                update={
                    "allreduce_latency_s": float(x[0]) * 1e-6,
                    "allreduce_efficiency": float(min(x[1], 1.0)),
                }
            )

        def nres(x: np.ndarray) -> np.ndarray:
            return np.log(net_pred(make_net(x))) - np.log(t_ms)

        nfit = least_squares(nres, np.array([15.0, 0.6]), bounds=([0.0, 0.01], [500.0, 1.0]))
        eff = make_net(nfit.x)
        stats["network_rows"] = float(net.height)
        stats["network_mape"] = float(np.mean(np.abs(net_pred(eff) - t_ms) / t_ms) * 100)
    if attention is not None:
        eff = eff.model_copy(update=_fit_attention(Path(attention), gpu, stats))
    return eff, stats


def _fit_attention(path: Path, gpu: GpuSpec, stats: dict[str, float]) -> dict[str, float]:
    """``attn_prefill`` / ``attn_decode`` of the fastest kernel in an attention profile.

    Each phase is fitted per recorded backend (of at least 8 rows) and the most efficient
    one is kept: a serving engine runs its best kernel, while PyTorch offers its fastest
    (cuDNN on an H100) only for some shapes. Fit statistics of the kept backend go into ``stats``.
    """
    att = read_vidur_attention(path)
    fits: dict[str, float] = {}
    for phase, work, peak, guess in (
        ("prefill", "pair_flops", gpu.peak_flops("bf16"), 0.4),
        ("decode", "kv_bytes", gpu.hbm_bytes_per_s, 0.6),
    ):
        rows = att.filter(pl.col("is_prefill") == (phase == "prefill"))
        counts = rows["backend"].value_counts()
        # a backend that ran only a few shapes says little about the curve
        enough = counts.filter(pl.col("count") >= min(8, counts["count"].max() or 0))
        for backend in sorted(enough["backend"]):
            sel = rows.filter(pl.col("backend") == backend)
            e, fixed, per_query, mape = fit_rate(
                sel[work].to_numpy(),
                sel["time_ms"].to_numpy() * 1e-3,
                peak,
                guess=guess,
                units=sel["query_heads"].to_numpy(),
                unit_s=None if phase == "prefill" else fits.get("attn_query_s", 0.0),
            )
            if e <= fits.get(f"attn_{phase}", 0.0):
                continue
            fits[f"attn_{phase}"] = e
            if phase == "prefill":
                fits["attn_query_s"] = per_query
            stats[f"{phase}_attention_rows"] = float(sel.height)
            stats[f"{phase}_attention_mape"] = mape
            stats[f"{phase}_attention_fixed_us"] = fixed * 1e6
    return fits
