"""``fleetlab inference profile-network``: time collectives between this machine's GPUs.

Tensor parallelism all-reduces activations twice per layer and pipeline parallelism sends
them between stages; vidur's ``all_reduce.csv`` and ``send_recv.csv`` hold such times by
message size (bytes) and GPU count, and :func:`~fleetlab.inference.calibrate` fits the
all-reduce latency and bandwidth to them (``--network``). This module measures the same
table on the local machine: one process per GPU, NCCL, CUDA events, the times of rank 0.
``device="cpu"`` runs the same code with the gloo backend on CPU processes, which is how
its logic is tested where there is no GPU (the times then say nothing about a GPU).
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import polars as pl

from fleetlab.errors import ConfigError
from fleetlab.inference._profile import _stats

__all__ = ["profile_collectives"]

Collective = Literal["all_reduce", "send_recv"]
#: message sizes in bytes: 2 KiB to 256 MiB, four per doubling from 64 KiB
_SIZES = tuple(
    sorted({2048, 8192, 32768} | {int(2 ** (k / 4)) // 2048 * 2048 for k in range(64, 113)})
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int,
    world: int,
    port: int,
    device: str,
    collective: Collective,
    sizes: Sequence[int],
    repeats: int,
    out: str,
) -> None:  # pragma: no cover - runs in spawned processes
    import torch
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    dtype, width = (torch.bfloat16, 2) if cuda else (torch.float32, 4)
    rows = []
    for size in sizes:
        buf = torch.ones(max(1, size // width), dtype=dtype, device=device)

        def op(buf: torch.Tensor = buf) -> None:
            if collective == "all_reduce":
                dist.all_reduce(buf)
            elif rank == 0:
                dist.send(buf, 1)
            else:
                dist.recv(buf, 0)

        for _ in range(3):
            op()
        samples = []
        for _ in range(repeats):
            dist.barrier()
            if cuda:
                torch.cuda.synchronize()
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                op()
                end.record()
                end.synchronize()
                samples.append(float(start.elapsed_time(end)))
            else:
                t0 = time.perf_counter()
                op()
                samples.append((time.perf_counter() - t0) * 1e3)
        rows.append({"size": int(buf.numel() * width), "samples": samples})
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    dist.destroy_process_group()


def profile_collectives(
    *,
    collective: Collective = "all_reduce",
    world_sizes: Sequence[int] = (2, 4, 8),
    sizes: Sequence[int] = _SIZES,
    repeats: int = 10,
    device: Literal["cuda", "cpu"] = "cuda",
) -> pl.DataFrame:
    """Time ``collective`` for each GPU count and message size; vidur's network table.

    Parameters
    ----------
    collective : {"all_reduce", "send_recv"}
        What to time; ``send_recv`` (rank 0 to rank 1) runs on 2 GPUs only.
    world_sizes : sequence of int
        GPU counts (each at most the visible GPUs).
    sizes : sequence of int
        Message sizes in bytes.
    repeats : int
        Timed calls per size, each after a barrier.
    device : {"cuda", "cpu"}
        NCCL on GPUs, or gloo on CPU processes (to exercise the code without a GPU).

    Returns
    -------
    pl.DataFrame
        vidur's columns: ``time_stats.<collective>.{min,max,mean,median,std}`` (ms),
        rank (0), num_workers, size (bytes), collective, devices_per_node,
        max_devices_per_node.

    Raises
    ------
    ConfigError
        PyTorch missing, no CUDA device, more GPUs asked for than are visible, a
        ``send_recv`` on other than 2 GPUs, repeats < 1.
    """
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1 (found {repeats})")
    if collective == "send_recv" and set(world_sizes) != {2}:
        raise ConfigError(f"send_recv runs between 2 GPUs (asked for {list(world_sizes)})")
    if not world_sizes or min(world_sizes) < 2:
        raise ConfigError(f"a collective needs at least 2 workers (found {list(world_sizes)})")
    try:
        import torch
        import torch.multiprocessing as mp
    except ImportError:
        raise ConfigError("profiling collectives needs PyTorch (pip install torch)") from None
    if device == "cuda":
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        need = max(world_sizes)
        if need > have:
            raise ConfigError(
                f"{collective} over {need} GPUs needs {need} visible GPUs; found {have} "
                "(pass --workers up to the GPUs you have)"
            )
    frames = []
    for world in world_sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "rank0.json")
            args = (world, _free_port(), device, collective, list(sizes), repeats, out)
            mp.spawn(_worker, args=args, nprocs=world, join=True)
            rows = json.loads(Path(out).read_text())
        frames.append(
            pl.DataFrame(
                [
                    {
                        **_stats(collective, r["samples"]),
                        "rank": 0,
                        "num_workers": world,
                        "size": r["size"],
                        "collective": collective,
                        "devices_per_node": world,
                        "max_devices_per_node": max(world_sizes),
                    }
                    for r in rows
                ]
            )
        )
    return pl.concat(frames)
