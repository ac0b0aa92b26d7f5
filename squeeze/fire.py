"""Fire blocks shared by the Squeeze family (SqueezeNet, SqueezeDet, SqueezeSeg, SqueezeSegV2).

A Fire block (Iandola et al. 2016, SqueezeNet section 3.2; reference/models.md 1.2) is a 1x1 "squeeze"
conv to `s` channels followed by two parallel "expand" convs, 1x1 to `e1` and 3x3 to `e3` channels,
concatenated to `e1 + e3` channels. Every conv has a bias and a ReLU.

Variants the ports need:
- BatchNorm as SqueezeSegV2 codes it: conv + bias -> ReLU -> BN (reference/models.md 3.1), BN *after* the ReLU.
- ContextAggregation (CAM, SqueezeSegV2, reference/models.md 3.1): a 7x7 max-pool gate on each channel.
- FireDeconv (SqueezeSeg, reference/models.md 2.3): a width-doubling transposed conv between squeeze and
  expand, initialised as a bilinear upsampler.
- TensorFlow "SAME" padding for strided convs and pools. TF pads `max((ceil(n / s) - 1) * s + k - n, 0)` in
  total and puts the odd pixel after (`before = total // 2`), so a 3x3 stride-2 window on an even size pads
  0 before and 1 after. PyTorch's symmetric `padding=1` would shift every output by one input pixel.

Initialisation: the originals load ImageNet SqueezeNet weights into the trunk and draw new layers from a
truncated normal (TF `truncated_normal_initializer`, cut at 2 std). `init_std=None` stands in for the
ImageNet weights with He-normal kernels, which keep the activation scale through a deep stack without BN.

Nothing here knows about a particular network; squeeze.backbone assembles these blocks into trunks from a spec.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The bilinear taps of a 1x4 stride-2 transposed conv: each input pixel spreads 1/4, 3/4, 3/4, 1/4 over
# the four output pixels around it, which is linear interpolation at half-pixel centres.
BILINEAR_TAPS_X2 = (0.25, 0.75, 0.75, 0.25)


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    first, second = value
    return int(first), int(second)


def tf_same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding TensorFlow's 'SAME' uses along one axis of length `size`.

    The output has ceil(size / stride) samples; the total padding is whatever the last window needs,
    and the odd pixel goes after. 3x3 stride 2 on 512: (0, 1) -> 256 outputs; 3x3 stride 1: (1, 1).
    """
    if size <= 0 or kernel <= 0 or stride <= 0 or dilation <= 0:
        raise ValueError(f"size, kernel, stride, dilation must be positive, got {size}, {kernel}, {stride}, {dilation}")
    out = -(-size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def tf_same_output_size(size: int, stride: int) -> int:
    """Output length of a TF 'SAME' conv or pool: ceil(size / stride)."""
    return -(-size // stride)


class SameConv2d(nn.Conv2d):
    """nn.Conv2d with TensorFlow 'SAME' padding computed from the input size.

    The symmetric part of the padding is passed to the convolution itself (no copy); only an uneven
    remainder (the extra pixel after, for even sizes with stride 2) is added with F.pad.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        top, bottom = tf_same_pads(x.shape[-2], kh, sh)
        left, right = tf_same_pads(x.shape[-1], kw, sw)
        pad_h, pad_w = min(top, bottom), min(left, right)
        if (top, left) != (bottom, right):
            x = F.pad(x, (left - pad_w, right - pad_w, top - pad_h, bottom - pad_h))
        return F.conv2d(x, self.weight, self.bias, self.stride, (pad_h, pad_w))


class SameMaxPool2d(nn.Module):
    """Max-pool with TensorFlow 'SAME' padding (padded cells never win, as in TF).

    When TF's padding is (p, p) or (p, p + 1) along an axis, PyTorch's `ceil_mode` with `padding=p` yields
    exactly TF's windows without copying the input; any other case pads with -inf explicitly.
    """

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int]) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)

    def forward(self, x: Tensor) -> Tensor:
        pads, fits = [], True
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride, strict=True):
            before, after = tf_same_pads(size, k, s)
            ceil_out = -(-(size + 2 * before - k) // s) + 1
            if (ceil_out - 1) * s >= size + before:  # PyTorch drops a last window that starts in the padding
                ceil_out -= 1
            fits = fits and before <= k // 2 and ceil_out == tf_same_output_size(size, s)
            pads.append((before, after))
        (top, bottom), (left, right) = pads
        if fits:
            return F.max_pool2d(x, self.kernel_size, self.stride, (top, left), ceil_mode=True)
        x = F.pad(x, (left, right, top, bottom), value=-math.inf)
        return F.max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


@dataclass(frozen=True)
class BatchNormSpec:
    """BatchNorm settings. TF's moving-average decay d is PyTorch's momentum 1 - d."""

    momentum: float = 0.001  # SqueezeSegV2: TF decay 0.999
    eps: float = 1e-5  # SqueezeSegV2: BATCH_NORM_EPSILON
    # False: conv -> ReLU -> BN (SqueezeSegV2's order). True: conv -> BN -> ReLU, which folds exactly into the
    # conv after training (squeeze.fire.fold_batch_norm_), so BN can serve as a training aid only.
    before_relu: bool = False


def init_conv_(conv: nn.Conv2d | nn.ConvTranspose2d, std: float | None, bias: float = 0.0) -> None:
    """Initialise a conv: truncated normal (cut at +-2 std, like TF) with `std`, or He-normal when None."""
    if std is None:
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
    else:
        nn.init.trunc_normal_(conv.weight, std=std, a=-2.0 * std, b=2.0 * std)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, bias)


def init_xavier_(conv: nn.Conv2d, bias: float = 0.0) -> None:
    """Glorot-uniform kernel (TF `xavier_initializer_conv2d`: fans include the kernel area) and constant bias."""
    nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, bias)


def init_bilinear_upsampler_(deconv: nn.ConvTranspose2d) -> None:
    """Make a (1, 4) stride-(1, 2) transposed conv a per-channel bilinear x2 upsampler along the width.

    Kernel: identity across channels with taps BILINEAR_TAPS_X2; bias 0. It stays trainable.
    """
    cin, cout, kh, kw = deconv.weight.shape
    if cin != cout or (kh, kw) != (1, 4) or tuple(deconv.stride) != (1, 2):
        raise ValueError(f"bilinear init needs a square (1, 4) stride-(1, 2) transposed conv, got {deconv}")
    with torch.no_grad():
        deconv.weight.zero_()
        taps = torch.tensor(BILINEAR_TAPS_X2, dtype=deconv.weight.dtype)
        idx = torch.arange(cin)
        deconv.weight[idx, idx, 0, :] = taps
        if deconv.bias is not None:
            deconv.bias.zero_()


class ConvReLU(nn.Module):
    """Conv (with bias) -> ReLU -> optional BatchNorm (SqueezeSegV2's order; `bn.before_relu` puts it first).

    padding "same": TF 'SAME' (SameConv2d); "valid": none (SqueezeDet+'s conv1).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 1,
                 stride: int | Sequence[int] = 1, bn: BatchNormSpec | None = None, init_std: float | None = None,
                 xavier: bool = False, padding: str = "same") -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.conv = SameConv2d(in_channels, out_channels, kernel_size, stride) if padding == "same" else \
            nn.Conv2d(in_channels, out_channels, kernel_size, stride)
        self.bn = None if bn is None else nn.BatchNorm2d(out_channels, eps=bn.eps, momentum=bn.momentum)
        self.bn_before_relu = bn is not None and bn.before_relu
        if xavier:
            init_xavier_(self.conv)
        else:
            init_conv_(self.conv, init_std)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None and self.bn_before_relu:
            return F.relu(self.bn(x), inplace=True)
        x = F.relu(x, inplace=True)
        return x if self.bn is None else self.bn(x)


class _Expand(nn.Module):
    """The two expand branches of a Fire block, concatenated and rectified.

    With BN the reference normalises each branch separately; BatchNorm statistics are per channel, so one
    BatchNorm2d over the concatenation is the same computation with one call instead of two.
    """

    def __init__(self, s: int, e1: int, e3: int, bn: BatchNormSpec | None, init_std: float | None) -> None:
        super().__init__()
        if min(s, e1, e3) <= 0:
            raise ValueError(f"Fire widths must be positive, got s={s}, e1={e1}, e3={e3}")
        self.expand1x1 = nn.Conv2d(s, e1, 1)
        self.expand3x3 = nn.Conv2d(s, e3, 3, padding=1)  # stride 1: TF 'SAME' is symmetric
        self.bn = None if bn is None else nn.BatchNorm2d(e1 + e3, eps=bn.eps, momentum=bn.momentum)
        self.bn_before_relu = bn is not None and bn.before_relu
        init_conv_(self.expand1x1, init_std)
        init_conv_(self.expand3x3, init_std)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.cat((self.expand1x1(x), self.expand3x3(x)), dim=1)
        if self.bn is not None and self.bn_before_relu:
            return F.relu(self.bn(out), inplace=True)
        # ReLU after the concatenation equals ReLU on each branch; in place on the fresh concat buffer.
        out = F.relu(out, inplace=True)
        return out if self.bn is None else self.bn(out)


class Fire(nn.Module):
    """squeeze 1x1 (s) -> ReLU [-> BN] -> expand 1x1 (e1) || expand 3x3 (e3) -> concat -> ReLU [-> BN].

    Stride-free: downsampling is the caller's pools. Input (B, in, H, W) -> output (B, e1 + e3, H, W).
    `bn` None: plain SqueezeNet/SqueezeDet/SqueezeSeg; a BatchNormSpec: SqueezeSegV2 (BN after each ReLU).
    """

    def __init__(self, in_channels: int, s: int, e1: int, e3: int, bn: BatchNormSpec | None = None,
                 init_std: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, e1 + e3
        self.squeeze = ConvReLU(in_channels, s, 1, bn=bn, init_std=init_std)
        self.expand = _Expand(s, e1, e3, bn, init_std)

    def forward(self, x: Tensor) -> Tensor:
        return self.expand(self.squeeze(x))


class FireDeconv(nn.Module):
    """squeeze 1x1 (s) -> transposed conv (1, 4) stride (1, 2) s -> s + ReLU -> expand 1x1 || 3x3.

    Doubles the width and keeps the height (SqueezeSeg's decoder, reference/models.md 2.3). The transposed
    conv is initialised as a bilinear upsampler and stays trainable; it has no BN even in SqueezeSegV2.
    Its `padding=(0, 1)` crops one column each side, which is TF's 'SAME' for output width 2W.
    Input (B, in, H, W) -> output (B, e1 + e3, H, 2W).
    """

    def __init__(self, in_channels: int, s: int, e1: int, e3: int, bn: BatchNormSpec | None = None,
                 init_std: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, e1 + e3
        self.squeeze = ConvReLU(in_channels, s, 1, bn=bn, init_std=init_std)
        self.deconv = nn.ConvTranspose2d(s, s, (1, 4), stride=(1, 2), padding=(0, 1))
        init_bilinear_upsampler_(self.deconv)
        self.expand = _Expand(s, e1, e3, bn, init_std)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.deconv(self.squeeze(x)), inplace=True)
        return self.expand(x)


class ContextAggregation(nn.Module):
    """CAM (SqueezeSegV2 section III.A): gate each channel by the context of a 7x7 max-pooled window.

    x (B, C, H, W) -> x * sigmoid(conv(relu(conv(maxpool7x7(x))))), the convs 1x1 C -> C/r -> C, Xavier init.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"CAM needs channels // reduction >= 1, got {channels} // {reduction}")
        # 7x7 max = 7x1 max of 1x7 maxes (14 comparisons a pixel instead of 49); stride 1, so TF 'SAME' is
        # symmetric and the implicit -inf padding never wins, as in TF.
        self.pool_rows = nn.MaxPool2d((1, 7), stride=1, padding=(0, 3))
        self.pool_cols = nn.MaxPool2d((7, 1), stride=1, padding=(3, 0))
        self.squeeze = nn.Conv2d(channels, channels // reduction, 1)
        self.excite = nn.Conv2d(channels // reduction, channels, 1)
        init_xavier_(self.squeeze)
        init_xavier_(self.excite)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.excite(torch.relu_(self.squeeze(self.pool_cols(self.pool_rows(x)))))
        return x * torch.sigmoid(gate)


@torch.no_grad()
def fold_batch_norm_(convs: Sequence[nn.Conv2d], bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm into the conv(s) right before it (their outputs concatenated, in order).

    BN(y) = (y - mean) * gamma / sqrt(var + eps) + beta per channel, so the conv's kernel is scaled by
    gamma / sqrt(var + eps) and its bias becomes (b - mean) * gamma / sqrt(var + eps) + beta: exact, as long as
    nothing stands between conv and BN (the before_relu order). The BN module itself is left to the caller.
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    start = 0
    for conv in convs:
        n = conv.out_channels
        s, t = scale[start:start + n], shift[start:start + n]
        bias = conv.bias if conv.bias is not None else torch.zeros(n, device=s.device)
        conv.weight.mul_(s.view(-1, 1, 1, 1).to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(bias * s + t)
        else:
            conv.bias.copy_(bias * s + t)
        start += n
    if start != bn.num_features:
        raise ValueError(f"the convs have {start} output channels, the BatchNorm {bn.num_features}")


def conv_macs(module: nn.Module, run: Callable[[], object]) -> int:
    """Multiply-accumulates of every Conv2d / ConvTranspose2d in `module` during one call of `run`.

    Counts kernel MACs only (no bias, activations, pools, CRF), the usual convention for FLOPs = 2 x MACs.
    """
    total = 0

    def hook(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.ConvTranspose2d):  # every input pixel meets the whole kernel
            total += inputs[0].numel() * mod.weight[0].numel()
        else:
            total += out.numel() * mod.weight[0].numel()

    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return total
