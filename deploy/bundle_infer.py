"""Single-file inference for a model bundle (`squeeze deploy bundle`): numpy, OpenCV and one runtime, nothing else.

    python infer.py IMAGE.png [...] --out DIR      (detection: DIR/NAME.txt KITTI result lines, DIR/NAME.png)
    python infer.py SCAN.bin [...] --out DIR       (segmentation: DIR/NAME.label per point, DIR/NAME.png)

The model (model.onnx) and its sidecar (model.json) sit beside this file; --model picks another. --runtime chooses
onnxruntime or openvino (the bundle's default is set when it is written). --npz also writes DIR/NAME.npz with the
full-precision arrays (boxes, classes, scores / labels, scores).

This file is deploy/bundle_infer.py of the Squeeze suite, copied as it is. It carries its own copy of the suite's
numpy pre- and post-processing (squeeze.detection, squeeze.segmentation, squeeze.range_image's projection in
numpy); the suite's tests (tests/test_deploy_bundle.py) run it with torch and the suite blocked and check that its
outputs equal the suite's onnxruntime runtime on the same inputs, function by function and end to end.

Segmentation projection: "ring" mode (rows are laser rings taken from the point order of a KITTI .bin, also for
scans cropped to part of the circle) in numpy, as the suite's; a scan whose points are not stored ring by ring falls
back to uniform elevation rows with a warning, as the suite's runtimes do. "uniform" mode as the sidecar says.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

DEFAULT_RUNTIME = "onnxruntime"  # set by `squeeze deploy bundle --runtime`
RUNTIMES = ("onnxruntime", "openvino")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DENSE_NMS_MAX = 2048  # above this many boxes NMS goes one IoU row at a time (memory O(M)), as the suite's
MIN_RING_JUMP_DEG = 5.0  # a jump back of the azimuth larger than this can only start a new ring (crop of a scan)


class BundleError(Exception):
    """A bad bundle, input file or option; the message names the file."""


# ------------------------------------------------------------------------------------------------- the process
def keep_freed_memory() -> bool:
    """glibc's malloc keeps freed memory (the suite's squeeze.allocator, same settings): where other work runs
    between frames (here reading each input and drawing its picture; in the suite a second network), the per-frame
    temporaries otherwise page-fault back in. False where malloc is not glibc's."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # M_MMAP_THRESHOLD 32 MB, M_TRIM_THRESHOLD 256 MB, M_TOP_PAD 64 MB
    return all([bool(mallopt(param, value)) for param, value in ((-3, 32 << 20), (-1, 256 << 20), (-2, 64 << 20))])


