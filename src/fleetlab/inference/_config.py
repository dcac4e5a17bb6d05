"""Serving configuration: one replica's engine, and the cluster of replicas around it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleetlab.inference._specs import GpuSpec, ModelSpec

__all__ = ["ClusterSpec", "Frontend", "ReplicaSpec", "Slo"]

Scheduler = Literal["vllm", "sarathi", "orca"]
RouterName = Literal["round_robin", "least_outstanding", "least_kv", "power_of_two", "prefix"]


class ReplicaSpec(BaseModel):
    """One model replica: model, GPU, parallelism and its engine's batching limits.

    Attributes
    ----------
    model, gpu : str or spec
        Catalog names (``llama-3-8b``, ``h100``), YAML paths, or spec objects.
    tp, pp : int
        Tensor- and pipeline-parallel degrees; the replica uses ``tp * pp`` GPUs.
    ep : int
        Expert-parallel degree (MoE models only): the experts of each layer are sharded
        over ``ep`` of the TP ranks (a divisor of ``tp`` and of the expert count), with
        all-to-all dispatch/combine over the intra-node link; 1 keeps the experts
        tensor-parallel. It does not change the GPU count.
    dtype, kv_dtype : {"bf16", "fp8"}
        Weight/GEMM precision and KV-cache precision.
    scheduler : {"vllm", "sarathi", "orca"}
        ``vllm``: prefill-prioritising continuous batching (prefill iterations pause
        decodes), ``sarathi``: chunked prefill under a per-iteration token budget
        (``chunk_size``) mixed with decodes, ``orca``: iteration-level batching that mixes
        whole prompts with decodes and reserves KV for the full output at admission.
    max_num_seqs : int
        Largest number of sequences in one batch.
    max_batched_tokens : int
        Largest number of tokens in one iteration (vllm, orca).
    chunk_size : int
        Sarathi's token budget per iteration (decodes + prefill chunk).
    block_size : int
        KV-cache page size in tokens.
    gpu_memory_utilization : float
        Fraction of GPU memory the engine may use (weights + activations + KV).
    prefix_caching : bool
        Reuse KV blocks of requests' shared prefixes (``prefix_ids`` column).
    cuda_graph_tokens : int
        Iterations of up to this many tokens replay CUDA graphs (vLLM and SGLang capture
        decode batches up to 512); 0 models eager execution.
    gpu_clock : float
        Fraction of the maximum SM clock the GPUs are locked at (``nvidia-smi -lgc``);
        1.0 leaves the clock to the GPU. Work that the power limit already holds below
        that clock is not slowed (:mod:`fleetlab.inference._clock`).
    power_cap_w : float, optional
        Board power cap per GPU (``nvidia-smi -pl``), watts; default the GPU's TDP. Work
        that would draw more runs at a lower clock.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | ModelSpec = "llama-3-8b"
    gpu: str | GpuSpec = "h100"
    tp: int = Field(default=1, ge=1, le=64)
    pp: int = Field(default=1, ge=1, le=64)
    ep: int = Field(default=1, ge=1, le=64)
    dtype: Literal["bf16", "fp8"] = "bf16"
    kv_dtype: Literal["bf16", "fp8"] = "bf16"
    scheduler: Scheduler = "vllm"
    max_num_seqs: int = Field(default=256, ge=1)
    max_batched_tokens: int = Field(default=8192, ge=16)
    chunk_size: int = Field(default=512, ge=16)
    block_size: int = Field(default=16, ge=1)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    prefix_caching: bool = False
    cuda_graph_tokens: int = Field(default=512, ge=0)
    gpu_clock: float = Field(default=1.0, gt=0.1, le=1.0)
    power_cap_w: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_ep(self) -> ReplicaSpec:
        if self.tp % self.ep:
            raise ValueError(
                f"ep ({self.ep}) must divide tp ({self.tp}): the EP ranks are the TP ranks"
            )
        return self

    @property
    def gpus(self) -> int:
        """GPUs per replica."""
        return self.tp * self.pp


