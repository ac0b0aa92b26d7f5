"""The street in road coordinates and its flat surfaces: carriageway, markings, curbs, sidewalks, terrain.

Road frame (s, d): s is the arc length along the main road's centre line, d the lateral offset (left
positive). The world frame has x, y on the ground (z = 0 is the road surface) and the road starting at the
origin along +x. The static world is cut into chunks of `CHUNK_LENGTH` metres along s, so that a frame only
ray-casts the chunks near the ego.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from domain_adapt.sim.mesh import MeshBuilder
from domain_adapt.sim.shapes import rot_z

CHUNK_LENGTH = 25.0  # m of street per chunk of static geometry
TERRAIN_WIDTH = 70.0  # m; the grass beyond the sidewalks reaches this far
CROSSING_SIDEWALK = 2.5  # m, sidewalk width along the crossing street
MARKING_HEIGHT = 0.012  # m above the road: paint stays above the road grid where the ground bends between vertices


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

    def to_road(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World (x, y) -> road (s, d), the inverse of to_world for |d| < 1 / |curvature|; any matching shapes.

        On the arc, (x, y - 1/k) = (1/k - d)(sin ks, -cos ks), so d is 1/k minus the signed distance from the
        circle's centre (0, 1/k) and s the angle about it divided by k.
        """
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        k = self.curvature
        if k == 0.0:
            return x.copy(), y.copy()
        r0 = 1.0 / k
        sgn = 1.0 if k > 0 else -1.0
        th = np.arctan2(sgn * x, -sgn * (y - r0))
        return th / k, r0 - sgn * np.hypot(x, y - r0)

    def heading(self, s: np.ndarray | float) -> np.ndarray | float:
        """The road's direction (rad, from world +x) at arc length s, any shape."""
        return self.curvature * np.asarray(s, np.float64)

    def in_crossing(self, s: np.ndarray | float, pad: float = 0.0) -> np.ndarray | bool:
        """Whether s (any shape) lies within the crossing street, widened by pad metres on each side."""
        if self.crossing is None:
            return np.zeros_like(np.asarray(s), bool) if np.ndim(s) else False
        return np.abs(np.asarray(s) - self.crossing) < self.cross_half + pad



def sample_layout(rng: np.random.Generator, margin: float, ego_span: float) -> RoadLayout:
    """Draw the street. It reaches `margin` metres beyond the ego's path [0, ego_span] unless an end is
    closed (a T-junction's facades or a tree line 60-125 m away): real streets rarely run empty to the
    LiDAR's 120 m, and without such ends the upper rings looking along the road return far too little.

    The order of the draws from `rng` is part of the data: the bundled weights were trained on it.
    """
    ends = [_sample_street_end(rng, margin) for _ in range(2)]
    s_min, s_max = -ends[0][1], ego_span + ends[1][1]
    style = rng.choice(["straight", "curve", "crossing"], p=[0.4, 0.3, 0.3])
    curvature = _sample_curvature(rng, s_max - s_min) if style == "curve" else 0.0
    lanes = int(rng.choice([1, 2], p=[0.7, 0.3]))
    crossing = _sample_crossing(rng, ego_span) if style == "crossing" else None
    cross_half = float(rng.uniform(3.2, 4.5))
    crosswalk = _sample_crosswalk(rng, crossing, cross_half)
    return RoadLayout(
        curvature=curvature, lanes=lanes, lane_width=float(rng.uniform(3.3, 3.75)),
        parking=(bool(rng.random() < 0.8), bool(rng.random() < 0.65)),
        parking_width=float(rng.uniform(2.1, 2.4)),
        sidewalk=(float(rng.uniform(2.2, 4.5)), float(rng.uniform(2.2, 4.5))),
        curb=float(rng.uniform(0.11, 0.16)),
        s_min=s_min, s_max=s_max, crossing=crossing, cross_half=cross_half, crosswalk=crosswalk,
        closed_ends=(ends[0][0], ends[1][0]))


