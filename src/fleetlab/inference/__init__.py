"""fleetlab.inference: a fast, calibrated LLM serving-cluster simulator (docs/inference.md).

Specs (models, GPUs) with a memory model and an operator-level roofline performance model
calibrated from vidur-format profiles; continuous-batching replicas (vLLM, Sarathi-Serve,
Orca) with paged KV and preemption; clusters with routers, prefill/decode disaggregation,
power, energy and cost.
"""

from fleetlab.inference._arrivals import poisson_requests, retime
from fleetlab.inference._calibrate import (
    calibrate,
    read_vidur_attention,
    read_vidur_compute,
    read_vidur_network,
)
from fleetlab.inference._config import ClusterSpec, Frontend, ReplicaSpec, Slo
from fleetlab.inference._engine import Router, make_router
from fleetlab.inference._memory import MemoryPlan, memory_plan
from fleetlab.inference._perf import IterationModel, compile_model
from fleetlab.inference._profile import (
    AttentionShape,
    NumpyTimer,
    OperatorTimer,
    TorchTimer,
    profile_attention,
    profile_operators,
)
from fleetlab.inference._report import simulation_report
from fleetlab.inference._simulate import SimResult, simulate
from fleetlab.inference._specs import (
    Efficiency,
    GpuSpec,
    ModelSpec,
    builtin_gpus,
    builtin_models,
    gpu_spec,
    load_spec,
    model_spec,
)
from fleetlab.inference._tour import tour_stop
from fleetlab.inference._validate import validate_splitwise

__all__ = [
    "AttentionShape",
    "ClusterSpec",
    "Efficiency",
    "Frontend",
    "GpuSpec",
    "IterationModel",
    "MemoryPlan",
    "ModelSpec",
    "NumpyTimer",
    "OperatorTimer",
    "ReplicaSpec",
    "Router",
    "SimResult",
    "Slo",
    "TorchTimer",
    "builtin_gpus",
    "builtin_models",
    "calibrate",
    "compile_model",
    "gpu_spec",
    "load_spec",
    "make_router",
    "memory_plan",
    "model_spec",
    "poisson_requests",
    "profile_attention",
    "profile_operators",
    "read_vidur_attention",
    "read_vidur_compute",
    "read_vidur_network",
    "retime",
    "simulate",
    "simulation_report",
    "tour_stop",
    "validate_splitwise",
]
