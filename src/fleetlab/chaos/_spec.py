"""Experiment specs: frozen pydantic models loadable from YAML, validated before any injection."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fleetlab.chaos._proxy import LOOPBACK, check_allowed, split_hostport
from fleetlab.chaos._toxics import HTTP_ACTIONS, TCP_TOXICS, ToxicError, validate_http
from fleetlab.errors import ConfigError, DataNotFoundError, SafetyError

_FROZEN = ConfigDict(frozen=True, extra="forbid")

#: ``{proxy:NAME}`` in a URL stands for the listen address of the proxy NAME
PROXY_REF = re.compile(r"\{proxy:([^}]+)\}")


class ProxyTarget(BaseModel):
    """Where the proxy control API is (``None`` in the experiment: an embedded proxy)."""

    model_config = _FROZEN

    api: str = "http://127.0.0.1:8474"
    token: str | None = None


class ProxyDef(BaseModel):
    """A proxy the experiment creates (leased: removed when the run ends or dies)."""

    model_config = _FROZEN

    name: str = Field(min_length=1)
    upstream: str
    listen: str = "127.0.0.1:0"
    protocol: Literal["tcp", "http"] = "http"


class LoadSpec(BaseModel):
    """The built-in open-loop load generator: requests sent at a fixed rate, whatever happens.

    Attributes
    ----------
    url
        The URL requested (loopback only unless the allowlist says otherwise).
    rate_per_s
        Target request rate (requests per second), at most 5000.
    timeout_s
        A request not answered within this time counts as an error.
    max_in_flight
        Requests in flight beyond this are not sent and count as errors (bounds memory).
    """

    model_config = _FROZEN

    url: str
    method: Literal["GET", "POST", "PUT", "DELETE", "HEAD"] = "GET"
    rate_per_s: float = Field(default=50.0, gt=0, le=5000)
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    max_in_flight: int = Field(default=256, ge=1, le=10_000)
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None


class Probe(BaseModel):
    """An HTTP probe of the steady-state hypothesis: passes when the status is expected."""

    model_config = _FROZEN

    name: str = "probe"
    url: str
    method: Literal["GET", "POST", "HEAD"] = "GET"
    expect_status: list[int] = Field(default_factory=lambda: [200])
    timeout_s: float = Field(default=2.0, gt=0, le=60)


class Slo(BaseModel):
    """Service-level objectives measured under load (unset: not checked).

    Attributes
    ----------
    p50_ms, p99_ms
        Maximum latency percentiles, milliseconds (failed requests count at their time).
    error_rate
        Maximum share of failed requests (non-2xx/3xx, timeouts, connection errors), 0..1.
    """

    model_config = _FROZEN

    p50_ms: float | None = Field(default=None, gt=0)
    p99_ms: float | None = Field(default=None, gt=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)


class SteadyState(BaseModel):
    """The steady-state hypothesis: probes pass and the SLO holds under load."""

    model_config = _FROZEN

    title: str = "the service meets its SLO"
    probes: list[Probe] = Field(default_factory=list)
    slo: Slo = Field(default_factory=Slo)
    window_s: float = Field(default=1.0, gt=0, le=600)


class ToxicSpec(BaseModel):
    """A toxic as in Toxiproxy's JSON (``type``, ``stream``, ``toxicity``, ``attributes``)."""

    model_config = _FROZEN

    type: str
    stream: Literal["upstream", "downstream"] = "downstream"
    toxicity: float = Field(default=1.0, ge=0, le=1)
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in TCP_TOXICS and value not in HTTP_ACTIONS:
            known = ", ".join([*TCP_TOXICS, *HTTP_ACTIONS])
            raise ValueError(f"unknown fault type {value!r} (expected one of {known})")
        return value

    @model_validator(mode="after")
    def _known(self) -> ToxicSpec:
        try:
            if self.type in HTTP_ACTIONS:
                validate_http(self.type, self.attributes)
            else:
                TCP_TOXICS[self.type](self.attributes, np.random.default_rng(0))
        except ToxicError as exc:
            raise ValueError(str(exc)) from exc
        return self


class Ramp(BaseModel):
    """Raise one numeric attribute from ``start`` to ``end`` in ``steps`` over the fault."""

    model_config = _FROZEN

    attribute: str
    start: float
    end: float
    steps: int = Field(default=5, ge=2, le=100)


