"""Performance model: the time of one engine iteration from the operators it runs.

Every operator gets a roofline bound ``max(FLOPs / (peak * eff_c), bytes / (BW * eff_m))``
plus a fixed kernel cost, with the efficiencies of :class:`~fleetlab.inference.Efficiency`.
The model is *compiled* once per replica configuration into lookup tables: the linear
operators (QKV/O projections, MLP or experts, norms, all-reduce, PP send/recv) depend only
on the number of tokens in the batch, the LM head and sampling only on the number of
sequences, and attention is linear in its work (query-key pairs for prefill, cached tokens
for decode). An iteration then costs four array look-ups and two multiplications, which is
what lets the engine advance runs of decode iterations in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from fleetlab.inference._ep import alltoall_time, check_ep, expert_load
from fleetlab.inference._specs import Efficiency, GpuSpec, ModelSpec

__all__ = [
    "IterationModel",
    "allreduce_time",
    "attention_coefficients",
    "compile_model",
    "gemm_time",
    "head_time",
    "linear_time",
]

_ACT_BYTES = 2.0


def gemm_time(
    tokens: np.ndarray,
    k: int | float,
    n: int | float,
    *,
    gpu: GpuSpec,
    eff: Efficiency,
    weight_bytes: float = 2.0,
    dtype: Literal["bf16", "fp8"] = "bf16",
) -> np.ndarray:
    """Seconds for a ``tokens x k @ k x n`` GEMM with the weight streamed from HBM.

    Parameters
    ----------
    tokens : ndarray
        Rows (tokens) per call; vectorised.
    k, n : int
        Weight shape.
    gpu, eff : GpuSpec, Efficiency
        Peaks and efficiencies.
    weight_bytes : float
        Bytes per weight element.
    dtype : {"bf16", "fp8"}
        Tensor-core precision.

    Returns
    -------
    ndarray of seconds, same shape as ``tokens``; 0 where tokens is 0.
    """
    t = np.asarray(tokens, dtype=np.float64)
    flops = 2.0 * t * k * n
    ceff = eff.compute_max * t / (t + eff.compute_half_tokens + 1e-12)
    ceff = np.maximum(ceff, 1e-6)
    compute = flops / (gpu.peak_flops(dtype) * ceff)
    memory = (k * n * weight_bytes + t * (k + n) * _ACT_BYTES) / (gpu.hbm_bytes_per_s * eff.memory)
    return np.where(t > 0, np.maximum(compute, memory) + eff.kernel_overhead_s, 0.0)


def _elementwise_time(nbytes: np.ndarray, gpu: GpuSpec, eff: Efficiency) -> np.ndarray:
    return np.where(
        nbytes > 0, nbytes / (gpu.hbm_bytes_per_s * eff.memory) + eff.kernel_overhead_s, 0.0
    )


def allreduce_time(
    nbytes: np.ndarray, workers: int, *, link_bytes_per_s: float, eff: Efficiency
) -> np.ndarray:
    """Seconds for a ring all-reduce of ``nbytes`` over ``workers`` GPUs (0 when workers=1).

    Parameters
    ----------
    nbytes : ndarray
        Message size per GPU, bytes.
    workers : int
        Tensor-parallel degree.
    link_bytes_per_s : float
        Per-GPU unidirectional link bandwidth.
    eff : Efficiency
        ``allreduce_latency_s``, ``allreduce_step_latency_s`` (per doubling of
        ``workers``) and ``allreduce_efficiency`` are used.

    Returns
    -------
    ndarray of seconds.
    """
    b = np.asarray(nbytes, dtype=np.float64)
    if workers <= 1:
        return np.zeros_like(b)
    wire = 2.0 * (workers - 1) / workers * b / (link_bytes_per_s * eff.allreduce_efficiency)
    latency = eff.allreduce_latency_s
    if eff.allreduce_step_latency_s:
        latency = latency + eff.allreduce_step_latency_s * float(np.log2(workers))
    return np.where(b > 0, latency + wire, 0.0)


@dataclass(frozen=True)
class IterationModel:
    """A compiled per-replica performance model (all times in seconds).

    ``time(tokens, prefill_pairs, decode_context, seqs)`` is the duration of one iteration
    that runs ``tokens`` tokens in total (prefill chunk tokens + one per decoding
    sequence), ``prefill_pairs`` causal query-key pairs of prefill attention,
    ``decode_context`` cached tokens read by decode attention and ``seqs`` sequences
    that sample a token.
    """

    linear: np.ndarray
    head: np.ndarray
    attn_prefill_per_pair: float
    attn_decode_per_token: float
    attn_fixed: float
    max_tokens: int
    max_seqs: int
    #: FLOPs per token of the linear layers (for utilisation / power), and per attention pair
    linear_flops_per_token: float
    attn_flops_per_pair: float
    attn_flops_per_ctx: float
    peak_flops_total: float
    #: HBM bytes one GPU reads per iteration for the weights, and per cached token in decode
    weight_bytes_per_gpu: float = 0.0
    kv_bytes_per_token_per_gpu: float = 0.0
    hbm_bytes_per_s: float = 1.0

    def time(self, tokens: int, prefill_pairs: float, decode_context: float, seqs: int) -> float:
        """Seconds one iteration takes (see the class docstring for the arguments)."""
        return (
            self.linear[tokens]
            + self.head[seqs]
            + self.attn_prefill_per_pair * prefill_pairs
            + self.attn_decode_per_token * decode_context
            + (self.attn_fixed if tokens else 0.0)
        )

    def flops(self, tokens: int, prefill_pairs: float, decode_context: float) -> float:
        """Useful FLOPs one iteration performs across the replica's GPUs."""
        return (
            self.linear_flops_per_token * tokens
            + self.attn_flops_per_pair * prefill_pairs
            + self.attn_flops_per_ctx * decode_context
        )


