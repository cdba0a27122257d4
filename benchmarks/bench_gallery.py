"""Benchmark the gallery's FAISS indexes at millions of entries: exact flat, HNSW, IVF-PQ (and IVF-PQ grown
ten times past its training set), on synthetic identity-structured embeddings.

Data: ``bench_eval.py``'s generator (identity centres plus noise; ``--per-id`` entries per identity on
average), regenerated chunk by chunk from the seed, so no process ever holds a gallery it cannot: chunk c's
pids come from ``numpy.random.default_rng([seed, c])`` and its noise from a torch generator seeded with
``seed · 1,000,003 + c + 1``. Queries are fresh entries of the same identities.

Ground truth: the exact 10 nearest entries of each query, computed by streaming the gallery in chunks
(brute force, float32, torch) in a process of its own, and cached (``--cache``) for the other cases.

Each (size, index) case runs in its own process, which regenerates the gallery and builds the index the way
``reidkit.inference.Gallery`` does (``reidkit.inference.faiss_index.VectorIndex``: the same classes, the
same training rule), chunk by chunk. Reported: build time (training + adding, data generation excluded), peak
resident memory of the process (``ru_maxrss``: the index, the identity centres, a chunk being generated),
queries/s for one batch of ``--queries`` queries at ``--threads`` threads, and recall@1 / recall@10 against
the exact truth. IVF-PQ rows give the index alone and, as ``reidkit`` searches it, with ``refine`` × 10
candidates re-scored exactly (their vectors regenerated from the seed; the gallery holds them in memory).

A case whose estimated memory exceeds ``--memory-gb`` (default: 90% of the memory available now) is
skipped with the estimate printed: 5,000,000 × 1,536 float32 is 30.7 GB, so on a 24 GB machine only IVF-PQ
holds 5M.

Usage::

    python benchmarks/bench_gallery.py --sizes 1000000,5000000           # the full run (hours: see README)
    python benchmarks/bench_gallery.py --sizes 20000 --kinds flat,hnsw   # one size, two indexes
    python benchmarks/bench_gallery.py --quick                           # tiny, seconds (smoke test)

Prints one markdown table, ready for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eval import NOISE, identity_centres, noisy_features  # noqa: E402

from reidkit.errors import ReidkitError  # noqa: E402

KINDS = ("flat", "hnsw", "ivfpq", "ivfpq-grown")
K = 10
GROWTH = 10  # ivfpq-grown: trained as an index built on the first 1/GROWTH of the gallery, then added to


@dataclass(frozen=True)
class Setup:
    """Everything that determines the data and the runs."""

    size: int
    dim: int
    queries: int
    per_id: int
    noise: str
    seed: int
    chunk: int
    threads: int
    metric: str
    nbits: int = 8
    hnsw_m: int | None = None  # None: reidkit's defaults
    ef_construction: int | None = None

    @property
    def n_ids(self) -> int:
        return max(1, self.size // self.per_id)

    def key(self) -> str:
        fields = {k: v for k, v in asdict(self).items()
                  if k not in ("threads", "nbits", "hnsw_m", "ef_construction")}  # what the data depends on
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


class Synthetic:
    """The gallery and queries of a ``Setup``, regenerated chunk by chunk (see the module docstring)."""

    def __init__(self, s: Setup) -> None:
        import torch

        self.s = s
        self.centres = identity_centres(s.n_ids, s.dim, torch.Generator().manual_seed(s.seed))

    def chunks(self, start: int = 0, stop: int | None = None):  # type: ignore[no-untyped-def]
        """(first row, features) of every chunk overlapping rows [start, stop)."""
        stop = self.s.size if stop is None else stop
        for c in range(start // self.s.chunk, math.ceil(stop / self.s.chunk)):
            yield c * self.s.chunk, self.chunk(c)

    def chunk_pids(self, c: int):  # type: ignore[no-untyped-def]
        import numpy as np

        rows = min(self.s.chunk, self.s.size - c * self.s.chunk)
        return np.random.default_rng([self.s.seed, c]).integers(1, self.s.n_ids + 1, rows)

    def chunk(self, c: int):  # type: ignore[no-untyped-def]
        import torch

        gen = torch.Generator().manual_seed(self.s.seed * 1_000_003 + c + 1)
        return noisy_features(self.centres, self.chunk_pids(c), self.s.noise, gen)

    def pids(self):  # type: ignore[no-untyped-def]
        """Every gallery row's identity (no features generated)."""
        import numpy as np

        return np.concatenate([self.chunk_pids(c) for c in range(math.ceil(self.s.size / self.s.chunk))])

    def rows(self, first: int, count: int):  # type: ignore[no-untyped-def]
        import torch

        parts = [f[max(0, first - s): first + count - s] for s, f in self.chunks(first, first + count)]
        return torch.cat(parts)

    def query_pids(self):  # type: ignore[no-untyped-def]
        import numpy as np

        return np.random.default_rng([self.s.seed, 1 << 30]).integers(1, self.s.n_ids + 1, self.s.queries)

    def queries(self):  # type: ignore[no-untyped-def]
        import torch

        return noisy_features(self.centres, self.query_pids(), self.s.noise,
                              torch.Generator().manual_seed(self.s.seed + 7))

    def gather(self, wanted):  # type: ignore[no-untyped-def]
        """The gallery rows ``wanted`` (a set of row numbers) by regenerating only the chunks holding them."""
        out = {}
        for c in sorted({r // self.s.chunk for r in wanted}):
            feats = self.chunk(c)
            for r in (r for r in wanted if r // self.s.chunk == c):
                out[r] = feats[r - c * self.s.chunk].clone()  # a copy: a view would keep the whole chunk
        return out


# ------------------------------------------------------------------------------------------------- memory
def spec_for(kind: str, s: Setup):  # type: ignore[no-untyped-def]
    """The resolved ``IndexSpec`` of a case (IVF-PQ's nlist and m as ``Gallery`` would choose them)."""
    from reidkit.inference.faiss_index import IndexSpec

    if kind.startswith("ivfpq"):
        base = IndexSpec.make("ivfpq", nbits=s.nbits)
    elif kind == "hnsw":
        base = IndexSpec.make("hnsw", hnsw_m=s.hnsw_m, ef_construction=s.ef_construction)
    else:
        base = IndexSpec.make(kind)
    built_on = s.size // GROWTH if kind == "ivfpq-grown" else s.size
    return base.resolved(s.dim, built_on), built_on


def estimate_bytes(kind: str, s: Setup) -> float:
    """Resident bytes a case needs: the index, the identity centres, two chunks, the training rows."""
    common = (s.n_ids + 1) * s.dim * 4 + 3 * min(s.chunk, s.size) * s.dim * 4 + s.queries * s.dim * 4 + 200e6
    if kind == "flat":
        return common + s.size * (4 * s.dim + 8 + 35)  # vectors, ids and IndexIDMap2's reverse map
    if kind == "hnsw":
        m = spec_for(kind, s)[0].hnsw_m
        return common + s.size * (4 * s.dim + 2 * m * 4 * 1.03 + 8 + 4 + 8 + 35)
    spec, built_on = spec_for(kind, s)
    code = (spec.m * spec.nbits + 7) // 8
    table = spec.nlist * spec.m * (1 << spec.nbits) * 4 if s.metric == "euclidean" else 0
    table = table if table < 2 << 30 else 0  # FAISS skips precomputed tables above 2 GB
    train = 3 * spec.training_rows(built_on) * s.dim * 4  # the rows, their float32 copy, FAISS's residuals
    return common + s.size * (code + 8) + spec.nlist * s.dim * 4 + s.dim * (1 << spec.nbits) * 4 + table + train


def gb(x: float) -> str:
    return f"{x / 1e9:.1f}"


# ---------------------------------------------------------------------------------------------- children
def truth_child(s: Setup, cache: Path) -> dict[str, Any]:
    """Exact top-K of every query by streaming the gallery; saved to ``cache``."""
    import numpy as np
    import torch

    from reidkit.eval.knn import k_nearest

    data = Synthetic(s)
    q = data.queries()
    best_d = torch.full((s.queries, K), float("inf"))
    best_i = torch.full((s.queries, K), -1, dtype=torch.long)
    t0 = time.perf_counter()
    for first, feats in data.chunks():
        d, i = k_nearest(q, feats, K, s.metric, use_faiss=False)
        d_all, i_all = torch.cat([best_d, d], 1), torch.cat([best_i, i + first], 1)
        order = torch.argsort(d_all, dim=1, stable=True)[:, :K]
        best_d, best_i = d_all.gather(1, order), i_all.gather(1, order)
    path = cache / f"truth-{s.key()}.npy"
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, best_i.numpy())
    os.replace(tmp, path)
    return {"path": str(path), "time_s": time.perf_counter() - t0}


def recall(found, truth, g_pids, q_pids) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """recall@1 (the exact nearest first), recall@10 (share of the exact top 10 found), and the share of the
    top 10 that are the query's identity (what re-identification needs; the exact search's own is the bound)."""
    import numpy as np

    r1 = float(np.mean(found[:, 0] == truth[:, 0]))
    r10 = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(found, truth, strict=True)]))
    same = float(np.mean(np.where(found >= 0, g_pids[found.clip(min=0)], -1) == q_pids[:, None]))
    return r1, r10, same


