"""squeeze.classes: the one home of class lists, label maps and the palette, and that nothing else defines them."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from squeeze.classes import (
    CLASS_COLORS,
    DETECTION_CLASSES,
    KITTI_OBJECT_TYPES,
    KITTI_TYPE_TO_SEGMENTATION,
    OTHER_COLOR,
    POINT_CLASS_IDS,
    SEGMENTATION_CLASSES,
    SEMANTIC_KITTI_TO_SEGMENTATION,
    color_of,
    colors_of_ids,
    map_ids,
    palette,
    segmentation_class_names,
)

ROOT = Path(__file__).resolve().parents[1]


def test_class_lists():
    assert SEGMENTATION_CLASSES == ("background", "car", "pedestrian", "cyclist")
    assert DETECTION_CLASSES == ("Car", "Pedestrian", "Cyclist")
    assert set(DETECTION_CLASSES) <= set(KITTI_OBJECT_TYPES) and len(KITTI_OBJECT_TYPES) == 9
    # Every KITTI type and every class of both models has its own colour in the one palette.
    for name in (*KITTI_OBJECT_TYPES, *DETECTION_CLASSES, *SEGMENTATION_CLASSES):
        assert name.lower() in CLASS_COLORS
    assert len(set(CLASS_COLORS.values())) == len(CLASS_COLORS)


def test_maps_send_types_and_ids_to_segmentation_classes():
    assert {t: SEGMENTATION_CLASSES[c] for t, c in KITTI_TYPE_TO_SEGMENTATION.items()} == {
        "Car": "car", "Van": "car", "Pedestrian": "pedestrian", "Person_sitting": "pedestrian", "Cyclist": "cyclist"}
    # Point-label ids: Car 1, Pedestrian 2, Cyclist 3, Van 4 (a car), road 10 ... (background), unknown ids 0.
    ids = np.array([0, POINT_CLASS_IDS["Car"], 2, 3, POINT_CLASS_IDS["Van"], 10, 14, 999], np.uint16)
    from squeeze.point_labels import squeezeseg_from_point_classes

    np.testing.assert_array_equal(squeezeseg_from_point_classes(ids), [0, 1, 2, 3, 1, 0, 0, 0])
    # SemanticKITTI: car 10, moving-car 252, person 30, bicyclist 31, moving-bicyclist 253; bicycle 11 and
    # truck 18 stay background, as do ids past the table and negative ones.
    raw = np.array([10, 252, 30, 254, 31, 253, 11, 18, 40, 70000, -3])
    np.testing.assert_array_equal(map_ids(raw, SEMANTIC_KITTI_TO_SEGMENTATION), [1, 1, 2, 2, 3, 3, 0, 0, 0, 0, 0])
    assert map_ids(np.zeros(0, np.uint32), SEMANTIC_KITTI_TO_SEGMENTATION).shape == (0,)
    with pytest.raises(ValueError, match="integer"):
        map_ids(np.array([1.5]), SEMANTIC_KITTI_TO_SEGMENTATION)


def test_one_palette_by_name():
    assert color_of("Car") == color_of("car") == (66, 135, 245)
    assert color_of("Pedestrian") == color_of("pedestrian") == (235, 64, 52)
    assert color_of("Truck") == (40, 90, 200) and color_of("a name nobody uses") == OTHER_COLOR
    table = palette(SEGMENTATION_CLASSES)
    assert table.dtype == np.uint8 and table.tolist() == [[90, 90, 90], [66, 135, 245], [235, 64, 52], [252, 186, 3],
                                                          list(OTHER_COLOR)]
    colours = colors_of_ids(np.array([[0, 3], [7, -1]]))
    assert colours.shape == (2, 2, 3) and colours.tolist() == [[[90, 90, 90], [252, 186, 3]],
                                                               [list(OTHER_COLOR), list(OTHER_COLOR)]]
    assert colors_of_ids(np.zeros(0, np.int64)).shape == (0, 3)  # an empty scan has nothing to colour


def test_legacy_background_name():
    assert segmentation_class_names(["unknown", "car", "pedestrian", "cyclist"]) == SEGMENTATION_CLASSES
    assert segmentation_class_names(("Unknown", "x")) == ("background", "x")
    assert segmentation_class_names(("background", "unknown")) == ("background", "unknown")  # only class 0
    assert segmentation_class_names(()) == ()


def test_class_lists_and_palettes_are_defined_once():
    """No module but squeeze/classes.py binds a class-list or palette name (the three KITTI_CLASSES of old)."""
    names = {"KITTI_CLASSES", "SQUEEZESEG_CLASSES", "CLASS_COLORS", "TYPE_COLORS", "CLASS_COLOURS_BGR",
             "KITTI_OBJECT_TYPES", "DETECTION_CLASSES", "SEGMENTATION_CLASSES", "KITTI_TYPE_TO_CLASS",
             "KITTI_TYPE_TO_SEGMENTATION", "POINT_CLASS_IDS", "SEMANTIC_KITTI_TO_SQUEEZESEG",
             "SEMANTIC_KITTI_TO_SEGMENTATION"}
    offenders = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in (".venv", "build") or rel == Path("squeeze/classes.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            offenders += [f"{rel}:{node.lineno} {t.id}" for t in targets if isinstance(t, ast.Name) and t.id in names]
    assert offenders == []
