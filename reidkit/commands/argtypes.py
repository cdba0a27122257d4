"""Argument types every command uses for its paths, numbers and resource knobs: a value a command cannot use
(an empty or over-long path, a number out of range, NaN, a device that does not exist in any form) is a one-line
argparse error naming the flag and what was expected, before any work.

Examples:
    >>> path_arg("runs/x")
    'runs/x'
    >>> int_in(1, 8)("3")
    3
    >>> float_in(0, 1)("0.5")
    0.5
    >>> device_arg("cuda:1")
    'cuda:1'
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable

from reidkit.utils.limits import (
    MAX_BATCH_IMAGES,
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    MAX_SEED,
    THREADS_PER_CPU,
    max_threads,
)


def path_arg(text: str) -> str:
    """A path given on the command line: non-empty (an empty one would silently mean the current folder), in the
    file system's encoding (any bytes but NUL; a name in other bytes than UTF-8 is fine), each name at most
    ``MAX_NAME_BYTES`` and the whole at most ``MAX_PATH_BYTES`` bytes (what the system can open)."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty string (write . for the current folder)")
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError("expected a path in the file system's encoding, got characters it "
                                         "cannot hold") from None
    if b"\0" in raw:
        raise argparse.ArgumentTypeError("expected a path, got one with a NUL byte")
    if len(raw) > MAX_PATH_BYTES:
        raise argparse.ArgumentTypeError(f"expected a path of at most {MAX_PATH_BYTES} bytes, got {len(raw)}")
    longest = max(raw.split(b"/"), key=len)
    if len(longest) > MAX_NAME_BYTES:
        raise argparse.ArgumentTypeError(f"a file or folder name in the path is {len(longest)} bytes long; "
                                         f"expected names of at most {MAX_NAME_BYTES} bytes")
    return text


def int_in(low: int, high: int, why: str = "") -> Callable[[str], int]:
    """The type of an integer option within ``low``..``high`` (``why`` says where the upper bound comes from)."""
    def parse(text: str) -> int:
        try:
            value = int(text.strip()) if len(text) <= 40 else None
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text[:40]!r}")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer between {low} and {high}{why}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(low: float, high: float, *, above: bool = False, why: str = "") -> Callable[[str], float]:
    """The type of a number option within ``low``..``high`` (greater than ``low`` when ``above``); NaN and
    infinities are refused."""
    def parse(text: str) -> float:
        try:
            value = float(text) if len(text) <= 40 else math.nan
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text[:40]!r}")
        if not (low < value if above else low <= value) or value > high:
            left = f"greater than {low:g} and at most" if above else f"between {low:g} and"
            raise argparse.ArgumentTypeError(f"expected a number {left} {high:g}{why}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def seed() -> Callable[[str], int]:
    """``--seed``: 0 .. 2³²-1 (what numpy's generators take)."""
    return int_in(0, MAX_SEED)


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d{1,3})?")


def device_arg(text: str) -> str:
    """``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (whether this machine has it is checked
    when the device is chosen, ``reidkit.utils.devices.resolve_device``)."""
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N, mps or auto, got {text[:40]!r}")
    return text


def threads() -> Callable[[str], int]:
    """``--threads``: 1 .. ``THREADS_PER_CPU`` per logical CPU of this machine."""
    return int_in(1, max_threads(), f" ({THREADS_PER_CPU} per CPU on this machine)")


def workers() -> Callable[[str], int]:
    """``--workers`` (decoding threads, rendering processes): 0 .. ``THREADS_PER_CPU`` per logical CPU."""
    return int_in(0, max_threads(), f" ({THREADS_PER_CPU} per CPU on this machine)")


def batch_size() -> Callable[[str], int]:
    """``--batch-size``: 1 .. ``MAX_BATCH_IMAGES`` images per forward pass."""
    return int_in(1, MAX_BATCH_IMAGES)