def _sample_street_end(rng: np.random.Generator, margin: float) -> tuple[str, float]:
    """What closes one end of the street ("open", "buildings", "trees") and its distance from the ego's path."""
    kind = str(rng.choice(["open", "buildings", "trees"], p=[0.3, 0.5, 0.2]))
    return kind, margin if kind == "open" else float(rng.uniform(60, min(125, margin)))


def _sample_curvature(rng: np.random.Generator, length: float) -> float:
    """Gentle: turn at most ~1 rad over the whole street (`length` m) so long sequences do not loop."""
    k_max = min(1 / 350, 1.0 / max(length, 1.0))
    return float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.0) * k_max)


def _sample_crossing(rng: np.random.Generator, ego_span: float) -> float:
    """s of a crossing street: ahead of or behind the ego's start or end, within the LiDAR's view."""
    return float(rng.choice([-1, 1]) * rng.uniform(18, 50) + (ego_span if rng.random() < 0.5 else 0))


def _sample_crosswalk(rng: np.random.Generator, crossing: float | None, cross_half: float) -> float | None:
    """s of a crosswalk's centre: beside the crossing street when there is one, else on 30% of streets."""
    if crossing is not None:
        return crossing + float(rng.choice([-1, 1])) * (cross_half + 3.5)
    if rng.random() < 0.3:
        return float(rng.uniform(12, 45) * rng.choice([-1, 1]))
    return None


class StreetChunks:
    """One MeshBuilder per CHUNK_LENGTH metres of street; static geometry goes to the chunk of its s."""

    def __init__(self, layout: RoadLayout, chunk_length: float = CHUNK_LENGTH) -> None:
        self.layout = layout
        self.chunk_length = chunk_length
        n = int(math.ceil((layout.s_max - layout.s_min) / chunk_length))
        self.builders = [MeshBuilder() for _ in range(n)]

    def index(self, s: float) -> int:
        """The chunk holding arc length s (clamped to the street)."""
        n = len(self.builders)
        return min(n - 1, max(0, int((s - self.layout.s_min) // self.chunk_length)))

    def at(self, s: float) -> MeshBuilder:
        """The builder of the chunk holding arc length s."""
        return self.builders[self.index(s)]

    def span(self, k: int) -> tuple[float, float]:
        """[s0, s1] of chunk k."""
        s0 = self.layout.s_min + k * self.chunk_length
        return s0, min(self.layout.s_max, s0 + self.chunk_length)


GRID_STEP = 2.0  # m; flat surfaces are cut into cells at most this long and wide, so the ground can bend


def _grid_count(length: np.ndarray, step: float) -> int:
    """Cells along a side: the longest of `length` (K,) cut into pieces of at most `step` metres (>= 1)."""
    return max(1, int(math.ceil(float(np.abs(length).max()) / step - 1e-9)))


def strips(layout: RoadLayout, s0: np.ndarray, s1: np.ndarray, d0: np.ndarray, d1: np.ndarray,
           z: np.ndarray, step: float = GRID_STEP) -> tuple[np.ndarray, np.ndarray, int, int]:
    """K flat ribbons at once, over s in [s0_k, s1_k], d in [d0_k, d1_k] at height z_k (all (K,) arrays),
    following the road's curve, each a grid of n x m cells at most `step` metres along s and across d (so a
    height field applied to the vertices later bends them); normals point up.

    Returns vertices (K * nv, 3), triangles (K * nt, 3), nv and nt: ribbon k owns vertices [k nv, (k + 1) nv)
    and triangles [k nt, (k + 1) nt), so callers can split the result.
    """
    s0, s1, d0, d1, z = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, np.float64))
                                              for a in (s0, s1, d0, d1, z)))
    k = len(s0)
    n, m = _grid_count(s1 - s0, step), _grid_count(d1 - d0, step)
    u = np.linspace(0.0, 1.0, n + 1)
    w = np.linspace(0.0, 1.0, m + 1)
    ss = s0[:, None, None] + (s1 - s0)[:, None, None] * u[None, :, None]  # (K, n + 1, 1)
    dd = d0[:, None, None] + (d1 - d0)[:, None, None] * w[None, None, :]  # (K, 1, m + 1)
    ss, dd = np.broadcast_arrays(ss, dd)
    x, y = layout.to_world(ss, dd)
    v = np.stack([x, y, np.broadcast_to(z[:, None, None], ss.shape)], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n), np.arange(m), indexing="ij")
    a = (i * (m + 1) + j).ravel()  # lower-left corner of each cell; +1 steps across d, +(m + 1) along s
    tri = np.concatenate([np.stack([a, a + m + 1, a + m + 2], 1), np.stack([a, a + m + 2, a + 1], 1)])
    nv, nt = (n + 1) * (m + 1), 2 * n * m
    t = tri[None] + nv * np.arange(k)[:, None, None]
    down = (d1 - d0) * (s1 - s0) < 0  # would face down: flip the winding
    t[down] = t[down][:, :, ::-1]
    return v, t.reshape(-1, 3).astype(np.int32), nv, nt


