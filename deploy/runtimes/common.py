"""What every runtime shares: a Detector and a Segmenter / RangeSegmenter over any `Network` (numpy feeds by input
name in, outputs in the sidecar's order out), with the pre- and post-processing of squeeze.detection and
squeeze.segmentation and the parameters of the sidecar, and SqueezeSeg's CRF on the host (squeeze.crf) for a model
exported with `--crf host`. A runtime only supplies the Network.

No torch and no model package here (tests/test_layering.py).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from deploy.sidecar import Sidecar
from squeeze.crf import apply_crf
from squeeze.detection import boxes_to_original, postprocess, preprocess_image
from squeeze.errors import DataError, RingOrderError
from squeeze.predictor import Detections2D, Segmentation
from squeeze.range_image import ProjectionConfig, RangeImage, project_scan
from squeeze.segmentation import (
    labels_and_scores,
    normalize_channels,
    points_of_pixels,
    raw_channels,
    split_range_input,
)

__all__ = ["Network", "NetworkDetector", "NetworkSegmenter", "check_task", "project_points"]

log = logging.getLogger(__name__)


class Network(Protocol):
    """One loaded network of a runtime."""

    sidecar: Sidecar

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Named inputs of batch B -> outputs of batch B, in sidecar.output_names order."""
        ...


def check_task(sidecar: Sidecar, task: str, model_path: str | Path) -> None:
    """DataError naming the model when its sidecar is of another task."""
    if sidecar.task != task:
        wanted = "detector" if task == "detection" else "segmenter"
        raise DataError(model_path, f"this is a {sidecar.task} model, not a {wanted} (sidecar task "
                                    f"{sidecar.task!r})")


