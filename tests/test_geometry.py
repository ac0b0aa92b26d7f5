"""Tests of squeeze.geometry: hand-computed values, properties (hypothesis), independent references, KITTI."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squeeze import geometry as g
from squeeze.errors import DataError
from squeeze.kitti import Calibration, read_calib, read_labels, read_velodyne

KITTI_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_mini"
SQRT2 = math.sqrt(2.0)
PROPS = settings(max_examples=60, deadline=None)


# ---------------------------------------------------------------------------------------------------- helpers
def box(x=0.0, y=0.0, z=0.0, h=1.0, w=1.0, l=1.0, ry=0.0) -> np.ndarray:  # noqa: E741 - KITTI's name
    """One camera box as a (1, 7) array."""
    return np.array([[x, y, z, h, w, l, ry]], dtype=np.float64)


def rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def make_calib(tilt: bool = True) -> Calibration:
    """A KITTI-like calibration: velodyne axes permuted onto the camera's, plus (with tilt) small rotations of
    the size KITTI's have (a few tenths of a degree) and a lever arm."""
    swap = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # velo x fwd, y left, z up -> cam
    if tilt:
        tr_rot = rot("x", 0.004) @ rot("y", -0.007) @ rot("z", 0.003) @ swap
        r0 = rot("x", 0.004) @ rot("y", -0.0085) @ rot("z", -0.010)
        t = np.array([-0.0246, -0.0613, -0.332])
    else:
        tr_rot, r0, t = swap, np.eye(3), np.zeros(3)
    P = np.array([[707.05, 0.0, 604.08, 45.76], [0.0, 707.05, 180.51, -0.345], [0.0, 0.0, 1.0, 0.00498]])
    return Calibration(P0=P, P1=P, P2=P, P3=P, R0_rect=r0, Tr_velo_to_cam=np.hstack([tr_rot, t[:, None]]),
                       Tr_imu_to_velo=np.hstack([np.eye(3), np.zeros((3, 1))]))


def ref_intersection_area(pa: np.ndarray, pb: np.ndarray) -> float:
    """Independent reference: area of the intersection of two convex polygons (K, 2) as the convex hull of
    (vertices of each inside the other) + (edge-edge crossings), by Andrew's monotone chain and shoelace."""

    def inside(p, poly):
        signs = []
        for k in range(len(poly)):
            a, b = poly[k], poly[(k + 1) % len(poly)]
            signs.append((b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]))
        return all(s >= -1e-12 for s in signs) or all(s <= 1e-12 for s in signs)

    pts = [tuple(p) for p in pa if inside(p, pb)] + [tuple(p) for p in pb if inside(p, pa)]
    for i in range(len(pa)):
        p, r = pa[i], pa[(i + 1) % len(pa)] - pa[i]
        for j in range(len(pb)):
            q, s = pb[j], pb[(j + 1) % len(pb)] - pb[j]
            den = r[0] * s[1] - r[1] * s[0]
            if abs(den) < 1e-15:
                continue
            t = ((q[0] - p[0]) * s[1] - (q[1] - p[1]) * s[0]) / den
            u = ((q[0] - p[0]) * r[1] - (q[1] - p[1]) * r[0]) / den
            if 0 <= t <= 1 and 0 <= u <= 1:
                pts.append((p[0] + t * r[0], p[1] + t * r[1]))
    pts = sorted(set(pts))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    upper: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    return 0.5 * abs(sum(hull[k][0] * hull[(k + 1) % len(hull)][1] - hull[(k + 1) % len(hull)][0] * hull[k][1]
                         for k in range(len(hull))))


def rigid_motion(boxes: np.ndarray, theta: float, shift: np.ndarray) -> np.ndarray:
    """Rotate camera boxes about the camera y axis by theta (through the origin), then translate."""
    out = boxes.copy()
    c, s = math.cos(theta), math.sin(theta)
    out[:, 0] = c * boxes[:, 0] + s * boxes[:, 2]
    out[:, 2] = -s * boxes[:, 0] + c * boxes[:, 2]
    out[:, :3] += shift
    out[:, 6] = boxes[:, 6] + theta
    return out


