"""The predictor protocols (squeeze.predictor) and their torch implementations on the bundled weights; the core
pre- and post-processing run without torch installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from squeeze.classes import SEGMENTATION_CLASSES
from squeeze.kitti import read_image, read_velodyne
from squeeze.predictor import Detections2D, Detector, RangeSegmenter, Segmenter
from squeeze.range_image import project_scan

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sim_frame(tmp_path_factory):
    from domain_adapt.sim import simulate

    root = tmp_path_factory.mktemp("predictors") / "sim"
    simulate(root, frames=1, seed=5, azimuth_steps=512, progress=False)
    return root / "training"


def test_core_runs_without_torch():
    """The deploy runtimes import only `squeeze`: pre/post-processing and seg mapping must not need torch."""
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        from squeeze import classes, predictor
        from squeeze.detection import postprocess, preprocess_image
        from squeeze.range_image import project_scan, squeezeseg_front_uniform
        from squeeze.segmentation import labels_and_scores, points_of_pixels

        image, scale = preprocess_image(np.zeros((30, 40, 3), np.uint8), 80, 15)
        assert image.shape == (3, 15, 80) and scale == (2.0, 0.5)
        anchors = np.array([[20, 20, 20, 20], [24, 20, 20, 20], [80, 80, 20, 20]], np.float32)
        det = postprocess(np.zeros((3, 4), np.float32), np.array([0.9, 0.8, 0.5], np.float32),
                          np.tile(np.array([[1.0, 0.0]], np.float32), (3, 1)), anchors, 100, 100)
        assert det.scores.tolist() == [np.float32(0.9), np.float32(0.5)], det
        assert det.boxes[0].tolist() == [10.0, 10.0, 30.0, 30.0]
        points = np.array([[10, 0, -1, 0.5], [10, 0.2, -1, 0.5], [-10, 0, 0, 0.5]], np.float32)
        ri, pixel = project_scan(points, squeezeseg_front_uniform())
        logits = np.zeros((4,) + ri.mask.shape, np.float32)
        logits[2] = 5.0
        seg, in_view = points_of_pixels(labels_and_scores(logits, ri.mask), pixel)
        assert seg.labels.tolist() == [2, 2, 0] and in_view.tolist() == [True, True, False]
        assert seg.scores[2] == 0 and abs(seg.scores[0] - np.exp(5) / (np.exp(5) + 3)) < 1e-6
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


# ----------------------------------------------------------------------------------------------------- detection
def reference_detections(model, image: np.ndarray, data_config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The torch oracle: the network's raw outputs, the training decode (squeezedet.decode), top-N, threshold and
    a naive greedy per-class NMS loop, mapped to the original image."""
    from squeeze.detection import preprocess_image
    from squeezedet.decode import box_iou, decode_boxes

    c = model.config
    inputs, (sx, sy) = preprocess_image(image, c.image_width, c.image_height, data_config.pixel_mean_bgr)
    with torch.no_grad():
        raw = model.eval().raw_outputs(torch.from_numpy(inputs)[None])
    probs, labels = (raw.class_probs[0] * raw.confidence[0, :, None]).max(dim=-1)
    top_probs, top = probs.topk(c.top_n_detection)
    sel = top_probs > c.prob_thresh
    top, scores, labels = top[sel], top_probs[sel], labels[top][sel]
    boxes = decode_boxes(raw.deltas[0, top], model.anchors[top], c.image_width, c.image_height, c.exp_thresh)
    iou = box_iou(boxes, boxes)
    keep = []
    for i in range(len(scores)):  # scores are sorted best first
        if all(labels[j] != labels[i] or iou[j, i] <= c.nms_thresh for j in keep):
            keep.append(i)
    out = boxes[keep].double().numpy() / np.array([sx, sy, sx, sy])
    h, w = image.shape[:2]
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w - 1)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h - 1)
    return out, labels[keep].numpy(), scores[keep].numpy()


