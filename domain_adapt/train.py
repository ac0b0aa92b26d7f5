"""Sim-to-real adaptation of SqueezeSeg / SqueezeSegV2: the training side (SqueezeSegV2 sec. III, issue 13).

- `transform_source`: rewrite a labelled source set (simulated scans) as range images the way the real sensor
  would have returned them: the learned ray-drop model, the learned intensity renderer, the measured sensor
  profile (each optional). Written as a SqueezeSeg `.npy` folder (lidar_2d/, ImageSet/).
- `CorrelationAligned`: the segmenter wrapped for geodesic correlation alignment. In training each step takes a
  labelled source batch and an unlabelled target batch through the same network; the losses are the
  segmenter's own (focal loss for V2) on the source and `align_weight` x the log-Euclidean distance between the
  output covariances of the two batches (domain_adapt.alignment).
- `PairedDataset`: source samples, each with a target sample drawn reproducibly (squeeze.rng.sample_rng).
- `train_adapted`: the shared trainer (squeeze.train) on the wrapper; returns the plain segmenter and writes a
  plain segmentation checkpoint (`adapted.pt`) that `squeeze seg eval / predict` read like any other.
- progressive domain calibration is domain_adapt.calibration; `calibrate_on_target` feeds it the target set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from domain_adapt.alignment import correlation_alignment_loss
from domain_adapt.calibration import progressive_domain_calibration
from domain_adapt.intensity import IntensityNet, render_intensity
from domain_adapt.ray_drop import RayDropModel, apply_ray_drop
from domain_adapt.readers import spread_indices
from domain_adapt.sensor_profile import SensorProfile, apply_sensor_profile
from squeeze.atomic import atomic_write_text
from squeeze.checkpoint import save_checkpoint
from squeeze.kitti import write_image_set
from squeeze.range_image import RangeImage, write_range_npy
from squeeze.rng import sample_rng
from squeeze.train import TrainConfig, train
from squeezeseg.data import RangeDataset, SegDataConfig
from squeezeseg.predict import checkpoint_config


# ----------------------------------------------------------------------------------------------- source data
@dataclass(frozen=True)
class SourceTransform:
    """Which realism steps to apply to the source scans (None: skip the step)."""

    ray_drop: RayDropModel | None = None
    renderer: IntensityNet | None = None
    profile: SensorProfile | None = None

    @property
    def name(self) -> str:
        parts = [n for n, v in (("ray-drop", self.ray_drop), ("intensity", self.renderer),
                                ("profile", self.profile)) if v is not None]
        return "+".join(parts) or "none"


def transform_range_image(raw: np.ndarray, mask: np.ndarray, labels: np.ndarray, transform: SourceTransform,
                          rng: np.random.Generator) -> RangeImage:
    """One source frame ((H, W, 5) x, y, z, intensity, range; (H, W) mask and labels; rows are laser rings) as the
    real sensor would have returned it: learned ray drop, rendered intensity, then the profile's extra drops and
    per-ring intensity mapping."""
    raw = raw.copy()
    mask = mask.copy()
    labels = np.where(mask, labels, 0)
    rows = np.broadcast_to(np.arange(raw.shape[0])[:, None], mask.shape)

    def drop(keep: np.ndarray, where: np.ndarray) -> None:
        gone = np.zeros_like(mask)
        gone[where] = ~keep
        raw[gone] = 0
        mask[gone] = False
        labels[gone] = 0

    if transform.ray_drop is not None and mask.any():
        where = mask.copy()
        drop(apply_ray_drop(raw[where][:, :4], rows[where], transform.ray_drop, rng), where)
    image = RangeImage(xyz=raw[..., :3], intensity=raw[..., 3], range=raw[..., 4], mask=mask,
                       point_index=np.where(mask, 0, -1), label=labels.astype(np.int32))
    if transform.renderer is not None and mask.any():
        raw[..., 3] = render_intensity(transform.renderer, image)
    if transform.profile is not None and mask.any():
        where = mask.copy()
        kept, points = apply_sensor_profile(raw[where][:, :4], rows[where], transform.profile, rng)
        intensity = raw[..., 3].copy()
        flat = np.flatnonzero(where)
        intensity.reshape(-1)[flat[kept]] = points[:, 3]
        raw[..., 3] = intensity
        drop(kept, where)
    return RangeImage(xyz=raw[..., :3].copy(), intensity=raw[..., 3].copy(), range=raw[..., 4].copy(), mask=mask,
                      point_index=np.where(mask, 0, -1), label=labels.astype(np.int32))


def transform_source(source: RangeDataset, out: str | Path, transform: SourceTransform, seed: int = 0,
                     progress: bool = False) -> Path:
    """Write every frame of `source` through `transform` into a SqueezeSeg `.npy` folder (lidar_2d/, ImageSet/
    all.txt, train.txt), each under its own frame id (a SemanticKITTI "08/000123" as "08_000123"); returns the
    folder. Frame i's randomness comes from (seed, i) alone."""
    from tqdm import tqdm

    out = Path(out)
    (out / "lidar_2d").mkdir(parents=True, exist_ok=True)
    ids = []
    for i in tqdm(range(len(source)), desc=f"source: {transform.name}", unit="frame", disable=not progress):
        s = source.sample(i)
        image = transform_range_image(s.raw, s.mask, s.labels, transform, np.random.default_rng([seed, i]))
        fid = s.frame_id.replace("/", "_")
        write_range_npy(out / "lidar_2d" / f"{fid}.npy", image)
        ids.append(fid)
    for name in ("all", "train"):
        atomic_write_text(out / "ImageSet" / f"{name}.txt", "".join(f"{f}\n" for f in ids))
    write_image_set(out, "all", ids)
    return out


