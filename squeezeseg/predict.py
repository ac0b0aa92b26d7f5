"""Build and load segmentation models, the torch Segmenter, evaluation over a dataset, per-point prediction.

A checkpoint (squeeze.checkpoint) stores the model's name, its config and the data config (projection and
normalisation), so a trained model predicts on a new scan with nothing else given. `TorchSegmenter` implements
squeeze.predictor's Segmenter and RangeSegmenter: only the network runs in torch; projection, normalisation,
softmax/argmax and the mapping back to points are the numpy functions of squeeze.range_image and
squeeze.segmentation that an exported runtime uses too.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeeze.checkpoint import load_named_model
from squeeze.classes import segmentation_class_names
from squeeze.config import build_named
from squeeze.errors import RingOrderError
from squeeze.predictor import Segmentation
from squeeze.range_image import ProjectionConfig, project_scan
from squeeze.segmentation import (
    labels_and_scores,
    normalize_channels,
    points_of_pixels,
    raw_channels,
    split_range_input,
)
from squeezeseg.data import ChannelStats, RangeDataset, RangeSample, SegDataConfig
from squeezeseg.metrics import SegMetrics, confusion_matrix, metrics_from_confusion
from squeezeseg.models import MODELS

log = logging.getLogger(__name__)


def build_model(name: str, **overrides: Any) -> tuple[nn.Module, Any]:
    """A model from a named config (see squeezeseg.models.MODELS), with config fields overridden by keyword."""
    return build_named(MODELS, name, **overrides)


def data_config_to_dict(cfg: SegDataConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def data_config_from_dict(d: dict[str, Any]) -> SegDataConfig:
    proj = ProjectionConfig(**d["projection"])
    stats = ChannelStats(mean=tuple(d["stats"]["mean"]), std=tuple(d["stats"]["std"]))
    return SegDataConfig(projection=proj, stats=stats, class_names=segmentation_class_names(d["class_names"]),
                         flip=bool(d["flip"]),
                         point_drop=float(d["point_drop"]), seed=int(d["seed"]),
                         pose_jitter=tuple(d.get("pose_jitter", (0.0, 0.0))),
                         intensity_jitter=tuple(d.get("intensity_jitter", (1.0, 0.0))))


def checkpoint_config(model_name: str, model_config: Any, data_config: SegDataConfig) -> dict[str, Any]:
    """What a segmentation checkpoint stores besides the weights."""
    return {"task": "segmentation", "model_name": model_name, "model": dataclasses.asdict(model_config),
            "data": data_config_to_dict(data_config)}


@dataclass
class LoadedModel:
    model: nn.Module
    model_name: str
    model_config: Any
    data_config: SegDataConfig
    class_names: tuple[str, ...]

    @property
    def segmenter(self) -> TorchSegmenter:
        """The model as a squeeze.predictor Segmenter and RangeSegmenter."""
        return TorchSegmenter(self.model, self.data_config)


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """A segmentation model from a checkpoint, in eval mode. CheckpointError naming the file when it is not one.

    Class 0 reads "background" whatever the checkpoint calls it (older ones say "unknown", squeeze.classes).
    """
    model, name, model_config, config = load_named_model(path, "segmentation", MODELS, device)
    names = segmentation_class_names(model_config.class_names)
    if names != tuple(model_config.class_names):
        model_config = dataclasses.replace(model_config, class_names=names)
        model.config = model_config
    return LoadedModel(model, name, model_config, data_config_from_dict(config["data"]), names)


class TorchSegmenter:
    """squeeze.predictor.Segmenter and RangeSegmenter over a SqueezeSeg / SqueezeSegV2 model.

    data_config gives the projection and the channel statistics. The model is put in eval mode for each call and
    back in training mode afterwards if it was training (evaluation during training).
    """

    def __init__(self, model: nn.Module, data_config: SegDataConfig):
        self.model = model
        self.data_config = data_config
        self.class_names: tuple[str, ...] = segmentation_class_names(model.config.class_names)

    @property
    def projection(self) -> ProjectionConfig:
        """The range-image projection (points -> pixels) the network was trained on (as a deployed one's)."""
        return self.data_config.projection

    def segment(self, points: np.ndarray) -> Segmentation:
        """(N, 4) float32 x, y, z, intensity -> (N,) labels and scores; 0 and 0 outside the field of view."""
        if len(points) == 0:
            return Segmentation(np.zeros(0, np.int64), np.zeros(0, np.float32))
        sample = project_points(points, self.data_config)
        pixels = self.segment_pixels(sample.raw[None], sample.mask[None])[0]
        return points_of_pixels(pixels, sample.pixel_of_point)[0]

    def segment_range(self, image: np.ndarray) -> Segmentation:
        """(H, W, 5 or 6) range image -> (H, W) labels and scores; 0 and 0 on empty pixels (range 0)."""
        raw, mask = split_range_input(image)
        return self.segment_pixels(raw[None], mask[None])[0]

    @torch.no_grad()
    def segment_pixels(self, raws: np.ndarray, masks: np.ndarray) -> list[Segmentation]:
        """(B, H, W, 5) float32 raw channels and (B, H, W) bool masks -> one (H, W) Segmentation per image."""
        stats = self.data_config.stats
        inputs = np.stack([normalize_channels(r, stats.mean, stats.std) for r in raws])
        was_training = self.model.training
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
            logits = self.model.logits(torch.from_numpy(inputs).to(device),
                                       torch.from_numpy(np.ascontiguousarray(masks, bool)).to(device))
        finally:
            if was_training:
                self.model.train()
        return [labels_and_scores(lg, m) for lg, m in zip(logits.float().cpu().numpy(), masks, strict=True)]


@dataclass
class Evaluation:
    pixels: SegMetrics  # over valid pixels (SqueezeSeg's protocol)
    points: SegMetrics | None  # over the points in the field of view, each taking its pixel's prediction


def evaluate(model: nn.Module | Any, dataset: RangeDataset, batch_size: int = 8, max_frames: int | None = None,
             progress: bool = False) -> Evaluation:
    """Per-class IoU / precision / recall with TP, FP, FN summed over the set, on pixels and on points.

    A torch model runs through TorchSegmenter, on the device of its parameters; anything else is taken as a
    segmenter with `segment_pixels` (an exported one: deploy's runtimes).
    """
    from tqdm import tqdm

    segmenter = TorchSegmenter(model, dataset.config) if isinstance(model, nn.Module) else model
    k = len(dataset.config.class_names)
    pix_conf = np.zeros((k, k), np.int64)
    pt_conf = np.zeros((k, k), np.int64)
    has_points = False
    n = len(dataset) if max_frames is None else min(max_frames, len(dataset))
    for start in tqdm(range(0, n, batch_size), desc="eval", unit="batch", disable=not progress):
        samples = [dataset.sample(i) for i in range(start, min(start + batch_size, n))]
        predictions = segmenter.segment_pixels(np.stack([s.raw for s in samples]), np.stack([s.mask for s in samples]))
        for s, pred in zip(samples, predictions, strict=True):
            pix_conf += confusion_matrix(pred.labels, s.labels, k, s.mask)
            if s.pixel_of_point is not None and s.point_labels is not None:
                has_points = True
                points, in_view = points_of_pixels(pred, s.pixel_of_point)
                pt_conf += confusion_matrix(points.labels[in_view], s.point_labels[in_view], k)
    names = dataset.config.class_names
    return Evaluation(metrics_from_confusion(pix_conf, names),
                      metrics_from_confusion(pt_conf, names) if has_points else None)


def sample_from_points(points: np.ndarray, data_config: SegDataConfig, frame_id: str,
                       projection: ProjectionConfig | None = None) -> RangeSample:
    """A RangeSample (no labels) of a scan projected with `projection` (default: the data config's)."""
    image, pixel = project_scan(points, projection or data_config.projection, source=frame_id)
    return RangeSample(frame_id, raw_channels(image), image.mask, np.zeros(image.mask.shape, np.int64), pixel)


def project_points(points: np.ndarray, data_config: SegDataConfig, frame_id: str = "<scan>",
                   uniform: bool = False) -> RangeSample:
    """`sample_from_points` with the data config's projection, or its uniform-rows variant when `uniform` or when
    ring mode cannot find the rings (points not stored ring by ring, or only some lasers kept; a warning says so:
    uniform rows leave empty stripes and cost accuracy, car IoU 0.18 -> 0.14 on real scans)."""
    uniform_projection = dataclasses.replace(data_config.projection, mode="uniform")
    if uniform:
        return sample_from_points(points, data_config, frame_id, uniform_projection)
    try:
        return sample_from_points(points, data_config, frame_id)
    except RingOrderError as e:
        log.warning("%s: the laser ring of each point cannot be found (%s); falling back to uniform elevation "
                    "rows, which costs accuracy", frame_id, e.fault.split(";")[0])
        return sample_from_points(points, data_config, frame_id, uniform_projection)


# The suite's default segmenter (`squeeze demo`, `squeeze seg demo`): SqueezeSegV2 adapted to real KITTI scans
# without real labels (issue 13: `squeeze da run`, its "+jitter+calibration" row), from SIM_WEIGHTS, the same network
# trained on the simulated world only (bench/bench_seg_learning.py; the sim-to-real baseline and `da run`'s
# default start).
# Both exported with squeeze.checkpoint.export_weights. See squeezeseg/weights/README.md.
BUNDLED_WEIGHTS = Path(__file__).parent / "weights" / "squeezeseg_v2_adapted.pt"
SIM_WEIGHTS = Path(__file__).parent / "weights" / "squeezeseg_v2_sim.pt"
# What a command that falls back to BUNDLED_WEIGHTS tells the user (figures: weights/README.md).
BUNDLED_NOTE = ("SqueezeSegV2 trained on simulated scans and adapted to a Velodyne HDL-64E without real labels: "
                "car IoU 0.72 on four labelled KITTI scans; pedestrians and cyclists are not reliable on real scans")
