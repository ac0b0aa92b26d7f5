"""SqueezeSegV2 (Wu, Zhou, Zhao, Yue, Keutzer, ICRA 2019): SqueezeSeg with BN, CAM, a mask channel and focal loss.

Differences from SqueezeSeg as the released code has them (reference/models.md 3.1-3.2):
- input: the normalised channels plus the LiDAR mask as one more channel (0/1, not normalised);
- BatchNorm on conv1, conv1_skip and every Fire / FireDeconv squeeze and expand conv, placed *after* the
  ReLU (conv + bias -> ReLU -> BN); none on the transposed convs, the CAM convs or conv14. TF's moving
  average decay 0.999 is PyTorch momentum 0.001; eps 1e-5. In eval mode BN uses the moving statistics (as
  the reference eval.py; its demo.py forgot to and normalised with per-frame statistics).
- Context Aggregation Module (CAM) after conv1, fire2 and fire3: max-pool 7x7 stride 1 -> 1x1 to C/16 + ReLU
  -> 1x1 to C -> sigmoid -> times the input. Skips take the CAM outputs: fire_deconv11 + CAM(fire3),
  fire_deconv12 + CAM(conv1); pool1 takes CAM(conv1).
- conv14's bias starts at the focal-loss prior -ln((1 - pi) / pi), pi = [0.01, 0.33, 0.33, 0.33].
- focal loss, gamma 2, class weights [1/3, 1, 3.5, 3.5].
- The recurrent CRF is still in the released code, unchanged; it is on by default here for that reason.

Forward contract: the same as SqueezeSeg (see squeezeseg/squeezeseg.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from squeeze.fire import BatchNormSpec, ConvReLU, Fire, FireDeconv, SameMaxPool2d, init_conv_, init_xavier_
from squeezeseg.loss import focal_loss
from squeezeseg.squeezeseg import (
    KITTI_CLASSES,
    SegPrediction,
    build_crf,
    check_common_config,
    check_inputs,
    check_labels,
    config_from_dict,
    param_groups,
    predictions_from_logits,
    xyz_channels,
)

# Parameter count of the paper configuration: SqueezeSeg's 906,308 (squeezeseg/squeezeseg.py) plus
#   the mask channel into conv1 and conv1_skip: 9*64 + 64 = 640;
#   CAMs (C*C/16 + C/16 + C/16*C + C): after conv1 (C=64) 580, after fire2 and fire3 (C=128) 2,184 each -> 4,948;
#   BN gamma and beta on conv1, conv1_skip and every squeeze/expand conv: 2 * 3,648 channels = 7,296;
#   total 919,192 (the reference's "~919k"), plus the CRF's 32 (unchanged from SqueezeSeg).
PAPER_CONV_PARAMS = 919_192
PAPER_CRF_PARAMS = 32


@dataclass(frozen=True)
class SqueezeSegV2Config:
    class_names: tuple[str, ...] = KITTI_CLASSES  # label i is class_names[i]; 0 is unknown/background
    in_channels: int = 5  # normalised input channels: x, y, z, intensity, range (reference/models.md 2.2)
    append_mask: bool = True  # append the LiDAR mask as one more input channel (V2: 6 channels into conv1)
    crf_xyz_channels: tuple[int, int, int] = (0, 1, 2)  # input channels holding normalised x, y, z for the CRF
    height: int = 64  # nominal rows (laser rings); any height works
    width: int = 512  # nominal columns (front 90 degrees); any multiple of 16 works
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
    cam_reduction: int = 16  # CAM bottleneck: C -> C / 16 -> C (REDUCTION)
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
        if self.cam_reduction < 1 or 64 // self.cam_reduction < 1:
            raise ValueError(f"cam_reduction must be in [1, 64], got {self.cam_reduction}")
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


class ContextAggregation(nn.Module):
    """CAM (SqueezeSegV2 section III.A): gate each channel by the context of a 7x7 max-pooled window.

    x (B, C, H, W) -> x * sigmoid(conv(relu(conv(maxpool7x7(x))))), the convs 1x1 C -> C/r -> C, Xavier init.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
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


