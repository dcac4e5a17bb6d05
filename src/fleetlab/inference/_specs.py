"""Model-architecture and GPU specs (frozen pydantic models) and the built-in catalog.

Built-in model numbers come from each model's public ``config.json`` on the Hugging Face
hub; GPU numbers from the vendors' datasheets (dense, no sparsity). Prices are rough
2025 on-demand cloud list prices per GPU-hour and are meant to be overridden.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fleetlab.errors import ConfigError, DataNotFoundError

__all__ = [
    "Efficiency",
    "GpuSpec",
    "ModelSpec",
    "builtin_gpus",
    "builtin_models",
    "gpu_spec",
    "load_spec",
    "model_spec",
]


class ModelSpec(BaseModel):
    """A decoder-only transformer architecture, as in its public ``config.json``.

    Attributes
    ----------
    name : str
        Catalog name (lower case, e.g. ``llama-3-8b``).
    num_layers, hidden_size, num_heads, num_kv_heads, intermediate_size, vocab_size : int
        The architecture; ``num_kv_heads < num_heads`` is grouped-query attention.
    head_dim : int or None
        Per-head width; ``hidden_size // num_heads`` when None.
    max_context : int
        Context window in tokens (prompt + output).
    gated_mlp : bool
        SwiGLU-style MLP with three projections (else two).
    num_experts, experts_per_token : int
        Mixture-of-experts layout (1 and 1 for a dense model).
    tied_embeddings : bool
        Whether the LM head shares the embedding matrix.
    qk_norm : bool
        RMSNorm over each query and key head before rotary (Qwen3's ``q_norm`` /
        ``k_norm``): two more memory-bound kernels per layer and ``2 · head_dim``
        weights.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    num_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    head_dim: int | None = None
    max_context: int = Field(default=4096, gt=0)
    gated_mlp: bool = True
    num_experts: int = Field(default=1, ge=1)
    experts_per_token: int = Field(default=1, ge=1)
    tied_embeddings: bool = False
    qk_norm: bool = False

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads})"
            )
        if self.experts_per_token > self.num_experts:
            raise ValueError("experts_per_token must be <= num_experts")
        return self

    @property
    def dhead(self) -> int:
        """Per-head width in elements."""
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def mlp_matrices(self) -> int:
        """Projections per MLP (3 gated, 2 plain)."""
        return 3 if self.gated_mlp else 2

    @property
    def attn_params_per_layer(self) -> int:
        """Parameters of the Q, K, V and O projections of one layer."""
        q = self.num_heads * self.dhead
        kv = self.num_kv_heads * self.dhead
        return self.hidden_size * (q + 2 * kv) + q * self.hidden_size

    @property
    def expert_params(self) -> int:
        """Parameters of one expert (or the dense MLP) of one layer."""
        return self.mlp_matrices * self.hidden_size * self.intermediate_size

    @property
    def num_params(self) -> int:
        """Total parameter count (embeddings, LM head, all experts, norms)."""
        per_layer = (
            self.attn_params_per_layer
            + self.num_experts * self.expert_params
            + (self.hidden_size * self.num_experts if self.num_experts > 1 else 0)
            + 2 * self.hidden_size
            + (2 * self.dhead if self.qk_norm else 0)
        )
        embed = self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)
        return self.num_layers * per_layer + embed + self.hidden_size

    @property
    def active_params(self) -> int:
        """Parameters one token touches (top-k experts only)."""
        return self.num_params - self.num_layers * self.expert_params * (
            self.num_experts - self.experts_per_token
        )

    def kv_bytes_per_token(self, dtype_bytes: float = 2.0) -> float:
        """KV-cache bytes one token occupies across all layers (K and V)."""
        return 2.0 * self.num_layers * self.num_kv_heads * self.dhead * dtype_bytes


