"""Pictures people look at: range images coloured by class, bird's-eye views with boxes, camera images with
projected LiDAR points and boxes. Every function returns an (H, W, 3) uint8 RGB array; `squeeze.kitti.write_image`
writes it as PNG. Class colours come from the suite's one palette, squeeze.classes.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from squeeze.classes import color_of, colors_of_ids
from squeeze.geometry import box3d_corners, rect_to_image, velo_to_image
from squeeze.kitti import Calibration, KittiFrame, ObjectLabels, write_image
from squeeze.point_labels import point_classes_from_boxes
from squeeze.range_image import ProjectionConfig, RangeImage, project_scan


def _jet(values: np.ndarray) -> np.ndarray:
    """(N,) values in [0, 1] -> (N, 3) uint8 RGB through OpenCV's JET map."""
    v = np.clip(values * 255, 0, 255).astype(np.uint8).reshape(-1, 1)
    if v.size == 0:  # OpenCV refuses an empty image; a scan with no point in view has nothing to colour
        return np.zeros((0, 3), np.uint8)
    return cv2.applyColorMap(v, cv2.COLORMAP_JET).reshape(-1, 3)[:, ::-1]


def range_image_picture(image: RangeImage, classes: np.ndarray | None = None, scale: int = 3,
                        max_range: float = 60.0) -> np.ndarray:
    """Range image as a picture: top half the range (JET, near = red), bottom half the class colours.

    classes: (H, W) int class ids to show (defaults to image.label); empty pixels are black.
    Rows are stretched by `scale` so that a 64-row image is readable beside its width.
    """
    h, w = image.shape
    rng = np.zeros((h * w, 3), np.uint8)
    valid = image.mask.ravel()
    rng[valid] = _jet(1.0 - np.clip(image.range.ravel()[valid] / max_range, 0, 1))
    parts = [rng.reshape(h, w, 3)]
    labels = image.label if classes is None else classes
    if labels is not None:
        cls = np.zeros((h, w, 3), np.uint8)
        cls[image.mask] = colors_of_ids(labels[image.mask])  # the segmentation classes' colours (squeeze.classes)
        parts.append(np.full((2, w, 3), 255, np.uint8))
        parts.append(cls)
    pic = np.concatenate(parts, axis=0)
    return np.repeat(pic, scale, axis=0)


def bev_picture(points: np.ndarray, boxes_rect: np.ndarray | None = None, calib: Calibration | None = None,
                box_types: np.ndarray | None = None, point_classes: np.ndarray | None = None,
                x_range: tuple[float, float] = (-5.0, 75.0), y_range: tuple[float, float] = (-40.0, 40.0),
                resolution: float = 0.1) -> np.ndarray:
    """Bird's-eye view in the velodyne frame: forward is up, left is left; points by height or class.

    points: (N, >=3) velodyne; boxes_rect: (M, 7) KITTI camera boxes drawn through `calib`.
    """
    width = int(round((y_range[1] - y_range[0]) / resolution))
    height = int(round((x_range[1] - x_range[0]) / resolution))
    pic = np.zeros((height, width, 3), np.uint8)
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    row = ((x_range[1] - x) / resolution).astype(np.int64)
    col = ((y_range[1] - y) / resolution).astype(np.int64)
    ok = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    if point_classes is not None:
        colors = np.where((point_classes[ok] > 0)[:, None],
                          colors_of_ids(point_classes[ok]), 160)
    else:
        colors = _jet(np.clip((z[ok] + 2.0) / 4.0, 0, 1))
    pic[row[ok], col[ok]] = colors
    # Range rings every 10 m around the sensor.
    cx, cy = int((y_range[1]) / resolution), int(x_range[1] / resolution)
    for r in range(10, int(max(x_range[1], y_range[1])) + 1, 10):
        cv2.circle(pic, (cx, cy), int(r / resolution), (50, 50, 50), 1, cv2.LINE_AA)
    if boxes_rect is not None and len(boxes_rect) and calib is not None:
        corners = box3d_corners(boxes_rect)[:, :4, :].reshape(-1, 3)  # bottom faces, camera frame
        hom = np.concatenate([corners, np.ones((len(corners), 1))], axis=1)
        velo = (hom @ calib.rect_to_velo.T)[:, :3].reshape(-1, 4, 3)
        for k, quad in enumerate(velo):
            color = color_of(str(box_types[k]) if box_types is not None else "Car")
            poly = np.stack([(y_range[1] - quad[:, 1]) / resolution, (x_range[1] - quad[:, 0]) / resolution], 1)
            cv2.polylines(pic, [np.round(poly).astype(np.int32)], True, color, 2, cv2.LINE_AA)
            front = (poly[0] + poly[1]) / 2  # corners 0, 1 span the front face
            cv2.line(pic, tuple(np.round(poly.mean(0)).astype(int)), tuple(np.round(front).astype(int)), color, 2)
    return pic


