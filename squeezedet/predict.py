"""SqueezeDet checkpoints, inference on image files, KITTI result files, and evaluation of a model on a folder.

Data flow: image file -> BGR array -> net input tensor -> Detections (net-input pixels) -> boxes at the original
image size -> KITTI result lines (16 fields) and a picture with the boxes drawn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from squeeze.checkpoint import load_named_model
from squeeze.config import build_named
from squeeze.errors import DataError
from squeeze.kitti import ObjectLabels, read_labels
from squeezedet import MODELS
from squeezedet.data import DetDataConfig, DetectionDataset, preprocess_image
from squeezedet.decode import Detections
from squeezedet.kitti_eval import KittiEvalResult, evaluate_kitti
from squeezedet.model import SqueezeDet, SqueezeDetConfig

BUNDLED_WEIGHTS = Path(__file__).parent / "weights" / "squeezedet_sim.pt"  # trained on the simulated world only
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Box colours (BGR) per class index, the usual KITTI viewer colours: car green, pedestrian magenta, cyclist cyan.
CLASS_COLOURS_BGR = ((60, 200, 60), (200, 60, 220), (220, 200, 40), (40, 140, 255), (200, 200, 200))


def build_model(name: str, **overrides: Any) -> tuple[SqueezeDet, SqueezeDetConfig]:
    """A model from a named config (see squeezedet.MODELS), with config fields overridden by keyword."""
    return build_named(MODELS, name, **overrides)


def save_folded(model: SqueezeDet, model_name: str, data_config: DetDataConfig, path: str | Path) -> SqueezeDet:
    """Fold a BatchNorm-trained model into plain SqueezeDet (squeezedet.model.fold_batch_norm) and save it."""
    from squeeze.checkpoint import save_checkpoint
    from squeezedet.model import fold_batch_norm

    plain = fold_batch_norm(model)
    save_checkpoint(path, model_state=plain.state_dict(),
                    config=checkpoint_config(model_name, plain.config, data_config),
                    class_names=plain.config.class_names)
    return plain


def data_config_for(model_config: SqueezeDetConfig, **overrides: Any) -> DetDataConfig:
    """The data settings that match a model: its input size, classes and pixel means."""
    return DetDataConfig(image_width=model_config.image_width, image_height=model_config.image_height,
                         class_names=model_config.class_names, pixel_mean_bgr=model_config.pixel_mean, **overrides)


def checkpoint_config(model_name: str, model_config: SqueezeDetConfig, data_config: DetDataConfig) -> dict[str, Any]:
    """What a detection checkpoint stores besides the weights."""
    return {"task": "detection", "model_name": model_name, "model": dataclasses.asdict(model_config),
            "data": dataclasses.asdict(data_config)}


@dataclass
class LoadedDetector:
    model: SqueezeDet
    model_name: str
    model_config: SqueezeDetConfig
    data_config: DetDataConfig


def load_model(path: str | Path, device: str = "cpu", **overrides: Any) -> LoadedDetector:
    """A detector from a checkpoint, in eval mode; `overrides` replace inference fields (prob_thresh, nms, ...).

    CheckpointError naming the file when it is not a detection checkpoint or the weights do not fit.
    """
    model, name, model_config, config = load_named_model(path, "detection", MODELS, device, **overrides)
    data = dict(config["data"])
    data["class_names"] = tuple(data["class_names"])
    data["pixel_mean_bgr"] = tuple(data["pixel_mean_bgr"])
    return LoadedDetector(model, name, model_config, DetDataConfig(**data))


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 BGR, or DataError naming the file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(path, "not a readable image")
    return image


def detections_to_labels(det: Detections, scale: tuple[float, float], original_size: tuple[int, int],
                         class_names: Sequence[str]) -> ObjectLabels:
    """Net-input detections -> KITTI result objects at the original image size (boxes clipped to the image).

    The fields a 2D detector cannot know take the devkit's "unknown" values: truncation and occlusion -1,
    alpha -10 (so no AOS is claimed), dimensions -1, location -1000, rotation_y -10.
    """
    n = len(det)
    sx, sy = scale
    w, h = original_size
    boxes = det.boxes.detach().cpu().numpy().astype(np.float64).reshape(-1, 4) / np.array([sx, sy, sx, sy])
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h - 1)
    names = np.asarray(class_names, dtype="<U16")
    return ObjectLabels(type=names[det.labels.cpu().numpy()].astype("<U16") if n else np.zeros(0, "<U16"),
                        truncated=np.full(n, -1.0), occluded=np.full(n, -1, np.int64), alpha=np.full(n, -10.0),
                        bbox=boxes, dimensions=np.full((n, 3), -1.0), location=np.full((n, 3), -1000.0),
                        rotation_y=np.full(n, -10.0), score=det.scores.detach().cpu().numpy().astype(np.float64))


@torch.no_grad()
def detect(model: SqueezeDet, images_bgr: Sequence[np.ndarray], data_config: DetDataConfig) -> list[ObjectLabels]:
    """Detections of BGR uint8 images of any size, as KITTI result objects at each image's own size."""
    was_training = model.training
    model.eval()
    inputs, scales = zip(*(preprocess_image(im, data_config) for im in images_bgr), strict=True)
    device = next(model.parameters()).device
    dets = model(torch.cat(inputs).to(device))
    if was_training:
        model.train()
    return [detections_to_labels(d, s, (im.shape[1], im.shape[0]), model.config.class_names)
            for d, s, im in zip(dets, scales, images_bgr, strict=True)]


