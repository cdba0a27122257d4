"""``reidkit synth``: write a synthetic pedestrian dataset in the Market-1501 layout."""

from __future__ import annotations

import argparse
import time

from reidkit.commands.argtypes import int_in, path_arg, seed, workers
from reidkit.utils.limits import (
    MAX_SYNTH_EXTRA,
    MAX_SYNTH_IDS,
    MAX_SYNTH_IMAGES_PER_ID_CAM,
    MAX_SYNTH_SIDE,
    max_threads,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``reidkit synth``."""
    parser.add_argument("--out", required=True, type=path_arg, metavar="DIR", help="output folder (the dataset goes to OUT/Market-1501-v15.09.15)")
    parser.add_argument("--ids", type=int_in(2, MAX_SYNTH_IDS), default=100,
                        help=f"number of identities, half train, half test, 2..{MAX_SYNTH_IDS} (default 100)")
    parser.add_argument("--cams", type=int_in(2, 9), default=4, help="number of cameras, 2..9 (default 4)")
    parser.add_argument("--seed", type=seed(), default=0, help="random seed; same seed, same bytes (default 0)")
    parser.add_argument("--images-per-id-cam", type=int_in(1, MAX_SYNTH_IMAGES_PER_ID_CAM), default=4,
                        help=f"images per identity and camera, 1..{MAX_SYNTH_IMAGES_PER_ID_CAM} (default 4)")
    parser.add_argument("--height", type=int_in(16, MAX_SYNTH_SIDE), default=128,
                        help=f"image height, 16..{MAX_SYNTH_SIDE} (default 128)")
    parser.add_argument("--width", type=int_in(8, MAX_SYNTH_SIDE), default=64,
                        help=f"image width, 8..{MAX_SYNTH_SIDE} (default 64)")
    parser.add_argument("--distractors", type=int_in(0, MAX_SYNTH_EXTRA), default=None,
                        help="0000 distractor images in the gallery (default: --ids)")
    parser.add_argument("--junk", type=int_in(0, MAX_SYNTH_EXTRA), default=None,
                        help="-1 junk images in the gallery (default: ids/5)")
    parser.add_argument("--no-gt-bbox", action="store_true", help="do not write gt_bbox (multi-query) images")
    parser.add_argument("--workers", type=workers(), default=0,
                        help=f"processes to render with, 0..{max_threads()} here (default 0: this one)")
    parser.add_argument("--force", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("--grid", default=None, type=path_arg, metavar="PNG", help="also save a sample picture of 8 identities")


def run(args: argparse.Namespace) -> int:
    """Generate the dataset and print where it is and its statistics."""
    from reidkit.data.synthetic import generate_dataset, save_sample_grid
    from reidkit.utils.atomic import output_file, output_folder

    output_folder(args.out, "the dataset", create=False)
    if args.grid:
        output_file(args.grid, "the sample picture")
    t0 = time.perf_counter()
    folder = generate_dataset(
        args.out, ids=args.ids, cams=args.cams, seed=args.seed, images_per_id_cam=args.images_per_id_cam,
        size=(args.height, args.width), distractors=args.distractors, junk=args.junk, gt_bbox=not args.no_gt_bbox,
        workers=args.workers, overwrite=args.force, progress=True,
    )
    counts = {d.name: sum(1 for _ in d.glob("*.jpg")) for d in sorted(folder.iterdir()) if d.is_dir()}
    print(f"synthetic Market-1501 layout written to {folder} in {time.perf_counter() - t0:.1f} s")
    for name, n in counts.items():
        print(f"  {name:<20} {n:6d} images")
    if args.grid:
        print(f"sample grid: {save_sample_grid(folder, args.grid)}")
    return 0