# Strategies: boxes in a 20 m square with sizes 0.2..4 m; pairs with the second near the first (overlapping).
coord = st.floats(-10, 10, allow_nan=False)
size = st.floats(0.2, 4.0, allow_nan=False)
angle = st.floats(-math.pi, math.pi, allow_nan=False)
offset = st.floats(-2.5, 2.5, allow_nan=False)


@st.composite
def box_pair(draw) -> tuple[np.ndarray, np.ndarray]:
    a = box(draw(coord), draw(st.floats(-2, 2)), draw(coord), draw(size), draw(size), draw(size), draw(angle))
    b = box(a[0, 0] + draw(offset), a[0, 1] + draw(st.floats(-1, 1)), a[0, 2] + draw(offset),
            draw(size), draw(size), draw(size), draw(angle))
    return a, b


@st.composite
def box_sets(draw) -> tuple[np.ndarray, np.ndarray]:
    pairs = draw(st.lists(box_pair(), min_size=1, max_size=5))
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


# ---------------------------------------------------------------------------------------------------- corners
def test_box3d_corners_known_box():
    # ry = pi/2: the box's length axis (1, 0, 0) maps to camera (0, 0, -1); its z axis to camera +x.
    corners = g.box3d_corners(box(1, 2, 3, h=2, w=1, l=4, ry=math.pi / 2))
    expected = np.array([[1.5, 2, 1], [0.5, 2, 1], [0.5, 2, 5], [1.5, 2, 5],
                         [1.5, 0, 1], [0.5, 0, 1], [0.5, 0, 5], [1.5, 0, 5]])
    np.testing.assert_allclose(corners[0], expected, atol=1e-12)


def test_box3d_corners_order_and_shape():
    corners = g.box3d_corners(box(0, 1.5, 10, h=1.5, w=1.6, l=4.0, ry=0.0))
    assert corners.shape == (1, 8, 3)
    # ry = 0: length along +x; corners 0, 1 at +l/2 (the front), bottom face at y = 1.5, top at y = 0.
    np.testing.assert_allclose(corners[0, :4, 1], 1.5)
    np.testing.assert_allclose(corners[0, 4:, 1], 0.0)
    np.testing.assert_allclose(corners[0, 4:] - corners[0, :4], [[0, -1.5, 0]] * 4)
    np.testing.assert_allclose(corners[0, [0, 1], 0], 2.0)
    np.testing.assert_allclose(corners[0, [0, 3], 2], 10.8)
    assert g.box3d_corners(np.zeros((0, 7))).shape == (0, 8, 3)


def test_rotation_matrix_y_and_heading():
    r = g.rotation_matrix_y(0.3)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-15)
    np.testing.assert_allclose(r, rot("y", 0.3))
    assert g.rotation_matrix_y(np.zeros(5)).shape == (5, 3, 3)
    # ry = -pi/2: the heading points away from the camera (+z), as for a car driving ahead of the ego car.
    np.testing.assert_allclose(g.rotation_matrix_y(-math.pi / 2) @ [1, 0, 0], [0, 0, 1], atol=1e-15)


def test_bev_corners_are_bottom_face():
    b = box(3, 1, 7, 1.5, 1.7, 4.2, 0.7)
    np.testing.assert_allclose(g.bev_corners(b), g.box3d_corners(b)[:, :4][:, :, [0, 2]])


# ------------------------------------------------------------------------------------------------ IoU by hand
def test_bev_iou_axis_aligned_one_seventh():
    # 2 x 2 footprints offset by 1.5 along the heading: overlap 0.5 x 2 = 1, union 4 + 4 - 1 = 7.
    a = box(0, 0, 0, h=1, w=2, l=2, ry=0.0)
    b = box(1.5, 0, 0, h=1, w=2, l=2, ry=0.0)
    assert g.bev_iou(a, b)[0, 0] == pytest.approx(1 / 7, abs=1e-12)
    # The same pair rotated together by an arbitrary angle.
    ry = 0.3
    b_rot = box(1.5 * math.cos(ry), 0, -1.5 * math.sin(ry), h=1, w=2, l=2, ry=ry)
    assert g.bev_iou(box(0, 0, 0, 1, 2, 2, ry), b_rot)[0, 0] == pytest.approx(1 / 7, abs=1e-12)


