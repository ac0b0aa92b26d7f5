"""Geometry of KITTI-style 3D boxes: frames, projections, point-in-box tests and exact IoUs.

Conventions (fixed in docs/conventions.md):

- Rectified camera frame: x right, y down, z forward, metres.
- Velodyne frame: x forward, y left, z up, metres.
- Camera box, one row of an (N, 7) float64 array: [x, y, z, h, w, l, ry]. (x, y, z) is the *bottom centre*,
  the box spans [y - h, y] along camera y (y points down); l lies along the heading, w across it; ry turns
  about camera +y, ry = 0 points the length axis along camera +x, ry = -pi/2 along +z (away from the camera).
  This is the KITTI devkit's layout (`ObjectLabels.boxes3d`).
- Velodyne box, one row of an (N, 7) float64 array: [x, y, z, l, w, h, yaw]. (x, y, z) is the *geometric
  centre*, yaw turns about velodyne +z from +x (OpenPCDet's layout). Roughly yaw = -ry - pi/2.

Every function is pure and vectorised (numpy) or a numba kernel over rows; inputs are not modified.
Box arrays are checked (shape, finite values, non-negative sizes) and a bad one raises
`squeeze.errors.DataError` naming the argument. KITTI DontCare rows (sizes -1) must be filtered out first.
"""

from __future__ import annotations

import math

import numpy as np

from squeeze.errors import DataError
from squeeze.jit import njit
from squeeze.kitti import Calibration

__all__ = [
    "NEAR_PLANE",
    "alpha_from_rotation_y",
    "bev_corners",
    "bev_intersection_area",
    "bev_iou",
    "box3d_corners",
    "box3d_to_box2d",
    "boxes_rect_to_velo",
    "boxes_velo_to_rect",
    "iou_2d",
    "iou_3d",
    "points_in_boxes3d",
    "rect_to_image",
    "rect_to_velo",
    "rotation_matrix_y",
    "rotation_y_from_alpha",
    "velo_to_image",
    "velo_to_rect",
    "wrap_angle",
]

# Camera boxes are clipped against this plane (rectified z, metres) before projection: see box3d_to_box2d.
NEAR_PLANE = 0.1

# Corner order of box3d_corners in the box's own frame (before rotation), as multiples of (l/2, h, w/2):
# x = +-l/2 along the heading, y in {0 (bottom), -h (top)}, z = +-w/2. Bottom face 0-3, top face 4-7 in the
# same order, so corner i + 4 sits straight above corner i. This is the KITTI devkit's order.
_CORNER_X = np.array([1, 1, -1, -1, 1, 1, -1, -1], dtype=np.float64) * 0.5  # times l
_CORNER_Y = np.array([0, 0, 0, 0, -1, -1, -1, -1], dtype=np.float64)  # times h
_CORNER_Z = np.array([1, -1, -1, 1, 1, -1, -1, 1], dtype=np.float64) * 0.5  # times w

