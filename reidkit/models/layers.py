"""Initialisation helpers shared by the networks' heads."""

from __future__ import annotations

from torch import nn


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


def classifier(dim: int, num_classes: int) -> nn.Linear:
    """An identity classifier ``dim → num_classes``: weights N(0, 0.001²), zero bias."""
    fc = nn.Linear(dim, num_classes)
    nn.init.normal_(fc.weight, std=0.001)
    nn.init.zeros_(fc.bias)
    return fc
