"""The tuple of supported formats, in the order detection tries them."""

from __future__ import annotations

from fleetlab.traces._formats import Format
from fleetlab.traces._readers_fleet import FORMATS as FLEET_FORMATS
from fleetlab.traces._readers_spans import FORMATS as SPAN_FORMATS

FORMATS: tuple[Format, ...] = (*FLEET_FORMATS, *SPAN_FORMATS)
