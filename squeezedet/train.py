"""The SqueezeDet training recipe: from KITTI folders and a named config to a trained run folder.

`squeeze det train` and bench/bench_det_learning.py both train through here, in two steps:

- `detector_run` assembles what a run trains on: the named config with its overrides, anchor shapes (an anchor
  file or k-means shapes), the from-scratch init scale when no ImageNet weights are loaded, the input size, the
  data config and the datasets;
- `train_detector` builds the model, loads its starting weights (torchvision's SqueezeNet, or an earlier
  detection run), runs the shared trainer (squeeze.train.train) with KITTI AP as the validation metric, and
  writes what goes beside the checkpoints: learning_curve.png, and folded.pt for a BatchNorm model.

Between the two a caller may look at the run (a bench times one step of `run.new_model()` to size its schedule).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeeze.checkpoint import CheckpointError
from squeeze.config import named_config
from squeeze.train import TrainConfig, TrainResult, train
from squeeze.vis import plot_learning_curve
from squeezedet.data import DetDataConfig, DetectionDataset, collate_detections, pixel_std
from squeezedet.model import (
    SqueezeDet,
    SqueezeDetConfig,
    at_input_size,
    from_scratch,
    load_torchvision_squeezenet,
    with_anchor_file,
)
from squeezedet.models import MODELS
from squeezedet.predict import ap_summary, checkpoint_config, data_config_for, evaluate, load_model, save_folded

log = logging.getLogger(__name__)

# Overrides that set the init scale themselves: with either, the from-scratch scale is not applied.
INIT_FIELDS = frozenset({"conv1_init_scale", "fire_init_std"})


@dataclass(frozen=True)
class DetectorRun:
    """What a detection run trains on, assembled by `detector_run`."""

    model_name: str  # key of squeezedet.models.MODELS
    model_config: SqueezeDetConfig  # overrides, anchors, init scale and input size applied
    data_config: DetDataConfig  # matches model_config (input size, classes, pixel means) plus the augmentation
    train_set: DetectionDataset  # train=True: augmented, labels required
    val_set: DetectionDataset | None  # None: no validation (no best.pt)

    def new_model(self) -> SqueezeDet:
        """A freshly initialised model of this run's config (draws its weights from torch's random state)."""
        return SqueezeDet(self.model_config)


@dataclass(frozen=True)
class TrainedDetector:
    """What `train_detector` leaves: the trainer's result and the trained model (also on disk in the run folder)."""

    result: TrainResult  # steps, last.pt / best.pt, metrics.csv
    model: SqueezeDet  # the trained weights, in eval mode; BatchNorm still separate when the config has it
    folded: SqueezeDet | None  # the plain SqueezeDet with BatchNorm folded in (saved as folded.pt); None without BN
    learning_curve: Path  # learning_curve.png in the run folder

    @property
    def deployed(self) -> SqueezeDet:
        """The model that gets deployed: the folded one when training used BatchNorm."""
        return self.folded if self.folded is not None else self.model


def detector_run(data: str | Path | DetectionDataset, *, model: str = "squeezedet_kitti",
                 overrides: Mapping[str, Any] | None = None, val: str | Path | DetectionDataset | None = None,
                 split: str | None = None, val_split: str | None = None,
                 anchors: str | Path | Sequence[tuple[float, float]] | None = None,
                 input_size: tuple[int, int] | None = None, scratch: bool = True, flip: bool = True,
                 drift: tuple[int, int] = (150, 100), seed: int = 0, cache_images: bool = False) -> DetectorRun:
    """Assemble a detection run.

    data / val: a KITTI object folder (training/image_2 + label_2; `split` / `val_split` name an ImageSets list,
        None for every frame), or a dataset already opened (DetectionDataset, train=True for `data`), which keeps
        its frames and image cache and is re-prepared for this run's input size (so two runs share one cache).
    model, overrides: the named config (squeezedet.models.MODELS) and typed field values (squeeze.config).
    anchors: an anchor file from `squeeze det anchors`, or (w, h) shapes in pixels of the named config's input;
        None keeps the config's shapes.
    input_size: (width, height) to train at instead of the config's own (squeezedet.model.at_input_size: the
        anchors scale with the image; the weights fit any size).
    scratch: the model starts without ImageNet weights: apply squeezedet.model.from_scratch with the pixel std of
        the training images at the config's own input size (so a run at a reduced size starts like a full-size
        one), unless the overrides set conv1_init_scale or fire_init_std.
    flip, drift, seed: augmentation (horizontal flip; max translation (x, y) in original pixels; its seed).
    cache_images: keep decoded images in memory (about 1.4 MB per KITTI frame), for folders opened here.
    """
    overrides = dict(overrides or {})
    config: SqueezeDetConfig = named_config(MODELS, model, **overrides)
    if anchors is not None:
        if isinstance(anchors, str | Path):
            config = with_anchor_file(config, anchors)
        else:
            config = replace(config, anchor_shapes=tuple((float(w), float(h)) for w, h in anchors))
    augmentation = {"drift_x": int(drift[0]), "drift_y": int(drift[1]), "flip": flip, "seed": seed}
    data_config = data_config_for(config, **augmentation)
    train_set = _dataset(data, split, data_config, train=True, cache_images=cache_images)
    val_set = None if val is None else _dataset(val, val_split, data_config, train=False, cache_images=cache_images)
    if scratch and not INIT_FIELDS & set(overrides):
        config = from_scratch(config, pixel_std(train_set))
        log.info("no ImageNet weights: random conv1 scaled by 1/%.1f (the pixel std) and frozen, He init elsewhere",
                 1 / config.conv1_init_scale)
    if input_size is not None:
        config = at_input_size(config, int(input_size[0]), int(input_size[1]))
        data_config = data_config_for(config, **augmentation)
        train_set = train_set.with_config(data_config)
        val_set = None if val_set is None else val_set.with_config(data_config)
    return DetectorRun(model, config, data_config, train_set, val_set)


