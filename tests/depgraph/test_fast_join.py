"""The packed-key parent join and the Categorical fast read of ``mine_spans``."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab import depgraph
from fleetlab.depgraph._clean import _attach_parents, clean_spans_indexed

_U64 = 2**64 - 1


def _frame(keys: list[int], parents: list[int | None]) -> pl.DataFrame:
    """A minimal keyed frame: the columns ``_attach_parents`` reads."""
    n = len(keys)
    return pl.DataFrame(
        {
            "k": pl.Series(keys, dtype=pl.UInt64),
            "pk": pl.Series(parents, dtype=pl.UInt64),
            "service": [f"s{i % 3}" for i in range(n)],
            "operation": [f"o{i}" for i in range(n)],
            "start_us": list(range(n)),
            "duration_us": [10 * i for i in range(n)],
            "kind": ["server"] * n,
            "is_error": [i % 2 == 0 for i in range(n)],
        }
    )


@st.composite
def _colliding_keys(draw: st.DrawFn) -> tuple[list[int], list[int | None]]:
    """Distinct 64-bit keys, many sharing their high bits (only the low bits, which the
    packed sort replaces by row numbers, tell them apart), and parent keys that hit a
    span, miss every span, or are null."""
    n = draw(st.integers(1, 40))
    bits = max(1, (n - 1).bit_length())
    highs = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    lows = draw(st.lists(st.integers(0, (1 << bits) - 1), min_size=n, max_size=n))
    keys = sorted({(h << 60) | (h << bits) | lo for h, lo in zip(highs, lows, strict=True)})
    keys = draw(st.permutations(keys))
    parents: list[int | None] = []
    for _ in keys:
        pick = draw(st.integers(0, 2))
        if pick == 0:
            parents.append(None)
        elif pick == 1:
            parents.append(draw(st.sampled_from(keys)))
        else:  # high bits of a span, low bits of none: must not match
            k = draw(st.sampled_from(keys))
            miss = k ^ 1
            parents.append(None if miss in keys else miss)
    return list(keys), parents


@settings(max_examples=150, deadline=None)
@given(_colliding_keys())
def test_packed_join_matches_a_dict_lookup(case: tuple[list[int], list[int | None]]) -> None:
    keys, parents = case
    got = _attach_parents(_frame(keys, parents), unique_only=True)
    assert got is not None  # keys are distinct
    frame, pi = got
    row_of = {k: i for i, k in enumerate(keys)}
    want = [row_of.get(p) if p is not None else None for p in parents]
    assert pi.to_list() == want
    services = frame["service"].to_list()
    assert frame["p_service"].to_list() == [services[w] if w is not None else None for w in want]
    assert frame["p_duration_us"].to_list() == [10 * w if w is not None else None for w in want]


def test_packed_join_reports_repeated_keys_even_among_colliding_high_bits() -> None:
    # rows 0, 2, 3 share the high bits; rows 0 and 3 are the same key
    keys = [(5 << 40) | 1, 7 << 40, (5 << 40) | 2, (5 << 40) | 1]
    assert _attach_parents(_frame(keys, [None, keys[0], None, None]), unique_only=True) is None
    # a repeated key whose neighbours in the sort differ
    keys = [1 << 50, 2 << 50, 1 << 50]
    assert _attach_parents(_frame(keys, [None, None, None]), unique_only=True) is None
    # distinct keys that agree in everything but the low bits are not repeats
    keys = [(3 << 50) | 1, (3 << 50) | 2, (3 << 50) | 3]
    got = _attach_parents(_frame(keys, [None, keys[0], keys[1]]), unique_only=True)
    assert got is not None
    assert got[1].to_list() == [None, 0, 1]


def test_empty_and_single_span_tables() -> None:
    got = _attach_parents(_frame([], []), unique_only=True)
    assert got is not None and got[1].len() == 0
    got = _attach_parents(_frame([9], [9 ^ 1]), unique_only=True)
    assert got is not None and got[1].to_list() == [None]


def _spans(n_traces: int) -> pl.DataFrame:
    g = depgraph.generate_spans(
        depgraph.topology("hotel-reservation"),
        depgraph.Traffic(rate_per_s=200, duration_s=1),
        seed=3,
    )
    return g.filter(pl.col("trace_id").is_in(g["trace_id"].unique(maintain_order=True)[:n_traces]))


def test_categorical_input_reads_like_strings(tmp_path) -> None:
    """A table whose names are Categorical already (a Parquet file written from
    Categorical columns) is read without a round trip through String and mines the same
    graph as the String table."""
    spans = _spans(150)
    names = ["service", "operation", "status", "kind", "peer_service"]
    path = tmp_path / "cat.parquet"
    spans.with_columns(pl.col(names).cast(pl.Categorical)).write_parquet(path)
    assert pl.scan_parquet(path).collect_schema()["service"] == pl.Categorical
    a = depgraph.mine_spans(spans)
    b = depgraph.mine_spans(pl.scan_parquet(path))
    assert a.meta == b.meta
    assert a.edges() == b.edges()
    assert sorted(a.operations.edges(data=True)) == sorted(b.operations.edges(data=True))
    fa, qa, pa = clean_spans_indexed(spans, lean=True)
    fb, qb, pb = clean_spans_indexed(pl.scan_parquet(path), lean=True)
    assert qa == qb and pa.to_list() == pb.to_list()
    for c in fa.columns:
        assert fa[c].cast(pl.String).to_list() == fb[c].cast(pl.String).to_list(), c


def test_traces_per_service_same_for_trace_ordered_and_interleaved_rows() -> None:
    """Rows grouped by trace count the traces of a service as runs; interleaved rows use
    a set of trace keys: both give the same node attributes."""
    spans = _spans(200)
    by_trace = spans.sort("trace_id", "start_us", maintain_order=True)
    shuffled = by_trace.sample(fraction=1.0, shuffle=True, seed=11)
    a, b = depgraph.mine_spans(by_trace), depgraph.mine_spans(shuffled)
    want = {s: spans.filter(pl.col("service") == s)["trace_id"].n_unique() for s in a.services}
    assert {s: a.graph.nodes[s]["traces"] for s in a.services} == want
    assert {s: b.graph.nodes[s]["traces"] for s in b.services} == want
    for key in ("spans", "traces_by_entry", "entry"):
        assert {s: a.graph.nodes[s].get(key) for s in a.services} == {
            s: b.graph.nodes[s].get(key) for s in b.services
        }, key
