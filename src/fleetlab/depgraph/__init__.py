"""fleetlab.depgraph (see docs/depgraph.md)."""

__all__: list[str] = []