# ----------------------------------------------------------------------------------------------- alignment
class CorrelationAligned(nn.Module):
    """A segmenter trained with geodesic correlation alignment (module docstring). Eval mode is the segmenter."""

    def __init__(self, segmenter: nn.Module, align_weight: float = 1.0) -> None:
        super().__init__()
        if align_weight < 0:
            raise ValueError(f"align_weight must be >= 0, got {align_weight}")
        self.segmenter = segmenter
        self.align_weight = float(align_weight)

    def forward(self, inputs: Tensor, mask: Tensor, labels: Tensor | None = None,
                target_inputs: Tensor | None = None, target_mask: Tensor | None = None) -> Any:
        if not self.training:
            return self.segmenter(inputs, mask)
        source_logits = self.segmenter.logits(inputs, mask)
        losses = dict(self.segmenter.losses(source_logits, labels, mask))
        if target_inputs is not None and self.align_weight > 0:
            target_logits = self.segmenter.logits(target_inputs, target_mask)
            losses["align_loss"] = self.align_weight * correlation_alignment_loss(
                source_logits, target_logits, mask, target_mask)
        return losses

    def param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        return self.segmenter.param_groups(weight_decay)


class PairedDataset(Dataset):
    """Source sample i with a target sample drawn by (seed, epoch, i): {"inputs", "mask", "labels",
    "target_inputs", "target_mask"}. Source augmentation is the source dataset's own."""

    def __init__(self, source: RangeDataset, target: RangeDataset, seed: int = 0) -> None:
        self.source, self.target, self.seed, self.epoch = source, target, seed, 0

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.source.set_epoch(epoch)
        self.target.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        item = dict(self.source[index])
        j = int(sample_rng(self.seed + 7919, self.epoch, index).integers(len(self.target)))
        t = self.target[j]
        item["target_inputs"], item["target_mask"] = t["inputs"], t["mask"]
        return item


def target_dataset(target: str | Path, data_config: SegDataConfig, split: str | None = None) -> RangeDataset:
    """Unlabelled target scans as a dataset with the source's normalisation and projection (labels unused: a
    KITTI folder without label_2 gives all-background labels, which nothing reads). The target is real: no point
    drop, pose or laser-response jitter (those make simulated scans vary like real ones); flips only."""
    return RangeDataset(Path(target), split, dataclasses.replace(data_config, point_drop=0.0, pose_jitter=(0.0, 0.0),
                                                                 intensity_jitter=(1.0, 0.0)), train=True)


