"""Placing the actors of a world: parked and moving cars and vans, cyclists, pedestrians on the sidewalks
and at the crosswalk, none colliding with another over the sequence.

Each placer draws candidates from the rng and keeps those that `Occupancy` accepts. Instance ids are given
after placement, 1, 2, ... in the order actors were accepted (0 is "stuff"), so a rejected candidate
consumes no id. The order of the draws is part of the data: the bundled weights were trained on it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from domain_adapt.sim.actors import Actor, Occupancy, sample_size
from domain_adapt.sim.pedestrians import sample_walker
from domain_adapt.sim.road import RoadLayout
from domain_adapt.sim.roadside import Obstacle
from domain_adapt.sim.vehicles import thing_mesh

if TYPE_CHECKING:  # world.py imports this module: only for the annotation
    from domain_adapt.sim.world import WorldConfig


def place_traffic(rng: np.random.Generator, cfg: WorldConfig, layout: RoadLayout, obstacles: list[Obstacle],
                  ego: Actor, ego_lane: int, duration: float) -> list[Actor]:
    """All actors of a world, numbered. `ego` is the recording car (kept clear, not returned), driving in
    right-hand lane `ego_lane`; `duration` (s) is how long the sequence runs (0 for a single frame)."""
    times = np.linspace(0.0, duration, max(2, int(duration / 0.25) + 1)) if duration > 0 else np.zeros(1)
    occ = Occupancy(layout, times)
    occ.try_add(ego)
    busy = Busy(cfg.busy_radius, cfg.busy_falloff, ego.s0, ego.s0 + ego.speed * duration)
    placed = _parked_cars(rng, cfg, layout, occ, busy)
    placed += _moving_traffic(rng, cfg, layout, occ, ego_lane, ego, duration, busy)
    placed += _cyclists(rng, cfg, layout, occ, busy)
    placed += _sidewalk_pedestrians(rng, cfg, layout, occ, obstacles, busy)
    placed += _crossing_pedestrians(rng, cfg, layout, occ)
    return number_actors(placed)


@dataclass(frozen=True)
class Busy:
    """Where the street is busy: full density within `radius` m (along the road) of the ego's path [s0, s1],
    thinning as exp(-(distance - radius) / falloff) beyond. KITTI's labelled objects are mostly within ~50 m
    (few beyond 70 m): far parts of a simulated street that are fully lined with cars put most labels and car
    pixels much farther out than the real data."""

    radius: float
    falloff: float
    s0: float
    s1: float

    def weight(self, s: float) -> float:
        """Density factor in (0, 1] at arc length s."""
        beyond = max(self.s0 - s, s - self.s1, 0.0) - self.radius
        return 1.0 if beyond <= 0 else math.exp(-beyond / self.falloff)


def number_actors(actors: list[Actor]) -> list[Actor]:
    """The actors with instance ids 1, 2, ... in list order; rigid meshes carry the id on every triangle."""
    return [replace(a, instance_id=i, mesh=None if a.mesh is None else a.mesh.with_instance(i))
            for i, a in enumerate(actors, start=1)]


def _vehicle(rng: np.random.Generator, cfg: WorldConfig, occ: Occupancy, s0: float, d: float, direction: int,
             speed: float, parked: bool) -> Actor | None:
    """A car or van at (s0, d) driving along the road, or None when it would collide."""
    van = rng.random() < cfg.van_fraction
    cls = "Van" if van else "Car"
    size = sample_size(rng, cfg.van_hwl if van else cfg.car_hwl)
    yaw = float(rng.normal(0, 0.05 if parked else 0.01))
    a = Actor(0, cls, size, "along", s0, d + float(rng.normal(0, 0.12 if parked else 0.08)), direction, speed,
              0.0, yaw)
    if not occ.try_add(a):
        return None
    return replace(a, mesh=thing_mesh(rng, cls, size, 0))  # drawn only once accepted


def _parked_cars(rng: np.random.Generator, cfg: WorldConfig, layout: RoadLayout, occ: Occupancy,
                 busy: Busy) -> list[Actor]:
    """Parked cars along the curbs with a parking strip, facing the direction of traffic on their side."""
    placed: list[Actor] = []
    for side, sgn in ((0, -1), (1, 1)):
        if not layout.parking[side]:
            continue
        d = sgn * (layout.lanes * layout.lane_width + layout.parking_width / 2)
        s = layout.s_min + rng.uniform(0, 5)
        while s < layout.s_max - 5:
            near_crosswalk = layout.crosswalk is not None and abs(s - layout.crosswalk) < 6
            blocked = layout.in_crossing(s, 8.0) or near_crosswalk
            if not blocked and rng.random() < cfg.parked_fill * busy.weight(s):
                placed += _accepted(_vehicle(rng, cfg, occ, s + 2.6, d, -sgn, 0.0, True))
            s += rng.uniform(5.2, 6.5) if rng.random() > 0.15 else rng.uniform(8, 20)
    return placed


def _moving_traffic(rng: np.random.Generator, cfg: WorldConfig, layout: RoadLayout, occ: Occupancy,
                    ego_lane: int, ego: Actor, duration: float, busy: Busy) -> list[Actor]:
    """Moving cars in every lane. Each lane has one speed (no overtaking within a lane); the ego's lane moves
    with the ego. In a single frame (duration 0) each car gets its own speed, for the velocity labels. In the
    ego's lane the cars ahead and behind keep `cfg.ego_gap` metres between bumpers (a driver's headway)."""
    ego_speed = ego.speed
    placed: list[Actor] = []
    for sgn in (-1, 1):
        for lane in range(layout.lanes):
            d = sgn * (lane + 0.5) * layout.lane_width
            ego_lane_here = sgn < 0 and lane == ego_lane and duration > 0
            speed = ego_speed if ego_lane_here else float(rng.uniform(6, 13))
            spacing = rng.uniform(*cfg.moving_car_spacing)
            s = layout.s_min + rng.exponential(spacing)
            while s < layout.s_max:
                v = speed if duration > 0 else float(rng.uniform(0, 13))
                tailgating = sgn < 0 and lane == ego_lane and abs(s - ego.s0) < cfg.ego_gap + ego.size[0] / 2 + 2.5
                if rng.random() < busy.weight(s) and not tailgating:
                    placed += _accepted(_vehicle(rng, cfg, occ, s, d, -sgn, v, False))
                s += 9.0 + rng.exponential(spacing)
    return placed


def _cyclists(rng: np.random.Generator, cfg: WorldConfig, layout: RoadLayout, occ: Occupancy,
              busy: Busy) -> list[Actor]:
    """Cyclists near the outer edge of the outermost lane, riding with the traffic, one speed per side."""
    placed: list[Actor] = []
    for sgn in (-1, 1):
        d = sgn * (layout.lanes * layout.lane_width - 0.45)
        speed = float(rng.uniform(3.0, 7.0))
        spacing = rng.uniform(*cfg.cyclist_spacing)
        s = layout.s_min + rng.exponential(spacing)
        while s < layout.s_max:
            size = sample_size(rng, cfg.cyclist_hwl)
            if rng.random() >= busy.weight(s):
                s += 4.0 + rng.exponential(spacing)
                continue
            a = Actor(0, "Cyclist", size, "along", s, d, -sgn, speed, 0.0, float(rng.normal(0, 0.03)))
            if occ.try_add(a):
                placed.append(replace(a, mesh=thing_mesh(rng, "Cyclist", size, 0)))
            s += 4.0 + rng.exponential(spacing)
    return placed


def _pedestrian(rng: np.random.Generator, cfg: WorldConfig, occ: Occupancy, s: float, d: float, path: str,
                direction: int, speed: float, z: float, d_stop: float | None = None) -> Actor | None:
    """A pedestrian at (s, d) walking `path` ("along" or "across"), or None when it would collide."""
    l, w, h = sample_size(rng, cfg.pedestrian_hwl)  # noqa: E741
    w = max(w, 0.5)
    gait, outfit = sample_walker(rng, speed)
    a = Actor(0, "Pedestrian", (l, w, h), path, s, d, direction, speed, z, float(rng.normal(0, 0.08)), d_stop,
              None, gait, outfit)
    return a if occ.try_add(a) else None


def _sidewalk_pedestrians(rng: np.random.Generator, cfg: WorldConfig, layout: RoadLayout, occ: Occupancy,
                          obstacles: list[Obstacle], busy: Busy) -> list[Actor]:
    """Pedestrians on both sidewalks in bands of walkers (one speed and direction per band), some standing;
    standing ones keep clear of trees and lamp posts."""
    obst = np.array(obstacles, np.float64).reshape(-1, 3)
    placed: list[Actor] = []
    for side, sgn in ((0, -1), (1, 1)):
        e, sw = layout.edge(side), layout.sidewalk[side]
        n_bands = max(1, int((sw - 0.9) / 0.75))
        spacing = rng.uniform(*cfg.pedestrian_spacing)
        for b in range(n_bands):
            d = sgn * (e + 0.95 + 0.75 * b + 0.3)
            if abs(d) > e + sw - 0.35:
                d = sgn * (e + sw - 0.4)
            placed += _pedestrian_band(rng, cfg, layout, occ, obst, d, spacing * n_bands, busy)
    return placed


def _pedestrian_band(rng: np.random.Generator, cfg: WorldConfig, layout: RoadLayout, occ: Occupancy,
                     obst: np.ndarray, d: float, spacing: float, busy: Busy) -> list[Actor]:
    """Walkers along the sidewalk at lateral offset d, a mean `spacing` metres apart.
    obst (K, 3) s, d, radius of the obstacles on the sidewalks."""
    standing = rng.random() < 0.25
    speed = 0.0 if standing else float(rng.uniform(0.9, 1.6))
    direction = int(rng.choice([-1, 1]))
    s = layout.s_min + rng.exponential(spacing)
    placed: list[Actor] = []
    while s < layout.s_max:
        if layout.in_crossing(s, 0.5):
            s += 2 * layout.cross_half
            continue
        clash = len(obst) and (np.hypot(obst[:, 0] - s, obst[:, 1] - d) < obst[:, 2] + 0.8).any()
        if standing and clash:
            s += 1.0
            continue
        if rng.random() < busy.weight(s):
            placed += _accepted(_pedestrian(rng, cfg, occ, s, d, "along", direction, speed, layout.curb))
        s += 1.5 + rng.exponential(spacing)
    return placed


def _crossing_pedestrians(rng: np.random.Generator, cfg: WorldConfig, layout: RoadLayout,
                          occ: Occupancy) -> list[Actor]:
    """Up to three pedestrians crossing at the crosswalk, from one sidewalk to the other."""
    if layout.crosswalk is None:
        return []
    placed: list[Actor] = []
    for _ in range(int(rng.integers(0, 4))):
        start_side = int(rng.choice([-1, 1]))
        d0 = start_side * (layout.edge(0 if start_side < 0 else 1) + rng.uniform(-3, 1.5))
        d_stop = -start_side * (layout.edge(1 if start_side < 0 else 0) + 1.2)
        s = layout.crosswalk + rng.uniform(-1.5, 1.5)
        placed += _accepted(_pedestrian(rng, cfg, occ, s, d0, "across", -start_side,
                                        float(rng.uniform(1.0, 1.5)), 0.0, d_stop))
    return placed


def _accepted(actor: Actor | None) -> list[Actor]:
    """[actor], or [] for a rejected candidate."""
    return [] if actor is None else [actor]
