"""Sigmoid focal loss for classification (Mancs eq. 7–8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, gamma: float = 2.0, all_classes: bool = False) -> Tensor:
    """Mancs' focal loss.

    Default (``all_classes=False``), exactly eq. 8: ``p_i = sigmoid(logits[i, c_i])`` — only the true
    class's sigmoid probability — and ``L = -(1/N) Σ_i (1-p_i)^γ log p_i``. Note that this form gives no
    gradient to the other classes' logits.

    ``all_classes=True``: the RetinaNet form over every class, ``p_t = p`` for the true class and ``1-p``
    for the others, ``L = -(1/N) Σ_i Σ_c (1-p_t)^γ log p_t``.
    """
    x = logits.float()
    t = targets.long()
    if not all_classes:
        z = x.gather(1, t[:, None])[:, 0]
        logp = F.logsigmoid(z)
        return (-(1.0 - logp.exp()).pow(gamma) * logp).mean()
    onehot = torch.zeros_like(x).scatter_(1, t[:, None], 1.0)
    logpt = F.logsigmoid(torch.where(onehot > 0, x, -x))
    return (-(1.0 - logpt.exp()).pow(gamma) * logpt).sum(dim=1).mean()
