"""Training throughput: images/s, time per epoch and the share of each step spent waiting for data.

For each model (STADB, BDB, Mancs, the global baseline) one process times training steps on a
Market-1501-sized training set (12,936 images, 751 identities, P×K = 32×4 batches of 384×128 by
default) through two input paths, **interleaved step by step in the same run**:

- ``cached``: the uint8 image cache (here filled with *random uint8 pixels* at the training size,
  so no decoding is timed or needed) → ``PKSampler`` indices → ``index_select`` → ``TrainAugment``
  on the model's device — what ``reidkit train`` does (``data.pipeline=cached``);
- ``per-image``: the plain PyTorch pipeline (``reidkit.data.per_image``): a DataLoader with worker
  processes that open, decode, resize and augment one 128×64 JPEG at a time (synthetic pedestrians
  from ``reidkit.data.synthetic``; a few hundred distinct files are listed repeatedly to make up
  the 12,936 paths), batches moved to the device.

Each step is split into *data* (wall time from asking for the batch until it is on the device,
augmented) and *compute* (forward, the model's ``compute_losses``, backward, optimiser step — the
same sequence as ``reidkit.engine.trainer.Trainer``). The data share is data / (data + compute).
Images per CPU-second (this process and its DataLoader workers, ``psutil``) are printed beside the
wall-clock rates because the machines are shared. Time per epoch is *extrapolated*: mean step time
× steps per epoch, not measured over a whole epoch. An epoch is what the papers count (and what
``PKSampler`` yields): every identity once, ⌊751 / 32⌋ = 23 batches of 128 on Market-1501.

GPU (run it on a machine with one)::

    python benchmarks/bench_train.py --device cuda --amp bf16 --channels-last --compile --peak-tflops 989

adds ``torch.cuda.max_memory_allocated``, the FLOPs of one training step (forward + backward,
``torch.utils.flop_counter.FlopCounterMode`` on the eager model), MFU = FLOPs per step / step time /
peak, and the projected wall time of STADB's 600-epoch schedule (600 × 23 steps). On CPU, ``--flops`` counts FLOPs too.

Usage::

    python benchmarks/bench_train.py                       # 3 warm-up + 5 timed steps per path (slow on CPU)
    python benchmarks/bench_train.py --models stadb --warmup 1 --steps 2
    python benchmarks/bench_train.py --quick               # tiny sizes (smoke test, seconds)

Prints one markdown table (each model's row also as soon as it is done).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from _util import cpu_seconds, fmt, rate, ratio  # noqa: E402

from reidkit.data.augment import AugmentConfig, TrainAugment  # noqa: E402
from reidkit.data.per_image import make_loader  # noqa: E402
from reidkit.data.sampler import PKSampler  # noqa: E402
from reidkit.engine.step import train_step  # noqa: E402

# model -> (augmentation pipeline, gradient clipping as in the paper configs)
MODELS: dict[str, tuple[str, float | None]] = {
    "stadb": ("stadb", None),
    "bdb": ("stadb", None),
    "mancs": ("mancs", 5.0),
    "baseline": ("stadb", None),
}
EPOCHS_PROJECTED = 600


def write_jpegs(folder: Path, n: int, size: tuple[int, int] = (128, 64)) -> list[Path]:
    """``n`` synthetic pedestrian JPEGs (Market-1501 crop size) in ``folder``."""
    from reidkit.data.synthetic import render_bytes

    files = []
    for i in range(n):
        f = folder / f"{i:05d}.jpg"
        f.write_bytes(render_bytes(0, 1 + i % 97, 1 + i % 6, i, size=size))
        files.append(f)
    return files


class Sync:
    """Waits for the device before a clock is read (CUDA runs asynchronously)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def count_step_flops(core: torch.nn.Module, x: torch.Tensor, pids: torch.Tensor, amp: torch.dtype | None) -> float:
    """FLOPs of one forward + backward pass (no optimiser step, no update)."""
    from torch.utils.flop_counter import FlopCounterMode

    ctx = torch.autocast(device_type=x.device.type, dtype=amp) if amp is not None else contextlib.nullcontext()
    counter = FlopCounterMode(display=False)
    with counter, ctx:
        total = sum(v.float() for v in core.compute_losses(core(x), pids, 0).values())
        total.backward()  # type: ignore[union-attr]
    core.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def bench_model(name: str, args: argparse.Namespace, u8: torch.Tensor, paths: list[str], pids: list[int],
                device: torch.device) -> dict[str, Any]:
    """Time ``args.steps`` steps of each path, interleaved, after ``args.warmup`` untimed steps."""
    from reidkit.models import build

    pipeline, clip = MODELS[name]
    num_classes = len(set(pids))
    core = build(name, num_classes, backbone=args.backbone, pretrained=None)
    core.input_size = tuple(args.size)
    core.to(device).train()
    if args.channels_last:
        core.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam([p for p in core.parameters() if p.requires_grad], lr=3.5e-4, weight_decay=5e-4)
    model: torch.nn.Module = core
    compile_s = 0.0
    if args.compile:
        model = torch.compile(core)  # type: ignore[assignment]
    amp = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    if amp is not None and device.type != "cuda":
        amp = None
    sync = Sync(device)
    cfg = AugmentConfig.for_pipeline(pipeline, size=tuple(args.size))
    aug = TrainAugment(cfg)
    gen = torch.Generator(device=device).manual_seed(0)
    pid_t = torch.as_tensor(pids, dtype=torch.long)

    sampler_c = PKSampler(pids, args.p, args.k, seed=0)
    sampler_p = PKSampler(pids, args.p, args.k, seed=1)
    steps_per_epoch = len(sampler_c)

    def cached_batches() -> Any:
        epoch = 0
        while True:
            sampler_c.set_epoch(epoch)
            for idx in sampler_c:
                index = torch.as_tensor(idx, dtype=torch.long)
                b = u8.index_select(0, index.to(u8.device))
                if b.device != device:
                    b = b.to(device, non_blocking=True)
                yield aug(b, gen), pid_t[index]
            epoch += 1

    loader = make_loader(paths, pids, cfg, workers=args.workers, batch_sampler=sampler_p, seed=0)

    def per_image_batches() -> Any:
        epoch = 0
        while True:
            sampler_p.set_epoch(epoch)
            for x, y in loader:
                yield x.to(device, non_blocking=True), y
            epoch += 1

    sources = {"cached": cached_batches(), "per-image": per_image_batches()}
    t = time.perf_counter()
    next(sources["per-image"])  # start the DataLoader workers before anything is timed
    loader_start_s = time.perf_counter() - t
    stats: dict[str, dict[str, list[float]]] = {k: {"data": [], "step": [], "cpu": [], "n": []} for k in sources}

    def one(path: str, record: bool) -> None:
        nonlocal compile_s
        c0 = cpu_seconds()
        sync()
        t0 = time.perf_counter()
        x, y = next(sources[path])
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        sync()
        t1 = time.perf_counter()
        train_step(model, core, opt, x, y, 0, autocast_dtype=amp, grad_clip=clip)
        sync()
        t2 = time.perf_counter()
        if not record and args.compile and compile_s == 0.0:
            compile_s = t2 - t1  # the first step of a compiled model includes the compilation
        if record:
            s = stats[path]
            s["data"].append(t1 - t0)
            s["step"].append(t2 - t0)
            s["cpu"].append(cpu_seconds() - c0)
            s["n"].append(float(x.shape[0]))
        if args.verbose:
            print(f"  {name} {path} {'timed' if record else 'warm-up'}: data {t1 - t0:.3f} s, "
                  f"step {t2 - t0:.2f} s", file=sys.stderr, flush=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        one("cached", False)
    order = ["cached", "per-image"]
    for i in range(args.steps):
        for path in (order if i % 2 == 0 else order[::-1]):  # ABBA: neither path always runs first
            one(path, True)
    peak_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")

    flops = float("nan")
    if args.flops or device.type == "cuda":
        x, y = next(sources["cached"])
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        flops = count_step_flops(core, x, y.to(device), amp)
    sources.clear()  # ends the DataLoader iterator (its workers exit)

    out: dict[str, Any] = {"model": name, "steps_per_epoch": steps_per_epoch, "compile_s": compile_s,
                           "loader_start_s": loader_start_s, "peak_gb": peak_gb, "flops": flops,
                           "params_m": sum(p.numel() for p in core.parameters()) / 1e6}
    for path, s in stats.items():
        step = statistics.mean(s["step"])
        data = statistics.mean(s["data"])
        n = statistics.mean(s["n"])
        out[path] = {"step_s": step, "data_s": data, "data_share": ratio(data, step), "img_s": rate(n, step),
                     "img_cpu_s": rate(sum(s["n"]), sum(s["cpu"])), "epoch_s": step * steps_per_epoch,
                     "steps": len(s["step"])}
    return out


def fmt_time(s: float) -> str:
    if s != s:
        return "n/a"
    if s >= 86400:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def row(r: dict[str, Any], args: argparse.Namespace) -> str:
    c, p = r["cached"], r["per-image"]
    cells = [r["model"], f"{fmt(c['img_s'], '.2f')} ({fmt(c['img_cpu_s'], '.2f')})",
             f"{fmt(100 * c['data_share'], '.1f', '%')} ({1000 * c['data_s']:.0f} ms)", fmt_time(c["epoch_s"]),
             f"{fmt(p['img_s'], '.2f')} ({fmt(p['img_cpu_s'], '.2f')})",
             f"{fmt(100 * p['data_share'], '.1f', '%')} ({1000 * p['data_s']:.0f} ms)", fmt_time(p["epoch_s"]),
             f"{fmt(ratio(c['img_s'], p['img_s']), '.2f', '×')} ({fmt(ratio(c['img_cpu_s'], p['img_cpu_s']), '.2f', '×')})"]
    if args.device_obj.type == "cuda" or args.flops:
        gflop = r["flops"] / 1e9
        mfu = (r["flops"] / c["step_s"] / (args.peak_tflops * 1e12)) if args.peak_tflops else float("nan")
        proj = EPOCHS_PROJECTED * c["epoch_s"]
        cells += [f"{gflop:.1f}", f"{100 * mfu:.1f}%" if mfu == mfu else "n/a", f"{r['peak_gb']:.1f}"
                  if r["peak_gb"] == r["peak_gb"] else "n/a", fmt_time(proj), f"{r['compile_s']:.0f} s"
                  if args.compile else "-"]
    return "| " + " | ".join(cells) + " |"


def header(args: argparse.Namespace) -> str:
    cols = ["model", "cached img/s (per CPU-s)", "cached data share (ms/step)", "cached epoch (extrap.)",
            "per-image img/s (per CPU-s)", "per-image data share (ms/step)", "per-image epoch (extrap.)",
            "cached / per-image wall (CPU)"]
    if args.device_obj.type == "cuda" or args.flops:
        cols += ["GFLOP/step (fwd+bwd)", "MFU", "peak GiB", f"{EPOCHS_PROJECTED} epochs (proj.)", "compile"]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test): resnet18, 64×32, P×K 2×2, 1 step per path, 1 thread")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--images", type=int, default=12936, help="training images (Market-1501: 12,936)")
    ap.add_argument("--ids", type=int, default=751, help="training identities (Market-1501: 751)")
    ap.add_argument("--files", type=int, default=384, help="distinct JPEG files behind the per-image path")
    ap.add_argument("--size", type=int, nargs=2, default=(384, 128), metavar=("H", "W"))
    ap.add_argument("--p", type=int, default=32)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (cached path)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per path (interleaved)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (per-image path)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"), help="autocast dtype (CUDA only)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (compile time reported)")
    ap.add_argument("--flops", action="store_true", help="count FLOPs of one step on CPU too (always on CUDA)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's peak dense TFLOP/s at the training precision, for MFU (e.g. 989 for H100 "
                         "SXM bf16)")
    ap.add_argument("--verbose", action="store_true", help="print every step's times to stderr")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.ids, args.files, args.size, args.p, args.k = 32, 8, 4, (64, 32), 2, 2
        args.backbone, args.warmup, args.steps, args.workers = "resnet18", 0, 1, 1
        args.threads = args.threads or 1
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    for n in names:
        if n not in MODELS:
            ap.error(f"unknown model {n!r}; expected some of {', '.join(MODELS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.device_obj = device

    pids = [i * args.ids // args.images for i in range(args.images)]  # 751 ids, 17-18 images each
    g = torch.Generator().manual_seed(0)
    t = time.perf_counter()
    u8 = torch.randint(0, 256, (args.images, 3, *args.size), dtype=torch.uint8, generator=g)
    if device.type == "cuda":
        u8 = u8.to(device)  # the trainer keeps the whole uint8 cache on the GPU
    fill_s = time.perf_counter() - t
    tmp = tempfile.TemporaryDirectory(prefix="bench_train_")
    files = write_jpegs(Path(tmp.name), args.files)
    paths = [str(files[i % len(files)]) for i in range(args.images)]

    load = os.getloadavg()
    print(f"training throughput, {args.backbone} trunks, {args.images} training images / {args.ids} ids, "
          f"{args.size[0]}×{args.size[1]}, P×K {args.p}×{args.k} = {args.p * args.k}, Adam; device {args.device}"
          f"{', amp ' + args.amp if args.amp != 'none' else ''}{', channels_last' if args.channels_last else ''}"
          f"{', torch.compile' if args.compile else ''}; torch {torch.__version__}, {torch.get_num_threads()} "
          f"torch threads, {args.workers} DataLoader workers, os.cpu_count()={os.cpu_count()}; "
          f"{args.warmup} warm-up + {args.steps} timed steps per path, interleaved; cache = random uint8 "
          f"({u8.numel() / 2**30:.2f} GiB, filled in {fill_s:.1f} s); per-image path = {len(files)} synthetic "
          f"128×64 JPEGs listed {args.images / len(files):.1f}× over; load average at start "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}\n", flush=True)
    results = []
    for name in names:
        r = bench_model(name, args, u8, paths, pids, device)
        results.append(r)
        print(f"[{name} done, load average {os.getloadavg()[0]:.1f}] " + row(r, args), file=sys.stderr, flush=True)
    tmp.cleanup()
    print(header(args))
    for r in results:
        print(row(r, args))
    spe = results[0]["steps_per_epoch"] if results else 0
    print(f"\nepoch = {spe} steps (extrapolated from the mean timed step); data share = time to get the "
          f"augmented batch on the device / whole step; load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
