"""Untrusted files never run code: every load path refuses a pickle that would execute on load.

Each planted file, if unpickled with a plain ``pickle.load`` / ``torch.load(weights_only=False)``,
creates a sentinel file (``test_planted_files_really_run_code`` proves it). Every reidkit entry point
that reads a model, checkpoint, features or index file must refuse them with a one-line
:class:`reidkit.errors.ReidkitError` (exit status 2 from the CLI) and the sentinel must never appear.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidkit.errors import CheckpointError, ReidkitError

LABELS = ["torch_ckpt", "torch_pth", "torch_ckpt_ext", "pickle_pt", "pickle0_pth", "pickle_safetensors",
          "torch_legacy"]


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert msg.strip(), f"{type(exc).__name__} with an empty message"
    assert "\n" not in msg.strip(), f"multi-line error: {msg!r}"
    return msg


@pytest.mark.parametrize("label", LABELS)
def test_planted_files_really_run_code(evil, label):
    """Positive control: loaded unsafely, each planted file does run code (so the other tests mean something)."""
    path = evil.files[label]
    if label.startswith("pickle"):
        with open(path, "rb") as fh:
            pickle.load(fh)  # the point: this runs the planted code
    else:
        torch.load(path, weights_only=False)
    assert evil.fired(), f"{label}: planted file did not run code when loaded unsafely"


@pytest.mark.parametrize("label", LABELS)
def test_load_model_refuses_code(evil, label):
    from reidkit.models.io import load_model

    with pytest.raises(CheckpointError) as info:
        load_model(evil.files[label])
    msg = _one_line(info.value)
    assert str(evil.files[label]) in msg, msg
    assert not evil.fired()


@pytest.mark.parametrize("label", LABELS)
def test_api_load_refuses_code(evil, label):
    import reidkit

    with pytest.raises(ReidkitError) as info:
        reidkit.load(evil.files[label], device="cpu")
    _one_line(info.value)
    assert not evil.fired()


def test_load_model_refuses_run_folder_with_evil_checkpoint(evil, tmp_path):
    """A run folder whose checkpoint.pt is planted: load_model(dir) and reidkit.load(dir) refuse it."""
    import reidkit
    from reidkit.models.io import load_model

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(evil.files["torch_ckpt"], run / "checkpoint.pt")
    with pytest.raises(CheckpointError):
        load_model(run)
    with pytest.raises(ReidkitError):
        reidkit.load(run, device="cpu")
    assert not evil.fired()


@pytest.mark.parametrize("label", ["torch_pth", "torch_ckpt_ext", "pickle_pt", "pickle0_pth", "torch_legacy",
                                   "pickle_safetensors"])
def test_backbone_pretrained_path_refuses_code(evil, label):
    from reidkit.models import build

    with pytest.raises(CheckpointError) as info:
        build("baseline", 4, backbone="resnet18", pretrained=str(evil.files[label]))
    _one_line(info.value)
    assert not evil.fired()


@pytest.mark.parametrize("label", LABELS)
def test_gallery_load_refuses_code(evil, label, rel_index, tmp_path):
    """An index folder whose embeddings file is replaced by a planted file."""
    from reidkit.inference.gallery import Gallery

    idx = tmp_path / "index"
    shutil.copytree(rel_index, idx)
    manifest = json.loads((idx / "manifest.json").read_text())
    shutil.copy(evil.files[label], idx / manifest["segments"][0]["file"])
    with pytest.raises(ReidkitError) as info:
        Gallery.load(idx)
    _one_line(info.value)
    assert not evil.fired()


@pytest.mark.parametrize("label", LABELS)
def test_features_readers_refuse_code(evil, label):
    from reidkit.inference.features import load_tensors, read_dataset_features, read_folder_features

    for reader in (load_tensors, read_folder_features, read_dataset_features):
        with pytest.raises(CheckpointError) as info:
            reader(evil.files[label])
        _one_line(info.value)
    assert not evil.fired()


def test_resume_refuses_evil_checkpoint(evil, tmp_path):
    """The trainer's resume search skips a planted checkpoint.pt and raises when nothing else loads."""
    from reidkit.engine.checkpoint import find_resume_checkpoint, load_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(evil.files["torch_ckpt"], run / "checkpoint.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(run / "checkpoint.pt")
    with warnings.catch_warnings(record=True) as caught, pytest.raises(CheckpointError) as info:
        warnings.simplefilter("always")
        find_resume_checkpoint(run)
    _one_line(info.value)
    assert "would run code" in str(info.value) and "checkpoint.pt" in str(info.value)
    assert not caught, "no checkpoint loads: the error alone speaks (a warning would add lines)"
    assert not evil.fired()


def test_resume_skips_evil_latest_and_takes_previous(evil, tmp_path):
    """A planted checkpoint.pt beside a good checkpoint_prev.pt: resume picks the good one, runs nothing."""
    from reidkit.engine.checkpoint import find_resume_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3, "step": 0}, run / "checkpoint_prev.pt")
    shutil.copy(evil.files["torch_ckpt"], run / "checkpoint.pt")
    with pytest.warns(UserWarning, match="checkpoint.pt"):
        path, state = find_resume_checkpoint(run)
    assert path.name == "checkpoint_prev.pt" and state["epoch"] == 3
    assert not evil.fired()


