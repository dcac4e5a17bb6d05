"""The proxy: toxics do what they say, the Toxiproxy client works, leases and safety hold."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from fleetlab.chaos import ProxyClient, running_proxy, toxic
from fleetlab.errors import ConfigError, SafetyError


def _port(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def _roundtrip(port: int, payload: bytes, *, timeout: float = 3.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return b"".join(chunks)


def test_toxiproxy_python_client_drives_the_proxy(proxy, echo_port: int) -> None:
    from toxiproxy import Toxiproxy

    api, _ = proxy
    server = Toxiproxy()
    server.update_api_consumer("127.0.0.1", _port(api))
    assert server.running()
    assert server.version().startswith(b"fleetlab-")
    p = server.create(upstream=f"127.0.0.1:{echo_port}", name="echo")
    assert server.get_proxy("echo").upstream == f"127.0.0.1:{echo_port}"
    port = _port(p.listen)
    assert _roundtrip(port, b"hello") == b"hello"
    p.add_toxic(type="latency", attributes={"latency": 150})
    assert list(p.toxics()) == ["latency_downstream"]
    t0 = time.perf_counter()
    assert _roundtrip(port, b"slow") == b"slow"
    assert time.perf_counter() - t0 >= 0.14
    p.destroy_toxic("latency_downstream")
    assert p.toxics() == {}
    with p.down(), pytest.raises(OSError):
        _roundtrip(port, b"x", timeout=1.0)
    assert _roundtrip(port, b"back") == b"back"
    from toxiproxy.exceptions import InvalidToxic, ProxyExists

    with pytest.raises(InvalidToxic):
        p.add_toxic(type="no_such_toxic")
    with pytest.raises(ProxyExists):
        server.create(upstream=f"127.0.0.1:{echo_port}", name="echo")
    server.destroy_all()
    assert server.proxies() == {}


def test_large_transfer_is_intact_with_and_without_slicer(proxy, echo_port: int) -> None:
    _, client = proxy
    port = _port(client.create_proxy("e", upstream=f"127.0.0.1:{echo_port}")["listen"])
    payload = bytes(range(256)) * 4000  # ~1 MB
    assert _roundtrip(port, payload) == payload
    client.add_toxic("e", "slicer", attributes={"average_size": 700, "size_variation": 300})
    assert _roundtrip(port, payload[:100_000]) == payload[:100_000]


def test_bandwidth_limits_throughput(proxy, echo_port: int) -> None:
    _, client = proxy
    port = _port(client.create_proxy("e", upstream=f"127.0.0.1:{echo_port}")["listen"])
    client.add_toxic("e", "bandwidth", attributes={"rate": 200})  # 200 KB/s
    t0 = time.perf_counter()
    assert len(_roundtrip(port, b"z" * 60_000)) == 60_000
    assert time.perf_counter() - t0 >= 0.25  # 60 kB at 200 kB/s = 0.3 s


def test_limit_data_and_reset_and_timeout(proxy, echo_port: int) -> None:
    _, client = proxy
    port = _port(client.create_proxy("e", upstream=f"127.0.0.1:{echo_port}")["listen"])
    with toxic(client, "e", "limit_data", attributes={"bytes": 10}):
        assert _roundtrip(port, b"0123456789abcdef") == b"0123456789"
    with toxic(client, "e", "reset_peer", attributes={"timeout": 0}), pytest.raises(OSError):
        _roundtrip(port, b"x")
    with toxic(client, "e", "timeout", attributes={"timeout": 200}):
        t0 = time.perf_counter()
        assert _roundtrip(port, b"never") == b""  # nothing passes; closed after 200 ms
        assert 0.15 <= time.perf_counter() - t0 < 2.0
    assert client.toxics("e") == []
    assert _roundtrip(port, b"ok") == b"ok"


def test_toxicity_zero_never_applies(proxy, echo_port: int) -> None:
    _, client = proxy
    port = _port(client.create_proxy("e", upstream=f"127.0.0.1:{echo_port}")["listen"])
    client.add_toxic("e", "reset_peer", toxicity=0.0, attributes={"timeout": 0})
    for _ in range(5):
        assert _roundtrip(port, b"fine") == b"fine"


def test_http_faults_match_route_and_fail_first_n(proxy, http_port: int) -> None:
    _, client = proxy
    listen = client.create_proxy("web", upstream=f"127.0.0.1:{http_port}", protocol="http")[
        "listen"
    ]
    with httpx.Client(base_url=f"http://{listen}") as web:
        assert web.get("/a").json() == {"path": "/a", "method": "GET", "n": 0}
        client.add_toxic(
            "web",
            "http_abort",
            name="flaky",
            attributes={"status": 503, "path": "/pay", "method": "POST", "first_n": 2},
        )
        codes = [web.post("/pay", content=b"{}").status_code for _ in range(4)]
        assert codes == [503, 503, 200, 200]
        assert web.get("/pay").status_code == 200  # method does not match
        client.add_toxic(
            "web", "http_abort", name="hdr", attributes={"status": 429, "header": "X-Tenant: noisy"}
        )
        assert web.get("/x", headers={"X-Tenant": "noisy"}).status_code == 429
        assert web.get("/x", headers={"X-Tenant": "calm"}).status_code == 200
        client.add_toxic(
            "web", "http_delay", name="d", attributes={"latency": 150, "path": "/slow"}
        )
        t0 = time.perf_counter()
        assert web.get("/slow").status_code == 200
        assert time.perf_counter() - t0 >= 0.14
        client.add_toxic("web", "http_corrupt", name="c", attributes={"path": "/big"})
        body = web.get("/big").content
        assert len(body) == 200_000 and body != b"x" * 200_000
        stats = client.proxy("web")["stats"]
        assert stats["faulted_requests"] >= 5 and stats["requests"] >= 10
        assert client.stop_all() == 4
        assert web.get("/big").content == b"x" * 200_000


def test_http_toxic_on_a_tcp_proxy_switches_new_connections(proxy, http_port: int) -> None:
    _, client = proxy
    listen = client.create_proxy("web", upstream=f"127.0.0.1:{http_port}")["listen"]
    with httpx.Client(base_url=f"http://{listen}") as web:
        assert web.get("/").status_code == 200  # a keep-alive TCP-mode connection
        time.sleep(0.05)
        client.add_toxic("web", "http_abort", attributes={"status": 500})
        assert web.get("/").status_code == 500


def test_leases_expire_by_themselves(proxy, echo_port: int) -> None:
    _, client = proxy
    client.create_proxy("e", upstream=f"127.0.0.1:{echo_port}", lease_holder="r1", lease_ttl_s=0.6)
    client.add_toxic("e", "latency", attributes={"latency": 10}, lease_holder="r1", lease_ttl_s=0.3)
    assert client.renew("r1") == 2
    time.sleep(0.5)
    assert client.toxics("e") == []  # the toxic's lease ran out
    assert "e" in client.proxies()
    time.sleep(0.4)
    assert client.proxies() == {}  # and then the proxy's


def test_release_removes_what_a_holder_leased(proxy, echo_port: int) -> None:
    _, client = proxy
    client.create_proxy("e", upstream=f"127.0.0.1:{echo_port}")
    client.add_toxic(
        "e", "latency", name="a", attributes={"latency": 5}, lease_holder="h", lease_ttl_s=60
    )
    client.add_toxic("e", "latency", name="b", attributes={"latency": 5})
    assert client.release("h") == 1
    assert [t["name"] for t in client.toxics("e")] == ["b"]


def test_targets_outside_loopback_are_refused(proxy) -> None:
    _, client = proxy
    with pytest.raises(SafetyError, match="outside the allowlist"):
        client.create_proxy("x", upstream="8.8.8.8:53")
    with pytest.raises(SafetyError, match="outside the allowlist"):
        client.create_proxy("x", upstream="127.0.0.1:9", listen="0.0.0.0:0")
    with pytest.raises(SafetyError):
        ProxyClient("http://10.1.2.3:8474")


def test_bad_toxics_are_rejected_with_the_attribute_named(proxy, echo_port: int) -> None:
    _, client = proxy
    client.create_proxy("e", upstream=f"127.0.0.1:{echo_port}")
    with pytest.raises(ConfigError, match=r"attributes\.latency"):
        client.add_toxic("e", "latency", attributes={"latency": -5})
    with pytest.raises(ConfigError, match="toxicity"):
        client.add_toxic("e", "latency", toxicity=1.5)
    with pytest.raises(ConfigError, match=r"attributes\.status"):
        client.add_toxic("e", "http_abort", attributes={"status": 99})
    with pytest.raises(ConfigError, match="404"):
        client.add_toxic("nope", "latency")


def test_control_api_off_loopback_needs_a_token() -> None:
    with pytest.raises(SafetyError, match="token"), running_proxy(host="0.0.0.0"):
        pass


def test_token_is_enforced_when_set() -> None:
    with running_proxy(token="s3cret") as handle:
        resp = httpx.get(f"{handle.api_url}/proxies")
        assert resp.status_code == 401
        with ProxyClient(handle.api_url, token="s3cret") as client:
            assert client.proxies() == {}


def test_an_http_proxy_relays_non_http_bytes_as_plain_tcp(proxy, echo_port: int) -> None:
    _, client = proxy
    port = _port(
        client.create_proxy("db", upstream=f"127.0.0.1:{echo_port}", protocol="http")["listen"]
    )
    payload = b"\x00\x01binary protocol, not HTTP\r\n\r\n" * 100
    assert _roundtrip(port, payload) == payload
    with toxic(client, "db", "latency", attributes={"latency": 100}):
        t0 = time.perf_counter()
        assert _roundtrip(port, b"PING") == b"PING"
        assert time.perf_counter() - t0 >= 0.09  # TCP toxics still apply
