"""Fold SqueezeSegV2's post-ReLU BatchNorm into the convolutions that follow it, exactly, for export.

SqueezeSegV2 keeps BN *after* the ReLU, as the reference does (conv + bias -> ReLU -> BN, squeeze.fire), so BN
cannot fold into the conv before it. Left in the graph, each BN is a float affine between two convolutions that an
INT8 runtime cannot fuse (issue 11: 26 of them made onnxruntime's INT8 SqueezeSegV2 3.5x slower than a port).
The affine y = a * r + b (per channel; r the ReLU output, a = gamma / sqrt(var + eps), b = beta - mean * a) folds
into a FOLLOWING convolution: conv(W, y) = conv(W * a, r) + (the b term). The b term is where padding matters:

- a 1x1 unpadded conv sees b at every tap, so the b term is a constant bias, sum_c W[:, c] * b[c]: exact;
- a padded conv (Fire's 3x3 expand, zero padding 1) or FireDeconv's transposed conv sees b only inside the image:
  the zero padding stands for a BN output of 0, not for b, so a bias would be wrong on the border pixels. Here the
  b term rides on an extra input channel that is 1 inside the image and 0 in the padding, exactly the support of b:
  the conv before the BN (Fire's squeeze) gets one more output channel with weight 0 and bias 1 (ReLU(1) = 1), and
  the following conv gets that channel's kernel, sum_c W[:, c] * b[c]. Exact at every pixel, for any sign of a,
  at the cost of one more input channel (+1/16 to +1/64 of those convs' work).

What folds (`fold_post_relu_batch_norm`): the squeeze BN of every Fire and FireDeconv (into its expand convs or its
transposed conv), and the output BN of a Fire or conv stage whose only consumer is the next Fire's 1x1 squeeze (in
the trunk, and from the trunk's last stage into the first decoder block). What stays: a BN whose output also feeds
a CAM (it multiplies the BN output itself), a skip connection (added to another tensor first) or a max-pool. For the
paper's SqueezeSegV2, 17 of the 26 BNs fold and 9 stay (conv1, conv1_skip, fire2, fire3, fire5 and the four decoder
expands). tests/test_deploy_export.py checks the folded network against the original, border pixels included.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from squeeze.fire import ConvReLU, Fire, FireDeconv

__all__ = ["FoldResult", "count_batch_norms", "fold_post_relu_batch_norm"]


class FoldResult(NamedTuple):
    model: nn.Module  # a folded copy in eval mode (the input model is not changed)
    folded: int  # BatchNorms folded away
    remaining: int  # BatchNorms left in the network


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


def _fold_into_expand(fire: Fire | FireDeconv) -> None:
    """Fold the squeeze's post-ReLU BN into what reads the squeeze (see the module docstring)."""
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


@torch.no_grad()
def fold_post_relu_batch_norm(model: nn.Module) -> FoldResult:
    """A copy of a SqueezeSegV2 (config.backbone, decoder_skips) with its post-ReLU BNs folded where exact.

    The copy computes the same logits as `model` in eval mode up to float rounding, on every pixel. A model
    without post-ReLU BN (SqueezeSeg, SqueezeDet) comes back as an unchanged copy.
    """
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
    # 2. Every Fire / FireDeconv squeeze BN into the convs that read it.
    for module in out.modules():
        if isinstance(module, Fire | FireDeconv) and module.squeeze.bn is not None and \
                not module.squeeze.bn_before_relu:
            _fold_into_expand(module)
    after = count_batch_norms(out)
    return FoldResult(out.to(memory_format=torch.contiguous_format), before - after, after)


def describe(result: FoldResult) -> dict[str, Any]:
    return {"batch_norm_folded": result.folded, "batch_norm_remaining": result.remaining}