def test_bev_unit_square_vs_rotated_45_degrees():
    # The intersection is a regular octagon: the unit square minus four corner triangles, each of height
    # d = (sqrt2 - 1) / 2 and base 2d (area d^2), so 1 - 4 d^2 = 1 - (sqrt2 - 1)^2 = 2 (sqrt2 - 1);
    # IoU = that / (2 - that) = 1 / sqrt2.
    a = box(0, 0, 0, 1, 1, 1, 0.0)
    b = box(0, 0, 0, 1, 1, 1, math.pi / 4)
    assert g.bev_intersection_area(a, b)[0, 0] == pytest.approx(2 * (SQRT2 - 1), abs=1e-12)
    assert g.bev_iou(a, b)[0, 0] == pytest.approx(1 / SQRT2, abs=1e-12)
    assert g.bev_iou(b, b)[0, 0] == pytest.approx(1.0, abs=1e-12)
    # Rotated by 90 degrees a square is itself.
    assert g.bev_iou(a, box(0, 0, 0, 1, 1, 1, math.pi / 2))[0, 0] == pytest.approx(1.0, abs=1e-12)


def test_bev_corner_touching_rotated_square():
    # A 45-degree square (half-diagonal sqrt2/2) shifted so its left vertex is at the right side's centre.
    a = box(0, 0, 0, 1, 1, 1, 0.0)
    b = box(0.5 + SQRT2 / 2, 0, 0, 1, 1, 1, math.pi / 4)
    assert g.bev_iou(a, b)[0, 0] == pytest.approx(0.0, abs=1e-12)
    # Shifted back by 0.25: the overlap is a triangle of height 0.25 and base 0.5.
    b = box(0.25 + SQRT2 / 2, 0, 0, 1, 1, 1, math.pi / 4)
    assert g.bev_intersection_area(a, b)[0, 0] == pytest.approx(0.0625, abs=1e-12)


def test_iou_3d_vertical_offset():
    a = box(0, 0, 0, h=2, w=2, l=2, ry=0.0)
    up = box(0, -1, 0, h=2, w=2, l=2, ry=0.0)  # camera y down: y - 1 is 1 m higher
    assert g.iou_3d(a, up)[0, 0] == pytest.approx(1 / 3, abs=1e-12)  # 4 / (8 + 8 - 4)
    assert g.iou_3d(a, box(0, -2, 0, 2, 2, 2, 0.0))[0, 0] == 0.0  # touching faces
    # BEV overlap 1 m^2 (IoU 1/7) times a 1 m vertical overlap: 1 / (8 + 8 - 1).
    assert g.iou_3d(a, box(1.5, 1, 0, 2, 2, 2, 0.0))[0, 0] == pytest.approx(1 / 15, abs=1e-12)
    assert g.bev_iou(a, up)[0, 0] == pytest.approx(1.0)


def test_iou_2d_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    b = np.array([[5, 5, 15, 15], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 5], [3, 3, 3, 3]], dtype=float)
    expected = [1 / 7, 1.0, 0.0, 0.5, 0.0]  # continuous areas: 25 / (100 + 100 - 25), ...
    np.testing.assert_allclose(g.iou_2d(a, b), [expected, expected], atol=1e-15)
    degenerate = np.array([[3, 3, 3, 3]], dtype=float)
    assert g.iou_2d(degenerate, degenerate)[0, 0] == 0.0
    assert g.iou_2d(np.zeros((0, 4)), b).shape == (0, 5)


def test_degenerate_boxes_give_zero_not_nan():
    flat = box(0, 0, 0, h=1, w=0.0, l=2, ry=0.4)
    normal = box(0, 0, 0, 1, 1, 1, 0.0)
    for fn in (g.bev_iou, g.iou_3d):
        assert fn(flat, normal)[0, 0] == 0.0
        assert fn(flat, flat)[0, 0] == 0.0
    assert g.iou_3d(box(0, 0, 0, h=0.0), normal)[0, 0] == 0.0
    assert g.bev_iou(np.zeros((0, 7)), normal).shape == (0, 1)


