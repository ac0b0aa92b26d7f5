"""Range-image datasets for LiDAR segmentation: one interface over four folder kinds.

- range-image `.npy` folders (SqueezeSeg's converted KITTI, GTA-LiDAR): `lidar_2d/*.npy` + `ImageSet/{split}.txt`,
  or the `.npy` files straight in the folder
- KITTI object folders: `training/velodyne/*.bin`; point labels from `velodyne/*.label` when present (the
  simulator writes them), otherwise from the 3D boxes of `label_2` (points inside a box take its class,
  as SqueezeSeg labelled its data)
- simulated folders (`squeeze sim`): KITTI object folders with `.label` files, found as above
- SemanticKITTI-style folders: `sequences/NN/velodyne/*.bin` + `sequences/NN/labels/*.label`

Every source yields a `RangeSample` (raw channels, mask, labels, and the point mapping when there are points);
`RangeDataset` turns samples into normalised tensors for the model. Augmentation draws from a generator seeded
by (seed, epoch, index), so a run is reproducible and resumable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from squeeze.classes import SEGMENTATION_CLASSES, SEMANTIC_KITTI_TO_SEGMENTATION, map_ids
from squeeze.errors import DataError
from squeeze.kitti import (
    KittiObjectFolder,
    atomic_write_text,
    check_velodyne_file,
    read_frame_ids,
    read_point_labels,
    read_velodyne,
)
from squeeze.point_labels import point_classes_from_boxes, squeezeseg_from_point_classes
from squeeze.range_image import ProjectionConfig, project_scan, range_image_from_array, read_range_npy
from squeeze.rng import sample_rng
from squeeze.segmentation import RAW_CHANNELS, normalize_channels, raw_channels

SEMANTIC_KITTI_SPLITS = {"train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"), "val": ("08",)}


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and std of x, y, z, intensity, range used to normalise the input."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or any(s <= 0 for s in self.std):
            raise ValueError(f"need as many positive stds as means, got mean {self.mean} std {self.std}")


def squeezeseg_kitti_stats() -> ChannelStats:
    """SqueezeSeg's statistics of its KITTI range images (reference/models.md 2.2)."""
    return ChannelStats(mean=(10.88, 0.23, -1.04, 0.21, 12.12), std=(11.47, 6.91, 0.86, 0.16, 12.32))


def read_stats(path: str | Path) -> ChannelStats:
    data = json.loads(Path(path).read_text())
    try:
        return ChannelStats(mean=tuple(data["mean"]), std=tuple(data["std"]))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(path, f"not a channel-statistics file ({e})") from None


def write_stats(path: str | Path, stats: ChannelStats, frames: int) -> None:
    atomic_write_text(path, json.dumps({"channels": RAW_CHANNELS, "mean": stats.mean, "std": stats.std,
                                        "frames": frames}, indent=2) + "\n")


@dataclass(frozen=True)
class SegDataConfig:
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)  # SqueezeSeg's 64 x 512 front view
    stats: ChannelStats = field(default_factory=squeezeseg_kitti_stats)  # input normalisation
    class_names: tuple[str, ...] = SEGMENTATION_CLASSES  # id = position; 0 is background (squeeze.classes)
    flip: bool = False  # with p = 0.5 mirror left-right (reverse columns, negate y), as SqueezeSeg trains
    point_drop: float = 0.0  # fraction of points (or valid pixels) dropped at random, 0 = off
    # Sensor pose jitter (metres, degrees): the scan is raised or lowered by up to the first and pitched and rolled
    # by up to the second, uniformly; (0, 0) = off. Mounting height and pitch differ between cars and over a drive,
    # and a model trained on one simulated pose paints real ground as car when it sits 10 cm off (issue 13).
    pose_jitter: tuple[float, float] = (0.0, 0.0)
    # Laser response jitter (gain, floor): each ring's intensities are scaled by a gain drawn log-uniformly in
    # [1/gain, gain], then returns below a floor drawn uniformly in [0, floor] read 0; (1, 0) = off. A real
    # HDL-64E's lasers differ in gain (ring medians 0.13-0.37 on KITTI) and its dim ones read 0 on 19-37% of
    # returns, dark road included; a simulator where only dark paint reads 0 teaches "0 = car" (issue 13).
    intensity_jitter: tuple[float, float] = (1.0, 0.0)
    seed: int = 0  # augmentation seed; a sample's generator is seeded by (seed, epoch, index)


