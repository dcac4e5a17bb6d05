"""Spans models: trace arrivals x call-tree templates x per ``service:operation`` spans.

A spans table is a stream of *traces*. The arrival process (the same rate curve and
renewal/MMPP machinery as every other table) is fitted on the root spans' start times;
each trace's tree of ``service:operation`` nodes is put in a canonical form (children
sorted by their own canonical form, as in the Alibaba SoCC'21 call-graph study) and
the most frequent forms are kept as templates with their shares; every
``service:operation`` has a duration marginal, the empirical distribution of its start
after its parent's start as a fraction of the parent's duration, and an error rate.

Synthesis draws a template per trace arrival, a duration and an offset per node, and
fits every child into its parent's time window (see :func:`span_chunks`), except the
children of labels that leave their parent's window in the source (clock skew,
asynchronous work: ``free`` placement), which keep their own start and duration.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from scipy.special import ndtr, ndtri

from fleetlab.errors import ConfigError
from fleetlab.traces import canonical
from fleetlab.workload._marginals import draw, knots
from fleetlab.workload._model import Marginal, SpanNode, TraceShapes, TraceTemplate
from fleetlab.workload._stats import ks_critical, ks_two_sample

if TYPE_CHECKING:
    from fleetlab.workload._model import WorkloadModel
    from fleetlab.workload._options import FitOptions

ERROR_STATUS = "error"
"""The canonical status of a failed span (docs/formats-spans.md)."""
SEP = ":"
"""Between service and operation in a node label (split at the first one)."""
DURATION_KNOTS = 51
OFFSET_KNOTS = 21
MAX_DISCRETE = 16
MIN_VARIANT = 30
"""Spans of one label and subtree size needed for their own variant of the node."""
FREE_SHARE = 0.05
"""Share of a label's spans outside their parent's window that makes its placement free."""
BINNED_BINS = 8
BINNED_KNOTS = 11
BINNED_MIN = 200
"""Children needed for the binned coupling (25 per parent-score bin)."""
BINNED_MARGIN = 0.01

Key = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Forest:
    """The trees of a spans table, one per trace, in a form both fit and compare use.

    ``spans`` has one row per span (trace index ``_trace``, ``label``, ``start_us``,
    ``duration_us``, ``error``, ``sub``: the spans in its subtree, ``z``: the normal
    score of the duration among the spans of its label and subtree size; on children ``z_parent``, the parent's, ``parent_us``, the parent's
    duration, ``offset``, where the child
    starts within the parent's slack (parent duration minus its own), clipped to
    [0, 1], ``lead_us``, its start minus the parent's (not clipped), and ``over`` /
    ``early`` (1.0 or 0.0): it ends after its parent's end / starts before its
    parent's start; null on roots); ``keys[i]`` is the canonical form of
    trace ``i``'s tree, ``size``/``depth`` its span count and depth (root = 1),
    ``root_start_us`` its root's start.
    """

    spans: pl.DataFrame
    keys: list[Key]
    size: np.ndarray
    depth: np.ndarray
    root_start_us: np.ndarray


def forest(df: pl.DataFrame) -> Forest:
    """Build the call trees of a canonical spans table.

    The root of a trace is its span without a parent in the trace (a null
    ``parent_id`` or one that names no span of the trace), the earliest if there are
    several; the other parentless spans are attached to it. Spans with a null
    trace_id, span_id, start or duration are left out.

    Raises
    ------
    ConfigError
        No usable span.
    """
    cols = ["trace_id", "span_id", "parent_id", "service", "operation", "start_us", "duration_us"]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ConfigError(f"spans table: missing column(s) {missing} (expected {cols})")
    status = pl.col("status").cast(pl.String) if "status" in df.columns else pl.lit(None)
    s = (
        df.select(
            pl.col("trace_id").cast(pl.String),
            pl.col("span_id").cast(pl.String),
            pl.col("parent_id").cast(pl.String),
            pl.concat_str(
                [
                    pl.col("service").cast(pl.String).fill_null("?"),
                    pl.col("operation").cast(pl.String).fill_null("?"),
                ],
                separator=SEP,
            ).alias("label"),
            pl.col("start_us").cast(pl.Int64),
            pl.col("duration_us").cast(pl.Int64),
            (status == ERROR_STATUS).fill_null(False).alias("error"),
        )
        .drop_nulls(["trace_id", "span_id", "start_us", "duration_us"])
        .unique(["trace_id", "span_id"], keep="first", maintain_order=True)
        .sort(["trace_id", "start_us", "span_id"])
    )
    if s.height == 0:
        raise ConfigError("spans table: no span with trace_id, span_id, start_us and duration_us")
    trace_codes = s["trace_id"].rle_id().to_numpy()
    sid = s["span_id"].to_list()
    pid = s["parent_id"].to_list()
    label = s["label"].to_list()
    start = s["start_us"].to_numpy()
    dur = s["duration_us"].to_numpy()
    n = s.height
    parent = np.full(n, -1, dtype=np.int64)
    sub = np.ones(n, dtype=np.int64)
    bounds = np.flatnonzero(np.diff(trace_codes)) + 1
    firsts = np.concatenate([[0], bounds])
    lasts = np.concatenate([bounds, [n]])
    keys: list[Key] = []
    size = (lasts - firsts).astype(np.int64)
    depth = np.zeros(firsts.size, dtype=np.int64)
    roots = np.zeros(firsts.size, dtype=np.int64)
    for t, (a, b) in enumerate(zip(firsts.tolist(), lasts.tolist(), strict=True)):
        index = {sid[i]: i for i in range(a, b)}
        root = -1
        for i in range(a, b):  # rows are by start time: the first parentless one is the root
            p = index.get(pid[i]) if pid[i] is not None else None
            if p is None or p == i:
                if root < 0:
                    root = i
                    continue
                p = root
            parent[i] = p
        if root < 0:  # a cycle: no parentless span; take the earliest as the root
            root = a
            parent[a] = -1
        roots[t] = root
        children: dict[int, list[int]] = {}
        for i in range(a, b):
            if parent[i] >= 0:
                children.setdefault(int(parent[i]), []).append(i)
        order = [root]
        lev = {root: 1}
        for i in order:  # breadth first; ``order`` grows while we walk it
            for c in children.get(i, ()):
                if c not in lev:
                    lev[c] = lev[i] + 1
                    order.append(c)
        depth[t] = max(lev.values())
        size[t] = len(order)
        canon: dict[int, Key] = {}
        for i in reversed(order):
            kids = tuple(sorted(canon[c] for c in children.get(i, ()) if c in canon))
            canon[i] = (label[i], kids)
            sub[i] = 1 + sum(int(sub[c]) for c in children.get(i, ()) if c in canon)
        keys.append(canon[root])
    has = parent >= 0
    pstart = np.where(has, start[np.maximum(parent, 0)], 0).astype(np.float64)
    pdur = np.where(has, dur[np.maximum(parent, 0)], 0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        slack = pdur - dur
        offset = np.clip(np.where(slack > 0, (start - pstart) / slack, 0.0), 0.0, 1.0)
    lead = start - pstart
    spans = pl.DataFrame(
        {
            "_trace": trace_codes,
            "label": s["label"],
            "sub": sub,
            "start_us": start,
            "duration_us": dur,
            "error": s["error"],
            "offset": np.where(has, offset, np.nan),
            "parent_us": np.where(has, pdur, np.nan),
            "lead_us": np.where(has, lead, np.nan),
            "over": np.where(has, (lead + dur > pdur).astype(np.float64), np.nan),
            "early": np.where(has, (lead < 0).astype(np.float64), np.nan),
        },
        nan_to_null=True,
    )
    # normal score of each duration within its label, and its parent's
    u = spans.select(
        (pl.col("duration_us").rank("average").over("label", "sub") - 0.5)
        / pl.len().over("label", "sub")
    ).to_series()
    z = ndtri(u.to_numpy())
    spans = spans.with_columns(
        pl.Series("z", z),
        pl.Series("z_parent", np.where(has, z[np.maximum(parent, 0)], np.nan)),
    ).with_columns(pl.col("z_parent").fill_nan(None))
    return Forest(spans, keys, size, depth, start[roots])


def root_frame(df: pl.DataFrame) -> pl.DataFrame:
    """One event per trace: ``_t``, its root span's start in seconds, sorted."""
    f = forest(df)
    return pl.DataFrame({"_t": np.sort(f.root_start_us).astype(np.float64) * 1e-6})


def to_tree(key: Key) -> Any:
    """The nested-list form of a canonical tree: ``[label, child, ...]``, leaves as strings."""
    label, kids = key
    if not kids:
        return label
    return [label, *(to_tree(k) for k in kids)]


def from_tree(tree: Any) -> Key:
    """The canonical key of a nested-list tree (children sorted again)."""
    if isinstance(tree, str):
        return (tree, ())
    return (tree[0], tuple(sorted(from_tree(c) for c in tree[1:])))


def top_templates(keys: list[Key], *, coverage: float, max_templates: int) -> list[tuple[Key, int]]:
    """The fewest most frequent trees covering ``coverage`` of the traces (at most ``max_templates``).

    Ties in frequency are broken by the canonical form, so the choice is deterministic.
    """
    counts = sorted(Counter(keys).items(), key=lambda kv: (-kv[1], repr(kv[0])))
    total = len(keys)
    out: list[tuple[Key, int]] = []
    covered = 0
    for key, n in counts:
        if len(out) >= max_templates or (out and covered >= coverage * total):
            break
        out.append((key, n))
        covered += n
    return out


def _compact(
    values: np.ndarray,
    *,
    n_knots: int,
    integer: bool,
    lower: float | None = None,
    upper: float | None = None,
) -> Marginal:
    """A small marginal: constant, discrete (<= 16 values) or empirical quantiles.

    The knots are ``n_knots`` evenly spaced probabilities (so interpolating between
    two of them moves the CDF by at most ``1 / (n_knots - 1)``: 0.02 for durations,
    which are often bimodal, cache hit or miss) plus the normal-score tails 2.5, 3,
    3.5 and 4 sigma where the sample resolves them; fewer knots than the model's
    257-knot marginals, so a model with hundreds of nodes stays readable.
    """
    v = values[np.isfinite(values)]
    lo = float(v.min()) if lower is None else lower
    hi = float(v.max()) if upper is None else upper
    distinct, freq = np.unique(v, return_counts=True)
    if distinct.size == 1:
        return Marginal(
            kind="constant",
            value=float(distinct[0]),
            integer=integer,
            lower=lo,
            upper=hi,
            n=int(v.size),
        )
    if distinct.size <= MAX_DISCRETE:
        return Marginal(
            kind="discrete",
            values=[float(x) for x in distinct],
            probs=[float(f"{p:.6g}") for p in freq / freq.sum()],
            integer=integer,
            lower=lo,
            upper=hi,
            n=int(v.size),
        )
    zmax = min(4.0, float(ndtri(1.0 - 0.5 / max(v.size, 2))))
    tails = ndtr(np.arange(2.5, zmax + 1e-9, 0.5))
    probs = np.unique(np.concatenate([np.linspace(0.0, 1.0, n_knots), tails, 1.0 - tails]))
    q = np.maximum.accumulate(np.quantile(v, probs))
    return Marginal(
        kind="empirical",
        probs=[float(f"{p:.6g}") for p in probs],
        quantiles=[float(f"{x:.6g}") for x in q],
        integer=integer,
        lower=lo,
        upper=hi,
        n=int(v.size),
    )


def fit_shapes(df: pl.DataFrame, *, options: FitOptions, seed: int = 0) -> TraceShapes:
    """The trace structure of a spans table (templates, per-node spans); see the module doc.

    ``seed`` seeds the simulations that choose each child's duration coupling.

    Raises
    ------
    ConfigError
        No usable span.
    """
    rng = np.random.default_rng(seed)
    f = forest(df)
    top = top_templates(
        f.keys, coverage=options.span_coverage, max_templates=options.span_max_templates
    )
    total = len(f.keys)
    kept = sum(n for _, n in top)
    aggs = [
        pl.col("duration_us"),
        pl.col("offset").drop_nulls(),
        pl.col("parent_us").drop_nulls(),
        pl.col("z_parent").drop_nulls(),
        pl.corr("z", "z_parent").alias("rho"),
        pl.col("error").mean().alias("error_rate"),
        pl.len().alias("n"),
        pl.col("lead_us").drop_nulls(),
        pl.col("over").mean().alias("over_share"),
        pl.col("early").mean().alias("early_share"),
        pl.max_horizontal("over", "early").mean().alias("outside_share"),
        pl.col("z").filter(pl.col("z_parent").is_not_null()).alias("z_child"),
    ]
    pooled = f.spans.group_by("label").agg(*aggs).sort("label")
    nodes = {row["label"]: _node(row, rng) for row in pooled.iter_rows(named=True)}
    # a label whose spans head subtrees of different sizes (the span that triggers the rest
    # of the request in some traces and not in others) gets one variant per size
    multi = (
        f.spans.group_by("label").agg(pl.col("sub").n_unique().alias("k")).filter(pl.col("k") > 1)
    )
    by_sub = (
        f.spans.join(multi.select("label"), on="label")
        .group_by("label", "sub")
        .agg(*aggs)
        .filter(pl.col("n") >= MIN_VARIANT)
        .sort("label", "sub")
    )
    variants: dict[str, dict[str, SpanNode]] = {}
    for row in by_sub.iter_rows(named=True):
        variants.setdefault(row["label"], {})[str(row["sub"])] = _node(row, rng)
    for label, v in variants.items():
        nodes[label] = nodes[label].model_copy(update={"variants": v})
    ok = (
        df.select(pl.col("status").cast(pl.String))
        .filter(pl.col("status").is_not_null() & (pl.col("status") != ERROR_STATUS))
        .group_by("status")
        .len()
        .sort(["len", "status"], descending=[True, False])
        if "status" in df.columns
        else pl.DataFrame({"status": []}, schema={"status": pl.String})
    )
    used = {lab for key, _ in top for lab in _labels(key)}
    return TraceShapes(
        coverage=options.span_coverage,
        max_templates=options.span_max_templates,
        templates=[
            TraceTemplate(share=float(f"{n / total:.6g}"), count=n, tree=_as_list(to_tree(key)))
            for key, n in top
        ],
        other_share=float(f"{1.0 - kept / total:.6g}"),
        distinct=len(set(f.keys)),
        traces=total,
        nodes={k: v for k, v in nodes.items() if k in used},
        ok_status=ok["status"][0] if ok.height else "unset",
    )


def _node(row: dict[str, Any], rng: np.random.Generator) -> SpanNode:
    """A :class:`SpanNode` from one group of spans (durations, offsets, parents' values).

    A child label whose spans leave their parent's window (start before it or end
    after it) in at least ``FREE_SHARE`` of the cases gets the ``free`` placement:
    its start after the parent's start (``lead_us``, empirical) and its own duration
    (the ``copula`` coupling: a ``ratio`` of the parent's would nest it again).
    """
    d = np.asarray(row["duration_us"], dtype=np.float64)
    o = np.asarray(row["offset"], dtype=np.float64)
    rho = row["rho"]
    rho = float(f"{rho:.4g}") if rho is not None and np.isfinite(rho) else None
    dm = _compact(d, n_knots=DURATION_KNOTS, integer=True)
    over = float(row["over_share"] or 0.0)
    early = float(row["early_share"] or 0.0)
    lead = np.asarray(row["lead_us"], dtype=np.float64)
    free = bool(lead.size) and float(row["outside_share"] or 0.0) >= FREE_SHARE
    ratio: Marginal | None = None
    coupling: Literal["copula", "ratio", "binned"] | None = "copula"
    binned: list[list[float]] | None = None
    if not free:
        ratio, coupling, binned = _coupling(row, dm, rho, rng)
    return SpanNode(
        placement="free" if free else "nested",
        lead_us=_compact(lead, n_knots=DURATION_KNOTS, integer=True) if free else None,
        overhang_share=float(f"{over:.4g}"),
        early_share=float(f"{early:.4g}"),
        binned=binned,
        duration_us=dm,
        coupling=coupling,
        parent_corr=rho,
        ratio=ratio,
        offset=_compact(o, n_knots=OFFSET_KNOTS, integer=False, lower=0.0, upper=1.0)
        if o.size
        else None,
        error_rate=float(row["error_rate"] or 0.0),
        n=int(row["n"]),
    )


def _coupling(
    row: dict[str, Any], dm: Marginal, rho: float | None, rng: np.random.Generator
) -> tuple[Marginal | None, Literal["copula", "ratio", "binned"] | None, list[list[float]] | None]:
    """How a child's duration follows its parent's: ``copula``, ``ratio`` or ``binned``.

    All are simulated on the real parents' durations and scores: ``copula`` draws
    the child's own marginal with a score correlated ``rho`` with the parent's (cut
    at the parent's duration); ``ratio`` draws the child's duration over its parent's
    from their empirical distribution; ``binned`` (children with >= ``BINNED_MIN``
    spans) draws the child's score from its empirical distribution among the
    children whose parent's score fell in the same of ``BINNED_BINS`` equal-probability
    bins (a binned empirical copula: a bimodal child, a cache hit or miss that shows
    in the parent too, keeps its modes with the right parents, where the Gaussian
    copula put long children under short parents). The one whose simulated child
    durations have the smallest KS distance to the real ones wins (a client span and
    the server span it calls: ``ratio``; independent calls of a long request:
    ``copula``); ``binned`` must win by ``BINNED_MARGIN``, so the simpler couplings
    stay where they do as well.
    """

    pd = np.asarray(row["parent_us"], dtype=np.float64)
    zp = np.asarray(row["z_parent"], dtype=np.float64)
    if pd.size == 0 or pd.size != zp.size:
        return None, None, None
    d = np.asarray(row["duration_us"], dtype=np.float64)
    child = d[-pd.size :] if d.size != pd.size else d
    r = np.clip(np.where(pd > 0, child / np.maximum(pd, 1.0), 1.0), 0.0, 1.0)
    rm = _compact(r, n_knots=DURATION_KNOTS, integer=False, lower=0.0, upper=1.0)
    e = rng.standard_normal((4, pd.size))
    sims_a, sims_b = [], []
    c = rho or 0.0
    for k in range(2):
        sims_a.append(np.floor(draw(rm, e[k]) * pd))
        zc = c * zp + np.sqrt(max(0.0, 1.0 - c * c)) * e[k + 2]
        sims_b.append(np.minimum(draw(dm, zc), pd))
    ks_a = ks_two_sample(child, np.concatenate(sims_a))
    ks_b = ks_two_sample(child, np.concatenate(sims_b))
    zc_real = np.asarray(row.get("z_child") or [], dtype=np.float64)
    if zc_real.size == pd.size and pd.size >= BINNED_MIN:
        table = _binned_table(zp, zc_real)
        sims_c = [np.minimum(draw(dm, binned_scores(table, zp, e[k])), pd) for k in range(2)]
        ks_c = ks_two_sample(child, np.concatenate(sims_c))
        if ks_c < min(ks_a, ks_b) - BINNED_MARGIN:
            return None, "binned", table
    return (rm, "ratio", None) if ks_a < ks_b else (None, "copula", None)


def _binned_table(z_parent: np.ndarray, z_child: np.ndarray) -> list[list[float]]:
    """Per equal-probability bin of the parent's score, ``BINNED_KNOTS`` quantiles of the child's."""
    b = _bin_of(z_parent, BINNED_BINS)
    probs = np.linspace(0.0, 1.0, BINNED_KNOTS)
    out = []
    for i in range(BINNED_BINS):
        zc = z_child[b == i]
        q = np.quantile(zc, probs) if zc.size else np.quantile(z_child, probs)
        out.append([float(f"{x:.4g}") for x in np.maximum.accumulate(q)])
    return out


def _bin_of(z_parent: np.ndarray, bins: int) -> np.ndarray:
    """The equal-probability bin (0 .. ``bins - 1``) of each standard-normal parent score."""
    edges = ndtri(np.arange(1, bins) / bins)
    return np.searchsorted(edges, z_parent, side="right")


def binned_scores(
    table: list[list[float]] | np.ndarray, z_parent: np.ndarray, e: np.ndarray
) -> np.ndarray:
    """Child scores of the ``binned`` coupling: the parent bin's quantile function at ``Phi(e)``.

    ``table`` has one row of evenly spaced quantiles per equal-probability bin of the
    parent's score (:attr:`SpanNode.binned`); linear between the quantiles.
    """
    q = np.asarray(table, dtype=np.float64)
    k = q.shape[1]
    pos = ndtr(e) * (k - 1)
    i = np.minimum(pos.astype(np.intp), k - 2)
    frac = pos - i
    rows = q[_bin_of(z_parent, q.shape[0])]
    lo = np.take_along_axis(rows, i[:, None], axis=1)[:, 0]
    hi = np.take_along_axis(rows, i[:, None] + 1, axis=1)[:, 0]
    return lo + frac * (hi - lo)


def _as_list(tree: Any) -> list[Any]:
    return [tree] if isinstance(tree, str) else tree


def _labels(key: Key) -> list[str]:
    out = [key[0]]
    for k in key[1]:
        out.extend(_labels(k))
    return out


@dataclass(frozen=True)
class _Compiled:
    """Templates as arrays: per template, node labels (preorder) and parent positions."""

    cdf: np.ndarray
    labels: list[np.ndarray]
    parents: list[np.ndarray]
    sizes: np.ndarray
    names: list[str]
    duration: list[tuple[Marginal, tuple[np.ndarray, np.ndarray]]]
    offset: list[tuple[Marginal, tuple[np.ndarray, np.ndarray]] | None]
    error: np.ndarray
    rho: np.ndarray
    ratio: list[tuple[Marginal, tuple[np.ndarray, np.ndarray]] | None]
    lead: list[tuple[Marginal, tuple[np.ndarray, np.ndarray]] | None]
    binned: list[np.ndarray | None]
    overhang: np.ndarray
    early: np.ndarray


def _compile(shapes: TraceShapes) -> _Compiled:
    specs: list[SpanNode] = []
    names: list[str] = []
    index: dict[tuple[str, int], int] = {}
    labels: list[np.ndarray] = []
    parents: list[np.ndarray] = []
    for t in shapes.templates:
        lab: list[str] = []
        par: list[int] = []
        stack: list[tuple[Any, int]] = [(t.tree, -1)]
        while stack:  # preorder: a parent comes before its children
            node, p = stack.pop()
            here = len(lab)
            lab.append(node if isinstance(node, str) else node[0])
            par.append(p)
            if not isinstance(node, str):
                stack.extend((c, here) for c in reversed(node[1:]))
        sub = np.ones(len(lab), dtype=np.int64)
        for j in range(len(lab) - 1, 0, -1):  # subtree sizes, children before parents
            sub[par[j]] += sub[j]
        ids = []
        for name, size in zip(lab, sub.tolist(), strict=True):
            key = (name, size if str(size) in shapes.nodes[name].variants else 0)
            if key not in index:
                node = shapes.nodes[name]
                index[key] = len(specs)
                specs.append(node.variants[str(size)] if key[1] else node)
                names.append(name)
            ids.append(index[key])
        labels.append(np.asarray(ids, dtype=np.int64))
        parents.append(np.asarray(par, dtype=np.int64))
    shares = np.asarray([t.share for t in shapes.templates], dtype=np.float64)
    cdf = np.cumsum(shares) / shares.sum()
    nodes = specs
    return _Compiled(
        cdf=cdf,
        labels=labels,
        parents=parents,
        sizes=np.asarray([x.size for x in labels], dtype=np.int64),
        names=names,
        duration=[(n.duration_us, knots(n.duration_us)) for n in nodes],
        rho=np.asarray([n.parent_corr or 0.0 for n in nodes]),
        ratio=[
            (n.ratio, knots(n.ratio)) if n.coupling == "ratio" and n.ratio is not None else None
            for n in nodes
        ],
        offset=[(n.offset, knots(n.offset)) if n.offset is not None else None for n in nodes],
        error=np.asarray([n.error_rate for n in nodes]),
        overhang=np.asarray([n.overhang_share for n in nodes]),
        early=np.asarray([n.early_share for n in nodes]),
        binned=[
            np.asarray(n.binned, dtype=np.float64)
            if n.coupling == "binned" and n.binned is not None
            else None
            for n in nodes
        ],
        lead=[
            (n.lead_us, knots(n.lead_us))
            if n.placement == "free" and n.lead_us is not None
            else None
            for n in nodes
        ],
    )


def span_chunks(
    model: WorkloadModel,
    arrivals: Any,
    streams: Any,
    *,
    duration_s: float,
    chunk_rows: int,
) -> Iterator[pl.DataFrame]:
    """Synthetic spans, about ``chunk_rows`` per chunk, traces in arrival order.

    Per trace: a template (stream ``templates``), then per node, in the template's
    preorder, one normal score for its duration (``span.duration``), one for its
    offset (``span.offset``) and an error draw (``span.error``), in trace order, so
    the output does not depend on the chunk size. A child's score is coupled to its
    parent's (``z = rho z_parent + sqrt(1 - rho^2) e``, a Gaussian copula along the
    tree edge), or drawn from its parent's bin (``binned``), or, for nodes fitted
    with the ``ratio`` coupling, its duration is a
    drawn share of its parent's. A nested child drawn longer than its parent swaps durations with it (the
    parent, cut at its own parent's end, takes the longer one: client and server
    spans of one call have nearly the same duration, and cutting the child instead
    shifted every such chain down), and it starts at ``parent start + offset x
    (parent duration - its duration)``: it lies inside its parent's window,
    and a slow trace is slow all the way down. A ``free`` child keeps its drawn
    duration and starts at ``parent start + lead`` (the offset score drawn through
    ``lead_us``); the longest ``overhang_share`` of its spans (by duration score) are
    moved, if needed, to end after the parent's end, the others to end by it, by an
    early start only when the source's ``early_share`` is >= 0.5 (else it stays and
    overhangs). No span starts before time 0.
    """
    assert model.traces is not None
    c = _compile(model.traces)
    tpl_rng = streams.get("templates")
    d_rng, o_rng, e_rng = (streams.get(n) for n in ("span.duration", "span.offset", "span.error"))
    mean_size = float(np.sum(np.diff(c.cdf, prepend=0.0) * c.sizes))
    per = max(1, int(chunk_rows // max(mean_size, 1.0)))
    service = pl.Series([n.split(SEP, 1)[0] for n in c.names], dtype=pl.String)
    operation = pl.Series(
        [n.split(SEP, 1)[1] if SEP in n else "" for n in c.names], dtype=pl.String
    )
    ok = model.traces.ok_status
    done = 0
    while True:
        t = arrivals.next(per)
        cut = int(np.searchsorted(t, duration_s, side="left"))
        t = t[:cut]
        m = t.size
        if m:
            k = np.minimum(np.searchsorted(c.cdf, tpl_rng.random(m), side="right"), c.cdf.size - 1)
            sizes = c.sizes[k]
            total = int(sizes.sum())
            base = np.concatenate([[0], np.cumsum(sizes)[:-1]])
            zd = d_rng.standard_normal(total)
            zo = o_rng.standard_normal(total)
            ue = e_rng.random(total)
            start = np.empty(total, dtype=np.int64)
            dur = np.empty(total, dtype=np.int64)
            lab = np.empty(total, dtype=np.int64)
            node = np.empty(total, dtype=np.int64)
            par = np.empty(total, dtype=np.int64)
            trace = np.repeat(np.arange(m, dtype=np.int64) + done, sizes)
            t_us = np.floor(t * 1e6).astype(np.int64)
            for j in np.unique(k).tolist():
                rows = np.flatnonzero(k == j)
                labels, parents = c.labels[j], c.parents[j]
                pos = base[rows][:, None] + np.arange(labels.size)[None, :]
                st = np.empty(pos.shape, dtype=np.int64)
                du = np.empty(pos.shape, dtype=np.int64)
                zz = np.empty(pos.shape)
                for col in range(labels.size):
                    li = int(labels[col])
                    p = int(parents[col])
                    z = zd[pos[:, col]]
                    binned = c.binned[li]
                    if p >= 0 and binned is not None:  # the parent's bin's own scores
                        z = binned_scores(binned, zz[:, p], z)
                    elif p >= 0:  # Gaussian coupling with the parent's duration score
                        rho = float(c.rho[li])
                        z = rho * zz[:, p] + np.sqrt(max(0.0, 1.0 - rho * rho)) * z
                    zz[:, col] = z
                    marg, table = c.duration[li]
                    ratio = c.ratio[li]
                    if p >= 0 and ratio is not None:  # a share of the parent's duration
                        zz[:, col] = zz[:, p]
                        r = np.clip(draw(ratio[0], zd[pos[:, col]], ratio[1]), 0.0, 1.0)
                        d = np.floor(r * du[:, p]).astype(np.int64)
                    else:
                        d = np.maximum(draw(marg, z, table), 0.0).astype(np.int64)
                    if p < 0:
                        st[:, col] = t_us[rows]
                        du[:, col] = d
                        continue
                    lead = c.lead[li]
                    if lead is not None:  # free: its own start after the parent's and its
                        # own duration, which may leave the parent's window
                        lg = draw(lead[0], zo[pos[:, col]], lead[1]).astype(np.int64)
                        pd = du[:, p]
                        # the longest overhang_share of its spans end after the parent
                        want = ndtr(zz[:, col]) > 1.0 - c.overhang[li]
                        inside = np.minimum(lg, pd - d)
                        # an early start only where the source shows them; else it overhangs
                        keep = (inside >= 0) | (c.early[li] >= 0.5)
                        lg = np.where(want, np.maximum(lg, pd - d + 1), np.where(keep, inside, lg))
                        st[:, col] = np.maximum(st[:, p] + lg, 0)
                        du[:, col] = d
                        continue
                    off = c.offset[li]
                    g = draw(off[0], zo[pos[:, col]], off[1]) if off is not None else 0.0
                    pd = du[:, p]
                    over = d > pd
                    if over.any():  # swap: the parent takes the longer duration (within its
                        # own parent's window), the child the shorter
                        gp = int(parents[p])
                        nested = gp >= 0 and c.lead[int(labels[p])] is None
                        cap = st[:, gp] + du[:, gp] - st[:, p] if nested else d
                        du[:, p] = np.where(over, np.minimum(d, cap), pd)
                        d = np.where(over, pd, d)
                        pd = du[:, p]
                    st[:, col] = st[:, p] + np.floor(np.clip(g, 0.0, 1.0) * (pd - d)).astype(
                        np.int64
                    )
                    du[:, col] = d
                flat = pos.ravel()
                start[flat] = st.ravel()
                dur[flat] = du.ravel()
                lab[flat] = np.tile(labels, rows.size)
                node[flat] = np.tile(np.arange(labels.size), rows.size)
                par[flat] = np.tile(parents, rows.size)
            err = ue < c.error[lab]
            yield _span_frame(trace, node, par, lab, start, dur, err, service, operation, ok)
            done += m
        if cut < per:
            return


def _span_frame(
    trace: np.ndarray,
    node: np.ndarray,
    par: np.ndarray,
    lab: np.ndarray,
    start: np.ndarray,
    dur: np.ndarray,
    err: np.ndarray,
    service: pl.Series,
    operation: pl.Series,
    ok: str,
) -> pl.DataFrame:
    """The canonical spans rows: ids are ``<trace:016x>`` and ``<trace:016x>-<node>``."""
    frame = pl.DataFrame(
        {
            "_tr": trace,
            "_node": node,
            "_par": par,
            "_lab": lab,
            "start_us": start,
            "duration_us": dur,
            "_err": err,
        }
    )
    trace_id = pl.col("_tr").cast(pl.String).str.zfill(16)
    out = frame.select(
        trace_id.alias("trace_id"),
        pl.concat_str([trace_id, pl.col("_node").cast(pl.String)], separator="-").alias("span_id"),
        pl.when(pl.col("_par") >= 0)
        .then(pl.concat_str([trace_id, pl.col("_par").cast(pl.String)], separator="-"))
        .otherwise(None)
        .alias("parent_id"),
        pl.col("_lab"),
        "start_us",
        "duration_us",
        pl.when(pl.col("_err")).then(pl.lit(ERROR_STATUS)).otherwise(pl.lit(ok)).alias("status"),
    )
    idx = out["_lab"]
    out = out.with_columns(
        service.gather(idx).alias("service"), operation.gather(idx).alias("operation")
    ).drop("_lab")
    return canonical(out.lazy(), "spans").collect()


def _share_row(
    stat: str,
    service: str,
    col: str,
    what: str,
    dr: pl.DataFrame,
    ds: pl.DataFrame,
    share_abs: float,
) -> tuple[Any, ...] | None:
    """One ``overhang_share`` / ``early_share`` row of a service (None: no real child span).

    The share of the service's child spans with ``col`` set, real vs synthetic; the
    threshold is ``share_abs`` or the 95 % two-proportion bound, whichever is larger.
    """
    from fleetlab.workload._compare import _judge

    a = dr.filter((pl.col("service") == service) & pl.col(col).is_not_null())[col].to_numpy()
    b = ds.filter((pl.col("service") == service) & pl.col(col).is_not_null())[col].to_numpy()
    if a.size == 0:
        return None
    pr = float(a.mean())
    if b.size == 0:
        return (stat, service, pr, None, None, share_abs, "fail", "no synthetic child spans")
    ps = float(b.mean())
    p = (pr * a.size + ps * b.size) / (a.size + b.size)
    lim = max(share_abs, 1.96 * float(np.sqrt(max(p * (1 - p), 1e-12) * (1 / a.size + 1 / b.size))))
    d = abs(pr - ps)
    note = f"share of child spans that {what}; threshold max(share_abs, 95 % two-proportion bound)"
    return (stat, service, pr, ps, d, lim, _judge(d, lim), note)


def span_rows(
    real: pl.DataFrame,
    synth: pl.DataFrame,
    th: Any,
    rows: list[dict[str, Any]],
    curves: dict[str, pl.DataFrame],
    *,
    top_services: int = 8,
) -> None:
    """The spans statistics of :func:`fleetlab.workload.compare` (appended to ``rows``).

    ``template_tv``: total variation between template frequencies over the real
    trace's top templates (coverage 0.99, at most 200) plus one "other" class;
    ``trace_size`` / ``trace_depth``: KS of spans per trace and tree depth;
    ``service_duration``: KS of span durations per service, for the services with
    the most spans (up to ``top_services``, each with >= 1 % of the spans);
    ``overhang_share`` / ``early_share`` per such service: the share of its child
    spans that end after their parent's end / start before their parent's start
    (clock skew, asynchronous work), judged by ``share_abs`` or the 95 %
    two-proportion bound; ``error_rate``: share of spans with status error.
    """
    from fleetlab.workload._compare import _judge, _row

    fr, fs = forest(real), forest(synth)
    top = top_templates(fr.keys, coverage=0.99, max_templates=200)
    known = {k: i for i, (k, _) in enumerate(top)}

    def freq(keys: list[Key]) -> np.ndarray:
        idx = np.asarray([known.get(k, len(top)) for k in keys], dtype=np.int64)
        return np.bincount(idx, minlength=len(top) + 1) / max(len(keys), 1)

    pr, ps = freq(fr.keys), freq(fs.keys)
    tv = 0.5 * float(np.abs(pr - ps).sum())
    rows.append(
        _row(
            "template_tv",
            None,
            float(pr[-1]),
            float(ps[-1]),
            tv,
            th.template_tv,
            _judge(tv, th.template_tv),
            f"{len(top)} real templates + other; real/synth show the other share",
        )
    )
    curves["templates"] = pl.DataFrame(
        {"rank": np.arange(1, pr.size + 1), "real_share": pr, "synth_share": ps}
    )
    n, m = len(fr.keys), len(fs.keys)
    limit = max(th.ks, ks_critical(n, m))
    note = f"threshold: max(ks, 5 % KS critical value for {n} / {m} traces)"
    for stat, a, b in (("trace_size", fr.size, fs.size), ("trace_depth", fr.depth, fs.depth)):
        d = ks_two_sample(a.astype(np.float64), b.astype(np.float64))
        rows.append(
            _row(stat, None, float(np.mean(a)), float(np.mean(b)), d, limit, _judge(d, limit), note)
        )
    svc = pl.col("label").str.split_exact(SEP, 1).struct.field("field_0").alias("service")
    dr = fr.spans.select(svc, "duration_us", "over", "early")
    ds = fs.spans.select(svc, "duration_us", "over", "early")
    ranked = (
        dr.group_by("service")
        .len()
        .filter(pl.col("len") >= 0.01 * dr.height)
        .sort(["len", "service"], descending=[True, False])
        .head(top_services)
    )
    for name in ranked["service"].to_list():
        a = dr.filter(pl.col("service") == name)["duration_us"].to_numpy().astype(np.float64)
        b = ds.filter(pl.col("service") == name)["duration_us"].to_numpy().astype(np.float64)
        if b.size == 0:
            rows.append(
                _row("service_duration", name, a.size, 0, None, th.ks, "fail", "no synthetic spans")
            )
            continue
        lim = max(th.ks, ks_critical(a.size, b.size))
        d = ks_two_sample(a, b)
        rows.append(
            _row(
                "service_duration",
                name,
                float(np.median(a)),
                float(np.median(b)),
                d,
                lim,
                _judge(d, lim),
                f"KS; real/synth show medians; threshold max(ks, 5 % critical value for "
                f"{a.size} / {b.size} spans)",
            )
        )
        for stat, col, what in (
            ("overhang_share", "over", "end after their parent's end"),
            ("early_share", "early", "start before their parent's start"),
        ):
            row = _share_row(stat, name, col, what, dr, ds, th.share_abs)
            if row is not None:
                rows.append(_row(*row))
    er = float(np.mean(fr.spans["error"].to_numpy())) if fr.spans.height else 0.0
    es = float(np.mean(fs.spans["error"].to_numpy())) if fs.spans.height else 0.0
    rows.append(
        _row(
            "error_rate",
            None,
            er,
            es,
            abs(er - es),
            th.error_rate,
            _judge(abs(er - es), th.error_rate),
            "share of spans with status error",
        )
    )