# ------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def cli_evil(tmp_path_factory, plant):
    """One set of planted files shared by the CLI cases of this module (each case checks the sentinel)."""
    return plant(tmp_path_factory.mktemp("cli_evil"))


def _cli_cases(evil, root: Path, index: Path, out: Path) -> dict[str, list[str]]:
    ckpt = str(evil.files["torch_ckpt"])
    pkl_st = str(evil.files["pickle_safetensors"])
    q = str(sorted((root / "query").glob("*.jpg"))[0])
    imgs = str(root / "query")
    return {
        "eval --features (pickle named .safetensors)": ["eval", "--features", pkl_st],
        "eval --features (torch file)": ["eval", "--features", ckpt],
        "eval --checkpoint": ["eval", "--checkpoint", ckpt, "--dataset", "market1501", "--root", str(root),
                              "--device", "cpu"],
        "extract --checkpoint .pt": ["extract", "--checkpoint", ckpt, "--images", imgs, "--out",
                                     str(out / "f.safetensors"), "--device", "cpu", "--no-progress"],
        "extract --checkpoint .safetensors": ["extract", "--checkpoint", pkl_st, "--images", imgs, "--out",
                                              str(out / "f.safetensors"), "--device", "cpu", "--no-progress"],
        "index build --checkpoint": ["index", "build", "--checkpoint", str(evil.files["pickle_pt"]), "--images",
                                     imgs, "--out", str(out / "idx"), "--device", "cpu", "--no-progress"],
        "index add --checkpoint": ["index", "add", str(index), "--checkpoint", ckpt, "--images", imgs,
                                   "--device", "cpu", "--no-progress"],
        "search --checkpoint": ["search", str(index), "--query", q, "--checkpoint", ckpt, "--device", "cpu"],
        "export --checkpoint": ["export", "--checkpoint", ckpt, "--out", str(out / "m.onnx")],
        "visualize attention --checkpoint": ["visualize", "attention", "--checkpoint", ckpt, "--images", q,
                                             "--out", str(out / "viz"), "--device", "cpu"],
        "report --features": ["report", "--features", pkl_st, "--out", str(out / "r.html")],
    }


ALL_CLI_CASES = ["eval --features (pickle named .safetensors)", "eval --features (torch file)",
                 "eval --checkpoint", "extract --checkpoint .pt", "extract --checkpoint .safetensors",
                 "index build --checkpoint", "index add --checkpoint", "search --checkpoint",
                 "export --checkpoint", "visualize attention --checkpoint", "report --features"]
# the ones also run as real subprocesses (the rest run reidkit.cli.main in-process, which is faster)
SUBPROCESS_CLI_CASES = [
    "eval --features (pickle named .safetensors)",
    "extract --checkpoint .pt",
    "index build --checkpoint",  # a plain pickle (protocol 4) named .pt
]