def _dataset(source: str | Path | DetectionDataset, split: str | None, config: DetDataConfig, train: bool,
             cache_images: bool) -> DetectionDataset:
    if isinstance(source, DetectionDataset):
        if train and not source.train:
            raise ValueError("the training dataset must be opened with train=True (augmentation, labels required)")
        return source.with_config(config)
    return DetectionDataset(source, split, config, train=train, cache_images=cache_images)


def train_detector(run: DetectorRun, out: str | Path, config: TrainConfig, *, pretrained: str | Path | None = None,
                   init: str | Path | nn.Module | None = None, val_frames: int | None = 200,
                   resume: bool = False) -> TrainedDetector:
    """Train `run` into the run folder `out`; see the module docstring for what is written.

    config: the trainer's settings; its seed also seeds the model's random init (torch.manual_seed).
    pretrained: a torchvision SqueezeNet state_dict for the trunk (squeezenet1_1 for SqueezeDet, 1_0 for SqueezeDet+).
    init: starting weights from a detection checkpoint file or a model in memory: same backbone, classes, anchor
        count and batch_norm setting, any input size (CheckpointError when they do not fit). Not a resume: new
        optimiser and schedule. Give at most one of pretrained and init.
    val_frames: validation frames per evaluation (None: all). Best checkpoint by Car AP (moderate, 11-point) when
        Car is a class, else by the mean over classes.
    resume: continue from out/last.pt.
    """
    if pretrained is not None and init is not None:
        raise ValueError("pretrained weights and an init checkpoint both set the starting weights; give one")
    out = Path(out)
    cfg = run.model_config
    torch.manual_seed(config.seed)
    model = run.new_model()
    if pretrained is not None:
        loaded = load_torchvision_squeezenet(model, pretrained)
        log.info("ImageNet init from %s: %d layers loaded, %d kept random", pretrained, len(loaded.loaded),
                 len(loaded.skipped))
    if init is not None:
        _load_weights(model, init)
        log.info("weights from %s", init if isinstance(init, str | Path) else "a model in memory")
    val_set = run.val_set
    evaluate_fn = None if val_set is None else lambda m: ap_summary(evaluate(m, val_set, max_frames=val_frames))
    best = None if val_set is None else ("ap11_car_moderate" if "Car" in cfg.class_names else "map11_moderate")
    log.info("training %s (%d parameters) on %d images", run.model_name, sum(p.numel() for p in model.parameters()),
             len(run.train_set))
    result = train(model, run.train_set, config, out,
                   model_config=checkpoint_config(run.model_name, cfg, run.data_config),
                   class_names=cfg.class_names, collate_fn=collate_detections, evaluate=evaluate_fn,
                   best_metric=best, resume=resume)
    model.eval()
    folded, curve = None, out / "learning_curve.png"
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, every process holds the same weights: one writes
        if cfg.batch_norm:
            folded = save_folded(model, run.model_name, run.data_config, out / "folded.pt")
        plot_learning_curve(result.metrics_csv, curve,
                            eval_keys=tuple(f"eval/ap11_{c.lower()}_moderate" for c in cfg.class_names),
                            ylabel=f"validation AP (11-point, moderate) at {cfg.image_width}x{cfg.image_height}")
    return TrainedDetector(result, model, folded, curve)


def _load_weights(model: SqueezeDet, source: str | Path | nn.Module) -> None:
    """Copy the weights of a detection checkpoint (or a model) into `model`; CheckpointError when they do not fit."""
    weights = source.state_dict() if isinstance(source, nn.Module) else load_model(source).model.state_dict()
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        name = source if isinstance(source, str | Path) else "init model"
        raise CheckpointError(name, "its weights do not fit this model (backbone, classes, anchor count and "
                                    f"batch_norm must match): {str(e).splitlines()[0]}") from None
