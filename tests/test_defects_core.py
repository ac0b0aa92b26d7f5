"""Regression tests for the core library defects of issue 10, section 3 (each failed on the code before the fix)."""

from __future__ import annotations

import os
import stat
import time

import numpy as np
import pytest

from squeeze.atomic import DEAD_WRITER_AGE_S, STALE_AGE_S, atomic_write, atomic_write_bytes, temp_name


# ------------------------------------------------------------------------------------------ atomic writes
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "a.bin").st_mode) == mode


def test_an_os_error_names_the_target_not_the_temporary_file(tmp_path):
    (tmp_path / "taken").mkdir()  # a folder where the file should go: the rename fails
    with pytest.raises(IsADirectoryError) as info:
        atomic_write_bytes(tmp_path / "taken", b"x")
    assert info.value.filename == str(tmp_path / "taken") and ".tmp" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["taken"]  # no temporary file left behind

    def disk_full(f):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=r"No space left on device: '.*out\.pt'") as info:
        atomic_write(tmp_path / "out.pt", disk_full)
    assert info.value.errno == 28 and sorted(os.listdir(tmp_path)) == ["taken"]


def test_stale_temporary_files_of_ours_are_removed_on_the_next_write(tmp_path):
    now = time.time()
    old = tmp_path / temp_name("last.pt")  # a write killed long ago
    fresh = tmp_path / temp_name("best.pt")  # a write that may be running now (this process)
    dead = tmp_path / ".metrics.csv.squeeze-{}-{}-0123abcd.tmp".format(temp_name("x").split("-")[1], 2**22 + 12345)
    foreign = tmp_path / ".last.pt.abcd1234.tmp"  # not our pattern (e.g. another tool's): never touched
    for p in (old, fresh, dead, foreign):
        p.write_bytes(b"partial")
    os.utime(old, (now - STALE_AGE_S - 5, now - STALE_AGE_S - 5))
    os.utime(dead, (now - DEAD_WRITER_AGE_S - 5, now - DEAD_WRITER_AGE_S - 5))  # pid 4206649 does not run
    os.utime(foreign, (now - 10 * STALE_AGE_S, now - 10 * STALE_AGE_S))
    atomic_write_bytes(tmp_path / "new.txt", b"x")
    assert sorted(os.listdir(tmp_path)) == sorted([fresh.name, foreign.name, "new.txt"])


# ------------------------------------------------------------------------------------------ frame ids
def _tiny_kitti(root, ids=("000000", "000001"), labels=True, images=True):
    from squeeze.kitti import ObjectLabels, write_image, write_labels, write_velodyne

    for fid in ids:
        write_velodyne(root / "training" / "velodyne" / f"{fid}.bin", np.array([[10, 0, 0, 0.5]], np.float32))
        if images:
            write_image(root / "training" / "image_2" / f"{fid}.png", np.zeros((8, 16, 3), np.uint8))
        if labels:
            write_labels(root / "training" / "label_2" / f"{fid}.txt", ObjectLabels())
    return root


@pytest.mark.parametrize("bad", ["../../../X", "a/b", "..", ".", "/etc/passwd", "a\\b", "x\0y"])
def test_image_set_ids_must_be_plain_names(tmp_path, bad):
    from squeeze.errors import DataError
    from squeeze.kitti import KittiObjectFolder

    root = _tiny_kitti(tmp_path / "kitti")
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "val.txt").write_text(f"000000\n\n{bad}\n")
    with pytest.raises(DataError, match=r"ImageSets/val\.txt: line 3: frame id .* frame ids must be plain file names"):
        KittiObjectFolder(root, image_set="val")
    folder = KittiObjectFolder(root)  # ids given directly (`show --frames`) are checked where they become paths
    with pytest.raises(DataError, match="must be plain file names"):
        folder.load(bad)


