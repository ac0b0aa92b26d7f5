"""The named SqueezeDet configs and the model each builds: the one table that lets the CLI list the models.

squeezedet/cli.py keeps the names as a plain tuple (MODEL_NAMES) so that `squeeze det --help` need not import
torch; tests/test_cli.py keeps the two equal.
"""

from __future__ import annotations

from squeezedet.model import SqueezeDet, squeezedet_kitti, squeezedet_plus_kitti

MODELS = {
    "squeezedet_kitti": (squeezedet_kitti, SqueezeDet),  # SqueezeDet: 1248 x 384 input, 24 x 78 grid, 9 anchors
    "squeezedet_plus_kitti": (squeezedet_plus_kitti, SqueezeDet),  # SqueezeDet+: 1242 x 375, SqueezeNet v1.0 trunk
}
