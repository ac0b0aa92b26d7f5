"""squeeze.detection, the numpy pre- and post-processing of SqueezeDet: image preparation, safe-exp decoding, NMS
(both rules) and Soft-NMS against naive loops and hand-built boxes, the whole post-processing, mapping back to the
original image. (The NMS tests moved here from tests/test_squeezedet_model.py with their hand-computed values
when the torch NMS was replaced by this one.)"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import pytest

from squeeze.detection import (
    VGG_MEANS_BGR,
    box_iou,
    boxes_to_original,
    decode_boxes,
    network_image,
    nms,
    postprocess,
    preprocess_image,
    safe_exp,
    soft_nms,
)
from squeeze.predictor import Detections2D


def grid_anchors(rows: int, cols: int, width: float, height: float, size: float) -> np.ndarray:
    """(rows * cols, 4) [cx, cy, w, h] anchors of one shape on cell centres (the layout of make_anchors)."""
    cy, cx = np.meshgrid((np.arange(rows) + 0.5) * height / rows, (np.arange(cols) + 0.5) * width / cols,
                         indexing="ij")
    return np.stack([cx.ravel(), cy.ravel(), np.full(cx.size, size), np.full(cx.size, size)], 1).astype(np.float32)


# ---------------------------------------------------------------------------------------------- pre-processing
def test_network_image_is_bgr_minus_the_means():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (200, 100, 50)  # R, G, B
    out = network_image(rgb, (10.0, 20.0, 30.0))
    assert out.dtype == np.float32 and out.shape == (2, 3, 3)
    np.testing.assert_allclose(out[0, 0], [50 - 10, 100 - 20, 200 - 30])  # B, G, R order
    np.testing.assert_allclose(out[1, 2], [-10, -20, -30])
    with pytest.raises(ValueError, match="uint8 RGB"):
        network_image(rgb.astype(np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        network_image(rgb[..., 0])
    with pytest.raises(ValueError, match="3 values"):
        network_image(rgb, (1.0, 2.0))


def test_preprocess_image_resizes_and_gives_the_scale():
    rgb = np.full((10, 20, 3), (255, 0, 0), np.uint8)  # pure red
    inputs, scale = preprocess_image(rgb, 40, 5)
    assert inputs.shape == (3, 5, 40) and inputs.dtype == np.float32 and scale == (2.0, 0.5)
    # Channel 0 is blue (0 - 103.939), channel 2 red (255 - 123.68), everywhere after the resize.
    np.testing.assert_allclose(inputs[0], -VGG_MEANS_BGR[0], rtol=1e-6)
    np.testing.assert_allclose(inputs[2], 255 - VGG_MEANS_BGR[2], rtol=1e-6)
    with pytest.raises(ValueError, match="uint8 RGB"):
        preprocess_image(rgb.astype(np.float32), 40, 5)
    with pytest.raises(ValueError, match="3 values"):
        preprocess_image(rgb, 40, 5, (1.0, 2.0))


@pytest.mark.parametrize("size", [(375, 1242), (370, 1224), (376, 1241)])
def test_preprocess_image_equals_the_reference_order_bit_for_bit(size):
    """Plane by plane (each resized straight into the network input) gives exactly the reference's order of work,
    BGR minus the means, resized as one 3-channel image, then transposed, at KITTI's image sizes."""
    import cv2

    rgb = np.random.default_rng(size[1]).integers(0, 256, (*size, 3), dtype=np.uint8)
    reference = cv2.resize(network_image(rgb), (1248, 384), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    inputs, scale = preprocess_image(rgb, 1248, 384)
    assert inputs.flags.c_contiguous and np.array_equal(inputs, reference)
    assert scale == (1248 / size[1], 384 / size[0])


# ------------------------------------------------------------------------------------------------------- boxes
def test_safe_exp():
    x = np.array([-2.0, 0.0, 1.0, 2.0, 1e4], np.float32)
    y = safe_exp(x, 1.0)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[:3], np.exp(x[:3]), rtol=1e-6)
    assert y[3] == pytest.approx(2 * math.e) and y[4] == pytest.approx(1e4 * math.e)
    assert float(safe_exp(np.array([1.0 + 1e-6]), 1.0)[0]) == pytest.approx(math.e, rel=1e-5)  # continuous
    big = decode_boxes(np.array([[0.0, 0.0, 50.0, 50.0]]), np.array([[10.0, 10.0, 4.0, 4.0]]), 100, 100)
    assert np.isfinite(big).all() and big.tolist() == [[0.0, 0.0, 99.0, 99.0]]  # linear growth, then clipped


