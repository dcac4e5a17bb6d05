"""Fault models shared by the simulators: crashes, correlated failures, stragglers, partitions.

Every model is a frozen pydantic spec plus a pure function that draws a timeline of fault
windows from a ``numpy.random.Generator`` (or an integer seed). Times are in seconds from
the start of the simulated horizon; every window is clipped to ``[0, horizon_s]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, cast

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.special import gamma as _gamma

from fleetlab.errors import ConfigError

__all__ = [
    "CrashSpec",
    "Duration",
    "FailureSpec",
    "FaultModel",
    "PartitionSpec",
    "SlowdownSpec",
    "availability",
    "draw_faults",
    "failure_timeline",
    "fleet",
    "load_fault_model",
    "partition_windows",
    "slo_attainment",
    "slowdown_windows",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Duration(BaseModel):
    """A positive random duration in seconds, parameterised by its mean.

    Attributes
    ----------
    kind
        ``exponential`` (memoryless), ``weibull`` (``shape`` < 1: infant mortality,
        > 1: wear-out), ``lognormal`` (``shape`` is sigma of the log) or ``constant``.
    mean_s
        Mean of the distribution in seconds (for every kind).
    shape
        Weibull shape k or lognormal sigma; ignored by ``exponential`` and ``constant``.
    """

    model_config = _FROZEN

    kind: Literal["exponential", "weibull", "lognormal", "constant"] = "exponential"
    mean_s: float = Field(gt=0)
    shape: float = Field(default=1.0, gt=0)

    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> np.ndarray:
        """Draw ``size`` durations in seconds (float64 array) from ``rng``."""
        if self.kind == "exponential":
            return rng.exponential(self.mean_s, size)
        if self.kind == "weibull":
            scale = self.mean_s / _gamma(1.0 + 1.0 / self.shape)
            return scale * rng.weibull(self.shape, size)
        if self.kind == "lognormal":
            mu = math.log(self.mean_s) - self.shape**2 / 2.0
            return rng.lognormal(mu, self.shape, size)
        return np.full(size, self.mean_s, dtype=np.float64)


class CrashSpec(BaseModel):
    """A crash/recover renewal process: up for ``mtbf``, down for ``mttr``, repeat.

    Attributes
    ----------
    mtbf
        Time between failures (time up after a repair), seconds.
    mttr
        Time to repair (time down), seconds.
    """

    model_config = _FROZEN

    mtbf: Duration
    mttr: Duration

    @property
    def steady_state_availability(self) -> float:
        """Long-run fraction of time up: MTBF / (MTBF + MTTR)."""
        return self.mtbf.mean_s / (self.mtbf.mean_s + self.mttr.mean_s)


class FailureSpec(BaseModel):
    """Independent node crashes plus correlated failures of whole domains (rack, zone).

    Attributes
    ----------
    node
        Per-node crash process (independent between nodes); ``None`` for none.
    domain
        Per-domain crash process: one domain event takes down every member node at
        once, for the same repair time; ``None`` for none.
    """

    model_config = _FROZEN

    node: CrashSpec | None = None
    domain: CrashSpec | None = None


class SlowdownSpec(BaseModel):
    """Stragglers: windows where a node runs ``factor`` times slower.

    Attributes
    ----------
    interval
        Time from the end of one slow window to the start of the next, per node, seconds.
    duration
        Length of a slow window, seconds.
    factor_min, factor_max
        The slowdown factor is uniform in ``[factor_min, factor_max]`` (1 = full speed,
        2 = each unit of work takes twice as long).
    """

    model_config = _FROZEN

    interval: Duration
    duration: Duration
    factor_min: float = Field(default=2.0, ge=1.0)
    factor_max: float = Field(default=4.0, ge=1.0)

    @model_validator(mode="after")
    def _order(self) -> SlowdownSpec:
        if self.factor_max < self.factor_min:
            raise ValueError(f"factor_max ({self.factor_max}) < factor_min ({self.factor_min})")
        return self


class PartitionSpec(BaseModel):
    """Network partitions: windows in which a set of nodes is unreachable from the rest.

    Attributes
    ----------
    interval
        Time between the end of one partition and the start of the next (fleet-wide), s.
    duration
        Length of a partition, seconds.
    scope
        ``domain``: one whole domain (chosen uniformly) is cut off; ``random``: a random
        ``fraction`` of the nodes is cut off.
    fraction
        Share of nodes cut off by a ``random`` partition (at least one node).
    """

    model_config = _FROZEN

    interval: Duration
    duration: Duration
    scope: Literal["domain", "random"] = "domain"
    fraction: float = Field(default=0.1, gt=0, le=1)


class FaultModel(BaseModel):
    """All fault processes of a simulated fleet; any part may be ``None`` (absent)."""

    model_config = _FROZEN

    failures: FailureSpec | None = None
    slowdowns: SlowdownSpec | None = None
    partitions: PartitionSpec | None = None


_TIMELINE_SCHEMA = {"node": pl.String, "down_s": pl.Float64, "up_s": pl.Float64, "cause": pl.String}
_SLOW_SCHEMA = {"node": pl.String, "start_s": pl.Float64, "end_s": pl.Float64, "factor": pl.Float64}
_PART_SCHEMA = {
    "partition_id": pl.Int64,
    "node": pl.String,
    "start_s": pl.Float64,
    "end_s": pl.Float64,
}
_EVENT_SCHEMA = pl.Schema(
    {
        "node": pl.String,
        "kind": pl.String,
        "start_s": pl.Float64,
        "end_s": pl.Float64,
        "factor": pl.Float64,
        "cause": pl.String,
    }
)


def _rng(rng: np.random.Generator | int) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(int(rng))


def _check_horizon(horizon_s: float) -> float:
    if not (isinstance(horizon_s, (int, float)) and math.isfinite(horizon_s) and horizon_s > 0):
        raise ConfigError(
            f"horizon_s: expected a positive finite number of seconds, found {horizon_s!r}"
        )
    return float(horizon_s)


def _alternating(
    up: Duration, down: Duration, n: int, horizon_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` independent up/down renewal processes from t=0 (all up at start).

    Returns (row index, start of each down window, end of each down window), windows that
    start before ``horizon_s``; ends are not clipped.
    """
    if n == 0:
        empty = np.empty(0)
        return empty.astype(np.int64), empty, empty
    cycle = up.mean_s + down.mean_s
    k = int(min(max(8, math.ceil(1.5 * horizon_s / cycle) + 8), 1_000_000))
    ups = up.sample(rng, (n, k))
    downs = down.sample(rng, (n, k))
    ends = np.cumsum(ups + downs, axis=1)
    # extend rows whose k cycles stop short of the horizon (rare: heavy tails)
    while np.any(ends[:, -1] < horizon_s):
        more_up = up.sample(rng, (n, k))
        more_down = down.sample(rng, (n, k))
        ups = np.concatenate([ups, more_up], axis=1)
        downs = np.concatenate([downs, more_down], axis=1)
        ends = np.cumsum(ups + downs, axis=1)
    down_start = ends - downs
    mask = down_start < horizon_s
    rows = np.nonzero(mask)[0]
    return rows, down_start[mask], ends[mask]


