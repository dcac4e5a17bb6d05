"""Cluster arrivals: events fanned out by one trigger within milliseconds (Neyman-Scott)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from helpers import requests_at
from pydantic import ValidationError

from fleetlab.traces import canonical
from fleetlab.workload import FitOptions, fit, iter_chunks, load_model, sample, save_model
from fleetlab.workload._arrival_fit import cluster_instants, runs_z
from fleetlab.workload._marginals import draw, knots
from fleetlab.workload._model import Arrival, Cluster
from fleetlab.workload._stats import index_of_dispersion


def fanned(triggers: int, *, hours: float, seed: int) -> pl.DataFrame:
    """Poisson triggers; 80 % start one request, 20 % fan out 20 at exponential 20 ms gaps."""
    rng = np.random.default_rng(seed)
    inst = np.sort(rng.uniform(0.0, hours * 3600.0, triggers))
    sizes = np.where(rng.random(triggers) < 0.8, 1, 20)
    offsets = np.concatenate(
        [np.concatenate([[0.0], np.cumsum(rng.exponential(0.02, k - 1))]) for k in sizes]
    )
    t = np.sort(np.repeat(inst, sizes) + offsets)
    return requests_at(t, rng)


@pytest.fixture(scope="module")
def clustered() -> pl.DataFrame:
    return fanned(750, hours=3.0, seed=1)


def idc_at(times: np.ndarray, end: float) -> dict[float, float]:
    return {x["window_s"]: x["idc"] for x in index_of_dispersion(times, end=end, min_windows=30)}


def test_runs_z_golden_values() -> None:
    # 4 true, 4 false: runs have mean 2 x 4 x 4 / 8 + 1 = 5, variance 2 x 16 x 24 / (64 x 7)
    blocks = np.array([True] * 4 + [False] * 4)  # 2 runs
    assert runs_z(blocks) == pytest.approx((2 - 5) / np.sqrt(768 / 448))
    alternating = np.array([True, False] * 4)  # 8 runs
    assert runs_z(alternating) == pytest.approx((8 - 5) / np.sqrt(768 / 448))
    assert runs_z(np.ones(5, dtype=bool)) == 0.0
    # independent marks: |z| small
    rng = np.random.default_rng(3)
    assert abs(runs_z(rng.random(5000) < 0.3)) < 3.0


def test_cluster_instants_recover_sizes_and_gaps(clustered: pl.DataFrame) -> None:
    t = np.sort(clustered["arrival_s"].to_numpy())
    model, _ = fit(clustered, seed=0, options=FitOptions(clusters="off", level_bands="off"))
    found = cluster_instants(t, model.arrival.rate)
    assert found is not None
    inst, sizes, gaps, info = found
    assert info["z"] < -20 and inst.size == sizes.size and sizes.sum() == t.size
    assert np.mean(sizes) == pytest.approx(4.8, rel=0.1)
    assert np.mean(sizes == 1) == pytest.approx(0.8, abs=0.04)
    assert np.mean(gaps) == pytest.approx(0.02, rel=0.15)


def test_a_poisson_trace_gets_no_clusters() -> None:
    # independent gaps: a renewal is the right model, the runs test finds nothing
    rng = np.random.default_rng(5)
    t = np.cumsum(rng.exponential(1.0, 3000))
    poisson = canonical(
        pl.LazyFrame(
            {
                "arrival_s": t - t[0],
                "prompt_tokens": rng.integers(1, 9, t.size),
                "output_tokens": rng.integers(1, 9, t.size),
            }
        ),
        "requests",
    ).collect()
    model, diag = fit(poisson, seed=0, options=FitOptions(clusters="on", level_bands="off"))
    assert model.arrival.cluster is None and diag["clusters"] == {"chosen": False}


def test_cluster_model_brings_back_the_fan_out_burstiness(clustered: pl.DataFrame) -> None:
    real = np.sort(clustered["arrival_s"].to_numpy())
    end = float(real[-1])
    model, diag = fit(clustered, seed=0, options=FitOptions(clusters="on", level_bands="off"))
    cl = model.arrival.cluster
    assert cl is not None and diag["clusters"]["chosen"]
    # the renewal is kept for reports; the instants are Poisson-like again
    assert model.arrival.renewal.cv > 2.0
    assert cl.renewal.cv == pytest.approx(1.0, abs=0.15)
    spread = draw(cl.spread, np.random.default_rng(0).standard_normal(50_000), knots(cl.spread))
    assert np.mean(spread) == pytest.approx(0.02, rel=0.15)
    synthetic = model.sample(seed=1)
    assert synthetic.height == pytest.approx(clustered.height, rel=0.1)
    syn = np.sort(synthetic["arrival_s"].to_numpy())
    r, s = idc_at(real, end), idc_at(syn, end)
    assert s[1.0] == pytest.approx(r[1.0], rel=0.2)  # 15 real
    # one renewal scatters the short gaps: half the IDC at 1 s
    plain, _ = fit(clustered, seed=0, options=FitOptions(clusters="off"))
    p = idc_at(np.sort(plain.sample(seed=1)["arrival_s"].to_numpy()), end)
    assert p[1.0] < 0.7 * r[1.0]


def test_cluster_synthesis_is_sorted_chunk_free_scalable_and_round_trips(
    clustered: pl.DataFrame, tmp_path
) -> None:
    model, _ = fit(clustered, seed=0, options=FitOptions(clusters="on", level_bands="off"))
    assert model.arrival.cluster is not None
    one = sample(model, seed=2)
    t = one["arrival_s"].to_numpy()
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    chunks = pl.concat(
        list(iter_chunks(model, duration_s=model.source.duration_s, seed=2, chunk_rows=777))
    )
    np.testing.assert_allclose(chunks["arrival_s"].to_numpy(), t, atol=1e-6)
    three = sample(model, seed=2, scale=3.0)
    assert three.height / one.height == pytest.approx(3.0, rel=0.1)
    path = save_model(model, tmp_path / "cluster.yaml")
    assert load_model(path) == model
    plain, _ = fit(clustered, seed=0, options=FitOptions(clusters="off"))
    saved = save_model(plain, tmp_path / "plain.yaml")
    assert "cluster" not in saved.read_text()  # readable by versions before clusters


def test_cluster_validation_names_the_problem(clustered: pl.DataFrame) -> None:
    model, _ = fit(clustered, seed=0, options=FitOptions(clusters="on", level_bands="off"))
    cl = model.arrival.cluster
    assert isinstance(cl, Cluster)
    with pytest.raises(ValidationError, match="cluster excludes batch"):
        Arrival(rate=model.arrival.rate, renewal=model.arrival.renewal, cluster=cl, batch=cl.sizes)
    with pytest.raises(ValidationError, match="threshold"):
        Cluster(sizes=cl.sizes, spread=cl.spread, renewal=cl.renewal, threshold=0.0)