# The 12 edges of a box as corner-index pairs: bottom ring, top ring, verticals.
_BOX_EDGES = np.array([(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
                       (0, 4), (1, 5), (2, 6), (3, 7)], dtype=np.int64)


# ------------------------------------------------------------------------------------------------ checks
def _check_boxes(boxes: np.ndarray, name: str = "boxes") -> np.ndarray:
    """(N, 7) float64 C-contiguous copy-or-view of `boxes`; raises DataError on a bad shape or a NaN."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.shape[0] == 7:
        raise DataError(name, "expected an (N, 7) box array, got one box of shape (7,); use boxes[None]")
    if arr.ndim != 2 or arr.shape[1] != 7:
        raise DataError(name, f"expected an (N, 7) box array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        row = int(np.argmin(np.isfinite(arr).all(axis=1)))
        raise DataError(name, f"row {row} has a NaN or infinite value")
    return np.ascontiguousarray(arr)


def _check_sizes(sizes: np.ndarray, name: str) -> None:
    """Raise DataError when any of the (N, 3) box sizes is negative (KITTI DontCare rows carry -1)."""
    bad = (sizes < 0).any(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(name, f"row {row} has a negative size {sizes[row].tolist()} "
                              "(DontCare labels carry -1: filter them out first)")


def _check_cam_boxes(boxes: np.ndarray, name: str = "boxes") -> np.ndarray:
    arr = _check_boxes(boxes, name)
    _check_sizes(arr[:, 3:6], name)
    return arr


def _check_points(points: np.ndarray, name: str = "points") -> np.ndarray:
    """(N, 3) float64 view of the first three columns of an (N, >=3) array."""
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise DataError(name, f"expected an (N, 3) or (N, >=3) point array, got shape {arr.shape}")
    return arr[:, :3].astype(np.float64, copy=False)


def _check_projection(P: np.ndarray, name: str = "P") -> np.ndarray:
    arr = np.asarray(P, dtype=np.float64)
    if arr.shape != (3, 4):
        raise DataError(name, f"expected a (3, 4) projection matrix, got shape {arr.shape}")
    return arr


# ------------------------------------------------------------------------------------------------ angles
def wrap_angle(angle: np.ndarray | float) -> np.ndarray | float:
    """Wrap radians to [-pi, pi). Same shape as the input (a numpy scalar for a scalar)."""
    return (np.asarray(angle, dtype=np.float64) + np.pi) % (2 * np.pi) - np.pi


def rotation_matrix_y(angle: np.ndarray | float) -> np.ndarray:
    """Rotation about the camera y axis: [[cos, 0, sin], [0, 1, 0], [-sin, 0, cos]].

    A scalar angle gives (3, 3); an (N,) array gives (N, 3, 3). Maps a box's own frame to the camera frame,
    so the box's length axis (1, 0, 0) becomes (cos ry, 0, -sin ry).
    """
    a = np.asarray(angle, dtype=np.float64)
    c, s = np.cos(a), np.sin(a)
    zero, one = np.zeros_like(a), np.ones_like(a)
    return np.stack([np.stack([c, zero, s], -1), np.stack([zero, one, zero], -1),
                     np.stack([-s, zero, c], -1)], -2)


def alpha_from_rotation_y(ry: np.ndarray | float, x: np.ndarray | float, z: np.ndarray | float
                          ) -> np.ndarray | float:
    """KITTI observation angle alpha = ry - arctan2(x, z), wrapped to [-pi, pi). Broadcasts its arguments.

    alpha is the yaw as seen from the camera along the ray to the object's centre (x, z in rectified camera
    coordinates): it is what the image alone can tell (KITTI devkit readme).
    """
    return wrap_angle(np.asarray(ry, dtype=np.float64) - np.arctan2(x, z))


def rotation_y_from_alpha(alpha: np.ndarray | float, x: np.ndarray | float, z: np.ndarray | float
                          ) -> np.ndarray | float:
    """Inverse of alpha_from_rotation_y: ry = alpha + arctan2(x, z), wrapped to [-pi, pi)."""
    return wrap_angle(np.asarray(alpha, dtype=np.float64) + np.arctan2(x, z))


# ------------------------------------------------------------------------------------------------ corners
def box3d_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) camera boxes [x, y, z, h, w, l, ry] -> (N, 8, 3) corners in rectified camera coordinates.

    Corner order (KITTI devkit), in the box frame (x along the heading, y down, z across):
    0 (+l/2, 0, +w/2), 1 (+l/2, 0, -w/2), 2 (-l/2, 0, -w/2), 3 (-l/2, 0, +w/2) on the bottom face (y = box y),
    4..7 the same four on the top face (y - h): corner i + 4 is straight above corner i. Corners 0, 1, 4, 5
    form the front face (the heading end). N may be 0.
    """
    b = _check_cam_boxes(boxes)
    h, w, length, ry = b[:, 3:4], b[:, 4:5], b[:, 5:6], b[:, 6:7]
    lx, ly, lz = length * _CORNER_X, h * _CORNER_Y, w * _CORNER_Z  # (N, 8) each
    c, s = np.cos(ry), np.sin(ry)
    corners = np.empty((len(b), 8, 3))
    corners[:, :, 0] = c * lx + s * lz + b[:, 0:1]
    corners[:, :, 1] = ly + b[:, 1:2]
    corners[:, :, 2] = -s * lx + c * lz + b[:, 2:3]
    return corners


