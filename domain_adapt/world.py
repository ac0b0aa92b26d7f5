"""Seeded procedural street scenes as triangle meshes: the simulated world behind `squeeze sim`.

A *world* is a street (straight, gently curved, or with a crossing street) lined with sidewalks and curbs,
building facades with recessed windows, street trees, bushes, lamps and signs, parked and moving cars and
vans, pedestrians and cyclists. It is drawn from a numpy Generator and then frozen; `World.scene_at(t)`
poses the moving actors at time t (seconds) and returns the triangle soup of everything near the ego
vehicle in the ego's *velodyne frame* (x forward, y left, z up, origin at the LiDAR, 1.73 m above the road:
KITTI paper, Geiger et al. IJRR 2013, Fig. 3). Sensors (`lidar.py`, `camera.py`) ray-cast that soup.

Frames used here:
- road frame (s, d): s arc length along the main road's centre line, d lateral offset (left positive);
- world frame: x, y on the ground (z = 0 is the road surface), z up; the road starts at the origin along +x;
- velodyne frame of a frame: world moved by the inverse of the ego pose `Scene.world_from_velo`.

Every triangle carries a material (LiDAR reflectance + camera colour), a class id (CLASS_IDS) and an
instance id (0 for "stuff", 1.. for Car/Van/Pedestrian/Cyclist, stable over a sequence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from squeeze.point_labels import POINT_CLASS_IDS

# --------------------------------------------------------------------------------------------- class table
# Point-label classes written to velodyne/*.label: the suite's one table (squeeze.point_labels).
CLASS_IDS = POINT_CLASS_IDS
CLASS_NAMES: dict[int, str] = {v: k for k, v in CLASS_IDS.items()}
THING_CLASSES = ("Car", "Van", "Pedestrian", "Cyclist")  # the classes with instances and KITTI labels


# ----------------------------------------------------------------------------------------------- materials
@dataclass(frozen=True)
class Material:
    """Surface properties shared by the LiDAR and the camera."""

    name: str
    reflectance: float  # LiDAR reflectivity at 905 nm, 0..1 (KITTI intensity of a head-on near return)
    color: tuple[float, float, float]  # linear RGB albedo (objects vary it per instance where they are built)
    drop: float = 0.0  # extra ray-drop probability (specular glass returns nothing)
    range_sigma: float = 0.0  # extra range noise in metres (foliage scatters returns in depth)
    texture: float = 0.05  # amplitude of the camera's procedural value noise


MATERIALS: tuple[Material, ...] = (
    Material("asphalt", 0.36, (0.085, 0.085, 0.09), texture=0.25),
    Material("marking", 0.75, (0.70, 0.70, 0.66), texture=0.10),  # retroreflective paint
    Material("concrete", 0.40, (0.30, 0.29, 0.27), texture=0.15),
    Material("curb", 0.42, (0.42, 0.42, 0.40), texture=0.10),
    Material("grass", 0.45, (0.09, 0.16, 0.04), texture=0.35),  # plants are bright in near-IR
    Material("facade", 0.38, (0.45, 0.40, 0.33), texture=0.06),
    Material("glass", 0.06, (0.03, 0.04, 0.05), drop=0.4, texture=0.0),
    Material("roof", 0.25, (0.20, 0.08, 0.06), texture=0.10),
    Material("bark", 0.35, (0.10, 0.07, 0.045), texture=0.20),
    Material("foliage", 0.42, (0.05, 0.12, 0.03), drop=0.10, range_sigma=0.05, texture=0.40),
    Material("metal", 0.40, (0.25, 0.25, 0.26), texture=0.03),
    Material("sign", 0.95, (0.60, 0.08, 0.06), texture=0.0),  # retroreflective sheeting
    Material("paint", 0.25, (0.40, 0.40, 0.40), texture=0.0),  # per-car colour from CAR_COLORS
    Material("car_glass", 0.05, (0.025, 0.03, 0.035), drop=0.3, texture=0.0),
    Material("tyre", 0.04, (0.02, 0.02, 0.02), texture=0.05),
    Material("plate", 0.95, (0.75, 0.75, 0.70), texture=0.0),  # licence plates: retroreflective
    Material("cloth", 0.28, (0.20, 0.20, 0.20), texture=0.08),  # per-person colour
    Material("skin", 0.40, (0.55, 0.38, 0.28), texture=0.02),
    Material("ego", 0.0, (0.05, 0.05, 0.05), drop=1.0, texture=0.0),  # the LiDAR's own car
)
MATERIAL_IDS: dict[str, int] = {m.name: i for i, m in enumerate(MATERIALS)}

# Typical car paints (linear RGB): white, silver, grey, black, dark blue, red, dark green, beige.
CAR_COLORS = np.array([
    (0.72, 0.72, 0.70), (0.45, 0.46, 0.47), (0.16, 0.16, 0.17), (0.025, 0.025, 0.03),
    (0.03, 0.05, 0.14), (0.40, 0.03, 0.03), (0.04, 0.10, 0.05), (0.42, 0.36, 0.26)])
CAR_COLOR_P = np.array([0.22, 0.20, 0.16, 0.16, 0.09, 0.08, 0.04, 0.05])
FACADE_COLORS = np.array([
    (0.55, 0.50, 0.42), (0.60, 0.58, 0.55), (0.45, 0.25, 0.18), (0.58, 0.48, 0.32), (0.35, 0.35, 0.36),
    (0.62, 0.60, 0.50), (0.40, 0.30, 0.25)])
SIGN_COLORS = np.array([(0.60, 0.06, 0.05), (0.05, 0.15, 0.55), (0.75, 0.60, 0.05), (0.75, 0.75, 0.75)])


# ------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the street generator. Object sizes are KITTI's label statistics (mean, std) in metres."""

    car_hwl: tuple[tuple[float, float], ...] = ((1.52, 0.14), (1.63, 0.10), (3.88, 0.43))  # KITTI Car h, w, l
    van_hwl: tuple[tuple[float, float], ...] = ((2.20, 0.15), (1.90, 0.08), (5.00, 0.40))  # KITTI Van
    pedestrian_hwl: tuple[tuple[float, float], ...] = ((1.76, 0.11), (0.66, 0.08), (0.84, 0.12))  # KITTI Ped.
    cyclist_hwl: tuple[tuple[float, float], ...] = ((1.74, 0.08), (0.60, 0.05), (1.76, 0.08))  # KITTI Cyclist
    van_fraction: float = 0.12  # share of vans among vehicles (KITTI: ~2.9k vans vs ~28.7k cars, plus trucks)
    parked_fill: float = 0.55  # probability that a parking slot along the curb is taken
    moving_car_spacing: tuple[float, float] = (25.0, 70.0)  # mean gap between moving cars in a lane, m
    pedestrian_spacing: tuple[float, float] = (15.0, 45.0)  # mean gap between pedestrians per sidewalk, m
    cyclist_spacing: tuple[float, float] = (50.0, 140.0)  # mean gap between cyclists per direction, m
    ego_speed: tuple[float, float] = (6.0, 11.0)  # ego speed in sequences, m/s (KITTI city drives)
    margin: float = 130.0  # the world extends this far beyond the ego's path (> LiDAR max range 120 m)
    cull_distance: float = 135.0  # scene_at keeps only geometry within this distance of the ego, m


def kitti_world() -> WorldConfig:
    """The default: KITTI-like city and residential streets."""
    return WorldConfig()


# ------------------------------------------------------------------------------------------------- meshes
@dataclass
class MeshData:
    """A triangle soup with per-triangle attributes. V vertices, T triangles (either may be 0).

    vertices:    (V, 3) float32 metres
    triangles:   (T, 3) int32 indices into vertices
    material:    (T,) uint8 index into MATERIALS
    cls:         (T,) uint8 class id (CLASS_IDS)
    instance:    (T,) uint16 instance id, 0 for stuff
    reflectance: (T,) float32 LiDAR reflectivity with the instance's variation applied
    color:       (T, 3) float32 linear RGB albedo with the instance's variation applied
    """

    vertices: np.ndarray
    triangles: np.ndarray
    material: np.ndarray
    cls: np.ndarray
    instance: np.ndarray
    reflectance: np.ndarray
    color: np.ndarray

    @staticmethod
    def empty() -> MeshData:
        return MeshData(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), np.zeros(0, np.uint8),
                        np.zeros(0, np.uint8), np.zeros(0, np.uint16), np.zeros(0, np.float32),
                        np.zeros((0, 3), np.float32))

    def __len__(self) -> int:
        return len(self.triangles)

    @staticmethod
    def concatenate(parts: list[MeshData]) -> MeshData:
        parts = [p for p in parts if len(p)]
        if not parts:
            return MeshData.empty()
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
        return MeshData(
            vertices=np.concatenate([p.vertices for p in parts]).astype(np.float32, copy=False),
            triangles=np.concatenate([p.triangles + o for p, o in zip(parts, offsets, strict=True)]).astype(
                np.int32),
            material=np.concatenate([p.material for p in parts]),
            cls=np.concatenate([p.cls for p in parts]),
            instance=np.concatenate([p.instance for p in parts]),
            reflectance=np.concatenate([p.reflectance for p in parts]),
            color=np.concatenate([p.color for p in parts]))

    def transformed(self, rotation: np.ndarray, translation: np.ndarray) -> MeshData:
        """A copy with vertices mapped by p -> rotation (3, 3) @ p + translation (3,)."""
        v = self.vertices.astype(np.float64) @ np.asarray(rotation).T + np.asarray(translation)
        return MeshData(v.astype(np.float32), self.triangles, self.material, self.cls, self.instance,
                        self.reflectance, self.color)


