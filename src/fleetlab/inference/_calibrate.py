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

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from scipy.optimize import least_squares

from fleetlab.errors import DataNotFoundError, InputFormatError
from fleetlab.inference._perf import allreduce_time, gemm_time
from fleetlab.inference._specs import Efficiency, GpuSpec

__all__ = ["VIDUR_GEMM_OPS", "calibrate", "read_vidur_compute", "read_vidur_network"]

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
    if not Path(path).exists():
        raise DataNotFoundError(f"{path}: no such profile")
    df = pl.read_csv(path, infer_schema_length=10000)
    need = ["num_tokens", "num_tensor_parallel_workers", *_MODEL_COLS]
    need += [f"time_stats.{op}.median" for op in VIDUR_GEMM_OPS]
    for col in need:
        if col not in df.columns:
            raise InputFormatError(
                path,
                "missing column",
                field=col,
                expected="vidur mlp.csv columns",
                found=df.columns[:6],
            )
    rows = []
    for op in (*VIDUR_GEMM_OPS, *_ELEMENTWISE):
        col = f"time_stats.{op}.median"
        if col not in df.columns:
            continue
        part = df.select(
            pl.lit(op).alias("op"),
            pl.col("num_tokens").cast(pl.Int64),
            pl.col("num_tensor_parallel_workers").cast(pl.Int64).alias("tp"),
            *[pl.col(c) for c in _MODEL_COLS],
            pl.col(col).cast(pl.Float64).alias("time_ms"),
        )
        rows.append(part)
    long = pl.concat(rows)
    bad = long.with_row_index("row").filter(~(pl.col("time_ms") > 0))
    if bad.height:
        r = bad.row(0, named=True)
        raise InputFormatError(
            path,
            "operator time must be positive",
            row=int(r["row"]) + 1,
            field=f"time_stats.{r['op']}.median",
            expected="ms > 0",
            found=r["time_ms"],
        )
    hd = pl.col("n_embd") / pl.col("n_head")
    q = pl.col("n_embd") / pl.col("tp")
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
    out[idx] = _gemm_vec(tokens[idx], k[idx], n[idx], gpu, eff)
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


def _gemm_vec(t: np.ndarray, k: np.ndarray, n: np.ndarray, gpu: GpuSpec, eff: Efficiency):
    # gemm_time takes scalar k, n; broadcasting works for arrays of equal length too
    return gemm_time(t, k, n, gpu=gpu, eff=eff)  # type: ignore[arg-type]


def calibrate(
    gpu: GpuSpec,
    compute: Sequence[Path],
    *,
    network: Path | None = None,
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

    Returns
    -------
    (Efficiency, dict)
        The calibrated efficiencies (attention and CPU overheads keep ``gpu``'s values)
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
    return eff, stats
