"""`fleetlab traces` on span files: detection, --json quality counts, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from fleetlab.cli import app


def test_formats_lists_the_span_readers() -> None:
    result = CliRunner().invoke(app, ["traces", "formats", "--json"])
    assert result.exit_code == 0
    names = {row["format"]: row["table"] for row in json.loads(result.stdout)}
    for name in ("otlp-json", "jaeger-json", "zipkin-json", "nezha-csv", "alibaba-callgraph"):
        assert names[name] == "spans"


def test_inspect_json_reports_quality(shared_data: Path) -> None:
    path = shared_data / "zipkin-lens-testdata" / "messaging2.json"
    result = CliRunner().invoke(app, ["traces", "inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["format"], info["table"], info["rows"]) == ("zipkin-json", "spans", 11)
    assert info["quality"]["unknown_parent"] == 6


def test_bad_span_file_is_one_line_and_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}')
    done = subprocess.run(
        [sys.executable, "-m", "fleetlab", "traces", "inspect", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "spans[0].traceId" in done.stderr and "xyz" in done.stderr