def test_bad_input_raises_data_error():
    with pytest.raises(DataError, match="7"):
        g.bev_iou(np.zeros((2, 6)), np.zeros((1, 7)))
    with pytest.raises(DataError, match="DontCare"):
        g.box3d_corners(np.array([[-1000, -1000, -1000, -1, -1, -1, -10.0]]))
    with pytest.raises(DataError, match="NaN"):
        g.iou_3d(box(x=float("nan")), box())
    with pytest.raises(DataError, match="3, 4"):
        g.rect_to_image(np.zeros((1, 3)), np.eye(3))


# ----------------------------------------------------------------------------------------------------- angles
def test_alpha_known_kitti_value():
    # 000000.txt of KITTI: Pedestrian at x = 1.84, z = 8.41, rotation_y 0.01, alpha -0.20.
    assert g.alpha_from_rotation_y(0.01, 1.84, 8.41) == pytest.approx(-0.20, abs=0.01)
    assert g.alpha_from_rotation_y(0.0, 0.0, 5.0) == 0.0
    assert g.alpha_from_rotation_y(math.pi / 2, 5.0, 0.0) == pytest.approx(0.0, abs=1e-15)


@PROPS
@given(angle, st.floats(-50, 50), st.floats(0.5, 80))
def test_alpha_rotation_y_round_trip(ry, x, z):
    alpha = g.alpha_from_rotation_y(ry, x, z)
    assert -math.pi <= alpha < math.pi
    back = g.rotation_y_from_alpha(alpha, x, z)
    assert abs(g.wrap_angle(back - ry)) < 1e-12
    arr = g.alpha_from_rotation_y(np.array([ry, ry]), np.array([x, x]), np.array([z, z]))
    assert arr.shape == (2,)


# --------------------------------------------------------------------------------------------- IoU properties
@PROPS
@given(box_sets())
def test_iou_symmetric_bounded_and_identity(pair):
    a, b = pair
    for fn in (g.bev_iou, g.iou_3d):
        ab, ba = fn(a, b), fn(b, a)
        assert ab.shape == (len(a), len(b))
        np.testing.assert_allclose(ab, ba.T, atol=1e-12)
        assert np.all((ab >= 0) & (ab <= 1))
        np.testing.assert_allclose(np.diag(fn(a, a)), 1.0, atol=1e-9)


