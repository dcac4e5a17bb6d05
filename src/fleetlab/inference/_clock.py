"""The SM clock a GPU runs work at under its power limit, a clock lock or a power cap.

A GPU holds its board power under a limit (its TDP, or a lower cap set with ``nvidia-smi
-pl``) by lowering the SM clock. fleetlab's busy power at SM clock ``f`` (a fraction of the
maximum) is ``idle + (TDP − idle) · level`` with

    level = base · f · V(f)² + k_mem · u_mem + k_compute · V(f)² · u_compute

(``GpuSpec.busy_level``; ``GpuSpec.power_w`` at ``f = 1``), with utilisations against the
maximum-clock peaks and ``V(f)`` the assumed
:func:`~fleetlab.inference._specs.relative_voltage`.

The efficiencies of the performance model are measured at the *stock* clock, which for
compute-bound work is already below the maximum: an H200 runs large bf16 GEMMs at 0.72 of
its maximum clock to stay under 700 W (docs/inference-validation.md §1e). So a clock lock
or a cap only slows work by the ratio of the clock it allows to that stock clock, and
:func:`limited_time` works in that ratio.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fleetlab.errors import ConfigError
from fleetlab.inference._specs import GpuSpec

#: relative compute speeds at which the caller's tables are evaluated (times in between
#: are interpolated linearly in 1/g: exact for purely compute- or memory-bound work)
_GRID = np.linspace(1.0, 0.25, 16)


def _highest(
    fits: Callable[[np.ndarray], np.ndarray], lo: np.ndarray, top: np.ndarray
) -> np.ndarray:
    """Per item, the highest value in ``[lo, top]`` for which ``fits`` holds (``lo`` where
    none does), for a ``fits`` that holds below some point: 30 bisection steps."""
    low, high = lo, top
    for _ in range(30):
        mid = 0.5 * (low + high)
        ok = fits(mid)
        low, high = np.where(ok, mid, low), np.where(ok, high, mid)
    return np.where(fits(top), top, low)


def stock_clock(gpu: GpuSpec, compute_util: np.ndarray, memory_util: np.ndarray) -> np.ndarray:
    """The SM clock (fraction of the maximum) at which the GPU ran work measured at its stock
    clock with these utilisations: the highest clock whose power fits the TDP."""
    u_c = np.asarray(compute_util, dtype=np.float64)
    u_m = np.broadcast_to(np.asarray(memory_util, dtype=np.float64), u_c.shape)
    return _highest(
        lambda f: np.asarray(gpu.busy_level(f, u_c, u_m)) <= 1.0,
        np.full(u_c.shape, 0.05),
        np.ones(u_c.shape),
    )


def _interpolate(tables: np.ndarray, g: np.ndarray) -> np.ndarray:
    inv = 1.0 / _GRID  # ascending
    x = 1.0 / g
    i = np.clip(np.searchsorted(inv, x) - 1, 0, len(_GRID) - 2)
    w = (x - inv[i]) / (inv[i + 1] - inv[i])
    cols = np.arange(tables.shape[1])
    return tables[i, cols] * (1.0 - w) + tables[i + 1, cols] * w


def limited_time(
    gpu: GpuSpec,
    time_at: Callable[[float], np.ndarray],
    flops: np.ndarray,
    nbytes: np.ndarray,
    *,
    peak_flops: float,
    clock: float = 1.0,
    power_limit_w: float | None = None,
) -> np.ndarray:
    """Seconds of each work item under an SM clock lock and a board power limit.

    Parameters
    ----------
    gpu : GpuSpec
        The accelerator, at its stock clock.
    time_at : callable
        ``time_at(g)`` gives the items' seconds with the compute peaks at ``g`` times the
        stock ones (``GpuSpec.at_clock(g)``); ``time_at(1.0)`` is the stock time.
    flops, nbytes : ndarray
        FLOPs and HBM bytes of each item on one GPU.
    peak_flops : float
        One GPU's peak FLOP/s for the items' precision.
    clock : float
        The lock: the SM clock may not exceed this fraction of the maximum.
    power_limit_w : float, optional
        A power cap per GPU (default: the TDP).

    Returns
    -------
    ndarray of seconds. Each item runs at the highest clock that the lock allows and whose
    power fits the limit. Where even the lowest clock of the table (a quarter of the stock
    one) draws too much, which only streaming work can, the item is stretched until it
    fits, as if HBM bandwidth were throttled.

    Raises
    ------
    ConfigError
        A limit at or below what the GPU draws at that lowest clock.
    """
    stock = np.asarray(time_at(1.0), dtype=np.float64)
    limit = gpu.tdp_w if power_limit_w is None else min(power_limit_w, gpu.tdp_w)
    if clock >= 1.0 and limit >= gpu.tdp_w:
        return stock
    cap = (limit - gpu.idle_w) / (gpu.tdp_w - gpu.idle_w)
    flops = np.broadcast_to(np.asarray(flops, dtype=np.float64), stock.shape)
    nbytes = np.broadcast_to(np.asarray(nbytes, dtype=np.float64), stock.shape)
    busy = stock > 0
    safe = np.where(busy, stock, 1.0)
    f0 = stock_clock(gpu, flops / (safe * peak_flops), nbytes / (safe * gpu.hbm_bytes_per_s))
    tables = np.stack([stock] + [np.asarray(time_at(float(g))) for g in _GRID[1:]])

    def level(g: np.ndarray, t: np.ndarray | None = None) -> np.ndarray:
        t = np.where(busy, _interpolate(tables, g), 1.0) if t is None else t
        return np.asarray(
            gpu.busy_level(g * f0, flops / (t * peak_flops), nbytes / (t * gpu.hbm_bytes_per_s))
        )

    top = np.clip(clock / f0, _GRID[-1], 1.0)  # the lock, relative to the stock clock
    g = _highest(lambda x: level(x) <= cap, np.full(stock.shape, _GRID[-1]), top)
    out = np.where(busy, _interpolate(tables, g), 0.0)
    over = busy & (level(g) > cap * (1.0 + 1e-9))
    if over.any():  # streaming work over the cap at the lowest clock: stretch it to fit
        floor = np.asarray(gpu.busy_level(g * f0, 0.0, 0.0))[over]  # the SMs' own power
        if np.any(floor >= cap):
            raise ConfigError(
                f"power cap: {limit:g} W is at or below what {gpu.name} draws at its lowest "
                f"clock (expected a cap above {gpu.idle_w + floor.max() * (gpu.tdp_w - gpu.idle_w):.0f} W)"
            )
        dynamic = level(g, np.where(busy, out, 1.0))[over] - floor
        out[over] *= dynamic / (cap - floor)
    return out
