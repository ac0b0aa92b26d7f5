"""One-click box: click one point of an object, get an oriented 3D box around it (LATTE, Wang et al. ITSC 2019).

The pipeline of the original tool (../shared/reference/tools.md (a)), with what it left out:

1. Ground (`fit_ground`, once per frame). A RANSAC plane (Fischler & Bolles 1981) on a subsample of the scan,
   hypotheses restricted to near-horizontal normals, refined by least squares on its inliers, gives the frame's
   ground plane. Real KITTI ground tilts and bends (crowned roads, ramps, sidewalks), so one plane is not the
   ground everywhere: a 1 m elevation grid of the points' heights above that plane, with the lowest height of
   each cell and a 5 m minimum filter (the road beside any car, van or truck footprint), gives the local ground
   under every point. A point is ground when it is less than GROUND_THRESHOLD above its local ground (Zermas
   et al. 2017's point-to-plane threshold). The original ran a single Zermas GPF plane offline.
2. Cluster (`FrameGeometry.cluster_near`). The non-ground points within a class-sized radius of the click, below
   a class height gate (a car under a tree or beside a tall wall does not take the canopy or the wall's top), are
   binned on a 10 cm bird's-eye grid and clustered with DBSCAN's rule (Ester et al. 1996; the later LATTE
   versions' core-point growth): a cell is a core when at least MIN_POINTS points lie within EPS of it, cores
   within EPS of each other join, non-core cells join their nearest core within EPS. The cluster holding the
   point nearest the click is the object. Grid arithmetic (convolution, dilation, labelling) keeps it a few
   milliseconds whatever the point density.
3. Box (`fit_box_l_shape`). Search-based rectangle fitting (Zhang et al., "Efficient L-shape fitting for vehicle
   detection using laser scanners", IV 2017): every heading in [0, 90) degrees in 1 degree steps, then 0.05
   degree steps around the best, scored with the closeness criterion (see CRITERION_NOTE); the rectangle is the
   points' extent along the best axes. Height runs from the local ground to the cluster's top point.
4. Class priors (`one_click_box` with `cls`). A LiDAR sees one or two faces of an object. Along an axis whose
   extent is short of the class's mean size (KITTI training-set means) the box takes the mean size and grows
   *away from the sensor* from the face it sees: a car seen from behind keeps its rear face and gets its length
   behind it. Which observed axis is the length is chosen by how well each assignment explains the extents.

`refit_near` is tracking's re-fit: the cluster inside an enlarged predicted footprint, the heading searched near
the predicted one, and the predicted sizes kept for the faces the sensor does not see.

Coordinates are velodyne (x forward, y left, z up, metres); boxes are squeeze.geometry's velodyne rows
[x, y, z, l, w, h, yaw], geometric centre, yaw about +z from +x, wrapped to [-pi, pi).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from squeeze.errors import DataError
from squeeze.jit import njit
from squeeze.kitti import check_points

__all__ = [
    "CLASS_SIZES",
    "FrameGeometry",
    "GROUND_THRESHOLD",
    "Ground",
    "fit_box_l_shape",
    "fit_ground",
    "one_click_box",
    "refit_near",
]

# ------------------------------------------------------------------------------------------------ parameters
GROUND_THRESHOLD = 0.2  # m above the local ground: Zermas et al. 2017's th_dist; curbs (~0.15 m) count as ground
CLUSTER_MIN_HEIGHT = 0.3  # m; points between this and GROUND_THRESHOLD still belong to a box but do not link
# clusters: ground a slope or a kerb lifts slightly must not bridge a car to its neighbours
RANSAC_HYPOTHESES = 200  # plane hypotheses; 99.9% chance of an all-ground triplet even at 30% ground inliers
RANSAC_SAMPLE = 4000  # points the hypotheses are scored on (the scan's nearest 40 m, subsampled)
RANSAC_RANGE = 40.0  # m; the global plane is the ground the sensor stands on, not a distant hillside
RANSAC_INLIER = 0.15  # m point-to-plane distance of an inlier
MAX_GROUND_TILT = math.radians(15.0)  # the ground plane's normal is within this of +z (KITTI's steepest ramps ~8 deg)
GRID_CELL = 1.0  # m, elevation grid of the local ground
GRID_WINDOW = 5  # cells: the local ground is the lowest cell within +-2 m, wider than any road user is half-wide
SUSPECT_GROUND = 0.15  # m above the plane: a window's lowest point this high may be a car's underside, not road
LOCAL_GRADE = 0.06  # how fast (m per m) the ground may rise from the nearest road seen, where none is near
MAX_GRADE = 0.1  # the steepest road grade followed away from the sensor (KITTI's ramps stay under ~8%)
LOW_RANK = 3  # a cell's ground level is its 3rd-lowest point (1-2 stray returns below the road are ignored)
DEEP_OUTLIER = 1.0  # m below the plane: multipath returns (reflections through glass, puddles) are not ground level

BEV_CELL = 0.1  # m, grid of the clustering
EPS = 0.4  # m, DBSCAN neighbourhood radius in bird's-eye view across the line of sight
RADIAL_EPS_PER_M = 0.06  # along the line of sight the radius grows with range (m per m): a far car's rings land
# on its rear face and then, a trunk lid further, on its rear window, with nothing between in bird's-eye view
MAX_RADIAL_EPS = 1.2  # m, the longest such gap (a hatchback's lid seen from 30 m and beyond)
MIN_POINTS = 5  # DBSCAN core rule: points within EPS (the cell's own included)
SEED_DISTANCE = 0.5  # m; a click farther than this from every non-ground point is a click on the ground
DEFAULT_RADIUS = 8.0  # m around the click searched when no class is given (a long van from one end)
DEFAULT_MAX_HEIGHT = 4.0  # m above the ground, no class given
MIN_CLUSTER = 3  # points; fewer is noise, not an object

COARSE_STEP = math.radians(1.0)  # L-shape search, Zhang et al. use 1 degree
FINE_STEP = math.radians(0.05)  # then refined around the best coarse heading
CLOSENESS_D0 = 0.05  # m; Zhang et al.'s d0 (they use 0.01 m), raised to the noise of a real scan's surfaces
MAX_FIT_POINTS = 1500  # points the heading search scores at most
EDGE_QUANTILE = 0.01  # of the points beyond each edge the closeness criterion ignores
FIT_CELL = 0.03  # m; points are deduplicated on this bird's-eye grid before the search (stacked rings of one
# vertical face would otherwise weigh that face by the number of rings)
PRIOR_SEARCH = math.radians(20.0)  # with a prior heading, search this far either side of it
OVERSIZE = 1.25  # a cluster longer or wider than this times its class size (+0.3 m) holds more than one object
OVERSIZE_WIDTH = 1.15  # the same across (+0.15 m): widths vary less than lengths (a car is 1.4-1.9 m wide)
MAX_GRID_CELLS = 400_000  # the largest clustering grid a split may use
SPLIT_GAP = 0.25  # m; the last resort cuts an oversize cluster at bird's-eye gaps wider than this
SPLIT_SCALES = (0.75, 0.5, 0.35, 0.25)  # neighbourhood scales tried, coarsest first, to split such a cluster
LINE_HYPOTHESES = 128  # RANSAC line hypotheses when looking for a facade in an oversize cluster
LINE_INLIER = 0.06  # m from the line: a facade's or fence's bird's-eye thickness
LINE_GAP = 0.3  # m; a straight structure with no gap longer than this along it is one structure
MAX_LINES = 3  # straight structures removed at most (a corner of two walls, a fence)
ACROSS_COS = math.cos(math.radians(50.0))  # an axis within 40 degrees of square to the line of sight runs across it
END_BAND = 0.3  # m: the points this close to an end of the box axis are that end's
OCCLUSION_BIN = math.radians(0.25)  # azimuth bins of the occlusion profile (KITTI's HDL-64 steps ~0.09 deg)
OCCLUSION_SPAN = math.radians(3.0)  # how far past an object's angular edge an occluder is looked for
KEEP_FRACTION = 0.8  # an observed extent below this fraction of the class size counts as a partial view

CRITERION_NOTE = (
    "closeness (Zhang et al. 2017, eq. 9 with d0 = 5 cm): it rewards points lying on two perpendicular edges and "
    "needs no assignment of points to edges, so one visible face (an I-shape) or a few sparse rings still score "
    "sharply; the variance criterion splits points between the two edges and turns flat when one edge is empty")

# KITTI training-set mean sizes (l, w, h) in metres per class (the per-class averages used as size anchors by
# e.g. Frustum PointNets, Qi et al. 2018); the simulated world draws its sizes around the same means.
CLASS_SIZES: dict[str, tuple[float, float, float]] = {
    "Car": (3.88, 1.63, 1.53),
    "Van": (5.08, 1.90, 2.21),
    "Truck": (10.11, 2.59, 3.25),
    "Pedestrian": (0.84, 0.66, 1.76),
    "Person_sitting": (0.80, 0.60, 1.27),
    "Cyclist": (1.76, 0.60, 1.74),
    "Tram": (16.09, 2.54, 3.53),
    "Misc": (3.58, 1.51, 1.91),
}


# How far the box's face lies in front of the nearest return, per class (0 for the rest): a person's box holds
# the swinging arms and legs, so the torso the LiDAR sees is set back from its face (median 0.13 m on
# simulated pedestrians with >= 50 points; a cyclist's box holds the handlebar and pedals).
FACE_INSET: dict[str, float] = {"Pedestrian": 0.13, "Person_sitting": 0.13, "Cyclist": 0.05}


def _class_radius(cls: str) -> float:
    """Search radius around the click: the whole object even when it is clicked at one end."""
    return CLASS_SIZES[cls][0] + 2.0


def _class_max_height(cls: str) -> float:
    """Height gate: points above it are not the object (canopy, the upper part of a wall)."""
    h = CLASS_SIZES[cls][2]
    return max(1.35 * h, h + 0.5)


# ------------------------------------------------------------------------------------------------ checks
def _check_scan(points: np.ndarray, name: str = "points") -> np.ndarray:
    """(N, >=3) finite float array -> (N, 3) float64 xyz; ScanError (a DataError) naming `name` otherwise."""
    if not isinstance(points, np.ndarray):
        raise DataError(name, f"expected a numpy array of shape (N, 4), got {type(points).__name__}")
    if points.dtype.kind not in "fiu":
        raise DataError(name, f"expected a float array, got dtype {points.dtype}")
    check_points(points, name)
    return np.ascontiguousarray(points[:, :3], dtype=np.float64)


def _check_xyz(xyz, name: str = "click") -> np.ndarray:
    """A point (x, y, z) -> (3,) float64; DataError when it is not three finite numbers."""
    try:
        arr = np.asarray(xyz, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(name, f"expected three numbers x, y, z: {e}") from None
    if arr.shape != (3,) or not np.isfinite(arr).all():
        raise DataError(name, f"expected three finite numbers x, y, z, got {np.asarray(xyz).tolist()!r}")
    return arr


def _check_box7(box7, name: str = "box") -> np.ndarray:
    try:
        arr = np.asarray(box7, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise DataError(name, f"expected 7 numbers x, y, z, l, w, h, yaw: {e}") from None
    if arr.shape != (7,) or not np.isfinite(arr).all() or (arr[3:6] <= 0).any():
        raise DataError(name, f"expected 7 finite numbers x, y, z, l, w, h > 0, yaw, got {arr.tolist()!r}")
    return arr


def _check_cls(cls: str | None) -> None:
    if cls is not None and cls not in CLASS_SIZES:
        raise DataError("cls", f"{cls!r} is not one of {', '.join(CLASS_SIZES)}")


def _wrap(angle: float) -> float:
    """Angle wrapped to [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


# ------------------------------------------------------------------------------------------------ ground
@dataclass(frozen=True)
class Ground:
    """The ground of one scan.

    plane: (4,) float64 a, b, c, d with a*x + b*y + c*z + d = 0, unit normal, c > 0 (the frame's ground plane).
    mask:  (N,) bool, True for ground points (less than GROUND_THRESHOLD above the local ground).
    """

    plane: np.ndarray
    mask: np.ndarray


@njit(cache=True)
def _plane_cells(xyz: np.ndarray, plane: np.ndarray, origin: np.ndarray, rows: int, cols: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - jitted
    """One pass over the scan: each point's signed distance to `plane` (N,), its GRID_CELL cell (N,) (-1 outside
    the rows x cols grid at `origin`) and each cell's LOW_RANK-th lowest distance not below -DEEP_OUTLIER
    (rows*cols,), +inf where the cell has fewer such points. Not the lowest: a real scan has stray returns
    below the road (multipath through glass, puddles) that would sink the ground around them."""
    n = xyz.shape[0]
    above = np.empty(n)
    cells = np.empty(n, np.int64)
    low = np.full((rows * cols, LOW_RANK), np.inf)  # per cell, its LOW_RANK lowest values in increasing order
    for k in range(n):
        d = xyz[k, 0] * plane[0] + xyz[k, 1] * plane[1] + xyz[k, 2] * plane[2] + plane[3]
        above[k] = d
        i = int(math.floor((xyz[k, 0] - origin[0]) / GRID_CELL))
        j = int(math.floor((xyz[k, 1] - origin[1]) / GRID_CELL))
        if i < 0 or i >= rows or j < 0 or j >= cols:
            cells[k] = -1
            continue
        c = i * cols + j
        cells[k] = c
        if d < -DEEP_OUTLIER or d >= low[c, LOW_RANK - 1]:
            continue
        r = LOW_RANK - 1
        while r > 0 and low[c, r - 1] > d:
            low[c, r] = low[c, r - 1]
            r -= 1
        low[c, r] = d
    return above, cells, low[:, LOW_RANK - 1].copy()


@njit(cache=True)
def _range_profile(xyz: np.ndarray, height: np.ndarray, objects: np.ndarray, step: float
                   ) -> np.ndarray:  # pragma: no cover - jitted
    """(round(2 pi / step),) the smallest bird's-eye range of the points `objects` between CLUSTER_MIN_HEIGHT
    and 2.5 m above the ground per azimuth bin (bin k holds azimuths [k step, (k + 1) step) mod 2 pi); inf
    where none."""
    n = int(round(2.0 * math.pi / step))
    out = np.full(n, np.inf)
    for k in range(objects.shape[0]):
        i = objects[k]
        if height[i] < CLUSTER_MIN_HEIGHT or height[i] > 2.5:
            continue
        x, y = xyz[i, 0], xyz[i, 1]
        b = int(math.floor(math.atan2(y, x) / step)) % n
        r = math.sqrt(x * x + y * y)
        if r < out[b]:
            out[b] = r
    return out


@njit(cache=True)
def _heights(above: np.ndarray, cells: np.ndarray, offset: np.ndarray) -> np.ndarray:  # pragma: no cover - jitted
    """(N,) float32 height above the local ground: distance to the plane less the cell's ground offset."""
    out = np.empty(above.shape[0], np.float32)
    for k in range(above.shape[0]):
        c = cells[k]
        out[k] = above[k] - (offset[c] if c >= 0 else 0.0)
    return out


def _ransac_plane(xyz: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(4,) unit plane a, b, c, d (c > 0) of the dominant near-horizontal surface near the sensor.

    Vectorised RANSAC: RANSAC_HYPOTHESES triplets scored at once on a subsample, hypotheses whose normal tilts
    more than MAX_GROUND_TILT rejected (walls are big planes too), then a least-squares refit (SVD of the
    inliers' covariance, Zermas et al.'s plane estimate) on the best one's inliers, twice.
    """
    # A regular stride is a fair subsample of a scan (consecutive points are neighbours on one ring).
    sub = xyz[:: max(1, len(xyz) // (3 * RANSAC_SAMPLE))]
    near = sub[sub[:, 0] ** 2 + sub[:, 1] ** 2 < RANSAC_RANGE ** 2]
    if len(near) < 50:
        near = sub
    if len(near) > RANSAC_SAMPLE:
        near = near[rng.choice(len(near), RANSAC_SAMPLE, replace=False)]
    tri = near[rng.integers(0, len(near), size=(RANSAC_HYPOTHESES, 3))]  # (H, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(normal, axis=1)
    ok = norm > 1e-9
    normal[ok] /= norm[ok, None]
    normal *= np.where(normal[:, 2] < 0, -1.0, 1.0)[:, None]
    ok &= normal[:, 2] >= math.cos(MAX_GROUND_TILT)
    if not ok.any():
        # No horizontal hypothesis (a scan of a wall): the horizontal plane through the lowest points.
        z0 = float(np.percentile(xyz[:, 2], 1.0))
        return np.array([0.0, 0.0, 1.0, -z0])
    normal, tri = normal[ok], tri[ok]
    d = -np.einsum("hk,hk->h", normal, tri[:, 0])
    # (S, H) distances by broadcasting in float32: a BLAS matmul with an inner size of 3 is slower than this
    # and spins threads on a busy machine.
    p32, n32 = near.astype(np.float32), normal.astype(np.float32)
    dist = p32[:, 0:1] * n32[:, 0] + p32[:, 1:2] * n32[:, 1] + p32[:, 2:3] * n32[:, 2] + d.astype(np.float32)
    counts = (np.abs(dist) < RANSAC_INLIER).sum(axis=0)
    best = int(np.argmax(counts))
    plane = np.append(normal[best], d[best])
    for _ in range(2):
        inl = near[np.abs(near[:, 0] * plane[0] + near[:, 1] * plane[1] + near[:, 2] * plane[2] + plane[3])
                   < RANSAC_INLIER]
        if len(inl) < 3:
            break
        centre = inl.mean(axis=0)
        _, _, vt = np.linalg.svd(inl - centre, full_matrices=False)
        n = vt[2] if vt[2, 2] > 0 else -vt[2]
        if n[2] < math.cos(MAX_GROUND_TILT):
            break
        plane = np.append(n, -float(n @ centre))
    return plane


@dataclass(frozen=True)
class _GroundModel:
    """Global plane plus the local elevation grid (see the module docstring, step 1)."""

    plane: np.ndarray  # (4,)
    origin: np.ndarray  # (2,) x, y of the grid's corner
    offset: np.ndarray  # (H, W) float64 local ground height above the plane per GRID_CELL cell (0 where unknown)

    def cells(self, xy: np.ndarray) -> np.ndarray:
        """(M, 2) -> (M,) flat grid index, -1 outside the grid."""
        ij = np.floor((xy - self.origin) / GRID_CELL).astype(np.int64)
        h, w = self.offset.shape
        inside = (ij[:, 0] >= 0) & (ij[:, 0] < h) & (ij[:, 1] >= 0) & (ij[:, 1] < w)
        return np.where(inside, ij[:, 0] * w + ij[:, 1], -1)

    def height(self, xyz: np.ndarray) -> np.ndarray:
        """(M, 3) -> (M,) height above the local ground (m)."""
        above_plane = xyz[:, 0] * self.plane[0] + xyz[:, 1] * self.plane[1] + xyz[:, 2] * self.plane[2] + self.plane[3]
        cells = self.cells(xyz[:, :2])
        local = np.where(cells >= 0, self.offset.reshape(-1)[np.maximum(cells, 0)], 0.0)
        return above_plane - local

    def ground_z(self, xy: np.ndarray) -> np.ndarray:
        """(M, 2) -> (M,) z of the local ground below each bird's-eye position."""
        a, b, c, d = self.plane
        cells = self.cells(xy)
        local = np.where(cells >= 0, self.offset.reshape(-1)[np.maximum(cells, 0)], 0.0)
        # Point at height `local` above the plane along the normal, projected back to a vertical line: c > 0.
        return (local - d - a * xy[:, 0] - b * xy[:, 1]) / c


def _fit_ground_model(xyz: np.ndarray) -> tuple[_GroundModel, np.ndarray]:
    """The ground model of a scan (N, 3) and every point's height above its local ground (N,) float32."""
    rng = np.random.default_rng(0)  # deterministic: the same scan always gets the same ground
    plane = _ransac_plane(xyz, rng)
    lo = xyz[:, :2].min(axis=0)
    rows, cols = (np.floor((xyz[:, :2].max(axis=0) - lo) / GRID_CELL).astype(np.int64) + 1).tolist()
    above, cells, lowest = _plane_cells(xyz, plane, lo, rows, cols)
    # The lowest cell within the window (a grey erosion): the road beside any car, van, truck or person. Not an
    # opening (erosion then dilation, Zhang et al. 2003's morphological filter), whose dilation would lift the
    # ground into a car from the empty shadow behind it. The price is a bias on a grade change relative to the
    # plane: grade x ~3 m, under GROUND_THRESHOLD up to ~5% (a single plane fails at ~1% over 20 m).
    low = lowest.reshape(rows, cols)
    # The plane is the ground under the sensor, where the scan has no returns (the blind circle around it).
    si, sj = int(math.floor(-lo[0] / GRID_CELL)), int(math.floor(-lo[1] / GRID_CELL))
    low[max(si - 1, 0):si + 2, max(sj - 1, 0):sj + 2] = np.minimum(low[max(si - 1, 0):si + 2, max(sj - 1, 0):sj + 2],
                                                                    0.0)
    local = ndimage.minimum_filter(low, size=GRID_WINDOW, mode="constant", cval=np.inf)
    # Where the window holds no road (a car close behind the sensor fills it) its lowest point sits high above
    # the plane; there the ground rises from the nearest road seen farther away by at most LOCAL_GRADE per
    # metre (a slope-limited lower envelope). Only there: a true step down nearby (a ditch, a lower lot) must
    # not sink a road seen in the window.
    envelope = np.full_like(local, np.inf)
    for half in (4, 8, 16):
        wider = ndimage.minimum_filter(low, size=2 * half + 1, mode="constant", cval=np.inf)
        envelope = np.minimum(envelope, wider + LOCAL_GRADE * GRID_CELL * (half - GRID_WINDOW // 2))
    high = local > SUSPECT_GROUND
    local[high] = np.minimum(local[high], envelope[high])
    # Cells with no point within the window sit at the plane. The ground leaves the plane at most by a steep
    # road's grade times the distance from the sensor (where the plane was fitted): a local ground higher than
    # that is a flat roof or a truck's bed seen without the road beside it, not ground.
    local[~np.isfinite(local)] = 0.0
    xs = lo[0] + GRID_CELL * (np.arange(rows) + 0.5)
    ys = lo[1] + GRID_CELL * (np.arange(cols) + 0.5)
    bound = 0.3 + MAX_GRADE * np.hypot(xs[:, None], ys[None, :])
    local = np.clip(local, -bound, bound)
    return _GroundModel(plane, lo, local), _heights(above, cells, local.reshape(-1))


def fit_ground(points: np.ndarray) -> Ground:
    """The ground plane and ground points of a scan.

    points: (N, >=3) float, velodyne x, y, z (more columns ignored). DataError (ScanError) when empty, not 2-D
    with >= 3 columns, or holding NaN/inf. Returns Ground(plane (4,), mask (N,) bool).
    """
    xyz = _check_scan(points)
    model, height = _fit_ground_model(xyz)
    return Ground(model.plane, height < GROUND_THRESHOLD)


# ------------------------------------------------------------------------------------------------ frame cache
class FrameGeometry:
    """What one-click needs of a frame, computed once: ground model and a KD-tree of the non-ground points.

    points: (N, 4) float32 scan as given; ground: Ground; height: (N,) float32 height above the local ground.
    """

    def __init__(self, points: np.ndarray):
        xyz = _check_scan(points)
        self.points = points
        self._xyz = xyz
        self._model, self.height = _fit_ground_model(xyz)
        self.ground = Ground(self._model.plane, self.height < GROUND_THRESHOLD)
        self._objects = np.flatnonzero(~self.ground.mask)  # (M,) indices of the non-ground points
        # Bird's-eye KD-tree; unbalanced, uncompacted nodes build ~2x faster and query as fast on LiDAR scans.
        self._tree = cKDTree(xyz[self._objects, :2], balanced_tree=False, compact_nodes=False)
        self._profile: np.ndarray | None = None  # (bins,) nearest return per azimuth bin, see nearest_return

    def nearest_return(self, az0: float, az1: float) -> float:
        """The range (m) of the nearest non-ground return between 0.3 and 2.5 m above the ground with an
        azimuth in [az0, az1] (radians, az0 <= az1, any turn); inf when none. Built on first use."""
        if self._profile is None:
            self._profile = _range_profile(self._xyz, self.height, self._objects, OCCLUSION_BIN)
        n = len(self._profile)
        a = int(math.floor(az0 / OCCLUSION_BIN))
        b = int(math.floor(az1 / OCCLUSION_BIN))
        return float(self._profile[np.arange(a, b + 1) % n].min())

    def ground_z(self, xy: np.ndarray) -> np.ndarray:
        """(M, 2) bird's-eye positions -> (M,) z of the local ground there."""
        return self._model.ground_z(np.asarray(xy, dtype=np.float64).reshape(-1, 2))

    def cluster_near(self, xyz, radius: float | None = None, *, max_height: float | None = None) -> np.ndarray:
        """(K,) int64 indices into `points` of the object cluster grown from the non-ground point nearest `xyz`.

        radius: metres searched around the click (default DEFAULT_RADIUS); max_height: points higher above the
        ground are ignored (default DEFAULT_MAX_HEIGHT). Empty (0,) when no non-ground point lies within
        SEED_DISTANCE of the click in bird's-eye view, or its cluster has fewer than MIN_CLUSTER points.
        """
        click = _check_xyz(xyz)
        radius = DEFAULT_RADIUS if radius is None else float(radius)
        max_height = DEFAULT_MAX_HEIGHT if max_height is None else float(max_height)
        if not radius > 0 or not max_height > 0:
            raise DataError("radius", f"radius and max_height must be > 0, got {radius}, {max_height}")
        near = np.asarray(self._tree.query_ball_point(click[:2], radius), dtype=np.int64)
        if len(near) == 0:
            return np.zeros(0, dtype=np.int64)
        idx = self._objects[near]
        idx = idx[self.height[idx] <= max_height]
        return _grow(self._xyz[idx, :2], self.height[idx], click[:2], radius, idx)

    def fit_box(self, indices: np.ndarray, prior_yaw: float | None = None) -> np.ndarray:
        """(7,) velodyne box [x, y, z, l, w, h, yaw] of the points `indices` (K >= 1): L-shape in bird's-eye view,
        bottom on the local ground, top at the highest point. No class prior (see one_click_box)."""
        idx = self._check_indices(indices)
        cx, cy, length, width, yaw = fit_box_l_shape(self._xyz[idx, :2], prior_yaw)
        return self._vertical(idx, np.array([cx, cy, 0.0, length, width, 0.0, yaw]))

    def _check_indices(self, indices: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or len(idx) == 0 or idx.dtype.kind not in "iu":
            raise DataError("indices", f"expected a non-empty 1-D integer array, got {idx.dtype} {idx.shape}")
        if idx.min() < 0 or idx.max() >= len(self._xyz):
            raise DataError("indices", f"index out of range 0..{len(self._xyz) - 1}")
        return idx

    def _vertical(self, idx: np.ndarray, box: np.ndarray, min_height: float = 0.0) -> np.ndarray:
        """`box` with z and h set: from the local ground under its centre to the top of the points `idx`."""
        ground = float(self._model.ground_z(box[None, :2])[0])
        top = max(float(self._xyz[idx, 2].max()), ground + max(min_height, 0.1))
        box = box.copy()
        box[5] = top - ground
        box[2] = 0.5 * (top + ground)
        return box


def _disk(radius_cells: float) -> np.ndarray:
    r = int(math.floor(radius_cells))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx * xx + yy * yy) <= radius_cells * radius_cells + 1e-9


_EPS_CELLS = EPS / BEV_CELL  # the grid scales with the neighbourhood, so the kernels are the same at every scale
_CORE_KERNEL = _disk(_EPS_CELLS).astype(np.float32)
_LINK = _disk(0.5 * _EPS_CELLS)


def _grow(xy: np.ndarray, height: np.ndarray, click: np.ndarray, radius: float, idx: np.ndarray,
          scale: float = 1.0) -> np.ndarray:
    """DBSCAN on a bird's-eye grid (module docstring, step 2) of the points `xy` (M, 2) around `click` -> the
    indices `idx` (M,) of the cluster holding the point nearest the click; empty when there is none.

    scale < 1 shrinks the neighbourhood (both radii and the grid cell) to split a cluster that is larger than
    its class allows (two cars parked bumper to bumper, a cyclist passing a car).
    """
    empty = np.zeros(0, dtype=np.int64)
    if len(xy) == 0:
        return empty
    seed = int(np.argmin(((xy - click) ** 2).sum(axis=1)))
    if float(np.hypot(*(xy[seed] - click))) > SEED_DISTANCE:
        return empty
    links = height >= CLUSTER_MIN_HEIGHT  # only points clearly above the ground decide what is connected
    if not links[seed]:
        # A click on the object's lowest points (a wheel, a foot): start from the nearest linking point.
        if not links.any():
            return empty
        d2 = ((xy - xy[seed]) ** 2).sum(axis=1)
        d2[~links] = np.inf
        seed = int(np.argmin(d2))
        if d2[seed] > SEED_DISTANCE ** 2:
            return empty
    # Anisotropic DBSCAN by warping: coordinates along the line of sight through the click are shrunk by
    # EPS / radial eps, so one isotropic grid links points up to the radial eps apart along the ray and EPS across.
    rng_click = float(np.hypot(*click))
    ray = click / rng_click if rng_click > 1e-6 else np.array([1.0, 0.0])
    shrink = EPS / min(max(EPS, RADIAL_EPS_PER_M * rng_click), MAX_RADIAL_EPS)
    d = xy - click
    warped = np.stack([(d[:, 0] * ray[0] + d[:, 1] * ray[1]) * shrink, d[:, 1] * ray[0] - d[:, 0] * ray[1]], axis=1)
    cell = BEV_CELL * scale
    # The grid spans the points (not the search circle), with a margin for the kernels.
    pad = int(math.ceil(_EPS_CELLS)) + 1
    corner = warped.min(axis=0) - pad * cell
    ij = np.floor((warped - corner) / cell).astype(np.int64)
    ni, nj = (ij.max(axis=0) + pad + 1).tolist()
    flat = ij[:, 0] * nj + ij[:, 1]
    counts = np.bincount(flat[links], minlength=ni * nj).reshape(ni, nj).astype(np.float32)
    density = ndimage.convolve(counts, _CORE_KERNEL, mode="constant", cval=0.0)
    core = (counts > 0) & (density >= max(2, math.ceil(MIN_POINTS * scale)))
    if not core.any():
        return empty
    labels, _ = ndimage.label(ndimage.binary_dilation(core, _LINK), structure=np.ones((3, 3), bool))
    labels[~core & (labels > 0)] = 0  # only cores carry labels; other cells take their nearest core's below
    dist, (ni, nj) = ndimage.distance_transform_edt(~core, return_indices=True)
    cell_label = np.where(dist <= _EPS_CELLS, labels[ni, nj], 0).reshape(-1)
    target = cell_label[flat[seed]]
    if target == 0:
        return empty
    member = cell_label[flat] == target  # low points (wheels, feet) join by their cell too
    if int(member.sum()) < MIN_CLUSTER:
        return empty
    return idx[member]


# ------------------------------------------------------------------------------------------------ L-shape
def _closeness(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Zhang et al. 2017 closeness score per heading: u, v (A, M) point coordinates along the two axes.

    The edges are the EDGE_QUANTILE / 1 - EDGE_QUANTILE quantiles rather than the extremes, so that a few
    stray points (a mirror, a leaf) do not move every distance at once and flip the heading.
    """
    m = u.shape[1]
    k = min(int(EDGE_QUANTILE * m), (m - 1) // 2)
    us, vs = np.partition(u, (k, m - 1 - k), axis=1), np.partition(v, (k, m - 1 - k), axis=1)
    du = np.minimum(us[:, m - 1 - k, None] - u, u - us[:, k, None])
    dv = np.minimum(vs[:, m - 1 - k, None] - v, v - vs[:, k, None])
    return (1.0 / np.maximum(np.minimum(du, dv), CLOSENESS_D0)).sum(axis=1)


def _project(xy: np.ndarray, angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    x, y = xy[None, :, 0], xy[None, :, 1]
    return x * c + y * s, -x * s + y * c


def _best_heading(xy: np.ndarray, lo: float, hi: float, quick: bool = False) -> float:
    """The heading in [lo, hi) (radians) of the best closeness score, 1 degree grid then 0.05 degree refinement
    (quick: a 3 degree grid only).

    The score is flat where every point lies within CLOSENESS_D0 of an edge: over +-1.7 degrees for one 1.7 m face
    seen alone, less for an L. Any heading there fits as well, and the first of them (what an argmax gives) is
    biased towards `lo` and moves with the grid when the points rotate; the middle of the flat top is neither."""
    step = 3 * COARSE_STEP if quick else COARSE_STEP
    coarse = np.arange(lo, hi, step)
    first, last = _top_run(_closeness(*_project(xy, coarse)), wraps=math.isclose(hi - lo, 0.5 * math.pi))
    if quick:
        return float(lo + 0.5 * (first + last) * step)
    fine = lo + np.arange(first * step - COARSE_STEP, last * step + COARSE_STEP + 0.5 * FINE_STEP, FINE_STEP)
    top_first, top_last = _top_run(_closeness(*_project(xy, fine)), wraps=False)
    return float(0.5 * (fine[top_first] + fine[top_last]))


def _top_run(scores: np.ndarray, wraps: bool) -> tuple[int, int]:
    """(first, last) index of the run of equal best scores that holds the argmax; with `wraps` (a search over a
    whole quarter turn, the period of a rectangle's axes) the run may continue past either end, and the indices then
    step outside [0, len) so that their mean is the run's middle."""
    best = int(np.argmax(scores))
    top = scores >= scores[best] * (1.0 - 1e-12)
    n = len(scores)
    first = last = best
    while first - 1 > best - n and (top[first - 1] if first - 1 >= 0 else wraps and top[first - 1 + n]):
        first -= 1
    while last + 1 < best + n and (top[last + 1] if last + 1 < n else wraps and top[last + 1 - n]):
        last += 1
    return first, last


def _dedupe(xy: np.ndarray) -> np.ndarray:
    """Points deduplicated on a FIT_CELL grid (one per occupied cell, the first)."""
    if len(xy) < 64:
        return xy
    key = np.floor(xy / FIT_CELL).astype(np.int64)
    _, first = np.unique(key[:, 0] * 1_000_003 + key[:, 1], return_index=True)
    return xy[first]


def _l_shape_axes(xy: np.ndarray, prior_yaw: float | None, quick: bool = False
                  ) -> tuple[float, np.ndarray, np.ndarray]:
    """Best heading theta (radians) and the points' [min, max] along e1 = (cos, sin) and e2 = (-sin, cos).

    quick: a coarse search on at most a fifth of MAX_FIT_POINTS points, for size checks."""
    centre = xy.mean(axis=0)
    local = _dedupe(xy - centre)
    cap = MAX_FIT_POINTS // 5 if quick else MAX_FIT_POINTS
    if len(local) > cap:  # a regular subsample bounds the search's cost on dense near objects
        local = local[:: int(math.ceil(len(local) / cap))]
    if len(local) < 3 or np.ptp(local, axis=0).max() < 1e-6:
        theta = 0.0 if prior_yaw is None else float(prior_yaw)
    elif prior_yaw is None:
        theta = _best_heading(local, 0.0, 0.5 * math.pi, quick)
    else:
        theta = _best_heading(local, float(prior_yaw) - PRIOR_SEARCH, float(prior_yaw) + PRIOR_SEARCH, quick)
    u, v = _project(xy, np.array([theta]))
    return theta, np.array([u.min(), u.max()]), np.array([v.min(), v.max()])


def _pick_heading(theta: float, length_on_e1: bool, prior_yaw: float | None) -> float:
    """The heading of the length axis: theta (length along e1) or theta + pi/2, the sign closest to prior_yaw."""
    yaw = theta if length_on_e1 else theta + 0.5 * math.pi
    if prior_yaw is not None and math.cos(yaw - prior_yaw) < 0:
        yaw += math.pi
    return _wrap(yaw)


def fit_box_l_shape(xy: np.ndarray, prior_yaw: float | None = None) -> tuple[float, float, float, float, float]:
    """Search-based rectangle fit (Zhang et al. IV 2017, closeness criterion) of bird's-eye points.

    xy: (M, 2) float, M >= 1. prior_yaw: when given, the heading is searched within PRIOR_SEARCH of it and the
    returned yaw is the rectangle direction nearest it (a rectangle's heading is known up to pi/2 and the sign).
    Returns (cx, cy, l, w, yaw): centre, length >= width when no prior (without a prior, yaw in [-pi/2, pi/2)),
    sizes 0 for a single point. DataError on an empty, non-finite or wrongly shaped array.
    """
    arr = np.asarray(xy, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0 or not np.isfinite(arr).all():
        raise DataError("xy", f"expected a non-empty finite (M, 2) array, got shape {arr.shape}")
    theta, ru, rv = _l_shape_axes(arr, prior_yaw)
    a, b = float(ru[1] - ru[0]), float(rv[1] - rv[0])
    cu, cv = 0.5 * (ru[0] + ru[1]), 0.5 * (rv[0] + rv[1])
    cx = cu * math.cos(theta) - cv * math.sin(theta)
    cy = cu * math.sin(theta) + cv * math.cos(theta)
    if prior_yaw is None:
        length_on_e1 = a >= b
        yaw = _wrap(theta if length_on_e1 else theta + 0.5 * math.pi)
        if yaw >= 0.5 * math.pi:
            yaw -= math.pi
        elif yaw < -0.5 * math.pi:
            yaw += math.pi
    else:
        # The axis nearer the prior heading is the length, whichever extent is longer (a partial view).
        length_on_e1 = abs(math.cos(theta - prior_yaw)) >= abs(math.sin(theta - prior_yaw))
        yaw = _pick_heading(theta, length_on_e1, prior_yaw)
    length, width = (a, b) if length_on_e1 else (b, a)
    return float(cx), float(cy), length, width, float(yaw)


# ------------------------------------------------------------------------------------------------ priors
def _complete_axis(lo: float, hi: float, size: float, sensor: float, keep: float | None,
                   inset: float = 0.0, hidden: tuple[bool, bool] = (False, False)) -> tuple[float, float]:
    """Extent [lo, hi] of the points along one box axis -> (centre, size) of the box along it.

    An extent of at least `keep` x `size` is taken as seen whole (keep None: the box keeps `size`, centred on
    the extent). A shorter one is a partial view: the box gets `size` and grows from the end it sees whole
    towards the one it does not. `hidden` says whether something nearer the sensor hides the view just past
    the lo / hi end; without that, the end nearer the sensor (at coordinate `sensor` on this axis) is the one
    seen, so the box grows away from the sensor; when the sensor is level with the extent (it sees the face
    along this axis, hiding neither end) it grows both ways.
    """
    seen = hi - lo
    if seen >= (1.0 if keep is None else keep) * size:
        return 0.5 * (lo + hi), (size if keep is None else seen)
    grow_up = sensor <= lo  # from lo towards hi
    grow_down = sensor >= hi
    if hidden[0] != hidden[1]:  # one end hidden by an occluder: the other end is the object's true end
        grow_up, grow_down = hidden[1], hidden[0]
    if grow_up:
        return lo - inset + 0.5 * size, size
    if grow_down:
        return hi + inset - 0.5 * size, size
    return 0.5 * (lo + hi), size


def _end_hidden(geom: FrameGeometry, end: np.ndarray, xy: np.ndarray) -> bool:
    """Whether the view just past one end of a cluster is blocked by something nearer the sensor.

    end: (E, 2) the cluster's points at that end; xy: (M, 2) all its points. Only an end at the cluster's
    angular edge (seen from the sensor) can be cut by an occluder; there the scan's nearest non-ground return
    in the OCCLUSION_SPAN past the edge is compared with the end's range.
    """
    if len(end) == 0:
        return False
    centre = float(np.arctan2(xy[:, 1].mean(), xy[:, 0].mean()))
    rel = (np.arctan2(xy[:, 1], xy[:, 0]) - centre + math.pi) % (2 * math.pi) - math.pi
    rel_end = (np.arctan2(end[:, 1], end[:, 0]) - centre + math.pi) % (2 * math.pi) - math.pi
    tol = math.radians(0.5)
    end_range = float(np.hypot(end[:, 0], end[:, 1]).min())
    at_max = abs(float(rel_end.max()) - float(rel.max())) <= tol
    at_min = abs(float(rel_end.min()) - float(rel.min())) <= tol
    if at_max == at_min:  # the end spans the cluster's whole angle (a face seen head-on) or neither edge
        return False
    for edge, side in ((rel.max(), 1.0), (rel.min(), -1.0)):
        if (at_max if side > 0 else at_min):
            start = centre + edge + side * 2 * OCCLUSION_BIN
            stop = centre + edge + side * OCCLUSION_SPAN
            if geom.nearest_return(min(start, stop), max(start, stop)) < end_range - 0.5:
                return True
    return False


def _assign_length(theta: float, ru: np.ndarray, rv: np.ndarray, centre: np.ndarray, length: float,
                   width: float) -> bool:
    """Whether the class's length lies along e1 = (cos theta, sin theta) (else along e2).

    Each assignment is scored by how well it explains the observed extents: an extent longer than the size it
    would be is impossible (log overshoot), and the face towards the sensor is seen whole, so the extent along
    the axis more across the line of sight should be its full size (log shortfall). A car seen from behind
    (1.6 m across, 0.4 m deep) is a rear face, not 1.6 m of a side.
    """
    ea, eb = max(ru[1] - ru[0], 1e-3), max(rv[1] - rv[0], 1e-3)
    ray = centre / max(float(np.linalg.norm(centre)), 1e-6)
    # |sin| of the angle between each axis and the line of sight: 1 when the axis runs across it.
    across_u = abs(ray[0] * math.sin(theta) - ray[1] * math.cos(theta))
    across_v = abs(ray[0] * math.cos(theta) + ray[1] * math.sin(theta))

    def cost(size_u: float, size_v: float) -> float:
        over = max(0.0, math.log(ea / size_u)) + max(0.0, math.log(eb / size_v))
        short = max(0.0, math.log(size_u / ea)) if across_u >= across_v else max(0.0, math.log(size_v / eb))
        return over + short

    return cost(length, width) <= cost(width, length)


def _prior_box(xy: np.ndarray, cls: str | None, prior_yaw: float | None,
               sizes: tuple[float, float] | None, keep: float | None,
               geom: FrameGeometry | None = None) -> np.ndarray:
    """Bird's-eye box [cx, cy, 0, l, w, 0, yaw] of points xy (M, 2), completed with the class's (or the given
    (l, w)) sizes along the axes seen partially; the plain L-shape fit when neither is given. With `geom`, an
    end of an axis whose view is hidden by something nearer (FrameGeometry.hidden_beyond) is grown towards."""
    if cls is None and sizes is None:
        cx, cy, length, width, yaw = fit_box_l_shape(xy, prior_yaw)
        return np.array([cx, cy, 0.0, length, width, 0.0, yaw])
    length, width = sizes if sizes is not None else CLASS_SIZES[cls][:2]
    theta, ru, rv = _l_shape_axes(xy, prior_yaw)
    e1 = np.array([math.cos(theta), math.sin(theta)])
    e2 = np.array([-math.sin(theta), math.cos(theta)])
    centre = 0.5 * (ru[0] + ru[1]) * e1 + 0.5 * (rv[0] + rv[1]) * e2
    hu = hv = (False, False)
    if geom is not None:
        # Only along the axis running across the line of sight are the box's ends the cluster's angular edges.
        ray = centre / max(float(np.linalg.norm(centre)), 1e-6)
        if abs(float(e1 @ ray)) < ACROSS_COS:
            u = xy @ e1
            hu = (_end_hidden(geom, xy[u <= ru[0] + END_BAND], xy), _end_hidden(geom, xy[u >= ru[1] - END_BAND], xy))
        if abs(float(e2 @ ray)) < ACROSS_COS:
            v = xy @ e2
            hv = (_end_hidden(geom, xy[v <= rv[0] + END_BAND], xy), _end_hidden(geom, xy[v >= rv[1] - END_BAND], xy))
    if prior_yaw is not None:
        length_on_e1 = abs(math.cos(theta - prior_yaw)) >= abs(math.sin(theta - prior_yaw))
    else:
        length_on_e1 = _assign_length(theta, ru, rv, centre, length, width)
    size_u, size_v = (length, width) if length_on_e1 else (width, length)
    # The sensor is the origin: its coordinate along each axis is 0.
    inset = FACE_INSET.get(cls, 0.0) if cls is not None else 0.0
    cu, su = _complete_axis(float(ru[0]), float(ru[1]), size_u, 0.0, keep, inset, hu)
    cv, sv = _complete_axis(float(rv[0]), float(rv[1]), size_v, 0.0, keep, inset, hv)
    c = cu * e1 + cv * e2
    out_l, out_w = (su, sv) if length_on_e1 else (sv, su)
    yaw = _pick_heading(theta, length_on_e1, prior_yaw)
    if prior_yaw is None:
        yaw = yaw - math.pi if yaw >= 0.5 * math.pi else (yaw + math.pi if yaw < -0.5 * math.pi else yaw)
    return np.array([c[0], c[1], 0.0, out_l, out_w, 0.0, yaw])


# ------------------------------------------------------------------------------------------------ entry points
def one_click_box(geom: FrameGeometry, click_xyz, cls: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The box of the object under a click.

    click_xyz: (3,) velodyne point (the picked point). cls: one of CLASS_SIZES (ANNOTATION_CLASSES) or None.
    With a class the search radius and height gate follow its size, and axes seen partially take its mean size
    (module docstring, step 4). Returns (box7 (7,) float64, cluster indices (K,) int64) or None when no object
    lies at the click (ground, or too few points).
    """
    _check_cls(cls)
    radius = DEFAULT_RADIUS if cls is None else _class_radius(cls)
    max_height = DEFAULT_MAX_HEIGHT if cls is None else _class_max_height(cls)
    click = _check_xyz(click_xyz)
    idx = geom.cluster_near(click, radius, max_height=max_height)
    if len(idx) < MIN_CLUSTER:
        return None
    if cls is not None:
        idx = _split_oversize(geom, idx, click, cls)
    # Misc holds anything (trailers, carts, bins): its mean size says nothing about one object's hidden side.
    prior_cls = None if cls == "Misc" else cls
    box = _prior_box(geom._xyz[idx, :2], prior_cls, None, None, KEEP_FRACTION, geom)
    return geom._vertical(idx, box), idx


def _oversize(xy: np.ndarray, cls: str) -> bool:
    """Whether the points' rectangle is clearly larger than any object of the class (a merged cluster)."""
    _, ru, rv = _l_shape_axes(xy, None)
    big, small = sorted((float(ru[1] - ru[0]), float(rv[1] - rv[0])), reverse=True)
    length, width = CLASS_SIZES[cls][:2]
    return big > OVERSIZE * length + 0.3 or small > OVERSIZE_WIDTH * max(width, 0.5 * length) + 0.15


def _long_lines(geom: FrameGeometry, xy: np.ndarray, longer_than: float, taller_than: float,
                rng: np.random.Generator) -> np.ndarray:
    """(M,) bool: points of straight bird's-eye structures (facades, fences, walls) among `xy` (M, 2), found by
    RANSAC line fits (LINE_HYPOTHESES pairs, LINE_INLIER metres), up to MAX_LINES of them. A structure is
    longer than `longer_than` and either unbroken (no gap over LINE_GAP) or, counting the scan's points on it
    above the height gate too, taller than `taller_than`. Two cars parked nose to tail make a long straight line
    too, but with a gap between them, and no taller than a car."""
    out = np.zeros(len(xy), dtype=bool)
    for _ in range(MAX_LINES):
        rest = np.flatnonzero(~out)
        if len(rest) < 10:
            break
        pts = xy[rest]
        pairs = pts[rng.integers(0, len(pts), size=(LINE_HYPOTHESES, 2))]
        direction = pairs[:, 1] - pairs[:, 0]
        norm = np.hypot(direction[:, 0], direction[:, 1])
        keep = norm > 0.05
        if not keep.any():
            break
        direction = direction[keep] / norm[keep, None]
        normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
        offset = np.einsum("hk,hk->h", normal, pairs[keep, 0])
        dist = np.abs(pts[:, 0:1] * normal[:, 0] + pts[:, 1:2] * normal[:, 1] - offset)  # (P, H)
        best = int(np.argmax((dist < LINE_INLIER).sum(axis=0)))
        inl = dist[:, best] < LINE_INLIER
        along = pts[inl] @ direction[best]
        lo, hi = np.percentile(along, 2), np.percentile(along, 98)
        if len(along) < 10 or hi - lo <= longer_than:
            break
        mid = 0.5 * (lo + hi) * direction[best] + offset[best] * normal[best]
        on = geom._objects[np.asarray(geom._tree.query_ball_point(mid, 0.5 * (hi - lo)), dtype=np.int64)]
        on = on[np.abs(geom._xyz[on, :2] @ normal[best] - offset[best]) < LINE_INLIER]
        gap = float(np.diff(np.sort(along)).max())
        if gap > LINE_GAP and (len(on) == 0 or float(geom.height[on].max()) <= taller_than):
            break
        out[rest[inl]] = True
    return out


def _split_oversize(geom: FrameGeometry, idx: np.ndarray, click: np.ndarray, cls: str) -> np.ndarray:
    """A cluster larger than its class allows, split: first without the long straight structures in it (a
    pedestrian a few centimetres from a facade), then re-clustered with ever smaller neighbourhoods (single-
    linkage style: the coarsest split that fits wins) until the part holding the click fits."""
    xy = geom._xyz[idx, :2]
    if not _oversize(xy, cls):
        return idx
    # The object holding the click lies within its diagonal of the click.
    length, width = CLASS_SIZES[cls][:2]
    near = ((xy - click[:2]) ** 2).sum(axis=1) <= (OVERSIZE * math.hypot(length, width) + 0.3) ** 2
    idx, xy = idx[near], xy[near]
    if len(idx) < MIN_CLUSTER:
        return idx
    reach = float(np.sqrt(((xy - click[:2]) ** 2).sum(axis=1).max())) + 1.0
    walls = _long_lines(geom, xy, max(1.5, OVERSIZE * CLASS_SIZES[cls][0] + 0.3), _class_max_height(cls),
                        np.random.default_rng(0))
    if walls.any():
        part = _grow(xy[~walls], geom.height[idx[~walls]], click[:2], reach, idx[~walls])
        if len(part) >= MIN_CLUSTER:
            idx = part
            if not _oversize(geom._xyz[idx, :2], cls):
                return idx
    for scale in SPLIT_SCALES:
        if (2.0 * reach / (BEV_CELL * scale)) ** 2 > MAX_GRID_CELLS:
            break  # finer than this costs more than a click may (a long class's cluster over a wide area)
        part = _grow(geom._xyz[idx, :2], geom.height[idx], click[:2], reach, idx, scale)
        if len(part) < MIN_CLUSTER:
            break
        idx = part
        if not _oversize(geom._xyz[idx, :2], cls):
            return idx
    # Too sparse to re-cluster finer (a far car joined along the line of sight to a post behind it): cut the
    # cluster at its gaps along each axis that is too long, keeping the run around the click that fits.
    xy = geom._xyz[idx, :2]
    theta, ru, rv = _l_shape_axes(xy, None)
    length, width = CLASS_SIZES[cls][:2]
    long_on_e1 = ru[1] - ru[0] >= rv[1] - rv[0]
    keep = np.ones(len(idx), dtype=bool)
    for axis, along in ((np.array([math.cos(theta), math.sin(theta)]), long_on_e1),
                        (np.array([-math.sin(theta), math.cos(theta)]), not long_on_e1)):
        allowed = OVERSIZE * length + 0.3 if along else OVERSIZE_WIDTH * max(width, 0.5 * length) + 0.15
        keep &= _run_around(xy @ axis, float(click[:2] @ axis), allowed)
    return idx[keep] if int(keep.sum()) >= MIN_CLUSTER else idx


def _run_around(t: np.ndarray, at: float, allowed: float) -> np.ndarray:
    """(M,) bool: the points of `t` (M,) coordinates along an axis in the run around `at` left when the
    points are split top-down at their widest gap (single linkage), keeping the side of `at`, until the run
    is no longer than `allowed` or no gap is wider than SPLIT_GAP."""
    order = np.sort(t)
    gaps = np.diff(order)
    lo, hi = 0, len(order) - 1
    while order[hi] - order[lo] > allowed and hi > lo:
        j = lo + int(np.argmax(gaps[lo:hi]))  # the widest gap, between order[j] and order[j + 1]
        if gaps[j] <= SPLIT_GAP:
            break
        if at <= 0.5 * (order[j] + order[j + 1]):
            hi = j
        else:
            lo = j + 1
    return (t >= order[lo]) & (t <= order[hi])


def refit_near(geom: FrameGeometry, predicted_box7: np.ndarray, cls: str | None = None) -> np.ndarray | None:
    """Tracking's re-fit of a predicted box (7,) to the points of the next frame; None when none are there.

    The non-ground points inside the predicted footprint enlarged by 1 m on every side (and below the class
    height gate) are clustered; the cluster nearest the predicted centre is fitted with the heading searched
    within PRIOR_SEARCH of the predicted yaw, and the predicted length and width kept along axes the sensor
    sees only partly (occlusion, one face visible). The height comes from the points when they reach higher
    than 60% of the predicted height, else it is kept.
    """
    _check_cls(cls)
    pred = _check_box7(predicted_box7, "predicted_box7")
    margin = 1.0
    reach = 0.5 * math.hypot(pred[3], pred[4]) + margin
    near = np.asarray(geom._tree.query_ball_point(pred[:2], reach), dtype=np.int64)
    if len(near) == 0:
        return None
    idx = geom._objects[near]
    max_height = max(pred[5] + 0.5, 1.35 * pred[5]) if cls is None else max(_class_max_height(cls), pred[5] + 0.5)
    idx = idx[geom.height[idx] <= max_height]
    c, s = math.cos(pred[6]), math.sin(pred[6])
    d = geom._xyz[idx, :2] - pred[:2]
    u, v = d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c
    idx = idx[(np.abs(u) <= 0.5 * pred[3] + margin) & (np.abs(v) <= 0.5 * pred[4] + margin)]
    if len(idx) < MIN_CLUSTER:
        return None
    # Cluster from the footprint point nearest the predicted centre (it is the object the prediction follows).
    lifted = idx[geom.height[idx] >= CLUSTER_MIN_HEIGHT]
    if len(lifted) == 0:
        return None
    start = lifted[int(np.argmin(((geom._xyz[lifted, :2] - pred[:2]) ** 2).sum(axis=1)))]
    members = _grow(geom._xyz[idx, :2], geom.height[idx], geom._xyz[start, :2], reach, idx)
    if len(members) < MIN_CLUSTER:
        return None
    box = _prior_box(geom._xyz[members, :2], cls, float(pred[6]), (float(pred[3]), float(pred[4])), None, geom)
    box = geom._vertical(members, box)
    if box[5] < 0.6 * pred[5]:
        box[2] += 0.5 * (pred[5] - box[5])
        box[5] = pred[5]
    return box