class Efficiency(BaseModel):
    """How close a GPU gets to its roofline, per operator class (fractions of peak).

    Attributes
    ----------
    compute_max : float
        GEMM efficiency at large token counts (fraction of peak FLOP/s).
    compute_half_tokens : float
        Tokens at which GEMM efficiency reaches half of ``compute_max`` (tile/wave ramp).
    memory : float
        Fraction of HBM bandwidth streaming kernels reach (GEMM weights and activations).
    norm_efficiency : float or None
        Fraction of HBM bandwidth the RMSNorm kernels reach (the two norms per layer,
        Qwen3's q/k norms, the final norm); None uses ``memory``. Measured kernels run
        far below the GEMM streaming rate (vidur's H100 and A100 profiles: 0.33-0.36 at
        32 MB and more).
    elementwise_efficiency : float or None
        Fraction of HBM bandwidth the rotary-embedding and SiLU-and-multiply kernels
        reach; None uses ``memory`` (residual adds and the embedding gather always
        stream at ``memory``).
    attn_prefill : float
        FlashAttention prefill efficiency (fraction of peak FLOP/s).
    attn_decode : float
        Paged-attention decode efficiency (fraction of HBM bandwidth).
    attn_query_s : float
        Attention seconds per query token per query head (on one GPU) per layer that do
        not grow with the context: FlashAttention's per-tile work of loading the query
        block, rescaling the softmax and writing the output. Fitted with ``attn_prefill``
        to prefill kernels, whose FLOP/s otherwise ramp with prompt length (the H100 FA3
        table: 0.09 of peak at 1k tokens on 8 heads, 0.63–0.68 at 8–16k). 0 by default.
    moe_compute_max, moe_compute_half_tokens, moe_memory : float or None
        The GEMM curve (``compute_max``, ``compute_half_tokens``, ``memory``) of the MoE
        experts' grouped GEMMs, whose tiles run emptier than a dense GEMM's (a few rows per
        expert); None uses the dense values. ``calibrate_kernels`` fits them to
        aiconfigurator's measured MoE kernels.
    kernel_overhead_s : float
        Launch/fixed cost per kernel, seconds (about 12 kernels per layer), as measured
        kernel by kernel (vidur's profiles).
    graph_kernel_overhead_s : float
        The same cost inside a CUDA graph (serving engines replay graphs for batches of up
        to ``ReplicaSpec.cuda_graph_tokens`` tokens, which removes the launch cost).
    iteration_overhead_s : float
        CPU scheduling and sampling overhead per iteration, seconds.
    per_seq_overhead_s : float
        CPU overhead per sequence in the batch per iteration, seconds.
    allreduce_latency_s : float
        Fixed latency of one TP all-reduce, seconds.
    allreduce_step_latency_s : float
        Extra latency of one all-reduce per doubling of the GPU count, seconds
        (``latency = allreduce_latency_s + allreduce_step_latency_s · log2(workers)``): the
        synchronisation steps of NCCL's algorithms grow with the number of GPUs, which is
        why Splitwise's per-token time barely shrinks from TP 4 to TP 8. 0 by default.
    allreduce_efficiency : float
        Fraction of the intra-node link bandwidth a ring all-reduce reaches.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    compute_max: float = Field(default=0.72, gt=0, le=1)
    compute_half_tokens: float = Field(default=48.0, ge=0)
    memory: float = Field(default=0.80, gt=0, le=1)
    norm_efficiency: float | None = Field(default=None, gt=0, le=1)
    elementwise_efficiency: float | None = Field(default=None, gt=0, le=1)
    attn_prefill: float = Field(default=0.45, gt=0, le=1)
    attn_decode: float = Field(default=0.75, gt=0, le=1)
    attn_query_s: float = Field(default=0.0, ge=0)
    moe_compute_max: float | None = Field(default=None, gt=0, le=1)
    moe_compute_half_tokens: float | None = Field(default=None, ge=0)
    moe_memory: float | None = Field(default=None, gt=0, le=1)
    kernel_overhead_s: float = Field(default=4e-6, ge=0)
    graph_kernel_overhead_s: float = Field(default=1.5e-6, ge=0)
    iteration_overhead_s: float = Field(default=1.0e-3, ge=0)
    per_seq_overhead_s: float = Field(default=1.0e-5, ge=0)
    allreduce_latency_s: float = Field(default=1.5e-5, ge=0)
    allreduce_step_latency_s: float = Field(default=0.0, ge=0)
    allreduce_efficiency: float = Field(default=0.6, gt=0, le=1)


def relative_voltage(clock: float | np.ndarray) -> float | np.ndarray:
    """The SM voltage at ``clock`` (fraction of the maximum), relative to the voltage there.

    Linear from 0.7 at half clock to 1 at the maximum, a typical DVFS table. Assumed, not
    measured: the lent GPUs' clocks may not be changed. It is checked against the clocks
    at which an H200 holds its 700 W limit (docs/inference-validation.md §1e).
    """
    return 0.4 + 0.6 * clock


class GpuSpec(BaseModel):
    """One accelerator model: peaks, memory, links, power and price.

    Attributes
    ----------
    name : str
        Catalog name (e.g. ``h100``).
    bf16_flops, fp8_flops : float
        Dense peak FLOP/s (``fp8_flops`` None where unsupported).
    hbm_bytes_per_s : float
        Memory bandwidth, bytes/s.
    memory_bytes : float
        Memory capacity, bytes.
    intra_node_bytes_per_s : float
        Per-GPU unidirectional NVLink/xGMI/PCIe bandwidth, bytes/s.
    inter_node_bytes_per_s : float
        Per-GPU network bandwidth between nodes, bytes/s.
    tdp_w, idle_w : float
        Board power limit and idle power, watts.
    power_base, power_per_memory_util, power_per_compute_util : float
        Shape of the busy power curve (see :meth:`power_w`).
    usd_per_hour : float
        Price of one GPU-hour.
    efficiency : Efficiency
        Roofline efficiencies (defaults, or calibrated from profiles).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    bf16_flops: float = Field(gt=0)
    fp8_flops: float | None = None
    hbm_bytes_per_s: float = Field(gt=0)
    memory_bytes: float = Field(gt=0)
    intra_node_bytes_per_s: float = Field(gt=0)
    inter_node_bytes_per_s: float = Field(gt=0)
    tdp_w: float = Field(gt=0)
    idle_w: float = Field(ge=0)
    usd_per_hour: float = Field(ge=0)
    gpus_per_node: int = Field(default=8, ge=1)
    power_base: float = Field(default=0.15, ge=0, le=1)
    power_per_memory_util: float = Field(default=0.8, ge=0)
    power_per_compute_util: float = Field(default=1.4, ge=0)
    efficiency: Efficiency = Efficiency()

    def busy_level(
        self,
        clock: float | np.ndarray,
        compute_util: float | np.ndarray,
        memory_util: float | np.ndarray,
    ) -> float | np.ndarray:
        """Busy power above idle as a fraction of ``TDP − idle``, at SM clock ``clock``.

        ``base · f · V(f)² + k_mem · u_mem + k_compute · V(f)² · u_compute`` (not clipped;
        vectorised), with ``f`` the clock as a fraction of the maximum, ``V`` the
        :func:`relative_voltage` and the utilisations against the maximum-clock peaks: the
        SMs' clock-driven power grows as ``f · V²``, each tensor-core operation costs energy
        in proportion to ``V²``, HBM traffic costs what it costs.
        """
        v2 = relative_voltage(clock) ** 2
        return (
            self.power_base * clock * v2
            + self.power_per_memory_util * memory_util
            + self.power_per_compute_util * v2 * compute_util
        )

    def power_w(self, compute_util: float, memory_util: float = 0.0) -> float:
        """Board power (W) of a busy GPU from its compute and memory-bandwidth utilisation.

        ``idle_w + (tdp_w - idle_w) * min(1, base + k_mem * u_mem + k_compute * u_compute)``
        (:meth:`busy_level` at the maximum clock) with ``u_compute`` achieved / peak FLOP/s
        and ``u_mem`` achieved / peak HBM bytes/s. Decode, which streams weights and KV,
        draws power with the bandwidth it uses; compute-bound prefill reaches the TDP. The
        default coefficients were set on Splitwise's Llama2-70B A100 rows (perf_model.csv)
        and checked on its BLOOM-176B rows; the H100's and H200's were measured on those
        GPUs with the clock of each kernel (docs/inference-validation.md §1d–§1e).
        """
        level = float(self.busy_level(1.0, max(0.0, compute_util), max(0.0, memory_util)))
        return self.idle_w + (self.tdp_w - self.idle_w) * min(1.0, level)

    def at_clock(self, fraction: float) -> GpuSpec:
        """This GPU with its SM clock locked at ``fraction`` of the maximum (DVFS).

        Tensor-core peaks scale with the clock, so compute-bound kernels (prefill GEMMs
        and attention) take ``1/fraction`` as long, while HBM bandwidth, links and so
        weight-streaming decode do not change. The SM side of the busy power (``base`` and
        the compute term) scales as ``f · V(f)²`` (dynamic power, with the voltage linear
        in the clock from 0.7 of its maximum at half clock, a typical DVFS table), the
        memory term does not; idle power and the TDP stay. So lowering the clock saves
        energy in decode at almost no latency and stretches prefill: the trade DynamoLLM
        and throttLL'eM exploit (docs/inference.md).

        Raises
        ------
        ConfigError
            ``fraction`` outside (0.1, 1].
        """
        if not 0.1 < fraction <= 1.0:
            raise ConfigError(
                f"gpu clock: expected a fraction of the maximum in (0.1, 1], found {fraction}"
            )
        if fraction == 1.0:
            return self
        volts = relative_voltage(fraction)
        sm = fraction * volts * volts  # dynamic power of the SMs: f · V²
        # utilisation is against the lowered peak (u' = u / f), so the compute coefficient
        # takes one more 1/f: energy per FLOP scales as V² alone
        return self.model_copy(
            update={
                "bf16_flops": self.bf16_flops * fraction,
                "fp8_flops": None if self.fp8_flops is None else self.fp8_flops * fraction,
                "power_base": self.power_base * sm,
                "power_per_compute_util": self.power_per_compute_util * sm,
            }
        )

    def peak_flops(self, dtype: Literal["bf16", "fp8"] = "bf16") -> float:
        """Dense peak FLOP/s for ``dtype``; raises ConfigError where fp8 is unsupported."""
        if dtype == "fp8":
            if self.fp8_flops is None:
                raise ConfigError(f"GPU {self.name!r} has no fp8 tensor cores (expected bf16)")
            return self.fp8_flops
        return self.bf16_flops


