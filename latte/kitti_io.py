"""KITTI import and export of LATTE's annotations.

Import: a frame's label_2 rows (camera frame, bottom centre) become velodyne `Box`es (geometric centre), DontCare
rows skipped. Export (`export_frames`) writes, for every annotated frame:

    OUT/label_2/ID.txt       KITTI object labels, byte-compatible with squeeze.kitti.write_labels: 3D box in
                             rectified camera coordinates, the 2D box its projection clipped to the image,
                             truncation and occlusion estimated (see `kitti_labels`), alpha from ry and position.
                             Only boxes that project into the image: KITTI's labels cover the camera's view.
    OUT/velodyne/ID.label    SemanticKITTI layout: uint32 per point, class | instance << 16 (`point_labels`; the
                             class ids are the suite's .label ids, LABEL_FILE_IDS, so squeezeseg reads them)
    OUT/annotations.json     every document as stored, the source's name and root, the .label class ids

Each file is written atomically (squeeze.atomic): a reader sees the previous export's file or the new one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latte.boxes import ANNOTATION_CLASSES, POINT_CLASSES, Box, EditError, boxes_array, document_boxes
from squeeze.classes import POINT_CLASS_IDS
from squeeze.errors import DataError, LabelError
from squeeze.geometry import (
    alpha_from_rotation_y,
    box3d_to_box2d,
    boxes_rect_to_velo,
    boxes_velo_to_rect,
    points_in_boxes3d,
    velo_to_image,
    wrap_angle,
)
from squeeze.kitti import Calibration, ObjectLabels, atomic_write_text, write_labels, write_point_labels

# Class ids of the exported .label files, by POINT_CLASSES name. The suite's own ids (squeeze.classes.POINT_CLASS_IDS,
# written by the simulator and read by squeezeseg: Car 1, Pedestrian 2, Cyclist 3, Van 4) where it names the class;
# the annotation classes it lacks take 5-8, below its "stuff" classes (10+), and map to background for squeezeseg.
LABEL_FILE_IDS: dict[str, int] = {
    "background": POINT_CLASS_IDS["unlabelled"],
    "car": POINT_CLASS_IDS["Car"],
    "van": POINT_CLASS_IDS["Van"],
    "truck": 5,
    "pedestrian": POINT_CLASS_IDS["Pedestrian"],
    "person_sitting": 6,
    "cyclist": POINT_CLASS_IDS["Cyclist"],
    "tram": 7,
    "misc": 8,
}

# Occlusion (KITTI: 0 fully visible, 1 partly occluded, 2 largely occluded) from the occluded fraction of the box's
# silhouette. The simulator's labels (domain_adapt.sim.labels) cut the object's own visible pixels at 0.8 and 0.4;
# a box's silhouette is larger than the object's and occluders' boxes cover more than their pixels, so the same
# states sit higher here: these cuts agree best with the simulator's levels on /tmp/latte_data/frames (seed 11:
# 89% of 733 objects, its "3 unknown" counted as 2; 0.2 / 0.6, the simulator's own cuts, gave 80%), and hold on
# other seeds (7: 87%, 3: 87%, 5: 89%; bench/bench_latte_fusion.py prints the confusion matrices).
OCCLUDED_PARTLY = 0.35
OCCLUDED_LARGELY = 0.7
# A surface counts as in front of the object when it is this much nearer than where the ray enters the object's
# box: boxes are drawn a little loose (~0.1-0.2 m) and LiDAR ranges are good to a few centimetres.
DEPTH_MARGIN = 0.3  # m
# Points this close above the box's bottom are the road in front of it, seen by a LiDAR mounted higher than the
# camera (0.08 m) and a little behind it: they cannot hide the object's body.
GROUND_CLEARANCE = 0.25  # m
INSIDE_SLACK = 0.1  # m added to each half size when a point counts as lying on the object
MIN_POINT_EVIDENCE = 3  # points: fewer visible-or-occluding samples give no point estimate (boxes alone decide)
CELLS_PER_BOX = 2500  # pixel rays sampling one box's 2D box (a pixel apart for boxes smaller than 50 x 50)


# ------------------------------------------------------------------------------------------------ import
def boxes_from_labels(labels: ObjectLabels, calib: Calibration, source: str | Path = "<labels>") -> list[Box]:
    """The non-DontCare rows of a label file as velodyne Boxes: id "imp-K" (K counts the boxes kept), class kept,
    source "imported", accepted, score from a result file's 16th field (1 otherwise). LabelError naming `source`
    for a class LATTE does not annotate or a size <= 0."""
    keep = np.flatnonzero(labels.type != "DontCare")
    if len(keep) == 0:
        return []
    for k in keep:
        if str(labels.type[k]) not in ANNOTATION_CLASSES:
            raise LabelError(source, f"object {k}: type {str(labels.type[k])!r} is not one of "
                                     f"{', '.join(ANNOTATION_CLASSES)} or DontCare")
        if np.any(labels.dimensions[k] <= 0):
            raise LabelError(source, f"object {k} ({labels.type[k]}): size {labels.dimensions[k].tolist()} is not > 0")
    velo = boxes_rect_to_velo(labels.boxes3d[keep], calib)
    scores = np.ones(len(labels)) if labels.score is None else labels.score
    return [Box(id=f"imp-{i}", cls=str(labels.type[k]), x=0, y=0, z=0, l=1, w=1, h=1, yaw=0, source="imported",
                accepted=True, score=float(scores[k])).with_array(velo[i])
            for i, k in enumerate(keep)]


def import_labels(source: Any, frame_id: str) -> list[Box]:
    """A frame's KITTI label_2 boxes as velodyne Boxes (source "imported", accepted, class kept); [] without."""
    return list(source.labels(frame_id))


