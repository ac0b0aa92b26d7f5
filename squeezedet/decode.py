"""From ConvDet outputs to detections: delta decoding, scoring, top-N, per-class NMS (reference/models.md 1.3, 1.6).

Decoding (SqueezeDet section 3.2): an anchor [acx, acy, aw, ah] and deltas [dx, dy, dw, dh] give the box
cx = acx + dx * aw, cy = acy + dy * ah, w = aw * safe_exp(dw), h = ah * safe_exp(dh), clipped to the image
[0, W - 1] x [0, H - 1] (pixel centres, docs/conventions.md). `safe_exp` is e^t up to a threshold (1) and the
tangent line above it, so an untrained head cannot overflow the box size.

Scoring: P(class) x confidence per anchor; each anchor keeps its best class. Post-processing per image: the
`top_n` best anchors, then the probability threshold, then per-class NMS at IoU > `nms_thresh`, then
`final_threshold`. Only the top-N boxes are decoded: the rest could never survive, so the result is the same
as decoding all anchors first, as the reference does.

Two NMS rules:
- "standard": greedy NMS; a box suppressed by a better one no longer suppresses anything.
- "reference": the released `util.nms`, which does not skip suppressed boxes, so a suppressed box still
  suppresses lower-scored ones (each box survives only if *no* better box of its class overlaps it).
Both are computed on the (M, M) IoU matrix without a Python loop over boxes (see `nms`).
A third, not in the reference, for evaluation:
- "soft": Gaussian Soft-NMS (Bodla et al. 2017, eq. 3): instead of removing a box that overlaps a better one,
  its score is multiplied by exp(-IoU^2 / sigma), and boxes whose score falls to prob_thresh or below are
  dropped. A second hypothesis for an object survives at a low score, which can turn an object whose best box
  misses the 0.7 IoU of KITTI cars into a late true positive; see `soft_nms`.

Differences from the reference, on purpose: boxes stay in continuous [left, top, right, bottom] form with no
"+1" width (the reference converts clipped corners back to centre form with w = xmax - xmin + 1 and so writes
boxes one pixel wider and taller); and the probability threshold applies after top-N (the reference skips it
whenever there are more than top_n anchors, i.e. always; `prob_thresh=0` reproduces that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "NMS_MODES",
    "Detections",
    "box_iou",
    "cxcywh_to_xyxy",
    "decode_boxes",
    "nms",
    "paired_iou",
    "postprocess",
    "safe_exp",
    "soft_nms",
    "xyxy_to_cxcywh",
]

NMS_MODES = ("standard", "reference", "soft")
# Up to this many boxes NMS works on the full (M, M) IoU matrix (64 with the default top_n); beyond it, e.g.
# with top_n <= 0 on a 16,848-anchor grid, one row at a time so memory stays O(M).
DENSE_NMS_MAX = 2048


@dataclass
class Detections:
    """One image's detections, best first."""

    boxes: Tensor  # (M, 4) float32 [left, top, right, bottom] in net-input pixels; (0, 4) when nothing is found
    scores: Tensor  # (M,) float32 P(class) x confidence, descending; (0,) when empty
    labels: Tensor  # (M,) int64 class index into the config's class_names; (0,) when empty

    def __len__(self) -> int:
        return int(self.scores.shape[0])


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


# ---------------------------------------------------------------------------------------------------------- NMS
def nms(boxes: Tensor, scores: Tensor, iou_thresh: float, labels: Tensor | None = None,
        mode: str = "standard") -> Tensor:
    """Indices (int64, best first) of the boxes that survive NMS; boxes of different labels never interact.

    boxes (M, 4) xyxy, scores (M,), labels (M,) int or None (one class). Box j is suppressed by a better box i
    of its class when IoU(i, j) > iou_thresh. Ties in score keep the input order.

    "reference": j survives iff no better box overlaps it, a single reduction over the IoU matrix.
    "standard" (greedy): j survives iff no better *surviving* box overlaps it. That is a recursion over the
    score order; iterating keep <- "no kept better box overlaps" from keep = all reaches its unique fixed point
    (the greedy answer) in at most M steps, since entry j depends only on entries before it, and in practice
    in a handful: each step is one (M, M) boolean reduction instead of M Python-level steps. Above
    DENSE_NMS_MAX boxes the same rules run one IoU row at a time.
    """
    if mode not in ("standard", "reference"):
        raise ValueError(f"nms mode must be 'standard' or 'reference' (Soft-NMS rescores: soft_nms), got {mode!r}")
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms needs boxes (M, 4) and scores (M,), got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    m = boxes.shape[0]
    if m == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    b = boxes[order]
    lab = None if labels is None else labels[order]
    if m > DENSE_NMS_MAX:
        return order[_nms_rowwise(b, lab, iou_thresh, mode)]
    over = box_iou(b, b) > iou_thresh  # (M, M): i overlaps j
    if lab is not None:
        over &= lab[:, None] == lab[None, :]
    over = over.triu_(1)  # only a better box (earlier in score order) suppresses
    if mode == "reference":
        keep = ~over.any(0)
    else:
        keep = torch.ones(m, dtype=torch.bool, device=boxes.device)
        for _ in range(m):
            new = ~(over & keep[:, None]).any(0)
            if torch.equal(new, keep):
                break
            keep = new
    return order[keep]


