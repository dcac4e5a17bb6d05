"""The command starts fast: the areas' heavy dependencies are imported by the commands only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: imported by no path of `import fleetlab.cli`, `fleetlab --version` or `fleetlab --help`
HEAVY = ("scipy", "networkx", "fastapi", "uvloop")
#: the areas whose CLI modules import them inside the commands
LAZY_AREAS = (
    "fleetlab.workload",
    "fleetlab.depgraph",
    "fleetlab.chaos",
    "fleetlab.inference",
    "fleetlab.placement",
    "fleetlab.tour",
    "fleetlab.web",
)

_PROBE = """
import json, sys
args = sys.argv[1:]
if args:
    sys.argv = ["fleetlab", *args]
    from fleetlab.cli import main
    try:
        main()
    except SystemExit:
        pass
else:
    import fleetlab.cli
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def _modules_after(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "args", [(), ("--version",), ("--help",)], ids=["import", "version", "help"]
)
def test_startup_does_not_import_heavy_dependencies(args: tuple[str, ...]) -> None:
    modules = _modules_after(*args)
    loaded = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert loaded == [], f"fleetlab {' '.join(args)} imported {loaded}"
    areas = sorted(a for a in LAZY_AREAS if a in modules)
    assert areas == [], f"fleetlab {' '.join(args)} imported {areas}"


def test_help_text_choices_match_the_library() -> None:
    from fleetlab import chaos, depgraph
    from fleetlab.cli import _chaos, _depgraph

    assert tuple(chaos.TOXIC_TYPES) == _chaos.TOXIC_NAMES
    assert tuple(depgraph.TOPOLOGIES) == _depgraph.TOPOLOGY_NAMES
