"""``python -m fleetlab`` runs the CLI."""

from fleetlab.cli import main

main()