def failure_timeline(
    spec: FailureSpec,
    nodes: Sequence[str],
    domains: Mapping[str, str] | None = None,
    horizon_s: float = 86_400.0,
    rng: np.random.Generator | int = 0,
) -> pl.DataFrame:
    """Draw when each node is down over ``[0, horizon_s]``.

    Parameters
    ----------
    spec
        The crash processes: independent per node and correlated per domain.
    nodes
        Node names. Draws depend on their order (same order, same seed: same timeline).
    domains
        Node -> failure domain (rack or zone). A domain event takes every member down at
        the same time for the same repair time. Nodes missing here have no domain.
    horizon_s
        Length of the simulated period, seconds.
    rng
        A numpy Generator, or an integer seed.

    Returns
    -------
    polars.DataFrame
        One row per outage of a node: ``node``, ``down_s``, ``up_s`` (clipped to the
        horizon) and ``cause`` (``"node"`` or ``"domain:<name>"``), sorted by node and
        ``down_s``. Outages of one node from different causes may overlap; use
        :func:`availability` to merge them.

    Raises
    ------
    ConfigError
        ``horizon_s`` is not a positive number, or ``domain`` failures are asked for
        without a ``domains`` mapping.
    """
    horizon = _check_horizon(horizon_s)
    gen = _rng(rng)
    names = [str(n) for n in nodes]
    frames: list[pl.DataFrame] = []
    if spec.node is not None:
        rows, down, up = _alternating(spec.node.mtbf, spec.node.mttr, len(names), horizon, gen)
        frames.append(
            pl.DataFrame(
                {
                    "node": np.asarray(names, dtype=object)[rows].tolist() if len(rows) else [],
                    "down_s": down,
                    "up_s": np.minimum(up, horizon),
                    "cause": ["node"] * len(rows),
                },
                schema=_TIMELINE_SCHEMA,
            )
        )
    if spec.domain is not None:
        if not domains:
            raise ConfigError(
                "domains: correlated (domain) failures need a node -> domain mapping, found none"
            )
        member = pl.DataFrame(
            {"node": names, "domain": [domains.get(n) for n in names]},
            schema={"node": pl.String, "domain": pl.String},
        ).drop_nulls("domain")
        doms = sorted(set(member["domain"].to_list()))
        rows, down, up = _alternating(spec.domain.mtbf, spec.domain.mttr, len(doms), horizon, gen)
        events = pl.DataFrame(
            {
                "domain": [doms[i] for i in rows],
                "down_s": down,
                "up_s": np.minimum(up, horizon),
            },
            schema={"domain": pl.String, "down_s": pl.Float64, "up_s": pl.Float64},
        )
        frames.append(
            events.join(member, on="domain", how="inner")
            .with_columns(cause=pl.lit("domain:") + pl.col("domain"))
            .select(list(_TIMELINE_SCHEMA))
        )
    if not frames:
        return pl.DataFrame(schema=_TIMELINE_SCHEMA)
    return pl.concat(frames).sort(["node", "down_s", "cause"])


