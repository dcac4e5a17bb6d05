"""The tour stop and the ``fleetlab chaos`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fleetlab.chaos import ProxyClient, running_proxy, tour_stop
from fleetlab.cli import app
from fleetlab.errors import ConfigError

runner = CliRunner()


@pytest.mark.slow
def test_tour_stop_explores_the_demo_and_cleans_up(tmp_path: Path) -> None:
    report, summary = tour_stop(tmp_path, seed=0)
    assert summary["flaws_found"] == summary["flaws_expected"] == 3
    assert summary["runs_saved"] > 0 and summary["data"].startswith("demo")
    assert (tmp_path / "chaos_matrix.parquet").is_file()
    findings = json.loads((tmp_path / "chaos_findings.json").read_text())
    assert findings["metrics"]["runs"] == summary["runs"]
    journal = json.loads((tmp_path / "chaos_journal.json").read_text())
    assert len(journal["experiments"]) == summary["experiments"] > summary["runs"]
    assert {e["format"] for e in journal["experiments"]} == {"fleetlab-chaos-journal"}
    html = report.to_html()
    assert "Resilience findings" in html and "3 of 3" in html


def test_cli_stop_all_list_and_toxics(echo_port: int) -> None:
    with running_proxy() as handle, ProxyClient(handle.api_url) as client:
        client.create_proxy("e", upstream=f"127.0.0.1:{echo_port}")
        res = runner.invoke(
            app,
            [
                "chaos",
                "add-toxic",
                "e",
                "latency",
                "-a",
                "latency=20",
                "-a",
                "jitter=5",
                "--api",
                handle.api_url,
                "--json",
            ],
        )
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["attributes"] == {"latency": 20, "jitter": 5}
        res = runner.invoke(app, ["chaos", "list", "--api", handle.api_url, "--json"])
        assert json.loads(res.output)["e"]["toxics"][0]["name"] == "latency_downstream"
        res = runner.invoke(app, ["chaos", "stop-all", "--api", handle.api_url, "--json"])
        assert json.loads(res.output)["removed_toxics"] == 1
        assert client.toxics("e") == []


def test_cli_run_writes_journal_and_report(tmp_path: Path, http_port: int) -> None:
    exp = {
        "title": "cli run",
        "proxies": [{"name": "web", "upstream": f"127.0.0.1:{http_port}"}],
        "load": {"url": "http://{proxy:web}/", "rate_per_s": 20},
        "steady_state": {"window_s": 0.2, "slo": {"error_rate": 0.5}},
        "method": [
            {
                "proxy": "web",
                "toxic": {"type": "http_abort", "attributes": {"status": 503}},
                "duration_s": 0.3,
            }
        ],
        "recovery_s": 0.05,
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    journal, html = tmp_path / "j.json", tmp_path / "r.html"
    res = runner.invoke(app, ["chaos", "run", str(path), "-o", str(journal), "--report", str(html)])
    assert res.exit_code == 0, res.output
    doc = json.loads(journal.read_text())
    assert doc["status"] == "completed"
    assert doc["phases"]["during"]["error_rate"] >= 0.6  # the first request may beat the fault
    assert html.read_text().startswith("<!DOCTYPE html>")
    res = runner.invoke(app, ["chaos", "run", str(path), "-o", str(journal)])
    assert res.exit_code != 0  # never overwrite without --force
    res = runner.invoke(app, ["chaos", "validate", str(path), "--json"])
    assert json.loads(res.output)["valid"] is True


def test_cli_validate_reports_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"method": [{"proxy": "x", "toxic": {"type": "nope"}}]}))
    res = runner.invoke(app, ["chaos", "validate", str(path)])
    assert isinstance(res.exception, ConfigError)
    assert "method[0].toxic.type" in str(res.exception)


def test_cli_simulate_reports_availability_and_attainment(tmp_path: Path) -> None:
    cfg = tmp_path / "faults.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "failures": {
                    "node": {
                        "mtbf": {"kind": "constant", "mean_s": 9000},
                        "mttr": {"kind": "constant", "mean_s": 1000},
                    }
                },
            }
        )
    )
    res = runner.invoke(
        app,
        [
            "chaos",
            "simulate",
            str(cfg),
            "--nodes",
            "20",
            "--racks",
            "4",
            "--days",
            "1",
            "--target",
            "0.95",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    stats = json.loads(res.output)
    # constant 9000 s up / 1000 s down over 86400 s: down at 9000+10000k, 8 of them
    assert stats["fleet_availability"] == pytest.approx(1 - 8000 / 86400)
    assert stats["attainment"] == 0.0 and stats["nodes"] == 20
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"failures": {"node": {"mtbf": {"mean_s": -1}}}}))
    res = runner.invoke(app, ["chaos", "simulate", str(bad)])
    assert isinstance(res.exception, ConfigError)
    assert "failures.node.mtbf.mean_s" in str(res.exception)
