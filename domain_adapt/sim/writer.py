"""Write simulated KITTI-format frames: the suite's embedded default data and the sim-to-real source domain.

`simulate(out_dir, frames, seed)` writes, for frame ids 000000, 000001, ...:

    out_dir/training/image_2/ID.png      1242 x 375 RGB render of the left colour camera
    out_dir/training/velodyne/ID.bin     (N, 4) float32 x, y, z, intensity, KITTI point order
    out_dir/training/velodyne/ID.label   (N,) uint32 SemanticKITTI labels: class | instance << 16
                                         (class ids: materials.CLASS_IDS, e.g. Car 1, Pedestrian 2,
                                         Cyclist 3, Van 4)
    out_dir/training/calib/ID.txt        KITTI calibration (camera.kitti_calibration)
    out_dir/training/label_2/ID.txt      KITTI object labels (labels.label_objects explains the rules)
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

Frames are independent scenes unless `sequence` (see `simulator`). Same arguments give byte-identical files,
whatever the number of worker processes (`workers`).

Sharding: `frame_range=(a, b)` (the command line's `--shard K/M`) writes only frames a..b-1 of the `frames`-frame
set, with the same ids and bytes as one run writing all of them, and the same index files and sim_config.json
(those describe the whole set, so every shard writes them identically). A sequence's world depends on the whole
set's length, so every shard drives through the same street. Merging: copy the shard folders into one, e.g.
`for d in part0 part1 part2; do cp -r "$d"/. merged/; done`; the result equals a single run file for file.

The folder appears complete or not at all: frames are written into a hidden sibling folder
`.NAME.squeeze-sim-HOST-PID.partial`, which is renamed to NAME once everything is written. An interrupted run
(Ctrl-C, an error) removes its partial folder; one killed outright leaves it behind, and the next run into the
same NAME removes it once its process is gone. A run into an earlier `simulate` output replaces it only at that
last rename, so until then the earlier output stays whole.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from domain_adapt.sensor_profile import SensorProfile
from domain_adapt.sim import output
from domain_adapt.sim.simulator import FRAME_RATE, SimConfig, SimFrame, Simulator, check_int, sim_config
from squeeze.kitti import (
    atomic_write_text,
    write_calib,
    write_image,
    write_image_set,
    write_labels,
    write_point_labels,
    write_velodyne,
)
from squeeze.range_image import write_range_npy

SIM_FORMAT_VERSION = 1  # bump when the written layout changes
LIDAR_RANGE = 120.0  # m; objects farther away are not part of a frame's objects/ file


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
        if math.hypot(b[0], b[1]) > LIDAR_RANGE:  # not part of this frame's data
            continue
        row = row_of.get(o.instance_id, -1)
        lines.append(f"{o.instance_id} {o.cls} " + " ".join(f"{v:.4f}" for v in b)
                     + f" {o.velocity[0]:.4f} {o.velocity[1]:.4f} {int(o.moving)} {row}\n")
    return "".join(lines)


def write_index(root: Path, seed: int, frames: int, config: SimConfig) -> None:
    """The frame lists ImageSets/ (KITTI) and ImageSet/ (SqueezeSeg), all/train/val with the last 20% of the
    frames as val (at least one when there are two or more), and sim_config.json (written last)."""
    ids = [f"{i:06d}" for i in range(frames)]
    n_val = 0 if frames < 2 else max(1, round(0.2 * frames))
    train, val = ids[:frames - n_val], ids[frames - n_val:]
    for name, lst in (("all", ids), ("train", train), ("val", val)):
        write_image_set(root, name, lst)
        atomic_write_text(root / "ImageSet" / f"{name}.txt", "".join(f"{f}\n" for f in lst))
    meta = {"format_version": SIM_FORMAT_VERSION, "generator": "domain_adapt.sim", "seed": int(seed),
            "frames": int(frames), "frame_rate_hz": FRAME_RATE, "config": _jsonable(asdict(config))}
    atomic_write_text(root / output.SIM_CONFIG, json.dumps(meta, indent=2, sort_keys=True) + "\n")


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


def shard_range(frames: int, shard: int, shards: int) -> tuple[int, int]:
    """Frames [a, b) of shard `shard` (0-based) out of `shards` near-equal contiguous pieces of a `frames`-frame
    set. Raises ValueError for a shard outside 0..shards-1 or an empty shard (more shards than frames)."""
    check_int("frames", frames, 1)
    check_int("shards", shards, 1)
    check_int("shard", shard, 0)
    if shard >= shards:
        raise ValueError(f"shard {shard}/{shards} is out of range: K in K/M counts from 0 to {shards - 1}")
    if shards > frames:
        raise ValueError(f"{shards} shards of {frames} frames would leave some empty: use at most {frames}")
    return shard * frames // shards, (shard + 1) * frames // shards


def simulate(out_dir: str | Path, frames: int, seed: int, sequence: bool = False, intensity: bool = True,
             azimuth_steps: int | None = None, progress: bool = True,
             config: SimConfig | None = None, sensor_profile: SensorProfile | None = None,
             workers: int = 1, frame_range: tuple[int, int] | None = None, world: str = "kitti",
             laser_geometry: SensorProfile | None = None, clutter: float = 0.0) -> SimSummary:
    """Simulate `frames` KITTI-format frames from `seed` into `out_dir` (layout in the module docstring).

    `config` overrides sequence / intensity / azimuth_steps / sensor_profile / laser_geometry / clutter when given. The
    folder may be new, empty or a previous simulate() output holding only simulated files (it is replaced as a
    whole); any other non-empty folder is refused so that real data is never overwritten. The folder appears
    only once complete.
    `workers` processes simulate frames in parallel (same files as one). `frame_range=(a, b)` writes only
    frames a..b-1 of the set (0 <= a < b <= frames; see "Sharding" in the module docstring).
    """
    check_int("frames", frames, 1)
    check_int("seed", seed, 0)
    check_int("workers", workers, 1)
    if azimuth_steps is not None:
        check_int("azimuth_steps", azimuth_steps, 8)
    first, stop = (0, frames) if frame_range is None else frame_range
    check_int("first frame", first, 0)
    check_int("end frame", stop, 1)
    if not first < stop <= frames:
        raise ValueError(f"frame range {first}..{stop - 1} is not a non-empty part of frames 0..{frames - 1}")
    cfg = config or sim_config(sequence=sequence, intensity=intensity, azimuth_steps=azimuth_steps,
                               sensor_profile=sensor_profile, world=world, laser_geometry=laser_geometry,
                               clutter=clutter)
    out = Path(out_dir)
    target = Path(os.path.realpath(out))  # "." and symlinks: rename the folder itself, beside it
    output.check_out_dir(target)
    partial = output.start_partial(target)
    t_start = time.perf_counter()
    try:
        indices = range(first, stop)
        if workers == 1:
            points_mean, counts, busy = _write_frames(partial, Simulator(seed, frames, cfg), indices, progress)
        else:
            points_mean, counts, busy = _write_frames_parallel(partial, seed, frames, cfg, indices, workers,
                                                               progress)
        write_index(partial, seed, frames, cfg)
        output.check_out_dir(target)  # again: the folder may have changed while we simulated
        output.publish(partial, target)
    except BaseException:  # Ctrl-C included: leave no partial folder behind
        output.discard(partial)
        raise
    return SimSummary(out, stop - first, points_mean, counts, time.perf_counter() - t_start, busy)


def _write_frames(root: Path, sim: Simulator, indices: range, progress: bool) -> tuple[float, dict[str, int], float]:
    """Simulate and write frames `indices` of `sim` under root, with a progress bar. Returns the mean points
    per scan, the label_2 rows per class and the seconds spent simulating (writes excluded)."""
    from tqdm import tqdm

    busy = 0.0
    points = 0
    counts: dict[str, int] = {}
    # One writer thread: frame i is written (PNG encoding, fsyncs) while frame i + 1 is simulated. At most
    # one frame waits, so memory stays bounded; a write error surfaces at the next frame.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-writer") as writer:
        pending: Future | None = None
        bar = tqdm(indices, desc="simulating", unit="frame", disable=not progress, dynamic_ncols=True)
        for i in bar:
            t0 = time.perf_counter()
            fr = sim.frame(i)
            busy += time.perf_counter() - t0
            if pending is not None:
                pending.result()
            pending = writer.submit(write_frame, root, fr)
            points += len(fr.scan)
            for t in fr.labels.labels.type:
                counts[str(t)] = counts.get(str(t), 0) + 1
        if pending is not None:
            pending.result()
    return points / len(indices), counts, busy


# One Simulator per worker process, made once by _init_worker (a sequence's world is drawn once per process).
_WORKER: dict[str, object] = {}


def _init_worker(root: Path, seed: int, frames: int, config: SimConfig, threads: int) -> None:
    _WORKER.update(root=root, sim=Simulator(seed, frames, config, threads=threads))


def _simulate_and_write(index: int) -> tuple[int, dict[str, int], float]:
    """In a worker: simulate frame `index`, write it; return its point count, label counts and busy seconds."""
    sim, root = _WORKER["sim"], _WORKER["root"]
    t0 = time.perf_counter()
    fr = sim.frame(index)  # type: ignore[attr-defined]
    busy = time.perf_counter() - t0
    write_frame(root, fr)  # type: ignore[arg-type]
    counts: dict[str, int] = {}
    for t in fr.labels.labels.type:
        counts[str(t)] = counts.get(str(t), 0) + 1
    return len(fr.scan), counts, busy


def _write_frames_parallel(root: Path, seed: int, frames: int, config: SimConfig, indices: range, workers: int,
                           progress: bool) -> tuple[float, dict[str, int], float]:
    """_write_frames over `workers` processes, each simulating and writing whole frames. Every frame depends
    only on (seed, frames, config, index), so the files equal a one-process run's. Processes are spawned, not
    forked: the parent may hold Open3D / numba thread pools, which do not survive a fork."""
    from tqdm import tqdm

    threads = max(1, _cpu_count() // workers)  # ray-casting threads per worker: share the cores
    ctx = multiprocessing.get_context("spawn")
    points, busy = 0, 0.0
    counts: dict[str, int] = {}
    with ProcessPoolExecutor(max_workers=min(workers, len(indices)), mp_context=ctx, initializer=_init_worker,
                             initargs=(root, seed, frames, config, threads)) as pool:
        results: Iterator = pool.map(_simulate_and_write, indices)
        for n, c, b in tqdm(results, total=len(indices), desc=f"simulating ({workers} workers)", unit="frame",
                            disable=not progress, dynamic_ncols=True):
            points += n
            busy += b
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
    return points / len(indices), counts, busy


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _jsonable(obj: object) -> object:
    """A dataclass dict with tuples as lists and numpy scalars as Python numbers, for json.dumps."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
