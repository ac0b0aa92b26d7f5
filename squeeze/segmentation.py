"""SqueezeSeg's pre- and post-processing in numpy: what every segmenter runtime shares, with or without torch.

Data flow (reference/models.md 2.2): points -> range image (squeeze.range_image.project_scan, numba) -> raw
channels x, y, z, intensity, range -> normalised by per-channel mean and std (empty pixels too, as the reference
does) -> network logits (K, H, W) -> per-pixel class and softmax score, 0 on empty pixels -> back to every
point through `pixel_of_point` (points hidden behind a nearer one in the same pixel take that pixel's class,
SqueezeSeg issue #26; points outside the field of view get class 0, score 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from squeeze.jit import exp_nonpositive, njit
from squeeze.predictor import Segmentation
from squeeze.range_image import RangeImage

__all__ = [
    "RAW_CHANNELS",
    "labels_and_scores",
    "normalize_channels",
    "points_of_pixels",
    "raw_channels",
    "split_range_input",
]

RAW_CHANNELS = ("x", "y", "z", "intensity", "range")


def raw_channels(image: RangeImage) -> np.ndarray:
    """(H, W, 5) float32 x, y, z, intensity, range of a range image; 0 where empty."""
    return np.concatenate([image.xyz, image.intensity[..., None], image.range[..., None]], axis=2).astype(
        np.float32, copy=False)


def split_range_input(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 5) or (H, W, 6) range image (docs/conventions.md; a 6th channel, the label, is ignored) ->
    ((H, W, 5) float32 raw channels, (H, W) bool mask of the valid pixels, range > 0). ValueError on other shapes
    or on NaN / infinite values."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] not in (5, 6):
        raise ValueError(f"expected an (H, W, 5) or (H, W, 6) range image, got shape {getattr(image, 'shape', None)}")
    raw = np.ascontiguousarray(image[..., :5], dtype=np.float32)
    if not np.isfinite(raw).all():
        raise ValueError("range image holds NaN or infinite values")
    return raw, raw[..., 4] > 0


def normalize_channels(raw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(H, W, C) float32 raw channels -> (C, H, W) float32 (raw - mean) / std, the network input.

    Empty pixels are normalised too (their zeros become -mean / std), as the reference does.
    """
    mean_a = np.asarray(mean, np.float32)
    std_a = np.asarray(std, np.float32)
    if raw.ndim != 3 or mean_a.shape != (raw.shape[2],) or std_a.shape != mean_a.shape:
        raise ValueError(f"raw channels {raw.shape} need one mean and std per channel, got {len(mean_a)} and "
                         f"{len(std_a)}")
    if not (std_a > 0).all():
        raise ValueError(f"channel stds must be > 0, got {tuple(std)}")
    return _normalize_to_chw(np.ascontiguousarray(raw, np.float32), mean_a, std_a)


@njit(cache=True)
def _normalize_to_chw(raw, mean, std):
    # One pass writing the (C, H, W) layout: numpy's (raw - mean) / std then a transposing copy took 3 passes and
    # 0.47 ms of a 64 x 512 frame's ~3 ms of pre- and post-processing. Same float32 operations, same results.
    h, w, c = raw.shape
    out = np.empty((c, h, w), np.float32)
    for i in range(h):
        for j in range(w):
            for k in range(c):
                out[k, i, j] = (raw[i, j, k] - mean[k]) / std[k]
    return out


def labels_and_scores(logits: np.ndarray, mask: np.ndarray) -> Segmentation:
    """(K, H, W) logits and (H, W) bool mask -> per-pixel (H, W) int64 argmax class and (H, W) float32 softmax
    probability of it; both 0 on empty pixels (as the reference masks its predictions)."""
    logits = np.asarray(logits, np.float32)
    if logits.ndim != 3 or logits.shape[1:] != mask.shape:
        raise ValueError(f"expected logits (K, H, W) and mask (H, W), got {logits.shape} and {mask.shape}")
    labels, scores = _argmax_softmax(np.ascontiguousarray(logits), np.ascontiguousarray(mask, np.bool_))
    return Segmentation(labels, scores)


@njit(cache=True, fastmath=True)
def _argmax_softmax(logits, mask):
    # Row by row over contiguous rows, so the loops vectorise (numpy took 6 passes over the logits, 0.9 ms a 64 x 512
    # frame; a per-pixel loop with libm's exp 0.54 ms): the first largest logit (numpy's argmax tie rule) and the
    # softmax of it, 1 / sum_k exp(l_k - l_max), with the vectorisable exp (relative error <= 1.2e-7).
    k, h, w = logits.shape
    labels = np.zeros((h, w), np.int64)
    scores = np.zeros((h, w), np.float32)
    top = np.empty(w, np.float32)
    best = np.empty(w, np.int64)
    total = np.empty(w, np.float32)
    for i in range(h):
        first = logits[0, i]
        for j in range(w):
            top[j] = first[j]
            best[j] = 0
            total[j] = 0.0
        for c in range(1, k):
            row = logits[c, i]
            for j in range(w):
                better = row[j] > top[j]
                top[j] = row[j] if better else top[j]
                best[j] = c if better else best[j]
        for c in range(k):
            row = logits[c, i]
            for j in range(w):
                total[j] += exp_nonpositive(row[j] - top[j])
        valid, out_labels, out_scores = mask[i], labels[i], scores[i]
        for j in range(w):
            out_labels[j] = best[j] if valid[j] else 0
            out_scores[j] = np.float32(1.0) / total[j] if valid[j] else np.float32(0.0)
    return labels, scores


def points_of_pixels(pixels: Segmentation, pixel_of_point: np.ndarray) -> tuple[Segmentation, np.ndarray]:
    """A (H, W) segmentation mapped back to points: ((N,) labels and scores, (N,) bool in-view mask).

    pixel_of_point: (N,) int64 flat pixel row * W + col of each point, -1 outside the image
    (squeeze.range_image.project_scan). Points outside get label 0 and score 0. No points give empty arrays.
    """
    pixel_of_point = np.ascontiguousarray(pixel_of_point, np.int64)
    labels, scores, in_view, bad = _gather_pixels(np.ascontiguousarray(pixels.labels, np.int64).ravel(),
                                                  np.ascontiguousarray(pixels.scores, np.float32).ravel(),
                                                  pixel_of_point)
    if bad >= 0:
        raise ValueError(f"pixel_of_point holds pixel {int(pixel_of_point.max())} of an image of "
                         f"{pixels.labels.size} pixels")
    return Segmentation(labels, scores), in_view


@njit(cache=True)
def _gather_pixels(labels, scores, pixel_of_point):
    # One pass over the points (numpy's masked gathers took 4 passes, 0.6 ms of a 120,000-point KITTI scan).
    # Returns the per-point labels, scores, in-view mask and the index of a point whose pixel is out of range (-1).
    n = pixel_of_point.shape[0]
    out_labels = np.zeros(n, np.int64)
    out_scores = np.zeros(n, np.float32)
    in_view = np.zeros(n, np.bool_)
    size = labels.shape[0]
    for i in range(n):
        p = pixel_of_point[i]
        if p < 0:
            continue
        if p >= size:
            return out_labels, out_scores, in_view, i
        out_labels[i] = labels[p]
        out_scores[i] = scores[p]
        in_view[i] = True
    return out_labels, out_scores, in_view, -1
