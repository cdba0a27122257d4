"""Feature-extraction throughput on CPU: PyTorch eager vs torch.compile (inductor) vs ONNX Runtime.

All engines embed the *same* normalised float batches (random uint8 images at the model's input
size passed through ``reidkit.data.augment.test_batch``), **interleaved batch by batch** in one
process (the order of the engines rotates from batch to batch), so a busy machine slows them
alike. Reported per engine and batch size: images/s (wall), images per CPU-second
(``time.process_time``: this process, all its threads), the ratio to eager, and the largest
difference from the eager embeddings (relative to their largest entry). torch.compile's first
call at each batch size (the compilation) and the ONNX export (``reidkit.inference.export_onnx``,
with its parity check) are timed separately and not counted in the rates.

Threads: torch uses ``--threads`` (default: the physical core count, ``psutil``), ONNX Runtime the
same number of intra-op threads, sequential execution.

Usage::

    python benchmarks/bench_extract.py                                   # STADB, 384×128, batches 32 and 64
    python benchmarks/bench_extract.py --models stadb,bdb,mancs,baseline --images 256
    python benchmarks/bench_extract.py --quick                           # resnet18, 64×32, a few images
    python benchmarks/bench_extract.py --api-vs-cli --backbone resnet18 --size 128 64 --images 256

Prints one markdown table.

``--api-vs-cli`` times instead the two ways a user embeds a folder of crops, end to end (model file
read, engine chosen, images decoded and embedded): ``reidkit extract`` (in this process, its ``main``) and
``reidkit.load(model).embed(paths)`` with its defaults, beside the API on PyTorch (``engine="torch"``, what
``reidkit.load`` ran on before issue 27) — on the same JPEG crops (random pictures), interleaved run by run.
The ONNX export into a temporary cache happens once before the timing (its time is printed apart).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from _util import interleaved_times  # noqa: E402

from reidkit.utils.threads import physical_cores  # noqa: E402

ENGINES = ("eager", "compile", "onnx")


def make_engines(model: torch.nn.Module, names: list[str], threads: list[int], tmp: Path,
                 size: tuple[int, int]) -> tuple[dict[str, Any], dict[str, float]]:
    """label -> callable(float batch) -> (N, D) tensor; and setup times (export, ...).

    With several thread counts each engine appears once per count (``eager 1t``, ``eager 2t``, ...),
    except ``compile`` (its compilation is long), which runs with the first count only.
    """
    engines: dict[str, Any] = {}
    setup: dict[str, float] = {}
    many = len(threads) > 1

    def label(e: str, t: int) -> str:
        return f"{e} {t}t" if many else e

    def with_threads(fn: Any, t: int) -> Any:
        def run(x: torch.Tensor) -> torch.Tensor:
            if torch.get_num_threads() != t:
                torch.set_num_threads(t)
            with torch.inference_mode():
                return fn(x)
        return run

    if "eager" in names:
        for t in threads:
            engines[label("eager", t)] = with_threads(model, t)
    if "compile" in names:
        compiled = torch.compile(model, backend="inductor", dynamic=False)
        engines[label("compile", threads[0])] = with_threads(compiled, threads[0])
    if "onnx" in names:
        import onnxruntime as ort

        from reidkit.inference import export_onnx

        t0 = time.perf_counter()
        path = tmp / f"{getattr(model, 'name', 'model')}.onnx"
        export_onnx(model, path, batch_sizes=(1, 2))
        setup["onnx export + parity check"] = time.perf_counter() - t0
        for t in threads:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = t
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            t0 = time.perf_counter()
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            setup[f"onnx session ({t} threads)"] = time.perf_counter() - t0

            def onnx(x: torch.Tensor, sess: Any = sess) -> torch.Tensor:
                return torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0])
            engines[label("onnx", t)] = onnx
    return engines, setup


def bench_model(name: str, args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    from reidkit.data.augment import test_batch
    from reidkit.models import build

    model = build(name, 751, backbone=args.backbone, pretrained=None)
    size = tuple(args.size) if args.size else tuple(model.input_size)
    model.input_size = size
    model.eval()
    names = [e for e in args.engines.split(",") if e]
    engines, setup = make_engines(model, names, args.threads, tmp, size)
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (args.images, 3, *size), dtype=torch.uint8, generator=g)
    rows = []
    for bs in args.batch_sizes:
        batches = [test_batch(u8[s:s + bs], size) for s in range(0, args.images - bs + 1, bs)]
        if not batches:
            continue
        # warm-up (compile's first call at this batch size = compilation), and the reference outputs
        first: dict[str, float] = {}
        ref: dict[str, torch.Tensor] = {}
        for e, fn in engines.items():
            t = time.perf_counter()
            ref[e] = fn(batches[0]).float().clone()
            first[e] = time.perf_counter() - t
        diff = dict.fromkeys(engines, 0.0)
        wall, cpu, count = interleaved_times(engines, batches, args.repeat)  # rotated: no engine always first
        # parity: every engine against the (first) eager engine on the first batch
        eager = next((e for e in engines if e.startswith("eager")), None)
        if eager is not None:
            scale = max(1.0, float(ref[eager].abs().max()))
            for e in engines:
                diff[e] = float((ref[e] - ref[eager]).abs().max()) / scale
        for e in engines:
            rows.append({"model": name, "size": size, "bs": bs, "engine": e, "img_s": count[e] / wall[e],
                         "img_cpu_s": count[e] / max(cpu[e], 1e-9), "images": count[e],
                         "first_call_s": first[e], "diff": diff[e], "setup": setup})
        if args.verbose:
            for r in rows[-len(engines):]:
                print(f"  {name} bs {bs} {r['engine']}: {r['img_s']:.2f} img/s, first call {r['first_call_s']:.1f} s",
                      file=sys.stderr, flush=True)
    return rows


def bench_api_vs_cli(args: argparse.Namespace, tmp: Path) -> None:
    """Print the table of ``--api-vs-cli`` (see the module docstring)."""
    import contextlib
    import io

    import numpy as np
    from PIL import Image

    import reidkit
    from reidkit.cli import main as cli_main
    from reidkit.models import build
    from reidkit.models.io import save_weights

    name = args.models.split(",")[0]
    model = build(name, 751, backbone=args.backbone, pretrained=None)
    model.input_size = tuple(args.size)
    model_file = save_weights(model.eval(), tmp / "model.safetensors")
    crops = tmp / "crops"
    crops.mkdir()
    rng = np.random.default_rng(0)
    for i in range(args.images):
        Image.fromarray(rng.integers(0, 256, (args.size[0], args.size[1], 3), dtype=np.uint8)).save(crops / f"{i:05d}.jpg")
    paths = sorted(str(p) for p in crops.glob("*.jpg"))
    os.environ["REIDKIT_CACHE"] = str(tmp / "cache")
    quiet = contextlib.redirect_stderr(io.StringIO())

    import reidkit.commands.extract as extract_cmd

    real_load = extract_cmd.load_embedder

    def cli() -> Any:
        used: list[Any] = []
        extract_cmd.load_embedder = lambda a: used.append(real_load(a)) or used[-1]  # to read its engine after
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                assert cli_main(["extract", "--checkpoint", str(model_file), "--images", str(crops), "--out",
                                 str(tmp / "f.safetensors"), "--no-progress", "--device", "cpu"]) == 0
        finally:
            extract_cmd.load_embedder = real_load
        cli.kind, cli.threads = used[0].engine.kind, torch.get_num_threads()  # type: ignore[attr-defined]

    def api(engine: str) -> Any:
        def run() -> Any:
            emb = reidkit.load(model_file, device="cpu", engine=engine)
            with quiet:
                emb.embed(paths)
            run.kind = emb.engine.kind  # type: ignore[attr-defined]
            run.threads = torch.get_num_threads()  # type: ignore[attr-defined]
        return run

    runs = {"reidkit extract (CLI)": cli, "reidkit.load(...).embed(...) (API, defaults)": api("auto"),
            "API on PyTorch (engine=\"torch\": the API's engine before issue 27)": api("torch")}
    t0 = time.perf_counter()
    api("auto")()  # the one ONNX export into the cache (auto exports for >= 256 images), outside the timing
    export_s = time.perf_counter() - t0
    wall = dict.fromkeys(runs, 0.0)
    cpu = dict.fromkeys(runs, 0.0)
    order = list(runs)
    for r in range(args.repeat):
        for label in order[r % len(order):] + order[:r % len(order)]:
            t, c = time.perf_counter(), time.process_time()
            runs[label]()
            wall[label] += time.perf_counter() - t
            cpu[label] += time.process_time() - c
    n = args.images * args.repeat
    print(f"API vs CLI on {args.images} JPEG crops ({name}, {args.backbone}, {args.size[0]}×{args.size[1]}), "
          f"{args.repeat} run(s) each, interleaved; torch {torch.__version__}, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, os.cpu_count()={os.cpu_count()}, affinity "
          f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} CPU(s); load average "
          f"{os.getloadavg()[0]:.1f}; first ONNX export (not timed below) {export_s:.1f} s\n")
    print("| path | engine | torch threads | img/s (wall) | img per CPU-s | vs CLI (wall) |")
    print("|---|---|---:|---:|---:|---:|")
    cli_rate = n / wall[order[0]]
    for label in order:
        fn = runs[label]
        print(f"| {label} | {fn.kind} | {fn.threads} | {n / wall[label]:.1f} | {n / max(cpu[label], 1e-9):.1f} "
              f"| {n / wall[label] / cli_rate:.2f}× |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test): resnet18, 64×32, 8 images, batch 4, eager and onnx")
    ap.add_argument("--models", default="stadb", help="comma-separated: stadb, bdb, mancs, baseline")
    ap.add_argument("--engines", default=None, help="comma-separated subset of " + ", ".join(ENGINES)
                    + " (default all; --quick: eager,onnx)")
    ap.add_argument("--backbone", default="resnet50")
    ap.add_argument("--size", type=int, nargs=2, default=(384, 128), metavar=("H", "W"),
                    help="input size (default 384 128)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--images", type=int, default=128, help="distinct images per batch size")
    ap.add_argument("--repeat", type=int, default=1, help="passes over the images")
    ap.add_argument("--threads", type=int, nargs="+", default=[physical_cores()],
                    help="torch threads and ONNX Runtime intra-op threads (default: physical cores); several "
                         "values compare them in the same run")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--api-vs-cli", action="store_true",
                    help="time reidkit.load(...).embed(...) against reidkit extract on the same crops (--models: "
                         "the first; --images crops; --repeat runs each)")
    args = ap.parse_args(argv)
    if args.api_vs_cli:
        with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
            bench_api_vs_cli(args, Path(tmp))
        return 0
    args.engines_given = args.engines is not None
    args.engines = args.engines or ",".join(ENGINES)
    if args.quick:
        args.backbone, args.size, args.batch_sizes, args.images = "resnet18", (64, 32), [4], 8
        if not args.engines_given:  # inductor compiles for minutes on a CPU: pass --engines to include it
            args.engines = "eager,onnx"
    for e in args.engines.split(","):
        if e and e not in ENGINES:
            ap.error(f"unknown engine {e!r}; expected some of {', '.join(ENGINES)}")
    torch.set_num_threads(args.threads[0])
    load = os.getloadavg()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_extract_") as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            rows += bench_model(name, args, Path(tmp))
    print(f"feature extraction, {args.backbone} trunks, random images at {args.size[0]}×{args.size[1]}, "
          f"{args.images} images × {args.repeat} per batch size, engines interleaved batch by batch; "
          f"torch {torch.__version__}, {'/'.join(map(str, args.threads))} torch threads = ORT intra-op threads, "
          f"os.cpu_count()={os.cpu_count()}; load average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
          f"at end {os.getloadavg()[0]:.1f}\n")
    print("| model | batch | engine | img/s (wall) | img per CPU-s | vs eager (wall / CPU) | first call s "
          "| max diff vs eager (rel.) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    base: dict[Any, dict[str, Any]] = {}
    for r in rows:
        if r["engine"].startswith("eager"):
            base.setdefault((r["model"], r["bs"]), r)
    for r in rows:
        b = base.get((r["model"], r["bs"]))
        ratio = f"{r['img_s'] / b['img_s']:.2f}× / {r['img_cpu_s'] / b['img_cpu_s']:.2f}×" if b else "-"
        print(f"| {r['model']} | {r['bs']} | {r['engine']} | {r['img_s']:.2f} | {r['img_cpu_s']:.2f} | {ratio} "
              f"| {r['first_call_s']:.1f} | {r['diff']:.1e} |")
    setups = {(r["model"], k): v for r in rows for k, v in r["setup"].items()}
    if setups:
        print("\nsetup (not in the rates): " + "; ".join(f"{m} {k} {v:.1f} s" for (m, k), v in setups.items())
              + "; 'first call' of compile = inductor compilation at that batch size")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
