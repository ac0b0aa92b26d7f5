"""KITTI I/O: round trips (byte-exact on real frames), typed errors on bad input, fuzzed parsers."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squeeze.errors import CalibrationError, DataError, LabelError, ScanError
from squeeze.kitti import (
    KittiObjectFolder,
    ObjectLabels,
    format_calib,
    format_labels,
    open_raw_drive,
    parse_calib,
    parse_labels,
    parse_velodyne,
    read_calib,
    read_labels,
    read_point_labels,
    read_velodyne,
    write_calib,
    write_image,
    write_image_set,
    write_labels,
    write_point_labels,
    write_velodyne,
)
from tests.conftest import kitti_like_calibration, synthetic_labels


# ------------------------------------------------------------------------------------------- real frames
def test_labels_round_trip_byte_exact_on_real_frames(kitti_mini, tmp_path):
    for path in sorted((kitti_mini / "training" / "label_2").glob("*.txt")):
        labels = read_labels(path)
        out = tmp_path / path.name
        write_labels(out, labels)
        assert out.read_bytes() == path.read_bytes(), path.name


def test_calib_round_trip_byte_exact_on_real_frames(kitti_mini, tmp_path):
    for path in sorted((kitti_mini / "training" / "calib").glob("*.txt")):
        calib = read_calib(path)
        assert calib.P2.shape == (3, 4) and calib.R0_rect.shape == (3, 3)
        out = tmp_path / path.name
        write_calib(out, calib)
        assert out.read_bytes() == path.read_bytes(), path.name


def test_velodyne_round_trip_byte_exact_on_real_frames(kitti_mini, tmp_path):
    path = kitti_mini / "training" / "velodyne" / "000000.bin"
    points = read_velodyne(path)
    assert points.shape == (115384, 4) and points.dtype == np.float32
    write_velodyne(tmp_path / "a.bin", points)
    assert (tmp_path / "a.bin").read_bytes() == path.read_bytes()


def test_real_label_values(kitti_mini):
    labels = read_labels(kitti_mini / "training" / "label_2" / "000001.txt")
    assert list(labels.type[:4]) == ["Truck", "Car", "Cyclist", "DontCare"]
    np.testing.assert_allclose(labels.bbox[1], [387.63, 181.54, 423.81, 203.12])
    np.testing.assert_allclose(labels.location[1], [-16.53, 2.39, 58.49])
    assert labels.occluded[2] == 3 and labels.score is None


def test_object_folder_loads_frames(kitti_mini):
    folder = KittiObjectFolder(kitti_mini)
    assert folder.frame_ids == ["000000", "000001", "000002"]
    frame = folder.load("000002")
    assert frame.image.shape[2] == 3 and frame.image.dtype == np.uint8
    assert frame.points.shape[1] == 4 and len(frame.labels) == 2


# ------------------------------------------------------------------------------------------- synthetic
def test_labels_round_trip_synthetic(tmp_path):
    labels = synthetic_labels()
    write_labels(tmp_path / "l.txt", labels)
    text = (tmp_path / "l.txt").read_text()
    assert text.splitlines()[2] == "DontCare -1 -1 -10 10.00 20.00 30.00 40.00 -1 -1 -1 -1000 -1000 -1000 -10"
    assert text.splitlines()[0] == "Car 0.00 0 -1.57 100.00 150.00 300.00 250.00 1.50 1.60 3.90 -3.00 1.70 20.00 -1.60"
    back = read_labels(tmp_path / "l.txt")
    np.testing.assert_array_equal(back.bbox, labels.bbox)
    np.testing.assert_array_equal(back.type, labels.type)
    assert format_labels(back) == text


def test_results_with_score(tmp_path):
    labels = synthetic_labels()
    labels.score = np.array([0.9, 0.25, 0.0])
    write_labels(tmp_path / "r.txt", labels)
    back = read_labels(tmp_path / "r.txt")
    np.testing.assert_allclose(back.score, [0.9, 0.25, 0.0])
    assert len((tmp_path / "r.txt").read_text().splitlines()[0].split()) == 16


def test_empty_label_file(tmp_path):
    (tmp_path / "e.txt").write_text("")
    labels = read_labels(tmp_path / "e.txt")
    assert len(labels) == 0 and labels.bbox.shape == (0, 4) and labels.boxes3d.shape == (0, 7)


def test_point_labels_round_trip(tmp_path):
    sem = np.array([0, 1, 2, 3, 65535], np.uint16)
    inst = np.array([0, 7, 7, 1, 2], np.uint16)
    write_point_labels(tmp_path / "p.label", sem, inst)
    raw = np.fromfile(tmp_path / "p.label", dtype="<u4")
    assert raw[1] == (7 << 16) | 1
    s, i = read_point_labels(tmp_path / "p.label", n_points=5)
    np.testing.assert_array_equal(s, sem)
    np.testing.assert_array_equal(i, inst)
    with pytest.raises(LabelError, match="5 point labels for a scan of 4 points"):
        read_point_labels(tmp_path / "p.label", n_points=4)


def test_synthetic_folder(tmp_path):
    root = tmp_path / "kitti"
    rng = np.random.default_rng(0)
    for fid in ("000000", "000001"):
        write_velodyne(root / "training" / "velodyne" / f"{fid}.bin", rng.normal(size=(100, 4)).astype(np.float32))
        write_calib(root / "training" / "calib" / f"{fid}.txt", kitti_like_calibration())
        write_labels(root / "training" / "label_2" / f"{fid}.txt", synthetic_labels())
        write_image(root / "training" / "image_2" / f"{fid}.png", np.zeros((8, 16, 3), np.uint8))
    write_image_set(root, "val", ["000001"])
    folder = KittiObjectFolder(root, image_set="val")
    assert folder.frame_ids == ["000001"]
    frame = folder.load("000001")
    assert frame.points.shape == (100, 4) and frame.image.shape == (8, 16, 3) and len(frame.labels) == 3
    np.testing.assert_allclose(frame.calib.P2, kitti_like_calibration().P2)
    with pytest.raises(DataError, match="image-set list not found"):
        KittiObjectFolder(root, image_set="train")
    with pytest.raises(DataError, match="not a directory"):
        KittiObjectFolder(tmp_path / "nowhere")


def test_writes_are_atomic_and_leave_no_temporaries(tmp_path):
    write_labels(tmp_path / "l.txt", synthetic_labels())
    assert os.listdir(tmp_path) == ["l.txt"]


def test_raw_drive_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="raw drive folder not found"):
        open_raw_drive(tmp_path, "2011_09_26", "0001")


# ------------------------------------------------------------------------------------------- bad input
def test_bin_size_not_multiple_of_16(tmp_path):
    (tmp_path / "bad.bin").write_bytes(b"\0" * 20)
    with pytest.raises(ScanError, match=r"bad\.bin: size 20 bytes is not a multiple of 16"):
        read_velodyne(tmp_path / "bad.bin")


def test_empty_scan(tmp_path):
    (tmp_path / "e.bin").write_bytes(b"")
    with pytest.raises(ScanError, match="empty scan"):
        read_velodyne(tmp_path / "e.bin")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_coordinates(tmp_path, bad):
    pts = np.zeros((10, 4), np.float32)
    pts[7, 1] = bad
    (tmp_path / "n.bin").write_bytes(pts.tobytes())
    with pytest.raises(ScanError, match="1 points with NaN/inf coordinates \\(first at index 7\\)"):
        read_velodyne(tmp_path / "n.bin")


def test_label_wrong_field_count(tmp_path):
    (tmp_path / "l.txt").write_text("Car 0.00 0 -1.57 100 150 300 250 1.5 1.6 3.9 -3 1.7 20\n")
    with pytest.raises(LabelError, match=r"l\.txt: line 1: expected 15 fields \(16 with score\), got 14"):
        read_labels(tmp_path / "l.txt")


def test_label_non_numeric_field(tmp_path):
    (tmp_path / "l.txt").write_text("Car 0.00 0 -1.57 100 150 abc 250 1.5 1.6 3.9 -3 1.7 20 0.1\n")
    with pytest.raises(LabelError, match=r"line 1, field 7: non-numeric value 'abc'"):
        read_labels(tmp_path / "l.txt")


def test_label_mixed_field_counts(tmp_path):
    line = "Car 0.00 0 -1.57 100 150 300 250 1.5 1.6 3.9 -3 1.7 20 0.1"
    (tmp_path / "l.txt").write_text(f"{line}\n{line} 0.9\n")
    with pytest.raises(LabelError, match="line 2: 16 fields, but earlier lines have 15"):
        read_labels(tmp_path / "l.txt")


def test_label_nan_and_fractional_occlusion(tmp_path):
    (tmp_path / "a.txt").write_text("Car 0.00 0 nan 100 150 300 250 1.5 1.6 3.9 -3 1.7 20 0.1\n")
    with pytest.raises(LabelError, match="NaN or infinite"):
        read_labels(tmp_path / "a.txt")
    (tmp_path / "b.txt").write_text("Car 0.00 0.5 0 100 150 300 250 1.5 1.6 3.9 -3 1.7 20 0.1\n")
    with pytest.raises(LabelError, match="occluded"):
        read_labels(tmp_path / "b.txt")


def test_calib_missing_key(tmp_path):
    text = format_calib(kitti_like_calibration())
    (tmp_path / "c.txt").write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("Tr_velo_to_cam")))
    with pytest.raises(CalibrationError, match=r"c\.txt: missing key 'Tr_velo_to_cam'"):
        read_calib(tmp_path / "c.txt")


def test_calib_wrong_size_and_garbage(tmp_path):
    (tmp_path / "c.txt").write_text(format_calib(kitti_like_calibration()).replace("R0_rect: ", "R0_rect: 1 "))
    with pytest.raises(CalibrationError, match="R0_rect: expected 9 numbers"):
        read_calib(tmp_path / "c.txt")
    with pytest.raises(CalibrationError, match="P2: expected 12 numbers"):  # found by hypothesis: P2 empty, P0 absent
        parse_calib("P2: \nR0_rect: \nTr_velo_to_cam: ")
    with pytest.raises(CalibrationError, match="expected 'KEY: numbers'"):
        parse_calib("hello world\n")


def test_binary_label_file(tmp_path):
    (tmp_path / "l.txt").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(LabelError, match="not a text file"):
        read_labels(tmp_path / "l.txt")


# ------------------------------------------------------------------------------------------- fuzzing
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=200))
def test_fuzz_velodyne(data):
    try:
        points = parse_velodyne(data)
    except ScanError:
        return
    assert points.shape == (len(data) // 16, 4) and np.isfinite(points).all()


_token = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=6),
                   st.integers(-5, 5).map(str), st.sampled_from(["Car", "DontCare", "-1000", "1e400", "", "nan"]))


@_FUZZ
@given(st.lists(st.lists(_token, min_size=0, max_size=18).map(" ".join), max_size=4).map("\n".join))
def test_fuzz_labels(text):
    try:
        labels = parse_labels(text)
    except LabelError:
        return
    assert isinstance(labels, ObjectLabels)
    assert labels.bbox.shape == (len(labels), 4) and np.isfinite(labels.bbox).all()


@_FUZZ
@given(st.lists(st.tuples(st.sampled_from(["P0", "P2", "R0_rect", "Tr_velo_to_cam", "X", ""]),
                          st.lists(_token, max_size=13).map(" ".join)), max_size=5)
       .map(lambda kv: "\n".join(f"{k}: {v}" for k, v in kv)))
def test_fuzz_calib(text):
    try:
        calib = parse_calib(text)
    except CalibrationError:
        return
    assert calib.P2.shape == (3, 4) and np.isfinite(calib.velo_to_rect).all()


@_FUZZ
@given(st.text(max_size=300))
def test_fuzz_calib_free_text(text):
    try:
        parse_calib(text)
    except CalibrationError:
        pass


def _write_raw_drive(base, date="2011_09_26", drive="0005", n=2):
    """A tiny raw drive in pykitti's layout: calib files, oxts packets with timestamps, velodyne scans."""
    day = base / date
    folder = day / f"{date}_drive_{drive}_sync"
    p = "7.215377e+02 0 6.095593e+02 {} 0 7.215377e+02 1.728540e+02 0 0 0 1 0"
    cam = ["calib_time: 09-Jan-2012 13:57:47"]
    for i, tx in enumerate(["0", "-3.875744e+02", "4.485728e+01", "-3.395242e+02"]):
        cam += [f"P_rect_0{i}: {p.format(tx)}", f"R_rect_0{i}: 1 0 0 0 1 0 0 0 1"]
    (day).mkdir(parents=True)
    (day / "calib_cam_to_cam.txt").write_text("\n".join(cam) + "\n")
    (day / "calib_velo_to_cam.txt").write_text(
        "calib_time: 15-Mar-2012 11:37:16\nR: 0 -1 0 0 0 -1 1 0 0\nT: -0.004 -0.076 -0.27\n")
    (day / "calib_imu_to_velo.txt").write_text(
        "calib_time: 25-May-2012 16:47:16\nR: 1 0 0 0 1 0 0 0 1\nT: -0.81 0.32 -0.8\n")
    (folder / "oxts" / "data").mkdir(parents=True)
    stamps = []
    for i in range(n):
        packet = [49.0 + i * 1e-5, 8.4, 116.0, 0.0, 0.0, 0.1] + [0.0] * 19 + [4, 10, 4, 4, 0]
        (folder / "oxts" / "data" / f"{i:010d}.txt").write_text(" ".join(str(v) for v in packet) + "\n")
        stamps.append(f"2011-09-26 13:02:25.{i:09d}")
        write_velodyne(folder / "velodyne_points" / "data" / f"{i:010d}.bin",
                       np.array([[10.0 + i, 0, 0, 0.5]], np.float32))
    (folder / "oxts" / "timestamps.txt").write_text("\n".join(stamps) + "\n")
    return date, drive


