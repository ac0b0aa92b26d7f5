"""`squeeze demo`: the main demo on the embedded default data (the simulated world), no download.

Simulates a few KITTI-format frames and draws them (domain_adapt), then segments new simulated scans with the
bundled SqueezeSegV2 (squeezeseg) and detects objects in new simulated camera images with the bundled SqueezeDet
(squeezedet). Each step is its package's own `demo_step`; this module only strings them together.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_demo_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `demo` on an argparse subparsers object and return its parser."""
    p = subparsers.add_parser(
        "demo", help="simulate a few frames of the embedded default world and write pictures (no download)",
        description="The main demo on the embedded default data: simulates a few KITTI-format frames (LiDAR, camera, "
                    "labels) and writes range-image, bird's-eye-view and camera pictures; then segments new scans "
                    "and detects objects in new camera images with the bundled models. Into OUT: sim/ and "
                    "new_frames/ (the simulated KITTI folders), pictures/ (their pictures), seg/ and det/ (the "
                    "models' pictures); the last lines printed list every picture.")
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default: outputs/demo)")
    p.add_argument("--frames", type=int, default=3, help="number of simulated frames (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated world (default: 0)")
    p.set_defaults(run=run_demo)
    return p


def run_demo(args: argparse.Namespace) -> int:
    pictures = demo(args.out, frames=args.frames, seed=args.seed)
    print("\nDemo pictures:")
    for path in pictures:
        print(f"  {path}")
    return 0


def demo(out: Path, frames: int = 3, seed: int = 0) -> list[Path]:
    """Run the demo's steps into `out`; the pictures written, in order ([] only if every step was skipped)."""
    from domain_adapt.cli import demo_step as sim_demo_step
    from domain_adapt.sim import simulate
    from squeezedet.cli import demo_step as det_demo_step
    from squeezedet.predict import BUNDLED_WEIGHTS as DET_WEIGHTS
    from squeezeseg.cli import demo_step as seg_demo_step
    from squeezeseg.predict import BUNDLED_WEIGHTS as SEG_WEIGHTS

    pictures = sim_demo_step(out, frames=frames, seed=seed)
    # The bundled models see frames of other seeds than any they were trained on.
    new_frames = out / "new_frames"
    simulate(new_frames, frames=2, seed=seed + 1000, progress=False, world="dense")  # the bundled models' world
    if SEG_WEIGHTS.exists():
        print("\nSegmentation: the bundled SqueezeSegV2 (trained on the simulated world, adapted to real KITTI scans) "
              "on new simulated scans")
        pictures += seg_demo_step(SEG_WEIGHTS, new_frames, out / "seg")
    else:
        print(f"\n(no segmentation step: {SEG_WEIGHTS} is absent; train one with bench/bench_seg_learning.py)")
    if DET_WEIGHTS.exists():
        print("\nDetection: the bundled SqueezeDet (trained on simulated camera images) on new simulated images")
        pictures += det_demo_step(DET_WEIGHTS, new_frames, out / "det")
    else:
        print(f"\n(no detection step: {DET_WEIGHTS} is absent; train one with bench/bench_det_learning.py)")
    return pictures
