"""Interrupted work never loses work: SIGKILL at random points leaves only complete, loadable files.

Three levels:

- the writers themselves (``save_checkpoint``, ``save_folder_features``, ``Gallery.save`` of an HNSW
  gallery, ``update_index``, ``remove_from_index``) looping in a child process that is SIGKILLed after seeded
  random delays: every file left is complete and self-consistent (the index is one of the states the loop
  went through, its FAISS file of the same generation and holding exactly its rows), and the resume search
  picks the newest complete checkpoint;
- ``reidkit train`` killed while it is writing a checkpoint, then ``--resume`` finishes the run;
- ``reidkit extract`` and ``reidkit index add`` (on an HNSW index) killed at seeded random delays: the output
  is the old file or the new one, never a partial one, and temporary files are never picked up.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from reidkit.engine.runlog import environment_records

SEED = 8  # issue 8

WRITER = r"""
import sys, torch
from pathlib import Path
from reidkit.engine.checkpoint import save_checkpoint, find_resume_checkpoint
from reidkit.inference.features import save_folder_features
from reidkit.eval.knn import faiss_available
from reidkit.inference.gallery import Gallery, remove_from_index, update_index

out = Path(sys.argv[1])
found = find_resume_checkpoint(out / "run")
i = int(found[1]["epoch"]) + 1 if found else 0
while True:
    # ~32 MB checkpoint: writing it takes long enough for kills to land inside writes
    state = {"model": {"w": torch.full((4_000_000,), float(i)), "v": torch.full((4_000_000,), float(i))},
             "epoch": i, "step": 0}
    save_checkpoint(state, out / "run", best=(i % 2 == 0))
    save_folder_features(out / "feats.safetensors", torch.full((i + 1, 256), float(i)),
                         [f"img{j}.jpg" for j in range(i + 1)])
    # the index goes through three states per round (see _check_index): saved, id0 updated, id1 removed
    if faiss_available():  # an optional package: without it the other writers are still tested
        g = Gallery(embedding_dim=64, index="hnsw")
        g.add(torch.full((i + 1, 64), float(i)) + torch.arange(i + 1.0).unsqueeze(1) / 1000,
              ids=[f"id{j}" for j in range(i + 1)])
        g.save(out / "index")
        if i:
            update_index(out / "index", torch.full((1, 64), i - 0.5), ["id0"], [{}])
            remove_from_index(out / "index", ["id1"])
    (out / "progress").write_text(str(i))
    i += 1