@dataclass
class RangeSample:
    """One frame as a range image.

    raw:    (H, W, 5) float32 x, y, z, intensity, range; 0 where empty
    mask:   (H, W) bool, True where a point landed
    labels: (H, W) int64 class ids, 0 where empty
    pixel_of_point: (N,) int64 flat pixel of each point (-1 outside the image), or None for .npy sources
    point_labels:   (N,) int64 class of each point, or None
    """

    frame_id: str
    raw: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    pixel_of_point: np.ndarray | None = None
    point_labels: np.ndarray | None = None


# ----------------------------------------------------------------------------------------------- sources
class _NpySource:
    kind = "npy"

    def __init__(self, root: Path, split: str | None, files: Path | None = None):
        """`files`: the folder of the .npy files, root/lidar_2d (the published layout) unless given (a plain
        folder of range images: root itself)."""
        self.root = root
        self.files = files = root / "lidar_2d" if files is None else files
        ids = None
        if split is not None:
            list_file = root / "ImageSet" / f"{split}.txt"
            if not list_file.exists():
                raise DataError(list_file, f"split list for '{split}' not found")
            ids = read_frame_ids(list_file)  # plain names only: ids become paths
            # A listed frame without its file is an error here, not a smaller set or a failure mid-training.
            missing = [fid for fid in ids if not (files / f"{fid}.npy").is_file()]
            if missing:
                more = f" (and {len(missing) - 1} more frames)" if len(missing) > 1 else ""
                raise DataError(files / f"{missing[0]}.npy",
                                f"not found: frame {missing[0]}, listed in {list_file}, has no .npy file{more}")
        self.frame_ids = ids if ids is not None else sorted(p.stem for p in files.glob("*.npy"))

    def points(self, i: int):
        return None

    def range_sample(self, i: int, config: SegDataConfig) -> RangeSample:
        fid = self.frame_ids[i]
        image = read_range_npy(self.files / f"{fid}.npy",
                               shape=(config.projection.height, config.projection.width))
        raw = raw_channels(image)
        return RangeSample(fid, raw, image.mask, image.label.astype(np.int64))


