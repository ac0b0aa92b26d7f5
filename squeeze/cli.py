"""The `squeeze` command: a thin root that dispatches to each package's own cli.py.

Subcommands are imported lazily, so `squeeze --help` stays fast and a package's heavy imports
(open3d, torch) are only paid by the command that needs them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from squeeze.errors import DataError

log = logging.getLogger("squeeze")


def _add_show_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "show", help="write pictures of KITTI frames: range image by class, bird's-eye view, camera with points",
        description="Write, for each frame of a KITTI object folder, a range image coloured by class (classes from "
                    "velodyne/*.label when present, else from the 3D boxes), a bird's-eye view with the labelled "
                    "boxes, and the camera image with projected LiDAR points and boxes.")
    p.add_argument("root", type=Path, help="KITTI object folder (ROOT/training/velodyne, calib, label_2, image_2)")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    p.add_argument("--split", default="training", help="sub-folder: training or testing (default: training)")
    p.add_argument("--frames", nargs="*", help="frame ids (default: all)")
    p.add_argument("--projection", choices=["front", "front-uniform", "360", "360-uniform"], default="front",
                   help="range-image layout: SqueezeSeg's 64x512 front 90 degrees (default) or 64x2048 360 degrees; "
                        "'-uniform' uses elevation bins instead of laser rings (for clouds with no ring order)")
    p.set_defaults(run=_run_show)


def _projection(name: str):
    from squeeze import range_image as ri

    return {"front": ri.squeezeseg_front, "front-uniform": ri.squeezeseg_front_uniform, "360": ri.full_360,
            "360-uniform": ri.full_360_uniform}[name]()


def _run_show(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from squeeze.kitti import KittiObjectFolder
    from squeeze.point_labels import squeezeseg_from_point_classes
    from squeeze.vis import write_frame_pictures

    folder = KittiObjectFolder(args.root, split=args.split)
    ids = args.frames or folder.frame_ids
    for fid in tqdm(ids, desc="pictures", unit="frame"):
        frame = folder.load(fid)
        classes = None if frame.point_class is None else squeezeseg_from_point_classes(frame.point_class)
        write_frame_pictures(frame, args.out, point_classes=classes, config=_projection(args.projection))
    print(f"wrote pictures of {len(ids)} frame(s) to {args.out}")
    return 0


def _add_demo_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="simulate a few frames of the embedded default world and write pictures (no download)",
        description="The main demo on the embedded default data: simulates a few KITTI-format frames (LiDAR, camera, "
                    "labels) and writes range-image, bird's-eye-view and camera pictures; then segments new scans "
                    "and detects objects in new camera images with the bundled models.")
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (default: outputs/demo)")
    p.add_argument("--frames", type=int, default=3, help="number of simulated frames (default: 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated world (default: 0)")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from domain_adapt.cli import demo_step

    pictures = demo_step(args.out, frames=args.frames, seed=args.seed)
    from domain_adapt.sim import simulate
    from squeezeseg.cli import demo_step as seg_demo_step
    from squeezeseg.predict import BUNDLED_WEIGHTS

    # The bundled models see frames of other seeds than any they were trained on.
    new_frames = args.out / "new_frames"
    simulate(new_frames, frames=2, seed=args.seed + 1000, progress=False)
    if BUNDLED_WEIGHTS.exists():
        print("\nSegmentation: the bundled SqueezeSegV2 (trained on the simulated world) on new simulated scans")
        pictures += seg_demo_step(BUNDLED_WEIGHTS, new_frames, args.out / "seg")
    else:
        print(f"\n(no segmentation step: {BUNDLED_WEIGHTS} is absent; train one with bench/bench_seg_learning.py)")
    from squeezedet.cli import demo_step as det_demo_step
    from squeezedet.predict import BUNDLED_WEIGHTS as DET_WEIGHTS

    if DET_WEIGHTS.exists():
        print("\nDetection: the bundled SqueezeDet (trained on simulated camera images) on new simulated images")
        pictures += det_demo_step(DET_WEIGHTS, new_frames, args.out / "det")
    else:
        print(f"\n(no detection step: {DET_WEIGHTS} is absent; train one with bench/bench_det_learning.py)")
    print("\nDemo pictures:")
    for path in pictures:
        print(f"  {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="squeeze",
        description="The Squeeze perception suite: LiDAR and camera perception for autonomous driving on "
                    "KITTI-format data, with a simulated world as the embedded default data.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from domain_adapt.cli import add_sim_parser

    add_sim_parser(sub)
    from squeezeseg.cli import add_seg_parser

    add_seg_parser(sub)
    from squeezedet.cli import add_det_parser

    add_det_parser(sub)
    _add_show_parser(sub)
    _add_demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (DataError, ValueError, FileExistsError, NotADirectoryError, FileNotFoundError) as e:
        # Bad input is the user's to fix: one clear line, no traceback (-v shows it).
        if args.verbose:
            log.exception("failed")
        print(f"squeeze {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
