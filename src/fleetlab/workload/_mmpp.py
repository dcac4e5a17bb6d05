"""Markov-modulated Poisson process (MMPP) burstiness: EM fit on counts, block synthesis.

The MMPP lives in *operational time* (the rate curve divided out, so one unit is one
expected event), like the renewal it can replace: a hidden continuous-time Markov
chain with 2..4 states, each emitting a Poisson stream at its own rate. Unlike a
renewal process, consecutive gaps are correlated (a burst state lasts), so the index
of dispersion keeps rising with the window instead of levelling off at ``cv^2``.

Fitting: counts in ``T`` equal operational-time windows (one expected event each, at most 8,192 windows)
are a discrete-time hidden Markov model with Poisson emissions; Baum-Welch EM runs its
forward and backward recursions as log-depth prefix scans of the ``K x K`` step
matrices (normalised at every level), so there is no Python loop over windows. The
window transition matrix ``P`` becomes the generator ``Q = (P - I) / window`` (exact
to first order when states last several windows, which the fit ensures by starting
from a sticky ``P``). ``K`` is chosen by BIC.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import gammaln

from fleetlab.workload._model import Mmpp

MAX_WINDOWS = 8192
IDC_SIZES = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)


def _scan(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive prefix products ``m[0] @ ... @ m[i]``, each scaled to sum 1, and log scales."""
    a = m.copy()
    logs = np.zeros(a.shape[0])
    d = 1
    while d < a.shape[0]:
        prod = a[:-d] @ a[d:]
        s = prod.sum(axis=(1, 2))
        s = np.where(s > 0, s, 1e-300)
        prod /= s[:, None, None]
        new_logs = logs[:-d] + logs[d:] + np.log(s)
        a[d:] = prod
        logs[d:] = new_logs
        d *= 2
    return a, logs


