"""SqueezeDet and SqueezeDet+: image object detection with a SqueezeNet trunk and a ConvDet head."""

from squeezedet.anchors import (
    KITTI_ANCHOR_SHAPES,
    AnchorFile,
    grid_size,
    make_anchors,
    read_anchor_file,
    write_anchor_file,
)
from squeezedet.decode import Detections, decode_boxes, nms, postprocess, safe_exp, soft_nms
from squeezedet.loss import Targets, build_targets, detection_losses
from squeezedet.model import (
    KITTI_CLASSES,
    PretrainedLoad,
    RawOutputs,
    SqueezeDet,
    SqueezeDetConfig,
    load_torchvision_squeezenet,
    squeezedet_kitti,
    squeezedet_plus_kitti,
    with_anchor_file,
)

# The named configs and the model each builds; the CLI lists these.
MODELS = {
    "squeezedet_kitti": (squeezedet_kitti, SqueezeDet),
    "squeezedet_plus_kitti": (squeezedet_plus_kitti, SqueezeDet),
}

__all__ = [
    "KITTI_ANCHOR_SHAPES",
    "KITTI_CLASSES",
    "MODELS",
    "AnchorFile",
    "Detections",
    "PretrainedLoad",
    "RawOutputs",
    "SqueezeDet",
    "SqueezeDetConfig",
    "Targets",
    "build_targets",
    "decode_boxes",
    "detection_losses",
    "grid_size",
    "load_torchvision_squeezenet",
    "make_anchors",
    "nms",
    "postprocess",
    "read_anchor_file",
    "safe_exp",
    "soft_nms",
    "squeezedet_kitti",
    "squeezedet_plus_kitti",
    "with_anchor_file",
    "write_anchor_file",
]