@pytest.mark.parametrize("case", ALL_CLI_CASES)
def test_cli_refuses_code_inprocess(case, cli_evil, synth_root, rel_index, tmp_path, cli_inproc):
    """reidkit.cli.main on every command that reads a model or features file: exit 2, one error line."""
    args = _cli_cases(cli_evil, synth_root, rel_index, tmp_path)[case]
    res = cli_inproc(args)
    assert res.returncode == 2, res.stderr
    assert len(res.error_lines()) == 1, res.stderr
    assert not cli_evil.fired(), f"{case}: the planted file ran code"
    assert not (tmp_path / "f.safetensors").exists() and not (tmp_path / "idx").exists()


@pytest.mark.parametrize("case", SUBPROCESS_CLI_CASES)
def test_cli_refuses_code_subprocess(case, cli_evil, synth_root, rel_index, tmp_path, cli, one_line_error):
    """The real command in a subprocess: exit 2, stderr exactly one 'reidkit: error:' line, no traceback."""
    args = _cli_cases(cli_evil, synth_root, rel_index, tmp_path)[case]
    res = cli(args, timeout=180)
    one_line_error(res)
    assert not cli_evil.fired(), f"{case}: the planted file ran code"
    assert not (tmp_path / "f.safetensors").exists() and not (tmp_path / "idx").exists()


@pytest.mark.parametrize("loader", [
    "reidkit.models.io.load_model",
    "reidkit.engine.checkpoint.load_checkpoint",
])
def test_error_messages_never_advise_unsafe_loading(evil, loader):
    """Refusals must not tell the user to re-run with weights_only=False (that would run the code)."""
    import importlib

    module, _, name = loader.rpartition(".")
    load = getattr(importlib.import_module(module), name)
    for label in ("torch_ckpt", "pickle_pt", "torch_legacy"):
        with pytest.raises(CheckpointError) as info:
            load(evil.files[label])
        msg = str(info.value)
        assert "weights_only` set to `False" not in msg and "weights_only=False" not in msg, msg
        assert "would run code" in msg or "refused" in msg, msg
    assert not evil.fired()


