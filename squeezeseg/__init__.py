"""SqueezeSeg and SqueezeSegV2: LiDAR point segmentation on spherical range images.

Import from the modules (nothing is re-exported here, so `import squeezeseg.cli` and `squeeze seg --help` stay
free of torch): `squeezeseg` and `squeezeseg_v2` (one per architecture), `models` (the named configs: MODELS),
`crf`, `loss`, `data`, `metrics`, `predict`, `train` (the training recipe), `cli` (`squeeze seg ...`).
"""
