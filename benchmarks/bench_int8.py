"""INT8 against float32 ONNX Runtime on a CPU: speed, and what INT8 costs in mAP and rank-1 (issue 17).

**Speed** (one table): for each of ``--models`` built with ``--backbone`` at the model class's own input size
(``input_size``: 384×128 for STADB and the global baseline; random-init weights, which do not change the
work), the float32 export (``reidkit.inference.export_onnx``) and its static INT8 copy
(``reidkit.inference.quantize.quantize_onnx``, calibrated on ``--calibrate DIR`` or, by default, 64
synthetic pedestrians; ``--dynamic`` adds the dynamic copy) embed the same normalised batches, interleaved
batch by batch (the order alternates), each session with ``--threads`` intra-op threads. Reported:
images/s (wall), images per CPU-second (``time.process_time`` of this process: a busy machine moves it
less), the INT8/float32 ratios, file sizes.

**Accuracy** (a second table, for each ``--checkpoint NAME=PATH``): on the synthetic set (``--synthetic
DIR``, a Market-1501-layout folder as ``reidkit demo``/``reidkit synth`` write; one is generated when not
given) and on each ``--market DIR`` (a Market-1501-layout folder, e.g. ``/work/realdev/cuhk03_x200``), the
checkpoint is exported, quantized statically on ``--calibration-images`` crops of the set's
``bounding_box_train`` (never the query or gallery), and query and gallery are embedded with both files
(``reidkit.inference.embed_dataset``, what ``reidkit eval --onnx`` runs) and evaluated under the
Market-1501 protocol (euclidean, no flip, no re-ranking): mAP and rank-1 of each, the difference, the
cosine between INT8 and float32 embeddings of every query and gallery image, and INT8 queries against the
float32 gallery.

Usage::

    python benchmarks/bench_int8.py                      # speed: stadb and baseline, ResNet-50, 384×128
    python benchmarks/bench_int8.py --checkpoint bdb=/work/realdev/ablation/bdb_seed1/checkpoint.pt \\
        --market /work/realdev/cuhk03_x200 --synthetic data/synthetic
    python benchmarks/bench_int8.py --quick              # resnet18, 64×32, a few images (smoke test)

Prints markdown tables and the CPU's VNNI flags (INT8 kernels without VNNI gain far less).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import torch  # noqa: E402
from _util import fmt, interleaved_times, rate, ratio  # noqa: E402

from reidkit.utils.threads import physical_cores  # noqa: E402

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> str:
    """Which of ``FLAGS`` the CPU has (Linux ``/proc/cpuinfo``), and its model name."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.processor() or 'unknown CPU'} (flags unknown)"
    flags = set()
    name = "unknown CPU"
    for line in text.splitlines():
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
    has = [f for f in FLAGS if f in flags]
    missing = [f for f in FLAGS if f not in flags]
    return f"{name}: has {', '.join(has) or 'none'} of {', '.join(FLAGS)}; lacks {', '.join(missing) or 'none'}"


def session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def synthetic_folder(folder: Path, n: int) -> Path:
    """``n`` synthetic pedestrian JPEGs in ``folder`` (the default calibration crops of the speed table)."""
    from reidkit.data.synthetic import render_bytes

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i:04d}.jpg").write_bytes(render_bytes(1, i // 2, i % 2, i))
    return folder


def bench_speed(name: str, args: argparse.Namespace, tmp: Path, calib: Path) -> list[dict[str, Any]]:
    from reidkit.data.augment import test_batch
    from reidkit.inference import export_onnx
    from reidkit.inference.quantize import quantize_onnx
    from reidkit.models import build

    model = build(name, 751, backbone=args.backbone, pretrained=None).eval()
    if args.size:
        model.input_size = tuple(args.size)
    size = tuple(model.input_size)
    fp32 = tmp / f"{name}.onnx"
    t0 = time.perf_counter()
    export_onnx(model, fp32, batch_sizes=(1, 2))
    setup = {"export": time.perf_counter() - t0}
    files = {"float32": fp32}
    modes = ["static"] + (["dynamic"] if args.dynamic else [])
    cosine = {}
    for mode in modes:
        out = tmp / f"{name}.{mode}.int8.onnx"
        t0 = time.perf_counter()
        rep = quantize_onnx(fp32, out, calibrate=calib if mode == "static" else None,
                            calibration_images=args.calibration_images, check=False)
        setup[f"quantize {mode}"] = time.perf_counter() - t0
        files[f"int8 {mode}"] = out
        cosine[f"int8 {mode}"] = (rep.mean_cosine, rep.min_cosine)
    print(f"  {name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.items()), file=sys.stderr, flush=True)
    sessions = {k: session(p, args.threads) for k, p in files.items()}
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (args.images, 3, *size), dtype=torch.uint8, generator=g)
    bs = args.batch_size
    batches = [test_batch(u8[s:s + bs], size).numpy() for s in range(0, args.images - bs + 1, bs)]
    for sess in sessions.values():  # warm-up: first-run allocations
        sess.run(None, {"images": batches[0]})
    wall, cpu, count = interleaved_times(
        {e: (lambda x, sess=sess: sess.run(None, {"images": x})) for e, sess in sessions.items()}, batches, args.repeat)
    for e in sessions:
        print(f"  {name} {e}: {fmt(rate(count[e], cpu[e]), '.2f')} images per CPU-s", file=sys.stderr, flush=True)
    return [{"model": name, "size": size, "engine": e, "img_s": rate(count[e], wall[e]),
             "img_cpu_s": rate(count[e], cpu[e]), "mb": files[e].stat().st_size / 2**20,
             "cosine": cosine.get(e), "setup": setup, "images": count[e]} for e in sessions]


