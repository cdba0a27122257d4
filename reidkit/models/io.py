"""Model files: ``save_weights`` (safetensors + reidkit metadata), and the one reader of model files
(``model.safetensors``, ``checkpoint.pt``, a run folder): ``resolve_model_file`` (which file a path names),
``read_model_header`` (names, shapes and description, without the weights) and ``load_model`` (the model).

``reidkit.inference.modelfile.load_model_file`` checks a file as untrusted input through these before
``load_model`` reads the weights."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from reidkit.errors import CheckpointError, ReidkitError
from reidkit.models.base import ReIDModel
from reidkit.models.registry import build, names
from reidkit.utils.atomic import atomic_path
from reidkit.utils.safeload import safe_torch_load
from reidkit.version import __version__

META_KEY = "reidkit"
RUN_FOLDER_FILES = ("model.safetensors", "checkpoint.pt")  # what a run folder is read through, in order


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a model's state dict: names, shapes and float32 values.

    The same weights give the same digest whether loaded from a checkpoint, a safetensors file or
    exported to ONNX (the export stores it), so an index can tell models apart.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32 if t.is_floating_point() else t.dtype).contiguous()
                 .numpy().tobytes())
    return h.hexdigest()[:16]


def model_meta(model: ReIDModel, digest: bool = False) -> dict[str, Any]:
    """The description stored beside the weights (see ARCHITECTURE.md, "Files on disk"): name, number of
    classes, options, input size, embedding size, reidkit version, and with ``digest`` the
    ``weights_digest`` (what ONNX files, features files and indexes record)."""
    meta: dict[str, Any] = {
        "model": str(getattr(model, "name", type(model).__name__)),
        "num_classes": getattr(model, "num_classes", None),
        "options": dict(getattr(model, "options", {}) or {}),
        "input_size": [int(v) for v in getattr(model, "input_size", (256, 128))],
        "embedding_dim": int(getattr(model, "embedding_dim", 0)),
        "version": __version__,
    }
    if digest:
        meta["weights_digest"] = weights_digest(model)
    return meta


def save_weights(model: ReIDModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model``'s state dict to ``path`` as safetensors with ``{"reidkit": json(meta)}`` metadata,
    atomically. Returns the path."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: json.dumps(model_meta(model))})
    return target


def parse_meta_json(text: Any, source: str | os.PathLike[str]) -> Any:
    """The JSON value of a metadata string (a one-line ``CheckpointError`` when it is not JSON or nests too
    deeply)."""
    if not isinstance(text, str):
        raise CheckpointError(f"{source}: damaged metadata (expected JSON text)")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{source}: damaged metadata (not valid JSON)") from None


def resolve_model_file(path: str | os.PathLike[str]) -> Path:
    """The file a model path names: the path itself, or in a run folder ``model.safetensors`` (else
    ``checkpoint.pt``); a one-line ``CheckpointError`` when there is none or it is not a regular file."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in RUN_FOLDER_FILES:
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: no model.safetensors or checkpoint.pt in this directory")
    if not p.is_file():
        raise CheckpointError(f"{p}: model file not found; expected model.safetensors, checkpoint.pt or a run dir")
    return p


def is_safetensors(p: Path) -> bool:
    """Whether model file ``p`` is read as safetensors: by name, else by the first bytes (not zip, not pickle)."""
    if p.suffix == ".safetensors":
        return True
    with open(p, "rb") as fh:
        head = fh.read(8)
    return len(head) == 8 and not head.startswith(b"PK") and not head.startswith(b"\x80")


def read_model_header(p: Path) -> tuple[dict[str, tuple[tuple[int, ...], bool]], Any]:
    """(name → (shape, is floating)) of the stored weights and the raw model description of model file ``p``,
    without reading the weights (safetensors header, or a memory-mapped checkpoint)."""
    if is_safetensors(p):
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as fh:
                raw = (fh.metadata() or {}).get(META_KEY)
                shapes = {}
                for k in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                    sl = fh.get_slice(k)
                    shapes[k] = (tuple(int(v) for v in sl.get_shape()), sl.get_dtype().startswith(("F", "BF")))
        except Exception as exc:  # safetensors raises several private error types
            raise CheckpointError(f"{p}: not a readable safetensors file ({type(exc).__name__})") from None
        if raw is None:
            raise CheckpointError(f"{p}: no reidkit metadata; expected a model.safetensors written by reidkit")
        return shapes, parse_meta_json(raw, p)
    obj = safe_torch_load(p, "a reidkit checkpoint.pt or model.safetensors", mmap=True)
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict) or not isinstance(
            obj.get("model_meta"), dict):
        raise CheckpointError(f"{p}: not a reidkit checkpoint; expected keys 'model' and 'model_meta'")
    shapes = {}
    for k, v in obj["model"].items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{p}: damaged checkpoint ('model' must map names to tensors)")
        shapes[k] = (tuple(v.shape), v.is_floating_point())
    return shapes, obj["model_meta"]


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(META_KEY)
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__})") from None
    if raw is None:
        raise CheckpointError(f"{path}: no reidkit metadata; expected a model.safetensors written by reidkit")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: reidkit metadata is not valid JSON") from None
    return state, meta


def _read_checkpoint(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    obj = safe_torch_load(path, "a reidkit checkpoint.pt or model.safetensors")
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict) or not isinstance(
            obj.get("model_meta"), dict):
        raise CheckpointError(f"{path}: not a reidkit checkpoint; expected keys 'model' and 'model_meta'")
    return obj["model"], obj["model_meta"]


def strip_prefixes(key: str) -> str:
    """A parameter name without DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes."""
    changed = True
    while changed:
        changed = False
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> ReIDModel:
    """Load an eval-mode model from a ``.safetensors`` weight file, a training checkpoint ``.pt`` or a run
    directory holding ``model.safetensors`` (or ``checkpoint.pt``).

    Errors (missing file, non-reidkit file, pickles that would run code, unknown model, mismatched weights)
    raise a one-line ``CheckpointError`` naming the file.
    """
    p = resolve_model_file(path)
    if is_safetensors(p):
        state, meta = _read_safetensors(p)
    else:
        state, meta = _read_checkpoint(p)
    name = meta.get("model")
    if name not in names():
        raise CheckpointError(f"{p}: unknown model {name!r} in its metadata; expected one of {', '.join(names())}")
    options = dict(meta.get("options") or {})
    options["pretrained"] = None  # the weights come from the file
    state = {strip_prefixes(k): v for k, v in state.items()}
    try:
        model = build(name, int(meta["num_classes"]), **options)
    except (ReidkitError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{p}: cannot rebuild model {name!r} from its metadata ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(s.strip() for s in first[1:3]) if len(first) > 1 else first[0] if first else ""
        raise CheckpointError(f"{p}: weights do not match model {name!r}: {detail[:300]}") from None
    if meta.get("input_size"):
        model.input_size = (int(meta["input_size"][0]), int(meta["input_size"][1]))
    return model.to(device).eval()
