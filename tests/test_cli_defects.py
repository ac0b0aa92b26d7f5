"""CLI defects found when the suite was tried as a new user would: OS errors in main, unwrapped image errors,
outputs that overwrite inputs, metrics of no frames, exports of the wrong checkpoint, help without defaults.

Tiny synthetic folders and untrained checkpoints built in tmp_path: no simulation, no training.
"""

from __future__ import annotations

import argparse
import errno
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from squeeze.checkpoint import load_checkpoint, save_checkpoint
from squeeze.cli_help import default_text, shows_default
from squeeze.config import build_named
from squeeze.kitti import write_calib, write_labels
from squeeze_suite.cli import build_parser, main
from tests.conftest import kitti_like_calibration, synthetic_labels


# ------------------------------------------------------------------------------------------------- fixtures
def range_array(seed: int) -> np.ndarray:
    """(64, 512, 6) float32 SqueezeSeg array: a wall 10-12 m away over the front 90 degrees, a 'car' block in it,
    every 7th pixel empty (all zeros)."""
    rng = np.random.default_rng(seed)
    az = np.radians(45.0 - (np.arange(512) + 0.5) * 90.0 / 512)[None, :]
    el = np.radians(2.0 - np.arange(64) * 26.9 / 63)[:, None]
    r = 10.0 + 2.0 * rng.random((64, 512))
    a = np.zeros((64, 512, 6), np.float32)
    a[..., 0], a[..., 1], a[..., 2] = r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el)
    a[..., 3], a[..., 4] = rng.random((64, 512)), r
    a[20:40, 200:260, 5] = 1
    a.reshape(-1, 6)[::7] = 0
    return a


@pytest.fixture(scope="module")
def npy_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("npy") / "data"
    (root / "lidar_2d").mkdir(parents=True)
    for i in range(2):
        np.save(root / "lidar_2d" / f"00000{i}.npy", range_array(i))
    return root


@pytest.fixture(scope="module")
def seg_ckpt(tmp_path_factory) -> Path:
    from squeezeseg.data import SegDataConfig
    from squeezeseg.models import MODELS
    from squeezeseg.predict import checkpoint_config

    torch.manual_seed(0)
    model, cfg = build_named(MODELS, "squeezeseg_v2_kitti", use_crf=False)
    path = tmp_path_factory.mktemp("seg_ckpt") / "seg.pt"
    save_checkpoint(path, model_state=model.state_dict(), class_names=cfg.class_names,
                    config=checkpoint_config("squeezeseg_v2_kitti", cfg, SegDataConfig(class_names=cfg.class_names)))
    return path


@pytest.fixture(scope="module")
def det_ckpt(tmp_path_factory) -> Path:
    from squeezedet.models import MODELS
    from squeezedet.predict import checkpoint_config, data_config_for

    torch.manual_seed(0)
    model, cfg = build_named(MODELS, "squeezedet_kitti", image_width=320, image_height=96)
    path = tmp_path_factory.mktemp("det_ckpt") / "det.pt"
    save_checkpoint(path, model_state=model.state_dict(), class_names=cfg.class_names,
                    config=checkpoint_config("squeezedet_kitti", cfg, data_config_for(cfg)))
    return path


@pytest.fixture
def kitti_dir(tmp_path) -> Path:
    """A one-frame KITTI object folder: image (a grey gradient), labels (a car and a pedestrian), calib, scan."""
    root = tmp_path / "kitti"
    t = root / "training"
    for sub in ("image_2", "label_2", "calib", "velodyne"):
        (t / sub).mkdir(parents=True)
    image = np.tile(np.linspace(0, 255, 620, dtype=np.uint8)[None, :, None], (188, 1, 3))
    cv2.imwrite(str(t / "image_2" / "000000.png"), image)
    write_labels(t / "label_2" / "000000.txt", synthetic_labels())
    write_calib(t / "calib" / "000000.txt", kitti_like_calibration())
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(5, 30, 2000), rng.uniform(-10, 10, 2000), rng.uniform(-1.7, 1, 2000),
                rng.random(2000)].astype(np.float32)
    pts.tofile(t / "velodyne" / "000000.bin")
    return root


