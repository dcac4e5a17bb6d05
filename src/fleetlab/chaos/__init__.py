"""Fault injection: a Toxiproxy-compatible proxy, safe experiments, graph-guided fault search.

- Proxy: :func:`running_proxy` / :func:`serve_proxy` run TCP proxies with toxics (latency,
  bandwidth, slow_close, timeout, reset_peer, slicer, limit_data, down) and HTTP faults
  (http_abort, http_delay, http_corrupt, http_reset), controlled through a REST API
  compatible with Toxiproxy's; :class:`ProxyClient` and :func:`toxic` drive it from Python.
- Experiments: :func:`load_experiment` validates a YAML (or Chaos Toolkit) experiment
  before anything is injected; :func:`run_experiment` runs it under open-loop load with
  guaranteed rollback (leases expire in the proxy if the runner dies).
- Search: :func:`explore` walks single and pairwise dependency faults of a
  ``fleetlab.depgraph.DependencyGraph`` in blast-radius order, with LDFI-style pruning,
  each run as an experiment; the resilience matrix is built from their journals.
- Demo: :func:`demo_system` starts a small system with documented flaws.

See docs/chaos.md. Fault models for simulators live in :mod:`fleetlab.sim`.
"""

from fleetlab.chaos._client import ProxyClient, toxic
from fleetlab.chaos._ctk import import_chaostoolkit
from fleetlab.chaos._demo import DemoSystem, demo_graph, demo_system
from fleetlab.chaos._experiment import ExperimentResult, run_experiment
from fleetlab.chaos._explore import ExploreResult, ExploreSpec, explore
from fleetlab.chaos._output import parse_attributes, write_json, write_table
from fleetlab.chaos._report import availability_report, experiment_report, explore_report
from fleetlab.chaos._runtime import ProxyHandle, running_proxy
from fleetlab.chaos._runtime import serve_forever as serve_proxy
from fleetlab.chaos._spec import Experiment, load_experiment, validate_experiment
from fleetlab.chaos._tour import tour_stop
from fleetlab.chaos._toxics import TOXIC_TYPES

__all__ = [
    "TOXIC_TYPES",
    "DemoSystem",
    "Experiment",
    "ExperimentResult",
    "ExploreResult",
    "ExploreSpec",
    "ProxyClient",
    "ProxyHandle",
    "availability_report",
    "demo_graph",
    "demo_system",
    "experiment_report",
    "explore",
    "explore_report",
    "import_chaostoolkit",
    "load_experiment",
    "parse_attributes",
    "run_experiment",
    "running_proxy",
    "serve_proxy",
    "tour_stop",
    "toxic",
    "validate_experiment",
    "write_json",
    "write_table",
]