def test_raw_drive_through_pykitti(tmp_path):
    from squeeze.geometry import velo_to_image
    from squeeze.kitti import raw_drive_calibration

    date, drive = _write_raw_drive(tmp_path)
    raw = open_raw_drive(tmp_path, date, drive)
    assert len(raw) == 2
    np.testing.assert_allclose(raw.get_velo(1)[0], [11.0, 0, 0, 0.5])
    poses = [o.T_w_imu for o in raw.oxts]
    assert poses[1][0, 3] > poses[0][0, 3] or poses[1][1, 3] != poses[0][1, 3]  # the car moved north
    calib = raw_drive_calibration(raw)
    # A point 10 m straight ahead of the velodyne projects near the principal point of camera 2.
    uv, depth = velo_to_image(np.array([[10.0, 0.0, 0.0]]), calib)
    # Camera frame: X = -0.004, Z = 10 - 0.27; u = (fx X + cx Z + tx) / Z with P_rect_02's tx = 44.857.
    assert depth[0] == pytest.approx(9.73, abs=1e-9)
    assert uv[0, 0] == pytest.approx((721.5377 * -0.004 + 609.5593 * 9.73 + 44.85728) / 9.73, abs=1e-6)
    with pytest.raises(CalibrationError, match="calib_imu_to_velo.txt"):
        (tmp_path / date / "calib_imu_to_velo.txt").unlink()
        open_raw_drive(tmp_path, date, drive)
