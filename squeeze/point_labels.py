"""Per-point class labels for LiDAR segmentation, SqueezeSeg's class set.

SqueezeSeg labels points from 3D boxes: a point inside a box takes the box's class (reference/models.md 2.1;
the published conversion was never released). We do the same from KITTI object labels.
"""

from __future__ import annotations

import numpy as np

from squeeze.geometry import points_in_boxes3d, velo_to_rect
from squeeze.kitti import Calibration, ObjectLabels

# SqueezeSeg's classes: id = position (0 unknown/background, 1 car, 2 pedestrian, 3 cyclist).
SQUEEZESEG_CLASSES = ("background", "car", "pedestrian", "cyclist")

# Point classes written in `.label` files (lower 16 bits; SemanticKITTI's layout with our own ids): 1-3 are
# SqueezeSeg's classes (reference/models.md 2.1); Van keeps its own id so it can be told apart and is folded into
# car for SqueezeSeg. Background ("stuff") classes start at 10. The simulator and annotation tools write these.
POINT_CLASS_IDS: dict[str, int] = {
    "unlabelled": 0,
    "Car": 1,
    "Pedestrian": 2,
    "Cyclist": 3,  # rider and bicycle together, as KITTI's Cyclist box holds both
    "Van": 4,
    "road": 10,  # includes lane markings
    "sidewalk": 11,  # includes curbs
    "building": 12,
    "vegetation": 13,  # tree crowns, trunks, bushes, hedges
    "pole": 14,  # lamp posts and sign posts
    "traffic_sign": 15,
    "terrain": 16,  # grass beside the road
}

# KITTI object type -> SqueezeSeg class id. Vans count as cars and sitting persons as pedestrians, as the
# KITTI evaluation treats them as the neighbouring classes; everything else stays background.
KITTI_TYPE_TO_CLASS = {"Car": 1, "Van": 1, "Pedestrian": 2, "Person_sitting": 2, "Cyclist": 3}


def point_classes_from_boxes(points: np.ndarray, calib: Calibration, labels: ObjectLabels,
                             type_to_class: dict[str, int] | None = None) -> np.ndarray:
    """(N,) int32 class id of every velodyne point: the class of the 3D box it lies in, 0 outside all boxes.

    points: (N, >=3) velodyne. Boxes of types not in the table (DontCare, Misc, Truck, ...) are ignored.
    Where boxes overlap, the later box in the label file wins.
    """
    table = KITTI_TYPE_TO_CLASS if type_to_class is None else type_to_class
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
    """(N,) point classes of POINT_CLASS_IDS -> (N,) int32 SqueezeSeg ids (vans are cars; the rest background)."""
    pc = np.asarray(point_class).astype(np.int64)
    out = np.zeros(pc.shape, np.int32)
    out[(pc == POINT_CLASS_IDS["Car"]) | (pc == POINT_CLASS_IDS["Van"])] = 1
    out[pc == POINT_CLASS_IDS["Pedestrian"]] = 2
    out[pc == POINT_CLASS_IDS["Cyclist"]] = 3
    return out