def walls(layout: RoadLayout, s0: np.ndarray, s1: np.ndarray, d: np.ndarray, z0: float, z1: float,
          step: float = GRID_STEP) -> tuple[np.ndarray, np.ndarray, int]:
    """K vertical ribbons (curb faces) at d_k from z0 to z1 over s in [s0_k, s1_k], cut along s like the
    strips beside them (same step, so their top edges share the sidewalks' vertices). Returns vertices
    (K (2n + 2), 3), triangles (K 2n, 3) and n."""
    s0, s1, d = np.broadcast_arrays(*(np.atleast_1d(np.asarray(a, np.float64)) for a in (s0, s1, d)))
    k = len(s0)
    n = _grid_count(s1 - s0, step)
    s = s0[:, None] + (s1 - s0)[:, None] * np.linspace(0.0, 1.0, n + 1)
    x, y = layout.to_world(s, np.repeat(d[:, None], n + 1, 1))
    x2, y2 = np.concatenate([x, x], 1), np.concatenate([y, y], 1)
    zz = np.concatenate([np.full((k, n + 1), z0), np.full((k, n + 1), z1)], 1)
    v = np.stack([x2, y2, zz], -1).reshape(-1, 3)
    i = np.arange(n)
    tri = np.concatenate([np.stack([i, i + 1, n + 2 + i], 1), np.stack([i, n + 2 + i, n + 1 + i], 1)])
    t = tri[None] + (2 * n + 2) * np.arange(k)[:, None, None]
    return v, t.reshape(-1, 3).astype(np.int32), n


def strip(layout: RoadLayout, s0: float, s1: float, d0: float, d1: float, z: float,
          step: float = GRID_STEP) -> tuple[np.ndarray, np.ndarray]:
    """One flat ribbon (see strips): vertices (V, 3), triangles (T, 3)."""
    v, t, _, _ = strips(layout, s0, s1, d0, d1, z, step)
    return v, t


