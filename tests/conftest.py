"""Shared fixtures: where the real public datasets are (FLEETLAB_MIRROR)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Deterministic property tests with no wall-clock deadline: CI machines are small and shared.
settings.register_profile(
    "fleetlab",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("fleetlab")

REPO = Path(__file__).resolve().parents[1]


def mirror_dir() -> Path:
    """The local mirror of the public datasets (FLEETLAB_MIRROR, else ../shared/data)."""
    return Path(os.environ.get("FLEETLAB_MIRROR", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder laid out like ../shared/data, one sub-folder per dataset."""
    path = mirror_dir()
    if not path.is_dir():
        pytest.fail(f"real datasets not found at {path}: set FLEETLAB_MIRROR")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keep every test's run store and dataset cache out of the user's home."""
    home = tmp_path_factory.mktemp("fleetlab-home")
    monkeypatch.setenv("FLEETLAB_HOME", str(home))