class SqueezeSegV2(nn.Module):
    """SqueezeSegV2; the layer table is SqueezeSeg's (squeezeseg/squeezeseg.py) with the changes above."""

    def __init__(self, config: SqueezeSegV2Config) -> None:
        super().__init__()
        self.config = c = config
        bn = BatchNormSpec(momentum=c.bn_momentum, eps=c.bn_eps)
        cin = c.in_channels + int(c.append_mask)
        self.conv1 = ConvReLU(cin, 64, 3, stride=(1, 2), bn=bn, init_std=c.conv1_init_std)
        self.cam1 = ContextAggregation(64, c.cam_reduction)
        self.conv1_skip = ConvReLU(cin, 64, 1, bn=bn, init_std=c.conv1_init_std)
        self.pool1 = SameMaxPool2d(3, (1, 2))
        std = c.fire_init_std
        self.fire2 = Fire(64, 16, 64, 64, bn=bn, init_std=std)
        self.cam2 = ContextAggregation(128, c.cam_reduction)
        self.fire3 = Fire(128, 16, 64, 64, bn=bn, init_std=std)
        self.cam3 = ContextAggregation(128, c.cam_reduction)
        self.pool3 = SameMaxPool2d(3, (1, 2))
        self.fire4 = Fire(128, 32, 128, 128, bn=bn, init_std=std)
        self.fire5 = Fire(256, 32, 128, 128, bn=bn, init_std=std)
        self.pool5 = SameMaxPool2d(3, (1, 2))
        self.fire6 = Fire(256, 48, 192, 192, bn=bn, init_std=std)
        self.fire7 = Fire(384, 48, 192, 192, bn=bn, init_std=std)
        self.fire8 = Fire(384, 64, 256, 256, bn=bn, init_std=std)
        self.fire9 = Fire(512, 64, 256, 256, bn=bn, init_std=std)
        dstd = c.decoder_init_std
        self.fire_deconv10 = FireDeconv(512, 64, 128, 128, bn=bn, init_std=dstd)
        self.fire_deconv11 = FireDeconv(256, 32, 64, 64, bn=bn, init_std=dstd)
        self.fire_deconv12 = FireDeconv(128, 16, 32, 32, bn=bn, init_std=dstd)
        self.fire_deconv13 = FireDeconv(64, 16, 32, 32, bn=bn, init_std=dstd)
        self.dropout = nn.Dropout(1.0 - c.dropout_keep)
        self.conv14 = nn.Conv2d(64, c.num_classes, 3, padding=1)  # stride 1: TF 'SAME' is symmetric
        init_conv_(self.conv14, c.classifier_init_std)
        with torch.no_grad():
            self.conv14.bias.copy_(torch.tensor(focal_prior_bias(c.class_prior)))
        self.crf = build_crf(c) if c.use_crf else None
        # NHWC ("channels_last") lets oneDNN run every conv without reordering activations (1.5-2x on CPU).
        self.to(memory_format=torch.channels_last)

    def logits(self, inputs: Tensor, mask: Tensor) -> Tensor:
        """(B, C, H, W) normalised inputs, (B, H, W) bool mask -> (B, K, H, W) output before the softmax."""
        check_inputs(inputs, mask, self.config.in_channels)
        x = torch.cat((inputs, mask[:, None].to(inputs.dtype)), 1) if self.config.append_mask else inputs
        x = x.contiguous(memory_format=torch.channels_last)
        cam1 = self.cam1(self.conv1(x))  # (B, 64, H, W/2)
        conv1_skip = self.conv1_skip(x)  # (B, 64, H, W)
        cam3 = self.cam3(self.fire3(self.cam2(self.fire2(self.pool1(cam1)))))  # (B, 128, H, W/4)
        fire5 = self.fire5(self.fire4(self.pool3(cam3)))  # (B, 256, H, W/8)
        x = self.fire9(self.fire8(self.fire7(self.fire6(self.pool5(fire5)))))  # (B, 512, H, W/16)
        x = self.fire_deconv10(x) + fire5  # (B, 256, H, W/8)
        x = self.fire_deconv11(x) + cam3  # (B, 128, H, W/4)
        x = self.fire_deconv12(x) + cam1  # (B, 64, H, W/2)
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
        c = self.config
        weights = torch.tensor(c.class_weights, dtype=out.dtype, device=out.device)
        return {"seg_loss": focal_loss(out, labels, mask, weights, c.focal_gamma, c.loss_coef)}

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer groups: conv kernels (bilinear deconvs, CAM convs included) decayed; biases, BN, CRF not."""
        return param_groups(self, weight_decay)
