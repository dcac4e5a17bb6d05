"""The CLI commands and the tour stop."""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fleetlab.cli import app
from fleetlab.inference import tour_stop

runner = CliRunner()


def test_simulate_json_output_and_files(tmp_path: Path) -> None:
    out = tmp_path / "req.parquet"
    rep = tmp_path / "r.html"
    res = runner.invoke(
        app,
        [
            "inference",
            "simulate",
            "--qps",
            "8",
            "-n",
            "300",
            "--replicas",
            "2",
            "--scheduler",
            "sarathi",
            "-o",
            str(out),
            "--report",
            str(rep),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["metrics"]["requests"] == 300
    assert len(data["replicas"]) == 2
    assert pl.read_parquet(out).height == 300
    assert "plotly" in rep.read_text()[:5_000_000]
    again = runner.invoke(app, ["inference", "simulate", "--qps", "8", "-n", "10", "-o", str(out)])
    assert again.exit_code != 0  # never overwrite without --force


def test_simulate_on_a_trace_with_disaggregation(shared_data: Path) -> None:
    trace = shared_data / "azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv"
    res = runner.invoke(
        app,
        [
            "inference",
            "simulate",
            "--trace",
            str(trace),
            "--model",
            "llama-3.1-8b",
            "--limit",
            "500",
            "--disaggregate",
            "1:1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["metrics"]["gpus"] == 2


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    from fleetlab.cli import main

    for args in (
        ["inference", "simulate", "--qps", "1", "--model", "gpt-9"],
        ["inference", "simulate", "--qps", "1", "--model", "llama-2-70b", "--gpu", "a100"],
    ):
        with pytest.raises(SystemExit) as exc:
            import sys

            old = sys.argv
            sys.argv = ["fleetlab", *args]
            try:
                main()
            finally:
                sys.argv = old
        assert exc.value.code == 2


def test_specs_lists_models() -> None:
    res = runner.invoke(app, ["inference", "specs", "--json"])
    assert res.exit_code == 0
    names = [m["model"] for m in json.loads(res.stdout)["models"]]
    assert "mixtral-8x7b" in names


def test_tour_stop_synthetic_is_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETLAB_MIRROR", raising=False)
    t0 = time.perf_counter()
    report, summary = tour_stop(tmp_path, seed=1)
    assert time.perf_counter() - t0 < 20
    assert summary["data"].startswith("synthetic")
    assert summary["requests"] == 3000
    assert report.sections and "Inference" in report.sections[0].title


def test_tour_stop_uses_the_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_data: Path
) -> None:
    monkeypatch.setenv("FLEETLAB_MIRROR", str(shared_data))
    _, summary = tour_stop(tmp_path, seed=0)
    assert summary["data"].startswith("Azure LLM")
    assert 0 < summary["ttft_p50_s"] < 1
