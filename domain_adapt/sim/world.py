"""Seeded procedural street scenes as triangle meshes: the simulated world behind `squeeze sim`.

A *world* is a street (straight, gently curved, or with a crossing street) lined with sidewalks and curbs,
building facades with recessed windows, street trees, bushes, lamps and signs, parked and moving cars and
vans, pedestrians and cyclists. It is drawn from a numpy Generator and then frozen; `World.scene_at(t)`
poses the moving actors at time t (seconds) and returns the triangle soup of everything near the ego
vehicle in the ego's *velodyne frame* (x forward, y left, z up, origin at the LiDAR, about 1.7 m above the
road: KITTI paper, Geiger et al. IJRR 2013, Fig. 3; drawn per scene, see `ground`). Sensors (`lidar.py`,
`camera.py`) ray-cast that soup.

Frames used here:
- road frame (s, d): s arc length along the main road's centre line, d lateral offset (left positive);
- world frame: x, y on the ground, z up; the road surface is at z = ground.height(s, d) (a smooth height field
  with slopes, camber and bumps, `ground.py`), the road starts at the origin along +x;
- velodyne frame of a frame: world moved by the inverse of the ego pose `Scene.world_from_velo`.

Every triangle carries a material (LiDAR reflectance + camera colour), a class id (CLASS_IDS) and an
instance id (0 for "stuff", 1.. for Car/Van/Pedestrian/Cyclist, stable over a sequence).

The pieces: `road` (layout, surfaces), `buildings`, `roadside` (trees, lamps, signs), `street` (chunks of
static geometry), `vehicles` and `pedestrians` (meshes), `actors` (motion, collisions), `traffic` (placement).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from domain_adapt.sim.actors import Actor
from domain_adapt.sim.clutter import Clutter
from domain_adapt.sim.ground import Ground, GroundConfig, sample_ground
from domain_adapt.sim.mesh import MeshBuilder, MeshData
from domain_adapt.sim.pedestrians import pedestrian_mesh
from domain_adapt.sim.road import RoadLayout, sample_layout
from domain_adapt.sim.shapes import box_mesh, extrude_mesh, rot_z
from domain_adapt.sim.street import Chunk, build_static
from domain_adapt.sim.traffic import place_traffic


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the street generator. Object sizes are KITTI's label statistics (mean, std) in metres."""

    car_hwl: tuple[tuple[float, float], ...] = ((1.52, 0.14), (1.63, 0.10), (3.88, 0.43))  # KITTI Car h, w, l
    van_hwl: tuple[tuple[float, float], ...] = ((2.20, 0.15), (1.90, 0.08), (5.00, 0.40))  # KITTI Van
    pedestrian_hwl: tuple[tuple[float, float], ...] = ((1.76, 0.11), (0.66, 0.08), (0.84, 0.12))  # KITTI Ped.
    cyclist_hwl: tuple[tuple[float, float], ...] = ((1.74, 0.08), (0.60, 0.05), (1.76, 0.08))  # KITTI Cyclist
    van_fraction: float = 0.12  # share of vans among vehicles (KITTI: ~2.9k vans vs ~28.7k cars, plus trucks)
    # Density and placement, drawn to match KITTI's training labels: per frame ~3.8 Car, ~0.4 Van, ~0.6
    # Pedestrian, ~0.2 Cyclist in the camera's view (28.7k / 2.9k / 4.5k / 1.6k labels over 7481 frames), and
    # cars on ~5% of the valid front-view (64 x 512) pixels (SqueezeSeg's KITTI range images; the simulator
    # with the earlier, denser settings: ~16-23%). `dense_world()` gives the earlier settings.
    parked_fill: float = 0.18  # probability that a parking slot along the curb is taken
    moving_car_spacing: tuple[float, float] = (55.0, 140.0)  # mean gap between moving cars in a lane, m
    pedestrian_spacing: tuple[float, float] = (110.0, 300.0)  # mean gap between pedestrians per sidewalk, m
    cyclist_spacing: tuple[float, float] = (400.0, 1100.0)  # mean gap between cyclists per direction, m
    busy_radius: float = 35.0  # m along the road from the ego's path with full density; thinning beyond
    busy_falloff: float = 30.0  # m, e-folding length of that thinning (traffic.Busy)
    ego_gap: float = 10.0  # m kept free ahead of and behind the ego in its lane (headway; 0: none)
    ego_speed: tuple[float, float] = (6.0, 11.0)  # ego speed in sequences, m/s (KITTI city drives)
    margin: float = 130.0  # the world extends this far beyond the ego's path (> LiDAR max range 120 m)
    cull_distance: float = 135.0  # scene_at keeps only geometry within this distance of the ego, m
    ground: GroundConfig = field(default_factory=GroundConfig)  # sensor height, slopes, camber, bumps per scene
    # Street clutter (domain_adapt.sim.clutter: garages, fences and garden walls, wheelie bins), the probability
    # of each chance for it (a gap between buildings, a front garden); 0: none, the worlds the bundled weights
    # were trained on. Its draws come from a generator of its own, so the rest of a world is the same either way.
    clutter: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.clutter <= 1.0:
            raise ValueError(f"clutter must be in [0, 1], got {self.clutter}")


