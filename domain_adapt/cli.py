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

from squeeze.cli_help import int_at_least


def _shard(text: str) -> tuple[int, int]:
    """argparse type for K/M: two integers, M >= 1 (the range of K is checked against M once both are known)."""
    parts = text.split("/")
    try:
        k, m = (int(x) for x in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        k = m = None
    if k is None or m is None or m < 1 or k < 0:
        raise argparse.ArgumentTypeError(f"must be K/M with 0 <= K < M (e.g. 0/4), got {text!r}")
    return k, m


def gain_floor_text(pair: tuple[float, float]) -> str:
    """(2.0, 0.15) -> "2,0.15": a GAIN,FLOOR pair as gain_floor reads it (for --help defaults)."""
    return ",".join(f"{v:g}" for v in pair)


def gain_floor(text: str) -> tuple[float, float]:
    """argparse type for GAIN,FLOOR: GAIN >= 1, FLOOR >= 0 (1,0 turns the laser response jitter off)."""
    parts = text.split(",")
    try:
        gain, floor = (float(x) for x in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        gain = floor = None
    if gain is None or floor is None or gain < 1 or floor < 0:
        raise argparse.ArgumentTypeError(f"must be GAIN,FLOOR with GAIN >= 1 and FLOOR >= 0 (e.g. 2,0.15), "
                                         f"got {text!r}")
    return gain, floor


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
    p.add_argument("--frames", type=int_at_least(1), default=10, metavar="N",
                   help="number of frames in the set (default: %(default)s); with --shard, this run writes its "
                        "share of them")
    p.add_argument("--seed", type=int_at_least(0), default=0, metavar="S",
                   help="random seed, >= 0 (default: %(default)s); frame i of a non-sequence run depends "
                        "only on (S, i)")
    p.add_argument("--world", choices=("kitti", "dense"), default="kitti",
                   help="street generator: 'kitti' (KITTI's object density; ground height, slopes and roughness "
                        "drawn per scene) or 'dense' (the earlier, denser world on a flat road that the bundled "
                        "models were trained on and the learning bars measured on) (default: %(default)s)")
    p.add_argument("--clutter", type=float, default=0.0, metavar="P",
                   help="street clutter: garages, fences and garden walls, wheelie bins, each chance for one (a gap "
                        "between buildings, a front garden) taken with probability P in [0, 1]; objects a car's "
                        "size that are not cars (default: %(default)s, none: the worlds the bundled models were "
                        "trained on)")
    p.add_argument("--sequence", action="store_true",
                   help="one street driven through at 10 Hz: the ego and the traffic move between frames, "
                        "instance ids stay stable (for tracking); ego poses in training/pose/")
    p.add_argument("--no-intensity", action="store_true",
                   help="leave the LiDAR intensity channel at 0, like the GTA-LiDAR synthetic data set "
                        "(the setting SqueezeSegV2's learned intensity rendering starts from)")
    p.add_argument("--azimuth-steps", type=int_at_least(8), default=None, metavar="A",
                   help="LiDAR firings per laser per revolution, >= 8 (default: 2083, the HDL-64E at 10 Hz, "
                        "0.17 deg; fewer is faster and sparser)")
    p.add_argument("--sensor-profile", type=Path, default=None, metavar="JSON",
                   help="a real LiDAR's per-laser intensity response, ray drop and laser geometry, measured by "
                        "`squeeze da calibrate-sensor`, applied to every scan (default: none, the simulator's own "
                        "sensor)")
    p.add_argument("--laser-geometry", type=Path, default=None, metavar="JSON",
                   help="fire the lasers at the elevations and from the heights a sensor profile measured "
                        "(`squeeze da calibrate-sensor`), taking nothing else from it; --sensor-profile takes "
                        "its geometry too (default: the simulator's evenly spaced HDL-64E lasers)")
    p.add_argument("--workers", type=int_at_least(1), default=1, metavar="N",
                   help="simulate frames in N parallel processes on this machine (default: %(default)s); the files "
                        "are byte-identical whatever N")
    p.add_argument("--shard", type=_shard, default=None, metavar="K/M",
                   help="write only shard K (counting from 0) of M near-equal contiguous pieces of the --frames "
                        "frames, with the same ids and bytes as the whole run (a sequence keeps its one street); "
                        "give each machine its own K and --out, then merge: "
                        "`for d in OUT0 OUT1 ...; do cp -r \"$d\"/. MERGED/; done`")
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
                    "(percentiles), the ray-drop rate by range, and the laser's elevation and origin height. "
                    "`squeeze sim --sensor-profile` applies it. "
                    "REAL_DIR: a range-image folder (lidar_2d/*.npy, the SqueezeSeg / GTA-LiDAR layout), a KITTI "
                    "object folder (training/velodyne/*.bin) or a KITTI raw drive (velodyne_points/data/*.bin).")
    c.add_argument("real_dir", type=Path, metavar="REAL_DIR", help="folder of real scans")
    c.add_argument("-o", "--out", type=Path, required=True, metavar="JSON",
                   help="profile to write; a picture of it is written beside it (.png)")
    c.add_argument("--max-scans", type=int_at_least(1), default=None, metavar="N",
                   help="measure at most N scans, evenly spaced by name (default: all)")
    c.set_defaults(run=run_calibrate_sensor)

    i = sub.add_parser("intensity", help="learned intensity rendering: train on real scans, apply to simulated",
                       description="SqueezeSegV2's learned intensity rendering: a network predicts each return's "
                                   "intensity from its geometry (x, y, z, range, mask, laser ring), trained on real "
                                   "scans with the hybrid loss (10 bins classified + offset regressed).")
    isub = i.add_subparsers(dest="intensity_command", metavar="ACTION", required=True)
    it = isub.add_parser("train", help="train a renderer on real scans (the last scan by name is held out)",
                         description="Train an intensity renderer on real scans (any layout `calibrate-sensor` "
                                     "reads); the last scan by name is held out and its error reported.")
    it.add_argument("real_dir", type=Path, metavar="REAL_DIR", help="folder of real scans")
    it.add_argument("-o", "--out", type=Path, required=True, metavar="PT", help="renderer checkpoint to write")
    it.add_argument("--steps", type=int_at_least(1), default=400, help="training steps (default: %(default)s)")
    it.add_argument("--rings", type=int, default=64, choices=(0, 64), metavar="{0,64}",
                    help="learn a bias per laser ring of the 64-row ring images (0: none). It lowered the held-out "
                         "error on 2 of kitti_mini's 3 scans and on all 4 labelled real scans of docs/"
                         "domain_adaptation.md (default: %(default)s)")
    it.add_argument("--max-scans", type=int_at_least(2), default=200, metavar="N",
                    help="learn from at most N scans, evenly spaced by name, the last of them held out (a whole data "
                         "set does not fit in memory as ring images; default: %(default)s)")
    it.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (default: %(default)s)")
    it.set_defaults(run=run_intensity_train)
    ia = isub.add_parser("apply", help="replace the intensity of a range-image folder's scans",
                         description="Write a copy of a labelled scan folder (range-image .npy or KITTI/simulated "
                                     "object folder) as range images whose intensity channel the renderer predicts.")
    ia.add_argument("renderer", type=Path, metavar="RENDERER", help="checkpoint from `squeeze da intensity train`")
    ia.add_argument("source_dir", type=Path, metavar="SOURCE_DIR", help="labelled scans to render")
    ia.add_argument("-o", "--out", type=Path, required=True, metavar="DIR", help="range-image folder to write")
    ia.set_defaults(run=run_intensity_apply)

    from domain_adapt.experiment import ExperimentConfig

    r = sub.add_parser("run", help="the sim-to-real ablation: every adaptation step alone and together",
                       description="Train the ablation rows (none / +profile / +intensity / +ray-drop / +alignment / "
                                   "+calibration / +jitter / +jitter+calibration / all, SqueezeSegV2; SqueezeSeg "
                                   "all) on labelled SOURCE scans, "
                                   "adapting to unlabelled TARGET scans, and evaluate each on labelled real "
                                   "EVAL scans. Writes table.md, results.json and ablation.png.")
    r.add_argument("--source", type=Path, required=True, metavar="SIM",
                   help="labelled source scans (a `squeeze sim` folder or a range-image folder)")
    r.add_argument("--target", type=Path, required=True, metavar="REAL", help="unlabelled real scans")
    r.add_argument("--eval", type=Path, required=True, metavar="REAL_LABELLED",
                   help="labelled real scans (range-image .npy with labels, or KITTI object with label_2)")
    r.add_argument("-o", "--out", type=Path, required=True, metavar="DIR", help="output folder")
    r.add_argument("--source-eval", type=Path, default=None, metavar="SIM_VAL",
                   help="labelled simulated scans held out from training: each row is also scored there, to show "
                        "what adaptation costs on the source (default: none)")
    r.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                   help="rows to run (default: all: none +profile +intensity +ray-drop +alignment +calibration "
                        "+jitter +jitter+calibration all 'SqueezeSeg all')")
    r.add_argument("--init", type=Path, default=None, metavar="CKPT",
                   help="source-trained SqueezeSegV2 every V2 row fine-tunes from (default: the bundled "
                        "squeezeseg_v2_sim.pt)")
    r.add_argument("--steps-per-row", type=int_at_least(1), default=500, metavar="N",
                   help="fine-tuning updates per row, batch 4 (default: %(default)s)")
    r.add_argument("--source-frames", type=int_at_least(1), default=400, metavar="N",
                   help="source frames to train on (default: %(default)s)")
    r.add_argument("--renderer-steps", type=int_at_least(1), default=400, help="(default: %(default)s)")
    r.add_argument("--renderer-rings", type=int, default=ExperimentConfig.renderer_rings, choices=(0, 64),
                   metavar="{0,64}", help="the renderer's per-ring bias, as `da intensity train --rings` (default: "
                                          "%(default)s; the earlier ablation tables of docs/domain_adaptation.md ran "
                                          "with 0)")
    r.add_argument("--align-weight", type=float, default=1.0, help="correlation alignment weight (default: "
                                                                   "%(default)s)")

    r.add_argument("--jitter", type=gain_floor, default=ExperimentConfig.intensity_jitter, metavar="GAIN,FLOOR",
                   help="laser response jitter of the +jitter rows: each training scan's lasers get gains drawn in "
                        "[1/GAIN, GAIN], and returns under a floor drawn in [0, FLOOR] read 0 (default: "
                        + gain_floor_text(ExperimentConfig.intensity_jitter) + ")")
    r.add_argument("--threads", type=int_at_least(1), default=2, help="torch threads (default: %(default)s)")
    r.set_defaults(run=run_experiment_command)
    return p


