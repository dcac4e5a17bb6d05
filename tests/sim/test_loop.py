"""The event loop runs events in time order, ties in scheduling order, and stops where told."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetlab.sim import EventLoop, Streams, stream


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=200))
def test_events_run_in_time_order_with_stable_ties(times: list[float]) -> None:
    loop = EventLoop()
    seen: list[tuple[float, int]] = []
    for i, t in enumerate(times):
        loop.schedule(t, lambda t=t, i=i: seen.append((loop.now, i)))
    assert loop.run() == len(times)
    assert seen == sorted(seen)  # by time, then by scheduling order
    assert [s[0] for s in seen] == sorted(times)


def test_run_until_stops_and_resumes() -> None:
    loop = EventLoop()
    fired: list[float] = []

    def tick() -> None:
        fired.append(loop.now)
        if loop.now < 10:
            loop.after(1.0, tick)

    loop.schedule(0.0, tick)
    loop.run(until=4.5)
    assert fired == [0, 1, 2, 3, 4]
    assert loop.now == 4.5
    loop.run()
    assert fired[-1] == 10
    assert loop.events_run == 11


def test_cannot_schedule_in_the_past() -> None:
    loop = EventLoop(start=5.0)
    with pytest.raises(ValueError, match="before now"):
        loop.schedule(4.0, print)


def test_max_events_bounds_a_run() -> None:
    loop = EventLoop()
    for t in range(10):
        loop.schedule(float(t), lambda: None)
    assert loop.run(max_events=3) == 3
    assert len(loop) == 7
    assert loop.peek() == 3.0


def test_streams_are_independent_of_other_streams() -> None:
    a = Streams(42)
    first = a.get("arrivals").random(5)
    b = Streams(42)
    b.get("sizes").random(1000)  # another stream drawn first must not matter
    b.get("new-stream")
    assert (b.get("arrivals").random(5) == first).all()
    assert (stream(42, "arrivals").random(5) == first).all()
    assert not (Streams(43).get("arrivals").random(5) == first).any()
    assert not (a.get("sizes").random(5) == Streams(42).get("arrivals").random(5)).all()
