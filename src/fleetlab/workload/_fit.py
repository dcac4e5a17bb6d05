"""Fitting a :class:`WorkloadModel` to a canonical table."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import polars as pl

from fleetlab.errors import ConfigError
from fleetlab.sim import Streams
from fleetlab.workload._arrival_fit import (
    BAND_COUNTS,
    BAND_REALIZATIONS,
    batch_instants,
    cluster_instants,
    fit_bands,
    fit_rate_curve,
    fit_renewal,
    fit_trend,
    operational_time,
)
from fleetlab.workload._marginals import draw, fit_marginal, km_marginal, knots
from fleetlab.workload._mmpp import fit_mmpp
from fleetlab.workload._model import (
    Arrival,
    Band,
    Cluster,
    Copula,
    Entity,
    Marginal,
    Mmpp,
    RateCurve,
    Renewal,
    Source,
    WorkloadModel,
)
from fleetlab.workload._options import ArrivalChoice, FitOptions
from fleetlab.workload._stats import (
    normal_scores,
    spearman_matrix,
    time_quantum,
    zipf_exponent,
)
from fleetlab.workload._views import PAIR, PAIR_SEP, event_frame, resolve_table, view_of

MODEL_TABLES = ("requests", "invocations", "vms", "flows", "spans", "usage", "client_profiles")
"""Canonical tables :func:`fit` models (event streams; spans as traces of call trees; usage
as VM classes with profiles and AR(1) residuals; client_profiles kept per client, and
synthesized as requests)."""


def fit(
    frame: pl.DataFrame | pl.LazyFrame,
    *,
    table: str | None = None,
    seed: int = 0,
    options: FitOptions | None = None,
    source_path: str | None = None,
    arrivals: ArrivalChoice = "gamma",
) -> tuple[WorkloadModel, dict[str, Any]]:
    """Fit a generative workload model to a canonical table.

    Parameters
    ----------
    frame
        A canonical requests, invocations or vms table (see ``fleetlab.traces.TABLES``);
        lazy frames are collected. Spans and flows are refused with a pointer to the
        dependency-graph generator (``fleetlab.depgraph``).
    table
        The canonical table name; detected from the columns when omitted.
    seed
        Seed of the samples the fits are made on (fits are deterministic for a seed).
    options
        :class:`FitOptions`; the defaults are the documented choices.
    source_path
        Recorded in the model's ``source`` (no data from the file is kept).
    arrivals
        The burstiness component: ``"gamma"`` (the default: a Gamma renewal, or the
        empirical gap distribution when no Gamma fits), ``"mmpp"`` (a 2..4-state
        Markov-modulated Poisson process, states chosen by BIC) or ``"auto"`` (both
        are fitted and one synthetic trace of each is compared with the input; the
        MMPP is used when its worst ``distance / threshold`` over the arrival
        statistics of :func:`compare` is at least 10 % lower, else the cheaper
        renewal; this costs two syntheses and two comparisons). The renewal is
        stored either way (with the MMPP it is the one fitted under the coarser rate
        curve the MMPP uses, see ``FitOptions.mmpp_bin_factor``).

    Returns
    -------
    model, diagnostics
        The model and a dict with each field's candidate families (AIC, KS) and the
        renewal fit, for reports.

    Raises
    ------
    ConfigError
        The table is not an event stream or is spans/flows (the message names the
        depgraph generator to use), or has fewer than 2 timed events (200 for
        ``arrivals="mmpp"``), or ``arrivals`` is not one of the choices.
    """
    if arrivals not in ("gamma", "mmpp", "auto"):
        raise ConfigError(f"arrivals {arrivals!r}: expected one of 'gamma', 'mmpp', 'auto'")
    opts = options or FitOptions()
    df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    name = resolve_table(df, table)
    if name == "usage":  # a grid of samples, not events: VM classes (see _usage)
        from fleetlab.workload._usage import fit_usage

        return fit_usage(df, seed=seed, source_path=source_path)
    if name == "client_profiles":  # already generative: kept per client (see _clients)
        from fleetlab.workload._clients import fit_clients

        return fit_clients(df, source_path=source_path)
    view = view_of(name)
    shapes = None
    if name == "spans":  # the events are traces (their root spans); the rest is their shape
        from fleetlab.workload._spans import fit_shapes, root_frame

        shapes = fit_shapes(df, options=opts, seed=seed)
        every = root_frame(df)
        fields: list[str] = []
    else:
        every, fields, _ = event_frame(df, view, expand_seed=seed)
    ev = every.filter(pl.col("_t").is_not_null() & pl.col("_t").is_finite())
    if ev.height < 2:
        raise ConfigError(
            f"cannot fit a workload model: {name} table has {ev.height} event(s) with a time in "
            f"{view.time!r} (expected at least 2)"
        )
    streams = Streams(seed)
    t_raw = ev["_t"].to_numpy()
    t = t_raw - t_raw[0]
    duration = float(t[-1])
    if duration <= 0:
        raise ConfigError(
            f"cannot fit a workload model: all {ev.height} events share one time in {view.time!r} "
            "(expected a time span > 0)"
        )
    quantum = time_quantum(t)
    batch: Marginal | None = None
    batched = batch_instants(t, duration, opts, quantum_s=quantum)
    sizes = None
    if batched is not None:  # a compound process: instants x batch sizes
        t, sizes = batched
        batch, _ = fit_marginal(
            sizes, integer=True, rng=streams.get("fit.batch"), ks_threshold=opts.ks_threshold
        )
        batch = batch.model_copy(update={"lower": 1.0})
    if quantum is not None:
        jitter = streams.get("fit.quantum").uniform(0.0, quantum, t.size)
        order = np.argsort(t + jitter, kind="stable")
        t = (t + jitter)[order]
        sizes = sizes[order] if sizes is not None else None
        duration = float(t[-1])
    rate, renewal, trend = _fit_arrivals(t, sizes, duration, quantum, opts, streams)
    arrival = Arrival(rate=rate, renewal=renewal, quantum_s=quantum, batch=batch)
    mmpp_arrival: Arrival | None = None
    mmpp_diag: dict[str, Any] = {}
    if arrivals != "gamma":
        coarse = opts.model_copy(
            update={"min_events_per_bin": opts.min_events_per_bin * opts.mmpp_bin_factor}
        )
        rate_m, renewal_m, _ = _fit_arrivals(t, sizes, duration, quantum, coarse, streams)
        mmpp, mmpp_diag = _fit_process(t, rate_m, arrivals, opts.mmpp_max_states)
        if mmpp is not None:
            mmpp_arrival = arrival.model_copy(
                update={"rate": rate_m, "renewal": renewal_m, "process": "mmpp", "mmpp": mmpp}
            )
            if arrivals == "mmpp":
                arrival = mmpp_arrival
    integer = dict(view.fields)
    marginals: dict[str, Marginal] = {}
    diagnostics: dict[str, Any] = {
        "candidates": {},
        "renewal": renewal.model_dump(),
        "trend_days": len(trend) if trend is not None else 0,
        "batch_mean": float(np.mean(batched[1])) if batched is not None else None,
        "arrivals": {"chosen": arrival.process, **mmpp_diag},
    }
    for f in fields:
        values = every[f].drop_nulls().to_numpy()
        if f == "lifetime_s":
            values = values[values >= 0]
        if values.size == 0:
            continue
        m, cands = fit_marginal(
            values, integer=integer[f], rng=streams.get(f"fit.{f}"), ks_threshold=opts.ks_threshold
        )
        if f == "lifetime_s":
            m = _censored_lifetimes(df, m)
        marginals[f] = m
        diagnostics["candidates"][f] = cands
    copula = _fit_copula(every, marginals, opts, streams.get("fit.copula"))
    own_fields = [f for f in marginals if f != "lifetime_s"]  # lifetimes: pooled Kaplan-Meier
    if name == "flows":  # the entity is the (src, dst) pair
        entity = _fit_entity(every, PAIR, None, own_fields, integer, opts, streams)
        entity = _flow_pairs(df, every, entity) if entity is not None else None
    elif name == "spans":
        entity = None
    else:
        entity = _fit_entity(every, view.entity, view.parent, own_fields, integer, opts, streams)
    model = WorkloadModel(
        table=name,
        time_column=view.time,
        source=Source(table=name, rows=df.height, duration_s=duration, path=source_path),
        arrival=arrival,
        fields=marginals,
        copula=copula,
        entity=entity,
        lifetime_column="lifetime_s" if "lifetime_s" in marginals else None,
        traces=shapes,
    )
    if arrivals == "auto":
        model = _auto_select(df, model, mmpp_arrival, seed, diagnostics)
    if opts.level_bands == "auto" and model.arrival.process == "renewal":
        model = _band_select(df, model, t, opts, seed, diagnostics, streams)
    # clusters after bands: level-dependent burstiness also puts short gaps together
    # (in the busy hours), and bands are the model for that
    if (
        opts.clusters != "off"
        and batch is None
        and quantum is None
        and model.arrival.process == "renewal"
        and model.arrival.bands is None
    ):
        model = _cluster_select(df, model, t, opts, seed, diagnostics, streams)
    return model, diagnostics


def _fit_arrivals(
    t: np.ndarray,
    sizes: np.ndarray | None,
    duration: float,
    quantum: float | None,
    opts: FitOptions,
    streams: Streams,
) -> tuple[RateCurve, Renewal, np.ndarray | None]:
    """Rate curve (of instants, when batched), renewal and trend of sorted times ``t``.

    With batches (``sizes`` per instant) the curve is fitted on the events, so hours
    with big batches keep their load, and divided by the mean batch size: the instants
    follow it and each brings a batch. The renewal is fitted on the instants. The
    shrinkage noise of a compound count is ``E x (cv^2 x mean + var / mean)`` per bin
    of ``E`` expected events.
    """
    ks = opts.renewal_ks_threshold
    if sizes is None:
        events, mean_b, var_b = t, 1.0, 0.0
    else:
        events = np.repeat(t, sizes)
        mean_b, var_b = float(np.mean(sizes)), float(np.var(sizes))

    def curve(noise_cv: float | None, trend: np.ndarray | None) -> RateCurve:
        c = fit_rate_curve(
            events, duration, opts, quantum_s=quantum, noise_cv=noise_cv, trend=trend
        )
        if sizes is None:
            return c
        return c.model_copy(
            update={
                "levels": [float(f"{x / mean_b:.6g}") for x in c.levels],
                "mean_rate_per_s": c.mean_rate_per_s / mean_b,
            }
        )

    def noise(cv_inst: float) -> float:
        return math.sqrt(cv_inst**2 * mean_b + var_b / mean_b)

    raw = curve(None, None)
    first = fit_renewal(t, raw, ks_threshold=ks, rng=streams.get("fit.renewal0"))
    trend = fit_trend(events, duration, opts, noise_cv=noise(first.cv), quantum_s=quantum)
    if trend is not None:
        first = fit_renewal(t, curve(None, trend), ks_threshold=ks, rng=streams.get("fit.renewal0"))
    rate = curve(noise(first.cv), trend)
    renewal = fit_renewal(t, rate, ks_threshold=ks, rng=streams.get("fit.renewal"))
    return rate, renewal, trend


def _fit_process(
    t: np.ndarray, rate: RateCurve, arrivals: str, max_states: int
) -> tuple[Mmpp | None, dict[str, Any]]:
    """The MMPP on the operational times of ``t`` under ``rate``, with its diagnostics.

    Raises
    ------
    ConfigError
        ``arrivals="mmpp"`` and fewer than 200 arrival instants.
    """
    mmpp, rows = fit_mmpp(operational_time(t, rate), states=tuple(range(2, max_states + 1)))
    if mmpp is None and arrivals == "mmpp":
        raise ConfigError(
            f"cannot fit an MMPP: {t.size} arrival instants (expected at least 200); "
            "use arrivals='gamma'"
        )
    return mmpp, {"mmpp": rows}


ARRIVAL_STATS = ("event_count", "rate_curve", "iat_cv", "renewal_cv", "acf_counts", "idc")


def _arrival_score(
    df: pl.DataFrame,
    model: WorkloadModel,
    seed: int,
    *,
    realizations: int = 1,
    reduce: Literal["mean", "median"] = "mean",
) -> float:
    """Worst ``distance / threshold`` over the judged arrival rows of the own fidelity report.

    Synthetic realizations (seeds ``seed + 7919``, ``+ 7920``, ...) are compared with
    the trace; the rows are those of ``ARRIVAL_STATS`` with a pass/fail verdict; the
    score is the mean (or ``reduce="median"``) over the realizations of each one's
    worst ratio.
    """
    from fleetlab.workload._compare import Thresholds, compare

    th = Thresholds().model_dump()
    keys = {
        "event_count": "count_rel",
        "rate_curve": "rate_curve",
        "iat_cv": "cv_rel",
        "renewal_cv": "cv_rel",
        "acf_counts": "acf",
        "idc": "idc_log",
    }
    worsts = []
    for i in range(realizations):
        cmp = compare(df, model.sample(seed=seed + 7919 + i))
        worst = 0.0
        for r in cmp.table.to_dicts():
            judged = r["verdict"] in ("pass", "fail") and r["distance"] is not None
            if judged and r["statistic"] in ARRIVAL_STATS and r["field"] == "":
                worst = max(worst, float(r["distance"]) / th[keys[r["statistic"]]])
        worsts.append(worst)
    return float(np.median(worsts)) if reduce == "median" else sum(worsts) / realizations


def _auto_select(
    df: pl.DataFrame,
    model: WorkloadModel,
    candidate: Arrival | None,
    seed: int,
    diag: dict[str, Any],
) -> WorkloadModel:
    """``arrivals="auto"``: the process whose own fidelity report on arrivals is better.

    One synthetic realization of each candidate (seeded from ``seed``) is compared
    with the trace; the score is the worst ``distance / threshold`` over the arrival
    statistics of :func:`compare` that it judges. The MMPP must beat the renewal's
    score by 10 % (the renewal is the cheaper one to synthesize).
    """
    if candidate is None:
        return model
    mm = model.model_copy(update={"arrival": candidate})
    scores = {"renewal": _arrival_score(df, model, seed), "mmpp": _arrival_score(df, mm, seed)}
    diag["arrivals"]["score"] = scores
    if scores["mmpp"] < 0.9 * scores["renewal"]:
        diag["arrivals"]["chosen"] = "mmpp"
        return mm
    return model


CLUSTER_REALIZATIONS = 8
"""Synthetic realizations per score when choosing a cluster process (median of them)."""


def _cluster_select(
    df: pl.DataFrame,
    model: WorkloadModel,
    t: np.ndarray,
    opts: FitOptions,
    seed: int,
    diag: dict[str, Any],
    streams: Streams,
) -> WorkloadModel:
    """A cluster process (:func:`cluster_instants`), kept only when it improves the report.

    Tried when the short gaps come in runs (``FitOptions.clusters="on"``: kept then,
    without scoring). The candidate keeps the event-level rate
    curve and renewal (for reports) and adds a :class:`Cluster`: the clusters' sizes
    and inner gaps, and the renewal of their instants in the operational time of the
    curve divided by the mean size. Both models are scored by :func:`_arrival_score`
    as the **median** over ``CLUSTER_REALIZATIONS`` realizations (a trace with clusters
    is small and lumpy: Azure Functions 2021 has 199 events, whose count alone fails
    its 10 % threshold in about half of the realizations of either model, so a mean
    over two would follow that noise). Nothing is tried when the renewal's median is
    < 1 (it passes); the cluster process is kept when its median is 10 % lower.
    ``diag["clusters"]`` records the test and the scores.
    """
    rate = model.arrival.rate
    found = cluster_instants(t, rate)
    diag["clusters"] = {"chosen": False}
    if found is None:
        return model
    inst, sizes, gaps, info = found
    diag["clusters"].update(info)
    forced = opts.clusters == "on"
    base = math.inf
    if not forced:
        base = _arrival_score(df, model, seed, realizations=CLUSTER_REALIZATIONS, reduce="median")
        diag["clusters"]["score"] = {"renewal": base}
        if base < 1.0:  # passes its own arrival rows: nothing to fix
            return model
    size_m, _ = fit_marginal(
        sizes, integer=True, rng=streams.get("fit.cluster_sizes"), ks_threshold=opts.ks_threshold
    )
    size_m = size_m.model_copy(update={"lower": 1.0})
    spread, _ = fit_marginal(
        gaps, integer=False, rng=streams.get("fit.cluster_gaps"), ks_threshold=opts.ks_threshold
    )
    inst_rate = rate.model_copy(
        update={
            "levels": [x / float(np.mean(sizes)) for x in rate.levels],
            "mean_rate_per_s": rate.mean_rate_per_s / float(np.mean(sizes)),
        }
    )
    renewal = fit_renewal(
        inst, inst_rate, ks_threshold=opts.renewal_ks_threshold, rng=streams.get("fit.cluster")
    )
    cluster = Cluster(sizes=size_m, spread=spread, renewal=renewal, threshold=info["fraction"])
    cand = model.model_copy(
        update={"arrival": model.arrival.model_copy(update={"cluster": cluster})}
    )
    if not forced:
        score = _arrival_score(df, cand, seed, realizations=CLUSTER_REALIZATIONS, reduce="median")
        diag["clusters"]["score"]["clusters"] = score
    if forced or score < 0.9 * base:
        diag["clusters"]["chosen"] = True
        diag["clusters"]["mean_size"] = float(np.mean(sizes))
        return cand
    return model


def _band_select(
    df: pl.DataFrame,
    model: WorkloadModel,
    t: np.ndarray,
    opts: FitOptions,
    seed: int,
    diag: dict[str, Any],
    streams: Streams,
) -> WorkloadModel:
    """Rate-level bands (:func:`fit_bands`), kept only when they improve the own report.

    Tried only when the single renewal fails its own report (an arrival row beyond its
    threshold: score >= 1; one that passes needs nothing more, and on traces that pass
    a choice between two passing models would follow the noise of the scoring
    realizations). Every band count of ``BAND_COUNTS`` whose bands differ beyond one
    renewal's noise is a candidate; each candidate and the single renewal are scored by
    :func:`_arrival_score` (mean over ``BAND_REALIZATIONS`` synthetic realizations),
    and the best candidate is
    kept when its score is at least 10 % lower than the single renewal's (one renewal
    is the simpler model). ``diag["bands"]`` records the tries and scores.
    """
    arrival = model.arrival
    tried: list[dict[str, Any]] = []
    candidates: list[tuple[int, list[Band]]] = []
    for k in BAND_COUNTS:
        bands, info = fit_bands(
            t,
            arrival.rate,
            arrival.renewal,
            float(model.source.duration_s),
            n_bands=k,
            ks_threshold=opts.renewal_ks_threshold,
            rng=streams.get(f"fit.bands{k}"),
        )
        tried.append(info)
        if bands is not None:
            candidates.append((k, bands))
    diag["bands"] = {"tried": tried, "chosen": 0}
    if not candidates:
        return model
    scores = {0: _arrival_score(df, model, seed, realizations=BAND_REALIZATIONS)}
    diag["bands"]["score"] = {"0": scores[0]}
    if scores[0] < 1.0:  # one renewal passes its own arrival rows: nothing to fix
        return model
    banded = {}
    for k, bands in candidates:
        banded[k] = model.model_copy(
            update={"arrival": arrival.model_copy(update={"bands": bands})}
        )
        scores[k] = _arrival_score(df, banded[k], seed, realizations=BAND_REALIZATIONS)
    diag["bands"]["score"] = {str(k): v for k, v in scores.items()}
    best = min((k for k, _ in candidates), key=lambda k: scores[k])
    if scores[best] < 0.9 * scores[0]:
        diag["bands"]["chosen"] = best
        return banded[best]
    return model


def _censored_lifetimes(df: pl.DataFrame, fitted: Marginal) -> Marginal:
    """Lifetimes from Kaplan-Meier when some VMs outlive the trace (deleted_s null/at the end)."""
    d = df.select(
        pl.col("created_s").cast(pl.Float64), pl.col("deleted_s").cast(pl.Float64)
    ).filter(
        pl.col("created_s").is_not_null()
        & (pl.col("deleted_s").is_null() | (pl.col("deleted_s") >= pl.col("created_s")))
    )
    end = d.select(pl.max_horizontal(pl.col("deleted_s").max(), pl.col("created_s").max())).item()
    censored = (d["deleted_s"].is_null() | (d["deleted_s"] >= end)).to_numpy()
    if not censored.any():
        return fitted
    life = (d["deleted_s"].fill_null(end) - d["created_s"]).to_numpy()
    m = km_marginal(life, ~censored)
    return m.model_copy(update={"ks": None})


def _fit_copula(
    ev: pl.DataFrame, marginals: dict[str, Marginal], opts: FitOptions, rng: np.random.Generator
) -> Copula | None:
    """Gaussian copula: correlations of normal scores, calibrated to the rank correlations.

    With ties (discrete fields such as GPU counts) the normal-score correlation
    understates the dependence a Gaussian copula must carry; each pair whose simulated
    Spearman correlation misses the observed one by more than 0.02 gets its latent
    correlation found by bisection (common random numbers, 20,000 draws).
    """
    fields = list(marginals)
    if len(fields) < 2:
        return None
    rows = ev.select(fields).drop_nulls()
    if rows.height < 3:
        return None
    if rows.height > opts.copula_sample:
        idx = np.sort(rng.choice(rows.height, opts.copula_sample, replace=False))
        rows = rows[idx]
    cols = [rows[f].to_numpy() for f in fields]
    scores = np.vstack([normal_scores(c) for c in cols])
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.atleast_2d(np.corrcoef(scores))
    corr = np.nan_to_num(corr, nan=0.0)
    target = np.nan_to_num(spearman_matrix(cols), nan=0.0)
    z = rng.standard_normal((2, 20_000))
    tables = {f: knots(m) for f, m in marginals.items()}
    for i in range(len(fields)):
        for j in range(i + 1, len(fields)):
            mi, mj = marginals[fields[i]], marginals[fields[j]]
            if "constant" in (mi.kind, mj.kind):
                continue

            def simulated(
                rho: float, mi: Marginal = mi, mj: Marginal = mj, i: int = i, j: int = j
            ) -> float:
                a = draw(mi, z[0], tables[fields[i]])
                b = draw(
                    mj, rho * z[0] + math.sqrt(max(0.0, 1 - rho * rho)) * z[1], tables[fields[j]]
                )
                return float(spearman_matrix([a, b])[0, 1])

            want = float(target[i, j])
            if abs(simulated(float(corr[i, j])) - want) <= 0.02:
                continue
            lo, hi = -0.999, 0.999
            for _ in range(18):
                mid = (lo + hi) / 2
                if simulated(mid) < want:
                    lo = mid
                else:
                    hi = mid
            corr[i, j] = corr[j, i] = (lo + hi) / 2
    np.fill_diagonal(corr, 1.0)
    corr = _nearest_psd(corr)
    return Copula(fields=fields, correlation=[[float(x) for x in row] for row in corr])


def _nearest_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    if w.min() > 1e-10:
        return c
    w = np.maximum(w, 1e-10)
    out = (v * w) @ v.T
    d = np.sqrt(np.diag(out))
    return out / np.outer(d, d)


def _fit_entity(
    ev: pl.DataFrame,
    column: str | None,
    parent: str | None,
    fields: list[str],
    integer: dict[str, bool],
    opts: FitOptions,
    streams: Streams,
) -> Entity | None:
    if column is None or column not in ev.columns:
        return None
    keys = [column] if parent is None or parent not in ev.columns else [column, parent]
    weight = pl.col("_count").sum() if "_count" in ev.columns else pl.len()
    per = (
        ev.filter(pl.col(column).is_not_null())
        .group_by(keys)
        .agg(weight.alias("n"))
        .sort(["n", column], descending=[True, False])
    )
    if per.height == 0:
        return None
    n = per["n"].to_numpy().astype(np.float64)
    total = n.sum()
    top = per.head(opts.entity_top)
    shares = (top["n"].to_numpy() / total).tolist()
    parents = None
    if parent is not None and len(keys) == 2:
        codes = top[parent].cast(pl.Categorical).to_physical().to_numpy()
        parents = [int(x) for x in codes]
    own: dict[str, dict[str, Marginal]] = {}
    if fields and opts.entity_own_sizes > 0:
        big = per.head(opts.entity_own_sizes).filter(pl.col("n") >= opts.entity_min_events)
        for rank, key in enumerate(big[column].to_list()):
            sub = ev.filter(pl.col(column) == key)
            own[str(rank)] = {
                f: fit_marginal(
                    v,
                    integer=integer[f],
                    rng=streams.get(f"fit.entity.{rank}.{f}"),
                    parametric=False,
                )[0]
                for f in fields
                if (v := sub[f].drop_nulls().to_numpy()).size
            }
        if own:
            rest = ev.filter(~pl.col(column).is_in(big[column].implode()))
            own["rest"] = {
                f: fit_marginal(
                    v,
                    integer=integer[f],
                    rng=streams.get(f"fit.entity.rest.{f}"),
                    parametric=False,
                )[0]
                for f in fields
                if (v := rest[f].drop_nulls().to_numpy()).size
            }
    return Entity(
        column=column,
        count=per.height,
        shares=[float(s) for s in shares],
        tail_share=float(max(0.0, 1.0 - sum(shares))),
        zipf_exponent=_finite(zipf_exponent(n)),
        parent_column=parent if parents is not None else None,
        parents=parents,
        fields=own,
    )


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _flow_pairs(df: pl.DataFrame, ev: pl.DataFrame, entity: Entity) -> Entity:
    """Add the endpoints of a flows model's pairs: indices into ranked synthetic names.

    Endpoints are ranked by the flows they take part in (sent plus received, name
    ascending on ties) and renamed ``svc-0``, ``svc-1``, ... (the model holds no raw
    names); each explicit pair keeps its [src, dst] indices and its most frequent port.
    """
    per = (
        ev.filter(pl.col(PAIR).is_not_null())
        .group_by(PAIR)
        .agg(pl.len().alias("n"))
        .sort(["n", PAIR], descending=[True, False])
        .head(len(entity.shares))
    )
    ends = df.select(pl.col("src").cast(pl.String), pl.col("dst").cast(pl.String)).drop_nulls()
    load = (
        pl.concat([ends.select(pl.col("src").alias("e")), ends.select(pl.col("dst").alias("e"))])
        .group_by("e")
        .agg(pl.len().alias("n"))
        .sort(["n", "e"], descending=[True, False])
    )
    index = {name: i for i, name in enumerate(load["e"].to_list())}
    pairs = [[index[a], index[b]] for a, b in (p.split(PAIR_SEP, 1) for p in per[PAIR].to_list())]
    ports: list[int | None] | None = None
    if "port" in df.columns and df["port"].null_count() < df.height:
        top = (
            df.select(
                pl.concat_str(
                    [pl.col("src").cast(pl.String), pl.col("dst").cast(pl.String)],
                    separator=PAIR_SEP,
                ).alias(PAIR),
                pl.col("port").cast(pl.Int64),
            )
            .drop_nulls()
            .group_by([PAIR, "port"])
            .agg(pl.len().alias("n"))
            .sort(["n", "port"], descending=[True, False])
            .unique(PAIR, keep="first", maintain_order=True)
        )
        mode = dict(zip(top[PAIR].to_list(), top["port"].to_list(), strict=True))
        ports = [mode.get(p) for p in per[PAIR].to_list()]
    width = len(str(max(len(index) - 1, 0)))
    return Entity.model_validate(
        {
            **entity.model_dump(),
            "column": "pair",
            "endpoints": [f"svc-{i:0{width}d}" for i in range(len(index))],
            "pairs": pairs,
            "ports": ports,
        }
    )
