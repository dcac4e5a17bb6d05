"""client_profiles tables (ServeGen) as generative models: requests per client and window.

A client_profiles row is already a generative description: a client's rate, the
inter-arrival pattern (Gamma or Weibull shape) and CV in one 10-minute window, and
every 6 hours the PDFs of its input and output tokens. ``fit`` keeps these series per
client, compactly (token PDFs as quantile functions); synthesis draws, per client and
window, inter-arrival gaps of the window's family and shape with mean ``1 / rate``
(counts keep their randomness: unlike ServeGen they are not forced to the window's
expected value) and tokens from the window's distributions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import polars as pl
from scipy.special import gamma as gamma_fn

from fleetlab.errors import ConfigError
from fleetlab.sim import Streams
from fleetlab.traces import canonical
from fleetlab.workload._model import (
    Arrival,
    ClientSeries,
    ClientsModel,
    ClientTokens,
    RateCurve,
    Renewal,
    Source,
    WorkloadModel,
)

PROBS = tuple(
    [0.0, 0.001, 0.002, 0.005]
    + [round(x, 4) for x in np.linspace(0.01, 0.99, 99)]
    + [0.995, 0.998, 0.999, 1.0]
)
"""Probabilities at which each token PDF's quantiles are stored (dense in the tails)."""


