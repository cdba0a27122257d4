"""Cross-entropy with label smoothing (BDB's ``CrossEntropyLabelSmooth``; STADB eq. 6 when ε = 0)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def cross_entropy(logits: Tensor, targets: Tensor, epsilon: float = 0.1) -> Tensor:
    """Mean over the batch of ``-Σ_k q_k log softmax(logits)_k`` with ``q = (1-ε)·onehot + ε/K``.

    Args:
        logits: ``(N, K)`` class scores (any float dtype; computed in float32).
        targets: ``(N,)`` int64 class indices in ``[0, K)``.
        epsilon: label smoothing ε (0 gives plain cross-entropy).
    """
    logp = F.log_softmax(logits.float(), dim=1)
    nll = -logp.gather(1, targets.long()[:, None])[:, 0]
    smooth = -logp.mean(dim=1)
    return ((1.0 - epsilon) * nll + epsilon * smooth).mean()