class Frontend(BaseModel):
    """The request path outside the engine: HTTP server, tokenizer, detokenizer, streaming.

    A request sent by a client at ``t`` reaches the engine's scheduler after
    ``request_s`` (HTTP parsing, validation, chat template, hand-off to the engine
    process; in parallel over requests) plus its tokenization, ``tokenize_s_per_token``
    per prompt token on **one** tokenizer worker shared by all requests (first come,
    first served, as vLLM's OpenAI server tokenizes on a single thread). Every output
    token reaches the client ``token_out_s`` after the engine step that produced it
    (output queue, incremental detokenization, SSE chunk); that latency is the same for
    every token, so it adds to TTFT and end-to-end time but not to TPOT.

    The defaults are public measurements of vLLM's frontend, not fits to any
    validation rows: 1.34 µs per prompt token (vLLM PR #19334: 100 prompts of 10,000
    tokens tokenized one after another in 1.338 s), 0.65 ms per output token (vLLM V1's
    output path: 0.05 ms output queue, 0.1 ms detokenizer, 0.5 ms SSE chunk;
    fridayswithfaraday.com, "vLLM v1 async output processing") and 1 ms per request
    (an order-of-magnitude estimate of an HTTP request with JSON validation and a chat
    template; no public per-stage figure was found).

    Attributes
    ----------
    request_s : float
        Fixed time per request before tokenization (seconds).
    tokenize_s_per_token : float
        Tokenizer time per prompt token (seconds), on one worker for all requests.
    token_out_s : float
        Latency from the engine step to the client, per output token (seconds).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_s: float = Field(default=1.0e-3, ge=0)
    tokenize_s_per_token: float = Field(default=1.34e-6, ge=0)
    token_out_s: float = Field(default=0.65e-3, ge=0)


class Slo(BaseModel):
    """Latency targets a request must meet to count towards goodput (seconds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft_s: float = Field(default=2.0, gt=0)
    tpot_s: float = Field(default=0.1, gt=0)


class ClusterSpec(BaseModel):
    """A serving cluster: replicas, a router, optional prefill/decode disaggregation.

    Attributes
    ----------
    replica : ReplicaSpec
        The replica every pool uses (``decode_replica`` overrides it for decode pools).
    replicas : int
        Number of replicas in a co-located (mixed) deployment.
    router : str
        ``round_robin``, ``least_outstanding``, ``least_kv``, ``power_of_two`` or
        ``prefix`` (prefix-affinity on the first prefix id, least outstanding otherwise).
    prefill_replicas, decode_replicas : int
        When both are > 0, disaggregated serving (Splitwise / DistServe): prompts run on
        the prefill pool, the KV cache moves over ``kv_link`` and decoding continues on
        the decode pool (``replicas`` is then ignored).
    decode_replica : ReplicaSpec, optional
        A different replica type for the decode pool (e.g. other GPU or TP).
    kv_link : {"intra_node", "inter_node"}
        Which of the GPU's links carries the KV transfer.
    mixed_pool : bool
        With disaggregation: let a replica of one pool serve a request end to end when the
        other pool is overloaded (Splitwise's mixed pool; docs/inference.md).
    mixed_prompt_tokens : int
        The prefill pool counts as overloaded for a prompt when its replica already has
        queued work and would then hold more than this many prompt tokens (Splitwise's
        ``prompt_max_pending_batch_tokens``).
    slo : Slo
        Targets for goodput.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    replica: ReplicaSpec = ReplicaSpec()
    replicas: int = Field(default=1, ge=1)
    router: RouterName = "least_outstanding"
    prefill_replicas: int = Field(default=0, ge=0)
    decode_replicas: int = Field(default=0, ge=0)
    decode_replica: ReplicaSpec | None = None
    kv_link: Literal["intra_node", "inter_node"] = "inter_node"
    mixed_pool: bool = False
    mixed_prompt_tokens: int = Field(default=8192, ge=1)
    slo: Slo = Slo()

    @model_validator(mode="after")
    def _check(self) -> ClusterSpec:
        if (self.prefill_replicas > 0) != (self.decode_replicas > 0):
            raise ValueError("disaggregation needs both prefill_replicas and decode_replicas > 0")
        if self.mixed_pool and not self.disaggregated:
            raise ValueError(
                "mixed_pool needs disaggregation (prefill_replicas and decode_replicas > 0)"
            )
        pp = (self.replica.pp, (self.decode_replica or self.replica).pp)
        if self.mixed_pool and pp != (1, 1):
            raise ValueError(
                f"mixed_pool needs pp == 1 in both pools (found pp {pp[0]} and {pp[1]})"
            )
        return self

    @property
    def disaggregated(self) -> bool:
        """Whether prefill and decode run on separate pools."""
        return self.prefill_replicas > 0
