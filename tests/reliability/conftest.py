"""Fixtures for the reliability tests (issue 8): tiny synthetic data, a tiny model file, planted
malicious pickles, a tiny training config and a helper that runs the ``reidkit`` CLI in a subprocess.

Everything heavy is session-scoped and small: 8 identities at 64×32, a ResNet-18 baseline.
Helpers are handed out as fixtures (``--import-mode=importlib`` makes conftest modules unimportable).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SIZE = (64, 32)


# ----------------------------------------------------------------------------------------- CLI runner
@dataclass
class CliResult:
    """The outcome of one ``reidkit`` subprocess."""

    returncode: int
    stdout: str
    stderr: str

    def error_lines(self) -> list[str]:
        """The ``reidkit: error: ...`` lines on stderr."""
        return [ln for ln in self.stderr.splitlines() if ln.startswith("reidkit: error:")]


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1"})
    env.pop("REIDKIT_DEBUG_NAN_AT_STEP", None)
    env.pop("REIDKIT_DEBUG_KILL_AT_STEP", None)
    env.update(extra or {})
    return env


def run_cli(args: list[str], *, timeout: float = 240, env: dict[str, str] | None = None,
            cwd: str | os.PathLike[str] | None = None, max_file_bytes: int | None = None,
            umask: int | None = None) -> CliResult:
    """Run ``python -m reidkit ARGS`` with a timeout (a hang fails the test instead of blocking CI).

    ``max_file_bytes`` caps the size of any file the command writes (``RLIMIT_FSIZE``: a write past it fails
    with EFBIG, as a write to a full disk fails with ENOSPC); ``umask`` is the child's umask.
    """
    def limit() -> None:
        import resource

        if max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
        if umask is not None:
            os.umask(umask)

    proc = subprocess.run([sys.executable, "-m", "reidkit", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=_child_env(env), cwd=cwd or REPO, check=False,
                          preexec_fn=limit if (max_file_bytes is not None or umask is not None) else None)
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(res: CliResult, *must_contain: str, code: int = 2) -> str:
    """Exit status ``code`` (2), no traceback, and stderr is exactly one ``reidkit: error:`` line (returned)."""
    assert res.returncode == code, (f"expected exit {code}, got {res.returncode}\nstdout:\n{res.stdout}\n"
                                    f"stderr:\n{res.stderr}")
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("reidkit: error: "), \
        f"expected stderr to be one 'reidkit: error:' line, got:\n{res.stderr}"
    for text in must_contain:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture(scope="session")
def cli() -> Callable[..., CliResult]:
    """``cli(args, timeout=..., env=...)`` → :class:`CliResult` of ``python -m reidkit``."""
    return run_cli


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> CliResult:
    """Run ``reidkit.cli.main(argv)`` in this process (an uncaught exception fails the test)."""
    from reidkit.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


@pytest.fixture()
def cli_inproc(capsys: pytest.CaptureFixture[str]) -> Callable[[list[str]], CliResult]:
    """``cli_inproc(args)`` → :class:`CliResult` of ``reidkit.cli.main`` run in-process (fast)."""
    return lambda argv: run_main(argv, capsys)


@pytest.fixture(scope="session")
def one_line_error() -> Callable[..., str]:
    """:func:`assert_one_line_error`."""
    return assert_one_line_error


@pytest.fixture(scope="session")
def child_env() -> Callable[..., dict[str, str]]:
    """The environment the CLI subprocesses get (one thread, no CUDA, no debug hooks)."""
    return _child_env


# ----------------------------------------------------------------------------------------- data, model
@pytest.fixture(scope="session")
def rel_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``model.safetensors`` of an untrained ResNet-18 baseline at 64×32 (4 classes)."""
    import torch

    from reidkit.models import build
    from reidkit.models.io import save_weights

    torch.manual_seed(0)
    model = build("baseline", 4, backbone="resnet18", pretrained=None)
    model.input_size = SIZE
    return save_weights(model.eval(), tmp_path_factory.mktemp("rel_weights") / "model.safetensors")


