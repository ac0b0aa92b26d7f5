"""SqueezeSeg and SqueezeSegV2: LiDAR point segmentation on spherical range images."""

from squeezeseg.crf import RecurrentCRF
from squeezeseg.loss import focal_loss, weighted_cross_entropy
from squeezeseg.squeezeseg import (
    SegPrediction,
    SqueezeSeg,
    SqueezeSegConfig,
    squeezeseg_kitti,
    squeezeseg_kitti_360,
)
from squeezeseg.squeezeseg_v2 import (
    SqueezeSegV2,
    SqueezeSegV2Config,
    squeezeseg_v2_kitti,
    squeezeseg_v2_kitti_360,
)

# The named configs and the model each builds; the CLI lists these.
MODELS = {
    "squeezeseg_kitti": (squeezeseg_kitti, SqueezeSeg),
    "squeezeseg_kitti_360": (squeezeseg_kitti_360, SqueezeSeg),
    "squeezeseg_v2_kitti": (squeezeseg_v2_kitti, SqueezeSegV2),
    "squeezeseg_v2_kitti_360": (squeezeseg_v2_kitti_360, SqueezeSegV2),
}

__all__ = [
    "MODELS",
    "RecurrentCRF",
    "SegPrediction",
    "SqueezeSeg",
    "SqueezeSegConfig",
    "SqueezeSegV2",
    "SqueezeSegV2Config",
    "focal_loss",
    "squeezeseg_kitti",
    "squeezeseg_kitti_360",
    "squeezeseg_v2_kitti",
    "squeezeseg_v2_kitti_360",
    "weighted_cross_entropy",
]
