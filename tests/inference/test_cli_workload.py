"""``inference simulate --workload``: arrivals synthesized from a fitted workload model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from fleetlab import traces, workload
from fleetlab.cli import app
from fleetlab.errors import ConfigError, DataNotFoundError

runner = CliRunner()


@pytest.fixture(scope="module")
def conv_model(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workload model fitted on the Azure LLM 2023 conversation trace (one hour)."""
    trace = traces.load(shared_data / "azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv")
    model, _ = workload.fit(trace, seed=0)
    path = tmp_path_factory.mktemp("wl") / "conv.yaml"
    workload.save_model(model, path)
    return path


def _simulate(args: list[str]) -> dict:
    res = runner.invoke(app, ["inference", "simulate", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_workload_model_drives_the_simulation(
    conv_model: Path, tmp_path: Path, shared_data: Path
) -> None:
    out = tmp_path / "req.parquet"
    args = ["--workload", str(conv_model), "--duration", "10m", "--scale", "0.5", "--seed", "3"]
    data = _simulate([*args, "--replicas", "2", "-o", str(out)])
    m = data["metrics"]
    # the simulated requests are exactly the model's draw for that duration, scale, seed
    expected = workload.load_model(conv_model).sample(duration_s=600.0, scale=0.5, seed=3)
    got = pl.read_parquet(out).sort("arrival_s")
    assert m["requests"] == expected.height == got.height
    assert got["prompt_tokens"].to_list() == expected.sort("arrival_s")["prompt_tokens"].to_list()
    assert got["arrival_s"].max() <= 600.0
    assert len(data["replicas"]) == 2
    # and they look like the trace: about half its hourly rate over 10 minutes, similar sizes
    trace = traces.load(shared_data / "azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv")
    rate = trace.height / (trace["arrival_s"].max() - trace["arrival_s"].min())
    assert 0.5 * rate * 600 * 0.5 < m["requests"] < 1.5 * rate * 600 * 0.5
    med_real = float(np.median(trace["prompt_tokens"].to_numpy()))
    med_synth = float(np.median(got["prompt_tokens"].to_numpy()))
    assert abs(med_synth / med_real - 1) < 0.2
    # the run store records the model file as the input, with duration and scale
    runs = json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)
    rec = next(r for r in runs if r["command"] == "inference simulate")
    assert rec["config"]["workload"] == str(conv_model)
    assert rec["config"]["duration"] == "10m"
    assert rec["config"]["scale"] == 0.5
    assert rec["metrics"]["requests"] == m["requests"]


def test_workload_runs_are_seeded_and_scale(conv_model: Path) -> None:
    base = ["--workload", str(conv_model), "--duration", "3m"]
    a = _simulate([*base, "--seed", "1"])["metrics"]
    b = _simulate([*base, "--seed", "1"])["metrics"]
    c = _simulate([*base, "--seed", "2"])["metrics"]
    d = _simulate([*base, "--seed", "1", "--scale", "3"])["metrics"]
    for key in ("requests", "ttft_p50_s", "e2e_p99_s", "energy_j"):
        assert a[key] == b[key]
    assert (a["requests"], a["e2e_p50_s"]) != (c["requests"], c["e2e_p50_s"])
    assert 2.4 < d["requests"] / a["requests"] < 3.6
    assert d["e2e_p50_s"] >= a["e2e_p50_s"]  # three times the load on one replica
    # --qps re-times the synthesized requests
    q = _simulate([*base, "--seed", "1", "--qps", "1"])["metrics"]
    assert q["requests"] == a["requests"]
    assert q["duration_s"] > 2 * a["duration_s"]


def test_workload_errors_name_the_problem(conv_model: Path, tmp_path: Path) -> None:
    def fails(args: list[str]) -> BaseException:
        res = runner.invoke(app, ["inference", "simulate", *args])
        assert res.exit_code != 0
        assert res.exception is not None
        return res.exception

    exc = fails(["--workload", str(conv_model), "--trace", str(conv_model)])
    assert isinstance(exc, ConfigError) and "not both" in str(exc)
    exc = fails(["--qps", "2", "--scale", "2"])
    assert isinstance(exc, ConfigError) and "--workload only" in str(exc)
    exc = fails(["--workload", str(tmp_path / "missing.yaml")])
    assert isinstance(exc, DataNotFoundError) and "missing.yaml" in str(exc)
    vms = workload.load_model(conv_model).model_copy(update={"table": "vms"})
    other = workload.save_model(vms, tmp_path / "vms.yaml")
    exc = fails(["--workload", str(other)])
    assert isinstance(exc, ConfigError)
    assert "vms.yaml" in str(exc) and "'table'" in str(exc) and "'vms'" in str(exc)
    exc = fails(["--workload", str(conv_model), "--duration", "soon"])
    assert isinstance(exc, ConfigError) and "soon" in str(exc)
    exc = fails(["--workload", str(conv_model), "--scale", "0"])
    assert isinstance(exc, ConfigError) and "scale" in str(exc)