class HttpCall(BaseModel):
    """An HTTP call (an action with side effects, or its rollback)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    url: str
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    json_body: Any = Field(default=None, alias="json")
    timeout_s: float = Field(default=5.0, gt=0, le=60)


class Fault(BaseModel):
    """One step of the method: a toxic on a proxy, or an HTTP action with its rollback.

    Attributes
    ----------
    proxy, toxic
        A toxic installed on the named proxy from ``start_s`` for ``duration_s``.
    http, rollback
        An HTTP action; it must name the HTTP call that undoes it (``rollback``).
    start_s, duration_s
        When the fault starts (seconds after the method starts) and how long it lasts.
    ramp
        Optionally raise one toxic attribute in steps over the duration.
    """

    model_config = _FROZEN

    name: str = ""
    proxy: str | None = None
    toxic: ToxicSpec | None = None
    http: HttpCall | None = None
    rollback: HttpCall | None = None
    start_s: float = Field(default=0.0, ge=0)
    duration_s: float = Field(default=5.0, gt=0, le=3600)
    ramp: Ramp | None = None

    @model_validator(mode="after")
    def _shape(self) -> Fault:
        if self.toxic is not None:
            if not self.proxy:
                raise ValueError("proxy: a toxic fault needs the name of a proxy")
            if self.http is not None:
                raise ValueError("a fault is either a toxic or an http action, not both")
            if self.ramp is not None and self.ramp.attribute not in self.toxic.attributes:
                raise ValueError(
                    f"ramp.attribute: {self.ramp.attribute!r} is not an attribute of the toxic "
                    f"(found {sorted(self.toxic.attributes)})"
                )
        elif self.http is not None:
            if self.rollback is None:
                raise ValueError("rollback: an http action needs a rollback call that undoes it")
        else:
            raise ValueError("a fault needs either 'toxic' (with 'proxy') or 'http'")
        return self


class AbortSpec(BaseModel):
    """When to stop early: an SLO guard breached for consecutive windows, or a deadline."""

    model_config = _FROZEN

    deadline_s: float = Field(default=300.0, gt=0, le=86_400)
    guard: Slo = Field(default_factory=Slo)
    window_s: float = Field(default=0.5, gt=0, le=60)
    consecutive: int = Field(default=2, ge=1, le=100)


class Experiment(BaseModel):
    """A chaos experiment: steady-state hypothesis, load, faults, abort rules and leases."""

    model_config = _FROZEN

    title: str = "experiment"
    description: str = ""
    proxy: ProxyTarget | None = None
    proxies: list[ProxyDef] = Field(default_factory=list)
    load: LoadSpec | None = None
    steady_state: SteadyState = Field(default_factory=SteadyState)
    method: list[Fault] = Field(default_factory=list)
    abort: AbortSpec = Field(default_factory=AbortSpec)
    recovery_s: float = Field(default=0.5, ge=0, le=600)
    lease_ttl_s: float = Field(default=2.0, gt=0, le=600)
    allow: list[str] = Field(default_factory=lambda: list(LOOPBACK))

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        names = [p.name for p in self.proxies]
        if len(set(names)) != len(names):
            raise ValueError(f"proxies: names must be unique, found {names}")
        end = max((f.start_s + f.duration_s for f in self.method), default=0.0)
        if end > self.abort.deadline_s:
            raise ValueError(
                f"method: faults run until {end:g} s, past abort.deadline_s={self.abort.deadline_s:g}"
            )
        return self

    @property
    def method_s(self) -> float:
        """How long the method lasts: until the last fault ends (seconds)."""
        return max((f.start_s + f.duration_s for f in self.method), default=0.0)


def _urls(exp: Experiment) -> list[tuple[str, str]]:
    urls: list[tuple[str, str]] = []
    if exp.load is not None:
        urls.append(("load.url", exp.load.url))
    urls += [
        (f"steady_state.probes[{i}].url", p.url) for i, p in enumerate(exp.steady_state.probes)
    ]
    return urls


def resolve_proxy_refs(exp: Experiment, listens: Mapping[str, str]) -> Experiment:
    """``exp`` with every ``{proxy:NAME}`` in its load and probe URLs replaced by NAME's address."""

    def sub(url: str) -> str:
        return PROXY_REF.sub(lambda m: listens.get(m.group(1), m.group(0)), url)

    update: dict[str, Any] = {}
    if exp.load is not None:
        update["load"] = exp.load.model_copy(update={"url": sub(exp.load.url)})
    probes = [p.model_copy(update={"url": sub(p.url)}) for p in exp.steady_state.probes]
    update["steady_state"] = exp.steady_state.model_copy(update={"probes": probes})
    return exp.model_copy(update=update)


