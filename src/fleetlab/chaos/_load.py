"""The built-in open-loop load generator and the latency/error summaries of its samples."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import numpy as np
import polars as pl

from fleetlab.chaos._http import BadRequest, HttpPool
from fleetlab.chaos._spec import LoadSpec, Slo

SAMPLE_SCHEMA = {
    "t_s": pl.Float64,
    "latency_ms": pl.Float64,
    "status": pl.Int64,
    "ok": pl.Boolean,
    "error": pl.String,
}

#: hard bound on the requests of one load run, whatever rate and duration say
MAX_REQUESTS = 200_000


async def open_loop(
    spec: LoadSpec,
    duration_s: float,
    *,
    t0: float,
    client: HttpPool,
    stop: asyncio.Event | None = None,
    out: list[tuple[float, float, int, bool, str]] | None = None,
) -> list[tuple[float, float, int, bool, str]]:
    """Send ``rate_per_s * duration_s`` requests at fixed intervals, never waiting for replies.

    Samples are ``(t_s, latency_ms, status, ok, error)`` with ``t_s`` relative to ``t0``
    (``time.monotonic()`` clock); status 0 means no response. Stops early when ``stop``
    is set. At most :data:`MAX_REQUESTS` requests and ``max_in_flight`` at once.
    """
    samples = out if out is not None else []
    n = min(MAX_REQUESTS, math.ceil(spec.rate_per_s * duration_s))
    gap = 1.0 / spec.rate_per_s
    start = time.monotonic()
    in_flight: set[asyncio.Task[None]] = set()
    content = spec.body.encode() if spec.body is not None else None

    async def one(sent: float) -> None:
        status, ok, error = 0, False, ""
        try:
            status, _ = await client.request(
                spec.method, spec.url, headers=spec.headers, body=content, timeout=spec.timeout_s
            )
            ok = status < 400
            if not ok:
                error = f"http {status}"
        except TimeoutError:
            error = "timeout"
        except (OSError, asyncio.IncompleteReadError, BadRequest, ValueError) as exc:
            error = type(exc).__name__
        done = time.monotonic()
        samples.append((sent - t0, (done - sent) * 1000.0, status, ok, error))

    for i in range(n):
        if stop is not None and stop.is_set():
            break
        due = start + i * gap
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        now = time.monotonic()
        if len(in_flight) >= spec.max_in_flight:
            samples.append((now - t0, 0.0, 0, False, "overload"))
            continue
        task = asyncio.get_running_loop().create_task(one(now))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight, timeout=spec.timeout_s + 1.0)
    return samples


def to_frame(samples: list[tuple[float, float, int, bool, str]]) -> pl.DataFrame:
    """Samples as a table ``t_s, latency_ms, status, ok, error`` sorted by ``t_s``."""
    return pl.DataFrame(samples, schema=SAMPLE_SCHEMA, orient="row").sort("t_s")


def summarize(frame: pl.DataFrame) -> dict[str, Any]:
    """Requests, errors, error rate and latency percentiles (ms) of a sample table.

    Failed requests count at the time they took (a timeout at ``timeout_s``); requests
    refused for overload count as errors but not in latency.
    """
    n = frame.height
    if n == 0:
        return {
            "requests": 0,
            "errors": 0,
            "error_rate": math.nan,
            "p50_ms": math.nan,
            "p99_ms": math.nan,
            "mean_ms": math.nan,
        }
    lat = frame.filter(pl.col("error") != "overload")["latency_ms"].to_numpy()
    errors = int((~frame["ok"]).sum())
    q = np.percentile(lat, [50, 99]) if lat.size else [math.nan, math.nan]
    return {
        "requests": n,
        "errors": errors,
        "error_rate": errors / n,
        "p50_ms": float(q[0]),
        "p99_ms": float(q[1]),
        "mean_ms": float(lat.mean()) if lat.size else math.nan,
    }


def slo_check(summary: dict[str, Any], slo: Slo) -> dict[str, Any]:
    """Which SLO terms hold for ``summary``: ``{"ok": bool, "breaches": [...]}``."""
    breaches = []
    for key in ("p50_ms", "p99_ms", "error_rate"):
        limit = getattr(slo, key)
        value = summary.get(key)
        if limit is None:
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)) or value > limit:
            breaches.append({"slo": key, "limit": limit, "value": value})
    if summary.get("requests", 0) == 0 and (slo.p50_ms or slo.p99_ms or slo.error_rate is not None):
        breaches.append({"slo": "requests", "limit": 1, "value": 0})
    return {"ok": not breaches, "breaches": breaches}


def windows(frame: pl.DataFrame, *, width_s: float = 0.25) -> pl.DataFrame:
    """Per-window time series: ``t_s`` (window start), requests, errors, error_rate, p50/p99 ms."""
    if frame.height == 0:
        return pl.DataFrame(
            schema={
                "t_s": pl.Float64,
                "requests": pl.UInt32,
                "errors": pl.UInt32,
                "error_rate": pl.Float64,
                "p50_ms": pl.Float64,
                "p99_ms": pl.Float64,
            }
        )
    return (
        frame.with_columns(w=(pl.col("t_s") / width_s).floor() * width_s)
        .group_by("w")
        .agg(
            requests=pl.len(),
            errors=(~pl.col("ok")).sum().cast(pl.UInt32),
            p50_ms=pl.col("latency_ms").quantile(0.5),
            p99_ms=pl.col("latency_ms").quantile(0.99),
        )
        .with_columns(error_rate=pl.col("errors") / pl.col("requests"))
        .rename({"w": "t_s"})
        .select("t_s", "requests", "errors", "error_rate", "p50_ms", "p99_ms")
        .sort("t_s")
    )
