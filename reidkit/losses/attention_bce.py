"""Mancs' attention-branch deep supervision: multi-label binary cross-entropy (eq. 9–10)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def attention_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """``-(1/(N·C)) Σ_i Σ_c [y_ic log σ(z_ic) + (1-y_ic) log(1-σ(z_ic))]`` with ``y_ic = 1`` iff ``c = targets[i]``.

    Args:
        logits: ``(N, C)`` per-class scores of the attention branch.
        targets: ``(N,)`` int64 identity indices in ``[0, C)``.
    """
    x = logits.float()
    y = torch.zeros_like(x).scatter_(1, targets.long()[:, None], 1.0)
    return F.binary_cross_entropy_with_logits(x, y, reduction="mean")
