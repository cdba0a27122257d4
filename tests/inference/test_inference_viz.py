"""Pictures: rank lists (green/red frames), attention maps, the HTML report rendered in headless Chromium."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from reidkit.cli import main
from reidkit.viz.ranklist import BORDER, GREEN, RED, draw_rank_list

CHROMIUM = "/usr/bin/chromium"


def test_draw_rank_list_frames(gallery_dir: Path, tmp_path: Path) -> None:
    files = sorted(str(p) for p in gallery_dir.glob("*.jpg"))
    out = tmp_path / "rank.png"
    ret = draw_rank_list(files[0], files[1:5], [True, False, None, True], out, distances=[0.1, 0.2, 0.3, 0.4],
                         title="query 1")
    assert ret == out
    arr = np.asarray(Image.open(out).convert("RGB"))
    h, w, _ = arr.shape
    assert w > 5 * 64 and h > 128
    # count border pixels of each colour: two green frames, one red frame
    green = np.all(arr == GREEN, axis=2).sum()
    red = np.all(arr == RED, axis=2).sum()
    frame = 2 * BORDER * (64 + 128 + 2 * BORDER)
    assert green >= 2 * frame * 0.9 and frame * 0.9 <= red <= frame * 1.1
    with pytest.raises(ValueError):
        draw_rank_list(files[0], files[1:3], [True], out)


def test_attention_pictures_stadb_and_mancs(stadb_file: Path, gallery_dir: Path, synth_root: Path,
                                            tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            train_model: Callable[..., Any]) -> None:
    from reidkit.models import save_weights

    files = sorted(str(p) for p in gallery_dir.glob("*.jpg"))[:3]
    out = tmp_path / "att"
    assert main(["visualize", "attention", "--checkpoint", str(stadb_file), "--images", *files,
                 "--out", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    for key in ("sta_attention", "drop_mask", "spatial_attention"):
        assert key in text
    with Image.open(out / "attention_000.png") as im:
        arr = np.asarray(im.convert("RGB"))
    # rows of 3 crops (scaled 2×) and 1 + 5 columns
    assert arr.shape[0] > 3 * 128 and arr.shape[1] > 6 * 64
    assert arr.std() > 10
    mancs = save_weights(train_model("mancs", synth_root, steps=1), tmp_path / "mancs.safetensors")
    assert main(["visualize", "attention", "--checkpoint", str(mancs), "--images", str(gallery_dir),
                 "--max-images", "2", "--maps", "fab1", "fab2", "fab3", "--out", str(out / "m")]) == 0
    assert "fab1, fab2, fab3" in capsys.readouterr().out
    assert main(["visualize", "attention", "--checkpoint", str(mancs), "--images", files[0], "--maps", "nope",
                 "--out", str(out / "m")]) == 2
    assert "fab1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def dataset_feats(stadb_file: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("feats") / "market.safetensors"
    assert main(["extract", "--checkpoint", str(stadb_file), "--dataset", "market1501", "--root",
                 str(synth_root), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    return out


def test_ranklist_worst_queries(dataset_feats: Path, tmp_path: Path) -> None:
    from reidkit.inference.features import read_dataset_features
    from reidkit.viz.ranklist import dataset_rank_rows

    out = tmp_path / "rl"
    assert main(["visualize", "ranklist", "--features", str(dataset_feats), "--queries", "3", "--worst",
                 "--k", "6", "--out", str(out)]) == 0
    pngs = sorted(out.glob("ranklist_q*.png"))
    assert len(pngs) == 3 and (out / "ranklists.png").is_file()
    metrics, rows = dataset_rank_rows(read_dataset_features(dataset_feats), k=6, queries=3, worst=True)
    aps = sorted(a for a in metrics["ap_per_query"] if a == a)
    assert [r.ap for r in rows] == pytest.approx(aps[:3])
    for r in rows:
        assert len(r.gallery_paths) == 6
        assert all(m == (int(Path(p).name.split("_")[0]) == r.query_pid)
                   for p, m in zip(r.gallery_paths, r.matches, strict=True))
        # same pid + same camera never appears (Market protocol)
        assert not any(Path(p).name.split("_")[0] == f"{r.query_pid:04d}" and
                       Path(p).name.split("_")[1][1] == str(r.query_camid + 1) for p in r.gallery_paths)


def _report(dataset_feats: Path, tmp_path: Path) -> Path:
    out = tmp_path / "report.html"
    assert main(["report", "--features", str(dataset_feats), "--out", str(out), "--worst", "3"]) == 0
    return out


def test_report_is_self_contained(dataset_feats: Path, tmp_path: Path) -> None:
    page = _report(dataset_feats, tmp_path).read_text()
    assert '<table id="metrics">' in page and "mAP" in page and "Rank-1" in page
    # how the numbers were measured, read from the features file 'reidkit extract --dataset' wrote
    assert ("single-query, euclidean distance, flip off, re-ranking off, AP noninterp, CMC to rank 50"
            in page)
    assert page.count('class="ranklist"') == 3 and page.count("data:image/png;base64,") == 4
    srcs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert srcs and all(s.startswith("data:") for s in srcs)
    assert "<script" not in page and "http://" not in page and "https://" not in page


@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason=f"{CHROMIUM} not installed (apt-get install chromium, or scripts/install_chromium.sh)")
def test_report_renders_in_chromium(dataset_feats: Path, tmp_path: Path) -> None:
    page = _report(dataset_feats, tmp_path)
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    r = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,1600", "--dump-dom", page.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    assert '<table id="metrics">' in r.stdout and "Rank-1" in r.stdout and 'class="ranklist"' in r.stdout
    arr = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert arr.shape[:2] == (1600, 1200)
    # not blank: many distinct colours, and the green / red frames of the rank lists are visible
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 200
    assert (np.abs(arr - np.array(RED)).sum(2) < 40).sum() > 100 or \
        (np.abs(arr - np.array(GREEN)).sum(2) < 40).sum() > 100
    if os.environ.get("REIDKIT_KEEP_SCREENSHOT"):
        Image.open(shot).save(os.environ["REIDKIT_KEEP_SCREENSHOT"])


def test_report_from_checkpoint_and_dataset(stadb_file: Path, synth_root: Path, tmp_path: Path) -> None:
    """The checkpoint + dataset path embeds the dataset itself and gives the same metrics as evaluate()."""
    from reidkit.data.datasets import load as load_dataset
    from reidkit.eval import evaluate
    from reidkit.inference import embed_dataset, load

    out = tmp_path / "report.html"
    assert main(["report", "--checkpoint", str(stadb_file), "--dataset", "market1501", "--root", str(synth_root),
                 "--out", str(out), "--worst", "2"]) == 0
    page = out.read_text()
    assert page.count('class="ranklist"') == 2
    d = embed_dataset(load(stadb_file), load_dataset("market1501", str(synth_root)), progress=False)
    ref = evaluate(d.query_feats, d.gallery_feats, d.query_pids, d.gallery_pids, d.query_camids, d.gallery_camids)
    assert f"{100 * ref['mAP']:.2f}%" in page
