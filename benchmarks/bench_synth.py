"""Synthetic pedestrian generator throughput (images/s at 128×64), one core and with workers.

Run alone: ``python benchmarks/bench_synth.py [--quick]``; prints a markdown table. Wall-clock
figures depend on what else the machine runs, so the CPU-time rate of the one-process run is
printed as well (images per CPU-second).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time

from _util import fmt, rate

from reidkit.data.synthetic import generate_dataset, render_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--ids", type=int, default=100)
    ap.add_argument("--cams", type=int, default=4)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    ids = 8 if args.quick else args.ids
    rows = []

    # render + JPEG encode only (no disk), one process
    n = 40 if args.quick else 600
    t, c = time.perf_counter(), time.process_time()
    for i in range(n):
        render_bytes(0, 1 + i % 50, 1 + i % 4, i)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    rows.append(("render + encode, 1 process", n, rate(n, wall), rate(n, cpu)))

    for workers in sorted({0, args.workers}):
        tmp = tempfile.mkdtemp(prefix="bench_synth_")
        try:
            t, c = time.perf_counter(), time.process_time()
            folder = generate_dataset(tmp, ids=ids, cams=args.cams, seed=0, workers=workers)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            count = sum(1 for _ in folder.rglob("*.jpg"))
            label = f"generate_dataset (files written), workers={workers}"
            rows.append((label, count, rate(count, wall), rate(count, cpu) if workers <= 1 else math.nan))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"synthetic generator, 128×64, {args.cams} cameras, {ids} ids; os.cpu_count()={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| what | images | images/s (wall) | images per CPU-second |")
    print("|---|---:|---:|---:|")
    for label, count, wall_rate, cpu_rate in rows:
        print(f"| {label} | {count} | {fmt(wall_rate)} | {fmt(cpu_rate)} |")


if __name__ == "__main__":
    main()