def _nms_rowwise(boxes: Tensor, labels: Tensor | None, iou_thresh: float, mode: str) -> Tensor:
    """(M,) bool keep mask of boxes sorted best first, one row of IoUs at a time: O(M) memory for large M."""
    m = boxes.shape[0]
    suppressed = torch.zeros(m, dtype=torch.bool, device=boxes.device)
    for i in range(m - 1):
        if mode == "standard" and bool(suppressed[i]):
            continue
        over = box_iou(boxes[i:i + 1], boxes[i + 1:])[0] > iou_thresh
        if labels is not None:
            over &= labels[i + 1:] == labels[i]
        suppressed[i + 1:] |= over
    return ~suppressed


def soft_nms(boxes: Tensor, scores: Tensor, sigma: float = 0.5, labels: Tensor | None = None,
             min_score: float = 0.0) -> tuple[Tensor, Tensor]:
    """Gaussian Soft-NMS: (indices, their new scores), best new score first, of the boxes whose score stays
    above min_score; boxes of different labels never interact.

    Each round takes the best remaining box and multiplies the score of every other remaining box of its label by
    exp(-IoU^2 / sigma) (Bodla et al. 2017, eq. 3; sigma 0.5 as in the paper). Ties in score keep the input order.
    """
    if not sigma > 0:
        raise ValueError(f"soft_nms needs sigma > 0, got {sigma}")
    if boxes.ndim != 2 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"soft_nms needs boxes (M, 4) and scores (M,), got {tuple(boxes.shape)} and "
                         f"{tuple(scores.shape)}")
    m = boxes.shape[0]
    decay = torch.exp(-box_iou(boxes, boxes).square() / sigma)  # (M, M)
    if labels is not None:
        decay = torch.where(labels[:, None] == labels[None, :], decay, torch.ones_like(decay))
    current = scores.clone()
    remaining = torch.ones(m, dtype=torch.bool, device=boxes.device)
    picked, picked_scores = [], []
    for _ in range(m):
        masked = torch.where(remaining, current, torch.full_like(current, -math.inf))
        best = int(torch.argmax(masked))  # the first of equal maxima: input order on ties
        if not bool(remaining[best]) or not float(current[best]) > min_score:
            break  # scores only decrease, so nothing left can rise above min_score
        picked.append(best)
        picked_scores.append(current[best])
        remaining[best] = False
        current = torch.where(remaining, current * decay[best], current)
    index = torch.tensor(picked, dtype=torch.int64, device=boxes.device)
    return index, (torch.stack(picked_scores) if picked else scores[:0])


# ------------------------------------------------------------------------------------------------ whole pipeline
def postprocess(deltas: Tensor, confidence: Tensor, class_probs: Tensor, anchors: Tensor, image_w: float,
                image_h: float, *, exp_thresh: float = 1.0, top_n: int = 64, prob_thresh: float = 0.005,
                nms_thresh: float = 0.4, final_threshold: float = 0.0, nms_mode: str = "standard",
                soft_nms_sigma: float = 0.5) -> list[Detections]:
    """ConvDet outputs for a batch -> one Detections per image.

    deltas (B, N, 4), confidence (B, N) in [0, 1] (sigmoid applied), class_probs (B, N, K) (softmax applied),
    anchors (N, 4) [cx, cy, w, h]. top_n <= 0 keeps every anchor (then prob_thresh does the filtering).
    nms_mode "soft" uses soft_nms_sigma and ignores nms_thresh.
    """
    if nms_mode not in NMS_MODES:
        raise ValueError(f"nms mode must be one of {NMS_MODES}, got {nms_mode!r}")
    if deltas.ndim != 3 or confidence.shape != deltas.shape[:2] or class_probs.shape[:2] != deltas.shape[:2]:
        raise ValueError(f"expected deltas (B, N, 4), confidence (B, N), class_probs (B, N, K), got "
                         f"{tuple(deltas.shape)}, {tuple(confidence.shape)}, {tuple(class_probs.shape)}")
    if anchors.shape != (deltas.shape[1], 4):
        raise ValueError(f"anchors must be ({deltas.shape[1]}, 4) to match the outputs, got {tuple(anchors.shape)}")
    probs, labels = (class_probs * confidence[..., None]).max(dim=-1)  # (B, N) best class per anchor
    n = probs.shape[1]
    k = n if top_n <= 0 else min(top_n, n)
    top_probs, top_idx = probs.topk(k, dim=1)  # (B, k), descending
    top_labels = labels.gather(1, top_idx)
    top_deltas = deltas.gather(1, top_idx[..., None].expand(-1, -1, 4))
    boxes = decode_boxes(top_deltas, anchors[top_idx], image_w, image_h, exp_thresh)  # (B, k, 4)
    out = []
    for i in range(deltas.shape[0]):
        sel = top_probs[i] > prob_thresh
        b, s, lab = boxes[i][sel], top_probs[i][sel], top_labels[i][sel]
        if nms_mode == "soft":
            keep, kept_scores = soft_nms(b, s, soft_nms_sigma, lab, min_score=prob_thresh)
        else:
            keep = nms(b, s, nms_thresh, lab, nms_mode)
            kept_scores = s[keep]
        if final_threshold > 0:  # the demo's PLOT_PROB_THRESH (0.4); evaluation keeps every survivor
            above = kept_scores > final_threshold
            keep, kept_scores = keep[above], kept_scores[above]
        out.append(Detections(boxes=b[keep].float(), scores=kept_scores.float(), labels=lab[keep]))
    return out