def run_intensity_train(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from domain_adapt.intensity import IntensityNetConfig, checkpoint_dict, held_out_error, ring_images, train_renderer
    from domain_adapt.readers import find_scans, read_scan, spread_files

    files = spread_files(find_scans(args.real_dir), args.max_scans)
    if len(files) < 2:
        raise ValueError(f"{args.real_dir}: need at least 2 scans (one is held out), found {len(files)}")
    images = ring_images([read_scan(f) for f in files])
    train, held = images[:-1], images[-1]
    net, losses = train_renderer(train, steps=args.steps, seed=args.seed, progress=True,
                                 config=IntensityNetConfig(rings=args.rings))
    metrics = {"held_out_scan": files[-1].name, **held_out_error(net, train, held),
               "final_loss": float(np.mean(losses[-20:]))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint_dict(net, str(args.real_dir), args.steps, metrics), args.out)
    print(f"held-out scan {files[-1].name}: MAE {metrics['held_out_mae']:.4f} against "
          f"{metrics['mean_baseline_mae']:.4f} for the training mean (ratio "
          f"{metrics['held_out_mae'] / metrics['mean_baseline_mae']:.2f}; predicting each return by its same-ring "
          f"neighbours' real intensity, an oracle: {metrics['ring_neighbour_ratio']:.2f}); wrote {args.out}")
    return 0


def run_intensity_apply(args: argparse.Namespace) -> int:
    from domain_adapt.intensity import load_renderer
    from domain_adapt.train import SourceTransform, transform_source
    from squeezeseg.data import RangeDataset

    net = load_renderer(args.renderer)
    out = transform_source(RangeDataset(args.source_dir), args.out, SourceTransform(renderer=net), progress=True)
    print(f"wrote rendered range images to {out}")
    return 0


def run_experiment_command(args: argparse.Namespace) -> int:
    from domain_adapt.experiment import ROW_NAMES, ExperimentConfig, run_experiment

    init = args.init
    if init is None:
        from squeezeseg.predict import SIM_WEIGHTS as init
    config = ExperimentConfig(steps_per_row=args.steps_per_row, source_frames=args.source_frames,
                              renderer_steps=args.renderer_steps, renderer_rings=args.renderer_rings,
                              align_weight=args.align_weight, intensity_jitter=args.jitter,
                              threads=args.threads)
    results = run_experiment(args.source, args.target, args.eval, args.out, tuple(args.rows or ROW_NAMES), init,
                             config, args.source_eval)
    print((args.out / "table.md").read_text())
    print(f"wrote {args.out / 'table.md'}, {args.out / 'results.json'}, {args.out / 'ablation.png'} "
          f"({len(results)} rows)")
    return 0


def run_calibrate_sensor(args: argparse.Namespace) -> int:
    import numpy as np

    from domain_adapt.readers import find_scans, read_scan, spread_files
    from domain_adapt.sensor_profile import calibrate_sensor, plot_profile, write_profile

    files = spread_files(find_scans(args.real_dir), args.max_scans)
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
    if profile.elevations_deg is None:
        print("laser geometry: not measured (some ring had too few returns over too narrow a range of distances)")
    else:
        steps = -np.diff(profile.elevations_deg)
        print(f"laser geometry: elevations {profile.elevations_deg[0]:+.2f}..{profile.elevations_deg[-1]:+.2f} deg "
              f"in steps of {steps.min():.2f}..{steps.max():.2f}, fired from {profile.vertical_offsets.min():.3f}.."
              f"{profile.vertical_offsets.max():.3f} m above the origin (`squeeze sim --laser-geometry` uses it)")
    return 0


def run_sim(args: argparse.Namespace) -> int:
    """Run `sim` for parsed arguments; returns the process exit code."""
    from domain_adapt.sensor_profile import read_profile
    from domain_adapt.sim import simulate

    profile_path, geometry_path = getattr(args, "sensor_profile", None), getattr(args, "laser_geometry", None)
    profile = read_profile(profile_path) if profile_path is not None else None
    geometry = read_profile(geometry_path) if geometry_path is not None else None
    from domain_adapt.sim.writer import shard_range

    shard = getattr(args, "shard", None)
    frame_range = None if shard is None else shard_range(args.frames, *shard)  # ValueError: a one-line message
    summary = simulate(args.out, frames=args.frames, seed=args.seed, sequence=args.sequence,
                       intensity=not args.no_intensity, azimuth_steps=args.azimuth_steps,
                       progress=not getattr(args, "quiet", False), sensor_profile=profile,
                       workers=getattr(args, "workers", 1), frame_range=frame_range,
                       world=getattr(args, "world", "kitti"), laser_geometry=geometry,
                       clutter=getattr(args, "clutter", 0.0))
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(summary.labels.items())) or "no labelled objects"
    part = "" if frame_range is None else f" (frames {frame_range[0]}..{frame_range[1] - 1} of {args.frames})"
    print(f"wrote {summary.frames} frames{part} to {summary.out_dir} ({summary.points_mean:.0f} points per scan "
          f"on average; {kinds}; {summary.fps:.1f} frames/s)")
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
    # the world the bundled models were trained on, so the demo shows them on data like their own
    summary = simulate(out / "sim", frames=frames, seed=seed, progress=True, world="dense")
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
