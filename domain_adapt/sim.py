"""Write simulated KITTI-format frames: the suite's embedded default data and the sim-to-real source domain.

`simulate(out_dir, frames, seed)` writes, for frame ids 000000, 000001, ...:

    out_dir/training/image_2/ID.png      1242 x 375 RGB render of the left colour camera
    out_dir/training/velodyne/ID.bin     (N, 4) float32 x, y, z, intensity, KITTI point order
    out_dir/training/velodyne/ID.label   (N,) uint32 SemanticKITTI labels: class | instance << 16
                                         (class ids: world.CLASS_IDS, e.g. Car 1, Pedestrian 2,
                                         Cyclist 3, Van 4)
    out_dir/training/calib/ID.txt        KITTI calibration (camera.kitti_calibration)
    out_dir/training/label_2/ID.txt      KITTI object labels (camera.label_objects explains the rules)
    out_dir/training/pose/ID.txt         12 numbers, the 3 x 4 pose world_from_velo of this frame's
                                         velodyne (p_world = T [p_velo; 1]); the world frame is the
                                         road's, z = 0 on the road surface, so the first pose of a
                                         drive is not the identity
    out_dir/training/objects/ID.txt      every thing within LiDAR range, one line each:
                                         instance_id class x y z l w h yaw vx vy moving label_row
                                         (velodyne frame, geometric box centre, yaw about +z from +x, velocity
                                         in m/s; label_row = its row in label_2 or -1): tracking ground truth
    out_dir/lidar_2d/ID.npy              (64, 512, 6) float32 SqueezeSeg range image of the front 90
                                         degrees (x, y, z, intensity, range, label: car/van 1,
                                         pedestrian 2, cyclist 3)
    out_dir/ImageSets/{all,train,val}.txt and out_dir/ImageSet/{all,train,val}.txt (the last 20% of the
                                         frames, at least one when there are two or more, form val)
    out_dir/sim_config.json              seed, frame count, mode and the resolved configs

Frames are independent scenes (frame i draws its world from the seed sequence (seed, i)) unless `sequence`:
then one world is drawn and the ego drives through it at 10 Hz (KITTI's LiDAR rate) while cars, cyclists and
pedestrians move; instance ids stay the same across frames. Same arguments give byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import open3d as o3d
import open3d.core as o3c

from domain_adapt.camera import (
    CameraConfig,
    CameraImage,
    FrameLabels,
    camera_rays,
    kitti_calibration,
    label_objects,
    render,
    shadow_rays,
)
from domain_adapt.lidar import LidarConfig, Scan, hdl64e, lidar_rays, scan
from domain_adapt.world import Scene, World, WorldConfig, generate_world, kitti_world
from squeeze.kitti import (
    Calibration,
    atomic_write_text,
    write_calib,
    write_image,
    write_image_set,
    write_labels,
    write_point_labels,
    write_velodyne,
)
from squeeze.point_labels import squeezeseg_from_point_classes
from squeeze.range_image import RangeImage, project_scan, squeezeseg_front, write_range_npy

FRAME_RATE = 10.0  # Hz, KITTI's Velodyne (and camera trigger) rate
SIM_FORMAT_VERSION = 1  # bump when the written layout changes
_FRAME_DIRS = ("image_2", "velodyne", "calib", "label_2", "pose", "objects")  # under training/


@dataclass(frozen=True)
class SimConfig:
    """Everything that decides the simulated data besides seed and frame count."""

    sequence: bool = False  # one world driven through at 10 Hz, instead of independent scenes
    world: WorldConfig = field(default_factory=kitti_world)  # street generator
    lidar: LidarConfig = field(default_factory=hdl64e)  # HDL-64E beam model (intensity on/off lives here)
    camera: CameraConfig = field(default_factory=CameraConfig)  # image_2 renderer and label thresholds


def sim_config(sequence: bool = False, intensity: bool = True, azimuth_steps: int | None = None) -> SimConfig:
    """The default simulation with the command line's switches applied."""
    lidar = hdl64e(intensity=intensity)
    if azimuth_steps is not None:
        lidar = replace(lidar, azimuth_steps=int(azimuth_steps))
    return SimConfig(sequence=sequence, lidar=lidar)


