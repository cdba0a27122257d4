"""Pure loss functions (tensors in, scalar tensor out) used by the models' ``compute_losses``."""

from reidkit.losses.attention_bce import attention_bce
from reidkit.losses.cross_entropy import cross_entropy
from reidkit.losses.focal import sigmoid_focal_loss
from reidkit.losses.triplet import (
    batch_hard_triplet_loss,
    curriculum_mu_sigma,
    curriculum_sample,
    curriculum_triplet_loss,
    euclidean_dist,
)

__all__ = [
    "attention_bce",
    "batch_hard_triplet_loss",
    "cross_entropy",
    "curriculum_mu_sigma",
    "curriculum_sample",
    "curriculum_triplet_loss",
    "euclidean_dist",
    "sigmoid_focal_loss",
]
