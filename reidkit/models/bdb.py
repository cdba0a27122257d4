"""BDB: Batch DropBlock network (Dai et al., ICCV 2019), the baseline STADB improves on.

Structure as BDB's published code: ResNet-50 with last stride 1; global branch GAP → 1×1 conv
2048→512 (+bias) + BN + ReLU → classifier (512-d triplet feature); part branch: an extra Bottleneck
2048→2048 → batch drop block (one random full-width rectangle of round(0.33·H) rows, the same for the
whole batch: the public code's setting for person data; 0.5 is its setting for other data) → GMP
→ Linear 2048→1024 + BN + ReLU (1024-d triplet feature) → classifier. Test embedding: concat(512,
1024) = 1536-d. 32.28M parameters at 751 classes (the paper: 32.27M).
"""

from __future__ import annotations

import os

from reidkit.models.stadb import TwoBranchNet


class BDB(TwoBranchNet):
    """BDB. Options: ``backbone`` ("resnet50"), ``last_stride`` (1), ``pretrained`` (None), ``drop_height``
    (0.33: the public code's ratio for person data, rounded to whole rows; the paper's text says 0.3, the code
    uses 0.5 for other data), ``drop_width`` (1.0 = full width), ``global_dim`` (512),
    ``neck_dim`` (1024), ``bnneck`` (False as BDB's code; True adds a BN before each classifier),
    ``label_smoothing`` (0.1), ``triplet_margin`` (None = soft margin), ``part_triplet`` ("reduced": the 1024-d
    feature, as BDB's code, or "pooled"), ``embed`` ("before")."""

    name = "bdb"
    input_size = (384, 128)

    def __init__(self, num_classes: int, *, backbone: str = "resnet50", last_stride: int = 1,
                 pretrained: str | os.PathLike[str] | None = None, drop_height: float = 0.33,
                 drop_width: float = 1.0, global_dim: int = 512, neck_dim: int = 1024, bnneck: bool = False,
                 label_smoothing: float = 0.1, triplet_margin: float | None = None, part_triplet: str = "reduced",
                 embed: str = "before"):
        opts = {k: v for k, v in locals().items() if k not in ("self", "num_classes", "__class__")}
        if opts["pretrained"] is not None:
            opts["pretrained"] = str(opts["pretrained"])
        super().__init__(num_classes, opts)
        self._setup(backbone=backbone, last_stride=last_stride, pretrained=pretrained, branches="global+drop",
                    drop="batch_drop", attention=None, use_ca=False, use_sa=False, alpha=0.8, rho=1.0,
                    reduction=16, drop_height=drop_height, drop_width=drop_width, global_dim=global_dim,
                    neck_dim=neck_dim, bnneck=bnneck, label_smoothing=label_smoothing,
                    triplet_margin=triplet_margin, part_triplet=part_triplet, embed=embed)
