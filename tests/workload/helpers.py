"""Small synthetic canonical tables with known parameters, built by our own code."""

from __future__ import annotations

import numpy as np
import polars as pl

from fleetlab.traces import canonical


def requests_at(t: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    """Requests arriving at the sorted times ``t`` (shifted to start at 0), uniform tokens."""
    n = t.size
    return canonical(
        pl.LazyFrame(
            {
                "arrival_s": t - t[0],
                "prompt_tokens": rng.integers(10, 2000, n),
                "output_tokens": rng.integers(1, 500, n),
            }
        ),
        "requests",
    ).collect()


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


def trend_vms(days: int, *, seed: int, step_day: int, low: float, high: float) -> pl.DataFrame:
    """VMs created by a Poisson process whose daily rate jumps from ``low`` to ``high``.

    The hour-of-day shape is a fixed sine (peak/trough 3), so the trace has a daily
    shape times a step trend at ``step_day``; lifetimes exponential (mean 1 h).
    """
    rng = np.random.default_rng(seed)
    hours = np.arange(days * 24)
    shape = 1.0 + 0.5 * np.sin(2 * np.pi * (hours % 24) / 24)
    level = np.where(hours // 24 < step_day, low, high) / 24
    n = rng.poisson(shape * level)
    created = np.sort(np.repeat(hours * 3600.0, n) + rng.uniform(0, 3600.0, n.sum()))
    created = created - created[0]
    life = rng.exponential(3600.0, created.size)
    return canonical(
        pl.LazyFrame(
            {
                "vm_id": [f"vm{i}" for i in range(created.size)],
                "created_s": created,
                "deleted_s": created + life,
                "cores": rng.choice([1.0, 2.0, 4.0], created.size),
                "memory_gb": rng.choice([4.0, 8.0], created.size),
            }
        ),
        "vms",
    ).collect()


def batched_vms(n_jobs: int, *, seed: int, mean_gap_s: float) -> pl.DataFrame:
    """Jobs arriving as a Poisson process on a 1 s grid, each creating 1 + Geometric tasks.

    Batch sizes: 1 + Geometric(p = 0.2) - 1, mean 5; all tasks of a job share its second.
    """
    rng = np.random.default_rng(seed)
    inst = np.floor(np.cumsum(rng.exponential(mean_gap_s, n_jobs)))
    sizes = rng.geometric(0.2, n_jobs)
    created = np.repeat(inst, sizes)
    created = created - created[0]
    return canonical(
        pl.LazyFrame(
            {
                "vm_id": [f"t{i}" for i in range(created.size)],
                "created_s": created,
                "deleted_s": created + rng.exponential(600.0, created.size),
                "cores": rng.choice([0.5, 1.0], created.size),
                "memory_gb": rng.choice([1.0, 2.0], created.size),
            }
        ),
        "vms",
    ).collect()


def mmpp_requests(
    n: int, *, seed: int, burst: float = 20.0, mean_burst: float = 8.0
) -> pl.DataFrame:
    """Requests from a stationary 2-state MMPP: quiet (rate 1/s) and bursts (``burst``/s).

    Bursts last ``mean_burst / burst`` s on average (``mean_burst`` requests) and come
    every 20 s on average; tokens are lognormal. Gaps are correlated (a burst's gaps
    follow each other), which no renewal process has.
    """
    rng = np.random.default_rng(seed)
    rates = np.array([1.0, burst])
    hold = np.array([20.0, mean_burst / burst])
    times: list[np.ndarray] = []
    clock, state, total = 0.0, 0, 0
    while total < n:
        d = rng.exponential(hold[state])
        k = rng.poisson(rates[state] * d)
        times.append(clock + np.sort(rng.uniform(0.0, d, k)))
        total += k
        clock += d
        state = 1 - state
    t = np.concatenate(times)[:n]
    return canonical(
        pl.LazyFrame(
            {
                "arrival_s": t - t[0],
                "prompt_tokens": np.ceil(rng.lognormal(np.log(500), 0.8, t.size)).astype(np.int64),
                "output_tokens": np.ceil(rng.lognormal(np.log(50), 0.6, t.size)).astype(np.int64),
            }
        ),
        "requests",
    ).collect()


def flows_from_spans(spans: pl.DataFrame) -> pl.DataFrame:
    """A flows table derived from a spans table: each client -> server call is one flow.

    A call is a span whose parent span belongs to another service: the flow goes from
    the parent's service to the span's service, starts at the span's start and lasts
    its duration (no bytes or ports: spans do not carry them).
    """
    s = spans.select("trace_id", "span_id", "parent_id", "service", "start_us", "duration_us")
    parents = s.select(
        "trace_id", pl.col("span_id").alias("parent_id"), pl.col("service").alias("src")
    )
    calls = s.join(parents, on=["trace_id", "parent_id"], how="inner").filter(
        pl.col("src") != pl.col("service")
    )
    start = calls["start_us"].min()
    return canonical(
        calls.sort("start_us")
        .select(
            (pl.col("start_us") - start).alias("ts_us"),
            "src",
            pl.col("service").alias("dst"),
            "duration_us",
        )
        .lazy(),
        "flows",
    ).collect()


def synthetic_flows(n: int, *, seed: int, rate: float = 50.0) -> pl.DataFrame:
    """Flows between 6 services: Poisson arrivals at ``rate``/s, Zipf-popular pairs.

    Each pair has its own port and lognormal bytes (median 2 KB x pair factor);
    durations are lognormal and rise with bytes (rank correlation about 0.5).
    """
    rng = np.random.default_rng(seed)
    pairs = [(a, b) for a in range(6) for b in range(6) if a != b]
    w = np.arange(1, len(pairs) + 1, dtype=float) ** -1.2
    k = rng.choice(len(pairs), n, p=w / w.sum())
    t = np.cumsum(rng.exponential(1.0 / rate, n))
    z = rng.standard_normal(n)
    nbytes = np.ceil(np.exp(np.log(2048) + 0.3 * (k % 4) + 1.0 * z)).astype(np.int64)
    dur = np.ceil(np.exp(np.log(5000) + 0.7 * z + 0.7 * rng.standard_normal(n))).astype(np.int64)
    return canonical(
        pl.LazyFrame(
            {
                "ts_us": ((t - t[0]) * 1e6).astype(np.int64),
                "src": [f"s{pairs[i][0]}" for i in k],
                "dst": [f"s{pairs[i][1]}" for i in k],
                "port": np.asarray([8000 + pairs[i][1] for i in k], dtype=np.int64),
                "bytes": nbytes,
                "duration_us": dur,
            }
        ),
        "flows",
    ).collect()
