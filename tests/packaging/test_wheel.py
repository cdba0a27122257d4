"""``pip install .`` works as README says: the wheel holds the package, its presets and its example programs
(and nothing of the clone's tests or benchmarks), the build leaves no ``build/`` or ``*.egg-info`` in the clone,
and every extra pyproject.toml declares is optional (reidkit runs without it) and documented."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOP_SCRATCH = {".git", ".venv", "runs", "data", "site", "build", "dist", ".whl"}  # the clone's own, at its top
SCRATCH = {"__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}


@pytest.mark.slow
def test_the_wheel_holds_presets_and_examples_and_the_clone_stays_clean(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(REPO, clone, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in SCRATCH or n.endswith(".egg-info")
                                              or (Path(d) == REPO and n in TOP_SCRATCH)])
    before = sorted(p.name for p in clone.iterdir())
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", ".", "-w", str(tmp_path / "wheel")], cwd=clone, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "PIP_NO_INPUT": "1"}, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in clone.iterdir()) == before  # no build/, no reidkit.egg-info
    (wheel,) = (tmp_path / "wheel").glob("reidkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    presets = {p.relative_to(REPO).as_posix() for p in (REPO / "reidkit" / "configs").rglob("*.yaml")}
    assert len(presets) > 40 and presets <= names, sorted(presets - names)
    examples = {p.relative_to(REPO).as_posix() for p in (REPO / "reidkit" / "examples").glob("*.py")}
    assert {"reidkit/examples/reid_across_folders.py", "reidkit/examples/tracking_loop.py"} <= examples <= names
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "reidkit").rglob("*.py")}
    assert sources <= names, sorted(sources - names)
    assert "reidkit/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/", "docs/", "scripts/"))]
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "reidkit = reidkit.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


EXTRAS = {"onnx": ["onnx", "onnxruntime"], "faiss": ["faiss"], "tensorboard": ["tensorboard"],
          "docs": ["mkdocs", "mkdocstrings"]}
BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r} or name == "torch.utils.tensorboard":
            raise ImportError(f"blocked: {{name}}")
sys.meta_path.insert(0, Block())
"""


def test_every_extra_is_documented_and_optional(tmp_path: Path) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) == {*EXTRAS, "dev"}
    for page in (REPO / "README.md", REPO / "docs" / "index.md"):
        text = page.read_text(encoding="utf-8")
        assert "pip install ." in text and all(f"`{e}`" in text for e in extras), page
    blocked = {m for ms in EXTRAS.values() for m in ms}
    script = BLOCKER.format(blocked=blocked) + f"""
import contextlib, io, torch
from reidkit.cli import main
from reidkit.models import build
from reidkit.models.io import save_weights
for argv in (["presets"], ["models"]):
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0, argv
m = build("stadb", 3, backbone="resnet18", pretrained=None); m.input_size = (64, 32)
path = save_weights(m.eval(), {str(tmp_path / "m.safetensors")!r})
import reidkit
emb = reidkit.load(path, device="cpu")
assert emb.embed(torch.zeros(300, 3, 64, 32, dtype=torch.uint8)).shape == (300, 1536)
assert emb.engine.kind == "torch"   # auto without onnxruntime: PyTorch
g = reidkit.Gallery(1536); g.add(torch.randn(5, 1536)); assert len(g.search(torch.randn(1, 1536), k=2)[0]) == 2
import onnx
"""
    env = {**os.environ, "PYTHONPATH": str(REPO), "REIDKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600,
                         check=False)
    assert "blocked: onnx" in out.stderr and out.stderr.rstrip().endswith("ImportError: blocked: onnx"), \
        out.stderr[-3000:]  # everything before the last line ran without the extras
