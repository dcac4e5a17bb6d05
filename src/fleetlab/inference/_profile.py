"""``fleetlab inference profile``: time a model's operators and write vidur's CSV format.

The operators are those of one transformer layer under tensor parallelism (QKV and output
projections, MLP up/down projections, activation, norms, residual add, embedding), timed
for a range of token counts, and its attention: causal prefill of a chunk after a cached
prefix, decode of a batch against a cached context, and the write of new keys and values
into the cache. The timer is pluggable: :class:`TorchTimer` uses CUDA events on the local
GPU (attention through PyTorch's ``scaled_dot_product_attention``, whose backend each row
records); :class:`NumpyTimer` times the same shapes with numpy on the CPU (used by tests and
to exercise the pipeline where no GPU exists). The tables have vidur's ``mlp.csv`` and
``attention.csv`` columns, so :func:`~fleetlab.inference.calibrate` reads them like vidur's
own profiles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, Protocol

import numpy as np
import polars as pl

from fleetlab.errors import ConfigError
from fleetlab.inference._specs import ModelSpec, model_spec

__all__ = [
    "AttentionShape",
    "AttentionTimer",
    "NumpyTimer",
    "OperatorTimer",
    "TorchTimer",
    "profile_attention",
    "profile_operators",
]

_OPS = (
    "emb",
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)
Kind = Literal["gemm", "norm", "act", "add", "rope", "emb"]


class OperatorTimer(Protocol):
    """Times one operator ``repeats`` times; returns the samples in milliseconds."""

    def time(self, kind: Kind, tokens: int, k: int, n: int, repeats: int) -> list[float]:
        """Milliseconds per call of ``kind`` on ``tokens`` rows (GEMM shape ``k x n``)."""
        ...


class AttentionTimer(Protocol):
    """Times attention and the KV-cache write; returns samples in milliseconds."""

    def attention(
        self, shape: AttentionShape, repeats: int
    ) -> tuple[list[float], str]:  # pragma: no cover - protocol
        """Milliseconds per call of causal attention of ``shape``, and the backend's name."""
        ...

    def kv_save(
        self, tokens: int, kv_heads: int, head_dim: int, repeats: int
    ) -> list[float]:  # pragma: no cover - protocol
        """Milliseconds to write ``tokens`` tokens' keys and values into a KV cache."""
        ...


class AttentionShape(NamedTuple):
    """One attention call per GPU: ``batch`` sequences of ``q_len`` new tokens each.

    Each sequence attends to ``kv_len`` keys (its cached prefix plus the new tokens),
    causally: new token ``i`` sees the prefix and new tokens ``0..i``.
    """

    batch: int
    q_len: int
    kv_len: int
    q_heads: int
    kv_heads: int
    head_dim: int


