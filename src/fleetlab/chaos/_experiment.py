"""The experiment runner: steady state, faults under load, abort rules, guaranteed rollback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import polars as pl

from fleetlab.chaos._client import ProxyClient
from fleetlab.chaos._http import HttpPool
from fleetlab.chaos._load import open_loop, slo_check, summarize, to_frame, windows
from fleetlab.chaos._runtime import running_proxy
from fleetlab.chaos._spec import Experiment, Fault, HttpCall, check_targets, resolve_proxy_refs
from fleetlab.errors import FleetlabError

Event = Callable[[str, dict[str, Any]], None]


@dataclass
class ExperimentResult:
    """What a run returns: the journal, the raw samples and the time series.

    Attributes
    ----------
    journal
        JSON-ready record of the run: ``status`` (``completed``, ``deviated``,
        ``failed`` (steady state not met before), ``aborted`` or ``interrupted``), the
        steady-state checks before/during/after (each with ``proxy_requests``, the
        requests each proxy framed during that phase, when the API reports them), fault
        windows, rollbacks, abort reason. An experiment with no method has only the
        ``before`` phase.
    samples
        One row per load request: ``t_s`` (since the run started), ``latency_ms``,
        ``status``, ``ok``, ``error``, ``phase``.
    windows
        Per-window series (``t_s``, requests, errors, error_rate, p50_ms, p99_ms).
    metrics
        Headline numbers: requests, error rates and p99 per phase, faults, rollbacks.
    """

    journal: dict[str, Any]
    samples: pl.DataFrame
    windows: pl.DataFrame
    metrics: dict[str, Any]


@dataclass
class _Ledger:
    """Everything a run changed, so the rollback can undo all of it."""

    holder: str
    proxies: list[str] = field(default_factory=list)
    toxics: list[tuple[str, str]] = field(default_factory=list)
    http_done: list[tuple[str, HttpCall]] = field(default_factory=list)
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    fault_windows: list[dict[str, Any]] = field(default_factory=list)
    rolled_back: bool = False


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def rollback(
    client: ProxyClient, ledger: _Ledger, *, keep_proxies: bool = False
) -> list[dict[str, Any]]:
    """Undo everything in ``ledger`` (idempotent); returns one log entry per step.

    With ``keep_proxies`` only the faults are removed (the proxies the run created stay
    for the steady-state check after the method).
    """
    if ledger.rolled_back:
        return ledger.rollbacks
    log = ledger.rollbacks
    for proxy, name in reversed(ledger.toxics):
        try:
            client.remove_toxic(proxy, name)
            log.append({"what": f"remove toxic {name} from {proxy}", "ok": True})
        except FleetlabError as exc:
            gone = "404" in str(exc)
            log.append(
                {
                    "what": f"remove toxic {name} from {proxy}",
                    "ok": gone,
                    "note": "already gone" if gone else str(exc),
                }
            )
    ledger.toxics.clear()
    for name, call in reversed(ledger.http_done):
        try:
            resp = httpx.request(call.method, call.url, json=call.json_body, timeout=call.timeout_s)
            log.append(
                {
                    "what": f"rollback of {name}: {call.method} {call.url}",
                    "ok": resp.status_code < 400,
                    "status": resp.status_code,
                }
            )
        except httpx.HTTPError as exc:
            log.append({"what": f"rollback of {name}", "ok": False, "note": str(exc)})
    ledger.http_done.clear()
    if keep_proxies:
        return log
    for name in reversed(ledger.proxies):
        with contextlib.suppress(FleetlabError):
            client.delete_proxy(name)
            log.append({"what": f"delete proxy {name}", "ok": True})
    ledger.proxies.clear()
    with contextlib.suppress(FleetlabError):  # anything the proxy still holds for us
        left = client.release(ledger.holder)
        if left:
            log.append({"what": f"release {left} leased items", "ok": True})
    ledger.rolled_back = True
    return log


async def _proxy_requests(client: ProxyClient) -> dict[str, int] | None:
    """Requests each proxy has framed so far (fleetlab ``stats``); ``None`` without stats."""
    try:
        doc = await asyncio.to_thread(client.proxies)
    except FleetlabError:
        return None
    counts = {
        name: int(p["stats"]["requests"])
        for name, p in doc.items()
        if isinstance(p.get("stats"), dict) and "requests" in p["stats"]
    }
    return counts or None


def _delta(before: dict[str, int] | None, after: dict[str, int] | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {name: after[name] - before[name] for name in after if name in before}


async def _probes(exp: Experiment, http: httpx.AsyncClient | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in exp.steady_state.probes:
        if http is None:  # pragma: no cover - run_async makes a client when there are probes
            raise RuntimeError("probes need an HTTP client")
        try:
            resp = await http.request(p.method, p.url, timeout=p.timeout_s)
            out.append(
                {
                    "probe": p.name,
                    "status": resp.status_code,
                    "ok": resp.status_code in p.expect_status,
                }
            )
        except httpx.HTTPError as exc:
            out.append({"probe": p.name, "status": 0, "ok": False, "error": type(exc).__name__})
    return out


async def _fault(
    exp: Experiment,
    i: int,
    f: Fault,
    client: ProxyClient,
    ledger: _Ledger,
    t0: float,
    method_t0: float,
    stop: asyncio.Event,
    drained: asyncio.Event,
    installed: asyncio.Event,
    emit: Event,
) -> None:
    name = f.name or f"fault{i}"
    start = method_t0 + f.start_s
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, start - time.monotonic()))
    if stop.is_set():
        installed.set()
        return
    window: dict[str, Any] = {
        "name": name,
        "proxy": f.proxy,
        "type": f.toxic.type if f.toxic else "http",
        "start_s": time.monotonic() - t0,
        "end_s": None,
    }
    ledger.fault_windows.append(window)
    toxic_name = f"{name}-{ledger.holder[:8]}"
    if f.toxic is not None and f.proxy is not None:
        attrs = dict(f.toxic.attributes)
        if f.ramp is not None:
            attrs[f.ramp.attribute] = f.ramp.start
        await asyncio.to_thread(
            client.add_toxic,
            f.proxy,
            f.toxic.type,
            name=toxic_name,
            stream=f.toxic.stream,
            toxicity=f.toxic.toxicity,
            attributes=attrs,
            lease_holder=ledger.holder,
            lease_ttl_s=exp.lease_ttl_s,
        )
        ledger.toxics.append((f.proxy, toxic_name))
    elif f.http is not None and f.rollback is not None:
        call = f.http
        async with httpx.AsyncClient() as http:
            resp = await http.request(
                call.method, call.url, json=call.json_body, timeout=call.timeout_s
            )
        ledger.http_done.append((name, f.rollback))
        window["status"] = resp.status_code
    installed.set()
    emit("fault_start", {"name": name})
    end = start + f.duration_s
    if f.ramp is not None and f.proxy is not None:
        steps = f.ramp.steps
        for k in range(1, steps):
            at = start + f.duration_s * k / steps
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, at - time.monotonic()))
            if stop.is_set():
                break
            value = f.ramp.start + (f.ramp.end - f.ramp.start) * k / (steps - 1)
            await asyncio.to_thread(
                client.update_toxic, f.proxy, toxic_name, {f.ramp.attribute: value}
            )
            window.setdefault("ramp", [f.ramp.start]).append(value)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, end - time.monotonic()))
    if f.start_s + f.duration_s >= exp.method_s:
        # a fault lasting to the end of the method stays until the requests sent under it
        # are answered, so every one of them meets it (and the call counts are exact)
        await drained.wait()
    if f.toxic is not None and f.proxy is not None and (f.proxy, toxic_name) in ledger.toxics:
        with contextlib.suppress(FleetlabError):
            await asyncio.to_thread(client.remove_toxic, f.proxy, toxic_name)
        ledger.toxics.remove((f.proxy, toxic_name))
    window["end_s"] = time.monotonic() - t0
    emit("fault_end", {"name": name})


async def _heartbeat(client: ProxyClient, ledger: _Ledger, ttl_s: float) -> None:
    while True:
        await asyncio.sleep(ttl_s / 3.0)
        with contextlib.suppress(FleetlabError):
            await asyncio.to_thread(client.renew, ledger.holder)


async def _monitor(
    exp: Experiment, samples: list[Any], t0: float, stop: asyncio.Event, state: dict[str, Any]
) -> None:
    guard = exp.abort.guard
    if guard.p50_ms is None and guard.p99_ms is None and guard.error_rate is None:
        return
    strikes = 0
    while not stop.is_set():
        await asyncio.sleep(exp.abort.window_s)
        now = time.monotonic() - t0
        recent = [s for s in samples if s[0] >= now - exp.abort.window_s - 0.5]
        if len(recent) < 3:
            continue
        check = slo_check(summarize(to_frame(recent)), guard)
        strikes = 0 if check["ok"] else strikes + 1
        if strikes >= exp.abort.consecutive:
            state["abort"] = {
                "reason": "guard breached",
                "at_s": now,
                "breaches": check["breaches"],
            }
            stop.set()


async def run_async(
    exp: Experiment, client: ProxyClient, ledger: _Ledger, *, emit: Event
) -> dict[str, Any]:
    """The body of a run (no rollback here: the caller always rolls back)."""
    t0 = time.monotonic()
    state: dict[str, Any] = {"phases": {}, "samples": [], "abort": None}
    samples: list[Any] = state["samples"]
    heart = asyncio.get_running_loop().create_task(_heartbeat(client, ledger, exp.lease_ttl_s))
    try:
        for p in exp.proxies:
            doc = await asyncio.to_thread(
                client.create_proxy,
                p.name,
                upstream=p.upstream,
                listen=p.listen,
                protocol=p.protocol,
                lease_holder=ledger.holder,
                lease_ttl_s=exp.lease_ttl_s,
            )
            ledger.proxies.append(p.name)
            state.setdefault("proxies", {})[p.name] = doc["listen"]
        exp = resolve_proxy_refs(exp, state.get("proxies", {}))
        async with contextlib.AsyncExitStack() as stack:
            # probes only: building a client costs ~0.1 s (its TLS certificate store)
            http = (
                await stack.enter_async_context(httpx.AsyncClient())
                if exp.steady_state.probes
                else None
            )
            pool = HttpPool()
            await _phase(exp, "before", http, pool, t0, samples, state, emit, client)
            before = state["phases"]["before"]
            if not before["ok"]:
                state["status"] = "failed"
                return state
            if not exp.method:  # nothing to inject: the run is its steady-state check
                pool.close()
                state["status"] = "completed"
                return state
            stop = asyncio.Event()
            drained = asyncio.Event()  # the load's last request is answered
            counts0 = await _proxy_requests(client)
            method_t0 = time.monotonic()
            state["method_start_s"] = method_t0 - t0
            installed = [asyncio.Event() for _ in exp.method]
            tasks = [
                asyncio.get_running_loop().create_task(
                    _fault(
                        exp, i, f, client, ledger, t0, method_t0, stop, drained, installed[i], emit
                    )
                )
                for i, f in enumerate(exp.method)
            ]
            monitor = asyncio.get_running_loop().create_task(
                _monitor(exp, samples, t0, stop, state)
            )
            n0 = len(samples)
            deadline = exp.abort.deadline_s - (time.monotonic() - t0)
            counts1: dict[str, int] | None = None

            async def load() -> None:
                nonlocal counts1
                try:
                    if exp.load:
                        await open_loop(
                            exp.load, exp.method_s, t0=t0, client=pool, stop=stop, out=samples
                        )
                    else:
                        await asyncio.sleep(exp.method_s)
                    counts1 = await _proxy_requests(client)
                finally:
                    drained.set()

            async def first_faults_in_place() -> None:
                # faults that start with the method are in place before its first request
                for ev, task, f in zip(installed, tasks, exp.method, strict=True):
                    if f.start_s == 0:
                        waiter = asyncio.ensure_future(ev.wait())
                        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
                        waiter.cancel()

            async def method() -> None:
                await first_faults_in_place()
                await asyncio.gather(load(), *tasks)

            try:
                await asyncio.wait_for(method(), max(0.1, deadline))
            except TimeoutError:
                state["abort"] = {"reason": "deadline", "at_s": time.monotonic() - t0}
            finally:
                stop.set()
                drained.set()
                monitor.cancel()
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, monitor, return_exceptions=True)
            during = to_frame(samples[n0:])
            state["phases"]["during"] = {
                **summarize(during),
                **slo_check(summarize(during), exp.steady_state.slo),
            }
            calls = _delta(counts0, counts1)
            if calls is not None:
                state["phases"]["during"]["proxy_requests"] = calls
            # every fault of the method is removed here, before recovery and the after-check
            await asyncio.to_thread(rollback, client, ledger, keep_proxies=True)
            state["method_end_s"] = time.monotonic() - t0
            if state["abort"] is not None:
                state["status"] = "aborted"
                return state
            await asyncio.sleep(exp.recovery_s)
            await _phase(exp, "after", http, pool, t0, samples, state, emit, client)
            pool.close()
            state["status"] = "completed" if state["phases"]["after"]["ok"] else "deviated"
            return state
    finally:
        heart.cancel()
        state["elapsed_s"] = time.monotonic() - t0


async def _phase(
    exp: Experiment,
    phase: str,
    http: httpx.AsyncClient | None,
    pool: HttpPool,
    t0: float,
    samples: list[Any],
    state: dict[str, Any],
    emit: Event,
    client: ProxyClient,
) -> None:
    probes = await _probes(exp, http)
    result: dict[str, Any] = {"probes": probes, "start_s": time.monotonic() - t0}
    ok = all(p["ok"] for p in probes)
    if exp.load is not None:
        n0 = len(samples)
        counts0 = await _proxy_requests(client)
        await open_loop(exp.load, exp.steady_state.window_s, t0=t0, client=pool, out=samples)
        calls = _delta(counts0, await _proxy_requests(client))
        summary = summarize(to_frame(samples[n0:]))
        check = slo_check(summary, exp.steady_state.slo)
        result.update(summary)
        result["breaches"] = check["breaches"]
        if calls is not None:
            result["proxy_requests"] = calls
        ok = ok and check["ok"]
    result["ok"] = ok
    result["end_s"] = time.monotonic() - t0
    state["phases"][phase] = result
    emit("steady_state", {"phase": phase, "ok": ok})


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while a run is in progress (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_experiment(
    exp: Experiment,
    *,
    api: str | None = None,
    token: str | None = None,
    on_event: Event | None = None,
    window_s: float = 0.25,
) -> ExperimentResult:
    """Run ``exp``: check the steady state, inject its faults under load, roll back, report.

    Rollback is guaranteed: after success, deviation, abort, Ctrl-C, SIGTERM or an error
    every fault is removed and every proxy the run created is deleted; if the runner is
    killed outright (``kill -9``) the proxy drops the faults itself when their lease
    (``lease_ttl_s``) runs out.

    Parameters
    ----------
    exp
        A validated experiment (:func:`load_experiment`).
    api, token
        The proxy control API to use (overrides ``exp.proxy``). Neither: an embedded
        proxy runs in this process for the duration of the run.
    on_event
        Called as ``on_event(kind, data)`` at each phase and fault (for progress output).
    window_s
        Width of the time-series windows, seconds.

    Returns
    -------
    ExperimentResult

    Raises
    ------
    SafetyError
        A target outside the experiment's allowlist.
    FleetlabError
        The proxy API cannot be reached.
    """
    check_targets(exp)
    emit = on_event or (lambda kind, data: None)
    ledger = _Ledger(holder=f"run-{uuid.uuid4().hex}")
    target = api or (exp.proxy.api if exp.proxy else None)
    tok = token or (exp.proxy.token if exp.proxy else None)
    started = _now_iso()
    state: dict[str, Any] = {"phases": {}, "samples": [], "abort": None, "status": "interrupted"}
    error: str | None = None
    with contextlib.ExitStack() as stack:
        if target is None:
            handle = stack.enter_context(running_proxy())
            target = handle.api_url
        client = stack.enter_context(ProxyClient(target, token=tok, allow=tuple(exp.allow)))
        loop = asyncio.new_event_loop()  # plain asyncio: uvloop would take over signals here
        try:
            with _terminate_as_interrupt():
                state = loop.run_until_complete(run_async(exp, client, ledger, emit=emit))
        except KeyboardInterrupt:
            state["status"] = "interrupted"
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.sleep(0))
        except FleetlabError:
            raise
        except Exception as exc:  # the runner crashed: still roll back, and say why
            state["status"] = "crashed"
            error = f"{type(exc).__name__}: {exc}"
        finally:
            rollback(client, ledger)
            loop.close()
    return _result(exp, state, ledger, started, error, window_s)


def _result(
    exp: Experiment,
    state: dict[str, Any],
    ledger: _Ledger,
    started: str,
    error: str | None,
    window_s: float,
) -> ExperimentResult:
    frame = to_frame(state.get("samples", []))
    phases = state.get("phases", {})
    bounds = []
    for name in ("before", "after"):
        if name in phases:
            bounds.append((name, phases[name]["start_s"], phases[name]["end_s"]))
    if "method_start_s" in state:
        bounds.append(("during", state["method_start_s"], state.get("method_end_s", float("inf"))))
    phase = pl.lit("other")
    for name, lo, hi in bounds:
        phase = (
            pl.when((pl.col("t_s") >= lo) & (pl.col("t_s") < hi))
            .then(pl.lit(name))
            .otherwise(phase)
        )
    frame = frame.with_columns(phase=phase)
    journal = {
        "format": "fleetlab-chaos-journal",
        "version": 1,
        "title": exp.title,
        "description": exp.description,
        "status": state.get("status", "interrupted"),
        "started_at": started,
        "ended_at": _now_iso(),
        "duration_s": state.get("elapsed_s"),
        "holder": ledger.holder,
        "steady_state": {"title": exp.steady_state.title, "slo": exp.steady_state.slo.model_dump()},
        "phases": phases,
        "faults": ledger.fault_windows,
        "abort": state.get("abort"),
        "rollbacks": ledger.rollbacks,
        "error": error,
        "experiment": exp.model_dump(mode="json", by_alias=True),
    }
    metrics: dict[str, Any] = {
        "status": journal["status"],
        "requests": frame.height,
        "faults": len(ledger.fault_windows),
        "rollback_steps": len(ledger.rollbacks),
    }
    for name in ("before", "during", "after"):
        if name in phases:
            metrics[f"{name}_ok"] = phases[name].get("ok")
            for key in ("error_rate", "p99_ms"):
                if key in phases[name]:
                    metrics[f"{name}_{key}"] = phases[name][key]
    return ExperimentResult(journal, frame, windows(frame, width_s=window_s), metrics)