class _Parts:
    """Collects mesh parts of one object (or one chunk of stuff) and concatenates them once.

    Attributes are stored per part (a scalar, or a per-triangle array when given) and expanded in
    `build`, because a non-sequence frame builds a whole new world and per-part numpy calls add up.
    """

    def __init__(self) -> None:
        self.v: list[np.ndarray] = []
        self.t: list[np.ndarray] = []
        self.nt: list[int] = []
        self.mat: list[int] = []
        self.cls: list[int] = []
        self.inst: list[int] = []
        self.refl: list[float] = []
        self.col: list[np.ndarray | tuple] = []
        # Parts given a per-triangle material array: (part index, materials, colour, reflectance).
        self.arrays: list[tuple[int, np.ndarray, np.ndarray | None, float | None]] = []
        self.n = 0

    def add(self, v: np.ndarray, t: np.ndarray, material: str | np.ndarray, cls: str, instance: int = 0,
            color: np.ndarray | tuple | None = None, reflectance: float | None = None) -> None:
        """Add vertices v (V, 3) and triangles t (T, 3); material is a name or a (T,) array of material ids.

        color (3,) / reflectance override the material's defaults (the caller applies instance variation);
        with a material array they apply to its tintable triangles only (paint, cloth, facade, ...).
        """
        if isinstance(material, str):
            mid = MATERIAL_IDS[material]
            m = MATERIALS[mid]
            self.mat.append(mid)
            self.refl.append(m.reflectance if reflectance is None else reflectance)
            self.col.append(m.color if color is None else color)
        else:
            self.arrays.append((len(self.nt), np.asarray(material, np.uint8), color, reflectance))
            self.mat.append(0)
            self.refl.append(0.0)
            self.col.append((0.0, 0.0, 0.0))
        self.v.append(v)
        self.t.append(t + self.n)
        self.nt.append(len(t))
        self.cls.append(CLASS_IDS[cls])
        self.inst.append(instance)
        self.n += len(v)

    def build(self) -> MeshData:
        if not self.t:
            return MeshData.empty()
        counts = np.asarray(self.nt)
        mat = np.repeat(np.asarray(self.mat, np.uint8), counts)
        refl = np.repeat(np.asarray(self.refl, np.float32), counts)
        col = np.repeat(np.asarray(self.col, np.float32).reshape(-1, 3), counts, axis=0)
        if self.arrays:
            offsets = np.concatenate([[0], np.cumsum(counts)])
            for part, m, c, r in self.arrays:
                sl = slice(offsets[part], offsets[part + 1])
                mat[sl] = m
                refl[sl] = _MAT_REFL[m]
                col[sl] = _MAT_COLOR[m]
                tint = _TINT_LUT[m]
                if c is not None:
                    col[sl][tint] = c
                if r is not None:
                    refl[sl][tint] = r
        return MeshData(np.concatenate(self.v).astype(np.float32), np.concatenate(self.t).astype(np.int32),
                        mat, np.repeat(np.asarray(self.cls, np.uint8), counts),
                        np.repeat(np.asarray(self.inst, np.uint16), counts), refl, col)


_MAT_REFL = np.array([m.reflectance for m in MATERIALS], np.float32)
_MAT_COLOR = np.array([m.color for m in MATERIALS], np.float32)
# Materials whose colour / reflectance an object's own tint replaces (car paint, clothing, facade, sign).
_TINTABLE = np.array([MATERIAL_IDS[n] for n in ("paint", "cloth", "facade", "sign", "foliage")], np.uint8)
_TINT_LUT = np.isin(np.arange(256), _TINTABLE)  # material id -> tintable


# --------------------------------------------------------------------------------------------- primitives
# Box corners as bits (x, y, z) of the index; faces listed counter-clockwise seen from outside.
_BOX_BITS = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], np.float64)
_BOX_TRIS = np.array([[0, 2, 3], [0, 3, 1],  # z- (bottom)
                      [4, 5, 7], [4, 7, 6],  # z+ (top)
                      [0, 1, 5], [0, 5, 4],  # y-
                      [2, 6, 7], [2, 7, 3],  # y+
                      [0, 4, 6], [0, 6, 2],  # x-
                      [1, 3, 7], [1, 7, 5]], np.int32)  # x+


