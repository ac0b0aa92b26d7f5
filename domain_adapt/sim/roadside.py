"""Vegetation and street furniture: trees, bushes, lamp posts and traffic signs.

Each function adds one item at road position (s, d) on ground height z to a MeshBuilder; `street_furniture`
lines one side of the street with them and returns the obstacles pedestrians must keep clear of.
"""

from __future__ import annotations

import numpy as np

from domain_adapt.sim.materials import SIGN_COLORS, material_color, tint
from domain_adapt.sim.mesh import MeshBuilder
from domain_adapt.sim.road import RoadLayout, StreetChunks, place
from domain_adapt.sim.shapes import blob_mesh, box_mesh, cylinder_mesh

Obstacle = tuple[float, float, float]  # (s, d, radius) in road coordinates, metres


def tree(parts: MeshBuilder, rng: np.random.Generator, layout: RoadLayout, s: float, d: float, z: float,
          street: bool = True) -> None:
    """A tree at (s, d): a 7-gon trunk and a lumpy crown. Street trees have a taller clear trunk (2.6-4 m)
    than garden trees (1.2-3 m)."""
    trunk_h = rng.uniform(2.6, 4.0) if street else rng.uniform(1.2, 3.0)
    r_trunk = rng.uniform(0.1, 0.22)
    v, t = cylinder_mesh(r_trunk, 0, trunk_h + 0.5, 7)
    parts.add(place(layout, v, s, d, z), t, "bark", "vegetation")
    radii = np.array([rng.uniform(1.6, 3.2), 0, rng.uniform(1.6, 3.6)])
    radii[1] = radii[0] * rng.uniform(0.85, 1.15)
    v, t = blob_mesh(rng, radii, 0.3, 6, 9)
    v = v + (0, 0, trunk_h + radii[2] * 0.85)
    col = tint(rng, material_color("foliage"), 0.15)
    parts.add(place(layout, v, s, d, z, rng.uniform(0, 6.3)), t, "foliage", "vegetation", 0, col,
              float(np.clip(rng.normal(0.40, 0.06), 0.2, 0.6)))


def bush(parts: MeshBuilder, rng: np.random.Generator, layout: RoadLayout, s: float, d: float, z: float) -> None:
    """A bush at (s, d): a lumpy blob 1-2.6 m across, sitting on the ground."""
    radii = np.array([rng.uniform(0.5, 1.3), rng.uniform(0.5, 1.3), rng.uniform(0.4, 0.9)])
    v, t = blob_mesh(rng, radii, 0.2, 5, 7)
    v = v + (0, 0, radii[2] * 0.8)
    col = tint(rng, material_color("foliage"), 0.15)
    parts.add(place(layout, v, s, d, z), t, "foliage", "vegetation", 0, col,
              float(np.clip(rng.normal(0.42, 0.06), 0.2, 0.6)))


def lamp(parts: MeshBuilder, layout: RoadLayout, s: float, d: float, z: float, side: int) -> None:
    """A 7 m lamp post at (s, d) on side 0 (right) or 1 (left), its arm and lamp reaching over the road."""
    height = 7.0
    v, t = cylinder_mesh(0.09, 0, height, 6)
    parts.add(place(layout, v, s, d, z), t, "metal", "pole")
    reach = 1.6 * (-1 if side == 1 else 1)  # the arm reaches over the road
    v, t = box_mesh((-0.05, min(0, reach), height - 0.12), (0.05, max(0, reach), height))
    parts.add(place(layout, v, s, d, z), t, "metal", "pole")
    v, t = box_mesh((-0.25, reach - 0.15, height - 0.3), (0.25, reach + 0.15, height - 0.1))
    parts.add(place(layout, v, s, d, z), t, "metal", "pole")


def sign(parts: MeshBuilder, rng: np.random.Generator, layout: RoadLayout, s: float, d: float, z: float) -> None:
    """A traffic sign at (s, d): a thin post and a 0.6-0.8 m retroreflective plate facing along the road."""
    v, t = cylinder_mesh(0.035, 0, 2.6, 6)
    parts.add(place(layout, v, s, d, z), t, "metal", "pole")
    size = rng.uniform(0.6, 0.8)
    v, t = box_mesh((-0.02, -size / 2, 2.0), (0.02, size / 2, 2.0 + size))
    parts.add(place(layout, v, s, d + 0.05, z), t, "sign", "traffic_sign", 0,
              SIGN_COLORS[rng.integers(len(SIGN_COLORS))])


def street_furniture(rng: np.random.Generator, chunks: StreetChunks, side: int, sgn: int) -> list[Obstacle]:
    """Lamps, street trees and signs in a 0.6 m band at the curb of one side (0 right, sgn -1; 1 left, +1).

    Returns their (s, d, radius) footprints: standing pedestrians are kept clear of them.
    """
    layout = chunks.layout
    d_furn = sgn * (layout.edge(side) + 0.55)
    spacing = rng.uniform(9, 16)
    s = layout.s_min + rng.uniform(0, spacing)
    has_trees = rng.random() < 0.7
    lamp_every = int(rng.integers(2, 4))
    obstacles: list[Obstacle] = []
    i = 0
    while s < layout.s_max - 2:
        crosswalk_near = layout.crosswalk is not None and abs(s - layout.crosswalk) < 3.0
        if not layout.in_crossing(s, 1.0) and not crosswalk_near:
            if i % lamp_every == 0:
                lamp(chunks.at(s), layout, s, d_furn, layout.curb, side)
                obstacles.append((s, d_furn, 0.3))
            elif has_trees:
                tree(chunks.at(s), rng, layout, s, d_furn, layout.curb)
                obstacles.append((s, d_furn, 0.4))
            elif rng.random() < 0.3:
                sign(chunks.at(s), rng, layout, s, d_furn, layout.curb)
                obstacles.append((s, d_furn, 0.3))
        s += spacing * rng.uniform(0.8, 1.2)
        i += 1
    return obstacles
