"""Helpers shared by the benchmark scripts (not a benchmark itself: no table of its own)."""

from __future__ import annotations

import contextlib

import psutil


def cpu_seconds() -> float:
    """CPU time of this process and its live children (DataLoader workers)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += sum(child.cpu_times()[:2])
    return total
