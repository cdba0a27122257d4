"""The model contract every network follows (see ARCHITECTURE.md, "Model contract"), and shared heads."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _kaiming(m: nn.Module) -> None:
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out" if isinstance(m, nn.Conv2d) else "fan_in")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _classifier(dim: int, num_classes: int) -> nn.Linear:
    fc = nn.Linear(dim, num_classes)
    nn.init.normal_(fc.weight, std=0.001)
    nn.init.zeros_(fc.bias)
    return fc


class ReIDModel(nn.Module):
    """Base class of every reidkit network.

    Attributes: ``name``, ``embedding_dim``, ``input_size`` (H, W), ``num_classes`` and ``options`` (the
    keyword options it was built with, so ``build(name, num_classes, **options)`` rebuilds it).
    Submodules whose attribute name contains ``classifier`` are training-only (left out of the
    inference parameter count).
    """

    name: str = ""
    embedding_dim: int = 0
    input_size: tuple[int, int] = (256, 128)

    def __init__(self, num_classes: int, options: dict[str, Any]):
        super().__init__()
        self.num_classes = int(num_classes)
        self.options = dict(options)

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


class GlobalHead(nn.Module):
    """BDB/STADB global branch: GAP → 1×1 conv ``in→dim`` + BN + ReLU → (BN neck) → classifier.

    Returns ``(feature, logits)``; ``feature`` is the reduced vector before the neck BN (the triplet
    feature) and ``logits`` come from the neck output (or the feature when ``bnneck`` is off).
    """

    def __init__(self, in_channels: int, dim: int, num_classes: int, bnneck: bool = True):
        super().__init__()
        self.reduction = nn.Sequential(nn.Conv2d(in_channels, dim, 1), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))
        self.neck = nn.BatchNorm1d(dim) if bnneck else None
        self.classifier = _classifier(dim, num_classes)
        self.reduction.apply(_kaiming)
        if self.neck is not None:
            _kaiming(self.neck)

    def forward(self, fmap: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(feature, neck feature, logits)``."""
        feat = self.reduction(F.adaptive_avg_pool2d(fmap, 1)).flatten(1)
        neck = feat if self.neck is None else self.neck(feat)
        return feat, neck, self.classifier(neck)


class PartHead(nn.Module):
    """BDB/STADB second-branch head: GMP → Linear ``in→dim`` + BN + ReLU → (BN neck) → classifier.

    ``split_bn=True`` gives the drop path its own BatchNorms (``drop_bn``, ``drop_neck``: own statistics and
    affine parameters) beside the shared Linear and classifier, so the statistics the test-time path is
    normalised with come from that path alone. Returns ``(pooled, feature, neck feature, logits)``.
    """

    def __init__(self, in_channels: int, dim: int, num_classes: int, bnneck: bool = True, split_bn: bool = False):
        super().__init__()
        self.reduction = nn.Sequential(nn.Linear(in_channels, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True))
        self.neck = nn.BatchNorm1d(dim) if bnneck else None
        self.classifier = _classifier(dim, num_classes)
        self.drop_bn = nn.BatchNorm1d(dim) if split_bn else None
        self.drop_neck = nn.BatchNorm1d(dim) if split_bn and bnneck else None
        self.reduction.apply(_kaiming)
        for bn in (self.neck, self.drop_bn, self.drop_neck):
            if bn is not None:
                _kaiming(bn)

    def forward(self, fmap: Tensor, drop_path: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(pooled, feature, neck feature, logits)``; ``drop_path`` selects the drop path's BatchNorms."""
        pooled = F.adaptive_max_pool2d(fmap, 1).flatten(1)
        if drop_path and self.drop_bn is not None:
            fc, _, act = self.reduction
            feat = act(self.drop_bn(fc(pooled)))
            neck_bn = self.drop_neck
        else:
            feat = self.reduction(pooled)
            neck_bn = self.neck
        neck = feat if neck_bn is None else neck_bn(feat)
        return pooled, feat, neck, self.classifier(neck)
