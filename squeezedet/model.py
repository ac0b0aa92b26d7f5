"""SqueezeDet and SqueezeDet+ (Wu, Iandola, Jin, Keutzer, CVPR-W 2017): a SqueezeNet trunk and a ConvDet head.

The networks follow the released TensorFlow code (reference/models.md 1.2; BichenWuUCB/squeezeDet
src/nets/squeezeDet.py, squeezeDetPlus.py). Every conv has a bias and a ReLU (except ConvDet). The trunks are data
(squeeze.backbone): `squeezedet_trunk()`, `squeezedet_plus_trunk()`, or any spec in `config.backbone` (a searched
one from JSON); ConvDet takes the trunk's output channels and the anchor grid its output size.

SqueezeDet, TF 'SAME' padding throughout, shapes (C, H, W) for the 1248 x 384 input::

    conv1 3x3/2 64 (frozen) ........ (64, 192, 624)     pool1 3x3/2 ..................... (64, 96, 312)
    fire2, fire3 s16 e64 e64 ....... (128, 96, 312)     pool3 ........................... (128, 48, 156)
    fire4, fire5 s32 e128 e128 ..... (256, 48, 156)     pool5 ........................... (256, 24, 78)
    fire6, fire7 s48 e192 e192 ..... (384, 24, 78)      fire8, fire9 s64 e256 e256 ...... (512, 24, 78)
    fire10, fire11 s96 e384 e384 ... (768, 24, 78)      dropout 0.5 -> ConvDet 3x3 ...... (72, 24, 78)

SqueezeDet+ (SqueezeNet v1.0 with squeeze ratio 0.75), 'VALID' conv1 and pools, 'SAME' fires and ConvDet,
for the 1242 x 375 input::

    conv1 7x7/2 96 (frozen) ........ (96, 185, 618)     pool1 3x3/2 ..................... (96, 92, 308)
    fire2, fire3 s96 e64 e64 ....... (128, 92, 308)     fire4 s192 e128 e128 ............ (256, 92, 308)
    pool4 .......................... (256, 45, 153)     fire5 s192 e128 e128 ............ (256, 45, 153)
    fire6, fire7 s288 e192 e192 .... (384, 45, 153)     fire8 s384 e256 e256 ............ (512, 45, 153)
    pool8 .......................... (512, 22, 76)      fire9, fire10, fire11 s384 e256 e256 (512, 22, 76)
    dropout 0.5 -> ConvDet 3x3 ..... (72, 22, 76)

ConvDet emits A * (K + 1 + 4) channels per cell (A anchors, K classes) in the reference's NHWC layout:
channels [0, A*K) class logits (channel k*K + c), [A*K, A*K + A) confidence logits (channel A*K + k), then
deltas (channel A*K + A + 4k + d). Reshaped from NHWC, prediction n belongs to anchor n = (row * W + col) * A + k,
the order of squeezedet/anchors.make_anchors.

Model contract (relied on by squeeze/train.py):
    forward(images (B, 3, H, W) float32 normalised, boxes list[(N_i, 4) xyxy pixels] | None,
            labels list[(N_i,) int64] | None)
    - training mode: boxes and labels required; returns {"bbox_loss", "conf_loss", "class_loss"};
    - eval mode: returns one squeeze.predictor.Detections2D per image (numpy, net-input pixels; decoded, per-class
      NMS by squeeze.detection.postprocess, the numpy post-processing every runtime shares).
    raw_outputs(images) -> RawOutputs(deltas (B, N, 4), confidence (B, N), class_probs (B, N, K)) for export.
    param_groups(weight_decay): conv kernels decayed, biases not, the frozen conv1 left out.

Input: BGR images, 0-255, minus `pixel_mean` (no std division), resized to image_width x image_height, as the
reference feeds its caffe-trained trunk (reference/models.md 1.1).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from squeeze.backbone import (
    Backbone,
    SpecError,
    Stage,
    Trunk,
    backbone_from_dict,
    input_stages,
    trunk_output,
    with_batch_norm,
)
from squeeze.classes import DETECTION_CLASSES
from squeeze.detection import NMS_MODES, postprocess
from squeeze.errors import DataError
from squeeze.fire import BatchNormSpec, ConvReLU, Fire, fold_batch_norm_, init_conv_
from squeeze.predictor import Detections2D
from squeezedet.anchors import (
    KITTI_ANCHOR_SHAPES,
    check_anchor_shapes,
    make_anchors,
    read_anchor_file,
)
from squeezedet.loss import build_targets, detection_losses

__all__ = [
    "IMAGENET_MEAN_RGB",
    "IMAGENET_STD_RGB",
    "SQUEEZEDET_KITTI_PARAMS",
    "SQUEEZEDET_PLUS_KITTI_PARAMS",
    "TORCHVISION_LAYERS",
    "PretrainedLoad",
    "RawOutputs",
    "SqueezeDet",
    "SqueezeDetConfig",
    "TRUNKS",
    "at_input_size",
    "load_torchvision_squeezenet",
    "split_convdet_output",
    "squeezedet_kitti",
    "squeezedet_plus_kitti",
    "squeezedet_plus_trunk",
    "squeezedet_trunk",
    "with_anchor_file",
]

logger = logging.getLogger(__name__)

# Parameter counts of the KITTI configs (3 classes, 9 anchors), biases included. A conv k x k, c -> o has
# k*k*c*o + o parameters and Fire(c, s, e1, e3) = (c*s + s) + (s*e1 + e1) + (9*s*e3 + e3):
# SqueezeDet:  conv1 3x3 3->64: 1,792
#   fire2 11,408  fire3 12,432  fire4 45,344  fire5 49,440  fire6 104,880  fire7 111,024  fire8 188,992
#   fire9 197,184  (SqueezeNet v1.1 trunk without its classifier: 722,496)
#   fire10 (512, 96, 384, 384) 418,656  fire11 (768, 96, 384, 384) 443,232  (backbone 1,584,384)
#   ConvDet 3x3 768 -> 9 * (3 + 1 + 4) = 72: 497,736            total 2,082,120 (7.94 MiB fp32, paper "7.9 MB")
# SqueezeDet+: conv1 7x7 3->96: 14,208
#   fire2 (96, 96, 64, 64) 70,880  fire3 (128, 96, 64, 64) 73,952  fire4 (128, 192, 128, 128) 270,784
#   fire5 (256, 192, 128, 128) 295,360  fire6 (256, 288, 192, 192) 627,360  fire7 (384, 288, 192, 192) 664,224
#   fire8 (384, 384, 256, 256) 1,131,392  fire9, fire10, fire11 (512, 384, 256, 256) 1,180,544 each
#   ConvDet 3x3 512 -> 72: 331,848                              total 7,021,640 (26.8 MiB fp32, paper "26.8 MB")
SQUEEZEDET_KITTI_PARAMS = 2_082_120
SQUEEZEDET_PLUS_KITTI_PARAMS = 7_021_640



def squeezedet_trunk() -> Backbone:
    """SqueezeDet's trunk: SqueezeNet v1.1 (conv1 3x3/2, pools 3x3/2, TF 'SAME') plus fire10, fire11, the
    detector's own layers (not in SqueezeNet; they always start from a random init)."""
    pool = {"kernel": 3, "stride": (2, 2)}
    return Backbone("squeezedet", (
        Stage("conv", "conv1", (64,), kernel=3, stride=(2, 2)),
        Stage("maxpool", "pool1", **pool),
        Stage("fire", "fire2", (16, 64, 64)), Stage("fire", "fire3", (16, 64, 64)),
        Stage("maxpool", "pool3", **pool),
        Stage("fire", "fire4", (32, 128, 128)), Stage("fire", "fire5", (32, 128, 128)),
        Stage("maxpool", "pool5", **pool),
        Stage("fire", "fire6", (48, 192, 192)), Stage("fire", "fire7", (48, 192, 192)),
        Stage("fire", "fire8", (64, 256, 256)), Stage("fire", "fire9", (64, 256, 256)),
        Stage("fire", "fire10", (96, 384, 384)), Stage("fire", "fire11", (96, 384, 384)),
    ))