def check_targets(exp: Experiment) -> None:
    """Refuse any URL or upstream of ``exp`` outside its allowlist (default: loopback).

    Raises
    ------
    SafetyError
        Names the field and the offending host.
    """
    allow = tuple(exp.allow)
    urls: list[tuple[str, str]] = []
    if exp.load is not None:
        urls.append(("load.url", exp.load.url))
    urls += [
        (f"steady_state.probes[{i}].url", p.url) for i, p in enumerate(exp.steady_state.probes)
    ]
    for i, f in enumerate(exp.method):
        if f.http is not None:
            urls.append((f"method[{i}].http.url", f.http.url))
        if f.rollback is not None:
            urls.append((f"method[{i}].rollback.url", f.rollback.url))
    if exp.proxy is not None:
        urls.append(("proxy.api", exp.proxy.api))
    for what, url in urls:
        if PROXY_REF.search(url):
            url = PROXY_REF.sub("127.0.0.1:1", url)  # resolves to a proxy's (checked) listen
        host = urlsplit(url).hostname
        if not host:
            raise SafetyError(f"{what}: expected an http:// URL with a host, found {url!r}")
        check_allowed(host, allow, what=what)
    for i, p in enumerate(exp.proxies):
        for what, hp in (
            (f"proxies[{i}].upstream", p.upstream),
            (f"proxies[{i}].listen", p.listen),
        ):
            try:
                host, _ = split_hostport(hp, what=what)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            check_allowed(host, allow, what=what)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def validate_experiment(doc: Any, *, source: str = "<experiment>") -> Experiment:
    """Validate an experiment document (a parsed YAML/JSON mapping) before anything runs.

    Chaos Toolkit experiments (with ``steady-state-hypothesis``) are imported first.

    Returns
    -------
    Experiment

    Raises
    ------
    ConfigError
        Unknown fault type, missing rollback, bad durations...: the message names the
        file, the field, what was expected and what was found.
    SafetyError
        A target outside the allowlist.
    """
    from fleetlab.chaos._ctk import import_chaostoolkit, is_chaostoolkit

    if not isinstance(doc, Mapping):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, found {type(doc).__name__}"
        )
    if is_chaostoolkit(doc):
        doc = import_chaostoolkit(doc, source=source)
    try:
        exp = Experiment.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        found = first.get("input")
        shown = repr(found) if not isinstance(found, Mapping) else "a mapping"
        raise ConfigError(
            f"{source}: field '{_loc(tuple(first['loc']))}': {first['msg']} (found {shown[:80]})"
        ) from exc
    proxies = {p.name for p in exp.proxies}
    refs = [(what, m.group(1)) for what, url in _urls(exp) for m in PROXY_REF.finditer(url)]
    for what, ref in refs:
        if ref not in proxies:
            raise ConfigError(
                f"{source}: field '{what}': {{proxy:{ref}}} names no proxy of the experiment "
                f"(expected one of {sorted(proxies)})"
            )
    for i, f in enumerate(exp.method):
        if f.proxy and exp.proxy is None and f.proxy not in proxies:
            raise ConfigError(
                f"{source}: field 'method[{i}].proxy': no proxy named {f.proxy!r} "
                f"(expected one of {sorted(proxies)}, or a 'proxy.api' that has it)"
            )
    check_targets(exp)
    return exp


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file (fleetlab YAML/JSON or Chaos Toolkit JSON/YAML).

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    ConfigError
        The file is not valid YAML/JSON or not a valid experiment (names the field).
    SafetyError
        A target outside the allowlist.
    """
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"{p}: no such experiment file")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid YAML/JSON ({exc})") from exc
    return validate_experiment(doc, source=str(p))
