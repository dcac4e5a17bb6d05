"""Synthesizing canonical tables from a :class:`WorkloadModel`, in chunks.

Arrivals: unit-mean Gamma gaps (shape 1/cv^2) are summed in operational time and
mapped back to wall-clock time through the inverse of the cumulative rate curve
(times ``scale``; with a trend, over the trend's days, then the period at the last
level). Scaling multiplies the rate curve, so the curve's shape, the renewal CV and
the index of dispersion of the renewal part stay as fitted. An MMPP model draws its
operational times from the MMPP instead; a batched model repeats each instant's time
for a batch size drawn from the ``batches`` stream (a cluster model draws instants at
the event rate over the mean size, and puts each cluster's members at gaps drawn from a
stream spawned from ``batches`` after its instant).

Every chunk draws from named streams (``arrivals``, ``copula``, ``entity``) in order,
so the output depends only on the model, duration, scale and seed: not on the chunk
size, and any chunk can be written before the next is drawn.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import polars as pl

from fleetlab.errors import ConfigError, FleetlabError
from fleetlab.sim import Streams
from fleetlab.traces import TABLES, canonical
from fleetlab.workload._arrival_fit import (
    band_of,
    bin_factors,
    bin_rates,
    day_bins,
    operational_time,
    trend_knots,
)
from fleetlab.workload._marginals import draw, knots
from fleetlab.workload._mmpp import MmppSampler
from fleetlab.workload._model import Marginal, WorkloadModel
from fleetlab.workload._parquet import ChunkWriter
from fleetlab.workload._views import view_of

CHUNK_ROWS = 1 << 20
FIT_TABLES = ("requests", "invocations", "vms", "flows", "spans", "usage")


_UNITS = MappingProxyType({"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0})


def parse_duration(text: str | float) -> float:
    """Seconds in a duration like ``"90"``, ``"45s"``, ``"30m"``, ``"12h"``, ``"7d"`` or ``"2w"``.

    Raises
    ------
    ConfigError
        Not a positive number with an optional unit s/m/h/d/w.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        raw = text.strip().lower()
        unit = _UNITS.get(raw[-1:]) if raw else None
        number = raw[:-1] if unit is not None else raw
        try:
            value = float(number) * (unit or 1.0)
        except ValueError:
            raise ConfigError(
                f"duration {text!r}: expected a number with an optional unit s/m/h/d/w (e.g. 7d)"
            ) from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"duration {text!r}: expected a positive duration (found {value:g} s)")
    return value


def _check(model: WorkloadModel, duration_s: float, scale: float) -> None:
    if model.table not in FIT_TABLES:
        raise ConfigError(f"cannot synthesize table {model.table!r} (expected one of {FIT_TABLES})")
    if model.table == "usage" and model.usage is None:
        raise ConfigError("a usage model needs its 'usage' section (VM classes)")
    if model.table == "spans" and model.traces is None:
        raise ConfigError("a spans model needs its 'traces' section (call-tree templates)")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ConfigError(f"duration must be a positive number of seconds (found {duration_s!r})")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"scale must be a positive number (found {scale!r})")


