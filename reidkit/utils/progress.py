"""Progress of a long loop, the one way reidkit shows it: a tqdm bar on a terminal, plain lines in a log.

A bar redraws itself with carriage returns, which a log file (output redirected) keeps as one endless line.
When the stream is not a terminal, ``progress`` writes instead one plain line (``embed: 2048/5000 img``)
each time another tenth of the work is done, so at most ten lines however long the loop; with
``lines=False`` it writes nothing there, for a caller that prints its own line per unit of work (the
trainer's line per epoch).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["Progress", "is_terminal", "progress"]


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes and closed streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Progress:
    """What ``progress`` returns: ``update(n)``, ``set_postfix(...)``, ``close()``; a context manager."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, mode: str, stream: TextIO,
                 leave: bool) -> None:
        self.total, self.desc, self.unit, self.n = int(total), desc, unit, int(initial)
        self.mode, self.stream = mode, stream
        self._tenth = self._tenth_of(self.n)
        self._bar: Any = None
        if mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                             dynamic_ncols=True, file=stream)

    def _tenth_of(self, n: int) -> int:
        return n * 10 // self.total if self.total > 0 else 0

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines" and self._tenth_of(self.n) > self._tenth:
            self._tenth = self._tenth_of(self.n)
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}", file=self.stream, flush=True)

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the bar (a terminal only)."""
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def close(self) -> None:
        """End the bar (a terminal only; the plain lines need no end)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int, desc: str, unit: str = "it", *, enabled: bool = True, initial: int = 0,
             lines: bool = True, leave: bool = True, stream: TextIO | None = None) -> Progress:
    """Progress of ``total`` units on ``stream`` (default: standard error at the time of the call): a tqdm bar
    when it is a terminal, else a plain line per tenth of ``total`` done (none with ``lines=False``); nothing
    when ``enabled`` is False. ``initial`` units are done already (a resumed epoch)."""
    out = sys.stderr if stream is None else stream
    mode = "off" if not enabled else "bar" if is_terminal(out) else "lines" if lines else "off"
    return Progress(total, desc, unit, initial, mode, out, leave)
