"""Toxics: what a proxy does to the bytes (TCP) or requests (HTTP) that pass through it.

A TCP toxic is an object with ``attach(link)`` (called when it starts applying to one
direction of one connection) and ``async pipe(link, chunk, arrival_s, emit)`` (called per
chunk; ``chunk`` is ``None`` at end of stream; it calls ``await emit(data)`` zero or more
times). HTTP toxics are matched per request by method, path and header.
Toxic types map to classes through the plain dict :data:`TOXIC_TYPES`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from fleetlab.chaos._proxy import Link

Emit = Callable[[bytes | None], Awaitable[None]]


class ToxicError(ValueError):
    """A toxic's type or attributes are invalid (the message names the attribute)."""


class TcpToxic(Protocol):
    """The behaviour of a TCP toxic on one direction of one connection."""

    def attach(self, link: Link) -> None:
        """Called once when the toxic starts applying to ``link``."""

    async def pipe(self, link: Link, chunk: bytes | None, arrival_s: float, emit: Emit) -> None:
        """Transform one chunk (``None`` = end of stream) and pass the result to ``emit``."""


def _num(attrs: Mapping[str, Any], key: str, default: float | None, *, minimum: float = 0) -> float:
    value = attrs.get(key, default)
    if value is None:
        raise ToxicError(f"attributes.{key}: required, expected a number >= {minimum}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ToxicError(f"attributes.{key}: expected a number >= {minimum}, found {value!r}")
    return float(value)


class _Passthrough:
    def attach(self, link: Link) -> None:
        return None

    async def pipe(self, link: Link, chunk: bytes | None, arrival_s: float, emit: Emit) -> None:
        await emit(chunk)


class Latency(_Passthrough):
    """Delay every chunk by ``latency`` ms ± uniform ``jitter`` ms (pipelined, order kept)."""

    def __init__(self, attrs: Mapping[str, Any], rng: np.random.Generator) -> None:
        self.latency = _num(attrs, "latency", 0) / 1000.0
        self.jitter = _num(attrs, "jitter", 0) / 1000.0
        self.rng = rng

    async def pipe(self, link: Link, chunk: bytes | None, arrival_s: float, emit: Emit) -> None:
        delay = self.latency
        if self.jitter:
            delay = max(0.0, delay + float(self.rng.uniform(-self.jitter, self.jitter)))
        wait = arrival_s + delay - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await emit(chunk)


class Bandwidth(_Passthrough):
    """Limit throughput to ``rate`` KB/s (1 KB = 1000 bytes)."""

    def __init__(self, attrs: Mapping[str, Any], rng: np.random.Generator) -> None:
        self.rate = _num(attrs, "rate", None, minimum=1e-9) * 1000.0

    async def pipe(self, link: Link, chunk: bytes | None, arrival_s: float, emit: Emit) -> None:
        if not chunk:
            await emit(chunk)
            return
        step = max(1, int(self.rate / 10))  # 100 ms worth of bytes per write
        for i in range(0, len(chunk), step):
            piece = chunk[i : i + step]
            await asyncio.sleep(len(piece) / self.rate)
            await emit(piece)


class SlowClose(_Passthrough):
    """Delay the end of stream by ``delay`` ms."""

    def __init__(self, attrs: Mapping[str, Any], rng: np.random.Generator) -> None:
        self.delay = _num(attrs, "delay", 0) / 1000.0

    async def pipe(self, link: Link, chunk: bytes | None, arrival_s: float, emit: Emit) -> None:
        if chunk is None:
            await asyncio.sleep(self.delay)
        await emit(chunk)


class Timeout(_Passthrough):
    """Stop all data; close the connection after ``timeout`` ms (0: hold until removed)."""

    def __init__(self, attrs: Mapping[str, Any], rng: np.random.Generator) -> None:
        self.timeout = _num(attrs, "timeout", 0) / 1000.0
        self.removed = asyncio.Event()

    def attach(self, link: Link) -> None:
        if self.timeout > 0:
            link.later(self.timeout, link.conn.abort, False)

    async def pipe(self, link: Link, chunk: bytes | None, arrival_s: float, emit: Emit) -> None:
        await self.removed.wait()
        await emit(chunk)


class ResetPeer(_Passthrough):
    """Reset the connection (TCP RST) ``timeout`` ms after the toxic starts applying."""

    def __init__(self, attrs: Mapping[str, Any], rng: np.random.Generator) -> None:
        self.timeout = _num(attrs, "timeout", 0) / 1000.0

    def attach(self, link: Link) -> None:
        if self.timeout <= 0:
            link.conn.abort(True)
        else:
            link.later(self.timeout, link.conn.abort, True)


class Down(_Passthrough):
    """The service is down: every connection, new or open, is reset at once."""

    def __init__(self, attrs: Mapping[str, Any], rng: np.random.Generator) -> None:
        return None

    def attach(self, link: Link) -> None:
        link.conn.abort(True)


class Slicer(_Passthrough):
    """Slice chunks into pieces of ``average_size`` ± ``size_variation`` bytes, ``delay`` µs apart."""

    def __init__(self, attrs: Mapping[str, Any], rng: np.random.Generator) -> None:
        self.avg = int(_num(attrs, "average_size", None, minimum=1))
        self.var = int(_num(attrs, "size_variation", 0))
        self.delay = _num(attrs, "delay", 0) / 1e6
        if self.var >= self.avg:
            raise ToxicError(
                f"attributes.size_variation: expected < average_size ({self.avg}), found {self.var}"
            )
        self.rng = rng

    async def pipe(self, link: Link, chunk: bytes | None, arrival_s: float, emit: Emit) -> None:
        if not chunk:
            await emit(chunk)
            return
        i = 0
        while i < len(chunk):
            size = self.avg + (int(self.rng.integers(-self.var, self.var + 1)) if self.var else 0)
            await emit(chunk[i : i + size])
            i += size
            if self.delay and i < len(chunk):
                await asyncio.sleep(self.delay)


class LimitData(_Passthrough):
    """Close the connection once ``bytes`` bytes have passed in this direction."""

    def __init__(self, attrs: Mapping[str, Any], rng: np.random.Generator) -> None:
        self.limit = int(_num(attrs, "bytes", None))

    async def pipe(self, link: Link, chunk: bytes | None, arrival_s: float, emit: Emit) -> None:
        if chunk is None:
            await emit(chunk)
            return
        left = self.limit - link.state.get(id(self), 0)
        if left > 0:
            piece = chunk[:left]
            link.state[id(self)] = link.state.get(id(self), 0) + len(piece)
            await emit(piece)
        if link.state.get(id(self), 0) >= self.limit:
            link.conn.abort(False)


#: TCP toxic type -> constructor ``(attributes, rng) -> TcpToxic``
TCP_TOXICS: Mapping[str, Callable[[Mapping[str, Any], np.random.Generator], Any]] = (
    MappingProxyType(
        {
            "latency": Latency,
            "bandwidth": Bandwidth,
            "slow_close": SlowClose,
            "timeout": Timeout,
            "reset_peer": ResetPeer,
            "slicer": Slicer,
            "limit_data": LimitData,
            "down": Down,
        }
    )
)

HTTP_ACTIONS = ("http_abort", "http_delay", "http_corrupt", "http_reset")

#: every toxic type the proxy accepts
TOXIC_TYPES: tuple[str, ...] = (*TCP_TOXICS, *HTTP_ACTIONS)


@dataclass
class HttpMatch:
    """Which requests an HTTP toxic applies to (all given conditions must hold)."""

    method: str | None = None
    path: str | None = None
    path_regex: re.Pattern[str] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def matches(self, method: str, path: str, headers: Mapping[str, str]) -> bool:
        """Whether a request with this method, path and (lower-case) headers matches."""
        if self.method and method != self.method:
            return False
        if self.path and not path.startswith(self.path):
            return False
        if self.path_regex and not self.path_regex.search(path):
            return False
        return all(headers.get(k) == v for k, v in self.headers.items())


def http_match(attrs: Mapping[str, Any]) -> HttpMatch:
    """Build the request matcher of an HTTP toxic from its attributes.

    ``method`` (e.g. ``GET``), ``path`` (prefix), ``path_regex`` and ``header``
    (``"Name: value"``) or ``headers`` (a mapping).
    """
    headers: dict[str, str] = {}
    raw = attrs.get("headers") or {}
    if not isinstance(raw, Mapping):
        raise ToxicError(f"attributes.headers: expected a mapping, found {raw!r}")
    headers.update({str(k).lower(): str(v) for k, v in raw.items()})
    if attrs.get("header"):
        name, sep, value = str(attrs["header"]).partition(":")
        if not sep:
            raise ToxicError(
                f"attributes.header: expected 'Name: value', found {attrs['header']!r}"
            )
        headers[name.strip().lower()] = value.strip()
    regex = attrs.get("path_regex")
    try:
        compiled = re.compile(str(regex)) if regex else None
    except re.error as exc:
        raise ToxicError(f"attributes.path_regex: not a regular expression ({exc})") from exc
    method = attrs.get("method")
    return HttpMatch(
        method=str(method).upper() if method else None,
        path=str(attrs["path"]) if attrs.get("path") else None,
        path_regex=compiled,
        headers=headers,
    )


def validate_http(kind: str, attrs: Mapping[str, Any]) -> None:
    """Check an HTTP toxic's attributes; raises :class:`ToxicError` naming the attribute."""
    http_match(attrs)
    if kind == "http_abort":
        status = attrs.get("status", 503)
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ToxicError(
                f"attributes.status: expected an HTTP status 100-599, found {status!r}"
            )
    if kind == "http_delay":
        _num(attrs, "latency", None)
    first_n = attrs.get("first_n", 0)
    if not isinstance(first_n, int) or first_n < 0:
        raise ToxicError(f"attributes.first_n: expected an integer >= 0, found {first_n!r}")
