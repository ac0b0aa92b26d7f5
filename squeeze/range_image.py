"""Spherical (range-image) projection of LiDAR scans, as SqueezeSeg uses it.

A scan of N points becomes an H x W image: columns by azimuth, rows by laser ring (or by uniform
elevation bins), channels x, y, z, intensity, range, plus a validity mask. When several points fall in
one pixel the nearest wins (ties: the lower point index). Every point also gets the flat pixel index it
fell in, so per-pixel predictions map back to points.

Row modes:
- "ring": the row is the laser ring, derived from the point order. KITTI `.bin` scans store points ring
  by ring from the top laser down; within a ring the azimuth starts at 0 (ahead), increases through
  +180, wraps to -180 and rises again to just below 0 (measured on the kitti_mini frames). So the ring
  of a point is (number of +180 -> -180 wraps before it) - (azimuth < 0). This reproduces SqueezeSeg's
  published `.npy` files, whose rows are rings with uneven elevation spacing (reference/models.md 2.1),
  and avoids the empty stripes of uniform bins (SqueezeSeg issue #37).
  A scan cropped to part of the circle (the front 90 degrees, say) has no +180 -> -180 wrap: its rings are
  then told apart by the jump back across the crop's gap (see `ring_rows`), which gives every kept point the
  row it has in the full scan.
- "uniform": rows are uniform elevation bins between fov_up and fov_down, for clouds with no ring order.

Column 0 is the left edge of the horizontal field of view (azimuth `fov_left_deg`, +y side) and
columns run clockwise seen from above, to `fov_right_deg` at the right edge (SqueezeSeg: +45 to -45).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squeeze.errors import RangeImageError, RingOrderError, ScanError
from squeeze.jit import njit
from squeeze.kitti import atomic_write_bytes, check_points, read_file_bytes

# Channel order of the SqueezeSeg `.npy` files (reference/models.md 2.1).
NPY_CHANNELS = ("x", "y", "z", "intensity", "range", "label")


@dataclass(frozen=True)
class ProjectionConfig:
    height: int = 64  # laser rings (HDL-64E) or elevation bins
    width: int = 512  # azimuth bins across the horizontal field of view
    fov_left_deg: float = 45.0  # azimuth of column 0's left edge (+y side); SqueezeSeg: front 90 degrees
    fov_right_deg: float = -45.0  # azimuth of the last column's right edge
    mode: str = "ring"  # "ring" (rows from the point order, KITTI .bin) or "uniform" (elevation bins)
    fov_up_deg: float = 2.0  # uniform mode: elevation of row 0's top edge (HDL-64E: about +2.0)
    fov_down_deg: float = -24.9  # uniform mode: elevation of the last row's bottom edge (HDL-64E: -24.9)

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"image size must be positive, got {self.height} x {self.width}")
        if self.mode not in ("ring", "uniform"):
            raise ValueError(f"mode must be 'ring' or 'uniform', got {self.mode!r}")
        span = self.fov_left_deg - self.fov_right_deg
        if not 0 < span <= 360:
            raise ValueError(f"horizontal field of view must be in (0, 360] degrees, got {span}")
        if self.fov_up_deg <= self.fov_down_deg:
            raise ValueError("fov_up_deg must be above fov_down_deg")


def squeezeseg_front() -> ProjectionConfig:
    """SqueezeSeg's 64 x 512 image of the front 90 degrees, rows by laser ring."""
    return ProjectionConfig()


def squeezeseg_front_uniform() -> ProjectionConfig:
    """64 x 512 front 90 degrees with uniform elevation rows (the paper's formula; for unordered clouds)."""
    return ProjectionConfig(mode="uniform")


def full_360() -> ProjectionConfig:
    """64 x 2048 over 360 degrees, column 0 behind the car (+180), rows by laser ring."""
    return ProjectionConfig(width=2048, fov_left_deg=180.0, fov_right_deg=-180.0)


def full_360_uniform() -> ProjectionConfig:
    return ProjectionConfig(width=2048, fov_left_deg=180.0, fov_right_deg=-180.0, mode="uniform")


@dataclass
class RangeImage:
    """One projected scan. H x W as in the config.

    xyz:         (H, W, 3) float32, 0 where empty
    intensity:   (H, W) float32, 0 where empty
    range:       (H, W) float32 metres, 0 where empty
    mask:        (H, W) bool, True where a point landed
    point_index: (H, W) int64, index of the point shown in the pixel, -1 where empty
    label:       (H, W) int32 or None, class of the point shown, 0 where empty
    """

    xyz: np.ndarray
    intensity: np.ndarray
    range: np.ndarray
    mask: np.ndarray
    point_index: np.ndarray
    label: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    def to_array(self) -> np.ndarray:
        """(H, W, 6) float32 x, y, z, intensity, range, label: the SqueezeSeg `.npy` layout."""
        label = np.zeros(self.shape, np.float32) if self.label is None else self.label.astype(np.float32)
        return np.concatenate([self.xyz, self.intensity[..., None], self.range[..., None], label[..., None]],
                              axis=2).astype(np.float32)


