"""Training-input throughput: cached uint8 + batched augmentation vs the per-image PIL DataLoader.

Both paths produce the same thing — normalised, augmented float batches of P×K images chosen by
``PKSampler`` — at 384×128 (STADB pipeline) and 256×128 (Mancs pipeline), on a synthetic
Market-layout set (128×64 JPEGs, as Market-1501's crops). Also times building the cache with a
thread pool vs a process pool. Run alone: ``python benchmarks/bench_data.py [--quick]``; prints
markdown tables. Besides wall-clock rates it prints images per CPU-second (this process plus its
DataLoader workers), which stays meaningful on a shared, loaded machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from _util import cpu_seconds, fmt, rate, ratio

from reidkit.data.augment import AugmentConfig, TrainAugment
from reidkit.data.cache import ImageCache, decode_images
from reidkit.data.per_image import make_loader
from reidkit.data.sampler import PKSampler
from reidkit.data.synthetic import generate_dataset


def _train_files(folder: Path) -> tuple[list[str], list[int]]:
    files = sorted((folder / "bounding_box_train").glob("*.jpg"))
    return [str(f) for f in files], [int(f.name.split("_")[0]) for f in files]


def bench_batched(cache: ImageCache, aug: TrainAugment, sampler: PKSampler, device: str) -> tuple[float, float]:
    """(images/s wall, images per CPU-second) of cache.batch + TrainAugment."""
    g = torch.Generator(device=device).manual_seed(0)
    n = 0
    sampler.set_epoch(1)
    aug(cache.batch(next(iter(sampler)), device), g)  # warm-up
    sampler.set_epoch(0)
    t, c = time.perf_counter(), cpu_seconds()
    for idx in sampler:
        x = aug(cache.batch(idx, device), g)
        n += x.shape[0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return rate(n, time.perf_counter() - t), rate(n, cpu_seconds() - c)


def bench_per_image(paths: list[str], pids: list[int], cfg: AugmentConfig, sampler: PKSampler,
                    workers: int, device: str) -> tuple[float, float]:
    """(images/s wall, images per CPU-second) of the per-image DataLoader, batches moved to ``device``."""
    loader = make_loader(paths, pids, cfg, workers=workers, batch_sampler=sampler)
    it = iter(loader)
    next(it)  # start the workers before timing
    n = 0
    t, c = time.perf_counter(), cpu_seconds()
    for x, _y in it:
        x = x.to(device)
        n += x.shape[0]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return rate(n, time.perf_counter() - t), rate(n, cpu_seconds() - c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    ap.add_argument("--ids", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader / decode workers")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for the batched path (default 1: on a busy machine more threads spin and lose)")
    ap.add_argument("--batches", type=int, default=20, help="batches timed per path")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", default=None, help="existing synthetic output folder (default: a temp folder)")
    args = ap.parse_args()
    ids = 12 if args.quick else args.ids
    batches = 2 if args.quick else args.batches
    p, k = (4, 4) if args.quick else (16, 4)
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(prefix="bench_data_") if args.data is None else None
    root = Path(args.data or tmp.name)  # type: ignore[union-attr]
    folder = generate_dataset(root, ids=ids, cams=4, seed=0, workers=args.workers, gt_bbox=False)
    paths, pids = _train_files(folder)

    decode_rows = []
    rows = []
    for pipeline in ("stadb", "mancs"):
        cfg = AugmentConfig.for_pipeline(pipeline)
        size = cfg.size
        timings = {}
        for pool, w in (("thread", 0), ("thread", args.workers), ("process", args.workers)):
            t = time.perf_counter()
            u8, _bad = decode_images(paths, size, workers=w, pool=pool)
            timings[(pool, w)] = rate(len(paths), time.perf_counter() - t)
        decode_rows.append((f"{size[0]}×{size[1]}", len(paths), timings))
        cache = ImageCache(u8)
        sampler = PKSampler(pids, p, k, seed=0, num_batches=batches)
        aug = TrainAugment(cfg)
        b = bench_batched(cache, aug, sampler, args.device)
        sampler = PKSampler(pids, p, k, seed=0, num_batches=batches + 1)
        s = bench_per_image(paths, pids, cfg, sampler, args.workers, args.device)
        rows.append((pipeline, f"{size[0]}×{size[1]}", b, s))
    if tmp is not None:
        tmp.cleanup()

    print(f"training input, synthetic set ({len(paths)} train images of 128×64, {ids} ids), batches of "
          f"P×K = {p}×{k}, {batches} batches; batched path on {args.device} with {args.threads} torch threads, "
          f"per-image path with {args.workers} DataLoader workers; os.cpu_count()={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| pipeline | size | cached + batched img/s (per CPU-s) | per-image DataLoader img/s (per CPU-s) "
          "| ratio wall (per CPU-s) |")
    print("|---|---|---:|---:|---:|")
    for pipeline, size, b, s in rows:
        print(f"| {pipeline} | {size} | {fmt(b[0])} ({fmt(b[1])}) | {fmt(s[0])} ({fmt(s[1])}) | "
              f"{fmt(ratio(b[0], s[0]), '.1f', '×')} ({fmt(ratio(b[1], s[1]), '.1f', '×')}) |")
    print("\nbuilding the cache (decode + PIL bilinear resize, once per run)\n")
    print(f"| size | images | 1 thread (img/s) | {args.workers} threads (img/s) | {args.workers} processes (img/s) |")
    print("|---|---:|---:|---:|---:|")
    for size, n, t in decode_rows:
        print(f"| {size} | {n} | {fmt(t[('thread', 0)])} | {fmt(t[('thread', args.workers)])} | "
              f"{fmt(t[('process', args.workers)])} |")


if __name__ == "__main__":
    main()