@PROPS
@given(box_sets(), angle, st.floats(-20, 20), st.floats(-3, 3), st.floats(-20, 20))
def test_iou_invariant_to_shared_rigid_motion(pair, theta, tx, ty, tz):
    a, b = pair
    shift = np.array([tx, ty, tz])
    a2, b2 = rigid_motion(a, theta, shift), rigid_motion(b, theta, shift)
    np.testing.assert_allclose(g.bev_iou(a2, b2), g.bev_iou(a, b), atol=1e-9)
    np.testing.assert_allclose(g.iou_3d(a2, b2), g.iou_3d(a, b), atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(box_pair())
def test_bev_intersection_matches_reference(pair):
    a, b = pair
    expected = ref_intersection_area(g.bev_corners(a)[0], g.bev_corners(b)[0])
    assert g.bev_intersection_area(a, b)[0, 0] == pytest.approx(expected, abs=1e-9)


def test_bev_intersection_matches_grid_estimate():
    rng = np.random.default_rng(7)
    a = box(0.3, 0, 0.2, 1, 2.0, 4.0, 0.5)
    b = box(1.1, 0, -0.4, 1, 1.5, 3.0, -1.1)
    n = 1200  # grid over [-3, 3]^2: cell area 2.5e-5 m^2
    xs = (np.arange(n) + 0.5) / n * 6 - 3 + rng.uniform(-1e-6, 1e-6)
    gx, gz = np.meshgrid(xs, xs)

    def in_footprint(bx):
        x, z, w, length, ry = bx[0, 0], bx[0, 2], bx[0, 4], bx[0, 5], bx[0, 6]
        dx, dz = gx - x, gz - z
        lx = math.cos(ry) * dx - math.sin(ry) * dz
        lz = math.sin(ry) * dx + math.cos(ry) * dz
        return (np.abs(lx) <= length / 2) & (np.abs(lz) <= w / 2)

    estimate = (in_footprint(a) & in_footprint(b)).sum() * (6 / n) ** 2
    assert g.bev_intersection_area(a, b)[0, 0] == pytest.approx(estimate, rel=0.01)


def test_bev_iou_many_pairs_fast():
    rng = np.random.default_rng(0)
    n = 300
    boxes = np.column_stack([rng.uniform(-30, 30, n), rng.uniform(0, 2, n), rng.uniform(0, 60, n),
                             rng.uniform(1, 3, (n, 3)), rng.uniform(-math.pi, math.pi, n)])
    g.iou_3d(boxes[:2], boxes[:2])  # compiled
    t0 = time.perf_counter()
    iou = g.iou_3d(boxes, boxes)
    assert time.perf_counter() - t0 < 0.5  # 90k pairs; about 5 ms when quiet
    np.testing.assert_allclose(np.diag(iou), 1.0, atol=1e-9)


# ----------------------------------------------------------------------------------------------------- frames
@pytest.mark.parametrize("tilt", [False, True])
def test_velo_rect_round_trip(tilt):
    calib = make_calib(tilt)
    pts = np.random.default_rng(1).uniform(-50, 50, (1000, 4)).astype(np.float32)
    rect = g.velo_to_rect(pts, calib)
    assert rect.shape == (1000, 3) and rect.dtype == np.float64
    np.testing.assert_allclose(g.rect_to_velo(rect, calib), pts[:, :3], atol=1e-9)
    if not tilt:  # a point 10 m ahead, 2 m left, 1 m up is at camera x = -2, y = -1, z = 10
        np.testing.assert_allclose(g.velo_to_rect(np.array([[10.0, 2.0, 1.0]]), calib), [[-2, -1, 10]])


def test_rect_to_image_known_point_and_behind():
    P = np.array([[700.0, 0, 600, 0], [0, 700, 180, 0], [0, 0, 1, 0]])
    uv, depth = g.rect_to_image(np.array([[1.0, -0.5, 10.0], [0, 0, -5.0]]), P)
    np.testing.assert_allclose(uv[0], [670, 145])
    np.testing.assert_allclose(depth, [10, -5])
    assert np.isnan(uv[1]).all()
    calib = make_calib()
    uv2, d2 = g.velo_to_image(np.array([[20.0, 0, 0]]), calib)
    assert d2[0] > 19 and 500 < uv2[0, 0] < 700


@pytest.mark.parametrize("tilt", [False, True])
def test_boxes_velo_rect_round_trip_and_geometry(tilt):
    calib = make_calib(tilt)
    rng = np.random.default_rng(2)
    n = 50
    velo = np.column_stack([rng.uniform(0, 60, n), rng.uniform(-20, 20, n), rng.uniform(-2, 1, n),
                            rng.uniform(0.5, 5, (n, 3)), rng.uniform(-math.pi, math.pi, n)])
    cam = g.boxes_velo_to_rect(velo, calib)
    np.testing.assert_allclose(cam[:, 3:6], velo[:, [5, 4, 3]])
    back = g.boxes_rect_to_velo(cam, calib)
    np.testing.assert_allclose(back[:, :6], velo[:, :6], atol=1e-9)
    np.testing.assert_allclose(g.wrap_angle(back[:, 6] - velo[:, 6]), 0, atol=1e-9)
    # Geometry: the velodyne box's corners, moved into the camera frame, are the camera box's corners
    # (exactly for an axis-aligned calibration, within the calibration's tilt otherwise).
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1]) / 2
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1]) / 2  # the camera box's local +z is the heading's left (+y)
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) / 2
    for i in range(n):
        x, y, z, length, w, h, yaw = velo[i]
        local = np.stack([sx * length, sy * w, sz * h], axis=1)
        corners_velo = local @ rot("z", yaw).T + [x, y, z]
        got = g.box3d_corners(cam[i : i + 1])[0]
        np.testing.assert_allclose(g.velo_to_rect(corners_velo, calib), got, atol=0.05 if tilt else 1e-9)
    # The naive formula ry = -yaw - pi/2 holds for the axis-aligned calibration.
    if not tilt:
        np.testing.assert_allclose(g.wrap_angle(cam[:, 6] + velo[:, 6] + math.pi / 2), 0, atol=1e-12)


