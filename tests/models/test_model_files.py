"""One reader of model files: ``reidkit.models.io`` is the only module that opens a ``model.safetensors`` or
``checkpoint.pt`` (``load_model``, and ``read_model_header`` for what ``load_model_file`` checks before the
weights are read); ``reidkit.inference.modelfile.load_model_file`` is checks around one ``load_model`` call.
Every other call that reads tensors from a file is listed here with what it reads."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

# calls that read tensors from a file (by the dotted name they are imported as)
READERS = {
    "safetensors.safe_open", "safetensors.torch.load_file", "safetensors.torch.load", "torch.load",
    "torch.hub.load_state_dict_from_url", "reidkit.utils.safeload.safe_torch_load",
}

# module -> the functions in it that read tensors from files, and what they read
EXPECTED = {
    "reidkit.models.io": {  # model files: the only reader of model.safetensors / checkpoint.pt
        "read_model_header", "_read_safetensors", "_read_checkpoint"},
    "reidkit.utils.safeload": {"safe_torch_load"},  # the one torch.load (weights_only), used by the others
    "reidkit.engine.checkpoint": {"load_checkpoint"},  # training state for --resume
    "reidkit.models.backbones.resnet": {  # a torchvision ResNet state dict (the pretrained option)
        "_read_state_dict", "_fetch_imagenet"},
    "reidkit.inference.features": {"load_tensors"},  # features files and index segments
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` of a name or attribute chain, or None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _calls(node: ast.AST, owner: str = "<module>") -> list[tuple[str, str]]:
    """(the innermost function around it, or ``<module>``; the called dotted name) of every call under ``node``."""
    out = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Call) and (name := _dotted(child.func)):
            out.append((owner, name))
        inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else owner
        out.extend(_calls(child, inner))
    return out


def readers() -> dict[str, set[str]]:
    """module -> names of the functions in it that call a file reader."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / "reidkit").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: dict[str, str] = {}  # local name -> the dotted name it was imported as
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
            elif isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname})
        for owner, name in _calls(tree):
            head, _, rest = name.partition(".")
            if ".".join(filter(None, (aliases.get(head, head), rest))) in READERS:
                found.setdefault(_module(path), set()).add(owner)
    return found


def test_the_scan_finds_readers() -> None:
    """The scanner itself: the readers listed below are found where they are (a positive control)."""
    found = readers()
    assert "_read_safetensors" in found.get("reidkit.models.io", set())
    assert "safe_torch_load" in found.get("reidkit.utils.safeload", set())


def test_one_module_reads_model_files() -> None:
    found = readers()
    lines = []
    for module in sorted(set(found) | set(EXPECTED)):
        if found.get(module, set()) != EXPECTED.get(module, set()):
            lines.append(f"{module}: reads files in {sorted(found.get(module, set()))}, expected "
                         f"{sorted(EXPECTED.get(module, set()))}")
    assert not lines, ("file readers outside their place (model files are read by reidkit.models.io only; "
                       "list any other reader in EXPECTED with what it reads):\n  " + "\n  ".join(lines))


def test_load_model_file_reads_through_load_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checked loader's weights come from ``models.io.load_model`` (one call), and both give one model."""
    import reidkit.inference.modelfile as modelfile
    from reidkit.models import build, load_model, save_weights

    torch.manual_seed(0)
    model = build("baseline", 4, backbone="resnet18", pretrained=None)
    model.input_size = (64, 32)
    path = save_weights(model.eval(), tmp_path / "model.safetensors")
    calls = []

    def spy(p, device="cpu"):
        calls.append(Path(p))
        return load_model(p, device)

    monkeypatch.setattr(modelfile, "load_model", spy)
    checked = modelfile.load_model_file(tmp_path)  # a run folder
    assert calls == [path]
    plain = load_model(path)
    assert checked.input_size == plain.input_size == (64, 32)
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(checked(x), plain(x))
