"""Mining the service graph from spans: golden numbers, pitfalls of real exports, invariants."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab import depgraph
from fleetlab.errors import InputFormatError

T0 = 1_700_000_000_000_000  # µs since the epoch


def _spans(rows: list[tuple]) -> pl.DataFrame:
    cols = [
        "trace_id",
        "span_id",
        "parent_id",
        "service",
        "operation",
        "start_us",
        "duration_us",
        "status",
        "kind",
    ]
    return pl.DataFrame(
        [dict(zip(cols, r, strict=True)) for r in rows],
        schema={c: (pl.Int64 if c in ("start_us", "duration_us") else pl.String) for c in cols},
    )


def _golden() -> pl.DataFrame:
    # two traces: fe -> api (client/server pair) -> db; in-service child span in api
    rows = []
    for t, (lat_api, lat_db, db_status) in enumerate([(4000, 1000, "ok"), (8000, 3000, "error")]):
        base = T0 + t * 1_000_000
        tid = f"t{t}"
        rows += [
            (tid, "root", None, "fe", "GET /", base, 10_000, "ok", "server"),
            (tid, "c1", "root", "fe", "call api", base + 100, lat_api, "ok", "client"),
            (tid, "s1", "c1", "api", "serve", base + 200, lat_api - 200, "ok", "server"),
            (tid, "in", "s1", "api", "local work", base + 300, 100, "ok", None),
            (tid, "c2", "s1", "api", "call db", base + 500, lat_db, db_status, "client"),
            (tid, "s2", "c2", "db", "query", base + 600, lat_db - 200, db_status, "server"),
        ]
    return _spans(rows)


def test_golden_edges_count_each_call_once() -> None:
    g = depgraph.mine_spans(_golden())
    assert sorted(g.graph.edges) == [("api", "db"), ("fe", "api")]
    assert not any(u == v for u, v in g.graph.edges)  # in-service spans make no self-loop
    fe_api = g.graph.edges["fe", "api"]
    assert fe_api["calls"] == 2
    # latency of a call is the caller's client span: 4 ms and 8 ms
    assert fe_api["p50_ms"] == pytest.approx(6.0)
    assert fe_api["p99_ms"] == pytest.approx(4.0 + 0.99 * 4.0)
    api_db = g.graph.edges["api", "db"]
    assert api_db["error_rate"] == pytest.approx(0.5)
    assert api_db["kind"] == "sync"
    # window: first start to last end = 1 s + 10 ms
    assert fe_api["rate_per_s"] == pytest.approx(2 / 1.01)
    assert g.entry_points == ["fe"]
    assert g.meta["traces"] == 2
    assert g.graph.nodes["db"]["traces"] == 2
    op = g.operations
    assert op.edges["fe:call api", "api:serve"]["calls"] == 2


def test_lazy_and_eager_give_the_same_graph() -> None:
    a = depgraph.mine_spans(_golden())
    b = depgraph.mine_spans(_golden().lazy())
    assert a.edges() == b.edges()


def test_async_by_kind_and_by_outliving_the_parent_despite_skew() -> None:
    rows = [
        ("t", "r", None, "orders", "place", T0, 5_000, "ok", "server"),
        ("t", "p", "r", "orders", "publish", T0 + 100, 50, "ok", "producer"),
        ("t", "c", "p", "mailer", "consume", T0 + 400, 20_000, "ok", "consumer"),
        # skewed child: starts 3 ms before its parent but is shorter: stays sync
        ("t", "k", "r", "stock", "reserve", T0 - 3_000, 2_000, "ok", "server"),
    ]
    g = depgraph.mine_spans(_spans(rows))
    assert g.graph.edges["orders", "mailer"]["kind"] == "async"
    assert g.graph.edges["orders", "stock"]["kind"] == "sync"
    assert g.meta["quality"]["children_before_parent"] == 1


def test_bad_input_is_counted_not_crashed() -> None:
    df = _golden()
    dup = pl.concat([df, df.head(3)])  # Nezha: a trace written twice
    neg = dup.with_columns(
        pl.when(pl.col("span_id") == "s2")
        .then(-5)
        .otherwise(pl.col("duration_us"))
        .alias("duration_us")
    )
    orphan = _spans(
        [
            ("t9", "x", "missing", "api", "serve", T0, 100, "ok", "server"),
            ("t9", "y", "x", "api", "work", T0 + 10, 50, "ok", None),
        ]
    )
    ns = _spans([("t8", "a", None, "fe", "GET /", (T0 + 5) * 1000, 9_000_000, "ok", "server")])
    g = depgraph.mine_spans(pl.concat([neg, orphan, ns]))
    q = g.meta["quality"]
    assert q["duplicate_rows_dropped"] == 3
    assert q["negative_durations"] == 2  # s2 in both traces
    assert q["orphan_spans"] == 1 and q["broken_traces"] == 1
    assert q["rescaled_clock_units"] == 1
    assert g.graph.edges["fe", "api"]["calls"] == 2  # duplicates did not double-count
    # a negative duration keeps the call but not its latency
    assert g.graph.edges["api", "db"]["calls"] == 2
    assert q["negative_or_missing_latency_calls"] == 0  # db latency comes from client spans


def test_zipkin_shared_ids_become_a_client_server_pair() -> None:
    rows = [
        ("t", "a", None, "web", "get", T0, 10_000, "ok", "server"),
        ("t", "b", "a", "web", "post", T0 + 100, 8_000, "ok", "client"),
        ("t", "b", "a", "api", "post", T0 + 300, 7_000, "ok", "server"),  # shared id
        ("t", "c", "b", "api", "query", T0 + 400, 1_000, "ok", "client"),
        ("t", "d", "c", "db", "select", T0 + 450, 800, "ok", "server"),
    ]
    g = depgraph.mine_spans(_spans(rows))
    assert sorted(g.graph.edges) == [("api", "db"), ("web", "api")]
    assert g.meta["quality"]["shared_client_server_ids"] == 1


def test_peer_service_of_leaf_client_spans_is_an_edge() -> None:
    df = _spans(
        [
            ("t", "a", None, "app", "get", T0, 5_000, "ok", "server"),
            ("t", "b", "a", "app", "SELECT", T0 + 10, 1_000, "ok", "client"),
        ]
    )
    df = df.with_columns(
        pl.when(pl.col("span_id") == "b")
        .then(pl.lit("mysql"))
        .otherwise(None)
        .alias("peer_service")
    )
    g = depgraph.mine_spans(df)
    assert list(g.graph.edges) == [("app", "mysql")]


def test_missing_column_names_the_column() -> None:
    with pytest.raises(InputFormatError, match="parent_id"):
        depgraph.mine_spans(_golden().drop("parent_id"), source="x.parquet")


@pytest.mark.parametrize("name", sorted(depgraph.TOPOLOGIES))
def test_generated_topologies_are_mined_exactly(name: str) -> None:
    topo = depgraph.topology(name)
    spans = depgraph.generate_spans(topo, depgraph.Traffic(rate_per_s=40, duration_s=10), seed=3)
    g = depgraph.mine_spans(spans)
    assert set(g.graph.edges) == topo.edges()
    assert g.entry_points == sorted(topo.entry)
    async_true = {(s.name, c.callee) for s in topo.services for c in s.calls if c.kind == "async"}
    async_mined = {(u, v) for u, v, d in g.graph.edges(data=True) if d["kind"] == "async"}
    assert async_mined == async_true


def test_generator_is_deterministic() -> None:
    topo = depgraph.topology("fanout")
    tr = depgraph.Traffic(rate_per_s=20, duration_s=5)
    assert depgraph.generate_spans(topo, tr, seed=1).equals(
        depgraph.generate_spans(topo, tr, seed=1)
    )
    assert not depgraph.generate_spans(topo, tr, seed=1).equals(
        depgraph.generate_spans(topo, tr, seed=2)
    )


@st.composite
def _random_trees(draw: st.DrawFn) -> pl.DataFrame:
    rows = []
    n_traces = draw(st.integers(1, 4))
    for t in range(n_traces):
        n = draw(st.integers(1, 12))
        services = [draw(st.sampled_from("abcd")) for _ in range(n)]
        for i in range(n):
            parent = None if i == 0 else str(draw(st.integers(0, i - 1)))
            rows.append((f"t{t}", str(i), parent, services[i], "op", T0 + 10 * i, 1000, "ok", None))
    return _spans(rows)


@settings(max_examples=60, deadline=None)
@given(_random_trees())
def test_calls_equal_cross_service_links(spans: pl.DataFrame) -> None:
    g = depgraph.mine_spans(spans)
    svc = {(r["trace_id"], r["span_id"]): r["service"] for r in spans.iter_rows(named=True)}
    cross = sum(
        1
        for r in spans.iter_rows(named=True)
        if r["parent_id"] is not None and svc[(r["trace_id"], r["parent_id"])] != r["service"]
    )
    assert sum(d["calls"] for _, _, d in g.graph.edges(data=True)) == cross
    assert all(u != v for u, v in g.graph.edges)
    for _, _, d in g.graph.edges(data=True):
        assert d["p50_ms"] <= d["p99_ms"] or math.isnan(d["p50_ms"])


@st.composite
def _trees_with_gaps(draw: st.DrawFn) -> pl.DataFrame:
    """Random traces with shuffled rows, orphans (missing parents), "root" markers and
    varied durations: what the parent attachment and the exclusive times must survive."""
    rows = []
    for t in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 10))
        for i in range(n):
            parent = None if i == 0 else str(draw(st.integers(0, i - 1)))
            if i and draw(st.integers(0, 9)) == 0:
                parent = draw(st.sampled_from(["99", "root"]))  # orphan or "no parent"
            dur = draw(st.integers(0, 5000))
            svc = draw(st.sampled_from("abc"))
            rows.append((f"t{t}", str(i), parent, svc, f"op{i % 2}", T0 + i, dur, "ok", "server"))
    order = draw(st.permutations(range(len(rows))))
    return _spans([rows[i] for i in order])


@settings(max_examples=60, deadline=None)
@given(_trees_with_gaps())
def test_parents_and_exclusive_times_match_a_per_span_reference(spans: pl.DataFrame) -> None:
    frame, _ = depgraph.clean_spans(spans)
    by_id = {(r["trace_id"], r["span_id"]): r for r in spans.iter_rows(named=True)}
    kids: dict[tuple[str, str], int] = {}
    children: dict[tuple[str, str], list[dict]] = {}
    for r in frame.iter_rows(named=True):  # row order is the input's
        p = by_id.get((r["trace_id"], r["parent_id"])) if r["parent_id"] else None
        assert r["p_service"] == (p["service"] if p else None)
        assert r["p_operation"] == (p["operation"] if p else None)
        assert r["p_duration_us"] == (p["duration_us"] if p else None)
        if p is not None:
            key = (p["trace_id"], p["span_id"])
            kids[key] = kids.get(key, 0) + r["duration_us"]
            children.setdefault(key, []).append(r)

    def wrapped_gap(key: tuple[str, str]) -> int | None:
        """A span whose only child is in another service: its duration minus the child's."""
        ch = children.get(key, [])
        if len(ch) != 1 or ch[0]["service"] == by_id[key]["service"]:
            return None
        return max(0, by_id[key]["duration_us"] - ch[0]["duration_us"])

    assert frame["span_id"].to_list() == spans["span_id"].to_list()
    g = depgraph.mine_spans(spans)
    for svc in g.graph.nodes:
        own = [r for r in spans.iter_rows(named=True) if r["service"] == svc]
        excl = sum(
            r["duration_us"] - min(kids.get((r["trace_id"], r["span_id"]), 0), r["duration_us"])
            for r in own
        )
        assert g.graph.nodes[svc]["self_ms_mean"] == pytest.approx(excl / len(own) / 1000)
        out = [wrapped_gap((r["trace_id"], r["span_id"])) for r in own]
        net_out = sum(x for x in out if x is not None) / len(own) / 1000
        assert g.graph.nodes[svc]["net_out_ms_mean"] == pytest.approx(net_out)
        into = [
            wrapped_gap((r["trace_id"], r["parent_id"]))
            for r in own
            if r["parent_id"] and (r["trace_id"], r["parent_id"]) in by_id
        ]
        into = [x for x in into if x is not None]
        got = g.graph.nodes[svc]["net_in_ms_mean"]
        if into:
            assert got == pytest.approx(sum(into) / len(into) / 1000)
        else:
            assert math.isnan(got)
        assert g.graph.nodes[svc]["traces"] == len({r["trace_id"] for r in own})


