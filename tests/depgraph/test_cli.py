"""``fleetlab depgraph`` commands: JSON output, tables, files, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetlab import depgraph
from fleetlab.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("dg")
    res = runner.invoke(
        app,
        [
            "depgraph",
            "generate",
            "shared-backends",
            "-o",
            str(d / "s.parquet"),
            "--flows",
            str(d / "f.parquet"),
            "--rate",
            "100",
            "--duration",
            "10",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["spans"] > 1000
    return d / "s.parquet"


def test_mine_show_blast_radius(spans_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.json"
    res = runner.invoke(
        app,
        [
            "depgraph",
            "mine",
            str(spans_file),
            "-o",
            str(out),
            "--report",
            str(tmp_path / "g.html"),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    truth = depgraph.topology("shared-backends").edges()
    assert data["edges"] == len(truth) and data["source"] == "spans"
    assert set(depgraph.read_graph(out).graph.edges) == truth
    html = (tmp_path / "g.html").read_text()
    assert "plotly_click" in html and "Blast radius" in html
    res = runner.invoke(app, ["depgraph", "show", str(out), "--json"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert {(e["caller"], e["callee"]) for e in shown["edges"]} == truth
    res = runner.invoke(app, ["depgraph", "blast-radius", str(out), "users-db", "--json"])
    assert res.exit_code == 0, res.output
    b = json.loads(res.stdout)
    assert b["affected_services"] == ["auth", "cart", "mobile", "web"]
    assert b["share_of_traffic"] == pytest.approx(1.0)
    res = runner.invoke(app, ["depgraph", "show", str(out)])
    assert res.exit_code == 0 and "Largest blast radius" in res.stdout
    # never overwrite without --force
    res = runner.invoke(app, ["depgraph", "mine", str(spans_file), "-o", str(out)])
    assert res.exit_code != 0 and "already exists" in str(res.exception)


def test_mine_flows_and_diff(spans_file: Path, tmp_path: Path) -> None:
    flows = spans_file.with_name("f.parquet")
    res = runner.invoke(
        app, ["depgraph", "mine", str(flows), "-o", str(tmp_path / "fg.json"), "--json"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["source"] == "flows"
    res = runner.invoke(app, ["depgraph", "mine", str(spans_file), "-o", str(tmp_path / "sg.json")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "depgraph",
            "diff",
            str(tmp_path / "sg.json"),
            str(tmp_path / "fg.json"),
            "--json",
            "-o",
            str(tmp_path / "d.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["added_edges"] == [] and d["removed_edges"] == []
    assert json.loads((tmp_path / "d.json").read_text())["added_edges"] == []


def test_critical_path_and_evaluate(spans_file: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        [
            "depgraph",
            "critical-path",
            str(spans_file),
            "--json",
            "-o",
            str(tmp_path / "t.parquet"),
            "--max-traces",
            "300",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["shapes"]["traces"] == 300
    assert {r["service"] for r in data["services"]} >= {"web", "auth"}
    res = runner.invoke(app, ["depgraph", "evaluate", str(spans_file), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["edge_f1"] >= 0.9
    res = runner.invoke(app, ["depgraph", "critical-path", str(spans_file.with_name("f.parquet"))])
    assert res.exit_code != 0


def test_unknown_topology_is_a_config_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["depgraph", "generate", "nope", "-o", str(tmp_path / "x.parquet")])
    assert res.exit_code != 0 and "chain" in str(res.exception)