def test_det_eval_ids_cannot_escape_the_output_folder(tmp_path):
    from squeeze.errors import DataError
    from squeezedet.data import DetectionDataset

    root = _tiny_kitti(tmp_path / "kitti")
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "val.txt").write_text("000000\n../../../X\n")
    with pytest.raises(DataError, match=r"val\.txt: line 2: frame id '\.\./\.\./\.\./X'"):
        DetectionDataset(root, "val")


def test_npy_image_set_ids_are_checked(tmp_path):
    from squeeze.errors import DataError
    from squeezeseg.data import RangeDataset

    (tmp_path / "lidar_2d").mkdir()
    np.save(tmp_path / "lidar_2d" / "a.npy", np.zeros((64, 512, 6), np.float32))
    (tmp_path / "ImageSet").mkdir()
    (tmp_path / "ImageSet" / "val.txt").write_text("a\n../lidar_2d/a\n")
    with pytest.raises(DataError, match=r"ImageSet/val\.txt: line 2: frame id '\.\./lidar_2d/a' contains a path"):
        RangeDataset(tmp_path, "val")


# ------------------------------------------------------------------------------------------ missing files
def test_training_image_without_label_file_is_an_error(tmp_path):
    from squeeze.errors import DataError
    from squeezedet.data import DetectionDataset

    root = _tiny_kitti(tmp_path / "kitti")
    (root / "training" / "label_2" / "000001.txt").unlink()
    with pytest.raises(DataError, match=r"label_2/000001\.txt: not found: frame 000001 has no label_2 file"):
        DetectionDataset(root, train=True)
    ds = DetectionDataset(root, require_labels=False)  # prediction on a folder without labels is fine
    assert ds.frame_ids == ["000000", "000001"] and len(ds.sample(1).boxes) == 0


def test_listed_frame_without_image_or_scan_is_an_error(tmp_path):
    from squeeze.errors import DataError
    from squeezedet.data import DetectionDataset
    from squeezeseg.data import RangeDataset

    root = _tiny_kitti(tmp_path / "kitti", ids=("000000", "000001", "000002"))
    (root / "ImageSets").mkdir()
    (root / "ImageSets" / "train.txt").write_text("000000\n000001\n000002\n")
    (root / "training" / "image_2" / "000001.png").unlink()
    with pytest.raises(DataError, match=r"image_2/000001\.png: not found: frame 000001, listed in .*train\.txt"):
        DetectionDataset(root, "train")
    (root / "training" / "velodyne" / "000002.bin").unlink()
    with pytest.raises(DataError, match=r"velodyne/000002\.bin: not found: frame 000002, listed in .*train\.txt"):
        RangeDataset(root, "train")


