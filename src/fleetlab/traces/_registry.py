"""The tuple of supported formats, in the order detection tries them."""

from __future__ import annotations

from fleetlab.traces._formats import Format
from fleetlab.traces._readers_fleet import FORMATS as FLEET_FORMATS
from fleetlab.traces._readers_spans import FORMATS as SPAN_FORMATS


def _generic(fmt: Format) -> bool:
    """The generic canonical CSV/JSONL readers ('requests-csv', ...) go last."""
    return fmt.name.endswith(("-csv", "-jsonl")) and fmt.name != "nezha-csv"


FORMATS: tuple[Format, ...] = tuple(
    sorted((*FLEET_FORMATS, *SPAN_FORMATS), key=_generic)  # stable: specific formats first
)
