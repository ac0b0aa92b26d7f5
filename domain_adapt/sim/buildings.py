"""Buildings along the street: facades with recessed windows, front gardens, and the rows of facades or
trees that close a street's end.

A facade is built in local coordinates (u along the street, w away from it, z up) and then bent along the
road's curve through `RoadLayout.to_world`.
"""

from __future__ import annotations

import numpy as np

from domain_adapt.sim.clutter import Clutter, front_clutter, gap_clutter
from domain_adapt.sim.materials import FACADE_COLORS, MATERIAL_IDS, material_color, tint
from domain_adapt.sim.mesh import MeshBuilder
from domain_adapt.sim.road import RoadLayout, StreetChunks, place, strip
from domain_adapt.sim.roadside import bush, tree
from domain_adapt.sim.shapes import box_mesh, quad_tris

# The four reveal quads of a window recess: corners as bits (u0/u1, front/recessed, bottom/top).
_REVEAL_BITS = np.array([[(0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1)],  # left side
                         [(1, 0, 0), (1, 0, 1), (1, 1, 1), (1, 1, 0)],  # right side
                         [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0)],  # sill
                         [(0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 0, 1)]])  # lintel
# The block behind a facade: box faces without bottom and front; the first remaining pair is the roof.
_BLOCK_MAT = np.array([MATERIAL_IDS["roof"]] * 2 + [MATERIAL_IDS["facade"]] * 6, np.uint8)
_END_OFFSET = 40.0  # m; a closed street end reaches this far beyond the sidewalks on both sides