def test_decode_boxes_clips_to_the_image():
    anchors = np.array([[5.0, 5.0, 20.0, 10.0], [50.0, 40.0, 10.0, 10.0]])
    assert decode_boxes(np.zeros((2, 4)), anchors, 64, 48).tolist() == [[0.0, 0.0, 15.0, 10.0],
                                                                        [45.0, 35.0, 55.0, 45.0]]
    shifted = decode_boxes(np.array([[0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 0.0, 0.0]]), anchors, 64, 48)
    assert shifted[1].tolist() == [63.0, 45.0, 63.0, 47.0]


def test_box_iou_by_hand():
    a = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    b = np.array([[5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0, 0], [0, 0, 0]])  # zero union gives 0, not NaN


def test_boxes_to_original_scales_and_clips():
    det = Detections2D(np.array([[10.0, 4.0, 30.0, 12.0], [0.0, 0.0, 200.0, 100.0]], np.float32),
                       np.array([0, 1]), np.array([0.9, 0.5], np.float32))
    out = boxes_to_original(det, (2.0, 0.5), (50, 40))
    assert out.boxes.dtype == np.float64
    assert out.boxes.tolist() == [[5.0, 8.0, 15.0, 24.0], [0.0, 0.0, 49.0, 39.0]]
    assert out.classes.tolist() == [0, 1] and out.scores.tolist() == pytest.approx([0.9, 0.5])
    assert len(boxes_to_original(Detections2D(), (2.0, 2.0), (5, 5))) == 0


def test_detections2d_refuses_mismatched_arrays():
    with pytest.raises(ValueError, match="Detections2D"):
        Detections2D(np.zeros((2, 4)), np.zeros(1, np.int64), np.zeros(2))


# --------------------------------------------------------------------------------------------------------- NMS
def naive_nms(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, thresh: float, mode: str) -> list:
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    iou = box_iou(boxes, boxes)
    keep = dict.fromkeys(order, True)
    for pos, i in enumerate(order):
        if mode == "standard" and not keep[i]:
            continue
        for j in order[pos + 1:]:
            if labels[i] == labels[j] and iou[i, j] > thresh:
                keep[j] = False
    return [i for i in order if keep[i]]


def test_nms_on_hand_built_boxes():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0],  # A 0.9
                      [3.0, 0.0, 13.0, 10.0],  # B 0.8: IoU(A, B) = 7/13 > 0.4, suppressed by A
                      [7.0, 0.0, 17.0, 10.0],  # C 0.7: IoU(A, C) = 3/17, IoU(B, C) = 6/14 > 0.4
                      [1.0, 0.0, 11.0, 10.0],  # D 0.95 but another class: never suppresses A
                      [30.0, 30.0, 40.0, 40.0]], np.float32)  # E 0.1 alone
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.1], np.float32)
    labels = np.array([0, 0, 0, 1, 0])
    # Greedy: B is gone, so it cannot suppress C. The reference's loop lets the suppressed B still remove C.
    assert nms(boxes, scores, 0.4, labels, "standard").tolist() == [3, 0, 2, 4]
    assert nms(boxes, scores, 0.4, labels, "reference").tolist() == [3, 0, 4]
    assert nms(boxes, scores, 0.4, None, "standard").tolist() == [3, 2, 4]  # one class: D suppresses A, B
    empty = nms(boxes[:0], scores[:0], 0.4)
    assert empty.shape == (0,) and empty.dtype == np.int64
    with pytest.raises(ValueError, match="soft_nms"):
        nms(boxes, scores, 0.4, mode="soft")
    with pytest.raises(ValueError, match="boxes"):
        nms(boxes[:, :3], scores, 0.4)


@pytest.mark.parametrize("mode", ["standard", "reference"])
def test_nms_matches_naive_loops_on_random_boxes(mode, monkeypatch):
    rng = np.random.default_rng(1)
    for _ in range(30):
        m = int(rng.integers(1, 64))
        xy = rng.random((m, 2), np.float32) * 100
        boxes = np.concatenate([xy, xy + rng.random((m, 2), np.float32) * 40 + 1], 1)
        scores, labels = rng.random(m, np.float32), rng.integers(0, 3, m)
        expected = naive_nms(boxes, scores, labels, 0.4, mode)
        assert nms(boxes, scores, 0.4, labels, mode).tolist() == expected
        with monkeypatch.context() as patch:  # the one-row-at-a-time path for many boxes, on the same boxes
            patch.setattr("squeeze.detection.DENSE_NMS_MAX", 0)
            assert nms(boxes, scores, 0.4, labels, mode).tolist() == expected


