"""Experiments: validation before injection, runs with guaranteed rollback, journals, CTK."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetlab.chaos import (
    ProxyClient,
    experiment_report,
    import_chaostoolkit,
    load_experiment,
    run_experiment,
    running_proxy,
    validate_experiment,
)
from fleetlab.errors import ConfigError, DataNotFoundError, SafetyError


def _exp(http_port: int, **over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "title": "web slows down",
        "proxies": [{"name": "web", "upstream": f"127.0.0.1:{http_port}"}],
        "load": {"url": "http://{proxy:web}/api", "rate_per_s": 40, "timeout_s": 1.0},
        "steady_state": {
            "probes": [{"name": "up", "url": "http://{proxy:web}/health"}],
            "slo": {"p99_ms": 200, "error_rate": 0.05},
            "window_s": 0.3,
        },
        "method": [
            {
                "name": "slow",
                "proxy": "web",
                "toxic": {"type": "latency", "attributes": {"latency": 400}},
                "start_s": 0.1,
                "duration_s": 0.4,
            }
        ],
        "recovery_s": 0.1,
        "lease_ttl_s": 1.0,
    }
    doc.update(over)
    return doc


def test_a_run_measures_the_fault_and_rolls_everything_back(http_port: int) -> None:
    with running_proxy() as handle:
        exp = validate_experiment(_exp(http_port))
        events: list[str] = []
        result = run_experiment(exp, api=handle.api_url, on_event=lambda k, d: events.append(k))
        with ProxyClient(handle.api_url) as client:
            assert client.proxies() == {}  # the run's proxy (and its toxic) are gone
    j = result.journal
    assert j["status"] == "completed"
    assert j["phases"]["before"]["ok"] and j["phases"]["after"]["ok"]
    assert not j["phases"]["during"]["ok"]  # 400 ms latency breaks the 200 ms p99 SLO
    assert j["phases"]["during"]["p99_ms"] >= 390
    assert j["phases"]["before"]["p99_ms"] < 200
    assert [f["name"] for f in j["faults"]] == ["slow"]
    assert any("remove toxic" in r["what"] for r in j["rollbacks"]) or any(
        "delete proxy web" in r["what"] for r in j["rollbacks"]
    )
    assert "fault_start" in events and "fault_end" in events
    # the proxy's request counts per phase: every load request went through it once
    for phase in ("before", "during", "after"):
        assert j["phases"][phase]["proxy_requests"] == {"web": j["phases"][phase]["requests"]}
    # the fault lasting to the end of the method stays until its requests are answered:
    # the last one leaves ~0.475 s into the method and takes 400 ms, the fault began at 0.1 s
    fault = j["faults"][0]
    assert fault["end_s"] - fault["start_s"] >= 0.7
    # ~40 req/s over 0.3 + 0.5 + 0.3 s of load
    assert 30 <= result.samples.height <= 60
    assert set(result.samples["phase"].unique()) >= {"before", "during", "after"}
    html = experiment_report(result).to_html()
    assert "Latency and errors over time" in html and "slow" in html
    json.dumps(j, default=str)


def test_deviation_still_rolls_back(loop_thread) -> None:
    from fleetlab.chaos._http import HttpResponse, serve_http

    state = {"broken": False}

    async def handle(req):  # a service the fault breaks for good (its health stays 500)
        if req.path == "/break":
            state["broken"] = True
        if req.path == "/fix":
            return HttpResponse.of_json({"fixed": False})  # the rollback cannot repair it
        return HttpResponse.of_json({}, 500 if state["broken"] else 200)

    port = loop_thread.call(serve_http(handle)).sockets[0].getsockname()[1]
    doc = _exp(port)
    doc["method"] = [
        {
            "name": "latency",
            "proxy": "web",
            "toxic": {"type": "latency", "attributes": {"latency": 20}},
            "duration_s": 0.3,
        },
        {
            "name": "break",
            "http": {"url": f"http://127.0.0.1:{port}/break"},
            "rollback": {"url": f"http://127.0.0.1:{port}/fix"},
            "duration_s": 0.3,
        },
    ]
    with running_proxy() as handle_:
        result = run_experiment(validate_experiment(doc), api=handle_.api_url)
        with ProxyClient(handle_.api_url) as client:
            assert client.proxies() == {}
    j = result.journal
    assert j["status"] == "deviated"
    assert not j["phases"]["after"]["ok"]
    whats = " | ".join(r["what"] for r in j["rollbacks"])
    assert "rollback of break" in whats and "delete proxy web" in whats


def test_abort_guard_stops_early_and_rolls_back(http_port: int) -> None:
    doc = _exp(http_port)
    doc["method"][0] = {
        "name": "down",
        "proxy": "web",
        "toxic": {"type": "down"},
        "duration_s": 3.0,
    }
    doc["abort"] = {"guard": {"error_rate": 0.5}, "window_s": 0.2, "consecutive": 2}
    with running_proxy() as handle:
        result = run_experiment(validate_experiment(doc), api=handle.api_url)
        with ProxyClient(handle.api_url) as client:
            assert client.proxies() == {}
    j = result.journal
    assert j["status"] == "aborted"
    assert j["abort"]["reason"] == "guard breached"
    assert j["faults"][0]["end_s"] - j["faults"][0]["start_s"] < 2.0


def test_failed_steady_state_injects_nothing(http_port: int) -> None:
    doc = _exp(http_port)
    doc["steady_state"]["probes"] = [{"url": "http://{proxy:web}/x", "expect_status": [418]}]
    with running_proxy() as handle:
        result = run_experiment(validate_experiment(doc), api=handle.api_url)
    assert result.journal["status"] == "failed"
    assert result.journal["faults"] == []


def test_an_experiment_without_a_method_is_its_steady_state_check(http_port: int) -> None:
    doc = _exp(http_port, method=[])
    with running_proxy() as handle:
        result = run_experiment(validate_experiment(doc), api=handle.api_url)
    j = result.journal
    assert j["status"] == "completed"
    assert list(j["phases"]) == ["before"] and j["faults"] == []
    assert j["phases"]["before"]["requests"] == 12  # 40 req/s for 0.3 s, open loop


def test_embedded_proxy_when_none_is_given(http_port: int) -> None:
    result = run_experiment(validate_experiment(_exp(http_port)))
    assert result.journal["status"] == "completed"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["method"][0]["toxic"].update(type="gremlin"), "method[0].toxic.type"),
        (lambda d: d["method"][0]["toxic"]["attributes"].update(latency=-1), "method[0].toxic"),
        (lambda d: d["method"][0].update(duration_s=-2), "method[0].duration_s"),
        (lambda d: d["method"].append({"http": {"url": "http://127.0.0.1:9/flag"}}), "method[1]"),
        (lambda d: d["load"].update(rate_per_s=0), "load.rate_per_s"),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d["method"][0].update(proxy="nope"), "method[0].proxy"),
        (lambda d: d["load"].update(url="http://{proxy:ghost}/"), "load.url"),
        (lambda d: d["method"][0].update(start_s=400.0), "method"),
    ],
)
def test_invalid_experiments_name_the_field(mutate: Any, field: str, tmp_path: Path) -> None:
    doc = _exp(8080)
    mutate(doc)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as info:
        load_experiment(path)
    assert str(path) in str(info.value)
    assert field in str(info.value)


def test_missing_rollback_is_named() -> None:
    doc = _exp(8080)
    doc["method"] = [{"name": "flag", "http": {"url": "http://127.0.0.1:9/flag"}}]
    with pytest.raises(ConfigError, match="rollback"):
        validate_experiment(doc)


def test_non_loopback_targets_are_refused_before_running() -> None:
    doc = _exp(8080)
    doc["load"]["url"] = "http://93.184.216.34/"
    with pytest.raises(SafetyError, match=r"load\.url"):
        validate_experiment(doc)
    doc = _exp(8080)
    doc["proxies"][0]["upstream"] = "1.1.1.1:80"
    with pytest.raises(SafetyError, match="upstream"):
        validate_experiment(doc)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError):
        load_experiment(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("title: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_experiment(bad)


CTK = {
    "title": "db latency",
    "description": "from chaostoolkit",
    "configuration": {"toxiproxy_host": "127.0.0.1", "toxiproxy_api_port": 8474},
    "steady-state-hypothesis": {
        "title": "app responds",
        "probes": [
            {
                "type": "probe",
                "name": "app",
                "tolerance": 200,
                "provider": {"type": "http", "url": "http://127.0.0.1:8080/", "timeout": 3},
            }
        ],
    },
    "method": [
        {
            "type": "action",
            "name": "add latency",
            "provider": {
                "type": "python",
                "module": "chaostoxi.toxic.actions",
                "func": "create_latency_toxic",
                "arguments": {"for_proxy": "db", "toxic_name": "lat", "latency": 300, "jitter": 20},
            },
            "pauses": {"after": 4},
        },
        {
            "type": "action",
            "name": "flag on",
            "provider": {"type": "http", "url": "http://127.0.0.1:8080/flag", "method": "POST"},
        },
    ],
    "rollbacks": [
        {
            "type": "action",
            "name": "remove",
            "provider": {
                "type": "python",
                "module": "chaostoxi.toxic.actions",
                "func": "delete_toxic",
                "arguments": {"for_proxy": "db", "toxic_name": "lat"},
            },
        },
        {
            "type": "action",
            "name": "flag off",
            "provider": {"type": "http", "url": "http://127.0.0.1:8080/flag", "method": "DELETE"},
        },
    ],
}


def test_chaos_toolkit_experiments_import(tmp_path: Path) -> None:
    path = tmp_path / "ctk.json"
    path.write_text(json.dumps(CTK))
    exp = load_experiment(path)
    assert exp.title == "db latency"
    assert exp.proxy is not None and exp.proxy.api == "http://127.0.0.1:8474"
    assert exp.steady_state.probes[0].expect_status == [200]
    lat, flag = exp.method
    assert lat.toxic is not None and lat.toxic.type == "latency"
    assert lat.toxic.attributes == {"latency": 300, "jitter": 20}
    assert (lat.start_s, lat.duration_s) == (0.0, 4.0)
    assert flag.http is not None and flag.rollback is not None
    assert flag.rollback.method == "DELETE" and flag.start_s == 4.0


def test_chaos_toolkit_unsupported_activity_is_named() -> None:
    doc = json.loads(json.dumps(CTK))
    doc["method"][0]["provider"] = {"type": "process", "path": "kill"}
    with pytest.raises(ConfigError, match=r"method\[0\]\.provider"):
        import_chaostoolkit(doc, source="ctk.json")
    doc = json.loads(json.dumps(CTK))
    doc["rollbacks"] = doc["rollbacks"][:1]  # the http action loses its rollback
    with pytest.raises(ConfigError, match=r"method\[1\].*rollback"):
        validate_experiment(doc, source="ctk.json")


def test_ramp_raises_the_attribute_in_steps(http_port: int) -> None:
    doc = _exp(http_port)
    doc["steady_state"]["slo"] = {"error_rate": 0.5}
    doc["method"][0].update(
        start_s=0.0,
        duration_s=0.6,
        ramp={"attribute": "latency", "start": 0, "end": 120, "steps": 3},
    )
    result = run_experiment(validate_experiment(doc))
    fault = result.journal["faults"][0]
    assert fault["ramp"] == [0, 60.0, 120.0]
    during = result.samples.filter(result.samples["phase"] == "during").sort("t_s")
    first, last = during.head(5)["latency_ms"].mean(), during.tail(5)["latency_ms"].mean()
    assert last > first + 50  # the latency grew with the ramp