@dataclass
class SimFrame:
    """One simulated frame, in memory (nothing written yet)."""

    index: int
    scene: Scene
    scan: Scan
    camera: CameraImage
    labels: FrameLabels
    range_image: RangeImage
    calib: Calibration
    timings: dict[str, float]  # seconds per stage

    @property
    def frame_id(self) -> str:
        return f"{self.index:06d}"


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Simulator:
    """Produces SimFrames for one seed. Frame i of a non-sequence run depends only on (seed, i)."""

    def __init__(self, seed: int, frames: int, config: SimConfig | None = None):
        _check_int("seed", seed, 0)
        _check_int("frames", frames, 1)
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
        rng = np.random.default_rng([self.seed, index, 1])
        t1 = time.perf_counter()
        rc = o3d.t.geometry.RaycastingScene(nthreads=_threads())
        rc.add_triangles(o3c.Tensor(scene.mesh.vertices), o3c.Tensor(scene.mesh.triangles.astype(np.uint32)))
        res = rc.cast_rays(self._rays, nthreads=_threads())
        t_hit = res["t_hit"].numpy()
        prim = res["primitive_ids"].numpy()
        normals = res["primitive_normals"].numpy()
        n = self._n_lidar
        t2 = time.perf_counter()
        lidar_hits = {"t_hit": t_hit[:n], "primitive_ids": prim[:n], "primitive_normals": normals[:n]}
        cam_hits = {"t_hit": t_hit[n:], "primitive_ids": prim[n:], "primitive_normals": normals[n:]}
        s = scan(lidar_hits, scene, self.config.lidar, rng)
        t3 = time.perf_counter()
        shadow = None
        if self.config.camera.shadows:  # one more ray per pixel, from the surface towards the sun
            rays = shadow_rays(cam_hits, scene, self.calib, self.config.camera)
            shadow = rc.test_occlusions(o3c.Tensor(rays), nthreads=_threads()).numpy()
            shadow &= np.isfinite(cam_hits["t_hit"])
        cam = render(cam_hits, scene, self.config.camera, rng, self.calib, shadow)
        t4 = time.perf_counter()
        labels = label_objects(scene, cam, self.calib, self.config.camera)
        ri, _ = project_scan(s.points, squeezeseg_front(), labels=squeezeseg_from_point_classes(s.cls),
                             source=f"simulated frame {index}")
        t5 = time.perf_counter()
        timings = {"scene": t1 - t0, "raycast": t2 - t1, "lidar": t3 - t2, "camera": t4 - t3,
                   "labels": t5 - t4}
        return SimFrame(index, scene, s, cam, labels, ri, self.calib, timings)


def write_frame(root: str | Path, frame: SimFrame) -> None:
    """Write one frame's files under root (layout in the module docstring), each atomically."""
    root = Path(root)
    tr = root / "training"
    fid = frame.frame_id
    write_image(tr / "image_2" / f"{fid}.png", frame.camera.image)
    write_velodyne(tr / "velodyne" / f"{fid}.bin", frame.scan.points)
    write_point_labels(tr / "velodyne" / f"{fid}.label", frame.scan.cls, frame.scan.instance)
    write_calib(tr / "calib" / f"{fid}.txt", frame.calib)
    write_labels(tr / "label_2" / f"{fid}.txt", frame.labels.labels)
    pose = frame.scene.world_from_velo[:3, :4]
    atomic_write_text(tr / "pose" / f"{fid}.txt", " ".join(f"{v:.9e}" for v in pose.ravel()) + "\n")
    atomic_write_text(tr / "objects" / f"{fid}.txt", format_objects(frame))
    write_range_npy(root / "lidar_2d" / f"{fid}.npy", frame.range_image)