# ------------------------------------------------------------------------------------------------ export rows
def kitti_labels(boxes: Sequence[Box], calib: Calibration, points: np.ndarray | None,
                 image_size: tuple[int, int]) -> ObjectLabels:
    """KITTI label_2 rows of velodyne `boxes` for an image of image_size = (width, height).

    Rows keep the boxes' order; boxes that do not project into the image (behind the camera or wholly outside
    it) are left out. Per row:
    - location, dimensions, rotation_y: squeeze.geometry.boxes_velo_to_rect (bottom centre, camera frame);
    - bbox: the projected 3D box (near-plane clipped, squeeze.geometry.box3d_to_box2d) clipped to the image;
    - truncated: 1 - (area of the projected box inside the image) / (area of the whole projected box), 0..1;
    - occluded: 0 / 1 / 2 from the occluded fraction of the object's silhouette (`occluded_fractions`) cut at
      OCCLUDED_PARTLY and OCCLUDED_LARGELY;
    - alpha: rotation_y - arctan2(x, z) of the location (squeeze.geometry.alpha_from_rotation_y).
    points: (N, >=3) velodyne scan for the occlusion estimate, or None (then only other boxes occlude).
    An empty `boxes` gives empty labels.
    """
    boxes = list(boxes)
    width, height = _image_size(image_size)
    if not boxes:
        return ObjectLabels()
    velo = boxes_array(boxes)
    cam = boxes_velo_to_rect(velo, calib)
    full = box3d_to_box2d(cam, calib.P2)
    clipped = box3d_to_box2d(cam, calib.P2, (width, height))
    ok = np.isfinite(full).all(axis=1)
    area_full = np.where(ok, np.prod(np.nan_to_num(full[:, 2:] - full[:, :2]), axis=1), 0.0)
    area_in = np.where(ok, np.prod(np.nan_to_num(clipped[:, 2:] - clipped[:, :2]), axis=1), 0.0)
    keep = np.flatnonzero(ok & (area_in > 0))
    if len(keep) == 0:
        return ObjectLabels()
    truncated = np.clip(1.0 - area_in / np.maximum(area_full, 1e-12), 0.0, 1.0)
    occluded = occlusion_levels(occluded_fractions(velo, calib, points, (width, height)))
    ry = np.asarray(wrap_angle(cam[:, 6]))
    alpha = np.asarray(alpha_from_rotation_y(ry, cam[:, 0], cam[:, 2]))
    return ObjectLabels(
        type=np.array([boxes[k].cls for k in keep], dtype="<U16"), truncated=_written(truncated[keep]),
        occluded=occluded[keep], alpha=_written(alpha[keep]), bbox=_written(clipped[keep]),
        dimensions=_written(cam[keep, 3:6]), location=_written(cam[keep, :3]), rotation_y=_written(ry[keep]))


def _written(values: np.ndarray) -> np.ndarray:
    """`values` with those that KITTI's 2 decimals write as 0 set to +0: no "-0.00" (a heading of exactly -pi/2
    leaves -6e-17 after the rotation)."""
    return np.where(np.abs(values) < 0.005, 0.0, values)


def occlusion_levels(fraction: np.ndarray) -> np.ndarray:
    """(N,) occluded fractions -> (N,) int64 KITTI occlusion: 0 below OCCLUDED_PARTLY, 1 below OCCLUDED_LARGELY,
    else 2."""
    f = np.asarray(fraction, np.float64)
    return np.select([f < OCCLUDED_PARTLY, f < OCCLUDED_LARGELY], [0, 1], 2).astype(np.int64)