# ------------------------------------------------------------------------------------------------ kernels
@njit(cache=True)
def _atan2_approx(y, x):
    """atan2 to within 2e-6 rad: a minimax polynomial for atan on [0, 1] plus octant selects.
    Several times cheaper than libm's scalar atan2, which dominates the projection otherwise."""
    ax = abs(x)
    ay = abs(y)
    t = min(ax, ay) / max(max(ax, ay), 1e-300)
    s = t * t
    r = t * (0.99997726 + s * (-0.33262347 + s * (0.19354346 + s * (-0.11643287 + s * (0.05265332
                                                                                     + s * -0.01172120)))))
    r = np.pi / 2 - r if ay > ax else r
    r = np.pi - r if x < 0 else r
    return -r if y < 0 else r


# The approximate azimuth decides the column unless the point lies within this fraction of a column of a
# column edge; there the exact atan2 decides. 2e-6 rad is under 1e-3 of a 0.176-degree column, so the
# margin is 50x the worst error and the result equals floor((left - atan2(y, x)) / span * width) exactly.
_EDGE_MARGIN = 0.05


@njit(cache=True, inline="always")
def _azimuth_negative(x, y):
    # atan2(y, x) < 0 exactly when y < 0, or y is -0.0 and x < 0 (atan2(-0.0, -1) = -pi).
    return y < 0.0 or (y == 0.0 and np.signbit(y) and x < 0.0)


@njit(cache=True, inline="always")
def _range(points, i):
    x = np.float64(points[i, 0])
    y = np.float64(points[i, 1])
    z = np.float64(points[i, 2])
    return np.sqrt(x * x + y * y + z * z)


@njit(cache=True)
def _project(points, height, width, left, span, ring_mode, up, vspan, given_rows):
    """The whole projection in one serial pass over the points (one pass, few allocations: it is memory-bound).

    given_rows: (N,) int64 row of each point (ring mode with rows found by `ring_rows`), or an empty array.
    Returns image (H*W, 5) float32 x, y, z, intensity, range (0 where empty); index (H*W,) int64 of the
    point shown (-1 empty; strict '<' keeps the lower index on equal ranges); pixel (N,) int64 flat pixel
    of each point (-1 outside); the number of +180 -> -180 wraps seen (ring mode without given rows).
    """
    n = points.shape[0]
    index = np.full(height * width, -1, np.int64)
    pixel = np.full(n, -1, np.int64)
    scale = width / span
    # A point whose azimuth lies more than half the field of view plus two columns from the view's centre cannot
    # land in a column: a dot product with the centre direction tells it (3/4 of a scan for the front 90 degrees).
    # Every point that lands in a column lies within half the field of view, so this skips no such point.
    half = span / 2 + 2 * span / width
    centre_x, centre_y = np.cos(left - span / 2), np.sin(left - span / 2)
    cos_limit = np.cos(half) if half < np.pi else -2.0  # -2: never skip (a view of about 360 degrees)
    wraps = 0
    prev_neg = False
    use_given = given_rows.shape[0] > 0
    for i in range(n):
        x = np.float64(points[i, 0])
        y = np.float64(points[i, 1])
        z = np.float64(points[i, 2])
        r = np.sqrt(x * x + y * y + z * z)
        if use_given:
            row = given_rows[i]
        elif ring_mode:
            neg = _azimuth_negative(x, y)
            # The wrap is a drop of more than half a turn: only possible from az >= 0 to az < 0.
            if i > 0 and neg and not prev_neg:
                a_prev = np.arctan2(np.float64(points[i - 1, 1]), np.float64(points[i - 1, 0]))
                if np.arctan2(y, x) - a_prev < -np.pi:
                    wraps += 1
            prev_neg = neg
            row = wraps - (1 if neg else 0)
        else:
            row = np.int64(np.floor((up - np.arcsin(z / r)) / vspan * height)) if r > 0.0 else -1
        if row < 0 or row >= height or not r > 0.0:
            continue
        if x * centre_x + y * centre_y < cos_limit * np.sqrt(x * x + y * y):
            continue  # outside the field of view by more than two columns: no azimuth needed
        c = (left - _atan2_approx(y, x)) * scale
        if c < -1.0 or c > width + 1.0:  # well outside: the approximation cannot matter
            continue
        frac = c - np.floor(c)
        if frac < _EDGE_MARGIN or frac > 1.0 - _EDGE_MARGIN:
            c = (left - np.arctan2(y, x)) / span * width
        col = np.int64(np.floor(c))
        if col < 0 or col >= width:
            continue
        p = row * width + col
        pixel[i] = p
        j = index[p]
        if j < 0 or r < _range(points, j):
            index[p] = i
    image = np.zeros((height * width, 5), np.float32)
    has_intensity = points.shape[1] >= 4
    for p in range(height * width):
        i = index[p]
        if i >= 0:
            image[p, 0] = points[i, 0]
            image[p, 1] = points[i, 1]
            image[p, 2] = points[i, 2]
            image[p, 3] = points[i, 3] if has_intensity else 0.0
            image[p, 4] = _range(points, i)
    return image, index, pixel, wraps