def fine_tune_config(steps: int, batch_size: int = 4, lr: float = 5e-4, seed: int = 0,
                     bf16: bool = True) -> TrainConfig:
    """A fine-tuning run of `steps` updates: AdamW, cosine decay over them, no checkpoints between. A step budget,
    not a time budget, so rows trained on a busy machine still see the same number of updates.
    bf16 autocast by default: 0.52 s against 0.95 s a SqueezeSegV2 step (batch 4, 64x512) on this 2-core CPU
    (the bundled sim weights were trained the same way)."""
    return TrainConfig(optimizer="adamw", lr=lr, schedule="cosine", max_steps=steps, batch_size=batch_size,
                       checkpoint_every=10**6, eval_every=10**6, log_every=20, seed=seed, tensorboard=False,
                       device="cpu", bf16=bf16)


@dataclass(frozen=True)
class AdaptedRun:
    model: nn.Module  # the plain segmenter, eval mode
    checkpoint: Path  # out/adapted.pt, a plain segmentation checkpoint
    steps: int


def train_adapted(model_name: str, model_config: Any, data_config: SegDataConfig, source: RangeDataset,
                  target: RangeDataset | None, out: str | Path, config: TrainConfig, align_weight: float = 0.0,
                  calibrate: bool = False, init_state: Mapping[str, Tensor] | None = None) -> AdaptedRun:
    """Train a segmenter on `source` (with correlation alignment against `target` when align_weight > 0), then
    optionally run progressive domain calibration on `target`; write out/adapted.pt. `init_state`: weights to
    start from (fine-tuning), else a fresh initialisation."""
    from squeezeseg.models import MODELS

    out = Path(out)
    torch.manual_seed(config.seed)
    segmenter = MODELS[model_name][1](model_config)
    if init_state is not None:
        segmenter.load_state_dict(init_state)
    wrapped = CorrelationAligned(segmenter, align_weight)
    dataset: Dataset = source
    if align_weight > 0:
        if target is None:
            raise ValueError("correlation alignment needs target data")
        dataset = PairedDataset(source, target, seed=config.seed)
    ckpt_config = checkpoint_config(model_name, model_config, data_config)
    result = train(wrapped, dataset, config, out / "train", model_config=ckpt_config,
                   class_names=model_config.class_names)
    segmenter.eval()
    if calibrate:
        if target is None:
            raise ValueError("domain calibration needs target data")
        calibrate_on_target(segmenter, target)
    adaptation = {"align_weight": align_weight, "calibrated": calibrate}
    path = save_checkpoint(out / "adapted.pt", model_state=segmenter.state_dict(),
                           config={**ckpt_config, "adaptation": adaptation}, class_names=list(model_config.class_names))
    return AdaptedRun(segmenter, path, result.step)


def calibrate_on_target(segmenter: nn.Module, target: RangeDataset, batch_size: int = 8,
                        max_frames: int | None = 200) -> list[str]:
    """Progressive domain calibration of `segmenter`'s BatchNorm layers on the target scans (no labels): on at most
    `max_frames` of them, evenly spaced over the set (None: all). The calibration holds its scans in memory and
    runs them through the network once per layer, so a whole real data set (10,848 scans) would take hours and
    gigabytes; 200 scans give each statistic millions of pixels."""
    was_train = target.train
    target.train = False  # calibrate on the scans as they are, not augmented
    try:
        items = [target[i] for i in spread_indices(len(target), max_frames)]
    finally:
        target.train = was_train
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    tensors = [(torch.stack([b["inputs"] for b in batch]), torch.stack([b["mask"] for b in batch]))
               for batch in batches]

    class _Logits(nn.Module):  # progressive_domain_calibration calls model(x): route x = (inputs, mask)
        def __init__(self, seg: nn.Module) -> None:
            super().__init__()
            self.seg = seg

        def forward(self, pair: tuple[Tensor, Tensor]) -> Tensor:
            return self.seg.logits(*pair)

    return progressive_domain_calibration(_Logits(segmenter), lambda: iter(tensors))
