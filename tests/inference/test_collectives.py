"""The collective profiler (vidur's network tables), on CPU processes where PyTorch is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl
import pytest

from fleetlab.errors import ConfigError
from fleetlab.inference import calibrate, gpu_spec, read_vidur_network
from fleetlab.inference._collectives import profile_collectives

HAS_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"collective": "send_recv", "world_sizes": [2, 4]}, "send_recv runs between 2"),
        ({"world_sizes": [1]}, "at least 2 workers"),
        ({"repeats": 0}, "repeats"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        profile_collectives(**kwargs)


def test_says_what_is_missing_for_gpus() -> None:
    # no PyTorch (CI) or no 8 visible GPUs: either way a one-line reason, nothing spawned
    with pytest.raises(ConfigError, match=r"PyTorch|visible GPUs"):
        profile_collectives(world_sizes=[2, 4, 8], device="cuda")


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch not installed")
def test_gloo_table_is_vidurs_format_and_calibrates(tmp_path: Path) -> None:
    table = profile_collectives(world_sizes=[2], sizes=[2048, 1 << 16], repeats=2, device="cpu")
    assert table.height == 2
    assert (table["time_stats.all_reduce.median"] > 0).all()
    path = tmp_path / "all_reduce.csv"
    table.write_csv(path)
    net = read_vidur_network(path)
    assert net["size_bytes"].to_list() == [2048.0, 65536.0]
    assert (net["workers"] == 2).all()
    mlp = Path(__file__).parents[2] / "benchmarks/results/h100-2026-11-26/llama-2-7b/mlp.csv"
    _, stats = calibrate(gpu_spec("h100"), [mlp], network=path)
    assert stats["network_rows"] == 2
    assert isinstance(table, pl.DataFrame)