def test_listed_npy_frame_without_file_is_an_error(tmp_path):
    from squeeze.errors import DataError
    from squeezeseg.data import RangeDataset

    (tmp_path / "lidar_2d").mkdir()
    np.save(tmp_path / "lidar_2d" / "a.npy", np.zeros((64, 512, 6), np.float32))
    (tmp_path / "ImageSet").mkdir()
    (tmp_path / "ImageSet" / "all.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match=r"lidar_2d/b\.npy: not found: frame b, listed in .*all\.txt"):
        RangeDataset(tmp_path, "all")


# ------------------------------------------------------------------------------------------ FIFOs and folders
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("reader", ["read_velodyne", "read_image", "read_labels", "read_calib", "read_point_labels",
                                    "read_range_npy", "read_pcd"])
def test_fifo_and_folder_inputs_are_refused_without_hanging(tmp_path, reader):
    import squeeze.kitti
    import squeeze.pointcloud
    import squeeze.range_image
    from squeeze.errors import DataError

    read = next(getattr(m, reader) for m in (squeeze.kitti, squeeze.range_image, squeeze.pointcloud)
                if hasattr(m, reader))
    os.mkfifo(tmp_path / "scan.bin")  # opening it for reading would block until a writer appears
    with pytest.raises(DataError, match=r"scan\.bin: is not a regular file \(a FIFO / named pipe\)"):
        read(tmp_path / "scan.bin")
    (tmp_path / "000000.bin").mkdir()
    with pytest.raises(DataError, match=r"000000\.bin: is a folder, not a file"):
        read(tmp_path / "000000.bin")


# ------------------------------------------------------------------------------------------ calibration, labels
@pytest.mark.parametrize(("key", "fault"), [("P2", "P2: its left 3x3 block is singular"),
                                            ("R0_rect", "R0_rect: singular"),
                                            ("Tr_velo_to_cam", "Tr_velo_to_cam: its rotation block is singular")])
def test_all_zero_calibration_matrix_is_refused(tmp_path, key, fault):
    from squeeze.errors import CalibrationError
    from squeeze.kitti import format_calib, read_calib
    from tests.conftest import kitti_like_calibration

    lines = format_calib(kitti_like_calibration()).splitlines()
    size = 9 if key == "R0_rect" else 12
    text = "\n".join(f"{key}: " + " ".join(["0"] * size) if ln.startswith(f"{key}:") else ln for ln in lines)
    (tmp_path / "c.txt").write_text(text + "\n")
    with pytest.raises(CalibrationError, match=rf"c\.txt: {fault}"):
        read_calib(tmp_path / "c.txt")


def test_zero_focal_length_is_refused():
    from squeeze.errors import CalibrationError
    from squeeze.kitti import parse_calib

    text = ("P2: 0 0 600 45 0 700 180 0 0 0 1 0\nR0_rect: 1 0 0 0 1 0 0 0 1\n"
            "Tr_velo_to_cam: 0 -1 0 0 0 0 -1 0 1 0 0 0\n")
    with pytest.raises(CalibrationError, match="P2: "):
        parse_calib(text, "c.txt")
    calib = parse_calib(text.replace("P2: 0 0", "P2: 700 0"), "c.txt")  # the same file with a focal length is fine
    assert calib.P2[0, 0] == 700


def test_flipped_box_is_a_label_error_naming_the_line(tmp_path):
    from squeeze.errors import LabelError
    from squeeze.kitti import read_labels

    good = "Car 0.00 0 -1.57 100.00 150.00 300.00 250.00 1.50 1.60 3.90 -3.00 1.70 20.00 -1.60"
    dontcare = "DontCare -1 -1 -10 -1.00 -1.00 -1.00 -1.00 -1 -1 -1 -1000 -1000 -1000 -10"
    (tmp_path / "ok.txt").write_text(f"{good}\n{dontcare}\n")
    assert len(read_labels(tmp_path / "ok.txt")) == 2  # DontCare placeholders stay accepted
    (tmp_path / "lr.txt").write_text(f"{good}\n\n{good.replace('100.00 150.00 300.00', '300.00 150.00 100.00')}\n")
    with pytest.raises(LabelError, match=r"lr\.txt: line 3: Car box left > right"):
        read_labels(tmp_path / "lr.txt")
    (tmp_path / "tb.txt").write_text(good.replace("150.00 300.00 250.00", "250.00 300.00 150.00") + "\n")
    with pytest.raises(LabelError, match=r"tb\.txt: line 1: Car box top > bottom"):
        read_labels(tmp_path / "tb.txt")


# ------------------------------------------------------------------------------------------ PCD files
def _pcd_header(n_header: int, data: str = "binary") -> bytes:
    return ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n"
            f"WIDTH {n_header}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n_header}\nDATA {data}\n").encode()


