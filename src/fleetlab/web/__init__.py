"""fleetlab.web."""
