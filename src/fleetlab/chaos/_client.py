"""A Python client of the proxy's control API (works against Toxiproxy too)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from fleetlab.chaos._proxy import LOOPBACK, check_allowed
from fleetlab.errors import ConfigError, FleetlabError, SafetyError


class ProxyClient:
    """Talk to a fleetlab (or Toxiproxy) control API at ``api_url``.

    Parameters
    ----------
    api_url
        e.g. ``http://127.0.0.1:8474``.
    token
        Sent as ``Authorization: Bearer`` when the API requires one.
    timeout_s
        Per-call timeout, seconds.
    allow
        Networks the API host must be in (default: loopback only).

    Raises
    ------
    SafetyError
        The API host is outside ``allow``.
    """

    def __init__(
        self,
        api_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 5.0,
        allow: tuple[str, ...] = LOOPBACK,
    ) -> None:
        host = urlsplit(api_url).hostname
        if not host:
            raise ConfigError(f"api: expected a URL like http://127.0.0.1:8474, found {api_url!r}")
        check_allowed(host, allow, what="proxy api")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.api_url = api_url.rstrip("/")
        # plain http never uses TLS: skip building a certificate store (~0.1 s per client)
        tls = urlsplit(api_url).scheme != "http"
        self._http = httpx.Client(
            base_url=self.api_url, headers=headers, timeout=timeout_s, verify=tls
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> ProxyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise FleetlabError(f"proxy api {self.api_url}: {exc}") from exc
        if resp.status_code == 403:
            raise SafetyError(resp.json().get("error", resp.text))
        if resp.status_code >= 400:
            try:
                message = resp.json().get("error", resp.text)
            except ValueError:
                message = resp.text
            raise ConfigError(f"proxy api {method} {path}: {resp.status_code} {message}")
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return resp.text

    # -- proxies -----------------------------------------------------------------------------
    def proxies(self) -> dict[str, dict[str, Any]]:
        """Every proxy as Toxiproxy JSON, by name."""
        return self._call("GET", "/proxies")

    def proxy(self, name: str) -> dict[str, Any]:
        """One proxy's JSON (with ``stats`` on a fleetlab proxy)."""
        return self._call("GET", f"/proxies/{name}")

    def create_proxy(
        self,
        name: str,
        *,
        upstream: str,
        listen: str = "127.0.0.1:0",
        protocol: Literal["tcp", "http"] = "tcp",
        lease_holder: str | None = None,
        lease_ttl_s: float = 5.0,
    ) -> dict[str, Any]:
        """Create a proxy; returns its JSON (``listen`` carries the port chosen)."""
        body: dict[str, Any] = {
            "name": name,
            "upstream": upstream,
            "listen": listen,
            "enabled": True,
            "protocol": protocol,
        }
        if lease_holder:
            body["lease"] = {"holder": lease_holder, "ttl_s": lease_ttl_s}
        return self._call("POST", "/proxies", body)

    def delete_proxy(self, name: str) -> None:
        """Delete a proxy and close its connections."""
        self._call("DELETE", f"/proxies/{name}")

    def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        """Enable or disable (stop listening, drop connections) a proxy."""
        return self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    # -- toxics ------------------------------------------------------------------------------
    def add_toxic(
        self,
        proxy: str,
        type: str,
        *,
        name: str | None = None,
        stream: Literal["upstream", "downstream"] = "downstream",
        toxicity: float = 1.0,
        attributes: Mapping[str, Any] | None = None,
        lease_holder: str | None = None,
        lease_ttl_s: float = 5.0,
    ) -> dict[str, Any]:
        """Add a toxic (Toxiproxy JSON; with a lease it expires unless renewed)."""
        body: dict[str, Any] = {
            "name": name or f"{type}_{stream}",
            "type": type,
            "stream": stream,
            "toxicity": toxicity,
            "attributes": dict(attributes or {}),
        }
        if lease_holder:
            body["lease"] = {"holder": lease_holder, "ttl_s": lease_ttl_s}
        return self._call("POST", f"/proxies/{proxy}/toxics", body)

    def update_toxic(self, proxy: str, name: str, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """Change a toxic's attributes (used by ramps)."""
        return self._call(
            "POST", f"/proxies/{proxy}/toxics/{name}", {"attributes": dict(attributes)}
        )

    def remove_toxic(self, proxy: str, name: str) -> None:
        """Remove a toxic."""
        self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        """The toxics of a proxy."""
        return self._call("GET", f"/proxies/{proxy}/toxics")

    # -- leases and the kill switch ------------------------------------------------------------
    def renew(self, holder: str) -> int:
        """Renew every lease of ``holder``; returns how many items it holds."""
        return int(self._call("POST", f"/fleetlab/leases/{holder}")["held"])

    def release(self, holder: str) -> int:
        """Remove everything ``holder`` leased; returns how many items were removed."""
        return int(self._call("DELETE", f"/fleetlab/leases/{holder}")["released"])

    def reset(self) -> None:
        """Toxiproxy's reset: remove every toxic and re-enable every proxy."""
        self._call("POST", "/reset")

    def stop_all(self) -> int:
        """The kill switch: remove every active fault; returns how many were removed.

        Falls back to Toxiproxy's ``/reset`` (count unknown: -1) on a plain Toxiproxy.
        """
        try:
            return int(self._call("POST", "/fleetlab/stop-all")["removed_toxics"])
        except ConfigError:
            self.reset()
            return -1


@contextlib.contextmanager
def toxic(
    client: ProxyClient,
    proxy: str,
    type: str,
    *,
    name: str | None = None,
    stream: Literal["upstream", "downstream"] = "downstream",
    toxicity: float = 1.0,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Apply a toxic for the duration of a ``with`` block; it is removed on any exit.

    Yields
    ------
    dict
        The toxic's JSON as installed.
    """
    doc = client.add_toxic(
        proxy, type, name=name, stream=stream, toxicity=toxicity, attributes=attributes
    )
    try:
        yield doc
    finally:
        with contextlib.suppress(FleetlabError):
            client.remove_toxic(proxy, doc["name"])
