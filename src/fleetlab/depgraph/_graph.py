"""The dependency-graph object and its file formats (versioned node-link JSON, GraphML, DOT)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import networkx as nx

from fleetlab.errors import DataNotFoundError, FleetlabError, InputFormatError

#: version of the JSON layout written by :meth:`DependencyGraph.to_json`
JSON_VERSION = 1
_MAGIC = "fleetlab-depgraph"

GraphFormat = Literal["json", "graphml", "dot"]

#: edge attributes every mined edge carries, with their neutral values
EDGE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "calls": 0,
        "rate_per_s": 0.0,
        "p50_ms": math.nan,
        "p99_ms": math.nan,
        "mean_ms": math.nan,
        "error_rate": 0.0,
        "kind": "sync",
        "confidence": 1.0,
    }
)


@dataclass
class DependencyGraph:
    """A service dependency graph: who calls whom, how often, how slowly.

    Attributes
    ----------
    graph
        ``networkx.DiGraph`` whose nodes are services and whose edges go caller -> callee.
        Edge attributes: ``calls`` (int), ``rate_per_s`` (calls per second of the observed
        window), ``p50_ms``/``p99_ms``/``mean_ms`` (call latency in milliseconds, NaN when
        unknown), ``error_rate`` (share of calls that failed, 0..1), ``kind``
        (``'sync'`` or ``'async'``) and ``confidence`` (0..1; 1.0 for edges seen in traces).
        Mined from spans, edges also carry ``net_ms_mean``: the mean gap between the
        caller's client span and the callee's span (network and queueing), on calls made
        through a client span. Node attributes: ``spans``, ``traces`` (traces that touch
        the service), ``p50_ms`` and ``p99_ms`` (latency of the service's entry spans),
        ``self_ms_mean`` (exclusive time: span minus its children, per span),
        ``net_out_ms_mean`` (the part of it its client spans spend waiting beyond the
        callee's span, per span), ``net_in_ms_mean`` (that gap on the calls into it, per
        call; NaN when none came through a client span), ``error_rate``,
        ``traces_by_entry`` and ``entry`` (bool).
    entry_points
        Services where requests enter the system (roots of traces, or services that only
        receive traffic from outside).
    operations
        The operation graph (nodes ``"service:operation"``), same edge attributes; may be
        empty when the source had no operations (flows).
    meta
        Provenance and data-quality counts: ``source`` (``'spans'`` or ``'flows'``),
        ``window_s``, ``traces``, ``spans``, broken-trace counts and so on.
    """

    graph: nx.DiGraph
    entry_points: list[str] = field(default_factory=list)
    operations: nx.DiGraph = field(default_factory=nx.DiGraph)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def services(self) -> list[str]:
        """The services (nodes), sorted."""
        return sorted(self.graph.nodes)

    def edges(self) -> list[dict[str, Any]]:
        """Every edge as a dict ``{caller, callee, **attributes}``, sorted by caller, callee."""
        return [
            {"caller": u, "callee": v, **{k: d.get(k, EDGE_DEFAULTS.get(k)) for k in _edge_keys(d)}}
            for u, v, d in sorted(self.graph.edges(data=True), key=lambda e: (e[0], e[1]))
        ]

    def to_json(self) -> dict[str, Any]:
        """The graph as a versioned node-link JSON document (a dict; ``json.dumps`` it).

        Returns
        -------
        dict
            ``{"format": "fleetlab-depgraph", "version": 1, "entry_points": [...],
            "meta": {...}, "services": node-link, "operations": node-link}``; NaN becomes null.
        """
        return _clean(
            {
                "format": _MAGIC,
                "version": JSON_VERSION,
                "entry_points": list(self.entry_points),
                "meta": dict(self.meta),
                "services": nx.node_link_data(self.graph, edges="links"),
                "operations": nx.node_link_data(self.operations, edges="links"),
            }
        )

    @classmethod
    def from_json(cls, doc: dict[str, Any], *, source: str = "<json>") -> DependencyGraph:
        """Rebuild a graph from :meth:`to_json` output.

        Raises
        ------
        InputFormatError
            ``doc`` is not a fleetlab dependency graph, or its version is newer than this
            fleetlab understands.
        """
        if not isinstance(doc, dict) or doc.get("format") != _MAGIC:
            found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise InputFormatError(
                source,
                "not a fleetlab dependency graph",
                field="format",
                expected=repr(_MAGIC),
                found=found,
            )
        version = doc.get("version")
        if not isinstance(version, int) or version > JSON_VERSION:
            raise InputFormatError(
                source,
                "unsupported graph version",
                field="version",
                expected=f"an integer <= {JSON_VERSION}",
                found=version,
            )
        try:
            graph = _from_node_link(doc["services"])
            ops = _from_node_link(doc.get("operations") or {"nodes": [], "links": []})
        except (KeyError, TypeError, nx.NetworkXError) as exc:
            raise InputFormatError(
                source, f"malformed node-link data: {exc}", field="services"
            ) from exc
        for _, _, d in graph.edges(data=True):
            _restore_nan(d)
        for _, _, d in ops.edges(data=True):
            _restore_nan(d)
        for _, d in graph.nodes(data=True):
            _restore_nan(d)
        return cls(graph, list(doc.get("entry_points", [])), ops, dict(doc.get("meta") or {}))


def _edge_keys(d: dict[str, Any]) -> list[str]:
    return list(EDGE_DEFAULTS) + [k for k in d if k not in EDGE_DEFAULTS]


def _from_node_link(data: dict[str, Any]) -> nx.DiGraph:
    data = {"directed": True, "multigraph": False, "graph": {}, **data}
    return nx.node_link_graph(data, directed=True, multigraph=False, edges="links")


def _restore_nan(d: dict[str, Any]) -> None:
    for key in (
        "p50_ms",
        "p99_ms",
        "mean_ms",
        "self_ms_mean",
        "self_ms_p90",
        "net_in_ms_mean",
        "net_out_ms_mean",
    ):
        if key in d and d[key] is None:
            d[key] = math.nan


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _clean(value.item())
    return value


def read_graph(path: str | os.PathLike[str]) -> DependencyGraph:
    """Read a dependency graph: our JSON or GraphML, or Jaeger's dependency links.

    Parameters
    ----------
    path
        A ``.json`` file from :meth:`DependencyGraph.to_json`, a ``.graphml`` file, or a
        Jaeger ``/api/dependencies`` JSON array (``[{parent, child, callCount}]``; entry
        points are the services nobody calls).

    Returns
    -------
    DependencyGraph

    Raises
    ------
    DataNotFoundError
        ``path`` does not exist.
    InputFormatError
        The file is not a dependency graph (names the file and what was found).
    """
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"{p}: no such graph file")
    if p.suffix.lower() == ".graphml":
        try:
            g = nx.read_graphml(p)
        except Exception as exc:  # networkx raises several parser errors
            raise InputFormatError(p, f"not valid GraphML: {exc}") from exc
        dg = nx.DiGraph(g)
        entries = [n for n, d in dg.nodes(data=True) if d.get("entry")]
        meta = json.loads(dg.graph.pop("meta", "{}") or "{}")
        return DependencyGraph(dg, sorted(entries), nx.DiGraph(), meta)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        raise InputFormatError(p, f"not valid JSON: {exc}", row=line) from exc
    if isinstance(doc, list):
        return _from_jaeger_links(doc, source=str(p))
    return DependencyGraph.from_json(doc, source=str(p))


def _from_jaeger_links(doc: list[Any], *, source: str) -> DependencyGraph:
    """Jaeger's dependency links (``/api/dependencies``): ``[{parent, child, callCount}]``."""
    g = nx.DiGraph()
    for i, link in enumerate(doc, start=1):
        if not isinstance(link, dict) or not {"parent", "child"} <= set(link):
            raise InputFormatError(
                source,
                "not a Jaeger dependency link",
                row=i,
                expected="an object with parent, child, callCount",
                found=link,
            )
        calls = link.get("callCount", 0)
        if not isinstance(calls, int) or calls < 0:
            raise InputFormatError(
                source,
                "bad call count",
                row=i,
                field="callCount",
                expected="a non-negative integer",
                found=calls,
            )
        u, v = str(link["parent"]), str(link["child"])
        if u == v:
            continue
        attrs = {**EDGE_DEFAULTS, "calls": calls, "rate_per_s": math.nan}
        if g.has_edge(u, v):
            g.edges[u, v]["calls"] += calls
        else:
            g.add_edge(u, v, **attrs)
    entries = sorted(n for n in g if g.in_degree(n) == 0)
    for n in g:
        g.nodes[n]["entry"] = n in entries
    return DependencyGraph(g, entries, nx.DiGraph(), {"source": "jaeger-dependencies"})


def write_graph(
    graph: DependencyGraph,
    path: str | os.PathLike[str],
    *,
    format: GraphFormat | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``graph`` to ``path`` as JSON, GraphML or Graphviz DOT.

    Parameters
    ----------
    graph
        The graph to write.
    path
        Target file; written atomically (a temporary file renamed into place).
    format
        ``'json'`` (versioned node-link, round-trips exactly), ``'graphml'`` (service graph;
        the operation graph is left out) or ``'dot'`` (for Graphviz, write-only). Default:
        from the suffix, else JSON.
    overwrite
        Replace an existing file (the CLI's ``--force``).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    FleetlabError
        ``path`` exists and ``overwrite`` is false.
    """
    target = Path(path)
    fmt = format or {".graphml": "graphml", ".dot": "dot", ".gv": "dot"}.get(
        target.suffix.lower(), "json"
    )
    if target.exists() and not overwrite:
        raise FleetlabError(f"{target}: already exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        if fmt == "json":
            tmp.write_text(json.dumps(graph.to_json(), indent=1), encoding="utf-8")
        elif fmt == "graphml":
            nx.write_graphml(_graphml_ready(graph), tmp)
        elif fmt == "dot":
            tmp.write_text(to_dot(graph), encoding="utf-8")
        else:
            raise FleetlabError(f"unknown graph format {fmt!r}; expected json, graphml or dot")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _graphml_ready(graph: DependencyGraph) -> nx.DiGraph:
    g = nx.DiGraph()
    g.graph["meta"] = json.dumps(_clean(graph.meta))
    entries = set(graph.entry_points)
    for n, d in graph.graph.nodes(data=True):
        g.add_node(n, **{**_scalars(d), "entry": n in entries})
    for u, v, d in graph.graph.edges(data=True):
        g.add_edge(u, v, **_scalars(d))
    return g


def _scalars(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, bool | int | float | str):
            out[k] = v
        elif v is not None:
            out[k] = json.dumps(_clean(v))
    return out


def to_dot(graph: DependencyGraph) -> str:
    """The service graph in Graphviz DOT: edge labels give calls and p99 latency.

    Returns
    -------
    str
        A ``digraph`` whose entry points are drawn as double circles and async edges dashed.
    """
    lines = ["digraph dependencies {", "  rankdir=LR;", '  node [shape=box, fontname="Helvetica"];']
    entries = set(graph.entry_points)
    for n in sorted(graph.graph.nodes):
        shape = ", shape=doublecircle" if n in entries else ""
        lines.append(f"  {_dot_id(n)} [label={_dot_id(n)}{shape}];")
    for e in graph.edges():
        p99 = e["p99_ms"]
        label = f"{e['calls']} calls" + (f"\\np99 {p99:.1f} ms" if _finite(p99) else "")
        style = ", style=dashed" if e["kind"] == "async" else ""
        width = 1 + 3 * min(1.0, math.log10(1 + e["calls"]) / 6)
        lines.append(
            f"  {_dot_id(e['caller'])} -> {_dot_id(e['callee'])} "
            f'[label="{label}", penwidth={width:.2f}{style}];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _dot_id(name: str) -> str:
    return '"' + str(name).replace("\\", "\\\\").replace('"', '\\"') + '"'
