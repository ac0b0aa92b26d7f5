"""What squeeze.allocator.keep_freed_memory buys a deployed detector: page faults and end-to-end time per frame.

The bundled SqueezeDet is exported and quantised (OpenVINO int8, as `squeeze deploy` makes it) and the bundled
SqueezeSegV2 exported, once. Then child processes, alternately with glibc's default malloc settings and with
keep_freed_memory() (the setting is process-wide, so each mode needs a fresh process), each run `detect` end to end
(RGB image in, KITTI boxes out) on one image: --warmup frames, then --frames timed ones, each after a 50 ms pause as
a 10-20 Hz camera leaves the process idle between frames. Two kinds of process: "detector" runs the detector alone;
"both" also runs the segmenter on a scan before each frame (untimed), as LATTE, the deploy bench or a car computer
running both networks does. Per child: the median ms and the minor page faults per detect (ru_minflt). Over
--rounds pairs of children per kind: the median of the medians per mode, and their ratio (kept / default),
measured in the same run.

Bars: with keep_freed_memory under 5 page faults a frame in both kinds; in "both", end to end no slower than the
default (ratio <= 1.0). The detector alone has nothing to gain (its faults are ~0.1 a frame either way): its ratio
is printed, with no bar, as the check that the setting costs a single-model process nothing beyond noise.

    .venv/bin/python bench/bench_allocator.py [--data ../shared/data/kitti_mini] [--rounds 5] [--frames 60]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kitti_mini"
FAULTS_BAR = 5.0  # minor page faults per frame with keep_freed_memory
PAUSE_S = 0.05


def child(mode: str, model: Path, segmenter_model: Path | None, data: Path | None, frames: int, warmup: int) -> dict:
    """One process's figures: median ms and page faults per frame of `detect` (mode "kept" or "default"); with a
    segmenter model, a scan is segmented before each frame, untimed."""
    sys.path.insert(0, str(ROOT))
    if mode == "kept":
        from squeeze.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("keep_freed_memory: this C library's malloc is not glibc's")
    from deploy.bench import data_input
    from deploy.runtimes.openvino import load_openvino

    image = data_input("detection", data)
    detector = load_openvino(model, precision="f32", threads=2)
    segment = lambda: None  # noqa: E731
    if segmenter_model is not None:
        scan = data_input("segmentation", data)
        segmenter = load_openvino(segmenter_model, precision="f32", threads=2)
        segment = lambda: segmenter.segment(scan)  # noqa: E731
    for _ in range(warmup):
        segment()
        detector.detect(image)
    times, faults = [], 0
    for _ in range(frames):
        segment()
        time.sleep(PAUSE_S)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        detector.detect(image)
        times.append((time.perf_counter() - start) * 1e3)
        faults += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return {"mode": mode, "median_ms": statistics.median(times), "faults_per_frame": faults / frames}


def prepare(work: Path, data: Path | None) -> tuple[Path, Path]:
    """The bundled SqueezeDet exported and quantised (int8, calibrated on `data` or on simulated frames), and the
    bundled SqueezeSegV2 exported (fp32)."""
    from deploy.export import export_onnx
    from deploy.quantize import calibration_inputs, quantize_model
    from deploy.sidecar import read_sidecar
    from squeezedet.predict import BUNDLED_WEIGHTS
    from squeezeseg.predict import BUNDLED_WEIGHTS as SEGMENTER_WEIGHTS

    fp32 = export_onnx(BUNDLED_WEIGHTS, work / "det.onnx").path
    if data is None:
        from domain_adapt.sim import simulate

        simulate(work / "calib", frames=8, seed=7, progress=False, world="dense")
        data = work / "calib"
    feeds = calibration_inputs(read_sidecar(fp32), data, max_frames=8)
    segmenter = export_onnx(SEGMENTER_WEIGHTS, work / "seg.onnx").path
    return quantize_model(fp32, work / "det_int8.onnx", feeds).path, segmenter


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA if DEFAULT_DATA.is_dir() else None,
                    help="KITTI folder whose first image is the input and whose images calibrate the int8 model "
                         "(default: ../shared/data/kitti_mini, else simulated frames and a synthetic image)")
    ap.add_argument("--rounds", type=int, default=5, help="pairs of child processes (default 5)")
    ap.add_argument("--frames", type=int, default=60, help="timed frames per child (default 60)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed frames per child first (default 10)")
    ap.add_argument("--child", choices=("kept", "default"), help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--segmenter", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, args.segmenter, args.data, args.frames, args.warmup)))
        return 0
    sys.path.insert(0, str(ROOT))
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-allocator-") as tmp:
        detector, segmenter = prepare(Path(tmp), args.data)
        for kind in ("detector", "both"):
            rows: dict[str, list[dict]] = {"default": [], "kept": []}
            for _ in range(args.rounds):
                for mode in rows:
                    cmd = [sys.executable, __file__, "--child", mode, "--model", str(detector), "--frames",
                           str(args.frames), "--warmup", str(args.warmup)]
                    cmd += ["--data", str(args.data)] if args.data else []
                    cmd += ["--segmenter", str(segmenter)] if kind == "both" else []
                    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                    rows[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            ok &= report(kind, rows)
    return 0 if ok else 1


def report(kind: str, rows: dict[str, list[dict]]) -> bool:
    """Print one kind of process's figures; True when its bars hold."""
    figures = {mode: {"median_ms": statistics.median(r["median_ms"] for r in runs),
                      "faults_per_frame": statistics.median(r["faults_per_frame"] for r in runs),
                      "child_medians_ms": [round(r["median_ms"], 2) for r in runs]} for mode, runs in rows.items()}
    for mode, f in figures.items():
        print(json.dumps({"name": f"detect_end_to_end_{kind}_{mode}_malloc", "value": round(f["median_ms"], 3),
                          "unit": "ms", "faults_per_frame": f["faults_per_frame"],
                          "child_medians_ms": f["child_medians_ms"], "runtime": "openvino int8, 2 threads"}))
    ratio = figures["kept"]["median_ms"] / figures["default"]["median_ms"]
    faults = figures["kept"]["faults_per_frame"]
    ratio_bar = 1.0 if kind == "both" else None
    ratio_ok = ratio <= 1.0 if ratio_bar else None
    print(json.dumps({"name": f"detect_end_to_end_{kind}_kept_vs_default", "value": round(ratio, 3), "unit": "x",
                      "bar": ratio_bar, "passed": ratio_ok}))
    print(json.dumps({"name": f"detect_page_faults_per_frame_{kind}_kept", "value": faults, "unit": "faults",
                      "default": figures["default"]["faults_per_frame"], "bar": FAULTS_BAR,
                      "passed": faults < FAULTS_BAR}))
    return ratio_ok is not False and faults < FAULTS_BAR


if __name__ == "__main__":
    sys.exit(main())
