"""Exact float rewrites of SqueezeDet that let one uint8 scale per activation tensor work (data-free quantisation,
Nagel, van Baalen, Blankevoort, Welling, "Data-Free Quantization Through Weight Equalization and Bias Correction",
ICCV 2019), applied by deploy.export to every detector before the ONNX export.

Measured on the bundled squeezedet_sim.pt, 32 calibration and 40 validation frames of the dense simulated world
(bench/bench_deploy.py's sets), car AP11 / AP40 moderate, onnxruntime, fp32 80.3 / 84.7: fully int8 it fell to 0,
and it needed ConvDet and fire11's three convs in float, which cost 1.7-1.8x the speed of a naive int8 export.
Two rewrites, and a calibration choice in deploy.quantize:

1. Every Fire's expand convs are rectified after their concatenation (squeeze.fire: Conv, Conv -> Concat -> Relu in
   ONNX), so the quantiser gave each expand output a uint8 range before the ReLU, its negative half included
   (fire11's expand3x3: [-182, 204], a step of 1.5 where [0, 33] serves the rectified values). `BranchReLUExpand`
   rectifies each branch before the concatenation (exact: ReLU is elementwise), and the quantiser folds each ReLU
   into its conv's range [0, max]. Fully int8 with 2. (and the cross-layer equalisation below, then on): AP11 15.8
   without it, 75.0 with it.
2. ConvDet's 72 output channels (27 class logits, 9 confidence logits, 36 box deltas) span +-4500 at background
   anchors, but on the anchors that can become detections (score > prob_thresh) every one of them stays within
   about +-10 (class and confidence logits) and +-2 (deltas): the min / max calibration gave the one uint8 scale of
   the head's output a step of ~20, which erases every logit and delta that matters. `equalize_convdet_outputs`
   scales output channel c's weights and bias by 1 / r_c, r_c the range of the values that can change a detection
   (`HeadRanges`), and multiplies the output back by r_c in a float Mul (72 x 24 x 78 multiplies, nothing beside the
   conv's 0.93 GMAC). The relevant values of every channel then span [-1, 1] = `OUTPUT_RANGE`, which deploy.quantize
   gives that tensor as its int8 range: the background anchors' outliers saturate (they stay far below
   prob_thresh, or off the image), the rest keep 8 bits at their own scale. The r_c are data-free and set by the
   decoding, not by the weights: equalising the weights' (or the calibration frames') per-channel extremes would
   equalise the background outliers, which say nothing about the precision the detections need. With 1. alone
   (no output rescaling) the head's output step is that of the outliers; with it, keeping ConvDet in float no longer
   changes AP (75.0 either way), and halving or doubling the r_c changed AP11 by < 0.4.
Tried and not kept: cross-layer equalisation (the paper's section 4.1: a conv -> ReLU -> conv pair's channels
rescaled by s_i = sqrt(r1_i / r2_i) of the two weight ranges). It equalises weight ranges, which per-channel int8
weights do not need, and unequalises the activations' (fire11's output channels: max / median range 1.6 -> 3.6),
whose one uint8 scale per tensor is what limits this network: fully int8 with 1. and 2., AP11 76.8 without it, 75.0
with it on fire11 -> ConvDet, 4.7 with it on every trunk link. So it is not in the code.

What is left to the quantiser: with 1. and 2., the trunk up to fire9 in int8 costs nothing (80.25 / 84.5 with
fire10, fire11 and ConvDet float), but ConvDet's input, fire11's 768 channels (81% zeros, non-zero median 0.05, max
33) through one uint8 scale, still cost 3.5 AP11 points (ConvDet's logits reach +-4500, so its gain amplifies the
input's rounding). No exact rewrite can refine that scale (equalising those channels' ranges from data gave 1 point);
deploy.quantize.head_input_range picks a narrower range for that tensor on the calibration frames: fully int8 80.2.

Every scale is rounded to a power of two, so the rewrite is exact in float arithmetic, not only up to rounding
(multiplying by 2^k is exact; a conv of 2^k-scaled weights is 2^k times the conv): the exported network's outputs
are bit-for-bit those of the plain one in the same runtime (barring subnormals). So it is applied to every export,
fp32 included: the fp32 parity bars hold unchanged, and one fp32 .onnx serves both float inference and
`squeeze deploy quantize`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from deploy.quantize import OUTPUT_RANGE, OUTPUT_SCALE

__all__ = [
    "OUTPUT_RANGE",
    "OUTPUT_SCALE",
    "BranchReLUExpand",
    "EqualizeReport",
    "HeadRanges",
    "ScaledConv",
    "convdet_output_ranges",
    "equalize_convdet_outputs",
    "equalize_detector",
    "power_of_two",
    "rectify_branches_",
]

# After equalize_convdet_outputs every ConvDet channel's relevant values lie in +-OUTPUT_RANGE; OUTPUT_SCALE names
# the ScaledConv buffer (ONNX initialiser "...convdet.output_scale") of the float Mul. Both live in the torch-free
# quantiser, which reads them.


@dataclass(frozen=True)
class HeadRanges:
    """The magnitude up to which a ConvDet output can still change a detection (powers of two; see module doc).

    On the bundled model's relevant anchors (score > prob_thresh, 4 dense-world frames) the extremes were class
    logits -10 .. 5, confidence logits -6.9 .. 1.8, deltas -1.7 .. 1.4."""

    class_logit: float = 8.0  # softmax over classes: a logit 8 below another weighs e^-8 = 3e-4; saturate there
    confidence_logit: float = 8.0  # sigmoid(-8) = 3e-4 < prob_thresh 0.005 (dropped); sigmoid(8) = 0.9997
    delta: float = 2.0  # [dx, dy, dw, dh] in anchor sizes: a box moved or scaled e^2 = 7x further is no detection

    def __post_init__(self) -> None:
        for name in ("class_logit", "confidence_logit", "delta"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ValueError(f"HeadRanges.{name} must be a positive finite number, got {value!r}")


def power_of_two(x: Tensor) -> Tensor:
    """2 ** round(log2(x)) elementwise for x > 0 (float32): scaling by it is exact in float arithmetic."""
    if not bool((x > 0).all()) or not bool(torch.isfinite(x).all()):
        raise ValueError("power_of_two takes positive finite values")
    return torch.exp2(torch.round(torch.log2(x.double()))).to(torch.float32)


def convdet_output_ranges(anchors_per_cell: int, num_classes: int, ranges: HeadRanges = HeadRanges()) -> Tensor:
    """(A * (K + 5),) float32: r_c of each ConvDet output channel in the reference's channel order
    (squeezedet.model: [0, A*K) class logits, [A*K, A*K + A) confidence logits, then 4 deltas per anchor)."""
    if anchors_per_cell < 1 or num_classes < 1:
        raise ValueError(f"anchors_per_cell and num_classes must be >= 1, got {anchors_per_cell}, {num_classes}")
    a, k = anchors_per_cell, num_classes
    r = torch.empty(a * (k + 5), dtype=torch.float32)
    r[:a * k] = ranges.class_logit
    r[a * k:a * k + a] = ranges.confidence_logit
    r[a * k + a:] = ranges.delta
    return power_of_two(r)


class ScaledConv(nn.Module):
    """A conv whose output channel c was divided by scale_c (weights and bias), multiplied back in float:
    forward(x) = conv(x) * output_scale per channel, output_scale (C,). deploy.quantize finds the Mul by
    OUTPUT_SCALE and leaves it float."""

    def __init__(self, conv: nn.Conv2d, scale: Tensor) -> None:
        super().__init__()
        if scale.shape != (conv.out_channels,):
            raise ValueError(f"one scale per output channel ({conv.out_channels}), got shape {tuple(scale.shape)}")
        self.conv = conv
        self.register_buffer(OUTPUT_SCALE, scale.to(conv.weight.dtype).clone())

    def forward(self, x: Tensor) -> Tensor:
        # The Mul acts on the channels-last view (and the NCHW result is a view of it): next to the conv, ONNX
        # simplifiers fold a per-channel Mul into the conv's weights and undo the rewrite; SqueezeDet's
        # split_convdet_output permutes to NHWC next, so the two permutes cancel and the graph stays
        # Conv -> Transpose -> Mul -> Slice.
        return (self.conv(x).permute(0, 2, 3, 1) * getattr(self, OUTPUT_SCALE)).permute(0, 3, 1, 2)


@torch.no_grad()
def equalize_convdet_outputs(conv: nn.Conv2d, ranges: Tensor) -> ScaledConv:
    """A ScaledConv computing `conv` exactly, whose conv part's output channel c is conv's divided by ranges[c]
    (powers of two): values within +-ranges[c] come out within +-OUTPUT_RANGE. `conv` itself is left unchanged."""
    if conv.bias is None:
        raise ValueError("ConvDet has a bias; this conv has none")
    scale = power_of_two(ranges.float())
    inner = copy.deepcopy(conv)
    inner.weight.div_(scale.view(-1, 1, 1, 1).to(inner.weight.dtype))
    inner.bias.div_(scale.to(inner.bias.dtype))
    return ScaledConv(inner, scale)


class BranchReLUExpand(nn.Module):
    """A Fire's expand without BatchNorm, rectified per branch before the concatenation: cat(relu(e1(x)),
    relu(e3(x))) = relu(cat(e1(x), e3(x))), exactly (ReLU is elementwise).

    squeeze.fire rectifies after the concatenation (one call in torch); in ONNX that is Conv, Conv -> Concat -> Relu,
    and the quantiser gives each expand conv's output its own uint8 range before the ReLU, negative half included:
    fire11's expand3x3 came out at [-182, 204] (step 1.5) where [0, 204] would do. Conv -> Relu lets the quantiser
    fold the ReLU into the conv's range [0, max] (deploy.quantize's CPU target drops removable activations)."""

    def __init__(self, expand1x1: nn.Conv2d, expand3x3: nn.Conv2d) -> None:
        super().__init__()
        self.expand1x1, self.expand3x3 = expand1x1, expand3x3

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))), dim=1)


def rectify_branches_(trunk: nn.Module, skip_batch_norm: bool = False) -> int:
    """Replace every BatchNorm-free Fire (and SqueezeSeg FireDeconv) expand of `trunk` (any module tree) by a
    BranchReLUExpand over the same convs, in place; returns how many. An expand that still has its BatchNorm
    raises ValueError, or is left as it is with `skip_batch_norm` (a post-ReLU BN the fold had to keep)."""
    from squeeze.fire import Fire, FireDeconv

    count = 0
    for fire in [m for m in trunk.modules() if isinstance(m, Fire | FireDeconv)]:
        expand = fire.expand
        if getattr(expand, "bn", None) is not None:
            if skip_batch_norm:
                continue
            raise ValueError("a Fire with BatchNorm: fold it first (squeezedet.model.fold_batch_norm)")
        fire.expand = BranchReLUExpand(expand.expand1x1, expand.expand3x3)
        count += 1
    return count


@dataclass(frozen=True)
class EqualizeReport:
    output_channels: int  # ConvDet channels rescaled (0 when the head was left alone)
    rectified: int  # Fire expands rectified per branch (BranchReLUExpand)


@torch.no_grad()
def equalize_detector(model: nn.Module, *, head_ranges: HeadRanges | None = HeadRanges(), branch_relu: bool = True
                      ) -> tuple[nn.Module, EqualizeReport]:
    """A copy of a BatchNorm-free SqueezeDet (squeezedet.model.fold_batch_norm) computing the same function, with
    every Fire's expand rectified per branch (`branch_relu`, BranchReLUExpand) and, unless head_ranges is None,
    ConvDet's output channels equalised to `head_ranges` behind a float Mul.

    Raises ValueError for a model with BatchNorm (fold it first) or without a ConvDet conv."""
    if any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise ValueError("equalise a SqueezeDet without BatchNorm: fold it first (squeezedet.model.fold_batch_norm)")
    head = getattr(model, "convdet", None)
    if not isinstance(head, nn.Conv2d):
        raise ValueError(f"expected a SqueezeDet whose `convdet` is a Conv2d, got {type(head).__name__}")
    out = copy.deepcopy(model).eval()
    channels = 0
    if head_ranges is not None:
        c = out.config
        out.convdet = equalize_convdet_outputs(out.convdet, convdet_output_ranges(c.anchors_per_cell, c.num_classes,
                                                                                  head_ranges))
        channels = out.convdet.conv.out_channels
    rectified = rectify_branches_(out.features) if branch_relu else 0
    return out, EqualizeReport(channels, rectified)