"""


def _wait_for(pred, timeout: float, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"child exited early with {proc.returncode}: {out}")
        time.sleep(0.005)
    raise AssertionError("timed out waiting for the child")


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _check_writer_output(out: Path) -> int:
    """Every file left by the writer is complete and consistent; returns the newest checkpoint epoch."""
    from reidkit.engine.checkpoint import find_resume_checkpoint, load_checkpoint
    from reidkit.inference.features import read_folder_features

    run = out / "run"
    for p in run.iterdir():
        if p.name.endswith(".tmp"):
            assert p.name.startswith("."), f"temp file {p.name} is not hidden"
            continue
        state = load_checkpoint(p)  # every visible checkpoint file is complete
        e = float(state["epoch"])
        assert torch.all(state["model"]["w"] == e) and torch.all(state["model"]["v"] == e), p
    path, state = find_resume_checkpoint(run)
    newest = int(state["epoch"])
    assert path.name in ("checkpoint.pt", "checkpoint_prev.pt")
    assert not path.name.endswith(".tmp")
    if (out / "feats.safetensors").exists():
        ff = read_folder_features(out / "feats.safetensors")
        v = float(ff.feats[0, 0])
        assert ff.feats.shape == (int(v) + 1, 256) and torch.all(ff.feats == v) and len(ff.paths) == int(v) + 1
    if (out / "index" / "manifest.json").exists():
        _check_index(out / "index")
    return newest


def _check_index(idx: Path, base: int = 0) -> None:
    """The index is one of the states of a round i of WRITER (or INDEX_WRITER, whose galleries hold ``base``
    more rows): ids id0..id(base+i) with row j = i + j/1000 (saved), then id0 = i - 0.5 (updated), then without
    id1 (removed); it loads without a warning (its FAISS file is whole and of the manifest's generation) and
    its FAISS index holds exactly its rows."""
    from reidkit.inference.faiss_file import check_layout
    from reidkit.inference.features import load_tensors
    from reidkit.inference.gallery import Gallery

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = Gallery.load(idx)
    emb = g.embeddings
    assert torch.all(emb == emb[:, :1]), "a row holds two values"
    value = dict(zip(g.ids, emb[:, 0].tolist(), strict=True))
    others = sorted(int(x[2:]) for x in g.ids if x != "id0")
    if others:
        i = round(value[f"id{others[0]}"] - others[0] / 1000)
    else:  # id0 alone: saved in round 0 (0.0), or updated in round 1 (0.5) before id1 went
        i = round(value["id0"] + 0.5) if abs(value["id0"] - round(value["id0"])) > 0.25 else round(value["id0"])
    for j in others:
        assert abs(value[f"id{j}"] - (i + j / 1000)) < 1e-4, (j, value)
    updated = abs(value["id0"] - (i - 0.5)) < 1e-4
    assert updated or abs(value["id0"] - i) < 1e-4
    top = base + i
    assert others == list(range(1, top + 1)) or (updated and others == list(range(2, top + 1))), (i, len(g))
    assert g._vindex is not None and g._vindex.ntotal - len(g._vindex.dead) == len(g)
    # the FAISS index and the embeddings agree: it holds each live row's key with exactly that row's vector,
    # and otherwise only tombstones (checked by reading the vectors back, not by searching: an HNSW graph over
    # points on a line can leave a node unreachable, which is recall, not consistency; BENCHMARKS.md)
    import faiss

    held = faiss.vector_to_array(g._vindex.index.id_map)
    assert sorted(held.tolist()) == sorted([*g.keys.tolist(), *g._vindex.dead.tolist()])
    assert not set(g.keys.tolist()) & set(g._vindex.dead.tolist())
    stored = torch.from_numpy(np.stack([g._vindex.index.reconstruct(int(k)) for k in g.keys]))
    assert torch.equal(stored, emb), "the FAISS index holds other vectors than the embeddings"
    for p in idx.glob("embeddings-*.safetensors"):  # orphans may remain until the next write, but whole ones
        load_tensors(p)
    for p in idx.glob("faiss-*.index"):
        check_layout(p.read_bytes())


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


def test_writers_survive_sigkill_at_random_points(tmp_path, child_env):
    """4 children looping over the three writers, each SIGKILLed at a seeded random point: after a random
    delay, or a random few milliseconds after a temporary file appears (that is, inside a write)."""
    rng = random.Random(SEED)
    last = -1
    for round_ in range(4):
        progress = tmp_path / "progress"
        progress.unlink(missing_ok=True)
        for t in _temp_files(tmp_path):
            t.unlink()
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=child_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for(progress.exists, 180, proc)  # one full iteration done: imports are out of the way
            if round_ % 2:
                time.sleep(rng.uniform(0.0, 0.8))
            else:
                _wait_for(lambda: bool(_temp_files(tmp_path)), 60, proc)
                time.sleep(rng.uniform(0.0, 0.15))
        finally:
            _kill(proc)
        assert proc.returncode == -signal.SIGKILL
        newest = _check_writer_output(tmp_path)
        assert newest >= int(progress.read_text()), "a completed checkpoint was lost"
        assert newest > last, "no progress between kills"
        last = newest


INDEX_WRITER = r"""
import sys, torch
from pathlib import Path
from reidkit.inference.gallery import Gallery, remove_from_index, update_index

out, base, i = Path(sys.argv[1]), int(sys.argv[2]), 0
while True:
    n = base + i + 1
    g = Gallery(embedding_dim=64, index="hnsw")
    g.add(torch.full((n, 64), float(i)) + torch.arange(float(n)).unsqueeze(1) / 1000, ids=[f"id{j}" for j in range(n)])
    g.save(out / "index")
    update_index(out / "index", torch.full((1, 64), i - 0.5), ["id0"], [{}])
    remove_from_index(out / "index", ["id1"])
    (out / "progress").write_text(str(i))
    i += 1
"""


@pytest.mark.faiss
def test_index_writers_survive_sigkill_inside_faiss_writes(tmp_path, child_env):
    """A child looping over the index's writers (an HNSW gallery of 2,000 rows saved, updated, shrunk),
    SIGKILLed 4 times: after a random delay, or a few milliseconds after a FAISS or embeddings temporary file
    appears. The index is always a whole state of the loop, its FAISS file of the manifest's generation."""
    rng = random.Random(SEED)
    base = 2000
    for round_ in range(4):
        progress = tmp_path / "progress"
        progress.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", INDEX_WRITER, str(tmp_path), str(base)], env=child_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for(progress.exists, 180, proc)
            if round_ % 2:
                time.sleep(rng.uniform(0.0, 2.0))
            else:
                kind = ".faiss-" if round_ == 0 else ".embeddings-"
                _wait_for(lambda k=kind: any(p.name.startswith(k) for p in _temp_files(tmp_path)), 60, proc)
                time.sleep(rng.uniform(0.0, 0.02))
        finally:
            _kill(proc)
        assert proc.returncode == -signal.SIGKILL
        _check_index(tmp_path / "index", base)


def test_resume_picks_newest_good_checkpoint(tmp_path):
    """A torn or garbage checkpoint.pt (e.g. a copy cut short) is skipped for checkpoint_prev.pt."""
    from reidkit.engine.checkpoint import find_resume_checkpoint, save_checkpoint

    run = tmp_path / "run"
    for epoch in (1, 2):
        save_checkpoint({"model": {"w": torch.full((1000,), float(epoch))}, "epoch": epoch, "step": 0}, run)
    path, state = find_resume_checkpoint(run)
    assert path.name == "checkpoint.pt" and state["epoch"] == 2
    assert torch.load(run / "checkpoint_prev.pt", weights_only=True)["epoch"] == 1
    # stray temp files from an interrupted write are never picked up
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"\x00" * 100)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="checkpoint.pt"):
        path, state = find_resume_checkpoint(run)
    assert path.name == "checkpoint_prev.pt" and state["epoch"] == 1


