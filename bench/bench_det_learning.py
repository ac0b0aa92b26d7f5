"""Learning bar for SqueezeDet: train on simulated camera images only, for at most an hour on this CPU.

Issue 4's bar: SqueezeDet trained only on simulated images (made with `squeeze sim`) for <= 60 minutes reaches
Car AP (moderate, 11-point, official devkit rules) >= 0.80 on simulated validation images from other seeds;
Pedestrian and Cyclist are reported. Without ImageNet weights (no download here) the model starts from
squeezedet.model.from_scratch: a frozen random conv1 scaled by the pixel std, He init elsewhere.
It also runs the model on the real images of ../shared/data/kitti_mini (no bar: no real training data)
and writes the learning curve, the precision-recall curves and a few drawn validation images.

    python bench/bench_det_learning.py --threads 1 --bf16 --data /work/data
Prints one JSON object per line; exits 1 when the bar is missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from bench_seg_learning import KITTI_MINI, ensure_sim
from timing import train_step_seconds

from squeeze.kitti import read_labels, write_image
from squeeze.train import TrainConfig, train
from squeeze.train_cli import parse_overrides
from squeeze.vis import plot_learning_curve
from squeezedet.data import DetectionDataset, collate_detections, pixel_std
from squeezedet.kitti_eval import format_table, plot_pr_curves
from squeezedet.model import SqueezeDet, from_scratch
from squeezedet.predict import (
    ap_summary,
    build_model,
    checkpoint_config,
    data_config_for,
    detect,
    draw_detections,
    evaluate,
    read_image,
    save_folded,
)

CAR_AP_BAR = 0.80


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["squeezedet_kitti", "squeezedet_plus_kitti"], default="squeezedet_kitti")
    ap.add_argument("--minutes", type=float, default=55.0, help="training budget in minutes (bar: <= 60)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--bf16", action="store_true", help="train under bfloat16 autocast (mixed precision)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-norm", action="store_true",
                    help="train with BatchNorm (SqueezeDetConfig.batch_norm) and fold it into plain SqueezeDet after "
                         "training; the numbers are the folded model's")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a SqueezeDetConfig field (VALUE in JSON); repeatable")
    ap.add_argument("--data", type=Path, default=Path("outputs/bench_data"),
                    help="folder for the simulated sets (made with `squeeze sim` when absent)")
    ap.add_argument("--train-frames", type=int, default=1500)
    ap.add_argument("--val-frames", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_det"))
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train_dir = ensure_sim(args.data / "sim_train", args.train_frames, seed=1)
    val_dir = ensure_sim(args.data / "sim_val", args.val_frames, seed=1001)  # other seeds than training
    # No ImageNet weights can be downloaded here: the from-scratch init (squeezedet.model.from_scratch).
    overrides = {"batch_norm": True} if args.batch_norm else {}
    _, model_cfg = build_model(args.model, **overrides, **parse_overrides(args.overrides))
    data_cfg = data_config_for(model_cfg)
    train_set = DetectionDataset(train_dir, None, data_cfg, train=True)
    val_set = DetectionDataset(val_dir, None, data_cfg)
    model_cfg = from_scratch(model_cfg, pixel_std(train_set))
    model = SqueezeDet(model_cfg)

    batch = collate_detections([train_set[i] for i in range(args.batch_size)])
    per_step = train_step_seconds(model, batch, args.bf16)
    budget_s = 60 * args.minutes
    # The schedule runs on the clock (schedule_clock="time"): the cosine ends at the time limit however busy the
    # machine is. `steps` is only the expected count, to space evaluations; max_steps is a loose upper bound.
    steps = max(10, int(0.93 * budget_s / per_step))
    out = args.out / args.model
    if (out / "last.pt").exists():
        raise SystemExit(f"{out} holds an earlier run; remove it first")
    cfg = TrainConfig(optimizer="adamw", lr=args.lr, weight_decay=1e-4, schedule="cosine", warmup_steps=100,
                      max_steps=2 * steps, batch_size=args.batch_size, grad_clip_norm=1.0,
                      grad_clip_mode="per_parameter",
                      eval_every=max(1, steps // 6), checkpoint_every=max(1, steps // 6), log_every=10, seed=0,
                      time_limit_s=budget_s, schedule_clock="time", tensorboard=False, bf16=args.bf16)
    started = time.perf_counter()
    result = train(model, train_set, cfg, out, model_config=checkpoint_config(args.model, model_cfg, data_cfg),
                   class_names=model_cfg.class_names, collate_fn=collate_detections,
                   evaluate=lambda m: ap_summary(evaluate(m, val_set, max_frames=40)),
                   best_metric="ap11_car_moderate")
    train_minutes = (time.perf_counter() - started) / 60
    plot_learning_curve(result.metrics_csv, out / "learning_curve.png",
                        eval_keys=("eval/ap11_car_moderate", "eval/ap11_pedestrian_moderate",
                                   "eval/ap11_cyclist_moderate"), ylabel="validation AP (11-point, moderate)")

    if model_cfg.batch_norm:  # measure what is deployed: the plain SqueezeDet with BN folded into its convs
        model = save_folded(model.eval(), args.model, data_cfg, out / "folded.pt")
    final = evaluate(model, val_set, progress=True)
    plot_pr_curves(final, out / "pr_curves.png")
    common = {"model": args.model, "batch_norm_folded": model_cfg.batch_norm, "steps": result.step,
              "batch_size": args.batch_size, "threads": args.threads,
              "bf16": args.bf16, "val_frames": len(val_set), "train_frames": len(train_set)}
    ok = train_minutes <= 60.0
    print(json.dumps({"name": f"det_{args.model}_train_minutes", "value": round(train_minutes, 2), "unit": "min",
                      "bar": 60.0, "passed": ok, **common}))
    for c in model_cfg.class_names:
        for metric in ("ap11", "ap40"):
            value = getattr(final, metric)[c]["Moderate"]
            bar = CAR_AP_BAR if (c == "Car" and metric == "ap11") else None
            passed = None if bar is None else value >= bar
            ok &= passed is not False
            print(json.dumps({"name": f"det_{args.model}_sim_val_{metric}_{c.lower()}_moderate",
                              "value": round(value, 4), "unit": "AP", "bar": bar, "passed": passed, **common}))
    print(f"\nsimulated validation ({len(val_set)} frames):\n{format_table(final)}", file=sys.stderr)

    pictures = out / "pictures"
    for fid in val_set.frame_ids[:4]:
        image = read_image(val_set.folder.path("image_2", fid))
        det = detect(model, [image], data_cfg)[0]
        gt = read_labels(val_set.folder.path("label_2", fid))
        write_image(pictures / f"sim_val_{fid}.png", draw_detections(image, det, model_cfg.class_names, gt, 0.3))
    if (KITTI_MINI / "training" / "image_2").is_dir():
        real = DetectionDataset(KITTI_MINI, None, data_cfg)
        r = evaluate(model, real)
        for fid in real.frame_ids:
            image = read_image(real.folder.path("image_2", fid))
            det = detect(model, [image], data_cfg)[0]
            gt = read_labels(real.folder.path("label_2", fid))
            write_image(pictures / f"kitti_mini_{fid}.png", draw_detections(image, det, model_cfg.class_names, gt, 0.3))
        print(json.dumps({"name": f"det_{args.model}_kitti_mini_ap11_car_moderate",
                          "value": round(r.ap11["Car"]["Moderate"], 4), "unit": "AP", "bar": None,
                          "frames": len(real), "note": "sim-to-real baseline, 3 frames"}))
    (out / "bench.json").write_text(json.dumps({"metrics": ap_summary(final), "train_minutes": train_minutes,
                                                **common}) + "\n")
    print(f"pictures: {out / 'learning_curve.png'}, {out / 'pr_curves.png'}, {pictures}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
