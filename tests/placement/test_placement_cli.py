"""The ``fleetlab placement`` commands on small files and on openb."""

from __future__ import annotations

import json

import pytest
from placement_helpers import vms_table
from typer.testing import CliRunner

from fleetlab.cli import app

runner = CliRunner()


@pytest.fixture
def files(tmp_path):
    trace = tmp_path / "vms.parquet"
    vms_table([(f"v{i}", i, i + 20, 1 + i % 5, 2 + i % 3) for i in range(40)]).write_parquet(trace)
    cluster = tmp_path / "c.yaml"
    cluster.write_text(
        "server_types:\n  - {name: s, count: 14, capacity: {cores: 8, memory_gb: 16}}\n"
    )
    return trace, cluster


def test_simulate_json_compares_policies_with_the_bound(files, tmp_path):
    trace, cluster = files
    res = runner.invoke(
        app,
        [
            "placement",
            "simulate",
            "--trace",
            str(trace),
            "--cluster",
            str(cluster),
            "-p",
            "best-fit",
            "-p",
            "worst-fit",
            "--json",
            "--report",
            str(tmp_path / "r.html"),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [r["policy"] for r in data["summary"]] == ["best-fit", "worst-fit"]
    assert data["bounds"]["servers"] >= 1
    assert all(r["failures"] == 0 for r in data["summary"])
    assert all(r["peak_used_servers"] >= data["bounds"]["servers"] for r in data["summary"])
    assert data["summary"][0]["peak_used_servers"] <= data["summary"][1]["peak_used_servers"]
    assert (tmp_path / "r.html").read_text().count("<section") >= 2


def test_output_is_never_overwritten_without_force(files, tmp_path):
    trace, cluster = files
    out = tmp_path / "s.parquet"
    out.write_text("mine")
    args = [
        "placement",
        "simulate",
        "--trace",
        str(trace),
        "--cluster",
        str(cluster),
        "-o",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code != 0 and out.read_text() == "mine"
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert out.read_bytes()[:4] == b"PAR1"


def test_size_and_bounds_commands(files):
    trace, cluster = files
    res = runner.invoke(
        app,
        ["placement", "size", "--trace", str(trace), "--cores", "8", "--memory-gb", "16", "--json"],
    )
    assert res.exit_code == 0, res.output
    size = json.loads(res.stdout)
    res = runner.invoke(
        app, ["placement", "bounds", "--trace", str(trace), "--cluster", str(cluster), "--json"]
    )
    bound = json.loads(res.stdout)
    assert size["servers"] >= bound["servers"] >= 1


def test_bad_cluster_is_a_one_line_error(files, tmp_path):
    from fleetlab.errors import ConfigError

    trace, _ = files
    bad = tmp_path / "bad.yaml"
    bad.write_text("server_types:\n  - {name: s, count: 1, capacity: {cores: 8, warp: 1}}\n")
    res = runner.invoke(
        app, ["placement", "simulate", "--trace", str(trace), "--cluster", str(bad)]
    )
    assert isinstance(res.exception, ConfigError) and "warp" in str(res.exception)


def test_simulate_on_openb(openb):
    pods, nodes = openb
    res = runner.invoke(
        app,
        [
            "placement",
            "simulate",
            "--trace",
            str(pods),
            "--cluster",
            str(nodes),
            "-p",
            "best-fit",
            "--limit",
            "1500",
            "--samples",
            "10",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["summary"][0]
    assert row["requests"] == 1500 and row["failures"] == 0


def test_simulate_with_failures_and_usage(files, tmp_path):
    import polars as pl

    trace, cluster = files
    fail = tmp_path / "f.yaml"
    fail.write_text("node: {mtbf: {mean_s: 30}, mttr: {mean_s: 5}}\n")
    usage = tmp_path / "u.parquet"
    pl.DataFrame(
        {
            "vm_id": [f"v{i}" for i in range(40)],
            "ts_s": [float(i + 1) for i in range(40)],
            "cpu_avg": [200.0] * 40,
        }
    ).write_parquet(usage)
    res = runner.invoke(
        app,
        [
            "placement",
            "simulate",
            "--trace",
            str(trace),
            "--cluster",
            str(cluster),
            "-p",
            "best-fit",
            "-p",
            "oversub",
            "--failures",
            str(fail),
            "--usage",
            str(usage),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["headroom"]["peak_down_servers"] >= 1
    assert sum(r["evictions"] for r in data["summary"]) > 0
    # every VM uses twice its cores at its sample: servers with >= 5 used cores overflow
    assert data["oversub_violations"]["best-fit"]["samples"] > 0


def test_fragmentation_command_on_a_synthesized_gpu_trace(tmp_path):
    from fleetlab.placement._tour import demo_tasks

    trace = tmp_path / "tasks.parquet"
    demo_tasks(0, n=600).write_parquet(trace)
    cluster = tmp_path / "g.yaml"
    cluster.write_text(
        "server_types:\n  - {name: g, count: 20, capacity: {cores: 96, memory_gb: 384}, gpus: 8}\n"
    )
    res = runner.invoke(
        app,
        [
            "placement",
            "fragmentation",
            "--trace",
            str(trace),
            "--cluster",
            str(cluster),
            "-p",
            "random",
            "-p",
            "fgd",
            "--seeds",
            "2",
            "--step",
            "0.25",
            "--json",
            "-o",
            str(tmp_path / "c.parquet"),
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    per = {r["policy"]: r["unallocated"] for r in data["summary"]}
    assert per["fgd"] < per["random"]
    assert data["seeds"] == [0, 1] and data["gpu_capacity"] == 160
    assert (tmp_path / "c.parquet").exists()