@st.composite
def _messy_tables(draw: st.DrawFn) -> pl.DataFrame:
    """Random traces with what the lean scan must repair like the string path: self
    parents, empty and "root"/"NULL" parent markers, "0" as a real span id (the first span
    of a trace, sometimes: its children then name parent "0"), missing trace ids,
    negative durations, ms and ns start times among µs ones, upper-case kinds."""
    rows = []
    for t in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 8))
        for i in range(n):
            sid = "0" if i == 0 and draw(st.booleans()) else str(i)
            parent = None if i == 0 else str(draw(st.integers(0, i - 1)))
            bad = draw(st.integers(0, 11))
            if bad == 0:
                parent = draw(st.sampled_from(["", "root", "NULL", "99", sid]))
            start = T0 + i * 10
            if bad == 1:
                start = start // 1000  # milliseconds
            elif bad == 2:
                start = start * 1000  # nanoseconds
            dur = -5 if bad == 3 else draw(st.integers(0, 5000))
            trace = None if bad == 4 else f"t{t}"
            kind = draw(st.sampled_from(["server", "CLIENT", "Producer", None]))
            status = draw(st.sampled_from(["ok", "ERROR", "500", None]))
            svc = draw(st.sampled_from("abc"))
            rows.append((trace, sid, parent, svc, f"op{i % 3}", start, dur, status, kind))
    return _spans(rows)


