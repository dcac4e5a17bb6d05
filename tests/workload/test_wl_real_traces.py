"""Published facts on the real traces, and fit -> synth -> compare round trips on them."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from fleetlab.workload import characterize, compare, fit
from fleetlab.workload._arrival_fit import operational_time


def test_splitwise_medians_of_the_azure_llm_2023_traces(
    azure_code: pl.DataFrame, azure_conv: pl.DataFrame
) -> None:
    # Splitwise (ISCA'24), section III: code ~1,500 prompt / 13 output tokens at the
    # median; conversation ~1,020 / 129.
    code = characterize(azure_code).metrics["sizes"]
    conv = characterize(azure_conv).metrics["sizes"]
    assert code["prompt_tokens"]["median"] == pytest.approx(1500, rel=0.03)
    assert code["output_tokens"]["median"] == 13
    assert conv["prompt_tokens"]["median"] == pytest.approx(1020, rel=0.01)
    assert conv["output_tokens"]["median"] == 129


def test_code_arrivals_are_much_burstier_than_conversation(
    azure_code: pl.DataFrame, azure_conv: pl.DataFrame
) -> None:
    code = characterize(azure_code).metrics["arrivals"]
    conv = characterize(azure_conv).metrics["arrivals"]
    assert code["iat_cv"] > 5 * conv["iat_cv"]
    assert conv["iat_cv"] == pytest.approx(1.09, abs=0.02)  # close to Poisson
    idc_code = {r["window_s"]: r["idc"] for r in code["idc"]}
    idc_conv = {r["window_s"]: r["idc"] for r in conv["idc"]}
    assert idc_code[60.0] > 5 * idc_conv[60.0]
    assert code["bursts"]["events_in_bursts"] > conv["bursts"]["events_in_bursts"]


def test_characterization_reports_known_anomalies(
    azure_code: pl.DataFrame, mooncake_conv: pl.DataFrame
) -> None:
    moon = characterize(mooncake_conv)
    grid = [a for a in moon.anomalies if a["kind"] == "timestamps_on_grid"]
    assert grid and grid[0]["grid_s"] == pytest.approx(3.0, rel=1e-3)
    assert grid[0]["tie_fraction"] > 0.85
    code = characterize(azure_code)
    assert any(
        a["kind"] == "values_at_max" and a["column"] == "prompt_tokens" for a in code.anomalies
    )
    # no NaN anywhere in the JSON, and every skipped analysis says why
    json.dumps(code.to_dict(), allow_nan=False)
    assert all(s["reason"] for s in code.skipped)


@pytest.mark.parametrize("trace", ["azure_code", "azure_conv", "mooncake_conv"])
def test_fit_synth_compare_round_trip_passes_the_issue_thresholds(
    trace: str, request: pytest.FixtureRequest
) -> None:
    real: pl.DataFrame = request.getfixturevalue(trace)
    model, _ = fit(real, seed=0)
    synthetic = model.sample(seed=1)
    cmp = compare(real, synthetic)
    assert cmp.passed, cmp.table.filter(pl.col("verdict") == "fail").to_dicts()
    t = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert t[("ks", "prompt_tokens")]["distance"] <= 0.05
    assert t[("ks", "output_tokens")]["distance"] <= 0.05
    assert t[("iat_cv", "")]["distance"] <= 0.15
    assert t[("rate_curve", "")]["distance"] <= 0.10
    # medians survive the round trip
    for f in ("prompt_tokens", "output_tokens"):
        assert synthetic[f].median() == pytest.approx(real[f].median(), rel=0.05)


def test_scaled_round_trip_keeps_shape_and_burstiness(azure_conv: pl.DataFrame) -> None:
    model, _ = fit(azure_conv, seed=0)
    cmp = compare(azure_conv, model.sample(seed=2, scale=5.0), scale=5.0)
    assert cmp.passed, cmp.metrics["failed"]
    verdicts = dict(zip(cmp.table["statistic"], cmp.table["verdict"], strict=False))
    assert verdicts["renewal_cv"] == "pass" and verdicts["rate_curve"] == "pass"


def test_compare_fails_a_wrong_synthetic_trace(
    azure_code: pl.DataFrame, azure_conv: pl.DataFrame
) -> None:
    cmp = compare(azure_code, azure_conv)
    failed = set(cmp.metrics["failed"])
    assert not cmp.passed
    assert {"ks prompt_tokens", "ks output_tokens", "iat_cv"} <= failed


def test_alibaba_batch_tasks_round_trip(alibaba_tasks: pl.DataFrame) -> None:
    """A vms table from another provider: lifetimes, cores and popularity survive the trip."""
    model, _ = fit(alibaba_tasks, seed=0)
    assert model.table == "vms" and model.lifetime_column == "lifetime_s"
    cmp = compare(alibaba_tasks, model.sample(seed=1))
    assert cmp.passed, cmp.table.filter(pl.col("verdict") == "fail").to_dicts()
    stats = set(cmp.table["statistic"])
    assert {"ks", "rate_curve", "iat_cv"} <= stats


def test_alibaba_2017_batch_tasks_round_trip_with_batches(
    alibaba_2017_tasks: pl.DataFrame,
) -> None:
    """Tasks created in jobs on a 1 s grid: a compound process (instants x batch sizes).

    Without batches the raw inter-arrival CV came back 20-25 % too high (6.2-6.4 vs 5.2).
    """
    model, diag = fit(alibaba_2017_tasks, seed=0)
    assert model.arrival.batch is not None and model.arrival.quantum_s == pytest.approx(1.0)
    assert diag["batch_mean"] == pytest.approx(6.67, rel=0.01)  # 80,553 tasks at 12,073 seconds
    cmp = compare(alibaba_2017_tasks, model.sample(seed=1))
    assert cmp.passed, cmp.table.filter(pl.col("verdict") == "fail").to_dicts()
    t = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert t[("iat_cv", "")]["distance"] <= 0.15
    assert t[("rate_curve", "")]["distance"] <= 0.10
    assert t[("idc", "")]["distance"] <= 0.5


def test_alibaba_gpu_2023_round_trip_follows_the_growing_load(
    alibaba_gpu_2023: pl.DataFrame,
) -> None:
    """149 days, all but ~30 pods in the last 35: the trend puts the load where it was.

    Without the trend the weekly profile spread the load over all 21 weeks (count off
    15-60 %, rate curve 20-60 % by seed). The raw inter-arrival CV (21) is set by ~30
    pods in the first 115 days and varies 19-26 between synthetic seeds, so it is
    reported, not asserted (docs/workload.md).
    """
    model, diag = fit(alibaba_gpu_2023, seed=0)
    assert diag["trend_days"] == 150
    trend = np.asarray(model.arrival.rate.trend)
    assert trend[:110].max() < 0.05 and trend[120:].min() > 2.0
    # the ramp of day 115 stays there: 27 pods before it (the centred 7-day trend
    # expected 75, leaking the ramp three days early)
    early = operational_time(np.array([115 * 86400.0]), model.arrival.rate)[0]
    assert 20 <= early <= 35, early
    cmp = compare(alibaba_gpu_2023, model.sample(seed=3))
    t = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert t[("event_count", "")]["distance"] <= 0.05
    assert t[("rate_curve", "")]["distance"] <= 0.05
    for stat in ("acf_counts", "idc"):
        assert t[(stat, "")]["verdict"] == "pass", t[(stat, "")]
    ks = [r for r in cmp.table.to_dicts() if r["statistic"] in ("ks", "spearman")]
    assert len(ks) == 10 and all(r["verdict"] == "pass" for r in ks), ks


def test_alibaba_gpu_2025_dlrm_round_trip_with_rate_level_bands(
    alibaba_gpu_2025: pl.DataFrame,
) -> None:
    """Burstier in the busy hours than in the quiet ones: a renewal per rate-level band.

    With one renewal the raw inter-arrival CV came back 40-44 % too high (3.3-3.4 vs 2.38,
    seeds 1-3): the quiet hours got the busy hours' long gaps (docs/workload.md).
    """
    model, diag = fit(alibaba_gpu_2025, seed=0)
    bands = model.arrival.bands
    assert bands is not None and len(bands) == diag["bands"]["chosen"] == 4
    assert model.arrival.batch is not None and model.arrival.rate.trend is not None
    # quiet hours: less bursty, and busier than levels x trend says; busy hours the reverse
    cvs = [b.renewal.cv for b in bands]
    assert cvs == sorted(cvs) and cvs[0] < 1.5 and cvs[-1] > 1.9
    assert bands[0].factor > 1.5 and bands[-1].factor < 0.85
    cmp = compare(alibaba_gpu_2025, model.sample(seed=1))
    assert cmp.passed, cmp.table.filter(pl.col("verdict") == "fail").to_dicts()
    t = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert t[("iat_cv", "")]["distance"] <= 0.15
    assert t[("idc", "")]["distance"] <= 0.7
    assert t[("rate_curve", "")]["distance"] <= 0.10


def test_azure_functions_2021_short_gap_runs_become_clusters(shared_data) -> None:
    """114 of 198 gaps under 0.1 s, in runs: a cluster process brings the IDC back.

    With one renewal the IDC failed on 19 of 20 seeds (0.54-1.01, threshold 0.7): its
    independent gaps scatter the short ones (docs/workload.md).
    """
    from fleetlab import traces
    from fleetlab.workload import FitOptions

    real = traces.load(shared_data / "azure-functions-2021-sample" / "Azure2021_200.csv")
    model, diag = fit(real, seed=0)
    cl = model.arrival.cluster
    assert cl is not None and diag["clusters"]["chosen"] and diag["clusters"]["z"] < -5
    scores = diag["clusters"]["score"]
    assert scores["clusters"] < 0.9 * scores["renewal"]
    # clusters of 1-17 invocations, 75 % single; the renewal (for reports) unchanged
    assert diag["clusters"]["mean_size"] == pytest.approx(2.16, abs=0.01)
    assert model.arrival.renewal.cv == pytest.approx(1.856, abs=0.01)
    rows = {
        (r["statistic"], r["field"]): r
        for r in compare(real, model.sample(seed=3)).table.to_dicts()
    }
    assert rows[("idc", "")]["verdict"] == "pass" and rows[("idc", "")]["distance"] < 0.5
    for key in ("event_count", "iat_cv", "renewal_cv"):
        assert rows[(key, "")]["verdict"] == "pass", rows[(key, "")]
    plain, _ = fit(real, seed=0, options=FitOptions(clusters="off"))
    before = {r["statistic"]: r for r in compare(real, plain.sample(seed=3)).table.to_dicts()}
    assert before["idc"]["verdict"] == "fail"
