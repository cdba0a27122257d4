"""Helpers shared by the benchmark scripts (not a benchmark itself: no table of its own)."""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import psutil


def cpu_seconds() -> float:
    """CPU time of this process (``time.process_time``, nanosecond clock) and its live children (DataLoader
    workers; ``psutil``, clock-tick resolution)."""
    total = time.process_time()
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total


def rate(count: float, seconds: float) -> float:
    """``count / seconds``, or NaN when ``seconds`` is not positive (a span below the clock's resolution):
    a quick run on an idle clock must print "n/a", not stop on a division by zero."""
    return count / seconds if seconds > 0 else math.nan


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when either is NaN or ``b`` is zero."""
    return a / b if b and not (math.isnan(a) or math.isnan(b)) else math.nan


def fmt(value: float, spec: str = ".0f", suffix: str = "") -> str:
    """``value`` formatted with ``spec`` (and ``suffix``), or "n/a" for NaN."""
    return "n/a" if math.isnan(value) else f"{value:{spec}}{suffix}"


def interleaved_times(runs: dict[str, Any], batches: list[Any], repeat: int = 1
                      ) -> tuple[dict[str, float], dict[str, float], dict[str, int]]:
    """Wall seconds, process CPU seconds and images per named run, each called on every batch in turn; the
    order rotates from batch to batch so that no run always goes first."""
    wall = dict.fromkeys(runs, 0.0)
    cpu = dict.fromkeys(runs, 0.0)
    count = dict.fromkeys(runs, 0)
    order = list(runs)
    for i, x in enumerate(batches * repeat):
        k = i % len(order)
        for e in order[k:] + order[:k]:
            t, c = time.perf_counter(), time.process_time()
            runs[e](x)
            wall[e] += time.perf_counter() - t
            cpu[e] += time.process_time() - c
            count[e] += x.shape[0]
    return wall, cpu, count