def format_objects(frame: SimFrame) -> str:
    """The objects/ID.txt lines: instance_id class x y z l w h yaw vx vy moving label_row."""
    row_of = {int(i): r for r, i in enumerate(frame.labels.instance_ids)}
    lines = []
    for o in frame.scene.objects:
        b = o.box
        if math.hypot(b[0], b[1]) > 120.0:  # beyond the LiDAR's range: not part of this frame's data
            continue
        row = row_of.get(o.instance_id, -1)
        lines.append(f"{o.instance_id} {o.cls} " + " ".join(f"{v:.4f}" for v in b)
                     + f" {o.velocity[0]:.4f} {o.velocity[1]:.4f} {int(o.moving)} {row}\n")
    return "".join(lines)


@dataclass
class SimSummary:
    """What a simulate() call produced, with its speed (frames/s with and without disk writes)."""

    out_dir: Path
    frames: int
    points_mean: float
    labels: dict[str, int]  # label_2 rows per class over all frames
    seconds: float
    seconds_simulating: float

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def simulate(out_dir: str | Path, frames: int, seed: int, sequence: bool = False, intensity: bool = True,
             azimuth_steps: int | None = None, progress: bool = True,
             config: SimConfig | None = None) -> SimSummary:
    """Simulate `frames` KITTI-format frames from `seed` into `out_dir` (layout in the module docstring).

    `config` overrides sequence / intensity / azimuth_steps when given. The folder may be new, empty or a
    previous simulate() output (its frames are replaced, extra old frames removed); any other non-empty
    folder is refused so that real data is never overwritten.
    """
    from tqdm import tqdm

    _check_int("frames", frames, 1)
    _check_int("seed", seed, 0)
    if azimuth_steps is not None:
        _check_int("azimuth_steps", azimuth_steps, 8)
    cfg = config or sim_config(sequence=sequence, intensity=intensity, azimuth_steps=azimuth_steps)
    out = Path(out_dir)
    _prepare_out_dir(out, frames)
    sim = Simulator(seed, frames, cfg)
    t_start = time.perf_counter()
    busy = 0.0
    points = 0
    counts: dict[str, int] = {}
    ids = [f"{i:06d}" for i in range(frames)]
    # One writer thread: frame i is written (PNG encoding, fsyncs) while frame i + 1 is simulated. At most
    # one frame waits, so memory stays bounded; a write error surfaces at the next frame.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-writer") as writer:
        pending: Future | None = None
        bar = tqdm(range(frames), desc="simulating", unit="frame", disable=not progress, dynamic_ncols=True)
        for i in bar:
            t0 = time.perf_counter()
            fr = sim.frame(i)
            busy += time.perf_counter() - t0
            if pending is not None:
                pending.result()
            pending = writer.submit(write_frame, out, fr)
            points += len(fr.scan)
            for t in fr.labels.labels.type:
                counts[str(t)] = counts.get(str(t), 0) + 1
        if pending is not None:
            pending.result()
    n_val = 0 if frames < 2 else max(1, round(0.2 * frames))
    train, val = ids[:frames - n_val], ids[frames - n_val:]
    for name, lst in (("all", ids), ("train", train), ("val", val)):
        write_image_set(out, name, lst)
        atomic_write_text(out / "ImageSet" / f"{name}.txt", "".join(f"{f}\n" for f in lst))
    meta = {"format_version": SIM_FORMAT_VERSION, "generator": "domain_adapt.sim", "seed": int(seed),
            "frames": int(frames), "frame_rate_hz": FRAME_RATE, "config": _jsonable(asdict(cfg))}
    atomic_write_text(out / "sim_config.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return SimSummary(out, frames, points / frames, counts, time.perf_counter() - t_start, busy)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


_FRAME_FILE = re.compile(r"^\d{6}\.(png|bin|label|txt|npy)$")


def _prepare_out_dir(out: Path, frames: int) -> None:
    """Refuse a non-empty folder that is not a simulator output; in one that is, drop frames >= `frames`."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / "sim_config.json").exists():
        raise FileExistsError(f"{out}: not empty and not a simulator output (no sim_config.json); "
                              "choose a new or empty folder")
    for sub in [out / "training" / d for d in _FRAME_DIRS] + [out / "lidar_2d"]:
        if not sub.is_dir():
            continue
        for f in sub.iterdir():
            if _FRAME_FILE.match(f.name) and int(f.name[:6]) >= frames:
                f.unlink()


def _jsonable(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
