"""client_profiles (ServeGen) tables as models: requests per client and window, and their report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fleetlab import traces
from fleetlab.errors import ConfigError
from fleetlab.workload import compare, fit, iter_chunks, load_model, sample, save_model


@pytest.fixture(scope="module")
def servegen_small(shared_data: Path) -> pl.DataFrame:
    """ServeGen m-small, its first 6 hours (36 ten-minute windows, 43 clients)."""
    full = traces.load(shared_data / "servegen-alibaba-bailian-2025" / "language_m-small.tar.gz")
    return full.filter(pl.col("window_start_s") < 6 * 3600)


def toy_profiles() -> pl.DataFrame:
    """Known truth: client a at 2/s with Gamma CV 2 for 2 hours, tokens 10 or 20 (1:1) and
    output 5; client b at 0.5/s Poisson-like (no pattern, cv 1) in the second hour only."""
    rows = []
    for w in range(12):
        start = w * 600.0
        pdf = w == 0
        rows.append(
            {
                "client": "a",
                "window_start_s": start,
                "window_s": 600.0,
                "rate_per_s": 2.0,
                "cv": 2.0,
                "pattern": "Gamma",
                "pattern_shape": 0.25,
                "input_tokens_values": [10.0, 20.0] if pdf else None,
                "input_tokens_probs": [0.5, 0.5] if pdf else None,
                "output_tokens_values": [5.0] if pdf else None,
                "output_tokens_probs": [1.0] if pdf else None,
                "dist_window_s": 21600.0 if pdf else None,
            }
        )
        rows.append(
            {
                "client": "b",
                "window_start_s": start,
                "window_s": 600.0,
                "rate_per_s": 0.5 if w >= 6 else 0.0,
                "cv": 1.0 if w >= 6 else None,
                "pattern": None,
                "pattern_shape": None,
                "input_tokens_values": None,
                "input_tokens_probs": None,
                "output_tokens_values": None,
                "output_tokens_probs": None,
                "dist_window_s": None,
            }
        )
    return traces.canonical(pl.DataFrame(rows).lazy(), "client_profiles").collect()


def test_toy_profiles_give_the_rates_cv_and_tokens_they_describe(tmp_path: Path) -> None:
    prof = toy_profiles()
    model, diag = fit(prof)
    cm = model.clients
    assert model.table == "requests" and cm is not None
    assert diag["clients"] == 2 and cm.window_s == 600.0 and cm.windows == 12
    a, b = cm.clients
    assert a.pattern == "G" * 12 and a.shape == [0.25] * 12
    assert b.pattern == "-" * 6 + "G" * 6 and b.shape[6:] == [1.0] * 6  # 1 / cv^2
    assert len(a.tokens) == 1 and b.tokens == []
    reqs = sample(model, seed=3)
    per = dict(reqs.group_by("tenant").len().iter_rows())
    assert per["a"] == pytest.approx(2.0 * 7200, rel=0.1)
    assert per["b"] == pytest.approx(0.5 * 3600, rel=0.1)
    assert reqs.filter(pl.col("tenant") == "b")["arrival_s"].min() >= 3600
    toks = reqs.filter(pl.col("tenant") == "a")
    assert set(toks["output_tokens"].unique()) == {5}
    assert toks["prompt_tokens"].min() >= 10 and toks["prompt_tokens"].max() <= 20
    assert float((toks["prompt_tokens"] <= 15).mean()) == pytest.approx(0.5, abs=0.05)
    # within-window CV of client a: 2 (Gamma shape 1/4)
    cmp = compare(prof, reqs)
    rows = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert rows[("client_cv", "Gamma")]["synth"] == pytest.approx(2.0, rel=0.15)
    assert cmp.passed, cmp.metrics["failed"]
    # deterministic, independent of the chunk size, and the model file round-trips
    assert reqs.equals(pl.concat(list(iter_chunks(model, seed=3, chunk_rows=500))))
    assert load_model(save_model(model, tmp_path / "c.yaml")) == model
    longer = sample(model, seed=3, duration_s=3 * 7200, scale=2.0)
    assert longer.height == pytest.approx(3 * 2 * (14400 + 1800), rel=0.1)  # repeated, 2x


def test_servegen_m_small_round_trip_passes_its_fidelity_report(
    servegen_small: pl.DataFrame,
) -> None:
    model, diag = fit(servegen_small)
    assert diag["windows"] == 36 and diag["clients"] == 22  # 21 clients idle in these hours
    assert diag["idle_clients"] == 21
    assert diag["expected_requests"] == pytest.approx(1.36e7, rel=0.005)
    scale = 0.005  # ~70,000 requests keep the test fast; rates, shapes and PDFs unchanged
    reqs = sample(model, seed=1, scale=scale)
    assert reqs.height == pytest.approx(diag["expected_requests"] * scale, rel=0.05)
    cmp = compare(servegen_small, reqs, scale=scale)
    rows = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert cmp.passed, cmp.metrics["failed"]
    assert rows[("event_count", "")]["distance"] < 0.03
    assert rows[("client_cv", "Gamma")]["distance"] < 0.05
    assert rows[("ks", "prompt_tokens")]["distance"] < 0.02
    assert rows[("ks", "output_tokens")]["distance"] < 0.02
    assert rows[("client_cv", "Weibull")]["verdict"] == "info"  # heavy tails, scale != 1


def test_client_profiles_errors_name_what_is_wrong() -> None:
    prof = toy_profiles()
    with pytest.raises(ConfigError, match="every client has rate 0"):
        fit(prof.with_columns(pl.lit(0.0).alias("rate_per_s")))
    with pytest.raises(ConfigError, match="window_s must be one value"):
        fit(prof.with_columns(pl.Series("window_s", np.arange(prof.height) % 2 * 300.0 + 300)))


def test_azure_functions_2021_sample_round_trip(shared_data: Path) -> None:
    # 199 invocations with durations over 20 minutes: counts, CVs, durations and function
    # popularity come back; the arrival shape statistics need more events (docs/workload.md)
    real = traces.load(shared_data / "azure-functions-2021-sample" / "Azure2021_200.csv")
    assert real.height == 199 and real["function"].n_unique() == 31
    model, _ = fit(real, seed=0)
    assert model.table == "invocations" and model.arrival.renewal.family == "empirical"
    assert model.arrival.renewal.cv == pytest.approx(1.856, abs=0.01)
    cmp = compare(real, sample(model, seed=3))
    rows = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    for key in (
        ("event_count", ""),
        ("iat_cv", ""),
        ("renewal_cv", ""),
        ("ks", "duration_ms"),
        ("top1pct_share", "function"),
        ("zipf_exponent", "function"),
    ):
        assert rows[key]["verdict"] == "pass", (key, rows[key])
    assert rows[("ks", "duration_ms")]["distance"] < 1.36 * (2 / 199) ** 0.5  # 5 % critical