def kitti_world() -> WorldConfig:
    """The default: KITTI-like city and residential streets."""
    return WorldConfig()


def dense_world() -> WorldConfig:
    """The street density of the simulator before it was matched to KITTI's label statistics (about 11 cars,
    5 pedestrians and 2 cyclists labelled per frame), on the default ground."""
    return WorldConfig(parked_fill=0.55, moving_car_spacing=(25.0, 70.0), pedestrian_spacing=(15.0, 45.0),
                       cyclist_spacing=(50.0, 140.0), busy_radius=1e9, ego_gap=0.0)


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
    sensor_height:    m, the LiDAR's height above the road surface straight below it
    """

    mesh: MeshData
    objects: list[SceneObject]
    world_from_velo: np.ndarray
    sun: np.ndarray
    time: float
    sensor_height: float = 1.73

    def boxes(self) -> np.ndarray:
        """(N, 7) float64 velodyne boxes of `objects`."""
        return np.array([o.box for o in self.objects], np.float64).reshape(-1, 7)


# KITTI's recording car is a VW Passat B6 wagon (KITTI paper, Sec. 2): about 4.8 x 1.8 m. Seen from the
# roof-mounted LiDAR, its bonnet hides the lowest rings ahead and its tail those behind, which is why real
# KITTI scans have no returns below about -20 deg straight ahead (measured on kitti_mini).
EGO_LENGTH, EGO_WIDTH = 4.8, 1.8
LIDAR_HEIGHT = 1.73  # KITTI paper, Fig. 3: Velodyne 1.73 m above the ground (nominal; drawn per scene)


@lru_cache(maxsize=16)
def ego_body_mesh(sensor_height: float = LIDAR_HEIGHT) -> MeshData:
    """The recording car around the LiDAR, in the velodyne frame (ground at z = -sensor_height).

    The body up to bonnet and boot-lid height (1.0 m) has chamfered corners in plan view; its outline is
    fitted so that the share of the front 90 degrees hidden per ring matches kitti_mini (about a third of
    ring 58's, half of ring 60's and two thirds of ring 62's pixels are empty there; nothing above ring 56).
    """
    parts = MeshBuilder()
    g = -sensor_height
    plan = np.array([(-2.26, -0.5), (-1.9, -0.9), (1.45, -0.9), (1.93, -0.45), (1.93, 0.45), (1.45, 0.9),
                     (-1.9, 0.9), (-2.26, 0.5)])
    v, t, _ = extrude_mesh(plan, g + 0.25, g + 1.0)  # extruded along the 2nd axis: swap it to be z
    parts.add(v[:, [0, 2, 1]], t, "ego", "unlabelled")
    # Roof with the sensor rack, 1.38 m above the road.
    v, t = box_mesh((-1.5, -0.7, g + 1.0), (0.55, 0.7, g + 1.38))
    parts.add(v, t, "ego", "unlabelled")
    return parts.build()


@dataclass(frozen=True, eq=False)
class World:
    """A frozen street with its actors; `scene_at(t)` poses them and returns what the sensors see."""

    layout: RoadLayout
    chunks: list[Chunk]
    actors: list[Actor]  # ordered by instance id
    ego_lane_d: float  # lateral offset of the ego's path, m
    ego_s0: float  # arc length of the ego at t = 0
    ego_speed: float  # m/s
    ego_yaw_offset: float  # heading jitter, rad
    sun_world: np.ndarray  # (3,) unit vector towards the sun
    config: WorldConfig
    ground: Ground  # the road surface's height field and the LiDAR's height above it

    def ego_pose(self, t: float) -> np.ndarray:
        """(4, 4) world_from_velo at time t: the ego drives along its lane at constant speed, level (yaw only),
        its LiDAR ground.sensor_height above the road beneath it."""
        s = self.ego_s0 + self.ego_speed * t
        x, y = self.layout.to_world(s, self.ego_lane_d)
        yaw = float(self.layout.heading(s)) + self.ego_yaw_offset
        T = np.eye(4)
        T[:3, :3] = rot_z(yaw)
        z = float(self.ground.height(s, self.ego_lane_d)) + self.ground.sensor_height
        T[:3, 3] = (float(x), float(y), z)
        return T

    def actor_box_world(self, a: Actor, t: float) -> tuple[np.ndarray, float]:
        """(7,) world box [x, y, z centre, l, w, h, yaw] of an actor at time t, and its road heading. The box's
        bottom is on the ground (road or sidewalk) at the box's centre."""
        s, d, rel = a.road_pose(t)
        x, y = self.layout.to_world(s, d)
        yaw = float(self.layout.heading(s)) + rel
        length, width, height = a.size
        z = a.z
        if a.path == "across":  # crossing the street: on the road between the curbs, else on the sidewalk
            z = 0.0 if abs(d) < self.layout.edge(0 if d < 0 else 1) else self.layout.curb
        z += float(self.ground.height(s, d))
        return np.array([float(x), float(y), z + height / 2, length, width, height, yaw]), yaw


    def scene_at(self, t: float) -> Scene:
        """The scene at time t (s) in the ego's velodyne frame."""
        T = self.ego_pose(t)
        R, p = T[:3, :3], T[:3, 3]
        Rinv = R.T
        cull = self.config.cull_distance
        meshes = [c.mesh for c in self.chunks if np.hypot(*(c.centre - p[:2])) - c.radius < cull]
        objects: list[SceneObject] = []
        for a in self.actors:
            box, yaw = self.actor_box_world(a, t)
            if not self._in_view(a, t, box, p):
                continue
            meshes.append(_actor_mesh(a, t).transformed(rot_z(yaw), (box[0], box[1], box[2] - box[5] / 2)))
            objects.append(self._scene_object(a, t, box, yaw, T))
        world = MeshData.concatenate(meshes)
        mesh = world.transformed(Rinv, -Rinv @ p)
        mesh = MeshData.concatenate([mesh, ego_body_mesh(self.ground.sensor_height)])
        objects.sort(key=lambda o: o.instance_id)
        return Scene(mesh, objects, T, Rinv @ self.sun_world, t, self.ground.sensor_height)

    def _in_view(self, a: Actor, t: float, box: np.ndarray, ego_position: np.ndarray) -> bool:
        """Whether actor a (world box (7,) at time t) is on the simulated street and within the cull distance."""
        s_a = a.road_pose(t)[0]
        if not self.layout.s_min + 1.0 <= s_a <= self.layout.s_max - 1.0:  # drove off the street, out of sight
            return False
        return bool(np.hypot(box[0] - ego_position[0], box[1] - ego_position[1]) <= self.config.cull_distance)

    def _scene_object(self, a: Actor, t: float, box: np.ndarray, yaw: float, T: np.ndarray) -> SceneObject:
        """Actor a as labelled in the velodyne frame of pose T (4, 4), given its world box (7,) and yaw."""
        R, p = T[:3, :3], T[:3, 3]
        # Velocity by finite difference (pedestrians stopping at the kerb have a kink: fine for labels).
        box2, _ = self.actor_box_world(a, t + 0.05)
        vel = np.array([box2[0] - box[0], box2[1] - box[1], 0.0]) / 0.05
        centre = R.T @ (box[:3] - p)
        yaw_v = math.atan2(math.sin(yaw - _yaw_of(R)), math.cos(yaw - _yaw_of(R)))
        box_v = np.array([*centre, *box[3:6], yaw_v])
        return SceneObject(a.instance_id, a.cls, box_v, R.T @ vel, a.moving(t))


def _actor_mesh(a: Actor, t: float) -> MeshData:
    """The actor's local mesh at time t: rigid things as built, pedestrians re-posed mid-stride."""
    if a.cls != "Pedestrian":
        return a.mesh
    walking = a.moving(t)
    return pedestrian_mesh(a.size, a.outfit, a.gait.phase_at(t, walking), walking, a.instance_id)


def _yaw_of(R: np.ndarray) -> float:
    """Heading (rad about +z) of a rotation R (3, 3) about z."""
    return math.atan2(R[1, 0], R[0, 0])


def generate_world(rng: np.random.Generator, duration: float = 0.0,
                   config: WorldConfig | None = None) -> World:
    """Draw a street and its actors. `duration` (s) is how long a sequence will run: the street is made
    long enough for the ego to drive it and moving actors are kept from colliding over that time.

    The order of the draws from rng is part of the data (the bundled weights were trained on these worlds).
    The ground is drawn last, so that a flat-ground config (`ground.flat_ground()`) gives the same street and
    actors as the default; the static street is built flat and then lifted onto the ground, vertex by vertex.
    """
    cfg = config or kitti_world()
    ego_speed = float(rng.uniform(*cfg.ego_speed)) if duration > 0 else 0.0
    layout = sample_layout(rng, cfg.margin, ego_speed * duration)
    clutter = Clutter(rng.spawn(1)[0], cfg.clutter) if cfg.clutter > 0 else None  # spawning draws nothing
    chunks, obstacles = build_static(rng, layout, clutter)
    ego_lane = int(rng.integers(layout.lanes))  # 0 = innermost right-hand lane
    ego_d = -(ego_lane + 0.5) * layout.lane_width + float(rng.normal(0, 0.15))
    sun = _sample_sun(rng)
    ego_yaw_offset = float(rng.normal(0, 0.01))
    ego = Actor(0, "Car", (EGO_LENGTH + 1.0, EGO_WIDTH + 0.2, 1.5), "along", 0.0, ego_d, 1, ego_speed, 0.0)
    actors = place_traffic(rng, cfg, layout, obstacles, ego, ego_lane, duration)
    ground = sample_ground(rng, cfg.ground, layout)
    chunks = [on_ground(c, layout, ground) for c in chunks]
    return World(layout, chunks, actors, ego_d, 0.0, ego_speed, ego_yaw_offset, sun, cfg, ground)


def on_ground(chunk: Chunk, layout: RoadLayout, ground: Ground) -> Chunk:
    """A static chunk built on the flat road (z = 0) lifted onto the ground: each vertex rises by the ground's
    height at its own (s, d), so surfaces bend with the ground (they are cut into GRID_STEP cells for that),
    kerbs, poles and trunks move up with the sidewalk beneath them, and facades shear with the slope."""
    v = chunk.mesh.vertices
    s, d = layout.to_road(v[:, 0], v[:, 1])
    lifted = v.copy()
    lifted[:, 2] += ground.height(s, d).astype(v.dtype)
    return replace(chunk, mesh=replace(chunk.mesh, vertices=lifted))


def _sample_sun(rng: np.random.Generator) -> np.ndarray:
    """(3,) unit vector towards the sun, 25-60 degrees high, from any direction."""
    sun_el, sun_az = math.radians(rng.uniform(25, 60)), rng.uniform(-math.pi, math.pi)
    return np.array([math.cos(sun_el) * math.cos(sun_az), math.cos(sun_el) * math.sin(sun_az),
                     math.sin(sun_el)])