def run(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and stderr of the `squeeze` command run in this process."""
    code = main(list(argv))
    return code, capsys.readouterr().err


def one_error_line(err: str, command: str) -> str:
    """The single error line of a failed command (progress bars and log lines aside), checked for no traceback."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("squeeze ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{command}: error: "), lines[0]
    return lines[0][len(f"{command}: error: "):]


# ------------------------------------------------------------------------------------------------- OS errors
@pytest.mark.parametrize("command", ["seg predict", "det predict", "det eval", "det anchors", "seg stats", "seg eval"])
def test_out_under_a_regular_file_is_one_line(command, tmp_path, capsys, one_thread, npy_dir, seg_ckpt, det_ckpt,
                                              kitti_dir):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder\n")
    bad = blocker / "out"
    argv = {
        "seg predict": ["seg", "predict", str(seg_ckpt), str(kitti_dir / "training" / "velodyne"), "--out", str(bad)],
        "det predict": ["det", "predict", str(det_ckpt), "--inputs", str(kitti_dir / "training" / "image_2"),
                        "--out", str(bad)],
        "det eval": ["det", "eval", str(kitti_dir), "--results", str(kitti_dir / "training" / "label_2"), "--out",
                     str(bad)],
        "det anchors": ["det", "anchors", str(kitti_dir), "-k", "2", "--out", str(bad / "a.json")],
        "seg stats": ["seg", "stats", str(npy_dir), "--out", str(bad / "stats.json")],
        "seg eval": ["seg", "eval", str(seg_ckpt), str(npy_dir), "--out", str(bad), "--max-frames", "1"],
    }[command]
    code, err = run(capsys, *argv)
    assert code == 2, err
    line = one_error_line(err, f"squeeze {command}")
    assert line.endswith(": Not a directory"), line
    assert line.startswith(str(bad)), line  # the path asked for, not a temporary file
    assert ".tmp" not in line


def test_show_out_under_a_regular_file(tmp_path, capsys, kitti_dir):
    (tmp_path / "f").write_text("x")
    code, err = run(capsys, "show", str(kitti_dir), "--out", str(tmp_path / "f" / "pics"), "--projection",
                    "front-uniform")
    assert code == 2
    assert one_error_line(err, "squeeze show").endswith(": Not a directory")


def test_show_a_frame_that_is_not_there_is_an_error(tmp_path, capsys, kitti_dir):
    code, err = run(capsys, "show", str(kitti_dir), "--out", str(tmp_path / "pics"), "--frames", "000000", "000099")
    assert code == 2
    assert one_error_line(err, "squeeze show") == (
        f"{kitti_dir / 'training'}: has no frame 000099 (it holds 1 frame(s), 000000 to 000000)")
    assert not (tmp_path / "pics").exists()  # nothing drawn, nothing reported as drawn


def test_a_folder_where_a_file_is_written(tmp_path, capsys, npy_dir, kitti_dir):
    (tmp_path / "stats.json").mkdir()
    code, err = run(capsys, "seg", "stats", str(npy_dir), "--out", str(tmp_path / "stats.json"))
    assert code == 2
    assert one_error_line(err, "squeeze seg stats") == f"{tmp_path / 'stats.json'}: Is a directory"
    (tmp_path / "anchors.json").mkdir()
    code, err = run(capsys, "det", "anchors", str(kitti_dir), "-k", "2", "--out", str(tmp_path / "anchors.json"))
    assert code == 2
    assert one_error_line(err, "squeeze det anchors") == f"{tmp_path / 'anchors.json'}: Is a directory"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left


def test_a_folder_where_an_input_file_is_read(tmp_path, capsys, kitti_dir):
    results = tmp_path / "results"
    (results / "000000.txt").mkdir(parents=True)  # a folder named like a result file
    code, err = run(capsys, "det", "eval", str(kitti_dir), "--results", str(results), "--out", str(tmp_path / "ev"))
    assert code == 2
    assert str(results / "000000.txt") in one_error_line(err, "squeeze det eval")


def _refuse_opening(monkeypatch, refuse, error: OSError) -> None:
    """Make os.open fail with `error` for the paths where `refuse(path)` holds (root ignores permission bits)."""
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if refuse(os.fspath(path)):
            raise type(error)(error.errno, error.strerror, os.fspath(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def test_permission_denied_names_the_target(tmp_path, capsys, monkeypatch, npy_dir, kitti_dir):
    # every atomic write's temporary file is refused, as in a folder the user cannot write
    _refuse_opening(monkeypatch, lambda p: p.endswith(".tmp"), PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    out = tmp_path / "stats.json"
    code, err = run(capsys, "seg", "stats", str(npy_dir), "--out", str(out))
    assert code == 2
    assert one_error_line(err, "squeeze seg stats") == f"{out}: Permission denied"
    code, err = run(capsys, "det", "anchors", str(kitti_dir), "-k", "2", "--out", str(tmp_path / "a.json"))
    assert code == 2
    assert one_error_line(err, "squeeze det anchors") == f"{tmp_path / 'a.json'}: Permission denied"


def test_an_unreadable_input_names_it(tmp_path, capsys, monkeypatch, npy_dir):
    scan = npy_dir / "lidar_2d" / "000001.npy"
    _refuse_opening(monkeypatch, lambda p: p == str(scan), PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
    code, err = run(capsys, "seg", "stats", str(npy_dir), "--out", str(tmp_path / "s.json"))
    assert code == 2
    assert one_error_line(err, "squeeze seg stats") == f"{scan}: Permission denied"
    assert not (tmp_path / "s.json").exists()


def test_disk_full_names_the_target(tmp_path, capsys, monkeypatch, npy_dir):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write/fsync report it: no file name

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "stats.json"
    code, err = run(capsys, "seg", "stats", str(npy_dir), "--out", str(out))
    assert code == 2
    assert one_error_line(err, "squeeze seg stats") == f"{out}: No space left on device"
    assert not out.exists()


def test_verbose_still_shows_the_traceback(tmp_path, capsys, caplog, npy_dir):
    (tmp_path / "stats.json").mkdir()
    code = main(["-v", "seg", "stats", str(npy_dir), "--out", str(tmp_path / "stats.json")])
    assert code == 2
    one_error_line(capsys.readouterr().err, "squeeze seg stats")
    # logged (to stderr outside pytest, which captures log records itself)
    assert "Traceback" in caplog.text and "IsADirectoryError" in caplog.text


# ------------------------------------------------------------------------------------------------- det anchors
@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + b"\xff" * 40, b"not an image at all"])
def test_anchors_on_an_empty_or_corrupt_png_names_the_file(kitti_dir, tmp_path, capsys, content):
    png = kitti_dir / "training" / "image_2" / "000000.png"
    png.write_bytes(content)
    code, err = run(capsys, "det", "anchors", str(kitti_dir), "-k", "2", "--out", str(tmp_path / "a.json"))
    assert code == 2
    line = one_error_line(err, "squeeze det anchors")
    assert line.startswith(f"{png}: not a readable image"), line
    assert not (tmp_path / "a.json").exists()


def test_anchors_fewer_shapes_than_k_suggests_the_flag(kitti_dir, tmp_path, capsys):
    code, err = run(capsys, "det", "anchors", str(kitti_dir), "--out", str(tmp_path / "a.json"))  # -k 9
    assert code == 2
    assert one_error_line(err, "squeeze det anchors") == (
        f"{kitti_dir / 'training' / 'label_2'}: 2 distinct box shapes (2 boxes) cannot make 9 anchor shapes; "
        "pass -k 2 or fewer")
    assert main(["det", "anchors", str(kitti_dir), "-k", "2", "--out", str(tmp_path / "a.json")]) == 0
    from squeezedet.anchors import read_anchor_file

    # the two boxes (200 x 100 and 39.5 x 119.75 pixels of a 620 x 188 image) scaled to 1248 x 384
    shapes = sorted(map(tuple, np.round(np.asarray(read_anchor_file(tmp_path / "a.json").shapes), 2)))
    assert shapes == sorted([(round(39.5 * 1248 / 620, 2), round(119.75 * 384 / 188, 2)),
                             (round(200 * 1248 / 620, 2), round(100 * 384 / 188, 2))])


# ------------------------------------------------------------------------------------------------- seg predict
def test_predict_reads_a_kitti_folder_with_the_bundled_weights(tmp_path, capsys, kitti_dir):
    """`squeeze seg predict KITTI_DIR` and `squeeze det predict KITTI_DIR`, as a new user types them: the scans of
    training/velodyne and the images of training/image_2, through the bundled weights (no checkpoint given)."""
    code, err = run(capsys, "seg", "predict", str(kitti_dir), "--out", str(tmp_path / "seg"))
    assert code == 0, err
    # which weights ran, and what they are good for (the user gave none)
    assert "no checkpoint given: running the bundled squeezeseg_v2_adapted.pt (SqueezeSegV2 trained on simulated" in err
    labels = np.fromfile(tmp_path / "seg" / "000000.label", np.uint32)
    assert len(labels) == 2000 and set(np.unique(labels & 0xFFFF)) <= {0, 1, 2, 3}
    code, err = run(capsys, "det", "predict", str(kitti_dir), "--out", str(tmp_path / "det"))
    assert code == 0, err
    assert ("no checkpoint given: running the bundled squeezedet_sim.pt (SqueezeDet trained on simulated images "
            "only: on real photographs its boxes are mostly false;") in err
    assert (tmp_path / "det" / "data" / "000000.txt").is_file()
    assert cv2.imread(str(tmp_path / "det" / "images" / "000000.png")).shape == (188, 620, 3)


def test_predict_tells_an_input_from_a_checkpoint(tmp_path, capsys, kitti_dir, det_ckpt):
    image = kitti_dir / "training" / "image_2" / "000000.png"
    code, err = run(capsys, "det", "predict", str(det_ckpt), str(image), "--out", str(tmp_path / "a"))
    assert code == 0, err
    assert "bundled" not in err
    code, err = run(capsys, "det", "predict", str(det_ckpt), "--inputs", str(image), "--out", str(tmp_path / "b"))
    assert code == 0, err  # the option form still works
    # the same untrained checkpoint on the same image both ways: the same result file
    results = [(tmp_path / d / "data" / "000000.txt").read_bytes() for d in ("a", "b")]
    assert results[0] == results[1]
    code, err = run(capsys, "det", "predict", str(det_ckpt), "--out", str(tmp_path / "c"))
    assert code == 2
    assert one_error_line(err, "squeeze det predict") == (
        "give the images to detect on (files or folders) after the checkpoint")


def test_seg_eval_runs_the_bundled_weights_as_det_eval_does(tmp_path, capsys, npy_dir, seg_ckpt):
    """`squeeze seg eval DATA`: the bundled SqueezeSegV2, as `squeeze det eval DATA` runs the bundled SqueezeDet; the
    same report as naming the bundled file. A checkpoint and --model together are refused."""
    from squeezeseg.predict import BUNDLED_WEIGHTS

    code, err = run(capsys, "seg", "eval", str(npy_dir), "--out", str(tmp_path / "a"))
    assert code == 0, err
    assert "no checkpoint given: running the bundled squeezeseg_v2_adapted.pt" in err
    code, err = run(capsys, "seg", "eval", str(BUNDLED_WEIGHTS), str(npy_dir), "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    code, err = run(capsys, "seg", "eval", str(seg_ckpt), str(npy_dir), "--model", str(seg_ckpt),
                    "--out", str(tmp_path / "c"))
    assert code == 2
    assert one_error_line(err, "squeeze seg eval") == "give a segmentation checkpoint or --model FILE, not both"


def test_det_eval_takes_its_checkpoint_as_seg_eval_does(tmp_path, capsys, kitti_dir, det_ckpt):
    """`squeeze det eval CKPT DATA` like `squeeze seg eval CKPT DATA`; --checkpoint still works; without any
    detector or results the bundled one runs."""
    code, err = run(capsys, "det", "eval", str(det_ckpt), str(kitti_dir), "--out", str(tmp_path / "a"))
    assert code == 0, err
    code, err = run(capsys, "det", "eval", str(kitti_dir), "--checkpoint", str(det_ckpt), "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    code, err = run(capsys, "det", "eval", str(det_ckpt), str(kitti_dir), "--results", str(tmp_path / "a" / "data"),
                    "--out", str(tmp_path / "c"))
    assert code == 2
    assert one_error_line(err, "squeeze det eval") == (
        f"{det_ckpt}: give one of a checkpoint, --checkpoint, --model or --results")
    code, err = run(capsys, "det", "eval", str(kitti_dir), "--out", str(tmp_path / "d"))
    assert code == 0, err  # the bundled SqueezeDet
    assert sorted(p.name for p in (tmp_path / "d" / "data").iterdir()) == ["000000.txt"]


def test_predict_on_a_folder_without_inputs_says_where_it_looked(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run(capsys, "seg", "predict", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert code == 2
    assert one_error_line(err, "squeeze seg predict") == (
        f"{tmp_path / 'empty'}: no .bin, .npy, .pcd files in this folder (nor in training/velodyne/, velodyne/, "
        "lidar_2d/, velodyne_points/data/)")
    code, err = run(capsys, "det", "predict", str(tmp_path / "empty"), "--out", str(tmp_path / "o"))
    assert code == 2
    assert one_error_line(err, "squeeze det predict") == (
        f"{tmp_path / 'empty'}: no .png, .jpg, .jpeg, .bmp files in this folder (nor in training/image_2/, image_2/, "
        "image_02/data/)")


def test_seg_predict_refuses_two_scans_of_the_same_name(tmp_path, capsys, seg_ckpt, kitti_dir):
    scan = kitti_dir / "training" / "velodyne" / "000000.bin"
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "000000.bin").write_bytes(scan.read_bytes())
    out = tmp_path / "pred"
    code, err = run(capsys, "seg", "predict", str(seg_ckpt), str(tmp_path / "a"), str(tmp_path / "b" / "000000.bin"),
                    "--out", str(out))
    assert code == 2
    assert one_error_line(err, "squeeze seg predict") == (
        f"{tmp_path / 'b' / '000000.bin'}: has the same name as {tmp_path / 'a' / '000000.bin'}: their outputs in "
        f"{out} would overwrite each other; predict them into separate --out folders")
    assert not out.exists()  # refused before writing anything


def test_seg_predict_refuses_to_overwrite_ground_truth_labels(tmp_path, capsys, seg_ckpt, kitti_dir):
    velodyne = kitti_dir / "training" / "velodyne"
    truth = np.arange(2000, dtype=np.uint32) % 4
    truth.tofile(velodyne / "000000.label")
    code, err = run(capsys, "seg", "predict", str(seg_ckpt), str(velodyne), "--out", str(velodyne))
    assert code == 2
    assert one_error_line(err, "squeeze seg predict") == (
        f"{velodyne / '000000.label'}: writing it would overwrite the ground-truth labels of "
        f"{velodyne / '000000.bin'}; choose another --out folder")
    assert np.array_equal(np.fromfile(velodyne / "000000.label", np.uint32), truth)
    assert sorted(p.name for p in velodyne.iterdir()) == ["000000.bin", "000000.label"]


def test_seg_predict_refuses_to_overwrite_semantic_kitti_labels(tmp_path, capsys, seg_ckpt, kitti_dir):
    seq = tmp_path / "sequences" / "00"
    (seq / "velodyne").mkdir(parents=True)
    (seq / "labels").mkdir()
    (seq / "velodyne" / "000000.bin").write_bytes((kitti_dir / "training" / "velodyne" / "000000.bin").read_bytes())
    (seq / "labels" / "000000.label").write_bytes(b"\1\0\0\0" * 2000)
    code, err = run(capsys, "seg", "predict", str(seg_ckpt), str(seq / "velodyne"), "--out", str(seq / "labels"))
    assert code == 2
    assert "ground-truth labels of" in one_error_line(err, "squeeze seg predict")
    assert (seq / "labels" / "000000.label").read_bytes() == b"\1\0\0\0" * 2000


def test_seg_predict_refuses_to_overwrite_an_input_range_image(tmp_path, capsys, seg_ckpt):
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "a.npy", range_array(0))
    np.save(folder / "a_classes.npy", range_array(1))  # an input whose name the output of a.npy takes
    code, err = run(capsys, "seg", "predict", str(seg_ckpt), str(folder), "--out", str(folder))
    assert code == 2
    assert one_error_line(err, "squeeze seg predict") == (
        f"{folder / 'a_classes.npy'}: writing it would overwrite the input {folder / 'a_classes.npy'}; choose another "
        "--out folder")


# ------------------------------------------------------------------------------------------------- seg eval / stats
def test_seg_eval_and_stats_refuse_max_frames_0(tmp_path, capsys, seg_ckpt, npy_dir):
    code, err = run(capsys, "seg", "eval", str(seg_ckpt), str(npy_dir), "--out", str(tmp_path / "ev"),
                    "--max-frames", "0")
    assert code == 2
    assert one_error_line(err, "squeeze seg eval") == "--max-frames must be >= 1 (or left out for every frame), got 0"
    assert not (tmp_path / "ev").exists()
    code, err = run(capsys, "seg", "eval", str(seg_ckpt), str(npy_dir), "--out", str(tmp_path / "ev"),
                    "--batch-size", "0")
    assert code == 2
    assert one_error_line(err, "squeeze seg eval") == "--batch-size must be >= 1, got 0"
    code, err = run(capsys, "seg", "stats", str(npy_dir), "--out", str(tmp_path / "s.json"), "--max-frames", "-1")
    assert code == 2
    assert one_error_line(err, "squeeze seg stats").startswith("--max-frames must be >= 1")


# ------------------------------------------------------------------------------------------------- export
def test_seg_export_refuses_a_detection_checkpoint(tmp_path, capsys, det_ckpt):
    code, err = run(capsys, "seg", "export", str(det_ckpt), "--out", str(tmp_path / "x.pt"))
    assert code == 2
    assert one_error_line(err, "squeeze seg export") == (
        f"{det_ckpt}: not a segmentation checkpoint (config.task != 'segmentation')")
    assert not (tmp_path / "x.pt").exists()


def _with_config(src: Path, dst: Path, **model_fields) -> Path:
    ckpt = load_checkpoint(src)
    config = dict(ckpt["config"])
    config["model"] = {**config["model"], **model_fields}
    save_checkpoint(dst, model_state=ckpt["state_dict"], config=config, class_names=ckpt["class_names"])
    return dst


def test_exports_refuse_a_checkpoint_whose_config_does_not_load(tmp_path, capsys, seg_ckpt, det_ckpt):
    bad = _with_config(seg_ckpt, tmp_path / "bad_seg.pt", crf_colour=3)  # a field this code does not know
    code, err = run(capsys, "seg", "export", str(bad), "--out", str(tmp_path / "x.pt"))
    assert code == 2
    line = one_error_line(err, "squeeze seg export")
    assert line.startswith(f"{bad}: its squeezeseg_v2_kitti config does not load: ") and "crf_colour" in line
    assert not (tmp_path / "x.pt").exists()
    bad = _with_config(det_ckpt, tmp_path / "bad_det.pt", nms="fastest")  # not an NMS mode
    code, err = run(capsys, "det", "export", str(bad), "--out", str(tmp_path / "y.pt"))
    assert code == 2
    assert one_error_line(err, "squeeze det export") == (
        f"{bad}: its squeezedet_kitti config does not load: nms must be one of ('standard', 'reference', 'soft'), "
        "got 'fastest'")
    assert not (tmp_path / "y.pt").exists()
    code, err = run(capsys, "det", "export", str(seg_ckpt), "--out", str(tmp_path / "y.pt"))
    assert code == 2
    assert one_error_line(err, "squeeze det export") == (
        f"{seg_ckpt}: not a detection checkpoint (config.task != 'detection')")


def test_seg_export_of_a_segmentation_checkpoint_is_half_size(tmp_path, capsys, one_thread, seg_ckpt):
    assert main(["seg", "export", str(seg_ckpt), "--out", str(tmp_path / "slim.pt")]) == 0
    original, slim = load_checkpoint(seg_ckpt)["state_dict"], load_checkpoint(tmp_path / "slim.pt")["state_dict"]
    assert slim.keys() == original.keys()
    for name, tensor in original.items():
        assert torch.equal(slim[name], tensor.half() if tensor.is_floating_point() else tensor), name
    assert (tmp_path / "slim.pt").stat().st_size < 0.6 * seg_ckpt.stat().st_size


# ------------------------------------------------------------------------------------------------- help
def _parsers(parser: argparse.ArgumentParser, name: str = "squeeze"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_shows_its_default_and_every_command_says_what_it_does():
    parsers = dict(_parsers(build_parser()))
    assert {"squeeze seg stats", "squeeze seg export", "squeeze det export", "squeeze show"} <= set(parsers)
    checked = 0
    for name, parser in parsers.items():
        assert parser.description, f"{name} has no description"
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.default in (None, argparse.SUPPRESS):
                continue  # positionals, flags (store_true) and options without a default
            if action.default == []:
                continue  # repeatable options (--set) start empty
            assert shows_default(action)
            text = formatter._expand_help(action) if action.help else ""
            assert "default" in text.lower(), f"{name} {action.option_strings[0]}: {text!r}"
            checked += 1
    assert checked > 45
    # the appended form reads like the command line
    help_text = parsers["squeeze det anchors"].format_help()
    assert "(default: 1248 384)" in " ".join(help_text.split())
    assert "(default: Car Pedestrian Cyclist)" in " ".join(help_text.split())
    assert default_text(Path("outputs/demo")) == "outputs/demo"
    assert default_text([]) is None and default_text(0) == "0"


# ------------------------------------------------------------------------------------------------- --set
def test_set_help_and_bad_values_on_the_command_line(tmp_path, capsys, npy_dir):
    with pytest.raises(SystemExit) as e:
        main(["seg", "train", str(npy_dir), "--out", str(tmp_path / "run"), "--model", "squeezeseg_kitti",
              "--set", "help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "  use_crf: bool = True\n      the paper's recurrent CRF after conv14\n" in out
    assert not (tmp_path / "run").exists()
    code, err = run(capsys, "seg", "train", str(npy_dir), "--out", str(tmp_path / "run"), "--set", "use_crf=maybe")
    assert code == 2
    assert one_error_line(err, "squeeze seg train") == (
        "--set SqueezeSegV2Config.use_crf: cannot read 'maybe' as bool (use true/false, yes/no, on/off or 1/0) "
        "(`--set help` lists the fields)")
    code, err = run(capsys, "det", "train", str(npy_dir), "--out", str(tmp_path / "run"), "--set", "crf_iterations=3")
    assert code == 2
    assert "SqueezeDetConfig has no field(s) 'crf_iterations'" in one_error_line(err, "squeeze det train")


def test_seg_demo_says_where_the_pictures_went(tmp_path, capsys, one_thread, seg_ckpt):
    data = tmp_path / "data"
    (data / "lidar_2d").mkdir(parents=True)
    np.save(data / "lidar_2d" / "000007.npy", range_array(7))
    out = tmp_path / "a" / ".." / "demo"
    assert main(["seg", "demo", str(data), "--checkpoint", str(seg_ckpt), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    names = ["000007_seg_truth_vs_prediction.png"]
    assert f"wrote 1 picture(s) into {tmp_path / 'demo'}:\n  {names[0]}\n" in printed
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == names
    help_text = " ".join(parsers_help("squeeze seg demo").split()) + " ".join(parsers_help("squeeze det demo").split())
    assert "(default: outputs/seg_demo)" in help_text and "(default: outputs/det_demo)" in help_text


def parsers_help(name: str) -> str:
    return dict(_parsers(build_parser()))[name].format_help()


# ------------------------------------------------------------------------------------------------- small folders
@pytest.mark.parametrize("family, batch", [("seg", "8"), ("det", "20")])  # each family's default --batch-size
def test_train_on_a_folder_smaller_than_the_default_batch_names_the_flag(family, batch, tmp_path, capsys, npy_dir,
                                                                        kitti_dir):
    data = npy_dir if family == "seg" else kitti_dir
    code, err = run(capsys, family, "train", str(data), "--out", str(tmp_path / "run"), "--steps", "1")
    assert code == 2
    frames = 2 if family == "seg" else 1
    assert one_error_line(err, f"squeeze {family} train") == (
        f"{data}: {frames} frames < --batch-size {batch}; pass --batch-size {frames} or fewer")
    assert not (tmp_path / "run" / "last.pt").exists()
