"""SqueezeDet anchors: the ConvDet grid, the anchor boxes laid over it, and the anchor-shape file.

ConvDet (Wu et al. 2017, SqueezeDet section 3.2; reference/models.md 1.3) predicts, at every cell of a
grid_h x grid_w feature map, A boxes relative to A fixed anchor shapes. In the released code:

- Anchor centres sit at cx_j = j * image_w / (grid_w + 1), j = 1..grid_w, and cy_i = i * image_h / (grid_h + 1),
  i = 1..grid_h: the grid is spread evenly *between* the image borders, so the centres are not at cell centres
  (1248 / 79 = 15.8 px apart for SqueezeDet, not the stride 16).
- The flat anchor index is (row * grid_w + col) * A + k: for each cell in row-major order, the A shapes in
  order. This is the order in which ConvDet's NHWC output reshapes (squeezedet/model.py), so anchor n and
  prediction n always belong together.
- The shapes (w, h) are in input pixels and are the same at every cell.

The grid size follows from the input size and the backbone's padding (issue #15 of the reference: a changed
input size needs a recomputed grid): `SqueezeDetConfig.grid`, derived from the backbone spec (squeeze.backbone).

Anchor-shape files (written by k-means over training boxes, read by the model config) are small JSON::

    {"format": "squeezedet-anchors", "version": 1, "image_size": [1248, 384],
     "shapes": [[36.0, 37.0], [366.0, 174.0], ...], "meta": {...}}

`image_size` is (width, height) of the net input the shapes are measured at; `AnchorFile.scaled_to` rescales
them for another input size.

`kmeans_anchor_shapes` computes shapes from training boxes by k-means with the distance 1 - IoU of two boxes
sharing a centre (Redmon & Farhadi, YOLO9000, section 2 "Dimension Clusters"): Euclidean k-means on (w, h)
lets large boxes dominate, IoU does not depend on scale.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from squeeze.checkpoint import atomic_write_text
from squeeze.errors import DataError

__all__ = [
    "ANCHOR_FILE_FORMAT",
    "KITTI_ANCHOR_SHAPES",
    "KITTI_ANCHOR_SIZE",
    "AnchorFile",
    "check_anchor_shapes",
    "box_shapes",
    "kmeans_anchor_shapes",
    "make_anchors",
    "shape_iou",
    "read_anchor_file",
    "write_anchor_file",
]

# The 9 anchor shapes (w, h) of the reference's KITTI configs, in pixels of the 1248 x 384 net input. SqueezeDet+
# (1242 x 375) uses the same numbers unscaled, as the reference does.
KITTI_ANCHOR_SHAPES: tuple[tuple[float, float], ...] = (
    (36.0, 37.0), (366.0, 174.0), (115.0, 59.0),
    (162.0, 87.0), (38.0, 90.0), (258.0, 173.0),
    (224.0, 108.0), (78.0, 170.0), (72.0, 43.0),
)
KITTI_ANCHOR_SIZE = (1248, 384)  # (width, height) the KITTI shapes are measured at

ANCHOR_FILE_FORMAT = "squeezedet-anchors"
_ANCHOR_FILE_VERSION = 1


# ---------------------------------------------------------------------------------------------------- anchors
def check_anchor_shapes(shapes: Sequence[Sequence[float]], source: str = "anchor_shapes") -> np.ndarray:
    """(A, 2) float64 array of the (w, h) shapes; DataError naming `source` unless all are finite and positive."""
    try:
        arr = np.asarray(shapes, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(source, f"anchor shapes must be (w, h) number pairs: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] != 2:
        raise DataError(source, f"anchor shapes must be a non-empty list of (w, h) pairs, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr <= 0).any():
        raise DataError(source, f"anchor widths and heights must be finite and positive, got {arr.tolist()}")
    return arr


def make_anchors(grid_h: int, grid_w: int, image_w: float, image_h: float,
                 shapes: Sequence[Sequence[float]] = KITTI_ANCHOR_SHAPES) -> np.ndarray:
    """(grid_h * grid_w * A, 4) float32 anchors [cx, cy, w, h] in input pixels, the reference's layout.

    Row n = (row * grid_w + col) * A + k holds centre (col + 1) * image_w / (grid_w + 1),
    (row + 1) * image_h / (grid_h + 1) and shape shapes[k]. Never empty (grid and shapes are checked).
    """
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"grid must be at least 1 x 1, got {grid_h} x {grid_w}")
    wh = check_anchor_shapes(shapes)  # (A, 2)
    a = wh.shape[0]
    cx = np.arange(1, grid_w + 1, dtype=np.float64) * (float(image_w) / (grid_w + 1))  # (grid_w,)
    cy = np.arange(1, grid_h + 1, dtype=np.float64) * (float(image_h) / (grid_h + 1))  # (grid_h,)
    out = np.empty((grid_h, grid_w, a, 4), dtype=np.float64)
    out[..., 0] = cx[None, :, None]
    out[..., 1] = cy[:, None, None]
    out[..., 2:] = wh[None, None, :, :]
    return out.reshape(-1, 4).astype(np.float32)


# ------------------------------------------------------------------------------------------------ anchor file
@dataclass(frozen=True)
class AnchorFile:
    """The content of an anchor-shape file."""

    shapes: tuple[tuple[float, float], ...]  # A (w, h) pairs in pixels of `image_size`
    image_size: tuple[int, int]  # (width, height) of the net input the shapes are measured at
    meta: Mapping[str, Any] = field(default_factory=dict)  # free-form provenance (k-means settings, mean IoU)

    def scaled_to(self, image_w: int, image_h: int) -> tuple[tuple[float, float], ...]:
        """The shapes for a net input of image_w x image_h (boxes are resized with the image, per axis)."""
        sx, sy = image_w / self.image_size[0], image_h / self.image_size[1]
        return tuple((w * sx, h * sy) for w, h in self.shapes)


def write_anchor_file(path: str | Path, shapes: Sequence[Sequence[float]], image_size: Sequence[int],
                      meta: Mapping[str, Any] | None = None) -> Path:
    """Write anchor shapes (w, h) measured at `image_size` = (width, height) as JSON, atomically."""
    arr = check_anchor_shapes(shapes, "shapes")
    size = _check_image_size(image_size, "image_size")
    doc = {"format": ANCHOR_FILE_FORMAT, "version": _ANCHOR_FILE_VERSION, "image_size": list(size),
           "shapes": [[float(w), float(h)] for w, h in arr], "meta": dict(meta or {})}
    path = Path(path)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def read_anchor_file(path: str | Path) -> AnchorFile:
    """Read a file written by `write_anchor_file`; DataError naming the file and the field on any fault."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "anchor file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not a readable JSON anchor file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != ANCHOR_FILE_FORMAT:
        raise DataError(path, f"not a SqueezeDet anchor file (expected \"format\": \"{ANCHOR_FILE_FORMAT}\")")
    if doc.get("version") != _ANCHOR_FILE_VERSION:
        raise DataError(path, f"unsupported anchor file version {doc.get('version')!r} "
                              f"(this code reads version {_ANCHOR_FILE_VERSION})")
    for key in ("image_size", "shapes"):
        if key not in doc:
            raise DataError(path, f"missing field {key!r}")
    size = _check_image_size(doc["image_size"], f"{path}: image_size")
    arr = check_anchor_shapes(doc["shapes"], f"{path}: shapes")
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise DataError(path, f"field 'meta' must be an object, got {type(meta).__name__}")
    return AnchorFile(shapes=tuple((float(w), float(h)) for w, h in arr), image_size=size, meta=meta)


