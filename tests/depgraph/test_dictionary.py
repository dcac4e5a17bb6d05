"""Spans Parquet with dictionary-encoded names (what ``traces.convert`` writes) mines exactly
like String input; traces per service and per entry point match a per-span reference."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab import depgraph, traces
from fleetlab.depgraph._clean import clean_spans_indexed

T0 = 1_700_000_000_000_000  # µs since the epoch
COLS = ("trace_id", "span_id", "parent_id", "service", "operation", "start_us", "duration_us")
NAMES = ("status", "kind", "peer_service")


def _frame(rows: list[tuple]) -> pl.DataFrame:
    cols = (*COLS, *NAMES)
    return pl.DataFrame(
        [dict(zip(cols, r, strict=True)) for r in rows],
        schema={c: (pl.Int64 if c in ("start_us", "duration_us") else pl.String) for c in cols},
    )


@st.composite
def _tables(draw: st.DrawFn) -> pl.DataFrame:
    """Random traces, rows interleaved across traces: one or two roots per trace, orphans
    (a parent id nobody has), several entry services, error statuses, client/server kinds,
    leaf calls to a ``peer_service``."""
    rows = []
    for t in range(draw(st.integers(1, 5))):
        n = draw(st.integers(1, 9))
        for i in range(n):
            parent = None if i == 0 else str(draw(st.integers(0, i - 1)))
            shape = draw(st.integers(0, 14))
            if i and shape == 0:
                parent = None  # a second root in the trace
            elif i and shape == 1:
                parent = "missing"  # an orphan
            svc = draw(st.sampled_from("abcd"))
            kind = draw(st.sampled_from(["server", "client", "producer", None]))
            status = draw(st.sampled_from(["ok", "ok", "error", "unset"]))
            peer = draw(st.sampled_from([None, None, "db", svc]))
            start = T0 + 1000 * t + 10 * i
            rows.append(
                (
                    f"t{t}",
                    str(i),
                    parent,
                    svc,
                    f"op{i % 3}",
                    start,
                    5000 - 100 * i,
                    status,
                    kind,
                    peer,
                )
            )
    order = draw(st.permutations(range(len(rows))))
    return _frame([rows[i] for i in order])


def _doc(g: depgraph.DependencyGraph) -> str:
    """The whole graph, canonically ordered (JSON: NaN as null)."""
    doc = g.to_json()
    for part in ("services", "operations"):
        doc[part]["nodes"].sort(key=lambda n: n["id"])
        doc[part]["links"].sort(key=lambda e: (e["source"], e["target"]))
    return json.dumps(doc, sort_keys=True)


def _reference_traces(spans: pl.DataFrame) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Per service: traces touching it, and (for traces with one root) by the root's service."""
    rows = list(spans.iter_rows(named=True))
    touched: dict[str, set[str]] = {}
    roots: dict[str, list[str]] = {}
    for r in rows:
        touched.setdefault(r["service"], set()).add(r["trace_id"])
        if r["parent_id"] is None:
            roots.setdefault(r["trace_id"], []).append(r["service"])
    by_entry: dict[str, dict[str, int]] = {}
    for svc, tids in touched.items():
        for tid in tids:
            if len(roots.get(tid, [])) == 1:
                entry = roots[tid][0]
                by_entry.setdefault(svc, {})[entry] = by_entry.get(svc, {}).get(entry, 0) + 1
    return {s: len(t) for s, t in touched.items()}, by_entry


@settings(max_examples=25, deadline=None)
@given(_tables())
def test_dictionary_parquet_mines_like_strings(tmp_path_factory, spans: pl.DataFrame) -> None:
    tmp = tmp_path_factory.mktemp("dict")
    old = tmp / "old.parquet"
    spans.write_parquet(old)  # String names: the layout written before
    new = tmp / "new.parquet"
    traces.convert(old, new)
    assert pa.types.is_dictionary(pq.read_schema(new).field("service").type)
    fast = depgraph.mine_spans(pl.scan_parquet(new), source=str(new))
    assert _doc(fast) == _doc(depgraph.mine_spans(spans))
    assert _doc(fast) == _doc(depgraph.mine_spans(pl.scan_parquet(old)))
    assert _doc(fast) == _doc(depgraph.mine_spans(traces.load(new)))
    # the CLI's path: mine_file reads the codes of a converted file, Strings of an old one
    assert _doc(depgraph.mine_file(new)) == _doc(fast)
    assert _doc(depgraph.mine_file(old)) == _doc(depgraph.mine_spans(spans, source=str(old)))
    slow = depgraph.mine_spans(spans, trace_stats=False)
    assert _doc(depgraph.mine_spans(pl.scan_parquet(new), trace_stats=False)) == _doc(slow)
    # the lean frames agree column by column, names compared as strings
    fa, qa, pa_ = clean_spans_indexed(spans, lean=True)
    fb, qb, pb = clean_spans_indexed(pl.scan_parquet(new), lean=True)
    assert qa == qb and pa_.to_list() == pb.to_list()
    for c in fa.columns:
        assert fa[c].cast(pl.String).to_list() == fb[c].cast(pl.String).to_list(), c
    # traces per service and per entry point against a per-span reference
    want, want_by_entry = _reference_traces(spans)
    assert {s: fast.graph.nodes[s]["traces"] for s in want} == want
    one_root = (
        all(
            n == 1
            for n in spans.filter(pl.col("parent_id").is_null())["trace_id"].value_counts()["count"]
        )
        and spans.filter(pl.col("parent_id").is_null())["trace_id"].n_unique()
        == spans["trace_id"].n_unique()
    )
    if one_root:
        got = {s: fast.graph.nodes[s].get("traces_by_entry", {}) for s in want}
        assert got == {s: want_by_entry.get(s, {}) for s in want}


