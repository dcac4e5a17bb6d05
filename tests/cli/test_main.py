"""The command line: version, help, one-line errors with distinct exit codes, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def fleetlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetlab", *args], capture_output=True, text=True, timeout=120
    )


def test_version_and_help() -> None:
    assert fleetlab("--version").stdout.startswith("fleetlab ")
    help_text = fleetlab("--help").stdout
    for group in (
        "tour",
        "traces",
        "data",
        "runs",
        "workload",
        "inference",
        "placement",
        "depgraph",
        "chaos",
        "web",
    ):
        assert group in help_text


def test_missing_file_is_one_line_exit_5(tmp_path: Path) -> None:
    result = fleetlab("traces", "inspect", str(tmp_path / "nope.csv"))
    assert result.returncode == 5
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error:") and "nope.csv" in result.stderr


def test_unknown_format_lists_supported_ones_exit_4(tmp_path: Path) -> None:
    odd = tmp_path / "odd.txt"
    odd.write_text("hello\nworld\n")
    result = fleetlab("traces", "inspect", str(odd))
    assert result.returncode == 4
    assert "Traceback" not in result.stderr
    assert "azure-llm" in result.stderr  # the supported formats are listed


def test_usage_error_is_not_a_traceback() -> None:
    result = fleetlab("traces", "inspect", "--no-such-option")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
