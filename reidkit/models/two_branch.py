"""The global + second-branch network that BDB (Dai et al., "Batch DropBlock Network for Person
Re-identification and Beyond", ICCV 2019, arXiv:1811.07130) introduced and STADB builds on.

Structure (ResNet-50, last stride 1, input 384×128):

- global branch: GAP → 1×1 conv 2048→512 + BN + ReLU (the 512-d *triplet feature*) → (BN neck) →
  classifier;
- second branch: an optional extra ResNet bottleneck 2048→2048 over the layer4 map (``part_block``); in
  training ONE of, per iteration (global RNG, so ``torch.manual_seed`` makes it reproducible): a drop —
  STADB's self-thresholding drop or BDB's batch drop block — with probability ρ, or an attention module
  (CBAM by default) with probability 1−ρ; then GMP → Linear 2048→1024 + BN + ReLU (the 1024-d triplet
  feature) → (BN neck) → classifier;
- test embedding: concat(global 512, second branch 1024 with attention and no drop) = 1536-d, both
  taken before the neck BN (``embed="after"`` uses the neck outputs instead), unnormalised as both codes
  (``fuse="normalized"`` L2-normalises each branch first, so neither dominates the distance);
- loss: cross-entropy (label smoothing ε) + batch-hard triplet on each branch.

``TwoBranchOptions`` holds every switch; ``reidkit.models.stadb.STADB`` exposes them all,
``reidkit.models.bdb.BDB`` fixes the ones that make it BDB.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.errors import ReidkitError
from reidkit.losses import batch_hard_triplet_loss, cross_entropy
from reidkit.models.attention import ATTENTIONS, CBAM_REDUCTION, CBAM_STYLES, build_attention
from reidkit.models.backbones.resnet import make_bottleneck, parse_backbone, resnet
from reidkit.models.base import ReIDModel, check_choice, check_fraction
from reidkit.models.drop import (
    THRESHOLDS,
    batch_drop,
    batch_drop_mask,
    drop_statistics,
    self_threshold_attention,
    self_threshold_drop,
    self_threshold_mask,
)
from reidkit.models.layers import bdb_init, classifier

BRANCHES = ("global", "global+drop", "global+attention", "all")
DROPS = ("self_threshold", "batch_drop")
PART_BLOCKS = ("bottleneck", "none")
PART_BNS = ("shared", "split")
FUSIONS = ("concat", "normalized")


@dataclasses.dataclass
class TwoBranchOptions:
    """Every switch of the two-branch network (defaults: STADB's; see ``docs/models.md`` for the reasons).

    - ``backbone`` resnet18/34/50/101, ``last_stride`` (1), ``pretrained`` (None, "imagenet" or a torchvision
      checkpoint path);
    - ``branches``: ``"global"``, ``"global+drop"``, ``"global+attention"`` or ``"all"`` (STADB Table 6);
    - ``part_block``: ``"none"`` (the module takes the backbone's map, as STADB §3.2.2 says and its public
      code's forward does) or ``"bottleneck"`` (BDB's extra ResNet bottleneck ``res_part2`` in front of it);
    - ``drop``: ``"self_threshold"`` (STADB's adaptive drop) or ``"batch_drop"`` (BDB's random block);
    - ``threshold``: how the self-thresholding drop sets its threshold from ``alpha`` — ``"max"`` (α·max, the
      paper's literal rule), ``"minmax"`` (α of the sample's min–max range) or ``"quantile"`` (erase the
      top 1−α share of positions); see ``reidkit.models.drop``;
    - ``attention``: ``"cbam"``, ``"se"``, ``"triplet"``, ``"srm"`` (STADB Table 8); ``use_ca``/``use_sa``
      switch CBAM's channel/spatial halves (Table 7); ``cbam``: ``"reference"`` (spatial gate 7×7 conv + BN,
      r = 16) or ``"stadb_code"`` (3×3 conv with bias, no BN, r = 4, as STADB's public code); ``reduction``
      r (None: the CBAM style's, 16 for SE);
    - ``alpha`` threshold factor (0.8, Table 11), ``rho`` drop-path probability (0.25, Table 10),
      ``drop_height``/``drop_width`` of ``batch_drop`` (0.33, 1.0: BDB's public code for person data);
    - ``part_bn``: ``"shared"`` (one set of part-head BatchNorms for the drop and attention paths) or
      ``"split"`` (the drop path gets its own, so the test-time path is normalised with its own statistics);
    - ``global_dim`` (512), ``neck_dim`` (1024: second-branch feature size), ``bnneck`` (True);
    - ``label_smoothing`` ε (0.1 as BDB; STADB eq. 6 is plain CE, ε = 0), ``triplet_margin`` (None = soft
      margin, eq. 7);
    - ``fuse``: the test embedding is the plain concatenation of the branches (``"concat"``, both codes) or of
      each branch L2-normalised (``"normalized"``);
    - ``part_triplet``: triplet on the ``"reduced"`` 1024-d feature (eq. 8: "the last FC layer", and what BDB's
      code feeds its triplet loss, though it names the pooled vector ``triplet_feature``) or the ``"pooled"``
      2048-d max-pooled vector; ``embed``: features ``"before"`` or ``"after"`` the neck BN.
    """

    backbone: str = "resnet50"
    last_stride: int = 1
    pretrained: str | None = None
    branches: str = "all"
    part_block: str = "none"
    drop: str = "self_threshold"
    threshold: str = "quantile"
    attention: str | None = "cbam"
    cbam: str = "reference"
    use_sa: bool = True
    use_ca: bool = True
    alpha: float = 0.8
    rho: float = 0.25
    reduction: int | None = None
    drop_height: float = 0.33
    drop_width: float = 1.0
    part_bn: str = "shared"
    global_dim: int = 512
    neck_dim: int = 1024
    bnneck: bool = True
    label_smoothing: float = 0.1
    triplet_margin: float | None = None
    part_triplet: str = "reduced"
    embed: str = "before"
    fuse: str = "concat"


class GlobalHead(nn.Module):
    """Global branch: GAP → 1×1 conv ``in→dim`` + BN + ReLU → (BN neck) → classifier.

    Returns ``(feature, neck feature, logits)``; ``feature`` is the reduced vector before the neck BN (the
    triplet feature) and ``logits`` come from the neck output (or the feature when ``bnneck`` is off).
    """

    def __init__(self, in_channels: int, dim: int, num_classes: int, bnneck: bool = True):
        super().__init__()
        self.reduction = nn.Sequential(nn.Conv2d(in_channels, dim, 1), nn.BatchNorm2d(dim), nn.ReLU(inplace=True))
        self.neck = nn.BatchNorm1d(dim) if bnneck else None  # PyTorch's BatchNorm init, as STADB's global_bn
        self.classifier = classifier(dim, num_classes, init="bdb")
        self.reduction.apply(bdb_init)

    def forward(self, fmap: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(feature, neck feature, logits)``."""
        feat = self.reduction(F.adaptive_avg_pool2d(fmap, 1)).flatten(1)
        neck = feat if self.neck is None else self.neck(feat)
        return feat, neck, self.classifier(neck)


class PartHead(nn.Module):
    """Second-branch head: GMP → Linear ``in→dim`` + BN + ReLU → (BN neck) → classifier.

    ``split_bn=True`` gives the drop path its own BatchNorms (``drop_bn``, ``drop_neck``: own statistics and
    affine parameters) beside the shared Linear and classifier, so the statistics the test-time path is
    normalised with come from that path alone. Returns ``(pooled, feature, neck feature, logits)``.
    """

    def __init__(self, in_channels: int, dim: int, num_classes: int, bnneck: bool = True, split_bn: bool = False):
        super().__init__()
        self.reduction = nn.Sequential(nn.Linear(in_channels, dim), nn.BatchNorm1d(dim), nn.ReLU(inplace=True))
        self.neck = nn.BatchNorm1d(dim) if bnneck else None
        self.classifier = classifier(dim, num_classes, init="bdb")
        self.drop_bn = nn.BatchNorm1d(dim) if split_bn else None
        self.drop_neck = nn.BatchNorm1d(dim) if split_bn and bnneck else None
        self.reduction.apply(bdb_init)
        if self.drop_bn is not None:
            bdb_init(self.drop_bn)  # the drop path's copy of the reduction's BatchNorm

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


class TwoBranchNet(ReIDModel):
    """The network of the module docstring, built from ``structure`` (the ``TwoBranchOptions`` a
    subclass makes of its own options)."""

    def __init__(self, num_classes: int, **options: Any):
        super().__init__(num_classes, **options)
        o = self.structure()
        m = self.name
        for key, allowed in (("branches", BRANCHES), ("drop", DROPS), ("part_triplet", ("reduced", "pooled")),
                             ("embed", ("before", "after")), ("threshold", THRESHOLDS),
                             ("part_block", PART_BLOCKS), ("cbam", tuple(CBAM_STYLES)), ("part_bn", PART_BNS),
                             ("fuse", FUSIONS)):
            check_choice(m, key, getattr(o, key), allowed)
        for key in ("alpha", "rho", "drop_height", "drop_width", "label_smoothing"):
            check_fraction(m, key, getattr(o, key))
        if o.reduction is not None and int(o.reduction) < 1:
            raise ReidkitError(f"model {m!r}: option reduction={o.reduction!r} must be a positive integer")
        self.cfg = o
        self.backbone = resnet(parse_backbone(o.backbone), o.last_stride, o.pretrained)
        c = self.backbone.out_channels
        self.global_head = GlobalHead(c, o.global_dim, self.num_classes, o.bnneck)
        self.has_part = o.branches != "global"
        self.has_drop = o.branches in ("global+drop", "all")
        self.has_attention = o.branches in ("global+attention", "all")
        self.res_part: nn.Module = nn.Identity()
        if self.has_part:
            if o.part_block == "bottleneck":  # PyTorch's default init, as BDB's res_part2
                self.res_part = make_bottleneck(c, c // 4)
            split = o.part_bn == "split" and self.has_drop and self.has_attention
            self.part_head = PartHead(c, o.neck_dim, self.num_classes, o.bnneck, split_bn=split)
        self.attention: nn.Module | None = None
        if self.has_attention:
            check_choice(m, "attention", o.attention, ATTENTIONS)
            r = int(o.reduction) if o.reduction is not None else CBAM_REDUCTION[o.cbam] if o.attention == "cbam" \
                else 16
            self.attention = build_attention(str(o.attention), c, r, use_ca=o.use_ca, use_sa=o.use_sa,
                                             cbam_style=o.cbam)
        self.embedding_dim = o.global_dim + (o.neck_dim if self.has_part else 0)

    def structure(self) -> TwoBranchOptions:
        """The full set of switches this network is built with (from ``self.opts``)."""
        raise NotImplementedError  # pragma: no cover - abstract

    @property
    def ddp_find_unused_parameters(self) -> bool:
        """Both paths exist: a step runs one, the other's parameters get no gradient."""
        return self.has_drop and self.has_attention

    # -- pieces -------------------------------------------------------------------------------------------
    def _drop(self, p: Tensor) -> tuple[Tensor, Tensor]:
        if self.cfg.drop == "self_threshold":
            return self_threshold_drop(p, self.cfg.alpha, self.cfg.threshold)
        return batch_drop(p, self.cfg.drop_height, self.cfg.drop_width)

    def _attend(self, p: Tensor) -> Tensor:
        return p if self.attention is None else self.attention(p)

    def choose_drop(self) -> bool:
        """Whether this training iteration takes the drop path (probability ρ when both paths exist)."""
        if self.has_drop and self.has_attention:
            return bool(torch.rand(()) < self.cfg.rho)
        return self.has_drop

    # -- contract ----------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor | dict[str, Tensor]:
        """Eval: ``(N, embedding_dim)``. Train: ``global_feat``, ``global_logits`` and, with a second branch,
        ``part_feat``, ``part_logits``, ``used_drop`` (0-d bool) and ``drop_mask`` ``(N, h, w)`` (ones
        when the attention path ran)."""
        before = self.cfg.embed == "before"
        fmap = self.backbone(x)
        g_feat, g_neck, g_logits = self.global_head(fmap)
        if not self.training:
            parts = [g_feat if before else g_neck]
            if self.has_part:
                _, p_feat, p_neck, _ = self.part_head(self._attend(self.res_part(fmap)))
                parts.append(p_feat if before else p_neck)
            if self.cfg.fuse == "normalized":
                parts = [F.normalize(f, dim=1) for f in parts]
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
            out["part_feat"] = pooled if self.cfg.part_triplet == "pooled" else p_feat
            out["part_logits"] = p_logits
            out["used_drop"] = torch.tensor(use_drop)
            out["drop_mask"] = mask
        return out

    def compute_losses(self, outputs: dict[str, Tensor], pids: Tensor, epoch: float = 0) -> dict[str, Tensor]:
        """Cross-entropy (label smoothing ε) + batch-hard triplet (soft margin unless ``triplet_margin``) on
        each branch: ``global_ce``, ``global_triplet``, ``part_ce``, ``part_triplet`` (STADB eq. 5–8)."""
        pids = pids.to(outputs["global_logits"].device)
        eps, margin = self.cfg.label_smoothing, self.cfg.triplet_margin
        losses = {
            "global_ce": cross_entropy(outputs["global_logits"], pids, eps),
            "global_triplet": batch_hard_triplet_loss(outputs["global_feat"], pids, margin),
        }
        if "part_logits" in outputs:
            losses["part_ce"] = cross_entropy(outputs["part_logits"], pids, eps)
            losses["part_triplet"] = batch_hard_triplet_loss(outputs["part_feat"], pids, margin)
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
            if self.cfg.drop == "self_threshold":
                maps["drop_mask"] = self_threshold_mask(p.float(), self.cfg.alpha, self.cfg.threshold)
            else:
                block = batch_drop_mask(p.shape[2], p.shape[3], self.cfg.drop_height, self.cfg.drop_width,
                                        device=p.device)
                maps["drop_mask"] = block.expand(p.shape[0], -1, -1)
        if self.attention is not None:
            attended, smap = self.attention.attend(p)  # type: ignore[operator]
            if smap is not None:
                maps["spatial_attention"] = smap
            maps["attended_activation"] = attended.float().mean(dim=1)
        return maps