@pytest.fixture(scope="session")
def rel_index(rel_weights: Path, synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small gallery index folder built with the library (no subprocess)."""
    import reidkit
    from reidkit.inference.gallery import Gallery

    emb = reidkit.load(rel_weights, device="cpu")
    paths = sorted(str(p) for p in (synth_root / "bounding_box_test").glob("*.jpg"))[:6]
    feats, kept, bad = emb.embed_paths(paths, workers=0)
    assert not bad
    g = Gallery(emb.embedding_dim, model_meta=dict(emb.meta, source=str(rel_weights), flip=False))
    g.add(feats, ids=kept, metadata=[{"path": p, "pid": -1, "camid": -1} for p in kept])
    return g.save(tmp_path_factory.mktemp("rel_index") / "index")


def tiny_config(path: Path, root: Path, out_dir: Path, **sections: dict[str, Any]) -> Path:
    """Write a tiny training config (baseline ResNet-18 at 64×32, SGD, P=2 K=2, 3 batches an epoch, CPU)."""
    cfg: dict[str, Any] = {
        "model": {"name": "baseline", "options": {"backbone": "resnet18", "pretrained": "none"}},
        "data": {"dataset": "market1501", "root": str(root), "size": list(SIZE), "workers": 0,
                 "eval_batch_size": 32},
        "augment": {"pipeline": "stadb"},
        "sampler": {"p": 2, "k": 2, "num_batches": 3},
        "optim": {"name": "sgd", "lr": 1.0e-2},
        "train": {"epochs": 1, "eval_every": 1, "seed": 0, "device": "cpu", "out_dir": str(out_dir),
                  "progress": False, "tensorboard": False, "plots": False, "log_every": 1},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def make_config() -> Callable[..., Path]:
    """:func:`tiny_config`."""
    return tiny_config


# ----------------------------------------------------------------------------------------- evil files
class _RunsShell:
    """Unpickling this runs ``touch SENTINEL`` through ``os.system``."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.sentinel}'",))


class _RunsPython:
    """Unpickling this writes SENTINEL through ``builtins.exec`` (no shell)."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self) -> tuple[Any, ...]:
        import builtins

        return (builtins.exec, (f"open({self.sentinel!r}, 'w').write('pwned')",))


@dataclass
class EvilFiles:
    """Planted files whose loading would create ``sentinel``; ``files`` maps a label to each path."""

    sentinel: Path
    files: dict[str, Path]

    def fired(self) -> bool:
        return self.sentinel.exists()


def plant_evil(folder: Path) -> EvilFiles:
    """Write every flavour of code-running file into ``folder`` (nothing is loaded here)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    sentinel = folder / "SENTINEL"
    shell, py = _RunsShell(sentinel), _RunsPython(sentinel)
    files: dict[str, Path] = {}

    def put(label: str, name: str, writer: Callable[[Path], None]) -> None:
        (folder / label).mkdir(exist_ok=True)
        p = folder / label / name
        writer(p)
        files[label] = p

    # a training-checkpoint-shaped dict whose model_meta runs code (torch zip format)
    put("torch_ckpt", "checkpoint.pt", lambda p: torch.save(
        {"model": {}, "model_meta": {"model": "baseline", "x": shell}, "epoch": 1, "step": 0}, p))
    # a bare object, torch zip format, .pth (what pretrained= reads)
    put("torch_pth", "resnet18.pth", lambda p: torch.save(py, p))
    # a .ckpt holding a state dict with one evil value
    put("torch_ckpt_ext", "model.ckpt", lambda p: torch.save({"state_dict": {"w": py}}, p))
    # plain pickle protocol 2+ (starts with \x80) under .pt
    put("pickle_pt", "weights.pt", lambda p: p.write_bytes(pickle.dumps(shell, protocol=4)))
    # plain pickle protocol 0 (text) under .pth
    put("pickle0_pth", "weights.pth", lambda p: p.write_bytes(pickle.dumps(py, protocol=0)))
    # a pickle wearing a .safetensors name
    put("pickle_safetensors", "model.safetensors", lambda p: p.write_bytes(pickle.dumps(shell, protocol=4)))
    # legacy (non-zip) torch.save format
    put("torch_legacy", "legacy.pt", lambda p: torch.save(py, p, _use_new_zipfile_serialization=False))
    return EvilFiles(sentinel, files)


@pytest.fixture()
def evil(tmp_path: Path) -> EvilFiles:
    """Fresh evil files (and an absent sentinel) under ``tmp_path/evil``."""
    e = plant_evil(tmp_path / "evil")
    assert not e.fired()
    return e


@pytest.fixture(scope="session")
def plant() -> Callable[[Path], EvilFiles]:
    """:func:`plant_evil`."""
    return plant_evil