def test_torch_detector_matches_a_torch_reference_on_the_bundled_model(sim_frame):
    from squeezedet.predict import BUNDLED_WEIGHTS, TorchDetector, load_model

    loaded = load_model(BUNDLED_WEIGHTS)
    detector = loaded.detector
    assert isinstance(detector, TorchDetector) and isinstance(detector, Detector)
    assert detector.class_names == ("Car", "Pedestrian", "Cyclist")
    image = read_image(sim_frame / "image_2" / "000000.png")
    det = detector.detect(image)
    assert isinstance(det, Detections2D) and len(det) >= 3  # a simulated street has cars
    boxes, classes, scores = reference_detections(loaded.model, image, loaded.data_config)
    np.testing.assert_allclose(det.boxes, boxes, atol=1e-4)
    np.testing.assert_array_equal(det.classes, classes)
    np.testing.assert_allclose(det.scores, scores, atol=1e-6)
    # The same image at half size gives boxes in its own pixels: about half of the full-size ones.
    half = detector.detect(np.ascontiguousarray(image[::2, ::2]))
    assert half.boxes[:, [0, 2]].max() <= image.shape[1] // 2 - 1
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(image.astype(np.float32))


# --------------------------------------------------------------------------------------------------- segmentation
def test_torch_segmenter_on_the_bundled_model(sim_frame):
    from squeezeseg.predict import BUNDLED_WEIGHTS, load_model

    loaded = load_model(BUNDLED_WEIGHTS)
    # The bundled checkpoint was saved calling class 0 "unknown"; it loads under the one name, "background".
    assert loaded.class_names == SEGMENTATION_CLASSES == loaded.model_config.class_names
    assert loaded.data_config.class_names == SEGMENTATION_CLASSES
    segmenter = loaded.segmenter
    assert isinstance(segmenter, Segmenter) and isinstance(segmenter, RangeSegmenter)
    assert segmenter.class_names == SEGMENTATION_CLASSES

    points = read_velodyne(sim_frame / "velodyne" / "000000.bin")
    seg = segmenter.segment(points)
    assert seg.labels.shape == seg.scores.shape == (len(points),)
    assert seg.labels.dtype == np.int64 and seg.scores.dtype == np.float32
    image, pixel = project_scan(points, loaded.data_config.projection)
    out = pixel < 0  # behind the sensor or outside the front 90 degrees
    assert out.any() and (seg.labels[out] == 0).all() and (seg.scores[out] == 0).all()
    assert (seg.scores[~out] > 1 / len(SEGMENTATION_CLASSES) - 1e-6).all() and (seg.scores <= 1).all()
    assert {1, 0} <= set(seg.labels[~out].tolist())  # cars and background in a simulated street

    # The range-image protocol on the same projection, 5 or 6 channels, gives the pixels the points took.
    array = image.to_array()
    pixels = segmenter.segment_range(array)
    again = segmenter.segment_range(array[..., :5])
    np.testing.assert_array_equal(pixels.labels, again.labels)
    np.testing.assert_array_equal(seg.labels[~out], pixels.labels.ravel()[pixel[~out]])
    assert (pixels.labels[~image.mask] == 0).all() and (pixels.scores[~image.mask] == 0).all()
    # The network's own argmax (what `seg predict` wrote before the protocols) on valid pixels.
    from squeeze.segmentation import normalize_channels, raw_channels

    stats = loaded.data_config.stats
    inputs = torch.from_numpy(normalize_channels(raw_channels(image), stats.mean, stats.std))[None]
    with torch.no_grad():
        logits = loaded.model.logits(inputs, torch.from_numpy(image.mask)[None])[0]
    np.testing.assert_array_equal(pixels.labels[image.mask], logits.argmax(0).numpy()[image.mask])

    empty = segmenter.segment(np.zeros((0, 4), np.float32))
    assert empty.labels.shape == (0,) and empty.scores.shape == (0,)
    with pytest.raises(ValueError, match="range image"):
        segmenter.segment_range(array[..., :4])