def _image_size(image_size: object) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in image_size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise DataError("image_size", f"expected (width, height), got {image_size!r}") from None
    if width < 1 or height < 1:
        raise DataError("image_size", f"expected positive (width, height), got {image_size!r}")
    return width, height


def _ray_box(origin: np.ndarray, dirs: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where rays origin + t * dirs enter and leave velodyne boxes (slab method, Kay & Kajiya 1986).

    origin (3,) or (R, 3); dirs (R, 3); boxes (B, 7). Returns t_in, t_out (R, B): the ray hits box b where
    t_out >= max(t_in, 0); t_in < 0 when the origin is inside.
    """
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    rel = np.broadcast_to(origin, dirs.shape)[:, None, :] - boxes[None, :, :3]  # (R, B, 3)
    o = np.stack([c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1], rel[..., 2]], axis=-1)
    d = np.stack([c * dirs[:, None, 0] + s * dirs[:, None, 1], -s * dirs[:, None, 0] + c * dirs[:, None, 1],
                  np.broadcast_to(dirs[:, None, 2], (len(dirs), len(boxes)))], axis=-1)
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)  # a ray parallel to a slab: inside it or never in it
    half = 0.5 * boxes[None, :, 3:6]
    t1, t2 = (-half - o) / d, (half - o) / d
    return np.minimum(t1, t2).max(axis=-1), np.maximum(t1, t2).min(axis=-1)


def occluded_fractions(boxes: np.ndarray, calib: Calibration, points: np.ndarray | None,
                       image_size: tuple[int, int]) -> np.ndarray:
    """(N,) fraction of each velodyne box's (N, 7) image silhouette hidden by something nearer, 0..1.

    Two estimates, the larger wins:
    - boxes: pixel rays from the camera centre on a grid over box k's clipped 2D box (at most about
      CELLS_PER_BOX of them); a ray that crosses box k is hidden when another box is entered more than
      DEPTH_MARGIN nearer along it. Annotated objects are solid, so this holds even where no LiDAR point falls.
    - points: the scan's points whose camera ray crosses box k, followed along the LiDAR's own ray: a point on
      box k (inside it, or between where the ray enters and leaves it) is a visible sample; one more than
      DEPTH_MARGIN before the ray enters the box, and higher than GROUND_CLEARANCE above its bottom, an occluding
      one (walls, poles, parked cars nobody boxed). Fraction = occluding / (occluding + visible), used when there
      are at least MIN_POINT_EVIDENCE samples.
    Both measure the box's silhouette, which is larger than the object's own: the levels' cuts
    (OCCLUDED_PARTLY, OCCLUDED_LARGELY) allow for it. Boxes that do not reach the image get 0; none give (0,).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    width, height = _image_size(image_size)
    n = len(boxes)
    frac = np.zeros(n)
    if n == 0:
        return frac
    box2d = box3d_to_box2d(boxes_velo_to_rect(boxes, calib), calib.P2, (width, height))
    ok = np.isfinite(box2d).all(axis=1) & (box2d[:, 2] > box2d[:, 0]) & (box2d[:, 3] > box2d[:, 1])
    # Pixel rays of the camera P2 belongs to: centre C with P2 [C; 1] = 0, direction M^-1 [u, v, 1].
    m_inv = np.linalg.inv(calib.P2[:, :3])
    rect_to_velo = calib.rect_to_velo
    centre = rect_to_velo[:3, :3] @ (-m_inv @ calib.P2[:, 3]) + rect_to_velo[:3, 3]
    pix_to_dir = rect_to_velo[:3, :3] @ m_inv
    overlap = ((box2d[:, None, 0] < box2d[None, :, 2]) & (box2d[None, :, 0] < box2d[:, None, 2])
               & (box2d[:, None, 1] < box2d[None, :, 3]) & (box2d[None, :, 1] < box2d[:, None, 3]))
    for k in np.flatnonzero(ok):
        others = np.flatnonzero(ok & overlap[k])
        others = others[others != k]
        if len(others) == 0:
            continue
        left, top, right, bottom = box2d[k]
        stride = max(1.0, math.sqrt((right - left) * (bottom - top) / CELLS_PER_BOX))
        uu, vv = np.meshgrid(np.arange(left + stride / 2, right, stride), np.arange(top + stride / 2, bottom, stride))
        if uu.size == 0:
            continue
        dirs = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)], axis=1) @ pix_to_dir.T
        t_in, t_out = _ray_box(centre, dirs, boxes[np.concatenate([[k], others])])
        entry = np.where(t_out >= np.maximum(t_in, 0.0), np.maximum(t_in, 0.0), np.inf)
        own = np.isfinite(entry[:, 0])
        if own.any():
            frac[k] = (entry[own, 1:] < entry[own, :1] - DEPTH_MARGIN).any(axis=1).mean()
    if points is None or len(points) == 0:
        return frac
    xyz = np.asarray(points, np.float64)[:, :3]
    xyz = xyz[xyz @ calib.velo_to_rect[2, :3] + calib.velo_to_rect[2, 3] > 0]  # behind the camera: not projected
    uv, depth = velo_to_image(xyz, calib)
    shown = np.flatnonzero((depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= width - 1) & (uv[:, 1] >= 0)
                           & (uv[:, 1] <= height - 1))
    for k in np.flatnonzero(ok):
        left, top, right, bottom = box2d[k]
        q = uv[shown]
        sel = shown[(q[:, 0] >= left) & (q[:, 0] <= right) & (q[:, 1] >= top) & (q[:, 1] <= bottom)]
        if len(sel) == 0:
            continue
        cam_in, cam_out = _ray_box(centre, xyz[sel] - centre, boxes[k:k + 1])
        sel = sel[cam_out[:, 0] >= np.maximum(cam_in[:, 0], 0.0)]  # the point lies in box k's silhouette
        if len(sel) < MIN_POINT_EVIDENCE:
            continue
        p = xyz[sel]
        rng = np.linalg.norm(p, axis=1)
        ray_in, ray_out = _ray_box(np.zeros(3), p / np.maximum(rng, 1e-9)[:, None], boxes[k:k + 1])
        ray_in, ray_out = ray_in[:, 0], ray_out[:, 0]
        crosses = ray_out >= np.maximum(ray_in, 0.0)
        c, s = math.cos(boxes[k, 6]), math.sin(boxes[k, 6])
        rel = p - boxes[k, :3]
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], axis=1)
        inside = np.all(np.abs(local) <= 0.5 * boxes[k, 3:6] + INSIDE_SLACK, axis=1)
        visible = inside | (crosses & (rng >= ray_in - DEPTH_MARGIN) & (rng <= ray_out + DEPTH_MARGIN))
        bottom_z = boxes[k, 2] - 0.5 * boxes[k, 5]
        occluding = ~inside & crosses & (rng < ray_in - DEPTH_MARGIN) & (p[:, 2] > bottom_z + GROUND_CLEARANCE)
        n_vis, n_occ = int(visible.sum()), int(occluding.sum())
        if n_vis + n_occ >= MIN_POINT_EVIDENCE:
            frac[k] = max(frac[k], n_occ / (n_vis + n_occ))
    return frac


