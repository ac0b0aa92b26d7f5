"""SqueezeDet target assignment and losses, as the released code computes them (reference/models.md 1.4).

Assignment (the reference's data layer, `imdb.read_batch`): the ground-truth boxes of an image are visited in
order; each takes the anchor of highest IoU that no earlier box of the image took, provided that IoU is
positive; otherwise the free anchor nearest in squared [cx, cy, w, h] distance. So every box gets exactly one
anchor and no anchor serves two boxes; there are no IoU thresholds, and every other anchor is negative.
(An image with more boxes than anchors, possible only on toy grids, leaves the surplus boxes unassigned.)

Losses (SqueezeDet section 3.3, `nn_skeleton._add_loss_graph`), with N the positive anchors of the *batch*
and A the anchors per image:

- bbox:  coef_bbox * sum over positives of ||delta_pred - delta_gt||^2 / N (plain squared error, no 1/2);
- conf:  mean over images of sum over anchors of (IoU_target - conf)^2 * (pos * coef_pos / N
         + neg * coef_neg / (A - N)); IoU_target is the IoU of the decoded, clipped prediction with its box on
         positives (no gradient flows into it) and 0 on negatives;
- class: coef_class * sum over positives and classes of the binary cross-entropy between the one-hot label and
         the *softmax* probabilities, -(q log p + (1 - q) log(1 - p)), / N.

Option, not in the reference (`extra_positive_iou` > 0, default 0 = off): after that assignment, every anchor
not taken whose IoU with some box reaches the threshold also becomes a positive of the box it overlaps most, as
SSD and Faster R-CNN match (Liu et al. 2016, section 2.2). One object then trains several anchors' regression
and confidence instead of one. Each positive is weighted 1 / (the positives of its box) and N counts boxes, so
every box keeps the weight it has in the reference: a near car overlapping fifty anchors does not drown a far one
that overlaps one. Without extras every weight is 1 and N the positives, exactly the reference's loss.

Regression targets: dx = (cx - acx) / aw, dy = (cy - acy) / ah, dw = log(w / aw), dh = log(h / ah).

Differences from the reference, each a guard rather than a change of the loss:
- a batch without any object gives bbox and class losses of 0 (the reference divides 0 by 0);
- log p and log(1 - p) come from log-softmax / log-sum-exp instead of log(p + 1e-16), which agrees wherever
  p > 1e-16 and keeps a gradient beyond;
- boxes are continuous [left, top, right, bottom] (w = right - left, docs/conventions.md), not the reference's
  w = xmax - xmin + 1; sides shorter than MIN_BOX_SIZE pixels count as MIN_BOX_SIZE so log(w / aw) is finite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from squeezedet.decode import box_iou, cxcywh_to_xyxy, decode_boxes, paired_iou

__all__ = [
    "MIN_BOX_SIZE",
    "Targets",
    "assign_anchors",
    "assign_anchors_batch",
    "build_targets",
    "detection_losses",
    "encode_deltas",
    "softmax_binary_cross_entropy",
]

MIN_BOX_SIZE = 1.0  # pixels; the smallest side a ground-truth box is given (KITTI's inclusive pixel boxes)


@dataclass
class Targets:
    """The positive anchors of a batch, one row per assigned ground-truth box (P rows; P = 0 is valid)."""

    batch_index: Tensor  # (P,) int64 image of each positive
    anchor_index: Tensor  # (P,) int64 anchor in [0, A) of each positive; unique within an image
    deltas: Tensor  # (P, 4) float32 regression target [dx, dy, dw, dh]
    boxes: Tensor  # (P, 4) float32 the ground-truth box [left, top, right, bottom] (sides >= MIN_BOX_SIZE)
    labels: Tensor  # (P,) int64 class index
    weight: Tensor  # (P,) float 1 / (positives of the same box): all 1 with one anchor per box (the reference)
    num_unassigned: int = 0  # boxes left without a free anchor (only when an image has more boxes than anchors)

    @property
    def num_positive(self) -> int:
        return int(self.anchor_index.shape[0])

    @property
    def num_boxes(self) -> float:
        """The boxes the positives stand for (the sum of their weights): the N that normalises the losses."""
        return float(self.weight.sum())


def encode_deltas(boxes: Tensor, anchors: Tensor) -> Tensor:
    """(..., 4) [cx, cy, w, h] boxes on (..., 4) [cx, cy, w, h] anchors -> (..., 4) [dx, dy, dw, dh]."""
    return torch.stack(((boxes[..., 0] - anchors[..., 0]) / anchors[..., 2],
                        (boxes[..., 1] - anchors[..., 1]) / anchors[..., 3],
                        torch.log(boxes[..., 2] / anchors[..., 2]),
                        torch.log(boxes[..., 3] / anchors[..., 3])), dim=-1)


@torch.no_grad()
def assign_anchors(anchors: Tensor, boxes: Tensor) -> Tensor:
    """(G,) int64 anchor of each of the G boxes of one image, -1 for a box left without a free anchor.

    anchors (A, 4) and boxes (G, 4), both [cx, cy, w, h]. See `assign_anchors_batch`.
    """
    return assign_anchors_batch(anchors, [boxes])[0]


@torch.no_grad()
def assign_anchors_batch(anchors: Tensor, boxes: Sequence[Tensor]) -> list[Tensor]:
    """Per image, (G_i,) int64 anchor of each of its boxes, -1 for a box left without a free anchor.

    anchors (A, 4) and boxes[i] (G_i, 4), both [cx, cy, w, h]. Boxes are served in order within their image (see
    the module docstring). One IoU matrix for the whole batch; when box g of an image is served at most g
    anchors are taken, so its choice is among its g + 1 best: only the top max(G_i) of each row (and anything
    tied with the last of them) is ranked, never all A. Equal IoUs or distances go to the lower anchor index on
    any device (the reference's order among ties is whatever numpy's unstable argsort gives). Computed in
    float32 (the reference's numpy used float64; only rankings within ~1e-7 of a tie can differ).
    """
    sizes = [int(b.shape[0]) for b in boxes]
    device = anchors.device
    if sum(sizes) == 0:
        return [torch.zeros(0, dtype=torch.int64, device=device) for _ in sizes]
    gt = torch.cat([b.to(device) for b in boxes]).float()  # (G, 4)
    anchors = anchors.float()
    iou = box_iou(cxcywh_to_xyxy(gt), cxcywh_to_xyxy(anchors))  # (G, A)
    by_iou = _ranked_positive(iou, min(max(sizes), anchors.shape[0]))
    out, start = [], 0
    for n in sizes:
        taken: set[int] = set()
        chosen = []
        for i in range(start, start + n):
            # The best free anchor that overlaps the box; if none overlaps, the nearest free one.
            pick = next((idx for idx in by_iou[i] if idx not in taken), -1)
            if pick < 0:
                pick = _nearest_free(anchors, gt[i], taken)
            if pick >= 0:
                taken.add(pick)
            chosen.append(pick)
        out.append(torch.tensor(chosen, dtype=torch.int64, device=device))
        start += n
    return out


def _ranked_positive(scores: Tensor, k: int) -> list[list[int]]:
    """Per row of (G, A) `scores`: the column indices of its k largest positive entries and of every entry tied
    with the k-th, largest first, ties by lower index."""
    kth = scores.topk(k, dim=1).values[:, -1:]  # (G, 1)
    rows, cols = ((scores >= kth) & (scores > 0)).nonzero(as_tuple=True)  # by row, then ascending column
    order = torch.argsort(scores[rows, cols], descending=True, stable=True)
    order = order[torch.argsort(rows[order], stable=True)]  # by row, then descending score, then column
    counts = torch.bincount(rows, minlength=scores.shape[0]).tolist()
    ranked = cols[order].tolist()
    out, start = [], 0
    for c in counts:
        out.append(ranked[start:start + c])
        start += c
    return out


def _nearest_free(anchors: Tensor, box: Tensor, taken: set[int]) -> int:
    """The untaken anchor nearest to `box` in squared [cx, cy, w, h] distance (lower index on ties), or -1."""
    dist = (anchors - box).square().sum(-1)  # (A,)
    order = torch.argsort(dist, stable=True)[: len(taken) + 1].tolist()
    return next((idx for idx in order if idx not in taken), -1)


def _check_image_targets(i: int, boxes: object, labels: object, num_classes: int) -> tuple[Tensor, Tensor]:
    where = f"boxes[{i}]"
    if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
        desc = f"{boxes.dtype} tensor of shape {tuple(boxes.shape)}" if isinstance(boxes, Tensor) else type(boxes)
        raise ValueError(f"{where} must be a float tensor (N, 4) [left, top, right, bottom], got {desc}")
    if not isinstance(labels, Tensor) or labels.shape != boxes.shape[:1] or labels.dtype != torch.int64:
        desc = f"{labels.dtype} tensor of shape {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels)
        raise ValueError(f"labels[{i}] must be an int64 tensor of shape ({boxes.shape[0]},) matching {where}, "
                         f"got {desc}")
    if boxes.shape[0]:
        bad = ~torch.isfinite(boxes).all(1) | (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise ValueError(f"{where} row {row} is not a box [left, top, right, bottom] with right >= left, "
                             f"bottom >= top: {boxes[row].tolist()}")
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"labels[{i}] must be class indices in [0, {num_classes}), got values in "
                             f"[{int(labels.min())}, {int(labels.max())}]")
    return boxes, labels


def build_targets(anchors: Tensor, boxes: Sequence[Tensor], labels: Sequence[Tensor], num_classes: int,
                  batch_size: int, extra_positive_iou: float = 0.0) -> Targets:
    """Assign every ground-truth box of a batch to one anchor and compute its regression target.

    anchors (A, 4) [cx, cy, w, h]; boxes[i] (N_i, 4) float [left, top, right, bottom] in input pixels;
    labels[i] (N_i,) int64. Images without boxes are fine (N_i = 0). Raises ValueError naming the image and
    row for a malformed box or label. extra_positive_iou > 0 adds the positives described in the module
    docstring, after each image's reference positives.
    """
    if not 0.0 <= extra_positive_iou <= 1.0:
        raise ValueError(f"extra_positive_iou must be in [0, 1] (0 = off), got {extra_positive_iou}")
    if len(boxes) != batch_size or len(labels) != batch_size:
        raise ValueError(f"need one boxes and one labels tensor per image: batch of {batch_size}, got "
                         f"{len(boxes)} boxes and {len(labels)} labels tensors")
    dtype, device = anchors.dtype, anchors.device
    gts, labs = [], []
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        b, lab = _check_image_targets(i, b, lab, num_classes)
        b = b.to(device=device, dtype=dtype)
        cx, cy = 0.5 * (b[:, 0] + b[:, 2]), 0.5 * (b[:, 1] + b[:, 3])
        w = (b[:, 2] - b[:, 0]).clamp(min=MIN_BOX_SIZE)
        h = (b[:, 3] - b[:, 1]).clamp(min=MIN_BOX_SIZE)
        gts.append(torch.stack((cx, cy, w, h), dim=1))  # (N_i, 4) [cx, cy, w, h]
        labs.append(lab.to(device))
    rows: list[tuple[Tensor, ...]] = []
    unassigned = 0
    for i, (gt, lab, idx) in enumerate(zip(gts, labs, assign_anchors_batch(anchors, gts), strict=True)):
        ok = idx >= 0  # (N_i,) False where unassigned
        unassigned += int((~ok).sum())
        box = ok.nonzero(as_tuple=True)[0]  # the boxes behind the positives, in order
        if extra_positive_iou > 0 and gt.shape[0]:
            extra_anchor, extra_box = _extra_positives(anchors, gt, idx[ok], extra_positive_iou)
            idx, box = torch.cat((idx[ok], extra_anchor)), torch.cat((box, extra_box))
        else:
            idx = idx[ok]
        weight = 1.0 / torch.bincount(box, minlength=gt.shape[0])[box].to(dtype)  # 1 / (positives of its box)
        gt, lab = gt[box], lab[box]
        rows.append((torch.full_like(idx, i), idx, encode_deltas(gt, anchors[idx]), cxcywh_to_xyxy(gt), lab, weight))
    if not rows:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return Targets(empty, empty, torch.zeros(0, 4, dtype=dtype, device=device),
                       torch.zeros(0, 4, dtype=dtype, device=device), empty, torch.zeros(0, dtype=dtype, device=device))
    cols = [torch.cat(col) for col in zip(*rows, strict=True)]
    return Targets(*cols, num_unassigned=unassigned)


@torch.no_grad()
def _extra_positives(anchors: Tensor, gt: Tensor, taken: Tensor, min_iou: float) -> tuple[Tensor, Tensor]:
    """(anchor index, box index) of every anchor outside `taken` whose best IoU with the (G, 4) [cx, cy, w, h]
    boxes is >= min_iou, paired with that best box (the lower box index on ties), anchors ascending."""
    best_iou, best_box = box_iou(cxcywh_to_xyxy(gt.float()), cxcywh_to_xyxy(anchors.float())).max(dim=0)  # (A,)
    extra = best_iou >= min_iou
    extra[taken] = False
    anchor_index = extra.nonzero(as_tuple=True)[0]
    return anchor_index, best_box[anchor_index]


def softmax_binary_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """(P, K) logits, (P,) int64 labels -> (P,) sum over classes of -(q log p + (1 - q) log(1 - p)), p = softmax.

    log(1 - p_c) = logsumexp of the other classes' logits - logsumexp of all, exact and finite for K >= 2.
    With one class p = 1 and q = 1 always, so the loss is 0.
    """
    p, k = logits.shape
    if k == 1 or p == 0:
        return logits.sum(-1) * 0.0
    log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)  # (P, 1)
    log_p = logits - log_norm  # (P, K)
    diagonal = torch.eye(k, dtype=torch.bool, device=logits.device)
    log_1mp = torch.logsumexp(logits[:, None, :].masked_fill(diagonal, -math.inf), dim=-1) - log_norm  # (P, K)
    onehot = F.one_hot(labels, k).bool()
    return -log_p.gather(1, labels[:, None]).squeeze(1) - log_1mp.masked_fill(onehot, 0.0).sum(-1)


def detection_losses(deltas: Tensor, conf_logits: Tensor, class_logits: Tensor, targets: Targets, anchors: Tensor,
                     image_w: float, image_h: float, *, coef_conf_pos: float = 75.0, coef_conf_neg: float = 100.0,
                     coef_bbox: float = 5.0, coef_class: float = 1.0, exp_thresh: float = 1.0,
                     epsilon: float = 1e-16) -> dict[str, Tensor]:
    """The three SqueezeDet losses (scalars) for a batch; see the module docstring for the formulas.

    deltas (B, A, 4), conf_logits (B, A) (before the sigmoid), class_logits (B, A, K) (before the softmax),
    anchors (A, 4) [cx, cy, w, h]. The bbox and class losses are per object of the batch; the confidence loss
    is the mean over images of a per-image sum, as in the reference.
    """
    b, a = conf_logits.shape
    n = targets.num_positive
    bi, ai = targets.batch_index, targets.anchor_index
    # weight / N with N the boxes: 1 / N per positive in the reference; with extra positives each box weighs as one.
    per_object = targets.weight / max(targets.num_boxes, 1.0)  # (P,)
    pos_deltas = deltas[bi, ai]  # (P, 4)
    bbox_loss = coef_bbox * ((pos_deltas - targets.deltas).square().sum(-1) * per_object).sum()
    class_loss = coef_class * (softmax_binary_cross_entropy(class_logits[bi, ai], targets.labels) * per_object).sum()

    with torch.no_grad():  # the IoU target is a constant, as in the reference (a tf.Variable assigned each step)
        pred_boxes = decode_boxes(pos_deltas, anchors[ai], image_w, image_h, exp_thresh)  # (P, 4)
        iou_target = torch.zeros_like(conf_logits)  # (B, A), 0 on negatives
        iou_target[bi, ai] = paired_iou(pred_boxes, targets.boxes, eps=epsilon).to(conf_logits.dtype)
        weight = torch.full_like(conf_logits, coef_conf_neg / max(a - n, 1))  # (B, A), negatives
        weight[bi, ai] = (coef_conf_pos * per_object).to(weight.dtype)
    conf = torch.sigmoid(conf_logits)
    conf_loss = ((iou_target - conf).square() * weight).sum(1).mean()
    return {"bbox_loss": bbox_loss, "conf_loss": conf_loss, "class_loss": class_loss}
