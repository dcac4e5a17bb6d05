"""fleetlab.store."""