def test_pcd_round_trip_and_short_data(tmp_path):
    from squeeze.errors import ScanError
    from squeeze.pointcloud import read_pcd, write_pcd

    pts = np.array([[1.5, -2.0, 0.25, 0.5], [10.0, 0.0, -1.0, 0.0], [3.0, 4.0, 5.0, 1.0]], np.float32)
    for kind in ("binary", "ascii"):
        write_pcd(tmp_path / f"{kind}.pcd", pts, kind)
        np.testing.assert_array_equal(read_pcd(tmp_path / f"{kind}.pcd"), pts)
    # The header promises 5 points; the data holds 3.
    (tmp_path / "short.pcd").write_bytes(_pcd_header(5) + pts.tobytes())
    with pytest.raises(ScanError, match=r"short\.pcd: the header promises 5 points \(80 bytes of data\) but the file "
                                        r"holds 48 bytes \(3 whole points\)"):
        read_pcd(tmp_path / "short.pcd")
    ascii_rows = "".join(" ".join(str(v) for v in row) + "\n" for row in pts)
    (tmp_path / "short_ascii.pcd").write_bytes(_pcd_header(5, "ascii") + ascii_rows.encode())
    with pytest.raises(ScanError, match="promises 5 points but the data holds 3 lines"):
        read_pcd(tmp_path / "short_ascii.pcd")
    (tmp_path / "wh.pcd").write_bytes(_pcd_header(3).replace(b"WIDTH 3", b"WIDTH 2") + pts.tobytes())
    with pytest.raises(ScanError, match=r"POINTS 3 is not WIDTH x HEIGHT = 2 x 1"):
        read_pcd(tmp_path / "wh.pcd")


def test_pcd_without_intensity_and_with_padding_fields(tmp_path):
    from squeeze.pointcloud import read_pcd

    header = (b"VERSION 0.7\nFIELDS x y z _ rgb\nSIZE 4 4 4 1 4\nTYPE F F F U U\nCOUNT 1 1 1 4 1\nWIDTH 2\nHEIGHT 1\n"
              b"POINTS 2\nDATA binary\n")
    row = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("pad", "u1", (4,)), ("rgb", "<u4")])
    data = np.array([(1.0, 2.0, 3.0, (0, 0, 0, 0), 7), (4.0, 5.0, 6.0, (0, 0, 0, 0), 9)], row).tobytes()
    (tmp_path / "c.pcd").write_bytes(header + data)
    np.testing.assert_array_equal(read_pcd(tmp_path / "c.pcd"), [[1, 2, 3, 0], [4, 5, 6, 0]])


# ------------------------------------------------------------------------------------------ pictures of nothing
def test_pictures_of_a_scan_with_no_point_in_view_are_blank(tmp_path):
    from squeeze.kitti import KittiFrame, read_image
    from squeeze.range_image import project_scan
    from squeeze.vis import bev_picture, camera_picture, range_image_picture, write_frame_pictures
    from tests.conftest import kitti_like_calibration
    from tests.test_range_image import ring_ordered_scan

    scan = ring_ordered_scan(n_az=360)
    az = np.degrees(np.arctan2(scan[:, 1], scan[:, 0]))
    rear = scan[np.abs(az) > 100]  # the rear half only: nothing in the front 90 degrees
    image, pixel = project_scan(rear, labels=np.ones(len(rear), np.int64))
    assert not image.mask.any() and (pixel == -1).all()
    pic = range_image_picture(image)
    assert pic.shape == (3 * (64 + 2 + 64), 512, 3)
    assert (pic[:3 * 64] == 0).all() and (pic[3 * 64:3 * 66] == 255).all() and (pic[3 * 66:] == 0).all()
    empty = np.zeros((0, 4), np.float32)
    bev = bev_picture(empty)
    far = np.array([[500.0, 500.0, 0.0, 0.0]], np.float32)  # one point outside the view: only the rings are drawn
    np.testing.assert_array_equal(bev, bev_picture(far))
    assert (bev[..., 0] == bev[..., 1]).all() and bev.max() <= 50 and bev[650, 400].any()  # grey 10 m ring
    assert bev_picture(empty, point_classes=np.zeros(0, np.int64)).shape == (800, 800, 3)
    camera = np.full((20, 30, 3), 77, np.uint8)
    np.testing.assert_array_equal(camera_picture(camera, empty, kitti_like_calibration()), camera)
    # An all-zero scan (every point at the origin) projects to an empty image instead of a ring-order error.
    zero, _ = project_scan(np.zeros((500, 4), np.float32))
    assert not zero.mask.any()
    written = write_frame_pictures(KittiFrame("000007", rear, None, None, None), tmp_path)
    assert [p.name for p in written] == ["000007_range.png", "000007_bev.png"]
    assert (read_image(written[0]) == 0).all()


