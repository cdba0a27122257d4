"""Benchmark what checking a gallery's segment digests costs (``reidkit.inference.gallery.file_digest``).

Writes one file of ``--mb`` random megabytes (a segment of 65,536 1,536-d float32 rows is 403 MB), reads it once
to have it in the page cache (as a segment is right after it is written, or on a warm machine), then times
``file_digest`` (SHA-256, what the index records) and, for the choice of digest, the other hashlib digests and
zlib's CRC-32 over the same file, each ``--repeat`` times (best kept). Scaled to a gallery of ``--rows`` ×
``--dim`` float32 (default 1,000,000 × 1,536: 6.1 GB) without allocating it.

Usage::

    python benchmarks/bench_digest.py                 # 600 MB, scaled to 1,000,000 x 1,536
    python benchmarks/bench_digest.py --mb 64 --repeat 1   # seconds (smoke test)

Prints one markdown table, ready for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reidkit.inference.gallery import DIGEST, file_digest

CHUNK = 1 << 20


def _crc32(path: Path) -> str:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return f"{crc:08x}"


def _hashlib(name: str) -> Callable[[Path], str]:
    def digest(path: Path) -> str:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, name).hexdigest()

    return digest


def best_seconds(fn: Callable[[Path], str], path: Path, repeat: int) -> float:
    """The shortest of ``repeat`` wall times of ``fn(path)``."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(path)
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    """Time the digests and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=600, help="size of the file hashed, in MB (default 600)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="gallery rows to scale to (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=1536, help="embedding width to scale to (default 1,536)")
    ap.add_argument("--repeat", type=int, default=3, help="times each digest is run; the best is kept (default 3)")
    ap.add_argument("--quick", action="store_true", help="smoke run: a 2 MB file, one repeat")
    args = ap.parse_args()
    if args.quick:
        args.mb, args.repeat = 2, 1
    size = args.mb * 1_000_000
    gallery = args.rows * args.dim * 4
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "segment.bin"
        with open(path, "wb") as fh:
            for start in range(0, size, 64 << 20):
                fh.write(os.urandom(min(64 << 20, size - start)))
        _crc32(path)  # in the page cache
        cases = {f"{DIGEST} (reidkit's, file_digest)": file_digest,
                 **{name: _hashlib(name) for name in ("blake2b", "sha1", "md5", "sha512")},
                 "crc32 (zlib)": _crc32}
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; file {size / 1e6:,.0f} MB in the "
              f"page cache, best of {args.repeat}; scaled to {args.rows:,} x {args.dim} float32 "
              f"({gallery / 1e9:.2f} GB)\n")
        print("| digest | GB/s | s for the file | s for the gallery (scaled) |")
        print("|---|---|---|---|")
        for name, fn in cases.items():
            s = best_seconds(fn, path, args.repeat)
            print(f"| {name} | {size / s / 1e9:.2f} | {s:.2f} | {s * gallery / size:.1f} |")


if __name__ == "__main__":
    main()
