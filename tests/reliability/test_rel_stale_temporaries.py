"""Temporary files that a writer killed with SIGKILL leaves are removed by the next write into the folder, and
only those: the temporary file of a live writer, of another machine (recently touched), a link, and every file
of another naming stay (``reidkit.utils.atomic``, "Temporary files")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reidkit.utils.atomic import (
    FOREIGN_TEMP_SECONDS,
    TEMP_NAME,
    _host_tag,
    atomic_path,
    atomic_write_text,
    remove_stale_temporaries,
)

REPO = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temp(folder: Path, name: str, pid: int, tag: str | None = None, age: float = 0.0) -> Path:
    p = folder / f".{name}.rk{pid}-{tag or _host_tag()}.abc123_z.tmp"
    p.write_bytes(b"half a file")
    if age:
        os.utime(p, (time.time() - age, time.time() - age))
    return p


def test_the_temporary_name_is_recognised_and_holds_the_writer(tmp_path):
    with atomic_path(tmp_path / "model.onnx") as tmp:
        m = TEMP_NAME.fullmatch(tmp.name)
        assert m and int(m.group(1)) == os.getpid() and m.group(2) == _host_tag()
        tmp.write_bytes(b"x")
    assert (tmp_path / "model.onnx").read_bytes() == b"x"


def test_a_write_removes_stale_temporaries_and_keeps_the_others(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _temp(folder, "model.onnx", _dead_pid())
        dead_old_format = _temp(folder, "checkpoint.pt", _dead_pid(), age=10)
        live = _temp(folder, "model.onnx", sleeper.pid)
        mine = _temp(folder, "metrics.json", os.getpid())
        foreign_fresh = _temp(folder, "model.onnx", _dead_pid(), tag="000000" if _host_tag() != "000000" else "111111")
        foreign_old = _temp(folder, "x.pt", 1, tag="000000" if _host_tag() != "000000" else "111111",
                            age=FOREIGN_TEMP_SECONDS + 60)
        others = [folder / ".model.onnx.abcdefgh.tmp", folder / "notes.txt", folder / ".model.onnx.rk12.tmp"]
        for p in others:
            p.write_text("not reidkit's temporary file")
        link = folder / f".link.rk{_dead_pid()}-{_host_tag()}.abcdefgh.tmp"
        link.symlink_to(folder / "notes.txt")
        atomic_write_text(folder / "result.txt", "done")
        assert not dead.exists() and not dead_old_format.exists() and not foreign_old.exists()
        assert live.exists() and mine.exists() and foreign_fresh.exists()
        assert all(p.exists() for p in others) and link.is_symlink()
        assert (folder / "result.txt").read_text() == "done"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_temporaries(folder) == [live.name]  # its writer is gone now


def test_a_writer_killed_with_sigkill_leaves_a_temporary_the_next_write_removes(tmp_path):
    code = ("import os, signal, sys; from reidkit.utils.atomic import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half an export')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    target = tmp_path / "model.onnx"
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=REPO, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and TEMP_NAME.fullmatch(left[0]) and not target.exists()
    proc = subprocess.run([sys.executable, "-c", "import sys; from reidkit.utils.atomic import atomic_write_text; "
                           "atomic_write_text(sys.argv[1], 'ok')", str(tmp_path / "other.txt")], cwd=REPO,
                          timeout=120, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.txt"]


@pytest.mark.parametrize("name", [os.fsdecode(b"\xff\xfe.onnx"), "caf\u00e9 \u2603.onnx", "x" * 250 + ".onnx",
                                  "line\nbreak.json"])
def test_temporary_names_are_printable_ascii_whatever_the_target(tmp_path, name):
    """A library that takes UTF-8 paths only (ONNX, safetensors, torch) can write the temporary file of any
    target, and a 255-byte target name does not make a too-long temporary name."""
    with atomic_path(tmp_path / name) as tmp:
        assert tmp.name.isascii() and tmp.name.isprintable() and len(os.fsencode(tmp.name)) <= 255
        tmp.name.encode("utf-8")
        tmp.write_bytes(b"x")
    assert (tmp_path / name).read_bytes() == b"x"
