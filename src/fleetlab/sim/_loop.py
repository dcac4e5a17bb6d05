"""A tiny heap-based discrete-event loop shared by the placement and inference simulators."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class EventLoop:
    """Runs callbacks in simulated-time order.

    Events at equal times run in the order they were scheduled (a sequence number
    breaks ties), so a run is deterministic. ``now`` is the time of the event being
    run. Callbacks schedule further events through the same loop.
    """

    __slots__ = ("_heap", "_seq", "events_run", "now")

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.events_run = 0
        self._heap: list[tuple[float, int, Callable[..., Any], tuple[Any, ...]]] = []
        self._seq = itertools.count()

    def schedule(self, time: float, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` at simulated ``time`` (never earlier than ``now``)."""
        if time < self.now:
            raise ValueError(f"cannot schedule at {time} before now={self.now}")
        heapq.heappush(self._heap, (time, next(self._seq), callback, args))

    def after(self, delay: float, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` ``delay`` time units from now."""
        self.schedule(self.now + delay, callback, *args)

    def __len__(self) -> int:
        return len(self._heap)

    def peek(self) -> float | None:
        """Time of the next event, or None when nothing is scheduled."""
        return self._heap[0][0] if self._heap else None

    def run(self, until: float | None = None, *, max_events: int | None = None) -> int:
        """Run events in time order until the heap is empty, ``until`` or ``max_events``.

        Returns the number of events run by this call. Events at exactly ``until`` run.
        """
        heap, pop = self._heap, heapq.heappop
        count = 0
        while heap:
            if until is not None and heap[0][0] > until:
                self.now = until
                break
            if max_events is not None and count >= max_events:
                break
            time, _, callback, args = pop(heap)
            self.now = time
            callback(*args)
            count += 1
        self.events_run += count
        return count