# ------------------------------------------------------------------------------------------ ring mode on crops
def test_front_crop_of_a_real_scan_keeps_its_ring_rows(kitti_mini):
    from squeeze.kitti import read_velodyne
    from squeeze.range_image import full_360, project_scan, project_scan_numpy, ring_rows, squeezeseg_front

    for path in sorted((kitti_mini / "training" / "velodyne").glob("*.bin")):
        points = read_velodyne(path)
        az = np.degrees(np.arctan2(points[:, 1], points[:, 0]))
        keep = (az >= -45) & (az <= 45)
        crop = points[keep]
        full, full_pixel = project_scan(points, full_360())
        rows_full = full_pixel // 2048
        np.testing.assert_array_equal(ring_rows(crop), rows_full[keep])
        # The cropped scan's range image is the full scan's front image, pixel for pixel.
        front, front_pixel = project_scan(points, squeezeseg_front())
        image, pixel = project_scan(crop, squeezeseg_front(), source=path.name)
        np.testing.assert_array_equal(image.to_array(), front.to_array())
        np.testing.assert_array_equal(pixel, front_pixel[keep])
        numpy_image, numpy_pixel = project_scan_numpy(crop, squeezeseg_front())
        np.testing.assert_array_equal(numpy_pixel, pixel)
        # Other crops: one side only (no azimuth 0 inside), and the rear half.
        for lo, hi in ((10, 45), (-45, -10), (-60, 100)):
            side = (az >= lo) & (az <= hi)
            np.testing.assert_array_equal(ring_rows(points[side]), rows_full[side], err_msg=f"{path.name} {lo}..{hi}")


