"""`squeeze sim`: write simulated KITTI-format frames (the embedded default data, no download needed).

Wiring: `squeeze_suite/cli.py` calls `add_sim_parser(subparsers)`; the parsed namespace carries `run=run_sim`.
`python -m domain_adapt.cli sim --out DIR` runs the same command stand-alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def _int_at_least(minimum: int):
    """An argparse type: an integer >= minimum, with a message naming the bound."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def add_sim_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `sim` command on an argparse subparsers object and return its parser."""
    p = subparsers.add_parser(
        "sim",
        help="simulate KITTI-format LiDAR + camera frames with labels (no download needed)",
        description=(
            "Simulate street scenes (cars, vans, pedestrians, cyclists, buildings, trees) and write "
            "them as a KITTI object folder: training/{image_2, velodyne (.bin + SemanticKITTI .label), "
            "calib, label_2, pose, objects}, ImageSets/, plus SqueezeSeg range images lidar_2d/*.npy "
            "with ImageSet/. The LiDAR is a Velodyne HDL-64E beam model mounted like KITTI's, the "
            "camera KITTI's image_2. The same seed always gives byte-identical files."))
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: new, empty, or an earlier `squeeze sim` output (replaced once the new "
                        "frames are all written; an interrupted run leaves it as it was)")
    p.add_argument("--frames", type=_int_at_least(1), default=10, metavar="N",
                   help="number of frames to write (default: %(default)s)")
    p.add_argument("--seed", type=_int_at_least(0), default=0, metavar="S",
                   help="random seed, >= 0 (default: %(default)s); frame i of a non-sequence run depends "
                        "only on (S, i)")
    p.add_argument("--sequence", action="store_true",
                   help="one street driven through at 10 Hz: the ego and the traffic move between frames, "
                        "instance ids stay stable (for tracking); ego poses in training/pose/")
    p.add_argument("--no-intensity", action="store_true",
                   help="leave the LiDAR intensity channel at 0, like the GTA-LiDAR synthetic data set "
                        "(the setting SqueezeSegV2's learned intensity rendering starts from)")
    p.add_argument("--azimuth-steps", type=_int_at_least(8), default=None, metavar="A",
                   help="LiDAR firings per laser per revolution, >= 8 (default: 2083, the HDL-64E at 10 Hz, "
                        "0.17 deg; fewer is faster and sparser)")
    p.add_argument("--sensor-profile", type=Path, default=None, metavar="JSON",
                   help="a real LiDAR's per-laser intensity response and ray drop, measured by `squeeze da "
                        "calibrate-sensor`, applied to every scan (default: none, the simulator's own sensor)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run_sim)
    return p


def add_da_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the `da` (domain adaptation) command group and return its parser."""
    p = subparsers.add_parser(
        "da", help="domain adaptation: make the simulator's scans look like a real sensor's",
        description="Sim-to-real domain adaptation for LiDAR segmentation (SqueezeSegV2, sec. III).")
    sub = p.add_subparsers(dest="da_command", metavar="STEP", required=True)
    c = sub.add_parser(
        "calibrate-sensor", help="measure a real LiDAR's per-laser intensity and ray drop",
        description="Measure a sensor profile from real scans: per laser ring, the intensity distribution "
                    "(percentiles) and the ray-drop rate by range. `squeeze sim --sensor-profile` applies it. "
                    "REAL_DIR: a range-image folder (lidar_2d/*.npy, the SqueezeSeg / GTA-LiDAR layout), a KITTI "
                    "object folder (training/velodyne/*.bin) or a KITTI raw drive (velodyne_points/data/*.bin).")
    c.add_argument("real_dir", type=Path, metavar="REAL_DIR", help="folder of real scans")
    c.add_argument("-o", "--out", type=Path, required=True, metavar="JSON",
                   help="profile to write; a picture of it is written beside it (.png)")
    c.add_argument("--max-scans", type=_int_at_least(1), default=None, metavar="N",
                   help="measure only the first N scans by name (default: all)")
    c.set_defaults(run=run_calibrate_sensor)
    return p


def run_calibrate_sensor(args: argparse.Namespace) -> int:
    from domain_adapt.readers import find_scans, read_scan
    from domain_adapt.sensor_profile import calibrate_sensor, plot_profile, write_profile

    files = find_scans(args.real_dir)[: args.max_scans] if args.max_scans else find_scans(args.real_dir)
    from tqdm import tqdm

    scans = (read_scan(f) for f in tqdm(files, desc="measuring", unit="scan", disable=len(files) < 20))
    profile = calibrate_sensor(scans, source=str(args.real_dir))
    write_profile(args.out, profile)
    picture = args.out.with_suffix(".png")
    plot_profile(profile, picture)
    median = profile.intensity_quantiles[:, 50]
    print(f"measured {profile.frames} scans: median intensity per ring {median.min():.2f}..{median.max():.2f} "
          f"(mean change ring to ring {profile.ring_step:.3f}), ray drop "
          f"{profile.drop_rate.min():.3f}..{profile.drop_rate.max():.3f}; wrote {args.out} and {picture}")
    return 0


def run_sim(args: argparse.Namespace) -> int:
    """Run `sim` for parsed arguments; returns the process exit code."""
    from domain_adapt.sim import simulate

    profile = None
    if getattr(args, "sensor_profile", None) is not None:
        from domain_adapt.sensor_profile import read_profile

        profile = read_profile(args.sensor_profile)
    summary = simulate(args.out, frames=args.frames, seed=args.seed, sequence=args.sequence,
                       intensity=not args.no_intensity, azimuth_steps=args.azimuth_steps,
                       progress=not getattr(args, "quiet", False), sensor_profile=profile)
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(summary.labels.items())) or "no labelled objects"
    print(f"wrote {summary.frames} frames to {summary.out_dir} ({summary.points_mean:.0f} points per scan on "
          f"average; {kinds}; {summary.fps:.1f} frames/s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: `python -m domain_adapt.cli sim --out DIR ...`."""
    parser = argparse.ArgumentParser(prog="squeeze", description="Squeeze suite: simulation commands")
    sub = parser.add_subparsers(dest="command", required=True)
    add_sim_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, OSError) as e:  # FileExistsError and NotADirectoryError included
        parser.exit(2, f"squeeze sim: error: {e}\n")
    return 1


def demo_step(out: str | Path, frames: int = 3, seed: int = 0) -> list[Path]:
    """The demo's first step: simulate `frames` frames into OUT/sim and draw each one into OUT/pictures.

    Returns the written pictures. Each frame gets its range image coloured by class (from the simulator's
    point labels), a bird's-eye view with the labelled boxes, and the camera image with LiDAR points and boxes.
    """
    from tqdm import tqdm

    from domain_adapt.sim import simulate
    from squeeze.kitti import KittiObjectFolder
    from squeeze.point_labels import squeezeseg_from_point_classes
    from squeeze.vis import write_frame_pictures

    out = Path(out)
    summary = simulate(out / "sim", frames=frames, seed=seed, progress=True)
    folder = KittiObjectFolder(out / "sim")
    pictures: list[Path] = []
    for fid in tqdm(folder.frame_ids, desc="pictures", unit="frame"):
        frame = folder.load(fid)
        pictures += write_frame_pictures(frame, out / "pictures",
                                         point_classes=squeezeseg_from_point_classes(frame.point_class))
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(summary.labels.items())) or "no labelled objects"
    print(f"simulated {summary.frames} frames into {out / 'sim'} ({summary.points_mean:.0f} points per scan; {kinds})")
    return pictures


if __name__ == "__main__":
    sys.exit(main())
