"""Config overrides that shrink any training run to seconds on a CPU, shared by the engine tests."""

from __future__ import annotations

from pathlib import Path

BASE = {
    "model.options.backbone": "resnet18", "model.options.pretrained": "null", "data.size": "[64, 32]",
    "data.workers": "0", "sampler.p": "2", "sampler.k": "2", "sampler.num_batches": "1", "train.epochs": "2",
    "train.eval_every": "1", "train.progress": "false", "train.tensorboard": "false", "train.plots": "false",
    "train.device": "cpu",  # CPU guarantees are what these tests check, GPU or not
}


def tiny_sets(out: Path, root: Path | None = None, **settings: object) -> list[str]:
    """``--set`` overrides of a tiny run writing to ``out`` (on the Market-layout set at ``root`` when given):
    ``BASE`` with ``settings`` laid over it, dots written ``__`` (``train__epochs=3``)."""
    sets = {**BASE, "train.out_dir": str(out), **({"data.root": str(root)} if root is not None else {})}
    sets.update({key.replace("__", "."): str(value) for key, value in settings.items()})
    return [f"{key}={value}" for key, value in sets.items()]
