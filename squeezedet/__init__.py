"""SqueezeDet and SqueezeDet+: image object detection with a SqueezeNet trunk and a ConvDet head.

Import from the modules (nothing is re-exported here, so `import squeezedet.cli` and `squeeze det --help` stay
free of torch): `model` (configs, SqueezeDet), `models` (the named configs: MODELS), `anchors`, `loss`, `decode`
(decoding, NMS), `data`, `kitti_eval`, `predict`, `train` (the training recipe), `cli` (`squeeze det ...`).
"""
