"""Fold SqueezeSegV2's post-ReLU BatchNorm into the convolutions around it, exactly, for export.

SqueezeSegV2 keeps BN *after* the ReLU, as the reference does (conv + bias -> ReLU -> BN, squeeze.fire), so BN
cannot fold into the conv before it. Left in the graph, each BN is a float affine between two convolutions that an
INT8 runtime cannot fuse (issue 11: 26 of them made onnxruntime's INT8 SqueezeSegV2 3.5x slower than a port).
The affine y = a * r + b (per channel; r the ReLU output, a = gamma / sqrt(var + eps), b = beta - mean * a) folds
into a FOLLOWING convolution: conv(W, y) = conv(W * a, r) + (the b term). The b term is where padding matters:

- a 1x1 unpadded conv sees b at every tap, so the b term is a constant bias, sum_c W[:, c] * b[c]: exact;
- a padded conv (Fire's 3x3 expand, zero padding 1) or FireDeconv's transposed conv sees b only inside the image:
  the zero padding stands for a BN output of 0, not for b, so a bias would be wrong on the border pixels.

A Fire / FireDeconv squeeze feeds both kinds (its 1x1 and padded 3x3 expands, or the transposed conv), so its BN
folds in one of two exact ways (`squeeze_style` of `fold_post_relu_batch_norm`):

- "max" (the default): fold the BN into the squeeze itself and keep its output equal to the BN output, so the
  convs after it, zero padding included, see exactly what they saw and stay as they are. With s = sign(a) (+1
  where a = 0), per channel: a * ReLU(z) + b = s * max(|a| * z + s * b, s * b), since |a| * ReLU(z) =
  max(|a| * z, 0) for |a| >= 0 and s * s = 1. So the squeeze conv's kernel and bias are scaled by |a| and s * b is
  added to its bias, its ReLU becomes a per-channel maximum against the constant s * b (one ONNX Max with a
  (1, C, 1, 1) constant, `ConvMax`), and where some a < 0 the sign s goes into the readers' kernels (input channel
  c times s[c]), which is exact on the border too: the zero padding of s * u is the zero padding of u. No channel
  is added, for any sign of a. Why not the ones channel: its odd widths (17, 33, 49, 65) break the 8- and
  16-channel blocks (NCHWc) that onnxruntime's and OpenVINO's CPU kernels work in; the fp32 export ran 1.23-1.32x
  slower in onnxruntime than a hand export that keeps the 26 BatchNormalization ops, OpenVINO int8 1.14-1.19x.
  The cost: Conv + Max instead of Conv + ReLU, and in the "cpu" INT8 recipe (deploy.quantize) the Max is not a
  quantised op, so it runs in float between a DequantizeLinear and a QuantizeLinear, where a ReLU folds into its
  conv's uint8 range. Rounding: the BN output is still formed in float32 (as in torch), so on the bundled model's
  logits (up to 111) the folded network is 2.8-2.9e-4 from float64 on three KITTI scans, torch's own 1.2-1.8e-4.
  Measured (bundled SqueezeSegV2, 2 threads, batch 1, p50, against the hand export): onnxruntime fp32 0.998x
  ("ones_channel" 1.176x), OpenVINO fp32 1.001x (1.053x), OpenVINO int8 with the bf16 hint 0.887x (0.927x);
  onnxruntime int8 0.71x and OpenVINO int8 with the f32 hint 1.20x (1.15x) alike for both styles.
- "ones_channel": the b term rides on an extra input channel that is 1 inside the image and 0 in the padding,
  exactly the support of b: the squeeze conv gets one more output channel with weight 0 and bias 1 (ReLU(1) = 1),
  and each following conv gets that channel's kernel, sum_c W[:, c] * b[c] (zero for the unpadded 1x1 expand,
  which takes b as a bias). Exact at every pixel, for any sign of a, at the cost of one more input channel. The
  BN output is never rounded as such: 0.5-1.4e-4 from float64 on the same scans.

What folds (`fold_post_relu_batch_norm`), for any sign of a:
- the squeeze BN of every Fire and FireDeconv (above);
- the output BN of a Fire or conv stage whose only consumer is the next Fire's 1x1 squeeze (in the trunk, and from
  the trunk's last stage into the first decoder block).
And where every a > 0 (a trained network's usual case), BNs whose outputs meet other tensors first: there
a * ReLU(z) + b = ReLU(a * z) + b puts the scale into the conv before the ReLU, and the shift b, a constant per
channel, passes max-pools and skip additions unchanged into the 1x1 convs that finally read it (their biases):
- the decoder expands of fire_deconv10-12 and the skip stage fire5 (pool5 -> fire6, and the skip addition).
- the output BN of a stage that only a CAM reads (conv1, fire2, fire3): the CAM multiplies its input itself, so b
  cannot leave it, but the scale goes into the conv before the ReLU and b into the CAM (ShiftedContextAggregation):
  the CAM reads r = ReLU(a * z), its max-pools pass b into its first 1x1 conv's bias, and its gate multiplies
  r + b. Why it matters: left as a BN, the CAM's pools read a float tensor, so onnxruntime's INT8 graph ran them as
  plain NCHW float pools (26.6 of 65 ms a frame in its profiler) and SqueezeSegV2 int8 ran slower than fp32
  there; with the pools reading the conv's quantised ReLU output they run as uint8 NhwcMaxPool.
What stays: the BNs that reach the padded conv14 through the last skip addition (fire_deconv13, conv1_skip). For the
paper's SqueezeSegV2 with positive scales (the bundled weights), 24 of the 26 BNs fold and 2 stay; with some
negative scale, 17 fold.
tests/test_deploy_export.py checks the folded network against the original, border pixels included.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from squeeze.fire import ContextAggregation, ConvReLU, Fire, FireDeconv

__all__ = ["SQUEEZE_STYLES", "ConvMax", "FoldResult", "ShiftedContextAggregation", "count_batch_norms",
           "fold_post_relu_batch_norm"]

SQUEEZE_STYLES = ("max", "ones_channel")  # how a Fire squeeze's BN folds (module docstring); the first is the default


class FoldResult(NamedTuple):
    model: nn.Module  # a folded copy in eval mode (the input model is not changed)
    folded: int  # BatchNorms folded away
    remaining: int  # BatchNorms left in the network


class ConvMax(nn.Module):
    """A Fire squeeze with its post-ReLU BN folded in ("max" style): max(conv(x), floor), per channel.

    conv: the squeeze conv, kernel and bias already scaled (module docstring); floor: (C,) the per-channel constant
    s * b, kept as a (1, C, 1, 1) buffer so the export writes one Max against a constant. (B, in, H, W) -> (B, C, H, W).
    The attribute is named `conv` as in ConvReLU, so the layer keeps its name (fire2.squeeze.conv) in the export.
    """

    def __init__(self, conv: nn.Conv2d, floor: Tensor) -> None:
        super().__init__()
        if floor.shape != (conv.out_channels,):
            raise ValueError(f"floor must have one value per output channel ({conv.out_channels}), "
                             f"got shape {tuple(floor.shape)}")
        self.conv = conv
        self.register_buffer("floor", floor.detach().clone().view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.maximum(self.conv(x), self.floor)


class ShiftedContextAggregation(nn.Module):
    """A CAM whose input's post-ReLU BN (y = r + b, r = ReLU(a * z), a > 0) is folded into it: it reads r.

    y * sigmoid(gate(maxpool(y))) with maxpool(r + b) = maxpool(r) + b (a constant per channel passes a max-pool;
    its -inf padding never wins), so b goes into the first 1x1 conv's bias and the product is (r + b) * gate.
    Same submodule names as ContextAggregation, so the layers keep their names (cam1.squeeze) in the export.
    (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, cam: ContextAggregation, shift: Tensor) -> None:
        super().__init__()
        if shift.shape != (cam.excite.out_channels,):
            raise ValueError(f"shift must have one value per channel ({cam.excite.out_channels}), "
                             f"got shape {tuple(shift.shape)}")
        self.pool_rows, self.pool_cols = cam.pool_rows, cam.pool_cols
        self.squeeze, self.excite = cam.squeeze, cam.excite
        _shift_into(self.squeeze, shift)
        self.register_buffer("shift", shift.detach().clone().view(1, -1, 1, 1))

    def forward(self, r: Tensor) -> Tensor:
        gate = self.excite(torch.relu(self.squeeze(self.pool_cols(self.pool_rows(r)))))
        return (r + self.shift) * torch.sigmoid(gate)


