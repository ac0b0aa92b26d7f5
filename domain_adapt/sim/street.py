"""The static street: road surfaces, buildings, vegetation and street furniture, cut into chunks along the
road so that a frame keeps only the chunks within sensor range."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from domain_adapt.sim.buildings import building_row, street_end
from domain_adapt.sim.clutter import Clutter
from domain_adapt.sim.mesh import MeshData
from domain_adapt.sim.road import RoadLayout, StreetChunks, road_surface
from domain_adapt.sim.roadside import Obstacle, street_furniture


@dataclass(frozen=True, eq=False)
class Chunk:
    """A piece of static street in the world frame, with a bounding circle for culling."""

    mesh: MeshData  # world frame
    centre: np.ndarray  # (2,) world x, y of the bounding box centre
    radius: float  # m, half the bounding box diagonal


def build_static(rng: np.random.Generator, layout: RoadLayout,
                 clutter: Clutter | None = None) -> tuple[list[Chunk], list[Obstacle]]:
    """Road, markings, curbs, sidewalks, terrain, buildings and street furniture, cut into chunks along s; with
    `clutter`, garages, fences and bins too (domain_adapt.sim.clutter).

    Returns the non-empty chunks and the (s, d, radius) obstacles on the sidewalks (trees, poles) that
    standing pedestrians must avoid.
    """
    chunks = StreetChunks(layout)
    road_surface(rng, chunks)
    residential = rng.random() < 0.45
    obstacles: list[Obstacle] = []
    for side, sgn in ((0, -1), (1, 1)):
        building_row(rng, chunks, side, sgn, residential, clutter)
        obstacles += street_furniture(rng, chunks, side, sgn)
    for end in (0, 1):
        street_end(rng, chunks, end)
    return [_chunk(m) for m in (b.build() for b in chunks.builders) if len(m)], obstacles


def _chunk(mesh: MeshData) -> Chunk:
    """A chunk around a non-empty mesh."""
    lo, hi = mesh.vertices[:, :2].min(0), mesh.vertices[:, :2].max(0)
    centre = (lo + hi) / 2
    return Chunk(mesh, centre.astype(np.float64), float(np.linalg.norm(hi - lo) / 2))