def slowdown_windows(
    spec: SlowdownSpec,
    nodes: Sequence[str],
    horizon_s: float = 86_400.0,
    rng: np.random.Generator | int = 0,
) -> pl.DataFrame:
    """Draw straggler windows: when each node runs slower, and by how much.

    Parameters
    ----------
    spec
        Gap between windows, window length and slowdown factor range.
    nodes
        Node names (draws depend on their order).
    horizon_s
        Length of the simulated period, seconds.
    rng
        A numpy Generator, or an integer seed.

    Returns
    -------
    polars.DataFrame
        ``node``, ``start_s``, ``end_s`` (clipped to the horizon), ``factor`` (>= 1:
        work takes ``factor`` times longer). Windows of one node never overlap.

    Raises
    ------
    ConfigError
        ``horizon_s`` is not a positive number.
    """
    horizon = _check_horizon(horizon_s)
    gen = _rng(rng)
    names = [str(n) for n in nodes]
    rows, start, end = _alternating(spec.interval, spec.duration, len(names), horizon, gen)
    factor = gen.uniform(spec.factor_min, spec.factor_max, len(rows))
    return pl.DataFrame(
        {
            "node": [names[i] for i in rows],
            "start_s": start,
            "end_s": np.minimum(end, horizon),
            "factor": factor,
        },
        schema=_SLOW_SCHEMA,
    ).sort(["node", "start_s"])


def partition_windows(
    spec: PartitionSpec,
    nodes: Sequence[str],
    domains: Mapping[str, str] | None = None,
    horizon_s: float = 86_400.0,
    rng: np.random.Generator | int = 0,
) -> pl.DataFrame:
    """Draw network partitions: windows in which a set of nodes is unreachable.

    Parameters
    ----------
    spec
        Gap between partitions, their length and which nodes they cut off.
    nodes
        Node names (draws depend on their order).
    domains
        Node -> domain; needed when ``spec.scope == "domain"``.
    horizon_s
        Length of the simulated period, seconds.
    rng
        A numpy Generator, or an integer seed.

    Returns
    -------
    polars.DataFrame
        Long format, one row per (partition, cut-off node): ``partition_id``, ``node``,
        ``start_s``, ``end_s`` (clipped to the horizon). Partitions never overlap in time.

    Raises
    ------
    ConfigError
        ``horizon_s`` is not positive, or ``scope="domain"`` without ``domains``.
    """
    horizon = _check_horizon(horizon_s)
    gen = _rng(rng)
    names = [str(n) for n in nodes]
    if not names:
        return pl.DataFrame(schema=_PART_SCHEMA)
    _, start, end = _alternating(spec.interval, spec.duration, 1, horizon, gen)
    groups: list[list[str]]
    if spec.scope == "domain":
        if not domains:
            raise ConfigError(
                "domains: a partition with scope 'domain' needs a node -> domain mapping, found none"
            )
        by_domain: dict[str, list[str]] = {}
        for n in names:
            if n in domains:
                by_domain.setdefault(domains[n], []).append(n)
        keys = sorted(by_domain)
        picks = gen.integers(0, len(keys), len(start))
        groups = [by_domain[keys[i]] for i in picks]
    else:
        size = max(1, round(spec.fraction * len(names)))
        groups = [
            [names[i] for i in sorted(gen.choice(len(names), size, replace=False))] for _ in start
        ]
    pid: list[int] = []
    node: list[str] = []
    s: list[float] = []
    e: list[float] = []
    for i, members in enumerate(groups):
        pid.extend([i] * len(members))
        node.extend(members)
        s.extend([float(start[i])] * len(members))
        e.extend([float(min(end[i], horizon))] * len(members))
    return pl.DataFrame(
        {"partition_id": pid, "node": node, "start_s": s, "end_s": e}, schema=_PART_SCHEMA
    )


