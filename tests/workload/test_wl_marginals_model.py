"""Marginal fitting and sampling; the model file (versioned YAML/JSON)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab.errors import ConfigError, DataNotFoundError, FleetlabError
from fleetlab.workload import Marginal, load_model, save_model
from fleetlab.workload._marginals import draw, fit_marginal, knots
from fleetlab.workload._stats import ks_two_sample
from fleetlab.workload._tour import builtin_model


def test_fit_recovers_lognormal_parameters() -> None:
    rng = np.random.default_rng(0)
    x = rng.lognormal(np.log(500.0), 0.8, 20_000)
    m, cands = fit_marginal(x, integer=False, rng=np.random.default_rng(1))
    assert m.kind == "parametric" and m.family == "lognormal"
    assert m.params["s"] == pytest.approx(0.8, rel=0.05)
    assert m.params["scale"] == pytest.approx(500.0, rel=0.05)
    assert [c["aic"] for c in cands] == sorted(c["aic"] for c in cands)


def test_fit_picks_gamma_for_gamma_data_and_keeps_zero_fraction() -> None:
    rng = np.random.default_rng(2)
    x = rng.gamma(3.0, 10.0, 20_000)
    x[:2000] = 0.0
    m, _ = fit_marginal(x, integer=False, rng=np.random.default_rng(3))
    assert m.family == "gamma"
    assert m.zero_fraction == pytest.approx(0.1)
    y = draw(m, np.random.default_rng(4).standard_normal(50_000))
    assert np.mean(y == 0) == pytest.approx(0.1, abs=0.01)
    assert ks_two_sample(x, y) < 0.02


def test_bimodal_data_falls_back_to_empirical_and_still_matches() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(100, 5, 10_000), rng.normal(1000, 50, 10_000)]).round()
    m, cands = fit_marginal(x, integer=True, rng=np.random.default_rng(6))
    assert m.kind == "empirical"
    assert min(c["ks"] for c in cands if c["error"] is None) > 0.02
    y = draw(m, np.random.default_rng(7).standard_normal(50_000))
    assert ks_two_sample(x, y) < 0.02
    assert np.all(y == np.round(y))


def test_constant_column_is_a_constant_marginal() -> None:
    m, cands = fit_marginal(np.full(100, 7.0), integer=True, rng=np.random.default_rng(0))
    assert m.kind == "constant" and cands == []
    assert np.all(draw(m, np.linspace(-3, 3, 11)) == 7.0)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=2, max_size=300))
def test_draw_is_monotone_in_z_and_within_the_data_range(values: list[int]) -> None:
    x = np.array(values, dtype=float)
    m, _ = fit_marginal(x, integer=True, rng=np.random.default_rng(0))
    z = np.linspace(-9, 9, 501)
    y = draw(m, z)
    assert np.all(np.diff(y) >= 0)
    assert y.min() >= x.min() and (m.upper is None or y.max() <= m.upper)


def test_knots_are_uniform_and_increasing() -> None:
    m = builtin_model().fields["prompt_tokens"]
    z, x = knots(m)
    assert np.allclose(np.diff(z), z[1] - z[0])
    assert np.all(np.diff(x) >= 0)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_model_file_round_trip(tmp_path: Path, suffix: str) -> None:
    model = builtin_model()
    path = save_model(model, tmp_path / f"m{suffix}")
    assert load_model(path) == model
    with pytest.raises(FleetlabError, match="already exists"):
        save_model(model, path)
    save_model(model, path, overwrite=True)


def test_model_file_errors_name_the_field(tmp_path: Path) -> None:
    path = save_model(builtin_model(), tmp_path / "m.yaml")
    text = path.read_text()
    path.write_text(text.replace("schema_version: 1", "schema_version: 99"))
    with pytest.raises(ConfigError, match=r"schema_version.*99"):
        load_model(path)
    path.write_text(text.replace("bin_s: 60.0", "bin_s: -1"))
    with pytest.raises(ConfigError, match=r"arrival\.rate\.bin_s"):
        load_model(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_model(path)
    with pytest.raises(DataNotFoundError):
        load_model(tmp_path / "absent.yaml")


def test_marginal_is_frozen() -> None:
    m = Marginal(kind="constant", value=1.0)
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen models
        m.value = 2.0  # type: ignore[misc]