_T = TypeVar("_T", bound=BaseModel)
_GB = 1e9
_TF = 1e12

_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="llama-2-7b",
        num_layers=32,
        hidden_size=4096,
        num_heads=32,
        num_kv_heads=32,
        intermediate_size=11008,
        vocab_size=32000,
        max_context=4096,
    ),
    ModelSpec(
        name="llama-2-13b",
        num_layers=40,
        hidden_size=5120,
        num_heads=40,
        num_kv_heads=40,
        intermediate_size=13824,
        vocab_size=32000,
        max_context=4096,
    ),
    ModelSpec(
        name="llama-2-70b",
        num_layers=80,
        hidden_size=8192,
        num_heads=64,
        num_kv_heads=8,
        intermediate_size=28672,
        vocab_size=32000,
        max_context=4096,
    ),
    ModelSpec(
        name="llama-3-8b",
        num_layers=32,
        hidden_size=4096,
        num_heads=32,
        num_kv_heads=8,
        intermediate_size=14336,
        vocab_size=128256,
        max_context=8192,
    ),
    ModelSpec(
        name="llama-3.1-8b",
        num_layers=32,
        hidden_size=4096,
        num_heads=32,
        num_kv_heads=8,
        intermediate_size=14336,
        vocab_size=128256,
        max_context=131072,
    ),
    ModelSpec(
        name="llama-3-70b",
        num_layers=80,
        hidden_size=8192,
        num_heads=64,
        num_kv_heads=8,
        intermediate_size=28672,
        vocab_size=128256,
        max_context=8192,
    ),
    ModelSpec(
        name="llama-3.1-70b",
        num_layers=80,
        hidden_size=8192,
        num_heads=64,
        num_kv_heads=8,
        intermediate_size=28672,
        vocab_size=128256,
        max_context=131072,
    ),
    ModelSpec(
        name="mistral-7b",
        num_layers=32,
        hidden_size=4096,
        num_heads=32,
        num_kv_heads=8,
        intermediate_size=14336,
        vocab_size=32000,
        max_context=32768,
    ),
    ModelSpec(
        name="mixtral-8x7b",
        num_layers=32,
        hidden_size=4096,
        num_heads=32,
        num_kv_heads=8,
        intermediate_size=14336,
        vocab_size=32000,
        max_context=32768,
        num_experts=8,
        experts_per_token=2,
    ),
    ModelSpec(
        name="qwen2.5-7b",
        num_layers=28,
        hidden_size=3584,
        num_heads=28,
        num_kv_heads=4,
        intermediate_size=18944,
        vocab_size=152064,
        max_context=32768,
    ),
    ModelSpec(
        name="qwen2.5-72b",
        num_layers=80,
        hidden_size=8192,
        num_heads=64,
        num_kv_heads=8,
        intermediate_size=29568,
        vocab_size=152064,
        max_context=32768,
    ),
    ModelSpec(
        name="qwen3-32b",
        num_layers=64,
        hidden_size=5120,
        num_heads=64,
        num_kv_heads=8,
        head_dim=128,
        intermediate_size=25600,
        vocab_size=151936,
        max_context=40960,
        qk_norm=True,
    ),
    # Qwen3-235B-A22B: 128 experts of width 1,536, 8 per token, GQA 64 / 4 heads, q/k norms
    ModelSpec(
        name="qwen3-235b-a22b",
        num_layers=94,
        hidden_size=4096,
        num_heads=64,
        num_kv_heads=4,
        head_dim=128,
        intermediate_size=1536,
        vocab_size=151936,
        max_context=40960,
        num_experts=128,
        experts_per_token=8,
        qk_norm=True,
    ),
    ModelSpec(
        name="bloom-176b",
        num_layers=70,
        hidden_size=14336,
        num_heads=112,
        num_kv_heads=112,
        intermediate_size=57344,
        vocab_size=250880,
        max_context=2048,
        gated_mlp=False,
        tied_embeddings=True,
    ),
)

