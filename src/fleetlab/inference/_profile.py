"""``fleetlab inference profile``: time a model's operators and write vidur's CSV format.

The operators are those of one transformer layer under tensor parallelism (QKV and output
projections, MLP up/down projections, activation, norms, residual add, embedding), timed
for a range of token counts. The timer is pluggable: :class:`TorchTimer` uses CUDA events
on the local GPU; :class:`NumpyTimer` times the same shapes with numpy on the CPU (used by
tests and to exercise the pipeline where no GPU exists). The table has vidur's ``mlp.csv``
columns, so :func:`~fleetlab.inference.calibrate` reads it like vidur's own profiles.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import polars as pl

from fleetlab.errors import ConfigError
from fleetlab.inference._specs import ModelSpec, model_spec

__all__ = ["NumpyTimer", "OperatorTimer", "TorchTimer", "profile_operators"]

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
            if kind == "act":
                return x / (1 + np.exp(-x))
            return x + x

        op()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            op()
            out.append((time.perf_counter() - t0) * 1e3)
        return out


class TorchTimer:
    """CUDA-event timer with PyTorch on the local GPU (bf16).

    Raises
    ------
    ConfigError
        PyTorch is not installed or no CUDA device is visible.
    """

    def __init__(self, device: str = "cuda") -> None:
        try:
            import torch
        except ImportError:  # pragma: no cover - depends on the machine
            raise ConfigError("profiling on a GPU needs PyTorch (pip install torch)") from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("no CUDA device visible (expected an NVIDIA GPU, found none)")
        self.torch = torch
        self.device = device

    def time(
        self, kind: Kind, tokens: int, k: int, n: int, repeats: int
    ) -> list[float]:  # pragma: no cover
        """Milliseconds per call, measured with CUDA events after a warm-up."""
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
            if kind == "act":
                return torch.nn.functional.silu(x)
            return x + x

        for _ in range(3):
            op()
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


def profile_operators(
    model: str | ModelSpec,
    *,
    timer: OperatorTimer,
    tp_degrees: Sequence[int] = (1, 2, 4, 8),
    token_counts: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096),
    repeats: int = 5,
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

    Returns
    -------
    pl.DataFrame
        Columns ``time_stats.<op>.{min,max,mean,median,std}`` (ms) for every operator,
        then n_head, n_kv_head, n_embd, n_expanded_embd, vocab_size, use_gated_mlp,
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
            "attn_rope": ("add", q + kv, q + kv),
            "attn_post_proj": ("gemm", q, h),
            "post_attention_layernorm": ("norm", h, h),
            "mlp_up_proj": ("gemm", h, up),
            "mlp_act": ("act", inter, inter),
            "mlp_down_proj": ("gemm", inter, h),
            "add": ("add", h, h),
        }
        for t in token_counts:
            row: dict[str, float | int | bool] = {}
            for op in _OPS:
                kind, k, n = shapes[op]
                s = np.asarray(timer.time(kind, int(t), k, n, repeats), dtype=np.float64)
                row[f"time_stats.{op}.min"] = float(s.min())
                row[f"time_stats.{op}.max"] = float(s.max())
                row[f"time_stats.{op}.mean"] = float(s.mean())
                row[f"time_stats.{op}.median"] = float(np.median(s))
                row[f"time_stats.{op}.std"] = float(s.std())
            row.update(
                {
                    "n_head": spec.num_heads,
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
    return pl.DataFrame(rows)