def count_batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def _affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(a, b) of an eval-mode BN: y = a * x + b per channel."""
    a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return a, bn.bias - bn.running_mean * a


def _post_bn(module: nn.Module) -> nn.BatchNorm2d | None:
    """The BN after the ReLU at the output of a ConvReLU / Fire / FireDeconv (SqueezeSegV2's order), if any."""
    if isinstance(module, ConvReLU):
        return module.bn if module.bn is not None and not module.bn_before_relu else None
    if isinstance(module, Fire | FireDeconv):
        bn = module.expand.bn
        return bn if bn is not None and not module.expand.bn_before_relu else None
    return None


def _drop_post_bn(module: nn.Module) -> None:
    if isinstance(module, ConvReLU):
        module.bn = None
    else:
        module.expand.bn = None


def _scale_inputs(conv: nn.Conv2d, a: Tensor, b: Tensor) -> None:
    """A 1x1 unpadded conv taking a * x + b instead of x: kernel * a per input channel, bias + W @ b. Exact."""
    w = conv.weight
    bias = conv.bias if conv.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)
    conv.bias = nn.Parameter(bias + (w * b.view(1, -1, 1, 1)).sum((1, 2, 3)))
    conv.weight = nn.Parameter(w * a.view(1, -1, 1, 1))