def naive_soft_nms(boxes, scores, labels, sigma, min_score):
    """Bodla et al. 2017, Algorithm 1 with the Gaussian rescoring, one box at a time."""
    rest = list(range(len(scores)))
    s = [float(v) for v in scores]
    out = []
    while rest:
        best = max(rest, key=lambda i: (s[i], -i))
        if not s[best] > min_score:
            break
        out.append((best, s[best]))
        rest.remove(best)
        for j in rest:
            if labels[j] == labels[best]:
                iou = float(box_iou(boxes[best:best + 1], boxes[j:j + 1])[0, 0])
                s[j] *= math.exp(-iou * iou / sigma)
    return out


def test_soft_nms_on_hand_built_boxes():
    boxes = np.array([[0.0, 0.0, 10.0, 10.0],  # A 0.9
                      [5.0, 0.0, 15.0, 10.0],  # B 0.8: IoU(A, B) = 5/15 = 1/3
                      [1.0, 0.0, 11.0, 10.0],  # D 0.95, another class: leaves A and B alone
                      [30.0, 30.0, 40.0, 40.0]], np.float32)  # E 0.1 alone
    scores = np.array([0.9, 0.8, 0.95, 0.1], np.float32)
    labels = np.array([0, 0, 1, 0])
    index, new = soft_nms(boxes, scores, 0.5, labels)
    assert index.tolist() == [2, 0, 1, 3] and index.dtype == np.int64
    assert new.tolist() == pytest.approx([0.95, 0.9, 0.8 * math.exp(-(1 / 9) / 0.5), 0.1])
    # B's decayed score 0.64 falls below min_score 0.7 and is dropped; E's 0.1 too.
    index, new = soft_nms(boxes, scores, 0.5, labels, min_score=0.7)
    assert index.tolist() == [2, 0] and new.tolist() == pytest.approx([0.95, 0.9])
    # One class: D (IoU 9/11 with A) pushes A below B: 0.9 * exp(-(9/11)^2 / 0.5) = 0.237.
    index, new = soft_nms(boxes, scores, 0.5, None)
    assert index[:2].tolist() == [2, 1]
    assert soft_nms(boxes[:0], scores[:0])[0].shape == (0,)
    with pytest.raises(ValueError, match="sigma"):
        soft_nms(boxes, scores, 0.0)


def test_soft_nms_matches_the_paper_loop_on_random_boxes(monkeypatch):
    rng = np.random.default_rng(2)
    for trial in range(20):
        m = int(rng.integers(1, 64))
        xy = rng.random((m, 2), np.float32) * 100
        boxes = np.concatenate([xy, xy + rng.random((m, 2), np.float32) * 40 + 1], 1)
        scores, labels = rng.random(m, np.float32), rng.integers(0, 3, m)
        expected = naive_soft_nms(boxes, scores, labels, 0.5, 0.05)
        with monkeypatch.context() as patch:
            if trial % 2:  # the row-at-a-time path too
                patch.setattr("squeeze.detection.DENSE_NMS_MAX", 0)
            index, new = soft_nms(boxes, scores, 0.5, labels, min_score=0.05)
        assert index.tolist() == [i for i, _ in expected]
        assert new.tolist() == pytest.approx([v for _, v in expected], rel=1e-5)
        assert (new[1:] <= new[:-1]).all()  # best first


# ------------------------------------------------------------------------------------------------ whole pipeline
def test_postprocess_with_soft_nms_keeps_a_second_hypothesis():
    anchors = np.array([[20.0, 20.0, 20.0, 20.0], [24.0, 20.0, 20.0, 20.0], [80.0, 80.0, 20.0, 20.0]], np.float32)
    deltas = np.zeros((3, 4), np.float32)
    conf = np.array([0.9, 0.8, 0.5], np.float32)
    class_probs = np.tile(np.array([[1.0, 0.0]], np.float32), (3, 1))
    # IoU of the first two boxes: 16 * 20 / (2 * 400 - 320) = 2/3, over the 0.4 of standard NMS.
    standard = postprocess(deltas, conf, class_probs, anchors, 100, 100)
    assert standard.scores.tolist() == pytest.approx([0.9, 0.5])
    soft = postprocess(deltas, conf, class_probs, anchors, 100, 100, nms_mode="soft", soft_nms_sigma=0.5)
    assert soft.scores.tolist() == pytest.approx([0.9, 0.5, 0.8 * math.exp(-(4 / 9) / 0.5)])
    assert soft.boxes[2].tolist() == [14.0, 10.0, 34.0, 30.0]
    with pytest.raises(ValueError, match="nms mode"):
        postprocess(deltas, conf, class_probs, anchors, 100, 100, nms_mode="fuzzy")


