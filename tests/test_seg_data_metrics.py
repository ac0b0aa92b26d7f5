"""Segmentation data (all four folder kinds, flip, point drop, stats) and metrics (hand-computed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from squeeze.errors import DataError
from squeeze.kitti import write_calib, write_image_set, write_labels, write_point_labels, write_velodyne
from squeeze.range_image import project_scan, squeezeseg_front, write_range_npy
from squeezeseg.data import ChannelStats, RangeDataset, SegDataConfig, compute_stats, flip_sample
from squeezeseg.metrics import confusion_matrix, metrics_from_confusion, plot_confusion
from tests.conftest import kitti_like_calibration, synthetic_labels
from tests.test_range_image import ring_ordered_scan


# ------------------------------------------------------------------------------------------- metrics
def test_confusion_and_iou_by_hand():
    target = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    pred = np.array([0, 1, 1, 1, 0, 2, 0, 3])
    valid = np.array([1, 1, 1, 1, 1, 1, 1, 0], bool)  # the cyclist pixel is empty: not counted
    conf = confusion_matrix(pred, target, 4, valid)
    assert conf.tolist() == [[1, 1, 0, 0], [1, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    m = metrics_from_confusion(conf, ("background", "car", "pedestrian", "cyclist"))
    # car: TP 2, FP 1 (a background pixel), FN 1 -> IoU 2/4, precision 2/3, recall 2/3
    assert m.iou[1] == pytest.approx(0.5) and m.precision[1] == pytest.approx(2 / 3)
    assert m.recall[1] == pytest.approx(2 / 3)
    # pedestrian: TP 1, FP 0, FN 1 -> IoU 1/2, precision 1, recall 1/2
    assert m.iou[2] == pytest.approx(0.5) and m.precision[2] == 1.0 and m.recall[2] == 0.5
    assert np.isnan(m.iou[3])
    d = m.as_dict()
    assert d["iou_car"] == pytest.approx(0.5) and d["miou"] == pytest.approx(0.5)


def test_summed_over_the_set_not_averaged_per_frame():
    # Frame A: car IoU 1 (1 pixel); frame B: car IoU 0 (9 pixels missed). Summed: 1 / 10.
    conf = confusion_matrix(np.array([1]), np.array([1]), 2) + confusion_matrix(np.zeros(9, int), np.ones(9, int), 2)
    assert metrics_from_confusion(conf, ("bg", "car")).iou[1] == pytest.approx(0.1)


def test_confusion_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([5]), np.array([0]), 4)
    with pytest.raises(ValueError, match="differ in size"):
        confusion_matrix(np.array([1, 2]), np.array([0]), 4)
    plot_confusion(np.eye(4, dtype=int) * 10, ("a", "b", "c", "d"), tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000


# ------------------------------------------------------------------------------------------- folders
def _npy_folder(root, n=3):
    for i in range(n):
        scan = ring_ordered_scan(seed=i)
        labels = (np.arange(len(scan)) // 50) % 4
        image, _ = project_scan(scan, squeezeseg_front(), labels=labels)
        write_range_npy(root / "lidar_2d" / f"{i:06d}.npy", image)
    (root / "ImageSet").mkdir(parents=True, exist_ok=True)
    (root / "ImageSet" / "train.txt").write_text("000000\n000001\n")
    (root / "ImageSet" / "val.txt").write_text("000002\n")


def _kitti_folder(root, with_point_labels: bool):
    calib = kitti_like_calibration()
    for i in range(2):
        scan = ring_ordered_scan(seed=10 + i)
        write_velodyne(root / "training" / "velodyne" / f"{i:06d}.bin", scan)
        write_calib(root / "training" / "calib" / f"{i:06d}.txt", calib)
        write_labels(root / "training" / "label_2" / f"{i:06d}.txt", synthetic_labels())
        if with_point_labels:
            write_point_labels(root / "training" / "velodyne" / f"{i:06d}.label",
                               np.where(np.arange(len(scan)) % 7 == 0, 4, 10).astype(np.uint16))
    write_image_set(root, "train", ["000000"])


def test_npy_folder_dataset(tmp_path):
    _npy_folder(tmp_path)
    ds = RangeDataset(tmp_path, split="train")
    assert len(ds) == 2 and ds.source.kind == "npy"
    item = ds[0]
    assert item["inputs"].shape == (5, 64, 512) and item["mask"].dtype.is_floating_point is False
    assert set(np.unique(item["labels"].numpy())) <= {0, 1, 2, 3}
    # Normalisation: a valid pixel's x equals (x - 10.88) / 11.47.
    s = ds.sample(0)
    r, c = np.argwhere(s.mask)[0]
    assert item["inputs"][0, r, c].item() == pytest.approx((s.raw[r, c, 0] - 10.88) / 11.47, rel=1e-5)
    assert len(RangeDataset(tmp_path, split="val")) == 1
    with pytest.raises(DataError, match="split list for 'test' not found"):
        RangeDataset(tmp_path, split="test")


def test_a_plain_folder_of_range_images(tmp_path):
    """`.npy` files straight in the folder (a few scans a user gathered, no lidar_2d/): the same samples as in the
    published layout; a split list still applies, and a listed frame that is missing is named."""
    _npy_folder(tmp_path / "published")
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in (tmp_path / "published" / "lidar_2d").iterdir():
        (flat / f.name).write_bytes(f.read_bytes())
    published, plain = RangeDataset(tmp_path / "published"), RangeDataset(flat)
    assert plain.source.kind == "npy" and plain.frame_ids == published.frame_ids == ["000000", "000001", "000002"]
    for i in range(3):
        a, b = published.sample(i), plain.sample(i)
        assert np.array_equal(a.raw, b.raw) and np.array_equal(a.labels, b.labels)
    (flat / "ImageSet").mkdir()
    (flat / "ImageSet" / "val.txt").write_text("000002\n000007\n")
    with pytest.raises(DataError, match="000007.npy: not found: frame 000007"):
        RangeDataset(flat, split="val")


def test_kitti_folder_labels_from_boxes_and_from_label_files(tmp_path):
    _kitti_folder(tmp_path / "a", with_point_labels=False)
    ds = RangeDataset(tmp_path / "a", split="all")
    assert len(ds) == 2 and ds.source.kind == "kitti"
    s = ds.sample(0)
    assert s.pixel_of_point is not None and len(s.point_labels) == len(s.pixel_of_point)
    _kitti_folder(tmp_path / "b", with_point_labels=True)
    ds_b = RangeDataset(tmp_path / "b", split="train")
    s_b = ds_b.sample(0)
    # Point class 4 (van) maps to SqueezeSeg car (1); road (10) to background.
    assert set(np.unique(s_b.point_labels)) == {0, 1}
    assert (s_b.point_labels == 1).sum() == (np.arange(len(s_b.point_labels)) % 7 == 0).sum()


def test_semantic_kitti_folder(tmp_path):
    seq = tmp_path / "sequences" / "08"
    scan = ring_ordered_scan(seed=5)
    write_velodyne(seq / "velodyne" / "000000.bin", scan)
    sem = np.where(np.arange(len(scan)) % 3 == 0, 30, 40).astype(np.uint16)  # person / road
    write_point_labels(seq / "labels" / "000000.label", sem, np.ones(len(scan), np.uint16))
    ds = RangeDataset(tmp_path, split="val")
    assert ds.frame_ids == ["08/000000"]
    s = ds.sample(0)
    assert set(np.unique(s.point_labels)) == {0, 2}
    assert len(RangeDataset(tmp_path, split="all")) == 1
    with pytest.raises(DataError, match="no frames"):
        RangeDataset(tmp_path, split="train")


def test_unknown_folder(tmp_path):
    with pytest.raises(DataError, match="not a range-image folder"):
        RangeDataset(tmp_path)


def test_flip_is_a_mirror_and_does_not_touch_the_input(tmp_path):
    _kitti_folder(tmp_path, with_point_labels=True)
    ds = RangeDataset(tmp_path, split="all")
    s = ds.sample(0)
    before = s.raw.copy()
    f = flip_sample(s)
    np.testing.assert_array_equal(s.raw, before)
    np.testing.assert_array_equal(f.raw[:, ::-1, 0], s.raw[..., 0])
    np.testing.assert_array_equal(f.raw[:, ::-1, 1], -s.raw[..., 1])
    np.testing.assert_array_equal(f.labels[:, ::-1], s.labels)
    # Every point's pixel still holds a point of its own class after the flip.
    shown = f.pixel_of_point >= 0
    np.testing.assert_array_equal(f.mask.ravel()[f.pixel_of_point[shown]], True)
    # Flipping twice is the identity.
    ff = flip_sample(f)
    np.testing.assert_array_equal(ff.raw, s.raw)
    np.testing.assert_array_equal(ff.pixel_of_point, s.pixel_of_point)


def test_augmentation_reproducible_per_seed_epoch_index(tmp_path):
    _kitti_folder(tmp_path, with_point_labels=True)
    cfg = SegDataConfig(flip=True, point_drop=0.2, seed=3)
    a = RangeDataset(tmp_path, split="all", config=cfg, train=True)
    b = RangeDataset(tmp_path, split="all", config=cfg, train=True)
    np.testing.assert_array_equal(a[1]["inputs"], b[1]["inputs"])
    drops = set()
    for epoch in range(4):
        a.set_epoch(epoch)
        drops.add(int(a[1]["mask"].sum()))
    assert len(drops) > 1  # different epochs draw differently
    full = RangeDataset(tmp_path, split="all")[1]["mask"].sum()
    assert all(d < full for d in drops)


def test_stats(tmp_path):
    _npy_folder(tmp_path)
    ds = RangeDataset(tmp_path, split="train")
    st = compute_stats(ds, progress=False)
    valid = np.concatenate([ds.sample(i).raw[ds.sample(i).mask] for i in range(2)])
    np.testing.assert_allclose(st.mean, valid.mean(0), rtol=1e-4)
    np.testing.assert_allclose(st.std, valid.std(0), rtol=1e-3)
    with pytest.raises(ValueError):
        ChannelStats(mean=(0.0,), std=(0.0,))


def test_sensor_pose_jitter_moves_the_scan_rigidly_and_leaves_empty_pixels_alone():
    from squeezeseg.data import RangeSample, jitter_sensor_pose

    rng = np.random.default_rng(0)
    raw = np.zeros((4, 6, 5), np.float32)
    mask = rng.random((4, 6)) > 0.3
    xyz = rng.uniform(-20, 20, (int(mask.sum()), 3)).astype(np.float32)
    raw[mask, :3] = xyz
    raw[mask, 3] = 0.4
    raw[mask, 4] = np.linalg.norm(xyz, axis=1)
    labels = np.where(mask, 1, 0).astype(np.int64)
    sample = RangeSample("f", raw, mask, labels, None, None)
    # height only: every valid point rises by the same dz, |dz| <= 0.1; range recomputed; empties stay 0
    up = jitter_sensor_pose(sample, np.random.default_rng(1), 0.1, 0.0)
    dz = up.raw[mask, 2] - raw[mask, 2]
    assert np.allclose(dz, dz[0], atol=1e-5) and 0 < abs(dz[0]) <= 0.1
    assert np.allclose(up.raw[mask, :2], raw[mask, :2]) and np.all(up.raw[~mask] == 0)
    assert np.allclose(up.raw[mask, 4], np.linalg.norm(up.raw[mask, :3], axis=1), atol=1e-5)
    # angles only: a rotation about the sensor, so ranges and distances between points are unchanged, the
    # points do move, and intensity and labels are untouched
    turned = jitter_sensor_pose(sample, np.random.default_rng(2), 0.0, 2.0)
    p, q = turned.raw[mask, :3], raw[mask, :3]
    assert np.allclose(turned.raw[mask, 4], raw[mask, 4], atol=1e-4)
    assert np.allclose(np.linalg.norm(p[1:] - p[0], axis=1), np.linalg.norm(q[1:] - q[0], axis=1), atol=1e-4)
    assert np.abs(p - q).max() > 0.05 and np.all(turned.raw[mask, 3] == 0.4)
    assert np.array_equal(turned.labels, labels) and raw[mask, 2].tolist() == xyz[:, 2].tolist()  # input untouched


def test_laser_response_jitter_scales_each_ring_and_zeroes_weak_returns():
    from squeezeseg.data import RangeSample, jitter_laser_response

    h, w = 6, 40
    rng = np.random.default_rng(0)
    raw = np.zeros((h, w, 5), np.float32)
    mask = rng.random((h, w)) > 0.2
    raw[mask, :3] = rng.uniform(-20, 20, (int(mask.sum()), 3))
    raw[..., 3] = np.where(mask, np.linspace(0.0, 0.5, w, dtype=np.float32)[None, :], 0.0)
    raw[mask, 4] = np.linalg.norm(raw[mask, :3], axis=1)
    labels = np.where(mask, 2, 0).astype(np.int64)
    sample = RangeSample("f", raw, mask, labels, None, None)
    out = jitter_laser_response(sample, np.random.default_rng(3), 2.0, 0.1)
    assert np.array_equal(out.raw[..., [0, 1, 2, 4]], raw[..., [0, 1, 2, 4]]) and out.labels is labels
    assert np.all(out.raw[~mask, 3] == 0) and np.array_equal(out.mask, mask)
    ratios = []
    for r in range(h):
        kept = mask[r] & (out.raw[r, :, 3] > 0)
        ratio = out.raw[r, kept, 3] / raw[r, kept, 3]
        assert np.allclose(ratio, ratio[0], rtol=1e-5)  # one gain per laser
        assert 0.5 - 1e-6 <= ratio[0] <= 2.0 + 1e-6
        ratios.append(ratio[0])
        zeroed = mask[r] & (out.raw[r, :, 3] == 0)
        # a floor: every zeroed return was weaker (after the gain) than every one kept, and it is at most 0.1
        if zeroed.any():
            assert (raw[r, zeroed, 3] * ratio[0]).max() < (raw[r, kept, 3] * ratio[0]).min()
            assert (raw[r, zeroed, 3] * ratio[0]).max() < 0.1
    assert np.ptp(ratios) > 0.1  # the lasers differ
    assert raw[mask, 3].max() == np.float32(0.5)  # input untouched
    same = jitter_laser_response(sample, np.random.default_rng(3), 1.0, 0.0)
    assert np.array_equal(same.raw, raw)
    with pytest.raises(ValueError):
        jitter_laser_response(sample, rng, 0.5, 0.0)


def test_laser_response_jitter_applies_in_training_only_and_survives_the_checkpoint(tmp_path):
    from domain_adapt.train import target_dataset
    from squeezeseg.predict import data_config_from_dict, data_config_to_dict

    _npy_folder(tmp_path)
    cfg = SegDataConfig(intensity_jitter=(2.0, 0.2), pose_jitter=(0.1, 1.0), seed=1)
    plain = RangeDataset(tmp_path, "train", cfg).sample(0)
    jittered = RangeDataset(tmp_path, "train", cfg, train=True).sample(0, augment=True)
    assert not np.allclose(jittered.raw[..., 3], plain.raw[..., 3])
    # real target scans keep their own intensities and pose
    target = target_dataset(tmp_path, cfg, "train").sample(0, augment=True)
    assert target.raw[..., 3].tolist() in (plain.raw[..., 3].tolist(), plain.raw[:, ::-1, 3].tolist())
    back = data_config_from_dict(data_config_to_dict(cfg))
    assert (back.intensity_jitter, back.pose_jitter) == ((2.0, 0.2), (0.1, 1.0))


def test_points_of_pixels_by_hand():
    from squeeze.predictor import Segmentation
    from squeeze.segmentation import points_of_pixels

    pixels = Segmentation(np.array([[0, 2, 1], [3, 1, 0]], np.int64),
                          np.array([[0.5, 0.9, 0.8], [0.7, 0.6, 0.4]], np.float32))
    # points: pixel 1 (row 0, col 1), outside, pixel 3 (row 1, col 0), pixel 1 again (a hidden point), pixel 5
    seg, in_view = points_of_pixels(pixels, np.array([1, -1, 3, 1, 5]))
    assert seg.labels.tolist() == [2, 0, 3, 2, 0] and seg.labels.dtype == np.int64
    np.testing.assert_array_equal(seg.scores, np.float32([0.9, 0, 0.7, 0.9, 0.4]))
    assert in_view.tolist() == [True, False, True, True, True]
    empty, none_in_view = points_of_pixels(pixels, np.zeros(0, np.int64))
    assert empty.labels.shape == (0,) and empty.scores.shape == (0,) and none_in_view.shape == (0,)
    with pytest.raises(ValueError, match="pixel_of_point holds pixel 6 of an image of 6 pixels"):
        points_of_pixels(pixels, np.array([0, 6]))


def test_labels_and_scores_by_hand():
    """Argmax with numpy's tie rule (the first class), softmax of the winner, 0 and 0 on empty pixels, and no
    overflow for huge logits (SqueezeSegV2's reach 150)."""
    from squeeze.segmentation import labels_and_scores

    logits = np.zeros((3, 1, 4), np.float32)
    logits[:, 0, 0] = (0.0, 1.0, 0.0)  # class 1: e / (e + 2)
    logits[:, 0, 1] = (2.0, 2.0, 0.0)  # tie of 0 and 1: class 0, e^2 / (2 e^2 + 1)
    logits[:, 0, 2] = (150.0, -150.0, 149.0)  # class 0: 1 / (1 + e^-1)
    logits[:, 0, 3] = (0.0, 0.0, 5.0)  # an empty pixel
    mask = np.array([[True, True, True, False]])
    seg = labels_and_scores(logits, mask)
    assert seg.labels.tolist() == [[1, 0, 0, 0]] and seg.labels.dtype == np.int64
    e = math.e
    np.testing.assert_allclose(seg.scores[0], [e / (e + 2), e**2 / (2 * e**2 + 1), 1 / (1 + math.exp(-1)), 0.0],
                               rtol=3e-7, atol=0)
    assert seg.scores.dtype == np.float32
    with pytest.raises(ValueError, match=r"expected logits \(K, H, W\) and mask \(H, W\)"):
        labels_and_scores(logits[:, 0], mask)