def test_ring_rows_on_a_synthetic_front_crop():
    from squeeze.range_image import project_scan, ring_rows, squeezeseg_front
    from tests.test_range_image import ring_ordered_scan

    scan = ring_ordered_scan(n_rings=64, n_az=720)
    az = np.degrees(np.arctan2(scan[:, 1], scan[:, 0]))
    keep = np.abs(az) <= 45
    np.testing.assert_array_equal(ring_rows(scan[keep]), (np.arange(len(scan)) // 720)[keep])
    image, _ = project_scan(scan[keep], squeezeseg_front())
    np.testing.assert_array_equal(np.flatnonzero(image.mask.any(axis=1)), np.arange(64))
    shuffled = scan[keep][np.random.default_rng(0).permutation(int(keep.sum()))]
    from squeeze.errors import ScanError

    with pytest.raises(ScanError, match="not stored ring by ring"):  # no ring order at all is still refused
        project_scan(shuffled, squeezeseg_front())
    # Only the upper 46 lasers (a 'velodyne_reduced' file cropped to the camera image): in ring order, but which
    # laser the first kept ring is cannot be told, so ring mode refuses it and says why.
    from squeeze.errors import RingOrderError

    ring = np.arange(len(scan)) // 720
    upper = scan[keep & (ring < 46)]
    with pytest.raises(RingOrderError, match=r"found 46 rings, in ring order, .*velodyne_reduced"):
        project_scan(upper, squeezeseg_front(), source="000008.bin")
    lower = scan[keep & (ring >= 18)]  # the top 18 lasers saw only sky
    with pytest.raises(RingOrderError, match="found 46 rings, in ring order"):
        project_scan(lower, squeezeseg_front())
    reversed_rings = np.concatenate([scan[keep & (ring == k)] for k in range(45, -1, -1)])
    with pytest.raises(RingOrderError, match="not stored ring by ring"):  # rings bottom-up: no laser order
        project_scan(reversed_rings, squeezeseg_front())


# ------------------------------------------------------------------------------------------ segmentation metrics
def test_miou_leaves_out_classes_without_ground_truth():
    from squeezeseg.metrics import metrics_from_confusion

    names = ("background", "car", "pedestrian", "cyclist")
    # rows truth, columns prediction. car: TP 5, FP 1, FN 1 -> 5/7; pedestrian: TP 3, FP 1, FN 1 -> 3/5;
    # cyclist: no labelled pixel, 2 background pixels predicted as cyclist (FP only).
    conf = np.array([[10, 0, 0, 2], [0, 5, 1, 0], [0, 1, 3, 0], [0, 0, 0, 0]])
    m = metrics_from_confusion(conf, names)
    d = m.as_dict()
    assert d["iou_car"] == pytest.approx(5 / 7) and d["iou_pedestrian"] == pytest.approx(3 / 5)
    assert np.isnan(d["iou_cyclist"]) and d["precision_cyclist"] == 0.0  # undefined IoU; its FPs show here
    assert d["miou"] == pytest.approx((5 / 7 + 3 / 5) / 2)  # not (5/7 + 3/5 + 0) / 3 = 0.438
    table = m.table().splitlines()
    assert table[4].split() == ["cyclist", "-", "0.000", "-", "0"]
    assert table[5].split() == ["mIoU", f"{(5 / 7 + 3 / 5) / 2:.3f}"]
    nothing = metrics_from_confusion(np.zeros((4, 4), np.int64), names)  # zero frames evaluated
    assert np.isnan(nothing.as_dict()["miou"])


def test_confusion_png_is_written_atomically(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from squeezeseg.metrics import plot_confusion

    plot_confusion(np.eye(2, dtype=int), ("a", "b"), tmp_path / "c.png")
    before = (tmp_path / "c.png").read_bytes()

    def dies_half_way(self, fname, *args, **kwargs):
        (open(fname, "wb") if isinstance(fname, (str, os.PathLike)) else fname).write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        plot_confusion(np.eye(2, dtype=int) * 3, ("a", "b"), tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes() == before and os.listdir(tmp_path) == ["c.png"]


# ------------------------------------------------------------------------------------------ trainer
def test_nan_evaluation_never_becomes_best(tmp_path):
    from tests.test_trainer import BASE, run

    _, result = run(tmp_path, BASE, evaluate=lambda m: {"miou": float("nan")}, best_metric="miou")
    assert not (tmp_path / "best.pt").exists() and result.best_value is None
    assert (tmp_path / "last.pt").exists()


def test_val_frames_zero_is_refused():
    import argparse

    from squeeze.train_cli import add_train_arguments

    p = argparse.ArgumentParser()
    add_train_arguments(p, steps=10, batch_size=2)
    assert p.parse_args(["--out", "x", "--val-frames", "3"]).val_frames == 3
    with pytest.raises(SystemExit):
        p.parse_args(["--out", "x", "--val-frames", "0"])


def test_torn_metrics_row_is_dropped_on_resume(tmp_path):
    from squeeze.train import MetricsLog

    path = tmp_path / "metrics.csv"
    # Steps 1-4, then the row of step 12 cut after its first character by a kill (no newline).
    path.write_text("step,epoch,lr,loss\n1,0,0.1,0.5\n2,0,0.1,0.4\n3,1,0.1,0.3\n4,1,0.1,0.2\n1")
    log = MetricsLog(path, resume_step=4)
    assert [r["step"] for r in log.rows] == ["1", "2", "3", "4"]
    log.write({"step": 5, "epoch": 1, "lr": 0.1, "loss": 0.125})
    assert path.read_text().splitlines()[-2:] == ["4,1,0.1,0.2", "5,1,0.1,0.125"]


def test_learning_curve_png_is_written_atomically(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from squeeze.vis import plot_learning_curve

    (tmp_path / "m.csv").write_text("step,epoch,lr,loss,eval/miou\n1,0,0.1,0.5,\n2,0,0.1,0.4,0.25\n3,0")
    plot_learning_curve(tmp_path / "m.csv", tmp_path / "curve.png")  # the torn last row is left out
    before = (tmp_path / "curve.png").read_bytes()
    assert before[:4] == b"\x89PNG"

    def dies_half_way(self, fname, *args, **kwargs):
        (open(fname, "wb") if isinstance(fname, (str, os.PathLike)) else fname).write(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        plot_learning_curve(tmp_path / "m.csv", tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["curve.png", "m.csv"]


class _BadScanDataset:
    """Sample 3 is a bad scan: raises the ScanError the real readers raise."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        import torch

        from squeeze.errors import ScanError

        if index == 3:
            raise ScanError("/data/velodyne/000003.bin", "size 20 bytes is not a multiple of 16 (4 float32 per point)")
        return {"x": torch.zeros(4), "y": torch.tensor(0.0)}


def test_a_worker_data_error_reaches_the_main_process_unchanged(tmp_path):
    import dataclasses

    from squeeze.errors import ScanError
    from squeeze.train import train
    from tests.test_trainer import BASE, TinyConfig, TinyNet

    cfg = dataclasses.replace(BASE, num_workers=1, batch_size=8, max_steps=1, shuffle=False)
    with pytest.raises(ScanError) as info:
        train(TinyNet(), _BadScanDataset(), cfg, tmp_path, model_config=TinyConfig(), class_names=["value"])
    assert str(info.value) == "/data/velodyne/000003.bin: size 20 bytes is not a multiple of 16 (4 float32 per point)"


def test_a_bad_scan_is_named_when_the_dataset_is_built(tmp_path):
    from squeeze.errors import ScanError
    from squeezeseg.data import RangeDataset

    root = _tiny_kitti(tmp_path / "kitti")
    (root / "training" / "velodyne" / "000001.bin").write_bytes(b"\0" * 20)
    with pytest.raises(ScanError, match=r"velodyne/000001\.bin: size 20 bytes is not a multiple of 16"):
        RangeDataset(root)


def test_seg_predict_warns_when_it_falls_back_to_uniform_rows(caplog):
    import logging

    from squeezeseg.data import SegDataConfig
    from squeezeseg.predict import project_points
    from tests.test_range_image import ring_ordered_scan

    scan = ring_ordered_scan(n_az=360)
    az = np.degrees(np.arctan2(scan[:, 1], scan[:, 0]))
    with caplog.at_level(logging.WARNING):
        front = project_points(scan[np.abs(az) <= 45], SegDataConfig(), "/data/front.bin")  # a crop: rings kept
    assert caplog.text == "" and front.mask.any(axis=1).all()
    shuffled = scan[np.random.default_rng(0).permutation(len(scan))]
    with caplog.at_level(logging.WARNING):
        sample = project_points(shuffled, SegDataConfig(), "/data/shuffled.bin")
    assert "/data/shuffled.bin: the laser ring of each point cannot be found (ring mode found" in caplog.text
    assert "falling back to uniform elevation rows" in caplog.text and sample.mask.any()
    caplog.clear()
    # A camera-FOV crop ('velodyne_reduced'): the lower 18 lasers are gone, so the rows of the 46 kept are unknown.
    upper = scan[(np.abs(az) <= 45) & (np.arange(len(scan)) // 360 < 46)]
    with caplog.at_level(logging.WARNING):
        reduced = project_points(upper, SegDataConfig(), "/data/reduced.bin")
    assert ("/data/reduced.bin: the laser ring of each point cannot be found (ring mode found 46 rings, in ring order, "
            in caplog.text)
    assert "falling back to uniform elevation rows" in caplog.text
    # Uniform rows: 64 bins over +2.0 .. -24.9 degrees, where the 64 synthetic lasers are 26.9 / 63 degrees apart,
    # so laser k lands in row floor(k * 64 / 63): the kept lasers 0..45 fill rows 0..45 (45.7 -> 45), none below.
    assert np.flatnonzero(reduced.mask.any(axis=1)).tolist() == [int(k * 64 / 63) for k in range(46)]
