"""Memory model: weights + activations + paged KV cache -> KV capacity per replica."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleetlab.errors import ConfigError
from fleetlab.inference._config import ReplicaSpec
from fleetlab.inference._specs import GpuSpec, ModelSpec, gpu_spec, model_spec

__all__ = ["MemoryPlan", "memory_plan"]

#: CUDA context, NCCL buffers and CUDA graphs per GPU (bytes); vLLM reserves about this much
_RUNTIME_BYTES = 1.5e9


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU memory budget of one replica (bytes) and the KV capacity it leaves.

    Attributes
    ----------
    weights_bytes, activation_bytes, runtime_bytes, kv_bytes : float
        Per-GPU shares; ``kv_bytes`` is what is left for the KV cache.
    usable_bytes : float
        ``gpu_memory_utilization`` x capacity.
    kv_bytes_per_token : float
        KV bytes one token takes on one GPU.
    kv_blocks : int
        Pages of ``block_size`` tokens the replica can hold.
    kv_tokens : int
        ``kv_blocks * block_size``.
    """

    weights_bytes: float
    activation_bytes: float
    runtime_bytes: float
    usable_bytes: float
    kv_bytes: float
    kv_bytes_per_token: float
    kv_blocks: int
    block_size: int

    @property
    def kv_tokens(self) -> int:
        """Tokens the KV cache holds."""
        return self.kv_blocks * self.block_size

    @property
    def needed_bytes(self) -> float:
        """Per-GPU bytes needed before any KV (weights + activations + runtime)."""
        return self.weights_bytes + self.activation_bytes + self.runtime_bytes


def memory_plan(spec: ReplicaSpec, *, check: bool = True) -> MemoryPlan:
    """Budget one replica's GPU memory and derive its KV-cache capacity.

    Weights are split evenly over ``tp * pp`` GPUs; KV heads over ``tp`` (replicated when
    ``tp`` exceeds the KV-head count) and layers over ``pp``. Activations are the peak of a
    ``max_batched_tokens`` forward pass (hidden states, QKV, MLP intermediate) plus fp32
    logits for ``max_num_seqs`` sequences.

    Parameters
    ----------
    spec : ReplicaSpec
        The replica.
    check : bool
        Raise when the model does not fit or cannot hold one full-context sequence.

    Returns
    -------
    MemoryPlan

    Raises
    ------
    ConfigError
        The model does not fit at this TP/PP (the message says how much memory is needed
        per GPU and how much there is).
    """
    model: ModelSpec = model_spec(spec.model)
    gpu: GpuSpec = gpu_spec(spec.gpu)
    gpus = spec.tp * spec.pp
    wb = 1.0 if spec.dtype == "fp8" else 2.0
    kvb = 1.0 if spec.kv_dtype == "fp8" else 2.0
    weights = model.num_params * wb / gpus
    tokens = spec.max_batched_tokens if spec.scheduler != "sarathi" else spec.chunk_size
    h = model.hidden_size
    per_token = (
        4 * h
        + (model.num_heads + 2 * model.num_kv_heads) * model.dhead / spec.tp
        + 3 * model.intermediate_size / spec.tp
    ) * 2.0
    activations = tokens * per_token + spec.max_num_seqs * model.vocab_size / spec.tp * 4.0
    usable = gpu.memory_bytes * spec.gpu_memory_utilization
    kv_bytes = usable - weights - activations - _RUNTIME_BYTES
    kv_heads = max(1.0, model.num_kv_heads / spec.tp)
    kv_per_token = 2.0 * (model.num_layers / spec.pp) * kv_heads * model.dhead * kvb
    blocks = max(0, math.floor(kv_bytes / (kv_per_token * spec.block_size)))
    plan = MemoryPlan(
        weights,
        activations,
        _RUNTIME_BYTES,
        usable,
        kv_bytes,
        kv_per_token,
        blocks,
        spec.block_size,
    )
    if check:
        if kv_bytes <= 0:
            need = plan.needed_bytes / spec.gpu_memory_utilization
            raise ConfigError(
                f"{model.name} does not fit on {gpu.name} at tp={spec.tp} pp={spec.pp}: "
                f"needs {need / 1e9:.1f} GB per GPU before any KV cache "
                f"(weights {weights / 1e9:.1f} GB), has {gpu.memory_bytes / 1e9:.0f} GB "
                f"(expected a larger tp/pp, fp8 weights or a bigger GPU)"
            )
        if plan.kv_tokens < spec.block_size:
            raise ConfigError(
                f"{model.name} on {gpu.name} at tp={spec.tp} pp={spec.pp} leaves no room for "
                f"the KV cache ({kv_bytes / 1e9:.2f} GB; expected at least one "
                f"{spec.block_size}-token block)"
            )
    return plan
