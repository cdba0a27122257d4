"""``reidkit export``: write a checkpoint's test embedding as ONNX and check it against PyTorch.

Example:
    reidkit export --checkpoint runs/stadb/model.safetensors --out stadb.onnx --opset 17

The graph takes ``images`` (float32 N×3×H×W, ImageNet-normalised, any N) and returns ``embeddings`` (N×D).
onnxruntime is run on random batches and its largest difference from PyTorch is printed; when that
difference over max(1, largest |PyTorch value|) is above ``--atol`` (default 1e-4) the file is not written
and the command fails. The model description (input
size, embedding size, weights digest) goes into the ONNX metadata, so ``reidkit extract --onnx`` and
``reidkit.load("stadb.onnx")`` need nothing else.
"""

from __future__ import annotations

import argparse

from reidkit.errors import ReidkitError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``reidkit export``."""
    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="training checkpoint .pt, model.safetensors or a run folder")
    parser.add_argument("--out", required=True, metavar="FILE", help="ONNX file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset version (default 17)")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="largest accepted |onnxruntime - PyTorch| / max(1, largest |PyTorch value|) (default 1e-4)")


def run(args: argparse.Namespace) -> int:
    """Export, check, report the difference."""
    from reidkit.inference import export_onnx
    from reidkit.inference.modelfile import load_model_file
    from reidkit.utils.atomic import output_file

    if not 7 <= args.opset <= 25:
        raise ReidkitError(f"--opset: expected a version between 7 and 25, got {args.opset}")
    output_file(args.out, "the ONNX file")
    model = load_model_file(args.checkpoint, "cpu")
    report = export_onnx(model, args.out, opset=args.opset, atol=args.atol)
    print(report.summary())
    return 0