class _Arrivals:
    """Stateful inverse of the cumulative rate curve; created per synthesis run."""

    def __init__(
        self,
        model: WorkloadModel,
        scale: float,
        rng: np.random.Generator,
        batch_rng: np.random.Generator | None = None,
    ) -> None:
        rate = model.arrival.rate
        cluster = model.arrival.cluster
        cluster_mean = _marginal_mean(cluster.sizes) if cluster is not None else 1.0
        scale = scale / cluster_mean  # a cluster model draws instants: events / mean size
        lv = np.asarray(rate.levels, dtype=np.float64) * scale
        self.cum = np.concatenate([[0.0], np.cumsum(lv * rate.bin_s)])
        self.edges = np.arange(lv.size + 1, dtype=np.float64) * rate.bin_s
        self.period = rate.period_s
        self.per_cycle = float(self.cum[-1])
        renewal = cluster.renewal if cluster is not None else model.arrival.renewal
        self.shape = 1.0 / renewal.cv**2
        self.gaps = renewal.gaps if renewal.family == "empirical" else None
        self.table = knots(self.gaps) if self.gaps is not None else None
        self.quantum = model.arrival.quantum_s
        self.rng = rng
        self.u = 0.0
        self.started = False
        arrival = model.arrival
        use_mmpp = arrival.process == "mmpp" and arrival.mmpp is not None
        self.mmpp = MmppSampler(arrival.mmpp, rng) if use_mmpp and arrival.mmpp else None
        self.banded = _BandedOps(model, scale, rng) if arrival.bands and not use_mmpp else None
        head = trend_knots(rate, scale)
        self.head_t: np.ndarray | None = head[0] if head is not None else None
        self.head_u: np.ndarray | None = head[1] if head is not None else None
        if head is not None:  # after the trend's end: the period at the last trend factor
            self.last = float(rate.trend[-1]) if rate.trend else 1.0
            self.end_u = float(head[1][-1])
            self.base_u = _periodic_lambda(float(head[0][-1]), rate, scale)
        self.batch = cluster.sizes if cluster is not None else model.arrival.batch
        self.batch_table = knots(self.batch) if self.batch is not None else None
        self.batch_rng = batch_rng
        self.pending = np.empty(0)
        self.spread = cluster.spread if cluster is not None else None
        self.spread_table = knots(self.spread) if self.spread is not None else None
        # a stream of its own (spawned from ``batches``), so the sizes' draws do not
        # depend on how many members' gaps each block takes
        self.spread_rng = (
            batch_rng.spawn(1)[0] if self.spread is not None and batch_rng is not None else None
        )
        self.horizon = -np.inf  # clusters: events up to here are final (no later instant before)
        if self.batch is not None:
            self.batch_mean = _marginal_mean(self.batch)

    def next(self, n: int) -> np.ndarray:
        """The next ``n`` event times (sorted); batches repeat their instant's time."""
        if self.batch is None:
            return self._instants(n)
        if self.spread is not None:
            return self._clustered(n)
        assert self.batch_rng is not None and self.batch_table is not None
        parts = [self.pending]
        have = self.pending.size
        while have < n:
            k = int((n - have) / self.batch_mean) + 16
            ti = self._instants(k)
            sizes = draw(self.batch, self.batch_rng.standard_normal(k), self.batch_table)
            reps = np.maximum(sizes, 1.0).astype(np.int64)
            parts.append(np.repeat(ti, reps))
            have += int(reps.sum())
        allt = np.concatenate(parts)
        self.pending = allt[n:]
        return allt[:n]

    def _clustered(self, n: int) -> np.ndarray:
        """The next ``n`` event times of a cluster process (batches spread by ``spread``).

        Each instant's first event is at the instant and the others follow by gaps from
        the ``spread`` marginal, so members can pass later instants: the events are kept
        in a sorted buffer and released only up to the last instant drawn (every later
        event follows a later instant, so nothing can still come before it).
        """
        assert self.batch is not None and self.batch_table is not None
        assert self.spread is not None and self.spread_table is not None
        assert self.batch_rng is not None and self.spread_rng is not None
        buf = self.pending
        ready = int(np.searchsorted(buf, self.horizon, side="right"))
        while ready < n:
            k = int((n - ready) / self.batch_mean) + 16
            ti = self._instants(k)
            sizes = draw(self.batch, self.batch_rng.standard_normal(k), self.batch_table)
            reps = np.maximum(sizes, 1.0).astype(np.int64)
            first = np.cumsum(reps) - reps
            gaps = draw(
                self.spread, self.spread_rng.standard_normal(int(reps.sum())), self.spread_table
            )
            gaps[first] = 0.0  # the first member is at the instant
            offsets = np.cumsum(gaps)
            offsets -= np.repeat(offsets[first], reps)
            times = np.repeat(ti, reps) + offsets
            if self.quantum:
                times = np.floor(times / self.quantum) * self.quantum
            buf = np.sort(np.concatenate([buf, times]), kind="stable")
            self.horizon = float(ti[-1])
            ready = int(np.searchsorted(buf, self.horizon, side="right"))
        self.pending = buf[n:]
        return buf[:n]

    def _instants(self, n: int) -> np.ndarray:
        if self.mmpp is not None or self.banded is not None:  # operational times drawn whole
            sampler = self.mmpp if self.mmpp is not None else self.banded
            assert sampler is not None
            t = self._invert(sampler.next(n))
            if self.quantum:
                t = np.floor(t / self.quantum) * self.quantum
            return t
        if self.gaps is not None:
            gaps = draw(self.gaps, self.rng.standard_normal(n), self.table)
        else:
            gaps = self.rng.standard_gamma(self.shape, n)
            gaps *= 1.0 / self.shape
        if not self.started:  # time 0 is an event, as in the source (fit puts it there)
            gaps[0] = 0.0
            self.started = True
        u = np.cumsum(gaps)
        u += self.u
        self.u = float(u[-1])
        t = self._invert(u)
        if self.quantum:
            t = np.floor(t / self.quantum) * self.quantum
        return t

    def _invert(self, u: np.ndarray) -> np.ndarray:
        """Wall-clock times of sorted operational times ``u`` (with a trend: head, then tail)."""
        if self.head_u is None:
            return self._invert_periodic(u)
        cut = int(np.searchsorted(u, self.end_u, side="right"))
        out = np.empty_like(u)
        assert self.head_t is not None
        out[:cut] = np.interp(u[:cut], self.head_u, self.head_t)
        if cut < u.size:
            if self.last > 0:
                out[cut:] = self._invert_periodic(self.base_u + (u[cut:] - self.end_u) / self.last)
            else:  # the load ended with the trace: no events after it
                out[cut:] = np.inf
        return out

    def _invert_periodic(self, u: np.ndarray) -> np.ndarray:
        """Wall-clock times of sorted operational times ``u`` (a merge, not a search per event)."""
        c0 = int(u[0] // self.per_cycle)
        c1 = int(u[-1] // self.per_cycle)
        k = self.cum.size
        if (c1 - c0 + 1) * k > u.size:
            cycles = np.floor(u / self.per_cycle)
            rem = u - cycles * self.per_cycle
            return cycles * self.period + np.interp(rem, self.cum, self.edges)
        cyc = np.arange(c0, c1 + 1, dtype=np.float64)[:, None]
        knot_u = (cyc * self.per_cycle + self.cum[None, :]).ravel()
        knot_t = (cyc * self.period + self.edges[None, :]).ravel()
        pos = np.searchsorted(u, knot_u, side="left")
        du = np.diff(knot_u)
        dt = np.diff(knot_t)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(du > 0, dt / du, 0.0)
        if knot_u.size * 64 <= u.size:  # few long segments: slices, no per-event index
            return _by_segment(u, pos, knot_u, knot_t, slope)
        counts = np.diff(np.concatenate([[0], pos, [u.size]]))
        seg = np.repeat(np.arange(-1, knot_u.size), counts)
        seg = np.clip(seg, 0, knot_u.size - 2)
        return knot_t[seg] + (u - knot_u[seg]) * slope[seg]


def _marginal_mean(m: Marginal) -> float:
    """Mean of a batch/cluster size marginal as synthesis draws it (at least 1)."""
    zk, xk = knots(m)
    w = np.diff(zk, prepend=0.0) if m.kind == "discrete" else np.exp(-0.5 * zk**2)
    return max(1.0, float(np.sum(w * xk) / np.sum(w)))


class _BandedOps:
    """Operational times of a rate-level-dependent renewal (``arrival.bands``).

    The absolute rate-curve bins are walked in blocks of about ``BLOCK_EVENTS`` expected
    events; each bin belongs to the band of its unscaled rate. Band ``b`` runs its own
    renewal in band-local operational time (its bins' expected events times their
    per-day renormalised factors, :func:`~fleetlab.workload._fit.bin_factors`, laid end
    to end): unit-mean gaps from its own stream (spawned from ``rng``). Each band's
    events are mapped back into its bins, and the bands are merged. Every band has a
    virtual event at
    local time 0, emitted only by the band of the first bin (time 0 is an event, as in
    fitting). Draws depend only on the bins walked, so the output does not depend on
    how many events are asked for at a time.
    """

    BLOCK_EVENTS = 1 << 20

    def __init__(self, model: WorkloadModel, scale: float, rng: np.random.Generator) -> None:
        arrival = model.arrival
        assert arrival.bands is not None
        self.rate = arrival.rate
        self.scale = scale
        self.bands = arrival.bands
        self.uppers = [float(b.upper) for b in self.bands[:-1] if b.upper is not None]
        self.rngs = rng.spawn(len(self.bands))
        self.shapes = [1.0 / b.renewal.cv**2 for b in self.bands]
        self.tables = [
            knots(b.renewal.gaps)
            if b.renewal.family == "empirical" and b.renewal.gaps is not None
            else None
            for b in self.bands
        ]
        # blocks of about BLOCK_EVENTS expected events (at most 4,096 bins), fixed by the
        # model and scale alone so that the draws do not depend on the chunk size
        per_bin = max(float(np.mean(self.rate.levels)) * self.rate.bin_s * scale, 1e-12)
        self.block_bins = int(min(4096, max(1, self.BLOCK_EVENTS // max(per_bin, 1.0))))
        trend = self.rate.trend
        per_day = round(self.rate.trend_bin_s / self.rate.bin_s) if self.rate.trend_bin_s else 0
        self.trend_bins = len(trend) * per_day if trend is not None else 0
        self.factors = np.asarray([b.factor for b in self.bands], dtype=np.float64)
        self.per_day = day_bins(self.rate)
        self.day_cache: tuple[int, int, np.ndarray] = (0, 0, np.empty(0))
        self.dead = max(self.rate.levels) <= 0 or (trend is not None and trend[-1] <= 0)
        self.next_bin = 0
        self.u0 = 0.0  # global operational time at the start of the next block
        self.local0 = np.zeros(len(self.bands))  # band-local time at the block start
        self.ahead: list[np.ndarray] = [np.zeros(1) for _ in self.bands]  # drawn, not emitted
        self.last = np.zeros(len(self.bands))  # band-local time of each band's last draw
        self.pending = np.empty(0)

    def _draw(self, b: int, m: int) -> np.ndarray:
        band = self.bands[b]
        table = self.tables[b]
        if table is not None and band.renewal.gaps is not None:
            gaps = draw(band.renewal.gaps, self.rngs[b].standard_normal(m), table)
        else:
            gaps = self.rngs[b].standard_gamma(self.shapes[b], m) / self.shapes[b]
        return gaps

    def _block(self) -> np.ndarray:
        k0, k1 = self.next_bin, self.next_bin + self.block_bins
        self.next_bin = k1
        r = bin_rates(self.rate, k0, k1)
        band = band_of(r, self.uppers)
        lens = r * (self.rate.bin_s * self.scale)
        starts = self.u0 + np.concatenate([[0.0], np.cumsum(lens)])
        f = self._factors(k0, k1)
        self.u0 = float(starts[-1])
        if k0 == 0:  # the virtual event at 0 belongs to the first bin's band only
            for b in range(len(self.bands)):
                if b != band[0]:
                    self.ahead[b] = self.ahead[b][1:]
        out = []
        for b in range(len(self.bands)):
            mine = np.where(band == b, lens * f, 0.0)
            cum = self.local0[b] + np.concatenate([[0.0], np.cumsum(mine)])
            end = float(cum[-1])
            self.local0[b] = end
            ahead = self.ahead[b]
            while self.last[b] < end:
                m = max(64, int(1.25 * (end - self.last[b])) + 16)
                s = self.last[b] + np.cumsum(self._draw(b, m))
                self.last[b] = float(s[-1])
                ahead = np.concatenate([ahead, s])
            cut = int(np.searchsorted(ahead, end, side="left"))
            s, self.ahead[b] = ahead[:cut], ahead[cut:]
            if s.size:
                j = np.searchsorted(cum, s, side="right") - 1
                # the last bin starting at or before s: the band's own bin (others add no length)
                j = np.clip(j, 0, lens.size - 1)
                out.append(starts[j] + (s - cum[j]) / f[j])
        return np.sort(np.concatenate(out)) if out else np.empty(0)

    def _factors(self, k0: int, k1: int) -> np.ndarray:
        """Per-bin factors of bins ``k0..k1-1``, renormalised over the whole days they touch.

        The days last computed are kept, so blocks smaller than a day (high scales) do not
        recompute them.
        """
        d0, d1 = k0 // self.per_day * self.per_day, -(-k1 // self.per_day) * self.per_day
        c0, c1, cached = self.day_cache
        if not (c0 <= k0 and k1 <= c1):
            rd = bin_rates(self.rate, d0, d1)
            day = (np.arange(d0, d1) - d0) // self.per_day
            cached = bin_factors(band_of(rd, self.uppers), rd, self.factors, day)
            c0, c1 = d0, d1
            self.day_cache = (c0, c1, cached)
        return cached[k0 - c0 : k1 - c0]

    def next(self, n: int) -> np.ndarray:
        """The next ``n`` operational times (sorted, from 0)."""
        parts = [self.pending]
        have = self.pending.size
        while have < n:
            if self.dead and self.next_bin >= self.trend_bins:
                # no expected events after the trend's end (its last factor is 0): no more
                parts.append(np.full(n - have, np.inf))
                break
            u = self._block()
            parts.append(u)
            have += u.size
        allu = np.concatenate(parts)
        self.pending = allu[n:]
        return allu[:n]


def _periodic_lambda(t: float, rate: Any, scale: float) -> float:
    """Lambda of the periodic levels alone (no trend) at time ``t``."""
    periodic = rate.model_copy(update={"trend": None, "trend_bin_s": None})
    return float(operational_time(np.array([t]), periodic, scale)[0])


def _by_segment(
    u: np.ndarray, pos: np.ndarray, knot_u: np.ndarray, knot_t: np.ndarray, slope: np.ndarray
) -> np.ndarray:
    """``knot_t[j] + (u - knot_u[j]) * slope[j]`` per segment ``j`` (same floats as a gather).

    Events before the first knot use the first segment, after the last knot the last one.
    """
    out = np.empty_like(u)
    last = knot_u.size - 2
    for j in range(last + 1):
        a = 0 if j == 0 else int(pos[j])
        b = u.size if j == last else int(pos[j + 1])
        if b > a:
            seg = out[a:b]
            np.subtract(u[a:b], knot_u[j], out=seg)
            seg *= slope[j]
            seg += knot_t[j]
    return out


def _entity_cdf(model: WorkloadModel) -> np.ndarray | None:
    e = model.entity
    if e is None:
        return None
    shares = np.asarray(e.shares, dtype=np.float64)
    n_tail = e.count - shares.size
    if n_tail > 0 and e.tail_share > 0:
        a = e.zipf_exponent if e.zipf_exponent is not None else 1.0
        ranks = np.arange(shares.size + 1, e.count + 1, dtype=np.float64)
        w = ranks ** (-a)
        shares = np.concatenate([shares, e.tail_share * w / w.sum()])
    cdf = np.cumsum(shares)
    return cdf / cdf[-1]


def iter_chunks(
    model: WorkloadModel,
    *,
    duration_s: float | None = None,
    scale: float = 1.0,
    seed: int = 0,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[pl.DataFrame]:
    """Yield the synthetic canonical table in chunks of at most ``chunk_rows`` rows.

    Parameters
    ----------
    model
        A fitted model (requests, invocations or vms).
    duration_s
        Length of the synthetic trace in seconds (default: the source trace's).
    scale
        Rate factor: 10 gives ten times the events with the same shape and burstiness.
    seed
        The output is a pure function of (model, duration, scale, seed).
    chunk_rows
        Rows drawn per chunk (does not change the output, only memory use).

    Raises
    ------
    ConfigError
        Non-positive duration or scale, or a model of a table that cannot be synthesized.
    """
    duration = float(duration_s if duration_s is not None else model.source.duration_s)
    _check(model, duration, scale)
    if model.clients is not None:  # from a client_profiles table: requests per client
        from fleetlab.workload._clients import client_chunks

        yield from client_chunks(
            model, duration_s=duration, scale=scale, seed=seed, chunk_rows=chunk_rows
        )
        return
    if model.table == "usage":
        from fleetlab.workload._usage import usage_chunks

        yield from usage_chunks(
            model, duration_s=duration, scale=scale, seed=seed, chunk_rows=chunk_rows
        )
        return
    streams = Streams(seed)
    arrivals = _Arrivals(
        model,
        scale,
        streams.get("arrivals"),
        streams.get("batches")
        if model.arrival.batch is not None or model.arrival.cluster is not None
        else None,
    )
    if model.table == "spans":
        from fleetlab.workload._spans import span_chunks

        yield from span_chunks(model, arrivals, streams, duration_s=duration, chunk_rows=chunk_rows)
        return
    fields = list(model.fields)
    cop_fields = model.copula.fields if model.copula else []
    order = cop_fields + [f for f in fields if f not in cop_fields]
    chol = np.linalg.cholesky(np.asarray(model.copula.correlation)) if model.copula else None
    tables = {f: knots(m) for f, m in model.fields.items()}
    e = model.entity
    cdf = _entity_cdf(model)
    own: dict[str, dict[str, tuple[Marginal, tuple[np.ndarray, np.ndarray]]]] = {}
    if e is not None:
        own = {k: {f: (m, knots(m)) for f, m in ms.items()} for k, ms in e.fields.items()}
    names = _entity_names(model) if e is not None and e.pairs is None else None
    pair_cols = _pair_columns(model) if e is not None and e.pairs is not None else None
    copula_rng = streams.get("copula")
    entity_rng = streams.get("entity")
    emitted = 0
    while True:
        t = arrivals.next(chunk_rows)
        cut = int(np.searchsorted(t, duration, side="left"))
        t = t[:cut]
        m = t.size
        if m:
            raw = copula_rng.standard_normal((m, len(order)))
            z = [np.ascontiguousarray(raw[:, i]) for i in range(len(order))]
            if chol is not None:  # y_j = sum_i L[j, i] z_i (a tiny matmul is slow in numpy)
                z = [_combine(chol[j], z) for j in range(len(cop_fields))] + z[len(cop_fields) :]
            idx = (
                np.searchsorted(cdf, entity_rng.random(m), side="right")
                if cdf is not None
                else None
            )
            if idx is not None:
                np.minimum(idx, cdf.size - 1, out=idx)  # type: ignore[union-attr]
            cols: dict[str, Any] = {}
            for j, f in enumerate(order):
                cols[f] = _draw_field(f, model.fields[f], tables[f], z[j], idx, own)
            yield _frame(duration, model, t, cols, idx, names, emitted, pair_cols)
            emitted += m
        if cut < chunk_rows:
            return


def _combine(row: np.ndarray, z: list[np.ndarray]) -> np.ndarray:
    out = z[0] * row[0]
    for i in range(1, len(z)):
        if row[i] != 0.0:
            out += z[i] * row[i]
    return out


def _draw_field(
    f: str,
    pooled: Marginal,
    table: tuple[np.ndarray, np.ndarray],
    z: np.ndarray,
    idx: np.ndarray | None,
    own: dict[str, dict[str, tuple[Marginal, tuple[np.ndarray, np.ndarray]]]],
) -> np.ndarray:
    if idx is None or not own:
        return draw(pooled, z, table)
    out = np.empty(z.size)
    ranks = [int(k) for k in own if k != "rest"]
    done = np.zeros(z.size, dtype=bool)
    for r in ranks:
        spec = own[str(r)].get(f)
        if spec is None:
            continue
        mask = idx == r
        out[mask] = draw(spec[0], z[mask], spec[1])
        done |= mask
    rest = own.get("rest", {}).get(f)
    left = ~done
    out[left] = draw(rest[0], z[left], rest[1]) if rest else draw(pooled, z[left], table)
    return out


def _pair_columns(model: WorkloadModel) -> dict[str, pl.Series]:
    """Flows: ``src``, ``dst`` (and ``port``) of every pair rank of the model's entity.

    Explicit pairs use their stored endpoints; pairs in the Zipf tail (beyond the
    stored top) get endpoints by rank, ``src = r mod n``, ``dst = (src + 1 + r div n) mod n``.
    """
    e = model.entity
    assert e is not None and e.pairs is not None and e.endpoints is not None
    n_end = len(e.endpoints)
    ranks = np.arange(len(e.pairs), e.count)
    src = np.concatenate([np.asarray([p[0] for p in e.pairs], dtype=np.int64), ranks % n_end])
    dst = np.concatenate(
        [
            np.asarray([p[1] for p in e.pairs], dtype=np.int64),
            (ranks % n_end + 1 + ranks // n_end) % n_end,
        ]
    )
    names = pl.Series(e.endpoints, dtype=pl.String)
    out = {"src": names.gather(src), "dst": names.gather(dst)}
    if e.ports is not None:
        out["port"] = pl.Series(list(e.ports) + [None] * ranks.size, dtype=pl.Int64)
    return out


def _entity_names(model: WorkloadModel) -> tuple[pl.Series, pl.Series | None]:
    e = model.entity
    assert e is not None
    width = len(str(e.count))
    ids = pl.Series(np.arange(e.count)).cast(pl.String).str.zfill(width)
    names = (pl.lit(f"{e.column}-") + pl.lit(ids)).alias("n")
    ent = pl.select(names).to_series()
    parents = None
    if e.parent_column and e.parents:
        n_par = max(e.parents) + 1
        p = np.concatenate([np.asarray(e.parents), np.arange(len(e.parents), e.count) % n_par])
        pw = len(str(n_par))
        pid = pl.Series(p).cast(pl.String).str.zfill(pw)
        parents = pl.select((pl.lit(f"{e.parent_column}-") + pl.lit(pid)).alias("p")).to_series()
    return ent, parents


def _frame(
    horizon: float,
    model: WorkloadModel,
    t: np.ndarray,
    cols: dict[str, np.ndarray],
    idx: np.ndarray | None,
    names: tuple[pl.Series, pl.Series | None] | None,
    offset: int,
    pair_cols: dict[str, pl.Series] | None = None,
) -> pl.DataFrame:
    scale = view_of(model.table).time_scale
    data: dict[str, Any] = {
        model.time_column: t if scale == 1.0 else np.floor(t / scale).astype(np.int64)
    }
    ints = {f for f, m in model.fields.items() if m.integer}
    for f, v in cols.items():
        data[f] = v.astype(np.int64) if f in ints else v
    if model.table == "vms" and "lifetime_s" in data:
        deleted = t + data.pop("lifetime_s")
        data["deleted_s"] = np.where(deleted > horizon, np.nan, deleted)  # alive at the end
    frame = pl.DataFrame(data, nan_to_null=True)
    seq = pl.int_range(offset, offset + t.size, dtype=pl.Int64)
    if model.table == "requests":
        frame = frame.with_columns(seq.alias("request_id"))
    elif model.table == "vms":
        frame = frame.with_columns(pl.format("vm-{}", seq).alias("vm_id"))
    elif model.table == "invocations":
        frame = frame.with_columns(pl.lit(1, dtype=pl.Int64).alias("count"))
    if idx is not None and names is not None and model.entity is not None:
        ent, parents = names
        frame = frame.with_columns(ent.gather(idx).alias(model.entity.column))
        if parents is not None and model.entity.parent_column:
            frame = frame.with_columns(parents.gather(idx).alias(model.entity.parent_column))
    if idx is not None and pair_cols is not None:
        frame = frame.with_columns([v.gather(idx).alias(k) for k, v in pair_cols.items()])
    if model.table == "invocations":
        for col in ("app", "function"):
            if col not in frame.columns:
                frame = frame.with_columns(pl.lit(f"{col}-0").alias(col))
    missing = [c for c in TABLES[model.table].required if c not in frame.columns]
    frame = frame.with_columns([pl.lit(None).alias(c) for c in missing])
    return canonical(frame.lazy(), model.table).collect()


def sample(
    model: WorkloadModel, *, duration_s: float | None = None, scale: float = 1.0, seed: int = 0
) -> pl.DataFrame:
    """The whole synthetic table in memory (see :func:`iter_chunks` for the parameters)."""
    parts = list(iter_chunks(model, duration_s=duration_s, scale=scale, seed=seed))
    if not parts:
        return pl.DataFrame(schema=TABLES[model.table].columns)
    return pl.concat(parts)


def _filled_columns(model: WorkloadModel) -> set[str]:
    """Columns that synthesis never leaves null (written as required Parquet columns)."""
    filled = {model.time_column, "request_id", "vm_id", "count"}
    filled |= {f for f, m in model.fields.items() if m.kind != "constant" and f != "lifetime_s"}
    if model.entity is not None and model.entity.pairs is not None:
        filled |= {"src", "dst"}
    elif model.entity is not None:
        filled.add(model.entity.column)
        if model.entity.parent_column and model.entity.parents:
            filled.add(model.entity.parent_column)
    if model.table == "invocations":
        filled |= {"app", "function"}
    if model.table == "usage" and model.usage is not None:
        filled |= {"ts_s", "cpu_avg"} | set(model.usage.classes[0].gap_corr)
    if model.table == "spans":
        filled |= {"trace_id", "span_id", "service", "operation", "duration_us", "status"}
    return filled


def synth(
    model: WorkloadModel,
    path: str | os.PathLike[str],
    *,
    duration_s: float | None = None,
    scale: float = 1.0,
    seed: int = 0,
    chunk_rows: int = CHUNK_ROWS,
    overwrite: bool = False,
    on_chunk: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Stream a synthetic trace to a Parquet file, chunk by chunk (constant memory).

    ``on_chunk(rows_so_far, simulated_seconds_so_far)`` is called after each chunk
    (for progress bars). Returns ``{"path", "rows", "duration_s", "scale", "seed",
    "chunks"}``. Each chunk is encoded in a background thread while the next one is
    drawn (see ``_parquet`` for the column encodings). The file appears atomically; an existing file is replaced only with
    ``overwrite``.

    Raises
    ------
    FleetlabError
        ``path`` exists and ``overwrite`` is false.
    ConfigError
        Invalid duration, scale or model table.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FleetlabError(f"{target}: already exists; pass --force to replace it")
    duration = float(duration_s if duration_s is not None else model.source.duration_s)
    _check(model, duration, scale)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    rows = chunks = 0
    writer = ChunkWriter(tmp, model.time_column, _filled_columns(model))
    try:
        for chunk in iter_chunks(
            model, duration_s=duration, scale=scale, seed=seed, chunk_rows=chunk_rows
        ):
            writer.submit(chunk)  # encoded in the background while the next chunk is drawn
            rows += chunk.height
            chunks += 1
            if on_chunk:
                on_chunk(rows, float(chunk[model.time_column][-1]))
        started = writer.started
        writer.close()
        if not started:
            sample(model, duration_s=duration, scale=scale, seed=seed).write_parquet(tmp)
        os.replace(tmp, target)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return {
        "path": str(target),
        "rows": rows,
        "duration_s": duration,
        "scale": scale,
        "seed": seed,
        "chunks": chunks,
    }