#: GEMM, memory and all-reduce terms fitted by ``calibrate`` to vidur's real profiles (all
#: models, TP 1-8, *_dgx all-reduce; GEMM MAPE 9.0 % (H100) and 6.6 % (A100), all-reduce
#: MAPE 10.1 % / 11.7 %); attention efficiencies fitted by ``calibrate_kernels`` to
#: aiconfigurator's measured vLLM FlashAttention kernels (prefill: fraction of peak FLOP/s,
#: with a cost per query token and head; decode: fraction of HBM bandwidth; vidur publishes
#: no attention profiles); MoE grouped-GEMM curve fitted to its vLLM bf16 MoE kernels
#: (H100 and H200; the A100 has no MoE table and uses the dense curve). RMSNorm and
#: SiLU-and-multiply / rotary bandwidth fractions: ``calibrate``'s fit to the same vidur
#: profiles' rows of >= 16 MB (H100 0.40 / 0.62, MAPE 12.5 / 10.3 %; A100 0.36 / 0.49,
#: 5.0 / 8.8 %); H200 keeps the H100 values (no H200 profiles)
_H100_EFF = Efficiency(
    compute_max=0.756,
    compute_half_tokens=172.0,
    memory=0.96,
    norm_efficiency=0.40,
    elementwise_efficiency=0.62,
    attn_prefill=0.659,
    attn_decode=0.833,
    attn_query_s=4.24e-10,
    moe_compute_max=0.511,
    moe_compute_half_tokens=144.0,
    moe_memory=0.746,
    kernel_overhead_s=6.5e-6,
    allreduce_latency_s=2.95e-5,
    allreduce_efficiency=0.78,
)
_H200_EFF = _H100_EFF.model_copy(
    update={
        "attn_prefill": 0.651,
        "attn_decode": 0.781,
        "attn_query_s": 4.06e-10,
        "moe_compute_max": 0.546,
        "moe_compute_half_tokens": 106.0,
        "moe_memory": 0.719,
    }
)
_A100_EFF = Efficiency(
    compute_max=0.741,
    compute_half_tokens=82.0,
    memory=0.81,
    norm_efficiency=0.36,
    elementwise_efficiency=0.49,
    attn_prefill=0.555,
    attn_decode=0.653,
    attn_query_s=7.29e-10,
    kernel_overhead_s=6.8e-6,
    allreduce_latency_s=4.17e-5,
    allreduce_efficiency=0.53,
)