def _quantiles(values: list[float] | None, probs: list[float] | None) -> list[float] | None:
    """Quantile function of a discrete PDF at :data:`PROBS` (None when the PDF is empty)."""
    if not values or not probs:
        return None
    v = np.asarray(values, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(v)
    v, p = v[order], p[order]
    if p.sum() <= 0:
        return None
    cdf = np.cumsum(p) / p.sum()
    idx = np.searchsorted(cdf, np.asarray(PROBS) - 1e-12, side="left")
    return [float(x) for x in v[np.minimum(idx, v.size - 1)]]


def fit_clients(
    df: pl.DataFrame, *, source_path: str | None = None
) -> tuple[WorkloadModel, dict[str, Any]]:
    """Keep a client_profiles table as a :class:`ClientsModel` (see the module docstring).

    Raises
    ------
    ConfigError
        No window with a client, start and rate, or windows of different lengths.
    """
    rows = df.filter(
        pl.col("client").is_not_null()
        & pl.col("window_start_s").is_not_null()
        & pl.col("rate_per_s").is_not_null()
    )
    if rows.height == 0:
        raise ConfigError(
            "client_profiles table: no row with client, window_start_s and rate_per_s "
            "(expected one row per client and window)"
        )
    widths = rows["window_s"].drop_nulls().unique()
    if widths.len() != 1:
        raise ConfigError(
            f"client_profiles table: window_s must be one value (found {widths.to_list()[:5]})"
        )
    window = float(widths[0])
    starts = rows["window_start_s"].to_numpy()
    t0 = float(starts.min())
    n_win = round((float(starts.max()) - t0) / window) + 1
    cols = set(df.columns)
    series: list[ClientSeries] = []
    diag: dict[str, Any] = {"clients": 0, "idle_clients": 0, "windows": n_win}
    for (client,), g in rows.sort("window_start_s").group_by("client", maintain_order=True):
        idx = np.rint((g["window_start_s"].to_numpy() - t0) / window).astype(np.int64)
        rate = np.zeros(n_win)
        rate[idx] = np.maximum(g["rate_per_s"].fill_null(0.0).to_numpy(), 0.0)
        if rate.sum() <= 0:
            diag["idle_clients"] += 1
            continue
        cv = np.zeros(n_win)
        if "cv" in cols:
            cv[idx] = g["cv"].fill_null(0.0).fill_nan(0.0).to_numpy()
        shape = np.zeros(n_win)
        pat = np.full(n_win, "-")
        fam = g["pattern"].to_list() if "pattern" in cols else [None] * g.height
        shp = g["pattern_shape"].to_list() if "pattern_shape" in cols else [None] * g.height
        for i, f, s, c in zip(idx, fam, shp, cv[idx], strict=True):
            if rate[i] <= 0:
                continue
            if f == "Weibull" and s and s > 0:
                pat[i], shape[i] = "W", s
            elif f == "Gamma" and s and s > 0:
                pat[i], shape[i] = "G", s
            else:  # no pattern: a Gamma with the window's CV (Poisson without one)
                pat[i], shape[i] = "G", 1.0 / c**2 if c > 0 else 1.0
        tokens: list[ClientTokens] = []
        if {"input_tokens_values", "output_tokens_values"} <= cols:
            pdf = g.filter(pl.col("input_tokens_values").is_not_null())
            for r in pdf.iter_rows(named=True):
                qi = _quantiles(r["input_tokens_values"], r.get("input_tokens_probs"))
                qo = _quantiles(r["output_tokens_values"], r.get("output_tokens_probs"))
                if qi is not None and qo is not None:
                    tokens.append(
                        ClientTokens(start_s=r["window_start_s"] - t0, input=qi, output=qo)
                    )
        series.append(
            ClientSeries(
                client=str(client),
                rates=[float(f"{x:.5g}") for x in rate],
                pattern="".join(pat),
                shape=[float(f"{x:.5g}") for x in shape],
                cv=[float(f"{x:.5g}") for x in cv],
                tokens=tokens,
            )
        )
    if not series:
        raise ConfigError("client_profiles table: every client has rate 0 (nothing to generate)")
    diag["clients"] = len(series)
    model_c = ClientsModel(window_s=window, windows=n_win, probs=list(PROBS), clients=series)
    duration = n_win * window
    total = sum(sum(c.rates) for c in series) * window
    mean = total / duration
    clock = Arrival(
        rate=RateCurve(
            bin_s=window, period_s=duration, levels=_levels(model_c), mean_rate_per_s=mean
        ),
        renewal=Renewal(cv=1.0),
    )
    model = WorkloadModel(
        table="requests",
        time_column="arrival_s",
        source=Source(
            table="client_profiles", rows=df.height, duration_s=duration, path=source_path
        ),
        arrival=clock,
        clients=model_c,
    )
    diag["expected_requests"] = total
    return model, diag


def _levels(m: ClientsModel) -> list[float]:
    """Total rate per window (the arrival summary the reports show)."""
    return [float(f"{x:.6g}") for x in np.sum([c.rates for c in m.clients], axis=0)]


def _family_mean(pattern: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Mean of the unit-scale family: Gamma ``k``, Weibull ``Gamma(1 + 1 / k)``."""
    out = np.ones_like(shape)
    g = pattern == "G"
    out[g] = shape[g]
    w = pattern == "W"
    out[w] = gamma_fn(1.0 + 1.0 / shape[w])
    return out


def client_chunks(
    model: WorkloadModel, *, duration_s: float, scale: float, seed: int, chunk_rows: int
) -> Iterator[pl.DataFrame]:
    """Yield the synthetic requests of a clients model, window step by window step.

    ``scale`` multiplies every rate (counts scale, each window's gap shape is kept);
    a ``duration_s`` beyond the source repeats its windows cyclically. Draws happen
    per window step in a fixed order, so the output does not depend on ``chunk_rows``.
    """
    cm = model.clients
    if cm is None:
        raise ConfigError("a client_profiles model needs its 'clients' section")
    streams = Streams(seed)
    rng_t, rng_k = streams.get("clients.arrivals"), streams.get("clients.tokens")
    rates = np.asarray([c.rates for c in cm.clients]) * scale
    shapes = np.asarray([c.shape for c in cm.clients])
    pats = np.asarray([list(c.pattern) for c in cm.clients])
    probs = np.asarray(cm.probs)
    tok_start = [np.asarray([t.start_s for t in c.tokens]) for c in cm.clients]
    tok_in = [np.asarray([t.input for t in c.tokens]) for c in cm.clients]
    tok_out = [np.asarray([t.output for t in c.tokens]) for c in cm.clients]
    names = pl.Series([c.client for c in cm.clients], dtype=pl.String)
    w = cm.window_s
    n_steps = max(1, math.ceil(duration_s / w - 1e-9))
    parts: list[pl.DataFrame] = []
    held = emitted = 0
    for step in range(n_steps):
        j = step % cm.windows
        t0 = step * w
        active = np.flatnonzero(rates[:, j] > 0)
        if active.size:
            frame = _window(
                active, rates[:, j], shapes[:, j], pats[:, j], w, min(w, duration_s - t0), rng_t
            )
            if frame is not None:
                t, who = frame
                src_t = j * w + t
                pin = np.empty(t.size)
                pout = np.empty(t.size)
                u = rng_k.random((2, t.size))
                for c in np.unique(who):
                    sel = who == c
                    if tok_start[c].size == 0:
                        pin[sel] = pout[sel] = np.nan
                        continue
                    g = np.maximum(np.searchsorted(tok_start[c], src_t[sel], side="right") - 1, 0)
                    pin[sel] = _interp_rows(u[0, sel], probs, tok_in[c][g])
                    pout[sel] = _interp_rows(u[1, sel], probs, tok_out[c][g])
                order = np.argsort(t, kind="stable")
                part = pl.DataFrame(
                    {
                        "arrival_s": t0 + t[order],
                        "prompt_tokens": np.rint(pin[order]),
                        "output_tokens": np.rint(pout[order]),
                        "tenant": names.gather(who[order]),
                    },
                    nan_to_null=True,
                )
                parts.append(part)
                held += part.height
        if parts and (held >= chunk_rows or step == n_steps - 1):
            yield _finish(pl.concat(parts), emitted)
            emitted += held
            parts, held = [], 0


def _finish(frame: pl.DataFrame, offset: int) -> pl.DataFrame:
    seq = pl.int_range(offset, offset + frame.height, dtype=pl.Int64).alias("request_id")
    out = frame.with_columns(
        pl.col("prompt_tokens").cast(pl.Int64), pl.col("output_tokens").cast(pl.Int64), seq
    )
    return canonical(out.lazy(), "requests").collect()


def _interp_rows(u: np.ndarray, probs: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per row ``i``: the quantile function ``q[i]`` (at ``probs``) evaluated at ``u[i]``."""
    k = np.clip(np.searchsorted(probs, u, side="right") - 1, 0, probs.size - 2)
    p0, p1 = probs[k], probs[k + 1]
    rows = np.arange(u.size)
    q0, q1 = q[rows, k], q[rows, k + 1]
    f = np.where(p1 > p0, (u - p0) / np.maximum(p1 - p0, 1e-12), 0.0)
    return q0 + f * (q1 - q0)


def _window(
    active: np.ndarray,
    rate: np.ndarray,
    shape: np.ndarray,
    pat: np.ndarray,
    w: float,
    span: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Arrival offsets in ``[0, span)`` and client indices of one window, all clients at once.

    Each client's gaps come from its family (Gamma or Weibull with the window's shape),
    divided by the family mean and by the rate; the first arrival is a uniform fraction
    of the first gap (a renewal process seen from a random time). Clients whose gaps
    fall short of the window draw more.
    """
    lam = rate[active]
    n_exp = lam * w
    k = np.ceil(n_exp + 6.0 * np.sqrt(n_exp) + 16).astype(np.int64)
    fam = pat[active]
    shp = shape[active]
    mean = _family_mean(fam, shp)
    ts: list[np.ndarray] = []
    who: list[np.ndarray] = []
    start = np.zeros(active.size)
    first = np.ones(active.size, dtype=bool)
    todo = np.arange(active.size)
    while todo.size:
        kk = k[todo]
        rep = np.repeat(todo, kk)
        g = np.empty(rep.size)
        isg = fam[rep] == "G"
        g[isg] = rng.standard_gamma(shp[rep][isg])
        g[~isg] = rng.weibull(shp[rep][~isg])
        g /= mean[rep] * lam[rep]
        heads = np.concatenate([[0], np.cumsum(kk)[:-1]])
        new = todo[first[todo]]
        if new.size:  # seen from a random time: a length-biased gap, a uniform part of it
            g[heads[first[todo]]] = (
                _length_biased(fam[new], shp[new], rng)
                / (mean[new] * lam[new])
                * rng.random(new.size)
            )
        cum = np.cumsum(g)
        base = np.repeat(cum[heads] - g[heads] - start[todo], kk)
        t = cum - base
        keep = t < span
        ts.append(t[keep])
        who.append(active[rep[keep]])
        last = t[np.cumsum(kk) - 1]
        start[todo] = last
        first[todo] = False
        todo = todo[last < span]
    t_all = np.concatenate(ts)
    if t_all.size == 0:
        return None
    return t_all, np.concatenate(who)


def _length_biased(fam: np.ndarray, shape: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One unit-scale gap per row, drawn with probability proportional to its length.

    Gamma: exactly (a Gamma of shape ``k + 1``); Weibull: by resampling 64 candidates
    in proportion to their lengths. The first arrival of a window is then a uniform
    fraction of it, so bursty clients do not get an early first request (a plain gap
    would add ``cv^2 / 2`` requests to every window).
    """
    out = np.empty(fam.size)
    g = fam == "G"
    out[g] = rng.standard_gamma(shape[g] + 1.0)
    w = np.flatnonzero(~g)
    if w.size:
        cand = rng.weibull(np.repeat(shape[w], 64)).reshape(w.size, 64)
        cum = np.cumsum(cand, axis=1)
        pick = (cum < rng.random((w.size, 1)) * cum[:, -1:]).sum(axis=1)
        out[w] = cand[np.arange(w.size), np.minimum(pick, 63)]
    return out


# --- compare ----------------------------------------------------------------------------


def client_rows(
    profiles: pl.DataFrame,
    reqs: pl.DataFrame,
    th: Any,
    rows: list[dict[str, Any]],
    curves: dict[str, pl.DataFrame],
    row: Any,
    judge: Any,
    *,
    scale: float = 1.0,
) -> None:
    """Fidelity of synthetic requests to the client_profiles table they came from.

    Over the synthetic trace's horizon (whole windows): the total and per-client
    request counts against ``sum(rate x window)``, the per-window total rate, the
    within-window inter-arrival CV against the table's ``cv`` (Gamma and Weibull
    windows apart) and the token distributions per (client, 6-hour
    distribution window) as the one-sample KS distance to the table's PDFs.
    """
    from fleetlab.workload._compare import _rel

    model, _ = fit_clients(profiles)
    cm = model.clients
    assert cm is not None
    w = cm.window_s
    t = reqs["arrival_s"].cast(pl.Float64).to_numpy()
    horizon_w = max(1, math.ceil((float(t.max()) + 1e-9) / w)) if t.size else 1
    horizon_w = min(horizon_w, cm.windows)
    names = {c.client: i for i, c in enumerate(cm.clients)}
    rates = np.asarray([c.rates[:horizon_w] for c in cm.clients]) * scale
    expected = rates * w
    keep = t < horizon_w * w
    sub = reqs.filter(pl.Series(keep))
    win = (sub["arrival_s"].to_numpy() // w).astype(np.int64)
    cid = np.asarray([names.get(x, -1) for x in sub["tenant"].to_list()], dtype=np.int64)
    known = cid >= 0
    counts = np.zeros_like(expected)
    np.add.at(counts, (cid[known], win[known]), 1.0)
    e_tot, s_tot = float(expected.sum()), float(counts.sum()) + float((~known).sum())
    d = _rel(e_tot, s_tot)
    rows.append(
        row(
            "event_count",
            None,
            e_tot / scale,
            s_tot / scale,
            d,
            th.count_rel,
            judge(d, th.count_rel),
            f"expected sum(rate x window) over {horizon_w} windows; synth divided by scale",
        )
    )
    per_e, per_s = expected.sum(axis=1), counts.sum(axis=1)
    big = per_e >= 100
    if big.any():
        err = float(np.sum(np.abs(per_s[big] - per_e[big])) / np.sum(per_e[big]))
        worst = int(np.argmax(np.abs(per_s - per_e) / np.maximum(per_e, 1.0) * big))
        rows.append(
            row(
                "client_rate",
                f"{int(big.sum())} clients",
                None,
                None,
                err,
                th.count_rel,
                judge(err, th.count_rel),
                "request-weighted mean |relative error| of clients' counts (>= 100 expected); "
                f"worst {cm.clients[worst].client}: {per_e[worst]:.0f} vs {per_s[worst]:.0f}",
            )
        )
    tot_e, tot_s = expected.sum(axis=0), counts.sum(axis=0)
    mean = float(tot_e.mean())
    err = float(np.mean(np.abs(tot_s - tot_e)) / mean) if mean > 0 else math.nan
    rows.append(
        row(
            "rate_curve",
            None,
            mean / w / scale,
            float(tot_s.mean()) / w / scale,
            err,
            th.rate_curve,
            judge(err, th.rate_curve),
            f"{horizon_w} windows of {w:g} s, all clients",
        )
    )
    curves["rate_curve"] = pl.DataFrame(
        {"t_s": np.arange(horizon_w) * w, "real_per_s": tot_e / w, "synth_per_s": tot_s / w}
    )
    _cv_rows(sub, cid, win, cm, th, rows, row, judge, scale)
    _token_rows(sub, cid, cm, profiles, th, rows, row, judge)


def _cv_rows(
    sub: pl.DataFrame,
    cid: np.ndarray,
    win: np.ndarray,
    cm: ClientsModel,
    th: Any,
    rows: list[dict[str, Any]],
    row: Any,
    judge: Any,
    scale: float,
) -> None:
    t = sub["arrival_s"].to_numpy()
    frame = pl.DataFrame({"c": cid, "w": win, "t": t}).filter(pl.col("c") >= 0)
    per = (
        frame.sort("c", "w", "t")
        .group_by("c", "w", maintain_order=True)
        .agg(pl.col("t").diff().drop_nulls().alias("g"))
        .with_columns(
            pl.col("g").list.len().alias("n"),
            (pl.col("g").list.std() / pl.col("g").list.mean()).alias("cv_s"),
        )
        .filter(pl.col("n") >= 50)
    )
    c, wi = per["c"].to_numpy(), per["w"].to_numpy()
    real = np.asarray([cm.clients[i].cv[j] for i, j in zip(c, wi, strict=True)])
    pat = np.asarray([cm.clients[i].pattern[j] for i, j in zip(c, wi, strict=True)])
    synth = per["cv_s"].to_numpy()
    n = per["n"].to_numpy().astype(np.float64)
    for label, mask in (("Gamma", pat == "G"), ("Weibull", pat == "W")):
        ok = mask & (real > 0) & np.isfinite(synth)
        if not ok.any():
            rows.append(row("client_cv", label, None, None, None, None, "skipped", "no window"))
            continue
        a = float(np.average(real[ok], weights=n[ok]))
        b = float(np.average(synth[ok], weights=n[ok]))
        d = abs(b - a) / a
        note = (
            f"request-weighted mean within-window inter-arrival CV over {int(ok.sum())} windows "
            "of >= 50 synthetic requests (real: the table's cv)"
        )
        if label == "Weibull" and scale != 1.0:
            note += "; not judged at scale != 1: a heavy-tailed sample CV grows with the count"
        rows.append(
            row(
                "client_cv",
                label,
                a,
                b,
                d,
                th.cv_rel,
                judge(d, th.cv_rel) if label == "Gamma" or scale == 1.0 else "info",
                note,
            )
        )


def _token_rows(
    sub: pl.DataFrame,
    cid: np.ndarray,
    cm: ClientsModel,
    profiles: pl.DataFrame,
    th: Any,
    rows: list[dict[str, Any]],
    row: Any,
    judge: Any,
) -> None:
    """One-sample KS of synthetic tokens per (client, distribution window) vs the table's PDF."""
    t = sub["arrival_s"].to_numpy()
    t0 = float(np.min(profiles["window_start_s"].to_numpy()))
    pdfs = profiles.filter(pl.col("input_tokens_values").is_not_null())
    for field, col in (("prompt_tokens", "input_tokens"), ("output_tokens", "output_tokens")):
        vals = sub[field].to_numpy()
        ks_all: list[float] = []
        weights: list[float] = []
        worst = (0.0, "")
        for i, c in enumerate(cm.clients):
            if not c.tokens:
                continue
            mine = cid == i
            if mine.sum() < 500:
                continue
            starts = np.asarray([x.start_s for x in c.tokens])
            g = np.maximum(np.searchsorted(starts, t[mine], side="right") - 1, 0)
            src = pdfs.filter(pl.col("client") == c.client).sort("window_start_s")
            by_start = {float(r["window_start_s"]) - t0: r for r in src.iter_rows(named=True)}
            v = vals[mine]
            for k in np.unique(g):
                x = v[g == k]
                r = by_start.get(float(starts[k]))
                if x.size < 500 or r is None or not r[f"{col}_values"]:
                    continue
                d = _ks_discrete(x, r[f"{col}_values"], r[f"{col}_probs"])
                ks_all.append(d)
                weights.append(float(x.size))
                if d > worst[0]:
                    worst = (d, f"{c.client} @ {starts[k]:.0f} s ({x.size} requests)")
        if not ks_all:
            rows.append(row("ks", field, None, None, None, th.ks, "skipped", "no group >= 500"))
            continue
        mean = float(np.average(ks_all, weights=weights))
        rows.append(
            row(
                "ks",
                field,
                None,
                worst[0],
                mean,
                th.ks,
                judge(mean, th.ks),
                f"request-weighted mean one-sample KS over {len(ks_all)} (client, distribution "
                f"window) groups of >= 500 requests; synth: the worst, {worst[1]}",
            )
        )


def _ks_discrete(x: np.ndarray, values: list[float], probs: list[float]) -> float:
    """KS distance between integer draws ``x`` and a discrete PDF (CDFs at its support)."""
    v = np.asarray(values, dtype=np.float64)
    p = np.asarray(probs, dtype=np.float64)
    order = np.argsort(v)
    v, p = v[order], p[order]
    cdf = np.cumsum(p) / p.sum()
    xs = np.sort(x)
    emp = np.searchsorted(xs, v, side="right") / xs.size
    return float(np.max(np.abs(emp - cdf)))
