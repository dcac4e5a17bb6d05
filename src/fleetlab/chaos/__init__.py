"""fleetlab.chaos (see docs/chaos.md)."""

__all__: list[str] = []
