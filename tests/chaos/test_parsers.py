"""Property tests: HTTP framing, attribute parsing, toxic validation, summaries."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetlab.chaos import parse_attributes
from fleetlab.chaos._http import BadRequest, read_chunked, read_request
from fleetlab.chaos._load import slo_check, summarize, to_frame, windows
from fleetlab.chaos._spec import Slo
from fleetlab.chaos._toxics import TCP_TOXICS, ToxicError, http_match
from fleetlab.errors import ConfigError

token = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)


def _parse(raw: bytes):
    async def go():
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_request(reader)

    return asyncio.run(go())


@settings(max_examples=60, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.lists(token, min_size=0, max_size=4).map(lambda p: "/" + "/".join(p)),
    headers=st.dictionaries(token, token, max_size=5),
    body=st.binary(max_size=3000),
    chunked=st.booleans(),
)
def test_requests_round_trip_through_the_parser(method, path, headers, body, chunked) -> None:
    head = [f"{method} {path}?q=1 HTTP/1.1"] + [f"X-{k}: {v}" for k, v in headers.items()]
    if chunked:
        head.append("Transfer-Encoding: chunked")
        framed = (
            b"".join(
                f"{len(body[i : i + 500]):x}\r\n".encode() + body[i : i + 500] + b"\r\n"
                for i in range(0, len(body), 500)
            )
            + b"0\r\n\r\n"
        )
    else:
        head.append(f"Content-Length: {len(body)}")
        framed = body
    req = _parse(("\r\n".join(head) + "\r\n\r\n").encode() + framed)
    assert req.method == method and req.path == path and req.query == {"q": "1"}
    assert req.body == body
    for k, v in headers.items():
        assert req.headers[f"x-{k}"] == v


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_never_crashes_the_parser(raw: bytes) -> None:
    with contextlib.suppress(
        BadRequest, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError
    ):
        _parse(raw + b"\r\n\r\n")


def test_raw_chunked_keeps_the_framing() -> None:
    async def go():
        r = asyncio.StreamReader()
        data = b"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
        r.feed_data(data)
        r.feed_eof()
        return await read_chunked(r, raw=True), data

    out, data = asyncio.run(go())
    assert out == data


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        token,
        st.one_of(
            st.integers(-1000, 1000),
            st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: not x.is_integer()),
            token.map(lambda t: "/" + t),  # a path: never a number
        ),
        max_size=6,
    )
)
def test_attribute_parsing_round_trips(attrs) -> None:
    parsed = parse_attributes(
        [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in attrs.items()]
    )
    assert parsed == attrs
    assert all(type(parsed[k]) is type(v) for k, v in attrs.items())


def test_bad_attributes() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_attributes(["latency"])


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted(TCP_TOXICS)), st.floats(-1e6, -1e-9))
def test_negative_numbers_are_refused_by_every_toxic(kind: str, value: float) -> None:
    attrs = {
        k: value
        for k in (
            "latency",
            "jitter",
            "rate",
            "delay",
            "timeout",
            "bytes",
            "average_size",
            "size_variation",
        )
    }
    if kind == "down":
        TCP_TOXICS[kind](attrs, np.random.default_rng(0))  # takes no attributes
        return
    with pytest.raises(ToxicError, match="attributes"):
        TCP_TOXICS[kind](attrs, np.random.default_rng(0))


def test_http_match() -> None:
    m = http_match({"method": "post", "path": "/api", "header": "X-A: 1", "path_regex": r"/\d+$"})
    assert m.matches("POST", "/api/v1/42", {"x-a": "1"})
    assert not m.matches("GET", "/api/v1/42", {"x-a": "1"})
    assert not m.matches("POST", "/web/42", {"x-a": "1"})
    assert not m.matches("POST", "/api/x", {"x-a": "1"})
    assert not m.matches("POST", "/api/1", {"x-a": "2"})
    with pytest.raises(ToxicError, match="path_regex"):
        http_match({"path_regex": "("})


def test_summary_golden_values() -> None:
    samples = [
        (i * 0.1, float(lat), 200 if ok else 503, ok, "" if ok else "http 503")
        for i, (lat, ok) in enumerate([(10, True), (20, True), (30, False), (40, True)])
    ]
    s = summarize(to_frame(samples))
    assert s["requests"] == 4 and s["errors"] == 1 and s["error_rate"] == 0.25
    assert s["p50_ms"] == 25.0
    assert s["p99_ms"] == pytest.approx(39.7)
    check = slo_check(s, Slo(p99_ms=30, error_rate=0.3))
    assert not check["ok"] and [b["slo"] for b in check["breaches"]] == ["p99_ms"]
    w = windows(to_frame(samples), width_s=0.2)
    assert w["requests"].to_list() == [2, 2] and w["errors"].to_list() == [0, 1]
    assert summarize(pl.DataFrame(schema=to_frame([]).schema))["requests"] == 0
