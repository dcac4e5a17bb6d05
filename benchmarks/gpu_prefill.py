"""A whole model's prefill timed on the local GPU, against fleetlab's per-operator model.

Builds a model from its architecture alone (Hugging Face ``transformers``, random bf16
weights: timing does not depend on the values), runs single-prompt prefills of several
lengths with PyTorch's SDPA attention, and prints the measured time next to what
:func:`fleetlab.inference.prefill_breakdown` charges the same prompt on the same GPU —
with the GPU's built-in efficiencies and, when ``--profile DIR`` holds this GPU's
``mlp.csv`` / ``attention.csv`` from ``fleetlab inference profile``, with efficiencies
calibrated from them. The engine's CPU overhead (``cpu``) is left out: a bare forward pass
has no scheduler. One more prefill per length runs under PyTorch's profiler, and its
GPU kernel time is split into GEMMs, attention and the rest (norms, rotary, activation,
residual adds, copies) next to the same split of the prediction. Needs a GPU, PyTorch and transformers; CI runs neither. Results are
recorded in docs/inference-validation.md §1c.

Usage::

    python benchmarks/gpu_prefill.py [--model llama-3.1-8b] [--gpu h100] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
import transformers

from fleetlab.inference import calibrate, gpu_spec, model_spec
from fleetlab.inference._perf import prefill_breakdown


def build(name: str) -> torch.nn.Module:
    """A randomly initialised bf16 model with ``name``'s architecture, on the GPU."""
    spec = model_spec(name)
    common = dict(
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        vocab_size=spec.vocab_size,
        max_position_embeddings=32768,
        attn_implementation="sdpa",
    )
    if name.startswith("qwen3"):
        cfg = transformers.Qwen3Config(head_dim=spec.dhead, **common)
        cls = transformers.Qwen3ForCausalLM
    else:
        cfg = transformers.LlamaConfig(**common)
        cls = transformers.LlamaForCausalLM
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = cls(cfg)
    return model.eval()


def time_prefill(model: torch.nn.Module, tokens: int, repeats: int = 5) -> float:
    """Median seconds of one prompt's forward pass (logits of the last token only)."""
    ids = torch.randint(0, model.config.vocab_size, (1, tokens), device="cuda")
    out = []
    with torch.inference_mode():
        for i in range(repeats + 2):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
            end.record()
            torch.cuda.synchronize()
            if i >= 2:
                out.append(start.elapsed_time(end) / 1e3)
    return sorted(out)[len(out) // 2]


_GEMM = re.compile(r"gemm|nvjet|cutlass|xmma|cublas", re.I)
_ATTENTION = re.compile(r"flash|fmha|attention", re.I)


def kernel_breakdown(model: torch.nn.Module, tokens: int) -> dict[str, float]:
    """GPU kernel seconds of one prefill by class (gemm, attention, other), from CUPTI."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    ids = torch.randint(0, model.config.vocab_size, (1, tokens), device="cuda")
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CUDA]) as prof:
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
        torch.cuda.synchronize()
    out = {"gemm": 0.0, "attention": 0.0, "other": 0.0}
    for e in prof.key_averages():
        if e.device_type != DeviceType.CUDA:
            continue
        us = getattr(e, "self_device_time_total", None) or e.self_cuda_time_total
        kind = (
            "attention" if _ATTENTION.search(e.key) else "gemm" if _GEMM.search(e.key) else "other"
        )
        out[kind] += us * 1e-6
    return out


#: fleetlab's prefill_breakdown parts in each kernel class
_PARTS = {
    "gemm": ("qkv", "o_proj", "mlp_up", "mlp_down", "lm_head"),
    "attention": ("attention",),
    "other": ("norms_residual", "rope", "qk_norm", "activation", "embedding"),
}


def main() -> None:
    """Measure, predict, print a table, and optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--profile", type=Path, help="folder with mlp.csv and attention.csv")
    ap.add_argument("--tokens", type=int, nargs="+", default=[256, 1024, 2048, 4096, 8192])
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()

    spec, gpu = model_spec(args.model), gpu_spec(args.gpu)
    effs = {"built-in": gpu.efficiency}
    if args.profile:
        effs["profiled"], _ = calibrate(
            gpu, [args.profile / "mlp.csv"], attention=args.profile / "attention.csv"
        )
    model = build(args.model)
    rows = []
    for t in args.tokens:
        row: dict[str, float | int | str] = {"model": spec.name, "tokens": t}
        row["measured_ms"] = time_prefill(model, t) * 1e3
        kernels = kernel_breakdown(model, t)
        for kind, sec in kernels.items():
            row[f"kernels_{kind}_ms"] = sec * 1e3
        for label, eff in effs.items():
            parts = prefill_breakdown(spec, gpu, t, efficiency=eff)
            row[f"{label}_ms"] = (sum(parts.values()) - parts["cpu"]) * 1e3
            for kind, names in _PARTS.items():
                row[f"{label}_{kind}_ms"] = sum(parts[n] for n in names) * 1e3
        rows.append(row)
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