def test_postprocess_top_n_thresholds_and_empty_images():
    anchors = grid_anchors(2, 2, 100, 100, 20)  # 4 separated anchors
    deltas = np.zeros((4, 4), np.float32)
    class_probs = np.tile(np.array([[1.0, 0.0]], np.float32), (4, 1))
    conf = np.array([0.9, 0.8, 0.004, 0.5], np.float32)
    det = postprocess(deltas, conf, class_probs, anchors, 100, 100, top_n=3)
    assert det.scores.tolist() == pytest.approx([0.9, 0.8, 0.5]) and det.classes.tolist() == [0, 0, 0]
    assert det.boxes.tolist()[0] == [15.0, 15.0, 35.0, 35.0]  # anchor 0 at (25, 25), 20 x 20
    nothing = postprocess(deltas, np.zeros(4, np.float32), class_probs, anchors, 100, 100)
    assert nothing.boxes.shape == (0, 4) and nothing.scores.shape == (0,) and nothing.classes.dtype == np.int64
    every = postprocess(deltas, conf, class_probs, anchors, 100, 100, top_n=0)
    assert len(every) == 3  # 0.004 is below prob_thresh
    final = postprocess(deltas, conf, class_probs, anchors, 100, 100, final_threshold=0.6)
    assert final.scores.tolist() == pytest.approx([0.9, 0.8])
    with pytest.raises(ValueError, match="anchors"):
        postprocess(deltas, conf, class_probs, anchors[:3], 100, 100)
    with pytest.raises(ValueError, match="deltas"):
        postprocess(deltas[:, :3], conf, class_probs, anchors, 100, 100)


def test_postprocess_picks_each_anchors_best_class():
    anchors = grid_anchors(1, 2, 100, 50, 20)
    class_probs = np.array([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]], np.float32)
    det = postprocess(np.zeros((2, 4), np.float32), np.array([0.5, 1.0], np.float32), class_probs, anchors, 100, 50)
    assert det.classes.tolist() == [0, 1] and det.scores.tolist() == pytest.approx([0.6, 0.35])


def test_postprocess_best_class_takes_the_first_of_equal_scores():
    """Ties (equal class_prob * confidence) go to the lower class, as numpy's argmax has it; the score is the
    product in the outputs' precision."""
    anchors = grid_anchors(1, 3, 300, 50, 20)
    class_probs = np.array([[0.25, 0.5, 0.5], [0.4, 0.4, 0.2], [0.1, 0.2, 0.7]], np.float32)
    confidence = np.array([0.5, 1.0, 0.3], np.float32)
    det = postprocess(np.zeros((3, 4), np.float32), confidence, class_probs, anchors, 300, 50, nms_thresh=1.0)
    assert det.classes.tolist() == [0, 1, 2]
    assert det.scores.tolist() == [np.float32(0.4), np.float32(0.25), np.float32(0.7) * np.float32(0.3)]

@pytest.mark.slow
def test_decode_and_nms_of_one_kitti_image_within_5_ms():
    n, k = 24 * 78 * 9, 3  # the SqueezeDet KITTI grid
    rng = np.random.default_rng(0)
    anchors = grid_anchors(24 * 3, 78 * 3, 1248, 384, 40)
    deltas = (rng.standard_normal((n, 4)) * 0.3).astype(np.float32)
    conf = (1 / (1 + np.exp(-2 * rng.standard_normal(n)))).astype(np.float32)
    logits = 2 * rng.standard_normal((n, k))
    probs = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).astype(np.float32)
    times = []
    for _ in range(300):  # CPU time of this thread: the bar is about our work, not the machine's other load
        start = time.thread_time()
        postprocess(deltas, conf, probs, anchors, 1248, 384)
        times.append(time.thread_time() - start)
    assert statistics.median(times[50:]) <= 5e-3
