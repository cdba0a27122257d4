"""Benchmark ``reidkit.eval``: Market-1501 and MSMT17-size evaluation and MSMT17-size re-ranking.

Each case runs in its own subprocess; the child reports its wall time (data generation excluded) and
its peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, data included). Every reidkit
case is compared with a straightforward numpy implementation of the same protocol (full float32
distance matrix, ``np.argsort(kind="stable")``, a per-query loop) run in the same invocation; at
MSMT17 size that version would need the whole 11,659×82,161 matrix plus its int64 argsort (~11 GB),
so it runs on a subset of queries and its time is extrapolated linearly (stated in the table).

Usage::

    python benchmarks/bench_eval.py            # full sizes (several minutes; re-ranking included)
    python benchmarks/bench_eval.py --quick    # tiny sizes, a few seconds (smoke test)
    python benchmarks/bench_eval.py --no-rerank --threads 2 --levels hard

Children run with torch/OMP/MKL threads = ``--threads`` and ``OPENBLAS_THREAD_TIMEOUT=4``, as the
``reidkit`` command sets it. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SIZES = {
    # name: (num_ids, num_cams, Q, G, D, distractors)
    "market": (750, 6, 3368, 15913, 1536, 2798),
    "msmt17": (3060, 15, 11659, 82161, 1536, 0),
    "quick": (40, 4, 120, 600, 64, 50),
}
# feature noise relative to the default; "hard" is the default (Market mAP ~50%, mINP ~0.04): a
# query's last match sits deep in the gallery. "easy": every match near the top; "random": near chance.
NOISE = {"easy": 0.53, "hard": 1.0, "random": 1.65}


def identity_centres(n_ids: int, D: int, gen):  # type: ignore[no-untyped-def]
    """One centre per identity (row 0: the distractors' "identity"), drawn from ``gen`` (a torch.Generator);
    the scale makes same-id and different-id distances overlap (mAP well below 100%)."""
    import torch

    scale = float((1.5 * (8.0 / D) ** 0.5) ** 0.5)
    return scale * torch.randn(n_ids + 1, D, generator=gen)


def noisy_features(centres, pids, noise: str, gen):  # type: ignore[no-untyped-def]
    """Features of identities ``pids`` (an int64 array): their centres plus noise of level ``noise``."""
    import torch

    return centres[torch.from_numpy(pids)] + NOISE[noise] * torch.randn(len(pids), centres.shape[1], generator=gen)


def make_data(size: str, seed: int = 0, noise: str = "hard"):  # type: ignore[no-untyped-def]
    """Random features with a realistic pid/camera structure (class centres plus noise)."""
    import numpy as np
    import torch

    n_ids, n_cams, Q, G, D, n_distr = SIZES[size]
    rng = np.random.default_rng(seed)
    g_pids = np.concatenate([rng.integers(1, n_ids + 1, G - n_distr), np.zeros(n_distr, dtype=np.int64)])
    g_cams = rng.integers(0, n_cams, G)
    q_pids = rng.integers(1, n_ids + 1, Q)
    q_cams = rng.integers(0, n_cams, Q)
    gen = torch.Generator().manual_seed(seed)
    centres = identity_centres(n_ids, D, gen)
    qf = noisy_features(centres, q_pids, noise, gen)
    gf = noisy_features(centres, g_pids, noise, gen)
    return qf, gf, q_pids.astype(np.int64), g_pids.astype(np.int64), q_cams.astype(np.int64), g_cams.astype(np.int64)


def numpy_eval(qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank=50):  # type: ignore[no-untyped-def]
    """The straightforward version (:mod:`reidkit.eval.reference`): full distance matrix, stable argsort of
    every row, per-query loop."""
    from reidkit.eval.reference import dense_distance, dense_evaluate

    r = dense_evaluate(dense_distance(qf.numpy(), gf.numpy()), q_pids, g_pids, q_cams, g_cams, max_rank=max_rank)
    return {"mAP": r["mAP"], "mINP": r["mINP"], "R1": float(r["cmc"][0])}


def child(case: str, size: str, subset: int, noise: str = "hard") -> dict:
    import torch

    from reidkit.eval import evaluate

    qf, gf, qp, gp, qc, gc = make_data(size, noise=noise)
    t0 = time.perf_counter()
    note = ""
    if case == "reidkit":
        r = evaluate(qf, gf, qp, gp, qc, gc)
        res = {"mAP": r["mAP"], "mINP": r["mINP"], "R1": r["cmc"][0]}
    elif case == "rerank":
        r = evaluate(qf, gf, qp, gp, qc, gc, rerank=True)
        res = {"mAP": r["mAP"], "mINP": r["mINP"], "R1": r["cmc"][0]}
    elif case == "numpy":
        n = min(subset, len(qp)) if subset else len(qp)
        res = numpy_eval(qf[:n], gf, qp[:n], gp, qc[:n], gc)
        if n < len(qp):
            note = f"{n} of {len(qp)} queries, time x{len(qp) / n:.2f}"
            res["scale"] = len(qp) / n
    else:
        raise SystemExit(f"unknown case {case}")
    dt = time.perf_counter() - t0
    del torch
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"time_s": dt * res.pop("scale", 1.0), "peak_gb": rss_kb / 2**20, "note": note, **res}


def run_case(case: str, size: str, subset: int, threads: int, inprocess: bool = False,
             noise: str = "hard") -> dict:
    if inprocess:
        return child(case, size, subset, noise)
    # OPENBLAS_THREAD_TIMEOUT as the reidkit command sets it (see reidkit/cli.py)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_THREAD_TIMEOUT="4",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, __file__, "--child", case, "--size", size, "--subset", str(subset),
           "--threads", str(threads), "--noise", noise]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"case {case}/{size} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, run in this process (smoke test)")
    ap.add_argument("--no-rerank", action="store_true", help="skip the MSMT17-size re-ranking case")
    ap.add_argument("--threads", type=int, default=2, help="torch/BLAS threads per case (default 2)")
    ap.add_argument("--subset", type=int, default=1000,
                    help="queries for the numpy MSMT17 baseline (time extrapolated; default 1000)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--size", default="market", help=argparse.SUPPRESS)
    ap.add_argument("--noise", default="hard", choices=list(NOISE), help=argparse.SUPPRESS)
    ap.add_argument("--levels", default="easy,hard,random",
                    help="feature difficulties to time (comma-separated: easy, hard, random; default all)")
    args = ap.parse_args(argv)
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(child(args.child, args.size, args.subset if args.size == "msmt17" else 0, args.noise)))
        return 0
    if args.quick:
        import torch

        torch.set_num_threads(args.threads)
        plan = [("quick", "hard", "reidkit", "numpy"), ("quick", "hard", "rerank", None)]
    else:
        levels = [lv for lv in args.levels.split(",") if lv]
        unknown = sorted(set(levels) - set(NOISE))
        if unknown:
            raise SystemExit(f"--levels: unknown {', '.join(unknown)}; expected some of {', '.join(NOISE)}")
        plan = [(size, lv, "reidkit", "numpy") for size in ("market", "msmt17") for lv in levels]
        if not args.no_rerank:
            plan.append(("msmt17", "hard", "rerank", None))
    rows = []
    for size, noise, ours, base in plan:
        _n_ids, _n_cams, Q, G, D, _ = SIZES[size]
        r = run_case(ours, size, args.subset, args.threads, args.quick, noise)
        b = run_case(base, size, args.subset, args.threads, args.quick, noise) if base else None
        ratio = f"{b['time_s'] / r['time_s']:.1f}x" if b else "-"
        btime = f"{b['time_s']:.2f}" + (f" ({b['note']})" if b and b["note"] else "") if b else "-"
        bmem = f"{b['peak_gb']:.2f}" if b else "-"
        agree = f"{abs(b['mAP'] - r['mAP']):.1e}" if b and not b["note"] else "-"
        rows.append(f"| {size} {Q}x{G} D={D} | {noise} | {100 * r['mINP']:.1f} | {ours} | {r['time_s']:.2f} | {r['peak_gb']:.2f} | {btime} | {bmem} "
                    f"| {ratio} | {100 * r['mAP']:.2f} / {100 * r['R1']:.2f} | {agree} |")
    where = "all cases in this process (--quick)" if args.quick else "one process per case"
    print(f"threads={args.threads}, {os.cpu_count()} CPUs; times exclude data generation; peak = max RSS "
          f"({where}; includes the features)\n")
    print("| problem | features | mINP % | case | reidkit s | reidkit peak GB | numpy s | numpy peak GB | speed-up | mAP / R1 % | |ΔmAP| |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
