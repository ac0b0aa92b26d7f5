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

Street density and ground (issue 13), over `--density-frames` frames (default 40, seed 7) of the default world
and of the simulator before (`dense_world()` on `flat_ground()`), at full resolution:
  (d) cars' (Car + Van, range-image label 1) share of the valid 64 x 512 front-view pixels <= 0.10 (KITTI,
      SqueezeSeg's range images: ~0.05; the dense world: ~0.16-0.23);
  informational: label_2 rows per frame per class against KITTI's training set (Car 3.84, Van 0.39,
  Pedestrian 0.60, Cyclist 0.22: 28742 / 2914 / 4487 / 1627 labels over 7481 frames) and the labelled cars'
  mean and 90th-percentile distance; the robust near-ground plane (intercept, dz/dx, dz/dy: mean and spread
  over frames) against the same fit on kitti_mini's scans.

    python bench/bench_sim.py                      # everything
    python bench/bench_sim.py --only density       # (d) and the ground, about a minute on 2 cores

Prints one JSON object per line; exits 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from domain_adapt.sim import SimConfig, Simulator, sim_config, simulate
from domain_adapt.sim.ground import flat_ground
from domain_adapt.sim.world import WorldConfig, dense_world, kitti_world
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


CAR_PIXEL_BAR = 0.10
KITTI_LABELS_PER_FRAME = {"Car": 3.84, "Van": 0.39, "Pedestrian": 0.60, "Cyclist": 0.22}


def ground_plane(points: np.ndarray) -> tuple[float, float, float]:
    """Robust plane z = gx x + gy y + z0 over the near low points (3-20 m, |y| < 10 m, z < -1.2 m) of a scan
    (N, >=3), velodyne frame: least squares reweighted 6 times, keeping residuals within 2.5 robust sigmas."""
    r = np.hypot(points[:, 0], points[:, 1])
    q = points[(r > 3) & (r < 20) & (np.abs(points[:, 1]) < 10) & (points[:, 2] < -1.2), :3].astype(np.float64)
    keep = np.ones(len(q), bool)
    for _ in range(6):
        c = np.linalg.lstsq(np.c_[q[keep, :2], np.ones(keep.sum())], q[keep, 2], rcond=None)[0]
        res = q[:, 2] - q[:, :2] @ c[:2] - c[2]
        keep = np.abs(res) < max(2.5 * 1.4826 * float(np.median(np.abs(res[keep]))), 0.03)
    return float(c[2]), float(c[0]), float(c[1])


def street_statistics(world: WorldConfig, frames: int) -> dict[str, float]:
    """Car pixel share, label_2 rows per class per frame, labelled cars' distances, ground planes."""
    sim = Simulator(seed=7, frames=frames, config=SimConfig(world=world))
    share, dist, planes = [], [], []
    rows = dict.fromkeys(KITTI_LABELS_PER_FRAME, 0)
    for i in range(frames):
        fr = sim.frame(i)
        ri = fr.range_image
        share.append(float((ri.label[ri.mask] == 1).mean()))
        lab = fr.labels.labels
        for k in rows:
            rows[k] += int((lab.type == k).sum())
        car = lab.location[lab.type == "Car"]
        dist += np.hypot(car[:, 0], car[:, 2]).tolist()
        planes.append(ground_plane(fr.scan.points))
    p = np.array(planes)
    out = {"car_pixel_fraction": float(np.mean(share)), "car_distance_mean": float(np.mean(dist)),
           "car_distance_p90": float(np.percentile(dist, 90))}
    out.update({f"{k}_per_frame": v / frames for k, v in rows.items()})
    out.update({"ground_z0_mean": float(p[:, 0].mean()), "ground_z0_std": float(p[:, 0].std()),
                "ground_dzdx_mean": float(p[:, 1].mean()), "ground_dzdx_std": float(p[:, 1].std()),
                "ground_dzdy_mean": float(p[:, 2].mean()), "ground_dzdy_std": float(p[:, 2].std())})
    return out


def density(frames: int) -> bool:
    # "before": the street density and flat ground of the simulator before issue 13
    before_world = replace(dense_world(), ground=flat_ground())
    now, before = street_statistics(kitti_world(), frames), street_statistics(before_world, frames)
    ok = emit("sim_car_pixel_fraction", now["car_pixel_fraction"], "fraction", CAR_PIXEL_BAR,
              now["car_pixel_fraction"] <= CAR_PIXEL_BAR, reference=0.05,
              before=round(before["car_pixel_fraction"], 4), frames=frames,
              rule=f"value <= {CAR_PIXEL_BAR} (Car + Van share of valid 64x512 front-view pixels; KITTI ~0.05)")
    for k, ref in KITTI_LABELS_PER_FRAME.items():
        emit(f"sim_{k.lower()}_labels_per_frame", now[f"{k}_per_frame"], "labels", reference=ref,
             before=round(before[f"{k}_per_frame"], 3))
    for k in ("car_distance_mean", "car_distance_p90"):
        emit(f"sim_{k}", now[k], "m", before=round(before[k], 2), note="labelled Car rows, camera frame")
    scans = sorted((KITTI_MINI / "training" / "velodyne").glob("*.bin"))
    real = np.array([ground_plane(read_velodyne(p)) for p in scans]).reshape(-1, 3)
    for j, name in enumerate(("z0", "dzdx", "dzdy")):
        ref = {} if not len(real) else {"reference_mean": round(float(real[:, j].mean()), 4),
                                        "reference_std": round(float(real[:, j].std()), 4), "reference_n": len(real)}
        emit(f"sim_ground_{name}_mean", now[f"ground_{name}_mean"], "m" if name == "z0" else "m/m",
             std=round(now[f"ground_{name}_std"], 4), before_mean=round(before[f"ground_{name}_mean"], 4),
             before_std=round(before[f"ground_{name}_std"], 4), **ref)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("speed", "realism", "density"), default=None)
    ap.add_argument("--density-frames", type=int, default=40)
    args = ap.parse_args()
    ok = True
    if args.only in (None, "speed"):
        ok &= speed()
    if args.only in (None, "realism"):
        ok &= realism()
    if args.only in (None, "density"):
        ok &= density(args.density_frames)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
