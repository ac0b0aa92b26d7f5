"""SqueezeSeg (Wu, Wan, Yue, Keutzer, ICRA 2018): LiDAR point segmentation on a spherical range image.

The network follows the released TensorFlow code (reference/models.md 2.3): a SqueezeNet encoder that
downsamples the *width only* (every conv and pool strides (1, 2), TF 'SAME' padding; the 64 laser rings
are kept), a decoder of FireDeconv blocks that double the width back, added (not concatenated) to the
encoder features of the same width, dropout, a 3x3 classifier and a recurrent CRF (squeezeseg/crf.py).

The encoder is data: `config.backbone`, a squeeze.backbone.Backbone (`squeezeseg_trunk()` by default; a searched
one from a JSON file builds the same way). Its stages marked `skip` feed the decoder, which `decoder_plan` derives
from them: one FireDeconv per skip, deepest first, each giving its skip's channel count C (squeeze C / 4, expand
C / 2 + C / 2), which for the paper's trunk is exactly the table below.

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
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from squeeze.backbone import Backbone, SpecError, Stage, backbone_from_dict, build_trunk, run_trunk, stage_shapes
from squeeze.classes import SEGMENTATION_CLASSES
from squeeze.fire import BatchNormSpec, FireDeconv, init_conv_
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

# The paper trunk halves the width four times (conv1, pool1, pool3, pool5) and the decoder doubles it back four
# times; another backbone has its own multiple (`width_multiple`).
WIDTH_MULTIPLE = 16


@dataclass
class SegPrediction:
    """One sample's segmentation."""

    classes: Tensor  # (H, W) int64 predicted class index; 0 on empty pixels (as the reference masks it)
    probs: Tensor  # (K, H, W) float32 softmax probabilities; all 0 on empty pixels


def squeezeseg_trunk() -> Backbone:
    """SqueezeSeg's encoder (reference/models.md 2.3): conv1 and the pools stride (1, 2); skips for the decoder at
    conv1_skip (full width, a 1x1 conv on the input), conv1 (W/2), fire3 (W/4) and fire5 (W/8)."""
    pool = {"kernel": 3, "stride": (1, 2)}
    return Backbone("squeezeseg", (
        Stage("conv", "conv1", (64,), kernel=3, stride=(1, 2), skip=True),
        Stage("conv", "conv1_skip", (64,), kernel=1, from_input=True, skip=True),
        Stage("maxpool", "pool1", **pool),
        Stage("fire", "fire2", (16, 64, 64)), Stage("fire", "fire3", (16, 64, 64), skip=True),
        Stage("maxpool", "pool3", **pool),
        Stage("fire", "fire4", (32, 128, 128)), Stage("fire", "fire5", (32, 128, 128), skip=True),
        Stage("maxpool", "pool5", **pool),
        Stage("fire", "fire6", (48, 192, 192)), Stage("fire", "fire7", (48, 192, 192)),
        Stage("fire", "fire8", (64, 256, 256)), Stage("fire", "fire9", (64, 256, 256)),
    ))


