"""Things that move: Car, Van, Pedestrian and Cyclist actors with a simple motion model in road
coordinates, and the occupancy test that keeps them from colliding over a sequence."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from domain_adapt.sim.mesh import MeshData
from domain_adapt.sim.pedestrians import Gait, Outfit
from domain_adapt.sim.road import RoadLayout


@dataclass(frozen=True, eq=False)
class Actor:
    """A thing (Car, Van, Pedestrian, Cyclist) with a simple motion model in road coordinates.

    path "along": s(t) = s0 + direction * speed * t at fixed d; "across": d(t) = d0 + direction * speed * t,
    clamped to d_stop (a pedestrian crossing the street stops on the far sidewalk), at fixed s.
    The local mesh has its origin at the box's bottom centre, x forward (length), y left (width), z up.
    """

    instance_id: int  # 0 until the world is assembled (then 1, 2, ... in placement order)
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
    gait: Gait | None = None  # pedestrians only
    outfit: Outfit | None = None  # pedestrians only

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
        """Whether the actor moves at time t (a crossing pedestrian stops on the far sidewalk)."""
        if self.speed == 0.0:
            return False
        if self.path == "across" and self.d_stop is not None:
            _, d, _ = self.road_pose(t)
            return d != self.d_stop
        return True


def truncated_normal(rng: np.random.Generator, mean_std: tuple[float, float], k: float = 2.5) -> float:
    """One draw of N(mean, std) clipped to mean +- k std."""
    mean, std = mean_std
    return float(mean + std * min(k, max(-k, rng.standard_normal())))


def sample_size(rng: np.random.Generator, hwl: tuple[tuple[float, float], ...]) -> tuple[float, float, float]:
    """(l, w, h) drawn from KITTI's label statistics given as ((h mean, std), (w ...), (l ...))."""
    h, w, l = (truncated_normal(rng, ms) for ms in hwl)  # noqa: E741
    return l, w, h


class Occupancy:
    """Footprints of accepted actors sampled over the sequence, for rejecting collisions.

    A footprint is a few discs along the actor's length (radius half its width plus 0.15 m), sampled at
    `times`; two actors collide when any of their discs overlap at the same time. A bounding-box test over
    the whole sequence picks the few accepted actors worth comparing.
    """

    def __init__(self, layout: RoadLayout, times: np.ndarray) -> None:
        self.layout = layout
        self.times = times  # (n_t,) s
        self.discs: list[np.ndarray] = []  # each (n_t, k, 3): x, y, r
        self.bbox = np.zeros((64, 4))  # x0, y0, x1, y1 per accepted actor (capacity grows)

    def footprint(self, a: Actor) -> np.ndarray:
        """(n_t, k, 3) discs x, y, r (world frame) covering the actor at each sampled time."""
        length, width, _ = a.size
        k = max(1, int(math.ceil(length / max(width, 0.5))))
        offs = np.linspace(-(length - width) / 2, (length - width) / 2, k) if k > 1 else np.zeros(1)
        s, d, rel = a.road_poses(self.times)
        x, y = self.layout.to_world(s, d)
        yaw = self.layout.heading(s) + rel
        out = np.empty((len(self.times), k, 3))
        out[:, :, 0] = np.asarray(x)[:, None] + offs[None] * np.cos(yaw)[:, None]
        out[:, :, 1] = np.asarray(y)[:, None] + offs[None] * np.sin(yaw)[:, None]
        out[:, :, 2] = width / 2 + 0.15
        return out

    def try_add(self, a: Actor) -> bool:
        """Accept the actor and return True unless it collides with an accepted one at some sampled time."""
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
