"""BDB: Batch DropBlock network (Dai et al., "Batch DropBlock Network for Person Re-identification and
Beyond", ICCV 2019, arXiv:1811.07130), the baseline STADB improves on.

Structure as BDB's published code: ResNet-50 with last stride 1; global branch GAP → 1×1 conv
2048→512 (+bias) + BN + ReLU → classifier (512-d triplet feature); part branch: an extra Bottleneck
2048→2048 → batch drop block (one random full-width rectangle of round(0.33·H) rows, the same for the
whole batch: the public code's setting for person data; 0.5 is its setting for other data) → GMP
→ Linear 2048→1024 + BN + ReLU (1024-d triplet feature) → classifier. Test embedding: concat(512,
1024) = 1536-d. 32.28M parameters at 751 classes (the paper: 32.27M).
"""

from __future__ import annotations

import dataclasses

from reidkit.models.two_branch import TwoBranchNet, TwoBranchOptions


@dataclasses.dataclass
class BDBOptions:
    """BDB's options: ``backbone`` ("resnet50"), ``last_stride`` (1), ``pretrained`` (None), ``drop_height``
    (0.33: the public code's ratio for person data, rounded to whole rows; the paper's text says 0.3, the code
    uses 0.5 for other data), ``drop_width`` (1.0 = full width), ``global_dim`` (512), ``neck_dim`` (1024),
    ``bnneck`` (False as BDB's code; True adds a BN before each classifier), ``label_smoothing`` (0.1),
    ``triplet_margin`` (None = soft margin), ``part_triplet`` ("reduced": the 1024-d feature, as BDB's code,
    or "pooled"), ``embed`` ("before"), ``fuse`` ("concat" as BDB's code, or "normalized": each branch
    L2-normalised before concatenating)."""

    backbone: str = "resnet50"
    last_stride: int = 1
    pretrained: str | None = None
    drop_height: float = 0.33
    drop_width: float = 1.0
    global_dim: int = 512
    neck_dim: int = 1024
    bnneck: bool = False
    label_smoothing: float = 0.1
    triplet_margin: float | None = None
    part_triplet: str = "reduced"
    embed: str = "before"
    fuse: str = "concat"


class BDB(TwoBranchNet):
    """BDB; options: ``BDBOptions``."""

    name = "bdb"
    Options = BDBOptions
    input_size = (384, 128)

    def structure(self) -> TwoBranchOptions:
        """Global branch + bottleneck part branch that always takes the batch drop block; no attention."""
        return TwoBranchOptions(branches="global+drop", part_block="bottleneck", drop="batch_drop",
                                attention=None, rho=1.0, **dataclasses.asdict(self.opts))
