"""fleetlab.inference (see docs/inference.md)."""

__all__: list[str] = []
