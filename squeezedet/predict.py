"""SqueezeDet checkpoints, the torch Detector, inference on image files, KITTI result files, and evaluation.

Data flow: image file -> RGB array (squeeze.kitti.read_image) -> net input in the network's BGR order
(squeeze.detection.preprocess_image) -> network (torch) -> decoding, top-N and NMS in numpy
(squeeze.detection.postprocess) -> boxes at the original image size -> KITTI result lines (16 fields) and a
picture with the boxes drawn in the suite's palette (squeeze.classes).
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
from squeeze.classes import color_of
from squeeze.config import build_named
from squeeze.detection import boxes_to_original, preprocess_image
from squeeze.errors import DataError
from squeeze.kitti import ObjectLabels, read_labels
from squeeze.predictor import Detections2D
from squeezedet.data import DetDataConfig, DetectionDataset
from squeezedet.kitti_eval import KittiEvalResult, evaluate_kitti
from squeezedet.model import SqueezeDet, SqueezeDetConfig
from squeezedet.models import MODELS

BUNDLED_WEIGHTS = Path(__file__).parent / "weights" / "squeezedet_sim.pt"  # trained on the simulated world only
# What a command that falls back to BUNDLED_WEIGHTS tells the user. On kitti_mini's three real images it draws 26
# boxes and finds none of the labelled objects (AP 0 for every class): it has never seen a photograph.
BUNDLED_NOTE = ("SqueezeDet trained on simulated images only: on real photographs its boxes are mostly false; "
                "train on your own labelled images with `squeeze det train`")
GROUND_TRUTH_COLOR = (255, 255, 255)  # RGB of the thin ground-truth boxes under the detections


def build_model(name: str, **overrides: Any) -> tuple[SqueezeDet, SqueezeDetConfig]:
    """A model from a named config (see squeezedet.models.MODELS), with config fields overridden by keyword."""
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

    @property
    def detector(self) -> TorchDetector:
        """The model as a squeeze.predictor.Detector."""
        return TorchDetector(self.model, self.data_config)


def load_model(path: str | Path, device: str = "cpu", **overrides: Any) -> LoadedDetector:
    """A detector from a checkpoint, in eval mode; `overrides` replace inference fields (prob_thresh, nms, ...).

    CheckpointError naming the file when it is not a detection checkpoint or the weights do not fit.
    """
    model, name, model_config, config = load_named_model(path, "detection", MODELS, device, **overrides)
    data = dict(config["data"])
    data["class_names"] = tuple(data["class_names"])
    data["pixel_mean_bgr"] = tuple(data["pixel_mean_bgr"])
    return LoadedDetector(model, name, model_config, DetDataConfig(**data))


class TorchDetector:
    """squeeze.predictor.Detector over a SqueezeDet: only the network runs in torch; pre-processing, decoding and
    NMS are the numpy functions of squeeze.detection that an exported runtime uses too.

    data_config gives the input size and pixel means (default: those of the model's config). The model is put in
    eval mode for each call and back in training mode afterwards if it was training (evaluation during training).
    """

    def __init__(self, model: SqueezeDet, data_config: DetDataConfig | None = None):
        self.model = model
        self.data_config = data_config or data_config_for(model.config)
        self.class_names: tuple[str, ...] = tuple(model.config.class_names)

    def detect(self, image: np.ndarray) -> Detections2D:
        """Detections of one (H, W, 3) uint8 RGB image of any size, boxes in its own pixels (float64)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections2D]:
        """`detect` of several RGB images (any sizes) in one network batch."""
        c = self.data_config
        inputs, scales = zip(*(preprocess_image(im, c.image_width, c.image_height, c.pixel_mean_bgr)
                               for im in images), strict=True)
        dets = self.network_detections(np.stack(inputs))
        return [boxes_to_original(d, s, (im.shape[1], im.shape[0]))
                for d, s, im in zip(dets, scales, images, strict=True)]

    @torch.no_grad()
    def network_detections(self, inputs: np.ndarray) -> list[Detections2D]:
        """(B, 3, H, W) float32 network inputs -> one Detections2D per input, boxes in net-input pixels."""
        was_training = self.model.training
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
            return self.model(torch.from_numpy(np.ascontiguousarray(inputs, np.float32)).to(device))
        finally:
            if was_training:
                self.model.train()


