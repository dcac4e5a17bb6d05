"""fleetlab.placement (see docs/placement.md)."""

__all__: list[str] = []