def refined(data: Synthetic, q, found, metric: str):  # type: ignore[no-untyped-def]
    """``Gallery``'s rule for IVF-PQ: the candidates scored exactly (their vectors regenerated), the K best."""
    import numpy as np
    import torch

    from reidkit.eval.distance import candidate_distances

    wanted = {int(r) for r in found.reshape(-1) if r >= 0}
    vectors = data.gather(wanted)
    rows = sorted(vectors)
    local = {r: j for j, r in enumerate(rows)}
    table = torch.stack([vectors[r] for r in rows])
    cand = torch.from_numpy(np.vectorize(lambda r: local.get(int(r), 0))(found)).long()
    dist = candidate_distances(q, table, cand, metric)
    dist[torch.from_numpy(found < 0)] = float("inf")
    order = torch.argsort(dist, dim=1, stable=True)[:, :K].numpy()
    return np.take_along_axis(found, order, axis=1)


def case_child(kind: str, s: Setup, truth_path: str) -> dict[str, Any]:
    """Build one index as ``Gallery`` does, search it, measure."""
    import numpy as np
    import torch

    from reidkit.inference.faiss_index import VectorIndex

    torch.set_num_threads(s.threads)
    truth = np.load(truth_path)
    data = Synthetic(s)
    q = data.queries()
    g_pids, q_pids = data.pids(), data.query_pids()
    spec, built_on = spec_for(kind, s)
    build = build_cpu = 0.0
    first_rows = spec.training_rows(built_on) if spec.kind == "ivfpq" else min(s.chunk, s.size)
    t0 = time.perf_counter()
    head = data.rows(0, first_rows)
    t1, c1 = time.perf_counter(), time.process_time()
    index = VectorIndex.build(spec, head, np.arange(first_rows), s.metric)
    build, build_cpu = build + time.perf_counter() - t1, build_cpu + time.process_time() - c1
    train = index.trained_on
    del head
    for first, feats in data.chunks(first_rows):
        feats = feats[max(0, first_rows - first):]
        start = max(first, first_rows)
        t1, c1 = time.perf_counter(), time.process_time()
        index.add(feats, np.arange(start, start + len(feats)))
        build, build_cpu = build + time.perf_counter() - t1, build_cpu + time.process_time() - c1
    total = time.perf_counter() - t0
    index.search(q[:8], K)  # warm up
    t1, c1 = time.perf_counter(), time.process_time()
    _, found = index.search(q, K)
    search_s, search_cpu = time.perf_counter() - t1, time.process_time() - c1
    out: dict[str, Any] = {"build_s": build, "build_cpu_s": build_cpu, "total_s": total, "qps": s.queries / search_s,
                           "qps_cpu": s.queries / max(search_cpu, 1e-9), "params": index.spec.fields(),
                           "trained_on": train, "recall": recall(found, truth, g_pids, q_pids),
                           "exact_same_id": recall(truth, truth, g_pids, q_pids)[2],
                           "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}
    # reidkit's search of IVF-PQ (refine × K candidates scored exactly), and a 4× wider search of each kind
    wide = {"flat": None, "hnsw": ("ef_search", 4 * spec.ef_search), "ivfpq": ("nprobe", 4 * spec.nprobe)}[spec.kind]
    out["more"] = []
    for option in ([None, wide] if spec.kind == "ivfpq" else [wide] if wide else []):
        extra = {option[0]: option[1]} if option else {}
        fetch = K * spec.refine if spec.kind == "ivfpq" else K
        t1 = time.perf_counter()
        _, cands = index.search(q, fetch, **extra)
        qps = s.queries / (time.perf_counter() - t1)
        rows = refined(data, q, cands, s.metric) if spec.kind == "ivfpq" else cands
        what = (f"+ refine ×{spec.refine}" if spec.kind == "ivfpq" else "") + (
            f", {option[0]} {option[1]}" if option else "")
        out["more"].append({"what": what.lstrip(", "), "qps": qps, "recall": recall(rows, truth, g_pids, q_pids)})
    return out


def run_child(args: list[str], s: Setup, inprocess: bool) -> dict[str, Any]:
    if inprocess:
        return dispatch(args, s)
    env = dict(os.environ, OMP_NUM_THREADS=str(s.threads), MKL_NUM_THREADS=str(s.threads),
               OPENBLAS_THREAD_TIMEOUT="4", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, __file__, "--child", json.dumps([args, asdict(s)])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"case {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def dispatch(args: list[str], s: Setup) -> dict[str, Any]:
    if args[0] == "truth":
        return truth_child(s, Path(args[1]))
    return case_child(args[0], s, args[1])


# -------------------------------------------------------------------------------------------------- main
def fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in params.items()) or "-"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, run in this process (smoke test)")
    ap.add_argument("--sizes", default="1000000,5000000", help="gallery sizes, comma-separated (default 1M and 5M)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"indexes, comma-separated (default {','.join(KINDS)})")
    ap.add_argument("--dim", type=int, default=1536, help="embedding width (default 1536)")
    ap.add_argument("--queries", type=int, default=1000, help="queries, searched as one batch (default 1000)")
    ap.add_argument("--per-id", type=int, default=20, help="gallery entries per identity on average (default 20)")
    ap.add_argument("--noise", default="easy", choices=list(NOISE),
                    help="feature noise of bench_eval.py (default easy: tight identities; hard: near-isotropic "
                         "noise in every dimension, the worst case for PQ and graphs)")
    ap.add_argument("--metric", default="euclidean", choices=["euclidean", "cosine"], help="default euclidean")
    ap.add_argument("--threads", type=int, default=2, help="torch and FAISS threads per case (default 2)")
    ap.add_argument("--nbits", type=int, default=8, help="IVF-PQ bits per code (default 8, reidkit's default)")
    ap.add_argument("--hnsw-m", type=int, default=None, help="HNSW links per node (default: reidkit's)")
    ap.add_argument("--ef-construction", type=int, default=None, help="HNSW build-time candidates (default: reidkit's)")
    ap.add_argument("--chunk", type=int, default=65536, help="rows generated at a time (default 65536)")
    ap.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    ap.add_argument("--memory-gb", type=float, default=None,
                    help="memory a case may use (default: 90%% of what is available now)")
    ap.add_argument("--cache", default=None, help="folder for the ground truth (default: a temporary folder)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        case, fields = json.loads(args.child)
        print(json.dumps(dispatch(case, Setup(**fields))))
        return 0
    import psutil

    from reidkit.eval.knn import FAISS_INSTALL, faiss_available

    if not faiss_available():
        print(f"bench_gallery.py: every index it times is a FAISS index, and faiss is not installed: {FAISS_INSTALL}",
              file=sys.stderr)
        return 2
    if args.quick:  # 4-bit codes train on 624 vectors in a second: every kind runs, ivfpq-grown included
        args.sizes, args.dim, args.queries, args.per_id, args.chunk, args.nbits = "8000", 32, 50, 10, 3000, 4
    sizes = [int(x.replace("_", "")) for x in args.sizes.split(",") if x]
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise SystemExit(f"--kinds: unknown {', '.join(unknown)}; expected some of {', '.join(KINDS)}")
    budget = (args.memory_gb * 1e9) if args.memory_gb else 0.9 * psutil.virtual_memory().available
    cache = Path(args.cache or tempfile.mkdtemp(prefix="reidkit-bench-gallery-"))
    cache.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs, threads={args.threads}, load average {os.getloadavg()[0]:.1f}; memory budget "
          f"{gb(budget)} GB; {args.dim}-d, {args.per_id} entries per identity, noise {args.noise}, metric "
          f"{args.metric}, {args.queries} queries, k={K}\n", flush=True)
    rows: list[str] = []
    exact_same: dict[int, float] = {}
    for size in sizes:
        s = Setup(size, args.dim, args.queries, args.per_id, args.noise, args.seed, args.chunk, args.threads,
                  args.metric, args.nbits, args.hnsw_m, args.ef_construction)
        truth_file = cache / f"truth-{s.key()}.npy"
        if not truth_file.exists():
            t = run_child(["truth", str(cache)], s, args.quick)
            print(f"[{size:,}: exact truth by streaming the gallery: {t['time_s']:.0f} s]", file=sys.stderr, flush=True)
        for kind in kinds:
            label = f"| {size:,} | {kind} |"
            try:
                need = estimate_bytes(kind, s)  # resolves IVF-PQ's parameters: too few vectors is an error
            except ReidkitError as exc:
                rows.append(f"{label} - | - | - | - | - | - | - | - | skipped: {str(exc).split(';')[0]} |")
                continue
            if need > budget:
                rows.append(f"{label} - | - | - | {gb(need)} | - | - | - | - | skipped: needs ~{gb(need)} GB, "
                            f"budget {gb(budget)} GB |")
                continue
            r = run_child([kind, str(truth_file)], s, args.quick)
            r1, r10, same = r["recall"]
            note = f"trained on {r['trained_on']:,}" if r.get("trained_on") else ""
            exact_same.setdefault(size, r["exact_same_id"])
            rows.append(f"{label} {fmt_params(r['params'])} | {r['build_s']:.1f} / {r['build_cpu_s']:.1f} | "
                        f"{r['peak_gb']:.2f} | {gb(need)} | {r['qps']:.0f} / {r['qps_cpu']:.0f} | {r1:.3f} | "
                        f"{r10:.3f} | {same:.3f} | {note} |")
            for more in r["more"]:
                m1, m10, msame = more["recall"]
                how = "as reidkit searches it" if more["what"].startswith("+ refine") else "a wider search"
                rows.append(f"| {size:,} | {kind} {more['what']} | | | | | {more['qps']:.0f} (index part) | "
                            f"{m1:.3f} | {m10:.3f} | {msame:.3f} | {how} |")
            print(f"[{size:,} {kind} done, load average {os.getloadavg()[0]:.1f}] {rows[-1]}", file=sys.stderr,
                  flush=True)
    print("| gallery | index | parameters | build s (wall / CPU) | peak GB | estimate GB | queries/s (wall / CPU) "
          "| recall@1 | recall@10 | same id @10 | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nload average at end {os.getloadavg()[0]:.1f}; build = training + adding (data generation excluded); "
          f"queries/s: one batch of {args.queries} at {args.threads} threads, per wall second and per CPU second "
          "(process_time, all threads); peak = max RSS of the case's process before the refine step (index, "
          "identity centres, a chunk being generated); same id @10: share of the top 10 that are the query's "
          "identity (exact search: " + ", ".join(f"{n:,}: {v:.3f}" for n, v in exact_same.items()) + ")")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
