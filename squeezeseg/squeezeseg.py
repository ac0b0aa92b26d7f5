"""SqueezeSeg (Wu, Wan, Yue, Keutzer, ICRA 2018): LiDAR point segmentation on a spherical range image.

The network follows the released TensorFlow code (reference/models.md 2.3): a SqueezeNet encoder that
downsamples the *width only* (every conv and pool strides (1, 2), TF 'SAME' padding; the 64 laser rings
are kept), a decoder of FireDeconv blocks that double the width back, added (not concatenated) to the
encoder features of the same width, dropout, a 3x3 classifier and a recurrent CRF (squeezeseg/crf.py).

Shapes for a (B, 5, 64, 512) input:
    conv1 3x3/(1,2) 64 ........ (64, 64, 256)     conv1_skip 1x1 64 on the input ... (64, 64, 512)
    pool1 3x3/(1,2) ........... (64, 64, 128)     fire2, fire3 s16 e64 e64 ......... (128, 64, 128)
    pool3 ..................... (128, 64, 64)     fire4, fire5 s32 e128 e128 ....... (256, 64, 64)
    pool5 ..................... (256, 64, 32)     fire6, fire7 s48 e192 e192; fire8, fire9 s64 e256 e256 (512, 64, 32)
    fire_deconv10 s64 e128 e128 + fire5 ........ (256, 64, 64)
    fire_deconv11 s32 e64 e64 + fire3 .......... (128, 64, 128)
    fire_deconv12 s16 e32 e32 + conv1 .......... (64, 64, 256)
    fire_deconv13 s16 e32 e32 + conv1_skip ..... (64, 64, 512)
    dropout -> conv14 3x3 -> K logits -> recurrent CRF (3 iterations) ........ (K, 64, 512)

Model contract (shared with SqueezeSegV2 and relied on by the trainer):
    forward(inputs (B, C, H, W) float normalised channels, mask (B, H, W) bool, labels (B, H, W) int64 | None)
    - training mode: labels required; returns {"seg_loss": scalar};
    - eval mode: returns one SegPrediction per sample.
    logits(inputs, mask) -> (B, K, H, W): the final output before the softmax, CRF included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from squeeze.fire import ConvReLU, Fire, FireDeconv, SameMaxPool2d, init_conv_
from squeezeseg.crf import CRF_MODES, RecurrentCRF
from squeezeseg.loss import weighted_cross_entropy

# Parameter count of the paper configuration (5 input channels, 4 classes), from the layer table, biases included:
#   conv1 3x3 5->64: 5*9*64 + 64 = 2,944; conv1_skip 1x1 5->64: 384
#   Fire(c, s, e1, e3) = (c*s + s) + (s*e1 + e1) + (9*s*e3 + e3):
#     fire2 11,408  fire3 12,432  fire4 45,344  fire5 49,440  fire6 104,880  fire7 111,024  fire8 188,992
#     fire9 197,184  (encoder fires 720,704)
#   FireDeconv adds the dense 1x4 transposed conv s->s: 4*s*s + s:
#     fire_deconv10 131,456  fire_deconv11 32,960  fire_deconv12 8,288  fire_deconv13 7,264  (179,968)
#   conv14 3x3 64->4: 2,308
#   network total 906,308 (the reference's "~906k"), plus the CRF's two 4x4 compatibility matrices: 32.
PAPER_CONV_PARAMS = 906_308
PAPER_CRF_PARAMS = 32

# The width is halved four times (conv1, pool1, pool3, pool5) and doubled back four times.
WIDTH_MULTIPLE = 16

KITTI_CLASSES = ("unknown", "car", "pedestrian", "cyclist")


@dataclass
class SegPrediction:
    """One sample's segmentation."""

    classes: Tensor  # (H, W) int64 predicted class index; 0 on empty pixels (as the reference masks it)
    probs: Tensor  # (K, H, W) float32 softmax probabilities; all 0 on empty pixels


