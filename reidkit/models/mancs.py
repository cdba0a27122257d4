"""Mancs: Multi-task Attentional Network with Curriculum Sampling (mancs.txt §3, §4.3).

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

import os

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
from reidkit.models.attention import FAB
from reidkit.models.backbones.resnet import parse_backbone, resnet
from reidkit.models.base import ReIDModel, _classifier, _kaiming


class Mancs(ReIDModel):
    """Mancs. Options: ``backbone`` ("resnet50"), ``last_stride`` (2), ``pretrained`` (None), ``fab`` (True;
    False drops the FABs and the attention branch, Table 5), ``fab_reduction`` (16), ``prelu`` (True),
    ``rank_dim`` (2048; the paper does not give the ranking FC's size), ``cls_dim`` (2048),
    ``sampling`` ("curriculum" or "ohem"), ``margin`` (0.5), ``t0``/``t1``/``a``/``b`` (30, 60, 15, 0.001),
    ``focal`` (True; False = cross-entropy with ``label_smoothing``, default 0), ``gamma`` (2),
    ``focal_all_classes`` (False = eq. 8, true class only), ``w_rank``/``w_cls``/``w_att`` (1, 1, 0.2).
    With ``w_rank=0`` the ranking branch is off: it is not built, and the test embedding is the
    classification feature (``cls_dim``).

    The curriculum sampler draws from the global RNG (reproducible under ``torch.manual_seed``).
    """

    name = "mancs"
    input_size = (256, 128)

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", last_stride: int = 2,
                 pretrained: str | os.PathLike[str] | None = None, fab: bool = True, fab_reduction: int = 16,
                 prelu: bool = True, rank_dim: int = 2048, cls_dim: int = 2048, sampling: str = "curriculum",
                 margin: float = 0.5, t0: float = 30, t1: float = 60, a: float = 15, b: float = 0.001,
                 focal: bool = True, gamma: float = 2.0, focal_all_classes: bool = False,
                 label_smoothing: float = 0.0, w_rank: float = 1.0, w_cls: float = 1.0, w_att: float = 0.2):
        opts = {k: v for k, v in locals().items() if k not in ("self", "num_classes", "__class__")}
        if opts["pretrained"] is not None:
            opts["pretrained"] = str(opts["pretrained"])
        super().__init__(num_classes, opts)
        if sampling not in ("curriculum", "ohem"):
            raise ReidkitError(f"model 'mancs': option sampling={sampling!r} is not valid; expected curriculum or ohem")
        if not t1 > t0 > 0:
            raise ReidkitError(f"model 'mancs': options need t1 > t0 > 0, got t0={t0}, t1={t1}")
        self.backbone = resnet(parse_backbone(backbone), last_stride, pretrained)
        if prelu:
            last_block = self.backbone.layer4[-1]
            last_block.final_act = nn.PReLU()
        chans = self.backbone.stage_channels
        c = self.backbone.out_channels
        self.fabs = nn.ModuleList([FAB(ch, fab_reduction) for ch in chans[:3]]) if fab else None
        if float(w_rank) < 0 or float(w_cls) < 0 or float(w_att) < 0:
            raise ReidkitError("model 'mancs': loss weights w_rank, w_cls, w_att must be >= 0")
        self.rank_fc = nn.Linear(c, rank_dim) if float(w_rank) > 0 else None
        self.cls_fc = nn.Sequential(nn.Linear(c, cls_dim), nn.BatchNorm1d(cls_dim), nn.ReLU(inplace=True))
        self.classifier = _classifier(cls_dim, num_classes)
        self.att_classifier = _classifier(sum(chans[:3]), num_classes) if fab else None
        for mod in (self.rank_fc, self.cls_fc, *(self.fabs or [])):
            if mod is not None:
                mod.apply(_kaiming)
        self.embedding_dim = rank_dim if self.rank_fc is not None else cls_dim
        self.sampling, self.margin = sampling, float(margin)
        self.curriculum = {"t0": t0, "t1": t1, "a": a, "b": b}
        self.focal, self.gamma, self.focal_all_classes = focal, float(gamma), focal_all_classes
        self.label_smoothing = float(label_smoothing)
        self.weights = {"rank": float(w_rank), "cls": float(w_cls), "att": float(w_att)}

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
            if self.sampling == "curriculum":
                rank = curriculum_triplet_loss(outputs["rank_feat"], pids, epoch, margin=self.margin,
                                               **self.curriculum)
            else:
                rank = batch_hard_triplet_loss(outputs["rank_feat"], pids, self.margin)
            losses["rank"] = self.weights["rank"] * rank
        if self.focal:
            cls = sigmoid_focal_loss(outputs["cls_logits"], pids, self.gamma, self.focal_all_classes)
        else:
            cls = cross_entropy(outputs["cls_logits"], pids, self.label_smoothing)
        losses["cls"] = self.weights["cls"] * cls
        if "att_logits" in outputs:
            losses["att"] = self.weights["att"] * attention_bce(outputs["att_logits"], pids)
        return losses

    def _maps(self, x: Tensor) -> dict[str, Tensor]:
        fmap, masks = self._trunk(x)
        maps = {f"fab{i + 1}": m.float().mean(dim=1) for i, m in enumerate(masks)}
        maps["activation"] = fmap.float().mean(dim=1)
        return maps
