"""Camera images and 2D boxes from KITTI object folders, prepared as SqueezeDet expects them.

Preprocessing follows the reference (reference/models.md 1.1): read with OpenCV (BGR), subtract the VGG
per-channel means (no std), then resize to the net input; boxes are scaled by the same factors. Training
augmentation is the reference's drift (random translation) and horizontal flip, done so that it never cuts a
box and never fails on an image without objects (the reference guards only the left and top edges and crashes
on empty images: squeezeDet issues #58, #98). Randomness comes from squeeze.train.sample_rng(seed, epoch, index).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from squeeze.errors import DataError
from squeeze.kitti import KittiObjectFolder, ObjectLabels, read_labels
from squeeze.train import sample_rng

BGR_MEANS = (103.939, 116.779, 123.68)  # the VGG means the reference subtracts (models.md 1.1)


@dataclass(frozen=True)
class DetDataConfig:
    image_width: int = 1248  # net input width (SqueezeDet; SqueezeDet+ uses 1242)
    image_height: int = 384  # net input height (SqueezeDet+: 375)
    class_names: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist")  # KITTI types trained on; others dropped
    pixel_mean_bgr: tuple[float, float, float] = BGR_MEANS  # subtracted before resizing; no std division
    drift_x: int = 150  # max random horizontal translation in original pixels (reference DRIFT_X)
    drift_y: int = 100  # max random vertical translation (reference DRIFT_Y)
    flip: bool = True  # horizontal flip with p = 0.5 when training
    seed: int = 0  # augmentation seed; a sample's generator is seeded by (seed, epoch, index)


@dataclass
class DetectionSample:
    """One image ready for the network.

    image:  (H, W, 3) float32 BGR minus the means, resized to the net input
    boxes:  (N, 4) float32 [left, top, right, bottom] in net-input pixels
    labels: (N,) int64 index into class_names
    scale:  (sx, sy) net-input pixels per original pixel (to map detections back)
    original_size: (width, height) of the image file
    """

    frame_id: str
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scale: tuple[float, float]
    original_size: tuple[int, int]


def objects_of_classes(labels: ObjectLabels, class_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) float32 boxes and (N,) int64 class indices of the labelled objects whose type is in class_names."""
    index = {name.lower(): i for i, name in enumerate(class_names)}
    keep = np.array([str(t).lower() in index for t in labels.type], bool)
    cls = np.array([index[str(t).lower()] for t in labels.type[keep]], np.int64)
    return labels.bbox[keep].astype(np.float32).reshape(-1, 4), cls


def drift_range(boxes: np.ndarray, size: int, max_drift: int, axis: int) -> tuple[int, int]:
    """Integer shifts d in [lo, hi] with every box inside [0, size - 1] after moving the content by -d."""
    lo, hi = -max_drift, max_drift
    if len(boxes):
        hi = min(hi, int(np.floor(boxes[:, axis].min())))  # the leftmost/topmost box must stay in
        lo = max(lo, int(np.ceil(boxes[:, axis + 2].max() - (size - 1))))  # and the rightmost/bottommost
    return (lo, hi) if lo <= hi else (0, 0)


