"""Camera images and 2D boxes from KITTI object folders, prepared as SqueezeDet expects them.

Preprocessing follows the reference (reference/models.md 1.1): the image (RGB in memory, squeeze.kitti.read_image)
goes to the network in OpenCV's BGR order, the reference's, minus the VGG per-channel means (no std;
squeeze.detection.network_image), then is resized to the net input; boxes are scaled by the same factors. Training
augmentation is the reference's drift (random translation) and horizontal flip, done so that it never cuts a
box and never fails on an image without objects (the reference guards only the left and top edges and crashes
on empty images: squeezeDet issues #58, #98). Randomness comes from squeeze.rng.sample_rng(seed, epoch, index).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from squeeze.classes import DETECTION_CLASSES
from squeeze.detection import VGG_MEANS_BGR, network_image
from squeeze.errors import DataError
from squeeze.kitti import KittiObjectFolder, ObjectLabels, read_image, read_labels
from squeeze.rng import sample_rng


@dataclass(frozen=True)
class DetDataConfig:
    image_width: int = 1248  # net input width (SqueezeDet; SqueezeDet+ uses 1242)
    image_height: int = 384  # net input height (SqueezeDet+: 375)
    class_names: tuple[str, ...] = DETECTION_CLASSES  # KITTI types trained on (squeeze.classes); others dropped
    pixel_mean_bgr: tuple[float, float, float] = VGG_MEANS_BGR  # B, G, R; subtracted before resizing; no std
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


def draw_drift_flip(boxes: np.ndarray, width: int, height: int, config: DetDataConfig, rng: np.random.Generator
                    ) -> tuple[int, int, bool]:
    """A random (dx, dy, flip) that keeps every box inside a width x height image (the reference's drift + flip)."""
    x_lo, x_hi = drift_range(boxes, width, config.drift_x, axis=0)
    y_lo, y_hi = drift_range(boxes, height, config.drift_y, axis=1)
    dx = int(rng.integers(x_lo, x_hi + 1))
    dy = int(rng.integers(y_lo, y_hi + 1))
    return dx, dy, bool(config.flip and rng.random() < 0.5)


def drift_flip_boxes(boxes: np.ndarray, dx: int, dy: int, flip: bool, width: int) -> np.ndarray:
    """Boxes after moving the content by (-dx, -dy), then mirroring a `width`-wide image when `flip`."""
    boxes = boxes - np.array([dx, dy, dx, dy], np.float32)
    if flip:
        boxes = np.stack([width - 1 - boxes[:, 2], boxes[:, 1], width - 1 - boxes[:, 0], boxes[:, 3]], axis=1)
    return boxes.astype(np.float32).reshape(-1, 4)


def drift_flip_resize(image: np.ndarray, dx: int, dy: int, flip: bool, out_width: int, out_height: int
                      ) -> np.ndarray:
    """Move the content by (-dx, -dy) filling with zeros, mirror when `flip`, and resize, in one bilinear warp.

    The same image as shifting, flipping and then cv2.resize (INTER_LINEAR, pixel centres at +0.5) step by step,
    up to OpenCV's 1/32-pixel interpolation grid and the outermost pixel (zero border instead of replicated):
    one pass over the output instead of three over the full-size image.
    """
    h, w = image.shape[:2]
    sx, sy = out_width / w, out_height / h
    # Output pixel (x, y) reads the source at (x + 0.5) / s - 0.5 (cv2.resize's convention), mirrored, plus the drift.
    if flip:
        row_x = (-1.0 / sx, 0.0, w - 0.5 - 0.5 / sx + dx)
    else:
        row_x = (1.0 / sx, 0.0, 0.5 / sx - 0.5 + dx)
    matrix = np.array([row_x, (0.0, 1.0 / sy, 0.5 / sy - 0.5 + dy)], np.float64)
    return cv2.warpAffine(image, matrix, (out_width, out_height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class DetectionDataset(Dataset):
    """KITTI object folder (image_2 + label_2) -> SqueezeDet inputs. Frames without objects are kept.

    Frames: those of ImageSets/SPLIT.txt (each must have its image: DataError naming the frame and the file
    otherwise, never a silently smaller set), or every image_2/*.png when no split is given.
    Labels: `require_labels` (default: when `train`) makes a missing label_2 file a DataError naming it, since
    an image without its label file would train as pure background; without it (prediction on a `testing` split)
    a missing label file means no objects.

    __getitem__: {"images": (3, H, W) float32, "boxes": (N, 4) float32, "labels": (N,) int64}; batch with
    `collate_detections`, which stacks images and keeps per-image lists of boxes and labels.
    """

    def __init__(self, root: str | Path, split: str | None = None, config: DetDataConfig | None = None,
                 train: bool = False, split_dir: str = "training", cache_images: bool = False,
                 require_labels: bool | None = None):
        self.config = config or DetDataConfig()
        image_set = None if split in (None, "all") else split
        self.folder = KittiObjectFolder(root, split=split_dir, image_set=image_set)
        image_dir = self.folder.dir / "image_2"
        if image_set is None:
            self.folder.frame_ids = sorted(p.stem for p in image_dir.glob("*.png")) if image_dir.is_dir() else []
        else:
            self.folder.require("image_2")
        self.frame_ids = list(self.folder.frame_ids)
        if not self.frame_ids:
            raise DataError(image_dir, "no images found")
        self.require_labels = train if require_labels is None else require_labels
        if self.require_labels:
            self.folder.require("label_2")
        self.train = train
        self.epoch = 0
        # Decoded uint8 images kept after their first read (~1.4 MB per KITTI frame): decoding a PNG costs more
        # than the rest of a sample's preparation, and many epochs fit in an hour at reduced input sizes.
        self.cache_images = cache_images
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.frame_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def with_config(self, config: DetDataConfig) -> DetectionDataset:
        """The same frames (and image cache) prepared for another net input size or class list."""
        other = copy.copy(self)
        other.config = config
        return other

    def read_rgb(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of frame `index` (from the cache when `cache_images`)."""
        cached = self._images.get(index)
        if cached is not None:
            return cached
        rgb = read_image(self.folder.path("image_2", self.frame_ids[index]))  # DataError naming a bad file
        if self.cache_images:
            self._images[index] = rgb
        return rgb

    def sample(self, index: int, augment_: bool = False) -> DetectionSample:
        fid = self.frame_ids[index]
        image = network_image(self.read_rgb(index), self.config.pixel_mean_bgr)
        label_path = self.folder.path("label_2", fid)
        if label_path.exists() or self.require_labels:  # required: a file deleted since construction is an error
            labels = read_labels(label_path)
        else:
            labels = ObjectLabels()
        boxes, classes = objects_of_classes(labels, self.config.class_names)
        h, w = image.shape[:2]
        out_w, out_h = self.config.image_width, self.config.image_height
        sx, sy = out_w / w, out_h / h
        if augment_:
            dx, dy, flip = draw_drift_flip(boxes, w, h, self.config, sample_rng(self.config.seed, self.epoch, index))
            image = drift_flip_resize(image, dx, dy, flip, out_w, out_h)
            boxes = drift_flip_boxes(boxes, dx, dy, flip, w)
        else:
            image = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
        return DetectionSample(fid, image, boxes, classes, (sx, sy), (w, h))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        s = self.sample(index, augment_=self.train)
        return sample_to_tensors(s)


def sample_to_tensors(s: DetectionSample) -> dict[str, torch.Tensor]:
    return {"images": torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1))),
            "boxes": torch.from_numpy(s.boxes), "labels": torch.from_numpy(s.labels)}


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
