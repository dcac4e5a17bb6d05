"""Flows models: the (src, dst) pair as the entity, round trips on real and synthetic flows."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from helpers import flows_from_spans, synthetic_flows

from fleetlab.workload import compare, fit, load_model, save_model


def test_flows_from_spans_are_the_cross_service_calls(hotel_spans: pl.DataFrame) -> None:
    flows = flows_from_spans(hotel_spans)
    # hotel load 50: 1,000 traces of 11 spans; 5 of them call another service
    assert flows.height == 5000
    assert flows["ts_us"].min() == 0 and flows["ts_us"].is_sorted()
    assert (flows["src"] != flows["dst"]).all()
    assert set(flows["src"].unique()) <= set(hotel_spans["service"].unique())


def test_flows_round_trip_synthetic_recovers_pairs_ports_and_sizes() -> None:
    real = synthetic_flows(20_000, seed=1)
    model, _ = fit(real, seed=0)
    e = model.entity
    assert e is not None and e.pairs is not None and e.endpoints is not None and e.ports
    assert e.count == 30 and len(e.endpoints) == 6
    # the most popular pair: 1 / H(30, 1.2) of the flows
    w = np.arange(1, 31, dtype=float) ** -1.2
    assert e.shares[0] == pytest.approx(w[0] / w.sum(), abs=0.01)
    # each pair keeps its port (8000 + the destination's number in the source)
    real_ports = dict(
        real.group_by("src", "dst")
        .agg(pl.col("port").first())
        .select(pl.concat_str("src", "dst"), "port")
        .iter_rows()
    )
    assert sorted(set(e.ports)) == sorted(set(real_ports.values()))
    synth = model.sample(seed=2)
    assert synth["ts_us"].dtype == pl.Int64 and synth["ts_us"].is_sorted()
    assert synth.select(pl.struct("src", "dst").n_unique()).item() == 30
    assert (synth["src"] != synth["dst"]).all()
    cmp = compare(real, synth)
    rows = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert cmp.passed, cmp.metrics["failed"]
    assert rows[("ks", "bytes")]["distance"] <= 0.05
    assert rows[("ks", "duration_us")]["distance"] <= 0.05
    assert rows[("spearman", "bytes~duration_us")]["distance"] <= 0.1
    assert rows[("top1pct_share", "_pair")]["verdict"] == "pass"


def test_flows_round_trip_on_real_deathstarbench_calls(hotel_spans: pl.DataFrame, tmp_path) -> None:
    real = flows_from_spans(hotel_spans)
    model, _ = fit(real, seed=0)
    path = save_model(model, tmp_path / "flows.yaml")
    again = load_model(path)
    assert again == model
    e = again.entity
    assert e is not None and e.pairs is not None
    assert e.count == real.select(pl.struct("src", "dst").n_unique()).item()
    assert len(e.endpoints or []) == pl.concat([real["src"], real["dst"]]).n_unique()
    synth = again.sample(seed=1)
    cmp = compare(real, synth)
    assert cmp.passed, cmp.metrics["failed"]
    rows = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert rows[("event_count", "")]["distance"] <= 0.1
    assert rows[("ks", "duration_us")]["distance"] <= 0.05
    # pair popularity: share per pair rank within 2 points
    per = real.group_by("src", "dst").len().sort("len", descending=True)["len"].to_numpy()
    syn = synth.group_by("src", "dst").len().sort("len", descending=True)["len"].to_numpy()
    assert per.size == syn.size
    assert np.max(np.abs(per / per.sum() - syn / syn.sum())) <= 0.02
