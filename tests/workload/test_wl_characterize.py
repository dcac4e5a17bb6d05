"""Characterization of every kind of table, and bad input: empty, one row, constant, no times."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from helpers import gamma_renewal_requests, vm_table, zipf_invocations

from fleetlab.errors import ConfigError
from fleetlab.traces import TABLES, canonical
from fleetlab.workload import characterization_report, characterize


def _json(ch) -> dict:  # type: ignore[no-untyped-def]
    d = ch.to_dict()
    json.dumps(d, allow_nan=False)  # never NaN unexplained
    return d


def test_requests_golden_numbers() -> None:
    frame = canonical(
        pl.LazyFrame(
            {
                "arrival_s": [0.0, 1.0, 2.0, 4.0, 8.0],
                "prompt_tokens": [10, 20, 30, 40, 50],
                "output_tokens": [5, 4, 3, 2, 1],
            }
        ),
        "requests",
    ).collect()
    d = _json(characterize(frame))
    a = d["arrivals"]
    assert a["events"] == 5 and a["duration_s"] == 8.0
    assert a["iat_mean_s"] == 2.0 and a["iat_max_s"] == 4.0
    assert a["iat_cv"] == pytest.approx(np.std([1, 1, 2, 4]) / 2.0)
    assert d["sizes"]["prompt_tokens"]["median"] == 30.0
    assert d["correlations"]["pairs"][0]["spearman"] == pytest.approx(-1.0)


def test_empty_table_says_everything_was_skipped() -> None:
    d = _json(characterize(pl.DataFrame(schema=TABLES["requests"].columns)))
    assert d["overview"]["rows"] == 0
    assert d["skipped"] == [{"analysis": "all", "reason": "the table is empty (0 rows)"}]


def test_one_row_and_constant_columns_are_explained() -> None:
    one = gamma_renewal_requests(1, rate=1.0, cv=1.0, seed=0)
    d = _json(characterize(one))
    assert any(
        s["analysis"] == "arrivals" and "need at least 2" in s["reason"] for s in d["skipped"]
    )
    const = gamma_renewal_requests(200, rate=1.0, cv=1.0, seed=0).with_columns(
        pl.lit(5, dtype=pl.Int64).alias("output_tokens")
    )
    d = _json(characterize(const))
    assert any(
        s["analysis"] == "sizes.output_tokens.fit" and "constant" in s["reason"]
        for s in d["skipped"]
    )
    assert any("correlations" in s["analysis"] for s in d["skipped"])


def test_no_timestamps_skips_arrivals_but_keeps_sizes() -> None:
    frame = gamma_renewal_requests(300, rate=1.0, cv=1.0, seed=1).with_columns(
        pl.lit(None, dtype=pl.Float64).alias("arrival_s")
    )
    d = _json(characterize(frame))
    assert "arrivals" not in d and "sizes" in d
    assert any(s["analysis"] == "arrivals" for s in d["skipped"])
    assert (
        any(a["kind"] == "null_values" and a["column"] == "arrival_s" for a in d["anomalies"])
        is False
    )
    # an all-null column is not an anomaly of some rows: it is the reason arrivals are skipped


def test_unknown_columns_raise_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="not a canonical table"):
        characterize(pl.DataFrame({"x": [1, 2]}))


def test_invocations_popularity_and_triggers() -> None:
    frame = zipf_invocations(5000, functions=100, exponent=1.0, seed=2).with_columns(
        pl.Series("trigger", ["http", "timer"] * 2500)
    )
    d = _json(characterize(frame))
    pop = d["popularity"]["function"]
    assert pop["entities"] <= 100 and 0.7 < pop["zipf_exponent"] < 1.3
    assert pop["top1pct_share"] > 0.1
    assert d["trigger_shares"] == {"http": 0.5, "timer": 0.5}


def test_per_minute_count_tables() -> None:
    minutes = np.repeat(np.arange(2880), 2)
    rng = np.random.default_rng(0)
    cnt = rng.poisson(20 + 10 * np.sin(2 * np.pi * minutes / 1440)).astype(np.int64)
    frame = canonical(
        pl.LazyFrame(
            {
                "app": "a",
                "function": np.where(minutes % 2 == 0, "f1", "f2").astype(str).tolist(),
                "count": cnt,
                "minute": minutes,
            }
        ),
        "invocations",
    ).collect()
    d = _json(characterize(frame))
    assert d["arrivals"]["events"] == cnt.sum()
    assert any(s["analysis"] == "arrivals.inter_arrival" for s in d["skipped"])
    assert d["periodicity"]["peak_to_trough"] > 2


def test_vm_lifetimes_with_censoring_and_anomalies() -> None:
    frame = vm_table(3000, horizon=86400.0, seed=5)
    frame = pl.concat(
        [frame, frame.head(2).with_columns(pl.col("created_s") + 1e6)]
    )  # deleted < created
    d = _json(characterize(frame))
    life = d["lifetimes"]
    assert 0.03 < life["censored_fraction"] < 0.2
    assert life["median_s"] == pytest.approx(7200 * np.log(2), rel=0.1)
    assert any(a["kind"] == "deleted_before_created" for a in d["anomalies"])


def test_usage_utilization_diurnal_and_clusters() -> None:
    rng = np.random.default_rng(3)
    ts = np.arange(0, 2 * 86400, 300.0)
    rows = []
    for v in range(12):
        phase = 0 if v < 6 else np.pi
        cpu = 30 + 20 * np.sin(2 * np.pi * ts / 86400 + phase) + rng.normal(0, 2, ts.size)
        rows.append(pl.DataFrame({"vm_id": f"vm{v}", "ts_s": ts, "cpu_avg": cpu}))
    usage = pl.concat(rows)
    usage = usage.filter(~((pl.col("vm_id") == "vm0") & (pl.col("ts_s") == 600.0)))  # a gap
    d = _json(characterize(usage))
    u = d["utilization"]
    assert u["vms"] == 12 and u["sampling_interval_s"] == 300.0
    assert u["vms_p95_under_80"] == 1.0 and u["vms_p95_under_20"] == 0.0
    assert u["diurnal_strength_median"] > 0.8
    assert (
        sorted(c["vms"] for c in u["clusters"] if c["vms"])[-2:] == [6, 6]
        or len(u["clusters"]) == 4
    )
    assert any(a["kind"] == "irregular_sampling" for a in d["anomalies"]) is False  # 1 gap in 6,900


def test_report_renders_offline() -> None:
    frame = zipf_invocations(2000, functions=50, exponent=1.0, seed=2)
    html = characterization_report(characterize(frame)).to_html()
    assert "Popularity" in html and "Index of dispersion" in html
    assert '<script src="http' not in html  # plotly.js is embedded, the report works offline