def shift_image(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Move the content by (-dx, -dy), filling with zeros (the mean colour, as the means are subtracted)."""
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    src_x0, dst_x0 = max(dx, 0), max(-dx, 0)
    src_y0, dst_y0 = max(dy, 0), max(-dy, 0)
    cw, ch = w - abs(dx), h - abs(dy)
    if cw > 0 and ch > 0:
        out[dst_y0:dst_y0 + ch, dst_x0:dst_x0 + cw] = image[src_y0:src_y0 + ch, src_x0:src_x0 + cw]
    return out


def augment(image: np.ndarray, boxes: np.ndarray, config: DetDataConfig, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    """Drift then flip, on the original-size image; never cuts a box, works without boxes. Inputs untouched."""
    h, w = image.shape[:2]
    x_lo, x_hi = drift_range(boxes, w, config.drift_x, axis=0)
    y_lo, y_hi = drift_range(boxes, h, config.drift_y, axis=1)
    dx = int(rng.integers(x_lo, x_hi + 1))
    dy = int(rng.integers(y_lo, y_hi + 1))
    image = shift_image(image, dx, dy)
    boxes = boxes - np.array([dx, dy, dx, dy], np.float32)
    if config.flip and rng.random() < 0.5:
        image = image[:, ::-1].copy()
        boxes = np.stack([w - 1 - boxes[:, 2], boxes[:, 1], w - 1 - boxes[:, 0], boxes[:, 3]], axis=1)
    return image, boxes.astype(np.float32).reshape(-1, 4)


class DetectionDataset(Dataset):
    """KITTI object folder (image_2 + label_2) -> SqueezeDet inputs. Frames without objects are kept.

    __getitem__: {"images": (3, H, W) float32, "boxes": (N, 4) float32, "labels": (N,) int64}; batch with
    `collate_detections`, which stacks images and keeps per-image lists of boxes and labels.
    """

    def __init__(self, root: str | Path, split: str | None = None, config: DetDataConfig | None = None,
                 train: bool = False, split_dir: str = "training"):
        self.config = config or DetDataConfig()
        image_set = None if split in (None, "all") else split
        self.folder = KittiObjectFolder(root, split=split_dir, image_set=image_set)
        self.frame_ids = [f for f in self.folder.frame_ids if self.folder.path("image_2", f).exists()]
        if not self.frame_ids:
            raise DataError(self.folder.dir / "image_2", "no images found")
        self.train = train
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.frame_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def sample(self, index: int, augment_: bool = False) -> DetectionSample:
        fid = self.frame_ids[index]
        path = self.folder.path("image_2", fid)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(path, "not a readable image")
        image = bgr.astype(np.float32) - np.asarray(self.config.pixel_mean_bgr, np.float32)
        label_path = self.folder.path("label_2", fid)
        labels = read_labels(label_path) if label_path.exists() else ObjectLabels()
        boxes, classes = objects_of_classes(labels, self.config.class_names)
        if augment_:
            image, boxes = augment(image, boxes, self.config, sample_rng(self.config.seed, self.epoch, index))
        h, w = image.shape[:2]
        sx, sy = self.config.image_width / w, self.config.image_height / h
        image = cv2.resize(image, (self.config.image_width, self.config.image_height), interpolation=cv2.INTER_LINEAR)
        boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
        return DetectionSample(fid, image, boxes, classes, (sx, sy), (w, h))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.sample(index, augment_=self.train)
        return sample_to_tensors(s)


def sample_to_tensors(s: DetectionSample) -> dict[str, torch.Tensor]:
    return {"images": torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1))),
            "boxes": torch.from_numpy(s.boxes), "labels": torch.from_numpy(s.labels)}


def preprocess_image(bgr: np.ndarray, config: DetDataConfig) -> tuple[torch.Tensor, tuple[float, float]]:
    """(1, 3, H, W) input of one BGR uint8 image for inference, and the (sx, sy) scale to map boxes back."""
    h, w = bgr.shape[:2]
    image = bgr.astype(np.float32) - np.asarray(config.pixel_mean_bgr, np.float32)
    image = cv2.resize(image, (config.image_width, config.image_height), interpolation=cv2.INTER_LINEAR)
    return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None],
            (config.image_width / w, config.image_height / h))


def collate_detections(batch: list[dict[str, torch.Tensor]]) -> dict[str, object]:
    return {"images": torch.stack([b["images"] for b in batch]), "boxes": [b["boxes"] for b in batch],
            "labels": [b["labels"] for b in batch]}


def pixel_std(dataset: DetectionDataset, max_frames: int = 32) -> float:
    """Standard deviation of the mean-subtracted input pixels over (up to) max_frames evenly spaced frames.

    Sets the scale of a random conv1 when no ImageNet weights are loaded (SqueezeDetConfig.conv1_init_scale).
    """
    n = len(dataset)
    picks = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))
    sq, count = 0.0, 0
    for i in picks:
        image = dataset.sample(int(i)).image.astype(np.float64)
        sq += float((image**2).sum())
        count += image.size
    return float(np.sqrt(sq / count))
