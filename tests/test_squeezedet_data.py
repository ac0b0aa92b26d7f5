"""SqueezeDet data: preprocessing as the reference, drift + flip that never cut a box, empty images, collation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squeeze.errors import DataError
from squeeze.kitti import ObjectLabels, write_image, write_labels
from squeezedet.data import (
    DetDataConfig,
    DetectionDataset,
    collate_detections,
    draw_drift_flip,
    drift_flip_boxes,
    drift_flip_resize,
    drift_range,
    objects_of_classes,
)


def _labels(types, boxes) -> ObjectLabels:
    n = len(types)
    return ObjectLabels(type=np.array(types, dtype="<U16"), truncated=np.zeros(n), occluded=np.zeros(n, np.int64),
                        alpha=np.zeros(n), bbox=np.array(boxes, float).reshape(-1, 4), dimensions=np.ones((n, 3)),
                        location=np.ones((n, 3)), rotation_y=np.zeros(n))


@pytest.fixture
def folder(tmp_path):
    rgb = np.zeros((60, 100, 3), np.uint8)
    rgb[:, :, 0] = 200  # red
    write_image(tmp_path / "training" / "image_2" / "000000.png", rgb)
    write_labels(tmp_path / "training" / "label_2" / "000000.txt",
                 _labels(["Car", "DontCare", "Van", "Pedestrian"], [[10, 20, 40, 50], [0, 0, 5, 5], [50, 10, 60, 20],
                                                                   [70, 5, 80, 55]]))
    write_image(tmp_path / "training" / "image_2" / "000001.png", rgb)
    write_labels(tmp_path / "training" / "label_2" / "000001.txt", ObjectLabels())
    return tmp_path


def test_preprocessing_as_the_reference(folder):
    cfg = DetDataConfig(image_width=200, image_height=120)
    ds = DetectionDataset(folder, config=cfg)
    s = ds.sample(0)
    assert s.image.shape == (120, 200, 3) and s.scale == (2.0, 2.0) and s.original_size == (100, 60)
    # BGR minus the VGG means: red 200 sits in channel 2.
    np.testing.assert_allclose(s.image[5, 5], [-103.939, -116.779, 200 - 123.68], rtol=1e-5)
    # Only Car and Pedestrian are kept, scaled by 2.
    np.testing.assert_allclose(s.boxes, [[20, 40, 80, 100], [140, 10, 160, 110]])
    assert s.labels.tolist() == [0, 1]
    empty = ds.sample(1)
    assert empty.boxes.shape == (0, 4) and empty.labels.shape == (0,)


def test_training_items_and_collation(folder):
    ds = DetectionDataset(folder, config=DetDataConfig(image_width=96, image_height=64), train=True)
    batch = collate_detections([ds[0], ds[1]])
    assert batch["images"].shape == (2, 3, 64, 96)
    assert [b.shape for b in batch["boxes"]] == [(2, 4), (0, 4)]
    ds.set_epoch(1)
    assert ds[1]["images"].shape == (3, 64, 96)  # an image without objects never fails


def test_missing_images(tmp_path):
    (tmp_path / "training" / "calib").mkdir(parents=True)
    with pytest.raises(DataError):
        DetectionDataset(tmp_path)


def test_drift_moves_content_and_fills_zeros():
    img = np.arange(12, dtype=np.float32).reshape(3, 4, 1).repeat(3, axis=2)
    out = drift_flip_resize(img, 1, 0, False, 4, 3)
    np.testing.assert_array_equal(out[:, :3], img[:, 1:])
    assert (out[:, 3] == 0).all()
    out = drift_flip_resize(img, -1, -1, False, 4, 3)
    np.testing.assert_array_equal(out[1:, 1:], img[:2, :3])
    assert (out[0] == 0).all() and (out[:, 0] == 0).all()
    np.testing.assert_array_equal(drift_flip_resize(img, 0, 0, True, 4, 3), img[:, ::-1])


@pytest.mark.parametrize(("dx", "dy", "flip"), [(0, 0, False), (7, -5, False), (-12, 9, True), (3, 4, True)])
def test_drift_flip_resize_equals_the_three_steps(dx, dy, flip):
    # A smooth image, so OpenCV's 1/32-pixel interpolation grid moves values by well under one grey level.
    h, w = 75, 124
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx * 1.5, yy * 2.0, 0.7 * xx + yy], axis=2) - 100.0
    shifted = np.zeros_like(img)  # content moved by (-dx, -dy), zeros where nothing arrives
    shifted[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)] = img[max(dy, 0):h - max(-dy, 0),
                                                                           max(dx, 0):w - max(-dx, 0)]
    if flip:
        shifted = shifted[:, ::-1]
    expected = cv2.resize(np.ascontiguousarray(shifted), (250, 77), interpolation=cv2.INTER_LINEAR)
    out = drift_flip_resize(img, dx, dy, flip, 250, 77)
    assert out.shape == (77, 250, 3) and out.dtype == np.float32
    # Away from the zero-filled band's edge and the outermost pixels, where the border rules differ.
    inner = np.zeros((77, 250), bool)
    ys = slice(max(-dy, 0) + 2, 77 - max(dy, 0) - 2)
    xs = slice(abs(dx) * 2 + 3, 250 - abs(dx) * 2 - 3)
    inner[ys, xs] = True
    np.testing.assert_allclose(out[inner], expected[inner], atol=0.2)


def test_image_cache_and_training_samples(folder):
    cfg = DetDataConfig(image_width=200, image_height=120)
    ds = DetectionDataset(folder, config=cfg, train=True, cache_images=True)
    first = ds[0]["images"]
    assert 0 in ds._images
    np.testing.assert_array_equal(ds[0]["images"], first)  # same (seed, epoch, index): same augmentation
    small = ds.with_config(DetDataConfig(image_width=100, image_height=60))
    assert small._images is ds._images and small[0]["images"].shape == (3, 60, 100)
    assert ds.config.image_width == 200


def test_drift_range_keeps_boxes_inside():
    boxes = np.array([[10.0, 5, 30, 20], [60, 8, 95, 40]])
    assert drift_range(boxes, 100, 150, axis=0) == (-4, 10)  # right edge 95 may move 4 px right, left 10 px left
    assert drift_range(np.zeros((0, 4)), 100, 150, axis=0) == (-150, 150)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 90), st.floats(0, 50), st.floats(1, 60), st.floats(1, 40)), max_size=6),
       st.integers(0, 2**31), st.booleans())
def test_augment_never_cuts_a_box(raw, seed, flip):
    w, h = 100, 60
    boxes = np.array([[x, y, min(x + bw, w - 1), min(y + bh, h - 1)] for x, y, bw, bh in raw], np.float32)
    boxes = boxes.reshape(-1, 4)
    image = np.ones((h, w, 3), np.float32)
    before = boxes.copy()
    dx, dy, flipped = draw_drift_flip(boxes, w, h, DetDataConfig(flip=flip), np.random.default_rng(seed))
    out_img = drift_flip_resize(image, dx, dy, flipped, w, h)
    out_boxes = drift_flip_boxes(boxes, dx, dy, flipped, w)
    np.testing.assert_array_equal(boxes, before)  # inputs untouched
    assert out_img.shape == image.shape and out_boxes.shape == boxes.shape
    assert (out_boxes[:, [0, 1]] >= -1e-4).all() and (out_boxes[:, 2] <= w - 1 + 1e-4).all()
    assert (out_boxes[:, 3] <= h - 1 + 1e-4).all()
    np.testing.assert_allclose(out_boxes[:, 2] - out_boxes[:, 0], boxes[:, 2] - boxes[:, 0], atol=1e-4)


def test_objects_of_classes_is_case_insensitive():
    boxes, cls = objects_of_classes(_labels(["car", "Cyclist", "Tram"], [[0, 0, 1, 1]] * 3), ("Car", "Cyclist"))
    assert cls.tolist() == [0, 1] and boxes.shape == (2, 4)
