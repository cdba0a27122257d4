"""Feature-map drop operations: STADB's self-thresholding drop and BDB's batch drop block."""

from __future__ import annotations

import torch
from torch import Tensor


def self_threshold_attention(x: Tensor) -> Tensor:
    """STADB's attention map: the channel-wise mean of ``x`` ``(N, C, H, W)`` → ``(N, H, W)``."""
    return x.mean(dim=1)


def self_threshold_mask(x: Tensor, alpha: float = 0.8) -> Tensor:
    """STADB §3.2.2 drop mask ``(N, H, W)``: 1 where attention < α·max(attention) of its sample, else 0.

    The mask is a constant (no gradient flows through the threshold).
    """
    att = self_threshold_attention(x.detach())
    thr = alpha * att.flatten(1).amax(dim=1)
    return (att < thr[:, None, None]).to(x.dtype)


def self_threshold_drop(x: Tensor, alpha: float = 0.8) -> tuple[Tensor, Tensor]:
    """``(x × mask, mask)`` with :func:`self_threshold_mask`."""
    mask = self_threshold_mask(x, alpha)
    return x * mask[:, None], mask


def batch_drop_mask(height: int, width: int, h_ratio: float = 0.3, w_ratio: float = 1.0,
                    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """BDB's batch drop block ``(H, W)``: ones with one random ``⌊h_ratio·H⌋ × ⌊w_ratio·W⌋`` (at least 1×1)
    rectangle zeroed; the caller applies the same mask to every sample of the batch.

    The position is drawn on the CPU from ``generator`` (the global RNG when ``None``).
    """
    rh = min(height, max(1, int(h_ratio * height)))
    rw = min(width, max(1, int(w_ratio * width)))
    sx = int(torch.randint(0, height - rh + 1, (1,), generator=generator).item())
    sy = int(torch.randint(0, width - rw + 1, (1,), generator=generator).item())
    mask = torch.ones(height, width, device=device, dtype=dtype)
    mask[sx:sx + rh, sy:sy + rw] = 0
    return mask


def batch_drop(x: Tensor, h_ratio: float = 0.3, w_ratio: float = 1.0,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``(x × block, block (N, H, W))`` where the block is the same for the whole batch."""
    mask = batch_drop_mask(x.shape[2], x.shape[3], h_ratio, w_ratio, generator, x.device, x.dtype)
    return x * mask, mask.expand(x.shape[0], -1, -1)
