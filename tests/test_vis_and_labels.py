"""Point labels from 3D boxes, and the pictures (range image, bird's-eye view, camera) on real and synthetic frames."""

from __future__ import annotations

import numpy as np

from squeeze.kitti import KittiObjectFolder, ObjectLabels, read_image
from squeeze.point_labels import point_classes_from_boxes, squeezeseg_from_point_classes
from squeeze.vis import bev_picture, camera_picture, write_frame_pictures
from tests.conftest import kitti_like_calibration


def _one_box(kind: str) -> ObjectLabels:
    # A 2 x 2 x 4 m box whose bottom centre is 10 m ahead of the camera (camera y points down).
    return ObjectLabels(type=np.array([kind]), truncated=np.zeros(1), occluded=np.zeros(1, np.int64),
                        alpha=np.zeros(1), bbox=np.array([[0.0, 0, 10, 10]]), dimensions=np.array([[2.0, 2.0, 4.0]]),
                        location=np.array([[0.0, 1.0, 10.0]]), rotation_y=np.zeros(1))


def test_point_classes_from_boxes():
    calib = kitti_like_calibration()
    # In velodyne coordinates the box centre is ~10.3 m ahead; put points at its centre and well outside.
    inside_rect = np.array([[0.0, 0.0, 10.0], [1.5, 0.5, 10.5]])
    outside_rect = np.array([[0.0, 0.0, 20.0], [5.0, 0.0, 10.0]])
    velo = np.concatenate([inside_rect, outside_rect])
    hom = np.concatenate([velo, np.ones((4, 1))], axis=1)
    velo = (hom @ calib.rect_to_velo.T)[:, :3]
    np.testing.assert_array_equal(point_classes_from_boxes(velo, calib, _one_box("Cyclist")), [3, 3, 0, 0])
    np.testing.assert_array_equal(point_classes_from_boxes(velo, calib, _one_box("Van")), [1, 1, 0, 0])
    np.testing.assert_array_equal(point_classes_from_boxes(velo, calib, _one_box("Misc")), [0, 0, 0, 0])
    np.testing.assert_array_equal(point_classes_from_boxes(velo, calib, ObjectLabels()), [0, 0, 0, 0])


def test_squeezeseg_from_point_classes():
    np.testing.assert_array_equal(squeezeseg_from_point_classes(np.array([0, 1, 2, 3, 4, 10, 14, 999])),
                                  [0, 1, 2, 3, 1, 0, 0, 0])


def test_pictures_of_real_frames(kitti_mini, tmp_path):
    folder = KittiObjectFolder(kitti_mini)
    written = write_frame_pictures(folder.load("000001"), tmp_path)
    assert [p.name for p in written] == ["000001_range.png", "000001_bev.png", "000001_camera.png"]
    rng = read_image(written[0])
    assert rng.shape == (3 * (64 + 2 + 64), 512, 3)
    cam = read_image(written[2])
    assert cam.shape == (375, 1242, 3)
    # The cyclist's class colour (SqueezeSeg id 3) shows in the class half of the range image.
    assert np.all(rng[3 * 66:] == [252, 186, 3], axis=2).sum() > 10


def test_bev_and_camera_pictures_draw_something():
    calib = kitti_like_calibration()
    pts = np.array([[10.0, 0.0, -1.0, 0.5], [20.0, 5.0, 0.0, 0.5]], np.float32)
    bev = bev_picture(pts, _one_box("Car").boxes3d, calib, np.array(["Car"]))
    assert bev.shape == (800, 800, 3) and (bev == [66, 135, 245]).all(axis=2).sum() > 50
    cam = camera_picture(np.zeros((375, 1242, 3), np.uint8), pts, calib, _one_box("Car"))
    assert cam.any()