def squeezedet_plus_trunk() -> Backbone:
    """SqueezeDet+'s trunk: SqueezeNet v1.0 with squeeze ratio 0.75 (conv1 7x7/2 and the pools 'VALID', the fires
    'SAME') plus fire10, fire11."""
    pool = {"kernel": 3, "stride": (2, 2), "padding": "valid"}
    return Backbone("squeezedet_plus", (
        Stage("conv", "conv1", (96,), kernel=7, stride=(2, 2), padding="valid"),
        Stage("maxpool", "pool1", **pool),
        Stage("fire", "fire2", (96, 64, 64)), Stage("fire", "fire3", (96, 64, 64)),
        Stage("fire", "fire4", (192, 128, 128)),
        Stage("maxpool", "pool4", **pool),
        Stage("fire", "fire5", (192, 128, 128)), Stage("fire", "fire6", (288, 192, 192)),
        Stage("fire", "fire7", (288, 192, 192)), Stage("fire", "fire8", (384, 256, 256)),
        Stage("maxpool", "pool8", **pool),
        Stage("fire", "fire9", (384, 256, 256)), Stage("fire", "fire10", (384, 256, 256)),
        Stage("fire", "fire11", (384, 256, 256)),
    ))


# The paper trunks by name: `backbone="squeezedet_plus"` and configs saved before the spec existed name them.
TRUNKS = {"squeezedet": squeezedet_trunk, "squeezedet_plus": squeezedet_plus_trunk}


