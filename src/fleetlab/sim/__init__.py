"""The shared simulation kernel: an event loop, named random streams and fault models.

Fault models (crash/recover, correlated rack/zone failures, stragglers, partitions) are
used by both simulators; see docs/faults.md.
"""

from fleetlab.sim._faults import (
    CrashSpec,
    Duration,
    FailureSpec,
    FaultModel,
    PartitionSpec,
    SlowdownSpec,
    availability,
    draw_faults,
    failure_timeline,
    fleet,
    load_fault_model,
    partition_windows,
    slo_attainment,
    slowdown_windows,
)
from fleetlab.sim._loop import EventLoop
from fleetlab.sim._streams import Streams, stream

__all__ = [
    "CrashSpec",
    "Duration",
    "EventLoop",
    "FailureSpec",
    "FaultModel",
    "PartitionSpec",
    "SlowdownSpec",
    "Streams",
    "availability",
    "draw_faults",
    "failure_timeline",
    "fleet",
    "load_fault_model",
    "partition_windows",
    "slo_attainment",
    "slowdown_windows",
    "stream",
]
