"""The real-image path learns: SqueezeDet, trained from scratch on the three real KITTI frames of kitti_mini through
`squeeze det train`, must find its own labelled boxes when `squeeze det eval --checkpoint` runs it on them.

This catches what the simulated tests cannot: the real images, label files, image size (1242 x 375 scaled unevenly
to the net input) and the path back to original pixels going through one pipeline. Labels mirrored relative to the
images, or boxes scaled by the wrong factors anywhere between label file and result file, leave the detections far
from the labelled boxes (an object here is 12-100 px wide; mirroring moves it by hundreds).

Why not KITTI AP: over three frames the devkit's AP is its sampling quirk (one counted car gives AP11 = 1/11 even
when found first), and two of the four objects are ignored by every difficulty (the far car is 21.6 px tall, below
the 25 px minimum; the cyclist is occluded 3). So the check is per object: the highest-scoring detection of the
object's class in its frame overlaps it. That needs the detector to rank the right place first among its 1,872
anchors (8 x 26 x 9), which a model that learned nothing, or learned mirrored boxes, does not.

Training: 416 x 128 input (a third of KITTI's size, an 8 x 26 grid), batch 3 (all frames each step), no drift or
flip (memorising is the point), AdamW 1e-3 with a cosine decay, no weight decay. Measured (seed 0, deterministic
from run to run on one machine): after 150 steps the top detection overlaps the cars at IoU 0.67 and 0.78 and the
pedestrian at 0.89; after 300, the cars at 0.83 and 0.92, the pedestrian at 0.97 and the cyclist at 0.88. With the
training boxes mirrored left-right every IoU after 150 steps is 0; with them scaled by 0.9, the best is 0.20.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from squeeze.geometry import iou_2d
from squeeze.kitti import read_labels
from squeeze_suite.cli import main

FRAMES = ("000000", "000001", "000002")
SIZE = ["--set", "image_width=416", "--set", "image_height=128"]


def overfit(data: Path, tmp_path: Path, steps: int) -> dict[str, tuple]:
    """Train from scratch on `data`'s frames for `steps`, run `det eval --checkpoint` on them; per frame
    (labels, detections) as read from the label file and the result file the command wrote."""
    run, evaluated = tmp_path / "run", tmp_path / "eval"
    assert main(["det", "train", str(data), "--out", str(run), *SIZE, "--steps", str(steps), "--batch-size", "3",
                 "--optimizer", "adamw", "--lr", "1e-3", "--schedule", "cosine", "--weight-decay", "0",
                 "--no-flip", "--drift", "0", "0", "--cache-images", "--seed", "0"]) == 0
    assert main(["det", "eval", str(data), "--checkpoint", str(run / "last.pt"), "--out", str(evaluated)]) == 0
    return {fid: (read_labels(data / "training" / "label_2" / f"{fid}.txt"),
                  read_labels(evaluated / "data" / f"{fid}.txt")) for fid in FRAMES}


def top_detection_iou(labels, detections, cls: str) -> list[float]:
    """Per labelled object of class `cls`: IoU with the highest-scoring `cls` detection of the frame (0 if none)."""
    truth = labels.bbox[labels.type == cls]
    mine = detections.type == cls
    if not mine.any():
        return [0.0] * len(truth)
    best = detections.bbox[mine][np.argmax(detections.score[mine])]
    return [float(v) for v in iou_2d(truth, best[None])[:, 0]]


def found(results: dict[str, tuple], cls: str) -> list[float]:
    return [iou for labels, det in results.values() for iou in top_detection_iou(labels, det, cls)]


def test_top_detection_iou_by_hand():
    from squeeze.kitti import ObjectLabels

    def labels(types, boxes, scores=None):
        n = len(types)
        return ObjectLabels(type=np.array(types), truncated=np.zeros(n), occluded=np.zeros(n, np.int64),
                            alpha=np.zeros(n), bbox=np.array(boxes, float).reshape(-1, 4), dimensions=np.zeros((n, 3)),
                            location=np.zeros((n, 3)), rotation_y=np.zeros(n),
                            score=None if scores is None else np.array(scores, float))

    gt = labels(["Car", "Pedestrian"], [[0, 0, 10, 10], [50, 0, 60, 20]])
    # The best-scoring car covers the left half of the labelled car: IoU 50 / 100. The better-placed car scores lower.
    det = labels(["Car", "Car", "Pedestrian"], [[0, 0, 5, 10], [0, 0, 10, 10], [0, 0, 1, 1]], [0.9, 0.8, 0.7])
    assert top_detection_iou(gt, det, "Car") == [0.5]
    assert top_detection_iou(gt, det, "Pedestrian") == [0.0]
    assert top_detection_iou(gt, labels(["Car"], [[0, 0, 10, 10]], [1.0]), "Pedestrian") == [0.0]
    assert top_detection_iou(gt, det, "Cyclist") == []


def test_three_real_frames_overfit_to_their_own_boxes(kitti_mini, tmp_path):
    # 21 s on a nearly idle 2-core machine. Cars and the pedestrian are found first at IoU >= 0.5 (measured 0.67,
    # 0.78 and 0.89); the cyclist (12 px wide: 4 px at this input size, IoU 0 at 150 steps) is left to the slow test.
    results = overfit(kitti_mini, tmp_path, steps=150)
    cars, pedestrians = found(results, "Car"), found(results, "Pedestrian")
    assert len(cars) == 2 and len(pedestrians) == 1
    assert min(cars) >= 0.5, cars
    assert min(pedestrians) >= 0.5, pedestrians


@pytest.mark.slow
def test_three_real_frames_overfit_at_kitti_overlaps(kitti_mini, tmp_path):
    # Twice the training (39 s): every object, the cyclist included, is found first at its KITTI overlap (Car 0.7,
    # Pedestrian and Cyclist 0.5). Measured: cars 0.83 / 0.92, pedestrian 0.97, cyclist 0.88.
    results = overfit(kitti_mini, tmp_path, steps=300)
    assert min(found(results, "Car")) >= 0.7
    assert min(found(results, "Pedestrian")) >= 0.5
    assert min(found(results, "Cyclist")) >= 0.5
