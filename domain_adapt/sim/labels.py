"""KITTI object labels (label_2) of a simulated frame, derived from what the camera actually sees.

Labels (KITTI devkit readme): for every Car, Van, Pedestrian and Cyclist in front of the camera,
- bbox: the projected 3D box clipped to the image (geometry.box3d_to_box2d, near-plane clipped);
- truncated: 1 - (area of that box inside the image) / (area of the unclipped projected box);
- occluded: from the fraction f of the object's own pixels (its triangles rasterised alone, inside the
  image) that are visible in the instance render: 0 if f >= 0.8, 1 if f >= 0.4, 2 if f >= 0.1, else 3;
- objects with fewer than `min_visible_pixels` visible pixels are not written; visible objects whose
  clipped box is shorter than `dontcare_height` pixels are written as DontCare (KITTI marks far, tiny
  objects that way), so a detector is neither rewarded nor punished for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from domain_adapt.sim.camera import CameraConfig, CameraImage
from domain_adapt.sim.mesh import MeshData
from domain_adapt.sim.world import Scene
from squeeze.geometry import NEAR_PLANE, alpha_from_rotation_y, box3d_to_box2d, boxes_velo_to_rect
from squeeze.jit import njit
from squeeze.kitti import Calibration, ObjectLabels


@njit(cache=True, inline="always")
def _clip_near(tri, near, poly):  # pragma: no cover - jitted
    """Sutherland-Hodgman against the plane z = near: triangle tri (3, 3) -> the first 0, 3 or 4 rows of poly
    (4, 3); returns how many."""
    nv = 0
    for a in range(3):
        b = (a + 1) % 3
        za, zb = tri[a, 2] - near, tri[b, 2] - near
        if za >= 0:
            poly[nv] = tri[a]
            nv += 1
        if (za >= 0) != (zb >= 0):
            s = za / (za - zb)
            poly[nv] = tri[a] + s * (tri[b] - tri[a])
            nv += 1
    return nv


@njit(cache=True, inline="always")
def _fill_triangle(ax, ay, bx, by, cx, cy, u0, v0, u1, v1, mask):  # pragma: no cover - jitted
    """Set mask (v1 - v0 + 1, u1 - u0 + 1) where pixel centres inside [u0, u1] x [v0, v1] fall in the
    triangle (a, b, c) of image coordinates (either winding; degenerate triangles cover nothing)."""
    area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    if area == 0:
        return
    lo_u = max(u0, int(math.ceil(min(ax, bx, cx))))
    hi_u = min(u1, int(math.floor(max(ax, bx, cx))))
    lo_v = max(v0, int(math.ceil(min(ay, by, cy))))
    hi_v = min(v1, int(math.floor(max(ay, by, cy))))
    sgn = 1.0 if area > 0 else -1.0
    for py in range(lo_v, hi_v + 1):
        for px in range(lo_u, hi_u + 1):
            e0 = ((bx - ax) * (py - ay) - (by - ay) * (px - ax)) * sgn
            e1 = ((cx - bx) * (py - by) - (cy - by) * (px - bx)) * sgn
            e2 = ((ax - cx) * (py - cy) - (ay - cy) * (px - cx)) * sgn
            if e0 >= 0 and e1 >= 0 and e2 >= 0:
                mask[py - v0, px - u0] = True


@njit(cache=True)
def _coverage(tri_rect, obj_start, boxes, P, near):  # pragma: no cover - jitted
    """Pixels covered by each object's own triangles, occluders ignored.

    tri_rect (M, 3, 3) rectified-camera triangles sorted by object; obj_start (K + 1,) their ranges;
    boxes (K, 4) int64 inclusive pixel bounds [u0, v0, u1, v1] (inside the image) to count in.
    Triangles are clipped against z = near, projected with P (3, 4) and rasterised at pixel centres.
    Returns (K,) int64 pixel counts.
    """
    k_obj = obj_start.shape[0] - 1
    counts = np.zeros(k_obj, np.int64)
    poly = np.empty((4, 3))
    uv = np.empty((4, 2))
    for k in range(k_obj):
        u0, v0, u1, v1 = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        if u1 < u0 or v1 < v0:
            continue
        mask = np.zeros((v1 - v0 + 1, u1 - u0 + 1), np.bool_)
        for m in range(obj_start[k], obj_start[k + 1]):
            nv = _clip_near(tri_rect[m], near, poly)
            if nv < 3:
                continue
            for a in range(nv):
                x, y, z = poly[a, 0], poly[a, 1], poly[a, 2]
                wq = P[2, 0] * x + P[2, 1] * y + P[2, 2] * z + P[2, 3]
                uv[a, 0] = (P[0, 0] * x + P[0, 1] * y + P[0, 2] * z + P[0, 3]) / wq
                uv[a, 1] = (P[1, 0] * x + P[1, 1] * y + P[1, 2] * z + P[1, 3]) / wq
            for f in range(1, nv - 1):  # a fan over the clipped polygon
                _fill_triangle(uv[0, 0], uv[0, 1], uv[f, 0], uv[f, 1], uv[f + 1, 0], uv[f + 1, 1], u0, v0, u1, v1,
                               mask)
        counts[k] = mask.sum()
    return counts


def occlusion_level(visible_fraction: np.ndarray) -> np.ndarray:
    """KITTI occlusion state from the visible fraction of an object's pixels: 0 fully visible (>= 0.8),
    1 partly occluded (>= 0.4), 2 largely occluded (>= 0.1), 3 unknown (less)."""
    f = np.asarray(visible_fraction)
    return np.select([f >= 0.8, f >= 0.4, f >= 0.1], [0, 1, 2], 3).astype(np.int64)


@dataclass
class FrameLabels:
    """KITTI labels of one frame plus how each row relates to the scene.

    labels:           the label_2 rows (ObjectLabels, N rows, DontCare included)
    instance_ids:     (N,) int64 instance id of each row
    visible_pixels:   (N,) int64 pixels of the object seen in the instance render
    object_pixels:    (N,) int64 pixels the object would cover alone (inside the image)
    """

    labels: ObjectLabels
    instance_ids: np.ndarray
    visible_pixels: np.ndarray
    object_pixels: np.ndarray


@dataclass(frozen=True)
class _ProjectedBoxes:
    """The scene's N object boxes in the rectified camera frame and on the image."""

    cam: np.ndarray  # (N, 7) rectified-camera boxes (KITTI's location, dimensions, rotation_y)
    clipped: np.ndarray  # (N, 4) image boxes clipped to the image
    in_front: np.ndarray  # (N,) bool, the box projects (not entirely behind the near plane)
    area_full: np.ndarray  # (N,) pixel area of the unclipped projected box, 0 where not in_front
    area_in: np.ndarray  # (N,) pixel area inside the image, 0 where not in_front


