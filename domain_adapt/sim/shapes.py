"""Mesh primitives in local coordinates: boxes, bars, extruded profiles, prisms, wheels, lumpy blobs.

Each returns vertices (V, 3) float64 and triangles (T, 3) int32 with counter-clockwise faces seen from
outside; the caller places them and gives them a material through `mesh.MeshBuilder`.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# Box corners as bits (x, y, z) of the index; faces listed counter-clockwise seen from outside.
BOX_BITS = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], np.float64)
BOX_TRIS = np.array([[0, 2, 3], [0, 3, 1],  # z- (bottom)
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
    v = lo + BOX_BITS * (hi - lo)
    return v, (_box_tris_without(tuple(skip)) if skip else BOX_TRIS)


@lru_cache(maxsize=16)
def _box_tris_without(skip: tuple[int, ...]) -> np.ndarray:
    return np.delete(BOX_TRIS.reshape(6, 2, 3), list(skip), axis=0).reshape(-1, 3)


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
    local = (BOX_BITS - [0.0, 0.5, 0.5]) * [length, w, thickness]
    v = p0 + local[:, :1] * a + local[:, 1:2] * b + local[:, 2:3] * c
    return v, BOX_TRIS


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


def wheel_mesh(radius: float, width: float, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A car wheel: a closed n-gon disc about the y axis centred at the origin, `width` thick.
    Returns (2n + 2, 3) vertices and (4n, 3) triangles."""
    c, s = _circle(n)
    hw = width / 2
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


def tyre_ring_mesh(radius: float, width: float, n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """A bicycle tyre: an open ring about the y axis centred at the origin (outer and inner band plus the two
    annulus sides, rim 4 cm deep), so the LiDAR sees through the wheel. (4n, 3) vertices, (8n, 3) triangles."""
    c, s = _circle(n)
    hw = width / 2
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
    """(3, 3) rotation by `yaw` radians about +z (counter-clockwise seen from above)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@lru_cache(maxsize=64)
def _quad_tris_cached(n: int) -> np.ndarray:
    base = np.arange(n) * 4
    return np.stack([base, base + 1, base + 2, base, base + 2, base + 3], 1).reshape(-1, 3).astype(np.int32)


def quad_tris(n: int) -> np.ndarray:
    """(2n, 3) triangles of n quads stored as 4 consecutive vertices each (two per quad, in order)."""
    return _quad_tris_cached(int(2 ** math.ceil(math.log2(max(n, 1)))))[:2 * n]