class NumpyTimer:
    """CPU timer with numpy (float32): for tests and for machines without a GPU."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def time(self, kind: Kind, tokens: int, k: int, n: int, repeats: int) -> list[float]:
        """Milliseconds per call, measured with ``time.perf_counter``."""
        x = self.rng.standard_normal((tokens, k), dtype=np.float32)
        w = self.rng.standard_normal((k, n), dtype=np.float32) if kind == "gemm" else None

        def op() -> object:
            if w is not None:  # kind == "gemm"
                return x @ w
            if kind == "norm":
                return x / np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-6)
            if kind == "act" and k == 2 * n:  # SiLU-and-multiply's traffic: 2 reads, 1 write
                return x[:, :n] + x[:, n:]
            if kind == "act":
                return x / (1 + np.exp(-x))
            return x + x

        return _perf_counter_ms(op, repeats)

    def attention(self, shape: AttentionShape, repeats: int) -> tuple[list[float], str]:
        """Milliseconds per call of causal softmax attention in float32 numpy."""
        b, q_len, kv_len, hq, hkv, d = shape
        q = self.rng.standard_normal((b, hq, q_len, d), dtype=np.float32)
        k = self.rng.standard_normal((b, hkv, kv_len, d), dtype=np.float32)
        v = self.rng.standard_normal((b, hkv, kv_len, d), dtype=np.float32)
        group = hq // hkv
        # lower-right causal mask: new token i sees keys 0 .. kv_len - q_len + i
        hidden = np.arange(kv_len)[None, :] > (kv_len - q_len + np.arange(q_len))[:, None]

        def op() -> object:
            kk = np.repeat(k, group, axis=1)
            vv = np.repeat(v, group, axis=1)
            s = q @ kk.transpose(0, 1, 3, 2) / np.sqrt(d)
            s[..., hidden] = -np.inf
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            return (s / s.sum(axis=-1, keepdims=True)) @ vv

        return _perf_counter_ms(op, repeats), "NUMPY"

    def kv_save(self, tokens: int, kv_heads: int, head_dim: int, repeats: int) -> list[float]:
        """Milliseconds to scatter ``tokens`` keys and values into a cache twice as large."""
        cache = np.zeros((2 * tokens, 2, kv_heads, head_dim), dtype=np.float32)
        new = self.rng.standard_normal((tokens, 2, kv_heads, head_dim), dtype=np.float32)
        slots = self.rng.permutation(2 * tokens)[:tokens]

        def op() -> object:
            cache[slots] = new
            return cache

        return _perf_counter_ms(op, repeats)


def _perf_counter_ms(op: Callable[[], object], repeats: int) -> list[float]:
    """Milliseconds per call of ``op``, after one warm-up call."""
    op()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        op()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


class TorchTimer:
    """PyTorch timer (bf16): CUDA events on a GPU, ``time.perf_counter`` on ``device="cpu"``.

    Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` with
    grouped-query heads. Each shape is timed with every fused backend of
    :attr:`ATTENTION_BACKENDS` that accepts it and keeps the fastest, as a tuned engine
    would (on an H100, cuDNN's attention reaches about 1.5x FlashAttention-2's FLOP/s on
    long prompts); its name is recorded in the profile's ``attention_backend`` column. A
    chunk after a cached prefix needs a lower-right causal mask, which PyTorch runs only
    with FlashAttention or the memory-efficient kernel.

    ``sustain_s`` > 0 (the default, 0.5 s) runs every operator of 0.1 ms or more back to
    back for that long before timing it. From idle a GPU holds its maximum clock for about
    0.25 s of compute-bound work and then lowers it to stay under its power limit (an H200
    settles at 0.73 of the maximum, 0.87 of the speed; docs/inference-validation.md §1e),
    so a burst profile (``sustain_s=0``, as vidur's) measures compute-bound operators
    faster than a loaded server runs them: on an H200, 9–17 % for GEMMs of 512 tokens and
    more.

    Raises
    ------
    ConfigError
        PyTorch is not installed or no CUDA device is visible.
    """

    #: SDPA backends tried in order, by their ``torch.nn.attention.SDPBackend`` names
    ATTENTION_BACKENDS = ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH")

    def __init__(self, device: str = "cuda", sustain_s: float = 0.5) -> None:
        try:
            import torch
        except ImportError:  # pragma: no cover - depends on the machine
            raise ConfigError("profiling on a GPU needs PyTorch (pip install torch)") from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("no CUDA device visible (expected an NVIDIA GPU, found none)")
        self.torch = torch
        self.device = device
        self.sustain_s = sustain_s

    def _ms(self, op: Callable[[], object], repeats: int) -> list[float]:
        """GPU milliseconds per call of ``op``: kernel time, without the CPU's launch gaps.

        A short operator is captured ``inner`` times into a CUDA graph and each sample is
        one replay divided by ``inner`` (vidur's profiles likewise time kernels, not
        Python dispatch); an operator of a millisecond or more is timed call by call.
        """
        if not self.device.startswith("cuda"):
            return _perf_counter_ms(op, repeats)
        torch = self.torch  # pragma: no cover - from here on only on a GPU
        side = torch.cuda.Stream()  # warm-up off the default stream, as capture needs
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                op()
        torch.cuda.current_stream().wait_stream(side)
        once = self._events(op, 1)[0]
        if self.sustain_s > 0 and once >= 0.1:  # bring the clock to where long work runs it
            calls = max(1, int(self.sustain_s * 1e3 / once))
            for i in range(calls):
                op()
                if i % 64 == 63:  # keep the launch queue short
                    torch.cuda.synchronize()
        inner = max(1, min(16, int(1.0 / max(once, 1e-3))))
        if inner == 1:
            return self._events(op, repeats)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                for _ in range(inner):
                    op()
        except RuntimeError:  # not capturable: time it call by call
            return self._events(op, repeats)
        graph.replay()
        return [ms / inner for ms in self._events(graph.replay, repeats)]

    def _events(
        self, op: Callable[[], object], repeats: int
    ) -> list[float]:  # pragma: no cover - only on a GPU
        torch = self.torch
        torch.cuda.synchronize()
        out = []
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            op()
            end.record()
            torch.cuda.synchronize()
            out.append(float(start.elapsed_time(end)))
        return out

    def time(self, kind: Kind, tokens: int, k: int, n: int, repeats: int) -> list[float]:
        """Milliseconds per call of one non-attention operator, after a warm-up."""
        torch = self.torch
        dt = torch.bfloat16
        x = torch.randn(tokens, k, device=self.device, dtype=dt)
        w = torch.randn(k, n, device=self.device, dtype=dt) if kind == "gemm" else None
        norm = torch.nn.RMSNorm(k, device=self.device, dtype=dt) if kind == "norm" else None

        def op() -> object:
            if w is not None:  # kind == "gemm"
                return x @ w
            if norm is not None:  # kind == "norm"
                return norm(x)
            if kind == "act" and k == 2 * n:  # SiLU-and-multiply's traffic: 2 reads, 1 write
                return torch.add(x[:, :n], x[:, n:])
            if kind == "act":
                return torch.nn.functional.silu(x)
            return x + x

        with torch.inference_mode():
            return self._ms(op, repeats)

    def attention(self, shape: AttentionShape, repeats: int) -> tuple[list[float], str]:
        """Milliseconds per call of causal attention, and the SDPA backend that ran it."""
        torch = self.torch
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.nn.attention.bias import causal_lower_right

        b, q_len, kv_len, hq, hkv, d = shape
        dt = torch.bfloat16
        q = torch.randn(b, hq, q_len, d, device=self.device, dtype=dt)
        k = torch.randn(b, hkv, kv_len, d, device=self.device, dtype=dt)
        v = torch.randn(b, hkv, kv_len, d, device=self.device, dtype=dt)
        # a decode token sees every key; a prefill chunk after a prefix is lower-right causal
        mask = causal_lower_right(q_len, kv_len) if 1 < q_len < kv_len else None
        causal = q_len == kv_len and q_len > 1
        sdpa = torch.nn.functional.scaled_dot_product_attention

        def op() -> object:
            return sdpa(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=hq != hkv)

        with torch.inference_mode():
            if mask is not None:  # CausalBias picks its own kernel: ask which one
                return self._ms(op, repeats), self._lower_right_backend(q, k, v)
            best: tuple[list[float], str] | None = None
            for name in self.ATTENTION_BACKENDS:
                if name == "MATH" and best is not None:
                    break  # the unfused fallback, timed only where nothing else runs
                try:
                    with sdpa_kernel(getattr(SDPBackend, name)):
                        op()
                        samples = self._ms(op, repeats)
                except RuntimeError:  # this backend does not take the shape
                    continue
                if best is None or np.median(samples) < np.median(best[0]):
                    best = (samples, name)
        if best is None:
            raise ConfigError(f"no attention backend of PyTorch {torch.__version__} ran {shape}")
        return best

    def _lower_right_backend(self, q: object, k: object, v: object) -> str:
        """The kernel PyTorch's lower-right ``CausalBias`` dispatches these tensors to."""
        cuda = self.torch.backends.cuda
        # CausalBias asks with is_causal=False and then runs the kernel lower-right causal
        gqa = q.shape[1] != k.shape[1]  # type: ignore[attr-defined]
        params = cuda.SDPAParams(q, k, v, None, 0.0, False, gqa)
        if cuda.can_use_flash_attention(params):
            return "FLASH_ATTENTION"
        if cuda.can_use_efficient_attention(params):
            return "EFFICIENT_ATTENTION"
        return "MATH"

    def kv_save(self, tokens: int, kv_heads: int, head_dim: int, repeats: int) -> list[float]:
        """Milliseconds to scatter ``tokens`` keys and values into a cache twice as large."""
        torch = self.torch
        dt = torch.bfloat16
        cache = torch.zeros(2 * tokens, 2, kv_heads, head_dim, device=self.device, dtype=dt)
        new = torch.randn(tokens, 2, kv_heads, head_dim, device=self.device, dtype=dt)
        slots = torch.randperm(2 * tokens, device=self.device)[:tokens]

        def op() -> object:
            return cache.index_copy_(0, slots, new)

        with torch.inference_mode():
            return self._ms(op, repeats)


def profile_operators(
    model: str | ModelSpec,
    *,
    timer: OperatorTimer,
    tp_degrees: Sequence[int] = (1, 2, 4, 8),
    token_counts: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    repeats: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> pl.DataFrame:
    """Time one layer's operators of ``model`` and return vidur's ``mlp.csv`` table.

    Parameters
    ----------
    model : str or ModelSpec
        The architecture whose shapes are timed.
    timer : OperatorTimer
        ``TorchTimer()`` on a GPU, ``NumpyTimer()`` on a CPU, or your own.
    tp_degrees : sequence of int
        Tensor-parallel degrees (shapes are divided by each).
    token_counts : sequence of int
        Batch token counts.
    repeats : int
        Timed calls per operator and shape (min/max/mean/median/std are reported).
    progress : callable, optional
        Called with (rows done, rows in all) after each row (a progress bar).

    Returns
    -------
    pl.DataFrame
        Columns ``time_stats.<op>.{min,max,mean,median,std}`` (ms) for every operator,
        then n_head, head_dim (not in vidur's files, where it is ``n_embd / n_head``;
        Qwen3's is not), n_kv_head, n_embd, n_expanded_embd, vocab_size, use_gated_mlp,
        num_tokens, num_tensor_parallel_workers.

    Raises
    ------
    ConfigError
        Unknown model, a TP degree that does not divide the heads, repeats < 1.
    """
    spec = model_spec(model)
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1 (found {repeats})")
    h, dh = spec.hidden_size, spec.dhead
    rows = []
    for tp in tp_degrees:
        if spec.num_heads % tp:
            raise ConfigError(f"tp={tp} does not divide {spec.name}'s {spec.num_heads} heads")
        q = spec.num_heads * dh // tp
        kv = max(1, spec.num_kv_heads // tp) * dh
        inter = spec.intermediate_size // tp
        up = inter * (2 if spec.gated_mlp else 1)
        shapes: dict[str, tuple[Kind, int, int]] = {
            "emb": ("add", h, h),
            "input_layernorm": ("norm", h, h),
            "attn_pre_proj": ("gemm", h, q + 2 * kv),
            # the fused rotary kernel reads and writes q and k once: timed as an add of the
            # same bytes; the fused SiLU-and-multiply reads the gate and up halves and
            # writes one (a gated MLP), timed as the add of the two halves
            "attn_rope": ("add", q + kv, q + kv),
            "attn_post_proj": ("gemm", q, h),
            "post_attention_layernorm": ("norm", h, h),
            "mlp_up_proj": ("gemm", h, up),
            "mlp_act": ("act", up, inter),
            "mlp_down_proj": ("gemm", inter, h),
            "add": ("add", h, h),
        }
        for t in token_counts:
            row: dict[str, float | int | bool] = {}
            for op in _OPS:
                kind, k, n = shapes[op]
                row.update(_stats(op, timer.time(kind, int(t), k, n, repeats)))
            row.update(
                {
                    "n_head": spec.num_heads,
                    "head_dim": spec.dhead,
                    "n_kv_head": spec.num_kv_heads,
                    "n_embd": h,
                    "n_expanded_embd": spec.intermediate_size,
                    "vocab_size": spec.vocab_size,
                    "use_gated_mlp": spec.gated_mlp,
                    "num_tokens": int(t),
                    "num_tensor_parallel_workers": int(tp),
                }
            )
            rows.append(row)
            if progress is not None:
                progress(len(rows), len(tp_degrees) * len(token_counts))
    return pl.DataFrame(rows)


def _stats(prefix: str, samples: Sequence[float]) -> dict[str, float]:
    """vidur's ``time_stats.<op>.{min,max,mean,median,std}`` columns of one sample set."""
    s = np.asarray(samples, dtype=np.float64)
    return {
        f"time_stats.{prefix}.min": float(s.min()),
        f"time_stats.{prefix}.max": float(s.max()),
        f"time_stats.{prefix}.mean": float(s.mean()),
        f"time_stats.{prefix}.median": float(np.median(s)),
        f"time_stats.{prefix}.std": float(s.std()),
    }


def profile_attention(
    model: str | ModelSpec,
    *,
    timer: AttentionTimer,
    tp_degrees: Sequence[int] = (1, 2, 4, 8),
    prefill_chunks: Sequence[int] = (64, 128, 256, 512, 1024, 2048, 4096, 8192),
    prefix_lengths: Sequence[int] = (0, 1024, 4096),
    decode_batches: Sequence[int] = (1, 4, 16, 64, 256),
    decode_contexts: Sequence[int] = (256, 1024, 4096, 16384),
    max_model_len: int = 16384,
    max_kv_tokens: int = 1 << 20,
    block_size: int = 16,
    repeats: int = 5,
    progress: Callable[[int, int], None] | None = None,
) -> pl.DataFrame:
    """Time ``model``'s attention per GPU and return vidur's ``attention.csv`` table.

    Prefill rows: one sequence, a chunk of ``prefill_chunks`` new tokens after a cached
    prefix of ``prefix_lengths`` tokens (causal). Decode rows: ``decode_batches``
    sequences of one new token against ``decode_contexts`` cached tokens each. Both are
    left out where the sequence exceeds ``max_model_len``, or the batch holds more than
    ``max_kv_tokens`` cached tokens (the GPU memory they need). Each row also times the
    write of its new tokens' keys and values into the cache (``attn_kv_cache_save``).

    Parameters
    ----------
    model : str or ModelSpec
        The architecture whose heads are timed (query and KV heads divided by each TP).
    timer : AttentionTimer
        ``TorchTimer()`` on a GPU, ``NumpyTimer()`` on a CPU, or your own.
    tp_degrees, prefill_chunks, prefix_lengths, decode_batches, decode_contexts : ints
        The grid.
    max_model_len, max_kv_tokens : int
        Limits on one sequence (at most the model's context window) and on a decode
        batch, in tokens.
    block_size : int
        KV block size recorded in the table (the timed caches are contiguous).
    repeats : int
        Timed calls per shape.
    progress : callable, optional
        Called with (rows done, rows in all) after each row.

    Returns
    -------
    pl.DataFrame
        vidur's columns: ``time_stats.{attn_prefill,attn_decode,attn_kv_cache_save}.*``
        (ms; the phase a row does not time is 0), n_embd, n_q_head, head_dim (fleetlab's
        addition, as in :func:`profile_operators`), n_kv_head,
        block_size, num_tensor_parallel_workers, max_model_len, batch_size,
        prefill_chunk_size, kv_cache_size, is_prefill, attention_backend.

    Raises
    ------
    ConfigError
        Unknown model, a TP degree that does not divide the heads, repeats < 1.
    """
    spec = model_spec(model)
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1 (found {repeats})")
    max_model_len = min(max_model_len, spec.max_context)
    grid: list[tuple[bool, int, int, int]] = [  # (is_prefill, batch, chunk, cached)
        (True, 1, c, k)
        for c in prefill_chunks
        for k in prefix_lengths
        if c + k <= max_model_len and c + k <= max_kv_tokens
    ]
    grid += [
        (False, b, 0, k)
        for b in decode_batches
        for k in decode_contexts
        if k <= max_model_len and b * k <= max_kv_tokens
    ]
    rows = []
    for tp in tp_degrees:
        if spec.num_heads % tp:
            raise ConfigError(f"tp={tp} does not divide {spec.name}'s {spec.num_heads} heads")
        hq, hkv = spec.num_heads // tp, max(1, spec.num_kv_heads // tp)
        for is_prefill, batch, chunk, cached in grid:
            q_len = chunk if is_prefill else 1
            shape = AttentionShape(batch, q_len, cached + q_len, hq, hkv, spec.dhead)
            samples, backend = timer.attention(shape, repeats)
            save = timer.kv_save(batch * q_len, hkv, spec.dhead, repeats)
            row: dict[str, float | int | bool | str] = {
                **_stats("attn_prefill", samples if is_prefill else [0.0]),
                **_stats("attn_decode", [0.0] if is_prefill else samples),
                **_stats("attn_kv_cache_save", save),
                "n_embd": spec.hidden_size,
                "n_q_head": spec.num_heads,
                "head_dim": spec.dhead,
                "n_kv_head": spec.num_kv_heads,
                "block_size": block_size,
                "num_tensor_parallel_workers": int(tp),
                "max_model_len": max_model_len,
                "batch_size": batch,
                "prefill_chunk_size": chunk,
                "kv_cache_size": cached,
                "is_prefill": is_prefill,
                "attention_backend": backend,
            }
            rows.append(row)
            if progress is not None:
                progress(len(rows), len(tp_degrees) * len(grid))
    return pl.DataFrame(rows)