def camera_picture(image: np.ndarray, points: np.ndarray | None = None, calib: Calibration | None = None,
                   labels: ObjectLabels | None = None, max_depth: float = 60.0, draw_3d: bool = True) -> np.ndarray:
    """The camera image with LiDAR points (coloured by depth) and labelled boxes (2D rectangle, 3D wireframe)."""
    pic = image.copy()
    h, w = pic.shape[:2]
    if points is not None and calib is not None:
        uv, depth = velo_to_image(points, calib)
        ok = (depth > 0.5) & np.isfinite(uv).all(1)
        ok &= (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
        u, v = uv[ok, 0].astype(np.int64), uv[ok, 1].astype(np.int64)
        pic[v, u] = _jet(1.0 - np.clip(depth[ok] / max_depth, 0, 1))
    if labels is not None:
        for k in range(len(labels)):
            kind = str(labels.type[k])
            color = color_of(kind)
            left, top, right, bottom = np.round(labels.bbox[k]).astype(int)
            cv2.rectangle(pic, (left, top), (right, bottom), color, 1 if kind == "DontCare" else 2)
            if kind != "DontCare":
                text = kind if labels.score is None else f"{kind} {labels.score[k]:.2f}"
                cv2.putText(pic, text, (left, max(top - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)
            if draw_3d and calib is not None and kind != "DontCare" and labels.location[k, 2] > 1.0:
                corners = box3d_corners(labels.boxes3d[k:k + 1])[0]
                uv, depth = rect_to_image(corners, calib.P2)
                if (depth > 0.1).all():
                    pts = np.round(uv).astype(np.int32)
                    for a, c in [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4),
                                 (0, 4), (1, 5), (2, 6), (3, 7)]:
                        cv2.line(pic, tuple(pts[a]), tuple(pts[c]), color, 1, cv2.LINE_AA)
    return pic


def stack_pictures(pictures: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Stack RGB pictures vertically, padding to the widest, with a white gap."""
    if not pictures:
        raise ValueError("no pictures to stack")
    width = max(p.shape[1] for p in pictures)
    rows = []
    for p in pictures:
        pad = np.zeros((p.shape[0], width - p.shape[1], 3), np.uint8)
        rows.extend([np.concatenate([p, pad], axis=1), np.full((gap, width, 3), 255, np.uint8)])
    return np.concatenate(rows[:-1], axis=0)



def write_frame_pictures(frame: KittiFrame, out_dir: str | Path, point_classes: np.ndarray | None = None,
                         config: ProjectionConfig | None = None) -> list[Path]:
    """Write the three pictures of one KITTI frame: range image by class, bird's-eye view, camera with points.

    point_classes: (N,) SqueezeSeg class per point; derived from the 3D boxes when absent.
    Returns the written paths.
    """
    out_dir = Path(out_dir)
    written = []
    objects = None
    if frame.labels is not None:
        objects = frame.labels.select(frame.labels.type != "DontCare")
    if frame.points is not None:
        if point_classes is None and frame.calib is not None and objects is not None:
            point_classes = point_classes_from_boxes(frame.points, frame.calib, objects)
        image, _ = project_scan(frame.points, config, labels=point_classes, source=frame.frame_id)
        written.append(out_dir / f"{frame.frame_id}_range.png")
        write_image(written[-1], range_image_picture(image))
        written.append(out_dir / f"{frame.frame_id}_bev.png")
        write_image(written[-1], bev_picture(frame.points, None if objects is None else objects.boxes3d, frame.calib,
                                             None if objects is None else objects.type, point_classes))
    if frame.image is not None:
        written.append(out_dir / f"{frame.frame_id}_camera.png")
        write_image(written[-1], camera_picture(frame.image, frame.points, frame.calib, frame.labels))
    return written


def plot_learning_curve(metrics_csv: str | Path, path: str | Path, eval_keys: tuple[str, ...] = ("eval/iou_",
                        "eval/miou"), ylabel: str = "validation IoU") -> None:
    """Training loss (left) and the validation metrics whose metrics.csv column starts with one of eval_keys
    (right) against steps: the picture that goes next to a training run's numbers."""
    import csv

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from squeeze.atomic import atomic_write

    with open(metrics_csv, newline="") as f:
        # A row cut short by a kill (files of older versions appended rows) has no whole step: leave it out.
        rows = [r for r in csv.DictReader(f) if (r.get("step") or "").isdigit() and None not in r.values()]
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig = Figure(figsize=(11, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    loss = [(s, float(r["loss"])) for s, r in zip(steps, rows, strict=True) if r.get("loss")]
    if loss:
        ax1.plot(*zip(*loss, strict=True), lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss")
    ax1.set_yscale("log")
    ax1.grid(alpha=0.3)
    for key in rows[0]:
        if key.startswith(eval_keys):
            pts = [(s, float(r[key])) for s, r in zip(steps, rows, strict=True) if r.get(key)]
            if pts:
                ax2.plot(*zip(*pts, strict=True), marker="o", ms=3, label=key[len("eval/"):])
    ax2.set_xlabel("step")
    ax2.set_ylabel(ylabel)
    ax2.set_ylim(0, 1)
    ax2.grid(alpha=0.3)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))  # a killed run never leaves half a PNG