# ------------------------------------------------------------------------------------------------ point labels
def points_in_velodyne_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, >=3) velodyne points, (B, 7) velodyne boxes -> (N, B) bool, faces inside.

    Reuses squeeze.geometry's point-in-box kernel through the proper rotation (x, y, z) -> (x, -z, y), which turns
    the velodyne frame into one with camera-like axes (y down): a box's geometric centre z becomes the bottom
    centre -(z - h/2), its size order (l, w, h) becomes (h, w, l) and yaw about +z becomes ry = -yaw about +y.
    """
    p = np.asarray(points, np.float64)[:, :3]
    pseudo_points = np.stack([p[:, 0], -p[:, 2], p[:, 1]], axis=1)
    b = np.asarray(boxes, np.float64).reshape(-1, 7)
    pseudo_boxes = np.stack([b[:, 0], -(b[:, 2] - 0.5 * b[:, 5]), b[:, 1], b[:, 5], b[:, 4], b[:, 3], -b[:, 6]],
                            axis=1)
    return points_in_boxes3d(pseudo_points, pseudo_boxes)


def point_labels(points: np.ndarray, boxes: Iterable[Box], brush: Mapping | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-point labels of a scan from its boxes and brush strokes.

    points: (N, >=3) velodyne. boxes: every box given counts (filter proposals out first if they should not);
    where boxes overlap the later one wins. brush: {"indices": [...], "labels": [POINT_CLASSES name, ...]} (a
    frame document's brush) overrides the boxes on its points (its instance is 0).
    Returns semantic (N,) uint16, the index into POINT_CLASSES (0 background), and instance (N,) uint16: the box's
    track_id + 1, or for boxes without a track max(track_id) + 2 + their order among those (0 outside boxes).
    EditError for a brush index past the scan or an unknown label; LabelError when an instance exceeds 16 bits.
    """
    points = np.asarray(points)
    n = len(points)
    boxes = list(boxes)
    semantic = np.zeros(n, np.uint16)
    instance = np.zeros(n, np.uint16)
    if boxes and n:
        inside = points_in_velodyne_boxes(points, boxes_array(boxes))
        top = max((b.track_id for b in boxes), default=-1)
        untracked = 0
        for k, box in enumerate(boxes):
            if box.track_id >= 0:
                inst = box.track_id + 1
            else:
                inst = top + 2 + untracked
                untracked += 1
            if inst > 0xFFFF:
                raise LabelError("boxes", f"box {box.id}: instance id {inst} does not fit in 16 bits")
            semantic[inside[:, k]] = POINT_CLASSES.index(box.cls.lower())
            instance[inside[:, k]] = inst
    if brush:
        indices = np.asarray(brush.get("indices", []), np.int64)
        labels = list(brush.get("labels", []))
        if len(indices) != len(labels):
            raise EditError("brush: indices and labels must have the same length")
        if len(indices) and (indices.min() < 0 or indices.max() >= n):
            raise EditError(f"brush.indices: index out of range 0..{n - 1} of this scan")
        lookup = {name: i for i, name in enumerate(POINT_CLASSES)}
        bad = [lab for lab in labels if lab not in lookup]
        if bad:
            raise EditError(f"brush.labels: {bad[0]!r} is not one of {', '.join(POINT_CLASSES)}")
        semantic[indices] = np.array([lookup[lab] for lab in labels], np.uint16)
        instance[indices] = 0
    return semantic, instance


