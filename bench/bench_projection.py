"""Range projection speed on real KITTI scans: numba kernel vs a plain numpy implementation.

Bar (issue 2): for a real ~120k-point scan, 64 x 512 and 64 x 2048 images, median time <= 3 ms and
>= 5x faster than numpy (argsort by range, then scatter) measured in the same run; identical images.
Prints one JSON object per line; exits 1 when a bar is missed, 0 otherwise (2 when kitti_mini is absent).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from squeeze.kitti import read_velodyne
from squeeze.range_image import ProjectionConfig, full_360, project_scan, project_scan_numpy, squeezeseg_front

KITTI_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_mini"
MAX_MS = 3.0
MIN_SPEEDUP = 5.0


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main() -> int:
    scans = sorted((KITTI_MINI / "training" / "velodyne").glob("*.bin"))
    if not scans:
        print(json.dumps({"name": "range_projection", "skipped": f"no scans under {KITTI_MINI}"}))
        return 2
    ok = True
    configs: list[tuple[str, ProjectionConfig]] = [("64x512", squeezeseg_front()), ("64x2048", full_360())]
    for label, cfg in configs:
        numba_ms, numpy_ms, identical = [], [], True
        for path in scans:
            points = read_velodyne(path)
            a, pix_a = project_scan(points, cfg)
            b, pix_b = project_scan_numpy(points, cfg)
            identical &= bool(np.array_equal(a.to_array(), b.to_array()) and np.array_equal(pix_a, pix_b)
                              and np.array_equal(a.point_index, b.point_index))
            # Interleave the two so that machine noise hits both alike.
            for _ in range(3):
                numba_ms.append(median_ms(lambda p=points, c=cfg: project_scan(p, c), repeats=30))
                numpy_ms.append(median_ms(lambda p=points, c=cfg: project_scan_numpy(p, c), repeats=5, warmup=1))
        t_numba, t_numpy = float(np.median(numba_ms)), float(np.median(numpy_ms))
        speedup = t_numpy / t_numba
        passed = t_numba <= MAX_MS and speedup >= MIN_SPEEDUP and identical
        ok &= passed
        n_points = int(np.mean([path.stat().st_size // 16 for path in scans]))
        print(json.dumps({"name": f"range_projection_{label}_ms", "value": round(t_numba, 3), "unit": "ms",
                          "bar": MAX_MS, "points": n_points, "passed": t_numba <= MAX_MS}))
        print(json.dumps({"name": f"range_projection_{label}_numpy_ms", "value": round(t_numpy, 3), "unit": "ms"}))
        print(json.dumps({"name": f"range_projection_{label}_speedup", "value": round(speedup, 2), "unit": "x",
                          "bar": MIN_SPEEDUP, "passed": speedup >= MIN_SPEEDUP}))
        print(json.dumps({"name": f"range_projection_{label}_identical", "value": identical, "unit": "bool",
                          "passed": identical}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
