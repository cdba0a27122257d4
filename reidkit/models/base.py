"""The model contract every network follows (see ARCHITECTURE.md, "Model contract")."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from reidkit.errors import ReidkitError


@dataclasses.dataclass
class NoOptions:
    """A network without keyword options."""


class ReIDModel(nn.Module):
    """Base class of every reidkit network.

    A network declares its keyword options as a dataclass ``Options`` (every field with its paper default);
    ``ReIDModel.__init__(num_classes, **options)`` checks and records them once: ``self.opts`` (the dataclass)
    and ``self.options`` (a plain dict, so ``build(name, num_classes, **options)`` rebuilds the network).

    Attributes: ``name``, ``embedding_dim``, ``input_size`` (H, W), ``num_classes``, ``opts``, ``options``.
    Submodules whose attribute name contains ``classifier`` are training-only (left out of the inference
    parameter count).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    embedding_dim: int = 0
    input_size: tuple[int, int] = (256, 128)

    def __init__(self, num_classes: int, **options: Any):
        super().__init__()
        valid = [f.name for f in dataclasses.fields(self.Options)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ReidkitError(f"model {self.name!r} has no option {unknown[0]!r}; valid options: {', '.join(valid)}")
        if isinstance(options.get("pretrained"), os.PathLike):
            options["pretrained"] = os.fspath(options["pretrained"])
        self.num_classes = int(num_classes)
        self.opts = self.Options(**options)
        self.options: dict[str, Any] = dataclasses.asdict(self.opts)

    @property
    def ddp_find_unused_parameters(self) -> bool:
        """Whether some parameters may get no gradient in a training step (DDP must then look for them)."""
        return False

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:  # pragma: no cover - abstract
        """Eval: the ``(N, embedding_dim)`` embedding. Train: a dict of named outputs."""
        raise NotImplementedError

    def compute_losses(self, outputs: dict[str, Tensor], pids: Tensor, epoch: float = 0) -> dict[str, Tensor]:
        """Named, already weighted scalar losses from the train-mode ``outputs``."""
        raise NotImplementedError  # pragma: no cover

    def diagnostics(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Named 0-d statistics of one training step's ``outputs`` to log beside the losses (not optimised).

        The trainer averages each over the steps that report it; none by default.
        """
        return {}

    def _maps(self, x: Tensor) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def visual_maps(self, x: Tensor) -> dict[str, Tensor]:
        """Attention maps and drop masks ``(N, h, w)`` for pictures.

        Computed in eval mode under ``torch.no_grad()`` with the RNG state forked, so neither outputs,
        BatchNorm statistics, the train/eval mode nor the random stream change.
        """
        was_training = self.training
        devices = [x.device] if x.device.type == "cuda" else []
        try:
            self.eval()
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                maps = self._maps(x)
        finally:
            self.train(was_training)
        return {k: v.float() for k, v in maps.items()}

    def param_counts(self) -> dict[str, int]:
        """``{"total": all parameters, "inference": without the classifier layers}``."""
        total = sum(p.numel() for p in self.parameters())
        cls = sum(p.numel() for n, p in self.named_parameters() if "classifier" in n)
        return {"total": total, "inference": total - cls}


def check_choice(model: str, name: str, value: Any, allowed: tuple[Any, ...]) -> None:
    """A one-line ``ReidkitError`` unless option ``name`` of ``model`` is one of ``allowed``."""
    if value not in allowed:
        raise ReidkitError(f"model {model!r}: option {name}={value!r} is not valid; expected one of "
                           f"{', '.join(map(str, allowed))}")


def check_fraction(model: str, name: str, value: float) -> None:
    """A one-line ``ReidkitError`` unless option ``name`` of ``model`` lies in [0, 1]."""
    if not 0.0 <= float(value) <= 1.0:
        raise ReidkitError(f"model {model!r}: option {name}={value!r} must be within [0, 1]")
