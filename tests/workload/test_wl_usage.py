"""Usage (utilization) models: fit, synthesize VMs + usage, compare; placement consumes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from fleetlab import traces
from fleetlab.cli import app
from fleetlab.errors import ConfigError
from fleetlab.workload import (
    compare,
    fit,
    iter_chunks,
    load_model,
    sample,
    save_model,
    usage_vms,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def azure_vm_usage(shared_data: Path) -> pl.DataFrame:
    """Azure VM 2017 CPU: 100 VMs x 8,004 five-minute samples (avg and max)."""
    return traces.load(shared_data / "azure-vm-2017-cpu-100vms" / "microsoft_avg_100.csv.gz")


def two_class_usage(seed: int = 3, vms: int = 40, days: int = 3) -> pl.DataFrame:
    """Known truth: 3/4 of the VMs idle near 5 % (AR(1) phi 0.5), 1/4 busy near 60 % with
    a daily sine (phi 0.9); 10-minute samples."""
    rng = np.random.default_rng(seed)
    steps = days * 144
    t = np.arange(steps) * 600.0
    rows = []
    for v in range(vms):
        busy = v % 4 == 0
        phi, sd = (0.9, 0.3) if busy else (0.5, 0.2)
        e = rng.standard_normal(steps) * sd * np.sqrt(1 - phi**2)
        r = np.zeros(steps)
        for i in range(steps):
            r[i] = (phi * r[i - 1] if i else 0.0) + e[i]
        level = 0.4 if busy else -2.9  # logit of ~60 % and ~5 %
        amp = 0.8 * np.sin(2 * np.pi * t / 86400.0) if busy else 0.0
        x = level + amp + r
        rows.append(
            pl.DataFrame({"vm_id": f"v{v:02d}", "ts_s": t, "cpu_avg": 100 / (1 + np.exp(-x))})
        )
    return pl.concat(rows)


def test_fit_recovers_known_classes_and_ar_coefficients() -> None:
    df = two_class_usage()
    model, diag = fit(df, seed=0)
    um = model.usage
    assert model.table == "usage" and um is not None
    assert um.interval_s == 600.0 and um.vms == 40
    assert diag["k"] == 2 and [c.vms for c in um.classes] == [30, 10]
    idle, busy = um.classes
    assert idle.share == pytest.approx(0.75) and busy.share == pytest.approx(0.25)
    assert idle.level_mean[0] == pytest.approx(-2.9, abs=0.1)
    assert busy.level_mean[0] == pytest.approx(0.4, abs=0.15)
    # lag-1 ACF of the residual: (1 - w) phi + w phi_slow
    for c, phi in ((idle, 0.5), (busy, 0.9)):
        acf1 = (1 - c.slow_share) * c.phi + c.slow_share * c.phi_slow
        assert acf1 == pytest.approx(phi, abs=0.1)
    # the busy class's daily sine: peak-to-trough of the profile ~ 1.6 logit
    amp = busy.level_mean[2] * (max(busy.daily) - min(busy.daily))
    assert amp == pytest.approx(1.6, rel=0.2)
    assert max(idle.daily) - min(idle.daily) < 0.3


def test_synthesis_is_deterministic_chunk_free_and_scales_vms(tmp_path: Path) -> None:
    model, _ = fit(two_class_usage(), seed=0)
    a = sample(model, seed=5)
    b = pl.concat(list(iter_chunks(model, seed=5, chunk_rows=1000)))
    assert a.equals(b)
    assert a.height == 40 * 432 and a["vm_id"].n_unique() == 40
    assert a["cpu_avg"].min() > 0 and a["cpu_avg"].max() < 100
    c = sample(model, seed=5, scale=2.5, duration_s=86400.0)
    assert c["vm_id"].n_unique() == 100 and c["ts_s"].n_unique() == 145
    assert not a.equals(sample(model, seed=6))
    vms = usage_vms(model, scale=2.5, seed=5)
    assert vms.height == 100 and set(vms["vm_id"]) == set(c["vm_id"])
    assert vms["cores"].to_list() == [2.0] * 100 and vms["deleted_s"].null_count() == 100
    path = save_model(model, tmp_path / "u.yaml")
    assert load_model(path) == model
    assert compare(two_class_usage(), a).passed


def test_azure_vm_2017_round_trip_passes_its_fidelity_report(
    azure_vm_usage: pl.DataFrame,
) -> None:
    model, diag = fit(azure_vm_usage, seed=0)
    um = model.usage
    assert um is not None and um.interval_s == 300.0 and um.vms == 100
    assert diag["k"] == 2 and [c.vms for c in um.classes] == [81, 19]
    assert all(c.weekly is not None for c in um.classes)  # 27.8 days: a weekly pattern
    assert all("cpu_max" in c.gap_corr for c in um.classes)
    synth = sample(model, seed=2)
    assert synth.height == azure_vm_usage.height
    cmp = compare(azure_vm_usage, synth)
    rows = {(r["statistic"], r["field"]): r for r in cmp.table.to_dicts()}
    assert cmp.passed, cmp.metrics["failed"]
    assert rows[("acf_usage", "lag 1")]["real"] == pytest.approx(0.642, abs=0.005)
    assert rows[("acf_usage", "lag 1 day")]["real"] == pytest.approx(0.247, abs=0.005)
    assert rows[("acf_usage", "lag 1 day")]["distance"] < 0.1  # slow AR(1) component
    assert rows[("vms_under", "10%")]["real"] == pytest.approx(0.69)
    assert rows[("daily_profile", "cpu_avg")]["distance"] < 0.05
    assert rows[("class_shares", "k=2")]["distance"] <= 0.1
    # calibrated levels, per-VM slow shares and a narrower level density: the per-VM
    # KS rows were 0.06-0.17 (cpu_max mean 0.17 against 0.192 on this seed)
    for field in ("cpu_avg mean", "cpu_avg p95", "cpu_max mean"):
        assert rows[("ks_per_vm", field)]["distance"] <= 0.16, field
    assert all("slow_share" in c.level_names for c in um.classes)
    # at scale 10 (1,000 VMs vs 100: critical value 0.143) the per-VM KS rows failed on
    # 3 of 6 seeds (cpu_max mean 0.125-0.145, P95 up to 0.144); now 0.08-0.12. The
    # ks_per_vm statistics alone (the whole scale-10 report costs 20 CPU-s):
    from fleetlab.workload._stats import ks_two_sample
    from fleetlab.workload._usage import _per_vm, ks_critical

    real, big = _per_vm(azure_vm_usage), _per_vm(sample(model, seed=4, scale=10))
    assert big.height == 1000 and ks_critical(100, 1000) == pytest.approx(0.1426, abs=1e-3)
    for col, bound in (("mean", 0.07), ("p95", 0.09), ("max_mean", 0.125)):
        a, b = real[col].to_numpy(), big[col].to_numpy()
        assert ks_two_sample(a, b) <= bound, col
    assert float(np.median(big["max_mean"].to_numpy())) == pytest.approx(14.67, rel=0.05)


def test_level_calibration_reproduces_known_means() -> None:
    """With no profile, the solved level is exact: a constant VM at 20 % has
    ``mu = logit(0.2)``; with a residual (sd 1) its mean logit must sit lower (the logit
    is convex below 50 %: Jensen) so that the mean CPU is still 20 %; the gap scale of a
    constant gap puts ``cpu_max`` exactly at its target."""
    from scipy.special import expit, logit

    from fleetlab.workload._usage import calibrate_gap, calibrate_level

    shape = np.zeros(288)
    one = np.ones(1)
    mu0 = calibrate_level(shape, np.zeros(1), one * 1e-6, np.zeros(1), one * 20.0)
    assert mu0[0] == pytest.approx(logit(0.2), abs=1e-4)
    mu1 = calibrate_level(shape, np.zeros(1), one, np.zeros(1), one * 20.0)
    assert mu1[0] < logit(0.2) - 0.1
    z = np.random.default_rng(1).standard_normal(200_000)
    assert np.mean(100 * expit(mu1[0] + z)) == pytest.approx(20.0, rel=0.01)
    g = calibrate_gap(
        shape, mu0, one * 1e-6, np.zeros(1), np.zeros(1), one * 1e-4, 0.0, one * 50.0, sign=1.0
    )
    assert np.exp(g[0]) == pytest.approx(-logit(0.2), abs=1e-3)  # logit(0.5) - logit(0.2)


def test_usage_errors_name_what_is_wrong() -> None:
    one = pl.DataFrame({"vm_id": ["a", "b"], "ts_s": [0.0, 0.0], "cpu_avg": [1.0, 2.0]})
    with pytest.raises(ConfigError, match="no VM has two samples"):
        fit(one)
    empty = pl.DataFrame(
        {"vm_id": ["a"], "ts_s": [0.0], "cpu_avg": [None]}, schema_overrides={"cpu_avg": pl.Float64}
    )
    with pytest.raises(ConfigError, match="no rows with vm_id, ts_s and cpu_avg"):
        fit(empty, table="usage")
    model, _ = fit(two_class_usage(vms=12, days=1), seed=0)
    with pytest.raises(ConfigError, match="scale must be a positive"):
        usage_vms(model, scale=0)


def test_placement_consumes_synthesized_vms_and_usage_through_the_cli(tmp_path: Path) -> None:
    real = tmp_path / "usage.parquet"
    two_class_usage(vms=20, days=2).write_parquet(real)
    model = tmp_path / "m.yaml"
    res = runner.invoke(app, ["workload", "fit", str(real), "-o", str(model), "--json"])
    assert res.exit_code == 0, res.output
    usage, vms = tmp_path / "s.parquet", tmp_path / "vms.parquet"
    res = runner.invoke(
        app,
        ["workload", "synth", str(model), "-o", str(usage), "--vms", str(vms), "--seed", "1"],
    )
    assert res.exit_code == 0, res.output
    assert pl.read_parquet(vms).height == 20
    cluster = tmp_path / "c.yaml"
    cluster.write_text(
        "name: small\nserver_types:\n  - {name: cpu, count: 4, capacity: {cores: 8, memory_gb: 64}}\n"
    )
    res = runner.invoke(
        app,
        [
            "placement",
            "simulate",
            "--trace",
            str(vms),
            "--cluster",
            str(cluster),
            "-p",
            "best-fit",
            "-p",
            "oversub",
            "--oversub-ratio",
            "3",
            "--usage",
            str(usage),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    best = {r["policy"]: r for r in data["summary"]}
    # 20 VMs of 2 cores on 4 x 8 cores: best-fit places 16, oversub at 3x all 20
    assert best["best-fit"]["failures"] == 4 and best["oversub"]["failures"] == 0
    v = data["oversub_violations"]
    assert v["best-fit"]["samples"] > 0 and v["best-fit"]["violations"] == 0
    # five busy VMs near 60 % of 2 cores on 8-core servers packed 3x: some overflow
    assert v["oversub"]["violations"] > 0
    res = runner.invoke(
        app, ["workload", "synth", str(model), "-o", str(tmp_path / "x.parquet"), "--vms", str(vms)]
    )
    assert res.exit_code != 0 and "already exists" in str(res.exception)