def _plausible_ring_count(rings: int, height: int) -> bool:
    # A KITTI-ordered HDL-64E scan wraps once per ring (64 or 65 times). Far fewer or far more means the
    # cloud has no ring order (shuffled, merged, simulated without rings), or is cropped (no wrap at all).
    return 0.75 * height <= rings <= 1.25 * height + 1


def _ring_count_error(rings: int, height: int, source: str, rows: np.ndarray | None = None,
                      points: np.ndarray | None = None) -> RingOrderError:
    if rows is not None and points is not None and 2 <= rings < height and _rings_descend(points, rows):
        # The lasers are in ring order but some are missing: a scan cropped in elevation. A 'velodyne_reduced' file
        # (OpenPCDet, MMDetection3D) keeps the points inside the camera image, which drops the lower lasers, and
        # the crop leaves nothing that says which laser the first kept ring is.
        return RingOrderError(source, f"ring mode found {rings} rings, in ring order, for a {height}-row "
                              "image: the scan keeps only some of its lasers (a 'velodyne_reduced' file cropped to "
                              "the camera image drops the lower ones), so the row of each ring cannot be told; use "
                              "the full scan (velodyne/), or uniform elevation rows")
    return RingOrderError(source, f"ring mode found {rings} rings for a {height}-row image; the points "
                     "are not stored ring by ring (use mode='uniform' for unordered clouds)")


def _rings_descend(points: np.ndarray, rows: np.ndarray) -> bool:
    """Whether the median elevations of the rings `rows` numbers fall from each ring to the next, as a spinning
    LiDAR's lasers do from the top one down (allowing one step in ten to rise: a laser's median elevation seen from
    the sensor's origin moves with what it hits)."""
    p = np.asarray(points, dtype=np.float64)
    ok = rows >= 0
    elevation = np.arctan2(p[ok, 2], np.hypot(p[ok, 0], p[ok, 1]))
    ring = rows[ok]
    order = np.argsort(ring, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(ring[order])) + 1]
    medians = np.array([np.median(part) for part in np.split(elevation[order], starts[1:])])
    return len(medians) >= 2 and float(np.mean(np.diff(medians) < 0)) >= 0.9


# A jump back of the azimuth by more than this can only be a new sweep: within one ring, consecutive points of the
# KITTI scans step back by at most 0.022 degrees (measured on kitti_mini). Crops narrower than twice this many
# degrees cannot be told apart from ring noise and fall back to the ring-count error.
MIN_RING_JUMP_DEG = 5.0


def ring_rows(points: np.ndarray) -> np.ndarray:
    """(N,) int64 laser ring of each point of a ring-ordered scan, cropped to any part of the circle or not.

    KITTI stores the points ring by ring from the top laser down; each ring sweeps its azimuth upwards from about
    0 through +180, wraps to -180 and rises back to 0. Whatever part of the circle a crop keeps, the sweep then
    jumps *back* across the part cut away: by ~360 degrees at the +180/-180 wrap of a full (or rear) scan, by
    ~90 degrees from +45 to -45 in the front 90 degrees. A jump back larger than half of the largest one in the scan
    (and than MIN_RING_JUMP_DEG) is such a wrap. As in the full scan, a ring starts at azimuth 0, so the points
    with azimuth < 0 belong to the ring before the last wrap: ring = wraps so far - (azimuth < 0), plus one when
    the scan starts on the negative side (a crop that keeps only negative azimuths: its first wrap opens ring 1).
    On a full scan this is the wrap rule of `_project`. Points at the origin (range 0) get -1.
    """
    p = np.asarray(points, dtype=np.float64)
    rows = np.full(len(p), -1, np.int64)
    valid = np.flatnonzero((p[:, :3] ** 2).sum(axis=1) > 0)
    if len(valid) == 0:
        return rows
    az = np.arctan2(p[valid, 1], p[valid, 0])
    step = np.diff(az)
    largest_jump_back = float(-step.min()) if len(step) else 0.0
    threshold = max(largest_jump_back / 2, np.deg2rad(MIN_RING_JUMP_DEG))
    wrap = np.concatenate([[False], step < -threshold])
    negative = az < 0
    first_wrap = int(np.argmax(wrap)) if wrap.any() else len(az)
    offset = 1 if negative[:first_wrap].all() else 0
    rows[valid] = np.cumsum(wrap) - negative + offset
    return rows