@dataclass(frozen=True)
class SqueezeSegConfig:
    class_names: tuple[str, ...] = SEGMENTATION_CLASSES  # label i is class_names[i]; 0 background (squeeze.classes)
    in_channels: int = 5  # normalised input channels: x, y, z, intensity, range (reference/models.md 2.2)
    crf_xyz_channels: tuple[int, int, int] = (0, 1, 2)  # input channels holding normalised x, y, z for the CRF
    height: int = 64  # nominal rows (laser rings); any height works
    width: int = 512  # nominal columns (front 90 degrees); any multiple of 16 works
    # The encoder as data (squeeze.backbone; a searched one: read_backbone("spec.json")); the decoder follows its skips
    backbone: Backbone = field(default_factory=squeezeseg_trunk)
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
        bn = [st.name for st in self.backbone.stages if st.bn]
        if bn:
            raise ValueError(f"backbone {self.backbone.name!r}: stages {bn} ask for BatchNorm, which SqueezeSeg does "
                             "not have; SqueezeSegV2 does")

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
        # Trunk stages are the model's own children (conv1, fire2, ...: the keys of every saved checkpoint).
        add_trunk(self, build_trunk(c.backbone, c.in_channels, init=lambda s: "xavier" if s.op == "conv" else
                                    c.fire_init_std))
        self.decoder_skips = add_decoder(self, decoder_plan(c.backbone, c.in_channels), None, c.decoder_init_std)
        self.dropout = nn.Dropout(1.0 - c.dropout_keep)
        self.conv14 = nn.Conv2d(classifier_channels(c.backbone, c.in_channels), c.num_classes, 3, padding=1)
        init_conv_(self.conv14, c.classifier_init_std)
        self.crf = build_crf(c) if c.use_crf else None
        # NHWC ("channels_last") lets oneDNN run every conv without reordering activations (1.5-2x on CPU).
        self.to(memory_format=torch.channels_last)

    def logits(self, inputs: Tensor, mask: Tensor) -> Tensor:
        """(B, C, H, W) normalised inputs, (B, H, W) bool mask -> (B, K, H, W) output before the softmax."""
        c = self.config
        check_inputs(inputs, mask, c.in_channels, width_multiple(c.backbone))
        x = inputs.contiguous(memory_format=torch.channels_last)
        x = run_decoder(self, self.decoder_skips, *run_trunk(self, c.backbone, x))  # (B, C, H, W)
        x = self.conv14(self.dropout(x)).contiguous()  # (B, K, H, W), back to NCHW
        if self.crf is not None:
            x = self.crf(x, xyz_channels(inputs, self.config.crf_xyz_channels), mask)
        return x

    def forward(self, inputs: Tensor, mask: Tensor,
                labels: Tensor | None = None) -> dict[str, Tensor] | list[SegPrediction]:
        out = self.logits(inputs, mask)
        if not self.training:
            return predictions_from_logits(out, mask)
        return self.losses(out, labels, mask)

    def losses(self, logits: Tensor, labels: Tensor | None, mask: Tensor) -> dict[str, Tensor]:
        """The training losses of `logits` (B, K, H, W) against labels (B, H, W) over the mask (domain adaptation
        adds its own terms to the same logits)."""
        out = logits
        check_labels(labels, mask, self.config.num_classes)
        weights = torch.tensor(self.config.class_weights, dtype=out.dtype, device=out.device)
        return {"seg_loss": weighted_cross_entropy(out, labels, mask, weights, self.config.loss_coef)}

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups: conv kernels (bilinear deconvs included) decayed; biases, BN, CRF compat not."""
        return param_groups(self, weight_decay)


# ---------------------------------------------------------------------------------------------------------
# Shared by SqueezeSeg and SqueezeSegV2.


class DeconvStep(NamedTuple):
    """One FireDeconv of the decoder: its name, the trunk stage whose output is added after it, its widths."""

    name: str  # fire_deconv10, fire_deconv11, ...
    skip: str  # trunk stage name
    in_channels: int
    squeeze: int
    expand1x1: int
    expand3x3: int


def _width_strides(backbone: Backbone) -> tuple[dict[str, int], int]:
    """({stage: how many input columns one output column spans}, the trunk output's); SpecError("backbone") for a
    stage the width-doubling decoder cannot undo (a row stride, a column stride other than 1 or 2, 'valid')."""
    strides: dict[str, int] = {}
    main = 1
    for s in backbone.stages:
        if s.stride[0] != 1 or s.stride[1] not in (1, 2):
            raise SpecError("backbone", f"stage {s.name!r} strides {s.stride}: SqueezeSeg keeps the rows (stride 1) "
                                        "and its decoder doubles the width, so column strides must be 1 or 2")
        if s.padding != "same" and s.op in ("conv", "maxpool"):
            raise SpecError("backbone", f"stage {s.name!r} has padding {s.padding!r}: SqueezeSeg's skips need 'same'")
        strides[s.name] = (1 if s.from_input else main) * s.stride[1]
        if not s.from_input:
            main = strides[s.name]
    return strides, main


def width_multiple(backbone: Backbone) -> int:
    """The input width must be a multiple of this: the trunk's total column stride (16 for the paper trunk)."""
    return _width_strides(backbone)[1]


def decoder_plan(backbone: Backbone, in_channels: int) -> tuple[DeconvStep, ...]:
    """The FireDeconv decoder of a trunk, deepest first: one block per `skip` stage.

    A trunk of total column stride 2^n needs exactly one skip at each stride 2^(n-1), ..., 2, 1 (the full width, for
    example a from_input conv). Block i doubles the width and gives its skip's channel count C with squeeze C // 4
    and expands C // 2, C - C // 2: for the paper trunk (512 -> fire5 256, fire3 128, conv1 64, conv1_skip 64) the
    reference's fire_deconv10-13 exactly. SpecError("backbone") naming what is missing or extra.
    """
    strides, total = _width_strides(backbone)
    n = total.bit_length() - 1  # total is a power of 2: every column stride is 1 or 2
    shapes = stage_shapes(backbone, in_channels, 1, total)
    by_stride: dict[int, list[str]] = {}
    for s in backbone.stages:
        if s.skip:
            by_stride.setdefault(strides[s.name], []).append(s.name)
    extra = {k: v for k, v in by_stride.items() if k >= total or len(v) > 1}
    if extra:
        k, names = next(iter(extra.items()))
        raise SpecError("backbone", f"skip stages {names} are at column stride {k}: the decoder takes one skip at "
                                    f"each of the strides {[2 ** i for i in range(n - 1, -1, -1)]}")
    steps: list[DeconvStep] = []
    channels = _main_channels(backbone, shapes)
    for i, k in enumerate(2 ** j for j in range(n - 1, -1, -1)):
        if k not in by_stride:
            raise SpecError("backbone", f"no skip stage at column stride {k} (width W/{k}); the decoder doubles the "
                                        f"width {n} times and adds a skip after each (mark a stage skip: true)")
        skip = by_stride[k][0]
        c = shapes[skip][0]
        if c < 4:
            raise SpecError("backbone", f"skip stage {skip!r} has {c} channels; the decoder needs at least 4")
        steps.append(DeconvStep(f"fire_deconv{10 + i}", skip, channels, c // 4, c // 2, c - c // 2))
        channels = c
    return tuple(steps)


def _main_channels(backbone: Backbone, shapes: Mapping[str, tuple[int, int, int]]) -> int:
    return shapes[[s.name for s in backbone.stages if not s.from_input][-1]][0]


def classifier_channels(backbone: Backbone, in_channels: int) -> int:
    """Channels into conv14: the full-width skip's, or the trunk output's when the trunk does not downsample."""
    plan = decoder_plan(backbone, in_channels)
    return plan[-1].expand1x1 + plan[-1].expand3x3 if plan else \
        _main_channels(backbone, stage_shapes(backbone, in_channels, 1, 1))


def add_trunk(model: nn.Module, stages: Mapping[str, nn.Module]) -> None:
    """Register trunk stage modules on `model` under their names; SpecError for a name the model already uses."""
    reserved = {"decoder_skips", "dropout", "conv14", "crf"}
    for name, module in stages.items():
        if name in reserved or name.startswith("fire_deconv") or hasattr(model, name):
            raise SpecError("backbone", f"stage name {name!r} is taken by the segmentation model itself")
        model.add_module(name, module)


def add_decoder(model: nn.Module, plan: tuple[DeconvStep, ...], bn: BatchNormSpec | None,
                init_std: float | None) -> tuple[tuple[str, str], ...]:
    """Build and register the FireDeconv blocks of `plan` on `model`; returns ((block name, skip name), ...)."""
    for step in plan:
        model.add_module(step.name, FireDeconv(step.in_channels, step.squeeze, step.expand1x1, step.expand3x3,
                                               bn=bn, init_std=init_std))
    return tuple((step.name, step.skip) for step in plan)


def run_decoder(model: nn.Module, decoder: tuple[tuple[str, str], ...], x: Tensor,
                skips: Mapping[str, Tensor]) -> Tensor:
    """Each FireDeconv doubles the width of x, then its skip (the encoder output of that width) is added."""
    for name, skip in decoder:
        x = getattr(model, name)(x) + skips[skip]
    return x


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
    if not isinstance(c.backbone, Backbone):
        raise ValueError(f"backbone must be a squeeze.backbone.Backbone, got {type(c.backbone).__name__}")
    try:
        decoder_plan(c.backbone, c.in_channels)
    except SpecError as e:
        raise ValueError(f"backbone {c.backbone.name!r}: {e.problem}") from None
    multiple = width_multiple(c.backbone)
    if c.height < 1 or c.width < multiple or c.width % multiple:
        raise ValueError(f"height must be >= 1 and width a positive multiple of {multiple}, "
                         f"got {c.height} x {c.width}")
    if c.crf_mode not in CRF_MODES:
        raise ValueError(f"crf_mode must be one of {CRF_MODES}, got {c.crf_mode!r}")
    if not 0.0 < c.dropout_keep <= 1.0:
        raise ValueError(f"dropout_keep must be in (0, 1], got {c.dropout_keep}")
    if any(w < 0 for w in c.class_weights):
        raise ValueError(f"class_weights must be non-negative, got {c.class_weights!r}")


def config_from_dict(cls: type, values: Mapping[str, Any]) -> Any:
    """The config from `dataclasses.asdict` output; no "backbone" (checkpoints older than the spec) is the paper's."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    if isinstance(values.get("backbone"), Mapping):
        try:
            kwargs["backbone"] = backbone_from_dict(values["backbone"])
        except SpecError as e:
            raise ValueError(f"{cls.__name__}.backbone.{e}") from None
    return cls(**kwargs)


def build_crf(c: Any) -> RecurrentCRF:
    return RecurrentCRF(c.num_classes, c.crf_iterations, c.crf_window, c.crf_theta_a, c.crf_bilateral_theta_a,
                        c.crf_theta_r, c.crf_angular_compat, c.crf_bilateral_compat, c.crf_mode)


def xyz_channels(inputs: Tensor, idx: tuple[int, int, int]) -> Tensor:
    """The (B, 3, H, W) normalised x, y, z channels; a view when they are consecutive."""
    if idx[1] == idx[0] + 1 and idx[2] == idx[0] + 2:
        return inputs[:, idx[0]:idx[0] + 3]
    return inputs[:, list(idx)]


def check_inputs(inputs: Tensor, mask: Tensor, in_channels: int, multiple: int = WIDTH_MULTIPLE) -> None:
    """Clear errors for inputs the network cannot take (instead of a shape error deep inside); the width must be a
    multiple of `multiple` (the trunk's column stride, `width_multiple`)."""
    if not isinstance(inputs, Tensor) or inputs.dim() != 4 or not inputs.is_floating_point():
        raise ValueError(f"inputs must be a float tensor (B, C, H, W), got {_describe(inputs)}")
    b, c, h, w = inputs.shape
    if c != in_channels:
        raise ValueError(f"inputs have {c} channels but the model was configured for in_channels={in_channels}")
    if w % multiple or w == 0 or h == 0:
        raise ValueError(f"input width must be a positive multiple of {multiple} (the encoder's total column "
                         f"stride), got {h} x {w}")
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
