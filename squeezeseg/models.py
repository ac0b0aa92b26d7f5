"""The named SqueezeSeg / SqueezeSegV2 configs and the model each builds: the one table the CLI lists.

squeezeseg/cli.py keeps the names as a plain tuple (MODEL_NAMES) so that `squeeze seg --help` need not import
torch; tests/test_cli.py keeps the two equal.
"""

from __future__ import annotations

from squeezeseg.squeezeseg import SqueezeSeg, squeezeseg_kitti, squeezeseg_kitti_360
from squeezeseg.squeezeseg_v2 import SqueezeSegV2, squeezeseg_v2_kitti, squeezeseg_v2_kitti_360

MODELS = {
    "squeezeseg_kitti": (squeezeseg_kitti, SqueezeSeg),  # SqueezeSeg, 64 x 512 front 90 degrees, recurrent CRF
    "squeezeseg_kitti_360": (squeezeseg_kitti_360, SqueezeSeg),  # the same on 64 x 2048, all around
    "squeezeseg_v2_kitti": (squeezeseg_v2_kitti, SqueezeSegV2),  # SqueezeSegV2: CAM, BatchNorm, focal loss
    "squeezeseg_v2_kitti_360": (squeezeseg_v2_kitti_360, SqueezeSegV2),  # the same on 64 x 2048
}
