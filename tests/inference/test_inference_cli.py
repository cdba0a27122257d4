"""reidkit extract / index / search on the synthetic dataset with a briefly trained STADB."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reidkit.cli import main
from reidkit.eval import knn as knn_mod
from reidkit.inference.features import read_dataset_features, read_folder_features


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error line"
    return err[-1]


def test_extract_folder_with_bad_images(stadb_file: Path, gallery_dir: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "crops"
    shutil.copytree(gallery_dir, folder)
    (folder / "0002_c1s1_999999_00.jpg").write_bytes(b"\xff\xd8\xff truncated jpeg")
    (folder / "sub").mkdir()
    Image.new("RGB", (20, 40), (200, 10, 10)).save(folder / "sub" / "photo.png")
    out = tmp_path / "feats.safetensors"
    assert main(["extract", "--checkpoint", str(stadb_file), "--images", str(folder), "--out", str(out),
                 "--batch-size", "5", "--no-progress", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "0002_c1s1_999999_00.jpg" in captured.err and "skipped 1 unreadable" in captured.err
    ff = read_folder_features(out)
    n_good = len(list(gallery_dir.glob("*.jpg"))) + 1
    assert ff.feats.shape == (n_good, 1536) and len(ff.paths) == n_good
    assert not any("999999" in p for p in ff.paths)
    by_name = {Path(p).name: (int(a), int(b)) for p, a, b in zip(ff.paths, ff.pids, ff.camids, strict=True)}
    assert by_name["photo.png"] == (-1, -1)
    some = next(n for n in by_name if n.startswith("0002_c2"))
    assert by_name[some] == (2, 1)
    assert ff.model_meta["model"] == "stadb" and ff.model_meta["input_size"] == [64, 32]
    # the same as the Python API
    import reidkit

    ref = reidkit.load(stadb_file, device="cpu").embed(ff.paths)
    assert float((ref - ff.feats).abs().max()) <= 1e-5 * float(ref.abs().max())


def test_extract_csv_and_flip(stadb_file: Path, gallery_dir: Path, tmp_path: Path) -> None:
    files = sorted(gallery_dir.glob("*.jpg"))[:4]
    lst = tmp_path / "list.csv"
    with open(lst, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "pid", "camid"])
        for i, f in enumerate(files):
            w.writerow([str(f), 100 + i, i % 2])
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(["extract", "--checkpoint", str(stadb_file), "--csv", str(lst), "--out", str(a),
                 "--no-progress", "--device", "cpu"]) == 0
    assert main(["extract", "--checkpoint", str(stadb_file), "--csv", str(lst), "--out", str(b), "--flip",
                 "--no-progress", "--device", "cpu"]) == 0
    fa, fb = read_folder_features(a), read_folder_features(b)
    assert fa.pids.tolist() == [100, 101, 102, 103] and fa.camids.tolist() == [0, 1, 0, 1]
    assert not torch.allclose(fa.feats, fb.feats)


def test_extract_and_index_csv_with_named_identities(stadb_file: Path, gallery_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`extract --csv` and `index --csv` read lists with the `csv` dataset's reader: names as pids (numbered
    in sorted order, the names recorded), empty labels unknown, the same one-line messages."""
    files = sorted(gallery_dir.glob("*.jpg"))[:4]
    lst = tmp_path / "list.csv"
    lst.write_text("Path,pid,camid\n" + f"{files[0]},zoe,1\n{files[1]},alice,\n{files[2]},,0\n{files[3]},zoe,2\n")
    out = tmp_path / "f.safetensors"
    assert main(["extract", "--checkpoint", str(stadb_file), "--csv", str(lst), "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    ff = read_folder_features(out)
    assert ff.identity_names == ["alice", "zoe"]
    assert ff.pids.tolist() == [1, 0, -1, 1] and ff.camids.tolist() == [1, -1, 0, 2]
    idx = tmp_path / "idx"
    assert main(["index", "build", "--checkpoint", str(stadb_file), "--csv", str(lst), "--out", str(idx),
                 "--no-progress", "--device", "cpu"]) == 0
    entries = json.loads((idx / "manifest.json").read_text())["metadata"]
    assert [(e.get("identity"), e["pid"]) for e in entries] == [("zoe", -1), ("alice", -1), (None, -1), ("zoe", -1)]
    capsys.readouterr()
    assert main(["search", str(idx), "--query", str(files[0]), "--k", "4", "--no-progress"]) == 0
    matches = json.loads(capsys.readouterr().out)["results"][0]["matches"]
    assert sorted(m.get("identity", "") for m in matches) == ["", "alice", "zoe", "zoe"]
    # the dataset reader's messages, for the list too
    bad = tmp_path / "bad.csv"
    bad.write_text(f"path,camid\n{files[0]},one\n")
    assert main(["extract", "--checkpoint", str(stadb_file), "--csv", str(bad), "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 2
    assert _err(capsys).endswith("bad.csv:2: camid must be an integer, got 'one'")
    bad.write_text("file,pid\nx.jpg,1\n")
    assert main(["extract", "--checkpoint", str(stadb_file), "--csv", str(bad), "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 2
    assert "bad.csv lacks the columns path (found file,pid; expected path[,pid,camid])" in _err(capsys)
    assert read_folder_features(out).identity_names == ["alice", "zoe"]  # the earlier output is kept


def test_extract_errors_are_one_line_and_keep_old_output(stadb_file: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "feats.safetensors"
    out.write_bytes(b"previous result")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["extract", "--checkpoint", str(stadb_file), "--images", str(empty), "--out", str(out)]) == 2
    line = _err(capsys)
    assert line.startswith("reidkit: error:") and "empty" in line and "no images" in line
    assert out.read_bytes() == b"previous result"
    bad_ckpt = tmp_path / "checkpoint.pt"
    torch.save({"model": {}, "model_meta": {"model": "nosuchnet", "num_classes": 2}}, bad_ckpt)
    assert main(["extract", "--checkpoint", str(bad_ckpt), "--images", str(empty), "--out", str(out)]) == 2
    assert "nosuchnet" in _err(capsys)
    assert out.read_bytes() == b"previous result"


def test_extract_dataset_features(stadb_file: Path, synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "market.safetensors"
    assert main(["extract", "--checkpoint", str(stadb_file), "--dataset", "market1501", "--root",
                 str(synth_root), "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    df = read_dataset_features(out)
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as fh:
        assert set(fh.keys()) == {"query_feats", "query_pids", "query_camids", "gallery_feats",
                                  "gallery_pids", "gallery_camids"}
    assert df.query_feats.shape[1] == 1536 and df.query_paths and df.gallery_paths
    assert len(df.query_paths) == df.query_feats.shape[0] == df.query_pids.numel()
    assert int(df.gallery_pids.min()) >= 0  # junk -1 images dropped by the Market reader


def test_index_build_search_equals_brute_force_and_add(stadb_file: Path, other_file: Path, synth_root: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gallery = synth_root / "bounding_box_test"
    extra = tmp_path / "extra"
    extra.mkdir()
    train = sorted((synth_root / "bounding_box_train").glob("*.jpg"))[:3]
    for f in train:
        shutil.copy(f, extra / f.name)
    idx = tmp_path / "idx"
    assert main(["index", "build", "--checkpoint", str(stadb_file), "--images", str(gallery), "--out", str(idx),
                 "--no-progress", "--device", "cpu"]) == 0
    capsys.readouterr()
    qdir = synth_root / "query"
    hits_json = tmp_path / "hits.json"
    assert (idx / "model.safetensors").is_file()  # the index carries its model
    assert main(["search", str(idx), "--query", str(qdir), "--k", "5", "--out", str(hits_json),
                 "--picture", str(tmp_path / "rank.png"), "--gallery-root", str(gallery), "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err  # every gallery tile was drawn
    res = json.loads(hits_json.read_text())
    # brute force over the same features
    import reidkit

    emb = reidkit.load(stadb_file, device="cpu")
    gpaths = sorted(str(p) for p in gallery.glob("*.jpg"))
    qpaths = sorted(str(p) for p in qdir.glob("*.jpg"))
    g, q = emb.embed(gpaths), emb.embed(qpaths)
    want = torch.argsort(torch.cdist(q.double(), g.double()), dim=1, stable=True)[:, :5]
    assert [r["query"] for r in res["results"]] == [str(Path(p).resolve()) for p in qpaths]
    assert [[Path(m["path"]).name for m in r["matches"]] for r in res["results"]] == \
        [[Path(gpaths[j]).name for j in row] for row in want.tolist()]
    d = [[m["distance"] for m in r["matches"]] for r in res["results"]]
    assert all(a <= b + 1e-6 for row in d for a, b in itertools.pairwise(row))
    with Image.open(tmp_path / "rank.png") as im:
        assert im.size[1] > 100 * len(qpaths)
    # add new images later: each finds itself first, at distance ~0
    assert main(["index", "add", str(idx), "--images", str(extra), "--no-progress"]) == 0
    assert "added 3" in capsys.readouterr().out
    assert main(["index", "add", str(idx), "--images", str(extra), "--no-progress"]) == 0
    assert "added 0" in capsys.readouterr().out
    assert main(["search", str(idx), "--query", str(extra), "--k", "3", "--format", "csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    firsts = {Path(r["query"]).name: r for r in rows if r["rank"] == "1"}
    assert set(firsts) == {f.name for f in train}
    for name, r in firsts.items():
        assert Path(r["path"]).name == name and float(r["distance"]) < 1e-2 * float(g.norm(dim=1).mean())
    # re-ranking runs and returns k results per query
    assert main(["search", str(idx), "--query", str(train[0]), "--k", "4", "--rerank"]) == 0
    rr = json.loads(capsys.readouterr().out)
    assert rr["reranked"] and len(rr["results"][0]["matches"]) == 4
    # another model is refused with one line
    assert main(["search", str(idx), "--query", str(train[0]), "--checkpoint", str(other_file)]) == 2
    line = _err(capsys)
    assert "differs from the model that built the index" in line


def test_search_refuses_nan_features(tmp_path: Path, stadb_file: Path, gallery_dir: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from reidkit.inference.gallery import Gallery

    gal = Gallery(metric="euclidean")
    v = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    gal.add(v, ids=["a", "b", "c", "d"])
    gal.save(tmp_path / "idx")
    # damage the stored embeddings: NaN in a row
    from reidkit.inference.features import load_tensors, save_tensors

    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    emb_file = tmp_path / "idx" / manifest["segments"][0]["file"]
    t, _ = load_tensors(emb_file)
    t["embeddings"][1, 3] = float("nan")
    save_tensors(emb_file, t)
    from reidkit.inference.gallery import file_digest  # a NaN the writer stored, not a damaged file

    manifest["segments"][0]["sha256"] = file_digest(emb_file)
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(Exception, match="NaN") as err:
        Gallery.load(tmp_path / "idx").search(v[0], k=2)
    assert "\n" not in str(err.value)


@pytest.mark.faiss
def test_index_approx_remove_update_rebuild(stadb_file: Path, synth_root: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An HNSW index through the CLI: build with its options recorded, search with an override, remove by pid,
    path, id and CSV (never found again), update (re-embedded, replaced), rebuild exact; each mistake one line."""
    from reidkit.inference.gallery import Gallery

    gallery = synth_root / "bounding_box_test"
    qdir = synth_root / "query"
    idx = tmp_path / "idx"
    base = ["--no-progress", "--device", "cpu"]
    assert main(["index", "build", "--checkpoint", str(stadb_file), "--images", str(gallery), "--out", str(idx),
                 "--approx", "hnsw", "--ef-search", "32", *base]) == 0
    assert "hnsw (hnsw_m 64, ef_construction 40, ef_search 32)" in capsys.readouterr().out
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["index"]["kind"] == "hnsw" and manifest["index"]["ef_search"] == 32
    assert (idx / manifest["index"]["file"]).is_file()
    n = len(list(gallery.glob("*.jpg")))
    assert main(["search", str(idx), "--query", str(qdir), "--k", "5", "--ef-search", "100", "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["index_kind"] == "hnsw" and all(len(r["matches"]) == 5 for r in res["results"])
    # remove: every entry of pid 4, one file by path, one by id, one through a CSV
    assert main(["index", "remove", str(idx), "--pids", "4"]) == 0
    assert f"removed 6 entries, now {n - 6}" in capsys.readouterr().out
    files = sorted(p for p in gallery.glob("*.jpg") if not p.name.startswith("0004_"))
    assert main(["index", "remove", str(idx), "--paths", str(files[0])]) == 0
    assert main(["index", "remove", str(idx), "--ids", str(files[1].absolute())]) == 0
    listing = tmp_path / "forget.csv"
    listing.write_text(f"path\n{files[2]}\n")
    assert main(["index", "remove", str(idx), "--csv", str(listing)]) == 0
    assert main(["index", "remove", str(idx), "--ids", "no-such-entry"]) == 0
    out = capsys.readouterr().out
    assert out.count("removed 1 entry, now") == 3 and f"removed 0 entries (no entry matched the ids given), now {n - 9}" in out
    gone = {str(p.absolute()) for p in [*gallery.glob("0004_*.jpg"), *files[:3]]}
    assert main(["search", str(idx), "--query", str(gallery), "--k", str(n), "--device", "cpu"]) == 0
    found = {m["path"] for r in json.loads(capsys.readouterr().out)["results"] for m in r["matches"]}
    assert len(found) == n - 9 and not found & gone
    # update: the whole folder re-embedded; the 9 removed come back, the rest are replaced (new keys)
    keys_before = set(Gallery.load(idx).keys.tolist())
    assert main(["index", "update", str(idx), "--images", str(gallery), *base]) == 0
    assert f"replaced {n - 9} images, added 9 (0 unreadable), now {n}" in capsys.readouterr().out
    after = Gallery.load(idx)
    assert len(after) == n and not set(after.keys.tolist()) & keys_before
    hits = after.search(after.embeddings, k=1)
    assert [h[0].id for h in hits] == after.ids  # each entry is its own nearest
    # rebuild as exact; options of another kind are one line
    assert main(["index", "rebuild", str(idx), "--approx", "none"]) == 0
    assert "rebuilt its FAISS index over 19 entries: flat (exact)" in capsys.readouterr().out
    for argv, line in (
        (["index", "rebuild", str(idx), "--ef-search", "5"], "ef_search is a parameter of the hnsw index, not of the flat index"),
        (["index", "rebuild", str(idx), "--approx", "hnsw", "--nlist", "4"], "--nlist applies to --approx ivfpq"),
        (["search", str(idx), "--query", str(qdir), "--nprobe", "3"], "nprobe applies to an ivfpq index"),
        (["index", "build", "--checkpoint", str(stadb_file), "--images", str(gallery), "--out", str(tmp_path / "b"),
          "--approx", "ivfpq", *base], "19 vectors are too few to train 256 codewords"),
        (["index", "build", "--checkpoint", str(stadb_file), "--images", str(gallery), "--out", str(tmp_path / "c"),
          "--nlist", "4", *base], "--nlist applies to --approx ivfpq, not to an exact index"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("reidkit: error:") and line in err[0], (argv, err)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_index_without_faiss(stadb_file: Path, synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    """Without FAISS: an exact index builds, searches and takes removals (no FAISS file); --approx is one line
    saying what to install, before any image is embedded."""
    monkeypatch.setattr(knn_mod, "faiss_available", lambda: False)
    gallery = synth_root / "bounding_box_test"
    idx = tmp_path / "idx"
    base = ["--no-progress", "--device", "cpu"]
    assert main(["index", "build", "--checkpoint", str(stadb_file), "--images", str(gallery), "--out", str(idx),
                 *base]) == 0
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["index"] == {"kind": "flat", "file": None}
    assert main(["index", "remove", str(idx), "--pids", "4"]) == 0
    assert main(["search", str(idx), "--query", str(synth_root / "query"), "--k", "3", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["index", "build", "--checkpoint", str(stadb_file), "--images", str(gallery), "--out",
                 str(tmp_path / "a"), "--approx", "hnsw", *base]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["reidkit: error: --approx hnsw needs FAISS, which is not installed: pip install 'reidkit[faiss]' "
                   "(or pip install faiss-cpu)"]


@pytest.mark.faiss
def test_index_add_says_when_ivfpq_outgrew_its_training(stadb_file: Path, synth_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """An IVF-PQ index (4-bit codes: 624 vectors train it) made in Python with the model's description; 'index
    add' encodes the new crops without retraining and, once the index holds GROWTH_NOTE times its training
    set (here 1×), says how to retrain."""
    import reidkit
    from reidkit.commands import index as index_cmd
    from reidkit.inference import Gallery, IndexSpec

    emb = reidkit.load(stadb_file, device="cpu")
    gal = Gallery(emb.embedding_dim, model_meta=dict(emb.meta, flip=False), index=IndexSpec.make("ivfpq", nbits=4))
    gal.add(torch.randn(700, emb.embedding_dim, generator=torch.Generator().manual_seed(0)))
    idx = tmp_path / "idx"
    gal.save(idx, model=emb.model)
    monkeypatch.setattr(index_cmd, "GROWTH_NOTE", 1)
    assert main(["index", "add", str(idx), "--images", str(synth_root / "query"), "--no-progress",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "added 8 images" in out and "note: its ivfpq index was trained on 700 vectors and now holds 708" in out
    assert Gallery.load(idx).trained_on == 700
