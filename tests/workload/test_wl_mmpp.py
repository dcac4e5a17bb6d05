"""The MMPP burstiness option: EM fit, block synthesis, and the auto selection."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from helpers import gamma_renewal_requests, mmpp_requests
from pydantic import ValidationError

from fleetlab.errors import ConfigError
from fleetlab.workload import (
    FitOptions,
    Mmpp,
    compare,
    fit,
    iter_chunks,
    load_model,
    sample,
    save_model,
)
from fleetlab.workload._mmpp import MmppSampler, fit_mmpp, idc_curve


def test_em_recovers_a_two_state_mmpp() -> None:
    # quiet at 0.5, bursts at 5.5 per unit time; bursts last 2 units, quiet 18
    truth = Mmpp(rates=[0.5, 5.5], generator=[[-1 / 18, 1 / 18], [0.5, -0.5]], window=1.0)
    u = MmppSampler(truth, np.random.default_rng(5)).next(6000)
    assert u[0] == 0.0 and np.all(np.diff(u) >= 0)
    assert u.size / u[-1] == pytest.approx(1.0, rel=0.1)  # stationary mean rate 1
    fitted, rows = fit_mmpp(u / (u.size / u[-1]), states=(2, 3))
    assert fitted is not None and [r["states"] for r in rows] == [2, 3]
    assert len(fitted.rates) == 2  # BIC picks the true number of states
    assert fitted.rates[0] == pytest.approx(0.5, rel=0.25)
    assert fitted.rates[1] == pytest.approx(5.5, rel=0.25)
    # mean sojourns: 18 and 2 units (windows of one expected event blur the switches)
    q = np.asarray(fitted.generator)
    assert 10.0 < -1 / q[0, 0] < 30.0
    assert 1.0 < -1 / q[1, 1] < 4.0
    again = MmppSampler(fitted, np.random.default_rng(6)).next(6000)
    real, synth = idc_curve(u), idc_curve(again)
    for w in (1.0, 16.0):
        assert synth[w] == pytest.approx(real[w], rel=0.3)
    # 93 windows of 64: the variance itself is uncertain; within compare's IDC threshold
    assert abs(np.log(synth[64.0] / real[64.0])) <= 0.7


def test_mmpp_sampler_does_not_depend_on_the_request_size() -> None:
    m = Mmpp(rates=[0.2, 3.0], generator=[[-0.1, 0.1], [0.5, -0.5]], window=1.0)
    a = MmppSampler(m, np.random.default_rng(1)).next(5000)
    s = MmppSampler(m, np.random.default_rng(1))
    b = np.concatenate([s.next(7), s.next(1993), s.next(3000)])
    assert np.array_equal(a, b)


def test_a_silent_mmpp_ends_instead_of_spinning() -> None:
    m = Mmpp(rates=[0.0, 2.0], generator=[[0.0, 0.0], [1.0, -1.0]], window=1.0)
    u = MmppSampler(m, np.random.default_rng(3)).next(10_000)
    assert u.size == 10_000 and np.isinf(u[-1]) and np.all(np.diff(u[np.isfinite(u)]) >= 0)


def test_mmpp_parameters_are_validated() -> None:
    with pytest.raises(ValidationError, match="sum to 0"):
        Mmpp(rates=[1.0, 2.0], generator=[[-1.0, 0.5], [1.0, -1.0]], window=1.0)
    with pytest.raises(ValidationError, match="2 x 2"):
        Mmpp(rates=[1.0, 2.0], generator=[[-1.0, 1.0]], window=1.0)


@pytest.fixture(scope="module")
def bursts() -> pl.DataFrame:
    # bursts of ~8 requests at 20/s every ~20 s: shorter than a rate bin, so the
    # rate curve cannot carry them and a renewal has no memory between gaps
    return mmpp_requests(12_000, seed=3)


def test_auto_picks_the_mmpp_on_correlated_bursts(bursts: pl.DataFrame, tmp_path) -> None:
    # (2 states at most keeps the test fast; the default tries 2..4)
    model, diag = fit(bursts, seed=0, arrivals="auto", options=FitOptions(mmpp_max_states=2))
    a = diag["arrivals"]
    assert a["chosen"] == "mmpp" and model.arrival.process == "mmpp"
    assert a["score"]["mmpp"] < 0.9 * a["score"]["renewal"]
    mmpp = model.arrival.mmpp
    assert mmpp is not None and len(mmpp.rates) == 2
    assert mmpp.rates[1] / mmpp.rates[0] > 5
    # its rate curve is the coarser one (256 events per bin: 300 s instead of 30 s)
    assert model.arrival.rate.bin_s == 300.0
    synthetic = sample(model, seed=1)
    cmp = compare(bursts, synthetic)
    assert cmp.passed, cmp.metrics["failed"]
    renewal_model, _ = fit(bursts, seed=0)  # the default: Gamma renewal
    gamma_cmp = compare(bursts, renewal_model.sample(seed=1))

    def idc(c: object) -> float:
        t = c.table  # type: ignore[attr-defined]
        return float(t.filter(pl.col("statistic") == "idc")["distance"][0])

    assert idc(cmp) < 0.5 < 0.65 < idc(gamma_cmp)
    # deterministic, chunk-size free, scalable, and a model file round trip
    chunks = pl.concat(list(iter_chunks(model, seed=1, chunk_rows=999)))
    assert chunks.drop("request_id").equals(synthetic.drop("request_id")) or np.allclose(
        chunks["arrival_s"].to_numpy(), synthetic["arrival_s"].to_numpy(), atol=1e-6
    )
    assert sample(model, seed=1, scale=3.0).height / synthetic.height == pytest.approx(
        3.0, rel=0.08
    )
    path = save_model(model, tmp_path / "m.yaml")
    assert load_model(path) == model


def test_mmpp_errors_name_what_to_do() -> None:
    tiny = gamma_renewal_requests(150, rate=1.0, cv=1.0, seed=1)
    with pytest.raises(ConfigError, match=r"at least 200.*arrivals='gamma'"):
        fit(tiny, arrivals="mmpp")
    with pytest.raises(ConfigError, match="expected one of 'gamma', 'mmpp', 'auto'"):
        fit(tiny, arrivals="poisson")  # type: ignore[arg-type]
