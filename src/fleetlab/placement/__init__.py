"""Workload-aware placement: cluster specs, allocation policies, a trace-driven
simulator, lower bounds, capacity sizing, failures and an allocator service.

See docs/placement.md.
"""

from fleetlab.placement._bounds import bounds, fluid_bound, load_curve, lp_bound, peak_times
from fleetlab.placement._cluster import (
    KNOWN_DIMS,
    Cluster,
    ClusterSpec,
    ServerType,
    build_cluster,
    cluster_from_nodes,
    load_cluster,
    load_cluster_spec,
    read_node_list,
)
from fleetlab.placement._failures import (
    headroom,
    load_failure_spec,
    outages,
    oversub_violations,
)
from fleetlab.placement._fgd import FgdScore, TaskTypes, fragmentation, task_types
from fleetlab.placement._fgd_protocol import arrival_sequence, fragmentation_experiment
from fleetlab.placement._inputs import load_vms
from fleetlab.placement._kernel import StreamPlacement, place_stream
from fleetlab.placement._policies import (
    POLICY_NAMES,
    Filter,
    Policy,
    PolicyName,
    Scorer,
    View,
    best_fit,
    best_fit_l2,
    decide,
    dot_product,
    first_fit,
    gpu_clustering,
    gpu_packing,
    least_allocated,
    lifetime_alignment,
    make_policy,
    most_allocated,
    predicted_best_fit,
    prefer_nonempty,
    random_fit,
    requested_to_capacity_ratio,
    spread,
    tetris,
    worst_fit,
)
from fleetlab.placement._report import fragmentation_report, simulation_report
from fleetlab.placement._requests import Requests, requests_from_vms
from fleetlab.placement._service import Allocator, handle, serve, start_server
from fleetlab.placement._simulate import SimResult, compare, kernel_reason, simulate, too_large
from fleetlab.placement._size import size_cluster
from fleetlab.placement._state import Ask, ClusterState, ask_of
from fleetlab.placement._tour import tour_stop

__all__ = [
    "KNOWN_DIMS",
    "POLICY_NAMES",
    "Allocator",
    "Ask",
    "Cluster",
    "ClusterSpec",
    "ClusterState",
    "FgdScore",
    "Filter",
    "Policy",
    "PolicyName",
    "Requests",
    "Scorer",
    "ServerType",
    "SimResult",
    "StreamPlacement",
    "TaskTypes",
    "View",
    "arrival_sequence",
    "ask_of",
    "best_fit",
    "best_fit_l2",
    "bounds",
    "build_cluster",
    "cluster_from_nodes",
    "compare",
    "decide",
    "dot_product",
    "first_fit",
    "fluid_bound",
    "fragmentation",
    "fragmentation_experiment",
    "fragmentation_report",
    "gpu_clustering",
    "gpu_packing",
    "handle",
    "headroom",
    "kernel_reason",
    "least_allocated",
    "lifetime_alignment",
    "load_cluster",
    "load_cluster_spec",
    "load_curve",
    "load_failure_spec",
    "load_vms",
    "lp_bound",
    "make_policy",
    "most_allocated",
    "outages",
    "oversub_violations",
    "peak_times",
    "place_stream",
    "predicted_best_fit",
    "prefer_nonempty",
    "random_fit",
    "read_node_list",
    "requested_to_capacity_ratio",
    "requests_from_vms",
    "serve",
    "simulate",
    "simulation_report",
    "size_cluster",
    "spread",
    "start_server",
    "task_types",
    "tetris",
    "too_large",
    "tour_stop",
    "worst_fit",
]