def compile_model(
    model: ModelSpec,
    gpu: GpuSpec,
    *,
    tp: int = 1,
    pp: int = 1,
    max_tokens: int = 8192,
    max_seqs: int = 256,
    dtype: Literal["bf16", "fp8"] = "bf16",
    kv_dtype: Literal["bf16", "fp8"] = "bf16",
    efficiency: Efficiency | None = None,
    cuda_graph_tokens: int = 0,
    ep: int = 1,
) -> IterationModel:
    """Compile the operator-level model of one replica into an :class:`IterationModel`.

    Parameters
    ----------
    model, gpu : ModelSpec, GpuSpec
        Architecture and accelerator.
    tp, pp : int
        Tensor- and pipeline-parallel degrees (GPUs per replica = tp * pp).
    max_tokens, max_seqs : int
        Largest batch (tokens, sequences) the tables must cover.
    dtype, kv_dtype : {"bf16", "fp8"}
        Weight/GEMM precision and KV-cache precision.
    efficiency : Efficiency, optional
        Overrides ``gpu.efficiency`` (e.g. a calibrated one).
    cuda_graph_tokens : int
        Batches of at most this many tokens replay a CUDA graph: their kernels cost
        ``graph_kernel_overhead_s`` instead of ``kernel_overhead_s`` (0 disables).
    ep : int
        Expert-parallel degree for MoE models (a divisor of ``tp`` and of the experts;
        1 = experts tensor-parallel, as before). See :mod:`fleetlab.inference._ep`.

    Returns
    -------
    IterationModel

    Raises
    ------
    ConfigError
        An invalid ``ep`` (dense model, or not dividing ``tp`` or the experts).
    """
    eff = efficiency or gpu.efficiency
    check_ep(model.num_experts, tp, ep, model=model.name)
    dh, layers = model.dhead, model.num_layers
    t = np.arange(max_tokens + 1, dtype=np.float64)
    linear = linear_time(model, gpu, t, tp=tp, pp=pp, dtype=dtype, efficiency=eff, ep=ep)
    if cuda_graph_tokens > 0:
        geff = eff.model_copy(update={"kernel_overhead_s": eff.graph_kernel_overhead_s})
        graphed = linear_time(model, gpu, t, tp=tp, pp=pp, dtype=dtype, efficiency=geff, ep=ep)
        linear = np.where(t <= cuda_graph_tokens, graphed, linear)
    s = np.arange(max_seqs + 1, dtype=np.float64)
    head = head_time(model, gpu, s, tp=tp, dtype=dtype, efficiency=eff)
    peak = gpu.peak_flops(dtype)
    per_pair, per_ctx = attention_coefficients(
        model, gpu, tp=tp, dtype=dtype, kv_dtype=kv_dtype, efficiency=eff
    )
    lin_flops = 2.0 * (model.active_params - model.vocab_size * model.hidden_size)
    return IterationModel(
        linear=linear,
        head=head,
        attn_prefill_per_pair=per_pair,
        attn_decode_per_token=per_ctx,
        attn_fixed=layers * 2 * eff.kernel_overhead_s,
        max_tokens=max_tokens,
        max_seqs=max_seqs,
        linear_flops_per_token=lin_flops,
        attn_flops_per_pair=layers * 4.0 * model.num_heads * dh,
        attn_flops_per_ctx=layers * 4.0 * model.num_heads * dh,
        peak_flops_total=peak * tp * pp,
        weight_bytes_per_gpu=model.active_params * (1.0 if dtype == "fp8" else 2.0) / (tp * pp),
        kv_bytes_per_token_per_gpu=2.0
        * max(1.0, model.num_kv_heads / tp)
        * dh
        * (1.0 if kv_dtype == "fp8" else 2.0)
        * layers
        / pp,
        hbm_bytes_per_s=gpu.hbm_bytes_per_s,
    )