_GPUS: tuple[GpuSpec, ...] = (
    GpuSpec(
        name="a100",
        bf16_flops=312 * _TF,
        fp8_flops=None,
        hbm_bytes_per_s=2039 * _GB,
        memory_bytes=80 * _GB,
        intra_node_bytes_per_s=300 * _GB,
        inter_node_bytes_per_s=25 * _GB,
        tdp_w=400,
        idle_w=60,
        usd_per_hour=1.8,
        efficiency=_A100_EFF,
    ),
    GpuSpec(
        name="h100",
        bf16_flops=989 * _TF,
        fp8_flops=1979 * _TF,
        hbm_bytes_per_s=3350 * _GB,
        memory_bytes=80 * _GB,
        intra_node_bytes_per_s=450 * _GB,
        inter_node_bytes_per_s=50 * _GB,
        tdp_w=700,
        idle_w=90,
        usd_per_hour=3.0,
        # busy-power curve measured on an H100 SXM (benchmarks/gpu_power.py, with the SM
        # clock at which each kernel ran): least squares over bf16 and fp8 GEMMs and attention
        power_base=0.29,
        power_per_memory_util=0.41,
        power_per_compute_util=1.76,
        efficiency=_H100_EFF,
    ),
    GpuSpec(
        name="h200",
        bf16_flops=989 * _TF,
        fp8_flops=1979 * _TF,
        hbm_bytes_per_s=4800 * _GB,
        memory_bytes=141 * _GB,
        intra_node_bytes_per_s=450 * _GB,
        inter_node_bytes_per_s=50 * _GB,
        tdp_w=700,
        idle_w=90,
        usd_per_hour=3.8,
        # busy-power curve measured on an H200 (benchmarks/gpu_power.py, with the SM clock
        # at which each kernel ran): least squares over bf16 and fp8 GEMMs and attention
        power_base=0.0,
        power_per_memory_util=0.89,
        power_per_compute_util=1.96,
        efficiency=_H200_EFF,
    ),
    GpuSpec(
        name="l40s",
        bf16_flops=362 * _TF,
        fp8_flops=733 * _TF,
        hbm_bytes_per_s=864 * _GB,
        memory_bytes=48 * _GB,
        intra_node_bytes_per_s=32 * _GB,
        inter_node_bytes_per_s=12.5 * _GB,
        tdp_w=350,
        idle_w=35,
        usd_per_hour=1.0,
    ),
    GpuSpec(
        name="mi300x",
        bf16_flops=1307 * _TF,
        fp8_flops=2615 * _TF,
        hbm_bytes_per_s=5300 * _GB,
        memory_bytes=192 * _GB,
        intra_node_bytes_per_s=448 * _GB,
        inter_node_bytes_per_s=50 * _GB,
        tdp_w=750,
        idle_w=110,
        usd_per_hour=2.5,
    ),
)