# -------------------------------------------------------------------------------------------- points in boxes
def corner_based_inside(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(M, 3) points, (8, 3) corners -> (M,) bool from the three edge directions at corner 2 (independent)."""
    origin = corners[2]
    inside = np.ones(len(points), dtype=bool)
    for other in (corners[1], corners[3], corners[6]):  # edges from corner 2: along, across, up
        axis = other - origin
        t = (points - origin) @ axis / (axis @ axis)
        inside &= (t >= 0) & (t <= 1)
    return inside


@PROPS
@given(st.lists(st.tuples(coord, st.floats(-2, 2), coord, size, size, size, angle), min_size=1, max_size=6),
       st.integers(0, 2**31))
def test_points_in_boxes3d_inside_outside_and_corner_check(rows, seed):
    boxes = np.array(rows, dtype=np.float64)
    corners = g.box3d_corners(boxes)
    rng = np.random.default_rng(seed)
    for j in range(len(boxes)):
        # Convex combinations of the corners, pulled 1 % towards the centre: strictly inside.
        weights = rng.dirichlet(np.ones(8), size=200)
        centre = corners[j].mean(axis=0)
        inner = centre + 0.99 * (weights @ corners[j] - centre)
        assert g.points_in_boxes3d(inner, boxes)[:, j].all()
        # Pushed 1 cm beyond a face along that face's outward normal: outside.
        r = g.rotation_matrix_y(boxes[j, 6])
        normals = np.concatenate([r.T, -r.T])  # rows: +x, +y, +z, -x, -y, -z of the box frame in camera axes
        half = np.array([boxes[j, 5] / 2, boxes[j, 3] / 2, boxes[j, 4] / 2] * 2)
        outer = centre + normals * (half + 0.01)[:, None]
        assert not g.points_in_boxes3d(outer, boxes)[:, j].any()
    points = rng.uniform(-15, 15, (2000, 3))
    points[:, 1] = rng.uniform(-5, 3, 2000)
    mask = g.points_in_boxes3d(points, boxes)
    assert mask.shape == (2000, len(boxes)) and mask.dtype == np.bool_
    for j in range(len(boxes)):
        np.testing.assert_array_equal(mask[:, j], corner_based_inside(points, corners[j]))


def test_points_in_boxes3d_fast_and_empty():
    rng = np.random.default_rng(3)
    points = rng.uniform(-40, 40, (120_000, 4)).astype(np.float32)
    boxes = np.column_stack([rng.uniform(-20, 20, 20), rng.uniform(0, 2, 20), rng.uniform(0, 40, 20),
                             rng.uniform(1, 4, (20, 3)), rng.uniform(-3, 3, 20)])
    g.points_in_boxes3d(points[:10], boxes)  # compiled
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        mask = g.points_in_boxes3d(points, boxes)
        times.append(time.perf_counter() - t0)
    assert mask.shape == (120_000, 20)
    assert min(times) < 0.1  # about 5 ms on one quiet core; generous for shared CI machines
    assert g.points_in_boxes3d(np.zeros((0, 3)), boxes).shape == (0, 20)
    assert g.points_in_boxes3d(points, np.zeros((0, 7))).shape == (120_000, 0)


# ---------------------------------------------------------------------------------------------- 2D projection
def test_box3d_to_box2d_matches_corner_projection_in_front():
    calib = make_calib()
    b = np.array([[2.0, 1.6, 15.0, 1.5, 1.7, 4.0, 0.4], [-5.0, 1.7, 30.0, 1.8, 0.6, 0.8, -1.2]])
    uv, depth = g.rect_to_image(g.box3d_corners(b).reshape(-1, 3), calib.P2)
    uv = uv.reshape(2, 8, 2)
    expected = np.concatenate([uv.min(axis=1), uv.max(axis=1)], axis=1)
    np.testing.assert_allclose(g.box3d_to_box2d(b, calib.P2), expected, atol=1e-9)


def test_box3d_to_box2d_near_plane_clip_by_hand():
    f, cu, cv = 700.0, 600.0, 180.0
    P = np.array([[f, 0, cu, 0], [0, f, cv, 0], [0, 0, 1, 0]])
    # x in [-1, 1], y in [-1, 1], z in [-1, 3]; clipped to z >= 0.1 its nearest face is at z = 0.1,
    # so it spans u in cu +- f * 1 / 0.1 and v in cv +- f * 1 / 0.1.
    b = box(0, 1, 1, h=2, w=4, l=2, ry=0.0)
    np.testing.assert_allclose(g.box3d_to_box2d(b, P), [[cu - 10 * f, cv - 10 * f, cu + 10 * f, cv + 10 * f]])
    np.testing.assert_allclose(g.box3d_to_box2d(b, P, (1242, 375)), [[0, 0, 1241, 374]])
    # Wholly behind the camera: NaN.
    assert np.isnan(g.box3d_to_box2d(box(0, 1, -5, 1, 1, 1, 0.3), P)).all()


def test_box3d_to_box2d_near_plane_clip_sampled():
    # A rotated box crossing the near plane: the exact answer bounds the projections of densely sampled
    # edge points in front of the plane, and those come close to it (u reaches 2e4 px here: relative check).
    calib = make_calib()
    b = box(1.0, 1.5, 1.0, h=1.5, w=1.8, l=4.5, ry=0.6)
    corners = g.box3d_corners(b)[0]
    t = np.linspace(0, 1, 20001)[:, None]
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
    samples = np.concatenate([corners[i] + t * (corners[j] - corners[i]) for i, j in edges])
    samples = samples[samples[:, 2] >= g.NEAR_PLANE]
    uv, _ = g.rect_to_image(samples, calib.P2)
    got = g.box3d_to_box2d(b, calib.P2)[0]
    sampled = np.concatenate([uv.min(axis=0), uv.max(axis=0)])
    assert np.all(got[:2] <= sampled[:2] + 1e-6) and np.all(got[2:] >= sampled[2:] - 1e-6)
    np.testing.assert_allclose(got, sampled, rtol=2e-3, atol=1.0)


# ------------------------------------------------------------------------------------------------ real frames
kitti_mini = pytest.mark.skipif(not KITTI_MINI.is_dir(), reason=f"{KITTI_MINI} absent (real KITTI fixtures)")
CLASSES = ("Car", "Pedestrian", "Cyclist")


def kitti_frames():
    root = KITTI_MINI / "training"
    for calib_file in sorted((root / "calib").glob("*.txt")):
        fid = calib_file.stem
        yield (fid, read_calib(calib_file), read_labels(root / "label_2" / f"{fid}.txt"),
               read_velodyne(root / "velodyne" / f"{fid}.bin"))


@kitti_mini
def test_kitti_projected_boxes_match_labelled_2d_boxes():
    checked = 0
    for fid, calib, labels, _ in kitti_frames():
        keep = np.isin(labels.type, CLASSES) & (labels.truncated <= 0)
        labels = labels.select(keep)
        if not len(labels):
            continue
        projected = g.box3d_to_box2d(labels.boxes3d, calib.P2, image_size=(1242, 375))
        for i, cls in enumerate(labels.type):
            err = np.abs(projected[i] - labels.bbox[i])
            if cls == "Pedestrian":
                # The 3D box holds the whole stride (l = 1.2 m in 000000) and projects wider than the
                # 2D box drawn round the pose of the moment: about 10 px on the right. Check IoU instead.
                iou = g.iou_2d(projected[i : i + 1], labels.bbox[i : i + 1])[0, 0]
                assert iou > 0.85, (fid, cls, projected[i], labels.bbox[i])
                assert err.max() < 15, (fid, cls, err)
            else:
                assert err.max() < 3.0, (fid, cls, err)
            checked += 1
    assert checked >= 3


@kitti_mini
def test_kitti_points_in_labelled_boxes():
    checked = 0
    for fid, calib, labels, points in kitti_frames():
        labels = labels.select(np.isin(labels.type, CLASSES))
        if not len(labels):
            continue
        counts = g.points_in_boxes3d(g.velo_to_rect(points, calib), labels.boxes3d).sum(axis=0)
        assert np.all(counts >= 5), (fid, labels.type, counts)
        # Real calibrations round-trip through velodyne boxes too.
        velo_boxes = g.boxes_rect_to_velo(labels.boxes3d, calib)
        np.testing.assert_allclose(g.boxes_velo_to_rect(velo_boxes, calib), labels.boxes3d, atol=1e-9)
        checked += len(labels)
    assert checked >= 3
