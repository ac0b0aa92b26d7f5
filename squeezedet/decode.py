"""Box decoding in torch, for training: the loss decodes predicted deltas with gradients (squeezedet.loss).

Inference decodes, scores and suppresses in numpy (squeeze.detection: the same decoding, top-N, and NMS), so an
exported model needs no torch; `decode_boxes` here is that decoding written for autograd, and
tests/test_squeezedet_model.py checks the two agree.

Decoding (SqueezeDet section 3.2): an anchor [acx, acy, aw, ah] and deltas [dx, dy, dw, dh] give the box
cx = acx + dx * aw, cy = acy + dy * ah, w = aw * safe_exp(dw), h = ah * safe_exp(dh), clipped to the image
[0, W - 1] x [0, H - 1] (pixel centres, docs/conventions.md). `safe_exp` is e^t up to a threshold (1) and the
tangent line above it, so an untrained head cannot overflow the box size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "box_iou",
    "cxcywh_to_xyxy",
    "decode_boxes",
    "paired_iou",
    "safe_exp",
    "xyxy_to_cxcywh",
]

# ------------------------------------------------------------------------------------------------------ boxes
def safe_exp(x: Tensor, thresh: float = 1.0) -> Tensor:
    """e^x for x <= thresh, e^thresh * (x - thresh + 1) above: continuous, with slope e^thresh (reference util).

    The exponential branch is evaluated on min(x, thresh), so neither the value nor the gradient overflows.
    """
    slope = math.exp(thresh)
    return torch.where(x > thresh, slope * (x - thresh + 1.0), torch.exp(x.clamp(max=thresh)))


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(..., 4) [cx, cy, w, h] -> (..., 4) [left, top, right, bottom] = cx -+ w / 2, cy -+ h / 2."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(..., 4) [left, top, right, bottom] -> (..., 4) [cx, cy, w, h] (continuous: w = right - left, no +1)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack((0.5 * (x1 + x2), 0.5 * (y1 + y2), x2 - x1, y2 - y1), dim=-1)


def decode_boxes(deltas: Tensor, anchors: Tensor, image_w: float, image_h: float,
                 exp_thresh: float = 1.0) -> Tensor:
    """Deltas (..., 4) [dx, dy, dw, dh] on anchors (..., 4) [cx, cy, w, h] (broadcast) -> (..., 4) xyxy boxes.

    Boxes are clipped to [0, image_w - 1] x [0, image_h - 1] as the reference does (so a box may collapse to
    zero width at a border).
    """
    cx = anchors[..., 0] + deltas[..., 0] * anchors[..., 2]
    cy = anchors[..., 1] + deltas[..., 1] * anchors[..., 3]
    half_w = 0.5 * anchors[..., 2] * safe_exp(deltas[..., 2], exp_thresh)
    half_h = 0.5 * anchors[..., 3] * safe_exp(deltas[..., 3], exp_thresh)
    x_max, y_max = float(image_w) - 1.0, float(image_h) - 1.0
    return torch.stack(((cx - half_w).clamp(0.0, x_max), (cy - half_h).clamp(0.0, y_max),
                        (cx + half_w).clamp(0.0, x_max), (cy + half_h).clamp(0.0, y_max)), dim=-1)


def _area(boxes: Tensor) -> Tensor:
    return (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)


def box_iou(a: Tensor, b: Tensor, eps: float = 0.0) -> Tensor:
    """(N, 4) and (M, 4) xyxy boxes -> (N, M) IoU, continuous areas (no +1); 0 where the union is 0.

    Built from per-axis overlaps with in-place steps: five (N, M) buffers fewer than the (N, M, 2) form, which
    matters for target assignment (a batch of boxes against 16,848 anchors).
    """
    iw = torch.minimum(a[:, None, 2], b[None, :, 2]).sub_(torch.maximum(a[:, None, 0], b[None, :, 0])).clamp_(min=0)
    ih = torch.minimum(a[:, None, 3], b[None, :, 3]).sub_(torch.maximum(a[:, None, 1], b[None, :, 1])).clamp_(min=0)
    inter = iw.mul_(ih)  # (N, M)
    union = (_area(a)[:, None] + _area(b)[None, :]).sub_(inter).add_(eps)
    return inter.div_(union.clamp_(min=torch.finfo(union.dtype).tiny))  # inter is 0 where union is 0


def paired_iou(a: Tensor, b: Tensor, eps: float = 0.0) -> Tensor:
    """(..., 4) and (..., 4) xyxy boxes -> (...) IoU of each pair a[i], b[i]; 0 where the union is 0."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = _area(a) + _area(b) - inter + eps
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)  # inter is 0 where union is 0
