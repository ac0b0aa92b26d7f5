"""Per-point class labels for LiDAR segmentation, in the segmentation classes of squeeze.classes.

SqueezeSeg labels points from 3D boxes: a point inside a box takes the box's class (reference/models.md 2.1;
the published conversion was never released). We do the same from KITTI object labels. The class lists and
maps themselves live in squeeze.classes.
"""

from __future__ import annotations

import numpy as np

from squeeze.classes import KITTI_TYPE_TO_SEGMENTATION, POINT_CLASS_TO_SEGMENTATION, map_ids
from squeeze.geometry import points_in_boxes3d, velo_to_rect
from squeeze.kitti import Calibration, ObjectLabels


def point_classes_from_boxes(points: np.ndarray, calib: Calibration, labels: ObjectLabels,
                             type_to_class: dict[str, int] | None = None) -> np.ndarray:
    """(N,) int32 class id of every velodyne point: the class of the 3D box it lies in, 0 outside all boxes.

    points: (N, >=3) velodyne. Boxes of types not in the table (DontCare, Misc, Truck, ...) are ignored.
    Where boxes overlap, the later box in the label file wins.
    """
    table = KITTI_TYPE_TO_SEGMENTATION if type_to_class is None else type_to_class
    classes = np.zeros(len(points), np.int32)
    box_class = np.array([table.get(str(t), 0) for t in labels.type], np.int32)
    keep = box_class > 0
    if not keep.any():
        return classes
    inside = points_in_boxes3d(velo_to_rect(points, calib), labels.boxes3d[keep])
    for k, cls in enumerate(box_class[keep]):
        classes[inside[:, k]] = cls
    return classes


def squeezeseg_from_point_classes(point_class: np.ndarray) -> np.ndarray:
    """(N,) point classes of squeeze.classes.POINT_CLASS_IDS -> (N,) int32 segmentation ids (vans are cars; the
    rest background), through POINT_CLASS_TO_SEGMENTATION."""
    return map_ids(np.asarray(point_class), POINT_CLASS_TO_SEGMENTATION).astype(np.int32)