def bev_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 7) camera boxes -> (N, 4, 2) bottom-face corners as (x, z) in the ground plane.

    Same order as box3d_corners[:, :4]: clockwise when drawn with x right and z up (a bird's-eye view seen
    from above, camera y pointing into the page).
    """
    return box3d_corners(boxes)[:, :4, :][:, :, [0, 2]]


# ------------------------------------------------------------------------------------------------ frames
def _apply(points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """(N, 3) points through a (4, 4) homogeneous transform -> (N, 3)."""
    return points @ T[:3, :3].T + T[:3, 3]


def velo_to_rect(points: np.ndarray, calib: Calibration) -> np.ndarray:
    """(N, >=3) velodyne points (first three columns x, y, z) -> (N, 3) float64 rectified camera points."""
    return _apply(_check_points(points), calib.velo_to_rect)


def rect_to_velo(points: np.ndarray, calib: Calibration) -> np.ndarray:
    """(N, >=3) rectified camera points -> (N, 3) float64 velodyne points (exact inverse of velo_to_rect)."""
    return _apply(_check_points(points), calib.rect_to_velo)


def rect_to_image(points_rect: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, >=3) rectified camera points with a (3, 4) matrix P (P2 for image_2).

    Returns uv (N, 2) float64 pixel coordinates (u right, v down, integer values at pixel centres, 0-based)
    and depth (N,) float64, the third homogeneous coordinate: the depth along the optical axis of the camera
    P belongs to (z_rect + P[2, 3]; P2[2, 3] is about 5 mm). uv is NaN where depth <= 0 (behind the camera):
    mask with depth > 0 before use.
    """
    pts = _check_points(points_rect, "points_rect")
    P = _check_projection(P)
    uvw = pts @ P[:, :3].T + P[:, 3]
    depth = uvw[:, 2].copy()
    front = depth > 0
    uv = np.full((len(pts), 2), np.nan)
    uv[front] = uvw[front, :2] / depth[front, None]
    return uv, depth