def box_mesh(lo: np.ndarray | tuple, hi: np.ndarray | tuple,
             skip: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box from corner lo (3,) to hi (3,) -> (8, 3) vertices, (12 - 2 len(skip), 3) triangles.

    skip lists faces to leave out (0 z-, 1 z+, 2 y-, 3 y+, 4 x-, 5 x+), e.g. a face flush with another part.
    """
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    v = lo + _BOX_BITS * (hi - lo)
    return v, (_box_tris_without(tuple(skip)) if skip else _BOX_TRIS)


@lru_cache(maxsize=16)
def _box_tris_without(skip: tuple[int, ...]) -> np.ndarray:
    return np.delete(_BOX_TRIS.reshape(6, 2, 3), list(skip), axis=0).reshape(-1, 3)


def beam_mesh(p0: np.ndarray, p1: np.ndarray, thickness: float, width: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """A square-section bar from p0 (3,) to p1 (3,) (limbs, bicycle tubes): (8, 3) vertices, (12, 3)
    triangles."""
    p0 = np.asarray(p0, np.float64)
    p1 = np.asarray(p1, np.float64)
    axis = p1 - p0
    length = float(np.linalg.norm(axis)) or 1e-6
    a = axis / length
    ref = np.array([0.0, 0.0, 1.0]) if abs(a[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    b = np.cross(a, ref)
    b /= np.linalg.norm(b)
    c = np.cross(a, b)
    w = thickness if width is None else width
    local = (_BOX_BITS - [0.0, 0.5, 0.5]) * [length, w, thickness]
    v = p0 + local[:, :1] * a + local[:, 1:2] * b + local[:, 2:3] * c
    return v, _BOX_TRIS


def extrude_mesh(profile: np.ndarray, y0: float, y1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Extrude a convex (K, 2) polygon in the (x, z) plane, counter-clockwise seen from -y, along y.

    Returns vertices (2K, 3), triangles (2K + 2(K - 2), 3) and edge_of_triangle (T,) int: the profile edge
    k (from vertex k to k + 1) that a side triangle belongs to, -1 for the two caps. This is how car bodies
    get a slanted windshield: the profile is the car's side view.
    """
    p = np.asarray(profile, np.float64)
    k = len(p)
    v = np.empty((2 * k, 3))
    v[:k, 0] = p[:, 0]
    v[:k, 1] = y0
    v[:k, 2] = p[:, 1]
    v[k:] = v[:k]
    v[k:, 1] = y1
    i = np.arange(k)
    j = (i + 1) % k
    sides = np.concatenate([np.stack([i, k + j, j], 1), np.stack([i, k + i, k + j], 1)])
    fan = np.arange(1, k - 1)
    cap0 = np.stack([np.zeros(k - 2, int), fan, fan + 1], 1)
    cap1 = np.stack([np.full(k - 2, k), k + fan + 1, k + fan], 1)
    t = np.concatenate([sides, cap0, cap1]).astype(np.int32)
    edge = np.concatenate([i, i, np.full(2 * (k - 2), -1)])
    return v, t, edge


@lru_cache(maxsize=16)
def _circle(n: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.arange(n) * (2 * np.pi / n)
    return np.cos(a), np.sin(a)


@lru_cache(maxsize=16)
def _unit_cylinder(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Closed n-gon prism of radius 1 from z = 0 to 1; cylinder_mesh scales it."""
    c, s = _circle(n)
    v = np.empty((2 * n + 2, 3))
    v[:n, 0] = v[n:2 * n, 0] = c
    v[:n, 1] = v[n:2 * n, 1] = s
    v[:n, 2] = 0.0
    v[n:2 * n, 2] = 1.0
    v[2 * n] = (0, 0, 0)
    v[2 * n + 1] = (0, 0, 1)
    i = np.arange(n)
    j = (i + 1) % n
    t = np.concatenate([np.stack([i, j, n + j], 1), np.stack([i, n + j, n + i], 1),
                        np.stack([np.full(n, 2 * n), j, i], 1),
                        np.stack([np.full(n, 2 * n + 1), n + i, n + j], 1)])
    return v, t.astype(np.int32)


def cylinder_mesh(radius: float, z0: float, z1: float, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Closed vertical n-gon prism of the given radius from z0 to z1 about the z axis."""
    v, t = _unit_cylinder(n)
    return v * (radius, radius, z1 - z0) + (0.0, 0.0, z0), t


def wheel_mesh(radius: float, width: float, n: int = 10, hub: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A wheel about the y axis centred at the origin: a closed n-gon disc (car) or an open tyre ring
    (bicycle, hub=False: outer and inner band plus the two annulus sides, rim 4 cm deep)."""
    c, s = _circle(n)
    hw = width / 2
    if hub:
        v = np.empty((2 * n + 2, 3))
        v[:n] = np.stack([radius * c, np.full(n, -hw), radius * s], 1)
        v[n:2 * n] = np.stack([radius * c, np.full(n, hw), radius * s], 1)
        v[2 * n] = (0, -hw, 0)
        v[2 * n + 1] = (0, hw, 0)
        i = np.arange(n)
        j = (i + 1) % n
        t = np.concatenate([np.stack([i, n + j, j], 1), np.stack([i, n + i, n + j], 1),
                            np.stack([np.full(n, 2 * n), i, j], 1),
                            np.stack([np.full(n, 2 * n + 1), n + j, n + i], 1)])
        return v, t.astype(np.int32)
    r_in = radius - 0.04
    v = np.concatenate([np.stack([radius * c, np.full(n, y), radius * s], 1) for y in (-hw, hw)]
                       + [np.stack([r_in * c, np.full(n, y), r_in * s], 1) for y in (-hw, hw)])
    i = np.arange(n)
    j = (i + 1) % n
    quads = [(i, j, n + j, n + i), (2 * n + i, 3 * n + i, 3 * n + j, 2 * n + j),  # outer, inner band
             (i, 2 * n + i, 2 * n + j, j), (n + i, n + j, 3 * n + j, 3 * n + i)]  # the two sides
    t = np.concatenate([np.concatenate([np.stack([a, b, c_], 1), np.stack([a, c_, d], 1)])
                        for a, b, c_, d in quads])
    return v, t.astype(np.int32)


@lru_cache(maxsize=4)
def _uv_sphere(n_lat: int, n_lon: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit sphere: two poles plus n_lat - 1 rings of n_lon vertices; outward-facing triangles."""
    lat = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    lon = np.arange(n_lon) * (2 * np.pi / n_lon)
    ring = np.stack([np.outer(np.sin(lat), np.cos(lon)), np.outer(np.sin(lat), np.sin(lon)),
                     np.repeat(np.cos(lat)[:, None], n_lon, 1)], -1).reshape(-1, 3)
    v = np.concatenate([[[0, 0, 1.0]], ring, [[0, 0, -1.0]]])
    tris = []
    i = np.arange(n_lon)
    j = (i + 1) % n_lon
    tris.append(np.stack([np.zeros(n_lon, int), 1 + i, 1 + j], 1))
    for r in range(n_lat - 2):
        a, b = 1 + r * n_lon, 1 + (r + 1) * n_lon
        tris.append(np.stack([a + i, b + i, b + j], 1))
        tris.append(np.stack([a + i, b + j, a + j], 1))
    last = 1 + (n_lat - 2) * n_lon
    tris.append(np.stack([last + i, np.full(n_lon, len(v) - 1), last + j], 1))
    return v, np.concatenate(tris).astype(np.int32)


def blob_mesh(rng: np.random.Generator, radii: np.ndarray | tuple, lumps: float = 0.25,
              n_lat: int = 6, n_lon: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """A lumpy ellipsoid (tree crown, bush) centred at the origin with semi-axes radii (3,).

    The lumps are a few random Gaussian bumps on the unit sphere plus per-vertex jitter, so no two crowns
    look alike to the LiDAR.
    """
    v, t = _uv_sphere(n_lat, n_lon)
    centres = rng.normal(size=(4, 3))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    amp = rng.uniform(-lumps, lumps, 4)
    d2 = ((v[:, None, :] - centres[None]) ** 2).sum(-1)
    r = 1.0 + (amp * np.exp(-d2 / 0.35)).sum(1) + rng.uniform(-0.08, 0.08, len(v))
    return v * r[:, None] * np.asarray(radii), t


def rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _truncated_normal(rng: np.random.Generator, mean_std: tuple[float, float], k: float = 2.5) -> float:
    mean, std = mean_std
    return float(mean + std * min(k, max(-k, rng.standard_normal())))


def _tint(rng: np.random.Generator, base: np.ndarray | tuple, spread: float) -> np.ndarray:
    """A colour varied around `base`: a common brightness factor and a smaller per-channel one (hue)."""
    gain = rng.lognormal(0.0, spread) * (1 + rng.normal(0, spread / 3, 3))
    return np.clip(np.asarray(base, np.float64) * gain, 0.005, 0.95)


# ---------------------------------------------------------------------------------------------- road layout
@dataclass(frozen=True)
class RoadLayout:
    """The main street in road coordinates (s along the centre line, d to the left)."""

    curvature: float  # 1/m, constant; 0 for a straight road (positive turns left)
    lanes: int  # lanes per direction; right-hand traffic: d < 0 drives towards +s
    lane_width: float  # m (German urban roads: 3.25-3.75)
    parking: tuple[bool, bool]  # a parking strip along the (right, left) curb
    parking_width: float  # m
    sidewalk: tuple[float, float]  # sidewalk widths (right, left), m
    curb: float  # curb height, m (typ. 0.10-0.16)
    s_min: float
    s_max: float
    crossing: float | None  # s of a perpendicular street's centre line, or None
    cross_half: float  # half width of the crossing street, m
    crosswalk: float | None  # s of the crosswalk's centre, or None
    closed_ends: tuple[str, str]  # what closes the street at (s_min, s_max): "open", "buildings", "trees"

    def edge(self, side: int) -> float:
        """|d| of the curb on a side (0 right, 1 left)."""
        return self.lanes * self.lane_width + (self.parking_width if self.parking[side] else 0.0)

    def to_world(self, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Road (s, d) -> world (x, y) along a circular arc (exact arc length), any matching shapes."""
        s = np.asarray(s, np.float64)
        d = np.asarray(d, np.float64)
        k = self.curvature
        if k == 0.0:
            return s, d.copy() if isinstance(d, np.ndarray) else d
        th = k * s
        return np.sin(th) / k - d * np.sin(th), (1 - np.cos(th)) / k + d * np.cos(th)

    def heading(self, s: np.ndarray | float) -> np.ndarray | float:
        return self.curvature * np.asarray(s, np.float64)

    def in_crossing(self, s: np.ndarray | float, pad: float = 0.0) -> np.ndarray | bool:
        if self.crossing is None:
            return np.zeros_like(np.asarray(s), bool) if np.ndim(s) else False
        return np.abs(np.asarray(s) - self.crossing) < self.cross_half + pad


def _sample_layout(rng: np.random.Generator, margin: float, ego_span: float) -> RoadLayout:
    """Draw the street. It reaches `margin` metres beyond the ego's path [0, ego_span] unless an end is
    closed (a T-junction's facades or a tree line 60-125 m away): real streets rarely run empty to the
    LiDAR's 120 m, and without such ends the upper rings looking along the road return far too little."""
    ends = []
    for _ in range(2):
        kind = str(rng.choice(["open", "buildings", "trees"], p=[0.3, 0.5, 0.2]))
        ends.append((kind, margin if kind == "open" else float(rng.uniform(60, min(125, margin)))))
    s_min, s_max = -ends[0][1], ego_span + ends[1][1]
    style = rng.choice(["straight", "curve", "crossing"], p=[0.4, 0.3, 0.3])
    curvature = 0.0
    if style == "curve":
        # Gentle: turn at most ~1 rad over the whole world so long sequences do not loop.
        k_max = min(1 / 350, 1.0 / max(s_max - s_min, 1.0))
        curvature = float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.0) * k_max)
    lanes = int(rng.choice([1, 2], p=[0.7, 0.3]))
    crossing = None
    if style == "crossing":
        # Ahead or behind the ego's start, within the LiDAR's view.
        crossing = float(rng.choice([-1, 1]) * rng.uniform(18, 50) + (ego_span if rng.random() < 0.5 else 0))
    crosswalk = None
    cross_half = float(rng.uniform(3.2, 4.5))
    if crossing is not None:
        crosswalk = crossing + float(rng.choice([-1, 1])) * (cross_half + 3.5)
    elif rng.random() < 0.3:
        crosswalk = float(rng.uniform(12, 45) * rng.choice([-1, 1]))
    return RoadLayout(
        curvature=curvature, lanes=lanes, lane_width=float(rng.uniform(3.3, 3.75)),
        parking=(bool(rng.random() < 0.8), bool(rng.random() < 0.65)),
        parking_width=float(rng.uniform(2.1, 2.4)),
        sidewalk=(float(rng.uniform(2.2, 4.5)), float(rng.uniform(2.2, 4.5))),
        curb=float(rng.uniform(0.11, 0.16)),
        s_min=s_min, s_max=s_max, crossing=crossing, cross_half=cross_half, crosswalk=crosswalk,
        closed_ends=(ends[0][0], ends[1][0]))


# ------------------------------------------------------------------------------------------------- actors
@dataclass
class Actor:
    """A thing (Car, Van, Pedestrian, Cyclist) with a simple motion model in road coordinates.

    path "along": s(t) = s0 + direction * speed * t at fixed d; "across": d(t) = d0 + direction * speed * t,
    clamped to d_stop (a pedestrian crossing the street stops on the far sidewalk), at fixed s.
    The local mesh has its origin at the box's bottom centre, x forward (length), y left (width), z up.
    """

    instance_id: int
    cls: str
    size: tuple[float, float, float]  # (l, w, h) metres
    path: str  # "along" or "across"
    s0: float
    d0: float
    direction: int  # +1 or -1 along the path
    speed: float  # m/s
    z: float  # ground height under the actor (road 0, sidewalk = curb)
    yaw_offset: float = 0.0  # small heading jitter, rad
    d_stop: float | None = None  # "across" only: where the walk ends
    mesh: MeshData | None = None  # rigid actors; pedestrians are rebuilt per frame (their legs swing)
    gait: dict = field(default_factory=dict)  # pedestrian body parameters

    def road_pose(self, t: float) -> tuple[float, float, float]:
        """(s, d, heading relative to the road) at time t."""
        if self.path == "along":
            s = self.s0 + self.direction * self.speed * t
            rel = 0.0 if self.direction > 0 else math.pi
            return s, self.d0, rel + self.yaw_offset
        d = self.d0 + self.direction * self.speed * t
        if self.d_stop is not None:
            d = min(d, self.d_stop) if self.direction > 0 else max(d, self.d_stop)
        return self.s0, d, self.direction * math.pi / 2 + self.yaw_offset

    def road_poses(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """road_pose over an array of times: (s, d, heading relative to the road), each shaped like ts."""
        ts = np.asarray(ts, np.float64)
        if self.path == "along":
            s = self.s0 + self.direction * self.speed * ts
            rel = (0.0 if self.direction > 0 else math.pi) + self.yaw_offset
            return s, np.full_like(ts, self.d0), np.full_like(ts, rel)
        d = self.d0 + self.direction * self.speed * ts
        if self.d_stop is not None:
            d = np.minimum(d, self.d_stop) if self.direction > 0 else np.maximum(d, self.d_stop)
        return np.full_like(ts, self.s0), d, np.full_like(ts, self.direction * math.pi / 2 + self.yaw_offset)

    def moving(self, t: float) -> bool:
        if self.speed == 0.0:
            return False
        if self.path == "across" and self.d_stop is not None:
            _, d, _ = self.road_pose(t)
            return d != self.d_stop
        return True


def _car_mesh(rng: np.random.Generator, l: float, w: float, h: float, cls: str) -> MeshData:  # noqa: E741
    """A car (or van) to a LiDAR: chamfered lower body, narrower cabin with slanted windshield and rear
    window, four wheels, licence plates. Everything stays inside the l x w x h label box (origin at its
    bottom centre, x forward). Paint is the material's default: instances recolour it."""
    parts = _Parts()
    iid = 0
    van = cls == "Van"
    r_wheel = rng.uniform(0.29, 0.33) if not van else rng.uniform(0.32, 0.36)
    clear = r_wheel * 0.55  # body bottom above the road
    belt = h * (rng.uniform(0.56, 0.62) if not van else rng.uniform(0.45, 0.5))  # bottom of the side windows
    hl = l / 2 - 0.01
    body = np.array([(-hl, clear + 0.1), (-hl + 0.12, clear), (hl - 0.12, clear), (hl, clear + 0.1),
                     (hl, belt - 0.18), (hl - 0.35, belt), (-hl + 0.15, belt), (-hl, belt - 0.1)])
    v, t, _ = extrude_mesh(body, -w / 2 + 0.01, w / 2 - 0.01)
    parts.add(v, t, "paint", cls, iid)
    # Cabin: trapezoid side view. Windshield slope ~30 deg from horizontal for cars, ~55 deg for vans.
    hood = rng.uniform(0.95, 1.25) if not van else rng.uniform(0.5, 0.8)
    x_ws = hl - hood
    slope = math.tan(math.radians(rng.uniform(28, 36) if not van else rng.uniform(55, 65)))
    x_roof_front = x_ws - (h - belt) / slope
    x_rear = -hl + (rng.uniform(0.35, 0.8) if not van else 0.05)
    x_roof_back = x_rear + (rng.uniform(0.35, 0.6) if not van else 0.05)
    cab = np.array([(x_rear, belt - 0.02), (x_ws, belt - 0.02), (x_roof_front, h - 0.005),
                    (x_roof_back, h - 0.005)])
    cw = w / 2 - rng.uniform(0.06, 0.12)
    v, t, edge = extrude_mesh(cab, -cw, cw)
    glass, pm = MATERIAL_IDS["car_glass"], MATERIAL_IDS["paint"]
    # edges: 0 bottom (hidden), 1 windshield, 2 roof, 3 rear window; caps are the side windows.
    mat = np.where(edge == 2, pm, glass)
    if van:  # cargo vans: glass only at the front, painted sides and back
        mat = np.where((edge == 3) | (edge == -1), pm, mat)
        # Side windows of the cab: behind the windshield line, 0.9 m long.
        z0, z1 = belt + 0.08, h - 0.12
        xf0, xf1 = x_ws - 0.05, x_ws - (z1 - belt) / slope - 0.05
        xb = xf0 - 0.95
        window = np.array([(xb, z0), (xf0, z0), (xf1, z1), (xb, z1)])
        wv, wt, _ = extrude_mesh(window, -cw - 0.005, cw + 0.005)
        parts.add(wv, wt, "car_glass", cls, iid)
    parts.add(v, t, mat.astype(np.uint8), cls, iid)
    # Wheels as 10-gon discs, inside the box width.
    wb = l / 2 - rng.uniform(0.7, 0.85)
    tw = 0.2
    for x in (wb, -wb):
        for side in (-1, 1):
            wv, wt = wheel_mesh(r_wheel, tw, 10)
            wv = wv + (x, side * (w / 2 - tw / 2 - 0.02), r_wheel)
            parts.add(wv, wt, "tyre", cls, iid)
    for x, sgn in ((hl, 1), (-hl, -1)):
        z0 = clear + 0.2 if sgn > 0 else belt - 0.45
        pv = np.array([(x + sgn * 0.004, -0.26, z0), (x + sgn * 0.004, 0.26, z0),
                       (x + sgn * 0.004, 0.26, z0 + 0.11), (x + sgn * 0.004, -0.26, z0 + 0.11)])
        pt = np.array([[0, 1, 2], [0, 2, 3]] if sgn > 0 else [[0, 2, 1], [0, 3, 2]], np.int32)
        parts.add(pv, pt, "plate", cls, iid)
    return parts.build()


_PED_TRIS = (_BOX_TRIS[None] + 8 * np.arange(6)[:, None, None]).reshape(-1, 3)
_PED_MAT = np.repeat(np.array([MATERIAL_IDS[m] for m in ("cloth", "cloth", "cloth", "skin", "cloth",
                                                          "cloth")], np.uint8), 12)
_PED_CLS = np.full(72, CLASS_IDS["Pedestrian"], np.uint8)


def _pedestrian_mesh(g: dict, phase: float, walking: bool, iid: int) -> MeshData:
    """An articulated walker, six boxes (legs, torso, head, arms), x forward; legs and arms swing in
    opposite phase about hip and shoulder. Built in one vectorised step because it is re-posed every frame."""
    h, w, l = g["h"], g["w"], g["l"]  # noqa: E741
    leg = 0.47 * h
    hip = leg + 0.02
    shoulder = 0.81 * h
    swing = math.radians(24) * math.sin(phase) if walking else 0.0
    max_swing = math.asin(min(1.0, (l / 2 - 0.08) / leg))  # the feet stay inside the box length
    swing = float(np.clip(swing, -max_swing, max_swing))
    torso_w = min(0.42, w - 0.26)
    hy = torso_w / 4
    arm = 0.33 * h
    ay = w / 2 - 0.055
    # Per part: pivot (3), box lo (3) and hi (3) around the pivot, pitch angle (forward positive).
    pivot = np.array([[0, hy, hip], [0, -hy, hip], [0, 0, 0], [0, 0, 0], [0, ay, shoulder - 0.03],
                      [0, -ay, shoulder - 0.03]])
    lo = np.array([[-0.07, -0.075, -leg], [-0.07, -0.075, -leg], [-0.11, -torso_w / 2, hip - 0.08],
                   [-0.09, -0.08, shoulder + 0.04], [-0.045, -0.045, -arm], [-0.045, -0.045, -arm]])
    hi = np.array([[0.07, 0.075, 0], [0.07, 0.075, 0], [0.11, torso_w / 2, shoulder], [0.11, 0.08, h - 0.002],
                   [0.045, 0.045, 0], [0.045, 0.045, 0]])
    ang = np.array([swing, -swing, 0, 0, -0.8 * swing, 0.8 * swing])
    c = lo[:, None, :] + _BOX_BITS[None] * (hi - lo)[:, None, :]  # (6, 8, 3)
    ca, sa = np.cos(ang)[:, None], np.sin(ang)[:, None]
    x = c[..., 0] * ca - c[..., 2] * sa
    z = c[..., 0] * sa + c[..., 2] * ca
    v = np.stack([x, c[..., 1], z], -1) + pivot[:, None, :]
    colors = np.array([g["legs"], g["legs"], g["shirt"], g["skin"], g["shirt"], g["shirt"]], np.float32)
    refl = np.array([g["legs_refl"], g["legs_refl"], g["shirt_refl"], _MAT_REFL[MATERIAL_IDS["skin"]],
                     g["shirt_refl"], g["shirt_refl"]], np.float32)
    return MeshData(v.reshape(-1, 3).astype(np.float32), _PED_TRIS, _PED_MAT, _PED_CLS,
                    np.full(72, iid, np.uint16), np.repeat(refl, 12), np.repeat(colors, 12, axis=0))


def _cyclist_mesh(rng: np.random.Generator, l: float, w: float, h: float) -> MeshData:  # noqa: E741
    """Bicycle (two tyre rings, frame tubes, handlebar) plus a rider leaning forward, inside l x w x h.
    The rider's clothes are the material default: instances recolour them."""
    parts = _Parts()
    iid = 0
    r = min(0.345, l / 2 - 0.55)  # 700c / 28" wheel radius ~0.34 m
    xf, xr = l / 2 - r - 0.01, -l / 2 + r + 0.01
    frames = np.array([(0.5, 0.05, 0.05), (0.05, 0.05, 0.05), (0.2, 0.3, 0.6), (0.6, 0.6, 0.6)])
    frame_col = _tint(rng, frames[rng.integers(len(frames))], 0.05)
    for x in (xf, xr):
        v, t = wheel_mesh(r, 0.04, 12, hub=False)
        parts.add(v + (x, 0, r), t, "tyre", "Cyclist", iid)
    seat = np.array([xr + 0.38, 0.0, r + 0.6])
    bb = np.array([xr + 0.55, 0.0, r - 0.02])  # bottom bracket
    head = np.array([xf - 0.2, 0.0, r + 0.55])
    rear_hub, front_hub = np.array([xr, 0, r]), np.array([xf, 0, r])
    for a, b in ((rear_hub, bb), (rear_hub, seat), (bb, seat), (bb, head), (seat, head), (head, front_hub)):
        v, t = beam_mesh(a, b, 0.04)
        parts.add(v, t, "metal", "Cyclist", iid, frame_col)
    bar = head + (0.05, 0, 0.12)
    v, t = beam_mesh(bar - (0, w / 2 - 0.03, 0), bar + (0, w / 2 - 0.03, 0), 0.035)
    parts.add(v, t, "metal", "Cyclist", iid)
    hip = seat + (0, 0, 0.08)
    shoulder = np.array([hip[0] + 0.35, 0.0, h - 0.3])
    v, t = beam_mesh(hip, shoulder, 0.2, 0.36)
    parts.add(v, t, "cloth", "Cyclist", iid)
    v, t = box_mesh(shoulder + (-0.05, -0.09, 0.05), shoulder + (0.16, 0.09, 0.3 - 0.002))
    parts.add(v, t, "skin", "Cyclist", iid)
    for side in (-1, 1):
        v, t = beam_mesh(shoulder + (0, side * 0.2, -0.04), bar + (0, side * 0.22, 0.02), 0.08)
        parts.add(v, t, "cloth", "Cyclist", iid)
        pedal = bb + (side * 0.12 * rng.uniform(-1, 1), side * 0.1, -0.1 * rng.uniform(0, 1))
        knee = hip + (0.32, side * 0.1, -0.22)
        for a, b in ((hip + (0, side * 0.1, 0), knee), (knee, pedal)):
            v, t = beam_mesh(a, b, 0.12)
            parts.add(v, t, "cloth", "Cyclist", iid)
    return parts.build()


def _clip_box_extent(m: MeshData, l: float, w: float, h: float) -> MeshData:  # noqa: E741
    """Clamp vertices into the label box (a few mm of rounding at the faces must not leak outside)."""
    v = m.vertices
    v[:, 0] = np.clip(v[:, 0], -l / 2, l / 2)
    v[:, 1] = np.clip(v[:, 1], -w / 2, w / 2)
    v[:, 2] = np.clip(v[:, 2], 0.0, h)
    return m


@dataclass(frozen=True)
class _Template:
    """A thing's mesh at a nominal size; instances scale it to their sampled (l, w, h) and recolour it."""

    mesh: MeshData
    size: tuple[float, float, float]  # (l, w, h) the vertices were built for
    tint: np.ndarray  # (T,) bool, triangles an instance recolours (paint, clothes)


_N_TEMPLATES = {"Car": 8, "Van": 4, "Cyclist": 6}
_NOMINAL = {"Car": (3.88, 1.63, 1.52), "Van": (5.0, 1.9, 2.2), "Cyclist": (1.76, 0.6, 1.74)}


@lru_cache(maxsize=8)
def _templates(cls: str) -> tuple[_Template, ...]:
    """A small bank of body styles per class (cabin length, windshield slope, bonnet, wheel size...), built
    once per process from fixed seeds, so a world's randomness only picks, scales and paints them."""
    out = []
    length, width, height = _NOMINAL[cls]
    for k in range(_N_TEMPLATES[cls]):
        rng = np.random.default_rng([7919, CLASS_IDS[cls], k])
        if cls == "Cyclist":
            m = _cyclist_mesh(rng, length, width, height)
        else:
            m = _car_mesh(rng, length, width, height, cls)
        m = _clip_box_extent(m, length, width, height)
        out.append(_Template(m, (length, width, height), _TINT_LUT[m.material]))
    return tuple(out)


def thing_mesh(rng: np.random.Generator, cls: str, size: tuple[float, float, float], iid: int) -> MeshData:
    """A Car, Van or Cyclist instance: a template scaled to `size` (l, w, h) with its own paint or clothes."""
    bank = _templates(cls)
    tpl = bank[int(rng.integers(len(bank)))]
    m = tpl.mesh
    if cls == "Cyclist":
        color = _tint(rng, rng.uniform(0.05, 0.6, 3), 0.05)
        refl = float(np.clip(0.08 + 0.6 * color.mean() + rng.normal(0, 0.04), 0.03, 0.7))
    else:
        color = CAR_COLORS[rng.choice(len(CAR_COLORS), p=CAR_COLOR_P)] * rng.uniform(0.9, 1.1)
        luma = float(color @ [0.3, 0.59, 0.11])
        refl = float(np.clip(0.12 + 0.6 * luma + rng.normal(0, 0.04), 0.04, 0.7))  # dark paint returns little
    col = m.color.copy()
    col[tpl.tint] = color
    r = m.reflectance.copy()
    r[tpl.tint] = refl
    v = (m.vertices * (np.asarray(size) / np.asarray(tpl.size))).astype(np.float32)
    return MeshData(v, m.triangles, m.material, m.cls, np.full(len(m), iid, np.uint16), r, col)


# --------------------------------------------------------------------------------------------------- scene
@dataclass
class SceneObject:
    """One thing as posed in a frame.

    box: (7,) float64 velodyne box [x, y, z (geometric centre), l, w, h, yaw about +z from +x].
    """

    instance_id: int
    cls: str
    box: np.ndarray
    velocity: np.ndarray  # (3,) m/s in the velodyne frame of this frame (ego motion not subtracted)
    moving: bool


@dataclass
class Scene:
    """Everything a sensor sees at one instant, in the ego's velodyne frame.

    mesh:             all triangles within WorldConfig.cull_distance, plus the ego car's body (material 'ego')
    objects:          the things (Car, Van, Pedestrian, Cyclist) in the mesh, ordered by instance id
    world_from_velo:  (4, 4) float64 pose of the velodyne in the world frame: p_world = T @ [p_velo, 1]
    sun:              (3,) unit vector towards the sun, velodyne frame
    time:             seconds since the start of the sequence
    """

    mesh: MeshData
    objects: list[SceneObject]
    world_from_velo: np.ndarray
    sun: np.ndarray
    time: float

    def boxes(self) -> np.ndarray:
        """(N, 7) float64 velodyne boxes of `objects`."""
        return np.array([o.box for o in self.objects], np.float64).reshape(-1, 7)


# KITTI's recording car is a VW Passat B6 wagon (KITTI paper, Sec. 2): about 4.8 x 1.8 m. Seen from the
# roof-mounted LiDAR, its bonnet hides the lowest rings ahead and its tail those behind, which is why real
# KITTI scans have no returns below about -20 deg straight ahead (measured on kitti_mini).
EGO_LENGTH, EGO_WIDTH = 4.8, 1.8
LIDAR_HEIGHT = 1.73  # KITTI paper, Fig. 3: Velodyne 1.73 m above the ground


@lru_cache(maxsize=1)
def ego_body_mesh() -> MeshData:
    """The recording car around the LiDAR, in the velodyne frame (ground at z = -1.73).

    The body up to bonnet and boot-lid height (1.0 m) has chamfered corners in plan view; its outline is
    fitted so that the share of the front 90 degrees hidden per ring matches kitti_mini (about a third of
    ring 58's, half of ring 60's and two thirds of ring 62's pixels are empty there; nothing above ring 56).
    """
    parts = _Parts()
    g = -LIDAR_HEIGHT
    plan = np.array([(-2.26, -0.5), (-1.9, -0.9), (1.45, -0.9), (1.93, -0.45), (1.93, 0.45), (1.45, 0.9),
                     (-1.9, 0.9), (-2.26, 0.5)])
    v, t, _ = extrude_mesh(plan, g + 0.25, g + 1.0)  # extruded along the 2nd axis: swap it to be z
    parts.add(v[:, [0, 2, 1]], t, "ego", "unlabelled")
    # Roof with the sensor rack, 1.38 m above the road.
    v, t = box_mesh((-1.5, -0.7, g + 1.0), (0.55, 0.7, g + 1.38))
    parts.add(v, t, "ego", "unlabelled")
    return parts.build()


@dataclass
class _Chunk:
    mesh: MeshData  # world frame
    centre: np.ndarray  # (2,) world x, y
    radius: float


@dataclass
class World:
    """A frozen street with its actors; `scene_at(t)` poses them and returns what the sensors see."""

    layout: RoadLayout
    chunks: list[_Chunk]
    actors: list[Actor]
    ego_lane_d: float
    ego_s0: float
    ego_speed: float
    ego_yaw_offset: float
    sun_world: np.ndarray  # (3,) unit vector towards the sun
    config: WorldConfig

    def ego_pose(self, t: float) -> np.ndarray:
        """(4, 4) world_from_velo at time t: the ego drives along its lane at constant speed."""
        s = self.ego_s0 + self.ego_speed * t
        x, y = self.layout.to_world(s, self.ego_lane_d)
        yaw = float(self.layout.heading(s)) + self.ego_yaw_offset
        T = np.eye(4)
        T[:3, :3] = rot_z(yaw)
        T[:3, 3] = (float(x), float(y), LIDAR_HEIGHT)
        return T

    def actor_box_world(self, a: Actor, t: float) -> tuple[np.ndarray, float]:
        """(7,) world box [x, y, z centre, l, w, h, yaw] of an actor at time t, and its road heading."""
        s, d, rel = a.road_pose(t)
        x, y = self.layout.to_world(s, d)
        yaw = float(self.layout.heading(s)) + rel
        length, width, height = a.size
        z = a.z
        if a.path == "across":  # crossing the street: on the road between the curbs, else on the sidewalk
            z = 0.0 if abs(d) < self.layout.edge(0 if d < 0 else 1) else self.layout.curb
        return np.array([float(x), float(y), z + height / 2, length, width, height, yaw]), yaw

    def scene_at(self, t: float) -> Scene:
        """The scene at time t (s) in the ego's velodyne frame."""
        T = self.ego_pose(t)
        R, p = T[:3, :3], T[:3, 3]
        Rinv = R.T
        cull = self.config.cull_distance
        meshes = [c.mesh for c in self.chunks if np.hypot(*(c.centre - p[:2])) - c.radius < cull]
        objects: list[SceneObject] = []
        lo, hi = self.layout.s_min + 1.0, self.layout.s_max - 1.0
        for a in self.actors:
            s_a = a.road_pose(t)[0]
            if not lo <= s_a <= hi:  # drove off the simulated street (turned off, out of sight)
                continue
            box, yaw = self.actor_box_world(a, t)
            if np.hypot(box[0] - p[0], box[1] - p[1]) > cull:
                continue
            if a.cls == "Pedestrian":
                walking = a.moving(t)
                phase = a.gait["phase"] + (2 * math.pi * a.gait["cadence"] * t if walking else 0.0)
                local = _pedestrian_mesh(a.gait, phase, walking, a.instance_id)
            else:
                local = a.mesh
            meshes.append(local.transformed(rot_z(yaw), (box[0], box[1], box[2] - box[5] / 2)))
            # Velocity by finite difference (pedestrians stopping at the kerb have a kink: fine for labels).
            box2, _ = self.actor_box_world(a, t + 0.05)
            vel = np.array([box2[0] - box[0], box2[1] - box[1], 0.0]) / 0.05
            centre = Rinv @ (box[:3] - p)
            yaw_v = math.atan2(math.sin(yaw - _yaw_of(R)), math.cos(yaw - _yaw_of(R)))
            box_v = np.array([*centre, *box[3:6], yaw_v])
            objects.append(SceneObject(a.instance_id, a.cls, box_v, Rinv @ vel, a.moving(t)))
        world = MeshData.concatenate(meshes)
        mesh = world.transformed(Rinv, -Rinv @ p)
        mesh = MeshData.concatenate([mesh, ego_body_mesh()])
        objects.sort(key=lambda o: o.instance_id)
        return Scene(mesh, objects, T, Rinv @ self.sun_world, t)


def _yaw_of(R: np.ndarray) -> float:
    return math.atan2(R[1, 0], R[0, 0])


# ----------------------------------------------------------------------------------------- static geometry
def _strips(layout: RoadLayout, s0: np.ndarray, s1: np.ndarray, d0: np.ndarray, d1: np.ndarray,
            z: np.ndarray, step: float = 5.0) -> tuple[np.ndarray, np.ndarray, int]:
    """K flat ribbons at once, over s in [s0_k, s1_k], d in [d0_k, d1_k] at height z_k (all (K,) arrays),
    following the road's curve in segments of at most `step` metres; normals point up.

    Returns vertices (K * (2n + 2), 3), triangles (K * 2n, 3) and n: ribbon k owns vertices
    [k (2n + 2), (k + 1)(2n + 2)) and triangles [2nk, 2n(k + 1)), so callers can split the result.
    """
    s0, s1, d0, d1, z = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, np.float64))
                                              for a in (s0, s1, d0, d1, z)))
    k = len(s0)
    n = 1 if layout.curvature == 0.0 else max(1, int(math.ceil(float((s1 - s0).max()) / step)))
    u = np.linspace(0.0, 1.0, n + 1)
    s = s0[:, None] + (s1 - s0)[:, None] * u
    ss = np.concatenate([s, s], 1)  # (K, 2n + 2): the d0 edge, then the d1 edge
    dd = np.concatenate([np.repeat(d0[:, None], n + 1, 1), np.repeat(d1[:, None], n + 1, 1)], 1)
    x, y = layout.to_world(ss, dd)
    v = np.stack([x, y, np.broadcast_to(z[:, None], ss.shape)], -1).reshape(-1, 3)
    i = np.arange(n)
    tri = np.concatenate([np.stack([i, i + 1, n + 2 + i], 1), np.stack([i, n + 2 + i, n + 1 + i], 1)])
    t = tri[None] + (2 * n + 2) * np.arange(k)[:, None, None]
    down = (d1 - d0) * (s1 - s0) < 0  # would face down: flip the winding
    t[down] = t[down][:, :, ::-1]
    return v, t.reshape(-1, 3).astype(np.int32), n


def _walls(layout: RoadLayout, s0: np.ndarray, s1: np.ndarray, d: np.ndarray, z0: float, z1: float,
           step: float = 5.0) -> tuple[np.ndarray, np.ndarray, int]:
    """K vertical ribbons (curb faces) at d_k from z0 to z1 over s in [s0_k, s1_k]; layout as _strips."""
    s0, s1, d = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, np.float64)) for a in (s0, s1, d)))
    k = len(s0)
    n = 1 if layout.curvature == 0.0 else max(1, int(math.ceil(float((s1 - s0).max()) / step)))
    s = s0[:, None] + (s1 - s0)[:, None] * np.linspace(0.0, 1.0, n + 1)
    x, y = layout.to_world(s, np.repeat(d[:, None], n + 1, 1))
    x2, y2 = np.concatenate([x, x], 1), np.concatenate([y, y], 1)
    zz = np.concatenate([np.full((k, n + 1), z0), np.full((k, n + 1), z1)], 1)
    v = np.stack([x2, y2, zz], -1).reshape(-1, 3)
    i = np.arange(n)
    tri = np.concatenate([np.stack([i, i + 1, n + 2 + i], 1), np.stack([i, n + 2 + i, n + 1 + i], 1)])
    t = tri[None] + (2 * n + 2) * np.arange(k)[:, None, None]
    return v, t.reshape(-1, 3).astype(np.int32), n


