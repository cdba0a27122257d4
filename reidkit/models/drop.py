"""Feature-map drop operations: STADB's self-thresholding drop and BDB's batch drop block.

Self-thresholding drop (STADB: "Self-Thresholding attention guided Adaptive DropBlock network for person
re-identification", §3.2.2): the attention map is the channel-wise mean of the feature map; positions whose
attention reaches a per-sample threshold are erased. Three ways to set the threshold (``threshold=``):

- ``"max"``: ``α · max(attention)``, the paper's rule as written;
- ``"minmax"``: ``min + α · (max − min)`` of each sample (the same rule on the map's own range, so a map that
  never reaches zero is not erased almost entirely);
- ``"quantile"``: the ``round((1 − α) · H·W)`` most attended positions (ties broken by position), so α = 0.8
  erases 20 % of every map, what §4.2 reports.

A mask never erases every position of a sample: a sample whose rule would erase all of them (a flat map:
``min ≥ α · max`` under ``"max"``, a constant map under ``"minmax"``, ``α < 1/(2·H·W)`` under ``"quantile"``)
is left whole for that step — a flat map has no discriminative region to take away, and an all-zero map would
only teach the head to classify zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor

THRESHOLDS = ("max", "minmax", "quantile")


def self_threshold_attention(x: Tensor) -> Tensor:
    """STADB's attention map: the channel-wise mean of ``x`` ``(N, C, H, W)`` → ``(N, H, W)``."""
    return x.mean(dim=1)


def self_threshold_mask(x: Tensor, alpha: float = 0.8, threshold: str = "quantile") -> Tensor:
    """STADB's drop mask ``(N, H, W)`` of ``x`` ``(N, C, H, W)``: 0 where a position is erased, 1 elsewhere.

    ``threshold`` is one of ``THRESHOLDS`` (see the module docstring); a sample whose rule would erase
    every position gets an all-ones mask. The mask is a constant (no gradient flows through it).
    """
    att = self_threshold_attention(x.detach()).float()
    n, h, w = att.shape
    flat = att.reshape(n, h * w)
    if threshold == "max":
        erase = flat >= alpha * flat.amax(dim=1, keepdim=True)
    elif threshold == "minmax":
        lo, hi = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
        erase = flat >= lo + alpha * (hi - lo)
    elif threshold == "quantile":
        k = round((1.0 - alpha) * h * w)
        order = torch.argsort(flat, dim=1, descending=True, stable=True)
        erase = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order[:, :k], True)
    else:
        raise ValueError(f"threshold must be one of {', '.join(THRESHOLDS)}, got {threshold!r}")
    erase &= ~erase.all(dim=1, keepdim=True)  # never every position: such a sample is left whole
    return (~erase).reshape(n, h, w).to(x.dtype)


def self_threshold_drop(x: Tensor, alpha: float = 0.8, threshold: str = "quantile") -> tuple[Tensor, Tensor]:
    """``(x × mask, mask)`` with ``self_threshold_mask``."""
    mask = self_threshold_mask(x, alpha, threshold)
    return x * mask[:, None], mask


def drop_statistics(mask: Tensor) -> dict[str, Tensor]:
    """What a batch of drop masks ``(N, H, W)`` erased: ``erased`` (mean share of positions erased per sample)
    and ``whole`` (share of samples with nothing erased), as 0-d float tensors."""
    kept = mask.detach().float().flatten(1)
    return {"erased": 1.0 - kept.mean(), "whole": (kept.amin(dim=1) > 0).float().mean()}


def batch_drop_mask(height: int, width: int, h_ratio: float = 0.33, w_ratio: float = 1.0,
                    generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> Tensor:
    """BDB's batch drop block ``(H, W)``: ones with one random ``round(h_ratio·H) × round(w_ratio·W)`` (at least
    1×1) rectangle zeroed, sized as BDB's public code rounds it; the caller applies the same mask to every
    sample of the batch.

    The position is drawn on the CPU from ``generator`` (the global RNG when ``None``).
    """
    rh = min(height, max(1, round(h_ratio * height)))
    rw = min(width, max(1, round(w_ratio * width)))
    sx = int(torch.randint(0, height - rh + 1, (1,), generator=generator).item())
    sy = int(torch.randint(0, width - rw + 1, (1,), generator=generator).item())
    mask = torch.ones(height, width, device=device, dtype=dtype)
    mask[sx:sx + rh, sy:sy + rw] = 0
    return mask


def batch_drop(x: Tensor, h_ratio: float = 0.33, w_ratio: float = 1.0,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``(x × block, block (N, H, W))`` where the block is the same for the whole batch."""
    mask = batch_drop_mask(x.shape[2], x.shape[3], h_ratio, w_ratio, generator, x.device, x.dtype)
    return x * mask, mask.expand(x.shape[0], -1, -1)