class Ribbons:
    """Flat ribbons and curb faces collected per (material, class) and built in one vectorised call each,
    then handed to the chunk each belongs to."""

    def __init__(self) -> None:
        self.flat: dict[tuple[str, str], list[tuple[int, float, float, float, float, float]]] = {}
        self.walls: list[tuple[int, float, float, float]] = []

    def strip(self, chunk: int, material: str, cls: str, s0: float, s1: float, d0: float, d1: float,
              z: float) -> None:
        """Queue a flat ribbon over s in [s0, s1], d in [d0, d1] at height z for chunk `chunk`."""
        self.flat.setdefault((material, cls), []).append((chunk, s0, s1, d0, d1, z))

    def wall(self, chunk: int, s0: float, s1: float, d: float) -> None:
        """Queue a curb face at d over s in [s0, s1] for chunk `chunk`."""
        self.walls.append((chunk, s0, s1, d))

    def emit(self, layout: RoadLayout, parts: list[MeshBuilder]) -> None:
        """Build every queued ribbon, one vectorised call per (material, class), sorted by chunk, and add each
        chunk's share to parts[chunk]."""
        jobs = [(m, c, np.array(sorted(rows), np.float64)) for (m, c), rows in self.flat.items()]
        if self.walls:
            jobs.append(("curb", "sidewalk", np.array(sorted(self.walls), np.float64)))
        for material, cls, rows in jobs:
            if rows.shape[1] == 6:
                v, t, nv, nt = strips(layout, rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5])
            else:
                v, t, n = walls(layout, rows[:, 1], rows[:, 2], rows[:, 3], 0.0, layout.curb)
                nv, nt = 2 * n + 2, 2 * n
            chunk = rows[:, 0].astype(int)
            for c in np.unique(chunk):
                lo, hi = np.searchsorted(chunk, c), np.searchsorted(chunk, c, side="right")
                parts[c].add(v[lo * nv:hi * nv], t[lo * nt:hi * nt] - lo * nv, material, cls)



def subtract(a: float, b: float, lo: float, hi: float) -> list[tuple[float, float]]:
    """The interval [a, b] minus (lo, hi), as a list of 0-2 non-empty intervals."""
    return [(x, y) for x, y in ((a, min(b, lo)), (max(a, hi), b)) if y - x > 1e-6]


def place(layout: RoadLayout, v: np.ndarray, s: float, d: float, z: float, yaw: float = 0.0) -> np.ndarray:
    """Move local vertices (x along the road, y to the left) to road position (s, d) at height z."""
    x, y = layout.to_world(s, d)
    return v @ rot_z(float(layout.heading(s)) + yaw).T + (float(x), float(y), z)


def road_surface(rng: np.random.Generator, chunks: StreetChunks) -> None:
    """Add the street's flat surfaces to `chunks`: carriageway, sidewalks, curbs and terrain of every chunk,
    the crossing street, dashed lane markings and the crosswalk. Draws one number from rng (the dashes'
    phase)."""
    layout = chunks.layout
    rib = Ribbons()
    for k in range(len(chunks.builders)):
        _chunk_surfaces(rib, layout, k, *chunks.span(k))
    if layout.crossing is not None:
        _crossing_street(rib, chunks)
    _lane_markings(rib, rng, chunks)
    _crosswalk(rib, chunks)
    rib.emit(layout, chunks.builders)


def _chunk_surfaces(rib: Ribbons, layout: RoadLayout, k: int, s0: float, s1: float) -> None:
    """Road, sidewalks with their curbs and terrain of chunk k, over s in [s0, s1]."""
    edges = (layout.edge(0), layout.edge(1))
    cross, ch = layout.crossing, layout.cross_half
    rib.strip(k, "asphalt", "road", s0, s1, -edges[0], edges[1], 0.0)
    # Pieces of s not interrupted by a crossing street.
    pieces = [(s0, s1)] if cross is None else subtract(s0, s1, cross - ch, cross + ch)
    # Terrain beyond the sidewalks stops where the crossing street's own sidewalks begin.
    terrain = [(s0, s1)] if cross is None else subtract(s0, s1, cross - ch - CROSSING_SIDEWALK,
                                                         cross + ch + CROSSING_SIDEWALK)
    for side, sgn in ((0, -1), (1, 1)):
        e, sw = edges[side], layout.sidewalk[side]
        for a, b in pieces:
            rib.strip(k, "concrete", "sidewalk", a, b, sgn * e, sgn * (e + sw), layout.curb)
            rib.wall(k, a, b, sgn * e)
        for a, b in terrain:
            rib.strip(k, "grass", "terrain", a, b, sgn * (e + sw), sgn * (e + sw + TERRAIN_WIDTH), layout.curb)