@settings(max_examples=30, deadline=None)
@given(_messy_tables())
def test_lean_scan_cleans_like_the_string_path(spans: pl.DataFrame) -> None:
    from fleetlab.depgraph._clean import clean_spans_indexed

    slow, q_slow, pi_slow = clean_spans_indexed(spans)
    lean, q_lean, pi_lean = clean_spans_indexed(spans, lean=True)
    assert q_lean == q_slow
    assert pi_lean.to_list() == pi_slow.to_list()
    for c in ("k", "pk", "tk", "start_us", "duration_us", "end_us", "is_error", "p_start_us"):
        assert lean[c].to_list() == slow[c].to_list(), c
    for c in ("service", "operation", "kind", "p_service", "p_operation", "p_kind"):
        assert lean[c].cast(pl.String).to_list() == slow[c].to_list(), c
    assert "trace_id" not in lean.columns  # the id strings never reach the lean frame
    mined = depgraph.mine_spans(spans).meta["quality"]  # mine_spans takes the lean path
    assert {k: mined[k] for k in q_slow} == q_slow


ALIBABA_CSV = """traceid,timestamp,rpcid,um,rpctype,dm,interface,rt
T1,1000,0,USER,http,frontend,/home,50
T1,1001,0.1,frontend,rpc,cart,get,20
T1,1002,0.1,frontend,rpc,cart,get,-18
T1,1005,0.2,frontend,rpc,catalog,list,25
T1,1006,0.2.1,catalog,db,mysql,select,5
T2,2000,0.3,frontend,rpc,cart,get,30
T2,2003,0.3.1,cart,mc,redis,get,2
"""