def label_file_classes(semantic: np.ndarray) -> np.ndarray:
    """(N,) POINT_CLASSES indices -> (N,) uint16 class ids of the exported .label files (LABEL_FILE_IDS)."""
    table = np.array([LABEL_FILE_IDS[name] for name in POINT_CLASSES], np.uint16)
    return table[np.asarray(semantic, np.int64)]


# ------------------------------------------------------------------------------------------------ export
def export_frames(source: Any, documents: Mapping[str, Mapping], out_dir: str | Path,
                  only_accepted: bool = True) -> dict:
    """Write label_2/ID.txt, velodyne/ID.label and annotations.json for the frames of `documents` (module docstring).

    source: the FrameSource the documents annotate (points, image, calibration); documents: {frame_id: frame
    document}; only_accepted: leave proposals nobody accepted out of label_2 and .label (the JSON keeps all).
    A frame without calibration or image gets no label_2 file (its 2D boxes cannot be computed).
    Returns {"out", "frames": [ids], "label_2": [paths], "label": [paths], "json": path, "no_label_2": [ids]}
    (paths relative to out). DataError for a document of a frame the source does not have.
    """
    out = Path(out_dir)
    order = {fid: i for i, fid in enumerate(source.frame_ids())}
    unknown = [fid for fid in documents if fid not in order]
    if unknown:
        raise DataError(getattr(source, "root", None), f"documents of frame(s) not in this source: {unknown[:5]}")
    fids = sorted(documents, key=order.__getitem__)
    result: dict[str, Any] = {"out": str(out), "frames": fids, "label_2": [], "label": [], "no_label_2": []}
    for fid in fids:
        doc = documents[fid]
        boxes = [b for b in document_boxes(doc) if b.accepted or not only_accepted]
        points = source.points(fid)
        semantic, instance = point_labels(points, boxes, doc.get("brush"))
        write_point_labels(out / "velodyne" / f"{fid}.label", label_file_classes(semantic), instance)
        result["label"].append(f"velodyne/{fid}.label")
        calib, image = source.calib(fid), source.image(fid)
        if calib is None or image is None:
            result["no_label_2"].append(fid)
            continue
        labels = kitti_labels(boxes, calib, points, (image.shape[1], image.shape[0]))
        write_labels(out / "label_2" / f"{fid}.txt", labels)
        result["label_2"].append(f"label_2/{fid}.txt")
    dump = {"source": getattr(source, "name", ""), "root": str(getattr(source, "root", "")),
            "only_accepted": bool(only_accepted), "label_file_ids": LABEL_FILE_IDS,
            "frames": {fid: documents[fid] for fid in fids}}
    atomic_write_text(out / "annotations.json", json.dumps(dump, indent=1, sort_keys=True) + "\n")
    result["json"] = "annotations.json"
    return result
