"""Where fleetlab keeps its files: ``$FLEETLAB_HOME`` or the XDG data directory."""

from __future__ import annotations

import os
from pathlib import Path


def fleetlab_home() -> Path:
    """The folder for fleetlab's run store and caches.

    Returns
    -------
    pathlib.Path
        ``$FLEETLAB_HOME`` if set, else ``$XDG_DATA_HOME/fleetlab``, else
        ``~/.local/share/fleetlab``. The folder is not created here.
    """
    explicit = os.environ.get("FLEETLAB_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "fleetlab"


def default_store_path() -> Path:
    """The default run store folder, ``fleetlab_home() / "runs"``."""
    return fleetlab_home() / "runs"
