"""A deterministic synthetic microservice trace generator with known ground truth.

A :class:`Topology` lists services, what each calls (sync or async, with a probability,
retries on error) and its own work time; :func:`generate_spans` plays Poisson request
arrivals through it and writes Jaeger-like spans (optionally client/server pairs);
:func:`generate_flows` strips the trace context and adds background traffic that no
request causes. :func:`topology` returns the built-in topologies (chains, fan-out, shared
backends, async calls, retries, cycles through a queue, DeathStarBench-like apps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast

import numpy as np
import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleetlab.errors import ConfigError
from fleetlab.sim import Streams


class Call(BaseModel):
    """One dependency of a service: it calls ``callee`` while handling a request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    callee: str
    prob: float = Field(1.0, ge=0.0, le=1.0, description="chance the call is made per request")
    kind: Literal["sync", "async"] = "sync"
    retries: int = Field(0, ge=0, le=5, description="retries when the callee answers an error")


class Service(BaseModel):
    """A service: its own work per request (ms, lognormal), error rate and its calls."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    work_ms: float = Field(1.0, gt=0.0, description="median own processing time, ms")
    sigma: float = Field(0.4, ge=0.0, description="lognormal shape of the work time")
    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    parallel: bool = Field(False, description="issue the sync calls concurrently (fan-out)")
    calls: tuple[Call, ...] = ()


class Topology(BaseModel):
    """A microservice application: services and the share of requests at each entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    services: tuple[Service, ...]
    entry: dict[str, float] = Field(description="entry service -> share of requests")
    max_depth: int = Field(12, ge=1, description="cuts call cycles (through a queue) short")

    @model_validator(mode="after")
    def _known_names(self) -> Topology:
        names = {s.name for s in self.services}
        if len(names) != len(self.services):
            raise ValueError("service names must be unique")
        for s in self.services:
            for c in s.calls:
                if c.callee not in names:
                    raise ValueError(f"{s.name} calls unknown service {c.callee!r}")
        for e in self.entry:
            if e not in names:
                raise ValueError(f"entry {e!r} is not a service")
        return self

    def edges(self) -> set[tuple[str, str]]:
        """The true caller -> callee pairs (every call with a non-zero probability)."""
        return {(s.name, c.callee) for s in self.services for c in s.calls if c.prob > 0}


