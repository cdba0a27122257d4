"""Output paths, tried as a careless user would: the one rule of ``reidkit.utils.atomic`` holds for every
command (``docs/guarantees.md``, "Outputs").

- ``--out`` naming a folder where a file goes, a file where a folder goes, a named pipe or a device: one
  ``reidkit: error:`` line (exit 2), and the thing at that path is left exactly as it was;
- a symbolic link is followed: the file it points to is replaced, the link stays;
- a run folder holding checkpoints is not emptied by ``reidkit demo`` without ``--force``;
- a write the system refuses (a full disk, a file-size limit, a read-only or immutable folder, no
  permission) is one line, with no temporary file left and the old output intact;
- files are created with the usual permissions (``0666 & ~umask``), and a replaced file keeps its own.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import torch

# --------------------------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def inputs(rel_weights, synth_root, rel_index, tmp_path_factory, make_config):
    """Everything the commands read: a model, a dataset, an index, a dataset features file, a config."""
    from reidkit.inference.features import DatasetFeatures, save_dataset_features

    d = tmp_path_factory.mktemp("outputs_inputs")
    q = sorted(str(p) for p in (synth_root / "query").glob("*.jpg"))
    g = sorted(str(p) for p in (synth_root / "bounding_box_test").glob("*.jpg"))
    gen = torch.Generator().manual_seed(0)
    feats = d / "dataset.safetensors"
    save_dataset_features(feats, DatasetFeatures(
        torch.randn(len(q), 8, generator=gen), torch.arange(len(q)) % 4, torch.zeros(len(q), dtype=torch.long),
        torch.randn(len(g), 8, generator=gen), torch.arange(len(g)) % 4, torch.ones(len(g), dtype=torch.long),
        q, g))
    cfg = make_config(d / "tiny.yaml", synth_root, d / "unused_run")
    return {"W": str(rel_weights), "ROOT": str(synth_root), "Q": str(synth_root / "query"), "Q1": q[0],
            "INDEX": str(rel_index), "F": str(feats), "CFG": str(cfg)}


RUNTIME = ["--device", "cpu", "--no-progress", "--engine", "torch"]

# command line for each file output, with OUT where the path goes
FILE_OUTPUTS = {
    "extract --out": ["extract", "--checkpoint", "W", "--images", "Q", "--out", "OUT", *RUNTIME],
    "eval --save-features": ["eval", "--checkpoint", "W", "--dataset", "market1501", "--root", "ROOT",
                             "--save-features", "OUT", *RUNTIME],
    "search --out": ["search", "INDEX", "--query", "Q1", "--checkpoint", "W", "--out", "OUT", *RUNTIME],
    "search --picture": ["search", "INDEX", "--query", "Q1", "--checkpoint", "W", "--picture", "OUT", *RUNTIME],
    "export --out": ["export", "--checkpoint", "W", "--out", "OUT"],
    "report --out": ["report", "--features", "F", "--out", "OUT"],
    "synth --grid": ["synth", "--out", "SCRATCH", "--ids", "4", "--grid", "OUT"],
}
# command line for each folder output
FOLDER_OUTPUTS = {
    "eval --out": ["eval", "--features", "F", "--out", "OUT"],
    "index build --out": ["index", "build", "--checkpoint", "W", "--images", "Q", "--out", "OUT", *RUNTIME],
    "visualize attention --out": ["visualize", "attention", "--checkpoint", "W", "--images", "Q1", "--out", "OUT",
                                  "--device", "cpu"],
    "visualize ranklist --out": ["visualize", "ranklist", "--features", "F", "--out", "OUT", "--queries", "2"],
    "synth --out": ["synth", "--out", "OUT", "--ids", "4"],
    "demo --out": ["demo", "--out", "OUT", "--data", "SCRATCH", "--ids", "4", "--epochs", "1", "--quiet"],
    "demo --data": ["demo", "--out", "SCRATCH", "--data", "OUT", "--ids", "4", "--epochs", "1", "--quiet"],
    "train --out": ["train", "--config", "CFG", "--out", "OUT", "--quiet"],
}


def _argv(template: list[str], inputs: dict[str, str], out: Path, scratch: Path) -> list[str]:
    return [str(out) if a == "OUT" else str(scratch) if a == "SCRATCH" else inputs.get(a, a) for a in template]


def _snapshot(path: Path) -> tuple:
    """What is at ``path``: its kind, and a regular file's bytes and mode, a folder's listing."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISREG(st.st_mode):
        return ("file", path.read_bytes(), stat.S_IMODE(st.st_mode))
    if stat.S_ISDIR(st.st_mode):
        return ("folder", sorted(p.name for p in path.iterdir()))
    return ("special", stat.S_IFMT(st.st_mode), st.st_rdev)