class _KittiSource:
    kind = "kitti"

    def __init__(self, root: Path, split: str | None):
        image_set = split if split is not None and (root / "ImageSets" / f"{split}.txt").exists() else None
        if split is not None and image_set is None and split != "all":
            raise DataError(root / "ImageSets" / f"{split}.txt", f"split list for '{split}' not found")
        self.folder = KittiObjectFolder(root, image_set=image_set)
        self.folder.require("velodyne")  # a listed frame without its scan: DataError naming frame and file
        for fid in self.folder.frame_ids:  # a bad scan is named now, not inside a DataLoader worker later
            check_velodyne_file(self.folder.path("velodyne", fid))
        self.frame_ids = self.folder.frame_ids

    def points(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        fid = self.frame_ids[i]
        points = read_velodyne(self.folder.path("velodyne", fid))
        label_file = self.folder.path("point_label", fid)
        if label_file.exists():
            cls, _ = read_point_labels(label_file, len(points))
            return points, squeezeseg_from_point_classes(cls).astype(np.int64)
        frame = self.folder.load(fid, parts=("calib", "label_2"))
        if frame.calib is None or frame.labels is None:
            raise DataError(self.folder.path("label_2", fid), "no point labels and no 3D labels + calib to make them")
        return points, point_classes_from_boxes(points, frame.calib, frame.labels).astype(np.int64)


class _SemanticKittiSource:
    kind = "semantic_kitti"

    def __init__(self, root: Path, split: str | None):
        seqs = sorted(p.name for p in (root / "sequences").iterdir() if p.is_dir())
        if split in SEMANTIC_KITTI_SPLITS:
            seqs = [s for s in seqs if s in SEMANTIC_KITTI_SPLITS[split]]
        self.files = [(root / "sequences" / s, p.stem) for s in seqs
                      for p in sorted((root / "sequences" / s / "velodyne").glob("*.bin"))]
        self.frame_ids = [f"{d.name}/{stem}" for d, stem in self.files]
        for seq_dir, stem in self.files:  # a bad scan is named now, not inside a DataLoader worker later
            check_velodyne_file(seq_dir / "velodyne" / f"{stem}.bin")

    def points(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        seq_dir, stem = self.files[i]
        points = read_velodyne(seq_dir / "velodyne" / f"{stem}.bin")
        cls, _ = read_point_labels(seq_dir / "labels" / f"{stem}.label", len(points))
        return points, map_ids(cls, SEMANTIC_KITTI_TO_SEGMENTATION)


def open_source(root: str | Path, split: str | None = None):
    """The source for a folder, recognised by its layout; DataError naming the folder when none fits.

    A simulated folder has both layouts; its scans (training/velodyne + .label) are used.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a directory")
    # Points first: with them, predictions map back to points and point-level metrics exist.
    if (root / "training" / "velodyne").is_dir():
        return _KittiSource(root, split)
    if (root / "lidar_2d").is_dir():
        return _NpySource(root, split)
    if (root / "sequences").is_dir():
        return _SemanticKittiSource(root, split)
    if any(root.glob("*.npy")):  # range images straight in the folder, as a user gathers a few of them
        return _NpySource(root, split, files=root)
    raise DataError(root, "not a range-image folder (lidar_2d/ or .npy files), KITTI object folder "
                          "(training/velodyne/) or SemanticKITTI folder (sequences/)")


# ----------------------------------------------------------------------------------------------- dataset
def flip_sample(sample: RangeSample) -> RangeSample:
    """Mirror left-right: reverse the columns and negate y. A new sample; the input is not modified.

    (The reference negates the y mean in its shared config instead, which flips its sign on every flip.)
    """
    raw = sample.raw[:, ::-1].copy()
    raw[..., 1] *= -1
    pixel = sample.pixel_of_point
    if pixel is not None:
        w = sample.mask.shape[1]
        row, col = np.divmod(pixel, w)
        pixel = np.where(pixel >= 0, row * w + (w - 1 - col), -1)
    return RangeSample(sample.frame_id, raw, sample.mask[:, ::-1].copy(), sample.labels[:, ::-1].copy(), pixel,
                       sample.point_labels)


def jitter_sensor_pose(sample: RangeSample, rng: np.random.Generator, height: float, angle_deg: float) -> RangeSample:
    """The sample as seen from a sensor shifted up by dz in [-height, height] and pitched and rolled by angles in
    [-angle_deg, angle_deg]: valid pixels' x, y, z rotated (about y, then x) and shifted, range recomputed. The
    pixels stay where they are (a small pose change moves few points across pixels). A new sample."""
    dz = rng.uniform(-height, height)
    pitch, roll = np.deg2rad(rng.uniform(-angle_deg, angle_deg, 2))
    cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rotation = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]]) @ np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    raw = sample.raw.copy()
    xyz = raw[sample.mask][:, :3].astype(np.float64) @ rotation.T
    xyz[:, 2] += dz
    raw[sample.mask, :3] = xyz
    raw[sample.mask, 4] = np.linalg.norm(xyz, axis=1)
    return RangeSample(sample.frame_id, raw, sample.mask, sample.labels, sample.pixel_of_point, sample.point_labels)


def jitter_laser_response(sample: RangeSample, rng: np.random.Generator, gain: float, floor: float) -> RangeSample:
    """The sample as a sensor with other laser gains would see it: each row's (laser's) intensities scaled by a
    gain drawn log-uniformly in [1/gain, gain] and clipped to 1, then those below a floor drawn in [0, floor] set
    to 0 (too weak to register). Geometry, mask and labels unchanged. A new sample."""
    if gain < 1.0 or floor < 0.0:
        raise ValueError(f"intensity jitter needs gain >= 1 and floor >= 0, got ({gain}, {floor})")
    gains = np.exp(rng.uniform(-np.log(gain), np.log(gain), sample.raw.shape[0])).astype(np.float32)
    cut = np.float32(rng.uniform(0.0, floor))
    raw = sample.raw.copy()
    intensity = np.minimum(raw[..., 3] * gains[:, None], np.float32(1.0))
    intensity[intensity < cut] = 0.0
    raw[..., 3] = np.where(sample.mask, intensity, 0.0)
    return RangeSample(sample.frame_id, raw, sample.mask, sample.labels, sample.pixel_of_point, sample.point_labels)


class RangeDataset(Dataset):
    """Range images with labels from any supported folder, as tensors for the segmentation models.

    __getitem__ returns {"inputs": (C, H, W) float32 normalised, "mask": (H, W) bool, "labels": (H, W) int64}.
    `sample(i, augment=False)` returns the RangeSample itself (for evaluation and point-level metrics).
    """

    def __init__(self, root: str | Path, split: str | None = None, config: SegDataConfig | None = None,
                 train: bool = False):
        self.root = Path(root)
        self.config = config or SegDataConfig()
        self.train = train
        self.source = open_source(self.root, split)
        if not self.source.frame_ids:
            raise DataError(self.root, f"no frames found (split {split!r})")
        self.epoch = 0
        if len(self.config.stats.mean) != len(RAW_CHANNELS):
            raise DataError(None, f"channel statistics have {len(self.config.stats.mean)} channels, "
                                  f"need {len(RAW_CHANNELS)}")

    def __len__(self) -> int:
        return len(self.source.frame_ids)

    @property
    def frame_ids(self) -> list[str]:
        return self.source.frame_ids

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def sample(self, index: int, augment: bool = False) -> RangeSample:
        rng = sample_rng(self.config.seed, self.epoch, index) if augment else None
        pts = self.source.points(index)
        if pts is None:
            sample = self.source.range_sample(index, self.config)
            if rng is not None and self.config.point_drop > 0:
                drop = sample.mask & (rng.random(sample.mask.shape) < self.config.point_drop)
                sample.raw[drop] = 0
                sample.mask = sample.mask & ~drop
                sample.labels[drop] = 0
        else:
            points, point_labels = pts
            if rng is not None and self.config.point_drop > 0:
                keep = rng.random(len(points)) >= self.config.point_drop
                points, point_labels = points[keep], point_labels[keep]
            # Ring order survives the drop (points keep their order), so ring mode still applies.
            image, pixel = project_scan(points, self.config.projection, labels=point_labels,
                                        source=self.source.frame_ids[index])
            raw = raw_channels(image)
            sample = RangeSample(self.source.frame_ids[index], raw, image.mask, image.label.astype(np.int64),
                                 pixel, point_labels)
        if rng is not None and self.config.flip and rng.random() < 0.5:
            sample = flip_sample(sample)
        if rng is not None and any(self.config.pose_jitter):
            sample = jitter_sensor_pose(sample, rng, *self.config.pose_jitter)
        if rng is not None and self.config.intensity_jitter != (1.0, 0.0):
            sample = jitter_laser_response(sample, rng, *self.config.intensity_jitter)
        return sample

    def to_tensors(self, sample: RangeSample) -> dict[str, torch.Tensor]:
        return sample_to_tensors(sample, self.config.stats)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.to_tensors(self.sample(index, augment=self.train))


def sample_to_tensors(sample: RangeSample, stats: ChannelStats) -> dict[str, torch.Tensor]:
    """{"inputs": (C, H, W) float32 normalised, "mask": (H, W) bool, "labels": (H, W) int64} of one sample.

    Empty pixels are normalised too (their raw zeros become -mean / std), as the reference does.
    """
    inputs = normalize_channels(sample.raw, stats.mean, stats.std)
    return {"inputs": torch.from_numpy(inputs),
            "mask": torch.from_numpy(np.ascontiguousarray(sample.mask)),
            "labels": torch.from_numpy(np.ascontiguousarray(sample.labels, dtype=np.int64))}


def compute_stats(dataset: RangeDataset, max_frames: int | None = None, progress: bool = True) -> ChannelStats:
    """Mean and std of x, y, z, intensity, range over the valid pixels of (up to max_frames) frames."""
    from tqdm import tqdm

    n = len(dataset) if max_frames is None else min(max_frames, len(dataset))
    total = np.zeros(len(RAW_CHANNELS))
    total_sq = np.zeros(len(RAW_CHANNELS))
    count = 0
    for i in tqdm(range(n), desc="stats", unit="frame", disable=not progress):
        s = dataset.sample(i)
        v = s.raw[s.mask].astype(np.float64)
        total += v.sum(axis=0)
        total_sq += (v * v).sum(axis=0)
        count += len(v)
    if count == 0:
        raise DataError(dataset.root, "no valid pixels to compute statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean * mean, 1e-12))
    return ChannelStats(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))


def range_sample_from_array(array: np.ndarray, frame_id: str = "<array>") -> RangeSample:
    """A RangeSample from an (H, W, 6) SqueezeSeg array (for `predict` on .npy input)."""
    image = range_image_from_array(array, frame_id)
    raw = raw_channels(image)
    return RangeSample(frame_id, raw, image.mask, image.label.astype(np.int64))
