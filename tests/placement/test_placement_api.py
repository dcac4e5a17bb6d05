"""The public names of fleetlab.placement are the ones docs/placement.md lists."""

from __future__ import annotations

import re
from pathlib import Path

import fleetlab.placement as placement

DOC = Path(__file__).resolve().parents[2] / "docs" / "placement.md"


def test_all_matches_the_documented_api():
    text = DOC.read_text(encoding="utf-8").split("## API", 1)[1]
    documented = re.findall(r"^- `([A-Za-z_0-9]+)`", text, flags=re.M)
    assert sorted(documented) == sorted(placement.__all__)
    assert all(hasattr(placement, n) for n in placement.__all__)
