"""latte.fusion: 3D proposals from 2D detections (frustum, depth clusters, image depth prior, one-click fit) and
segmenter pre-labels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latte.boxes import Box, boxes_array
from latte.fusion import (
    complete_to_class,
    depth_clusters,
    expected_depth,
    frustum_proposals,
    pick_cluster,
    prelabel,
)
from latte.one_click import FrameGeometry
from squeeze.errors import DataError
from squeeze.geometry import bev_iou, box3d_to_box2d, boxes_velo_to_rect
from squeeze.predictor import Detections2D, Detector, Segmentation, Segmenter
from tests.test_latte_kitti_io import IMAGE, cast
from tests.test_latte_scene import CALIB

CLASSES = ("Car", "Pedestrian", "Cyclist", "Bus")  # Bus: a class LATTE does not annotate
GROUND = np.array([30.0, 0.0, -1.78, 80.0, 80.0, 0.1, 0.0])  # a slab whose top is the road, 1.73 m below the LiDAR
# A pedestrian 8 m ahead, a car behind it at 14 m (the middle of its rear hidden by the pedestrian), a cyclist
# off to the left; all stand on the road.
PED = Box(id="p", cls="Pedestrian", x=8.0, y=-0.1, z=-0.855, l=0.7, w=0.6, h=1.75, yaw=0.3)
CAR = Box(id="c", cls="Car", x=14.0, y=-0.2, z=-0.98, l=4.0, w=1.7, h=1.5, yaw=0.1)
CYC = Box(id="y", cls="Cyclist", x=11.0, y=5.0, z=-0.86, l=1.8, w=0.6, h=1.74, yaw=-0.2)


class FixedDetector:
    """A squeeze.predictor.Detector that returns the same detections for any image."""

    class_names = CLASSES

    def __init__(self, detections: Detections2D):
        self.detections = detections

    def detect(self, image: np.ndarray) -> Detections2D:
        return self.detections


def _box2d(boxes: list[Box]) -> np.ndarray:
    return box3d_to_box2d(boxes_velo_to_rect(boxes_array(boxes), CALIB), CALIB.P2, IMAGE)


def _bev_iou(a: Box, b: Box) -> float:
    return float(bev_iou(boxes_velo_to_rect(a.array[None], CALIB), boxes_velo_to_rect(b.array[None], CALIB))[0, 0])


@pytest.fixture(scope="module")
def scene() -> FrameGeometry:
    points = cast(np.stack([GROUND, PED.array, CAR.array, CYC.array]))
    return FrameGeometry(points)


def test_two_objects_one_behind_the_other(scene):
    truth = [CAR, PED, CYC]
    boxes2d = _box2d(truth)
    # the pedestrian stands in the car's columns: each 2D box holds points of the other object
    assert boxes2d[0, 0] < boxes2d[1, 0] < boxes2d[1, 2] < boxes2d[0, 2]
    detector = FixedDetector(Detections2D(boxes2d, np.array([0, 1, 2]), np.array([0.9, 0.8, 0.7], np.float32)))
    assert isinstance(detector, Detector)
    proposals = frustum_proposals(scene, CALIB, detector.detect(np.zeros((IMAGE[1], IMAGE[0], 3), np.uint8)),
                                  detector.class_names, IMAGE)
    assert [p.id for p in proposals] == ["fus-0", "fus-1", "fus-2"]
    assert [p.cls for p in proposals] == ["Car", "Pedestrian", "Cyclist"]
    assert [p.score for p in proposals] == pytest.approx([0.9, 0.8, 0.7])
    assert all(p.source == "fusion" and not p.accepted and p.track_id == -1 for p in proposals)
    for p, t in zip(proposals, truth, strict=True):
        assert math.hypot(p.x - t.x, p.y - t.y) < 0.5, (p, t)
    assert _bev_iou(proposals[0], CAR) >= 0.6  # the middle of its rear face is hidden: a partial view
    assert _bev_iou(proposals[1], PED) >= 0.5
    assert _bev_iou(proposals[2], CYC) >= 0.5


def test_detections_without_points_or_class_give_nothing(scene):
    sky = [500.0, 0.0, 700.0, 60.0]  # above the horizon: nothing there
    car2d = _box2d([CAR])[0]
    detections = Detections2D(np.array([sky, car2d, car2d]), np.array([0, 3, 0]), np.array([0.9, 0.8, 0.7],
                                                                                          np.float32))
    proposals = frustum_proposals(scene, CALIB, detections, CLASSES, IMAGE)
    assert [(p.id, p.cls) for p in proposals] == [("fus-2", "Car")]  # the Bus detection is skipped
    assert frustum_proposals(scene, CALIB, Detections2D(), CLASSES) == []


def test_bad_detections_are_refused(scene):
    with pytest.raises(DataError, match="class index outside 0..3"):
        frustum_proposals(scene, CALIB, Detections2D(np.array([[0.0, 0, 10, 10]]), np.array([4]),
                                                     np.ones(1, np.float32)), CLASSES)
    with pytest.raises(DataError, match="NaN"):
        frustum_proposals(scene, CALIB, Detections2D(np.array([[0.0, np.nan, 10, 10]]), np.array([0]),
                                                     np.ones(1, np.float32)), CLASSES)


def test_depth_clusters_and_the_prior():
    near = np.full(10, 8.0) + np.linspace(0, 0.5, 10)  # 10 points at 8.0-8.5 m
    far = np.full(40, 14.0) + np.linspace(0, 2.0, 40)  # 40 at 14-16 m
    depth = np.concatenate([far, near])
    clusters = depth_clusters(depth)
    assert [sorted(c.tolist()) for c in clusters] == [list(range(40, 50)), list(range(40))]
    assert depth_clusters(np.zeros(0)) == []
    assert sorted(pick_cluster(depth, 14.2).tolist()) == list(range(40))  # the prior says: the far object
    assert sorted(pick_cluster(depth, 8.1).tolist()) == list(range(40, 50))
    assert sorted(pick_cluster(depth, None).tolist()) == list(range(40, 50))  # no prior: the nearest dense cluster
    # 4 stray points in front are not dense (fewer than MIN_POINTS), even when the prior names their depth
    stray = np.concatenate([far, np.full(4, 5.0)])
    assert sorted(pick_cluster(stray, 5.0).tolist()) == list(range(40))
    assert pick_cluster(np.full(3, 9.0), 9.0) is None


def test_expected_depth_from_the_ground_and_from_the_height():
    plane = np.array([0.0, 0.0, 1.0, 1.73])  # z = -1.73
    # the bottom edge at v = 180 + 700 * 1.73 / 10 stands 10 m away
    box = np.array([550.0, 150.0, 650.0, 180 + 700 * 1.73 / 10])
    assert expected_depth(box, "Car", CALIB, plane, 360) == pytest.approx(10.0)
    # bottom cut off by the image: the class height says f H / H_px = 700 * 1.53 / 106.1
    cut = np.array([550.0, 252.9, 650.0, 359.0])
    assert expected_depth(cut, "Car", CALIB, plane, 360) == pytest.approx(700 * 1.53 / 106.1)
    assert expected_depth(cut, "Car", CALIB, None, 360) == pytest.approx(700 * 1.53 / 106.1)
    assert expected_depth(np.array([550.0, 0.0, 650.0, 359.0]), "Car", CALIB, plane, 360) is None  # both cut
    above_horizon = np.array([550.0, 100.0, 650.0, 170.0])  # the ray never meets the road ahead: height prior
    assert expected_depth(above_horizon, "Pedestrian", CALIB, plane, 360) == pytest.approx(700 * 1.76 / 70)


def test_partial_fits_grow_to_the_class_size_away_from_the_sensor():
    # a car's back seen 20 m ahead: 1 m deep, full width -> 3.88 m long (one_click.CLASS_SIZES), the seen back
    # face (x = 19.5) kept
    grown = complete_to_class(np.array([20.0, 0.0, -1.0, 1.0, 1.63, 1.5, 0.0]), "Car")
    np.testing.assert_allclose(grown, [19.5 + 3.88 / 2, 0.0, -1.0, 3.88, 1.63, 1.5, 0.0])
    # behind the sensor and turned by 90 degrees: the length axis is velodyne y, the width axis -x
    grown = complete_to_class(np.array([-10.0, 0.0, -1.0, 3.9, 0.5, 1.5, math.pi / 2]), "Car")
    np.testing.assert_allclose(grown, [-10.0 - (1.63 - 0.5) / 2, 0.0, -1.0, 3.9, 1.63, 1.5, math.pi / 2], atol=1e-12)
    whole = np.array([5.0, 5.0, -1.0, 0.84, 0.66, 1.76, 0.3])
    np.testing.assert_array_equal(complete_to_class(whole, "Pedestrian"), whole)


class FixedSegmenter:
    class_names = ("unknown", "car", "Pedestrian", "cyclist", "road")

    def __init__(self, labels):
        self.labels = np.asarray(labels)

    def segment(self, points: np.ndarray) -> Segmentation:
        return Segmentation(self.labels, np.ones(len(self.labels), np.float32))


def test_prelabel_names_every_point():
    seg = FixedSegmenter([0, 1, 2, 3, 4, 9])
    assert isinstance(seg, Segmenter)
    points = np.zeros((6, 4), np.float32)
    # legacy "unknown" is background; road is not a LATTE class; 9 is past the class list
    assert prelabel(seg, points) == ["background", "car", "pedestrian", "cyclist", "background", "background"]
    assert prelabel(seg, np.zeros((0, 4), np.float32)) == []
    with pytest.raises(DataError, match="labels of shape"):
        prelabel(FixedSegmenter([0, 1]), points)


@pytest.mark.slow
def test_fusion_on_simulated_frames_with_true_2d_boxes(tmp_path):
    """Truth 2D boxes as detections on 4 simulated frames: cars with >= 50 points get BEV IoU >= 0.7 mostly."""
    from domain_adapt.sim.writer import simulate
    from latte.kitti_io import points_in_velodyne_boxes
    from latte.scene import open_source
    from squeeze.kitti import read_labels

    simulate(tmp_path / "sim", frames=4, seed=11, progress=False, world="dense")  # enough cars to count
    src = open_source(tmp_path / "sim")
    names = ("Car", "Van", "Pedestrian", "Cyclist")
    ious = []
    for fid in src.frame_ids():
        labels = read_labels(tmp_path / "sim" / "training" / "label_2" / f"{fid}.txt")
        labels = labels.select(labels.type != "DontCare")
        truth = src.labels(fid)
        geom = FrameGeometry(src.points(fid))
        detections = Detections2D(labels.bbox, np.array([names.index(t) for t in labels.type]),
                                  np.ones(len(labels), np.float32))
        proposals = {int(p.id[4:]): p for p in frustum_proposals(geom, src.calib(fid), detections, names, (1242, 375))}
        counts = points_in_velodyne_boxes(geom.points, boxes_array(truth)).sum(axis=0)
        for k, t in enumerate(truth):
            if t.cls == "Car" and counts[k] >= 50:
                p = proposals.get(k)
                calib = src.calib(fid)
                ious.append(0.0 if p is None else float(bev_iou(boxes_velo_to_rect(p.array[None], calib),
                                                                boxes_velo_to_rect(t.array[None], calib))[0, 0]))
    ious = np.array(ious)
    assert len(ious) >= 10 and np.mean(ious >= 0.7) >= 0.8, ious
