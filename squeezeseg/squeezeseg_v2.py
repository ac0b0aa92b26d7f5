"""SqueezeSegV2 (Wu, Zhou, Zhao, Yue, Keutzer, ICRA 2019): SqueezeSeg with BN, CAM, a mask channel and focal loss.

Differences from SqueezeSeg as the released code has them (reference/models.md 3.1-3.2):
- input: the normalised channels plus the LiDAR mask as one more channel (0/1, not normalised);
- BatchNorm on conv1, conv1_skip and every Fire / FireDeconv squeeze and expand conv, placed *after* the
  ReLU (conv + bias -> ReLU -> BN); none on the transposed convs, the CAM convs or conv14. TF's moving
  average decay 0.999 is PyTorch momentum 0.001; eps 1e-5. In eval mode BN uses the moving statistics (as
  the reference eval.py; its demo.py forgot to and normalised with per-frame statistics).
- Context Aggregation Module (CAM) after conv1, fire2 and fire3: max-pool 7x7 stride 1 -> 1x1 to C/16 + ReLU
  -> 1x1 to C -> sigmoid -> times the input. Skips take the CAM outputs: fire_deconv11 + CAM(fire3),
  fire_deconv12 + CAM(conv1); pool1 takes CAM(conv1). BN and CAMs are in the backbone spec (`squeezeseg_v2_trunk`).
- conv14's bias starts at the focal-loss prior -ln((1 - pi) / pi), pi = [0.01, 0.33, 0.33, 0.33].
- focal loss, gamma 2, class weights [1/3, 1, 3.5, 3.5].
- The recurrent CRF is still in the released code, unchanged; it is on by default here for that reason.

Forward contract: the same as SqueezeSeg (see squeezeseg/squeezeseg.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from squeeze.backbone import Backbone, Stage, build_trunk, run_trunk, stage_shapes
from squeeze.classes import SEGMENTATION_CLASSES
from squeeze.fire import BatchNormSpec, ContextAggregation, init_conv_
from squeezeseg.loss import focal_loss
from squeezeseg.squeezeseg import (
    SegPrediction,
    add_decoder,
    add_trunk,
    build_crf,
    check_common_config,
    check_inputs,
    check_labels,
    classifier_channels,
    config_from_dict,
    decoder_plan,
    param_groups,
    predictions_from_logits,
    run_decoder,
    squeezeseg_trunk,
    width_multiple,
    xyz_channels,
)

__all__ = ["PAPER_CONV_PARAMS", "PAPER_CRF_PARAMS", "ContextAggregation", "SqueezeSegV2", "SqueezeSegV2Config",
           "focal_prior_bias", "squeezeseg_v2_kitti", "squeezeseg_v2_kitti_360", "squeezeseg_v2_trunk"]

# Parameter count of the paper configuration: SqueezeSeg's 906,308 (squeezeseg/squeezeseg.py) plus
#   the mask channel into conv1 and conv1_skip: 9*64 + 64 = 640;
#   CAMs (C*C/16 + C/16 + C/16*C + C): after conv1 (C=64) 580, after fire2 and fire3 (C=128) 2,184 each -> 4,948;
#   BN gamma and beta on conv1, conv1_skip and every squeeze/expand conv: 2 * 3,648 channels = 7,296;
#   total 919,192 (the reference's "~919k"), plus the CRF's 32 (unchanged from SqueezeSeg).
PAPER_CONV_PARAMS = 919_192
PAPER_CRF_PARAMS = 32


def squeezeseg_v2_trunk() -> Backbone:
    """SqueezeSegV2's encoder: SqueezeSeg's with BN in conv1, conv1_skip and fire2-9, and a CAM after conv1, fire2
    and fire3; the decoder takes CAM(conv1) and CAM(fire3) instead of conv1 and fire3."""
    stages: list[Stage] = []
    for stage in squeezeseg_trunk().stages:
        bn = stage.op in ("conv", "fire")
        if stage.name in ("conv1", "fire2", "fire3"):  # the CAM after it takes over its skip
            stages += [replace(stage, bn=bn, skip=False), Stage("cam", f"cam{stage.name[-1]}", skip=stage.skip)]
        else:
            stages.append(replace(stage, bn=bn))
    return Backbone("squeezeseg_v2", tuple(stages))


@dataclass(frozen=True)
class SqueezeSegV2Config:
    class_names: tuple[str, ...] = SEGMENTATION_CLASSES  # label i is class_names[i]; 0 background (squeeze.classes)
    in_channels: int = 5  # normalised input channels: x, y, z, intensity, range (reference/models.md 2.2)
    append_mask: bool = True  # append the LiDAR mask as one more input channel (V2: 6 channels into conv1)
    crf_xyz_channels: tuple[int, int, int] = (0, 1, 2)  # input channels holding normalised x, y, z for the CRF
    height: int = 64  # nominal rows (laser rings); any height works
    width: int = 512  # nominal columns (front 90 degrees); any multiple of 16 works
    # The encoder as data (squeeze.backbone; a searched one: read_backbone("spec.json")); the decoder follows its skips
    backbone: Backbone = field(default_factory=squeezeseg_v2_trunk)
    use_crf: bool = True  # the released V2 code keeps SqueezeSeg's recurrent CRF
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
    class_weights: tuple[float, ...] = (1 / 3, 1.0, 3.5, 3.5)  # per class loss weight (CLS_LOSS_WEIGHT)
    class_prior: tuple[float, ...] = (0.01, 0.33, 0.33, 0.33)  # per class pi: conv14 bias = -ln((1 - pi) / pi)
    focal_gamma: float = 2.0  # focal loss exponent (FOCAL_GAMMA)
    loss_coef: float = 15.0  # the loss is multiplied by this (CLS_LOSS_COEF); scales it against weight decay
    bn_momentum: float = 0.001  # PyTorch momentum = 1 - TF decay 0.999
    bn_eps: float = 1e-5  # BATCH_NORM_EPSILON
    cam_reduction: int = 16  # CAM bottleneck of every cam stage: C -> C / 16 -> C (REDUCTION)
    conv1_init_std: float = 0.001  # conv1, conv1_skip truncated-normal std (reference: 0.001, BN follows)
    fire_init_std: float | None = None  # fire2-9: None = He-normal, standing in for the ImageNet weights
    decoder_init_std: float = 0.1  # FireDeconv squeeze/expand truncated-normal std (reference: 0.1)
    classifier_init_std: float = 0.1  # conv14 truncated-normal std (reference: 0.1)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __post_init__(self) -> None:
        check_common_config(self)
        if not all(0.0 < p < 1.0 for p in self.class_prior):
            raise ValueError(f"class_prior values must be in (0, 1), got {self.class_prior!r}")
        cin = self.in_channels + int(self.append_mask)
        narrowest = min((stage_shapes(self.backbone, cin, 1, 1)[s.name][0] for s in self.backbone.stages
                         if s.op == "cam"), default=None)
        if self.cam_reduction < 1 or (narrowest is not None and narrowest // self.cam_reduction < 1):
            raise ValueError(f"cam_reduction must be in [1, {narrowest}] (the narrowest CAM's channels), "
                             f"got {self.cam_reduction}")
        if self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {self.focal_gamma}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SqueezeSegV2Config:
        """Rebuild from `dataclasses.asdict` output (lists from JSON become tuples); unknown keys are an error."""
        return config_from_dict(cls, values)


def squeezeseg_v2_kitti() -> SqueezeSegV2Config:
    """The paper's model: KITTI front 90 degrees, 64 x 512, 5 channels + mask, 4 classes, CRF on."""
    return SqueezeSegV2Config()


