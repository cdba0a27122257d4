"""Multi-process training under ``torchrun``: detection from environment variables, setup, helpers.

``torchrun --nproc_per_node N -m reidkit train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; ``init_distributed`` reads them and starts a process group (NCCL on
CUDA, gloo on CPU). Without them everything runs in one process (rank 0 of 1).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from reidkit.errors import ConfigError
from reidkit.utils.devices import resolve_device

__all__ = ["DistInfo", "barrier", "broadcast_object", "cleanup", "init_distributed", "warnings_on_rank_zero"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size, its local rank and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        """True when running with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints, logs and plots (rank 0)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r}: expected an integer") from None


def _check_one_gpu_per_process(option: str, dev: torch.device, local_rank: int) -> None:
    """NCCL needs a GPU of its own for every process of a node: say so in one line instead of its error."""
    gpus = torch.cuda.device_count()
    if local_rank >= gpus:
        raise ConfigError(f"train.device {option!r}: torchrun started more processes on this node than it has GPUs "
                          f"(local rank {local_rank}, {gpus} GPU{'s' if gpus != 1 else ''}); start one process per "
                          f"GPU (--nproc_per_node {gpus}) or train on CPU processes with train.device=cpu")
    if dev.index != local_rank:
        raise ConfigError(f"train.device {option!r}: under torchrun every process would use {dev}; use 'cuda' or "
                          f"'auto' (each process takes the GPU of its local rank)")


def init_distributed(device: str = "auto") -> DistInfo:
    """Start the process group if ``WORLD_SIZE`` > 1 (``torchrun``), and pick this process's device."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local_rank, option="train.device")
    if world_size > 1 and dev.type == "cuda":
        _check_one_gpu_per_process(device, dev, local_rank)
    if world_size > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.enabled and dist.is_initialized():
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index or 0])
        else:
            dist.barrier()


def broadcast_object(info: DistInfo, obj: object, src: int = 0) -> object:
    """Send a picklable object from ``src`` to every process; returns it everywhere."""
    if not (info.enabled and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=info.device if info.device.type == "cuda" else None)
    return box[0]


def all_reduce_flag(info: DistInfo, flag: bool) -> bool:
    """True if ``flag`` is true on any process."""
    if not (info.enabled and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


@contextlib.contextmanager
def warnings_on_rank_zero(info: DistInfo) -> Iterator[None]:
    """Within it, only rank 0 shows warnings: for the work every process does alike (reading the config,
    the data, the checkpoint), where each rank would print the same line."""
    if info.is_main:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def cleanup(info: DistInfo) -> None:
    """Tear the process group down (no-op in a single process)."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