def _em_step(
    c: np.ndarray, lam: np.ndarray, p: np.ndarray, pi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """One Baum-Welch step; returns the new rates, transition matrix, start and log-likelihood."""
    lam = np.maximum(lam, 1e-9)
    logpmf = c[:, None] * np.log(lam)[None, :] - lam[None, :] - gammaln(c + 1.0)[:, None]
    top = logpmf.max(axis=1)
    e = np.exp(logpmf - top[:, None])  # (T, K), scaled per window
    t_n = c.size
    a0 = pi * e[0]
    a0_sum = float(a0.sum())
    a0 = a0 / a0_sum
    steps = p[None, :, :] * e[1:, None, :]  # M_t = P diag(e_t), t = 1..T-1
    pref, plog = _scan(steps)
    alpha = np.empty((t_n, lam.size))
    alpha[0] = a0
    alpha[1:] = np.einsum("k,tkj->tj", a0, pref)
    alpha /= alpha.sum(axis=1, keepdims=True)
    loglik = float(
        math.log(a0_sum)
        + top.sum()
        + plog[-1]
        + math.log(max(float((a0 @ pref[-1]).sum()), 1e-300))
    )
    # beta_t = M_{t+1} ... M_{T-1} 1: prefix products of the reversed, transposed steps
    rev, _ = _scan(np.ascontiguousarray(np.transpose(steps[::-1], (0, 2, 1))))
    beta = np.ones((t_n, lam.size))
    beta[:-1] = rev.sum(axis=1)[::-1]
    beta /= beta.sum(axis=1, keepdims=True)
    gamma = alpha * beta
    gamma /= gamma.sum(axis=1, keepdims=True)
    xi = alpha[:-1, :, None] * p[None, :, :] * (e[1:] * beta[1:])[:, None, :]
    xi /= xi.sum(axis=(1, 2), keepdims=True)
    trans = xi.sum(axis=0)
    p_new = trans / np.maximum(trans.sum(axis=1, keepdims=True), 1e-300)
    w = gamma.sum(axis=0)
    lam_new = (gamma * c[:, None]).sum(axis=0) / np.maximum(w, 1e-300)
    return lam_new, p_new, gamma[0], loglik


def fit_mmpp(
    u: np.ndarray, *, states: tuple[int, ...] = (2, 3, 4), max_iter: int = 30
) -> tuple[Mmpp | None, list[dict[str, Any]]]:
    """Fit an MMPP to sorted operational times ``u`` (unit mean rate); best ``K`` by BIC.

    Returns the model (None when the trace is too short: fewer than 200 events) and a
    row per ``K`` with its log-likelihood and BIC, for reports.
    """
    n = u.size
    if n < 200:
        return None, []
    span = float(u[-1] - u[0])
    t_n = int(min(MAX_WINDOWS, max(span, 2.0)))  # windows of one expected event, or more
    window = span / t_n
    c = np.bincount(
        np.minimum(((u - u[0]) / window).astype(np.int64), t_n - 1), minlength=t_n
    ).astype(np.float64)
    rows: list[dict[str, Any]] = []
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for k in states:
        qs = np.quantile(c, (np.arange(k) + 0.5) / k)
        lam = np.maximum(qs, 0.05) * c.mean() / max(float(np.mean(qs)), 1e-9)
        lam = np.sort(lam + np.arange(k) * 1e-3 * c.mean())
        p = np.full((k, k), 0.05 / max(k - 1, 1))
        np.fill_diagonal(p, 0.95)
        pi = np.full(k, 1.0 / k)
        last = -math.inf
        loglik = -math.inf
        for _ in range(max_iter):
            lam, p, pi, loglik = _em_step(c, lam, p, pi)
            if abs(loglik - last) <= 1e-5 * abs(loglik):
                break
            last = loglik
        params = k + k * (k - 1)
        bic = -2.0 * loglik + params * math.log(t_n)
        rows.append({"states": k, "loglik": loglik, "bic": bic})
        if best is None or bic < best[0]:
            best = (bic, lam.copy(), p.copy())
    assert best is not None
    _, lam, p = best
    order = np.argsort(lam)
    lam, p = lam[order], p[np.ix_(order, order)]
    q = (p - np.eye(lam.size)) / window
    stat = _stationary(q)
    rates = lam / window
    mean = float(stat @ rates)
    rates = rates / mean if mean > 0 else rates
    q = q / mean if mean > 0 else q  # unit mean in operational time (time scales with 1/mean)
    return (
        Mmpp(
            rates=[float(f"{x:.7g}") for x in rates],
            generator=[[float(f"{x:.7g}") for x in row] for row in q],
            window=float(window),
            bic=float(best[0]),
        ),
        rows,
    )


def _stationary(q: np.ndarray) -> np.ndarray:
    """Stationary distribution of generator ``q`` (solves pi Q = 0, sum pi = 1)."""
    k = q.shape[0]
    a = np.vstack([q.T, np.ones(k)])
    b = np.concatenate([np.zeros(k), [1.0]])
    pi, *_ = np.linalg.lstsq(a, b, rcond=None)
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


class MmppSampler:
    """Operational-time event stream of an :class:`Mmpp`, drawn in fixed blocks of sojourns.

    Blocks of 1,024 sojourns use the generator in a fixed order (state path, sojourn
    lengths, counts, positions), so the stream does not depend on how many events
    each call asks for. The first event is at 0 (time 0 of a fitted trace is an event).
    """

    BLOCK = 1024

    def __init__(self, model: Mmpp, rng: np.random.Generator) -> None:
        self.rates = np.asarray(model.rates, dtype=np.float64)
        q = np.asarray(model.generator, dtype=np.float64)
        self.exit = np.maximum(-np.diag(q), 1e-12)
        jump = np.clip(q, 0.0, None)
        np.fill_diagonal(jump, 0.0)
        sums = jump.sum(axis=1, keepdims=True)
        jump = np.where(sums > 0, jump / np.where(sums > 0, sums, 1.0), 0.0)
        stuck = sums[:, 0] <= 0  # absorbing states jump to themselves
        jump[stuck, stuck] = 1.0
        self.jump_cdf = np.cumsum(jump, axis=1)
        self.rng = rng
        pi = _stationary(q)
        self.state = int(np.searchsorted(np.cumsum(pi), rng.random(), side="right"))
        self.state = min(self.state, self.rates.size - 1)
        self.clock = 0.0
        self.offset: float | None = None
        self.pending = np.empty(0)

    def _block(self) -> np.ndarray:
        rng = self.rng
        b = self.BLOCK
        draws = rng.random(b)
        states = np.empty(b, dtype=np.int64)
        s = self.state
        cdf = self.jump_cdf
        last = self.rates.size - 1
        for i in range(b):  # the embedded chain: K <= 4 states, one step per sojourn
            states[i] = s
            s = min(int(np.searchsorted(cdf[s], draws[i], side="right")), last)
        self.state = s
        dur = rng.standard_exponential(b) / self.exit[states]
        starts = self.clock + np.concatenate([[0.0], np.cumsum(dur[:-1])])
        self.clock = float(starts[-1] + dur[-1])
        n = rng.poisson(self.rates[states] * dur)
        seg = np.repeat(np.arange(b), n)
        key = np.sort(seg + rng.random(seg.size))
        pos = key - seg  # sorted within each sojourn because seg is non-decreasing
        u = starts[seg] + pos * dur[seg]
        if self.offset is None and u.size:
            self.offset = float(u[0])
        return u - (self.offset or 0.0)

    def next(self, n: int) -> np.ndarray:
        """The next ``n`` operational times (sorted, continuing the previous call)."""
        parts = [self.pending]
        have = self.pending.size
        empty = 0
        while have < n:
            blk = self._block()
            empty = empty + 1 if blk.size == 0 else 0
            if empty >= 64:  # stuck in silent states: no more events, ever (times at +inf)
                parts.append(np.full(n - have, np.inf))
                break
            if self.offset is None:
                continue
            parts.append(blk)
            have += blk.size
        allu = np.concatenate(parts)
        self.pending = allu[n:]
        return allu[:n]


def idc_curve(u: np.ndarray, sizes: tuple[float, ...] = IDC_SIZES) -> dict[float, float]:
    """IDC of counts in operational-time windows of ``sizes`` expected events (>= 30 windows)."""
    span = float(u[-1] - u[0]) if u.size else 0.0
    out: dict[float, float] = {}
    for w in sizes:
        nb = int(span // w)
        if nb < 30:
            continue
        c = np.bincount(((u - u[0]) // w).astype(np.int64), minlength=nb)[:nb].astype(np.float64)
        m = float(c.mean())
        if m > 0 and c.var() > 0:
            out[w] = float(c.var() / m)
    return out


def idc_error(real: dict[float, float], synth: dict[float, float]) -> float:
    """Largest ``|log(IDC_synth / IDC_real)|`` over the common windows (inf when none)."""
    common = [w for w in real if w in synth]
    if not common:
        return math.inf
    return float(max(abs(math.log(synth[w] / real[w])) for w in common))