# --------------------------------------------------------------------------------------------------- the model
def read_sidecar(model: Path) -> dict:
    """The JSON sidecar beside model.onnx (model.json) as a dict; BundleError naming it when missing or bad."""
    path = model.with_suffix(".json")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: no sidecar beside {model.name} (the bundle's model.json)") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: not a readable JSON sidecar: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != "squeeze-deploy-sidecar" or \
            doc.get("task") not in ("detection", "segmentation") or doc.get(doc.get("task")) is None:
        raise BundleError(f"{path}: not a squeeze deploy sidecar with a detection or segmentation section")
    if (doc.get("segmentation") or {}).get("host_crf") is not None:
        raise BundleError(f"{path}: the model leaves its CRF to the host, which this script does not run (export it "
                          "with --crf graph)")
    return doc


class Network:
    """One network in onnxruntime or OpenVINO (f32 precision hint, 2 threads): named numpy inputs in, the sidecar's
    outputs in order out."""

    def __init__(self, model: Path, sidecar: dict, runtime: str, threads: int = 2):
        if runtime not in RUNTIMES:
            raise BundleError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if not model.is_file():
            raise BundleError(f"{model}: no such model file")
        self.outputs = list(sidecar["output_names"])
        self.runtime = runtime
        try:
            if runtime == "onnxruntime":
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
                options.log_severity_level = 3
                # threads stop spinning when a run returns (by default they burn ~50 ms of CPU after it)
                options.add_session_config_entry("session.force_spinning_stop", "1")
                self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
            else:
                import openvino as ov

                core = ov.Core()
                network = core.read_model(str(model))
                drop_float_requantization(network)
                # f32: OpenVINO's CPU default on CPUs with bf16 instructions is bf16, which moves the outputs.
                self._compiled = core.compile_model(network, "CPU", {
                    "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                    "INFERENCE_PRECISION_HINT": "f32"})
        except ImportError:
            raise BundleError(f"the {runtime} runtime is not installed: pip install {runtime}") from None

    def run(self, feeds: dict) -> list:
        if self.runtime == "onnxruntime":
            return self._session.run(self.outputs, feeds)
        result = self._compiled(feeds)
        return [np.asarray(result[self._compiled.output(name)]) for name in self.outputs]


# An INT8 model's Q/DQ pairs that only round values for float ops or for a concat quantised again: OpenVINO runs
# faster without them (the suite's deploy.runtimes.openvino.drop_float_requantization, whose doc says why).
FLOAT_OPS = ("Sigmoid", "Maximum")
WEIGHTED_OV_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


def _dequantized_output(fake_quantize):
    if all(t.get_node().get_type_name() != "Convert" for t in fake_quantize.output(0).get_target_inputs()):
        return fake_quantize
    node = fake_quantize
    for step in ("Convert", "Convert", "Subtract", "Multiply"):
        targets = list(node.output(0).get_target_inputs())
        if len(targets) != 1:
            return None
        following = targets[0].get_node()
        if following.get_type_name() != step:
            if step == "Subtract" and following.get_type_name() == "Multiply":
                return following
            return None
        node = following
    return node


def _has_int8_weights(node) -> bool:
    weights = node.input_value(1).get_node()
    for _ in range(5):
        if weights.get_type_name() == "Constant":
            return weights.get_output_element_type(0).get_type_name() in ("i8", "u8")
        if weights.get_input_size() == 0:
            return False
        weights = weights.input_value(0).get_node()
    return False


def _runs_in_float(node) -> bool:
    kind = node.get_type_name()
    return kind in FLOAT_OPS or (kind in WEIGHTED_OV_OPS and not _has_int8_weights(node))


def _requantized_concat(node) -> bool:
    return node.get_type_name() == "Concat" and all(
        t.get_node().get_type_name() == "FakeQuantize" for t in node.output(0).get_target_inputs())


def drop_float_requantization(model) -> int:
    """Remove, in place, the Q/DQ pairs of an ov.Model whose values go on only to float ops or into requantised
    Concats; returns how many."""
    dropped = 0
    for fake_quantize in model.get_ordered_ops():
        if fake_quantize.get_type_name() != "FakeQuantize":
            continue
        dequantized = _dequantized_output(fake_quantize)
        if dequantized is None:
            continue
        consumers = [t.get_node() for t in dequantized.output(0).get_target_inputs()]
        if consumers and all(_runs_in_float(c) or _requantized_concat(c) for c in consumers):
            dequantized.output(0).replace(fake_quantize.input_value(0))
            dropped += 1
    return dropped


# ----------------------------------------------------------------------------------------------- detection
def preprocess_image(rgb: np.ndarray, width: int, height: int, pixel_mean_bgr) -> tuple[np.ndarray, tuple]:
    """(H, W, 3) uint8 RGB -> ((3, height, width) float32 BGR minus the means, resized bilinearly after the
    subtraction, and the (sx, sy) net-input pixels per original pixel)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.dtype} array of shape {rgb.shape}")
    h, w = rgb.shape[:2]
    out = np.empty((3, int(height), int(width)), np.float32)
    rgb_planes = cv2.split(rgb)
    for c in range(3):  # plane by plane, resized straight into the (3, H, W) input (network channel c: B, G, R)
        plane = rgb_planes[2 - c].astype(np.float32)
        cv2.subtract(plane, float(pixel_mean_bgr[c]), dst=plane)
        cv2.resize(plane, (int(width), int(height)), dst=out[c], interpolation=cv2.INTER_LINEAR)
    return out, (width / w, height / h)


def anchor_grid(grid_h: int, grid_w: int, image_w: float, image_h: float, shapes) -> np.ndarray:
    """(grid_h * grid_w * A, 4) float32 anchors [cx, cy, w, h]; row (row * grid_w + col) * A + k."""
    wh = np.asarray(shapes, np.float64).reshape(-1, 2)
    cx = np.arange(1, grid_w + 1, dtype=np.float64) * (float(image_w) / (grid_w + 1))
    cy = np.arange(1, grid_h + 1, dtype=np.float64) * (float(image_h) / (grid_h + 1))
    out = np.empty((grid_h, grid_w, len(wh), 4), np.float64)
    out[..., 0] = cx[None, :, None]
    out[..., 1] = cy[:, None, None]
    out[..., 2:] = wh[None, None]
    return out.reshape(-1, 4).astype(np.float32)


def safe_exp(x: np.ndarray, thresh: float = 1.0) -> np.ndarray:
    """e^x up to thresh, the tangent line above it (an untrained head cannot overflow a box size)."""
    x = np.asarray(x)
    return np.where(x > thresh, math.exp(thresh) * (x - thresh + 1.0), np.exp(np.minimum(x, thresh)))


def decode_boxes(deltas, anchors, image_w: float, image_h: float, exp_thresh: float = 1.0) -> np.ndarray:
    """(..., 4) deltas on (..., 4) anchors -> (..., 4) [left, top, right, bottom] clipped to the image."""
    cx = anchors[..., 0] + deltas[..., 0] * anchors[..., 2]
    cy = anchors[..., 1] + deltas[..., 1] * anchors[..., 3]
    half_w = 0.5 * anchors[..., 2] * safe_exp(deltas[..., 2], exp_thresh)
    half_h = 0.5 * anchors[..., 3] * safe_exp(deltas[..., 3], exp_thresh)
    x_max, y_max = float(image_w) - 1.0, float(image_h) - 1.0
    return np.stack((np.clip(cx - half_w, 0.0, x_max), np.clip(cy - half_h, 0.0, y_max),
                     np.clip(cx + half_w, 0.0, x_max), np.clip(cy + half_h, 0.0, y_max)), axis=-1)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[..., 2] - boxes[..., 0], 0) * np.maximum(boxes[..., 3] - boxes[..., 1], 0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, 4) and (M, 4) boxes -> (N, M) IoU; 0 where the union is 0."""
    iw = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0)
    ih = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0)
    inter = iw * ih
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return inter / np.maximum(union, np.finfo(union.dtype).tiny)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thresh: float, labels: np.ndarray, mode: str) -> np.ndarray:
    """(K,) int64 indices, best first, of the boxes that survive per-class NMS ("standard": greedy; "reference":
    a box survives iff no better box of its class overlaps it). Ties in score keep the input order."""
    m = boxes.shape[0]
    if m == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    b, lab = boxes[order], labels[order]
    keep = np.ones(m, bool)
    if m > DENSE_NMS_MAX:
        for i in range(m - 1):
            if mode == "standard" and not keep[i]:
                continue
            keep[i + 1:] &= ~((box_iou(b[i:i + 1], b[i + 1:])[0] > iou_thresh) & (lab[i + 1:] == lab[i]))
        return order[keep].astype(np.int64)
    over = np.triu((box_iou(b, b) > iou_thresh) & (lab[:, None] == lab[None, :]), 1)
    if mode == "reference":
        keep = ~over.any(0)
    else:
        for i in range(m - 1):
            if keep[i]:
                keep[i + 1:] &= ~over[i, i + 1:]
    return order[keep].astype(np.int64)


