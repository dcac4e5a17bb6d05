"""Spans models: trace arrivals, call-tree templates, per service:operation spans."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from fleetlab.cli import app
from fleetlab.traces import canonical
from fleetlab.workload import FitOptions, compare, fit, iter_chunks, load_model, save_model, synth
from fleetlab.workload._spans import forest, from_tree


def _spans(rows: list[tuple[str, str, str | None, str, str, int, int, str]]) -> pl.DataFrame:
    cols = ["trace_id", "span_id", "parent_id", "service", "operation", "start_us", "duration_us"]
    data = {c: [r[i] for r in rows] for i, c in enumerate([*cols, "status"])}
    return canonical(pl.LazyFrame(data), "spans").collect()


def shop_spans(n: int, *, seed: int, error_rate: float = 0.05) -> pl.DataFrame:
    """Traces of a small shop: 70 % browse (web -> catalog -> db), 30 % buy (web ->
    cart, pay -> bank); Poisson arrivals at 20/s; lognormal durations, children
    inside their parents; bank calls fail with ``error_rate``."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(50_000.0, n)).astype(np.int64)
    rows: list[tuple[str, str, str | None, str, str, int, int, str]] = []
    for i in range(n):
        tid = f"t{i}"
        root = int(rng.lognormal(np.log(20_000), 0.3))
        rows.append((tid, f"{tid}.0", None, "web", "GET /", int(t[i]), root, "ok"))
        if rng.random() < 0.7:
            c = int(root * rng.uniform(0.5, 0.9))
            s0 = int(t[i]) + int((root - c) * rng.uniform())
            rows.append((tid, f"{tid}.1", f"{tid}.0", "catalog", "list", s0, c, "ok"))
            d = int(c * rng.uniform(0.2, 0.8))
            rows.append((tid, f"{tid}.2", f"{tid}.1", "db", "query", s0 + (c - d) // 2, d, "ok"))
        else:
            a = int(root * rng.uniform(0.1, 0.4))
            b = int(root * rng.uniform(0.3, 0.5))
            rows.append((tid, f"{tid}.1", f"{tid}.0", "cart", "get", int(t[i]) + 10, a, "ok"))
            s1 = int(t[i]) + a + 20
            rows.append((tid, f"{tid}.2", f"{tid}.0", "pay", "charge", s1, b, "ok"))
            st = "error" if rng.random() < error_rate else "ok"
            rows.append((tid, f"{tid}.3", f"{tid}.2", "bank", "auth", s1 + 5, b // 2, st))
    return _spans(rows)


def test_canonical_templates_ignore_child_order_and_cover_the_traces() -> None:
    rows = []
    for i, order in enumerate([("b", "c"), ("c", "b"), ("b", "c")]):
        rows.append((f"t{i}", "r", None, "a", "x", 100 * i, 50, "ok"))
        for j, s in enumerate(order):
            rows.append((f"t{i}", f"s{j}", "r", s, "y", 100 * i + 10 * j, 10, "ok"))
    rows.append(("t3", "r", None, "a", "x", 300, 50, "ok"))
    rows.append(("t3", "s0", "r", "b", "y", 310, 10, "ok"))
    rows.append(("t3", "s1", "s0", "d", "z", 311, 5, "error"))
    df = _spans(rows)
    f = forest(df)
    assert len(set(f.keys)) == 2
    assert f.size.tolist() == [3, 3, 3, 3] and f.depth.tolist() == [2, 2, 2, 3]
    model, _ = fit(df, options=FitOptions(span_coverage=0.75))
    shapes = model.traces
    assert shapes is not None and shapes.distinct == 2 and shapes.traces == 4
    assert len(shapes.templates) == 1  # 3 of 4 traces cover 75 %
    assert shapes.templates[0].tree == ["a:x", "b:y", "c:y"]
    assert shapes.templates[0].share == pytest.approx(0.75)
    assert shapes.other_share == pytest.approx(0.25)
    full, _ = fit(df)
    assert full.traces is not None and len(full.traces.templates) == 2
    assert full.traces.templates[1].tree == ["a:x", ["b:y", "d:z"]]
    assert from_tree(full.traces.templates[1].tree) == f.keys[3]
    assert full.traces.nodes["d:z"].error_rate == 1.0
    assert full.traces.nodes["b:y"].error_rate == 0.0


def test_spans_synthesis_keeps_children_inside_parents_and_is_chunk_free() -> None:
    real = shop_spans(3000, seed=3)
    model, _ = fit(real, seed=0)
    a = model.sample(seed=5)
    b = pl.concat(list(iter_chunks(model, seed=5, chunk_rows=500)))
    assert a.equals(b)  # chunk size does not change the output
    assert not a.equals(model.sample(seed=6))
    assert a["span_id"].n_unique() == a.height
    p = a.filter(pl.col("parent_id").is_not_null()).join(
        a.select(
            pl.col("span_id").alias("parent_id"),
            pl.col("start_us").alias("ps"),
            pl.col("duration_us").alias("pd"),
            pl.col("trace_id").alias("pt"),
        ),
        on="parent_id",
        how="left",
    )
    assert p["ps"].null_count() == 0  # every parent exists
    assert (p["pt"] == p["trace_id"]).all()
    assert (p["start_us"] >= p["ps"]).all()
    assert (p["start_us"] + p["duration_us"] <= p["ps"] + p["pd"]).all()
    roots = a.filter(pl.col("parent_id").is_null())
    assert roots.height == a["trace_id"].n_unique()


def test_spans_round_trip_recovers_templates_errors_and_durations(tmp_path: Path) -> None:
    real = shop_spans(4000, seed=1, error_rate=0.2)
    model, _ = fit(real, seed=0)
    shapes = model.traces
    assert shapes is not None and len(shapes.templates) == 2
    assert shapes.templates[0].share == pytest.approx(0.7, abs=0.03)
    assert shapes.nodes["bank:auth"].error_rate == pytest.approx(0.2, abs=0.03)
    path = save_model(model, tmp_path / "spans.yaml")
    assert load_model(path) == model
    assert path.stat().st_size < 20_000  # small and readable
    assert "- web:GET /" in path.read_text() or "web:GET /" in path.read_text()
    out = synth(model, tmp_path / "s.parquet", seed=2)
    syn = pl.read_parquet(out["path"])
    assert syn.height == out["rows"] and syn.equals(model.sample(seed=2))
    cmp = compare(real, syn)
    rows = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert cmp.passed, cmp.metrics["failed"]
    assert rows[("template_tv", "")]["distance"] <= 0.05
    assert rows[("error_rate", "")]["distance"] <= 0.01
    for svc in ("web", "catalog", "db", "bank"):
        assert rows[("service_duration", svc)]["verdict"] == "pass"


def test_spans_round_trip_on_real_traceweaver_nodejs(shared_data: Path) -> None:
    from fleetlab import traces

    real = traces.load(
        shared_data / "traceweaver-deathstarbench" / "nodejs_microservices" / "node_load50.jsonl.gz"
    )
    model, _ = fit(real, seed=0)
    assert model.traces is not None and model.traces.traces == 1000
    cmp = compare(real, model.sample(seed=1))
    assert cmp.passed, cmp.metrics["failed"]
    rows = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert rows[("template_tv", "")]["distance"] == 0.0
    assert rows[("ks", "duration_us")]["distance"] <= 0.05


def test_spans_round_trip_on_real_nezha_online_boutique(nezha_spans: pl.DataFrame) -> None:
    model, _ = fit(nezha_spans, seed=0)
    shapes = model.traces
    assert shapes is not None
    # 502 traces of 15 shapes; 14 cover 99 %
    assert shapes.traces == 502 and shapes.distinct == 15 and len(shapes.templates) == 14
    assert shapes.other_share == pytest.approx(3 / 502, abs=1e-4)
    cmp = compare(nezha_spans, model.sample(seed=2))
    rows = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    for key in [("template_tv", ""), ("trace_size", ""), ("trace_depth", ""), ("error_rate", "")]:
        assert rows[key]["verdict"] == "pass", key
    assert rows[("ks", "duration_us")]["distance"] <= 0.05
    assert rows[("event_count", "")]["distance"] <= 0.1
    services = [r for r in cmp.table.to_dicts() if r["statistic"] == "service_duration"]
    assert len(services) == 8
    # every currencyservice GetCurrencyData / adservice getAds span ends after its parent:
    # fitted as free placement, they keep their own durations (KS was 0.08-0.10 nested)
    assert [r["field"] for r in services if r["verdict"] == "fail"] == []
    assert rows[("service_duration", "currencyservice")]["distance"] <= 0.05
    free = {k for k, n in shapes.nodes.items() if n.placement == "free"}
    assert free == {
        "currencyservice:hipstershop.CurrencyService/GetCurrencyData",
        "adservice:hipstershop.AdServiceImpl/getAds",
    }
    for k in free:
        assert shapes.nodes[k].overhang_share == 1.0 and shapes.nodes[k].early_share == 0.0
    for svc, share in (("currencyservice", 0.2924), ("adservice", 0.2237)):
        row = rows[("overhang_share", svc)]
        assert row["real"] == pytest.approx(share, abs=1e-3)
        assert row["distance"] <= 0.03 and row["verdict"] == "pass"
    assert all(
        r["verdict"] == "pass"
        for r in cmp.table.to_dicts()
        if r["statistic"] in ("overhang_share", "early_share")
    )


def test_cli_fits_synthesizes_and_compares_spans_and_flows(tmp_path: Path) -> None:
    from helpers import synthetic_flows

    runner = CliRunner()
    for name, frame in (
        ("spans", shop_spans(1500, seed=4)),
        ("flows", synthetic_flows(5000, seed=4)),
    ):
        real = tmp_path / f"{name}.parquet"
        frame.write_parquet(real)
        model = tmp_path / f"{name}.yaml"
        res = runner.invoke(app, ["workload", "fit", str(real), "-o", str(model), "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["table"] == name
        out = tmp_path / f"{name}-s.parquet"
        res = runner.invoke(app, ["workload", "synth", str(model), "--seed", "1", "-o", str(out)])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["workload", "compare", str(real), str(out), "--json"])
        assert res.exit_code == 0, res.output
        data = json.loads(res.stdout)
        assert data["table"] == name and data["fail"] == 0, data["failed"]


def async_spans(n: int, *, seed: int) -> pl.DataFrame:
    """Traces whose children do not all nest: ``api:call`` (lognormal ~10 ms) calls
    ``db:query`` (always inside it), ``worker:job`` (starts in its first half; 40 % are
    asynchronous and end 0.5-3.5 ms after it) and ``cache:get`` (a host whose clock is
    0.5-1 ms behind: starts before its parent, ends inside it); Poisson arrivals at 20/s."""
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(50_000.0, n)).astype(np.int64)
    rows: list[tuple[str, str, str | None, str, str, int, int, str]] = []
    for i in range(n):
        tid, t0 = f"a{i}", int(t[i])
        root = int(rng.lognormal(np.log(10_000), 0.3))
        rows.append((tid, f"{tid}.0", None, "api", "call", t0, root, "ok"))
        d = int(root * rng.uniform(0.2, 0.6))
        rows.append((tid, f"{tid}.1", f"{tid}.0", "db", "query", t0 + 100, d, "ok"))
        s = t0 + int(root * rng.uniform(0.0, 0.5))
        end = t0 + root
        if rng.random() < 0.4:  # asynchronous: outlives the request
            w = end - s + int(rng.uniform(500, 3_500))
        else:
            w = int((end - s) * rng.uniform(0.3, 0.95))
        rows.append((tid, f"{tid}.2", f"{tid}.0", "worker", "job", s, w, "ok"))
        skew = int(rng.uniform(500, 1_000))
        c = int(root * rng.uniform(0.05, 0.3))
        rows.append((tid, f"{tid}.3", f"{tid}.0", "cache", "get", t0 + 200 - skew, c, "ok"))
    return _spans(rows)


def test_children_that_leave_their_parents_keep_their_share_and_durations() -> None:
    from fleetlab.traces._spans_common import span_quality

    real = async_spans(3000, seed=7)
    model, _ = fit(real, seed=0)
    shapes = model.traces
    assert shapes is not None
    worker, cache, db = (shapes.nodes[k] for k in ("worker:job", "cache:get", "db:query"))
    assert worker.placement == "free" and worker.overhang_share == pytest.approx(0.4, abs=0.03)
    assert cache.placement == "free" and cache.early_share == 1.0 and cache.overhang_share == 0
    assert db.placement == "nested" and db.overhang_share == 0 and db.lead_us is None
    assert worker.lead_us is not None and cache.lead_us is not None
    assert cache.lead_us.quantiles is not None and max(cache.lead_us.quantiles) <= -300
    syn = model.sample(seed=3)
    q = span_quality(syn)
    assert q["unknown_parent"] == q["duplicate_span_ids"] == q["negative_duration"] == 0
    assert q["roots"] == q["traces"] and q["missing_start"] == q["missing_duration"] == 0
    # only the skewed cache calls start before their parents, as in the source (but the
    # first trace's, which would start before time 0 and is held at 0)
    cache_spans = syn.filter(pl.col("service") == "cache")
    assert q["starts_before_parent"] == cache_spans.filter(pl.col("start_us") > 0).height
    assert cache_spans.height - 1 <= q["starts_before_parent"] and syn["start_us"].min() == 0
    cmp = compare(real, syn)
    assert cmp.passed, cmp.metrics["failed"]
    rows = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert rows[("overhang_share", "worker")]["real"] == pytest.approx(0.4, abs=0.03)
    assert rows[("overhang_share", "worker")]["distance"] <= 0.03
    assert rows[("early_share", "cache")]["synth"] == pytest.approx(1.0, abs=1e-3)
    assert rows[("overhang_share", "db")]["synth"] == 0.0
    for svc in ("worker", "cache", "db"):
        assert rows[("service_duration", svc)]["distance"] <= 0.05
    # the nested child still lies inside its parent
    p = syn.filter(pl.col("service") == "db").join(
        syn.select(
            pl.col("span_id").alias("parent_id"),
            pl.col("start_us").alias("ps"),
            pl.col("duration_us").alias("pd"),
        ),
        on="parent_id",
    )
    assert (p["start_us"] >= p["ps"]).all()
    assert (p["start_us"] + p["duration_us"] <= p["ps"] + p["pd"]).all()


def test_hotel_server_spans_that_start_before_their_clients(hotel_spans: pl.DataFrame) -> None:
    """TraceWeaver hotel: 95 % / 92 % of reservation / search server spans start before
    the client span that calls them (clock skew); ``rate`` is bimodal (a cache hit of
    ~10 us or a lookup of ~4-12 ms) with the mode visible in its parent."""
    model, _ = fit(hotel_spans, seed=0)
    nodes = model.traces.nodes if model.traces is not None else {}
    res = nodes["reservation:/reservation.Reservation/CheckAvailability"]
    assert res.placement == "free" and res.early_share == pytest.approx(0.946, abs=1e-3)
    assert nodes["search:/search.Search/Nearby"].placement == "free"
    assert nodes["rate:/rate.Rate/GetRates"].coupling == "binned"
    cmp = compare(hotel_spans, model.sample(seed=1))
    assert cmp.passed, cmp.metrics["failed"]
    rows = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    # were 0.082-0.099 (rate) and 0.064-0.069 (reservation) against 0.061
    assert rows[("service_duration", "rate")]["distance"] <= 0.05
    assert rows[("service_duration", "reservation")]["distance"] <= 0.05
    assert rows[("early_share", "reservation")]["distance"] <= 0.03