class NetworkDetector:
    """squeeze.predictor.Detector over an exported SqueezeDet: network outputs deltas, confidence, class_probs."""

    def __init__(self, network: Network, model_path: str | Path = "<model>"):
        check_task(network.sidecar, "detection", model_path)
        self.network = network
        self.params = network.sidecar.detection
        self.class_names: tuple[str, ...] = network.sidecar.class_names
        self.anchors = self.params.anchors()  # (N, 4) float32 [cx, cy, w, h], net-input pixels
        self._input = network.sidecar.inputs[0].name

    def detect(self, image: np.ndarray) -> Detections2D:
        """Detections of one (H, W, 3) uint8 RGB image of any size, boxes in its own pixels (float64)."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections2D]:
        """`detect` of several RGB images (any sizes) in one network batch."""
        p = self.params
        inputs, scales = zip(*(preprocess_image(im, p.image_width, p.image_height, p.pixel_mean_bgr)
                               for im in images), strict=True)
        # one image: a view, not np.stack's copy of its 5.7 MB (1248 x 384) input
        dets = self.network_detections(inputs[0][None] if len(inputs) == 1 else np.stack(inputs))
        return [boxes_to_original(d, s, (im.shape[1], im.shape[0]))
                for d, s, im in zip(dets, scales, images, strict=True)]

    def network_detections(self, inputs: np.ndarray) -> list[Detections2D]:
        """(B, 3, H, W) float32 network inputs -> one Detections2D per input, boxes in net-input pixels."""
        deltas, confidence, class_probs = self.network.run({self._input: np.ascontiguousarray(inputs, np.float32)})
        p = self.params
        return [postprocess(d, c, k, self.anchors, p.image_width, p.image_height, exp_thresh=p.exp_thresh,
                            top_n=p.top_n, prob_thresh=p.prob_thresh, nms_thresh=p.nms_thresh,
                            final_threshold=p.final_threshold, nms_mode=p.nms_mode, soft_nms_sigma=p.soft_nms_sigma)
                for d, c, k in zip(deltas, confidence, class_probs, strict=True)]


class NetworkSegmenter:
    """squeeze.predictor.Segmenter and RangeSegmenter over an exported SqueezeSeg / SqueezeSegV2: inputs
    `range_image` (normalised) and, when the network reads it, `mask`; output `logits`."""

    def __init__(self, network: Network, model_path: str | Path = "<model>"):
        check_task(network.sidecar, "segmentation", model_path)
        self.network = network
        self.params = network.sidecar.segmentation
        self.class_names: tuple[str, ...] = network.sidecar.class_names
        inputs = network.sidecar.inputs
        self._input = next(i.name for i in inputs if i.dtype != "bool")
        self._mask = next((i.name for i in inputs if i.dtype == "bool"), None)  # None: the network ignores it
        self.threads: int | None = getattr(network, "threads", None)  # the host CRF's threads: the network's

    @property
    def projection(self) -> ProjectionConfig:
        """The range-image projection (points -> pixels) the network was trained on, from the sidecar."""
        return self.params.projection

    def segment(self, points: np.ndarray) -> Segmentation:
        """(N, 4) float32 x, y, z, intensity -> (N,) labels and scores; 0 and 0 outside the field of view."""
        if len(points) == 0:
            return Segmentation(np.zeros(0, np.int64), np.zeros(0, np.float32))
        image, pixel_of_point = project_points(points, self.params.projection)
        pixels = self.segment_pixels(raw_channels(image)[None], image.mask[None])[0]
        return points_of_pixels(pixels, pixel_of_point)[0]

    def segment_range(self, image: np.ndarray) -> Segmentation:
        """(H, W, 5 or 6) range image -> (H, W) labels and scores; 0 and 0 on empty pixels (range 0)."""
        raw, mask = split_range_input(image)
        return self.segment_pixels(raw[None], mask[None])[0]

    def feeds(self, raws: np.ndarray, masks: np.ndarray) -> dict[str, np.ndarray]:
        """(B, H, W, 5) raw channels and (B, H, W) bool masks -> the network's named inputs."""
        p = self.params
        want = (p.projection.height, p.projection.width)
        if raws.shape[1:3] != want:
            raise ValueError(f"the network takes {want[0]} x {want[1]} range images, got {raws.shape[1]} x "
                             f"{raws.shape[2]}")
        feeds = {self._input: np.stack([normalize_channels(r, p.mean, p.std) for r in raws])}
        if self._mask is not None:
            feeds[self._mask] = np.ascontiguousarray(masks, bool)
        return feeds

    def segment_pixels(self, raws: np.ndarray, masks: np.ndarray) -> list[Segmentation]:
        """(B, H, W, 5) float32 raw channels and (B, H, W) bool masks -> one (H, W) Segmentation per image."""
        return [labels_and_scores(lg, m) for lg, m in zip(self.logits(raws, masks), masks, strict=True)]

    def logits(self, raws: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """(B, H, W, 5) float32 raw channels and (B, H, W) bool masks -> (B, K, H, W) float32 logits, after the CRF
        when the model has one (in its graph, or here on the host as the sidecar's host_crf says)."""
        return self.network_logits(self.feeds(raws, masks), masks)

    def network_logits(self, feeds: Mapping[str, np.ndarray], masks: np.ndarray) -> np.ndarray:
        """The network on prepared feeds (self.feeds), then the host CRF when the sidecar has one: (B, K, H, W)."""
        logits = self.network.run(feeds)[0]
        crf = self.params.host_crf
        if crf is None:
            return logits
        xyz = feeds[self._input][:, list(crf.xyz_channels)]  # the normalised x, y, z, as the torch CRF reads them
        return np.stack([apply_crf(lg, p, m, crf, self.threads) for lg, p, m in zip(logits, xyz, masks, strict=True)])


def project_points(points: np.ndarray, projection: ProjectionConfig) -> tuple[RangeImage, np.ndarray]:
    """(RangeImage, (N,) pixel_of_point) of a scan; a scan whose rings ring mode cannot find (not stored ring by
    ring, or only some lasers kept) falls back to uniform elevation rows with a warning, as the torch segmenter
    does (squeezeseg.predict.project_points)."""
    try:
        return project_scan(points, projection)
    except RingOrderError as e:
        log.warning("the laser ring of each point cannot be found (%s); falling back to uniform elevation rows, "
                    "which costs accuracy", e.fault.split(";")[0])
        return project_scan(points, dataclasses.replace(projection, mode="uniform"))