def _add_ones_channel(conv: nn.Conv2d) -> None:
    """One more output channel, weight 0 and bias 1: after the ReLU it is 1 inside the image."""
    w = conv.weight
    conv.weight = nn.Parameter(torch.cat((w, torch.zeros_like(w[:1])), 0))
    conv.bias = nn.Parameter(torch.cat((conv.bias, torch.ones_like(conv.bias[:1]))))
    conv.out_channels += 1


def _fold_squeeze_ones_channel(fire: Fire | FireDeconv) -> None:
    """"ones_channel" style: fold the squeeze's post-ReLU BN into what reads the squeeze (module docstring)."""
    bn = fire.squeeze.bn
    a, b = _affine(bn)
    _add_ones_channel(fire.squeeze.conv)
    fire.squeeze.bn = None
    if isinstance(fire, FireDeconv):
        # ConvTranspose2d weight (in, out, kh, kw): input channel c scaled by a[c]; the ones channel carries b.
        d = fire.deconv
        w = d.weight
        ones = (w * b.view(-1, 1, 1, 1)).sum(0, keepdim=True)
        d.weight = nn.Parameter(torch.cat((w * a.view(-1, 1, 1, 1), ones), 0))
        d.in_channels += 1
        return
    e1, e3 = fire.expand.expand1x1, fire.expand.expand3x3
    _scale_inputs(e1, a, b)  # unpadded: b goes into the bias
    e1.weight = nn.Parameter(torch.cat((e1.weight, torch.zeros_like(e1.weight[:, :1])), 1))  # ignores the ones
    e1.in_channels += 1
    w = e3.weight  # padded 3x3: b rides on the ones channel, zero in the padding like b's support
    ones = (w * b.view(1, -1, 1, 1)).sum(1, keepdim=True)
    e3.weight = nn.Parameter(torch.cat((w * a.view(1, -1, 1, 1), ones), 1))
    e3.in_channels += 1