def _one_error(res) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr
    assert len(res.error_lines()) == 1, res.stderr
    return res.error_lines()[0]


# --------------------------------------------------------------------------------------------- wrong kinds


@pytest.mark.parametrize("case", sorted(FILE_OUTPUTS))
def test_a_folder_where_a_file_goes_is_refused(case, inputs, tmp_path, cli_inproc):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = _snapshot(out)
    line = _one_error(cli_inproc(_argv(FILE_OUTPUTS[case], inputs, out, tmp_path / "scratch")))
    assert str(out) in line and "folder" in line, line
    assert _snapshot(out) == before and (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("kind", ["file", "fifo"])
@pytest.mark.parametrize("case", sorted(FOLDER_OUTPUTS))
def test_a_file_where_a_folder_goes_is_refused(case, kind, inputs, tmp_path, cli_inproc):
    out = tmp_path / "taken"
    if kind == "file":
        out.write_bytes(b"precious")
    else:
        if not hasattr(os, "mkfifo"):
            pytest.skip("named pipes need a POSIX system")
        os.mkfifo(out)
    before = _snapshot(out)
    line = _one_error(cli_inproc(_argv(FOLDER_OUTPUTS[case], inputs, out, tmp_path / "scratch")))
    assert str(out) in line and "not a folder" in line, line
    assert _snapshot(out) == before


def _special(kind: str, path: Path) -> None:
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("named pipes need a POSIX system")
        os.mkfifo(path)
    elif kind == "device":  # a private null device node, so that a regression replaces nothing that matters
        try:
            os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except (PermissionError, AttributeError) as exc:
            pytest.skip(f"cannot create a device node here ({exc}); the link to /dev/null case covers devices")
    elif kind == "link to /dev/null":
        if not os.path.exists("/dev/null"):
            pytest.skip("no /dev/null")
        path.symlink_to("/dev/null")


@pytest.mark.parametrize("kind", ["fifo", "device", "link to /dev/null"])
@pytest.mark.parametrize("case", sorted(FILE_OUTPUTS))
def test_devices_and_pipes_are_never_replaced(case, kind, inputs, tmp_path, cli_inproc):
    """A named pipe or a device at --out (as root, replacing /dev/null would break the machine): refused
    before any work, and still there, untouched."""
    out = tmp_path / "special"
    _special(kind, out)
    before = _snapshot(out)
    null_before = os.stat("/dev/null") if kind == "link to /dev/null" else None
    line = _one_error(cli_inproc(_argv(FILE_OUTPUTS[case], inputs, out, tmp_path / "scratch")))
    assert str(out) in line and ("device" in line or "named pipe" in line), line
    assert _snapshot(out) == before
    if null_before is not None:
        now = os.stat("/dev/null")
        assert stat.S_ISCHR(now.st_mode) and now.st_rdev == null_before.st_rdev


def test_a_link_is_followed_and_kept(inputs, tmp_path, cli_inproc):
    """--out naming a symbolic link to a file: the file it points to is replaced (atomically, beside
    itself), the link stays a link."""
    from reidkit.inference.features import read_folder_features

    real_dir = tmp_path / "elsewhere"
    real_dir.mkdir()
    real = real_dir / "feats.safetensors"
    real.write_bytes(b"old")
    link = tmp_path / "feats.safetensors"
    link.symlink_to(real)
    res = cli_inproc(_argv(FILE_OUTPUTS["extract --out"], inputs, link, tmp_path))
    assert res.returncode == 0, res.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert len(read_folder_features(real).paths) == len(list(Path(inputs["Q"]).glob("*.jpg")))
    assert sorted(p.name for p in real_dir.iterdir()) == ["feats.safetensors"]  # no temporary file left


# --------------------------------------------------------------------------------------------- run folders


def test_demo_keeps_a_run_folder_without_force(inputs, tmp_path, cli_inproc):
    """'reidkit demo --out DIR' over a folder holding checkpoints used to delete best.pt and
    checkpoint_prev.pt and overwrite checkpoint.pt without a word."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pt", "checkpoint_prev.pt", "best.pt", "model.safetensors"):
        (run / name).write_bytes(name.encode())
    before = _snapshot(run)
    line = _one_error(cli_inproc(["demo", "--out", str(run), "--data", str(tmp_path / "data"), "--ids", "4",
                                  "--epochs", "1", "--quiet"]))
    assert "--force" in line and "checkpoint.pt" in line, line
    assert _snapshot(run) == before and all((run / n).read_bytes() == n.encode() for n in before[1])
    assert not (tmp_path / "data").exists()  # refused before any work


# --------------------------------------------------------------------------------------------- refused writes

REFUSED = {
    "no space left (at fsync)": ("fsync", errno.ENOSPC, "no space left"),
    "read-only file system": ("mkstemp", errno.EROFS, "read-only"),
    "permission denied": ("mkstemp", errno.EACCES, "permission denied"),
    "immutable folder": ("replace", errno.EPERM, "not permitted"),
}
WRITERS = {
    "extract": FILE_OUTPUTS["extract --out"],
    "eval --out": FOLDER_OUTPUTS["eval --out"],
    "report": FILE_OUTPUTS["report --out"],
    "index build": FOLDER_OUTPUTS["index build --out"],
}


@pytest.mark.parametrize("how", sorted(REFUSED))
@pytest.mark.parametrize("command", sorted(WRITERS))
def test_writes_the_system_refuses_are_one_line(command, how, inputs, tmp_path, cli_inproc, monkeypatch):
    """The system refusing the write (simulated where it happens: creating the temporary file, syncing it,
    renaming it; as root chmod would not stop the write): one line naming the reason, no temporary file."""
    import reidkit.utils.atomic as atomic

    where, code, words = REFUSED[how]

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    target = {"fsync": (atomic.os, "fsync"), "mkstemp": (atomic.tempfile, "mkstemp"),
              "replace": (atomic.os, "replace")}[where]
    monkeypatch.setattr(*target, refuse)
    out = tmp_path / "out"
    line = _one_error(cli_inproc(_argv(WRITERS[command], inputs, out, tmp_path / "scratch")))
    assert words in line, line
    monkeypatch.undo()
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers


@pytest.mark.parametrize("command", ["train", "extract", "export", "index build"])
def test_a_file_size_limit_is_one_line_in_a_real_process(command, inputs, tmp_path, cli):
    """Writes failing for real (RLIMIT_FSIZE: each write past 8 KiB fails with EFBIG, the way a full disk
    fails with ENOSPC), through torch.save, safetensors, onnx and JSON: one line and exit 2 — training used
    to print a 36-line torch traceback. The files written before stay whole."""
    out = tmp_path / "out"
    argv = {"train": FOLDER_OUTPUTS["train --out"], "extract": FILE_OUTPUTS["extract --out"],
            "export": FILE_OUTPUTS["export --out"], "index build": FOLDER_OUTPUTS["index build --out"]}[command]
    res = cli(_argv(argv, inputs, out, tmp_path / "scratch"), timeout=300, max_file_bytes=8 * 1024)
    line = _one_error(res)
    assert "too large" in line, line
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    if command == "train":
        import yaml

        assert yaml.safe_load((out / "config.yaml").read_text())["model"]["name"] == "baseline"
        assert not (out / "checkpoint.pt").exists()


# --------------------------------------------------------------------------------------------- permissions


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def test_outputs_follow_the_umask(inputs, tmp_path, cli_inproc, umask_027):
    """Every file a command writes gets 0666 & ~umask (safetensors files used to be 0600: a shared index or
    model was unreadable by the rest of a team)."""
    runs = {
        "extract": (FILE_OUTPUTS["extract --out"], tmp_path / "f.safetensors"),
        "index build": (FOLDER_OUTPUTS["index build --out"], tmp_path / "index"),
        "eval --out": (FOLDER_OUTPUTS["eval --out"], tmp_path / "eval"),
        "report": (FILE_OUTPUTS["report --out"], tmp_path / "r.html"),
    }
    for name, (argv, out) in runs.items():
        res = cli_inproc(_argv(argv, inputs, out, tmp_path / "scratch"))
        assert res.returncode == 0, (name, res.stderr)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".safetensors", ".json", ".png", ".html"}
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {oct(0o640)}, modes


def test_a_replaced_file_keeps_its_permissions(inputs, tmp_path, cli_inproc):
    """A features file the user made private (0600) stays private when a command replaces it."""
    out = tmp_path / "f.safetensors"
    out.write_bytes(b"old")
    out.chmod(0o600)
    assert cli_inproc(_argv(FILE_OUTPUTS["extract --out"], inputs, out, tmp_path)).returncode == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and out.read_bytes() != b"old"
