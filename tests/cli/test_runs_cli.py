"""``fleetlab runs list | show | rm`` over a store filled through the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetlab.cli import app, main
from fleetlab.errors import DataNotFoundError
from fleetlab.store import RunStore

runner = CliRunner()


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "runs"
    store = RunStore(root)
    ids = []
    with store.run("workload fit", config={"model": "mmpp"}, inputs=[__file__]) as run:
        run.log_metrics({"ks": 0.031, "rows": 1200})
        run.write_json("model.json", {"k": 2})
    ids.append(run.id)
    with pytest.raises(ValueError), store.run("placement simulate", config={}) as run:
        raise ValueError("bad policy")
    ids.append(run.id)
    return root, ids


def test_list_json_and_table(filled: tuple[Path, list[str]]) -> None:
    root, ids = filled
    res = runner.invoke(app, ["runs", "list", "--store", str(root), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [r["id"] for r in data] == ids[::-1]
    assert data[1]["metrics"] == {"ks": 0.031, "rows": 1200}
    assert data[0]["status"] == "failed" and data[0]["error"] == "ValueError: bad policy"
    res = runner.invoke(app, ["runs", "list", "--store", str(root), "--status", "failed", "--json"])
    assert [r["id"] for r in json.loads(res.stdout)] == [ids[1]]
    res = runner.invoke(app, ["runs", "list", "--store", str(root), "-c", "workload"])
    assert res.exit_code == 0 and ids[0] in res.stdout and ids[1] not in res.stdout
    res = runner.invoke(app, ["runs", "list", "--store", str(root), "--status", "weird"])
    assert res.exit_code != 0


def test_list_uses_fleetlab_home_by_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FLEETLAB_HOME", str(tmp_path / "h"))
    with RunStore().run("tour", config={}) as run:
        pass
    res = runner.invoke(app, ["runs", "list", "--json"])
    assert [r["id"] for r in json.loads(res.stdout)] == [run.id]


def test_show(filled: tuple[Path, list[str]]) -> None:
    root, ids = filled
    res = runner.invoke(app, ["runs", "show", ids[0][:-2], "--store", str(root), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.stdout)
    assert rec["id"] == ids[0] and rec["config"] == {"model": "mmpp"}
    assert Path(rec["artifacts"]["model.json"]).is_file()
    assert rec["inputs"][0]["sha256"] and rec["inputs"][0]["path"] == str(Path(__file__).resolve())
    res = runner.invoke(app, ["runs", "show", ids[0], "--store", str(root)])
    assert res.exit_code == 0
    for text in ("workload fit", "finished", "mmpp", "model.json", "ks"):
        assert text in res.stdout
    res = runner.invoke(app, ["runs", "show", "nope", "--store", str(root)])
    assert isinstance(res.exception, DataNotFoundError)


def test_rm_asks_unless_yes(filled: tuple[Path, list[str]]) -> None:
    root, ids = filled
    res = runner.invoke(app, ["runs", "rm", ids[0], "--store", str(root)], input="n\n")
    assert res.exit_code == 1
    assert len(RunStore(root).list()) == 2
    res = runner.invoke(app, ["runs", "rm", ids[0], "--store", str(root)], input="y\n")
    assert res.exit_code == 0
    assert [r.id for r in RunStore(root).list()] == [ids[1]]
    res = runner.invoke(app, ["runs", "rm", ids[1], "--yes", "--json", "--store", str(root)])
    assert json.loads(res.stdout) == {"removed": [ids[1]]}
    assert RunStore(root).list() == []
    assert not (root / "artifacts" / ids[0]).exists()


def test_unknown_run_exits_with_one_line_and_code_5(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["fleetlab", "runs", "show", "nope"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 5
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not found" in err
