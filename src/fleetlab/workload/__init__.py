"""fleetlab.workload (see docs/workload.md)."""

__all__: list[str] = []
