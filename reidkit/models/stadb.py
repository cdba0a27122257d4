"""STADB: Self-Thresholding attention guided Adaptive DropBlock network (the STADB paper, §3), and the
two-branch network it shares with BDB.

Structure (ResNet-50, last stride 1, input 384×128):

- global branch: GAP → 1×1 conv 2048→512 + BN + ReLU (the 512-d *triplet feature*) → BN neck →
  classifier (the neck only feeds the classifier, BNNeck style);
- second branch: an extra Bottleneck 2048→2048 over the layer4 map; in training ONE of, per
  iteration (global RNG, so ``torch.manual_seed`` makes it reproducible): the self-thresholding drop
  with probability ρ, or the attention module (CBAM by default) with probability 1−ρ; then GMP →
  Linear 2048→1024 + BN + ReLU (the 1024-d triplet feature) → BN neck → classifier;
- test embedding: concat(global 512, second branch 1024 with attention and no drop) = 1536-d, both
  taken before the neck BN (``embed="after"`` uses the neck outputs instead).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor, nn

from reidkit.errors import ReidkitError
from reidkit.losses import batch_hard_triplet_loss, cross_entropy
from reidkit.models.attention import CBAM_REDUCTION, CBAM_STYLES, build_attention
from reidkit.models.backbones.resnet import make_bottleneck, parse_backbone, resnet
from reidkit.models.base import GlobalHead, PartHead, ReIDModel, _kaiming
from reidkit.models.drop import (
    THRESHOLDS,
    batch_drop,
    batch_drop_mask,
    drop_statistics,
    self_threshold_attention,
    self_threshold_drop,
    self_threshold_mask,
)

BRANCHES = ("global", "global+drop", "global+attention", "all")
DROPS = ("self_threshold", "batch_drop")
PART_BLOCKS = ("bottleneck", "none")
PART_BNS = ("shared", "split")


def _check(name: str, value: Any, allowed: tuple[Any, ...], model: str) -> None:
    if value not in allowed:
        raise ReidkitError(f"model {model!r}: option {name}={value!r} is not valid; expected one of "
                           f"{', '.join(map(str, allowed))}")


def _prob(name: str, value: float, model: str) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ReidkitError(f"model {model!r}: option {name}={value!r} must be within [0, 1]")


class TwoBranchNet(ReIDModel):
    """The global + second-branch network shared by STADB and BDB (see the module docstring)."""

    def _setup(self, *, backbone: str, last_stride: int, pretrained: str | os.PathLike[str] | None, branches: str,
               drop: str, attention: str | None, use_ca: bool, use_sa: bool, alpha: float, rho: float,
               reduction: int | None, drop_height: float, drop_width: float, global_dim: int, neck_dim: int,
               bnneck: bool, label_smoothing: float, triplet_margin: float | None, part_triplet: str,
               embed: str, threshold: str = "max", part_block: str = "bottleneck", cbam: str = "reference",
               part_bn: str = "shared") -> None:
        m = self.name
        _check("branches", branches, BRANCHES, m)
        _check("drop", drop, DROPS, m)
        _check("part_triplet", part_triplet, ("reduced", "pooled"), m)
        _check("embed", embed, ("before", "after"), m)
        _check("threshold", threshold, THRESHOLDS, m)
        _check("part_block", part_block, PART_BLOCKS, m)
        _check("cbam", cbam, tuple(CBAM_STYLES), m)
        _check("part_bn", part_bn, PART_BNS, m)
        if reduction is not None and int(reduction) < 1:
            raise ReidkitError(f"model {m!r}: option reduction={reduction!r} must be a positive integer")
        for key, val in (("alpha", alpha), ("rho", rho), ("drop_height", drop_height), ("drop_width", drop_width),
                         ("label_smoothing", label_smoothing)):
            _prob(key, val, m)
        self.branches, self.drop_kind, self.alpha, self.rho = branches, drop, float(alpha), float(rho)
        self.drop_height, self.drop_width = float(drop_height), float(drop_width)
        self.label_smoothing, self.triplet_margin = float(label_smoothing), triplet_margin
        self.part_triplet, self.embed, self.threshold = part_triplet, embed, threshold
        self.backbone = resnet(parse_backbone(backbone), last_stride, pretrained)
        c = self.backbone.out_channels
        self.global_head = GlobalHead(c, global_dim, self.num_classes, bnneck)
        self.has_part = branches != "global"
        self.has_drop = branches in ("global+drop", "all")
        self.has_attention = branches in ("global+attention", "all")
        self.res_part: nn.Module = nn.Identity()
        if self.has_part:
            if part_block == "bottleneck":
                self.res_part = make_bottleneck(c, c // 4)
                self.res_part.apply(_kaiming)
            split = part_bn == "split" and self.has_drop and self.has_attention
            self.part_head = PartHead(c, neck_dim, self.num_classes, bnneck, split_bn=split)
        self.attention: nn.Module | None = None
        if self.has_attention:
            _check("attention", attention, ("cbam", "se", "triplet", "srm"), m)
            r = int(reduction) if reduction is not None else CBAM_REDUCTION[cbam] if attention == "cbam" else 16
            self.attention = build_attention(str(attention), c, r, use_ca=use_ca, use_sa=use_sa, cbam_style=cbam)
        self.embedding_dim = global_dim + (neck_dim if self.has_part else 0)

    # -- pieces -------------------------------------------------------------------------------------------
    def _drop(self, p: Tensor) -> tuple[Tensor, Tensor]:
        if self.drop_kind == "self_threshold":
            return self_threshold_drop(p, self.alpha, self.threshold)
        return batch_drop(p, self.drop_height, self.drop_width)

    def _attend(self, p: Tensor) -> Tensor:
        return p if self.attention is None else self.attention(p)

    def choose_drop(self) -> bool:
        """Whether this training iteration takes the drop branch (probability ρ when both branches exist)."""
        if self.has_drop and self.has_attention:
            return bool(torch.rand(()) < self.rho)
        return self.has_drop

    # -- contract ----------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """Eval: ``(N, embedding_dim)``. Train: ``global_feat``, ``global_logits`` and, with a second branch,
        ``part_feat``, ``part_logits``, ``used_drop`` (0-d bool) and ``drop_mask`` ``(N, h, w)`` (ones
        when the attention path ran)."""
        fmap = self.backbone(x)
        g_feat, g_neck, g_logits = self.global_head(fmap)
        if not self.training:
            parts = [g_feat if self.embed == "before" else g_neck]
            if self.has_part:
                _, p_feat, p_neck, _ = self.part_head(self._attend(self.res_part(fmap)))
                parts.append(p_feat if self.embed == "before" else p_neck)
            return torch.cat(parts, dim=1)
        out = {"global_feat": g_feat, "global_logits": g_logits}
        if self.has_part:
            p = self.res_part(fmap)
            use_drop = self.choose_drop()
            if use_drop:
                p, mask = self._drop(p)
            else:
                p = self._attend(p)
                mask = torch.ones(p.shape[0], p.shape[2], p.shape[3], device=p.device, dtype=p.dtype)
            pooled, p_feat, _, p_logits = self.part_head(p, drop_path=use_drop)
            out["part_feat"] = pooled if self.part_triplet == "pooled" else p_feat
            out["part_logits"] = p_logits
            out["used_drop"] = torch.tensor(use_drop)
            out["drop_mask"] = mask
        return out

    def compute_losses(self, outputs: dict[str, Tensor], pids: Tensor, epoch: float = 0) -> dict[str, Tensor]:
        """Cross-entropy (label smoothing ε) + batch-hard triplet (soft margin unless ``triplet_margin``) on
        each branch: ``global_ce``, ``global_triplet``, ``part_ce``, ``part_triplet`` (eq. 5–8)."""
        pids = pids.to(outputs["global_logits"].device)
        losses = {
            "global_ce": cross_entropy(outputs["global_logits"], pids, self.label_smoothing),
            "global_triplet": batch_hard_triplet_loss(outputs["global_feat"], pids, self.triplet_margin),
        }
        if "part_logits" in outputs:
            losses["part_ce"] = cross_entropy(outputs["part_logits"], pids, self.label_smoothing)
            losses["part_triplet"] = batch_hard_triplet_loss(outputs["part_feat"], pids, self.triplet_margin)
        return losses

    def diagnostics(self, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """On drop-path steps: ``drop/erased`` (mean share of map positions erased per sample) and ``drop/whole``
        (share of samples left whole, e.g. because the threshold would have erased every position)."""
        if "drop_mask" not in outputs or not bool(outputs["used_drop"]):
            return {}
        return {f"drop/{k}": v for k, v in drop_statistics(outputs["drop_mask"]).items()}

    def _maps(self, x: Tensor) -> dict[str, Tensor]:
        fmap = self.backbone(x)
        maps = {"activation": fmap.float().mean(dim=1)}
        if not self.has_part:
            return maps
        p = self.res_part(fmap)
        maps["sta_attention"] = self_threshold_attention(p.float())
        if self.has_drop:
            if self.drop_kind == "self_threshold":
                maps["drop_mask"] = self_threshold_mask(p.float(), self.alpha, self.threshold)
            else:
                block = batch_drop_mask(p.shape[2], p.shape[3], self.drop_height, self.drop_width, device=p.device)
                maps["drop_mask"] = block.expand(p.shape[0], -1, -1)
        if self.attention is not None:
            attended, smap = self.attention.attend(p)  # type: ignore[operator]
            if smap is not None:
                maps["spatial_attention"] = smap
            maps["attended_activation"] = attended.float().mean(dim=1)
        return maps


class STADB(TwoBranchNet):
    """STADB. Options (all keyword):

    - ``backbone`` resnet18/34/50/101 (``"resnet50"``), ``last_stride`` (1), ``pretrained`` (None, "imagenet"
      or a torchvision checkpoint path);
    - ``branches``: ``"global"``, ``"global+drop"``, ``"global+attention"`` or ``"all"`` (Table 6);
    - ``part_block``: ``"bottleneck"`` (BDB's extra ResNet bottleneck in front of the drop/attention module)
      or ``"none"`` (the module takes the backbone's map, as §3.2.2 says and STADB's public code does);
    - ``drop``: ``"self_threshold"`` (STA) or ``"batch_drop"`` (BDB's random block); ``use_sta=False`` is the
      same as ``drop="batch_drop"`` (Table 7's BDB row);
    - ``threshold``: how the self-thresholding drop sets its threshold from ``alpha`` — ``"max"`` (α·max, the
      paper's literal rule), ``"minmax"`` (α of the sample's min–max range) or ``"quantile"`` (erase the
      top 1−α share of positions); see :mod:`reidkit.models.drop`;
    - ``attention``: ``"cbam"``, ``"se"``, ``"triplet"``, ``"srm"`` (Table 8); ``use_ca``/``use_sa`` switch
      CBAM's channel/spatial halves (Table 7); ``cbam``: ``"reference"`` (spatial gate 7×7 conv + BN, r = 16)
      or ``"stadb_code"`` (3×3 conv with bias, no BN, r = 4, as STADB's public code); ``reduction`` r (None:
      the CBAM style's, 16 for SE);
    - ``alpha`` threshold factor (0.8), ``rho`` drop-branch probability (0.25), ``drop_height``/``drop_width``
      for ``batch_drop`` (0.33, 1.0: BDB's public code for person data);
    - ``part_bn``: ``"shared"`` (one set of part-head BatchNorms for the drop and attention paths) or
      ``"split"`` (the drop path gets its own, so the test-time path is normalised with its own statistics);
    - ``global_dim`` (512), ``neck_dim`` (1024: second-branch feature size), ``bnneck`` (True);
    - ``label_smoothing`` ε (0.1 as BDB; eq. 6 is plain CE, ε=0), ``triplet_margin`` (None = soft margin);
    - ``part_triplet``: triplet on the ``"reduced"`` 1024-d feature (eq. 8: "the last FC layer") or the
      ``"pooled"`` 2048-d vector (BDB's code); ``embed``: features ``"before"`` or ``"after"`` the neck BN.
    """

    name = "stadb"
    input_size = (384, 128)

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | os.PathLike[str] | None = None, branches: str = "all",
                 part_block: str = "bottleneck", drop: str = "self_threshold", threshold: str = "max",
                 attention: str = "cbam", cbam: str = "reference", use_sta: bool = True, use_sa: bool = True,
                 use_ca: bool = True, alpha: float = 0.8, rho: float = 0.25, reduction: int | None = None,
                 drop_height: float = 0.33, drop_width: float = 1.0, part_bn: str = "shared", global_dim: int = 512,
                 neck_dim: int = 1024, bnneck: bool = True, label_smoothing: float = 0.1,
                 triplet_margin: float | None = None, part_triplet: str = "reduced", embed: str = "before"):
        opts = {k: v for k, v in locals().items() if k not in ("self", "num_classes", "__class__")}
        if opts["pretrained"] is not None:
            opts["pretrained"] = str(opts["pretrained"])
        super().__init__(num_classes, opts)
        self._setup(backbone=backbone, last_stride=last_stride, pretrained=pretrained, branches=branches,
                    drop=drop if use_sta else "batch_drop", attention=attention, use_ca=use_ca, use_sa=use_sa,
                    alpha=alpha, rho=rho, reduction=reduction, drop_height=drop_height, drop_width=drop_width,
                    global_dim=global_dim, neck_dim=neck_dim, bnneck=bnneck, label_smoothing=label_smoothing,
                    triplet_margin=triplet_margin, part_triplet=part_triplet, embed=embed, threshold=threshold,
                    part_block=part_block, cbam=cbam, part_bn=part_bn)
