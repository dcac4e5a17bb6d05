"""Import Chaos Toolkit experiments (JSON/YAML) into fleetlab's experiment format.

Supported: ``steady-state-hypothesis`` HTTP probes (``tolerance`` = expected status),
``method`` actions of the ``chaostoxi`` (chaostoolkit-toxiproxy) extension that create
toxics, with ``pauses.after`` as the fault duration, and HTTP actions whose rollback is
an HTTP action in ``rollbacks``. Anything else is refused with the field named.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetlab.errors import ConfigError

#: chaostoxi function -> (toxic type, {ctk argument: toxic attribute})
_TOXI_FUNCS: dict[str, tuple[str, dict[str, str]]] = {
    "create_latency_toxic": ("latency", {"latency": "latency", "jitter": "jitter"}),
    "create_bandwith_degradation_toxic": ("bandwidth", {"rate": "rate"}),
    "create_bandwidth_degradation_toxic": ("bandwidth", {"rate": "rate"}),
    "create_slow_connection_close_toxic": ("slow_close", {"delay": "delay"}),
    "create_slicer_toxic": (
        "slicer",
        {"average_size": "average_size", "size_variation": "size_variation", "delay": "delay"},
    ),
    "create_limiter_toxic": ("limit_data", {"bytes": "bytes"}),
    "create_timeout_toxic": ("timeout", {"timeout": "timeout"}),
    "create_reset_peer_toxic": ("reset_peer", {"timeout": "timeout"}),
}
_CLEANUP = {"delete_toxic", "reset", "enable_proxy", "delete_proxy", "remove_all_proxies"}


def is_chaostoolkit(doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` looks like a Chaos Toolkit experiment."""
    return "steady-state-hypothesis" in doc or (
        isinstance(doc.get("method"), list)
        and any(isinstance(a, Mapping) and "provider" in a for a in doc["method"])
    )


def _fail(source: str, field: str, problem: str, found: Any = None) -> ConfigError:
    tail = f" (found {found!r})" if found is not None else ""
    return ConfigError(f"{source}: field '{field}': {problem}{tail}")


def _http_call(provider: Mapping[str, Any], source: str, field: str) -> dict[str, Any]:
    url = provider.get("url")
    if not url:
        raise _fail(source, f"{field}.url", "an http provider needs a url")
    call: dict[str, Any] = {"url": str(url), "method": str(provider.get("method", "GET")).upper()}
    if "arguments" in provider:
        call["json"] = provider["arguments"]
    if "timeout" in provider:
        t = provider["timeout"]
        call["timeout_s"] = float(t[-1] if isinstance(t, list) else t)
    return call


def import_chaostoolkit(doc: Mapping[str, Any], *, source: str = "<experiment>") -> dict[str, Any]:
    """Translate a Chaos Toolkit experiment to a fleetlab experiment document (a dict).

    Returns
    -------
    dict
        Ready for :func:`validate_experiment`. Rollbacks that only undo toxics
        (``delete_toxic``, ``reset``) are dropped: fleetlab always removes its faults.

    Raises
    ------
    ConfigError
        An activity fleetlab cannot run (names the field and the provider found).
    """
    out: dict[str, Any] = {
        "title": doc.get("title", "experiment"),
        "description": doc.get("description", ""),
    }
    ssh = doc.get("steady-state-hypothesis") or {}
    probes = []
    for i, probe in enumerate(ssh.get("probes") or []):
        field = f"steady-state-hypothesis.probes[{i}]"
        provider = probe.get("provider") or {}
        if provider.get("type") != "http":
            raise _fail(
                source,
                f"{field}.provider.type",
                "only http probes can be imported",
                provider.get("type"),
            )
        call = _http_call(provider, source, f"{field}.provider")
        tol = probe.get("tolerance", 200)
        expect = tol if isinstance(tol, list) else [tol]
        if not all(isinstance(t, int) for t in expect):
            raise _fail(
                source, f"{field}.tolerance", "expected an HTTP status or a list of them", tol
            )
        probes.append(
            {
                "name": probe.get("name", f"probe{i}"),
                "url": call["url"],
                "method": call["method"] if call["method"] in ("GET", "POST", "HEAD") else "GET",
                "expect_status": expect,
                **({"timeout_s": call["timeout_s"]} if "timeout_s" in call else {}),
            }
        )
    out["steady_state"] = {"title": ssh.get("title", "steady state"), "probes": probes}
    rollbacks = [r for r in doc.get("rollbacks") or [] if isinstance(r, Mapping)]
    http_rollbacks = [
        _http_call(r["provider"], source, f"rollbacks[{j}].provider")
        for j, r in enumerate(rollbacks)
        if (r.get("provider") or {}).get("type") == "http"
    ]
    method: list[dict[str, Any]] = []
    proxies_api: str | None = None
    clock = 0.0
    for i, act in enumerate(doc.get("method") or []):
        field = f"method[{i}]"
        provider = act.get("provider") or {}
        pauses = act.get("pauses") or {}
        clock += float(pauses.get("before", 0) or 0)
        duration = float(pauses.get("after", 0) or 0) or 5.0
        kind = provider.get("type")
        if act.get("type") == "probe":
            clock += float(pauses.get("after", 0) or 0)
            continue
        if kind == "python" and str(provider.get("module", "")).startswith("chaostoxi"):
            func = provider.get("func", "")
            args = provider.get("arguments") or {}
            if func in _CLEANUP:
                continue
            if func == "create_toxic":
                toxic = {
                    "type": args.get("toxic_type"),
                    "stream": args.get("stream", "downstream"),
                    "toxicity": args.get("toxicity", 1.0),
                    "attributes": dict(args.get("attributes") or {}),
                }
            elif func == "disable_proxy":
                toxic = {"type": "down", "attributes": {}}
            elif func in _TOXI_FUNCS:
                kind_name, mapping = _TOXI_FUNCS[func]
                toxic = {
                    "type": kind_name,
                    "attributes": {attr: args[a] for a, attr in mapping.items() if a in args},
                }
            else:
                raise _fail(
                    source, f"{field}.provider.func", "unsupported chaostoxi function", func
                )
            proxy = args.get("for_proxy") or args.get("proxy_name")
            if not proxy:
                raise _fail(source, f"{field}.provider.arguments.for_proxy", "missing proxy name")
            method.append(
                {
                    "name": act.get("name", f"action{i}"),
                    "proxy": proxy,
                    "toxic": toxic,
                    "start_s": clock,
                    "duration_s": duration,
                }
            )
            proxies_api = proxies_api or "http://127.0.0.1:8474"
        elif kind == "http":
            call = _http_call(provider, source, f"{field}.provider")
            rb = http_rollbacks.pop(0) if http_rollbacks else None
            method.append(
                {
                    "name": act.get("name", f"action{i}"),
                    "http": call,
                    "rollback": rb,
                    "start_s": clock,
                    "duration_s": duration,
                }
            )
        else:
            raise _fail(
                source,
                f"{field}.provider",
                "fleetlab cannot run this activity (supported: chaostoxi toxics, http)",
                kind or provider.get("module"),
            )
        clock += duration
    out["method"] = method
    if proxies_api:
        cfg = doc.get("configuration") or {}
        host = cfg.get("toxiproxy_host", "127.0.0.1")
        port = cfg.get("toxiproxy_api_port", 8474)
        out["proxy"] = {"api": f"http://{host}:{port}"}
    return out