def draw_faults(
    model: FaultModel,
    nodes: Sequence[str],
    domains: Mapping[str, str] | None = None,
    horizon_s: float = 86_400.0,
    rng: np.random.Generator | int = 0,
) -> pl.DataFrame:
    """Draw every fault process of ``model`` into one table of per-node fault windows.

    The three processes draw from independent child generators spawned from ``rng``, so
    adding (say) partitions to a model never changes its crash timeline.

    Parameters
    ----------
    model
        The fault processes.
    nodes, domains, horizon_s, rng
        As in :func:`failure_timeline`.

    Returns
    -------
    polars.DataFrame
        ``node``, ``kind`` (``down``, ``slow`` or ``partitioned``), ``start_s``, ``end_s``,
        ``factor`` (slowdown factor; 1.0 for other kinds) and ``cause``, sorted by
        ``start_s``.

    Raises
    ------
    ConfigError
        As the per-process functions.
    """
    gen = _rng(rng)
    g_fail, g_slow, g_part = gen.spawn(3)
    frames: list[pl.DataFrame] = []
    if model.failures is not None:
        t = failure_timeline(model.failures, nodes, domains, horizon_s, g_fail)
        frames.append(
            t.select(
                "node",
                kind=pl.lit("down"),
                start_s="down_s",
                end_s="up_s",
                factor=pl.lit(1.0),
                cause="cause",
            )
        )
    if model.slowdowns is not None:
        t = slowdown_windows(model.slowdowns, nodes, horizon_s, g_slow)
        frames.append(
            t.select(
                "node",
                kind=pl.lit("slow"),
                start_s="start_s",
                end_s="end_s",
                factor="factor",
                cause=pl.lit("straggler"),
            )
        )
    if model.partitions is not None:
        t = partition_windows(model.partitions, nodes, domains, horizon_s, g_part)
        frames.append(
            t.select(
                "node",
                kind=pl.lit("partitioned"),
                start_s="start_s",
                end_s="end_s",
                factor=pl.lit(1.0),
                cause=pl.lit("partition:") + pl.col("partition_id").cast(pl.String),
            )
        )
    if not frames:
        return pl.DataFrame(schema=_EVENT_SCHEMA)
    return pl.concat([f.cast(_EVENT_SCHEMA) for f in frames]).sort(["start_s", "node", "kind"])


