"""The SqueezeSeg / SqueezeSegV2 training recipe: from scan folders and a named config to a trained run folder.

`squeeze seg train` and bench/bench_seg_learning.py both train through here, in two steps:

- `segmenter_run` assembles what a run trains on: the named config with its overrides, the input normalisation,
  the range-image layout the config expects, the data config and the datasets;
- `train_segmenter` builds the model, runs the shared trainer (squeeze.train.train) with pixel mIoU as the
  validation metric, and writes learning_curve.png beside the checkpoints.

Between the two a caller may look at the run (a bench times one step of `run.new_model()` to size its schedule).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeeze.config import named_config
from squeeze.range_image import ProjectionConfig, full_360
from squeeze.train import TrainConfig, TrainResult, train
from squeeze.vis import plot_learning_curve
from squeezeseg.data import ChannelStats, RangeDataset, SegDataConfig, compute_stats, read_stats, squeezeseg_kitti_stats
from squeezeseg.models import MODELS
from squeezeseg.predict import checkpoint_config, evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegmenterRun:
    """What a segmentation run trains on, assembled by `segmenter_run`."""

    model_name: str  # key of squeezeseg.models.MODELS
    model_config: Any  # SqueezeSegConfig or SqueezeSegV2Config, overrides applied
    data_config: SegDataConfig  # the training augmentation; validation has none
    train_set: RangeDataset  # train=True (augmented)
    val_set: RangeDataset | None  # None: no validation (no best.pt)

    def new_model(self) -> nn.Module:
        """A freshly initialised model of this run's config (draws its weights from torch's random state)."""
        return MODELS[self.model_name][1](self.model_config)


@dataclass(frozen=True)
class TrainedSegmenter:
    """What `train_segmenter` leaves: the trainer's result and the trained model (also on disk in the run folder)."""

    result: TrainResult  # steps, last.pt / best.pt, metrics.csv
    model: nn.Module  # the trained weights, in eval mode
    learning_curve: Path  # learning_curve.png in the run folder


def projection_for(model_config: Any) -> ProjectionConfig:
    """The range-image layout a model config expects: 360 degrees at width 2048, else the front 90 degrees."""
    if model_config.width == 2048:
        return dataclasses.replace(full_360(), height=model_config.height)
    return ProjectionConfig(height=model_config.height, width=model_config.width)


def channel_stats(spec: str | Path | ChannelStats, data: str | Path, split: str | None) -> ChannelStats:
    """Input normalisation: 'kitti' (SqueezeSeg's), 'auto' (computed on up to 200 frames of `data`), a JSON file
    from `squeeze seg stats`, or ChannelStats as they are."""
    if isinstance(spec, ChannelStats):
        return spec
    if str(spec) == "kitti":
        return squeezeseg_kitti_stats()
    if str(spec) == "auto":
        return compute_stats(RangeDataset(Path(data), split), max_frames=200)
    return read_stats(spec)


def segmenter_run(data: str | Path, *, model: str = "squeezeseg_v2_kitti", overrides: Mapping[str, Any] | None = None,
                  val: str | Path | None = None, split: str | None = None, val_split: str | None = None,
                  stats: str | Path | ChannelStats = "kitti", flip: bool = True, point_drop: float = 0.0,
                  seed: int = 0) -> SegmenterRun:
    """Assemble a segmentation run.

    data / val: folders of any kind `squeeze seg stats` accepts (KITTI object, simulated, SemanticKITTI, SqueezeSeg
        .npy); `split` / `val_split` name a split list, None for every frame.
    model, overrides: the named config (squeezeseg.models.MODELS) and typed field values (squeeze.config); the
        recurrent CRF is the field use_crf (and crf_mode).
    stats: input normalisation, see channel_stats.
    flip, point_drop, seed: training augmentation (left-right mirror; fraction of points dropped; its seed).
    """
    config = named_config(MODELS, model, **dict(overrides or {}))
    data_config = SegDataConfig(stats=channel_stats(stats, data, split), class_names=config.class_names, flip=flip,
                                point_drop=point_drop, seed=seed, projection=projection_for(config))
    train_set = RangeDataset(Path(data), split, data_config, train=True)
    val_set = None
    if val is not None:
        val_set = RangeDataset(Path(val), val_split, dataclasses.replace(data_config, flip=False, point_drop=0.0))
    return SegmenterRun(model, config, data_config, train_set, val_set)


def train_segmenter(run: SegmenterRun, out: str | Path, config: TrainConfig, *, val_frames: int | None = 200,
                    resume: bool = False) -> TrainedSegmenter:
    """Train `run` into the run folder `out`: checkpoints, metrics.csv, learning_curve.png.

    config: the trainer's settings; its seed also seeds the model's random init (torch.manual_seed).
    val_frames: validation frames per evaluation (None: all); best.pt by pixel mIoU.
    resume: continue from out/last.pt.
    """
    out = Path(out)
    torch.manual_seed(config.seed)
    model = run.new_model()
    val_set = run.val_set
    evaluate_fn = None if val_set is None else lambda m: evaluate(m, val_set, max_frames=val_frames).pixels.as_dict()
    log.info("training %s (%d parameters) on %d frames", run.model_name, sum(p.numel() for p in model.parameters()),
             len(run.train_set))
    result = train(model, run.train_set, config, out,
                   model_config=checkpoint_config(run.model_name, run.model_config, run.data_config),
                   class_names=run.model_config.class_names, evaluate=evaluate_fn,
                   best_metric=None if val_set is None else "miou", resume=resume)
    model.eval()
    curve = out / "learning_curve.png"
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, every process holds the same weights: one writes
        plot_learning_curve(result.metrics_csv, curve)
    return TrainedSegmenter(result, model, curve)
