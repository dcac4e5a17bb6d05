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

from fleetlab.errors import ConfigError
from fleetlab.inference._clock import limited_time
from fleetlab.inference._ep import alltoall_time, check_ep, expert_load
from fleetlab.inference._specs import Efficiency, GpuSpec, ModelSpec

__all__ = [
    "IterationModel",
    "allreduce_time",
    "attention_coefficients",
    "compile_model",
    "experts_time",
    "gemm_time",
    "head_time",
    "linear_ops",
    "linear_time",
    "prefill_breakdown",
]

_ACT_BYTES = 2.0


def gemm_time(
    tokens: np.ndarray,
    k: float | np.ndarray,
    n: float | np.ndarray,
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
    k, n : float or ndarray
        Weight shape (arrays broadcast with ``tokens``).
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


def experts_time(
    tokens: np.ndarray,
    *,
    hidden: int | np.ndarray,
    inter: int | np.ndarray,
    num_experts: int | np.ndarray,
    experts_per_token: int | np.ndarray,
    tp: int | np.ndarray,
    ep: int | np.ndarray,
    gated: bool,
    gpu: GpuSpec,
    eff: Efficiency,
    weight_bytes: float = 2.0,
    dtype: Literal["bf16", "fp8"] = "bf16",
) -> np.ndarray:
    """Seconds of one MoE layer's experts on one rank for batches of ``tokens`` tokens.

    One grouped GEMM per projection (vLLM's fused MoE, TensorRT-LLM's and SGLang's grouped
    kernels): the expected touched experts of :func:`~fleetlab.inference._ep.expert_load`
    (``1/ep`` of them per rank, each split over ``tp/ep`` ranks), every one's weights
    and rows, one kernel's fixed cost per projection; the MoE GEMM curve
    (``Efficiency.moe_*``) where set. The shape arguments may be arrays that broadcast
    with ``tokens`` (one expert layout per element).
    """
    moe = {
        "compute_max": eff.moe_compute_max,
        "compute_half_tokens": eff.moe_compute_half_tokens,
        "memory": eff.moe_memory,
    }
    e = eff.model_copy(update={k: v for k, v in moe.items() if v is not None})
    t = np.asarray(tokens, dtype=np.float64)
    inter_e = inter * ep / tp
    up_e = inter_e * (2 if gated else 1)
    load = expert_load(t, num_experts=num_experts, experts_per_token=experts_per_token, ep=ep)
    rows = load.rows_per_expert
    per_expert = (
        gemm_time(rows, hidden, up_e, gpu=gpu, eff=e, weight_bytes=weight_bytes, dtype=dtype)
        + gemm_time(rows, inter_e, hidden, gpu=gpu, eff=e, weight_bytes=weight_bytes, dtype=dtype)
        - 2 * e.kernel_overhead_s
    )
    return np.where(t > 0, load.touched_experts * per_expert + 2 * e.kernel_overhead_s, 0.0)


def _elementwise_time(
    nbytes: np.ndarray,
    gpu: GpuSpec,
    eff: Efficiency,
    kind: Literal["norm", "elementwise", "stream"] = "stream",
) -> np.ndarray:
    """Seconds of one memory-bound kernel moving ``nbytes`` (reads + writes).

    ``norm``: RMSNorm (``norm_efficiency``); ``elementwise``: SiLU-and-multiply and rotary
    (``elementwise_efficiency``); ``stream``: residual add and embedding gather, which
    stream at the GEMMs' ``memory`` rate (vidur's profiles: 0.9-1.0 of HBM for the add).
    """
    frac = {"norm": eff.norm_efficiency, "elementwise": eff.elementwise_efficiency}.get(kind)
    bw = gpu.hbm_bytes_per_s * (frac if frac is not None else eff.memory)
    return np.where(nbytes > 0, nbytes / bw + eff.kernel_overhead_s, 0.0)


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
    clock: float = 1.0,
    power_limit_w: float | None = None,
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
    clock, power_limit_w : float
        SM clock lock (fraction of the maximum) and power cap per GPU (W, default the
        TDP): each batch size and attention term runs at the highest clock both allow
        (:func:`fleetlab.inference._clock.limited_time`). ``gpu`` is the stock GPU.

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
    linear = clocked_linear_time(
        model,
        gpu,
        t,
        tp=tp,
        pp=pp,
        dtype=dtype,
        efficiency=eff,
        ep=ep,
        cuda_graph_tokens=cuda_graph_tokens,
        clock=clock,
        power_limit_w=power_limit_w,
    )
    per_pair, per_ctx = clocked_attention(
        model,
        gpu,
        tp=tp,
        dtype=dtype,
        kv_dtype=kv_dtype,
        efficiency=eff,
        clock=clock,
        power_limit_w=power_limit_w,
    )
    peak = gpu.peak_flops(dtype)
    lin_flops = 2.0 * (model.active_params - model.vocab_size * model.hidden_size)
    kv_bytes = 2.0 * max(1.0, model.num_kv_heads / tp) * dh * (1.0 if kv_dtype == "fp8" else 2.0)
    pair_flops = layers * 4.0 * model.num_heads * dh
    s = np.arange(max_seqs + 1, dtype=np.float64)
    head = head_time(model, gpu, s, tp=tp, dtype=dtype, efficiency=eff)
    return IterationModel(
        linear=linear,
        head=head,
        attn_prefill_per_pair=per_pair,
        attn_decode_per_token=per_ctx,
        attn_fixed=layers * 2 * eff.kernel_overhead_s,
        max_tokens=max_tokens,
        max_seqs=max_seqs,
        linear_flops_per_token=lin_flops,
        attn_flops_per_pair=pair_flops,
        attn_flops_per_ctx=pair_flops,
        # the locked peak, as the power coefficients of GpuSpec.at_clock(clock) expect
        peak_flops_total=peak * tp * pp * clock,
        weight_bytes_per_gpu=model.active_params * (1.0 if dtype == "fp8" else 2.0) / (tp * pp),
        kv_bytes_per_token_per_gpu=kv_bytes * layers / pp,
        hbm_bytes_per_s=gpu.hbm_bytes_per_s,
    )


#: the operators of linear_ops whose time is the tensor cores' (they slow with the SM clock)
_COMPUTE_OPS = ("qkv", "o_proj", "mlp_up", "mlp_down", "experts", "router", "attention_query")


def clocked_linear_time(
    model: ModelSpec,
    gpu: GpuSpec,
    tokens: np.ndarray,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: Literal["bf16", "fp8"] = "bf16",
    efficiency: Efficiency | None = None,
    ep: int = 1,
    cuda_graph_tokens: int = 0,
    clock: float = 1.0,
    power_limit_w: float | None = None,
) -> np.ndarray:
    """:func:`linear_time` under an SM clock lock and a power cap (see :func:`compile_model`).

    The clock is set per kernel: the GEMMs and attention's per-query work run at the clock
    their own power allows, while norms, activations and collectives, which do not slow
    with the SMs, keep their time. Batches of at most ``cuda_graph_tokens`` tokens pay the
    CUDA-graph kernel cost.
    """
    eff = efficiency or gpu.efficiency
    geff = eff.model_copy(update={"kernel_overhead_s": eff.graph_kernel_overhead_s})
    t = np.asarray(tokens, dtype=np.float64)

    def ops_at(g: float) -> tuple[np.ndarray, np.ndarray]:
        """(compute-bound kernels, the rest) with the tensor cores at g x their stock speed."""
        slow = gpu.at_clock(g)
        ops = linear_ops(model, slow, t, tp=tp, pp=pp, dtype=dtype, efficiency=eff, ep=ep)
        if cuda_graph_tokens > 0:
            graphed = linear_ops(model, slow, t, tp=tp, pp=pp, dtype=dtype, efficiency=geff, ep=ep)
            ops = {k: np.where(t <= cuda_graph_tokens, graphed[k], v) for k, v in ops.items()}
        ops["attention_query"] = ops["attention_query"] / g  # a cost in seconds at stock
        compute = sum(v for k, v in ops.items() if k in _COMPUTE_OPS)
        return np.asarray(compute), np.asarray(sum(ops.values()) - compute)

    compute, rest = ops_at(1.0)
    if clock >= 1.0 and (power_limit_w is None or power_limit_w >= gpu.tdp_w):
        return compute + rest
    # one GPU while its stage runs: 1/tp of the FLOPs, and its stage's share of the weights
    flops = 2.0 * (model.active_params - model.vocab_size * model.hidden_size) * t / tp
    weight_bytes = model.active_params * (1.0 if dtype == "fp8" else 2.0) / tp
    limited = limited_time(
        gpu,
        lambda g: compute if g == 1.0 else ops_at(g)[0],
        flops,
        np.full(t.shape, weight_bytes),
        peak_flops=gpu.peak_flops(dtype),
        clock=clock,
        power_limit_w=power_limit_w,
    )
    return limited + rest


def clocked_attention(
    model: ModelSpec,
    gpu: GpuSpec,
    *,
    tp: int = 1,
    dtype: Literal["bf16", "fp8"] = "bf16",
    kv_dtype: Literal["bf16", "fp8"] = "bf16",
    efficiency: Efficiency | None = None,
    clock: float = 1.0,
    power_limit_w: float | None = None,
) -> tuple[float, float]:
    """:func:`attention_coefficients` under an SM clock lock and a power cap.

    Prefill attention is priced as if it ran alone (compute-bound: the clock its power
    allows), decode attention as streaming the KV cache.
    """
    kvb = 1.0 if kv_dtype == "fp8" else 2.0
    kv = max(1.0, model.num_kv_heads / tp) * model.dhead
    pair_flops = model.num_layers * 4.0 * model.num_heads * model.dhead / tp

    def time_at(g: float) -> np.ndarray:
        return np.array(
            attention_coefficients(
                model,
                gpu.at_clock(g),
                tp=tp,
                dtype=dtype,
                kv_dtype=kv_dtype,
                efficiency=efficiency,
            )
        )

    per_pair, per_ctx = limited_time(
        gpu,
        time_at,
        np.array([pair_flops, pair_flops]),
        np.array([0.0, 2.0 * kv * kvb * model.num_layers]),
        peak_flops=gpu.peak_flops(dtype),
        clock=clock,
        power_limit_w=power_limit_w,
    ).tolist()
    return per_pair, per_ctx


def _tp_link(gpu: GpuSpec, tp: int) -> float:
    return gpu.intra_node_bytes_per_s if tp <= gpu.gpus_per_node else gpu.inter_node_bytes_per_s


def linear_ops(
    model: ModelSpec,
    gpu: GpuSpec,
    tokens: np.ndarray,
    *,
    tp: int = 1,
    pp: int = 1,
    dtype: Literal["bf16", "fp8"] = "bf16",
    efficiency: Efficiency | None = None,
    ep: int = 1,
) -> dict[str, np.ndarray]:
    """Seconds of each token-count-dependent operator of a forward pass (all layers).

    The parts that :func:`linear_time` adds up, by operator, so that they can be set
    against measured kernels one by one: ``qkv``, ``o_proj``, ``mlp_up`` (gate and up)
    and ``mlp_down`` GEMMs (``experts`` and ``router`` for MoE models), ``norms_residual``
    (2 RMSNorms and 2 residual adds per layer), ``rope``, ``qk_norm`` (Qwen3's per-head
    q/k RMSNorms; 0 for other models), ``activation`` (SiLU-and-multiply), ``allreduce``
    (2 TP all-reduces per layer; with EP, the all-reduce, all-to-alls and all-gather),
    ``pp_send``, ``embedding`` (the gather plus, under TP, the all-reduce of the
    vocab-parallel embedding) and ``attention_query`` (attention's cost per query token,
    ``Efficiency.attn_query_s``: the part of attention that grows with the tokens, not
    the context). Every entry has the shape of ``tokens`` and is 0 where tokens is 0.

    Parameters
    ----------
    model, gpu : ModelSpec, GpuSpec
        Architecture and accelerator.
    tokens : ndarray
        Tokens in the batch; vectorised.
    tp, pp, ep : int
        Tensor-, pipeline- and expert-parallel degrees.
    dtype : {"bf16", "fp8"}
        Weight/GEMM precision.
    efficiency : Efficiency, optional
        Overrides ``gpu.efficiency``.

    Returns
    -------
    dict of str to ndarray of seconds.

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
    zero = np.zeros_like(t)

    def gemm(k: float, n: float, rows: np.ndarray = t) -> np.ndarray:
        return gemm_time(rows, k, n, gpu=gpu, eff=eff, weight_bytes=wb, dtype=dtype)

    ops: dict[str, np.ndarray] = {"qkv": gemm(h, q + 2 * kv), "o_proj": gemm(q, h)}
    act_bytes = t * h * _ACT_BYTES
    link = _tp_link(gpu, tp)
    if model.num_experts > 1:
        ops["experts"] = experts_time(
            t,
            hidden=h,
            inter=model.intermediate_size,
            num_experts=model.num_experts,
            experts_per_token=model.experts_per_token,
            tp=tp,
            ep=ep,
            gated=model.gated_mlp,
            gpu=gpu,
            eff=eff,
            weight_bytes=wb,
            dtype=dtype,
        )
        ops["router"] = gemm(h, model.num_experts)
    else:
        ops["mlp_up"] = gemm(h, inter * (2 if model.gated_mlp else 1))
        ops["mlp_down"] = gemm(inter, h)
    # 2 RMSNorms and 2 residual adds per layer, each reading and writing the T x h rows
    # once: the bytes of the 2 fused add + RMSNorm kernels serving engines run (read the
    # input and the residual, write both); the norms at their own bandwidth fraction
    ops["norms_residual"] = 2 * _elementwise_time(
        2 * act_bytes, gpu, eff, "norm"
    ) + 2 * _elementwise_time(2 * act_bytes, gpu, eff)
    ops["rope"] = _elementwise_time(t * (q + kv) * _ACT_BYTES * 2, gpu, eff, "elementwise")
    # Qwen3: RMSNorm over every query head and every key head (read + write), two kernels
    ops["qk_norm"] = (
        _elementwise_time(t * q * _ACT_BYTES * 2, gpu, eff, "norm")
        + _elementwise_time(t * kv * _ACT_BYTES * 2, gpu, eff, "norm")
        if model.qk_norm
        else zero
    )
    # activation, as without EP: a rank's routed rows (÷ ep) times its expert width (× ep)
    ops["activation"] = _elementwise_time(t * inter * _ACT_BYTES * 3, gpu, eff, "elementwise")
    if ep == 1:  # attention and MLP all-reduces
        ops["allreduce"] = 2 * allreduce_time(act_bytes, tp, link_bytes_per_s=link, eff=eff)
    else:
        ops["allreduce"] = (
            allreduce_time(act_bytes, tp, link_bytes_per_s=link, eff=eff)
            + alltoall_time(
                t,
                hidden_size=h,
                experts_per_token=model.experts_per_token,
                ep=ep,
                link_bytes_per_s=gpu.intra_node_bytes_per_s,
                latency_s=eff.allreduce_latency_s,
                efficiency=eff.allreduce_efficiency,
            )
            + allreduce_time(act_bytes, tp // ep, link_bytes_per_s=link, eff=eff)
        )
    # attention's per-query work (every token is a query: prefill and decode alike)
    ops["attention_query"] = t * (model.num_heads / tp) * eff.attn_query_s
    out = {name: layers * v for name, v in ops.items()}
    if pp > 1:
        pp_link = (
            gpu.intra_node_bytes_per_s
            if tp * pp <= gpu.gpus_per_node
            else (gpu.inter_node_bytes_per_s)
        )
        send = np.where(t > 0, eff.allreduce_latency_s + act_bytes / pp_link, 0.0)
        out["pp_send"] = (pp - 1) * send
    else:
        out["pp_send"] = zero
    # embedding gather; the vocab-parallel embedding of TP engines (vLLM, SGLang,
    # TensorRT-LLM) sums the ranks' partial rows with one more all-reduce
    out["embedding"] = _elementwise_time(act_bytes, gpu, eff) + allreduce_time(
        act_bytes, tp, link_bytes_per_s=link, eff=eff
    )
    return {name: np.where(t > 0, v, 0.0) for name, v in out.items()}


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
    touched), norms, rope, Qwen3's q/k norms, activation, residual adds, TP all-reduces
    (2 per layer), PP send/recv and the embedding gather and its TP all-reduce, for
    ``tokens`` tokens in the batch (vectorised): the sum of :func:`linear_ops`.
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
    ops = linear_ops(model, gpu, tokens, tp=tp, pp=pp, dtype=dtype, efficiency=efficiency, ep=ep)
    return np.asarray(sum(ops.values()))


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
    ) + _elementwise_time(s * h * _ACT_BYTES, gpu, eff, "norm")
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


def prefill_breakdown(
    model: ModelSpec,
    gpu: GpuSpec,
    tokens: int,
    *,
    tp: int = 1,
    dtype: Literal["bf16", "fp8"] = "bf16",
    kv_dtype: Literal["bf16", "fp8"] = "bf16",
    efficiency: Efficiency | None = None,
) -> dict[str, float]:
    """Seconds per operator of one lone prompt's prefill (one iteration, PP 1, no decodes).

    What the compiled model charges a prompt of ``tokens`` tokens prefilled in one step,
    split as :func:`linear_ops` plus ``attention`` (causal FlashAttention over
    ``tokens · (tokens + 1) / 2`` query-key pairs and the attention kernels' fixed cost),
    ``lm_head`` (logits and sampling of the last token only, as serving engines compute
    them) and ``cpu`` (scheduler overhead per iteration and sequence). The values add up to
    ``compile_model(...).time(tokens, pairs, 0, 1)`` with CUDA graphs off (a prefill of
    more than ``cuda_graph_tokens`` tokens runs eagerly). Used to set the model against
    measured kernels operator by operator (docs/inference-validation.md §1c).

    Parameters
    ----------
    model, gpu : ModelSpec, GpuSpec
        Architecture and accelerator.
    tokens : int
        Prompt length (>= 1).
    tp : int
        Tensor-parallel degree.
    dtype, kv_dtype : {"bf16", "fp8"}
        GEMM and KV-cache precision.
    efficiency : Efficiency, optional
        Overrides ``gpu.efficiency`` (e.g. a :func:`calibrate_kernels` fit).

    Returns
    -------
    dict of str to float (seconds).

    Raises
    ------
    ConfigError
        ``tokens`` < 1.
    """
    if tokens < 1:
        raise ConfigError(f"tokens: expected a prompt of >= 1 tokens, found {tokens}")
    eff = efficiency or gpu.efficiency
    t = np.array([float(tokens)])
    out = {
        name: float(v[0])
        for name, v in linear_ops(model, gpu, t, tp=tp, dtype=dtype, efficiency=eff).items()
    }
    per_pair, _ = attention_coefficients(
        model, gpu, tp=tp, dtype=dtype, kv_dtype=kv_dtype, efficiency=eff
    )
    pairs = tokens * (tokens + 1) / 2.0
    out["attention"] = (
        per_pair * pairs + model.num_layers * 2 * eff.kernel_overhead_s + out.pop("attention_query")
    )
    cpu = eff.iteration_overhead_s + eff.per_seq_overhead_s
    out["lm_head"] = (
        float(head_time(model, gpu, np.array([1.0]), tp=tp, dtype=dtype, efficiency=eff)[0]) - cpu
    )
    out["cpu"] = cpu
    return out