def _project_boxes(scene: Scene, calib: Calibration, size: tuple[int, int]) -> _ProjectedBoxes:
    """Project the scene's object boxes with P2 into an image of size (W, H)."""
    cam = boxes_velo_to_rect(scene.boxes(), calib)
    full = box3d_to_box2d(cam, calib.P2)
    clipped = box3d_to_box2d(cam, calib.P2, size)
    ok = np.isfinite(full).all(1)
    area_full = np.where(ok, (full[:, 2] - full[:, 0]) * (full[:, 3] - full[:, 1]), 0.0)
    area_in = np.where(ok, (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]), 0.0)
    return _ProjectedBoxes(cam, clipped, ok, area_full, area_in)


def _empty_labels() -> FrameLabels:
    """No label rows (a frame with nothing labelled writes an empty label_2 file)."""
    return FrameLabels(ObjectLabels(), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))


def label_objects(scene: Scene, frame: CameraImage, calib: Calibration, config: CameraConfig) -> FrameLabels:
    """KITTI label_2 rows for the things of `scene` as seen in `frame` (rules in the module docstring)."""
    objs = scene.objects
    if not objs:
        return _empty_labels()
    w, h = config.width, config.height
    boxes = _project_boxes(scene, calib, (w, h))
    ids = np.array([o.instance_id for o in objs], np.int64)
    visible = np.bincount(frame.instance.ravel(), minlength=int(ids.max()) + 1)[ids]
    cand = np.flatnonzero(boxes.in_front & (boxes.area_in > 0) & (visible >= config.min_visible_pixels))
    if len(cand) == 0:
        return _empty_labels()
    own = _own_pixels(scene.mesh, ids[cand], boxes.clipped[cand], calib, (w, h))
    vis = visible[cand]
    frac = vis / np.maximum(np.maximum(own, vis), 1)
    trunc = np.clip(1.0 - boxes.area_in[cand] / np.maximum(boxes.area_full[cand], 1e-9), 0.0, 1.0)
    types = np.array([objs[i].cls for i in cand], dtype="<U16")
    labels = _label_rows(types, boxes.cam[cand], boxes.clipped[cand], trunc, occlusion_level(frac), config)
    return FrameLabels(labels, ids[cand], vis.astype(np.int64), own.astype(np.int64))