def _fold_squeeze_max(fire: Fire | FireDeconv) -> None:
    """"max" style: the squeeze computes its BN output itself, s * max(|a| * z + s * b, s * b), with the signs s
    moved into the convs that read it (module docstring); no channel is added and the readers' padding is kept."""
    a, b = _affine(fire.squeeze.bn)
    s = torch.where(a < 0, -torch.ones_like(a), torch.ones_like(a))  # sign(a), +1 where a = 0
    conv = fire.squeeze.conv
    bias = conv.bias if conv.bias is not None else torch.zeros_like(a)
    conv.weight = nn.Parameter(conv.weight * a.abs().view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(bias * a.abs() + s * b)
    fire.squeeze = ConvMax(conv, s * b)
    if bool((s > 0).all()):
        return
    # y = s * u: input channel c of every reader times s[c] (exact with zero padding: s * 0 = 0).
    if isinstance(fire, FireDeconv):
        fire.deconv.weight = nn.Parameter(fire.deconv.weight * s.view(-1, 1, 1, 1))  # (in, out, kh, kw)
        return
    for e in (fire.expand.expand1x1, fire.expand.expand3x3):
        e.weight = nn.Parameter(e.weight * s.view(1, -1, 1, 1))  # (out, in, kh, kw)


@torch.no_grad()
def fold_post_relu_batch_norm(model: nn.Module, squeeze_style: str = SQUEEZE_STYLES[0]) -> FoldResult:
    """A copy of a SqueezeSegV2 (config.backbone, decoder_skips) with its post-ReLU BNs folded where exact.

    The copy computes the same logits as `model` in eval mode up to float rounding, on every pixel. A model
    without post-ReLU BN (SqueezeSeg, SqueezeDet) comes back as an unchanged copy. squeeze_style (SQUEEZE_STYLES):
    how each Fire / FireDeconv squeeze BN folds, "max" (no added channel; its ReLU becomes a per-channel Max) or
    "ones_channel" (one more squeeze channel); both exact for any sign of the BN scales. ValueError for another.
    """
    if squeeze_style not in SQUEEZE_STYLES:
        raise ValueError(f"squeeze_style must be one of {SQUEEZE_STYLES}, got {squeeze_style!r}")
    fold_squeeze = _fold_squeeze_max if squeeze_style == "max" else _fold_squeeze_ones_channel
    out = copy.deepcopy(model).eval()
    before = count_batch_norms(out)
    # 1. A stage's output BN into the next Fire's 1x1 squeeze, when nothing else reads that output.
    stages = [s for s in out.config.backbone.stages if not s.from_input] if hasattr(out, "config") else []
    decoder: tuple[tuple[str, str], ...] = getattr(out, "decoder_skips", ())
    chain = [(getattr(out, s.name), s.skip) for s in stages]
    if decoder and chain:
        chain.append((getattr(out, decoder[0][0]), False))
    for (prev, prev_is_skip), (nxt, _) in zip(chain, chain[1:], strict=False):
        bn = _post_bn(prev)
        if bn is None or prev_is_skip or not isinstance(nxt, Fire | FireDeconv):
            continue
        conv = nxt.squeeze.conv
        if tuple(conv.kernel_size) != (1, 1) or tuple(conv.stride) != (1, 1):
            continue
        _scale_inputs(conv, *_affine(bn))
        _drop_post_bn(prev)
    # 2. A BN with every a > 0 whose output reaches only 1x1 convs, through max-pools and skip additions: the scale
    #    into the conv before the ReLU, the shift into those 1x1 convs' biases.
    if stages and decoder:
        _fold_through_skips(out, stages, decoder)
    # 3. A BN with every a > 0 that only a CAM reads: the scale into the conv before the ReLU, the shift into the CAM.
    if stages:
        _fold_into_cams(out, stages)
    # 4. Every Fire / FireDeconv squeeze BN, in the chosen style (the list first: "max" replaces the squeezes).
    fires = [m for m in out.modules() if isinstance(m, Fire | FireDeconv) and isinstance(m.squeeze, ConvReLU)]
    for fire in fires:
        if fire.squeeze.bn is not None and not fire.squeeze.bn_before_relu:
            fold_squeeze(fire)
    after = count_batch_norms(out)
    return FoldResult(out.to(memory_format=torch.contiguous_format), before - after, after)


def _scale_back(module: nn.Module, a: Tensor) -> None:
    """a * ReLU(z) = ReLU(a * z) for a > 0: scale the output channels of the conv(s) before the ReLU by a."""
    convs = [module.conv] if isinstance(module, ConvReLU) else [module.expand.expand1x1, module.expand.expand3x3]
    start = 0
    for conv in convs:
        n = conv.out_channels
        s = a[start:start + n]
        conv.weight = nn.Parameter(conv.weight * s.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(conv.bias * s)
        start += n


def _shift_into(conv: nn.Conv2d, b: Tensor) -> None:
    """A 1x1 unpadded conv taking x + b instead of x: bias + W @ b. Exact."""
    conv.bias = nn.Parameter(conv.bias + (conv.weight * b.view(1, -1, 1, 1)).sum((1, 2, 3)))


def _is_1x1(conv: nn.Module) -> bool:
    return isinstance(conv, nn.Conv2d) and tuple(conv.kernel_size) == (1, 1) and tuple(conv.stride) == (1, 1)


@torch.no_grad()
def _fold_through_skips(model: nn.Module, stages: list[Any], decoder: tuple[tuple[str, str], ...]) -> None:
    """Fold the post-ReLU BNs at the decoder's additions (SqueezeSegV2's decoder expands and skip stages).

    With every a > 0, BN(ReLU(z)) = ReLU(a * z) + b: the scale goes into the conv before the ReLU (exact) and the
    per-channel shift b is carried forward. A constant per channel passes a max-pool unchanged (the pools pad with
    -inf, which never wins) and passes an addition as a constant, so when every path from the BN ends in a 1x1
    unpadded conv, b lands in those convs' biases (exact). A path into a CAM (it multiplies its input), a padded conv
    (conv14, 3x3) or anything else leaves the BN in place, as does any a <= 0.
    """
    names = [s.name for s in stages]
    by_name = {s.name: s for s in stages}
    block_of_skip = {skip: i for i, (_, skip) in enumerate(decoder)}

    def after_sum(i: int) -> nn.Module | None:
        """The conv that reads the sum made after decoder block i: block i + 1's squeeze (conv14 for the last)."""
        return getattr(model, decoder[i + 1][0]).squeeze.conv if i + 1 < len(decoder) else None

    def main_path_consumers(name: str) -> list[nn.Module | None]:
        i = names.index(name)
        if i + 1 == len(names):
            return [getattr(model, decoder[0][0]).squeeze.conv]
        nxt = getattr(model, names[i + 1])
        if isinstance(nxt, Fire | FireDeconv):
            return [nxt.squeeze.conv]
        if by_name[names[i + 1]].op == "maxpool" and not by_name[names[i + 1]].skip:
            return main_path_consumers(names[i + 1])
        return [None]

    sites: list[tuple[nn.Module, list[nn.Module | None]]] = []
    for i, (block, _) in enumerate(decoder):
        sites.append((getattr(model, block), [after_sum(i)]))
    for s in stages:
        if s.skip and s.name in block_of_skip:
            sites.append((getattr(model, s.name), main_path_consumers(s.name) + [after_sum(block_of_skip[s.name])]))
    for module, consumers in sites:
        bn = _post_bn(module)
        if bn is None or not all(c is not None and _is_1x1(c) for c in consumers):
            continue
        a, b = _affine(bn)
        if not bool((a > 0).all()):
            continue
        _scale_back(module, a)
        for conv in consumers:
            _shift_into(conv, b)
        _drop_post_bn(module)


@torch.no_grad()
def _fold_into_cams(model: nn.Module, stages: list[Any]) -> None:
    """Fold the post-ReLU BN of each main-path stage that only a CAM reads (not a skip: the CAM after it takes its
    skip over; SqueezeSegV2's conv1, fire2 and fire3) into that CAM (ShiftedContextAggregation), where every a > 0."""
    for stage, nxt in zip(stages, stages[1:], strict=False):
        module, cam = getattr(model, stage.name), getattr(model, nxt.name)
        bn = _post_bn(module)
        if bn is None or stage.skip or not isinstance(cam, ContextAggregation):
            continue
        a, b = _affine(bn)
        if not bool((a > 0).all()):
            continue
        _scale_back(module, a)
        _drop_post_bn(module)
        setattr(model, nxt.name, ShiftedContextAggregation(cam, b))


def describe(result: FoldResult) -> dict[str, Any]:
    return {"batch_norm_folded": result.folded, "batch_norm_remaining": result.remaining}