def test_parent_cycle_still_counts_traces() -> None:
    """Parent links that loop (x -> y -> x, next to a root) neither hang nor miscount."""
    rows = [
        ("t1", "r", None, "a", "op", T0, 100, "ok", None, None),
        ("t1", "x", "y", "b", "op", T0 + 1, 50, "ok", None, None),
        ("t1", "y", "x", "c", "op", T0 + 2, 40, "ok", None, None),
        ("t2", "r", None, "a", "op", T0 + 10, 100, "ok", None, None),
        ("t2", "s", "r", "b", "op", T0 + 11, 60, "ok", None, None),
    ]
    spans = _frame(rows)
    _, q, pi = clean_spans_indexed(spans, lean=True)
    assert q["orphan_spans"] == 0 and q["root_spans"] == q["traces"] == 2
    assert pi.to_list() == [None, 2, 1, None, 3]  # x and y are each other's parent
    g = depgraph.mine_spans(spans)
    assert {s: g.graph.nodes[s]["traces"] for s in "abc"} == {"a": 2, "b": 2, "c": 1}
    assert g.graph.nodes["b"]["traces_by_entry"] == {"a": 2}


def test_golden_traces_by_entry_with_two_entry_points(tmp_path: Path) -> None:
    """Two entry services sharing a backend: per-entry trace counts, from a converted file."""
    rows = []
    for t in range(5):
        entry = "web" if t < 3 else "mobile"
        rows += [
            (f"t{t}", "1", None, entry, "GET", T0 + t, 900, "ok", "server", None),
            (f"t{t}", "2", "1", "cart", "get", T0 + t + 1, 500, "ok", "server", None),
            (
                f"t{t}",
                "3",
                "2",
                "db",
                "q",
                T0 + t + 2,
                100,
                "error" if t == 4 else "ok",
                "server",
                None,
            ),
        ]
        if t == 0:  # web calls the db directly once
            rows.append((f"t{t}", "4", "1", "db", "q", T0 + t + 3, 50, "ok", "server", None))
    src = tmp_path / "spans.parquet"
    _frame(rows).write_parquet(src)
    out = tmp_path / "canonical.parquet"
    traces.convert(src, out)
    g = depgraph.mine_spans(pl.scan_parquet(out))
    nodes = g.graph.nodes
    assert g.entry_points == ["mobile", "web"]
    assert nodes["db"]["traces"] == 5 and nodes["db"]["spans"] == 6
    assert nodes["db"]["traces_by_entry"] == {"web": 3, "mobile": 2}
    assert nodes["cart"]["traces_by_entry"] == {"web": 3, "mobile": 2}
    assert nodes["web"]["traces_by_entry"] == {"web": 3}
    assert g.graph.edges["web", "db"]["calls"] == 1
    assert g.graph.edges["cart", "db"]["calls"] == 5
    assert g.graph.edges["cart", "db"]["error_rate"] == 0.2
    assert g.graph.edges["cart", "db"]["p50_ms"] == 0.1
    assert not math.isnan(g.graph.nodes["db"]["self_ms_mean"])
    assert g.meta["quality"]["traces"] == 5 and g.meta["quality"]["calls"] == 11


def test_conform_keeps_dictionary_columns_only_when_asked(tmp_path: Path) -> None:
    src, out = tmp_path / "s.parquet", tmp_path / "c.parquet"
    _frame([("t", "0", None, "a", "op", T0, 10, "ok", "server", None)]).write_parquet(src)
    traces.convert(src, out)
    scan = pl.scan_parquet(out)
    assert traces.conform(scan, "spans").collect_schema()["service"] == pl.String
    kept = traces.conform(scan, "spans", keep_dictionary=True).collect()
    assert kept.schema["service"] == pl.Categorical and kept.schema["trace_id"] == pl.String
    # a String file stays String either way
    assert (
        traces.conform(pl.scan_parquet(src), "spans", keep_dictionary=True).collect_schema()[
            "service"
        ]
        == pl.String
    )