def test_cli_index_add_refuses_evil_recorded_model(evil, rel_index, synth_root, tmp_path, cli, one_line_error,
                                                   cli_inproc):
    """An index whose manifest names a planted model file: 'index add' and 'search' refuse to load it."""
    idx = tmp_path / "index"
    shutil.copytree(rel_index, idx)
    manifest = json.loads((idx / "manifest.json").read_text())
    manifest["model"]["source"] = str(evil.files["torch_ckpt"])
    (idx / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(p.name for p in idx.iterdir())
    res = cli_inproc(["index", "add", str(idx), "--images", str(synth_root / "query"), "--device", "cpu",
                      "--no-progress"])
    assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr
    res = cli(["search", str(idx), "--query", str(synth_root / "query"), "--device", "cpu"], timeout=180)
    one_line_error(res)
    assert not evil.fired()
    assert sorted(p.name for p in idx.iterdir()) == before


def test_cli_train_resume_refuses_evil_checkpoint(evil, synth_root, tmp_path, cli, one_line_error, make_config):
    """'reidkit train --resume' with a planted checkpoint.pt: exit 2, one error line, nothing runs."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(evil.files["torch_ckpt"], run / "checkpoint.pt")
    cfg = make_config(tmp_path / "tiny.yaml", synth_root, run)
    res = cli(["train", "--config", str(cfg), "--resume", "--quiet"], timeout=240)
    line = one_line_error(res, "checkpoint")
    assert "no loadable checkpoint" in line or "checkpoint.pt" in line
    assert not evil.fired()
    assert not (run / "model.safetensors").exists()


def test_cli_train_pretrained_refuses_code(evil, synth_root, tmp_path, cli, one_line_error, make_config):
    """model.options.pretrained pointing at a planted .pth: exit 2 before any training."""
    cfg = make_config(tmp_path / "tiny.yaml", synth_root, tmp_path / "run",
                      model={"name": "baseline", "options": {"backbone": "resnet18",
                                                             "pretrained": str(evil.files["torch_pth"])}})
    res = cli(["train", "--config", str(cfg), "--quiet"], timeout=240)
    one_line_error(res, "resnet18.pth")
    assert not evil.fired()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


# ------------------------------------------------------------------------------------------- the source
def _unsafe_calls(source: str) -> list[str]:
    """Calls in ``source`` that could unpickle or evaluate file content."""
    import ast

    bad: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        kw = {k.arg: k.value for k in node.keywords}

        def is_true(key: str, kw=kw) -> bool:
            v = kw.get(key)
            return isinstance(v, ast.Constant) and v.value is True

        if name in ("torch.load", "torch.hub.load_state_dict_from_url") and not is_true("weights_only"):
            bad.append(f"line {node.lineno}: {name} without weights_only=True")
        elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "dill.load", "joblib.load",
                      "torch.jit.load", "yaml.unsafe_load", "yaml.full_load", "marshal.load", "marshal.loads",
                      "eval", "exec", "shelve.open"):
            bad.append(f"line {node.lineno}: {name}")
        elif name == "yaml.load" and "Loader" not in kw:
            bad.append(f"line {node.lineno}: yaml.load without a safe Loader")
        elif name in ("np.load", "numpy.load") and is_true("allow_pickle"):
            bad.append(f"line {node.lineno}: np.load with allow_pickle=True")
    return bad


def test_source_has_no_unsafe_loader():
    """Static guard: no reidkit module unpickles without weights_only=True or evaluates file content."""
    pkg = Path(__file__).resolve().parents[2] / "reidkit"
    found = {str(p.relative_to(pkg)): _unsafe_calls(p.read_text(encoding="utf-8")) for p in sorted(pkg.rglob("*.py"))}
    found = {k: v for k, v in found.items() if v}
    assert not found, found


def test_unsafe_call_detector_has_teeth():
    src = ("import torch, pickle, yaml\ntorch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\n"
           "yaml.load(t)\ntorch.load(p, weights_only=True)\nyaml.load(t, Loader=yaml.SafeLoader)\n")
    assert [s.split(":")[0] for s in _unsafe_calls(src)] == ["line 2", "line 3", "line 4", "line 5"]


# ------------------------------------------------------------------------------------------- damaged files
def _small_files() -> dict[str, bytes]:
    import io
    import tempfile

    from reidkit.inference.features import save_folder_features

    buf = io.BytesIO()
    torch.save({"model": {"w": torch.arange(64.0)}, "model_meta": {"model": "baseline"}, "epoch": 1, "step": 0},
               buf)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.safetensors"
        save_folder_features(p, torch.randn(4, 16), [f"{i}.jpg" for i in range(4)])
        st_bytes = p.read_bytes()
    return {"ckpt": buf.getvalue(), "safetensors": st_bytes}


SMALL = _small_files()
damaged = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.sampled_from(sorted(SMALL)), st.floats(0, 0.999)).map(
        lambda t: SMALL[t[0]][: int(len(SMALL[t[0]]) * t[1])]),
    st.tuples(st.sampled_from(sorted(SMALL)), st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)),
                                                     min_size=1, max_size=6)).map(
        lambda t: bytes(dict(t[1]).get(i, b) for i, b in enumerate(SMALL[t[0]]))),
)


@settings(max_examples=40, deadline=None)
@given(data=damaged, name=st.sampled_from(["checkpoint.pt", "model.safetensors", "feats.safetensors", "x.pth"]))
def test_damaged_files_give_one_line_errors(data, name):
    """Random, truncated or bit-flipped checkpoint and safetensors bytes: every reader either loads them or
    raises a one-line CheckpointError; nothing else escapes."""
    import tempfile

    from reidkit.engine.checkpoint import load_checkpoint
    from reidkit.inference.features import load_tensors
    from reidkit.models.io import load_model

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / name
        p.write_bytes(data)
        for reader in (load_model, load_checkpoint, load_tensors):
            try:
                reader(p)
            except CheckpointError as exc:
                _one_line(exc)


# ------------------------------------------------------------------------------------------- index manifests
@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_index_manifest_cannot_point_outside_its_folder(rel_index, tmp_path, how):
    """An untrusted index whose manifest names a file outside the index folder: refused on load, and
    'index add' (load + save) never deletes that file."""
    import json

    from reidkit.inference.features import save_tensors
    from reidkit.inference.gallery import Gallery

    idx = tmp_path / "index"
    shutil.copytree(rel_index, idx)
    manifest = json.loads((idx / "manifest.json").read_text())
    victim = tmp_path / "victim.safetensors"  # a file the user cares about, outside the index
    n, d = manifest["count"], manifest["embedding_dim"]
    save_tensors(victim, {"embeddings": torch.zeros(n, d)})
    manifest["segments"][0]["file"] = "../victim.safetensors" if how == "relative" else str(victim)
    (idx / "manifest.json").write_text(json.dumps(manifest))
    try:
        g = Gallery.load(idx)
    except ReidkitError as exc:
        _one_line(exc)
    else:
        g.add(torch.ones(1, d), ids=["new"])
        g.save(idx)
        assert victim.exists(), "saving the index deleted a file outside the index folder"
        pytest.fail("an index whose manifest points outside its folder was loaded")
    assert victim.exists()


def _index_with_entries(rel_index: Path, tmp_path: Path, paths: list[str]) -> Path:
    """A copy of ``rel_index`` whose entries record ``paths`` (as a crafted manifest would)."""
    idx = tmp_path / "index"
    shutil.copytree(rel_index, idx)
    manifest = json.loads((idx / "manifest.json").read_text())
    for md, p in zip(manifest["metadata"], paths, strict=False):
        md["path"] = p
    (idx / "manifest.json").write_text(json.dumps(manifest))
    return idx


@pytest.mark.parametrize("how", ["absolute", "climbs out", "link inside pointing out"])
def test_index_entries_cannot_make_search_read_outside(rel_index, rel_weights, synth_root, tmp_path, how,
                                                       cli_inproc, monkeypatch):
    """Entry paths such as /etc/passwd or ../../x.png: 'search --picture' does not open them (it draws a
    blank tile and says so); it reads an entry only inside the index folder or a --gallery-root DIR."""
    import reidkit.viz.ranklist as ranklist

    secret_dir = tmp_path / "private"
    secret_dir.mkdir()
    secret = secret_dir / "me.jpg"
    shutil.copy(sorted((synth_root / "query").glob("*.jpg"))[0], secret)
    idx = tmp_path / "index"
    entry = {"absolute": str(secret), "climbs out": "../private/me.jpg", "link inside pointing out": "link/me.jpg"}
    idx = _index_with_entries(rel_index, tmp_path, [entry[how]] * 6)
    if how == "link inside pointing out":
        (idx / "link").symlink_to(secret_dir)
    opened: list[str] = []
    real = ranklist.read_image
    monkeypatch.setattr(ranklist, "read_image", lambda p: (opened.append(str(p)), real(p))[1])
    query = str(sorted((synth_root / "query").glob("*.jpg"))[1])
    argv = ["search", str(idx), "--query", query, "--k", "3", "--checkpoint", str(rel_weights), "--device", "cpu",
            "--picture", str(tmp_path / "ranks.png"), "--out", str(tmp_path / "hits.json")]
    res = cli_inproc(argv)
    assert res.returncode == 0, res.stderr
    assert opened == [query], opened  # the query only: no entry outside the index folder was read
    assert "3 gallery image(s)" in res.stderr and "--gallery-root" in res.stderr
    # the user names the folder: then it is read
    opened.clear()
    assert cli_inproc([*argv, "--gallery-root", str(secret_dir)]).returncode == 0
    assert opened[0] == query and {os.path.realpath(p) for p in opened[1:]} == {str(secret)}


def test_relative_entries_resolve_from_the_index_folder(rel_index, rel_weights, synth_root, tmp_path, cli_inproc,
                                                        monkeypatch):
    """An entry recorded as imgs/a.jpg means INDEX/imgs/a.jpg, whatever the current folder (it used to be
    read from the current folder)."""
    import reidkit.viz.ranklist as ranklist

    idx = _index_with_entries(rel_index, tmp_path, ["imgs/a.jpg"] * 6)
    (idx / "imgs").mkdir()
    shutil.copy(sorted((synth_root / "query").glob("*.jpg"))[0], idx / "imgs" / "a.jpg")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "imgs").mkdir(parents=True)
    (elsewhere / "imgs" / "a.jpg").write_bytes(b"a decoy in the current folder")
    monkeypatch.chdir(elsewhere)
    opened: list[str] = []
    real = ranklist.read_image
    monkeypatch.setattr(ranklist, "read_image", lambda p: (opened.append(str(p)), real(p))[1])
    query = str(sorted((synth_root / "query").glob("*.jpg"))[1])
    res = cli_inproc(["search", str(idx), "--query", query, "--k", "2", "--checkpoint", str(rel_weights),
                      "--device", "cpu", "--picture", str(tmp_path / "ranks.png"), "--out", str(tmp_path / "h.json")])
    assert res.returncode == 0, res.stderr
    hits = json.loads((tmp_path / "h.json").read_text())["results"][0]["matches"]
    assert {m["path"] for m in hits} == {str(idx / "imgs" / "a.jpg")}
    assert opened[1:] == [str(idx / "imgs" / "a.jpg")] * 2 and "warning" not in res.stderr


def test_index_never_opens_the_model_its_manifest_names(rel_index, rel_weights, synth_root, tmp_path, cli_inproc):
    """model.source in a manifest (here a perfectly good model outside the folder) is not opened: an index
    uses its own model file, or the one the user passes."""
    idx = tmp_path / "index"
    shutil.copytree(rel_index, idx)
    outside = tmp_path / "elsewhere" / "model.safetensors"
    outside.parent.mkdir()
    shutil.copy(rel_weights, outside)
    manifest = json.loads((idx / "manifest.json").read_text())
    manifest["model"]["source"] = str(outside)
    (idx / "manifest.json").write_text(json.dumps(manifest))
    query = str(sorted((synth_root / "query").glob("*.jpg"))[0])
    res = cli_inproc(["search", str(idx), "--query", query, "--device", "cpu"])
    assert res.returncode == 2 and len(res.error_lines()) == 1, res.stderr
    assert "--checkpoint" in res.error_lines()[0]
    # the index's own model file (a copy inside the folder) is used
    shutil.copy(rel_weights, idx / "model.safetensors")
    assert cli_inproc(["search", str(idx), "--query", query, "--device", "cpu"]).returncode == 0


@pytest.mark.parametrize("which", ["embeddings", "manifest", "model"])
def test_index_refuses_linked_files(rel_index, rel_weights, synth_root, tmp_path, which, cli_inproc):
    """An index file that is a symbolic link (to a valid file elsewhere) is refused, not followed."""
    from reidkit.inference.gallery import Gallery

    idx = tmp_path / "index"
    shutil.copytree(rel_index, idx)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    manifest = json.loads((idx / "manifest.json").read_text())
    name = {"embeddings": manifest["segments"][0]["file"], "manifest": "manifest.json", "model": "model.safetensors"}[which]
    if which == "model":
        shutil.copy(rel_weights, elsewhere / name)
    else:
        shutil.move(idx / name, elsewhere / name)
    (idx / name).symlink_to(elsewhere / name)
    query = str(sorted((synth_root / "query").glob("*.jpg"))[0])
    if which != "model":
        with pytest.raises(ReidkitError) as info:
            Gallery.load(idx)
        assert "link" in _one_line(info.value)
    res = cli_inproc(["search", str(idx), "--query", query, "--device", "cpu"])
    assert res.returncode == 2 and len(res.error_lines()) == 1 and "link" in res.error_lines()[0], res.stderr
