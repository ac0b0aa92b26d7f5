"""latte.scene: KITTI object folders (and the simulator's pose/objects), KITTI raw drives through pykitti."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from latte.scene import FrameSource, KittiObjectSource, RawDriveSource, UnknownFrameError, open_source
from squeeze.errors import DataError, LabelError
from squeeze.kitti import Calibration, write_calib, write_image, write_velodyne

# A calibration one can compute with by hand: the camera sits at the velodyne origin, axes permuted
# (camera x = -velodyne y, camera y = -velodyne z, camera z = velodyne x), f = 700 px, principal point (600, 180).
P = np.array([[700.0, 0, 600, 0], [0, 700, 180, 0], [0, 0, 1, 0]])
AXES = np.array([[0.0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]])
CALIB = Calibration(P0=P, P1=P, P2=P, P3=P, R0_rect=np.eye(3), Tr_velo_to_cam=AXES,
                    Tr_imu_to_velo=np.hstack([np.eye(3), np.zeros((3, 1))]))


def _points(seed: int, n: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-5, 5, (n, 4)).astype(np.float32)


def write_object_folder(root: Path, ids=("000000", "000001"), labels: str | None = None) -> Path:
    """ROOT/training/{velodyne,calib,image_2,label_2,pose,objects} for `ids` (frame k's points seeded by k)."""
    tr = root / "training"
    for k, fid in enumerate(ids):
        write_velodyne(tr / "velodyne" / f"{fid}.bin", _points(k))
        write_calib(tr / "calib" / f"{fid}.txt", CALIB)
        image = np.zeros((360, 1200, 3), np.uint8)
        image[10, 20] = (255, 0, 0)  # red in RGB
        write_image(tr / "image_2" / f"{fid}.png", image)
    (tr / "label_2").mkdir(parents=True)
    (tr / "label_2" / f"{ids[0]}.txt").write_text(labels if labels is not None else (
        "Car 0.00 0 -1.67 500.00 150.00 700.00 250.00 1.50 1.60 3.90 1.00 1.50 10.00 0.00\n"
        "DontCare -1 -1 -10 10.00 20.00 30.00 40.00 -1 -1 -1 -1000 -1000 -1000 -10\n"
        "Pedestrian 0.00 1 0.10 300.00 150.00 320.00 230.00 1.80 0.60 0.80 -2.00 1.60 12.00 1.57\n"))
    (tr / "pose").mkdir()
    # frame 1: turned 90 degrees left and 2 m along world x
    (tr / "pose" / f"{ids[1]}.txt").write_text("0 -1 0 2  1 0 0 0  0 0 1 1.73\n")
    (tr / "objects").mkdir()
    (tr / "objects" / f"{ids[0]}.txt").write_text(
        "7 Car 10.0000 -1.0000 -0.7500 3.9000 1.6000 1.5000 -1.5708 1.0 0.0 1 0\n"
        "12 Pedestrian -20.0000 3.0000 -0.8000 0.8000 0.6000 1.8000 0.0000 0.0 0.0 0 -1\n")
    return root


def test_object_folder_reads_each_part(tmp_path):
    src = open_source(write_object_folder(tmp_path / "data"))
    assert isinstance(src, KittiObjectSource) and isinstance(src, FrameSource)
    assert src.name == "data" and src.frame_ids() == ["000000", "000001"]
    np.testing.assert_array_equal(src.points("000001"), _points(1))
    image = src.image("000000")
    assert image.shape == (360, 1200, 3) and tuple(image[10, 20]) == (255, 0, 0)
    np.testing.assert_allclose(src.calib("000000").P2, P)
    assert src.pose("000000") is None  # no pose file for frame 0
    np.testing.assert_allclose(src.pose("000001"), [[0, -1, 0, 2], [1, 0, 0, 0], [0, 0, 1, 1.73], [0, 0, 0, 1]])
    assert src.timestamp("000000") == 0.0 and src.timestamp("000001") == pytest.approx(0.1)
    assert src.labels("000001") == [] and src.truth("000001") == []


def test_labels_become_velodyne_boxes_by_hand(tmp_path):
    src = open_source(write_object_folder(tmp_path / "data"))
    car, ped = src.labels("000000")  # DontCare skipped
    # Car: bottom centre (1, 1.5, 10) in the camera -> velodyne (10, -1, -1.5), raised by h/2 = 0.75 to the centre;
    # ry = 0 points the length along camera +x = velodyne -y: yaw = -pi/2.
    assert (car.id, car.cls, car.source, car.accepted, car.track_id) == ("imp-0", "Car", "imported", True, -1)
    np.testing.assert_allclose(car.array, [10, -1, -0.75, 3.9, 1.6, 1.5, -math.pi / 2], atol=1e-9)
    # Pedestrian: (-2, 1.6, 12) -> (12, 2, -1.6 + 0.9). Its heading (cos ry, 0, -sin ry) in the camera is
    # (-sin ry, -cos ry) in velodyne x, y.
    assert ped.id == "imp-1" and ped.cls == "Pedestrian"
    np.testing.assert_allclose(ped.array[:6], [12, 2, -0.7, 0.8, 0.6, 1.8], atol=1e-9)
    assert ped.yaw == pytest.approx(math.atan2(-math.cos(1.57), -math.sin(1.57)), abs=1e-9)


def test_truth_is_the_objects_file(tmp_path):
    src = open_source(write_object_folder(tmp_path / "data"))
    car, ped = src.truth("000000")
    assert (car.id, car.cls, car.track_id, car.source) == ("obj-7", "Car", 7, "imported")
    np.testing.assert_allclose(car.array, [10, -1, -0.75, 3.9, 1.6, 1.5, -1.5708])
    assert ped.track_id == 12 and ped.x == -20.0


def test_split_level_folder_and_frame_rate(tmp_path):
    root = write_object_folder(tmp_path / "sim", ids=("000003", "000001", "000002"))
    (root / "sim_config.json").write_text('{"frame_rate_hz": 20}')
    src = open_source(root / "training")  # the split folder itself holds velodyne/
    assert src.name == "sim" and src.frame_ids() == ["000001", "000002", "000003"]
    assert src.timestamp("000003") == pytest.approx(0.1)  # index 2 at 20 Hz


def test_unknown_and_hostile_frame_ids(tmp_path):
    src = open_source(write_object_folder(tmp_path / "data"))
    with pytest.raises(UnknownFrameError, match="no frame '000009'") as err:
        src.points("000009")
    assert isinstance(err.value, KeyError) and isinstance(err.value, DataError)
    for bad in ("../training/velodyne/000000", "/etc/passwd", "..", "", "a\0b"):
        with pytest.raises(UnknownFrameError, match="frame id"):
            src.points(bad)
    with pytest.raises(DataError):
        src.labels(7)  # type: ignore[arg-type]


def test_open_source_refuses_other_folders(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_source(tmp_path / "missing")
    (tmp_path / "file.bin").write_bytes(b"")
    with pytest.raises(DataError, match="is not a folder"):
        open_source(tmp_path / "file.bin")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: neither a KITTI object folder"):
        open_source(tmp_path / "empty")
    with pytest.raises(DataError, match="not a KITTI object folder"):
        KittiObjectSource(tmp_path / "empty")
    (tmp_path / "empty" / "velodyne").mkdir()
    with pytest.raises(DataError, match=r"velodyne: holds no scans"):
        open_source(tmp_path / "empty")


def test_bad_pose_objects_and_labels_name_the_file(tmp_path):
    root = write_object_folder(tmp_path / "data")
    src = open_source(root)
    pose = root / "training" / "pose" / "000001.txt"
    pose.write_text("1 0 0 0 0 1 0 0 0 0 1\n")
    with pytest.raises(DataError, match=r"000001\.txt: expected 12 finite numbers"):
        src.pose("000001")
    pose.write_text("2 0 0 0 0 1 0 0 0 0 1 0\n")
    with pytest.raises(DataError, match="not a rotation"):
        src.pose("000001")
    objects = root / "training" / "objects" / "000000.txt"
    objects.write_text("7 Car 1 2 3\n")
    with pytest.raises(LabelError, match="line 1: expected 13 fields"):
        src.truth("000000")
    objects.write_text("7 Bus 1 2 3 4 1 1 0 0 0 1 0\n")
    with pytest.raises(LabelError, match="class 'Bus'"):
        src.truth("000000")
    (root / "training" / "label_2" / "000000.txt").write_text(
        "Car 0.00 0 0 1 1 2 2 1.5 1.6 0.0 1 1.5 10 0\n")
    with pytest.raises(LabelError, match=r"size \[1.5, 1.6, 0.0\] is not > 0"):
        src.labels("000000")
    (root / "training" / "calib" / "000000.txt").unlink()
    with pytest.raises(DataError, match="need its calibration"):
        src.labels("000000")


# ------------------------------------------------------------------------------------------------ raw drive
DATE = "2011_09_26"
VELO_FROM_IMU_T = np.array([-0.8, 0.3, -0.9])


def _oxts_line(yaw: float, alt: float) -> str:
    # lat lon alt roll pitch yaw vn ve vf vl vu ax ay az af al au wx wy wz wf wl wu pos_acc vel_acc + 5 flags
    values = [49.0, 8.4, alt, 0.0, 0.0, yaw] + [0.0] * 19
    return " ".join(f"{v:.10f}" for v in values) + " 4 10 4 4 4\n"


def write_raw_drive(base: Path, frames: int = 2) -> Path:
    """A tiny pykitti-layout drive: BASE/DATE/calib_*.txt and BASE/DATE/DATE_drive_0001_sync/..."""
    day = base / DATE
    day.mkdir(parents=True)
    p2 = "700 0 600 44 0 700 180 0.3 0 0 1 0.003"
    eye = "1 0 0 0 1 0 0 0 1"
    (day / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\n"
        + "".join(f"R_rect_0{i}: {eye}\n" for i in range(4))
        + "P_rect_00: 700 0 600 0 0 700 180 0 0 0 1 0\nP_rect_01: 700 0 600 -380 0 700 180 0 0 0 1 0\n"
        + f"P_rect_02: {p2}\nP_rect_03: 700 0 600 -340 0 700 180 0 0 0 1 0\n")
    (day / "calib_velo_to_cam.txt").write_text("R: 0 -1 0 0 0 -1 1 0 0\nT: 0.0 -0.08 -0.27\n")
    (day / "calib_imu_to_velo.txt").write_text(f"R: {eye}\nT: {' '.join(map(str, VELO_FROM_IMU_T))}\n")
    drive = day / f"{DATE}_drive_0001_sync"
    stamps = []
    for k in range(frames):
        name = f"{k:010d}"
        write_velodyne(drive / "velodyne_points" / "data" / f"{name}.bin", _points(10 + k))
        image = np.zeros((8, 12, 3), np.uint8)
        image[1, 2] = (0, 0, 255)
        write_image(drive / "image_02" / "data" / f"{name}.png", image)
        (drive / "oxts" / "data").mkdir(parents=True, exist_ok=True)
        # frame 1: turned 90 degrees left and 1 m higher than frame 0
        (drive / "oxts" / "data" / f"{name}.txt").write_text(_oxts_line(k * math.pi / 2, 100.0 + k))
        stamps.append(f"{DATE.replace('_', '-')} 13:02:25.{64389445 + k * 100000000:09d}\n")  # 10 Hz, ns digits
    (drive / "oxts" / "timestamps.txt").write_text("".join(stamps))
    return drive


def test_raw_drive_points_image_calib_poses_times(tmp_path):
    src = open_source(write_raw_drive(tmp_path))
    assert isinstance(src, RawDriveSource) and isinstance(src, FrameSource)
    assert src.name == f"{DATE}_drive_0001_sync" and src.frame_ids() == ["0000000000", "0000000001"]
    np.testing.assert_array_equal(src.points("0000000001"), _points(11))
    assert tuple(src.image("0000000000")[1, 2]) == (0, 0, 255)
    calib = src.calib("0000000001")
    np.testing.assert_allclose(calib.P2, np.array([float(v) for v in "700 0 600 44 0 700 180 0.3 0 0 1 0.003".split()])
                               .reshape(3, 4))
    np.testing.assert_allclose(calib.Tr_velo_to_cam, [[0, -1, 0, 0], [0, 0, -1, -0.08], [1, 0, 0, -0.27]])
    # world_from_velo = T_w_imu @ inv(T_velo_imu); T_velo_imu translates by VELO_FROM_IMU_T, so its inverse by
    # (0.8, -0.3, 0.9). Frame 0: OXTS origin, no turn. Frame 1: yaw 90 deg (x -> y, y -> -x), 1 m up.
    np.testing.assert_allclose(src.pose("0000000000"), [[1, 0, 0, 0.8], [0, 1, 0, -0.3], [0, 0, 1, 0.9],
                                                        [0, 0, 0, 1]], atol=1e-9)
    np.testing.assert_allclose(src.pose("0000000001"), [[0, -1, 0, 0.3], [1, 0, 0, 0.8], [0, 0, 1, 1.9],
                                                        [0, 0, 0, 1]], atol=1e-6)
    assert src.timestamp("0000000000") == 0.0 and src.timestamp("0000000001") == pytest.approx(0.1, abs=1e-6)
    assert src.labels("0000000000") == [] and src.truth("0000000001") == []
    with pytest.raises(UnknownFrameError):
        src.pose("0000000002")


def test_raw_drive_without_image_or_calibration(tmp_path):
    drive = write_raw_drive(tmp_path)
    (drive / "image_02" / "data" / "0000000001.png").unlink()
    src = open_source(drive)
    assert src.image("0000000001") is None and src.image("0000000000") is not None
    (tmp_path / DATE / "calib_imu_to_velo.txt").unlink()
    with pytest.raises(DataError, match="calib_imu_to_velo.txt"):
        open_source(drive)


def test_raw_drive_folder_checks(tmp_path):
    bad = tmp_path / "2011_09_26" / "2011_09_27_drive_0001_sync"  # date folder does not match
    (bad / "velodyne_points" / "data").mkdir(parents=True)
    with pytest.raises(DataError, match="not a KITTI raw drive folder"):
        open_source(bad)
    drive = write_raw_drive(tmp_path / "b")
    (drive / "oxts" / "timestamps.txt").unlink()
    with pytest.raises(DataError, match="pykitti could not read the drive"):
        open_source(drive)