class Traffic(BaseModel):
    """How requests arrive: Poisson at ``rate_per_s`` for ``duration_s``; network delays."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rate_per_s: float = Field(50.0, gt=0.0)
    duration_s: float = Field(60.0, gt=0.0)
    network_ms: float = Field(0.2, ge=0.0, description="mean one-way network delay, ms")
    client_spans: bool = Field(True, description="emit a client span in the caller per call")
    start_us: int = Field(1_700_000_000_000_000, description="epoch µs of the first request")


def _svc(name: str, work: float, calls: list[Call] | None = None, **kw: Any) -> Service:
    return Service(name=name, work_ms=work, calls=tuple(calls or ()), **kw)


def _c(callee: str, **kw: Any) -> Call:
    return Call(callee=callee, **kw)


def _chain() -> Topology:
    names = ["frontend", "api", "orders", "inventory", "db"]
    svcs = [
        _svc(n, 1.0 + i, [_c(names[i + 1])] if i + 1 < len(names) else None)
        for i, n in enumerate(names)
    ]
    return Topology(name="chain", services=tuple(svcs), entry={"frontend": 1.0})


def _fanout() -> Topology:
    leaves = [f"leaf-{i}" for i in range(6)]
    return Topology(
        name="fanout",
        services=(
            _svc("gateway", 0.5, [_c("aggregator")]),
            _svc("aggregator", 1.0, [_c(x, prob=0.9) for x in leaves], parallel=True),
            *(_svc(x, 2.0 + i, [_c("cache", prob=0.5)]) for i, x in enumerate(leaves)),
            _svc("cache", 0.3),
        ),
        entry={"gateway": 1.0},
    )


def _shared() -> Topology:
    return Topology(
        name="shared-backends",
        services=(
            _svc("web", 1.0, [_c("auth"), _c("catalog"), _c("cart", prob=0.5)]),
            _svc("mobile", 1.0, [_c("auth"), _c("catalog", prob=0.7)]),
            _svc("auth", 0.8, [_c("users-db")]),
            _svc("catalog", 2.0, [_c("cache"), _c("products-db", prob=0.3)]),
            _svc("cart", 1.5, [_c("cache"), _c("users-db")]),
            _svc("cache", 0.2),
            _svc("users-db", 1.5),
            _svc("products-db", 3.0),
        ),
        entry={"web": 0.7, "mobile": 0.3},
    )


def _async_retry_cycle() -> Topology:
    return Topology(
        name="async-retry-cycle",
        services=(
            _svc("frontend", 1.0, [_c("orders"), _c("recommend", prob=0.4)]),
            _svc("orders", 2.0, [_c("payment", retries=2), _c("queue", kind="async")]),
            _svc("payment", 3.0, [_c("ledger-db")], error_rate=0.05),
            _svc("queue", 0.3, [_c("worker", kind="async")]),
            _svc("worker", 4.0, [_c("mailer", prob=0.8), _c("orders", prob=0.1)]),
            _svc("mailer", 2.0),
            _svc("recommend", 5.0, [_c("ml-model")]),
            _svc("ml-model", 8.0),
            _svc("ledger-db", 1.0),
        ),
        entry={"frontend": 1.0},
        max_depth=8,
    )


def _hotel() -> Topology:
    """DeathStarBench hotelReservation (search + reserve + user paths)."""
    return Topology(
        name="hotel-reservation",
        services=(
            _svc(
                "frontend",
                0.5,
                [
                    _c("search", prob=0.6),
                    _c("profile", prob=0.6),
                    _c("recommendation", prob=0.39),
                    _c("user", prob=0.01),
                    _c("reservation", prob=0.6),
                ],
            ),
            _svc("search", 0.5, [_c("geo"), _c("rate")]),
            _svc("geo", 0.4, [_c("mongodb-geo", prob=0.05)]),
            _svc("rate", 0.6, [_c("memcached-rate"), _c("mongodb-rate", prob=0.1)]),
            _svc("profile", 0.6, [_c("memcached-profile"), _c("mongodb-profile", prob=0.1)]),
            _svc("recommendation", 0.5, [_c("mongodb-recommendation", prob=0.05)]),
            _svc("user", 0.4, [_c("mongodb-user")]),
            _svc("reservation", 0.8, [_c("memcached-reserve"), _c("mongodb-reservation")]),
            *(_svc(n, 0.15) for n in ("memcached-rate", "memcached-profile", "memcached-reserve")),
            *(
                _svc(n, 0.6)
                for n in (
                    "mongodb-geo",
                    "mongodb-rate",
                    "mongodb-profile",
                    "mongodb-recommendation",
                    "mongodb-user",
                    "mongodb-reservation",
                )
            ),
        ),
        entry={"frontend": 1.0},
    )


def _social() -> Topology:
    """DeathStarBench socialNetwork (compose-post and read-timeline paths)."""
    return Topology(
        name="social-network",
        services=(
            _svc(
                "nginx",
                0.3,
                [
                    _c("compose-post", prob=0.1),
                    _c("home-timeline", prob=0.6),
                    _c("user-timeline", prob=0.3),
                ],
            ),
            _svc(
                "compose-post",
                1.0,
                [
                    _c("text"),
                    _c("media"),
                    _c("unique-id"),
                    _c("user"),
                    _c("post-storage"),
                    _c("user-timeline"),
                    _c("write-home-timeline-queue", kind="async"),
                ],
                parallel=True,
            ),
            _svc("text", 0.5, [_c("url-shorten"), _c("user-mention")], parallel=True),
            _svc("url-shorten", 0.3, [_c("mongodb-url")]),
            _svc("user-mention", 0.3, [_c("memcached-user")]),
            _svc("media", 0.3),
            _svc("unique-id", 0.1),
            _svc("user", 0.4, [_c("memcached-user")]),
            _svc("post-storage", 0.5, [_c("memcached-post"), _c("mongodb-post", prob=0.2)]),
            _svc("user-timeline", 0.5, [_c("redis-user-timeline"), _c("post-storage")]),
            _svc("home-timeline", 0.5, [_c("redis-home-timeline"), _c("post-storage")]),
            _svc("write-home-timeline-queue", 0.1, [_c("write-home-timeline", kind="async")]),
            _svc("write-home-timeline", 0.8, [_c("social-graph"), _c("redis-home-timeline")]),
            _svc(
                "social-graph",
                0.5,
                [_c("redis-social-graph"), _c("mongodb-social-graph", prob=0.1)],
            ),
            *(
                _svc(n, 0.15)
                for n in (
                    "memcached-user",
                    "memcached-post",
                    "redis-user-timeline",
                    "redis-home-timeline",
                    "redis-social-graph",
                )
            ),
            *(_svc(n, 0.7) for n in ("mongodb-url", "mongodb-post", "mongodb-social-graph")),
        ),
        entry={"nginx": 1.0},
    )


#: the built-in topologies, by name (read-only; the CLI maps names through it)
TOPOLOGIES: Mapping[str, Callable[[], Topology]] = MappingProxyType(
    {
        "chain": _chain,
        "fanout": _fanout,
        "shared-backends": _shared,
        "async-retry-cycle": _async_retry_cycle,
        "hotel-reservation": _hotel,
        "social-network": _social,
    }
)


def topology(name: str) -> Topology:
    """A built-in topology by name, or one described in a YAML file.

    Parameters
    ----------
    name
        One of ``chain``, ``fanout``, ``shared-backends``, ``async-retry-cycle``,
        ``hotel-reservation``, ``social-network``; or a path to a ``.yaml``/``.yml`` file
        holding a :class:`Topology` (``name``, ``services``: list of ``{name, work_ms,
        calls: [{callee, prob, kind, retries}]}``, ``entry``: {service: share}).

    Raises
    ------
    ConfigError
        Unknown name (the message lists the known ones), or an invalid YAML topology (the
        message names the file and the field).
    """
    if name.endswith((".yaml", ".yml")):
        return _topology_file(Path(name))
    try:
        return TOPOLOGIES[name]()
    except KeyError:
        raise ConfigError(
            f"unknown topology {name!r}; expected one of {', '.join(TOPOLOGIES)} or a .yaml file"
        ) from None


def _topology_file(path: Path) -> Topology:
    if not path.is_file():
        raise ConfigError(f"{path}: no such topology file")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Topology.model_validate(doc)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise ConfigError(
            f"{path}: field {where}: {err['msg']} (found {err.get('input')!r})"
        ) from exc


class _Trace:
    """Column buffers for the spans of one generation run."""

    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {
            k: []
            for k in (
                "trace_id",
                "span_id",
                "parent_id",
                "service",
                "operation",
                "start_us",
                "duration_us",
                "status",
                "kind",
            )
        }

    def add(self, *row: Any) -> int:
        for key, value in zip(self.cols, row, strict=True):
            self.cols[key].append(value)
        return len(self.cols["trace_id"]) - 1


def generate_spans(
    topo: Topology, traffic: Traffic | None = None, *, seed: int = 0
) -> pl.DataFrame:
    """Play Poisson request arrivals through ``topo`` and return the spans they make.

    Parameters
    ----------
    topo
        The application.
    traffic
        Arrival rate, duration, network delay, whether to emit client spans; defaults of
        :class:`Traffic` when omitted.
    seed
        Seed of the random streams (arrivals, work times, call choices, errors).

    Returns
    -------
    polars.DataFrame
        A canonical ``spans`` table (µs since the epoch), sorted by start. Server spans have
        kind ``server`` (``consumer`` for async callees), client spans ``client``
        (``producer`` for async calls). Status is ``ok`` or ``error``.
    """
    traffic = traffic or Traffic()
    st = Streams(seed)
    arrivals_rng, work_rng, choice_rng = st["arrivals"], st["work"], st["choices"]
    n = int(arrivals_rng.poisson(traffic.rate_per_s * traffic.duration_s))
    starts = np.sort(arrivals_rng.uniform(0.0, traffic.duration_s * 1e6, n))
    entries = list(topo.entry)
    weights = np.asarray([topo.entry[e] for e in entries], dtype=float)
    which = arrivals_rng.choice(len(entries), size=n, p=weights / weights.sum())
    ids = arrivals_rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)
    by_name = {s.name: s for s in topo.services}
    buf = _Trace()
    net = traffic.network_ms * 1000.0

    def delay() -> float:
        return float(work_rng.exponential(net)) if net > 0 else 0.0

    def handle(
        tid: str,
        name: str,
        parent: str | None,
        t0: float,
        depth: int,
        kind: str,
        counter: list[int],
    ) -> tuple[float, bool]:
        """Emit the server span of ``name`` starting at t0; returns (end, failed)."""
        svc = by_name[name]
        counter[0] += 1
        sid = f"{counter[0]:x}"
        row = buf.add(tid, sid, parent, name, f"{name}.handle", int(t0), 0, "ok", kind)
        work = float(work_rng.lognormal(np.log(svc.work_ms * 1000.0), svc.sigma))
        t = t0 + work * 0.3
        failed = False
        joins: list[float] = []
        for call in svc.calls if depth < topo.max_depth else ():
            if call.prob < 1.0 and choice_rng.random() >= call.prob:
                continue
            ts = t
            end = t
            for _attempt in range(call.retries + 1):
                end, err = _call(tid, sid, name, call, ts, depth, counter)
                if call.kind == "async" or not err:
                    break
                ts = end  # retry once the failed attempt has come back
            else:
                failed = True
            if call.kind == "async":
                t = ts + 20.0 if not svc.parallel else t
            elif svc.parallel:
                joins.append(end)
            else:
                t = end
        if joins:
            t = max(t, *joins)
        t += work * 0.7
        if choice_rng.random() < svc.error_rate:
            failed = True
        buf.cols["duration_us"][row] = round(t - t0)
        if failed:
            buf.cols["status"][row] = "error"
        return t, failed

    def _call(
        tid: str,
        parent_sid: str,
        caller: str,
        call: Call,
        ts: float,
        depth: int,
        counter: list[int],
    ) -> tuple[float, bool]:
        is_async = call.kind == "async"
        parent = parent_sid
        row = None
        if traffic.client_spans:
            counter[0] += 1
            parent = f"{counter[0]:x}"
            row = buf.add(
                tid,
                parent,
                parent_sid,
                caller,
                f"call {call.callee}",
                int(ts),
                0,
                "ok",
                "producer" if is_async else "client",
            )
        arrive = ts + delay()
        end, err = handle(
            tid,
            call.callee,
            parent,
            arrive,
            depth + 1,
            "consumer" if is_async else "server",
            counter,
        )
        back = ts + 20.0 if is_async else end + delay()
        if row is not None:
            buf.cols["duration_us"][row] = round(back - ts)
            if err and not is_async:
                buf.cols["status"][row] = "error"
        return back, err and not is_async

    for i in range(n):
        tid = f"{int(ids[i]):016x}"
        handle(tid, entries[int(which[i])], None, float(starts[i]), 0, "server", [0])

    frame = pl.DataFrame(
        buf.cols,
        schema={
            "trace_id": pl.String,
            "span_id": pl.String,
            "parent_id": pl.String,
            "service": pl.String,
            "operation": pl.String,
            "start_us": pl.Int64,
            "duration_us": pl.Int64,
            "status": pl.String,
            "kind": pl.String,
        },
    ).with_columns(
        pl.col("start_us") + traffic.start_us, pl.lit(None, pl.String).alias("peer_service")
    )
    return frame.sort("start_us", "trace_id", maintain_order=True)


def spans_to_flows(spans: pl.DataFrame | pl.LazyFrame, *, client: str = "client") -> pl.DataFrame:
    """Strip trace context: one flow per cross-service call, plus one per request entering.

    Parameters
    ----------
    spans
        Canonical spans table.
    client
        Name given to the outside caller of root spans.

    Returns
    -------
    polars.DataFrame
        Canonical ``flows`` table (``ts_us``, ``src``, ``dst``, ``duration_us``) sorted by
        time: what a network tap would see, with no trace or span ids.
    """
    from fleetlab.depgraph._clean import clean_spans
    from fleetlab.depgraph._spans import call_links

    frame, _ = clean_spans(spans)
    links = call_links(frame).select(
        pl.col("start_us").alias("ts_us"),
        pl.col("caller").alias("src"),
        pl.col("callee").alias("dst"),
        pl.col("latency_us").alias("duration_us"),
    )
    roots = frame.filter(pl.col("pk").is_null()).select(
        pl.col("start_us").alias("ts_us"),
        pl.lit(client).alias("src"),
        pl.col("service").alias("dst"),
        "duration_us",
    )
    return _flows_frame(pl.concat([links, roots]))


def _flows_frame(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        pl.col("ts_us").cast(pl.Int64),
        pl.col("src").cast(pl.String),
        pl.col("dst").cast(pl.String),
        pl.lit(None, pl.Int64).alias("port"),
        pl.lit(None, pl.Int64).alias("bytes"),
        pl.col("duration_us").cast(pl.Int64),
    ).sort("ts_us", "src", "dst")


def add_background_flows(
    flows: pl.DataFrame,
    *,
    pairs: int = 5,
    rate_per_s: float = 5.0,
    seed: int = 0,
    periodic_share: float = 0.5,
) -> tuple[pl.DataFrame, set[tuple[str, str]]]:
    """Add traffic that no request causes: health checks, cache refreshes, batch jobs.

    ``pairs`` new (src, dst) pairs between existing endpoints, each not already an edge,
    get flows at ``rate_per_s`` each: periodic (a health check, with jitter) for
    ``periodic_share`` of them, Poisson for the rest, over the span of ``flows``.

    Returns
    -------
    (flows, noise_pairs)
        The flows with the background added, and the set of background pairs (which are
        not dependencies). Flows with no rows, or whose ``ts_us`` are all null, have no
        span to add traffic over and come back unchanged with no pairs.
    """
    rng = Streams(seed)["background"]
    nodes = sorted(set(flows["src"].unique().to_list()) | set(flows["dst"].unique().to_list()))
    existing = set(zip(flows["src"].to_list(), flows["dst"].to_list(), strict=True))
    receivers = set(flows["dst"].unique().to_list())  # an origin's traffic cannot be tested
    candidates = [
        (a, b)
        for a in nodes
        for b in nodes
        if a != b
        and a in receivers
        and b in receivers
        and (a, b) not in existing
        and (b, a) not in existing
    ]
    if not candidates or flows.height == 0:
        return flows, set()
    first, last = flows["ts_us"].min(), flows["ts_us"].max()
    if first is None or last is None:  # every ts_us is null: no span to add traffic over
        return flows, set()
    idx = rng.choice(len(candidates), size=min(pairs, len(candidates)), replace=False)
    # ts_us is a numeric column (flows tables have Int64 ts_us); polars types min/max as
    # any scalar
    lo, hi = int(cast(float, first)), int(cast(float, last))
    span_s = max(1e-6, (hi - lo) / 1e6)
    parts = []
    chosen = set()
    for j, i in enumerate(sorted(idx)):
        a, b = candidates[int(i)]
        chosen.add((a, b))
        if j < round(periodic_share * len(idx)):
            # a timer with its own period (not a multiple of any request rate) and jitter
            period = 1e6 / (rate_per_s * rng.uniform(0.7, 1.3))
            ts = lo + rng.uniform(0, period) + np.arange(int((hi - lo) / period)) * period
            ts = ts + rng.normal(0, 0.05 * period, len(ts))
        else:
            ts = np.sort(rng.uniform(lo, hi, rng.poisson(rate_per_s * span_s)))
        parts.append(
            pl.DataFrame(
                {
                    "ts_us": ts.astype(np.int64),
                    "src": a,
                    "dst": b,
                    "duration_us": rng.integers(200, 5000, len(ts)),
                }
            )
        )
    noise = pl.concat(parts).with_columns(
        pl.col("src").cast(pl.String), pl.col("dst").cast(pl.String)
    )
    base = flows.select("ts_us", "src", "dst", "duration_us")
    return _flows_frame(pl.concat([base, noise], how="vertical_relaxed")), chosen


def generate_flows(
    topo: Topology,
    traffic: Traffic | None = None,
    *,
    seed: int = 0,
    background_pairs: int = 5,
    background_rate_per_s: float = 5.0,
) -> tuple[pl.DataFrame, set[tuple[str, str]]]:
    """Flows of ``topo`` under ``traffic``: request flows plus unrelated background traffic.

    Returns
    -------
    (flows, true_edges)
        A canonical flows table and the true dependency edges (including ``client`` ->
        entry services); the background pairs are not among them.
    """
    spans = generate_spans(topo, traffic, seed=seed)
    flows = spans_to_flows(spans)
    truth = set(zip(flows["src"].to_list(), flows["dst"].to_list(), strict=True))
    flows, _ = add_background_flows(
        flows, pairs=background_pairs, rate_per_s=background_rate_per_s, seed=seed
    )
    return flows, truth
