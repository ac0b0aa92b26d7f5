"""`squeeze seg ...` end to end on a tiny simulated folder: stats, train, resume, eval, predict (.bin/.npy/.pcd)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from domain_adapt.sim import simulate
from squeeze.kitti import read_point_labels, read_velodyne
from squeeze_suite.cli import main


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg") / "sim"
    simulate(root, frames=3, seed=11, azimuth_steps=1024, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(sim_dir, tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("seg_run") / "run"
    code = main(["seg", "train", str(sim_dir), "--val", str(sim_dir), "--out", str(run), "--model",
                 "squeezeseg_v2_kitti", "--no-crf", "--set", "bn_momentum=0.1", "--steps", "2", "--batch-size", "1",
                 "--optimizer", "adamw", "--lr", "1e-3", "--eval-every", "2", "--val-frames", "1",
                 "--checkpoint-every", "1"])
    assert code == 0
    return run


def test_stats(sim_dir, tmp_path):
    assert main(["seg", "stats", str(sim_dir), "--out", str(tmp_path / "s.json"), "--max-frames", "2"]) == 0
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["channels"] == ["x", "y", "z", "intensity", "range"] and stats["frames"] == 2
    assert 3 < stats["mean"][0] < 40 and stats["std"][4] > 1 and 0 < stats["mean"][3] < 1


def test_train_writes_run_folder(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"last.pt", "best.pt", "metrics.csv", "config.json", "learning_curve.png"} <= names
    rows = (trained / "metrics.csv").read_text().splitlines()
    assert "eval/iou_car" in rows[0] and rows[-1].startswith("2,")


def test_resume_continues_the_run(trained, sim_dir, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    code = main(["seg", "train", str(sim_dir), "--out", str(run), "--model", "squeezeseg_v2_kitti", "--no-crf",
                 "--set", "bn_momentum=0.1", "--steps", "3", "--batch-size", "1", "--optimizer", "adamw", "--lr",
                 "1e-3", "--eval-every", "5", "--checkpoint-every", "1", "--resume"])
    assert code == 0
    from squeeze.checkpoint import load_checkpoint

    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 3
    steps = [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert steps == ["2", "3"]  # run 1 logged step 2, the resumed run step 3, no row twice


def test_eval(trained, sim_dir, tmp_path):
    assert main(["seg", "eval", str(trained / "last.pt"), str(sim_dir), "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    for level in ("pixels", "points"):
        assert 0.0 <= report[level]["iou_car"] <= 1.0
    assert (tmp_path / "confusion_pixels.png").stat().st_size > 1000
    assert (tmp_path / "confusion_points.png").exists()


def test_predict_bin_npy_pcd(trained, sim_dir, tmp_path):
    import open3d as o3d

    scan = read_velodyne(sim_dir / "training" / "velodyne" / "000000.bin")
    cloud = o3d.t.geometry.PointCloud(o3d.core.Tensor(scan[:, :3]))
    cloud.point.intensity = o3d.core.Tensor(scan[:, 3:4])
    o3d.t.io.write_point_cloud(str(tmp_path / "cloud.pcd"), cloud)
    inputs = [sim_dir / "training" / "velodyne" / "000000.bin", sim_dir / "lidar_2d" / "000001.npy",
              tmp_path / "cloud.pcd"]
    out = tmp_path / "pred"
    assert main(["seg", "predict", str(trained / "last.pt"), *map(str, inputs), "--out", str(out)]) == 0
    cls, inst = read_point_labels(out / "000000.label", n_points=len(scan))
    assert set(np.unique(cls)) <= {0, 1, 2, 3} and not inst.any()
    assert len(read_point_labels(out / "cloud.label")[0]) == len(scan)
    grid = np.load(out / "000001_classes.npy")
    assert grid.shape == (64, 512)
    for stem in ("000000", "000001", "cloud"):
        assert (out / f"{stem}_range.png").exists() and (out / f"{stem}_bev.png").exists()


def test_bad_checkpoint_and_bad_input(trained, tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["seg", "eval", str(tmp_path / "bad.pt"), str(tmp_path), "--out", str(tmp_path / "e")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    (tmp_path / "x.txt").write_text("hello")
    assert main(["seg", "predict", str(trained / "last.pt"), str(tmp_path / "x.txt"), "--out", str(tmp_path)]) == 2
    assert "expected a .bin, .npy or .pcd" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["seg", "train", str(tmp_path), "--out", str(tmp_path / "r"), "--model", "nonexistent"])
    assert main(["seg", "train", str(tmp_path), "--out", str(tmp_path / "r"), "--set", "no_such_field=1"]) == 2


def test_demo_on_a_folder(trained, sim_dir, tmp_path):
    assert main(["seg", "demo", str(sim_dir), "--checkpoint", str(trained / "last.pt"), "--out",
                 str(tmp_path / "demo")]) == 0
    pictures = sorted((tmp_path / "demo").glob("*_seg_truth_vs_prediction.png"))
    assert len(pictures) == 3 and all(p.stat().st_size > 1_000 for p in pictures)
