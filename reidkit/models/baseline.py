"""The plain global baseline: ResNet-50 + GAP + BN neck + classifier, CE + batch-hard triplet (reidkit's
reference beside the papers' rows; STADB Table 6's "Global" row is ``stadb`` with ``branches="global"``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.losses import batch_hard_triplet_loss, cross_entropy
from reidkit.models.backbones.resnet import parse_backbone, resnet
from reidkit.models.base import ReIDModel, check_choice
from reidkit.models.layers import classifier


@dataclasses.dataclass
class BaselineOptions:
    """The baseline's options: ``backbone`` ("resnet50"), ``last_stride`` (1, like STADB's global-only row),
    ``pretrained`` (None), ``bnneck`` (True), ``label_smoothing`` (0.1), ``triplet_margin`` (None = soft
    margin), ``embed`` ("before" or "after" the neck BN)."""

    backbone: str = "resnet50"
    last_stride: int = 1
    pretrained: str | None = None
    bnneck: bool = True
    label_smoothing: float = 0.1
    triplet_margin: float | None = None
    embed: str = "before"


class GlobalBaseline(ReIDModel):
    """ResNet + GAP (the 2048-d triplet feature and test embedding) → BN neck → classifier; options:
    ``BaselineOptions``."""

    name = "baseline"
    Options = BaselineOptions
    input_size = (384, 128)

    def __init__(self, num_classes: int, **options: Any):
        super().__init__(num_classes, **options)
        o = self.opts
        check_choice(self.name, "embed", o.embed, ("before", "after"))
        self.backbone = resnet(parse_backbone(o.backbone), o.last_stride, o.pretrained)
        c = self.backbone.out_channels
        self.neck = nn.BatchNorm1d(c) if o.bnneck else None
        self.classifier = classifier(c, num_classes, init="bdb")  # as BDB/STADB's code, trained alike
        self.embedding_dim = c

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """Eval: the GAP feature ``(N, C)``. Train: ``global_feat`` and ``global_logits``."""
        fmap = self.backbone(x)
        feat = F.adaptive_avg_pool2d(fmap, 1).flatten(1)
        neck = feat if self.neck is None else self.neck(feat)
        if not self.training:
            return feat if self.opts.embed == "before" else neck
        return {"global_feat": feat, "global_logits": self.classifier(neck)}

    def compute_losses(self, outputs: dict[str, Tensor], pids: Tensor, epoch: float = 0) -> dict[str, Tensor]:
        """``global_ce`` (label smoothing ε) and ``global_triplet`` (batch hard)."""
        pids = pids.to(outputs["global_logits"].device)
        return {"global_ce": cross_entropy(outputs["global_logits"], pids, float(self.opts.label_smoothing)),
                "global_triplet": batch_hard_triplet_loss(outputs["global_feat"], pids, self.opts.triplet_margin)}

    def _maps(self, x: Tensor) -> dict[str, Tensor]:
        return {"activation": self.backbone(x).float().mean(dim=1)}
