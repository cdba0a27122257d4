"""Mancs (Wang et al., "Mancs: A Multi-task Attentional Network with Curriculum Sampling for Person
Re-identification", ECCV 2018, §3, §4.3).

ResNet-50 (torchvision strides; ``last_stride`` 2), input 256×128, the last conv block's final ReLU
replaced by PReLU; a FAB after layer1, layer2 and layer3 (``F_o = F·M + F``). Three branches on the
shared trunk:

- ranking: GAP → own Linear 2048→``rank_dim`` → curriculum-sampling triplet (margin 0.5) or OHEM;
  this feature is the test embedding — unless the ranking branch is off (``w_rank=0``, the "f_cls" rows
  of Table 5), when the classification feature is;
- classification: GAP → Linear 2048→2048 + BN + ReLU (the classification feature ``f_cls``) → classifier,
  sigmoid focal loss γ=2 (eq. 7–8: the true class's sigmoid only, by default) or cross-entropy
  (``focal=False``);
- attention (deep supervision): each FAB mask spatially averaged, concatenated (256+512+1024) →
  Linear → per-class sigmoid, multi-label BCE (eq. 9–10).

Loss = 1·rank + 1·cls + 0.2·att.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.errors import ReidkitError
from reidkit.losses import (
    attention_bce,
    batch_hard_triplet_loss,
    cross_entropy,
    curriculum_triplet_loss,
    sigmoid_focal_loss,
)
from reidkit.models.backbones.resnet import parse_backbone, resnet
from reidkit.models.base import ReIDModel
from reidkit.models.layers import classifier, kaiming_init


class FAB(nn.Module):
    """Fully attentional block: ``M = σ(conv1×1(ReLU(conv1×1(F))))``, ``F_o = F·M + F`` (eq. 1–2)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze = nn.Conv2d(channels, hidden, 1)
        self.excite = nn.Conv2d(hidden, channels, 1)

    def mask(self, x: Tensor) -> Tensor:
        """The attention mask ``M`` (same shape as ``x``)."""
        return torch.sigmoid(self.excite(F.relu(self.squeeze(x))))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(F·M + F, M)``."""
        m = self.mask(x)
        return x * m + x, m


@dataclasses.dataclass
class MancsOptions:
    """Mancs' options: ``backbone`` ("resnet50"), ``last_stride`` (2), ``pretrained`` (None), ``fab`` (True;
    False drops the FABs and the attention branch, Table 5), ``fab_reduction`` (16), ``prelu`` (True),
    ``rank_dim`` (2048; the paper does not give the ranking FC's size), ``cls_dim`` (2048),
    ``sampling`` ("curriculum" or "ohem"), ``margin`` (0.5), ``t0``/``t1``/``a``/``b`` (30, 60, 15, 0.001),
    ``focal`` (True; False = cross-entropy with ``label_smoothing``, default 0), ``gamma`` (2),
    ``focal_all_classes`` (True: the RetinaNet focal loss §3.4 cites, a sigmoid per class over all classes;
    False: eq. 8 as printed, the true class's sigmoid only), ``w_rank``/``w_cls``/``w_att`` (1, 1, 0.2).
    With ``w_rank=0`` the ranking branch is off: it is not built, and the test embedding is the
    classification feature (``cls_dim``)."""

    backbone: str = "resnet50"
    last_stride: int = 2
    pretrained: str | None = None
    fab: bool = True
    fab_reduction: int = 16
    prelu: bool = True
    rank_dim: int = 2048
    cls_dim: int = 2048
    sampling: str = "curriculum"
    margin: float = 0.5
    t0: float = 30
    t1: float = 60
    a: float = 15
    b: float = 0.001
    focal: bool = True
    gamma: float = 2.0
    focal_all_classes: bool = True
    label_smoothing: float = 0.0
    w_rank: float = 1.0
    w_cls: float = 1.0
    w_att: float = 0.2


class Mancs(ReIDModel):
    """Mancs; options: ``MancsOptions``. The curriculum sampler draws from the global RNG (reproducible
    under ``torch.manual_seed``)."""

    name = "mancs"
    Options = MancsOptions
    input_size = (256, 128)

    def __init__(self, num_classes: int, **options: Any):
        super().__init__(num_classes, **options)
        o = self.opts
        if o.sampling not in ("curriculum", "ohem"):
            raise ReidkitError(f"model 'mancs': option sampling={o.sampling!r} is not valid; expected curriculum "
                               "or ohem")
        if not o.t1 > o.t0 > 0:
            raise ReidkitError(f"model 'mancs': options need t1 > t0 > 0, got t0={o.t0}, t1={o.t1}")
        if min(float(o.w_rank), float(o.w_cls), float(o.w_att)) < 0:
            raise ReidkitError("model 'mancs': loss weights w_rank, w_cls, w_att must be >= 0")
        self.backbone = resnet(parse_backbone(o.backbone), o.last_stride, o.pretrained)
        if o.prelu:
            self.backbone.layer4[-1].final_act = nn.PReLU()
        chans = self.backbone.stage_channels
        c = self.backbone.out_channels
        self.fabs = nn.ModuleList([FAB(ch, o.fab_reduction) for ch in chans[:3]]) if o.fab else None
        self.rank_fc = nn.Linear(c, o.rank_dim) if float(o.w_rank) > 0 else None
        self.cls_fc = nn.Sequential(nn.Linear(c, o.cls_dim), nn.BatchNorm1d(o.cls_dim), nn.ReLU(inplace=True))
        self.classifier = classifier(o.cls_dim, num_classes)
        self.att_classifier = classifier(sum(chans[:3]), num_classes) if o.fab else None
        for mod in (self.rank_fc, self.cls_fc, *(self.fabs or [])):
            if mod is not None:
                mod.apply(kaiming_init)
        self.embedding_dim = o.rank_dim if self.rank_fc is not None else o.cls_dim
        self.curriculum = {"t0": o.t0, "t1": o.t1, "a": o.a, "b": o.b}
        self.weights = {"rank": float(o.w_rank), "cls": float(o.w_cls), "att": float(o.w_att)}

    def _trunk(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.backbone.stem(x)
        masks: list[Tensor] = []
        for i, layer in enumerate((self.backbone.layer1, self.backbone.layer2, self.backbone.layer3)):
            x = layer(x)
            if self.fabs is not None:
                x, m = self.fabs[i](x)
                masks.append(m)
        return self.backbone.layer4(x), masks

    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """Eval: the ranking feature ``(N, rank_dim)`` (the classification feature ``(N, cls_dim)`` when the
        ranking branch is off). Train: ``cls_logits``, ``rank_feat`` when the ranking branch is on and, with
        FABs, ``att_logits``."""
        fmap, masks = self._trunk(x)
        pooled = F.adaptive_avg_pool2d(fmap, 1).flatten(1)
        if not self.training:
            return self.cls_fc(pooled) if self.rank_fc is None else self.rank_fc(pooled)
        out = {"cls_logits": self.classifier(self.cls_fc(pooled))}
        if self.rank_fc is not None:
            out["rank_feat"] = self.rank_fc(pooled)
        if self.att_classifier is not None:
            att = torch.cat([m.mean(dim=(2, 3)) for m in masks], dim=1)
            out["att_logits"] = self.att_classifier(att)
        return out

    def compute_losses(self, outputs: dict[str, Tensor], pids: Tensor, epoch: float = 0) -> dict[str, Tensor]:
        """``rank`` (curriculum triplet at ``epoch``, or OHEM hinge; absent when the ranking branch is off),
        ``cls`` (focal or CE) and ``att`` (BCE), each already multiplied by its weight."""
        pids = pids.to(outputs["cls_logits"].device)
        losses: dict[str, Tensor] = {}
        if "rank_feat" in outputs:
            o = self.opts
            if o.sampling == "curriculum":
                rank = curriculum_triplet_loss(outputs["rank_feat"], pids, epoch, margin=float(o.margin),
                                               **self.curriculum)
            else:
                rank = batch_hard_triplet_loss(outputs["rank_feat"], pids, float(o.margin))
            losses["rank"] = self.weights["rank"] * rank
        if self.opts.focal:
            cls = sigmoid_focal_loss(outputs["cls_logits"], pids, float(self.opts.gamma), self.opts.focal_all_classes)
        else:
            cls = cross_entropy(outputs["cls_logits"], pids, float(self.opts.label_smoothing))
        losses["cls"] = self.weights["cls"] * cls
        if "att_logits" in outputs:
            losses["att"] = self.weights["att"] * attention_bce(outputs["att_logits"], pids)
        return losses

    def _maps(self, x: Tensor) -> dict[str, Tensor]:
        fmap, masks = self._trunk(x)
        maps = {f"fab{i + 1}": m.float().mean(dim=1) for i, m in enumerate(masks)}
        maps["activation"] = fmap.float().mean(dim=1)
        return maps