def _check_image_size(size: Any, source: str) -> tuple[int, int]:
    ok = (isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2
          and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 1
                  and int(v) == v for v in size))
    if not ok:
        raise DataError(source, f"image size must be a (width, height) pair of positive integers, got {size!r}")
    return int(size[0]), int(size[1])


# ---------------------------------------------------------------------------------------------------- k-means
def shape_iou(shapes: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """(N, K) IoU of (N, 2) and (K, 2) box shapes (w, h) placed on a common centre."""
    inter = (np.minimum(shapes[:, None, 0], centres[None, :, 0])
             * np.minimum(shapes[:, None, 1], centres[None, :, 1]))
    union = (shapes[:, 0] * shapes[:, 1])[:, None] + (centres[:, 0] * centres[:, 1])[None, :] - inter
    return inter / union


def kmeans_anchor_shapes(shapes: np.ndarray, k: int = 9, seed: int = 0, max_iter: int = 300,
                         restarts: int = 5) -> tuple[np.ndarray, float]:
    """k anchor shapes (w, h), sorted by area, clustering box shapes with distance 1 - IoU; and their mean IoU.

    Seeds by k-means++ on that distance, updates each centre to the median shape of its members (robust to the
    few very large truncated boxes) and keeps the best of `restarts` runs by mean best IoU. Deterministic for a
    seed. Raises ValueError when there are fewer distinct shapes than k or a shape is not positive.
    """
    shapes = np.asarray(shapes, np.float64).reshape(-1, 2)
    if not np.all(np.isfinite(shapes)) or np.any(shapes <= 0):
        raise ValueError("box shapes must be finite and positive")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    distinct = len(np.unique(shapes, axis=0))
    if distinct < k:
        raise ValueError(f"{distinct} distinct box shapes cannot make {k} clusters")
    rng = np.random.default_rng(seed)
    best, best_iou = None, -1.0
    for _ in range(restarts):
        centres = shapes[[rng.integers(len(shapes))]]
        while len(centres) < k:  # k-means++: next centre drawn with probability ~ squared distance
            d = (1.0 - shape_iou(shapes, centres).max(axis=1)) ** 2
            centres = np.vstack([centres, shapes[rng.choice(len(shapes), p=d / d.sum())]])
        assign = None
        for _ in range(max_iter):
            new_assign = shape_iou(shapes, centres).argmax(axis=1)
            if assign is not None and np.array_equal(new_assign, assign):
                break
            assign = new_assign
            for j in range(k):
                members = shapes[assign == j]
                if len(members):
                    centres[j] = np.median(members, axis=0)
        mean_iou = float(shape_iou(shapes, centres).max(axis=1).mean())
        if mean_iou > best_iou:
            best, best_iou = centres.copy(), mean_iou
    assert best is not None
    return best[np.argsort(best[:, 0] * best[:, 1], kind="stable")], best_iou


def box_shapes(label_dir: str | Path, image_dir: str | Path | None, image_size: tuple[int, int],
               classes: Sequence[str] | None = None, min_height: float = 0.0) -> np.ndarray:
    """(N, 2) float64 (w, h) of the labelled boxes of a label_2 folder, in pixels of a net input of image_size.

    Each box is scaled per axis from its image's size (read from the file header in image_dir, or KITTI's
    1242 x 375 when image_dir is None) to image_size = (width, height), as the data loader resizes images.
    classes: the object types kept (case-insensitive; default every type but DontCare).
    min_height: boxes lower than this in their image's pixels are left out, e.g. 25 = KITTI's moderate limit, so
    that the far objects no evaluation counts do not pull anchors away from the ones it does.
    """
    from PIL import Image

    from squeeze.kitti import read_labels

    label_dir = Path(label_dir)
    files = sorted(label_dir.glob("*.txt"))
    if not files:
        raise DataError(label_dir, "no label .txt files")
    keep = None if classes is None else {c.lower() for c in classes}
    out = []
    for path in files:
        labels = read_labels(path)
        mask = np.array([(t.lower() in keep) if keep is not None else t != "DontCare" for t in labels.type], bool)
        if not mask.any():
            continue
        if image_dir is None:
            width, height = 1242, 375
        else:
            matches = [p for p in (Path(image_dir) / f"{path.stem}{s}" for s in (".png", ".jpg", ".jpeg"))
                       if p.exists()]
            if not matches:
                raise DataError(path, f"no image {path.stem}.png/.jpg in {image_dir}")
            try:
                with Image.open(matches[0]) as im:
                    width, height = im.size
            except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError, broken PNG chunks
                raise DataError(matches[0], f"not a readable image ({type(e).__name__}; empty or corrupt?)") from None
        b = labels.bbox[mask]
        b = b[b[:, 3] - b[:, 1] >= min_height]
        wh = np.stack([(b[:, 2] - b[:, 0]) * image_size[0] / width, (b[:, 3] - b[:, 1]) * image_size[1] / height], 1)
        out.append(wh[(wh > 0).all(axis=1)])
    shapes = np.concatenate(out) if out else np.zeros((0, 2))
    if not len(shapes):
        raise DataError(label_dir, f"no boxes of classes {sorted(keep) if keep else 'any'}"
                                   + (f" at least {min_height:g} px high" if min_height > 0 else ""))
    return shapes
