"""Tests of latte.one_click: L-shape fit, ground plane, clustering from a click, class priors, tracking re-fit.

Scenes are built by hand: a ground grid and box surfaces sampled on the faces a sensor at the origin sees, so
every expected number (yaw, sizes, centre, normal) is known exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latte.one_click import (
    CLASS_SIZES,
    FrameGeometry,
    fit_box_l_shape,
    fit_ground,
    one_click_box,
    refit_near,
)
from squeeze.errors import DataError
from squeeze.geometry import bev_iou

SENSOR_HEIGHT = 1.73  # m, KITTI's velodyne above the road
KITTI_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_mini"


def velo_bev_iou(a: np.ndarray, b: np.ndarray) -> float:
    """BEV IoU of two velodyne boxes through the camera-layout bev_iou ([x, 0, -y, h, w, l, yaw] mirrors y)."""
    def cam(b7):
        return np.array([[b7[0], 0.0, -b7[1], b7[5], b7[4], b7[3], b7[6]]])
    return float(bev_iou(cam(a), cam(b))[0, 0])


def yaw_error(a: float, b: float, period: float = math.pi) -> float:
    """|a - b| modulo `period`, in [0, period / 2]."""
    d = (a - b) % period
    return min(d, period - d)


def l_shape(cx, cy, length, width, yaw, step=0.05, noise=0.0, seed=0) -> np.ndarray:
    """(M, 2) points on the two faces of a rectangle seen from the origin (an L), `step` apart."""
    c, s = math.cos(yaw), math.sin(yaw)
    rot = np.array([[c, -s], [s, c]])
    faces = []
    for axis, half, other in ((0, length / 2, width / 2), (1, width / 2, length / 2)):
        for sign in (-1.0, 1.0):
            t = np.arange(-other, other + 1e-9, step)
            local = np.zeros((len(t), 2))
            local[:, axis] = sign * half
            local[:, 1 - axis] = t
            normal = np.zeros(2)
            normal[axis] = sign
            centre = np.array([cx, cy]) + rot @ (normal * half)
            if (rot @ normal) @ centre < 0:  # the face looks towards the sensor
                faces.append(local)
    pts = np.concatenate(faces) @ rot.T + [cx, cy]
    return pts + np.random.default_rng(seed).normal(0, noise, pts.shape)


def box_surface(box7, step=0.05, ground_z=-SENSOR_HEIGHT) -> np.ndarray:
    """(M, 3) points on the faces of a velodyne box that the origin sees (vertical faces from 0.1 m) and its top."""
    x, y, z, length, width, h, yaw = box7
    bottom, top = ground_z + 0.1, z + h / 2
    rows = []
    for cx, cy in l_shape(x, y, length, width, yaw, step):
        for zz in np.arange(bottom, top, step * 2):
            rows.append((cx, cy, zz))
    c, s = math.cos(yaw), math.sin(yaw)
    u, v = np.meshgrid(np.arange(-length / 2, length / 2, step * 2), np.arange(-width / 2, width / 2, step * 2))
    roof = np.stack([x + u.ravel() * c - v.ravel() * s, y + u.ravel() * s + v.ravel() * c,
                     np.full(u.size, top)], axis=1)
    return np.concatenate([np.array(rows), roof])


def ground_grid(x0=-10.0, x1=30.0, y0=-12.0, y1=12.0, step=0.25, tilt=(0.0, 0.0)) -> np.ndarray:
    """(M, 3) flat ground points z = -SENSOR_HEIGHT + ax * x + ay * y on a grid."""
    gx, gy = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step))
    gx, gy = gx.ravel(), gy.ravel()
    return np.stack([gx, gy, -SENSOR_HEIGHT + tilt[0] * gx + tilt[1] * gy], axis=1)


def scan(*parts: np.ndarray) -> np.ndarray:
    xyz = np.concatenate(parts)
    return np.concatenate([xyz, np.full((len(xyz), 1), 0.3)], axis=1).astype(np.float32)


CAR = np.array([12.0, 3.0, -SENSOR_HEIGHT + 0.75, 4.2, 1.7, 1.5, 0.35])  # geometric centre, on the ground


# ------------------------------------------------------------------------------------------------ L-shape
@pytest.mark.parametrize("yaw", [0.0, 0.35, -1.2, 1.52, 0.79])
def test_l_shape_recovers_yaw_sizes_and_centre(yaw):
    pts = l_shape(12.0, -4.0, 4.2, 1.7, yaw, noise=0.005)
    cx, cy, length, width, fitted = fit_box_l_shape(pts)
    assert yaw_error(fitted, yaw) < math.radians(1.0)
    assert abs(length - 4.2) < 0.05 and abs(width - 1.7) < 0.05
    assert math.hypot(cx - 12.0, cy + 4.0) < 0.05
    assert -math.pi / 2 <= fitted < math.pi / 2  # no prior: the heading's sign is unknown, half-turn range


def test_l_shape_takes_the_middle_of_a_flat_closeness_top():
    # Noise-free faces lie within CLOSENESS_D0 of their edges over a range of headings, where the score is flat. The
    # first heading of that range (an argmax) was 0.7 degrees low on such an L and moved with the points' rotation;
    # the middle of the range is the true heading.
    for yaw in (0.3, 1.0, -0.7, 1.4):
        *_, width, fitted = fit_box_l_shape(l_shape(10.0, 2.0, 4.0, 1.8, yaw))
        assert yaw_error(fitted, yaw) < math.radians(0.05) and abs(width - 1.8) < 0.01
    # One face seen alone (a 1.7 m back, 5 cm steps): flat over about +-1.7 degrees; its middle is the face's line.
    t = np.arange(-0.85, 0.85 + 1e-9, 0.05)
    for direction in (0.2, -0.45, 1.3):
        face = np.stack([10.0 + t * math.cos(direction), 2.0 + t * math.sin(direction)], axis=1)
        *_, length, width, fitted = fit_box_l_shape(face)
        assert yaw_error(fitted, direction) < math.radians(0.05) and width < 1e-3 and abs(length - 1.7) < 1e-3
        # With a prior (the search window is not a whole quarter turn) the same middle.
        *_, fitted = fit_box_l_shape(face, prior_yaw=direction + 0.1)
        assert yaw_error(fitted, direction, 2 * math.pi) < math.radians(0.05)


def test_l_shape_with_a_prior_returns_the_heading_nearest_it():
    pts = l_shape(8.0, 6.0, 4.0, 1.6, 0.3)
    # A prior pointing the other way along the same axis gets the flipped heading, within 1 degree of pi + 0.3.
    *_, yaw = fit_box_l_shape(pts, prior_yaw=math.pi + 0.25)
    assert yaw_error(yaw, math.pi + 0.3, 2 * math.pi) < math.radians(1.0)
    # A prior across the car: the search stays within 20 degrees of it, so the length follows the prior's axis.
    *_, length, width, yaw = fit_box_l_shape(pts, prior_yaw=0.3 + math.pi / 2)
    assert yaw_error(yaw, 0.3 + math.pi / 2, 2 * math.pi) < math.radians(1.0)
    assert abs(length - 1.6) < 0.05 and abs(width - 4.0) < 0.05


def test_l_shape_of_one_point_and_bad_arrays():
    assert fit_box_l_shape(np.array([[3.0, 4.0]])) == (3.0, 4.0, 0.0, 0.0, 0.0)
    for bad in (np.zeros((0, 2)), np.zeros((5, 3)), np.array([[0.0, np.nan]])):
        with pytest.raises(DataError, match="xy"):
            fit_box_l_shape(bad)


@settings(max_examples=25, deadline=None)
@given(theta=st.floats(-math.pi, math.pi), yaw=st.floats(-1.5, 1.5),
       length=st.floats(3.0, 5.5), width=st.floats(1.4, 2.2))
def test_l_shape_is_rotation_equivariant(theta, yaw, length, width):
    """Rotating the points about the sensor by theta rotates the fitted yaw by theta (mod pi: a rectangle's
    heading sign is unknown; l >= w fixes the quarter turn) and the centre with it."""
    pts = l_shape(10.0, 2.0, length, width, yaw)
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    cx, cy, fl, fw, fyaw = fit_box_l_shape(pts)
    rx, ry, rl, rw, ryaw = fit_box_l_shape(pts @ rot.T)
    assert yaw_error(ryaw, fyaw + theta) < math.radians(0.2)
    assert abs(rl - fl) < 0.02 and abs(rw - fw) < 0.02
    assert np.allclose(rot @ [cx, cy], [rx, ry], atol=0.02)


# ------------------------------------------------------------------------------------------------ ground
def test_ground_plane_of_a_tilted_road():
    # 3% up along x, 1% down along y: normal (-0.03, 0.01, 1) normalised; the car stands on it.
    tilt = (0.03, -0.01)
    ground = ground_grid(tilt=tilt)
    car = box_surface(CAR, ground_z=-SENSOR_HEIGHT + tilt[0] * 12 + tilt[1] * 3)
    g = fit_ground(scan(ground, car))
    expected = np.array([-tilt[0], -tilt[1], 1.0]) / math.sqrt(1 + tilt[0] ** 2 + tilt[1] ** 2)
    assert np.degrees(np.arccos(np.clip(g.plane[:3] @ expected, -1, 1))) < 0.2
    assert abs(g.plane[3] - SENSOR_HEIGHT * expected[2]) < 0.02  # passes 1.73 m below the sensor
    assert g.mask[: len(ground)].all()
    lifted = car[:, 2] - (-SENSOR_HEIGHT + tilt[0] * car[:, 0] + tilt[1] * car[:, 1]) > 0.25
    assert not g.mask[len(ground):][lifted].any()


def test_ground_follows_a_ramp_beyond_the_plane():
    # Flat to x = 10 m, then rising 4%: 0.56 m up at x = 24 m (a plane fit cannot follow the kink); the ramp is
    # ground, the car on it is not.
    gx, gy = np.meshgrid(np.arange(-10, 30, 0.25), np.arange(-12, 12, 0.25))
    gx, gy = gx.ravel(), gy.ravel()
    gz = -SENSOR_HEIGHT + 0.04 * np.clip(gx - 10, 0, None)
    car = CAR.copy()
    car[:2] = (24.0, -3.0)
    base = -SENSOR_HEIGHT + 0.04 * 14
    car[2] = base + 0.75
    geom = FrameGeometry(scan(np.stack([gx, gy, gz], 1), box_surface(car, ground_z=base)))
    assert geom.ground.mask[: len(gx)].mean() > 0.99
    found = one_click_box(geom, box_surface(car, ground_z=base)[5], "Car")
    assert found is not None
    assert abs(found[0][2] - found[0][5] / 2 - base) < 0.15  # the box stands on the ramp


# ------------------------------------------------------------------------------------------------ one-click
def test_one_click_on_a_car_gives_its_box():
    car_pts = box_surface(CAR)
    geom = FrameGeometry(scan(ground_grid(), car_pts))
    for cls in ("Car", None):
        box, idx = one_click_box(geom, car_pts[len(car_pts) // 3], cls)
        assert velo_bev_iou(box, CAR) > 0.9
        assert yaw_error(box[6], CAR[6]) < math.radians(1.0)
        assert abs(box[5] - CAR[5]) < 0.1 and abs(box[2] - CAR[2]) < 0.1  # ground to roof
        first_car = len(geom.points) - len(car_pts)
        assert (idx >= first_car).all()  # no ground point
        lifted = first_car + np.flatnonzero(car_pts[:, 2] > -SENSOR_HEIGHT + 0.25)
        assert np.isin(lifted, idx).all()  # every car point clearly above the road


def test_car_next_to_a_wall_is_not_merged():
    # A 3 m wall, 20 m long, parallel to the car and 0.3 m from its side: closer than the clustering radius.
    c, s = math.cos(CAR[6]), math.sin(CAR[6])
    t = np.arange(-10, 10, 0.05)
    off = CAR[4] / 2 + 0.3
    wall_xy = np.stack([CAR[0] + t * c - off * s, CAR[1] + t * s + off * c], 1)
    wall = np.array([(x, y, z) for x, y in wall_xy for z in np.arange(-SENSOR_HEIGHT + 0.1, 1.3, 0.1)])
    car_pts = box_surface(CAR)
    geom = FrameGeometry(scan(ground_grid(), car_pts, wall))
    box, idx = one_click_box(geom, car_pts[10], "Car")
    n_ground_car = len(ground_grid()) + len(car_pts)
    assert (idx < n_ground_car).all()  # no wall point in the cluster
    assert velo_bev_iou(box, CAR) > 0.85


def test_click_on_empty_ground_is_none():
    geom = FrameGeometry(scan(ground_grid(), box_surface(CAR)))
    assert one_click_box(geom, (5.0, -6.0, -SENSOR_HEIGHT), "Car") is None
    assert one_click_box(geom, (5.0, -6.0, -SENSOR_HEIGHT)) is None
    assert len(geom.cluster_near((5.0, -6.0, -SENSOR_HEIGHT))) == 0


def test_car_seen_from_behind_grows_away_from_the_sensor():
    # Only the rear face (and the roof edge) of a car straight ahead: 1.7 m across, no length seen.
    rear_x = 15.0
    y = np.arange(-0.85, 0.85, 0.04)
    z = np.arange(-SENSOR_HEIGHT + 0.2, -SENSOR_HEIGHT + 1.45, 0.08)
    yy, zz = np.meshgrid(y, z)
    rear = np.stack([np.full(yy.size, rear_x), yy.ravel(), zz.ravel()], 1)
    geom = FrameGeometry(scan(ground_grid(), rear))
    box, _ = one_click_box(geom, rear[len(rear) // 2], "Car")
    length, width = CLASS_SIZES["Car"][:2]
    assert abs(box[3] - length) < 1e-6  # the class's length, not the 4 cm seen
    assert abs(box[0] - (rear_x + length / 2)) < 0.05  # behind the rear face, not in front of it
    assert abs(box[4] - 1.7) < 0.1 and yaw_error(box[6], 0.0) < math.radians(2.0)
    assert abs(box[1]) < 0.05


def test_car_whose_near_end_is_hidden_grows_towards_the_sensor():
    # A car side-on at y = 10 m, x in [2, 6]; something 5 m out hides its near metre (azimuth > 71.8 deg).
    car = np.array([4.0, 10.0, -SENSOR_HEIGHT + 0.75, 4.0, 1.7, 1.5, 0.0])
    pts = box_surface(car)
    seen = pts[np.degrees(np.arctan2(pts[:, 1], pts[:, 0])) < 71.8]
    ox, oz = np.meshgrid(np.arange(0.9, 1.7, 0.03), np.arange(-SENSOR_HEIGHT + 0.3, 0.6, 0.05))
    occluder = np.stack([ox.ravel(), np.full(ox.size, 5.0), oz.ravel()], 1)
    geom = FrameGeometry(scan(ground_grid(), seen, occluder))
    box, _ = one_click_box(geom, seen[len(seen) // 2], "Car")
    assert 2.9 < 6.0 - seen[:, 0].min() < 3.1  # the part seen: 3 m of the side, short of a car's length
    assert abs(box[0] + box[3] / 2 - 6.0) < 0.05  # the far end is the one seen whole: the box grows forwards
    assert velo_bev_iou(box, car) > 0.85


def test_pedestrian_prior_and_bad_class():
    body = box_surface(np.array([9.0, -2.0, -SENSOR_HEIGHT + 0.88, 0.4, 0.5, 1.75, 0.0]), step=0.03)
    geom = FrameGeometry(scan(ground_grid(), body))
    box, _ = one_click_box(geom, body[0], "Pedestrian")
    assert box[3] == pytest.approx(CLASS_SIZES["Pedestrian"][0]) or box[4] == pytest.approx(
        CLASS_SIZES["Pedestrian"][0])
    assert 1.6 < box[5] < 1.9
    with pytest.raises(DataError, match="cls"):
        one_click_box(geom, body[0], "Bus")


# ------------------------------------------------------------------------------------------------ refit
def test_refit_near_moves_the_prediction_onto_the_points_and_keeps_its_size():
    car_pts = box_surface(CAR)
    geom = FrameGeometry(scan(ground_grid(), car_pts))
    predicted = CAR + np.array([0.6, -0.3, 0.0, 0.0, 0.0, 0.0, math.radians(6.0)])
    box = refit_near(geom, predicted, "Car")
    assert box is not None
    assert np.hypot(*(box[:2] - CAR[:2])) < 0.05
    assert yaw_error(box[6], CAR[6], 2 * math.pi) < math.radians(1.0)
    assert np.allclose(box[3:5], CAR[3:5], atol=1e-6)  # the predicted (accepted) sizes are kept
    # Nothing at the prediction: None, so tracking keeps its own prediction.
    assert refit_near(geom, predicted + [0, 8.0, 0, 0, 0, 0, 0], "Car") is None
    with pytest.raises(DataError, match="predicted_box7"):
        refit_near(geom, np.zeros(6))


def test_refit_of_a_partly_occluded_car_keeps_the_predicted_length():
    # Only the rear 1.5 m of the car's near side and its rear face are seen (the front hidden behind something).
    yaw = 0.0
    car = np.array([15.0, 4.0, -SENSOR_HEIGHT + 0.75, 4.2, 1.7, 1.5, yaw])
    pts = box_surface(car)
    seen = pts[pts[:, 0] < car[0] - car[3] / 2 + 1.5]
    geom = FrameGeometry(scan(ground_grid(), seen))
    box = refit_near(geom, car + [0.3, 0.1, 0, 0, 0, 0, 0.02], "Car")
    assert box is not None and abs(box[3] - 4.2) < 1e-6
    assert velo_bev_iou(box, car) > 0.85


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("points, fault", [
    (np.zeros((0, 4), np.float32), "empty"),
    (np.array([[1.0, 2.0, np.nan, 0.0]], np.float32), "NaN"),
    (np.zeros((10, 2), np.float32), "shape"),
    (np.zeros(12, np.float32), "shape"),
    ([[0.0, 0.0, 0.0, 0.0]], "numpy array"),
    (np.array([["a", "b", "c"]]), "float"),
])
def test_bad_scans_raise_a_data_error_naming_points(points, fault):
    with pytest.raises(DataError, match=f"points.*{fault}"):
        fit_ground(points)
    with pytest.raises(DataError, match=fault):
        FrameGeometry(points)


def test_bad_clicks_and_indices():
    geom = FrameGeometry(scan(ground_grid(), box_surface(CAR)))
    for click in ((1.0, 2.0), (np.nan, 0.0, 0.0), "abc"):
        with pytest.raises(DataError, match="click"):
            one_click_box(geom, click, "Car")
    with pytest.raises(DataError, match="indices"):
        geom.fit_box(np.array([], dtype=np.int64))
    with pytest.raises(DataError, match="indices"):
        geom.fit_box(np.array([10 ** 9]))


# ------------------------------------------------------------------------------------------------ real scan
@pytest.mark.skipif(not (KITTI_MINI / "training" / "velodyne" / "000001.bin").exists(),
                    reason="../shared/data/kitti_mini absent")
def test_kitti_frame_ground_and_the_labelled_truck():
    from squeeze.geometry import boxes_rect_to_velo
    from squeeze.kitti import KittiObjectFolder

    frame = KittiObjectFolder(KITTI_MINI).load("000001", parts=("velodyne", "calib", "label_2"))
    geom = FrameGeometry(frame.points)
    a, b, c, d = geom.ground.plane
    assert c > math.cos(math.radians(5.0)) and 1.5 < d / c < 1.9  # near level, ~1.73 m under the sensor
    labels = frame.labels.select(frame.labels.type == "Truck")
    truth = boxes_rect_to_velo(labels.boxes3d, frame.calib)[0]
    xyz = frame.points[:, :3].astype(np.float64)
    dx = xyz[:, :2] - truth[:2]
    cs, sn = math.cos(truth[6]), math.sin(truth[6])
    inside = (np.abs(dx[:, 0] * cs + dx[:, 1] * sn) < truth[3] / 2) & (np.abs(-dx[:, 0] * sn + dx[:, 1] * cs)
                                                                       < truth[4] / 2) & ~geom.ground.mask
    box, _ = one_click_box(geom, xyz[np.flatnonzero(inside)[0]], "Truck")
    assert velo_bev_iou(box, truth) > 0.6