def soft_nms(boxes: np.ndarray, scores: np.ndarray, sigma: float, labels: np.ndarray, min_score: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian Soft-NMS per class: ((K,) indices, (K,) new scores), best first, scores above min_score."""
    m = boxes.shape[0]
    dense = m <= DENSE_NMS_MAX
    decay = None
    if dense:
        decay = np.exp(-np.square(box_iou(boxes, boxes)) / sigma)
        decay = np.where(labels[:, None] == labels[None, :], decay, 1.0).astype(decay.dtype)
    current, remaining = scores.copy(), np.ones(m, bool)
    picked, picked_scores = [], []
    for _ in range(m):
        best = int(np.argmax(np.where(remaining, current, -np.inf)))
        if not remaining[best] or not current[best] > min_score:
            break
        picked.append(best)
        picked_scores.append(current[best])
        remaining[best] = False
        if dense:
            row = decay[best]
        else:
            row = np.exp(-np.square(box_iou(boxes[best:best + 1], boxes)[0]) / sigma)
            row = np.where(labels == labels[best], row, 1.0).astype(row.dtype)
        current = np.where(remaining, current * row, current)
    return np.array(picked, np.int64), np.array(picked_scores, scores.dtype)


def postprocess(deltas, confidence, class_probs, anchors, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's network outputs (N, 4), (N,), (N, K) -> (boxes (D, 4) float32 net-input pixels, classes (D,)
    int64, scores (D,) float32), best first: top-N anchors, probability threshold, NMS, final threshold."""
    scored = class_probs * confidence[:, None]
    labels = scored.argmax(axis=1)
    probs = np.take_along_axis(scored, labels[:, None], axis=1)[:, 0]
    n, top_n = deltas.shape[0], int(p["top_n"])
    k = n if top_n <= 0 else min(top_n, n)
    if k < n:
        top = np.sort(np.argpartition(-probs, k - 1)[:k])
        top = top[np.argsort(-probs[top], kind="stable")]
    else:
        top = np.argsort(-probs, kind="stable")
    top = top[probs[top] > p["prob_thresh"]]
    boxes = decode_boxes(deltas[top], anchors[top], p["image_width"], p["image_height"], p["exp_thresh"])
    scores, classes = probs[top], labels[top].astype(np.int64)
    if p["nms_mode"] == "soft":
        keep, kept = soft_nms(boxes, scores, p["soft_nms_sigma"], classes, p["prob_thresh"])
    else:
        keep = nms(boxes, scores, p["nms_thresh"], classes, p["nms_mode"])
        kept = scores[keep]
    if p["final_threshold"] > 0:
        above = kept > p["final_threshold"]
        keep, kept = keep[above], kept[above]
    return boxes[keep].astype(np.float32).reshape(-1, 4), classes[keep], kept.astype(np.float32)


def boxes_to_original(boxes: np.ndarray, scale: tuple, size: tuple) -> np.ndarray:
    """(D, 4) net-input boxes -> (D, 4) float64 boxes in the original (W, H) image, clipped to it."""
    sx, sy = scale
    out = boxes.astype(np.float64).reshape(-1, 4) / np.array([sx, sy, sx, sy])
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, size[0] - 1)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, size[1] - 1)
    return out


