"""What a predictor looks like to the rest of the suite: numpy in, numpy out, no torch in any signature.

A torch model (squeezedet.predict.TorchDetector, squeezeseg.predict.TorchSegmenter) and an exported runtime
(deploy: ONNX Runtime, OpenVINO, TensorRT) implement the same protocols, so a command or the annotation tool
takes whichever it is given. The pre- and post-processing they share are numpy functions of the core
(squeeze.detection, squeeze.segmentation), which import no torch.

Images are RGB uint8 in memory (docs/conventions.md); a predictor converts to the channel order its network
was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


@dataclass(frozen=True, eq=False)  # no field-wise ==: comparing arrays has no single truth value
class Detections2D:
    """One image's 2D detections, best first.

    boxes:   (M, 4) float [left, top, right, bottom] in the pixels of the image given to the predictor: for a
             Detector the ORIGINAL image (float64, clipped to [0, W - 1] x [0, H - 1]); for the network's own
             output the net input (float32); (0, 4) when nothing is found
    classes: (M,) int64 index into the predictor's class_names; (0,) when empty
    scores:  (M,) float32 P(class) x confidence, descending; (0,) when empty
    """

    boxes: np.ndarray = field(default_factory=_empty_boxes)
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def __post_init__(self) -> None:
        m = len(self.scores)
        if self.boxes.shape != (m, 4) or self.classes.shape != (m,) or self.scores.shape != (m,):
            raise ValueError(f"Detections2D needs boxes (M, 4), classes (M,) and scores (M,), got "
                             f"{self.boxes.shape}, {self.classes.shape}, {self.scores.shape}")

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, keep: np.ndarray) -> Detections2D:
        """The detections at `keep` (a boolean mask or indices), in that order."""
        return Detections2D(self.boxes[keep], self.classes[keep], self.scores[keep])


class Segmentation(NamedTuple):
    """Per-point (N,) or per-pixel (H, W) classes and their scores.

    labels: int64 class index into the predictor's class_names; 0 (background) where there is no point or the
            point lies outside the range image
    scores: float32 softmax probability of the chosen class; 0 where labels got 0 for lack of a prediction
    """

    labels: np.ndarray
    scores: np.ndarray


@runtime_checkable
class Detector(Protocol):
    """2D object detector on camera images."""

    class_names: tuple[str, ...]  # class i of Detections2D.classes is class_names[i]

    def detect(self, image: np.ndarray) -> Detections2D:
        """Detections of one (H, W, 3) uint8 RGB image of any size, boxes in its own pixels."""
        ...


@runtime_checkable
class Segmenter(Protocol):
    """Per-point LiDAR segmentation of a scan."""

    class_names: tuple[str, ...]  # label i is class_names[i]; 0 is background

    def segment(self, points: np.ndarray) -> Segmentation:
        """(N, 4) float32 x, y, z, intensity (velodyne frame) -> (N,) labels and scores. Points outside the range
        image's field of view get label 0 and score 0. An empty scan gives empty arrays."""
        ...


@runtime_checkable
class RangeSegmenter(Protocol):
    """Per-pixel segmentation of a range image (docs/conventions.md: channels x, y, z, intensity, range[, label])."""

    class_names: tuple[str, ...]

    def segment_range(self, image: np.ndarray) -> Segmentation:
        """(H, W, 5) or (H, W, 6) float32 range image (a 6th channel, the label, is ignored) -> (H, W) labels and
        scores; empty pixels (range 0) get label 0 and score 0."""
        ...
