"""Plug a reidkit embedder into a tracking-by-detection loop: appearance-only association of boxes to tracks.

Each frame (an H×W×3 uint8 array) comes with its detections (an N×4 array of x1, y1, x2, y2 pixels). The
crops are cut from the frame and embedded in one batch (``bgr=True`` for OpenCV-ordered frames); each
detection is matched to an existing track by cosine distance between L2-normalised embeddings with a
Hungarian assignment (``scipy.optimize.linear_sum_assignment``); matches farther than ``--max-distance``
start new tracks; a track's appearance memory is an exponential moving average of its embeddings.
One line is printed per detection with its track id.

Run on your own frames and MOTChallenge-style detections (det.txt rows: frame, id, left, top, width, height, ...):
    python -m reidkit.examples.tracking_loop --model MODEL --frames video_frames/ --detections det.txt

Run with no video: pedestrians pasted onto a background at moving positions, each frame showing another
picture of each person (another camera or moment), so the tracker must recognise people, not copies of one
picture. The pictures come from a Market-1501-layout folder (the dataset folder, or a folder holding one, such
as the demo's data/synthetic); without DIR a small synthetic set is generated in a temporary folder. At the
end it prints, per person, the tracks it was given and how many frames each:
    python -m reidkit.examples.tracking_loop --model runs/demo/model.safetensors --demo data/synthetic
    python -m reidkit.examples.tracking_loop --model MODEL --demo [DIR] [--num-frames 12] [--people 3]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

import reidkit
from reidkit.errors import ReidkitError


class AppearanceTracker:
    """Tracks as unit embedding vectors; ``update`` assigns one track id per detection embedding."""

    def __init__(self, max_distance: float = 0.4, momentum: float = 0.8, max_age: int = 30) -> None:
        self.max_distance, self.momentum, self.max_age = max_distance, momentum, max_age
        self.memory: dict[int, np.ndarray] = {}  # track id -> EMA of its (normalised) embeddings
        self.last_seen: dict[int, int] = {}
        self.next_id = 1

    def update(self, feats: np.ndarray, frame: int) -> list[tuple[int, float | None]]:
        """(track id, cosine distance to its memory, or None for a new track) per row of ``feats``."""
        for tid in [t for t, seen in self.last_seen.items() if frame - seen > self.max_age]:
            del self.memory[tid], self.last_seen[tid]
        ids = list(self.memory)
        matches: dict[int, tuple[int, float]] = {}
        if ids and len(feats):
            cost = np.clip(1.0 - feats @ np.stack([self.memory[t] for t in ids]).T, 0.0, 2.0)  # cosine distance
            for r, c in zip(*linear_sum_assignment(cost), strict=True):
                if cost[r, c] <= self.max_distance:
                    matches[int(r)] = (ids[c], float(cost[r, c]))
        out: list[tuple[int, float | None]] = []
        for r, f in enumerate(feats):
            if r in matches:
                tid, dist = matches[r]
                ema = self.momentum * self.memory[tid] + (1.0 - self.momentum) * f
                self.memory[tid] = ema / max(float(np.linalg.norm(ema)), 1e-12)
                out.append((tid, dist))
            else:
                tid, self.next_id = self.next_id, self.next_id + 1
                self.memory[tid] = f
                out.append((tid, None))
            self.last_seen[tid] = frame
        return out


def cut_crops(frame: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """The pixels inside each box (clipped to the frame, at least 1×1)."""
    h, w = frame.shape[:2]
    crops = []
    for x1, y1, x2, y2 in np.round(boxes).astype(int):
        x1, y1 = min(max(x1, 0), w - 1), min(max(y1, 0), h - 1)
        crops.append(frame[y1:max(min(y2, h), y1 + 1), x1:max(min(x2, w), x1 + 1)])
    return crops


def folder_frames(frames_dir: Path, det_file: Path) -> Iterator[tuple[np.ndarray, np.ndarray, None]]:
    """Sorted frames of a folder (RGB) with their boxes from a MOT det.txt (frame numbers start at 1)."""
    det = np.loadtxt(det_file, delimiter=",", ndmin=2)
    frames = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    for i, path in enumerate(frames, start=1):
        rows = det[det[:, 0] == i]
        boxes = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], axis=1)
        yield np.asarray(Image.open(path).convert("RGB")), boxes, None


def market_folder(path: Path) -> Path:
    """The folder of pictures inside a Market-1501-layout dataset: its ``bounding_box_test`` (also when ``path``
    holds the dataset folder, as ``data/synthetic`` does), or ``path`` itself."""
    for candidate in (path, *sorted(p for p in path.iterdir() if p.is_dir())) if path.is_dir() else ():
        if (candidate / "bounding_box_test").is_dir():
            return candidate / "bounding_box_test"
    return path


def demo_frames(market_dir: Path, people: int, num_frames: int, seed: int) -> Iterator:
    """BGR frames (as cv2 gives them) with one picture per person pasted at moving positions, a different picture
    of the person in each frame (cycling through theirs); the last person enters a third of the way in.
    Yields (frame, boxes in shuffled order, person index of each box)."""
    rng = np.random.default_rng(seed)
    folder = market_folder(market_dir)
    by_pid: dict[str, list[Path]] = {}
    for p in sorted(folder.glob("*.jpg")):  # Market names: PPPP_cXsY_FFFFFF_BB.jpg; 0000 / -1 are not people
        by_pid.setdefault(p.name.split("_")[0], []).append(p)
    pids = sorted(k for k in by_pid if k not in ("0000", "-1"))
    if len(pids) < people:
        raise SystemExit(f"error: {folder} holds {len(pids)} identities, --people {people} asks for more; "
                         "expected a Market-1501-layout folder (bounding_box_test/PPPP_cC..._.jpg)")
    chosen = [by_pid[k] for k in rng.choice(pids, people, replace=False)]
    first = np.asarray(Image.open(chosen[0][0]).convert("RGB"))
    ch, cw = first.shape[:2]
    pictures = [[np.asarray(Image.open(p).convert("RGB").resize((cw, ch))) for p in paths] for paths in chosen]
    lane = 3 * cw  # each person walks back and forth in its own lane, so the crops never overlap
    background = rng.integers(60, 120, size=(ch + 2 * (ch // 8), lane * people, 3), dtype=np.uint8)
    for t in range(num_frames):
        frame, boxes, who = background.copy(), [], []
        for i, mine in enumerate(pictures):
            if i == people - 1 and people > 1 and t < num_frames // 3:
                continue
            x = i * lane + abs((t * cw // 4 + i * cw) % (4 * cw) - 2 * cw)  # triangle wave in [0, 2cw]
            y = ch // 8 + round(ch / 10 * math.sin(t / 2 + i))
            frame[y:y + ch, x:x + cw] = mine[t % len(mine)]
            boxes.append([x, y, x + cw, y + ch])
            who.append(i)
        order = rng.permutation(len(boxes))  # detectors give no particular order
        yield frame[..., ::-1].copy(), np.asarray(boxes, float)[order].reshape(-1, 4), [who[j] for j in order]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model file: .safetensors, checkpoint.pt or .onnx")
    parser.add_argument("--demo", nargs="?", const="", metavar="DIR", help="synthetic scene (crops from DIR)")
    parser.add_argument("--frames", type=Path, help="folder of frames (sorted by name)")
    parser.add_argument("--detections", type=Path, help="MOTChallenge det.txt for --frames")
    parser.add_argument("--num-frames", type=int, default=12, help="demo: frames to draw")
    parser.add_argument("--people", type=int, default=3, help="demo: people in the scene")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-distance", type=float, default=0.4, help="cosine distance to start a new track")
    parser.add_argument("--momentum", type=float, default=0.8, help="EMA weight of a track's memory")
    parser.add_argument("--max-age", type=int, default=30, help="frames a lost track is kept")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    args = parser.parse_args(argv)
    if args.demo is None and not (args.frames and args.detections):
        parser.error("pass --demo, or --frames and --detections")
    if args.people < 1 or args.num_frames < 1:
        parser.error("--people and --num-frames must be at least 1")

    emb = reidkit.load(args.model, device=args.device)
    tracker = AppearanceTracker(args.max_distance, args.momentum, args.max_age)
    with tempfile.TemporaryDirectory() as tmp:
        if args.demo is None:
            source, bgr = folder_frames(args.frames, args.detections), False
        else:
            market = Path(args.demo) if args.demo else None
            if market is None:
                from reidkit.data.synthetic import generate_dataset

                market = generate_dataset(tmp, ids=12, cams=2, seed=args.seed, images_per_id_cam=1,
                                          distractors=0, junk=0, gt_bbox=False)
            source, bgr = demo_frames(market, args.people, args.num_frames, args.seed), True
        t = -1
        tracks_of: dict[int, dict[int, int]] = {}  # demo: person -> track id -> frames
        for t, (frame, boxes, who) in enumerate(source):
            crops = cut_crops(frame, boxes)
            feats = emb.embed(crops, bgr=bgr, normalize=True).numpy() if crops else np.zeros((0, 1))
            for d, ((tid, dist), box) in enumerate(zip(tracker.update(feats, t), boxes, strict=True)):
                note = "new" if dist is None else f"distance {dist:.3f}"
                gt = f"  person {who[d]}" if who is not None else ""
                if who is not None:
                    counts = tracks_of.setdefault(who[d], {})
                    counts[tid] = counts.get(tid, 0) + 1
                print(f"frame {t:4d}  det {d}  box {','.join(str(int(v)) for v in box)}  "
                      f"-> track {tid}  ({note}){gt}")
    for person, counts in sorted(tracks_of.items()):
        shown = ", ".join(f"track {tid} in {n} frame{'s' * (n > 1)}" for tid, n in sorted(counts.items()))
        print(f"person {person}: {shown}" + ("  (kept one identity)" if len(counts) == 1 else ""))
    print(f"{tracker.next_id - 1} tracks over {t + 1} frames", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ReidkitError as exc:  # a user mistake (missing model file, other model's index...): one line
        sys.exit(f"error: {exc}")
