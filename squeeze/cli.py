"""The core's own command, `squeeze show`: its parser and run function (the library is squeeze/show.py).

The command root that gathers every package's commands is `squeeze_suite/cli.py`; this module, like the rest of
the core, imports nothing outside `squeeze`, and nothing heavy until the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PROJECTION_NAMES = ("front", "front-uniform", "360", "360-uniform")  # the keys of squeeze.show.PROJECTIONS


def add_show_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `show` on an argparse subparsers object and return its parser."""
    p = subparsers.add_parser(
        "show", help="write pictures of KITTI frames: range image by class, bird's-eye view, camera with points",
        description="Write, for each frame of a KITTI object folder, a range image coloured by class (classes from "
                    "velodyne/*.label when present, else from the 3D boxes), a bird's-eye view with the labelled "
                    "boxes, and the camera image with projected LiDAR points and boxes.")
    p.add_argument("root", type=Path, help="KITTI object folder (ROOT/training/velodyne, calib, label_2, image_2)")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    p.add_argument("--split", default="training", help="sub-folder: training or testing (default: training)")
    p.add_argument("--frames", nargs="*", help="frame ids (default: all)")
    p.add_argument("--projection", choices=PROJECTION_NAMES, default="front",
                   help="range-image layout: SqueezeSeg's 64x512 front 90 degrees (default) or 64x2048 360 degrees; "
                        "'-uniform' uses elevation bins instead of laser rings (for clouds with no ring order)")
    p.set_defaults(run=run_show)
    return p


def run_show(args: argparse.Namespace) -> int:
    from squeeze.show import write_folder_pictures

    written = write_folder_pictures(args.root, args.out, split=args.split, frame_ids=args.frames or None,
                                    projection=args.projection)
    frames = len({p.name.rsplit("_", 1)[0] for p in written})
    print(f"wrote {len(written)} picture(s) of {frames} frame(s) to {args.out}")
    return 0