def velo_to_image(points: np.ndarray, calib: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """(N, >=3) velodyne points -> (uv (N, 2), depth (N,)) in image_2 through P2; see rect_to_image."""
    return rect_to_image(velo_to_rect(points, calib), calib.P2)


def _project_heading(d: np.ndarray, up: np.ndarray, axis: int) -> np.ndarray:
    """Slide the (N, 3) directions `d` along `up` (3,) until their component `axis` is 0."""
    return d - (d[:, axis] / up[axis])[:, None] * up[None, :]


def boxes_velo_to_rect(boxes_velo: np.ndarray, calib: Calibration) -> np.ndarray:
    """(N, 7) velodyne boxes [x, y, z, l, w, h, yaw] (geometric centre) -> (N, 7) camera boxes.

    The bottom centre (velodyne centre - h/2 along velodyne +z) is transformed as a point, so it is exact
    for any calibration. The heading (cos yaw, sin yaw, 0) is transformed as a direction and projected onto
    the camera ground plane (y = 0) along the transformed velodyne up axis; ry = atan2(-d_z, d_x). With
    KITTI's calibration (a few tenths of a degree off axis-aligned) this differs from the naive
    ry = -yaw - pi/2 by about 0.1 degree; it is the exact inverse of boxes_rect_to_velo.
    """
    b = _check_boxes(boxes_velo, "boxes_velo")
    _check_sizes(b[:, 3:6], "boxes_velo")
    T = calib.velo_to_rect
    bottom = b[:, :3].copy()
    bottom[:, 2] -= b[:, 5] / 2
    centre = _apply(bottom, T)
    heading = np.stack([np.cos(b[:, 6]), np.sin(b[:, 6]), np.zeros(len(b))], axis=1) @ T[:3, :3].T
    up = T[:3, :3] @ np.array([0.0, 0.0, 1.0])
    heading = _project_heading(heading, up, axis=1)
    ry = np.arctan2(-heading[:, 2], heading[:, 0])
    return np.concatenate([centre, b[:, 5:6], b[:, 4:5], b[:, 3:4], ry[:, None]], axis=1)


def boxes_rect_to_velo(boxes_rect: np.ndarray, calib: Calibration) -> np.ndarray:
    """(N, 7) camera boxes [x, y, z, h, w, l, ry] (bottom centre) -> (N, 7) velodyne boxes (geometric centre).

    The bottom centre is transformed as a point and raised by h/2 along velodyne +z. The heading
    (cos ry, 0, -sin ry) is transformed as a direction, its velodyne z dropped, yaw = atan2(d_y, d_x).
    Exact inverse of boxes_velo_to_rect (round trip to rounding error).
    """
    b = _check_cam_boxes(boxes_rect, "boxes_rect")
    T = calib.rect_to_velo
    centre = _apply(b[:, :3], T)
    centre[:, 2] += b[:, 3] / 2
    heading = np.stack([np.cos(b[:, 6]), np.zeros(len(b)), -np.sin(b[:, 6])], axis=1) @ T[:3, :3].T
    yaw = np.arctan2(heading[:, 1], heading[:, 0])
    return np.concatenate([centre, b[:, 5:6], b[:, 4:5], b[:, 3:4], yaw[:, None]], axis=1)


# -------------------------------------------------------------------------------------------- points in boxes
@njit(cache=True)
def _points_in_boxes_kernel(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:  # pragma: no cover - jitted
    m, n = points.shape[0], boxes.shape[0]
    out = np.zeros((m, n), dtype=np.bool_)
    cs = np.cos(boxes[:, 6])
    sn = np.sin(boxes[:, 6])
    for i in range(m):
        px, py, pz = points[i, 0], points[i, 1], points[i, 2]
        for j in range(n):
            dy = py - boxes[j, 1]
            if dy > 0.0 or dy < -boxes[j, 3]:
                continue
            dx = px - boxes[j, 0]
            dz = pz - boxes[j, 2]
            # Into the box frame with R_y(ry)^T: local x along the heading, local z across.
            lx = cs[j] * dx - sn[j] * dz
            lz = sn[j] * dx + cs[j] * dz
            if abs(lx) <= 0.5 * boxes[j, 5] and abs(lz) <= 0.5 * boxes[j, 4]:
                out[i, j] = True
    return out


def points_in_boxes3d(points_rect: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(M, >=3) rectified camera points, (N, 7) camera boxes -> (M, N) bool, True where point i is in box j.

    The faces count as inside. Each point is moved into each box's frame (R_y(ry)^T (p - centre)) and
    compared with the half sizes; a numba kernel, about 5 ms for M = 120k, N = 20 on one core.
    """
    pts = np.ascontiguousarray(_check_points(points_rect, "points_rect"))
    b = _check_cam_boxes(boxes)
    return _points_in_boxes_kernel(pts, b)


# ------------------------------------------------------------------------------------------------ 2D boxes
def box3d_to_box2d(boxes: np.ndarray, P: np.ndarray, image_size: tuple[int, int] | None = None) -> np.ndarray:
    """(N, 7) camera boxes -> (N, 4) float64 [left, top, right, bottom] image boxes through P (3, 4).

    The box is first clipped in 3D against the near plane z_rect = NEAR_PLANE (0.1 m): the vertices of the
    clipped solid are the corners in front of the plane plus the points where the 12 edges cross it, and the
    image box is the min/max of their projections (exact, since projection keeps convex hulls). A box wholly
    behind the plane gives a row of NaN. With image_size = (width, height) the result is clipped to
    [0, width - 1] x [0, height - 1] like KITTI's labels (a box wholly outside the image collapses onto the
    border and has zero area).
    """
    b = _check_cam_boxes(boxes)
    P = _check_projection(P)
    corners = box3d_corners(b)  # (N, 8, 3)
    ca, cb = corners[:, _BOX_EDGES[:, 0]], corners[:, _BOX_EDGES[:, 1]]  # (N, 12, 3) edge ends
    za, zb = ca[..., 2] - NEAR_PLANE, cb[..., 2] - NEAR_PLANE
    crosses = za * zb < 0  # (N, 12) the edge passes through the near plane
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(crosses, za / (za - zb), 0.0)
    cut = ca + t[..., None] * (cb - ca)
    cut[..., 2] = NEAR_PLANE  # exact, free of rounding
    verts = np.concatenate([corners, cut], axis=1)  # (N, 20, 3)
    valid = np.concatenate([corners[..., 2] >= NEAR_PLANE, crosses], axis=1)  # (N, 20)
    uvw = verts @ P[:, :3].T + P[:, 3]
    depth = np.where(valid, uvw[..., 2], 1.0)
    uv = uvw[..., :2] / depth[..., None]
    lo = np.where(valid[..., None], uv, np.inf).min(axis=1)
    hi = np.where(valid[..., None], uv, -np.inf).max(axis=1)
    out = np.concatenate([lo, hi], axis=1)
    out[~valid.any(axis=1)] = np.nan
    if image_size is not None:
        width, height = image_size
        limit = np.array([width - 1, height - 1, width - 1, height - 1], dtype=np.float64)
        out = np.clip(out, 0.0, limit)  # NaN rows stay NaN
    return out


def iou_2d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) and (M, 4) [left, top, right, bottom] boxes -> (N, M) float64 IoU.

    Areas are continuous, (right - left) * (bottom - top) with no +1, as in the KITTI devkit's evaluation.
    A pair whose union is zero (two degenerate boxes) has IoU 0.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    for name, arr in (("a", a), ("b", b)):
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise DataError(name, f"expected (N, 4) [left, top, right, bottom] boxes, got shape {arr.shape}")
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


# ------------------------------------------------------------------------------------------------ rotated IoU
@njit(cache=True)
def _bev_ccw_corners(boxes: np.ndarray) -> np.ndarray:  # pragma: no cover - jitted
    """(N, 7) camera boxes -> (N, 4, 2) (x, z) corners, counter-clockwise in the (x, z) plane."""
    n = boxes.shape[0]
    out = np.empty((n, 4, 2))
    # Local (x, z) corners counter-clockwise: (+, -), (+, +), (-, +), (-, -) times (l/2, w/2).
    sx = (1.0, 1.0, -1.0, -1.0)
    sz = (-1.0, 1.0, 1.0, -1.0)
    for i in range(n):
        c, s = math.cos(boxes[i, 6]), math.sin(boxes[i, 6])
        hl, hw = 0.5 * boxes[i, 5], 0.5 * boxes[i, 4]
        for k in range(4):
            lx, lz = sx[k] * hl, sz[k] * hw
            out[i, k, 0] = boxes[i, 0] + c * lx + s * lz
            out[i, k, 1] = boxes[i, 2] - s * lx + c * lz
    return out


@njit(cache=True)
def _convex_intersection_area(pa: np.ndarray, pb: np.ndarray, buf0: np.ndarray, buf1: np.ndarray
                              ) -> float:  # pragma: no cover - jitted
    """Area of the intersection of two convex CCW quadrilaterals (4, 2) by Sutherland-Hodgman clipping of
    `pa` by each edge of `pb`, then the shoelace formula. buf0/buf1 are (64, 2) scratch arrays
    (each clip at most doubles the vertex count, even when rounding makes signs flicker)."""
    n = 4
    for k in range(4):
        buf0[k, 0] = pa[k, 0]
        buf0[k, 1] = pa[k, 1]
    src, dst = buf0, buf1
    for e in range(4):
        ex0, ey0 = pb[e, 0], pb[e, 1]
        ex1, ey1 = pb[(e + 1) % 4, 0], pb[(e + 1) % 4, 1]
        dx, dy = ex1 - ex0, ey1 - ey0
        m = 0
        for k in range(n):
            cx, cy = src[k, 0], src[k, 1]
            nx, ny = src[(k + 1) % n, 0], src[(k + 1) % n, 1]
            # Signed distance (times the edge length) of each vertex to the left of the clip edge.
            dc = dx * (cy - ey0) - dy * (cx - ex0)
            dn = dx * (ny - ey0) - dy * (nx - ex0)
            if dc >= 0.0:
                dst[m, 0] = cx
                dst[m, 1] = cy
                m += 1
            if (dc >= 0.0) != (dn >= 0.0):
                t = dc / (dc - dn)  # dc and dn differ in sign, so dc - dn != 0
                dst[m, 0] = cx + t * (nx - cx)
                dst[m, 1] = cy + t * (ny - cy)
                m += 1
        n = m
        if n < 3:
            return 0.0
        src, dst = dst, src
    area = 0.0
    for k in range(n):
        k1 = (k + 1) % n
        area += src[k, 0] * src[k1, 1] - src[k1, 0] * src[k, 1]
    return max(0.5 * area, 0.0)


@njit(cache=True)
def _bev_intersection_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # pragma: no cover - jitted
    ca, cb = _bev_ccw_corners(a), _bev_ccw_corners(b)
    n, m = a.shape[0], b.shape[0]
    out = np.zeros((n, m))
    buf0, buf1 = np.empty((64, 2)), np.empty((64, 2))
    ra = 0.5 * np.sqrt(a[:, 4] ** 2 + a[:, 5] ** 2)  # circumscribed circle radii
    rb = 0.5 * np.sqrt(b[:, 4] ** 2 + b[:, 5] ** 2)
    for i in range(n):
        if a[i, 4] <= 0.0 or a[i, 5] <= 0.0:
            continue
        for j in range(m):
            if b[j, 4] <= 0.0 or b[j, 5] <= 0.0:
                continue
            ddx, ddz = a[i, 0] - b[j, 0], a[i, 2] - b[j, 2]
            rr = ra[i] + rb[j]
            if ddx * ddx + ddz * ddz >= rr * rr:
                continue
            out[i, j] = _convex_intersection_area(ca[i], cb[j], buf0, buf1)
    return out


def bev_intersection_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 7) and (M, 7) camera boxes -> (N, M) float64 area (m^2) of their (x, z) footprints' intersection.

    Exact convex clipping (Sutherland-Hodgman of the two rotated rectangles, shoelace area) in a numba
    kernel over pairs, after a circumscribed-circle rejection. Boxes with zero width or length give 0.
    """
    a = _check_cam_boxes(a, "a")
    b = _check_cam_boxes(b, "b")
    return _bev_intersection_kernel(a, b)


def bev_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 7) and (M, 7) camera boxes -> (N, M) float64 rotated bird's-eye-view IoU of the (x, z) footprints.

    Pairs where either footprint has zero area give 0 (never NaN).
    """
    a = _check_cam_boxes(a, "a")
    b = _check_cam_boxes(b, "b")
    inter = _bev_intersection_kernel(a, b)
    union = (a[:, 4] * a[:, 5])[:, None] + (b[:, 4] * b[:, 5])[None, :] - inter
    return _safe_ratio(inter, union)


def iou_3d(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 7) and (M, 7) camera boxes -> (N, M) float64 3D IoU.

    Intersection volume = BEV intersection area x overlap of the vertical extents [y - h, y] (camera y points
    down, y is the bottom); union = vol_a + vol_b - intersection. Zero-volume pairs give 0 (never NaN).
    """
    a = _check_cam_boxes(a, "a")
    b = _check_cam_boxes(b, "b")
    inter_bev = _bev_intersection_kernel(a, b)
    top = np.maximum(a[:, None, 1] - a[:, None, 3], b[None, :, 1] - b[None, :, 3])
    bottom = np.minimum(a[:, None, 1], b[None, :, 1])
    inter = inter_bev * np.clip(bottom - top, 0.0, None)
    vol_a, vol_b = a[:, 3] * a[:, 4] * a[:, 5], b[:, 3] * b[:, 4] * b[:, 5]
    return _safe_ratio(inter, vol_a[:, None] + vol_b[None, :] - inter)


def _safe_ratio(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """inter / union clipped to [0, 1], 0 where union is not positive."""
    ok = union > 0
    return np.clip(np.where(ok, inter / np.where(ok, union, 1.0), 0.0), 0.0, 1.0)
