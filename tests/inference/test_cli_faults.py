"""``fleetlab inference simulate --faults``: a FaultModel YAML drawn over the replicas."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fleetlab.cli import app
from fleetlab.store import RunStore

runner = CliRunner()

_MODEL = """\
failures:
  node: {mtbf: {mean_s: 20}, mttr: {mean_s: 3}}
  domain: {mtbf: {mean_s: 60}, mttr: {mean_s: 2}}
slowdowns: {interval: {mean_s: 15}, duration: {mean_s: 5}}
"""


def _run(tmp_path: Path, *extra: str) -> dict[str, object]:
    model = tmp_path / "faults.yaml"
    model.write_text(_MODEL)
    args = ["inference", "simulate", "--qps", "20", "-n", "400", "--replicas", "3"]
    args += ["--scheduler", "sarathi", "--faults", str(model), "--racks", "2", "--json"]
    res = runner.invoke(app, [*args, *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_simulate_with_faults_reports_availability_and_records_the_config(
    tmp_path: Path,
) -> None:
    first = _run(tmp_path, "--seed", "3")
    m = first["metrics"]
    assert isinstance(m, dict)
    assert 0.0 < m["availability"] < 1.0
    assert m["retried_requests"] > 0
    assert m["failed_requests"] == 0
    again = _run(tmp_path, "--seed", "3")
    assert isinstance(again["metrics"], dict)
    assert again["metrics"]["availability"] == m["availability"]
    assert again["metrics"]["retries"] == m["retries"]
    dropped = _run(tmp_path, "--seed", "3", "--on-crash", "drop")
    assert isinstance(dropped["metrics"], dict)
    assert dropped["metrics"]["failed_requests"] > 0
    assert dropped["metrics"]["retries"] == 0
    run = RunStore().list(limit=1, command="inference simulate")[0]
    assert run.config["faults"] == str(tmp_path / "faults.yaml")
    assert run.config["on_crash"] == "drop"
    assert run.config["racks"] == 2
    assert run.config["fault_horizon_s"] > 0
    assert "faults.parquet" in run.artifacts


def test_fault_options_need_faults() -> None:
    res = runner.invoke(
        app, ["inference", "simulate", "--qps", "5", "-n", "10", "--on-crash", "drop"]
    )
    assert res.exit_code != 0
    assert "apply to --faults only" in str(res.exception)
