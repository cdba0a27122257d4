"""The scripts in examples/ run end to end on a tiny synthetic dataset with a randomly initialised tiny model.

The scripts run as subprocesses, all started at once (each spends most of its time importing torch), and
their output is checked for structure: CSV rows per query with k ranked matches; a track id for every
detection, one stable id per pasted person when each person has one picture (the same picture gives distance
~0), another picture of each person in every frame otherwise, and the per-person summary. The tracker class is
also tested in-process.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SIZE = (64, 32)
K = 3
LINE = re.compile(r"^frame +(\d+) +det (\d+) +box (\d+),(\d+),(\d+),(\d+) +-> track (\d+) +"
                  r"\((new|distance ([0-9.]+))\)(?: +person (\d+))?$")


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"reidkit_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_folder_scene(root: Path, market: Path) -> tuple[Path, Path]:
    """4 PNG frames with two crops pasted (frame 3 has no detections) and a MOT det.txt for them."""
    crops = [np.asarray(Image.open(sorted((market / "bounding_box_test").glob(f"{pid}_*.jpg"))[0]).convert("RGB"))
             for pid in ("0002", "0004")]
    h, w = crops[0].shape[:2]
    frames_dir = root / "frames"
    frames_dir.mkdir()
    det = []
    for t in range(1, 5):
        frame = np.full((h + 20, 6 * w, 3), 90, np.uint8)
        if t != 3:
            for i, crop in enumerate(crops):
                x, y = (i * 3 + t % 2) * w, 5 + t
                frame[y:y + h, x:x + w] = crop
                det.append(f"{t},-1,{x},{y},{w},{h},0.9,-1,-1,-1")
        Image.fromarray(frame).save(frames_dir / f"{t:06d}.png")
    (root / "det.txt").write_text("\n".join(det) + "\n")
    return frames_dir, root / "det.txt"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Data, model, and every example run once (in parallel): name -> (finished process, its work folder)."""
    import torch

    from reidkit.data.synthetic import generate_dataset
    from reidkit.models import build
    from reidkit.models.io import save_weights

    tmp = tmp_path_factory.mktemp("examples")
    market = generate_dataset(tmp / "synth", ids=8, cams=2, seed=0, images_per_id_cam=2, distractors=2, junk=1,
                              size=SIZE)
    torch.manual_seed(0)
    model = build("baseline", 4, backbone="resnet18", pretrained=None)
    model.input_size = SIZE
    model_path = save_weights(model, tmp / "model.safetensors")

    # the gallery: the test split plus exact copies of two queries (their top match must be the copy, d ~ 0)
    gallery = tmp / "gallery"
    shutil.copytree(market / "bounding_box_test", gallery)
    for q in sorted((market / "query").glob("*.jpg"))[:2]:
        shutil.copy(q, gallery / f"copy_{q.name}")
    frames_dir, det = _write_folder_scene(tmp, market)
    single = tmp / "one_picture_each"  # one picture per identity: the demo pastes the same picture every frame
    single.mkdir()
    for path in sorted((market / "bounding_box_test").glob("*.jpg")):
        if not any(p.name.split("_")[0] == path.name.split("_")[0] for p in single.iterdir()):
            shutil.copy(path, single / path.name)

    py, m = sys.executable, ["--model", str(model_path), "--device", "cpu"]
    commands = {
        "reid": [py, str(EXAMPLES / "reid_across_folders.py"), *m, "--query-dir", str(market / "query"),
                      "--gallery-dir", str(gallery), "--k", str(K), "--out", "matches.csv", "--index", "index"],
        "demo": [py, str(EXAMPLES / "tracking_loop.py"), *m, "--demo", str(single), "--people", "3",
                      "--num-frames", "7"],
        "demo_varied": [py, str(EXAMPLES / "tracking_loop.py"), *m, "--demo", str(market.parent), "--people", "3",
                        "--num-frames", "6"],
        "demo_generated": [py, str(EXAMPLES / "tracking_loop.py"), *m, "--demo", "--num-frames", "2"],
        "folder": [py, str(EXAMPLES / "tracking_loop.py"), *m, "--frames", str(frames_dir),
                        "--detections", str(det)],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    procs = {}
    for name, cmd in commands.items():
        (tmp / name).mkdir()
        procs[name] = (subprocess.Popen(cmd, cwd=tmp / name, env=env, text=True, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE), tmp / name)
    out = {}
    for name, (proc, cwd) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        out[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), cwd)
    out["_market"] = (None, market)  # type: ignore[assignment]
    out["_gallery"] = (None, gallery)  # type: ignore[assignment]
    return out


def _ok(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 0, f"{run.args}\nstdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-3000:]}"
    return run.stdout


def _track_lines(stdout: str) -> list[re.Match]:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("frame")]
    matches = [LINE.match(ln) for ln in lines]
    assert all(matches), [ln for ln, mt in zip(lines, matches, strict=True) if not mt]
    return matches  # type: ignore[return-value]


