"""Simulator speed and realism against real KITTI scans.

Speed (bar: >= 4 frames/s on 2 cores): one frame = a new street scene + a 64 x 2048-ray LiDAR scan + a
1242 x 375 camera image + labels + the 64 x 512 range image. Medians over 12 frames after one warm-up frame,
without disk writes (`Simulator.frame`) and with them (`simulate`, which overlaps writing frame i with
simulating frame i + 1; its rate counts the whole run after start-up).

Realism, with the default settings (2083 azimuth steps), against the real frames in ../shared/data/kitti_mini
(skipped with a message when absent):
  (a) points per scan within 30% of the real frames' mean;
  (b) empty pixels of the 64 x 512 front range image (squeeze.range_image, ring mode) within 10 percentage
      points of the real scans';
  (c) mean h, w, l of the Car labels over 20 frames within KITTI's ranges (1.52 +- 0.3, 1.63 +- 0.2,
      3.88 +- 0.8 m).
Informational lines (no bar): intensity mean and share of zero intensities, sim vs real.

Prints one JSON object per line; exits 1 when a bar is missed.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from domain_adapt.sim import Simulator, sim_config, simulate
from squeeze.kitti import read_velodyne
from squeeze.range_image import project_scan, squeezeseg_front

KITTI_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_mini"
FPS_BAR = 4.0
SPEED_FRAMES = 12  # timed frames, after one warm-up
REALISM_FRAMES = 20


def emit(name: str, value: float, unit: str, bar: float | None = None, passed: bool | None = None,
         **extra) -> bool:
    row = {"name": name, "value": round(float(value), 4), "unit": unit}
    if bar is not None:
        row["bar"] = bar
    row.update(extra)
    if passed is not None:
        row["passed"] = bool(passed)
    print(json.dumps(row), flush=True)
    return True if passed is None else bool(passed)


def speed() -> bool:
    sim = Simulator(seed=2024, frames=SPEED_FRAMES + 1, config=sim_config(azimuth_steps=2048))
    sim.frame(0)  # warm-up: numba caches, templates, ray tables
    times, stages = [], []
    for i in range(1, SPEED_FRAMES + 1):
        t = time.perf_counter()
        fr = sim.frame(i)
        times.append(time.perf_counter() - t)
        stages.append(fr.timings)
    fps = 1.0 / float(np.median(times))
    ok = emit("sim_fps", fps, "frames/s", FPS_BAR, fps >= FPS_BAR, lidar_rays=64 * 2048, image="1242x375",
              disk_writes=False)
    for k in stages[0]:
        emit(f"sim_stage_{k}_ms", 1e3 * float(np.median([s[k] for s in stages])), "ms")
    tmp = Path(tempfile.mkdtemp(prefix="bench_sim_"))
    try:
        simulate(tmp / "warm", frames=1, seed=1, azimuth_steps=2048, progress=False)
        summary = simulate(tmp / "run", frames=SPEED_FRAMES, seed=2024, azimuth_steps=2048, progress=False)
        ok &= emit("sim_fps_with_writes", summary.fps, "frames/s", FPS_BAR, summary.fps >= FPS_BAR,
                   disk_writes=True,
                   note="simulate(): start-up included, writes overlapped with the next frame")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ok


def empty_fraction(points: np.ndarray) -> float:
    image, _ = project_scan(points, squeezeseg_front())
    return float(1.0 - image.mask.mean())


def realism() -> bool:
    sim = Simulator(seed=7, frames=REALISM_FRAMES)  # default settings: 2083 azimuth steps, intensity on
    counts, empties, inten, zeros, cars = [], [], [], [], []
    for i in range(REALISM_FRAMES):
        fr = sim.frame(i)
        pts = fr.scan.points
        counts.append(len(pts))
        empties.append(empty_fraction(pts))
        inten.append(float(pts[:, 3].mean()))
        zeros.append(float((pts[:, 3] == 0).mean()))
        lab = fr.labels.labels
        cars.append(lab.dimensions[lab.type == "Car"])
    ok = True
    cars_a = np.concatenate(cars)
    h, w, l = cars_a.mean(0)  # noqa: E741 - KITTI's names
    for name, value, ref, tol in (("h", h, 1.52, 0.3), ("w", w, 1.63, 0.2), ("l", l, 3.88, 0.8)):
        ok &= emit(f"sim_car_{name}_mean", value, "m", tol, abs(value - ref) <= tol, reference=ref,
                   n_cars=len(cars_a), rule=f"|value - reference| <= {tol}")
    scans = sorted((KITTI_MINI / "training" / "velodyne").glob("*.bin"))
    if not scans:
        print(json.dumps({"name": "sim_realism_vs_kitti", "skipped": f"no real scans under {KITTI_MINI}"}))
        return ok
    real = [read_velodyne(p) for p in scans]
    real_count = float(np.mean([len(p) for p in real]))
    ratio = float(np.mean(counts)) / real_count
    ok &= emit("sim_points_per_scan", float(np.mean(counts)), "points", 0.3, abs(ratio - 1) <= 0.3,
               reference=round(real_count), ratio=round(ratio, 3), rule="|ratio - 1| <= 0.3")
    real_empty = float(np.mean([empty_fraction(p) for p in real]))
    sim_empty = float(np.mean(empties))
    ok &= emit("sim_empty_pixel_fraction", sim_empty, "fraction", 0.10, abs(sim_empty - real_empty) <= 0.10,
               reference=round(real_empty, 4), rule="|value - reference| <= 0.10 (64x512 front view)")
    emit("sim_intensity_mean", float(np.mean(inten)), "0..1",
         reference=round(float(np.mean([p[:, 3].mean() for p in real])), 4))
    emit("sim_intensity_zero_fraction", float(np.mean(zeros)), "fraction",
         reference=round(float(np.mean([(p[:, 3] == 0).mean() for p in real])), 4))
    return ok


def main() -> int:
    ok = speed()
    ok &= realism()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