def detect(network: Network, sidecar: dict, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB -> (boxes (D, 4) float64 in its pixels, classes (D,) int64, scores (D,) float32)."""
    p = sidecar["detection"]
    x, scale = preprocess_image(rgb, p["image_width"], p["image_height"], p["pixel_mean_bgr"])
    deltas, confidence, class_probs = network.run({sidecar["inputs"][0]["name"]: x[None]})
    anchors = anchor_grid(*p["grid"], p["image_width"], p["image_height"], p["anchor_shapes"])
    boxes, classes, scores = postprocess(deltas[0], confidence[0], class_probs[0], anchors, p)
    return boxes_to_original(boxes, scale, (rgb.shape[1], rgb.shape[0])), classes, scores


def kitti_lines(boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, names) -> str:
    """KITTI result lines (the devkit's format; the fields a 2D detector cannot know take its "unknown" values)."""
    return "".join(f"{names[c]} -1.00 -1 -10.00 {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f} -1.00 -1.00 -1.00 "
                   f"-1000.00 -1000.00 -1000.00 -10.00 {s:.4f}\n"
                   for b, c, s in zip(boxes, classes, scores, strict=True))


def draw_boxes(rgb: np.ndarray, boxes: np.ndarray, classes: np.ndarray, colors) -> np.ndarray:
    """A BGR picture (for cv2.imwrite) of the image with 2-pixel boxes in the class colours, the best on top."""
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for b, c in zip(boxes[::-1], classes[::-1], strict=True):
        r, g, bl = colors[c]
        cv2.rectangle(out, (round(b[0]), round(b[1])), (round(b[2]), round(b[3])), (bl, g, r), 2)
    return out


# -------------------------------------------------------------------------------------------- segmentation
def ring_rows(points: np.ndarray) -> np.ndarray:
    """(N,) int64 laser ring of each point of a ring-ordered scan, cropped or not (a jump back of the azimuth by
    more than half the largest jump, and MIN_RING_JUMP_DEG, starts a ring); -1 for points at the origin."""
    p = np.asarray(points, dtype=np.float64)
    rows = np.full(len(p), -1, np.int64)
    valid = np.flatnonzero((p[:, :3] ** 2).sum(axis=1) > 0)
    if len(valid) == 0:
        return rows
    az = np.arctan2(p[valid, 1], p[valid, 0])
    step = np.diff(az)
    threshold = max((float(-step.min()) if len(step) else 0.0) / 2, np.deg2rad(MIN_RING_JUMP_DEG))
    wrap = np.concatenate([[False], step < -threshold])
    negative = az < 0
    first_wrap = int(np.argmax(wrap)) if wrap.any() else len(az)
    rows[valid] = np.cumsum(wrap) - negative + (1 if negative[:first_wrap].all() else 0)
    return rows


def _plausible_rings(rings: int, height: int) -> bool:
    return 0.75 * height <= rings <= 1.25 * height + 1


def project(points: np.ndarray, proj: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 4) float32 points -> ((H, W, 5) float32 x, y, z, intensity, range, 0 where empty; (H, W) bool mask;
    (N,) int64 flat pixel of each point, -1 outside the view). The nearest point of a pixel wins (ties: the lower
    index). Ring mode falls back to uniform rows, with a warning, for a scan not stored ring by ring."""
    h, w = int(proj["height"]), int(proj["width"])
    pts = np.ascontiguousarray(points, dtype=np.float32)
    p64 = pts[:, :3].astype(np.float64)
    ranges = np.sqrt((p64 * p64).sum(axis=1))
    az = np.arctan2(p64[:, 1], p64[:, 0])
    mode = proj["mode"]
    if mode == "ring":
        wrap = np.concatenate([[False], np.diff(az) < -np.pi])
        rows = np.cumsum(wrap) - (az < 0)
        if not _plausible_rings(int(wrap.sum()) + 1, h) and np.any(pts[:, :3] != 0):
            rows = ring_rows(pts)
            if not _plausible_rings(int(rows.max()) + 1, h):
                print(f"warning: the laser ring of each point cannot be found ({int(rows.max()) + 1} rings for a "
                      f"{h}-row image: no ring order, or only some lasers kept); falling back to uniform elevation "
                      "rows, which costs accuracy", file=sys.stderr)
                mode = "uniform"
    if mode == "uniform":
        with np.errstate(invalid="ignore", divide="ignore"):
            el = np.arcsin(p64[:, 2] / ranges)
        up = np.deg2rad(proj["fov_up_deg"])
        rows = np.floor((up - el) / np.deg2rad(proj["fov_up_deg"] - proj["fov_down_deg"]) * h)
    left = np.deg2rad(proj["fov_left_deg"])
    cols = np.floor((left - az) / np.deg2rad(proj["fov_left_deg"] - proj["fov_right_deg"]) * w)
    valid = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w) & (ranges > 0)
    pixel = np.where(valid, rows * w + cols, -1).astype(np.int64)
    # Farthest first, so nearer points overwrite and, among equal ranges, the lower index is written last. Only the
    # points in view are sorted (a quarter of a scan for the front 90 degrees).
    inside = np.flatnonzero(valid)
    order = inside[np.argsort(ranges[inside], kind="stable")[::-1]]
    index = np.full(h * w, -1, np.int64)
    index[pixel[order]] = order
    mask = index >= 0
    image = np.zeros((h * w, 5), np.float32)
    image[mask, :4] = pts[index[mask], :4]
    image[mask, 4] = ranges[index[mask]]
    return image.reshape(h, w, 5), mask.reshape(h, w), pixel


def normalize(raw: np.ndarray, mean, std) -> np.ndarray:
    """(H, W, C) raw channels -> (C, H, W) float32 (raw - mean) / std, empty pixels included."""
    return np.ascontiguousarray(((raw - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))
                                .transpose(2, 0, 1), dtype=np.float32)


def labels_and_scores(logits: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, H, W) logits -> (H, W) int64 argmax class and float32 softmax score of it; 0 and 0 on empty pixels."""
    logits = np.asarray(logits, np.float32)
    labels = logits.argmax(axis=0)
    top = np.take_along_axis(logits, labels[None], axis=0)[0]
    scores = 1.0 / np.exp(logits - top[None]).sum(axis=0)
    return np.where(mask, labels, 0).astype(np.int64), np.where(mask, scores, 0).astype(np.float32)


def segment(network: Network, sidecar: dict, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 4) points -> ((N,) int64 labels, (N,) float32 scores, (H, W) int64 pixel labels); points outside the
    view get 0 and 0."""
    p = sidecar["segmentation"]
    proj = p["projection"]
    if len(points) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros((proj["height"], proj["width"]), np.int64)
    raw, mask, pixel = project(points, proj)
    feeds = {}
    for spec in sidecar["inputs"]:
        feeds[spec["name"]] = mask[None] if spec["dtype"] == "bool" else normalize(raw, p["mean"], p["std"])[None]
    labels, scores = labels_and_scores(network.run(feeds)[0][0], mask)
    inside = pixel >= 0
    point_labels, point_scores = np.zeros(len(points), np.int64), np.zeros(len(points), np.float32)
    point_labels[inside] = labels.ravel()[pixel[inside]]
    point_scores[inside] = scores.ravel()[pixel[inside]]
    return point_labels, point_scores, labels


def read_scan(path: Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity of a KITTI .bin scan."""
    data = np.fromfile(path, dtype="<f4")
    if data.size % 4:
        raise BundleError(f"{path}: {data.size * 4} bytes is not a whole number of 16-byte points")
    points = data.reshape(-1, 4).astype(np.float32)
    if not np.isfinite(points).all():
        raise BundleError(f"{path}: the scan holds NaN or infinite values")
    return points


def label_picture(labels: np.ndarray, colors, row_scale: int = 4) -> np.ndarray:
    """A BGR picture of the (H, W) pixel labels in the class colours (class 0 black), rows repeated row_scale
    times so a 64 x 512 image is readable."""
    palette = np.asarray(colors, np.uint8).reshape(-1, 3)[:, ::-1].copy()
    palette[0] = 0
    return np.repeat(palette[labels], row_scale, axis=0)


# ------------------------------------------------------------------------------------------------- command
def main(argv=None) -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", type=Path, nargs="+", help="RGB images (detection) or KITTI .bin scans")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--model", type=Path, default=here / "model.onnx", help="the .onnx model (default: bundle's)")
    parser.add_argument("--runtime", default=DEFAULT_RUNTIME, help=f"one of {', '.join(RUNTIMES)}")
    parser.add_argument("--threads", type=int, default=2, help="runtime threads (default 2)")
    parser.add_argument("--npz", action="store_true", help="also write NAME.npz with the full-precision arrays")
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        run(args)
    except BundleError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> None:
    if args.runtime not in RUNTIMES:
        raise BundleError(f"unknown runtime {args.runtime!r}: choose one of {', '.join(RUNTIMES)}")
    sidecar = read_sidecar(args.model)
    task = sidecar["task"]
    for path in args.inputs:
        if not path.is_file():
            raise BundleError(f"{path}: no such input file")
        wanted = IMAGE_SUFFIXES if task == "detection" else (".bin",)
        if path.suffix.lower() not in wanted:
            raise BundleError(f"{path}: a {task} model takes {' '.join(wanted)} files")
    network = Network(args.model, sidecar, args.runtime, args.threads)
    names, colors = sidecar["class_names"], sidecar["class_colors"]
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.inputs:
        stem = args.out / path.stem
        if task == "detection":
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise BundleError(f"{path}: not a readable image")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            boxes, classes, scores = detect(network, sidecar, rgb)
            stem.with_suffix(".txt").write_text(kitti_lines(boxes, classes, scores, names), encoding="utf-8")
            cv2.imwrite(str(stem.with_suffix(".png")), draw_boxes(rgb, boxes, classes, colors))
            arrays = {"boxes": boxes, "classes": classes, "scores": scores}
            summary = f"{len(boxes)} detections"
        else:
            labels, scores, pixels = segment(network, sidecar, read_scan(path))
            labels.astype("<u4").tofile(stem.with_suffix(".label"))  # SemanticKITTI: class in the lower 16 bits
            cv2.imwrite(str(stem.with_suffix(".png")), label_picture(pixels, colors))
            arrays = {"labels": labels, "scores": scores}
            summary = ", ".join(f"{names[c]} {int((labels == c).sum())}" for c in range(1, len(names)))
        if args.npz:
            np.savez(stem.with_suffix(".npz"), **arrays)
        print(f"{path.name}: {summary} -> {stem}.*")


if __name__ == "__main__":
    sys.exit(main())
