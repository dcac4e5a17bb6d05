"""Open-loop arrivals at a given rate, and synthetic token sizes, as a requests table."""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl

from fleetlab.errors import ConfigError
from fleetlab.sim import Streams

__all__ = ["poisson_requests", "retime"]

#: log-normal token-size parameters fitted to the Azure LLM 2023 conversation trace
#: (median prompt 1,020, median output 129 tokens); used when no trace is available
CONV_PROMPT_LOGNORMAL = (6.55, 1.05)
CONV_OUTPUT_LOGNORMAL = (4.95, 0.85)


def _gaps(n: int, qps: float, cv: float, process: str, rng: np.random.Generator) -> np.ndarray:
    if qps <= 0:
        raise ConfigError(f"qps must be > 0 (found {qps})")
    if process == "poisson":
        return rng.exponential(1.0 / qps, size=n)
    if process == "gamma":
        if cv <= 0:
            raise ConfigError(f"gamma arrivals need cv > 0 (found {cv})")
        shape = 1.0 / (cv * cv)
        return rng.gamma(shape, 1.0 / (qps * shape), size=n)
    raise ConfigError(f"unknown arrival process {process!r} (expected poisson or gamma)")


def retime(
    requests: pl.DataFrame,
    *,
    qps: float,
    process: Literal["poisson", "gamma"] = "poisson",
    cv: float = 1.0,
    seed: int = 0,
) -> pl.DataFrame:
    """Replace a requests table's arrival times with a Poisson or Gamma process at ``qps``.

    Token sizes (and prefix ids) are kept in order; only ``arrival_s`` changes.

    Parameters
    ----------
    requests : pl.DataFrame
        Canonical requests table.
    qps : float
        Mean arrival rate, requests per second.
    process : {"poisson", "gamma"}
        Inter-arrival distribution; ``gamma`` has coefficient of variation ``cv``.
    cv : float
        Burstiness of ``gamma`` (1 is Poisson, > 1 burstier).
    seed : int
        Seed of the ``inference.arrivals`` stream.

    Returns
    -------
    pl.DataFrame

    Raises
    ------
    ConfigError
        ``qps`` or ``cv`` not positive, unknown process.
    """
    rng = Streams(seed).get("inference.arrivals")
    gaps = _gaps(requests.height, qps, cv, process, rng)
    t = np.cumsum(gaps) - gaps[0] if len(gaps) else gaps
    return requests.with_columns(pl.Series("arrival_s", t, dtype=pl.Float64))


def poisson_requests(
    n: int,
    *,
    qps: float,
    process: Literal["poisson", "gamma"] = "poisson",
    cv: float = 1.0,
    prompt_lognormal: tuple[float, float] = CONV_PROMPT_LOGNORMAL,
    output_lognormal: tuple[float, float] = CONV_OUTPUT_LOGNORMAL,
    max_tokens: int = 8192,
    seed: int = 0,
) -> pl.DataFrame:
    """Synthesize ``n`` requests: Poisson/Gamma arrivals and log-normal token sizes.

    Parameters
    ----------
    n : int
        Number of requests.
    qps : float
        Mean arrival rate, requests per second.
    process, cv : see :func:`retime`.
    prompt_lognormal, output_lognormal : (mu, sigma)
        Log-normal parameters of prompt and output lengths (tokens); the defaults mimic
        the Azure LLM 2023 conversation trace.
    max_tokens : int
        Prompt + output are clipped to this (prompt shortened first).
    seed : int
        Seed; token sizes use stream ``inference.tokens``.

    Returns
    -------
    pl.DataFrame
        Canonical requests table (request_id, arrival_s, prompt_tokens, output_tokens).
    """
    if n < 1:
        raise ConfigError(f"need at least one request (found n={n})")
    streams = Streams(seed)
    tok = streams.get("inference.tokens")
    prompt = np.maximum(1, np.round(tok.lognormal(*prompt_lognormal, size=n))).astype(np.int64)
    output = np.maximum(1, np.round(tok.lognormal(*output_lognormal, size=n))).astype(np.int64)
    output = np.minimum(output, max_tokens // 2)
    prompt = np.minimum(prompt, max_tokens - output)
    gaps = _gaps(n, qps, cv, process, streams.get("inference.arrivals"))
    arrival = np.cumsum(gaps) - gaps[0]
    return pl.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.int64),
            "arrival_s": arrival,
            "prompt_tokens": prompt,
            "output_tokens": output,
        }
    )