def scan_ring_rows(points: np.ndarray, height: int = 64, source: str = "<scan>") -> np.ndarray:
    """`ring_rows` of a scan that must be a `height`-laser sweep: RingOrderError, as ring-mode `project_scan` gives,
    when the rings it finds are not that (points not stored ring by ring, or only some of the lasers kept), rather
    than rows that put returns on the wrong lasers."""
    pts = np.asarray(points)
    rows = ring_rows(pts)
    rings = int(rows.max()) + 1 if len(rows) else 0
    if _has_range(pts) and not _plausible_ring_count(rings, height):
        raise _ring_count_error(rings, height, source, rows, pts)
    return rows


def project_scan(points: np.ndarray, config: ProjectionConfig | None = None, labels: np.ndarray | None = None,
                 source: str = "<scan>", rings: np.ndarray | None = None) -> tuple[RangeImage, np.ndarray]:
    """Project (N, 4) x, y, z, intensity points to a range image.

    rings: (N,) int64 laser ring of each point (row = ring; -1 or >= H drops the point) for ring mode when the
    rings are already known, as for points read back from a range image whose rows are rings: their order then
    need not be KITTI's ring by ring sweep. Ignored in uniform mode.
    Returns the image and `pixel_of_point` (N,) int64: the flat pixel index row * W + col each point fell
    in, -1 for points outside the field of view (a point hidden behind a nearer one keeps its pixel).
    """
    config = config or squeezeseg_front()
    check_points(points, source)
    if labels is not None and len(labels) != len(points):
        raise ScanError(source, f"{len(labels)} labels for {len(points)} points")
    if rings is not None and len(rings) != len(points):
        raise ScanError(source, f"{len(rings)} rings for {len(points)} points")
    h, w = config.height, config.width
    pts = np.ascontiguousarray(points, dtype=np.float32)
    args = (h, w, np.deg2rad(config.fov_left_deg), np.deg2rad(config.fov_left_deg - config.fov_right_deg),
            config.mode == "ring", np.deg2rad(config.fov_up_deg), np.deg2rad(config.fov_up_deg - config.fov_down_deg))
    given = np.ascontiguousarray(rings, dtype=np.int64) if rings is not None and config.mode == "ring" else None
    image, index, pixel, wraps = _project(pts, *args, given if given is not None else np.zeros(0, np.int64))
    # A scan whose points all sit at the origin projects to an empty image, and given rings need no sweep order:
    # in both cases there is no ring order to check.
    if (config.mode == "ring" and given is None and not _plausible_ring_count(int(wraps) + 1, h)
            and _has_range(pts)):
        # No +180 -> -180 wrap per ring: a cropped scan (its rings found by the jump across the crop) or no ring order.
        rows = scan_ring_rows(pts, h, source)
        image, index, pixel, wraps = _project(pts, *args, rows)
    label = None
    if labels is not None:
        label = np.where(index >= 0, np.asarray(labels)[np.maximum(index, 0)], 0).astype(np.int32).reshape(h, w)
    image = image.reshape(h, w, 5)
    return RangeImage(xyz=image[..., :3], intensity=image[..., 3], range=image[..., 4], mask=index.reshape(h, w) >= 0,
                      point_index=index.reshape(h, w), label=label), pixel


def _has_range(points: np.ndarray) -> bool:
    """Whether any point lies away from the origin (range > 0)."""
    return bool(np.any(points[:, :3] != 0))


