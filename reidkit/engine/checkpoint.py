"""Training checkpoints: atomic writes, a kept previous copy, and picking the latest loadable one.

A run folder holds ``checkpoint.pt`` (latest), ``checkpoint_prev.pt`` (the one before it) and
``best.pt`` (best mAP so far: the weights, their description, the epoch, metrics and config, without the
optimizer state, which only continuing a run needs). Every file is written to a temporary file and
renamed, and the previous checkpoint is hard-linked (or copied) to ``checkpoint_prev.pt`` *before* the
new one replaces ``checkpoint.pt`` (a new inode), so at every instant at least one complete checkpoint
exists. ``train.keep`` (``reidkit.engine.config.TrainConfig``) chooses which of the three a run keeps.
Everything stored loads with ``torch.load(weights_only=True)``: RNG states are tensors or
lists of ints, never numpy objects.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidkit.errors import CheckpointError, ReidkitError
from reidkit.utils.atomic import atomic_link, atomic_path
from reidkit.utils.safeload import safe_torch_load

__all__ = [
    "BEST",
    "LATEST",
    "PREVIOUS",
    "RESUME_ONLY",
    "RUN_STATE",
    "best_state",
    "capture_rng",
    "find_resume_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
]

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint_prev.pt"
BEST = "best.pt"
RUN_STATE = (LATEST, PREVIOUS, BEST)  # what a run folder holds that a fresh run would replace


# what only continuing a run needs: left out of best.pt
RESUME_ONLY = ("optimizer", "scaler")


def best_state(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` as ``best.pt`` holds it: everything but the optimizer (and gradient scaler) state."""
    return {k: v for k, v in state.items() if k not in RESUME_ONLY}


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, *, best: bool = False,
                    previous: bool = True) -> Path:
    """Write ``state`` as ``run_dir/checkpoint.pt``, keeping the former one as ``checkpoint_prev.pt`` (with
    ``previous=False`` none is kept and a stale one is removed).

    With ``best=True`` the state without its optimizer (``best_state``) is also written to ``best.pt``.
    Returns the latest path.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = run_dir / LATEST
    if latest.exists() and previous:
        atomic_link(latest, run_dir / PREVIOUS)
    with atomic_path(latest) as tmp, open(tmp, "wb") as fh:
        torch.save(state, fh)  # through a Python file: a full disk surfaces as the OSError it is
    if not previous:  # only once the new one is complete: never a moment without a checkpoint
        (run_dir / PREVIOUS).unlink(missing_ok=True)
    if best:  # its own file, not a link: damage to one file must not take the other with it
        with atomic_path(run_dir / BEST) as tmp, open(tmp, "wb") as fh:
            torch.save(best_state(state), fh)
    return latest


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``); ``CheckpointError`` names the file on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    state = safe_torch_load(path, "a reidkit training checkpoint", map_location=str(map_location))
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: not a reidkit training checkpoint (missing 'model' or 'epoch')")
    if not isinstance(state["model"], dict):
        raise CheckpointError(f"{path}: damaged checkpoint ('model' must map names to tensors)")
    for key in ("epoch", "step", "global_step"):
        value = state.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckpointError(f"{path}: damaged checkpoint ('{key}' must be an integer >= 0, got "
                                  f"{type(value).__name__} {str(value)[:20]!r})")
    return state


def find_resume_checkpoint(run_dir: str | Path, restore: Callable[[Path, dict[str, Any]], None] | None = None
                           ) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``run_dir`` (latest, else previous) that loads and, when ``restore`` is
    given, that ``restore(path, state)`` accepts (it raises a ``ReidkitError`` for a checkpoint it cannot
    continue from: wrong types, missing parts, another model); ``None`` if there is no checkpoint.

    A checkpoint skipped is named in a warning (with the one used instead). If checkpoint files exist but
    none can be used, ``CheckpointError`` names the newest one's problem.
    """
    run_dir = Path(run_dir)
    found: list[tuple[tuple[int, int], Path, dict[str, Any]]] = []
    failures: dict[str, str] = {}
    for name in (LATEST, PREVIOUS):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            state = load_checkpoint(path)
        except CheckpointError as exc:
            failures[name] = str(exc)
            continue
        found.append(((state["epoch"], state.get("step", 0)), path, state))
    found.sort(key=lambda item: item[0], reverse=True)
    chosen: tuple[Path, dict[str, Any]] | None = None
    for _, path, state in found:
        if restore is None:
            chosen = (path, state)
            break
        try:
            restore(path, state)
        except ReidkitError as exc:
            failures[path.name] = str(exc)
            continue
        chosen = (path, state)
        break
    if chosen is None:
        if failures:
            raise CheckpointError(f"{run_dir}: no loadable checkpoint ({failures.get(LATEST, failures.get(PREVIOUS))})")
        return None
    for name in (LATEST, PREVIOUS):  # only worth a warning when another checkpoint is used instead
        if name in failures:
            warnings.warn(f"skipping unusable checkpoint: {failures[name]}; resuming from {chosen[0]}",
                          stacklevel=2)
    return chosen


# --------------------------------------------------------------------------- RNG states


def capture_rng(extra_generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """All random states as tensors / lists: torch CPU, CUDA (if any), Python, numpy and named generators."""
    py_state = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [str(np_state[0]), torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "generators": {},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    for name, gen in (extra_generators or {}).items():
        state["generators"][name] = gen.get_state()
    return state


def restore_rng(state: dict[str, Any], extra_generators: dict[str, torch.Generator] | None = None) -> None:
    """Restore what ``capture_rng`` captured (missing parts are left as they are)."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu() if isinstance(state["torch"], torch.Tensor) else state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        keys_np = keys.numpy().astype(np.uint32) if isinstance(keys, torch.Tensor) else np.asarray(keys, np.uint32)
        np.random.set_state((name, keys_np, int(pos), int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for name, gen in (extra_generators or {}).items():
        saved = state.get("generators", {}).get(name)
        if saved is not None:
            gen.set_state(saved.cpu())