def test_reid_across_folders_writes_k_ranked_matches_per_query(runs) -> None:
    run, cwd = runs["reid"]
    stdout = _ok(run)
    market, gallery = runs["_market"][1], runs["_gallery"][1]
    queries = sorted(str(p) for p in (market / "query").glob("*.jpg"))
    with open(cwd / "matches.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["query", "rank", "match", "distance"]
        rows = list(reader)
    assert len(rows) == K * len(queries)
    gallery_files = {str(p) for p in gallery.glob("*.jpg")}
    for q in queries:
        assert q in stdout
        mine = [r for r in rows if r["query"] == q]
        assert [int(r["rank"]) for r in mine] == list(range(1, K + 1))
        dists = [float(r["distance"]) for r in mine]
        assert dists == sorted(dists) and all(0.0 <= d <= 2.0 + 1e-6 for d in dists)
        assert {r["match"] for r in mine} <= gallery_files and len({r["match"] for r in mine}) == K
    for q in queries[:2]:  # an exact copy in the gallery is the nearest match, at distance ~0
        top = next(r for r in rows if r["query"] == q and r["rank"] == "1")
        assert Path(top["match"]).name == f"copy_{Path(q).name}" and float(top["distance"]) < 1e-4

    import reidkit

    index = reidkit.Gallery.load(cwd / "index")  # --index saved the gallery embeddings
    assert len(index) == len(gallery_files) and set(index.ids) == gallery_files


def test_tracking_demo_gives_every_detection_a_stable_track(runs) -> None:
    run, _ = runs["demo"]
    lines = _track_lines(_ok(run))
    frames = sorted({int(m[1]) for m in lines})
    assert frames == list(range(7))
    # frames 0-1 show two people, the third walks in at frame 7 // 3 = 2
    assert [sum(int(m[1]) == t for m in lines) for t in frames] == [2, 2, 3, 3, 3, 3, 3]
    track_of: dict[int, set[int]] = {}
    for m in lines:
        assert m[10] is not None, "demo lines name the pasted person"
        track_of.setdefault(int(m[10]), set()).add(int(m[7]))
        if m[8] != "new":
            assert float(m[9]) < 1e-3  # the same picture gives the same embedding
    assert all(len(ids) == 1 for ids in track_of.values()), track_of  # one id per person, in every frame
    assert len(set.union(*track_of.values())) == 3  # and different people get different ids
    assert sum(m[8] == "new" for m in lines) == 3
    for t in frames:  # detections arrive in shuffled order, so matching is by appearance, not position in list
        assert len({int(m[7]) for m in lines if int(m[1]) == t}) == sum(int(m[1]) == t for m in lines)


def test_tracking_demo_shows_another_picture_every_frame(runs) -> None:
    run, _ = runs["demo_varied"]  # the folder holding the dataset folder, as data/synthetic is
    out = _ok(run)
    lines = _track_lines(out)
    assert len(lines) == 2 * 2 + 3 * 4  # the third person enters at frame 6 // 3 = 2
    # each person has 4 pictures in the test split, shown in turn: matches are never exact copies
    assert all(float(m[9]) > 1e-4 for m in lines if m[8] != "new")
    summary = [line for line in out.splitlines() if line.startswith("person ")]
    assert len(summary) == 3
    for line in summary:  # every detection of the person is counted under one of its tracks
        person = int(line.split()[1].rstrip(":"))
        frames = sum(int(n) for n in re.findall(r"in (\d+) frame", line))
        assert frames == sum(int(m[10]) == person for m in lines)


def test_tracking_demo_without_folder_generates_its_own_crops(runs) -> None:
    run, _ = runs["demo_generated"]
    lines = _track_lines(_ok(run))
    assert len(lines) == 6 and {int(m[1]) for m in lines} == {0, 1}  # 3 people (the third enters at 2 // 3 = 0)
    per_frame = [{(int(m[10]), int(m[7])) for m in lines if int(m[1]) == t} for t in (0, 1)]
    assert per_frame[0] == per_frame[1] and len({tid for _, tid in per_frame[0]}) == 3


def test_tracking_folder_of_frames_with_mot_detections(runs) -> None:
    run, _ = runs["folder"]
    lines = _track_lines(_ok(run))
    assert len(lines) == 6  # 2 detections in frames 0, 1, 3; none in frame 2
    assert sorted({int(m[1]) for m in lines}) == [0, 1, 3]
    first = {(int(m[3]) // (3 * SIZE[1])): int(m[7]) for m in lines if int(m[1]) == 0}
    for m in lines:  # the lane (x // 3w) tells the person; each keeps its id, across the empty frame too
        assert int(m[7]) == first[int(m[3]) // (3 * SIZE[1])]
    assert len(set(first.values())) == 2


def test_tracker_threshold_ema_and_age() -> None:
    mod = _load_example("tracking_loop")
    tracker = mod.AppearanceTracker(max_distance=0.3, momentum=0.5, max_age=2)
    a, b = np.eye(3, dtype=np.float32)[:2]
    assert tracker.update(np.stack([a, b]), 0) == [(1, None), (2, None)]
    near_a = np.array([0.9, 0.1, 0.0], np.float32) / np.linalg.norm([0.9, 0.1, 0.0])
    out = tracker.update(np.stack([near_a, b]), 1)  # near a (d ≈ 0.006) joins track 1, b keeps 2
    assert [t for t, _ in out] == [1, 2] and out[0][1] == pytest.approx(1 - near_a[0], abs=1e-5)
    assert np.linalg.norm(tracker.memory[1]) == pytest.approx(1.0)  # EMA memory stays a unit vector
    assert tracker.memory[1][1] > 0  # ... and moved toward the new look
    c = np.array([0.0, 0.0, 1.0], np.float32)  # far from every track: a new id, not a forced match
    assert tracker.update(c[None], 2) == [(3, None)]
    assert tracker.update(np.zeros((0, 3), np.float32), 3) == []
    tracker.update(c[None], 4)  # tracks 1 and 2, unseen since frame 1, are dropped after max_age (2) frames
    assert set(tracker.memory) == {3}


def test_examples_need_their_inputs(tmp_path) -> None:
    mod = _load_example("tracking_loop")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--model", str(tmp_path / "m.safetensors")])
    assert exc.value.code == 2
    reid = _load_example("reid_across_folders")
    with pytest.raises(SystemExit) as exc:
        reid.main(["--model", "m", "--query-dir", "q", "--gallery-dir", "g", "--k", "0"])
    assert exc.value.code == 2
