"""Benchmark one write to a gallery index on disk: what ``reidkit index add`` / ``remove`` cost as the index grows.

For each gallery size and index kind, a child process builds an index of random 1,536-d embeddings
(``Gallery.save``), then times, each as the ``reidkit`` command does it (under the index's lock: read the
index, change it, write a new generation): ``add_to_index`` of ``--add`` rows, ``remove_from_index`` of one
row, and a plain ``Gallery.load``. Reported: wall seconds of each and the bytes the write put on disk (the
sizes of the files of the new generation that the old one did not have), beside the index's size.

Usage::

    python benchmarks/bench_index_writes.py                          # 100k and 400k entries, flat and ivfpq
    python benchmarks/bench_index_writes.py --sizes 20000 --kinds flat  # one case
    python benchmarks/bench_index_writes.py --quick                  # tiny, seconds (smoke test)

Prints one markdown table, ready for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _files(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in d.iterdir() if p.is_file() and not p.name.startswith(".")}


def _written(before: dict[str, int], after: dict[str, int]) -> int:
    """Bytes of the files that are new or changed in size (the manifest is rewritten by every write)."""
    return sum(size for name, size in after.items() if before.get(name) != size or name == "manifest.json")


def child(size: int, kind: str, dim: int, add: int, threads: int) -> dict[str, Any]:
    import torch

    from reidkit.inference.gallery import Gallery, add_to_index, remove_from_index

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="reidkit-bench-writes-", dir=os.environ.get("BENCH_TMP")) as tmp:
        d = Path(tmp) / "index"
        g = Gallery(embedding_dim=dim, index=kind)
        step = 65_536
        for s in range(0, size, step):
            n = min(step, size - s)
            g.add(torch.randn(n, dim, generator=gen), ids=[f"/crops/{i:08d}.jpg" for i in range(s, s + n)],
                  metadata=[{"path": f"/crops/{i:08d}.jpg", "pid": i // 20, "camid": i % 6} for i in range(s, s + n)])
        t0 = time.perf_counter()
        g.save(d)
        save_s = time.perf_counter() - t0
        del g
        index_bytes = sum(_files(d).values())
        out: dict[str, Any] = {"save_s": save_s, "index_bytes": index_bytes}
        t0 = time.perf_counter()
        Gallery.load(d)
        out["load_s"] = time.perf_counter() - t0
        new = torch.randn(add, dim, generator=gen)
        ids = [f"/crops/new{i:06d}.jpg" for i in range(add)]
        before = _files(d)
        t0 = time.perf_counter()
        add_to_index(d, new, ids, [{"path": x} for x in ids])
        out["add_s"], out["add_bytes"] = time.perf_counter() - t0, _written(before, _files(d))
        before = _files(d)
        t0 = time.perf_counter()
        remove_from_index(d, ["/crops/00000007.jpg"])
        out["remove_s"], out["remove_bytes"] = time.perf_counter() - t0, _written(before, _files(d))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,400000", help="gallery sizes, comma-separated")
    ap.add_argument("--kinds", default="flat,ivfpq", help="index kinds, comma-separated (flat, ivfpq, hnsw)")
    ap.add_argument("--dim", type=int, default=1536, help="embedding width (default 1536)")
    ap.add_argument("--add", type=int, default=100, help="rows one add_to_index writes (default 100)")
    ap.add_argument("--threads", type=int, default=2, help="torch and FAISS threads (default 2)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return 0
    if args.quick:
        args.sizes, args.kinds, args.dim, args.add = "3000", "flat,hnsw", 32, 10
    print(f"{os.cpu_count()} CPUs, threads={args.threads}, load average {os.getloadavg()[0]:.1f}; {args.dim}-d; "
          f"add = {args.add} rows, remove = 1 row\n")
    print("| gallery | index | index on disk MB | save s | load s | add: s / MB written | remove: s / MB written |")
    print("|---|---|---|---|---|---|---|")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for size in (int(x.replace("_", "")) for x in args.sizes.split(",") if x):
        for kind in (k for k in args.kinds.split(",") if k):
            cmd = [sys.executable, __file__, "--child", json.dumps([size, kind, args.dim, args.add, args.threads])]
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if run.returncode != 0:
                raise SystemExit(f"case {size} {kind} failed:\n{run.stderr[-3000:]}")
            r = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"| {size:,} | {kind} | {r['index_bytes'] / 1e6:,.0f} | {r['save_s']:.1f} | {r['load_s']:.1f} | "
                  f"{r['add_s']:.2f} / {r['add_bytes'] / 1e6:,.1f} | {r['remove_s']:.2f} / "
                  f"{r['remove_bytes'] / 1e6:,.1f} |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
