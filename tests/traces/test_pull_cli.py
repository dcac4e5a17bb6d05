"""``fleetlab data list | info | pull`` through the CLI, on the real mirror."""

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


def test_data_list_json_and_table() -> None:
    res = runner.invoke(app, ["data", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert len(rows) == 19
    llm = next(r for r in rows if r["name"] == "azure-llm-inference-2023")
    assert llm["formats"] == ["azure-llm"] and llm["files"] == 2 and llm["bytes"] == 1_039_305
    res = runner.invoke(app, ["data", "list"])
    assert res.exit_code == 0 and "nezha-rca" in res.stdout


def test_data_info(shared_data: Path) -> None:
    res = runner.invoke(app, ["data", "info", "mooncake-kimi-2025", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["license"] == "Apache-2.0"
    assert {f["path"] for f in info["files"]} == {
        "README.md",
        "conversation_trace.jsonl",
        "synthetic_trace.jsonl",
    }
    assert info["local"]["raw files present"] == 0
    res = runner.invoke(app, ["data", "info", "nezha-rca"])
    assert res.exit_code == 0 and "25 of 314" in res.stdout and "MIT" in res.stdout
    res = runner.invoke(app, ["data", "info", "nope"])
    assert isinstance(res.exception, DataNotFoundError)


def test_data_pull_records_a_run(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLAB_MIRROR", str(shared_data))
    res = runner.invoke(app, ["data", "pull", "azure-llm-inference-2023", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert len(result["canonical"]) == 2 and result["left_raw"] == {}
    assert all(Path(p).is_file() for p in result["canonical"].values())
    [run] = RunStore().list()
    assert run.command == "data pull" and run.status == "finished"
    assert run.metrics["converted"] == 2 and run.metrics["bytes_fetched"] == 1_039_305
    assert "pull.json" in run.artifacts
    res = runner.invoke(app, ["data", "pull", "azure-llm-inference-2023"])
    assert res.exit_code == 0 and "already verified" in res.stdout


def test_pull_unknown_name_exits_5_and_lists_names(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["fleetlab", "data", "pull", "azure-llm-2099"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 5
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "azure-llm-inference-2023" in err and "Known datasets" in err


def test_data_path(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLAB_MIRROR", str(shared_data))
    rel = "AzureLLMInferenceTrace_code.csv"
    res = runner.invoke(app, ["data", "path", "azure-llm-inference-2023", rel])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(shared_data / "azure-llm-inference-2023" / rel)
    res = runner.invoke(app, ["data", "path", "azure-llm-inference-2023", "nope.csv"])
    assert isinstance(res.exception, DataNotFoundError)


def test_pull_exits_non_zero_when_a_reader_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from fleetlab import traces
    from fleetlab.errors import InputFormatError

    bad = b"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,abc,44\n"
    good = traces.dataset("azure-llm-inference-2023")
    mirror = tmp_path / "mirror" / good.name
    mirror.mkdir(parents=True)
    (mirror / "AzureLLMInferenceTrace_code.csv").write_bytes(bad)
    import hashlib

    sha = hashlib.sha256(bad).hexdigest()
    entry = good.files[0].model_copy(
        update={"size": len(bad), "sha256": sha, "content_sha256": sha}
    )
    monkeypatch.setattr(traces, "dataset", lambda name: good.model_copy(update={"files": (entry,)}))
    res = runner.invoke(app, ["data", "pull", good.name, "--mirror", str(tmp_path / "mirror")])
    assert isinstance(res.exception, InputFormatError)
    assert "could not be converted" in str(res.exception)
    [run] = RunStore().list()
    assert run.status == "finished" and run.metrics["left_raw"] == 1
    shutil.rmtree(mirror)