@dataclass(frozen=True)
class SqueezeDetConfig:
    class_names: tuple[str, ...] = DETECTION_CLASSES  # K object classes; label i is class_names[i] (no background)
    image_width: int = 1248  # net input width, pixels (IMAGE_WIDTH); images and boxes are resized to it
    image_height: int = 384  # net input height, pixels (IMAGE_HEIGHT)
    # The trunk as data (squeeze.backbone): squeezedet_trunk() (SqueezeNet v1.1, SAME), squeezedet_plus_trunk() (v1.0
    # SR 0.75, VALID), or a searched one (read_backbone("spec.json")); a name in TRUNKS is replaced by its spec.
    backbone: Backbone = field(default_factory=squeezedet_trunk)
    anchor_shapes: tuple[tuple[float, float], ...] = KITTI_ANCHOR_SHAPES  # A (w, h) pairs, pixels of the net input
    dropout_keep: float = 0.5  # keep probability of the dropout before ConvDet (KEEP_PROB, training only)
    loss_coef_conf_pos: float = 75.0  # confidence loss weight of positive anchors (LOSS_COEF_CONF_POS)
    loss_coef_conf_neg: float = 100.0  # confidence loss weight of negative anchors (LOSS_COEF_CONF_NEG)
    loss_coef_bbox: float = 5.0  # box-delta loss weight (LOSS_COEF_BBOX)
    loss_coef_class: float = 1.0  # classification loss weight (LOSS_COEF_CLASS)
    # Training option, not in the reference: 0 = one anchor per box (the reference); t > 0 also makes every other
    # anchor with IoU >= t with a box a positive of that box (squeezedet.loss; SSD's matching).
    extra_positive_iou: float = 0.0
    exp_thresh: float = 1.0  # safe_exp is linear above this delta (EXP_THRESH)
    epsilon: float = 1e-16  # added to the IoU target's union (EPSILON)
    top_n_detection: int = 64  # anchors kept per image before NMS, best first (TOP_N_DETECTION); <= 0 keeps all
    prob_thresh: float = 0.005  # drop anchors with P(class) x conf at or below this before NMS (PROB_THRESH)
    nms_thresh: float = 0.4  # per-class NMS suppresses IoU above this (NMS_THRESH)
    final_threshold: float = 0.0  # drop detections at or below this after NMS; 0 = keep all (eval); demo uses 0.4
    nms: str = "standard"  # "standard" greedy NMS, "reference": suppressed boxes still suppress (util.nms), or "soft"
    soft_nms_sigma: float = 0.5  # Gaussian Soft-NMS decay exp(-IoU^2 / sigma) when nms = "soft" (Bodla et al. 2017)
    pixel_mean: tuple[float, float, float] = (103.939, 116.779, 123.68)  # BGR means subtracted from 0-255 pixels
    freeze_conv1: bool = True  # conv1 is not trained and not decayed, as in the reference
    # The layers ImageNet weights would fill (conv1, fire2-9 of the paper trunks; the input conv of any trunk), when
    # they start without them: None = He-normal, else truncated-normal std.
    trunk_init_std: float | None = None
    # conv1's random init is multiplied by this. The input is 0-255 pixels minus the mean, not divided by a std (the
    # caffe convention ImageNet weights expect), while He init assumes unit-variance input; from scratch, 1 / (the
    # pixel std) gives the trunk unit-scale activations (see `pixel_std`).
    conv1_init_scale: float = 1.0
    # Every other trunk layer (fire10, fire11 of the paper trunks): truncated-normal std, None = He; zero bias.
    fire_init_std: float | None = 0.01
    # Training aid, not in the reference: BatchNorm between every trunk conv and its ReLU (conv1, fire2-11), which
    # trains far faster without ImageNet weights. `fold_batch_norm` folds it into the convs afterwards, exactly, so
    # the deployed network is plain SqueezeDet (same layers, same parameter count).
    batch_norm: bool = False
    bn_momentum: float = 0.01  # PyTorch momentum of the BN running statistics (TF decay 0.99)
    convdet_init_std: float = 1e-4  # ConvDet truncated-normal std, zero bias

    def __post_init__(self) -> None:
        if isinstance(self.backbone, str):
            if self.backbone not in TRUNKS:
                raise ValueError(f"backbone must be a squeeze.backbone.Backbone or one of {tuple(TRUNKS)}, "
                                 f"got {self.backbone!r}")
            object.__setattr__(self, "backbone", TRUNKS[self.backbone]())  # frozen: set once, here
        if not isinstance(self.backbone, Backbone):
            raise ValueError(f"backbone must be a squeeze.backbone.Backbone, got {type(self.backbone).__name__}")
        if len(self.class_names) < 1 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be non-empty and unique, got {self.class_names!r}")
        check_anchor_shapes(self.anchor_shapes, "anchor_shapes")
        grid_h, grid_w = self.grid
        if grid_h < 1 or grid_w < 1:
            raise ValueError(f"a {self.image_width} x {self.image_height} input is too small for the backbone "
                             f"{self.backbone.name!r}: the ConvDet grid would be {grid_w} x {grid_h}")
        if not 0.0 < self.dropout_keep <= 1.0:
            raise ValueError(f"dropout_keep must be in (0, 1], got {self.dropout_keep}")
        for name in ("loss_coef_conf_pos", "loss_coef_conf_neg", "loss_coef_bbox", "loss_coef_class",
                     "epsilon", "prob_thresh", "final_threshold", "convdet_init_std"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.extra_positive_iou <= 1.0:
            raise ValueError(f"extra_positive_iou must be in [0, 1] (0 = off), got {self.extra_positive_iou}")
        if not 0.0 <= self.nms_thresh <= 1.0:
            raise ValueError(f"nms_thresh must be in [0, 1], got {self.nms_thresh}")
        if self.fire_init_std is not None and not self.fire_init_std > 0:
            raise ValueError(f"fire_init_std must be > 0 or None (He), got {self.fire_init_std}")
        if not 0.0 < self.bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum must be in (0, 1], got {self.bn_momentum}")
        if not self.conv1_init_scale > 0:
            raise ValueError(f"conv1_init_scale must be > 0, got {self.conv1_init_scale}")
        if not self.soft_nms_sigma > 0:
            raise ValueError(f"soft_nms_sigma must be > 0, got {self.soft_nms_sigma}")
        if self.nms not in NMS_MODES:
            raise ValueError(f"nms must be one of {NMS_MODES}, got {self.nms!r}")
        if len(self.pixel_mean) != 3:
            raise ValueError(f"pixel_mean must hold 3 (B, G, R) values, got {self.pixel_mean!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def anchors_per_cell(self) -> int:
        return len(self.anchor_shapes)

    @property
    def grid(self) -> tuple[int, int]:
        """(grid_h, grid_w) of the ConvDet output: the trunk's output size (squeeze.backbone.stage_shapes)."""
        _, grid_h, grid_w = trunk_output(self.backbone, 3, self.image_height, self.image_width)
        return grid_h, grid_w

    @property
    def num_anchors(self) -> int:
        grid_h, grid_w = self.grid
        return grid_h * grid_w * self.anchors_per_cell

    @property
    def convdet_channels(self) -> int:
        return self.anchors_per_cell * (self.num_classes + 1 + 4)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SqueezeDetConfig:
        """Rebuild from `dataclasses.asdict` output (JSON lists become tuples); unknown keys are an error.

        "backbone" is the spec's dict, or a name in TRUNKS (configs saved before the spec), or absent (the default).
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown SqueezeDetConfig fields: {unknown}")

        def tuples(v: Any) -> Any:
            return tuple(tuples(x) for x in v) if isinstance(v, list | tuple) else v

        kwargs = {k: tuples(v) for k, v in values.items() if k != "backbone"}
        if isinstance(values.get("backbone"), Mapping):
            try:
                kwargs["backbone"] = backbone_from_dict(values["backbone"])
            except SpecError as e:
                raise ValueError(f"SqueezeDetConfig.backbone.{e}") from None
        elif "backbone" in values:
            kwargs["backbone"] = values["backbone"]
        return cls(**kwargs)


def squeezedet_kitti() -> SqueezeDetConfig:
    """SqueezeDet on KITTI: 1248 x 384 input, 24 x 78 grid, 9 anchors, car / pedestrian / cyclist."""
    return SqueezeDetConfig()


def squeezedet_plus_kitti() -> SqueezeDetConfig:
    """SqueezeDet+ on KITTI: 1242 x 375 input, 22 x 76 grid, the same 9 anchors and classes."""
    return SqueezeDetConfig(backbone=squeezedet_plus_trunk(), image_width=1242, image_height=375)


def from_scratch(config: SqueezeDetConfig, pixel_std: float) -> SqueezeDetConfig:
    """The init for training without ImageNet weights: every layer at unit activation scale.

    conv1 (random, and frozen as the reference freezes it: 64 random 3x3x3 filters keep a patch's information)
    is scaled by 1 / pixel_std, so the trunk sees unit-scale activations despite the 0-255 input; fire10 and fire11
    take He init instead of the reference's std 0.01, which suits features of ImageNet scale. Without this the
    activations are ~40x too large and AdamW's steps saturate the confidence logits.
    """
    if not pixel_std > 0:
        raise ValueError(f"pixel_std must be > 0, got {pixel_std}")
    return replace(config, conv1_init_scale=1.0 / pixel_std, fire_init_std=None)


@torch.no_grad()
def fold_batch_norm(model: SqueezeDet) -> SqueezeDet:
    """The same network without BatchNorm: every BN (eval statistics) folded into the conv before it.

    Returns a new plain SqueezeDet (config.batch_norm False) in eval mode whose outputs equal the BN model's in eval
    mode up to float rounding; a model without BN is returned as a copy.
    """
    plain = SqueezeDet(replace(model.config, batch_norm=False)).to(next(model.parameters()).device)
    source = {k: v.clone() for k, v in model.state_dict().items()}
    bn_model = copy.deepcopy(model).eval()
    if model.config.batch_norm:
        for module in bn_model.features.children():
            if isinstance(module, ConvReLU) and module.bn is not None:
                fold_batch_norm_([module.conv], module.bn)
            elif isinstance(module, Fire) and module.expand.bn is not None:
                fold_batch_norm_([module.squeeze.conv], module.squeeze.bn)
                fold_batch_norm_([module.expand.expand1x1, module.expand.expand3x3], module.expand.bn)
        source = {k: v for k, v in bn_model.state_dict().items() if ".bn." not in k}
    plain.load_state_dict(source)
    return plain.eval()


def at_input_size(config: SqueezeDetConfig, image_width: int, image_height: int) -> SqueezeDetConfig:
    """`config` for another net input size, its anchor shapes scaled with the image per axis.

    The weights fit both (the network is fully convolutional), so a model can be trained at a reduced size and
    go on at full size: objects and anchors keep their relation, only the grid changes.
    """
    sx, sy = image_width / config.image_width, image_height / config.image_height
    return replace(config, image_width=image_width, image_height=image_height,
                   anchor_shapes=tuple((w * sx, h * sy) for w, h in config.anchor_shapes))


def with_anchor_file(config: SqueezeDetConfig, path: str | Path) -> SqueezeDetConfig:
    """`config` with the anchor shapes of a k-means anchor file, rescaled to the config's input size."""
    shapes = read_anchor_file(path).scaled_to(config.image_width, config.image_height)
    return replace(config, anchor_shapes=tuple((round(w, 4), round(h, 4)) for w, h in shapes))


class RawOutputs(NamedTuple):
    """ConvDet outputs after the activations, anchor n of `SqueezeDet.anchors` in row n (the export interface)."""

    deltas: Tensor  # (B, N, 4) float32 [dx, dy, dw, dh]
    confidence: Tensor  # (B, N) float32 sigmoid confidence in [0, 1]
    class_probs: Tensor  # (B, N, K) float32 softmax class probabilities


def split_convdet_output(preds: Tensor, anchors_per_cell: int, num_classes: int) -> tuple[Tensor, Tensor, Tensor]:
    """(B, A*(K+5), H, W) ConvDet output -> deltas (B, N, 4), conf logits (B, N), class logits (B, N, K).

    N = H * W * A in the anchor order (row, col, k): the reference reshapes its NHWC tensor, so the channel
    axis is moved last before any reshape (a view when the tensor is channels-last in memory).
    """
    b, c, h, w = preds.shape
    a, k = anchors_per_cell, num_classes
    if c != a * (k + 5):
        raise ValueError(f"ConvDet output has {c} channels, expected {a} * ({k} + 5) = {a * (k + 5)}")
    nhwc = preds.permute(0, 2, 3, 1)  # (B, H, W, C)
    class_logits = nhwc[..., : a * k].reshape(b, h * w * a, k)
    conf_logits = nhwc[..., a * k: a * k + a].reshape(b, h * w * a)
    deltas = nhwc[..., a * k + a:].reshape(b, h * w * a, 4)
    return deltas, conf_logits, class_logits


def _imagenet_layers(backbone: Backbone) -> dict[str, int]:
    """{our layer: torchvision `features` index} when `backbone` is a paper trunk, else {} (no ImageNet weights)."""
    name = backbone.name
    return dict(TORCHVISION_LAYERS[name]) if name in TRUNKS and backbone == TRUNKS[name]() else {}


def _rename_legacy_conv1(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """Checkpoints saved before the backbone spec hold conv1 as a bare conv (features.conv1.weight) with its
    BatchNorm beside it (features.bn1.*); the trunk's conv stage holds both (features.conv1.conv.*, .bn.*)."""
    old = prefix + "features."
    for key in [k for k in state_dict if k.startswith(old + "conv1.") or k.startswith(old + "bn1.")]:
        rest = key[len(old):]
        if rest in ("conv1.weight", "conv1.bias"):
            new = f"{old}conv1.conv.{rest.split('.', 1)[1]}"
        elif rest.startswith("bn1."):
            new = f"{old}conv1.bn.{rest.split('.', 1)[1]}"
        else:
            continue
        if new not in state_dict:
            state_dict[new] = state_dict.pop(key)


class SqueezeDet(nn.Module):
    """SqueezeDet or SqueezeDet+ or a searched trunk (config.backbone); see the module docstring for layers and
    the contract. `features` is the trunk (squeeze.backbone.Trunk), one child per stage; the stages' own `bn`
    flags are not used: `config.batch_norm` puts BatchNorm in every conv and fire, or in none."""

    def __init__(self, config: SqueezeDetConfig) -> None:
        super().__init__()
        self.config = c = config
        # BatchNorm (the training aid) sits between every trunk conv and its ReLU, so it folds into the conv.
        bn = BatchNormSpec(momentum=c.bn_momentum, before_relu=True)
        trunk_std = set(_imagenet_layers(c.backbone)) | set(input_stages(c.backbone))
        self.features = Trunk(with_batch_norm(c.backbone, c.batch_norm), 3, bn=bn,
                              init=lambda s: c.trunk_init_std if s.name in trunk_std else c.fire_init_std)
        input_convs = [m.conv for name, m in self.features.named_children()
                       if name in input_stages(c.backbone) and isinstance(m, ConvReLU)]
        with torch.no_grad():
            for conv in input_convs:
                conv.weight.mul_(c.conv1_init_scale)
        self.dropout = nn.Dropout(1.0 - c.dropout_keep)
        # stride 1: TF 'SAME' is symmetric
        self.convdet = nn.Conv2d(self.features.out_channels, c.convdet_channels, 3, padding=1)
        init_conv_(self.convdet, c.convdet_init_std)
        if c.freeze_conv1:
            for conv in input_convs:
                conv.requires_grad_(False)
        self.register_load_state_dict_pre_hook(_rename_legacy_conv1)
        grid_h, grid_w = c.grid
        anchors = make_anchors(grid_h, grid_w, c.image_width, c.image_height, c.anchor_shapes)
        # (N, 4) float32 [cx, cy, w, h]; derived from the config, so not saved in the state_dict.
        self.register_buffer("anchors", torch.from_numpy(anchors), persistent=False)
        # NHWC ("channels_last") lets oneDNN run every conv without reordering activations, and makes the
        # ConvDet output's NHWC reshape a view.
        self.to(memory_format=torch.channels_last)

    # ------------------------------------------------------------------------------------------------ outputs
    def _check_images(self, images: Tensor) -> None:
        c = self.config
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3 or \
                not images.is_floating_point():
            desc = f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, Tensor) \
                else type(images).__name__
            raise ValueError(f"images must be a float tensor (B, 3, H, W), got {desc}")
        if tuple(images.shape[2:]) != (c.image_height, c.image_width):
            raise ValueError(f"images are {images.shape[3]} x {images.shape[2]} but the model was built for "
                             f"{c.image_width} x {c.image_height} (the anchors depend on it): resize the images "
                             f"or build the model with image_width={images.shape[3]}, image_height={images.shape[2]}")

    def head(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, 3, H, W) -> deltas (B, N, 4), confidence logits (B, N), class logits (B, N, K)."""
        self._check_images(images)
        x = self.features(images.contiguous(memory_format=torch.channels_last))
        preds = self.convdet(self.dropout(x))  # (B, A*(K+5), grid_h, grid_w)
        return split_convdet_output(preds, self.config.anchors_per_cell, self.config.num_classes)

    def raw_outputs(self, images: Tensor) -> RawOutputs:
        """Deltas, sigmoid confidence and softmax class probabilities per anchor (the ONNX export's outputs)."""
        deltas, conf_logits, class_logits = self.head(images)
        return RawOutputs(deltas, torch.sigmoid(conf_logits), torch.softmax(class_logits, dim=-1))

    def detections(self, raw: RawOutputs) -> list[Detections2D]:
        """Decode, score, top-N, threshold and per-class NMS with the config's settings (in numpy, on the CPU),
        one per image, boxes in net-input pixels."""
        c = self.config
        anchors = self.anchors.cpu().numpy()
        deltas, confidence, class_probs = (t.detach().float().cpu().numpy() for t in raw)
        return [postprocess(d, conf, probs, anchors, c.image_width, c.image_height, exp_thresh=c.exp_thresh,
                            top_n=c.top_n_detection, prob_thresh=c.prob_thresh, nms_thresh=c.nms_thresh,
                            final_threshold=c.final_threshold, nms_mode=c.nms, soft_nms_sigma=c.soft_nms_sigma)
                for d, conf, probs in zip(deltas, confidence, class_probs, strict=True)]

    def forward(self, images: Tensor, boxes: Sequence[Tensor] | None = None,
                labels: Sequence[Tensor] | None = None) -> dict[str, Tensor] | list[Detections2D]:
        if not self.training:
            with torch.no_grad():
                return self.detections(self.raw_outputs(images))
        if boxes is None or labels is None:
            raise ValueError("training mode needs boxes (list of (N_i, 4) float [left, top, right, bottom] pixels) "
                             "and labels (list of (N_i,) int64); call model.eval() for detections")
        c = self.config
        deltas, conf_logits, class_logits = self.head(images)
        targets = build_targets(self.anchors, boxes, labels, c.num_classes, images.shape[0], c.extra_positive_iou)
        return detection_losses(deltas, conf_logits, class_logits, targets, self.anchors, c.image_width,
                                c.image_height, coef_conf_pos=c.loss_coef_conf_pos, coef_conf_neg=c.loss_coef_conf_neg,
                                coef_bbox=c.loss_coef_bbox, coef_class=c.loss_coef_class, exp_thresh=c.exp_thresh,
                                epsilon=c.epsilon)

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Two optimizer groups as the reference decays (L2 on conv kernels only); frozen parameters left out."""
        kernels = {id(m.weight) for m in self.modules() if isinstance(m, nn.Conv2d)}
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if id(p) in kernels else no_decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------------------------------------------------
# ImageNet initialisation from torchvision's SqueezeNet state_dicts.

# Our trunk layer -> torchvision `features` index: squeezenet1_1 for SqueezeDet, squeezenet1_0 for SqueezeDet+.
TORCHVISION_LAYERS = {
    "squeezedet": {"conv1": 0, "fire2": 3, "fire3": 4, "fire4": 6, "fire5": 7, "fire6": 9, "fire7": 10,
                   "fire8": 11, "fire9": 12},
    "squeezedet_plus": {"conv1": 0, "fire2": 3, "fire3": 4, "fire4": 5, "fire5": 7, "fire6": 8, "fire7": 9,
                        "fire8": 10, "fire9": 12},
}
_TORCHVISION_NAME = {"squeezedet": "squeezenet1_1", "squeezedet_plus": "squeezenet1_0"}
# The convs of a Fire block: our module path -> torchvision's.
_FIRE_CONVS = {"squeeze.conv": "squeeze", "expand.expand1x1": "expand1x1", "expand.expand3x3": "expand3x3"}
# torchvision's ImageNet preprocessing: RGB in [0, 1], minus mean, divided by std.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedLoad:
    """What `load_torchvision_squeezenet` did, by our layer name (conv1, fire2.squeeze.conv, ...)."""

    loaded: tuple[str, ...]  # layers that took the ImageNet weights
    skipped: tuple[str, ...]  # layers whose shapes differ (kept their random init, as the reference does)


def load_torchvision_squeezenet(model: SqueezeDet, state_dict_path: str | Path, *,
                                adapt_input: bool = True) -> PretrainedLoad:
    """Initialise the trunk (conv1, fire2-9) from a torchvision SqueezeNet state_dict file.

    SqueezeDet takes `squeezenet1_1`, SqueezeDet+ `squeezenet1_0` (torchvision key names `features.N.*`).
    The file is read with `torch.load(weights_only=True)`. As the reference does per layer, a layer whose
    shapes differ keeps its random init with a warning: torchvision's squeezenet1_0 has squeeze ratio 0.125
    (fire2 squeezes to 16) while SqueezeDet+ uses the 0.75 model (96), so from torchvision's file only conv1
    fits SqueezeDet+; a squeeze-ratio-0.75 SqueezeNet saved under torchvision's names loads completely. For
    SqueezeDet every layer must fit (a mismatch means a wrong file). fire10, fire11 and ConvDet stay random.

    adapt_input: torchvision's weights expect RGB in [0, 1] normalised by the ImageNet mean and std; this model
    takes BGR 0-255 minus `pixel_mean` (the reference's caffe convention). With adapt_input, conv1's input
    channels are reversed, divided by 255 * std, and the small mean difference is folded into its bias, so
    conv1 computes what torchvision's would on the same picture (exactly, away from the one-pixel border).
    Pass False for a file already in the caffe convention. conv1 stays frozen if the config says so.
    Raises FileNotFoundError or squeeze.errors.DataError naming the file.
    """
    path = Path(state_dict_path)
    backbone = model.config.backbone.name
    if not _imagenet_layers(model.config.backbone):
        raise ValueError(f"ImageNet SqueezeNet weights fit only the paper trunks {', '.join(TRUNKS)}; this model's "
                         f"backbone {backbone!r} is another (train it from scratch)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ImageNet SqueezeNet weights not found (a torchvision "
                                f"{_TORCHVISION_NAME[backbone]} state_dict .pth file is expected)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling, zip or IO failure means a bad file
        raise DataError(path, f"not a weights-only loadable state_dict: {exc}") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DataError(path, "expected a state_dict (a mapping of names to tensors)")
    want = _TORCHVISION_NAME[backbone]
    conv1_shape = tuple(state["features.0.weight"].shape) if "features.0.weight" in state else None
    found = {(64, 3, 3, 3): "squeezenet1_1", (96, 3, 7, 7): "squeezenet1_0"}.get(conv1_shape)  # type: ignore[arg-type]
    if found is None:
        raise DataError(path, f"not a torchvision SqueezeNet state_dict: 'features.0.weight' has shape "
                              f"{conv1_shape} (squeezenet1_1: (64, 3, 3, 3), squeezenet1_0: (96, 3, 7, 7))")
    if found != want:
        raise DataError(path, f"holds {found} weights but the {backbone} backbone is built on {want}")

    pairs: list[tuple[str, nn.Conv2d, str]] = []  # (our layer name, our conv, torchvision prefix)
    for ours, index in TORCHVISION_LAYERS[backbone].items():
        module = model.features.get_submodule(ours)
        if ours == "conv1":
            pairs.append((ours, module.conv, f"features.{index}"))
        else:
            for sub, theirs in _FIRE_CONVS.items():
                pairs.append((f"{ours}.{sub}", module.get_submodule(sub), f"features.{index}.{theirs}"))
    loaded, skipped = [], []
    with torch.no_grad():
        for name, conv, prefix in pairs:
            keys = (f"{prefix}.weight", f"{prefix}.bias")
            missing = [k for k in keys if k not in state]
            if missing:
                raise DataError(path, f"missing {missing} for layer {name}: not a complete {want} state_dict")
            weight, bias = (state[k].to(torch.float32) for k in keys)
            if weight.shape != conv.weight.shape or bias.shape != conv.bias.shape:
                if backbone == "squeezedet":
                    raise DataError(path, f"{keys[0]} has shape {tuple(weight.shape)} but {name} needs "
                                          f"{tuple(conv.weight.shape)}: not a {want} state_dict")
                skipped.append(name)
                continue
            if name == "conv1" and adapt_input:
                weight, bias = _caffe_input_conv(weight, bias, model.config.pixel_mean)
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)
            loaded.append(name)
    if skipped:
        logger.warning("%s: %d of %d layers have other shapes than %s and keep their random init (%s); "
                       "torchvision's squeezenet1_0 has squeeze ratio 0.125, SqueezeDet+ uses 0.75",
                       path, len(skipped), len(pairs), backbone, ", ".join(skipped))
    return PretrainedLoad(loaded=tuple(loaded), skipped=tuple(skipped))


def _caffe_input_conv(weight: Tensor, bias: Tensor, pixel_mean_bgr: Sequence[float]) -> tuple[Tensor, Tensor]:
    """A conv1 trained on torchvision's input t = (rgb / 255 - mean) / std, rewritten for u = bgr - pixel_mean.

    t_c = u_c / (255 std_c) + (pixel_mean_c - 255 mean_c) / (255 std_c) per colour c, so the kernel is divided by
    255 std_c (channels reversed to BGR) and the constant term is folded into the bias.
    """
    mean = torch.tensor(IMAGENET_MEAN_RGB, dtype=weight.dtype)
    std = torch.tensor(IMAGENET_STD_RGB, dtype=weight.dtype)
    pixel_mean_rgb = torch.tensor(tuple(pixel_mean_bgr)[::-1], dtype=weight.dtype)
    offset = (pixel_mean_rgb - 255.0 * mean) / (255.0 * std)  # (3,) RGB
    new_bias = bias + (weight * offset[None, :, None, None]).sum(dim=(1, 2, 3))
    new_weight = (weight / (255.0 * std)[None, :, None, None]).flip(1)  # RGB -> BGR input channels
    return new_weight, new_bias