def bench_accuracy(label: str, checkpoint: str, data: str, kind: str, args: argparse.Namespace,
                   tmp: Path) -> dict[str, Any]:
    from reidkit.data.datasets import load as load_dataset
    from reidkit.eval import evaluate
    from reidkit.inference import Embedder, embed_dataset, export_onnx
    from reidkit.inference.modelfile import load_model_file
    from reidkit.inference.quantize import quantize_onnx

    model = load_model_file(checkpoint, "cpu")
    fp32 = tmp / f"{label}-{kind}.onnx"
    export_onnx(model, fp32)
    int8 = tmp / f"{label}-{kind}.int8.onnx"
    rep = quantize_onnx(fp32, int8, calibrate=Path(data) / "bounding_box_train",
                        calibration_images=args.calibration_images, check=False)
    print(f"  {label} on {kind}: quantized on {rep.calibration_images} crops", file=sys.stderr, flush=True)
    ds = load_dataset("market1501", data)
    feats = {}
    for key, path in (("float32", fp32), ("int8", int8)):
        emb = Embedder(onnx_path=path, device="cpu").use_engine("onnx", threads=args.threads)
        feats[key] = embed_dataset(emb, ds, batch_size=args.batch_size, progress=False)

    def metrics(q: Any, g: Any) -> tuple[float, float]:
        f = feats["float32"]
        r = evaluate(q, g, f.query_pids, f.gallery_pids, f.query_camids, f.gallery_camids)
        return 100 * float(r["mAP"]), 100 * float(r["cmc"][0])

    a, b = feats["float32"], feats["int8"]
    cos = torch.nn.functional.cosine_similarity(torch.cat([a.query_feats, a.gallery_feats]).double(),
                                                torch.cat([b.query_feats, b.gallery_feats]).double(), dim=1)
    return {"label": label, "data": kind, "root": data, "calib": rep.calibration_images,
            "fp32": metrics(a.query_feats, a.gallery_feats), "int8": metrics(b.query_feats, b.gallery_feats),
            "mixed": metrics(b.query_feats, a.gallery_feats), "cos": (float(cos.mean()), float(cos.min())),
            "n": (len(a.query_pids), len(a.gallery_pids)), "size": tuple(model.input_size)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes (smoke test): resnet18, 64×32, 8 images, batch 4, an untrained checkpoint "
                         "on a tiny synthetic set")
    ap.add_argument("--models", default="stadb,baseline", help="speed table: comma-separated model names")
    ap.add_argument("--backbone", default="resnet50", help="speed table trunk (default resnet50, as the papers)")
    ap.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="speed table input size (default: each model's input_size, 384 128)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--images", type=int, default=128, help="speed table: distinct images")
    ap.add_argument("--repeat", type=int, default=1, help="speed table: passes over the images")
    ap.add_argument("--threads", type=int, default=physical_cores(),
                    help="ONNX Runtime intra-op threads (default: physical cores)")
    ap.add_argument("--calibrate", metavar="DIR", help="speed table: calibration crops (default: 64 synthetic)")
    ap.add_argument("--calibration-images", type=int, default=128)
    ap.add_argument("--dynamic", action="store_true", help="speed table: add the dynamic INT8 copy")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                    help="accuracy table: a trained model (repeatable)")
    ap.add_argument("--synthetic", metavar="DIR", help="accuracy table: synthetic Market-layout set (default: "
                                                       "generated at the checkpoint's input size)")
    ap.add_argument("--market", action="append", default=[], metavar="DIR",
                    help="accuracy table: a Market-1501-layout folder (repeatable)")
    args = ap.parse_args(argv)
    checkpoints = []
    for item in args.checkpoint:
        if "=" not in item:
            ap.error(f"--checkpoint {item!r}: expected NAME=PATH")
        checkpoints.append(tuple(item.split("=", 1)))
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_int8_") as tmp_name:
        tmp = Path(tmp_name)
        if args.quick:
            args.backbone, args.size, args.batch_size, args.images = "resnet18", (64, 32), 4, 8
            args.models = "stadb"
            args.calibration_images = 8
            if not checkpoints:
                from reidkit.models import build, save_weights

                torch.manual_seed(0)
                m = build("stadb", 10, backbone="resnet18").eval()
                m.input_size = (64, 32)
                checkpoints = [("stadb-untrained", str(save_weights(m, tmp / "untrained.safetensors")))]
        torch.set_num_threads(args.threads)
        calib = Path(args.calibrate) if args.calibrate else synthetic_folder(tmp / "calib", 64)
        speed = []
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            speed += bench_speed(name, args, tmp, calib)
        accuracy = []
        for label, path in checkpoints:
            synthetic, shown = args.synthetic, args.synthetic
            if synthetic is None:
                from reidkit.data.synthetic import generate_dataset
                from reidkit.inference.modelfile import load_model_file

                size = tuple(load_model_file(path, "cpu").input_size)
                ids, per = (8, 2) if args.quick else (100, 4)
                cams = 2 if args.quick else 4
                synthetic = str(generate_dataset(tmp / f"synth-{size[0]}x{size[1]}", ids=ids, cams=cams, seed=0,
                                                 images_per_id_cam=per, size=size))
                shown = f"generated: {ids} ids, {cams} cameras, seed 0"
            for kind, root in [("synthetic", synthetic), *(("market", m) for m in args.market)]:
                accuracy.append(bench_accuracy(label, path, root, kind, args, tmp))
                accuracy[-1]["shown"] = shown if kind == "synthetic" else root
    import onnxruntime

    print(f"INT8 vs float32 ONNX Runtime {onnxruntime.__version__}, torch {torch.__version__}; {cpu_flags()}; "
          f"{args.threads} intra-op threads, batch {args.batch_size}, os.cpu_count()={os.cpu_count()}; load "
          f"average at start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, at end {os.getloadavg()[0]:.1f}\n")
    print(f"Speed: {args.backbone} trunks, random-init weights, {args.images} random images × {args.repeat}, "
          f"engines interleaved batch by batch; static INT8 calibrated on up to {args.calibration_images} crops "
          f"of {args.calibrate or '64 synthetic pedestrians'}\n")
    print("| model | input | engine | img/s (wall) | img per CPU-s | INT8 / float32 (wall / CPU) | file MB "
          "| cosine to float32 (mean / min) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    base = {r["model"]: r for r in speed if r["engine"] == "float32"}
    for r in speed:
        b = base[r["model"]]
        vs = "-" if r is b else (f"{fmt(ratio(r['img_s'], b['img_s']), '.2f', '×')} / "
                                 f"{fmt(ratio(r['img_cpu_s'], b['img_cpu_s']), '.2f', '×')}")
        cos = "-" if r["cosine"] is None else f"{r['cosine'][0]:.4f} / {r['cosine'][1]:.4f}"
        print(f"| {r['model']} | {r['size'][0]}×{r['size'][1]} | {r['engine']} | {fmt(r['img_s'], '.2f')} "
              f"| {fmt(r['img_cpu_s'], '.2f')} | {vs} | {r['mb']:.1f} | {cos} |")
    setups = "; ".join(f"{r['model']} {k} {v:.1f} s" for r in speed if r["engine"] == "float32"
                       for k, v in r["setup"].items())
    print(f"\nsetup (not in the rates): {setups}")
    if accuracy:
        print(f"\nAccuracy: static INT8 calibrated on {args.calibration_images} crops of each set's "
              "bounding_box_train; Market-1501 protocol, euclidean, no flip, no re-ranking\n")
        print("| model | data | input | queries / gallery | mAP float32 | mAP INT8 | Δ mAP | R1 float32 | R1 INT8 "
              "| Δ R1 | cosine (mean / min) | mAP, INT8 queries vs float32 gallery |")
        print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in accuracy:
            (m32, r32), (m8, r8), (mx, _) = r["fp32"], r["int8"], r["mixed"]
            print(f"| {r['label']} | {r['data']} ({r['shown']}) | {r['size'][0]}×{r['size'][1]} | "
                  f"{r['n'][0]} / {r['n'][1]} | {m32:.2f} | {m8:.2f} | {m8 - m32:+.2f} | {r32:.2f} | {r8:.2f} "
                  f"| {r8 - r32:+.2f} | {r['cos'][0]:.4f} / {r['cos'][1]:.4f} | {mx:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