def test_alibaba_call_graph_counts_each_rpc_once_and_keeps_broken_edges(tmp_path) -> None:
    from fleetlab import traces

    path = tmp_path / "MSCallGraph_0.csv"
    path.write_text(ALIBABA_CSV)
    g = depgraph.mine_spans(traces.load(path))
    # the rpc recorded from both sides (rt 20 and -18) is one call; T2 lost its root (rpcid 0)
    # but its rows name their caller, so frontend -> cart is still seen twice
    assert dict(((u, v), c) for u, v, c in g.graph.edges(data="calls")) == {
        ("frontend", "cart"): 2,
        ("frontend", "catalog"): 1,
        ("catalog", "mysql"): 1,
        ("cart", "redis"): 1,
    }
    assert g.meta["quality"]["orphan_spans"] == 1 and g.meta["quality"]["broken_traces"] == 1
    assert g.entry_points == ["frontend"]
    assert g.graph.edges["frontend", "cart"]["p50_ms"] == pytest.approx(25.0)


def test_topology_from_yaml_and_its_errors(tmp_path) -> None:
    from fleetlab.errors import ConfigError

    good = tmp_path / "t.yaml"
    good.write_text(
        "name: mine\nentry: {web: 1.0}\nservices:\n  - name: web\n"
        "    calls: [{callee: db, kind: async}]\n  - name: db\n"
    )
    topo = depgraph.topology(str(good))
    assert topo.edges() == {("web", "db")}
    g = depgraph.mine_spans(depgraph.generate_spans(topo, depgraph.Traffic(duration_s=2), seed=0))
    assert g.graph.edges["web", "db"]["kind"] == "async"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nentry: {web: 1}\nservices:\n  - name: web\n    work_ms: -1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: field services\.0\.work_ms"):
        depgraph.topology(str(bad))
    with pytest.raises(ConfigError, match="unknown topology"):
        depgraph.topology("nope")


def test_wrong_column_type_names_file_column_and_value() -> None:
    bad = _golden().with_columns(pl.col("start_us").cast(pl.String))
    bad = bad.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit("abc"))
        .otherwise(pl.col("start_us"))
        .alias("start_us")
    )
    with pytest.raises(InputFormatError, match=r"x\.csv.*start_us.*abc"):
        depgraph.mine_spans(bad, source="x.csv")