def _strip(layout: RoadLayout, s0: float, s1: float, d0: float, d1: float, z: float,
           step: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """One flat ribbon (see _strips)."""
    v, t, _ = _strips(layout, s0, s1, d0, d1, z, step)
    return v, t


class _Ribbons:
    """Flat ribbons and curb faces collected per (material, class) and built in one vectorised call each,
    then handed to the chunk each belongs to."""

    def __init__(self) -> None:
        self.flat: dict[tuple[str, str], list[tuple[int, float, float, float, float, float]]] = {}
        self.walls: list[tuple[int, float, float, float]] = []

    def strip(self, chunk: int, material: str, cls: str, s0: float, s1: float, d0: float, d1: float,
              z: float) -> None:
        self.flat.setdefault((material, cls), []).append((chunk, s0, s1, d0, d1, z))

    def wall(self, chunk: int, s0: float, s1: float, d: float) -> None:
        self.walls.append((chunk, s0, s1, d))

    def emit(self, layout: RoadLayout, parts: list[_Parts]) -> None:
        jobs = [(m, c, np.array(sorted(rows), np.float64)) for (m, c), rows in self.flat.items()]
        if self.walls:
            jobs.append(("curb", "sidewalk", np.array(sorted(self.walls), np.float64)))
        for material, cls, rows in jobs:
            if rows.shape[1] == 6:
                v, t, n = _strips(layout, rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5])
            else:
                v, t, n = _walls(layout, rows[:, 1], rows[:, 2], rows[:, 3], 0.0, layout.curb)
            nv, nt = 2 * n + 2, 2 * n
            chunk = rows[:, 0].astype(int)
            for c in np.unique(chunk):
                lo, hi = np.searchsorted(chunk, c), np.searchsorted(chunk, c, side="right")
                parts[c].add(v[lo * nv:hi * nv], t[lo * nt:hi * nt] - lo * nv, material, cls)