def detections_to_labels(det: Detections2D, class_names: Sequence[str]) -> ObjectLabels:
    """Detections in original-image pixels -> KITTI result objects.

    The fields a 2D detector cannot know take the devkit's "unknown" values: truncation and occlusion -1,
    alpha -10 (so no AOS is claimed), dimensions -1, location -1000, rotation_y -10.
    """
    n = len(det)
    names = np.asarray(class_names, dtype="<U16")
    return ObjectLabels(type=names[det.classes].astype("<U16") if n else np.zeros(0, "<U16"),
                        truncated=np.full(n, -1.0), occluded=np.full(n, -1, np.int64), alpha=np.full(n, -10.0),
                        bbox=det.boxes.astype(np.float64).reshape(-1, 4), dimensions=np.full((n, 3), -1.0),
                        location=np.full((n, 3), -1000.0), rotation_y=np.full(n, -10.0),
                        score=det.scores.astype(np.float64))


def detect(model: SqueezeDet, images: Sequence[np.ndarray], data_config: DetDataConfig) -> list[ObjectLabels]:
    """Detections of RGB uint8 images of any size, as KITTI result objects at each image's own size."""
    detector = TorchDetector(model, data_config)
    return [detections_to_labels(d, detector.class_names) for d in detector.detect_batch(images)]


def draw_detections(image: np.ndarray, detections: ObjectLabels, ground_truth: ObjectLabels | None = None,
                    min_score: float = 0.0) -> np.ndarray:
    """A copy of an RGB image with detections (class colour from squeeze.classes, score) and optional ground
    truth (thin white). Pixels away from the boxes and their labels are the input's."""
    out = image.copy()
    if ground_truth is not None:
        for box in ground_truth.bbox:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1, y1), GROUND_TRUTH_COLOR, 1, cv2.LINE_AA)
    order = np.argsort(detections.score if detections.score is not None else np.zeros(len(detections)))
    for i in order:  # lowest score first, so the best boxes are drawn on top
        score = 1.0 if detections.score is None else float(detections.score[i])
        if score < min_score:
            continue
        colour = color_of(str(detections.type[i]))
        x0, y0, x1, y1 = (int(round(v)) for v in detections.bbox[i])
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, 2, cv2.LINE_AA)
        text = f"{detections.type[i]} {score:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        ty = max(y0, th + 3)
        cv2.rectangle(out, (x0, ty - th - 3), (x0 + tw + 2, ty), colour, -1)
        cv2.putText(out, text, (x0 + 1, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly or found (sorted, not recursively) in the given folders, or in a dataset folder's
    camera folder (training/image_2, image_2, image_02/data: squeeze.kitti.IMAGE_FOLDERS); DataError if none."""
    from squeeze.kitti import IMAGE_FOLDERS, IMAGE_SUFFIXES, folder_files

    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += folder_files(item, IMAGE_SUFFIXES, IMAGE_FOLDERS)
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(item, "no such image file or folder")
    return files


def predict_dataset(model: nn.Module, dataset: DetectionDataset, batch_size: int = 4,
                    max_frames: int | None = None, progress: bool = False) -> tuple[list[str], list[ObjectLabels]]:
    """(frame ids, KITTI result objects at original size) for the first max_frames frames of a dataset.

    The dataset prepares the inputs (squeeze.detection's pre-processing); the network runs through TorchDetector.
    """
    from tqdm import tqdm

    detector = TorchDetector(model, dataset.config)
    n = len(dataset) if max_frames is None else min(max_frames, len(dataset))
    ids, results = [], []
    for start in tqdm(range(0, n, batch_size), desc="detect", unit="batch", disable=not progress):
        samples = [dataset.sample(i) for i in range(start, min(start + batch_size, n))]
        dets = detector.network_detections(np.stack([s.image.transpose(2, 0, 1) for s in samples]))
        for s, d in zip(samples, dets, strict=True):
            ids.append(s.frame_id)
            results.append(detections_to_labels(boxes_to_original(d, s.scale, s.original_size), detector.class_names))
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
