"""Initialisation helpers shared by the networks' heads.

Two schemes, each from a named source:

- ``bdb_init`` and ``classifier(..., init="bdb")``: the authors' code of BDB (daizuozhuo/batch-dropblock-network,
  ``models/networks.py``: ``weights_init_kaiming``), which STADB's public code copies; used by BDB, STADB and the
  global baseline. Its classifiers are initialised with the same function (Kaiming, fan-out), not with its
  ``weights_init_classifier`` (N(0, 0.001²)), which only its unused ``ResNetBuilder`` calls.
- ``kaiming_init`` and ``classifier(..., init="small")``: torchvision's ResNet convention (convolutions fan-out,
  BatchNorm 1/0) with N(0, 0.001²) classifiers (the BNNeck baseline of Luo et al.); used by Mancs, whose
  authors published no code.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

CLASSIFIER_INITS = ("bdb", "small")


def kaiming_init(m: nn.Module) -> None:
    """Kaiming-normal weights for convolutions (fan-out) and linear layers (fan-in), zero biases; BatchNorm
    weight 1 and bias 0. Meant for ``module.apply(kaiming_init)``."""
    if isinstance(m, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out" if isinstance(m, nn.Conv2d) else "fan_in")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def bdb_init(m: nn.Module) -> None:
    """BDB's and STADB's code (``weights_init_kaiming``): Kaiming-normal (a = 0) weights, fan-out for linear
    layers and fan-in for convolutions, zero biases; affine BatchNorm weight N(1, 0.02²) and bias 0. Meant for
    ``module.apply(bdb_init)``."""
    if isinstance(m, nn.Linear):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def classifier(dim: int, num_classes: int, init: Literal["bdb", "small"] = "small") -> nn.Linear:
    """An identity classifier ``dim → num_classes`` with a zero bias; weights N(0, 0.001²) (``"small"``) or, as
    BDB's and STADB's code, Kaiming-normal fan-out, i.e. N(0, 2/num_classes) (``"bdb"``)."""
    fc = nn.Linear(dim, num_classes)
    if init == "bdb":
        bdb_init(fc)
    else:
        nn.init.normal_(fc.weight, std=0.001)
        nn.init.zeros_(fc.bias)
    return fc
