"""CPU threads for inference: how many a command uses on a shared machine."""

from __future__ import annotations

import math
import os

import torch

from reidkit.errors import ReidkitError
from reidkit.utils.limits import THREADS_PER_CPU, max_threads


def physical_cores() -> int:
    """Physical CPU cores (``psutil`` when installed, else ``os.cpu_count()``)."""
    try:
        import psutil

        return int(psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except ImportError:  # pragma: no cover - psutil is a dependency of the benchmarks only
        return int(os.cpu_count() or 1)


def default_cpu_threads() -> int:
    """Threads for CPU inference: ``OMP_NUM_THREADS`` when set, else the physical cores not already busy.

    The physical core count minus the whole part of the 1-minute load average (at least 1): on a busy
    machine more OpenMP threads than free cores spin at every barrier (BENCHMARKS.md, "Feature extraction").
    """
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = physical_cores()
    try:
        busy = math.floor(os.getloadavg()[0])
    except (OSError, AttributeError):  # Windows
        busy = 0
    return max(1, min(cores, cores - busy))


def configure_cpu_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (default ``default_cpu_threads``), at most ``THREADS_PER_CPU``
    per CPU; returns the number."""
    n = int(threads) if threads else default_cpu_threads()
    if n < 1 or (threads and n > max_threads()):  # OMP_NUM_THREADS is the host's own choice
        raise ReidkitError(f"threads: expected a number between 1 and {max_threads()} ({THREADS_PER_CPU} per CPU on "
                           f"this machine), got {threads}")
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