def draw_detections(image_bgr: np.ndarray, detections: ObjectLabels, class_names: Sequence[str],
                    ground_truth: ObjectLabels | None = None, min_score: float = 0.0) -> np.ndarray:
    """A copy of the image with detections (class colour, score) and optional ground truth (thin white)."""
    out = image_bgr.copy()
    if ground_truth is not None:
        for box in ground_truth.bbox:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1, y1), (255, 255, 255), 1, cv2.LINE_AA)
    index = {name: i for i, name in enumerate(class_names)}
    order = np.argsort(detections.score if detections.score is not None else np.zeros(len(detections)))
    for i in order:  # lowest score first, so the best boxes are drawn on top
        score = 1.0 if detections.score is None else float(detections.score[i])
        if score < min_score:
            continue
        colour = CLASS_COLOURS_BGR[index.get(str(detections.type[i]), len(CLASS_COLOURS_BGR) - 1)
                                   % len(CLASS_COLOURS_BGR)]
        x0, y0, x1, y1 = (int(round(v)) for v in detections.bbox[i])
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, 2, cv2.LINE_AA)
        text = f"{detections.type[i]} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = max(y0, th + 3)
        cv2.rectangle(out, (x0, ty - th - 3), (x0 + tw + 2, ty), colour, -1)
        cv2.putText(out, text, (x0 + 1, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found (sorted, not recursively) in the given folders; DataError if none."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(item, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(item, "no such image file or folder")
    return files


@torch.no_grad()
def predict_dataset(model: nn.Module, dataset: DetectionDataset, batch_size: int = 4,
                    max_frames: int | None = None, progress: bool = False) -> tuple[list[str], list[ObjectLabels]]:
    """(frame ids, KITTI result objects at original size) for the first max_frames frames of a dataset."""
    from tqdm import tqdm

    n = len(dataset) if max_frames is None else min(max_frames, len(dataset))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids, results = [], []
    for start in tqdm(range(0, n, batch_size), desc="detect", unit="batch", disable=not progress):
        samples = [dataset.sample(i) for i in range(start, min(start + batch_size, n))]
        images = torch.stack([torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1))) for s in samples])
        for s, d in zip(samples, model(images.to(device)), strict=True):
            ids.append(s.frame_id)
            results.append(detections_to_labels(d, s.scale, s.original_size, dataset.config.class_names))
    if was_training:
        model.train()
    return ids, results


def evaluate(model: nn.Module, dataset: DetectionDataset, max_frames: int | None = None, progress: bool = False,
             batch_size: int = 4) -> KittiEvalResult:
    """KITTI 2D AP (official devkit rules) of a model on a labelled folder. No AOS: SqueezeDet predicts no alpha."""
    ids, results = predict_dataset(model, dataset, batch_size, max_frames, progress)
    gts = [read_labels(dataset.folder.path("label_2", f)) for f in ids]
    return evaluate_kitti(gts, results, classes=dataset.config.class_names, compute_aos=False)


def ap_summary(result: KittiEvalResult) -> dict[str, float]:
    """Flat {"ap11_car_moderate": ..., "map11_moderate": ...} for metrics.csv and best-checkpoint keeping."""
    out: dict[str, float] = {}
    for metric in ("ap11", "ap40"):
        table = getattr(result, metric)
        for c in result.classes:
            for d, v in table[c].items():
                out[f"{metric}_{c.lower()}_{d.lower()}"] = float(v)
        out[f"m{metric}_moderate"] = float(np.nanmean([table[c]["Moderate"] for c in result.classes]))
    return out