def _subtract(a: float, b: float, lo: float, hi: float) -> list[tuple[float, float]]:
    """The interval [a, b] minus (lo, hi), as a list of 0-2 non-empty intervals."""
    return [(x, y) for x, y in ((a, min(b, lo)), (max(a, hi), b)) if y - x > 1e-6]


def _place(layout: RoadLayout, v: np.ndarray, s: float, d: float, z: float, yaw: float = 0.0) -> np.ndarray:
    """Move local vertices (x along the road, y to the left) to road position (s, d) at height z."""
    x, y = layout.to_world(s, d)
    return v @ rot_z(float(layout.heading(s)) + yaw).T + (float(x), float(y), z)


# The four reveal quads of a window recess: corners as bits (u0/u1, front/recessed, bottom/top).
_REVEAL_BITS = np.array([[(0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1)],  # left side
                         [(1, 0, 0), (1, 0, 1), (1, 1, 1), (1, 1, 0)],  # right side
                         [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)],  # sill
                         [(0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 0, 1)]])  # lintel


def _facade(rng: np.random.Generator, width: float, height: float, ground: float, floor: float,
            depth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A building block in local coordinates: u along the street (0..width), w away from it (0..depth), z up.

    The street-facing wall is a grid of cells: wall cells at w = 0, window cells recessed 0.15-0.35 m with
    four reveal faces, so a LiDAR sees the windows as depth changes. Returns vertices (V, 3) as (u, w, z),
    triangles (T, 3) and material ids (T,).
    """
    recess = rng.uniform(0.15, 0.35)
    n_floors = max(1, int((height - ground) / floor) + 1)
    win_w = rng.uniform(1.0, 1.6)
    pitch = win_w + rng.uniform(1.0, 2.2)
    n_cols = max(1, int((width - 1.0) / pitch))
    margin = (width - n_cols * pitch) / 2 + (pitch - win_w) / 2
    us = margin + np.arange(n_cols) * pitch
    wins = []  # (u0, u1, z0, z1)
    shop = rng.random() < 0.4
    for f in range(n_floors):
        z_floor = 0.0 if f == 0 else ground + (f - 1) * floor
        if f == 0:
            if shop:
                wins += [(u - 0.4, u + win_w + 0.4, 0.5, ground - 0.6) for u in us]
            else:
                wins += [(u, u + win_w, 0.9, min(2.3, ground - 0.5)) for u in us]
        else:
            top = z_floor + 0.9 + rng.uniform(1.3, 1.6)
            if top < height - 0.3:
                wins += [(u, u + win_w, z_floor + 0.9, top) for u in us]
    wins_a = np.array(wins, np.float64).reshape(-1, 4)
    wins_a[:, 0:2] = np.clip(wins_a[:, 0:2], 0.3, width - 0.3)
    ub = np.unique(np.concatenate([[0.0, width], wins_a[:, 0], wins_a[:, 1]]))
    zb = np.unique(np.concatenate([[0.0, height], wins_a[:, 2], wins_a[:, 3]]))
    uc, zc = (ub[:-1] + ub[1:]) / 2, (zb[:-1] + zb[1:]) / 2
    in_u = (uc[None, :] > wins_a[:, 0, None]) & (uc[None, :] < wins_a[:, 1, None])  # (nw, nu)
    in_z = (zc[None, :] > wins_a[:, 2, None]) & (zc[None, :] < wins_a[:, 3, None])  # (nw, nz)
    is_win = (in_u[:, :, None] & in_z[:, None, :]).any(0).ravel()  # (nu * nz,) u-major
    nu, nz, nw = len(uc), len(zc), len(wins_a)
    nc = nu * nz
    q = np.empty((nc + 4 * nw, 4, 3))  # quads, corners counter-clockwise seen from the street
    u0, u1 = np.repeat(ub[:-1], nz), np.repeat(ub[1:], nz)
    z0, z1 = np.tile(zb[:-1], nu), np.tile(zb[1:], nu)
    q[:nc, :, 0] = np.stack([u0, u1, u1, u0], 1)
    q[:nc, :, 1] = np.where(is_win, recess, 0.0)[:, None]
    q[:nc, :, 2] = np.stack([z0, z0, z1, z1], 1)
    # Reveals: the four sides of each window's recess, as corner bits (u1?, recessed?, top?) of its box.
    w0, w1, wz0, wz1 = wins_a.T
    q[nc:, :, 0] = np.stack([w0, w1], 1)[:, _REVEAL_BITS[..., 0]].reshape(-1, 4)
    q[nc:, :, 1] = np.array([0.0, recess])[_REVEAL_BITS[..., 1]][None].repeat(nw, 0).reshape(-1, 4)
    q[nc:, :, 2] = np.stack([wz0, wz1], 1)[:, _REVEAL_BITS[..., 2]].reshape(-1, 4)
    mat = np.full(len(q), MATERIAL_IDS["facade"], np.uint8)
    mat[:nc][is_win] = MATERIAL_IDS["glass"]
    # The rest of the block: sides, back and roof (the front face is the facade above).
    bv, bt = box_mesh((0, 0, 0), (width, depth, height), skip=(0, 2))
    v = np.concatenate([q.reshape(-1, 3), bv])
    t = np.concatenate([_quad_tris(len(q)), bt + 4 * len(q)])
    mat = np.concatenate([np.repeat(mat, 2), _BLOCK_MAT])
    return v, t, mat


@lru_cache(maxsize=64)
def _quad_tris_cached(n: int) -> np.ndarray:
    base = np.arange(n) * 4
    return np.stack([base, base + 1, base + 2, base, base + 2, base + 3], 1).reshape(-1, 3).astype(np.int32)


def _quad_tris(n: int) -> np.ndarray:
    """(2n, 3) triangles of n quads stored as 4 consecutive vertices each (two per quad, in order)."""
    return _quad_tris_cached(int(2 ** math.ceil(math.log2(max(n, 1)))))[:2 * n]


# The block behind a facade: box faces without bottom and front; the first remaining pair is the roof.
_BLOCK_MAT = np.array([MATERIAL_IDS["roof"]] * 2 + [MATERIAL_IDS["facade"]] * 6, np.uint8)


def _tree(parts: _Parts, rng: np.random.Generator, layout: RoadLayout, s: float, d: float, z: float,
          street: bool = True) -> None:
    trunk_h = rng.uniform(2.6, 4.0) if street else rng.uniform(1.2, 3.0)
    r_trunk = rng.uniform(0.1, 0.22)
    v, t = cylinder_mesh(r_trunk, 0, trunk_h + 0.5, 7)
    parts.add(_place(layout, v, s, d, z), t, "bark", "vegetation")
    radii = np.array([rng.uniform(1.6, 3.2), 0, rng.uniform(1.6, 3.6)])
    radii[1] = radii[0] * rng.uniform(0.85, 1.15)
    v, t = blob_mesh(rng, radii, 0.3, 6, 9)
    v = v + (0, 0, trunk_h + radii[2] * 0.85)
    col = _tint(rng, MATERIALS[MATERIAL_IDS["foliage"]].color, 0.15)
    parts.add(_place(layout, v, s, d, z, rng.uniform(0, 6.3)), t, "foliage", "vegetation", 0, col,
              float(np.clip(rng.normal(0.40, 0.06), 0.2, 0.6)))


def _bush(parts: _Parts, rng: np.random.Generator, layout: RoadLayout, s: float, d: float, z: float) -> None:
    radii = np.array([rng.uniform(0.5, 1.3), rng.uniform(0.5, 1.3), rng.uniform(0.4, 0.9)])
    v, t = blob_mesh(rng, radii, 0.2, 5, 7)
    v = v + (0, 0, radii[2] * 0.8)
    col = _tint(rng, MATERIALS[MATERIAL_IDS["foliage"]].color, 0.15)
    parts.add(_place(layout, v, s, d, z), t, "foliage", "vegetation", 0, col,
              float(np.clip(rng.normal(0.42, 0.06), 0.2, 0.6)))


def _lamp(parts: _Parts, layout: RoadLayout, s: float, d: float, z: float, side: int) -> None:
    height = 7.0
    v, t = cylinder_mesh(0.09, 0, height, 6)
    parts.add(_place(layout, v, s, d, z), t, "metal", "pole")
    reach = 1.6 * (-1 if side == 1 else 1)  # the arm reaches over the road
    v, t = box_mesh((-0.05, min(0, reach), height - 0.12), (0.05, max(0, reach), height))
    parts.add(_place(layout, v, s, d, z), t, "metal", "pole")
    v, t = box_mesh((-0.25, reach - 0.15, height - 0.3), (0.25, reach + 0.15, height - 0.1))
    parts.add(_place(layout, v, s, d, z), t, "metal", "pole")


def _sign(parts: _Parts, rng: np.random.Generator, layout: RoadLayout, s: float, d: float, z: float) -> None:
    v, t = cylinder_mesh(0.035, 0, 2.6, 6)
    parts.add(_place(layout, v, s, d, z), t, "metal", "pole")
    size = rng.uniform(0.6, 0.8)
    v, t = box_mesh((-0.02, -size / 2, 2.0), (0.02, size / 2, 2.0 + size))
    parts.add(_place(layout, v, s, d + 0.05, z), t, "sign", "traffic_sign", 0,
              SIGN_COLORS[rng.integers(len(SIGN_COLORS))])


def _build_static(rng: np.random.Generator, layout: RoadLayout,
                  chunk_len: float = 25.0) -> tuple[list[_Chunk], list]:
    """Road, markings, curbs, sidewalks, terrain, buildings and street furniture, cut into chunks along s.

    Returns the chunks and a list of (s, d, radius) obstacles on the sidewalks (trees, poles) that
    pedestrians must avoid.
    """
    L = layout
    edges = (L.edge(0), L.edge(1))
    n_chunks = int(math.ceil((L.s_max - L.s_min) / chunk_len))
    chunk_parts = [_Parts() for _ in range(n_chunks)]

    def chunk_of(s: float) -> int:
        return min(n_chunks - 1, max(0, int((s - L.s_min) // chunk_len)))

    def part_at(s: float) -> _Parts:
        return chunk_parts[chunk_of(s)]

    obstacles: list[tuple[float, float, float]] = []
    ground_far = 70.0  # terrain reaches this far beyond the sidewalk
    cross = L.crossing
    ch = L.cross_half
    rib = _Ribbons()
    for k in range(n_chunks):
        s0 = L.s_min + k * chunk_len
        s1 = min(L.s_max, s0 + chunk_len)
        rib.strip(k, "asphalt", "road", s0, s1, -edges[0], edges[1], 0.0)
        # Pieces of s not interrupted by a crossing street.
        pieces = [(s0, s1)] if cross is None else _subtract(s0, s1, cross - ch, cross + ch)
        # Terrain beyond the sidewalks stops where the crossing street's own sidewalks (2.5 m) begin.
        terrain = [(s0, s1)] if cross is None else _subtract(s0, s1, cross - ch - 2.5, cross + ch + 2.5)
        for side, sgn in ((0, -1), (1, 1)):
            e, sw = edges[side], L.sidewalk[side]
            for a, b in pieces:
                rib.strip(k, "concrete", "sidewalk", a, b, sgn * e, sgn * (e + sw), L.curb)
                rib.wall(k, a, b, sgn * e)
            for a, b in terrain:
                rib.strip(k, "grass", "terrain", a, b, sgn * (e + sw), sgn * (e + sw + ground_far), L.curb)
    # The crossing street: its road, curbs and sidewalks, straight out on both sides.
    if cross is not None:
        k = chunk_of(cross)
        p = chunk_parts[k]
        for side, sgn in ((0, -1), (1, 1)):
            e, sw = edges[side], L.sidewalk[side]
            far = e + sw + ground_far
            rib.strip(k, "asphalt", "road", cross - ch, cross + ch, sgn * e, sgn * far, 0.0)
            for sc, ssgn in ((cross - ch, -1), (cross + ch, 1)):
                s_out = sc + ssgn * 2.5
                rib.strip(k, "concrete", "sidewalk", min(sc, s_out), max(sc, s_out), sgn * (e + sw),
                          sgn * far, L.curb)
                # Curb face along the crossing street (a vertical quad at s = sc).
                a, b = sgn * e, sgn * far
                qv = np.array([(sc, a, 0.0), (sc, b, 0.0), (sc, b, L.curb), (sc, a, L.curb)])
                p.add(qv, np.array([[0, 1, 2], [0, 2, 3]], np.int32), "curb", "sidewalk")
            # Centre dashes on the crossing street.
            for dd in np.arange(e + 2.0, far, 9.0):
                rib.strip(k, "marking", "road", cross - 0.06, cross + 0.06, sgn * dd, sgn * (dd + 3.0), 0.004)
    # Lane markings: dashed lines 3 m long every 9 m (German urban "Leitlinie"), 0.12 m wide.
    lines = [0.0] + [sgn * i * L.lane_width for i in range(1, L.lanes) for sgn in (-1, 1)]
    offset = rng.uniform(0, 9)
    for dl in lines:
        for s in np.arange(L.s_min + offset, L.s_max - 3.0, 9.0):
            if cross is not None and abs(s + 1.5 - cross) < ch + 2.0:
                continue
            rib.strip(chunk_of(s), "marking", "road", s, s + 3.0, dl - 0.06, dl + 0.06, 0.004)
    if L.crosswalk is not None:
        for dd in np.arange(-edges[0] + 0.3, edges[1] - 0.5, 1.0):
            rib.strip(chunk_of(L.crosswalk), "marking", "road", L.crosswalk - 2.0, L.crosswalk + 2.0, dd,
                      dd + 0.5, 0.004)
    rib.emit(L, chunk_parts)
    # Buildings, gaps with vegetation, street trees, lamps and signs along each side.
    residential = rng.random() < 0.45
    for side, sgn in ((0, -1), (1, 1)):
        e, sw = edges[side], L.sidewalk[side]
        line = e + sw  # building line before setback
        s = L.s_min + rng.uniform(0, 10)
        while s < L.s_max - 6:
            if cross is not None and cross - ch - 4.0 < s < cross + ch + 4.0:
                s = cross + ch + 4.0
                continue
            if rng.random() < (0.35 if residential else 0.15):  # a gap: vegetation, hedge
                gap = rng.uniform(3, 14)
                for _ in range(rng.integers(1, 4)):
                    ss = s + rng.uniform(0, gap)
                    dd = sgn * (line + rng.uniform(1.5, 10))
                    if rng.random() < 0.5:
                        _tree(parts=part_at(ss), rng=rng, layout=L, s=ss, d=dd, z=L.curb, street=False)
                    else:
                        _bush(part_at(ss), rng, L, ss, dd, L.curb)
                s += gap
                continue
            width = rng.uniform(9, 22) if not residential else rng.uniform(8, 14)
            if cross is not None and s < cross - ch and s + width > cross - ch - 4.0:
                width = cross - ch - 4.0 - s
                if width < 5:
                    s = cross + ch + 4.0
                    continue
            width = min(width, L.s_max - s)
            setback = 0.0 if (not residential and rng.random() < 0.7) else rng.uniform(1.0, 6.0)
            floor = rng.uniform(2.8, 3.2)
            ground = rng.uniform(3.3, 4.4)
            floors = rng.integers(1, 3) if residential else rng.integers(2, 6)
            height = ground + floor * (floors - 1) + rng.uniform(0.3, 1.2)
            depth = rng.uniform(9, 15)
            fv, ft, fm = _facade(rng, width, height, ground, floor, depth)
            # local (u, w, z) -> road (s, d): u along +s, w away from the road.
            ss = s + fv[:, 0]
            dd = sgn * (line + setback + fv[:, 1])
            x, y = L.to_world(ss, dd)
            v = np.stack([x, y, fv[:, 2] + L.curb], 1)
            t = ft if sgn > 0 else ft[:, ::-1]
            col = FACADE_COLORS[rng.integers(len(FACADE_COLORS))] * rng.uniform(0.8, 1.15)
            refl = float(np.clip(rng.normal(0.38, 0.08), 0.15, 0.7))
            part_at(s + width / 2).add(v, t, fm, "building", 0, col, refl)
            if setback > 1.5 and rng.random() < 0.5:  # a hedge in the front garden
                hv, ht = box_mesh((0, -0.35, 0), (width - 0.6, 0.35, rng.uniform(0.8, 1.6)))
                hd = sgn * (line + setback * 0.5)
                col = _tint(rng, MATERIALS[MATERIAL_IDS["foliage"]].color, 0.15)
                part_at(s + width / 2).add(_place(L, hv, s + 0.3, hd, L.curb), ht, "foliage", "vegetation", 0,
                                           col)
            s += width + (0.0 if rng.random() < 0.6 else rng.uniform(0.5, 3.0))
        # Street furniture in a 0.6 m band at the curb.
        d_furn = sgn * (e + 0.55)
        spacing = rng.uniform(9, 16)
        s = L.s_min + rng.uniform(0, spacing)
        has_trees = rng.random() < 0.7
        lamp_every = int(rng.integers(2, 4))
        i = 0
        while s < L.s_max - 2:
            if not L.in_crossing(s, 1.0) and not (L.crosswalk is not None and abs(s - L.crosswalk) < 3.0):
                if i % lamp_every == 0:
                    _lamp(part_at(s), L, s, d_furn, L.curb, side)
                    obstacles.append((s, d_furn, 0.3))
                elif has_trees:
                    _tree(part_at(s), rng, L, s, d_furn, L.curb)
                    obstacles.append((s, d_furn, 0.4))
                elif rng.random() < 0.3:
                    _sign(part_at(s), rng, L, s, d_furn, L.curb)
                    obstacles.append((s, d_furn, 0.3))
            s += spacing * rng.uniform(0.8, 1.2)
            i += 1
    # Closed street ends: a row of facades (or trees) across the street's whole width and beyond.
    for end, kind in ((0, L.closed_ends[0]), (1, L.closed_ends[1])):
        if kind == "open":
            continue
        s_end = L.s_min if end == 0 else L.s_max
        out = -1.0 if end == 0 else 1.0  # away from the ego
        p = part_at(s_end)
        d = -(edges[0] + L.sidewalk[0] + 40.0)
        d_stop = edges[1] + L.sidewalk[1] + 40.0
        while d < d_stop:
            if kind == "trees":
                _tree(p, rng, L, s_end + out * rng.uniform(1, 4), d, L.curb, street=False)
                d += rng.uniform(3, 7)
                continue
            width = rng.uniform(8, 20)
            height = rng.uniform(7, 18)
            fv, ft, fm = _facade(rng, width, height, rng.uniform(3.3, 4.4), rng.uniform(2.8, 3.2), 12.0)
            x, y = L.to_world(s_end + out * fv[:, 1], d + fv[:, 0])
            v = np.stack([x, y, fv[:, 2] + L.curb], 1)
            col = FACADE_COLORS[rng.integers(len(FACADE_COLORS))] * rng.uniform(0.8, 1.15)
            p.add(v, ft, fm, "building", 0, col, float(np.clip(rng.normal(0.38, 0.08), 0.15, 0.7)))
            d += width
        # The street's surface meets the facades: a sidewalk strip in front of them.
        s_a, s_b = sorted((s_end, s_end - out * 3.0))
        v, t = _strip(L, s_a, s_b, -(edges[0] + L.sidewalk[0] + 40.0), edges[1] + L.sidewalk[1] + 40.0,
                      L.curb + 0.001)
        p.add(v, t, "concrete", "sidewalk")
    chunks = []
    for p in chunk_parts:
        m = p.build()
        if not len(m):
            continue
        lo, hi = m.vertices[:, :2].min(0), m.vertices[:, :2].max(0)
        centre = (lo + hi) / 2
        chunks.append(_Chunk(m, centre.astype(np.float64), float(np.linalg.norm(hi - lo) / 2)))
    return chunks, obstacles


# ---------------------------------------------------------------------------------------- actor placement
class _Occupancy:
    """Footprints of accepted actors sampled over the sequence, for rejecting collisions.

    A footprint is a few discs along the actor's length (radius half its width plus 0.15 m), sampled at
    `times`; two actors collide when any of their discs overlap at the same time. A bounding-box test over
    the whole sequence picks the few accepted actors worth comparing.
    """

    def __init__(self, world: World, times: np.ndarray) -> None:
        self.world = world
        self.times = times
        self.discs: list[np.ndarray] = []  # each (n_t, k, 3): x, y, r
        self.bbox = np.zeros((64, 4))  # x0, y0, x1, y1 per accepted actor (capacity grows)

    def footprint(self, a: Actor) -> np.ndarray:
        length, width, _ = a.size
        k = max(1, int(math.ceil(length / max(width, 0.5))))
        offs = np.linspace(-(length - width) / 2, (length - width) / 2, k) if k > 1 else np.zeros(1)
        s, d, rel = a.road_poses(self.times)
        x, y = self.world.layout.to_world(s, d)
        yaw = self.world.layout.heading(s) + rel
        out = np.empty((len(self.times), k, 3))
        out[:, :, 0] = np.asarray(x)[:, None] + offs[None] * np.cos(yaw)[:, None]
        out[:, :, 1] = np.asarray(y)[:, None] + offs[None] * np.sin(yaw)[:, None]
        out[:, :, 2] = width / 2 + 0.15
        return out

    def try_add(self, a: Actor) -> bool:
        f = self.footprint(a)
        r = f[..., 2:3]
        lo = (f[..., :2] - r).reshape(-1, 2).min(0)
        hi = (f[..., :2] + r).reshape(-1, 2).max(0)
        n = len(self.discs)
        b = self.bbox[:n]
        near = np.flatnonzero((b[:, 0] <= hi[0]) & (b[:, 2] >= lo[0])
                              & (b[:, 1] <= hi[1]) & (b[:, 3] >= lo[1]))
        for j in near:
            g = self.discs[j]
            d2 = ((f[:, :, None, :2] - g[:, None, :, :2]) ** 2).sum(-1)
            if (d2 < (f[:, :, None, 2] + g[:, None, :, 2]) ** 2).any():
                return False
        if n == len(self.bbox):
            self.bbox = np.concatenate([self.bbox, np.zeros_like(self.bbox)])
        self.bbox[n] = (lo[0], lo[1], hi[0], hi[1])
        self.discs.append(f)
        return True


def _sample_size(rng: np.random.Generator,
                 hwl: tuple[tuple[float, float], ...]) -> tuple[float, float, float]:
    h, w, l = (_truncated_normal(rng, ms) for ms in hwl)  # noqa: E741
    return l, w, h


def generate_world(rng: np.random.Generator, duration: float = 0.0,
                   config: WorldConfig | None = None) -> World:
    """Draw a street and its actors. `duration` (s) is how long a sequence will run: the street is made
    long enough for the ego to drive it and moving actors are kept from colliding over that time."""
    cfg = config or kitti_world()
    ego_speed = float(rng.uniform(*cfg.ego_speed)) if duration > 0 else 0.0
    span = ego_speed * duration
    layout = _sample_layout(rng, cfg.margin, span)
    chunks, obstacles = _build_static(rng, layout)
    lw = layout.lane_width
    ego_lane = int(rng.integers(layout.lanes))  # 0 = innermost right-hand lane
    ego_d = -(ego_lane + 0.5) * lw + float(rng.normal(0, 0.15))
    sun_el, sun_az = math.radians(rng.uniform(25, 60)), rng.uniform(-math.pi, math.pi)
    sun = np.array([math.cos(sun_el) * math.cos(sun_az), math.cos(sun_el) * math.sin(sun_az),
                    math.sin(sun_el)])
    world = World(layout, chunks, [], ego_d, 0.0, ego_speed, float(rng.normal(0, 0.01)), sun, cfg)
    times = np.linspace(0.0, duration, max(2, int(duration / 0.25) + 1)) if duration > 0 else np.zeros(1)
    occ = _Occupancy(world, times)
    ego = Actor(0, "Car", (EGO_LENGTH + 1.0, EGO_WIDTH + 0.2, 1.5), "along", 0.0, ego_d, 1, ego_speed, 0.0)
    occ.try_add(ego)
    next_id = [1]

    def add(a: Actor, build) -> bool:
        if not occ.try_add(a):
            return False
        a.mesh = build()
        world.actors.append(a)
        next_id[0] += 1
        return True

    def vehicle(s0: float, d: float, direction: int, speed: float, parked: bool) -> None:
        van = rng.random() < cfg.van_fraction
        cls = "Van" if van else "Car"
        size = _sample_size(rng, cfg.van_hwl if van else cfg.car_hwl)
        yaw = float(rng.normal(0, 0.05 if parked else 0.01))
        a = Actor(next_id[0], cls, size, "along", s0, d + float(rng.normal(0, 0.12 if parked else 0.08)),
                  direction, speed, 0.0, yaw)
        iid = next_id[0]
        add(a, lambda: thing_mesh(rng, cls, size, iid))

    # Parked cars along the curbs, in the direction of traffic on their side.
    for side, sgn in ((0, -1), (1, 1)):
        if not layout.parking[side]:
            continue
        d = sgn * (layout.lanes * lw + layout.parking_width / 2)
        s = layout.s_min + rng.uniform(0, 5)
        while s < layout.s_max - 5:
            near_crosswalk = layout.crosswalk is not None and abs(s - layout.crosswalk) < 6
            blocked = layout.in_crossing(s, 8.0) or near_crosswalk
            if not blocked and rng.random() < cfg.parked_fill:
                vehicle(s + 2.6, d, -sgn, 0.0, True)
            s += rng.uniform(5.2, 6.5) if rng.random() > 0.15 else rng.uniform(8, 20)
    # Moving traffic: each lane has one speed (no overtaking within a lane); the ego's lane moves with it.
    for sgn in (-1, 1):
        for lane in range(layout.lanes):
            d = sgn * (lane + 0.5) * lw
            direction = -sgn
            ego_lane_here = sgn < 0 and lane == ego_lane and duration > 0
            speed = ego_speed if ego_lane_here else float(rng.uniform(6, 13))
            spacing = rng.uniform(*cfg.moving_car_spacing)
            s = layout.s_min + rng.exponential(spacing)
            while s < layout.s_max:
                vehicle(s, d, direction, speed if duration > 0 else float(rng.uniform(0, 13)), False)
                s += 9.0 + rng.exponential(spacing)
    # Cyclists near the outer edge of the outermost lane, riding with the traffic.
    for sgn in (-1, 1):
        d = sgn * (layout.lanes * lw - 0.45)
        speed = float(rng.uniform(3.0, 7.0))
        spacing = rng.uniform(*cfg.cyclist_spacing)
        s = layout.s_min + rng.exponential(spacing)
        while s < layout.s_max:
            size = _sample_size(rng, cfg.cyclist_hwl)
            a = Actor(next_id[0], "Cyclist", size, "along", s, d, -sgn, speed, 0.0,
                      float(rng.normal(0, 0.03)))
            iid = next_id[0]
            add(a, lambda a=a, iid=iid: thing_mesh(rng, "Cyclist", a.size, iid))
            s += 4.0 + rng.exponential(spacing)
    # Pedestrians on the sidewalks: bands of walkers (one speed and direction per band), some standing.
    obst = np.array(obstacles, np.float64).reshape(-1, 3)
    for side, sgn in ((0, -1), (1, 1)):
        e, sw = layout.edge(side), layout.sidewalk[side]
        n_bands = max(1, int((sw - 0.9) / 0.75))
        spacing = rng.uniform(*cfg.pedestrian_spacing)
        for b in range(n_bands):
            d = sgn * (e + 0.95 + 0.75 * b + 0.3)
            if abs(d) > e + sw - 0.35:
                d = sgn * (e + sw - 0.4)
            standing = rng.random() < 0.25
            speed = 0.0 if standing else float(rng.uniform(0.9, 1.6))
            direction = int(rng.choice([-1, 1]))
            s = layout.s_min + rng.exponential(spacing * n_bands)
            while s < layout.s_max:
                if layout.in_crossing(s, 0.5):
                    s += 2 * layout.cross_half
                    continue
                # Standing pedestrians keep clear of trees and lamp posts.
                clash = len(obst) and (np.hypot(obst[:, 0] - s, obst[:, 1] - d) < obst[:, 2] + 0.8).any()
                if standing and clash:
                    s += 1.0
                    continue
                _add_pedestrian(rng, cfg, world, occ, next_id, s, d, "along", direction, speed, layout.curb)
                s += 1.5 + rng.exponential(spacing * n_bands)
    # Pedestrians crossing at the crosswalk, from one sidewalk to the other.
    if layout.crosswalk is not None:
        for _ in range(int(rng.integers(0, 4))):
            start_side = int(rng.choice([-1, 1]))
            d0 = start_side * (layout.edge(0 if start_side < 0 else 1) + rng.uniform(-3, 1.5))
            d_stop = -start_side * (layout.edge(1 if start_side < 0 else 0) + 1.2)
            s = layout.crosswalk + rng.uniform(-1.5, 1.5)
            _add_pedestrian(rng, cfg, world, occ, next_id, s, d0, "across", -start_side,
                            float(rng.uniform(1.0, 1.5)), 0.0, d_stop)
    world.actors.sort(key=lambda a: a.instance_id)
    return world


def _add_pedestrian(rng: np.random.Generator, cfg: WorldConfig, world: World, occ: _Occupancy,
                    next_id: list[int], s: float, d: float, path: str, direction: int, speed: float, z: float,
                    d_stop: float | None = None) -> None:
    size = _sample_size(rng, cfg.pedestrian_hwl)
    l, w, h = size  # noqa: E741
    w = max(w, 0.5)
    shirt = _tint(rng, rng.uniform(0.03, 0.6, 3), 0.05)
    gait = {"h": h, "w": w, "l": l, "phase": float(rng.uniform(0, 2 * math.pi)),
            "cadence": float(rng.uniform(0.85, 1.0)) * speed / 1.3,  # strides per second ~ speed / stride
            "shirt": shirt,
            "shirt_refl": float(np.clip(0.08 + 0.6 * shirt.mean() + rng.normal(0, 0.04), 0.03, 0.7)),
            "legs": _tint(rng, rng.choice([(0.03, 0.04, 0.09), (0.05, 0.05, 0.05), (0.3, 0.27, 0.2)]), 0.05),
            "legs_refl": float(np.clip(rng.normal(0.2, 0.06), 0.03, 0.5)),
            "skin": _tint(rng, MATERIALS[MATERIAL_IDS["skin"]].color, 0.2)}
    a = Actor(next_id[0], "Pedestrian", (l, w, h), path, s, d, direction, speed, z,
              float(rng.normal(0, 0.08)), d_stop, None, gait)
    if occ.try_add(a):
        world.actors.append(a)
        next_id[0] += 1
