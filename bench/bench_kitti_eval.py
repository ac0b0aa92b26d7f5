"""Benchmark: KITTI 2D evaluation of a val-sized split in under 5 s.

3,769 frames (the size of the usual KITTI val split) with about 10 ground-truth objects (Car, Van,
Pedestrian, Person_sitting, Cyclist, Truck, DontCare; heights, occlusions and truncations spread over all
three difficulties) and about 50 detections per frame (noisy copies of the ground truth plus false
positives). One evaluation computes all three classes x three difficulties, AP11, AP40 and AOS.

A warm-up run on a few frames comes first (imports, first calls); the figure is the median wall time of
the following runs (bench_det_eval_cli.py times the whole `squeeze det eval` command against the devkit).
Prints one JSON object per line; exits 1 when the bar is missed. Optionally (--folders) also times reading
the same set from label/result folders.

    python bench/bench_kitti_eval.py [--frames 3769] [--repeats 3] [--bar 5.0] [--folders]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from squeeze.kitti import ObjectLabels, format_labels
from squeezedet.kitti_eval import evaluate_folders, evaluate_kitti

GT_TYPES = np.array(["Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "DontCare"])
GT_P = np.array([0.45, 0.08, 0.03, 0.2, 0.03, 0.11, 0.1])
DT_TYPES = np.array(["Car", "Pedestrian", "Cyclist"])


def _labels(types, boxes, trunc, occ, alpha, score=None) -> ObjectLabels:
    n = len(types)
    return ObjectLabels(type=types.astype("<U16"), truncated=trunc, occluded=occ, alpha=alpha, bbox=boxes,
                        dimensions=np.zeros((n, 3)), location=np.zeros((n, 3)), rotation_y=np.zeros(n), score=score)


def make_set(n_frames: int, gt_per_frame: float, dt_per_frame: int, seed: int = 0):
    """(ground truth, detections): lists of ObjectLabels, one per frame."""
    rng = np.random.default_rng(seed)
    gts, dts = [], []
    for _ in range(n_frames):
        n = int(rng.poisson(gt_per_frame))
        types = rng.choice(GT_TYPES, n, p=GT_P)
        h = rng.uniform(15, 150, n)
        w = h * rng.uniform(0.4, 2.5, n)
        x1, y1 = rng.uniform(0, 1100, n), rng.uniform(0, 300, n)
        boxes = np.stack([x1, y1, x1 + w, y1 + h], axis=1)
        trunc = rng.choice([0.0, 0.0, 0.1, 0.2, 0.4, 0.6], n)
        occ = rng.integers(0, 3, n)
        alpha = rng.uniform(-math.pi, math.pi, n)
        dc = types == "DontCare"
        trunc[dc], occ[dc], alpha[dc] = -1.0, -1, -10.0
        gts.append(_labels(types, boxes, trunc, occ, alpha))
        # Detections: up to one noisy copy per object, then false positives up to dt_per_frame.
        hit = ~dc & (rng.random(n) < 0.8)
        k = int(hit.sum())
        d_types = np.where(np.isin(types[hit], DT_TYPES), types[hit], "Car")
        d_boxes = boxes[hit] + rng.normal(0, 0.06, (k, 1)) * h[hit, None] * rng.normal(0, 1, (k, 4))
        # Noise may swap a box's sides; result files hold left <= right and top <= bottom.
        lo, hi = np.minimum(d_boxes[:, :2], d_boxes[:, 2:]), np.maximum(d_boxes[:, :2], d_boxes[:, 2:])
        d_boxes = np.concatenate([lo, hi], axis=1)
        m = max(dt_per_frame - k, 0)
        fh = rng.uniform(10, 120, m)
        fx, fy = rng.uniform(0, 1150, m), rng.uniform(0, 300, m)
        f_boxes = np.stack([fx, fy, fx + fh * rng.uniform(0.4, 2.5, m), fy + fh], axis=1)
        dtypes = np.concatenate([d_types, rng.choice(DT_TYPES, m)])
        scores = np.concatenate([rng.beta(5, 2, k), rng.beta(2, 5, m)])
        d_alpha = np.concatenate([alpha[hit] + rng.normal(0, 0.3, k), rng.uniform(-math.pi, math.pi, m)])
        nd = k + m
        dts.append(_labels(dtypes, np.concatenate([d_boxes, f_boxes]), np.full(nd, -1.0),
                           np.full(nd, -1, dtype=np.int64), d_alpha, scores))
    return gts, dts


def emit(name: str, value: float, unit: str, bar: float | None = None, **extra) -> bool:
    row = {"name": name, "value": round(value, 4), "unit": unit}
    passed = True
    if bar is not None:
        passed = value <= bar
        row.update(bar=bar, passed=passed)
    row.update(extra)
    print(json.dumps(row), flush=True)
    return passed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3769)
    ap.add_argument("--gt-per-frame", type=float, default=10.0)
    ap.add_argument("--dt-per-frame", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bar", type=float, default=5.0, help="seconds for one full evaluation")
    ap.add_argument("--folders", action="store_true", help="also time evaluate_folders on written files")
    args = ap.parse_args()

    gts, dts = make_set(args.frames, args.gt_per_frame, args.dt_per_frame)
    n_gt, n_dt = sum(len(g) for g in gts), sum(len(d) for d in dts)

    t0 = time.perf_counter()
    evaluate_kitti(gts[:20], dts[:20])  # warm-up
    warmup = time.perf_counter() - t0

    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = evaluate_kitti(gts, dts, compute_aos=True)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    assert result.aos40 is not None
    ok = emit(f"kitti_eval_{args.frames}_frames", statistics.median(times), "s", args.bar,
              frames=args.frames, gt=n_gt, detections=n_dt, classes=3, difficulties=3,
              metrics="AP11+AP40+AOS11+AOS40", repeats=args.repeats, runs=[round(t, 3) for t in times])
    emit(f"kitti_eval_{args.frames}_frames_cpu", statistics.median(cpu), "s")
    emit("kitti_eval_warmup", warmup, "s")
    emit("kitti_eval_sanity_map11_moderate", float(np.mean([result.ap11[c]["Moderate"] for c in result.classes])),
         "fraction")

    if args.folders:
        with tempfile.TemporaryDirectory() as tmp:
            label_dir, result_dir = Path(tmp, "label_2"), Path(tmp, "results", "data")
            label_dir.mkdir(parents=True)
            result_dir.mkdir(parents=True)
            for f, (g, d) in enumerate(zip(gts, dts, strict=True)):
                (label_dir / f"{f:06d}.txt").write_text(format_labels(g))
                (result_dir / f"{f:06d}.txt").write_text(format_labels(d))
            t0 = time.perf_counter()
            evaluate_folders(label_dir, result_dir.parent)
            emit(f"kitti_eval_folders_{args.frames}_frames", time.perf_counter() - t0, "s",
                 note="reading label_2 + results, then the same evaluation")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