def _own_pixels(mesh: MeshData, ids: np.ndarray, clipped: np.ndarray, calib: Calibration,
                size: tuple[int, int]) -> np.ndarray:
    """(K,) int64 pixels each of K objects (instance ids (K,), clipped image boxes (K, 4)) covers alone:
    its triangles rasterised inside its clipped box, occluders ignored."""
    w, h = size
    tri_obj = mesh.instance.astype(np.int64)
    slot = np.full(int(max(ids.max(), tri_obj.max())) + 1, -1, np.int64)
    slot[ids] = np.arange(len(ids))
    tri_slot = slot[tri_obj]
    sel = np.flatnonzero((tri_obj > 0) & (tri_slot >= 0))
    order = sel[np.argsort(tri_slot[sel], kind="stable")]  # the objects' triangles, grouped by object
    starts = np.searchsorted(tri_slot[order], np.arange(len(ids) + 1))
    v_rect = mesh.vertices.astype(np.float64) @ calib.velo_to_rect[:3, :3].T + calib.velo_to_rect[:3, 3]
    tri_rect = v_rect[mesh.triangles[order]]
    bx = clipped
    pix_boxes = np.stack([np.floor(bx[:, 0]), np.floor(bx[:, 1]), np.ceil(bx[:, 2]), np.ceil(bx[:, 3])], 1)
    pix_boxes = np.clip(pix_boxes, 0, [w - 1, h - 1, w - 1, h - 1]).astype(np.int64)
    return _coverage(np.ascontiguousarray(tri_rect), starts.astype(np.int64), pix_boxes, calib.P2, NEAR_PLANE)


def _label_rows(types: np.ndarray, cam: np.ndarray, clipped: np.ndarray, truncated: np.ndarray,
                occluded: np.ndarray, config: CameraConfig) -> ObjectLabels:
    """label_2 rows of K labelled objects: types (K,), camera boxes (K, 7), image boxes (K, 4), truncation
    and occlusion (K,). Objects shorter than config.dontcare_height pixels become DontCare rows, with the
    devkit's placeholder values (-1, -10, -1000) in every field but the box."""
    dontcare = clipped[:, 3] - clipped[:, 1] < config.dontcare_height
    types = types.copy()
    types[dontcare] = "DontCare"
    return ObjectLabels(
        type=types,
        truncated=np.where(dontcare, -1.0, truncated),
        occluded=np.where(dontcare, -1, occluded),
        alpha=np.where(dontcare, -10.0, alpha_from_rotation_y(cam[:, 6], cam[:, 0], cam[:, 2])),
        bbox=clipped.copy(),
        dimensions=np.where(dontcare[:, None], -1.0, cam[:, 3:6]),
        location=np.where(dontcare[:, None], -1000.0, cam[:, 0:3]),
        rotation_y=np.where(dontcare, -10.0, cam[:, 6]),
    )