def _crossing_street(rib: Ribbons, chunks: StreetChunks) -> None:
    """The crossing street: its road, curbs, sidewalks and centre dashes, straight out on both sides."""
    layout = chunks.layout
    cross, ch = layout.crossing, layout.cross_half
    k = chunks.index(cross)
    for side, sgn in ((0, -1), (1, 1)):
        e, sw = layout.edge(side), layout.sidewalk[side]
        far = e + sw + TERRAIN_WIDTH
        rib.strip(k, "asphalt", "road", cross - ch, cross + ch, sgn * e, sgn * far, 0.0)
        for sc, ssgn in ((cross - ch, -1), (cross + ch, 1)):
            s_out = sc + ssgn * CROSSING_SIDEWALK
            rib.strip(k, "concrete", "sidewalk", min(sc, s_out), max(sc, s_out), sgn * (e + sw), sgn * far,
                      layout.curb)
            # Curb face along the crossing street (vertical, at s = sc; crossings only occur on straight
            # streets, where road and world coordinates agree), cut like the sidewalk beside it.
            qv, qt = _crossing_curb(sc, sgn * e, sgn * far, layout.curb)
            chunks.builders[k].add(qv, qt, "curb", "sidewalk")
        for dd in np.arange(e + 2.0, far, 9.0):
            rib.strip(k, "marking", "road", cross - 0.06, cross + 0.06, sgn * dd, sgn * (dd + 3.0), MARKING_HEIGHT)


def _crossing_curb(s: float, d0: float, d1: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """A vertical curb face at s from d0 to d1, 0 to `height` m, in GRID_STEP cells: vertices (2n + 2, 3)
    as (s, d, z), triangles (2n, 3)."""
    n = _grid_count(np.array([d1 - d0]), GRID_STEP)
    d = np.linspace(d0, d1, n + 1)
    v = np.concatenate([np.stack([np.full(n + 1, s), d, np.zeros(n + 1)], 1),
                        np.stack([np.full(n + 1, s), d, np.full(n + 1, height)], 1)])
    i = np.arange(n)
    t = np.concatenate([np.stack([i, i + 1, n + 2 + i], 1), np.stack([i, n + 2 + i, n + 1 + i], 1)])
    return v, t.astype(np.int32)


def _lane_markings(rib: Ribbons, rng: np.random.Generator, chunks: StreetChunks) -> None:
    """Dashed lines 3 m long every 9 m (German urban "Leitlinie"), 0.12 m wide, between all lanes."""
    layout = chunks.layout
    lines = [0.0] + [sgn * i * layout.lane_width for i in range(1, layout.lanes) for sgn in (-1, 1)]
    offset = rng.uniform(0, 9)
    for dl in lines:
        for s in np.arange(layout.s_min + offset, layout.s_max - 3.0, 9.0):
            if layout.crossing is not None and abs(s + 1.5 - layout.crossing) < layout.cross_half + 2.0:
                continue
            rib.strip(chunks.index(s), "marking", "road", s, s + 3.0, dl - 0.06, dl + 0.06, MARKING_HEIGHT)


def _crosswalk(rib: Ribbons, chunks: StreetChunks) -> None:
    """Zebra stripes 0.5 m wide and 4 m long across the whole carriageway, if the street has a crosswalk."""
    layout = chunks.layout
    if layout.crosswalk is None:
        return
    k = chunks.index(layout.crosswalk)
    for dd in np.arange(-layout.edge(0) + 0.3, layout.edge(1) - 0.5, 1.0):
        rib.strip(k, "marking", "road", layout.crosswalk - 2.0, layout.crosswalk + 2.0, dd, dd + 0.5, MARKING_HEIGHT)