def availability(
    windows: pl.DataFrame,
    *,
    nodes: Sequence[str],
    horizon_s: float,
    kinds: Sequence[str] = ("down", "partitioned"),
) -> pl.DataFrame:
    """Per-node availability over ``[0, horizon_s]`` from fault windows.

    Overlapping windows of a node (a node crash during its rack's outage) count once.

    Parameters
    ----------
    windows
        A :func:`failure_timeline` table (``down_s``/``up_s``) or a :func:`draw_faults`
        table (``start_s``/``end_s``/``kind``; only rows whose kind is in ``kinds`` count).
    nodes
        Every node of the fleet (nodes with no window get availability 1.0).
    horizon_s
        Length of the period, seconds.
    kinds
        Which kinds of :func:`draw_faults` windows make a node unavailable.

    Returns
    -------
    polars.DataFrame
        ``node``, ``outages`` (merged windows), ``downtime_s`` and ``availability``
        (fraction of the horizon up, in [0, 1]), in the order of ``nodes``.

    Raises
    ------
    ConfigError
        ``windows`` has neither column pair, or ``horizon_s`` is not positive.
    """
    horizon = _check_horizon(horizon_s)
    if {"down_s", "up_s"} <= set(windows.columns):
        w = windows.select("node", start="down_s", end="up_s")
    elif {"start_s", "end_s"} <= set(windows.columns):
        w = windows
        if "kind" in w.columns:
            w = w.filter(pl.col("kind").is_in(list(kinds)))
        w = w.select("node", start="start_s", end="end_s")
    else:
        raise ConfigError(
            "windows: expected columns down_s/up_s or start_s/end_s, "
            f"found {', '.join(windows.columns)}"
        )
    w = w.with_columns(pl.col("start").clip(0.0, horizon), pl.col("end").clip(0.0, horizon))
    merged = (
        w.sort(["node", "start"])
        .with_columns(prev_end=pl.col("end").cum_max().shift(1).over("node"))
        .with_columns(new=(pl.col("prev_end").is_null() | (pl.col("start") > pl.col("prev_end"))))
        .with_columns(grp=pl.col("new").cast(pl.Int64).cum_sum().over("node"))
        .group_by("node", "grp")
        .agg(start=pl.col("start").min(), end=pl.col("end").max())
        .group_by("node")
        .agg(outages=pl.len().cast(pl.Int64), downtime_s=(pl.col("end") - pl.col("start")).sum())
    )
    base = pl.DataFrame({"node": [str(n) for n in nodes]}, schema={"node": pl.String})
    return (
        base.join(merged, on="node", how="left", maintain_order="left")
        .with_columns(
            pl.col("outages").fill_null(0),
            pl.col("downtime_s").fill_null(0.0),
        )
        .with_columns(availability=1.0 - pl.col("downtime_s") / horizon)
    )


def slo_attainment(avail: pl.DataFrame, *, target: float = 0.999) -> dict[str, float]:
    """Summarise an :func:`availability` table against an availability target.

    Parameters
    ----------
    avail
        The table from :func:`availability` (``availability`` column, 0..1).
    target
        Availability SLO per node, e.g. 0.999 ("three nines").

    Returns
    -------
    dict
        ``nodes``, ``fleet_availability`` (mean over nodes), ``min_availability``,
        ``attainment`` (share of nodes meeting ``target``), ``nodes_below_target`` and
        ``total_downtime_s``.

    Raises
    ------
    ConfigError
        ``target`` is outside (0, 1] or the table has no ``availability`` column.
    """
    if not 0 < target <= 1:
        raise ConfigError(f"target: expected an availability in (0, 1], found {target!r}")
    if "availability" not in avail.columns:
        raise ConfigError(
            f"avail: expected the table from availability(), found columns {avail.columns}"
        )
    n = avail.height
    if n == 0:
        return {
            "nodes": 0,
            "fleet_availability": math.nan,
            "min_availability": math.nan,
            "attainment": math.nan,
            "nodes_below_target": 0,
            "total_downtime_s": 0.0,
        }
    a = avail["availability"]
    below = int((a < target).sum())
    return {
        "nodes": n,
        # a non-empty Float64 column: its mean and min are floats (polars types them as any scalar)
        "fleet_availability": float(cast(float, a.mean())),
        "min_availability": float(cast(float, a.min())),
        "attainment": 1.0 - below / n,
        "nodes_below_target": below,
        "total_downtime_s": float(avail["downtime_s"].sum())
        if "downtime_s" in avail.columns
        else math.nan,
    }


def fleet(nodes: int, domains: int) -> tuple[list[str], dict[str, str]]:
    """Names for a fleet of ``nodes`` spread evenly over ``domains`` racks.

    Returns
    -------
    (list of str, dict)
        Node names ``n0000``... and node -> ``rack00``... mapping.

    Raises
    ------
    ConfigError
        ``nodes`` or ``domains`` is not positive.
    """
    if nodes < 1 or domains < 1:
        raise ConfigError(f"nodes/domains: expected positive counts, found {nodes}, {domains}")
    names = [f"n{i:04d}" for i in range(nodes)]
    return names, {n: f"rack{i % domains:02d}" for i, n in enumerate(names)}


def load_fault_model(path: str | Path) -> FaultModel:
    """Read a :class:`FaultModel` from YAML.

    Raises
    ------
    ConfigError
        The file is missing, not YAML, or not a valid fault model (names the field).
    """
    import yaml
    from pydantic import ValidationError

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
        return FaultModel.model_validate(doc or {})
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        raise ConfigError(f"{p}: field '{loc}': {e['msg']} (found {e.get('input')!r})") from exc
