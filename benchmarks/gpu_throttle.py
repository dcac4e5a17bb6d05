"""How fast a GPU pulls its SM clock down to hold its power limit, from idle.

fleetlab's performance model uses efficiencies measured at the *stock* clock, which for
compute-bound kernels is well below the maximum (docs/inference-validation.md §1e). An
operator profiled alone, in short bursts, may run at a higher clock than the same kernel
inside a long prefill. This script starts a compute-bound kernel on an idle GPU and runs it
back to back for a few seconds, timing every call with CUDA events while a thread samples
the SM clock and the board power every 5 ms, so the time the clock takes to settle (and
what a burst of the length a profiler times gets) can be read off. It needs a GPU, PyTorch
and nvidia-ml-py; CI runs neither.

Usage::

    python benchmarks/gpu_throttle.py [--seconds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import pynvml
import torch


def _run(handle: object, name: str, op, flops: float, seconds: float) -> dict:
    """Idle 3 s, then ``op`` back to back for ``seconds``: per-call times and samples."""
    torch.cuda.synchronize()
    time.sleep(3.0)
    samples: list[tuple[float, int, float]] = []
    stop = threading.Event()
    t0 = time.perf_counter()

    def sample() -> None:
        while not stop.wait(0.005):
            samples.append(
                (
                    (time.perf_counter() - t0) * 1e3,
                    pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                    pynvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
                )
            )

    thread = threading.Thread(target=sample, daemon=True)
    start = torch.cuda.Event(enable_timing=True)
    events = []
    thread.start()
    time.sleep(0.05)  # idle samples first
    start.record()
    launched = time.perf_counter()
    while time.perf_counter() - launched < seconds:
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        op()
        b.record()
        events.append((a, b))
        if len(events) % 64 == 0:  # keep the queue short so CPU time tracks GPU time
            b.synchronize()
    torch.cuda.synchronize()
    stop.set()
    thread.join()
    offset = (launched - t0) * 1e3  # the start event, on the sampler's clock (approx.)
    calls = [
        (offset + start.elapsed_time(a), a.elapsed_time(b)) for a, b in events
    ]  # (start ms, duration ms)
    return {
        "workload": name,
        "flops_per_call": flops,
        "calls": calls,
        "samples": samples,
    }


def _summary(run: dict, max_mhz: int) -> None:
    calls, samples = run["calls"], run["samples"]
    t_first = calls[0][0]
    print(f"{run['workload']}: {len(calls)} calls")
    for lo, hi in ((0, 20), (20, 50), (50, 100), (100, 200), (200, 500), (500, 1000), (1000, 2000)):
        window = [d for t, d in calls if lo <= t - t_first < hi]
        clocks = [m for t, m, _ in samples if lo <= t - t_first < hi]
        watts = [w for t, _, w in samples if lo <= t - t_first < hi]
        if not window:
            continue
        ms = sum(window) / len(window)
        print(
            f"  {lo:5d}-{hi:5d} ms: {ms:7.3f} ms/call "
            f"{run['flops_per_call'] / ms / 1e9:8.1f} TFLOP/s  "
            f"SM {sum(clocks) / max(1, len(clocks)) / max_mhz:5.3f} of max  "
            f"{sum(watts) / max(1, len(watts)):6.0f} W"
        )


def main() -> None:
    """Measure, print per time window, and optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds of each workload")
    ap.add_argument("--json", help="write the calls and samples here")
    args = ap.parse_args()
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    max_mhz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
    bf16 = torch.bfloat16
    runs = []
    for m in (8192, 2048):
        k, n = 8192, 28672
        x = torch.randn(m, k, device="cuda", dtype=bf16)
        w = torch.randn(k, n, device="cuda", dtype=bf16)
        runs.append(
            _run(
                handle,
                f"gemm m={m} k={k} n={n}",
                lambda x=x, w=w: x @ w,
                2.0 * m * k * n,
                args.seconds,
            )
        )
    s, d = 8192, 128
    q = torch.randn(1, 32, s, d, device="cuda", dtype=bf16)
    kv = torch.randn(1, 8, s, d, device="cuda", dtype=bf16)
    runs.append(
        _run(
            handle,
            f"causal attention {s} tokens",
            lambda: torch.nn.functional.scaled_dot_product_attention(
                q, kv, kv, is_causal=True, enable_gqa=True
            ),
            2.0 * 32 * s * s * d,
            args.seconds,
        )
    )
    print(f"{pynvml.nvmlDeviceGetName(handle)}: max SM clock {max_mhz} MHz")
    for run in runs:
        _summary(run, max_mhz)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"max_sm_mhz": max_mhz, "runs": runs}, f)


if __name__ == "__main__":
    main()
