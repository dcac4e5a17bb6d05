"""The generative workload model: a small, versioned, human-readable YAML/JSON file.

A model has four parts (see docs/workload.md for the reasoning):

* ``arrival``: a piecewise-constant rate curve over one period (the observed trace, or
  its daily/weekly profile when the trace is long; times a per-day trend when the load
  drifts) times a Gamma renewal process in operational time, whose coefficient of
  variation carries the short-term burstiness (or, as an option, a Markov-modulated
  Poisson process); with batch arrivals, each arrival instant brings a batch of events;
* ``fields``: one marginal per size field (a parametric family chosen by AIC when it
  passes the KS threshold, else an empirical quantile function);
* ``copula``: a Gaussian copula (a correlation matrix of normal scores) for dependence;
* ``entity``: per-entity structure (apps, functions, tenants, clients): popularity
  shares that follow the observed skew with a Zipf tail, and the biggest entities'
  own size marginals.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import polars as pl
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fleetlab.errors import ConfigError, DataNotFoundError, FleetlabError

SCHEMA_VERSION = 1

Family = Literal["lognormal", "gamma", "weibull", "burr12", "exponential"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Marginal(_Frozen):
    """The distribution of one numeric field.

    ``kind`` says how to sample: ``parametric`` (``family`` with scipy-style ``params``:
    shapes, ``loc``, ``scale``), ``empirical`` (linear interpolation between
    ``quantiles`` at probabilities ``probs``), ``discrete`` (``values`` with point
    probabilities ``probs``: columns with few distinct values such as cores, memory
    sizes or GPU counts) or ``constant`` (always ``value``).
    Values are clipped to ``[lower, upper]`` (``upper`` None: unbounded), integers are rounded, and a fraction
    ``zero_fraction`` of draws is exactly 0 (parametric families describe x > 0 only).
    """

    kind: Literal["parametric", "empirical", "discrete", "constant"]
    family: Family | None = None
    params: dict[str, float] = Field(default_factory=dict)
    probs: list[float] | None = None
    quantiles: list[float] | None = None
    value: float | None = None
    values: list[float] | None = None
    zero_fraction: float = Field(0.0, ge=0.0, le=1.0)
    integer: bool = False
    lower: float = 0.0
    upper: float | None = Field(None, description="clip draws here (None: no upper bound)")
    ks: float | None = Field(
        None, description="KS distance of this marginal to the data it was fitted on"
    )
    n: int = Field(0, ge=0, description="values it was fitted on")


class RateCurve(_Frozen):
    """Piecewise-constant arrival rate (events/s) over one period, repeated cyclically.

    ``levels[i]`` is the rate in ``[i * bin_s, (i + 1) * bin_s)`` of the period. The
    period is the observed trace for short traces, one day (traces of 2+ days) or one
    week (14+ days), in which case the levels are the mean over the observed cycles.

    ``trend`` (traces of 14+ days whose load drifts beyond the renewal noise, e.g. the
    growing Alibaba GPU 2023 cluster): a multiplicative long-term level per
    ``trend_bin_s`` step (one day), a 7-day moving average of the observed over the
    expected counts, with unit mean over the trace. The rate at ``t`` is
    ``levels[(t // bin_s) % len(levels)] * trend[t // trend_bin_s]``; after the trace's
    end the last level is held (no extrapolation of growth), so a longer synthetic
    trace repeats the period at the final load.
    """

    bin_s: float = Field(gt=0)
    period_s: float = Field(gt=0)
    levels: list[float]
    mean_rate_per_s: float = Field(ge=0)
    trend_bin_s: float | None = Field(
        None, gt=0, description="length of one trend step (a day, in whole bins)"
    )
    trend: list[float] | None = Field(
        None,
        description="slow level: factor on the levels in [i * trend_bin_s, (i + 1) * trend_bin_s)"
        " from the trace start; the last factor is held after the end",
    )

    @field_validator("levels")
    @classmethod
    def _non_negative(cls, v: list[float]) -> list[float]:
        if not v or min(v) < 0:
            raise ValueError("levels must be a non-empty list of rates >= 0")
        return v

    @field_validator("trend")
    @classmethod
    def _trend_non_negative(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or min(v) < 0):
            raise ValueError("trend must be a non-empty list of factors >= 0")
        return v

    @model_validator(mode="after")
    def _trend_bin(self) -> RateCurve:
        if (self.trend is None) != (self.trend_bin_s is None):
            raise ValueError("trend and trend_bin_s go together (both set or both null)")
        if self.trend_bin_s is not None:
            steps = self.trend_bin_s / self.bin_s
            if abs(steps - round(steps)) > 1e-9 or round(steps) < 1:
                raise ValueError(
                    f"trend_bin_s must be a whole number of bins of {self.bin_s:g} s "
                    f"(found {self.trend_bin_s:g} s)"
                )
        return self


class Renewal(_Frozen):
    """The burstiness component: a renewal process in operational time.

    Inter-arrival times, after the rate curve is divided out, have mean 1 and this
    ``cv``: Gamma (shape = 1 / cv^2) when that passes the KS threshold, else the
    empirical unit-mean gap distribution ``gaps`` (e.g. batch submissions: many
    near-zero gaps and some long ones, which no Gamma matches). cv = 1 is Poisson-like;
    cv > 1 is burstier. ``ks`` is the chosen distribution's KS distance to the gaps.
    """

    family: Literal["gamma", "empirical"] = "gamma"
    cv: float = Field(gt=0)
    ks: float | None = None
    gamma_ks: float | None = None
    gaps: Marginal | None = None


class Mmpp(_Frozen):
    """Markov-modulated Poisson burstiness in operational time (2..4 hidden states).

    State ``i`` emits events at ``rates[i]`` per unit of operational time (one unit is
    one expected event, so the stationary mean of the rates is 1); the hidden state
    jumps with the generator ``generator`` (rows sum to 0, per unit of operational
    time). Fitted by EM on counts in windows of ``window`` units; ``bic`` of that fit.
    """

    rates: list[float]
    generator: list[list[float]]
    window: float = Field(gt=0)
    bic: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> Mmpp:
        k = len(self.rates)
        if not 1 <= k <= 8 or min(self.rates) < 0:
            raise ValueError(f"rates must be 1..8 rates >= 0 (found {k})")
        if len(self.generator) != k or any(len(r) != k for r in self.generator):
            raise ValueError(f"generator must be a {k} x {k} matrix")
        for i, row in enumerate(self.generator):
            if any(x < 0 for j, x in enumerate(row) if j != i) or abs(sum(row)) > 1e-6 * (
                1 + abs(row[i])
            ):
                raise ValueError(
                    f"generator row {i} must have off-diagonal entries >= 0 and sum to 0"
                )
        return self


class Band(_Frozen):
    """One rate-level band of a level-dependent renewal (see :class:`Arrival`).

    A rate-curve bin belongs to the band when its rate (``levels x trend``, unscaled,
    arrival instants per s) is below ``upper`` and at or above the previous band's
    ``upper`` (the top band has ``upper`` None). The band's arrival instants form their
    own renewal process in *band-local* operational time (the expected events of the
    band's bins laid end to end, skipping the other bands): unit-mean gaps ``renewal``
    (Gamma or empirical, as the pooled one) divided by ``factor``, the band's instants
    per expected instant (the curve's calibration in that band: Alibaba GPU 2025 DLRM
    has 1.7x the curve's events in its quietest quarter, 0.8x in its busiest).
    """

    upper: float | None = Field(
        None, ge=0, description="rate (instants/s) below which a bin is in this band"
    )
    factor: float = Field(gt=0, description="instants per expected instant in the band")
    renewal: Renewal
    events: int = Field(0, ge=0, description="arrival instants of the trace in the band")


class Cluster(_Frozen):
    """Events fanned out in clusters: a Neyman-Scott-style process (see :class:`Arrival`).

    Cluster *instants* form a renewal process (``renewal``: unit-mean gaps in the
    operational time of the arrival's rate curve divided by the mean of ``sizes``);
    each instant brings ``sizes`` events (an integer marginal >= 1), the first at the
    instant and each next one ``spread`` seconds after the one before. Invocations
    fanned out by one trigger (the Azure Functions 2021 sample: 114 of its 198 gaps are
    under 0.1 s and come in runs, which a renewal's independent gaps cannot give).
    ``scale`` multiplies the instants; sizes and spread are kept.
    """

    sizes: Marginal
    spread: Marginal
    renewal: Renewal
    threshold: float = Field(
        gt=0, description="operational-time gap (unit mean) under which events were joined"
    )


class Arrival(_Frozen):
    """Arrival process: rate curve times renewal burstiness (times batch sizes).

    ``quantum_s``: the source trace's timestamps are on a grid of this spacing (batches,
    as in the Mooncake trace); the process is fitted on times spread uniformly within
    each grid step and synthetic times are floored back onto the grid.

    ``batch``: a compound process. The rate curve and renewal then describe arrival
    *instants* (distinct timestamps) and each instant brings ``batch`` events (an
    integer marginal >= 1), all at the same time: jobs whose tasks are created
    together (Alibaba 2017 tasks, Alibaba GPU 2025 DLRM instances). Fitted when the
    trace has far fewer distinct timestamps than its rate and grid would give (see
    docs/workload.md); ``scale`` multiplies the instants, not the batch sizes.

    ``process``: ``renewal`` (the default) or ``mmpp`` (the :class:`Mmpp` replaces the
    renewal in operational time; the renewal is still stored, for reports).

    ``cluster``: a cluster process (:class:`Cluster`, Neyman-Scott style) replaces the
    renewal for synthesis: ``rate`` and ``renewal`` still describe the events (the
    renewal is kept for reports), the cluster's instants follow ``rate`` divided by the
    mean cluster size. None: no clusters.

    ``bands``: a rate-level-dependent renewal (2..4 :class:`Band` by ascending rate;
    ``process`` must be ``renewal``): each band of rate-curve bins has its own gap
    distribution and intensity factor, for traces that are burstier in their busy hours
    than in their quiet ones (see docs/workload.md). None: one renewal for all bins.
    """

    rate: RateCurve
    renewal: Renewal
    quantum_s: float | None = Field(None, gt=0)
    batch: Marginal | None = None
    process: Literal["renewal", "mmpp"] = Field(
        "renewal", description="which burstiness component synthesis uses"
    )
    mmpp: Mmpp | None = None
    bands: list[Band] | None = Field(
        None, description="rate-level bands with their own renewal (None: one renewal)"
    )
    cluster: Cluster | None = Field(
        None, description="events fanned out in clusters of short gaps (None: no clusters)"
    )

    @model_validator(mode="after")
    def _process(self) -> Arrival:
        if self.process == "mmpp" and self.mmpp is None:
            raise ValueError("process 'mmpp' needs the mmpp parameters")
        if self.cluster is not None and (
            self.batch is not None or self.bands is not None or self.process != "renewal"
        ):
            raise ValueError(
                "cluster excludes batch, bands and process 'mmpp' (it is their alternative)"
            )
        if self.bands is not None:
            if self.process != "renewal":
                raise ValueError("bands need process 'renewal' (found 'mmpp')")
            if not 2 <= len(self.bands) <= 4:
                raise ValueError(f"bands must be 2..4 bands (found {len(self.bands)})")
            uppers = [b.upper for b in self.bands]
            if uppers[-1] is not None or any(u is None for u in uppers[:-1]):
                raise ValueError("every band but the last needs 'upper'; the last has none")
            inner = [float(u) for u in uppers[:-1] if u is not None]
            if sorted(set(inner)) != inner:
                raise ValueError(f"band 'upper' rates must increase (found {inner})")
        return self


class Copula(_Frozen):
    """Gaussian copula over ``fields``: the correlation matrix of their normal scores."""

    fields: list[str]
    correlation: list[list[float]]


class Entity(_Frozen):
    """Per-entity structure: who sends the events, and how skewed that is.

    ``shares`` are the load shares of the ``len(shares)`` most popular entities (rank
    order); the remaining ``count - len(shares)`` share ``tail_share`` along a Zipf
    curve with ``zipf_exponent``. ``fields`` gives the biggest entities their own size
    marginals (by rank, as a string key) and the others ``fields["rest"]`` (fitted on
    the remaining events); without it every entity uses the model's pooled marginals.
    """

    column: str
    count: int = Field(ge=1)
    shares: list[float]
    tail_share: float = Field(0.0, ge=0.0, le=1.0)
    zipf_exponent: float | None = None
    parent_column: str | None = None
    parents: list[int] | None = Field(
        None, description="parent index (e.g. app) of each explicit entity"
    )
    fields: dict[str, dict[str, Marginal]] = Field(default_factory=dict)
    endpoints: list[str] | None = Field(
        None,
        description="flows: endpoint (service/host) names by rank, synthetic (svc-0, svc-1, ...)",
    )
    pairs: list[list[int]] | None = Field(
        None, description="flows: [src, dst] indices into endpoints of each explicit pair"
    )
    ports: list[int | None] | None = Field(
        None, description="flows: the most frequent port of each explicit pair (null: none seen)"
    )

    @model_validator(mode="after")
    def _pairs(self) -> Entity:
        if self.pairs is None:
            return self
        if self.endpoints is None or len(self.pairs) != len(self.shares):
            raise ValueError("pairs need endpoints and one [src, dst] per share")
        n = len(self.endpoints)
        for i, p in enumerate(self.pairs):
            if len(p) != 2 or not all(0 <= x < n for x in p):
                raise ValueError(f"pairs[{i}] must be [src, dst] indices below {n} (found {p})")
        if self.ports is not None and len(self.ports) != len(self.pairs):
            raise ValueError("ports must have one entry per pair")
        return self


class SpanNode(_Frozen):
    """What a span of one ``service:operation`` looks like, wherever it sits in a tree.

    ``duration_us``: its duration marginal; as a child, ``coupling`` says how its
    duration follows its parent's, the better of two on the source (simulated, by KS):
    ``copula``: its own marginal with a normal score correlated ``parent_corr`` with
    the parent's (a Gaussian copula along the tree edge); ``ratio``: the ``ratio``
    marginal of its duration over its parent's; ``binned``: its own marginal, with a
    score drawn from ``binned``, the quantiles of its score among the source's
    children whose parent's score fell in the same equal-probability bin (a binned
    empirical copula: a bimodal child keeps each mode with the parents it had). ``offset``: where it starts within the parent's slack
    (parent duration minus its own; 0: with the parent, 1: ending with it), empirical
    in [0, 1] (both None for spans only seen as roots); ``error_rate``: the share of
    its spans with status ``error``; ``n``: spans it was fitted on. ``variants``:
    the same, fitted per subtree size, for a label whose spans head subtrees of
    different sizes (in DeathStarBench's compose-review, whichever upload finishes last
    stores the review, so its span is long in those traces only); synthesis uses the
    variant of the template node's subtree size when there is one.

    ``placement``: ``nested`` (a child lies inside its parent's window, at ``offset``)
    or ``free``, for a label whose spans often leave their parent's window in the
    source (clock skew between hosts, asynchronous work): the child starts ``lead_us``
    after its parent's start (negative: before it) and keeps its own drawn duration,
    so it may end after its parent. ``overhang_share`` and ``early_share``: the share
    of its spans that end after their parent's end / start before their parent's
    start in the source (what ``free`` reproduces; both 0 for nested sources).
    """

    duration_us: Marginal
    coupling: Literal["copula", "ratio", "binned"] | None = Field(
        None, description="how a child's duration follows its parent's (None: only a root)"
    )
    parent_corr: float | None = Field(None, ge=-1.0, le=1.0)
    ratio: Marginal | None = Field(
        None, description="ratio coupling: the child's duration over its parent's, in [0, 1]"
    )
    binned: list[list[float]] | None = Field(
        None,
        description="binned coupling: per equal-probability bin of the parent's duration "
        "score, evenly spaced quantiles of the child's score",
    )
    offset: Marginal | None = None
    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    n: int = Field(0, ge=0)
    placement: Literal["nested", "free"] = Field(
        "nested", description="nested: inside the parent's window; free: start at lead_us"
    )
    lead_us: Marginal | None = Field(
        None, description="free placement: start minus the parent's start, microseconds"
    )
    overhang_share: float = Field(0.0, ge=0.0, le=1.0)
    early_share: float = Field(0.0, ge=0.0, le=1.0)
    variants: dict[str, SpanNode] = Field(
        default_factory=dict,
        description="by subtree size (spans under and including it): the node where that size "
        "was seen in >= 30 spans and the label heads subtrees of several sizes",
    )

    @model_validator(mode="after")
    def _placement(self) -> SpanNode:
        if self.placement == "free" and self.lead_us is None:
            raise ValueError("placement 'free' needs lead_us (the start after the parent's)")
        if self.coupling == "binned" and (
            not self.binned
            or len({len(r) for r in self.binned}) != 1
            or len(self.binned[0]) < 2
            or any(list(r) != sorted(r) for r in self.binned)
        ):
            raise ValueError(
                "coupling 'binned' needs binned: one non-decreasing list of >= 2 quantiles "
                "per parent bin, all of one length"
            )
        return self


class TraceTemplate(_Frozen):
    """One call-tree shape and how often traces have it.

    ``tree`` is a nested list: ``[label, child, child, ...]``, where a label is
    ``"service:operation"`` and a child is again such a list, or the bare label string
    for a leaf. Children are in canonical order (sorted by their own canonical form).
    """

    share: float = Field(ge=0.0, le=1.0)
    count: int = Field(ge=0)
    tree: list[Any]

    @field_validator("tree")
    @classmethod
    def _tree(cls, v: list[Any]) -> list[Any]:
        def check(node: Any, where: str) -> None:
            if isinstance(node, str):
                return
            if not isinstance(node, list) or not node or not isinstance(node[0], str):
                raise ValueError(
                    f"{where}: expected a label string or [label, children...] "
                    f"(found {_short(node)})"
                )
            for i, child in enumerate(node[1:]):
                check(child, f"{where}[{i + 1}]")

        check(v, "tree")
        return v


class TraceShapes(_Frozen):
    """The structure of traces in a spans model (see docs/workload.md, "Spans").

    ``templates``: the most frequent call-tree shapes, the fewest that cover
    ``coverage`` of the traces (at most ``max_templates``); synthesis draws only these,
    with their shares renormalised. ``other_share``: the share of the source's traces
    whose shape is not kept; ``distinct``: how many shapes the source had; ``traces``:
    how many traces. ``nodes``: per ``service:operation`` durations, start offsets and
    error rates. ``ok_status``: the status written on spans that do not fail (the
    source's most common non-error status).
    """

    coverage: float = Field(gt=0.0, le=1.0)
    max_templates: int = Field(ge=1)
    templates: list[TraceTemplate] = Field(min_length=1)
    other_share: float = Field(0.0, ge=0.0, le=1.0)
    distinct: int = Field(ge=1)
    traces: int = Field(ge=1)
    nodes: dict[str, SpanNode]
    ok_status: str = "unset"

    @model_validator(mode="after")
    def _labels(self) -> TraceShapes:
        def labels(node: Any) -> list[str]:
            if isinstance(node, str):
                return [node]
            out = [node[0]]
            for c in node[1:]:
                out.extend(labels(c))
            return out

        for i, t in enumerate(self.templates):
            missing = [x for x in labels(t.tree) if x not in self.nodes]
            if missing:
                raise ValueError(f"templates[{i}] uses labels with no node entry: {missing[:3]}")
        return self


class UsageClass(_Frozen):
    """One class of VMs with a similar utilization (usage models, see docs/workload.md).

    CPU is modelled in logit space, ``x = logit(cpu / 100)``, so synthetic values stay
    in (0, 100). A VM of the class is ``x_t = mu + a * profile[t] + r_t``: its level
    ``mu``, its amplitude ``a`` of the class profile, and a residual ``r`` with
    stationary standard deviation ``sd``, the sum of two AR(1) processes: a fast one
    (coefficient ``phi``) and a slow one (``phi_slow``, a ``slow_share`` of the
    variance), so the ACF is ``(1 - w) phi^k + w phi_slow^k`` (an ARMA(2, 1)).
    The level of a VM is drawn from a Gaussian kernel density over ``level_names``:
    one of ``level_points`` (per-VM parameter vectors of up to 256 source VMs, not
    their samples) plus Gaussian noise with ``bandwidth^2 x level_cov``, shrunk towards
    ``level_mean`` by ``sqrt(1 + bandwidth^2)`` so the spread stays; without points,
    from the Gaussian ``level_mean``, ``level_cov`` alone. ``level_names`` are (``mu``,
    ``log_sd``, ``amp``, optionally ``slow_share``: the VM's own share of the slow AR(1),
    which then replaces the class's, and, per optional column ``cpu_max`` / ``cpu_min``,
    ``log_gap.COL`` and ``log_gap_cv.COL``: the log of the scale and of the CV of a VM's
    gap ``|logit(COL) - logit(cpu_avg)|``, drawn lognormal), i.e. the level marginals with their
    dependence. ``mu``, ``log_sd`` and the gap scale are calibrated at fit time so that
    the model reproduces each source VM's mean CPU, P95 and mean ``COL`` in CPU space
    (not the mean logit: the logit is not linear). ``daily`` is the class's mean time-of-day profile (one value per sample
    interval of a day, logit units around 0) and ``weekly`` one offset per day of the
    week (traces of 14+ days). ``gap_corr``: per optional column, the correlation of a
    sample's log gap with its residual ``r_t / sd`` (spikes widen the avg-max gap).
    """

    share: float = Field(ge=0, le=1)
    vms: int = Field(ge=0, description="source VMs in the class")
    level_names: list[str] = Field(default_factory=lambda: ["mu", "log_sd", "amp"])
    level_mean: list[float]
    level_cov: list[list[float]]
    level_points: list[list[float]] | None = None
    bandwidth: float = Field(0.0, ge=0.0)
    phi: float = Field(ge=-0.999, le=0.999)
    phi_slow: float = Field(0.0, ge=0.0, le=0.99999)
    slow_share: float = Field(0.0, ge=0.0, le=1.0)
    daily: list[float]
    weekly: list[float] | None = None
    gap_corr: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> UsageClass:
        k = len(self.level_names)
        if self.level_names[:3] != ["mu", "log_sd", "amp"]:
            raise ValueError("level_names must start with mu, log_sd, amp")
        if len(self.level_mean) != k or len(self.level_cov) != k:
            raise ValueError(f"level_mean and level_cov must have {k} entries (level_names)")
        if any(len(r) != k for r in self.level_cov):
            raise ValueError(f"level_cov must be a {k} x {k} matrix")
        if self.level_points is not None and (
            not self.level_points or any(len(r) != k for r in self.level_points)
        ):
            raise ValueError(f"level_points must be a non-empty list of {k}-vectors")
        if not self.daily:
            raise ValueError("daily must hold at least one value")
        if self.weekly is not None and len(self.weekly) != 7:
            raise ValueError(f"weekly must hold 7 day offsets (found {len(self.weekly)})")
        if set(self.gap_corr) - {"cpu_max", "cpu_min"}:
            raise ValueError("gap_corr may hold only cpu_max and cpu_min")
        for col, rho in self.gap_corr.items():
            if not -1.0 <= rho <= 1.0:
                raise ValueError(f"gap_corr[{col!r}] must be in [-1, 1] (found {rho})")
            for name in (f"log_gap.{col}", f"log_gap_cv.{col}"):
                if name not in self.level_names:
                    raise ValueError(f"gap_corr[{col!r}] needs {name!r} in level_names")
        return self


class UsageModel(_Frozen):
    """A utilization model of a usage table: VM classes on one sampling grid.

    ``interval_s``: the sampling interval; ``vms``: the source's VM count (``scale``
    multiplies it); ``classes``: chosen by k-means (fixed seed) on the VMs' standardized
    [mean level, P95, daily-profile shape], ``k`` by the highest mean silhouette
    (``silhouette``). ``vm_cores``/``vm_memory_gb``: the size given to every VM of the
    matching vms table (the usage table has no sizes; a documented default).
    """

    interval_s: float = Field(gt=0)
    vms: int = Field(ge=1)
    classes: list[UsageClass]
    silhouette: float | None = None
    vm_cores: float = Field(2.0, gt=0)
    vm_memory_gb: float = Field(4.0, gt=0)

    @model_validator(mode="after")
    def _classes(self) -> UsageModel:
        if not self.classes:
            raise ValueError("a usage model needs at least one class")
        days = {len(c.daily) for c in self.classes}
        if len(days) != 1:
            raise ValueError("every class's daily profile must have the same length")
        total = sum(c.share for c in self.classes)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"class shares must sum to 1 (found {total:.6g})")
        return self


class ClientTokens(_Frozen):
    """Token distributions of one client over one distribution window (client_profiles).

    ``input``/``output``: quantiles of the window's token PDF at the model's ``probs``
    (a compact quantile function; draws interpolate and round). ``start_s``: where the
    window starts; it lasts until the client's next one.
    """

    start_s: float
    input: list[float]
    output: list[float]


class ClientSeries(_Frozen):
    """One client's load, window by window (client_profiles models).

    ``rates``: requests/s per window (0: idle); ``pattern``: one character per window,
    ``G`` (Gamma inter-arrivals), ``W`` (Weibull) or ``-`` (idle); ``shape``: the
    family's shape per window (0 when idle). ``cv``: the window's measured inter-arrival
    CV (0 when unknown), kept for the fidelity report. ``tokens``: the token
    distributions, by start time.
    """

    client: str
    rates: list[float]
    pattern: str
    shape: list[float]
    cv: list[float]
    tokens: list[ClientTokens] = Field(default_factory=list)

    @model_validator(mode="after")
    def _lengths(self) -> ClientSeries:
        n = len(self.rates)
        if len(self.pattern) != n or len(self.shape) != n or len(self.cv) != n:
            raise ValueError(
                f"client {self.client!r}: rates, pattern, shape and cv must have one entry per "
                f"window ({n})"
            )
        if set(self.pattern) - set("GW-"):
            raise ValueError(f"client {self.client!r}: pattern characters must be G, W or -")
        if min(self.rates, default=0.0) < 0:
            raise ValueError(f"client {self.client!r}: rates must be >= 0")
        return self


class ClientsModel(_Frozen):
    """A client_profiles table kept as a generative description (ServeGen style).

    ``window_s``: the windows' length; every client's series starts at 0. ``probs``:
    the probabilities at which each token distribution's quantiles are stored.
    """

    window_s: float = Field(gt=0)
    windows: int = Field(ge=1)
    probs: list[float]
    clients: list[ClientSeries]


class Source(_Frozen):
    """Where the model came from (no raw data: counts and spans only)."""

    table: str
    rows: int
    duration_s: float
    path: str | None = None


class WorkloadModel(_Frozen):
    """A fitted generative workload model (see the module docstring).

    Write it with :func:`save_model`, read it with :func:`load_model`, draw from it with
    :meth:`sample` or :func:`fleetlab.workload.synth`.
    """

    schema_version: int = SCHEMA_VERSION
    kind: Literal["fleetlab.workload-model"] = "fleetlab.workload-model"
    table: str
    time_column: str
    source: Source
    arrival: Arrival
    fields: dict[str, Marginal] = Field(default_factory=dict)
    copula: Copula | None = None
    entity: Entity | None = None
    lifetime_column: str | None = Field(
        None, description="vms: the field that is deleted_s - created_s (censored at the horizon)"
    )
    traces: TraceShapes | None = Field(
        None, description="spans: call-tree templates and per service:operation spans"
    )
    usage: UsageModel | None = Field(
        None, description="usage: VM classes, profiles, AR(1) residuals (the arrival is the clock)"
    )
    clients: ClientsModel | None = Field(
        None, description="client_profiles: per-client window series (the arrival is the mean)"
    )

    @field_validator("schema_version")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {v} is not supported (this fleetlab reads {SCHEMA_VERSION})"
            )
        return v

    def sample(
        self, *, duration_s: float | None = None, scale: float = 1.0, seed: int = 0
    ) -> pl.DataFrame:
        """Draw a synthetic canonical table in memory (see :func:`fleetlab.workload.sample`)."""
        from fleetlab.workload._synth import sample

        return sample(self, duration_s=duration_s, scale=scale, seed=seed)


def save_model(
    model: WorkloadModel, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``model`` as YAML (``.yaml``/``.yml``) or JSON (anything else), atomically.

    Raises
    ------
    FleetlabError
        ``path`` exists and ``overwrite`` is false.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise FleetlabError(f"{target}: already exists; pass --force to replace it")
    data = model.model_dump(mode="json")
    # the spans/flows parts are optional: left out when unused, so files of the other tables
    # stay readable by fleetlab versions from before them
    for key in ("traces", "usage", "clients"):
        if data.get(key) is None:
            data.pop(key, None)
    if isinstance(data.get("arrival"), dict) and data["arrival"].get("bands") is None:
        data["arrival"].pop("bands", None)  # one renewal: readable by versions before bands
    if isinstance(data.get("arrival"), dict) and data["arrival"].get("cluster") is None:
        data["arrival"].pop("cluster", None)  # no clusters: readable by versions before them
    if isinstance(data.get("entity"), dict):
        for key in ("endpoints", "pairs", "ports"):
            if data["entity"].get(key) is None:
                data["entity"].pop(key, None)
    if target.suffix.lower() in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    else:
        text = json.dumps(data, indent=1)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


def load_model(path: str | os.PathLike[str]) -> WorkloadModel:
    """Read a model file written by :func:`save_model` (YAML or JSON).

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    ConfigError
        It is not a valid model: the message names the file, field, expected and found.
    """
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"{p}: no such model file")
    try:
        data: Any = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not YAML/JSON: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: expected a mapping (a workload model), found {type(data).__name__}"
        )
    try:
        return WorkloadModel.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(
            f"{p}: field {where!r}: {first['msg']} (found {_short(first.get('input'))}; "
            f"{exc.error_count()} problem(s) in all)"
        ) from exc


def _short(v: Any, limit: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."
