"""LATTE camera fusion and KITTI export on simulated frames (and the real kitti_mini frames when present).

Fusion: each frame's true label_2 2D boxes stand in for a perfect 2D detector (class and box); every proposal of
latte.fusion.frustum_proposals is scored by BEV IoU (squeeze.geometry.bev_iou) against the true 3D box of the same
label row (no proposal counts as IoU 0). Figures per class over every labelled object, and for cars with >= 50 LiDAR
points in their true box (the one-click bar's population), unoccluded cars, and pedestrians + cyclists with >= 20
points. For reference, one-click (latte.one_click.one_click_box) clicked on the object's point nearest its true
centre, on the same objects.

Export: the true boxes imported from label_2 and exported again (latte.kitti_io.kitti_labels): the estimated
occlusion level against the simulator's (computed from its render; its "3 unknown" counted as 2), and the time per
frame.

Bar (set here, the issue has none for fusion): cars with >= 50 points get BEV IoU >= 0.7 in >= 85% of detections.
Prints one JSON object per line; exits 1 when the bar is missed.
Usage: .venv/bin/python bench/bench_latte_fusion.py [--data SIM_FOLDER ...] [--seeds 3 5] [--frames 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from latte.boxes import boxes_array
from latte.fusion import frustum_proposals
from latte.kitti_io import kitti_labels, points_in_velodyne_boxes
from latte.one_click import FrameGeometry, one_click_box
from latte.scene import open_source
from squeeze.geometry import bev_iou, boxes_velo_to_rect
from squeeze.kitti import read_labels
from squeeze.predictor import Detections2D

KITTI_MINI = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti_mini"
BAR_RATE = 0.85
BAR_IOU = 0.7


def evaluate(root: Path) -> tuple[list[dict], dict]:
    """Per-object rows and export figures of one KITTI object folder."""
    src = open_source(root)
    rows, conf, times_fusion, times_export = [], np.zeros((4, 3), np.int64), [], []
    for fid in src.frame_ids():
        labels = read_labels(src.dir / "label_2" / f"{fid}.txt")
        labels = labels.select(labels.type != "DontCare")
        truth = src.labels(fid)
        if not truth:
            continue
        calib, image, points = src.calib(fid), src.image(fid), src.points(fid)
        size = (image.shape[1], image.shape[0])
        names = tuple(sorted(set(labels.type.tolist())))
        detections = Detections2D(labels.bbox, np.array([names.index(t) for t in labels.type]),
                                  np.ones(len(labels), np.float32))
        geom = FrameGeometry(points)
        t = time.perf_counter()
        proposals = {int(p.id[4:]): p for p in frustum_proposals(geom, calib, detections, names, size)}
        times_fusion.append(time.perf_counter() - t)
        t = time.perf_counter()
        exported = kitti_labels(truth, calib, points, size)
        times_export.append(time.perf_counter() - t)
        if len(exported) == len(labels):
            for a, b in zip(labels.occluded, exported.occluded, strict=True):
                conf[min(int(a), 3), int(b)] += 1
        inside = points_in_velodyne_boxes(geom.points, boxes_array(truth))
        cam = boxes_velo_to_rect(boxes_array(truth), calib)
        for k, box in enumerate(truth):
            p = proposals.get(k)
            iou = 0.0 if p is None else float(bev_iou(boxes_velo_to_rect(p.array[None], calib), cam[k:k + 1])[0, 0])
            own = np.flatnonzero(inside[:, k] & ~geom.ground.mask)
            click_iou = 0.0
            if len(own):
                click = geom.points[own[np.argmin(np.linalg.norm(geom.points[own, :2] - box.array[:2], axis=1))], :3]
                found = one_click_box(geom, click.astype(np.float64), box.cls)
                if found is not None:
                    click_iou = float(bev_iou(boxes_velo_to_rect(found[0][None], calib), cam[k:k + 1])[0, 0])
            rows.append({"cls": box.cls, "points": int(inside[:, k].sum()), "occluded": int(labels.occluded[k]),
                         "proposed": p is not None, "iou": iou, "one_click_iou": click_iou})
    agree = conf.copy()
    agree[2] += agree[3]
    export = {"occlusion_confusion_sim_rows_ours_cols": conf.tolist(),
              "occlusion_agreement": float(np.trace(agree[:3]) / max(agree[:3].sum(), 1)),
              "export_ms_per_frame_median": 1000 * float(np.median(times_export)) if times_export else None,
              "fusion_ms_per_frame_median": 1000 * float(np.median(times_fusion)) if times_fusion else None}
    return rows, export


def summary(name: str, rows: list[dict]) -> dict:
    iou = np.array([r["iou"] for r in rows])
    click = np.array([r["one_click_iou"] for r in rows])
    out = {"name": name, "n": len(rows)}
    if len(rows):
        out.update(proposed=float(np.mean([r["proposed"] for r in rows])), mean_bev_iou=float(iou.mean()),
                   iou_ge_0_7=float(np.mean(iou >= 0.7)), iou_ge_0_5=float(np.mean(iou >= 0.5)),
                   one_click_mean_bev_iou=float(click.mean()), one_click_iou_ge_0_7=float(np.mean(click >= 0.7)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, nargs="*", default=None, help="simulated KITTI folders (default: simulate)")
    ap.add_argument("--seeds", type=int, nargs="*", default=[3, 5])
    ap.add_argument("--frames", type=int, default=20)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folders = list(args.data or [])
        if not folders:
            from domain_adapt.sim.writer import simulate

            for seed in args.seeds:
                folder = Path(tmp) / f"sim-{seed}"
                simulate(folder, frames=args.frames, seed=seed, progress=False)
                folders.append(folder)
        rows = []
        for folder in folders:
            r, export = evaluate(folder)
            rows += r
            print(json.dumps({"name": "export", "data": str(folder), **export}), flush=True)
    selections = {
        **{f"{c.lower()}_all": [r for r in rows if r["cls"] == c] for c in ("Car", "Van", "Pedestrian", "Cyclist")},
        "car_ge50pts": [r for r in rows if r["cls"] == "Car" and r["points"] >= 50],
        "car_unoccluded": [r for r in rows if r["cls"] == "Car" and r["occluded"] == 0],
        "ped_cyc_ge20pts": [r for r in rows if r["cls"] in ("Pedestrian", "Cyclist") and r["points"] >= 20],
    }
    results = {}
    for name, sel in selections.items():
        results[name] = summary(name, sel)
        print(json.dumps({**results[name], "name": f"fusion_{name}", "unit": "BEV IoU"}), flush=True)
    if (KITTI_MINI / "training").is_dir():
        mini, export = evaluate(KITTI_MINI)
        print(json.dumps({"name": "export_kitti_mini", **export}), flush=True)
        print(json.dumps({**summary("kitti_mini", mini), "name": "fusion_kitti_mini_all", "unit": "BEV IoU",
                          "per_object": [(r["cls"], r["points"], round(r["iou"], 3)) for r in mini]}), flush=True)
    rate = results["car_ge50pts"].get("iou_ge_0_7", 0.0)
    ok = rate >= BAR_RATE
    print(json.dumps({"name": "bar_car_ge50pts_iou_0_7", "value": rate, "bar": BAR_RATE, "ok": ok}), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
