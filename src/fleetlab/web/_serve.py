"""Serving the dashboard: loopback only unless the caller explicitly allows remote access."""

from __future__ import annotations

import ipaddress
import os
import socket
import warnings

from fleetlab.errors import SafetyError
from fleetlab.web._app import create_app


def is_loopback(host: str) -> bool:
    """True when ``host`` only reaches this machine (``127.0.0.0/8``, ``::1``, ``localhost``).

    A name other than ``localhost`` counts as loopback only if every address it
    resolves to is; a name that does not resolve counts as not loopback.
    """
    name = host.strip().strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except (OSError, UnicodeError):
        return False
    addrs = {str(info[4][0]).split("%", 1)[0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a).is_loopback for a in addrs)


def check_bind(host: str, *, allow_remote: bool = False) -> None:
    """Refuse to bind a non-loopback ``host`` unless ``allow_remote``; warn when allowed.

    Parameters
    ----------
    host
        The address the server will listen on.
    allow_remote
        The caller's explicit consent to expose the dashboard beyond this machine.

    Raises
    ------
    SafetyError
        ``host`` is not loopback and ``allow_remote`` is false.

    Warns
    -----
    UserWarning
        ``host`` is not loopback and ``allow_remote`` is true: the dashboard has no
        authentication, so everyone who can reach it can read every run and artifact.
    """
    if is_loopback(host):
        return
    if not allow_remote:
        raise SafetyError(
            f"dashboard host {host!r}: expected a loopback address (127.0.0.1, ::1, localhost); "
            "the dashboard has no authentication, pass allow_remote=True "
            "(CLI: --allow-remote) to serve it to other machines"
        )
    warnings.warn(
        f"serving the dashboard on {host!r}: it has no authentication, so anyone who can "
        "reach this address can read every run, its config and its artifacts",
        UserWarning,
        stacklevel=2,
    )


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    store_path: str | os.PathLike[str] | None = None,
    allow_remote: bool = False,
    poll_s: float = 2.0,
) -> None:
    """Serve the dashboard with uvicorn until interrupted.

    Parameters
    ----------
    host, port
        Where to listen; loopback (``127.0.0.1``) by default.
    store_path
        The run store folder (``None``: the user's store).
    allow_remote
        Allow a non-loopback ``host`` (a warning is issued); without it such a host is
        refused.
    poll_s
        Seconds between the live-status refreshes of running runs in the browser.

    Raises
    ------
    SafetyError
        ``host`` is not loopback and ``allow_remote`` is false.
    StoreError
        The store cannot be opened.
    """
    import uvicorn

    check_bind(host, allow_remote=allow_remote)
    uvicorn.run(create_app(store_path, poll_s=poll_s), host=host, port=port, log_level="warning")
