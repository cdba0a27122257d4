"""Argument types every command uses for its paths and resource knobs: an empty path or a number the machine
cannot run is a one-line argparse error naming the flag and the bound, before any work.

Examples:
    >>> path_arg("runs/x")
    'runs/x'
    >>> int_in(1, 8)("3")
    3
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from reidkit.utils.limits import MAX_BATCH_IMAGES, THREADS_PER_CPU, max_threads


def path_arg(text: str) -> str:
    """A path given on the command line: any non-empty text (an empty one would silently mean the current
    folder)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string (write . for the current folder)")
    return text


def int_in(low: int, high: int, why: str = "") -> Callable[[str], int]:
    """The type of an integer option within ``low``..``high`` (``why`` says where the upper bound comes from)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer between {low} and {high}{why}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def threads() -> Callable[[str], int]:
    """``--threads``: 1 .. ``THREADS_PER_CPU`` per logical CPU of this machine."""
    return int_in(1, max_threads(), f" ({THREADS_PER_CPU} per CPU on this machine)")


def workers() -> Callable[[str], int]:
    """``--workers`` (decoding threads, rendering processes): 0 .. ``THREADS_PER_CPU`` per logical CPU."""
    return int_in(0, max_threads(), f" ({THREADS_PER_CPU} per CPU on this machine)")


def batch_size() -> Callable[[str], int]:
    """``--batch-size``: 1 .. ``MAX_BATCH_IMAGES`` images per forward pass."""
    return int_in(1, MAX_BATCH_IMAGES)
