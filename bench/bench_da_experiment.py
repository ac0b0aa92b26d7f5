"""The sim-to-real ablation end to end (issue 13): every row, its per-class IoU on real scans, and its time.

Runs `squeeze da run` (domain_adapt.experiment.run_experiment) and prints one JSON object per row and class, the
total time, and the bars it can judge here:
- the whole experiment within 90 minutes on this machine (default settings);
- the full pipeline ("all") loses on no class against no adaptation ("none").
The default source is a simulated set the bench writes (`--source-frames` frames, seed 1), the target and the
evaluation set kitti_mini's three real scans (the same scans: said so in table.md). Every row is also scored on 50
held-out simulated frames (seed 1001), as simulated. `--small` runs two rows for a
few seconds each: a smoke test of the pipeline, not a measurement. Exits 1 when a bar is missed.

    .venv/bin/python bench/bench_da_experiment.py --out outputs/bench_da [--small] [--laser-geometry] [--clutter P]
        [--rows R,..]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from domain_adapt.cli import gain_floor, gain_floor_text
from domain_adapt.experiment import ROW_NAMES, ExperimentConfig, run_experiment

KITTI_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_mini"
BUDGET_MIN = 90.0


def simulation_config(target: Path | None, clutter: float = 0.0):
    """The default simulation with `clutter` (WorldConfig.clutter) and, given a target, the target sensor's lasers:
    elevations and origin heights fitted on its scans."""
    from domain_adapt.readers import find_scans, read_scan
    from domain_adapt.sensor_profile import SensorProfile, calibrate_sensor
    from domain_adapt.sim.simulator import sim_config

    if target is None:
        return sim_config(clutter=clutter)
    profile = calibrate_sensor((read_scan(f) for f in find_scans(target)), source=str(target))
    # through the profile's JSON, so `squeeze sim --laser-geometry` with `calibrate-sensor`'s file gives the same
    return sim_config(laser_geometry=SensorProfile.from_json(profile.to_json()), clutter=clutter)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_da"))
    ap.add_argument("--source", type=Path, default=None, help="labelled source scans (default: simulate them)")
    ap.add_argument("--target", type=Path, default=KITTI_MINI)
    ap.add_argument("--eval", type=Path, default=KITTI_MINI)
    ap.add_argument("--init", type=Path, default=None, help="(default: the bundled squeezeseg_v2_sim.pt)")
    ap.add_argument("--steps-per-row", type=int, default=500)
    ap.add_argument("--source-frames", type=int, default=400)
    ap.add_argument("--small", action="store_true", help="two rows, seconds each: a smoke test")
    ap.add_argument("--laser-geometry", action="store_true",
                    help="simulate the source and the held-out simulated frames with the target sensor's laser "
                         "geometry (elevations and origin heights measured on the target scans, "
                         "sensor_profile.laser_geometry) instead of the simulator's evenly spaced lasers")
    ap.add_argument("--clutter", type=float, default=0.0,
                    help="street clutter in the simulated source (`squeeze sim --clutter`; default: 0, none)")
    ap.add_argument("--intensity-jitter", type=gain_floor, default=ExperimentConfig.intensity_jitter,
                    metavar="GAIN,FLOOR",
                    help="laser response jitter of the +jitter rows (SegDataConfig.intensity_jitter; default: "
                         f"{gain_floor_text(ExperimentConfig.intensity_jitter)})")
    ap.add_argument("--rows", default=None, help="comma-separated rows to run (default: all)")
    args = ap.parse_args()
    started = time.perf_counter()
    sim = simulation_config(args.target if args.laser_geometry else None, args.clutter)
    suffix = ("_geometry" if args.laser_geometry else "") + (f"_clutter{args.clutter:g}" if args.clutter else "")
    source = args.source
    if source is None:
        from domain_adapt.sim import simulate

        source = args.out / f"sim_source{suffix}"
        frames = 6 if args.small else args.source_frames
        if not (source / "sim_config.json").exists():
            simulate(source, frames=frames, seed=1, progress=True, config=sim, workers=2)
    source_eval = args.out / f"sim_val{suffix}"
    if not (source_eval / "sim_config.json").exists():
        from domain_adapt.sim import simulate

        simulate(source_eval, frames=3 if args.small else 50, seed=1001, progress=True, config=sim, workers=2)
    init = args.init
    if init is None:
        from squeezeseg.predict import SIM_WEIGHTS as init
    rows = ("none", "all") if args.small else ROW_NAMES
    if args.rows:
        rows = tuple(r.strip() for r in args.rows.split(","))
    config = ExperimentConfig(steps_per_row=8 if args.small else args.steps_per_row,
                              source_frames=6 if args.small else args.source_frames,
                              renderer_steps=5 if args.small else 400,
                              intensity_jitter=args.intensity_jitter)
    results = run_experiment(source, args.target, args.eval, args.out, rows, init, config, source_eval)
    minutes = (time.perf_counter() - started) / 60
    for r in results:
        for name, iou in r.iou.items():
            print(json.dumps({"name": f"da_iou_{name}", "row": r.row, "value": None if math.isnan(iou) else iou,
                              "unit": "IoU", "steps": r.steps,
                              "sim_val": (r.source_iou or {}).get(name)}))
    print(json.dumps({"name": "da_experiment_minutes", "value": round(minutes, 1), "unit": "min",
                      "bar": BUDGET_MIN}))
    ok = minutes <= BUDGET_MIN or args.small
    by_row = {r.row: r.iou for r in results}
    if "none" in by_row and "all" in by_row:
        losing = [c for c in by_row["none"] if by_row["all"][c] < by_row["none"][c] - 1e-9]
        print(json.dumps({"name": "da_all_loses_on_no_class", "value": not losing, "losing": losing}))
        ok &= not losing or args.small
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
