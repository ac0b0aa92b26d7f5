"""Build and load segmentation models, evaluate them over a dataset, and predict per-point classes.

A checkpoint (squeeze.checkpoint) stores the model's name, its config and the data config (projection and
normalisation), so a trained model predicts on a new scan with nothing else given.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeeze.checkpoint import load_named_model
from squeeze.config import build_named
from squeeze.range_image import ProjectionConfig, project_scan
from squeezeseg.data import ChannelStats, RangeDataset, RangeSample, SegDataConfig
from squeezeseg.metrics import SegMetrics, confusion_matrix, metrics_from_confusion
from squeezeseg.models import MODELS


def build_model(name: str, **overrides: Any) -> tuple[nn.Module, Any]:
    """A model from a named config (see squeezeseg.models.MODELS), with config fields overridden by keyword."""
    return build_named(MODELS, name, **overrides)


def data_config_to_dict(cfg: SegDataConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def data_config_from_dict(d: dict[str, Any]) -> SegDataConfig:
    proj = ProjectionConfig(**d["projection"])
    stats = ChannelStats(mean=tuple(d["stats"]["mean"]), std=tuple(d["stats"]["std"]))
    return SegDataConfig(projection=proj, stats=stats, class_names=tuple(d["class_names"]), flip=bool(d["flip"]),
                         point_drop=float(d["point_drop"]), seed=int(d["seed"]))


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


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """A segmentation model from a checkpoint, in eval mode. CheckpointError naming the file when it is not one."""
    model, name, model_config, config = load_named_model(path, "segmentation", MODELS, device)
    return LoadedModel(model, name, model_config, data_config_from_dict(config["data"]),
                       tuple(model_config.class_names))


@torch.no_grad()
def predict_classes(model: nn.Module, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) int64 argmax classes, 0 on empty pixels (as the reference masks its predictions)."""
    was_training = model.training
    model.eval()
    logits = model.logits(inputs, mask)
    if was_training:
        model.train()
    return torch.where(mask, logits.argmax(dim=1), torch.zeros((), dtype=torch.long))


@dataclass
class Evaluation:
    pixels: SegMetrics  # over valid pixels (SqueezeSeg's protocol)
    points: SegMetrics | None  # over the points in the field of view, each taking its pixel's prediction


@torch.no_grad()
def evaluate(model: nn.Module, dataset: RangeDataset, batch_size: int = 8, max_frames: int | None = None,
             progress: bool = False, device: str = "cpu") -> Evaluation:
    """Per-class IoU / precision / recall with TP, FP, FN summed over the set, on pixels and on points."""
    from tqdm import tqdm

    k = len(dataset.config.class_names)
    pix_conf = np.zeros((k, k), np.int64)
    pt_conf = np.zeros((k, k), np.int64)
    has_points = False
    n = len(dataset) if max_frames is None else min(max_frames, len(dataset))
    for start in tqdm(range(0, n, batch_size), desc="eval", unit="batch", disable=not progress):
        samples = [dataset.sample(i) for i in range(start, min(start + batch_size, n))]
        tensors = [dataset.to_tensors(s) for s in samples]
        inputs = torch.stack([t["inputs"] for t in tensors]).to(device)
        mask = torch.stack([t["mask"] for t in tensors]).to(device)
        classes = predict_classes(model, inputs, mask).cpu().numpy()
        for s, c in zip(samples, classes, strict=True):
            pix_conf += confusion_matrix(c, s.labels, k, s.mask)
            if s.pixel_of_point is not None and s.point_labels is not None:
                has_points = True
                point_pred, in_view = classes_of_points(c, s.pixel_of_point)
                pt_conf += confusion_matrix(point_pred[in_view], s.point_labels[in_view], k)
    names = dataset.config.class_names
    return Evaluation(metrics_from_confusion(pix_conf, names),
                      metrics_from_confusion(pt_conf, names) if has_points else None)


def classes_of_points(pixel_classes: np.ndarray, pixel_of_point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map a (H, W) prediction back to points: (N,) class (0 outside the image) and (N,) in-view mask.

    Points hidden behind a nearer point in the same pixel take that pixel's class (SqueezeSeg issue #26).
    """
    in_view = pixel_of_point >= 0
    out = np.zeros(len(pixel_of_point), np.int64)
    out[in_view] = pixel_classes.ravel()[pixel_of_point[in_view]]
    return out, in_view


def sample_from_points(points: np.ndarray, data_config: SegDataConfig, frame_id: str,
                       projection: ProjectionConfig | None = None) -> RangeSample:
    image, pixel = project_scan(points, projection or data_config.projection, source=frame_id)
    raw = np.concatenate([image.xyz, image.intensity[..., None], image.range[..., None]], axis=2)
    return RangeSample(frame_id, raw, image.mask, np.zeros(image.mask.shape, np.int64), pixel)


# The model `squeeze demo` segments with: SqueezeSegV2 trained on the simulated world only
# (bench/bench_seg_learning.py), exported with squeeze.checkpoint.export_weights. See squeezeseg/weights/README.md.
BUNDLED_WEIGHTS = Path(__file__).parent / "weights" / "squeezeseg_v2_sim.pt"
