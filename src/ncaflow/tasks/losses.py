"""Classification losses beside plain cross-entropy: the focal loss (Lin et al., 2017).

The focal loss scales each term of the cross-entropy by ``(1 - p_t) ** gamma``, where
``p_t`` is the probability the model gives the true class: a confidently right example
(``p_t`` near 1) counts little, a wrong one almost fully. ``gamma = 0`` is the
cross-entropy itself (``train.focal_gamma``, config/README.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["classification_loss"]


def classification_loss(
    logits: Tensor, target: Tensor, *, multilabel: bool, gamma: float = 0.0
) -> Tensor:
    """Element-wise loss, unreduced.

    Single-label: logits (N, K, ...) and class indices (N, ...) -> (N, ...);
    multi-label: logits and 0/1 targets of one shape -> that shape (per class).
    gamma > 0 weighs each term by ``(1 - p_t) ** gamma``; gamma = 0 gives exactly the
    cross-entropy (binary cross-entropy for multi-label) that PyTorch computes.
    """
    if multilabel:
        ce = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none")
    else:
        ce = F.cross_entropy(logits, target, reduction="none")
    if gamma == 0.0:
        return ce
    p_true = torch.exp(-ce)  # the probability of the true class (of the true 0/1 per class)
    return (1.0 - p_true).pow(gamma) * ce
