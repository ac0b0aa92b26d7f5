"""One simulated frame in memory: a scene, one ray cast for the LiDAR and the camera, labels, range image.

`Simulator(seed, frames, config).frame(i)` gives frame i. Frames are independent scenes (frame i draws its
world from the seed sequence (seed, i)) unless `config.sequence`: then one world is drawn and the ego drives
through it at 10 Hz (KITTI's LiDAR rate) while cars, cyclists and pedestrians move; instance ids stay the
same across frames.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace

import numpy as np
import open3d as o3d
import open3d.core as o3c

from domain_adapt.sensor_profile import SensorProfile, apply_sensor_profile
from domain_adapt.sim.camera import CameraConfig, CameraImage, camera_rays, kitti_calibration, render, shadow_rays
from domain_adapt.sim.ground import flat_ground
from domain_adapt.sim.labels import FrameLabels, label_objects
from domain_adapt.sim.lidar import LidarConfig, Scan, hdl64e, lidar_rays, scan
from domain_adapt.sim.world import Scene, World, WorldConfig, dense_world, generate_world, kitti_world
from squeeze.kitti import Calibration
from squeeze.point_labels import squeezeseg_from_point_classes
from squeeze.range_image import RangeImage, project_scan, squeezeseg_front

FRAME_RATE = 10.0  # Hz, KITTI's Velodyne (and camera trigger) rate

Hits = dict[str, np.ndarray]  # 't_hit' (R,) float32 (inf on a miss), 'primitive_ids' (R,), 'primitive_normals' (R, 3)


@dataclass(frozen=True)
class SimConfig:
    """Everything that decides the simulated data besides seed and frame count."""

    sequence: bool = False  # one world driven through at 10 Hz, instead of independent scenes
    world: WorldConfig = field(default_factory=kitti_world)  # street generator
    lidar: LidarConfig = field(default_factory=hdl64e)  # HDL-64E beam model (intensity on/off lives here)
    camera: CameraConfig = field(default_factory=CameraConfig)  # image_2 renderer and label thresholds
    # a real sensor's per-laser intensity response and ray drop (squeeze da calibrate-sensor), applied to each scan;
    # its laser geometry, when measured, is in `lidar` (sim_config puts it there)
    sensor_profile: SensorProfile | None = None


WORLDS = ("kitti", "dense")  # `squeeze sim --world`: see world_preset


def world_preset(name: str) -> WorldConfig:
    """A named street generator: "kitti" (the default: KITTI's object density, ground height, slopes and
    roughness drawn per scene) or "dense" (the simulator before it was matched to KITTI: about 11 cars, 5
    pedestrians and 2 cyclists labelled per frame on a flat road at z = -1.73 m; the world the bundled
    squeezeseg_v2_sim.pt and squeezedet_sim.pt were trained on and the learning and deploy bars were measured on)."""
    if name == "kitti":
        return kitti_world()
    if name == "dense":
        return replace(dense_world(), ground=flat_ground())
    raise ValueError(f"unknown world {name!r}; choose from {', '.join(WORLDS)}")


def with_profiled_lasers(lidar: LidarConfig, profile: SensorProfile) -> LidarConfig:
    """`lidar` firing the profiled sensor's own lasers: their measured elevations, from their measured heights."""
    return replace(lidar, elevations_deg=tuple(float(e) for e in profile.elevations_deg),
                   vertical_offsets=tuple(float(o) for o in profile.vertical_offsets))


def sim_config(sequence: bool = False, intensity: bool = True, azimuth_steps: int | None = None,
               sensor_profile: SensorProfile | None = None, world: str = "kitti",
               laser_geometry: SensorProfile | None = None, clutter: float = 0.0) -> SimConfig:
    """The default simulation with the command line's switches applied. `laser_geometry`: take only the lasers'
    measured elevations and origin heights from this profile (not its intensities or ray drop). `clutter`: the
    street clutter density of the world (WorldConfig.clutter; 0, none, keeps the preset's worlds as they were)."""
    lidar = hdl64e(intensity=intensity)
    if laser_geometry is not None:
        if laser_geometry.elevations_deg is None:
            raise ValueError(f"the sensor profile of {laser_geometry.source or 'these scans'} holds no laser "
                             "geometry (measure it again with `squeeze da calibrate-sensor`)")
        lidar = with_profiled_lasers(lidar, laser_geometry)
    if azimuth_steps is not None:
        lidar = replace(lidar, azimuth_steps=int(azimuth_steps))
    if sensor_profile is not None and not intensity:
        raise ValueError("a sensor profile maps intensities; it cannot be used with the intensity channel off")
    if sensor_profile is not None and sensor_profile.elevations_deg is not None:
        lidar = with_profiled_lasers(lidar, sensor_profile)
    return SimConfig(sequence=sequence, world=replace(world_preset(world), clutter=float(clutter)), lidar=lidar,
                     sensor_profile=sensor_profile)


