"""The shared simulation kernel: an event loop and named random streams.

Fault models used by both simulators live here too (see ``fleetlab.sim`` docs).
"""

from fleetlab.sim._loop import EventLoop
from fleetlab.sim._streams import Streams, stream

__all__ = ["EventLoop", "Streams", "stream"]
