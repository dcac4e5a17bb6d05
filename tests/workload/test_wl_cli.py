"""The workload commands end to end: characterize, fit, synth, compare."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from helpers import gamma_renewal_requests
from typer.testing import CliRunner

from fleetlab.cli import app

runner = CliRunner()


@pytest.fixture()
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "real.parquet"
    gamma_renewal_requests(6000, rate=5.0, cv=1.5, seed=7).write_parquet(path)
    return path


def test_characterize_json_and_html(tmp_path: Path, trace: Path) -> None:
    res = runner.invoke(app, ["characterize", str(trace), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["table"] == "requests" and data["arrivals"]["events"] == 6000
    html = tmp_path / "r.html"
    res = runner.invoke(app, ["characterize", str(trace), "-o", str(html)])
    assert res.exit_code == 0 and html.read_text().startswith("<!DOCTYPE html>")
    assert "Sizes" in res.stdout  # the rich tables
    res = runner.invoke(app, ["characterize", str(trace), "-o", str(html)])
    assert res.exit_code != 0 and "already exists" in str(res.exception)


def test_fit_synth_compare_pipeline(tmp_path: Path, trace: Path) -> None:
    model = tmp_path / "m.yaml"
    res = runner.invoke(app, ["workload", "fit", str(trace), "-o", str(model), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["table"] == "requests"
    assert model.read_text().startswith("schema_version: 1")
    out = tmp_path / "s.parquet"
    res = runner.invoke(
        app,
        [
            "workload",
            "synth",
            str(model),
            "--duration",
            "30m",
            "--scale",
            "2",
            "--seed",
            "1",
            "-o",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["duration_s"] == 1800.0 and info["rows"] == pl.read_parquet(out).height
    assert info["rows"] == pytest.approx(2 * 5.0 * 1800, rel=0.1)
    report = tmp_path / "cmp.html"
    res = runner.invoke(
        app,
        [
            "workload",
            "compare",
            str(trace),
            str(out),
            "--scale",
            "2",
            "--json",
            "-o",
            str(report),
            "--check",
        ],
    )
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["passed"] is True and report.exists()
    assert {r["statistic"] for r in result["statistics"]} >= {"ks", "rate_curve", "renewal_cv"}


def test_compare_check_fails_on_a_bad_synthetic_trace(tmp_path: Path, trace: Path) -> None:
    bad = tmp_path / "bad.parquet"
    gamma_renewal_requests(6000, rate=5.0, cv=1.5, seed=7).with_columns(
        pl.col("prompt_tokens") * 3
    ).write_parquet(bad)
    th = tmp_path / "th.yaml"
    th.write_text("ks: 0.05\ncv_rel: 0.2\n")
    res = runner.invoke(
        app, ["workload", "compare", str(trace), str(bad), "--check", "--thresholds", str(th)]
    )
    assert res.exit_code == 1
    assert "FAIL" in res.stdout and "prompt_tokens" in res.stdout


def test_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("schema_version: 2\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fleetlab",
            "workload",
            "synth",
            str(bad),
            "-o",
            str(tmp_path / "x.parquet"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "schema_version" in proc.stderr


def test_fit_arrivals_option(tmp_path: Path) -> None:
    trace = tmp_path / "small.parquet"  # 1,500 events keep the EM quick
    gamma_renewal_requests(1500, rate=5.0, cv=1.5, seed=8).write_parquet(trace)
    model = tmp_path / "m.yaml"
    res = runner.invoke(
        app, ["workload", "fit", str(trace), "-o", str(model), "--arrivals", "mmpp", "--json"]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["process"] == "mmpp" and 2 <= out["mmpp_states"] <= 4
    assert out["diagnostics"]["arrivals"]["chosen"] == "mmpp"
    assert "process: mmpp" in model.read_text()
    res = runner.invoke(
        app, ["workload", "fit", str(trace), "-o", str(tmp_path / "x.yaml"), "--arrivals", "hmm"]
    )
    assert res.exit_code != 0 and "gamma, mmpp or auto" in res.output