@dataclass
class SimFrame:
    """One simulated frame, in memory (nothing written yet)."""

    index: int
    scene: Scene
    scan: Scan
    camera: CameraImage
    labels: FrameLabels
    range_image: RangeImage  # (64, 512) SqueezeSeg front view
    calib: Calibration
    timings: dict[str, float]  # seconds per stage

    @property
    def frame_id(self) -> str:
        return f"{self.index:06d}"


def check_int(name: str, value: object, minimum: int) -> None:
    """Raise ValueError naming `name` unless value is an integer (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Simulator:
    """Produces SimFrames for one seed. Frame i of a non-sequence run depends only on (seed, i)."""

    def __init__(self, seed: int, frames: int, config: SimConfig | None = None, threads: int | None = None):
        """`threads`: ray-casting threads (default: every core this process may use); results do not depend
        on it."""
        check_int("seed", seed, 0)
        check_int("frames", frames, 1)
        self.threads = _threads() if threads is None else max(1, int(threads))
        self.seed = int(seed)
        self.frames = int(frames)
        self.config = config or SimConfig()
        self.calib = kitti_calibration()
        cam = self.config.camera
        self._n_lidar = self.config.lidar.n_rays
        # LiDAR and camera rays are fixed in the velodyne frame: concatenate them once and cast them in one
        # call per frame against that frame's scene.
        rays = np.concatenate([lidar_rays(self.config.lidar), camera_rays(self.calib, cam.width, cam.height)])
        self._rays = o3c.Tensor(rays)
        self._world: World | None = None
        if self.config.sequence:
            duration = (self.frames - 1) / FRAME_RATE
            world_rng = np.random.default_rng([self.seed, 0, 2])
            self._world = generate_world(world_rng, duration, self.config.world)

    def scene(self, index: int) -> Scene:
        """The scene of frame `index` (0 <= index < frames)."""
        if not 0 <= index < self.frames:
            raise IndexError(f"frame {index} is outside 0..{self.frames - 1}")
        if self._world is not None:
            return self._world.scene_at(index / FRAME_RATE)
        world = generate_world(np.random.default_rng([self.seed, index, 0]), 0.0, self.config.world)
        return world.scene_at(0.0)

    def frame(self, index: int) -> SimFrame:
        """Simulate frame `index`: scene, one ray cast for LiDAR and camera, labels, range image."""
        t0 = time.perf_counter()
        scene = self.scene(index)
        rng = np.random.default_rng([self.seed, index, 1])  # sensor noise
        t1 = time.perf_counter()
        rc = o3d.t.geometry.RaycastingScene(nthreads=self.threads)
        rc.add_triangles(o3c.Tensor(scene.mesh.vertices), o3c.Tensor(scene.mesh.triangles.astype(np.uint32)))
        lidar_hits, cam_hits = self._cast(rc)
        t2 = time.perf_counter()
        s = scan(lidar_hits, scene, self.config.lidar, rng)
        if self.config.sensor_profile is not None:
            profile_rng = np.random.default_rng([self.seed, index, 3])  # its own stream: other draws stay the same
            kept, points = apply_sensor_profile(s.points, s.ring, self.config.sensor_profile, profile_rng)
            s = Scan(points=points, cls=s.cls[kept], instance=s.instance[kept], ring=s.ring[kept])
        t3 = time.perf_counter()
        cam = render(cam_hits, scene, self.config.camera, rng, self.calib, self._shadows(rc, cam_hits, scene))
        t4 = time.perf_counter()
        labels = label_objects(scene, cam, self.calib, self.config.camera)
        ri, _ = project_scan(s.points, squeezeseg_front(), labels=squeezeseg_from_point_classes(s.cls),
                             source=f"simulated frame {index}")
        t5 = time.perf_counter()
        timings = {"scene": t1 - t0, "raycast": t2 - t1, "lidar": t3 - t2, "camera": t4 - t3,
                   "labels": t5 - t4}
        return SimFrame(index, scene, s, cam, labels, ri, self.calib, timings)

    def _cast(self, rc: o3d.t.geometry.RaycastingScene) -> tuple[Hits, Hits]:
        """Cast all LiDAR and camera rays at once; returns the LiDAR's hits and the camera's."""
        res = rc.cast_rays(self._rays, nthreads=self.threads)
        t_hit = res["t_hit"].numpy()
        prim = res["primitive_ids"].numpy()
        normals = res["primitive_normals"].numpy()
        n = self._n_lidar
        lidar_hits = {"t_hit": t_hit[:n], "primitive_ids": prim[:n], "primitive_normals": normals[:n]}
        cam_hits = {"t_hit": t_hit[n:], "primitive_ids": prim[n:], "primitive_normals": normals[n:]}
        return lidar_hits, cam_hits

    def _shadows(self, rc: o3d.t.geometry.RaycastingScene, cam_hits: Hits, scene: Scene) -> np.ndarray | None:
        """(H*W,) bool, True where the sun is blocked; None when shadows are off (one more ray per pixel)."""
        if not self.config.camera.shadows:
            return None
        rays = shadow_rays(cam_hits, scene, self.calib, self.config.camera)
        shadow = rc.test_occlusions(o3c.Tensor(rays), nthreads=self.threads).numpy()
        shadow &= np.isfinite(cam_hits["t_hit"])
        return shadow
