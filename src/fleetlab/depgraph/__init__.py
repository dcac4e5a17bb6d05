"""Mining dependency graphs from spans and flows, and what the graph tells (see docs/depgraph.md).

``mine_spans`` builds the service and operation graphs from a canonical spans table with
Polars group-bys; ``mine_flows`` infers dependencies Orion-style from timing alone;
``blast_radius`` and friends analyse the resulting :class:`DependencyGraph`, the object
the chaos planner consumes. ``generate_spans`` / ``generate_flows`` synthesize traffic
through topologies with known ground truth.
"""

from fleetlab.depgraph._blast import (
    blast_radii,
    blast_radius,
    cycles,
    diff_graphs,
    reach_probabilities,
    single_points_of_failure,
)
from fleetlab.depgraph._clean import clean_spans
from fleetlab.depgraph._evaluate import evaluate_flow_mining, true_triples
from fleetlab.depgraph._files import graph_of, load_table, mine_file
from fleetlab.depgraph._flows import FlowMiningSpec, flow_dependencies, mine_flows
from fleetlab.depgraph._graph import DependencyGraph, read_graph, to_dot, write_graph
from fleetlab.depgraph._rca import split_at
from fleetlab.depgraph._spans import call_links, mine_spans
from fleetlab.depgraph._synth import (
    TOPOLOGIES,
    Call,
    Service,
    Topology,
    Traffic,
    add_background_flows,
    generate_flows,
    generate_spans,
    spans_to_flows,
    topology,
)
from fleetlab.depgraph._tour import tour_stop
from fleetlab.depgraph._traces import analyze_traces, critical_services, shape_stats, trace_patterns
from fleetlab.depgraph._view import graph_figure, graph_report, graph_view_html, summary

__all__ = [
    "TOPOLOGIES",
    "Call",
    "DependencyGraph",
    "FlowMiningSpec",
    "Service",
    "Topology",
    "Traffic",
    "add_background_flows",
    "analyze_traces",
    "blast_radii",
    "blast_radius",
    "call_links",
    "clean_spans",
    "critical_services",
    "cycles",
    "diff_graphs",
    "evaluate_flow_mining",
    "flow_dependencies",
    "generate_flows",
    "generate_spans",
    "graph_figure",
    "graph_of",
    "graph_report",
    "graph_view_html",
    "load_table",
    "mine_file",
    "mine_flows",
    "mine_spans",
    "reach_probabilities",
    "read_graph",
    "shape_stats",
    "single_points_of_failure",
    "spans_to_flows",
    "split_at",
    "summary",
    "to_dot",
    "topology",
    "tour_stop",
    "trace_patterns",
    "true_triples",
    "write_graph",
]
