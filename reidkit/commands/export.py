"""``reidkit export``: write a checkpoint's test embedding as ONNX and check it against PyTorch; with ``--int8``
also an INT8 copy checked against the float32 file.

Example:
    reidkit export --checkpoint runs/stadb/model.safetensors --out stadb.onnx --opset 17
    reidkit export --checkpoint runs/stadb/model.safetensors --out stadb.onnx --int8 --calibrate crops/

The graph takes ``images`` (float32 N×3×H×W, ImageNet-normalised, any N) and returns ``embeddings`` (N×D).
onnxruntime is run on random batches and its largest difference from PyTorch is printed; when that
difference over max(1, largest |PyTorch value|) is above ``--atol`` (default 1e-4) the file is not written
and the command fails. The model description (input
size, embedding size, weights digest) goes into the ONNX metadata, so ``reidkit extract --onnx`` and
``reidkit.load("stadb.onnx")`` need nothing else; plain keys beside it say how to feed the model without
reidkit (``reidkit.inference.export.input_contract``).

``--int8`` writes ``<out>.int8.onnx`` beside ``--out`` (``stadb.onnx`` → ``stadb.int8.onnx``) with
``reidkit.inference.quantize.quantize_onnx``: static quantization calibrated on ``--calibrate DIR``, dynamic
without it. Its embeddings are compared with the float32 file's on images the calibration did not use; a
minimum cosine below ``--min-cosine`` fails the command and neither file is written.
"""

from __future__ import annotations

import argparse
import dataclasses

from reidkit.commands.argtypes import float_in, int_in, path_arg
from reidkit.errors import ReidkitError
from reidkit.inference.quantize import DEFAULT_CALIBRATION_IMAGES, DEFAULT_MIN_COSINE

MIN_INT8_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear
MAX_CALIBRATION_IMAGES = 100_000  # --calibration-images (the default is 128)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``reidkit export``."""
    parser.add_argument("--checkpoint", required=True, type=path_arg, metavar="PATH",
                        help="training checkpoint .pt, model.safetensors or a run folder")
    parser.add_argument("--out", required=True, type=path_arg, metavar="FILE", help="ONNX file to write")
    parser.add_argument("--opset", type=int_in(7, 25), default=17, help="ONNX opset version (default 17)")
    parser.add_argument("--atol", type=float_in(0.0, 1.0, above=True), default=1e-4,
                        help="largest accepted |onnxruntime - PyTorch| / max(1, largest |PyTorch value|) (default 1e-4)")
    q = parser.add_argument_group("INT8 (an extra file beside --out: model.onnx -> model.int8.onnx)")
    q.add_argument("--int8", action="store_true",
                   help="also write an INT8 copy: static quantization with --calibrate, else dynamic")
    q.add_argument("--calibrate", type=path_arg, metavar="DIR",
                   help="folder of person crops to calibrate the INT8 activation ranges on (static quantization)")
    q.add_argument("--calibration-images", type=int_in(1, MAX_CALIBRATION_IMAGES), default=None, metavar="N",
                   help=f"crops of --calibrate used for calibration (default {DEFAULT_CALIBRATION_IMAGES}); "
                        "the others check the result")
    q.add_argument("--min-cosine", type=float_in(-1.0, 1.0), default=None, metavar="X",
                   help="smallest accepted cosine between INT8 and float32 embeddings of held-out images "
                        f"(default {DEFAULT_MIN_COSINE})")


def run(args: argparse.Namespace) -> int:
    """Export, check, report the difference; with ``--int8`` quantize and check that too."""
    from reidkit.inference import export_onnx
    from reidkit.inference.modelfile import load_model_file
    from reidkit.inference.quantize import calibration_split, int8_path, quantize_onnx
    from reidkit.utils.atomic import atomic_path, output_file

    int8_options = {"--calibrate": args.calibrate, "--calibration-images": args.calibration_images,
                    "--min-cosine": args.min_cosine}
    if not args.int8:
        given = [name for name, value in int8_options.items() if value is not None]
        if given:
            raise ReidkitError(f"{given[0]} applies to the INT8 copy; add --int8")
    elif args.opset < MIN_INT8_OPSET:
        raise ReidkitError(f"--int8 needs --opset {MIN_INT8_OPSET} or later, got {args.opset}")
    n_calib = DEFAULT_CALIBRATION_IMAGES if args.calibration_images is None else args.calibration_images
    bound = DEFAULT_MIN_COSINE if args.min_cosine is None else args.min_cosine
    if args.calibration_images is not None and args.calibrate is None:
        raise ReidkitError("--calibration-images: the number of --calibrate crops; give --calibrate DIR too")
    out = output_file(args.out, "the ONNX file")
    q_out = output_file(int8_path(out), "the INT8 ONNX file") if args.int8 else None
    if args.calibrate is not None:
        calibration_split(args.calibrate, n_calib)  # a bad folder fails before the export
    model = load_model_file(args.checkpoint, "cpu")
    # the float32 file is written beside --out and renamed over it only once the INT8 copy is written too
    with atomic_path(out) as tmp:
        report = export_onnx(model, tmp, opset=args.opset, atol=args.atol, source=args.checkpoint)
        quantized = None
        if q_out is not None:
            quantized = quantize_onnx(tmp, q_out, args.calibrate, n_calib, bound)
    print(dataclasses.replace(report, path=out).summary())
    if quantized is not None:
        print(quantized.summary())
    return 0
