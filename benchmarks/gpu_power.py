"""Measure a GPU's board power under serving-like kernels and compare with fleetlab's curve.

fleetlab charges a busy GPU ``GpuSpec.power_w(compute_util, memory_util)`` watts (the
curve and its source are in docs/inference.md). This script runs kernels of known work on
the local NVIDIA GPU with PyTorch — idle, bf16 and fp8 GEMMs from decode-sized (a few tokens,
weight streaming) to prefill-sized (compute-bound), causal attention, a device-to-device copy — measures
each one's achieved FLOP/s and bytes/s and its energy from NVML's energy counter, and
prints measured against predicted watts. It needs a GPU, PyTorch and nvidia-ml-py; CI
runs neither. Results are recorded in docs/inference-validation.md.

Usage::

    python benchmarks/gpu_power.py [--gpu h100] [--seconds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import pynvml
import torch

from fleetlab.inference import gpu_spec


def _energy_j(handle: object) -> float:
    return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3


_SW_POWER_CAP = 0x4  # nvmlClocksEventReasonSwPowerCap: the clock is lowered to hold the limit


class _ClockSampler(threading.Thread):
    """Polls the SM clock and the clock-lowering reasons every 10 ms while a workload runs."""

    def __init__(self, handle: object) -> None:
        super().__init__(daemon=True)
        self.handle, self.mhz, self.capped = handle, [], []
        self.reasons = (
            getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or pynvml.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            self.mhz.append(pynvml.nvmlDeviceGetClockInfo(self.handle, pynvml.NVML_CLOCK_SM))
            self.capped.append(bool(self.reasons(self.handle) & _SW_POWER_CAP))


def _measure(handle: object, op, flops: float, nbytes: float, seconds: float) -> dict:
    """Run ``op`` back to back for about ``seconds``; rates, mean board power and SM clock."""
    for _ in range(3):
        op()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    calls = 0
    while time.perf_counter() - t0 < 0.2:  # calls per second, to size the timed loop
        op()
        calls += 1
    torch.cuda.synchronize()
    per_call = (time.perf_counter() - t0) / calls
    n = max(1, int(seconds / per_call))
    clocks = _ClockSampler(handle)
    clocks.start()
    e0, t0 = _energy_j(handle), time.perf_counter()
    for _ in range(n):
        op()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    watts = (_energy_j(handle) - e0) / dt
    clocks.stop.set()
    clocks.join()
    return {
        "seconds": dt,
        "flops_per_s": flops * n / dt,
        "bytes_per_s": nbytes * n / dt,
        "w": watts,
        "sm_mhz": sum(clocks.mhz) / max(1, len(clocks.mhz)),
        "power_capped": sum(clocks.capped) / max(1, len(clocks.capped)),
    }


def main() -> None:
    """Measure, predict, print a table, and optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", default="h100", help="fleetlab GPU spec to predict with")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per workload")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()

    spec = gpu_spec(args.gpu)
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    name = pynvml.nvmlDeviceGetName(handle)
    limit_w = pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3
    max_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
    rows = []

    torch.cuda.synchronize()
    time.sleep(args.seconds)  # settle, then idle power over the same window
    e0, t0 = _energy_j(handle), time.perf_counter()
    time.sleep(args.seconds)
    idle = (_energy_j(handle) - e0) / (time.perf_counter() - t0)
    rows.append({"workload": "idle", "w": idle, "u_compute": 0.0, "u_memory": 0.0})

    bf16 = torch.bfloat16
    k, n = 8192, 28672  # Llama-3-70B's MLP up projection at TP 1 (gate + up: 2 x 14336)
    w = torch.randn(k, n, device="cuda", dtype=bf16)
    for m in (1, 8, 32, 128, 512, 2048, 8192):
        x = torch.randn(m, k, device="cuda", dtype=bf16)
        r = _measure(
            handle,
            lambda x=x, w=w: x @ w,
            2.0 * m * k * n,
            2.0 * (k * n + m * k + m * n),
            args.seconds,
        )
        rows.append({"workload": f"gemm m={m} k={k} n={n}", **r})
    # fp8 (e4m3) GEMMs of the same shape, as fp8 deployments run them
    w8 = w.t().contiguous().to(torch.float8_e4m3fn)  # n x k, passed transposed (column-major)
    one = torch.tensor(1.0, device="cuda")
    for m in (32, 512, 8192):
        x8 = torch.randn(m, k, device="cuda", dtype=bf16).to(torch.float8_e4m3fn)
        try:
            r = _measure(
                handle,
                lambda x8=x8, w8=w8: torch._scaled_mm(x8, w8.t(), one, one, out_dtype=bf16),
                2.0 * m * k * n,
                k * n + m * k + 2.0 * m * n,
                args.seconds,
            )
        except RuntimeError as exc:  # no fp8 tensor cores, or an older PyTorch
            print(f"fp8 GEMM skipped: {exc}")
            break
        rows.append({"workload": f"fp8 gemm m={m} k={k} n={n}", "dtype": "fp8", **r})
    del w, w8
    # causal prefill attention, 8k tokens, 32 query / 8 KV heads of 128 (Llama-3-8B)
    s, d = 8192, 128
    q = torch.randn(1, 32, s, d, device="cuda", dtype=bf16)
    kv = torch.randn(1, 8, s, d, device="cuda", dtype=bf16)
    r = _measure(
        handle,
        lambda q=q, kv=kv: torch.nn.functional.scaled_dot_product_attention(
            q, kv, kv, is_causal=True, enable_gqa=True
        ),
        2.0 * 32 * s * s * d,  # QK^T and PV over the causal half
        2.0 * (q.numel() + 2 * kv.numel() + q.numel()),
        args.seconds,
    )
    rows.append({"workload": f"causal attention {s} tokens", **r})
    del q, kv
    src = torch.empty(4 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    r = _measure(handle, lambda: dst.copy_(src), 0.0, 2.0 * src.numel(), args.seconds)
    rows.append({"workload": "copy 4 GiB", **r})

    for r in rows:
        if r["workload"] != "idle":
            r["u_compute"] = r["flops_per_s"] / spec.peak_flops(r.get("dtype", "bf16"))
            r["u_memory"] = r["bytes_per_s"] / spec.hbm_bytes_per_s
        r["predicted_w"] = (
            spec.idle_w if r["workload"] == "idle" else spec.power_w(r["u_compute"], r["u_memory"])
        )
    print(
        f"{name}: enforced power limit {limit_w:.0f} W; fleetlab spec {spec.name}: "
        f"TDP {spec.tdp_w:.0f} W, idle {spec.idle_w:.0f} W; max SM clock {max_mhz} MHz"
    )
    print(
        f"{'workload':32s} {'TFLOP/s':>8s} {'TB/s':>6s} {'u_comp':>7s} {'u_mem':>6s} "
        f"{'meas W':>7s} {'pred W':>7s} {'ratio':>6s} {'SM MHz':>7s} {'capped':>6s}"
    )
    for r in rows:
        print(
            f"{r['workload']:32s} {r.get('flops_per_s', 0) / 1e12:8.1f} "
            f"{r.get('bytes_per_s', 0) / 1e12:6.2f} {r['u_compute']:7.3f} {r['u_memory']:6.3f} "
            f"{r['w']:7.1f} {r['predicted_w']:7.1f} {r['predicted_w'] / r['w']:6.2f} "
            f"{r.get('sm_mhz', 0):7.0f} {r.get('power_capped', 0):6.2f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"gpu": name, "power_limit_w": limit_w, "max_sm_mhz": max_mhz, "rows": rows},
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
