"""The tour stop, offline (synthesized workload) — the mirror path is covered in the FGD test."""

from __future__ import annotations

from fleetlab.placement import tour_stop


def test_tour_stop_without_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("FLEETLAB_MIRROR", raising=False)
    report, summary = tour_stop(tmp_path, seed=0)
    assert summary["data"].startswith("synthesized")
    assert set(summary["unallocated_share"]) == {"random", "dot-product", "best-fit", "fgd"}
    assert summary["winner"] == "fgd"
    assert summary["unallocated_share"]["fgd"] < summary["unallocated_share"]["random"]
    assert (tmp_path / "placement_fgd_curves.parquet").exists()
    assert "fragmentation" in report.to_html().lower()