def _tp_link(gpu: GpuSpec, tp: int) -> float:
    return gpu.intra_node_bytes_per_s if tp <= gpu.gpus_per_node else gpu.inter_node_bytes_per_s


def linear_time(
    model: ModelSpec,
    gpu: GpuSpec,
    tokens: np.ndarray,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: Literal["bf16", "fp8"] = "bf16",
    efficiency: Efficiency | None = None,
    ep: int = 1,
) -> np.ndarray:
    """Seconds of every token-count-dependent operator of a forward pass, per batch size.

    QKV/O projections, MLP or experts (with the expected number of distinct experts
    touched), norms, rope, activation, residual adds, TP all-reduces (2 per layer), PP
    send/recv and the embedding gather, for ``tokens`` tokens in the batch (vectorised).
    With expert parallelism (``ep > 1``, MoE only) each rank runs ``1/ep`` of the touched
    experts, each split over ``tp / ep`` ranks, and the MoE all-reduce is replaced by the
    dispatch/combine all-to-all and an all-gather (plus an all-reduce over ``tp / ep``).

    Returns
    -------
    ndarray of seconds (0 where tokens is 0).

    Raises
    ------
    ConfigError
        An invalid ``ep``.
    """
    eff = efficiency or gpu.efficiency
    check_ep(model.num_experts, tp, ep, model=model.name)
    wb = 1.0 if dtype == "fp8" else 2.0
    h, dh, layers = model.hidden_size, model.dhead, model.num_layers
    q = model.num_heads * dh / tp
    kv = max(1.0, model.num_kv_heads / tp) * dh
    inter = model.intermediate_size / tp
    t = np.asarray(tokens, dtype=np.float64)

    def gemm(k: float, n: float, rows: np.ndarray = t) -> np.ndarray:
        return gemm_time(rows, k, n, gpu=gpu, eff=eff, weight_bytes=wb, dtype=dtype)

    layer = gemm(h, q + 2 * kv) + gemm(q, h)
    act_bytes = t * h * _ACT_BYTES
    link = _tp_link(gpu, tp)
    if model.num_experts > 1:
        e, k = model.num_experts, model.experts_per_token
        inter_e = model.intermediate_size * ep / tp  # each expert split over tp / ep ranks
        up_e = inter_e * (2 if model.gated_mlp else 1)
        load = expert_load(t, num_experts=e, experts_per_token=k, ep=ep)
        rows = load.rows_per_expert
        layer = layer + load.touched_experts * (gemm(h, up_e, rows) + gemm(inter_e, h, rows))
        layer = layer + gemm(h, e)  # router
    else:
        layer = layer + gemm(h, inter * (2 if model.gated_mlp else 1)) + gemm(inter, h)
    layer = layer + 4 * _elementwise_time(2 * act_bytes, gpu, eff)  # 2 norms, 2 residual adds
    layer = layer + _elementwise_time(t * (q + kv) * _ACT_BYTES * 2, gpu, eff)  # rope
    # activation, as without EP: a rank's routed rows (÷ ep) times its expert width (× ep)
    layer = layer + _elementwise_time(t * inter * _ACT_BYTES * 3, gpu, eff)
    if ep == 1:  # attention and MLP all-reduces
        layer = layer + 2 * allreduce_time(act_bytes, tp, link_bytes_per_s=link, eff=eff)
    else:
        layer = layer + allreduce_time(act_bytes, tp, link_bytes_per_s=link, eff=eff)
        layer = layer + alltoall_time(
            t,
            hidden_size=h,
            experts_per_token=model.experts_per_token,
            ep=ep,
            link_bytes_per_s=gpu.intra_node_bytes_per_s,
            latency_s=eff.allreduce_latency_s,
            efficiency=eff.allreduce_efficiency,
        )
        layer = layer + allreduce_time(act_bytes, tp // ep, link_bytes_per_s=link, eff=eff)
    linear = layers * layer
    if pp > 1:
        link = (
            gpu.intra_node_bytes_per_s
            if tp * pp <= gpu.gpus_per_node
            else (gpu.inter_node_bytes_per_s)
        )
        send = np.where(t > 0, eff.allreduce_latency_s + act_bytes / link, 0.0)
        linear = linear + (pp - 1) * send
    linear = linear + _elementwise_time(act_bytes, gpu, eff)  # embedding gather
    return np.where(t > 0, linear, 0.0)


def head_time(
    model: ModelSpec,
    gpu: GpuSpec,
    seqs: np.ndarray,
    *,
    tp: int = 1,
    dtype: Literal["bf16", "fp8"] = "bf16",
    efficiency: Efficiency | None = None,
) -> np.ndarray:
    """Seconds of the LM head, logits gather, sampling and CPU overhead for ``seqs`` sequences.

    Returns
    -------
    ndarray of seconds (the iteration overhead alone where seqs is 0).
    """
    eff = efficiency or gpu.efficiency
    wb = 1.0 if dtype == "fp8" else 2.0
    h = model.hidden_size
    s = np.asarray(seqs, dtype=np.float64)
    head = gemm_time(
        s, h, model.vocab_size / tp, gpu=gpu, eff=eff, weight_bytes=wb, dtype=dtype
    ) + _elementwise_time(s * h * _ACT_BYTES, gpu, eff)
    if tp > 1:
        head = head + np.where(
            s > 0,
            eff.allreduce_latency_s
            + s * model.vocab_size * 4.0 / (_tp_link(gpu, tp) * eff.allreduce_efficiency),
            0.0,
        )
    head = head + eff.iteration_overhead_s + eff.per_seq_overhead_s * s
    return np.where(s > 0, head, eff.iteration_overhead_s)


def attention_coefficients(
    model: ModelSpec,
    gpu: GpuSpec,
    *,
    tp: int = 1,
    dtype: Literal["bf16", "fp8"] = "bf16",
    kv_dtype: Literal["bf16", "fp8"] = "bf16",
    efficiency: Efficiency | None = None,
) -> tuple[float, float]:
    """Seconds per prefill query-key pair and per cached token read in decode (all layers).

    Returns
    -------
    (float, float)
    """
    eff = efficiency or gpu.efficiency
    kvb = 1.0 if kv_dtype == "fp8" else 2.0
    dh, layers = model.dhead, model.num_layers
    kv = max(1.0, model.num_kv_heads / tp) * dh
    peak = gpu.peak_flops(dtype)
    pair_flops = 4.0 * model.num_heads / tp * dh
    per_pair = layers * pair_flops / (peak * eff.attn_prefill)
    per_ctx = layers * max(
        2.0 * kv * kvb / (gpu.hbm_bytes_per_s * eff.attn_decode),
        pair_flops / (peak * eff.compute_max),
    )
    return per_pair, per_ctx