@dataclass(frozen=True)
class SqueezeSegConfig:
    class_names: tuple[str, ...] = KITTI_CLASSES  # label i is class_names[i]; 0 is unknown/background
    in_channels: int = 5  # normalised input channels: x, y, z, intensity, range (reference/models.md 2.2)
    crf_xyz_channels: tuple[int, int, int] = (0, 1, 2)  # input channels holding normalised x, y, z for the CRF
    height: int = 64  # nominal rows (laser rings); any height works
    width: int = 512  # nominal columns (front 90 degrees); any multiple of 16 works
    use_crf: bool = True  # the paper's recurrent CRF after conv14
    crf_iterations: int = 3  # mean-field iterations (RCRF_ITER)
    crf_window: tuple[int, int] = (3, 5)  # rows x cols of the CRF neighbourhood (LCN_HEIGHT x LCN_WIDTH)
    crf_theta_a: tuple[float, ...] = (0.9, 0.9, 0.6, 0.6)  # per class: angular Gaussian scale, pixels (ANG_THETA_A)
    crf_bilateral_theta_a: tuple[float, ...] = (0.9, 0.9, 0.6, 0.6)  # per class: bilateral's angular scale
    crf_theta_r: tuple[float, ...] = (0.015, 0.015, 0.01, 0.01)  # per class: bilateral scale, normalised xyz units
    crf_angular_compat: float = 0.02  # angular compatibility init, times (1 - I) (ANG_FILTER_COEF)
    crf_bilateral_compat: float = 0.1  # bilateral compatibility init, times (1 - I) (BI_FILTER_COEF)
    # "textbook" (CRF-as-RNN, logits minus messages) is the default because it trains: on the simulated world in one
    # CPU hour SqueezeSeg reached car IoU 0.888 with it and 0.628 with "reference" (the released code's form, which
    # adds messages to probabilities and so feeds near-uniform scores to the loss); bench/bench_seg_learning.py.
    crf_mode: str = "textbook"
    dropout_keep: float = 0.5  # keep probability of the dropout before conv14 (training only)
    class_weights: tuple[float, ...] = (1 / 15, 1.0, 10.0, 10.0)  # per class loss weight (CLS_LOSS_WEIGHT)
    loss_coef: float = 15.0  # the loss is multiplied by this (CLS_LOSS_COEF); scales it against weight decay
    fire_init_std: float | None = None  # fire2-9: None = He-normal, standing in for the ImageNet weights
    decoder_init_std: float = 0.1  # FireDeconv squeeze/expand truncated-normal std (reference: 0.1)
    classifier_init_std: float = 0.1  # conv14 truncated-normal std (reference: 0.1)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __post_init__(self) -> None:
        check_common_config(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SqueezeSegConfig:
        """Rebuild from `dataclasses.asdict` output (lists from JSON become tuples); unknown keys are an error."""
        return config_from_dict(cls, values)


def squeezeseg_kitti() -> SqueezeSegConfig:
    """The paper's model: KITTI front 90 degrees, 64 x 512, 5 channels, 4 classes, CRF on."""
    return SqueezeSegConfig()


def squeezeseg_kitti_360() -> SqueezeSegConfig:
    """The same network on full 360-degree scans, 64 x 2048 (the CRF and weights are size-independent)."""
    return SqueezeSegConfig(width=2048)


class SqueezeSeg(nn.Module):
    """SqueezeSeg; see the module docstring for the layer table and the forward contract."""

    def __init__(self, config: SqueezeSegConfig) -> None:
        super().__init__()
        self.config = c = config
        std = c.fire_init_std
        self.conv1 = ConvReLU(c.in_channels, 64, 3, stride=(1, 2), xavier=True)
        self.conv1_skip = ConvReLU(c.in_channels, 64, 1, xavier=True)
        self.pool1 = SameMaxPool2d(3, (1, 2))
        self.fire2 = Fire(64, 16, 64, 64, init_std=std)
        self.fire3 = Fire(128, 16, 64, 64, init_std=std)
        self.pool3 = SameMaxPool2d(3, (1, 2))
        self.fire4 = Fire(128, 32, 128, 128, init_std=std)
        self.fire5 = Fire(256, 32, 128, 128, init_std=std)
        self.pool5 = SameMaxPool2d(3, (1, 2))
        self.fire6 = Fire(256, 48, 192, 192, init_std=std)
        self.fire7 = Fire(384, 48, 192, 192, init_std=std)
        self.fire8 = Fire(384, 64, 256, 256, init_std=std)
        self.fire9 = Fire(512, 64, 256, 256, init_std=std)
        dstd = c.decoder_init_std
        self.fire_deconv10 = FireDeconv(512, 64, 128, 128, init_std=dstd)
        self.fire_deconv11 = FireDeconv(256, 32, 64, 64, init_std=dstd)
        self.fire_deconv12 = FireDeconv(128, 16, 32, 32, init_std=dstd)
        self.fire_deconv13 = FireDeconv(64, 16, 32, 32, init_std=dstd)
        self.dropout = nn.Dropout(1.0 - c.dropout_keep)
        self.conv14 = nn.Conv2d(64, c.num_classes, 3, padding=1)  # stride 1: TF 'SAME' is symmetric
        init_conv_(self.conv14, c.classifier_init_std)
        self.crf = build_crf(c) if c.use_crf else None
        # NHWC ("channels_last") lets oneDNN run every conv without reordering activations (1.5-2x on CPU).
        self.to(memory_format=torch.channels_last)

    def logits(self, inputs: Tensor, mask: Tensor) -> Tensor:
        """(B, C, H, W) normalised inputs, (B, H, W) bool mask -> (B, K, H, W) output before the softmax."""
        check_inputs(inputs, mask, self.config.in_channels)
        x = inputs.contiguous(memory_format=torch.channels_last)
        conv1 = self.conv1(x)  # (B, 64, H, W/2)
        conv1_skip = self.conv1_skip(x)  # (B, 64, H, W)
        fire3 = self.fire3(self.fire2(self.pool1(conv1)))  # (B, 128, H, W/4)
        fire5 = self.fire5(self.fire4(self.pool3(fire3)))  # (B, 256, H, W/8)
        x = self.fire9(self.fire8(self.fire7(self.fire6(self.pool5(fire5)))))  # (B, 512, H, W/16)
        x = self.fire_deconv10(x) + fire5  # (B, 256, H, W/8)
        x = self.fire_deconv11(x) + fire3  # (B, 128, H, W/4)
        x = self.fire_deconv12(x) + conv1  # (B, 64, H, W/2)
        x = self.fire_deconv13(x) + conv1_skip  # (B, 64, H, W)
        x = self.conv14(self.dropout(x)).contiguous()  # (B, K, H, W), back to NCHW
        if self.crf is not None:
            x = self.crf(x, xyz_channels(inputs, self.config.crf_xyz_channels), mask)
        return x

    def forward(self, inputs: Tensor, mask: Tensor,
                labels: Tensor | None = None) -> dict[str, Tensor] | list[SegPrediction]:
        out = self.logits(inputs, mask)
        if not self.training:
            return predictions_from_logits(out, mask)
        check_labels(labels, mask, self.config.num_classes)
        weights = torch.tensor(self.config.class_weights, dtype=out.dtype, device=out.device)
        return {"seg_loss": weighted_cross_entropy(out, labels, mask, weights, self.config.loss_coef)}

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups: conv kernels (bilinear deconvs included) decayed; biases, BN, CRF compat not."""
        return param_groups(self, weight_decay)


# ---------------------------------------------------------------------------------------------------------
# Shared by SqueezeSeg and SqueezeSegV2.


def check_common_config(c: Any) -> None:
    """Validate the fields both configs share; errors name the field."""
    k = len(c.class_names)
    if k < 2:
        raise ValueError(f"class_names needs at least 2 classes (background first), got {c.class_names!r}")
    if len(set(c.class_names)) != k:
        raise ValueError(f"class_names has duplicates: {c.class_names!r}")
    per_class = ["class_weights", "crf_theta_a", "crf_bilateral_theta_a", "crf_theta_r"]
    per_class += ["class_prior"] if hasattr(c, "class_prior") else []
    for name in per_class:
        if len(getattr(c, name)) != k:
            raise ValueError(f"{name} has {len(getattr(c, name))} values but there are {k} classes "
                             f"{c.class_names!r}; give one per class")
    if c.in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {c.in_channels}")
    if c.use_crf and (len(c.crf_xyz_channels) != 3 or not all(0 <= i < c.in_channels for i in c.crf_xyz_channels)):
        raise ValueError(f"crf_xyz_channels must be 3 input channel indices below in_channels={c.in_channels}, "
                         f"got {c.crf_xyz_channels!r}")
    if c.height < 1 or c.width < WIDTH_MULTIPLE or c.width % WIDTH_MULTIPLE:
        raise ValueError(f"height must be >= 1 and width a positive multiple of {WIDTH_MULTIPLE}, "
                         f"got {c.height} x {c.width}")
    if c.crf_mode not in CRF_MODES:
        raise ValueError(f"crf_mode must be one of {CRF_MODES}, got {c.crf_mode!r}")
    if not 0.0 < c.dropout_keep <= 1.0:
        raise ValueError(f"dropout_keep must be in (0, 1], got {c.dropout_keep}")
    if any(w < 0 for w in c.class_weights):
        raise ValueError(f"class_weights must be non-negative, got {c.class_weights!r}")


def config_from_dict(cls: type, values: Mapping[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def build_crf(c: Any) -> RecurrentCRF:
    return RecurrentCRF(c.num_classes, c.crf_iterations, c.crf_window, c.crf_theta_a, c.crf_bilateral_theta_a,
                        c.crf_theta_r, c.crf_angular_compat, c.crf_bilateral_compat, c.crf_mode)


def xyz_channels(inputs: Tensor, idx: tuple[int, int, int]) -> Tensor:
    """The (B, 3, H, W) normalised x, y, z channels; a view when they are consecutive."""
    if idx[1] == idx[0] + 1 and idx[2] == idx[0] + 2:
        return inputs[:, idx[0]:idx[0] + 3]
    return inputs[:, list(idx)]


def check_inputs(inputs: Tensor, mask: Tensor, in_channels: int) -> None:
    """Clear errors for inputs the network cannot take (instead of a shape error deep inside)."""
    if not isinstance(inputs, Tensor) or inputs.dim() != 4 or not inputs.is_floating_point():
        raise ValueError(f"inputs must be a float tensor (B, C, H, W), got {_describe(inputs)}")
    b, c, h, w = inputs.shape
    if c != in_channels:
        raise ValueError(f"inputs have {c} channels but the model was configured for in_channels={in_channels}")
    if w % WIDTH_MULTIPLE or w == 0 or h == 0:
        raise ValueError(f"input width must be a positive multiple of {WIDTH_MULTIPLE} (the encoder halves it "
                         f"4 times), got {h} x {w}")
    if not isinstance(mask, Tensor) or mask.shape != (b, h, w) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {(b, h, w)}, got {_describe(mask)}")


def check_labels(labels: Tensor | None, mask: Tensor, num_classes: int) -> None:
    if labels is None:
        raise ValueError("training mode needs labels (B, H, W) int64; call model.eval() for predictions")
    if not isinstance(labels, Tensor) or labels.shape != mask.shape or labels.dtype != torch.int64:
        raise ValueError(f"labels must be an int64 tensor of shape {tuple(mask.shape)}, got {_describe(labels)}")
    valid = labels[mask]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= num_classes):
        raise ValueError(f"labels on valid pixels must be in [0, {num_classes}), got [{int(valid.min())}, "
                         f"{int(valid.max())}]")


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"{x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__


def predictions_from_logits(logits: Tensor, mask: Tensor) -> list[SegPrediction]:
    """The reference's output: probs = softmax(logits) * mask, classes = argmax (so 0 where empty)."""
    probs = torch.softmax(logits, dim=1) * mask[:, None]  # (B, K, H, W), 0 where empty
    classes = probs.argmax(dim=1).masked_fill_(~mask, 0)  # (B, H, W) int64
    return [SegPrediction(classes=classes[i], probs=probs[i].float()) for i in range(logits.shape[0])]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two optimizer groups as the references apply weight decay (L2 on conv kernels only).

    Decayed: every Conv2d / ConvTranspose2d kernel, the bilinear FireDeconv kernels and CAM convs included.
    Not decayed: biases, BatchNorm gamma/beta, CRF compatibility matrices. Frozen parameters are left out.
    """
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if id(p) in kernels else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