_GPU_ALIASES = {
    "a100-80gb": "a100",
    "a100_sxm": "a100",
    "h100-sxm": "h100",
    "h100_sxm": "h100",
    "h100-80gb": "h100",
    "h200_sxm": "h200",
    "h200-sxm": "h200",
}


def builtin_models() -> dict[str, ModelSpec]:
    """The built-in model architectures by name (a fresh dict each call).

    Returns
    -------
    dict of str to ModelSpec
    """
    return {m.name: m for m in _MODELS}


def builtin_gpus() -> dict[str, GpuSpec]:
    """The built-in GPU specs by name (a fresh dict each call).

    Returns
    -------
    dict of str to GpuSpec
    """
    return {g.name: g for g in _GPUS}


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").removeprefix("meta-llama/")


def model_spec(name: str | ModelSpec) -> ModelSpec:
    """Look up a built-in model by name (case-insensitive), or load one from a YAML path.

    Parameters
    ----------
    name : str or ModelSpec
        Catalog name (``llama-3-8b``), a path to a YAML ``ModelSpec``, or a spec.

    Returns
    -------
    ModelSpec

    Raises
    ------
    ConfigError
        Unknown name (the message lists the known ones) or an invalid YAML file.
    """
    if isinstance(name, ModelSpec):
        return name
    if name.endswith((".yaml", ".yml")):
        return load_spec(Path(name), ModelSpec)
    models = builtin_models()
    key = _norm(name)
    if key in models:
        return models[key]
    raise ConfigError(f"unknown model {name!r} (expected one of: {', '.join(sorted(models))})")


def gpu_spec(name: str | GpuSpec) -> GpuSpec:
    """Look up a built-in GPU by name (``H100``, ``a100-80gb``...), or load a YAML path.

    Parameters
    ----------
    name : str or GpuSpec
        Catalog name, alias, path to a YAML ``GpuSpec``, or a spec.

    Returns
    -------
    GpuSpec

    Raises
    ------
    ConfigError
        Unknown name (the message lists the known ones) or an invalid YAML file.
    """
    if isinstance(name, GpuSpec):
        return name
    if name.endswith((".yaml", ".yml")):
        return load_spec(Path(name), GpuSpec)
    gpus = builtin_gpus()
    key = _norm(name)
    key = _GPU_ALIASES.get(key, key)
    if key in gpus:
        return gpus[key]
    raise ConfigError(f"unknown GPU {name!r} (expected one of: {', '.join(sorted(gpus))})")


def load_spec(path: Path, kind: type[_T]) -> _T:
    """Load a frozen spec of type ``kind`` from a YAML file.

    Parameters
    ----------
    path : Path
        YAML mapping whose keys are the spec's fields.
    kind : type
        The pydantic model to build (``ModelSpec``, ``GpuSpec``, ``ServeSpec`` ...).

    Returns
    -------
    An instance of ``kind``.

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    ConfigError
        The YAML does not parse or a field is invalid (named with expected and found).
    """
    if not path.exists():
        raise DataNotFoundError(f"{path}: no such spec file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {kind.__name__} fields, found {data!r}")
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{path}, field {field!r}: {first['msg']} (found {first.get('input')!r})"
        ) from None
