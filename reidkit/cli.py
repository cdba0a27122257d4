"""The ``reidkit`` command: one entry point, each subcommand a thin function over the library.

Each subcommand lives in ``reidkit/commands/<name>.py`` and defines
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
subcommand runs, so ``reidkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import NoReturn, TextIO

from reidkit.errors import ReidkitError
from reidkit.version import __version__

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "datasets": ("reidkit.commands.datasets", "print a dataset's statistics table (ids, images, cameras per split)"),
    "synth": ("reidkit.commands.synth", "generate a synthetic pedestrian dataset in the Market-1501 layout"),
    "models": ("reidkit.commands.models", "list the models with parameter counts and embedding sizes"),
    "presets": ("reidkit.commands.presets", "list the training presets shipped with reidkit and the paper row of each"),
    "train": ("reidkit.commands.train", "train a model from a preset or a YAML config (torchrun for many GPUs)"),
    "demo": ("reidkit.commands.demo", "synthetic data -> train STADB -> evaluate -> report, in minutes on a CPU"),
    "eval": ("reidkit.commands.eval", "evaluate a checkpoint or saved features (mAP, CMC, mINP, re-ranking)"),
    "extract": ("reidkit.commands.extract", "embed a folder or CSV of images into a features file"),
    "index": ("reidkit.commands.index", "build, extend, shrink or refresh a gallery index (exact or approximate)"),
    "search": ("reidkit.commands.search", "search a gallery index with query images (top-k, rank-list picture)"),
    "export": ("reidkit.commands.export", "export a checkpoint to ONNX (and INT8) and check it against PyTorch"),
    "visualize": ("reidkit.commands.visualize", "draw attention maps, drop masks and rank lists"),
    "report": ("reidkit.commands.report", "write a self-contained HTML evaluation report"),
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one ``reidkit: error:`` line (exit 2), as every other mistake."""

    def error(self, message: str) -> NoReturn:
        """Print ``reidkit: error: <prog>: <message>`` and exit with status 2."""
        self.exit(2, f"reidkit: error: {printable(f'{self.prog}: {message} (see {self.prog} --help)')}\n")


_ESCAPES = {**{c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, 0x85)}, ord("\n"): "\\n", ord("\r"): "\\r",
            ord("\t"): "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def printable(text: str) -> str:
    """``text`` on one line: control characters (a newline or an escape sequence in a file name) written as
    backslash escapes."""
    return text.translate(_ESCAPES)


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
    print(f"reidkit: warning: {printable(str(message).strip())}", file=file or sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser, listing every subcommand (arguments are added lazily)."""
    parser = OneLineParser(
        prog="reidkit",
        description="Person re-identification toolkit: STADB, Mancs, BDB and baselines.",
    )
    parser.add_argument("--version", action="version", version=f"reidkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = OneLineParser(prog=f"reidkit {name}", description=help_text)
    module.add_arguments(parser)  # type: ignore[attr-defined]
    return parser, module


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failure, 2 user error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # numpy's OpenBLAS (distance matrices on CPU) reads this when it loads: its idle threads then sleep
    # at once instead of spinning ~0.1 s after every product, taking cores from the torch work that
    # follows (BENCHMARKS.md, evaluation)
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    # Pillow's notes on odd files (corrupt EXIF, palette transparency) are noise in a command: an unreadable
    # image is named by reidkit itself. The library leaves the filters to its host (reidkit.utils.images).
    warnings.filterwarnings("ignore", module=r"PIL(\.|$)")
    warnings.showwarning = _warning_line  # a warning is one line too: "reidkit: warning: ..."
    for stream in (sys.stdout, sys.stderr):  # file names in any bytes print as escapes, never as a traceback
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    top = build_parser()
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv)  # prints help/version or an "invalid choice" error
        top.print_help()
        return 2 if argv else 0
    name, rest = argv[0], argv[1:]
    try:
        parser, module = _command_parser(name)
        args = parser.parse_args(rest)
        return int(module.run(args) or 0)  # type: ignore[attr-defined]
    except ReidkitError as exc:
        print(f"reidkit: error: {printable(str(exc).strip() or type(exc).__name__)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reidkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
