"""Workload characterization and generative workload models (see docs/workload.md).

``characterize(table)`` gives the analyses that apply to any canonical table;
``fit(table)`` (requests, invocations, vms, flows, spans, usage) returns a :class:`WorkloadModel` (a small versioned YAML/JSON file with
``save_model``/``load_model``); ``synth``/``sample``/``iter_chunks`` draw synthetic
traces of any duration and scale, deterministic for a seed and streamed in chunks;
``compare(real, synth)`` gives per-statistic fidelity verdicts with thresholds.
"""

from fleetlab.workload._characterize import Characterization, characterize
from fleetlab.workload._compare import Comparison, Thresholds, compare, load_thresholds
from fleetlab.workload._fit import fit
from fleetlab.workload._model import (
    SCHEMA_VERSION,
    Arrival,
    Band,
    Cluster,
    Copula,
    Entity,
    Marginal,
    Mmpp,
    RateCurve,
    Renewal,
    Source,
    SpanNode,
    TraceShapes,
    TraceTemplate,
    UsageClass,
    UsageModel,
    WorkloadModel,
    load_model,
    save_model,
)
from fleetlab.workload._options import FitOptions
from fleetlab.workload._reports import characterization_report, comparison_report, model_section
from fleetlab.workload._synth import iter_chunks, parse_duration, sample, synth
from fleetlab.workload._tour import tour_stop
from fleetlab.workload._usage import usage_vms

__all__ = [
    "SCHEMA_VERSION",
    "Arrival",
    "Band",
    "Characterization",
    "Cluster",
    "Comparison",
    "Copula",
    "Entity",
    "FitOptions",
    "Marginal",
    "Mmpp",
    "RateCurve",
    "Renewal",
    "Source",
    "SpanNode",
    "Thresholds",
    "TraceShapes",
    "TraceTemplate",
    "UsageClass",
    "UsageModel",
    "WorkloadModel",
    "characterization_report",
    "characterize",
    "compare",
    "comparison_report",
    "fit",
    "iter_chunks",
    "load_model",
    "load_thresholds",
    "model_section",
    "parse_duration",
    "sample",
    "save_model",
    "synth",
    "tour_stop",
    "usage_vms",
]