def facade(rng: np.random.Generator, width: float, height: float, ground: float, floor: float,
           depth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A building block in local coordinates: u along the street (0..width), w away from it (0..depth), z up.

    The street-facing wall is a grid of cells: wall cells at w = 0, window cells recessed 0.15-0.35 m with
    four reveal faces, so a LiDAR sees the windows as depth changes. Returns vertices (V, 3) as (u, w, z),
    triangles (T, 3) and material ids (T,).
    """
    recess = rng.uniform(0.15, 0.35)
    windows = _window_rects(rng, width, height, ground, floor)
    q, mat = _wall_quads(windows, width, height, recess)
    # The rest of the block: sides, back and roof (the front face is the facade above).
    bv, bt = box_mesh((0, 0, 0), (width, depth, height), skip=(0, 2))
    v = np.concatenate([q.reshape(-1, 3), bv])
    t = np.concatenate([quad_tris(len(q)), bt + 4 * len(q)])
    mat = np.concatenate([np.repeat(mat, 2), _BLOCK_MAT])
    return v, t, mat


def _window_rects(rng: np.random.Generator, width: float, height: float, ground: float,
                  floor: float) -> np.ndarray:
    """(N, 4) float64 windows [u0, u1, z0, z1] of a facade, in columns; shop windows on 40% of ground floors."""
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
    return wins_a


def _wall_quads(wins: np.ndarray, width: float, height: float, recess: float) -> tuple[np.ndarray, np.ndarray]:
    """The street-facing wall cut at the window edges into a grid of cells, plus each window's four reveals.

    wins (N, 4) [u0, u1, z0, z1]. Returns quads (Q, 4, 3) as (u, w, z), corners counter-clockwise seen from
    the street, and their material ids (Q,) uint8 (glass in window cells, facade elsewhere).
    """
    ub = np.unique(np.concatenate([[0.0, width], wins[:, 0], wins[:, 1]]))
    zb = np.unique(np.concatenate([[0.0, height], wins[:, 2], wins[:, 3]]))
    uc, zc = (ub[:-1] + ub[1:]) / 2, (zb[:-1] + zb[1:]) / 2
    in_u = (uc[None, :] > wins[:, 0, None]) & (uc[None, :] < wins[:, 1, None])  # (nw, nu)
    in_z = (zc[None, :] > wins[:, 2, None]) & (zc[None, :] < wins[:, 3, None])  # (nw, nz)
    is_win = (in_u[:, :, None] & in_z[:, None, :]).any(0).ravel()  # (nu * nz,) u-major
    nu, nz, nw = len(uc), len(zc), len(wins)
    nc = nu * nz
    q = np.empty((nc + 4 * nw, 4, 3))
    u0, u1 = np.repeat(ub[:-1], nz), np.repeat(ub[1:], nz)
    z0, z1 = np.tile(zb[:-1], nu), np.tile(zb[1:], nu)
    q[:nc, :, 0] = np.stack([u0, u1, u1, u0], 1)
    q[:nc, :, 1] = np.where(is_win, recess, 0.0)[:, None]
    q[:nc, :, 2] = np.stack([z0, z0, z1, z1], 1)
    # Reveals: the four sides of each window's recess, as corner bits (u1?, recessed?, top?) of its box.
    w0, w1, wz0, wz1 = wins.T
    q[nc:, :, 0] = np.stack([w0, w1], 1)[:, _REVEAL_BITS[..., 0]].reshape(-1, 4)
    q[nc:, :, 1] = np.array([0.0, recess])[_REVEAL_BITS[..., 1]][None].repeat(nw, 0).reshape(-1, 4)
    q[nc:, :, 2] = np.stack([wz0, wz1], 1)[:, _REVEAL_BITS[..., 2]].reshape(-1, 4)
    mat = np.full(len(q), MATERIAL_IDS["facade"], np.uint8)
    mat[:nc][is_win] = MATERIAL_IDS["glass"]
    return q, mat


def _facade_paint(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A building's facade colour (3,) and LiDAR reflectance."""
    color = FACADE_COLORS[rng.integers(len(FACADE_COLORS))] * rng.uniform(0.8, 1.15)
    return color, float(np.clip(rng.normal(0.38, 0.08), 0.15, 0.7))


def building_row(rng: np.random.Generator, chunks: StreetChunks, side: int, sgn: int, residential: bool,
                 clutter: Clutter | None = None) -> None:
    """Buildings along one side of the street (0 right, sgn -1; 1 left, +1), with vegetated gaps between
    them, leaving the crossing street free. Residential streets have lower houses, set back, more gaps. With
    `clutter`, gaps and front gardens get garages, fences and bins (domain_adapt.sim.clutter, its own draws)."""
    layout = chunks.layout
    line = layout.edge(side) + layout.sidewalk[side]  # building line before setback
    cross, ch = layout.crossing, layout.cross_half
    s = layout.s_min + rng.uniform(0, 10)
    while s < layout.s_max - 6:
        if cross is not None and cross - ch - 4.0 < s < cross + ch + 4.0:
            s = cross + ch + 4.0
            continue
        if rng.random() < (0.35 if residential else 0.15):
            gap = _vegetation_gap(rng, chunks, s, sgn, line)
            if clutter is not None:
                gap_clutter(chunks.at(s + gap / 2), clutter, layout, s, gap, sgn, line, layout.curb)
            s += gap
            continue
        width = _building_width(rng, layout, s, residential)
        if width is None:  # no room left before the crossing street
            s = cross + ch + 4.0
            continue
        s += _building(rng, chunks, s, width, sgn, line, residential, clutter)


def _vegetation_gap(rng: np.random.Generator, chunks: StreetChunks, s: float, sgn: int, line: float) -> float:
    """One to three trees or bushes 1.5-10 m behind the building line |d| = line, on the side of sign sgn, in
    a gap starting at s. Returns the gap's length in metres."""
    layout = chunks.layout
    gap = rng.uniform(3, 14)
    for _ in range(rng.integers(1, 4)):
        ss = s + rng.uniform(0, gap)
        dd = sgn * (line + rng.uniform(1.5, 10))
        if rng.random() < 0.5:
            tree(chunks.at(ss), rng, layout, ss, dd, layout.curb, street=False)
        else:
            bush(chunks.at(ss), rng, layout, ss, dd, layout.curb)
    return gap


def _building_width(rng: np.random.Generator, layout: RoadLayout, s: float, residential: bool) -> float | None:
    """Frontage of the next building starting at s, shortened to end 4 m before a crossing street and to the
    street's end; None when less than 5 m would be left before the crossing."""
    width = rng.uniform(9, 22) if not residential else rng.uniform(8, 14)
    cross, ch = layout.crossing, layout.cross_half
    if cross is not None and s < cross - ch and s + width > cross - ch - 4.0:
        width = cross - ch - 4.0 - s
        if width < 5:
            return None
    return min(width, layout.s_max - s)


def _building(rng: np.random.Generator, chunks: StreetChunks, s: float, width: float, sgn: int, line: float,
              residential: bool, clutter: Clutter | None = None) -> float:
    """One building of frontage `width` from s on, behind the building line |d| = line (maybe set back, with a
    hedge in the front garden). Returns how far the next building starts (width plus an alley)."""
    layout = chunks.layout
    setback = 0.0 if (not residential and rng.random() < 0.7) else rng.uniform(1.0, 6.0)
    floor = rng.uniform(2.8, 3.2)
    ground = rng.uniform(3.3, 4.4)
    floors = rng.integers(1, 3) if residential else rng.integers(2, 6)
    height = ground + floor * (floors - 1) + rng.uniform(0.3, 1.2)
    depth = rng.uniform(9, 15)
    fv, ft, fm = facade(rng, width, height, ground, floor, depth)
    # local (u, w, z) -> road (s, d): u along +s, w away from the road.
    x, y = layout.to_world(s + fv[:, 0], sgn * (line + setback + fv[:, 1]))
    v = np.stack([x, y, fv[:, 2] + layout.curb], 1)
    t = ft if sgn > 0 else ft[:, ::-1]
    color, refl = _facade_paint(rng)
    chunks.at(s + width / 2).add(v, t, fm, "building", 0, color, refl)
    if setback > 1.5 and rng.random() < 0.5:  # a hedge in the front garden
        hv, ht = box_mesh((0, -0.35, 0), (width - 0.6, 0.35, rng.uniform(0.8, 1.6)))
        hd = sgn * (line + setback * 0.5)
        col = tint(rng, material_color("foliage"), 0.15)
        chunks.at(s + width / 2).add(place(layout, hv, s + 0.3, hd, layout.curb), ht, "foliage", "vegetation",
                                     0, col)
    if clutter is not None and setback > 1.0:  # a front garden: a fence on its street side, bins
        front_clutter(chunks.at(s + width / 2), clutter, layout, s, width, sgn, line, layout.curb)
    return width + (0.0 if rng.random() < 0.6 else rng.uniform(0.5, 3.0))


def street_end(rng: np.random.Generator, chunks: StreetChunks, end: int) -> None:
    """Close the street at s_min (end 0) or s_max (end 1), as `layout.closed_ends` says: a row of facades or
    trees across the street's whole width and 40 m beyond, with a sidewalk strip in front of it."""
    layout = chunks.layout
    kind = layout.closed_ends[end]
    if kind == "open":
        return
    s_end = layout.s_min if end == 0 else layout.s_max
    out = -1.0 if end == 0 else 1.0  # away from the ego
    builder = chunks.at(s_end)
    d0 = -(layout.edge(0) + layout.sidewalk[0] + _END_OFFSET)
    d1 = layout.edge(1) + layout.sidewalk[1] + _END_OFFSET
    if kind == "trees":
        _tree_line(rng, builder, layout, s_end, out, d0, d1)
    else:
        _facade_line(rng, builder, layout, s_end, out, d0, d1)
    # The street's surface meets the facades: a sidewalk strip in front of them.
    s_a, s_b = sorted((s_end, s_end - out * 3.0))
    v, t = strip(layout, s_a, s_b, d0, d1, layout.curb + 0.001)
    builder.add(v, t, "concrete", "sidewalk")


def _tree_line(rng: np.random.Generator, builder: MeshBuilder, layout: RoadLayout, s_end: float, out: float,
               d: float, d_stop: float) -> None:
    """Trees 3-7 m apart across the street end at s_end, from d to d_stop, 1-4 m beyond it (direction out)."""
    while d < d_stop:
        tree(builder, rng, layout, s_end + out * rng.uniform(1, 4), d, layout.curb, street=False)
        d += rng.uniform(3, 7)


def _facade_line(rng: np.random.Generator, builder: MeshBuilder, layout: RoadLayout, s_end: float, out: float,
                 d: float, d_stop: float) -> None:
    """Buildings side by side across the street end at s_end, from d to d_stop, facing the street."""
    while d < d_stop:
        width = rng.uniform(8, 20)
        height = rng.uniform(7, 18)
        fv, ft, fm = facade(rng, width, height, rng.uniform(3.3, 4.4), rng.uniform(2.8, 3.2), 12.0)
        x, y = layout.to_world(s_end + out * fv[:, 1], d + fv[:, 0])
        v = np.stack([x, y, fv[:, 2] + layout.curb], 1)
        color, refl = _facade_paint(rng)
        builder.add(v, ft, fm, "building", 0, color, refl)
        d += width
