"""Every class list, label map and colour of the suite, in one place.

Class lists (a model's class id is the position of its name):
- KITTI_OBJECT_TYPES: the object types a KITTI `label_2` file may hold, in the devkit's order.
- DETECTION_CLASSES: what SqueezeDet detects. Trained on the KITTI types of the same name (compared without case);
  no type is folded into another, because the KITTI devkit treats Van as a *neighbouring* class of Car (neither a
  hit nor a miss), so a van trained as a car would be scored as a false positive. Other types are dropped.
- SEGMENTATION_CLASSES: SqueezeSeg's per-point classes. Class 0 is "background": every point on no object of
  the other classes. SqueezeSeg's paper and its released data call it "unknown"; checkpoints written before the
  class list moved here store that name, and `segmentation_class_names` reads it as "background".

Label maps, each {source id or name: segmentation class id}; anything absent maps to 0 (background):
- KITTI_TYPE_TO_SEGMENTATION: the class of the points inside a KITTI 3D box (squeeze.point_labels).
- POINT_CLASS_IDS / POINT_CLASS_TO_SEGMENTATION: the ids of our `.label` files (written by the simulator and the
  annotation tools) and their segmentation class.
- SEMANTIC_KITTI_TO_SEGMENTATION: SemanticKITTI's raw label ids (lower 16 bits of its `.label`).

One RGB palette (CLASS_COLORS) colours every picture: range images, bird's-eye views, camera boxes and detections.
It is keyed by the lower-case class name, so "car" (segmentation), "Car" (detection, KITTI type) share a colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

KITTI_OBJECT_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")
DETECTION_CLASSES = ("Car", "Pedestrian", "Cyclist")
SEGMENTATION_CLASSES = ("background", "car", "pedestrian", "cyclist")
BACKGROUND = 0  # segmentation class id of "background" (and of empty range-image pixels)

# Names earlier checkpoints gave class 0 of a segmentation model (SqueezeSeg's own name for it).
LEGACY_BACKGROUND_NAMES = ("unknown",)

# KITTI object type -> segmentation class id. Vans count as cars and sitting persons as pedestrians, as the KITTI
# evaluation treats them as the neighbouring classes; Truck, Tram, Misc and DontCare stay background.
KITTI_TYPE_TO_SEGMENTATION: dict[str, int] = {"Car": 1, "Van": 1, "Pedestrian": 2, "Person_sitting": 2, "Cyclist": 3}

# Point classes written in `.label` files (lower 16 bits; SemanticKITTI's layout with our own ids): 1-3 are the
# segmentation classes; Van keeps its own id so it can be told apart, and is folded into car for segmentation.
# Background ("stuff") classes start at 10. The simulator and annotation tools write these.
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
    "fence": 17,  # fences and garden walls
    "other_object": 18,  # bins and other movable things that are none of the classes above
}
POINT_CLASS_TO_SEGMENTATION: dict[int, int] = {1: 1, 4: 1, 2: 2, 3: 3}

# SemanticKITTI raw id -> segmentation class id: car 10 and moving-car 252, person 30 and moving-person 254,
# bicyclist 31 and moving-bicyclist 253 (SemanticKITTI's semantic-kitti.yaml). Bicycles without a rider (11),
# trucks, buses and the rest stay background, as in SqueezeSeg's class set.
SEMANTIC_KITTI_TO_SEGMENTATION: dict[int, int] = {10: 1, 252: 1, 30: 2, 254: 2, 31: 3, 253: 3}

# RGB, by lower-case class name. Segmentation and detection classes and the KITTI types share it.
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "background": (90, 90, 90),
    "car": (66, 135, 245),
    "van": (120, 170, 255),
    "truck": (40, 90, 200),
    "pedestrian": (235, 64, 52),
    "person_sitting": (240, 120, 110),
    "cyclist": (252, 186, 3),
    "tram": (150, 150, 255),
    "misc": (200, 200, 200),
    "dontcare": (120, 120, 120),
}
OTHER_COLOR = (160, 80, 220)  # a class the palette does not name, or an id past the end of a class list


def color_of(name: str) -> tuple[int, int, int]:
    """RGB colour of a class or KITTI type by name (case-insensitive; OTHER_COLOR when unnamed)."""
    return CLASS_COLORS.get(str(name).lower(), OTHER_COLOR)


def palette(class_names: Sequence[str] = SEGMENTATION_CLASSES) -> np.ndarray:
    """(K + 1, 3) uint8 RGB: row k colours class k of `class_names`; the last row (OTHER_COLOR) colours any id
    past the end (index with `np.clip(ids, 0, K)`)."""
    return np.array([color_of(n) for n in class_names] + [OTHER_COLOR], np.uint8).reshape(-1, 3)


def colors_of_ids(ids: np.ndarray, class_names: Sequence[str] = SEGMENTATION_CLASSES) -> np.ndarray:
    """(...) int class ids -> (..., 3) uint8 RGB through `palette(class_names)`; ids outside [0, K) get OTHER_COLOR.

    An empty `ids` gives an empty (0, 3) result.
    """
    table = palette(class_names)
    ids = np.asarray(ids).astype(np.int64)
    k = len(class_names)
    return table[np.where((ids >= 0) & (ids < k), ids, k)]


def map_ids(ids: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """(...) integer ids -> (...) int64 ids through `mapping`; ids it does not name (negative ones too) map to 0.

    One lookup table, so a million points map in milliseconds. An empty `ids` gives an empty result.
    """
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"map_ids needs integer ids, got {ids.dtype}")
    lut = np.zeros(max(mapping, default=0) + 1, np.int64)
    for source, target in mapping.items():
        lut[source] = target
    ids = ids.astype(np.int64)
    inside = (ids >= 0) & (ids < len(lut))
    return np.where(inside, lut[np.where(inside, ids, 0)], 0)


def segmentation_class_names(names: Sequence[str]) -> tuple[str, ...]:
    """A segmentation model's class names with a legacy name of class 0 ("unknown") read as "background".

    Checkpoints keep the names they were trained with; this makes old and new ones read alike.
    """
    names = tuple(str(n) for n in names)
    if names and names[0].lower() in LEGACY_BACKGROUND_NAMES:
        return (SEGMENTATION_CLASSES[BACKGROUND], *names[1:])
    return names
