"""Fitting and synthesis on tables with known parameters: recovery, determinism, scaling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from helpers import gamma_renewal_requests, vm_table, zipf_invocations

from fleetlab.errors import ConfigError, FleetlabError
from fleetlab.traces import TABLES
from fleetlab.workload import compare, fit, iter_chunks, parse_duration, sample, synth
from fleetlab.workload._stats import counts, cv
from fleetlab.workload._tour import builtin_model


@pytest.fixture(scope="module")
def bursty() -> pl.DataFrame:
    return gamma_renewal_requests(20_000, rate=10.0, cv=2.0, seed=11)


def test_fit_recovers_rate_and_gamma_burstiness(bursty: pl.DataFrame) -> None:
    model, diag = fit(bursty, seed=0)
    assert model.table == "requests" and model.schema_version == 1
    assert model.arrival.rate.mean_rate_per_s == pytest.approx(10.0, rel=0.03)
    # 32+ events per bin: 10/s -> 5 s bins
    assert model.arrival.rate.bin_s == 5.0
    # the renewal CV is measured after dividing out the rate curve, which absorbs some
    # of the burstiness at the bin scale; the raw CV of the synthetic trace is what counts
    assert 1.5 < model.arrival.renewal.cv < 2.1
    synthetic = model.sample(seed=1)
    assert cv(np.diff(synthetic["arrival_s"].to_numpy())) == pytest.approx(2.0, rel=0.1)
    assert set(diag["candidates"]) == {"prompt_tokens", "output_tokens"}


def test_synthesis_is_deterministic_and_chunk_size_free(bursty: pl.DataFrame) -> None:
    model, _ = fit(bursty, seed=0)
    a = sample(model, duration_s=900, seed=5)
    assert a.equals(sample(model, duration_s=900, seed=5))
    assert not a.equals(sample(model, duration_s=900, seed=6))
    b = pl.concat(list(iter_chunks(model, duration_s=900, seed=5, chunk_rows=777)))
    assert a.drop("arrival_s").equals(b.drop("arrival_s"))
    assert np.max(np.abs(a["arrival_s"].to_numpy() - b["arrival_s"].to_numpy())) < 1e-6
    assert a.schema == pl.Schema(TABLES["requests"].columns)
    assert a["arrival_s"].is_sorted() and a["arrival_s"].max() < 900


def test_scaling_keeps_shape_and_burstiness() -> None:
    model = builtin_model()
    one = model.sample(seed=3)
    ten = model.sample(seed=3, scale=10.0)
    assert ten.height / one.height == pytest.approx(10.0, rel=0.03)
    c1 = counts(one["arrival_s"].to_numpy(), 300.0, end=3600.0)
    c10 = counts(ten["arrival_s"].to_numpy(), 300.0, end=3600.0)
    shape1, shape10 = c1 / c1.mean(), c10 / c10.mean()
    assert np.max(np.abs(shape10 - shape1)) < 0.1
    cv1 = cv(np.diff(one["arrival_s"].to_numpy()))
    cv10 = cv(np.diff(ten["arrival_s"].to_numpy()))
    assert cv10 == pytest.approx(cv1, rel=0.05)
    assert compare(one, ten, scale=10.0).passed


def test_longer_duration_repeats_the_period(bursty: pl.DataFrame) -> None:
    model, _ = fit(bursty, seed=0)
    period = model.arrival.rate.period_s
    long = model.sample(duration_s=3 * period, seed=2)
    c = counts(long["arrival_s"].to_numpy(), period, end=3 * period)
    assert c.size == 3 and np.all(np.abs(c / c.mean() - 1) < 0.1)


def test_synth_streams_parquet_and_refuses_to_overwrite(
    tmp_path: Path, bursty: pl.DataFrame
) -> None:
    model, _ = fit(bursty, seed=0)
    seen: list[int] = []
    out = synth(
        model,
        tmp_path / "s.parquet",
        duration_s=4000,
        seed=1,
        chunk_rows=5000,
        on_chunk=lambda rows, t: seen.append(rows),
    )
    assert out["chunks"] == len(seen) > 3 and seen == sorted(seen)
    back = pl.read_parquet(tmp_path / "s.parquet")
    assert back.height == out["rows"] == seen[-1]
    assert back.equals(sample(model, duration_s=4000, seed=1).with_columns(back["arrival_s"]))
    with pytest.raises(FleetlabError, match="already exists"):
        synth(model, tmp_path / "s.parquet", seed=1)


def test_synth_parquet_of_every_table_reads_back_as_the_chunks(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    for name, real in (
        ("vms", vm_table(3_000, horizon=86_400.0, seed=2)),
        ("invocations", zipf_invocations(5_000, functions=40, exponent=1.1, seed=4)),
    ):
        model, _ = fit(real, seed=0)
        path = tmp_path / f"{name}.parquet"
        out = synth(model, path, seed=3, chunk_rows=1000)
        back = pl.read_parquet(path)
        chunks = pl.concat(list(iter_chunks(model, seed=3, chunk_rows=1000)))
        assert out["chunks"] > 1 and back.equals(chunks)
        if name == "vms":
            assert back["deleted_s"].null_count() > 0  # alive at the end: nullable column kept
        assert back.schema == pl.Schema(TABLES[name].columns)
        meta = pq.ParquetFile(path).metadata
        cols = {meta.schema.column(i).name: i for i in range(meta.num_columns)}
        time_col = meta.row_group(0).column(cols[model.time_column])
        assert "BYTE_STREAM_SPLIT" in time_col.encodings and time_col.statistics is not None
        assert pq.ParquetFile(path).schema_arrow.field(model.time_column).nullable is False
    assert back["count"].unique().to_list() == [1]


def test_segment_inversion_gives_the_same_floats_as_the_gather() -> None:
    from fleetlab.workload._synth import _by_segment

    rng = np.random.default_rng(0)
    knot_u = np.concatenate([[0.0], np.cumsum(rng.exponential(10.0, 40))])
    knot_u[7] = knot_u[6]  # an empty bin (zero slope)
    knot_t = np.arange(knot_u.size) * 5.0
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(np.diff(knot_u) > 0, np.diff(knot_t) / np.diff(knot_u), 0.0)
    u = np.sort(rng.uniform(-5.0, knot_u[-1] + 5.0, 10_000))  # also before/after the knots
    pos = np.searchsorted(u, knot_u, side="left")
    seg = np.clip(np.searchsorted(knot_u, u, side="right") - 1, 0, knot_u.size - 2)
    want = knot_t[seg] + (u - knot_u[seg]) * slope[seg]
    assert np.array_equal(_by_segment(u, pos, knot_u, knot_t, slope), want)


def test_invocations_keep_popularity_and_per_function_sizes() -> None:
    real = zipf_invocations(20_000, functions=150, exponent=1.1, seed=4)
    model, _ = fit(real, seed=0)
    assert model.entity is not None and model.entity.count == 150
    assert model.entity.parent_column == "app" and "rest" in model.entity.fields
    synthetic = model.sample(seed=9)
    cmp = compare(real, synthetic)
    assert cmp.passed, cmp.metrics["failed"]
    # the most popular function keeps its own duration distribution
    top_real = real.group_by("function").len().sort("len", descending=True)["function"][0]
    top_syn = synthetic.group_by("function").len().sort("len", descending=True)["function"][0]
    med_real = real.filter(pl.col("function") == top_real)["duration_ms"].median()
    med_syn = synthetic.filter(pl.col("function") == top_syn)["duration_ms"].median()
    assert med_syn == pytest.approx(med_real, rel=0.05)
    assert synthetic["app"].n_unique() == 2


def test_vm_lifetimes_are_fitted_with_censoring() -> None:
    real = vm_table(4000, horizon=86400.0, seed=3)
    model, _ = fit(real, seed=0)
    assert model.lifetime_column == "lifetime_s"
    synthetic = model.sample(seed=4)
    # exponential lifetimes with mean 2 h: median 2 h * ln 2 = 4,990 s
    from fleetlab.workload import characterize

    med = characterize(synthetic).metrics["lifetimes"]["median_s"]
    assert med == pytest.approx(7200 * np.log(2), rel=0.1)
    assert synthetic["deleted_s"].null_count() > 0  # alive at the end, as in the source
    assert compare(real, synthetic).passed


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pl.DataFrame(schema=TABLES["requests"].columns), "0 event"),
        (gamma_renewal_requests(1, rate=1.0, cv=1.0, seed=0), "1 event"),
        (
            gamma_renewal_requests(5, rate=1.0, cv=1.0, seed=0).with_columns(
                pl.lit(3.0).alias("arrival_s")
            ),
            "share one time",
        ),
        (
            gamma_renewal_requests(5, rate=1.0, cv=1.0, seed=0).with_columns(
                pl.lit(None, dtype=pl.Float64).alias("arrival_s")
            ),
            "0 event",
        ),
    ],
)
def test_fit_bad_input_gives_clear_errors(frame: pl.DataFrame, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        fit(frame)


def test_fit_refuses_tables_that_are_not_event_streams() -> None:
    # usage and client_profiles have their own models now; a nodes table has none
    nodes = pl.DataFrame({"node_id": ["a"], "cores": [8.0], "memory_gb": [64.0]})
    with pytest.raises(ConfigError, match="not an event stream"):
        fit(nodes)
    usage = pl.DataFrame({"vm_id": ["a"], "ts_s": [0.0], "cpu_avg": [1.0]})
    with pytest.raises(ConfigError, match="no VM has two samples"):
        fit(usage)


def test_constant_size_columns_are_modelled_as_constants() -> None:
    frame = gamma_renewal_requests(500, rate=1.0, cv=1.0, seed=0).with_columns(
        pl.lit(7, dtype=pl.Int64).alias("output_tokens")
    )
    model, _ = fit(frame)
    assert model.fields["output_tokens"].kind == "constant"
    assert model.sample(seed=0)["output_tokens"].unique().to_list() == [7]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("45s", 45.0),
        ("30m", 1800.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "x", "-3h", "0", "1y"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(bad)


def test_synth_rejects_bad_scale() -> None:
    with pytest.raises(ConfigError, match="scale"):
        sample(builtin_model(), scale=0.0)


def test_per_minute_count_tables_are_fitted_one_event_per_invocation() -> None:
    from fleetlab.traces import canonical

    rng = np.random.default_rng(8)
    minutes = np.repeat(np.arange(120), 3)
    functions = np.tile(["f0", "f1", "f2"], 120)
    cnt = rng.poisson(np.tile([30.0, 10.0, 2.0], 120)).astype(np.int64)
    real = canonical(
        pl.LazyFrame(
            {
                "app": "a",
                "function": functions.tolist(),
                "count": cnt,
                "minute": minutes,
                "duration_ms": 100.0,
            }
        ),
        "invocations",
    ).collect()
    model, _ = fit(real, seed=0)
    assert model.source.rows == real.height
    assert model.arrival.rate.mean_rate_per_s == pytest.approx(cnt.sum() / 7200, rel=0.02)
    assert model.entity is not None and model.entity.shares[0] == pytest.approx(30 / 42, abs=0.02)
    synthetic = model.sample(seed=1)
    assert synthetic["count"].unique().to_list() == [1]
    assert synthetic.height == pytest.approx(cnt.sum(), rel=0.05)
    assert compare(real, synthetic).passed


def test_copula_is_calibrated_to_rank_correlations_of_discrete_fields() -> None:
    # GPU pods: gpus is 0 or 1 and goes with fewer cores; normal scores of such ties
    # understate the dependence, the calibration must restore it
    rng = np.random.default_rng(12)
    n = 6000
    latent = rng.standard_normal(n)
    cores = np.choose(
        np.digitize(latent + 0.5 * rng.standard_normal(n), [-1, 0, 1]), [2.0, 4.0, 8.0, 16.0]
    )
    gpus = (latent + 0.4 * rng.standard_normal(n) < -0.3).astype(float)
    real = vm_table(n, horizon=86400.0, seed=1).with_columns(
        pl.Series("cores", cores), pl.Series("gpus", gpus), pl.lit(None).alias("tenant")
    )
    model, _ = fit(real, seed=0)
    assert model.fields["gpus"].kind == "discrete"
    synthetic = model.sample(seed=2)
    row = compare(real, synthetic).table.filter(pl.col("field") == "cores~gpus").row(0, named=True)
    assert row["real"] < -0.5
    assert row["distance"] < 0.03


def test_min_data_rule_numbers() -> None:
    from fleetlab.workload._compare import min_data_count

    # 16 / (pi threshold^2): chance differences of two realizations at half the threshold
    assert min_data_count(0.10) == 510 and min_data_count(0.15) == 227


def _arrival_rows(real: pl.DataFrame, synth: pl.DataFrame, **kw: object) -> dict[str, dict]:
    from fleetlab.workload import Thresholds

    th = Thresholds(**kw)  # type: ignore[arg-type]
    table = compare(real, synth, thresholds=th).table.filter(pl.col("field") == "")
    return {r["statistic"]: r for r in table.to_dicts()}


def test_too_little_data_is_skipped_with_the_reason_not_failed() -> None:
    # 200 Poisson events in 20 minutes: 33 events per rate bin, 20 one-minute ACF windows
    small = gamma_renewal_requests(200, rate=1 / 6, cv=1.0, seed=21)
    model, _ = fit(small, seed=0)
    rows = _arrival_rows(small, model.sample(seed=1))
    for stat, what in (("rate_curve", "real events per bin"), ("acf_counts", "real windows")):
        assert rows[stat]["verdict"] == "skipped", rows[stat]
        assert "too little real data to judge" in rows[stat]["note"] and what in rows[stat]["note"]
        assert rows[stat]["distance"] is not None  # still reported
    # counts and CVs are judged at any size; IDC has windows that fit 30 times
    for stat in ("event_count", "iat_cv", "renewal_cv", "idc"):
        assert rows[stat]["verdict"] in ("pass", "fail"), rows[stat]
    # the rule can be switched off: then the same rows are judged
    off = _arrival_rows(small, model.sample(seed=1), min_data="off")
    assert off["rate_curve"]["verdict"] in ("pass", "fail")
    assert off["acf_counts"]["verdict"] in ("pass", "fail")
    assert off["rate_curve"]["distance"] == rows["rate_curve"]["distance"]


def test_enough_data_is_judged() -> None:
    # 8,000 events at 4/s over ~2,000 s: rate bins of >= 510 events, >= 227 ACF windows
    big = gamma_renewal_requests(8000, rate=4.0, cv=1.0, seed=22)
    model, _ = fit(big, seed=0)
    rows = _arrival_rows(big, model.sample(seed=1))
    for stat in ("event_count", "rate_curve", "iat_cv", "renewal_cv", "acf_counts", "idc"):
        assert rows[stat]["verdict"] == "pass", rows[stat]
        assert "too little" not in (rows[stat]["note"] or "")


def test_idc_without_a_window_that_fits_30_times_is_skipped() -> None:
    # 2 s of events: even 0.1 s windows fit only 20 times
    tiny = gamma_renewal_requests(40, rate=20.0, cv=1.0, seed=23)
    assert float(tiny["arrival_s"].max()) < 3.0
    rows = _arrival_rows(tiny, tiny)
    assert rows["idc"]["verdict"] == "skipped" and "fits 30 times" in rows["idc"]["note"]
    longer = gamma_renewal_requests(400, rate=20.0, cv=1.0, seed=23)
    assert _arrival_rows(longer, longer)["idc"]["verdict"] == "pass"
