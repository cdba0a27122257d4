"""Attention blocks for STADB's second branch: CBAM (STADB eq. 1–4), SE, triplet attention, SRM (STADB Table 8).

Every block maps ``(N, C, H, W)`` to the same shape. ``attend(x)`` returns the output and the
block's spatial map ``(N, H, W)`` where it has one (``None`` otherwise), for pictures.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.errors import ReidkitError

# CBAM style -> (spatial kernel size, BN after the spatial conv); default channel reduction of each
CBAM_STYLES: dict[str, tuple[int, bool]] = {"reference": (7, True), "stadb_code": (3, False)}
CBAM_REDUCTION = {"reference": 16, "stadb_code": 4}


def channel_max(x: Tensor) -> Tensor:
    """The maximum over dim 1, kept: ``(N, 1, ...)``.

    ``max(...).values``, not ``amax``: under ``torch.compile`` with bf16 autocast, inductor computes a fused
    ``amax`` in float32 while its backward compares it with the bf16-rounded input, finds no element equal
    to the maximum and divides by that count of zero: every gradient of a compiled STADB was NaN (seen on
    an H200 with torch 2.11, narrowed down on CPU with torch 2.13). ``max`` routes the gradient through its
    index instead.
    """
    return x.max(dim=1, keepdim=True).values


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``Mc = σ(MLP(avgpool F) + MLP(maxpool F))`` with a shared MLP, hidden C/r (eq. 1)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        """The channel map ``(N, C, 1, 1)``."""
        avg = self.mlp(F.adaptive_avg_pool2d(x, 1))
        mx = self.mlp(F.adaptive_max_pool2d(x, 1))
        return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: ``Ms = σ(conv_k×k([mean_c F, max_c F]))`` (eq. 3), optionally with batch norm.

    ``bn=True`` (CBAM's reference design: k = 7, conv without bias, then BN): without the BN the pooled
    descriptors of a ResNet layer4 map can saturate the sigmoid. ``bn=False`` is STADB's public code
    (k = 3, conv with bias, no BN).
    """

    def __init__(self, kernel_size: int = 7, bn: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=not bn)
        self.bn = nn.BatchNorm2d(1) if bn else None

    def forward(self, x: Tensor) -> Tensor:
        """The spatial map ``(N, 1, H, W)``."""
        desc = torch.cat([x.mean(dim=1, keepdim=True), channel_max(x)], dim=1)
        gate = self.conv(desc)
        return torch.sigmoid(gate if self.bn is None else self.bn(gate))


class CBAM(nn.Module):
    """Channel then spatial attention: ``Fc = Mc ⊙ F``, ``Fsc = Ms ⊙ Fc`` (eq. 2, 4); each half switchable.

    ``style``: ``"reference"`` (CBAM's own design: spatial gate 7×7 conv + BN) or ``"stadb_code"`` (STADB's
    public code: 3×3 conv with bias, no BN); the channel MLP's reduction is ``reduction`` either way.
    """

    def __init__(self, channels: int, reduction: int = 16, use_ca: bool = True, use_sa: bool = True,
                 style: str = "reference"):
        super().__init__()
        if style not in CBAM_STYLES:
            raise ReidkitError(f"unknown CBAM style {style!r}; expected one of {', '.join(CBAM_STYLES)}")
        self.ca = ChannelAttention(channels, reduction) if use_ca else None
        self.sa = SpatialAttention(*CBAM_STYLES[style]) if use_sa else None

    def attend(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(attended map, spatial attention (N, H, W) or None)``."""
        if self.ca is not None:
            x = x * self.ca(x)
        smap = None
        if self.sa is not None:
            s = self.sa(x)
            x = x * s
            smap = s[:, 0]
        return x, smap

    def forward(self, x: Tensor) -> Tensor:
        """The attended map, same shape as ``x``."""
        return self.attend(x)[0]


class SE(nn.Module):
    """Squeeze-and-excitation: ``F · σ(W2 ReLU(W1 avgpool F))`` with hidden C/r."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def attend(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(attended map, None)`` (SE has no spatial map)."""
        w = torch.sigmoid(self.fc(x.mean(dim=(2, 3))))
        return x * w[:, :, None, None], None

    def forward(self, x: Tensor) -> Tensor:
        """The re-weighted map."""
        return self.attend(x)[0]


class _ZPoolGate(nn.Module):
    """Z-pool (max and mean over dim 1) → k×k conv → BN → sigmoid, a ``(N, 1, A, B)`` gate."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: Tensor) -> Tensor:
        z = torch.cat([channel_max(x), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.bn(self.conv(z)))


class TripletAttention(nn.Module):
    """Triplet attention: three Z-pool gates over (C,W), (H,C) and (H,W) interactions, averaged."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.cw = _ZPoolGate(kernel_size)  # rotate so H is pooled: (N, H, C, W)
        self.hc = _ZPoolGate(kernel_size)  # rotate so W is pooled: (N, W, H, C)
        self.hw = _ZPoolGate(kernel_size)  # plain spatial gate: C pooled

    def attend(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(attended map, the (H, W) branch's gate (N, H, W))``."""
        xr = x.permute(0, 2, 1, 3)
        o1 = (xr * self.cw(xr)).permute(0, 2, 1, 3)
        xr = x.permute(0, 3, 2, 1)
        o2 = (xr * self.hc(xr)).permute(0, 3, 2, 1)
        g = self.hw(x)
        o3 = x * g
        return (o1 + o2 + o3) / 3.0, g[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        """The attended map."""
        return self.attend(x)[0]


class SRM(nn.Module):
    """Style-based recalibration: per-channel (mean, std) → channel-wise FC → BN → sigmoid gate."""

    def __init__(self, channels: int):
        super().__init__()
        self.cfc = nn.Conv1d(channels, channels, kernel_size=2, groups=channels, bias=False)
        self.bn = nn.BatchNorm1d(channels)

    def attend(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(attended map, None)``."""
        flat = x.flatten(2)
        mean = flat.mean(dim=2)
        std = (flat.var(dim=2, unbiased=False) + 1e-5).sqrt()
        style = torch.stack([mean, std], dim=2)  # (N, C, 2)
        g = torch.sigmoid(self.bn(self.cfc(style)))  # (N, C, 1)
        return x * g[..., None], None

    def forward(self, x: Tensor) -> Tensor:
        """The re-calibrated map."""
        return self.attend(x)[0]


ATTENTIONS = ("cbam", "se", "triplet", "srm")


def build_attention(name: str, channels: int, reduction: int = 16, use_ca: bool = True,
                    use_sa: bool = True, cbam_style: str = "reference") -> nn.Module:
    """One of ``ATTENTIONS``; ``use_ca``/``use_sa`` switch CBAM's channel/spatial halves, ``cbam_style`` its
    design (see ``CBAM``)."""
    if name == "cbam":
        return CBAM(channels, reduction, use_ca=use_ca, use_sa=use_sa, style=cbam_style)
    if name == "se":
        return SE(channels, reduction)
    if name == "triplet":
        return TripletAttention()
    if name == "srm":
        return SRM(channels)
    raise ReidkitError(f"unknown attention {name!r}; expected one of {', '.join(ATTENTIONS)}")