def _gather(pts: np.ndarray, ranges: np.ndarray, index: np.ndarray, config: ProjectionConfig,
            labels: np.ndarray | None) -> RangeImage:
    h, w = config.height, config.width
    mask = index >= 0
    src = index[mask]
    xyzi = np.zeros((h * w, 4), np.float32)
    xyzi[mask] = pts[src, :4] if pts.shape[1] >= 4 else np.pad(pts[src, :3], ((0, 0), (0, 1)))
    rng = np.zeros(h * w, np.float32)
    rng[mask] = ranges[src]
    label = None
    if labels is not None:
        label = np.zeros(h * w, np.int32)
        label[mask] = labels[src]
        label = label.reshape(h, w)
    return RangeImage(xyz=xyzi[:, :3].reshape(h, w, 3), intensity=xyzi[:, 3].reshape(h, w),
                      range=rng.reshape(h, w), mask=mask.reshape(h, w), point_index=index.reshape(h, w),
                      label=label)


def project_scan_numpy(points: np.ndarray, config: ProjectionConfig | None = None,
                       labels: np.ndarray | None = None) -> tuple[RangeImage, np.ndarray]:
    """The same projection in plain numpy (argsort by range, then scatter): the baseline for bench/ and tests."""
    config = config or squeezeseg_front()
    pts = np.ascontiguousarray(points, dtype=np.float32)
    p64 = pts[:, :3].astype(np.float64)
    ranges = np.sqrt((p64 * p64).sum(axis=1))
    az = np.arctan2(p64[:, 1], p64[:, 0])
    if config.mode == "ring":
        wrap = np.concatenate([[False], np.diff(az) < -np.pi])
        rows = np.cumsum(wrap) - (az < 0)
        if not _plausible_ring_count(int(wrap.sum()) + 1, config.height) and _has_range(pts):
            rows = ring_rows(pts)  # a cropped scan, as in project_scan (which raises when this fails too)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            el = np.arcsin(p64[:, 2] / ranges)
        up, vspan = np.deg2rad(config.fov_up_deg), np.deg2rad(config.fov_up_deg - config.fov_down_deg)
        rows = np.floor((up - el) / vspan * config.height)
    left = np.deg2rad(config.fov_left_deg)
    span = np.deg2rad(config.fov_left_deg - config.fov_right_deg)
    cols = np.floor((left - az) / span * config.width)
    valid = (rows >= 0) & (rows < config.height) & (cols >= 0) & (cols < config.width) & (ranges > 0)
    pixel = np.where(valid, rows * config.width + cols, -1).astype(np.int64)
    # Farthest first so nearer points overwrite; among equal ranges the lower index is written last.
    order = np.argsort(ranges, kind="stable")[::-1]
    order = order[valid[order]]
    index = np.full(config.height * config.width, -1, np.int64)
    index[pixel[order]] = order
    return _gather(pts, ranges, index, config, labels), pixel


# -------------------------------------------------------------------------------------------- .npy files
def range_image_from_array(array: np.ndarray, source: str | Path = "<array>") -> RangeImage:
    """Wrap an (H, W, 6) SqueezeSeg array (x, y, z, intensity, range, label). Empty pixels: range == 0."""
    if not isinstance(array, np.ndarray) or array.ndim != 3 or array.shape[2] != 6:
        raise RangeImageError(source, f"expected an (H, W, 6) array, got shape {getattr(array, 'shape', None)}")
    if array.dtype != np.float32:
        raise RangeImageError(source, f"expected float32, got {array.dtype}")
    if not np.isfinite(array).all():
        raise RangeImageError(source, "contains NaN or infinite values")
    mask = array[..., 4] > 0
    label = array[..., 5]
    if np.any(label != np.round(label)) or np.any(label < 0):
        raise RangeImageError(source, "label channel holds values that are not non-negative integers")
    h, w = mask.shape
    index = np.where(mask.ravel(), np.arange(h * w), -1).reshape(h, w)
    return RangeImage(xyz=array[..., :3].copy(), intensity=array[..., 3].copy(), range=array[..., 4].copy(),
                      mask=mask, point_index=index, label=label.astype(np.int32))


def read_range_npy(path: str | Path, shape: tuple[int, int] | None = (64, 512)) -> RangeImage:
    """Load a SqueezeSeg / GTA-LiDAR `.npy` (never with np.fromfile: SqueezeSeg issue #25). No pickles."""
    import io

    path = Path(path)
    data = read_file_bytes(path, RangeImageError)  # refuses folders and FIFOs before opening
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        raise RangeImageError(path, f"not a numeric .npy array ({e})") from None
    except (OSError, EOFError) as e:
        raise RangeImageError(path, f"not a readable .npy file ({e})") from None
    if shape is not None and array.shape[:2] != tuple(shape):
        raise RangeImageError(path, f"expected shape {tuple(shape) + (6,)}, got {array.shape}")
    return range_image_from_array(array, path)


def write_range_npy(path: str | Path, image: RangeImage) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, image.to_array(), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
