"""Benchmark: the whole `squeeze det eval DATA --results DIR --out OUT` command against the official devkit.

The case is the size of the usual KITTI val split: 3,769 frames, about 8 ground-truth objects a frame (Car,
Van, Truck, Pedestrian, Person_sitting, Cyclist, DontCare; heights, occlusions and truncations spread over the
three difficulties) and --dt-per-frame detections a frame (noisy copies of the ground truth plus false
positives), written as KITTI label and result files from a fixed seed (bench_kitti_eval.make_set).

Our command runs as a subprocess (the console script `squeeze` beside this Python, else `python -m
squeeze_suite`), once to warm up (numba's on-disk cache) and then --repeats times; the figure is the median
wall time, and the peak resident memory of each run is read from wait4's rusage.

When KITTI_DEVKIT_SRC names a folder holding the devkit's evaluate_object.cpp and mail.h (squeezeDet's copy,
src/dataset/kitti-eval/cpp of github.com/BichenWuUCB/squeezeDet, run as `evaluate_object KITTI_DIR IMAGE_SET
RESULT_DIR N`; the official devkit_object's main takes other arguments), it is compiled with `g++ -O2` into a
temporary folder and run on the same files, interleaved with ours; its AP11 is checked against ours with
--squeezedet-devkit (the same rules). Its plotting calls gnuplot through system() where installed, as it
always does. The devkit's code is never copied into this repository. Without KITTI_DEVKIT_SRC the comparison
is skipped.

Bars: ours faster than the devkit (median wall time, same run) and under 150 MB peak. Prints one JSON
object per line; exits 1 when a bar is missed.

    KITTI_DEVKIT_SRC=/path/to/cpp python bench/bench_det_eval_cli.py [--frames 3769] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_kitti_eval import emit, make_set

from squeeze.kitti import format_labels

MEMORY_BAR_MB = 150.0


def squeeze_command() -> list[str]:
    """The `squeeze` command of this environment: the console script beside the interpreter, else a module."""
    script = Path(sys.executable).parent / "squeeze"
    if script.exists():
        return [str(script)]
    for module in ("squeeze_suite", "squeeze.cli"):
        if importlib.util.find_spec(module.split(".")[0]) is not None and importlib.util.find_spec(module):
            return [sys.executable, "-m", module]
    raise SystemExit("no `squeeze` console script and no squeeze_suite module: install the package first")


def write_case(root: Path, frames: int, gt_per_frame: float, dt_per_frame: int, seed: int) -> tuple[int, int]:
    """Write ROOT/label_2/*.txt, ROOT/results/data/*.txt and ROOT/val.txt; (ground-truth, detection) counts."""
    gts, dts = make_set(frames, gt_per_frame, dt_per_frame, seed)
    (root / "label_2").mkdir(parents=True)
    (root / "results" / "data").mkdir(parents=True)
    ids = [f"{f:06d}" for f in range(frames)]
    for fid, g, d in zip(ids, gts, dts, strict=True):
        (root / "label_2" / f"{fid}.txt").write_text(format_labels(g))
        (root / "results" / "data" / f"{fid}.txt").write_text(format_labels(d))
    (root / "val.txt").write_text("".join(f"{fid}\n" for fid in ids))
    return sum(len(g) for g in gts), sum(len(d) for d in dts)


# Runs argv[2:] as a grandchild and writes "exit code, peak RSS (KiB), wall seconds" to argv[1]. Linux carries a
# process's peak RSS across exec, so a command spawned straight from this (large) bench process would report at
# least this process's own peak; a fresh fork of a bare interpreter starts from a few MB instead.
_RUNNER = """
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss} {wall}")
"""


def timed(cmd: list[str], cwd: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one run of cmd, whose output goes to a file; raises when it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        report, log = Path(tmp, "report"), Path(tmp, "log")
        with log.open("wb") as out:
            subprocess.run([sys.executable, "-c", _RUNNER, str(report), *cmd], cwd=cwd, stdout=out,
                           stderr=subprocess.STDOUT, check=False)
        code, peak_kib, wall = report.read_text().split()
        if int(code) != 0:
            text = log.read_bytes().decode(errors="replace")[-2000:]
            raise SystemExit(f"{' '.join(cmd)} exited with {code}:\n{text}")
    return float(wall), int(peak_kib) / 1024  # Linux: ru_maxrss in KiB


def build_devkit(src: Path, build: Path) -> Path:
    """Compile src/evaluate_object.cpp with g++ -O2 into build/; the executable's path."""
    cpp = src / "evaluate_object.cpp"
    if not cpp.exists():
        raise SystemExit(f"KITTI_DEVKIT_SRC={src}: no evaluate_object.cpp there")
    if shutil.which("g++") is None:
        raise SystemExit("g++ not found: install it (Debian: apt-get install g++) to build the devkit")
    exe = build / "evaluate_object"
    subprocess.run(["g++", "-O2", "-w", "-I", str(src), "-o", str(exe), str(cpp)], check=True)
    return exe


def devkit_ap11(result_dir: Path, classes: tuple[str, ...]) -> dict[str, list[float]]:
    """AP11 (fractions, Easy/Moderate/Hard) from the devkit's stats_<class>_ap.txt files."""
    out = {}
    for c in classes:
        lines = (result_dir / f"stats_{c.lower()}_ap.txt").read_text().split()
        out[c] = [float(x.split("=")[1]) for x in lines if x.startswith("AP=")]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3769)
    ap.add_argument("--gt-per-frame", type=float, default=8.0)
    ap.add_argument("--dt-per-frame", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    src = os.environ.get("KITTI_DEVKIT_SRC")
    ours_cmd = squeeze_command()
    classes = ("Car", "Pedestrian", "Cyclist")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n_gt, n_dt = write_case(root / "case", args.frames, args.gt_per_frame, args.dt_per_frame, args.seed)
        case = root / "case"
        ours = [*ours_cmd, "det", "eval", str(case), "--results", str(case / "results"), "--out", str(root / "out")]
        runs: dict[str, list[tuple[float, float]]] = {"ours": []}
        devkit = None
        if src:
            exe = build_devkit(Path(src), root)
            runs["devkit"] = []

            def devkit() -> tuple[float, float]:
                shutil.rmtree(case / "results" / "plot", ignore_errors=True)  # it runs `mkdir plot` each time
                return timed([str(exe), str(case), str(case / "val.txt"), str(case / "results"), str(args.frames)],
                             cwd=root)

        timed(ours)  # warm-up: fills numba's cache and the page cache
        if devkit:
            devkit()
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            wall, peak = timed(ours)
            runs["ours"].append((wall, peak))
            if devkit:
                wall, peak = devkit()
                runs["devkit"].append((wall, peak))

        doc = json.loads((root / "out" / "metrics.json").read_text())
        ok = True
        t_ours = statistics.median(w for w, _ in runs["ours"])
        m_ours = max(m for _, m in runs["ours"])
        common = {"frames": args.frames, "gt": n_gt, "detections": n_dt, "repeats": args.repeats}
        emit("det_eval_cli_wall", t_ours, "s", runs=[round(w, 3) for w, _ in runs["ours"]],
             command=" ".join(Path(c).name if i == 0 else c for i, c in enumerate(ours_cmd)) + " det eval", **common)
        ok &= emit("det_eval_cli_peak_rss", m_ours, "MB", MEMORY_BAR_MB, **common)
        emit("det_eval_cli_sanity_car_ap11_moderate", doc["ap11"]["Car"]["Moderate"], "fraction")
        if devkit:
            t_dev = statistics.median(w for w, _ in runs["devkit"])
            emit("devkit_o2_wall", t_dev, "s", runs=[round(w, 3) for w, _ in runs["devkit"]], source=src, **common)
            emit("devkit_o2_peak_rss", max(m for _, m in runs["devkit"]), "MB")
            ok &= emit("det_eval_cli_vs_devkit_time_ratio", t_ours / t_dev, "ratio", 1.0,
                       note="ours / devkit median wall time; < 1 means ours is faster")
            # Same rules as the squeezeDet copy of the devkit: the AP11 must agree (it prints 6 significant digits).
            same = [*ours, "--squeezedet-devkit", "--out", str(root / "out_sq")]
            timed(same)
            mine = json.loads((root / "out_sq" / "metrics.json").read_text())["ap11"]
            theirs = devkit_ap11(case / "results", classes)
            diff = max(abs(mine[c][d] - theirs[c][i]) for c in classes for i, d in enumerate(("Easy", "Moderate",
                                                                                              "Hard")))
            ok &= emit("det_eval_cli_vs_devkit_ap11_max_abs_diff", diff, "fraction", 1e-5)
        else:
            print(json.dumps({"name": "devkit_o2_wall", "value": None, "unit": "s",
                              "skipped": "set KITTI_DEVKIT_SRC to a folder with evaluate_object.cpp"}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
