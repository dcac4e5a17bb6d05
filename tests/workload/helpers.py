"""Small synthetic canonical tables with known parameters, built by our own code."""

from __future__ import annotations

import numpy as np
import polars as pl

from fleetlab.traces import canonical


def gamma_renewal_requests(n: int, *, rate: float, cv: float, seed: int) -> pl.DataFrame:
    """Requests with Gamma(cv) inter-arrivals at ``rate`` per s, lognormal tokens."""
    rng = np.random.default_rng(seed)
    k = 1 / cv**2
    t = np.cumsum(rng.gamma(k, 1 / (k * rate), n))
    prompt = np.ceil(rng.lognormal(np.log(800), 0.9, n)).astype(np.int64)
    output = np.ceil(rng.lognormal(np.log(100), 0.7, n)).astype(np.int64)
    return canonical(
        pl.LazyFrame({"arrival_s": t - t[0], "prompt_tokens": prompt, "output_tokens": output}),
        "requests",
    ).collect()


def zipf_invocations(n: int, *, functions: int, exponent: float, seed: int) -> pl.DataFrame:
    """Invocations of Zipf-popular functions (two apps), with per-function durations."""
    rng = np.random.default_rng(seed)
    w = np.arange(1, functions + 1, dtype=float) ** -exponent
    f = rng.choice(functions, n, p=w / w.sum())
    t = np.sort(rng.uniform(0, 3600, n))
    dur = rng.lognormal(np.log(50 + 20 * (f % 5)), 0.5)
    return canonical(
        pl.LazyFrame(
            {
                "app": [f"a{x % 2}" for x in f],
                "function": [f"f{x}" for x in f],
                "count": np.ones(n, np.int64),
                "ts_s": t,
                "duration_ms": dur,
                "memory_mb": np.where(f % 2 == 0, 128.0, 256.0),
            }
        ),
        "invocations",
    ).collect()


def vm_table(n: int, *, horizon: float, seed: int) -> pl.DataFrame:
    """VMs with exponential lifetimes (mean 2 h) censored at ``horizon``, cores in {1,2,4,8}."""
    rng = np.random.default_rng(seed)
    created = np.sort(rng.uniform(0, horizon, n))
    life = rng.exponential(7200.0, n)
    deleted = created + life
    deleted = np.where(deleted > horizon, np.nan, deleted)
    cores = rng.choice([1.0, 2.0, 4.0, 8.0], n, p=[0.4, 0.3, 0.2, 0.1])
    return canonical(
        pl.LazyFrame(
            {
                "vm_id": [f"vm{i}" for i in range(n)],
                "created_s": created,
                "deleted_s": pl.Series(deleted).fill_nan(None),
                "cores": cores,
                "memory_gb": cores * 4,
                "tenant": [f"t{x}" for x in rng.zipf(2.0, n) % 50],
            }
        ),
        "vms",
    ).collect()