def squeezeseg_v2_kitti_360() -> SqueezeSegV2Config:
    """The same network on full 360-degree scans, 64 x 2048."""
    return SqueezeSegV2Config(width=2048)


def focal_prior_bias(prior: tuple[float, ...]) -> list[float]:
    """-ln((1 - pi) / pi) per class: RetinaNet's prior initialisation, sigmoid(bias_c) = pi_c."""
    return [-math.log((1.0 - p) / p) for p in prior]


class SqueezeSegV2(nn.Module):
    """SqueezeSegV2; the layer table is SqueezeSeg's (squeezeseg/squeezeseg.py) with the changes above."""

    def __init__(self, config: SqueezeSegV2Config) -> None:
        super().__init__()
        self.config = c = config
        bn = BatchNormSpec(momentum=c.bn_momentum, eps=c.bn_eps)
        cin = c.in_channels + int(c.append_mask)
        # Trunk stages are the model's own children (conv1, cam1, fire2, ...: the keys of every saved checkpoint).
        add_trunk(self, build_trunk(c.backbone, cin, bn=bn, cam_reduction=c.cam_reduction,
                                    init=lambda s: c.conv1_init_std if s.op == "conv" else c.fire_init_std))
        self.decoder_skips = add_decoder(self, decoder_plan(c.backbone, cin), bn, c.decoder_init_std)
        self.dropout = nn.Dropout(1.0 - c.dropout_keep)
        self.conv14 = nn.Conv2d(classifier_channels(c.backbone, cin), c.num_classes, 3, padding=1)
        init_conv_(self.conv14, c.classifier_init_std)
        with torch.no_grad():
            self.conv14.bias.copy_(torch.tensor(focal_prior_bias(c.class_prior)))
        self.crf = build_crf(c) if c.use_crf else None
        # NHWC ("channels_last") lets oneDNN run every conv without reordering activations (1.5-2x on CPU).
        self.to(memory_format=torch.channels_last)

    def logits(self, inputs: Tensor, mask: Tensor) -> Tensor:
        """(B, C, H, W) normalised inputs, (B, H, W) bool mask -> (B, K, H, W) output before the softmax."""
        c = self.config
        check_inputs(inputs, mask, c.in_channels, width_multiple(c.backbone))
        x = torch.cat((inputs, mask[:, None].to(inputs.dtype)), 1) if c.append_mask else inputs
        x = x.contiguous(memory_format=torch.channels_last)
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
        c = self.config
        weights = torch.tensor(c.class_weights, dtype=out.dtype, device=out.device)
        return {"seg_loss": focal_loss(out, labels, mask, weights, c.focal_gamma, c.loss_coef)}

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups: conv kernels (bilinear deconvs, CAM convs included) decayed; biases, BN, CRF not."""
        return param_groups(self, weight_decay)
