"""Every output a run promises (issue 5, "Outputs per run"), with its numbers checked."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fleetlab.cli import app
from fleetlab.inference import (
    ClusterSpec,
    ReplicaSpec,
    gpu_spec,
    poisson_requests,
    simulate,
    simulation_report,
)

runner = CliRunner()


def test_batch_sizes_per_replica_are_exact_for_one_request() -> None:
    # one request alone: 1 prefill iteration (the first token) + 49 decode iterations,
    # each with exactly that one sequence
    reqs = pl.DataFrame({"arrival_s": [2.0], "prompt_tokens": [1000], "output_tokens": [50]})
    res = simulate(reqs, ClusterSpec(replica=ReplicaSpec(scheduler="vllm")))
    row = res.replicas.row(0, named=True)
    assert row["iterations"] == 50
    assert row["mean_batch_seqs"] == 1.0
    assert row["mean_batch_tokens"] == pytest.approx((1000 + 49) / 50)
    assert res.metrics["mean_batch_seqs"] == 1.0


@pytest.mark.parametrize("pp", [1, 2])
def test_every_promised_output_is_present_and_consistent(pp: int) -> None:
    reqs = poisson_requests(600, qps=15.0, seed=12)
    spec = ClusterSpec(replica=ReplicaSpec(scheduler="sarathi", max_num_seqs=48, pp=pp), replicas=2)
    res = simulate(reqs, spec)
    r, rep, ts, m = res.requests, res.replicas, res.timeseries, res.metrics
    # per request: TTFT, TBT summary (mean = TPOT, max), E2E, queueing, preemptions
    for col in ("ttft_s", "tpot_s", "tbt_max_s", "e2e_s", "queueing_s"):
        assert r[col].is_finite().all() and (r[col] >= 0).all(), col
    assert r["preemptions"].dtype == pl.Int64 and (r["preemptions"] >= 0).all()
    multi = r.filter(pl.col("output_tokens") > 1)
    decode = multi["e2e_s"] - multi["ttft_s"]
    assert (decode.to_numpy()) == pytest.approx(
        (multi["tpot_s"] * (multi["output_tokens"] - 1)).to_numpy()
    )
    assert (multi["tbt_max_s"] >= multi["tpot_s"] * (1 - 1e-9)).all()
    # per replica: utilisation, batch sizes, energy
    assert ((rep["utilization"] > 0) & (rep["utilization"] <= 1)).all()
    assert ((rep["mean_batch_seqs"] >= 1) & (rep["mean_batch_seqs"] <= 48)).all()
    tok = rep["tokens"].to_numpy() / rep["iterations"].to_numpy()
    assert rep["mean_batch_tokens"].to_numpy() == pytest.approx(tok)
    assert (rep["mean_batch_tokens"] >= rep["mean_batch_seqs"]).all()
    total = (rep["mean_batch_seqs"] * rep["iterations"]).sum() / rep["iterations"].sum()
    assert m["mean_batch_seqs"] == pytest.approx(total)
    # KV usage and batch over time, per replica
    assert set(ts["replica"].unique()) == {0, 1}
    assert ts.height > 100
    assert ((ts["kv_used"] >= 0) & (ts["kv_used"] <= 1)).all() and ts["kv_used"].max() > 0
    assert ts["running"].max() <= 48 * pp
    # goodput under the SLO, tokens/s, energy, cost
    meets = r["meets_slo"].sum()
    assert m["goodput_rps"] == pytest.approx(meets / m["duration_s"])
    out_tok = r["output_tokens"].sum()
    assert m["output_tokens_per_s"] == pytest.approx(out_tok / m["duration_s"])
    assert m["energy_j"] == pytest.approx(rep["energy_j"].sum())
    g = gpu_spec("h100")
    assert m["cost_usd"] == pytest.approx(2 * pp * m["duration_s"] / 3600 * g.usd_per_hour)


def test_report_has_cdfs_time_series_and_the_replica_table() -> None:
    res = simulate(poisson_requests(300, qps=10.0, seed=2), ClusterSpec(replicas=2))
    html = simulation_report(res).to_html()
    for title in (
        "time to first token",
        "time per output token",
        "longest time between two tokens",
        "end-to-end latency",
        "queueing delay",
        "sequences in the batch",
        "KV cache used",
        "requests waiting",
        "mean_batch_seqs",
        "energy_per_output_token_j",
    ):
        assert title in html, title


def test_cli_writes_table_parquet_json_html_and_the_run_store(tmp_path: Path) -> None:
    out = tmp_path / "req.json"
    report = tmp_path / "r.html"
    args = ["inference", "simulate", "--qps", "6", "-n", "200", "--pp", "2"]
    res = runner.invoke(app, [*args, "-o", str(out), "--report", str(report)])
    assert res.exit_code == 0, res.output
    for label in ("ttft_p50_s", "tbt_max_p99_s", "goodput_rps", "mean_batch_seqs", "energy_j"):
        assert label in res.stdout  # the terminal table
    table = pl.read_json(out)
    assert table.height == 200 and "tbt_max_s" in table.columns
    assert "longest time between two tokens" in report.read_text()
    runs = json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)
    rec = next(x for x in runs if x["command"] == "inference simulate")
    assert {
        "metrics.json",
        "requests.parquet",
        "replicas.parquet",
        "timeseries.parquet",
        "report.html",
    } <= set(rec["artifacts"])
    stored = json.loads(Path(rec["artifacts"]["metrics.json"]).read_text())
    assert stored["requests"] == 200
    assert stored["ttft_p50_s"] == pytest.approx(rec["metrics"]["ttft_p50_s"])
    assert stored["gpus"] == 2
    assert pl.read_parquet(rec["artifacts"]["replicas.parquet"])["mean_batch_seqs"].min() >= 1
