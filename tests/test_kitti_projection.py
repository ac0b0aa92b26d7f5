"""Real KITTI frames: LiDAR points inside each labelled object project inside its 2D box (calib + geometry)."""

from __future__ import annotations

import numpy as np

from squeeze.geometry import points_in_boxes3d, velo_to_image, velo_to_rect
from squeeze.kitti import KittiObjectFolder

CLASSES = ("Car", "Pedestrian", "Cyclist")
TOLERANCE_PX = 4.0  # labels are hand-drawn 2D boxes; LiDAR and camera are not exactly synchronous


def test_object_points_project_into_their_2d_boxes(kitti_mini):
    checked = 0
    for frame in KittiObjectFolder(kitti_mini):
        h, w = frame.image.shape[:2]
        uv_all, depth_all = velo_to_image(frame.points, frame.calib)
        in_view = (depth_all > 0) & (uv_all[:, 0] >= 0) & (uv_all[:, 0] < w) & (uv_all[:, 1] >= 0) & (uv_all[:, 1] < h)
        # Most of the scan is behind or beside the camera; the front quarter lands in the image.
        assert 0.1 < in_view.mean() < 0.4

        keep = np.isin(frame.labels.type, CLASSES)
        objects = frame.labels.select(keep)
        inside = points_in_boxes3d(velo_to_rect(frame.points, frame.calib), objects.boxes3d)
        for k in range(len(objects)):
            pts = frame.points[inside[:, k]]
            assert len(pts) >= 5, f"{frame.frame_id}: {objects.type[k]} box holds {len(pts)} LiDAR points"
            uv, depth = velo_to_image(pts, frame.calib)
            assert (depth > 0).all()
            left, top, right, bottom = objects.bbox[k]
            assert uv[:, 0].min() >= left - TOLERANCE_PX and uv[:, 0].max() <= right + TOLERANCE_PX, frame.frame_id
            assert uv[:, 1].min() >= top - TOLERANCE_PX and uv[:, 1].max() <= bottom + TOLERANCE_PX, frame.frame_id
            # And the points cover a good part of the box: it is the right object, not a sliver.
            assert np.ptp(uv[:, 0]) > 0.2 * (right - left)
            checked += 1
    assert checked == 4  # 000000 Pedestrian; 000001 Car, Cyclist; 000002 Car
