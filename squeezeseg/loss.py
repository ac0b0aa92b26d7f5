"""Segmentation losses of SqueezeSeg (reference/models.md 2.5) and SqueezeSegV2 (3.2), as pure functions.

Both are per-pixel losses over the final network output (after the CRF when there is one), weighted by
the class weight of the pixel's label, counted only where the mask is set, summed, divided by the number
of valid pixels and multiplied by `coef` (the references use CLS_LOSS_COEF = 15). Weight decay is the
optimiser's job, not the loss's.

An all-empty mask gives a loss of exactly 0 (the denominator is clamped to 1) instead of NaN, and labels
on empty pixels are ignored whatever their value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _prepare(logits: Tensor, labels: Tensor, mask: Tensor, class_weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Labels with empty pixels set to 0, the per-pixel weight w[label] * mask, and the clamped mask count."""
    if logits.dim() != 4 or labels.shape != (logits.shape[0], *logits.shape[2:]) or mask.shape != labels.shape:
        raise ValueError(f"expected logits (B, K, H, W) with labels and mask (B, H, W); got {tuple(logits.shape)}, "
                         f"{tuple(labels.shape)}, {tuple(mask.shape)}")
    if class_weights.shape != (logits.shape[1],):
        raise ValueError(f"class_weights must have one value per class ({logits.shape[1]}), "
                         f"got shape {tuple(class_weights.shape)}")
    labels = labels.masked_fill(~mask, 0)  # (B, H, W) int64, 0 where empty
    weight = class_weights.to(logits.dtype)[labels] * mask  # (B, H, W) w[label] on valid pixels, 0 where empty
    count = mask.sum().clamp(min=1).to(logits.dtype)  # number of valid pixels, at least 1
    return labels, weight, count


def weighted_cross_entropy(logits: Tensor, labels: Tensor, mask: Tensor, class_weights: Tensor,
                           coef: float = 1.0) -> Tensor:
    """SqueezeSeg's loss: sum_i w[y_i] mask_i (-log softmax(logits_i)[y_i]) / sum_i mask_i * coef.

    logits: (B, K, H, W); labels: (B, H, W) int64; mask: (B, H, W) bool; class_weights: (K,). Returns a scalar.
    """
    labels, weight, count = _prepare(logits, labels, mask, class_weights)
    nll = F.cross_entropy(logits, labels, reduction="none")  # (B, H, W)
    return (nll * weight).sum() / count * coef


def focal_loss(logits: Tensor, labels: Tensor, mask: Tensor, class_weights: Tensor, gamma: float = 2.0,
               coef: float = 1.0, eps: float = 1e-12) -> Tensor:
    """SqueezeSegV2's focal loss (Lin et al. 2017), exactly as coded:

    p = softmax(logits) * mask + eps, p_t = p[y];  loss = sum_i w[y_i] mask_i (1 - p_t)^gamma (-log p_t)
    / sum_i mask_i * coef. The eps bounds the loss of a pixel at -log(eps) ~ 27.6. Empty pixels add exactly 0
    (also with eps = 0, where the reference's 0 * log(0) would be NaN).
    """
    labels, weight, count = _prepare(logits, labels, mask, class_weights)
    prob = torch.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)  # (B, H, W) p of the label
    p_t = torch.where(mask, prob + eps, 1.0)  # the reference's prob * mask + eps where valid; 1 (loss 0) where empty
    return (weight * (1.0 - p_t).pow(gamma) * -torch.log(p_t)).sum() / count * coef