# --------------------------------------------------------------------------------------- reidkit train
def test_train_killed_during_checkpoint_write_resumes(synth_root, tmp_path, child_env, make_config, cli):
    """SIGKILL while 'reidkit train' writes checkpoint.pt; what is left loads and --resume finishes."""
    from reidkit.engine.checkpoint import find_resume_checkpoint, load_checkpoint
    from reidkit.models.io import load_model

    rng = random.Random(SEED)
    run = tmp_path / "run"
    cfg = make_config(tmp_path / "tiny.yaml", synth_root, run, sampler={"num_batches": 3},
                      train={"epochs": 2, "save_every_steps": 1, "eval_every": 2})
    proc = subprocess.Popen([sys.executable, "-m", "reidkit", "train", "--config", str(cfg), "--quiet"],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # the first checkpoint is complete; kill inside a later write (its temp file exists)
        _wait_for(lambda: (run / "checkpoint.pt").exists(), 300, proc)
        _wait_for(lambda: any(run.glob(".checkpoint.pt.*.tmp")), 300, proc)
        time.sleep(rng.uniform(0.0, 0.05))
    finally:
        _kill(proc)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read() if proc.stdout else ""
    for p in run.glob("*.pt"):
        load_checkpoint(p)
    _path, state = find_resume_checkpoint(run)
    done = (int(state["epoch"]), int(state["step"]))
    assert done >= (0, 1)
    assert not (run / "model.safetensors").exists()

    res = cli(["train", "--config", str(cfg), "--resume", "--quiet"], timeout=400)
    assert res.returncode == 0, res.stderr
    env = environment_records(run)[-1]
    assert env["resumed_from"].endswith(".pt") and ".tmp" not in env["resumed_from"]
    final = load_checkpoint(run / "checkpoint.pt")
    assert int(final["epoch"]) == 2
    hist = json.loads((run / "history.json").read_text())
    rows = hist if isinstance(hist, list) else hist.get("epochs", hist.get("history", []))
    assert [int(r["epoch"]) for r in rows] == [1, 2], rows
    load_model(run / "model.safetensors")


def _damage(name: str, state: dict) -> None:
    """Make one part of a checkpoint unusable while it still loads (weights_only)."""
    if name == "epoch as a string":
        state["epoch"] = str(state["epoch"])
    elif name == "epoch as nonsense":
        state["epoch"] = "three"
    elif name == "no optimizer":
        del state["optimizer"]
    elif name == "optimizer moments of other shapes":
        for st in state["optimizer"]["state"].values():
            for k, v in list(st.items()):
                if torch.is_tensor(v) and v.dim():
                    st[k] = torch.zeros(3)
    elif name == "random state damaged":
        state["rng"]["torch"] = torch.zeros(3, dtype=torch.uint8)
    elif name == "python random state garbage":
        state["rng"]["python"] = [3, [1, 2], None]
    elif name == "sampler state garbage":
        state["sampler"] = {"epoch": "x", "position": -1}
    elif name == "sampler past its epoch":
        state["sampler"]["position"] = 10**9
    elif name == "a weight missing":
        del state["model"][next(iter(state["model"]))]
    elif name == "scheduler state garbage":
        state["scheduler"] = [1]
    elif name == "best of the wrong type":
        state["best"] = {"mAP": "high", "epoch": 1}
    elif name == "history of numbers":
        state["history"] = [1, 2]
    else:
        raise AssertionError(name)


DAMAGES = ["epoch as a string", "epoch as nonsense", "no optimizer", "optimizer moments of other shapes",
           "random state damaged", "python random state garbage", "sampler state garbage", "sampler past its epoch",
           "a weight missing", "scheduler state garbage", "best of the wrong type", "history of numbers"]


@pytest.fixture(scope="module")
def two_runs(synth_root, tmp_path_factory, make_config):
    """A 3-epoch run (the reference) and the same run stopped after 2 epochs (checkpoint.pt at epoch 2,
    checkpoint_prev.pt at epoch 1), both in-process."""
    from reidkit.cli import main

    d = tmp_path_factory.mktemp("two_runs")
    cfg = make_config(d / "tiny.yaml", synth_root, d / "unused", sampler={"num_batches": 2},
                      train={"epochs": 3, "eval_every": 0})
    for name, epochs in (("ref", 3), ("short", 2)):
        assert main(["train", "--config", str(cfg), "--out", str(d / name), "--quiet", "--set",
                     f"train.epochs={epochs}"]) == 0
    return cfg, d / "ref", d / "short"


@pytest.mark.parametrize("damage", DAMAGES)
def test_resume_falls_back_past_a_checkpoint_it_cannot_continue(damage, two_runs, tmp_path, cli_inproc):
    """checkpoint.pt loads but cannot be continued from (wrong types, missing parts, bad random or sampler
    state): --resume says so in one warning line and continues from checkpoint_prev.pt, and the run ends
    with exactly the weights of the uninterrupted one (it used to crash)."""
    import shutil

    cfg, ref, short = two_runs
    run = tmp_path / "run"
    shutil.copytree(short, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2
    _damage(damage, state)
    torch.save(state, run / "checkpoint.pt")
    res = cli_inproc(["train", "--config", str(cfg), "--out", str(run), "--resume", "--quiet", "--set",
                      "train.epochs=3"])
    assert res.returncode == 0, res.stderr
    warned = [ln for ln in res.stderr.splitlines() if "skipping unusable checkpoint" in ln]
    assert len(warned) == 1 and "checkpoint.pt" in warned[0] and "checkpoint_prev.pt" in warned[0], res.stderr
    assert environment_records(run)[-1]["resumed_from"].endswith("checkpoint_prev.pt")
    a = torch.load(ref / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_no_usable_checkpoint_is_one_line(two_runs, tmp_path, cli_inproc):
    """Both checkpoints unusable: one error line naming the newest one's problem, nothing trained."""
    import shutil

    cfg, _ref, short = two_runs
    run = tmp_path / "run"
    shutil.copytree(short, run)
    for name in ("checkpoint.pt", "checkpoint_prev.pt"):
        state = torch.load(run / name, weights_only=True)
        _damage("no optimizer", state)
        torch.save(state, run / name)
    before = (run / "checkpoint.pt").read_bytes()
    res = cli_inproc(["train", "--config", str(cfg), "--out", str(run), "--resume", "--quiet"])
    assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr
    assert "no loadable checkpoint" in res.error_lines()[0] and "optimizer" in res.error_lines()[0]
    assert (run / "checkpoint.pt").read_bytes() == before


# --------------------------------------------------------------------------------------- extract, index
def _images(root: Path) -> Path:
    return root / "bounding_box_test"


def test_extract_killed_leaves_old_or_new_features(synth_root, rel_weights, tmp_path, cli, child_env):
    """'reidkit extract' rewriting a features file, SIGKILLed twice at random: the file is always whole."""
    from reidkit.inference.features import read_folder_features

    out = tmp_path / "out" / "feats.safetensors"
    args = [sys.executable, "-m", "reidkit", "extract", "--checkpoint", str(rel_weights), "--images",
            str(_images(synth_root)), "--out", str(out), "--device", "cpu", "--workers", "0", "--no-progress"]
    t0 = time.monotonic()
    first = subprocess.run(args, env=child_env(), capture_output=True, text=True, timeout=300, check=False)
    span = time.monotonic() - t0
    assert first.returncode == 0, first.stderr
    old = read_folder_features(out)
    rng = random.Random(SEED)
    for _ in range(2):
        proc = subprocess.Popen([*args, "--flip"], env=child_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            time.sleep(rng.uniform(0.5, 1.0) * span)
        finally:
            _kill(proc)
        visible = [p for p in out.parent.iterdir() if not p.name.startswith(".")]
        assert visible == [out], visible
        ff = read_folder_features(out)
        assert ff.paths == old.paths and ff.feats.shape == old.feats.shape
        assert torch.isfinite(ff.feats).all()


@pytest.mark.faiss
def test_index_add_killed_leaves_a_whole_index(rel_index, rel_weights, synth_root, tmp_path, cli, child_env):
    """'reidkit index add' on an HNSW index SIGKILLed twice at random: the index loads (old or new) without a
    warning, its FAISS index holding exactly its rows, and a later add works."""
    import shutil

    from reidkit.inference.gallery import Gallery, rebuild_index

    idx = tmp_path / "index"
    shutil.copytree(rel_index, idx)
    rebuild_index(idx, "hnsw")
    n_old = len(Gallery.load(idx))
    new_imgs = synth_root / "query"
    n_new = n_old + len(list(new_imgs.glob("*.jpg")))
    args = [sys.executable, "-m", "reidkit", "index", "add", str(idx), "--images", str(new_imgs), "--device",
            "cpu", "--workers", "0", "--no-progress", "--checkpoint", str(rel_weights)]
    rng = random.Random(SEED)
    span = 8.0
    for _ in range(2):
        proc = subprocess.Popen(args, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        try:
            time.sleep(rng.uniform(0.3, 1.0) * span)
        finally:
            _kill(proc)
        if proc.returncode == 0:  # finished before the kill: later rounds add nothing new, so stop here
            span = time.monotonic() - t0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            g = Gallery.load(idx)
        assert len(g) in (n_old, n_new) and g._vindex is not None and g._vindex.ntotal == len(g)
        assert torch.isfinite(g.embeddings).all()
        if len(g) == n_new:
            break
    res = cli(["index", "add", str(idx), "--images", str(new_imgs), "--device", "cpu", "--workers", "0",
               "--no-progress", "--checkpoint", str(rel_weights)], timeout=300)
    assert res.returncode == 0, res.stderr
    g = Gallery.load(idx)
    assert len(g) == n_new and len(set(g.ids)) == n_new and g._vindex.ntotal == n_new
    manifest = json.loads((idx / "manifest.json").read_text())
    visible = sorted(p.name for p in idx.iterdir() if not p.name.startswith("."))
    named = sorted([*(s["file"] for s in manifest["segments"]), manifest["index"]["file"]])
    assert set(named) <= set(visible)
    # the generation files a killed writer left were removed by the last write
    assert [p for p in visible if p.startswith(("embeddings-", "faiss-"))] == named
