"""Adaptation training: source transforms, correlation-aligned training, calibration, plain checkpoint out."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from domain_adapt.sensor_profile import QUANTILES, SensorProfile
from domain_adapt.train import (
    CorrelationAligned,
    PairedDataset,
    SourceTransform,
    calibrate_on_target,
    train_adapted,
    transform_range_image,
    transform_source,
)
from squeeze.config import named_config
from squeeze.range_image import ProjectionConfig, read_range_npy
from squeeze.train import TrainConfig
from squeezeseg.data import RangeDataset, SegDataConfig
from squeezeseg.models import MODELS
from squeezeseg.predict import load_model

H, W = 8, 64
SMALL = {"height": H, "width": W}


def _frames(root, n, intensity, seed):
    """n range images (H x W): ground everywhere, a 'car' block in the middle (label 1)."""
    rng = np.random.default_rng(seed)
    (root / "lidar_2d").mkdir(parents=True)
    for i in range(n):
        a = np.zeros((H, W, 6), np.float32)
        az = np.deg2rad(45 - (np.arange(W) + 0.5) * 90 / W)
        r = rng.uniform(8, 12, (H, W))
        a[..., 0], a[..., 1] = r * np.cos(az), r * np.sin(az)
        a[..., 2] = -1.7 + 0.05 * rng.standard_normal((H, W))
        a[..., 3] = intensity
        a[..., 4] = r
        a[2:6, 20:40, 2] = 0.0
        a[2:6, 20:40, 5] = 1
        np.save(root / "lidar_2d" / f"{i:06d}.npy", a)
    return root


def test_transform_maps_intensity_per_ring_and_keeps_labels_aligned():
    raw = np.zeros((H, W, 5), np.float32)
    raw[..., 0], raw[..., 4] = 10.0, 10.0
    raw[..., 3] = np.linspace(0, 1, H * W).reshape(H, W)
    mask = np.ones((H, W), bool)
    labels = np.zeros((H, W), np.int64)
    labels[:, :10] = 1
    q = np.tile(np.linspace(0.0, 0.1, QUANTILES, dtype=np.float32), (H, 1))
    q[3] += 0.8  # ring 3 reads bright on the real sensor
    profile = SensorProfile(q, np.zeros((H, 6), np.float32), 1, "test")
    image = transform_range_image(raw, mask, labels, SourceTransform(profile=profile), np.random.default_rng(0))
    assert image.mask.all() and np.array_equal(image.label, labels)
    assert image.intensity[3].min() >= 0.8 and image.intensity[[0, 1, 2, 4]].max() <= 0.1 + 1e-6
    # order inside a ring is kept: the brightest source pixel of ring 5 is still its brightest
    assert np.argmax(image.intensity[5]) == np.argmax(raw[5, :, 3])
    # a profile that drops half the returns: dropped pixels are empty in every channel and unlabelled
    dropping = SensorProfile(q, np.full((H, 6), 0.5, np.float32), 1, "test")
    dropped = transform_range_image(raw, mask, labels, SourceTransform(profile=dropping), np.random.default_rng(0))
    gone = ~dropped.mask
    assert 0.3 < gone.mean() < 0.7
    assert np.all(dropped.range[gone] == 0) and np.all(dropped.label[gone] == 0) and np.all(dropped.xyz[gone] == 0)


def test_correlation_aligned_training_writes_a_plain_calibrated_checkpoint(tmp_path):
    source_dir = _frames(tmp_path / "sim", 4, 0.3, seed=0)
    target_dir = _frames(tmp_path / "real", 3, 0.05, seed=1)
    config = named_config(MODELS, "squeezeseg_v2_kitti", **SMALL)
    data = SegDataConfig(projection=ProjectionConfig(height=H, width=W), class_names=config.class_names)
    source = RangeDataset(source_dir, None, data, train=True)
    target = RangeDataset(target_dir, None, data, train=True)
    paired = PairedDataset(source, target, seed=3)
    item = paired[0]
    assert set(item) == {"inputs", "mask", "labels", "target_inputs", "target_mask"}
    assert item["target_inputs"].shape == item["inputs"].shape
    train_config = TrainConfig(optimizer="adamw", lr=1e-3, max_steps=3, batch_size=2, log_every=1,
                               checkpoint_every=3, tensorboard=False, progress=False, device="cpu")
    run = train_adapted("squeezeseg_v2_kitti", config, data, source, target, tmp_path / "run", train_config,
                        align_weight=0.5, calibrate=True)
    assert run.steps == 3
    rows = list(csv.DictReader(open(tmp_path / "run" / "train" / "metrics.csv")))
    assert "align_loss" in rows[0] and np.isfinite(float(rows[-1]["align_loss"]))
    loaded = load_model(run.checkpoint)
    for (name, a), (_, b) in zip(loaded.model.state_dict().items(), run.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    # calibrated: the first BN holds the statistics of its inputs on the target scans (eval mode)
    bn = next(m for m in run.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen = []
    hook = bn.register_forward_pre_hook(lambda m, i: seen.append(i[0]))
    target.train = False
    with torch.no_grad():
        batch = [target[i] for i in range(len(target))]
        run.model.logits(torch.stack([b["inputs"] for b in batch]), torch.stack([b["mask"] for b in batch]))
    hook.remove()
    x = seen[0].double().transpose(0, 1).reshape(bn.num_features, -1)
    assert torch.allclose(bn.running_mean.double(), x.mean(1), atol=1e-4)
    with pytest.raises(ValueError, match="needs target data"):
        train_adapted("squeezeseg_v2_kitti", config, data, source, None, tmp_path / "x", train_config,
                      align_weight=1.0)
    with pytest.raises(ValueError, match="align_weight"):
        CorrelationAligned(run.model, -1.0)
    assert calibrate_on_target(run.model, target)[0].startswith("seg.")


def test_transform_source_writes_a_range_image_folder(tmp_path):
    source_dir = _frames(tmp_path / "sim", 2, 0.3, seed=0)
    data = SegDataConfig(projection=ProjectionConfig(height=H, width=W))
    out = transform_source(RangeDataset(source_dir, None, data), tmp_path / "out", SourceTransform())
    assert (out / "ImageSet" / "all.txt").read_text() == "000000\n000001\n"
    again = read_range_npy(out / "lidar_2d" / "000001.npy", shape=(H, W))
    original = np.load(source_dir / "lidar_2d" / "000001.npy")
    assert np.array_equal(again.to_array(), original)  # no step: the frames as they were
    # a copy keeps the frames' names: a plain folder of range images named by the user
    named = tmp_path / "named"
    named.mkdir()
    sources = sorted((source_dir / "lidar_2d").glob("*.npy"))
    for src, name in zip(sources, ("drive_b_0040", "drive_a_0010"), strict=True):
        (named / f"{name}.npy").write_bytes(src.read_bytes())
    out = transform_source(RangeDataset(named, None, data), tmp_path / "out_named", SourceTransform())
    assert (out / "ImageSet" / "all.txt").read_text() == "drive_a_0010\ndrive_b_0040\n"
    again = read_range_npy(out / "lidar_2d" / "drive_a_0010.npy", shape=(H, W))
    assert np.array_equal(again.to_array(), np.load(named / "drive_a_0010.npy"))


def test_da_run_command_end_to_end_on_real_scans(kitti_mini, tmp_path, capsys):
    # the experiment command with tiny budgets: a simulated source, kitti_mini as the unlabelled target and the
    # labelled evaluation; the intensity row trains the renderer and reports its held-out error, the table says
    # that the target and the evaluation are the same scans
    import json

    from domain_adapt.sim import simulate
    from squeeze_suite.cli import main

    simulate(tmp_path / "sim", frames=4, seed=4, azimuth_steps=512, progress=False)  # one batch of 4
    out = tmp_path / "da"
    assert main(["da", "run", "--source", str(tmp_path / "sim"), "--target", str(kitti_mini), "--eval",
                 str(kitti_mini), "-o", str(out), "--rows", "+intensity", "+calibration", "+jitter",
                 "--steps-per-row", "1", "--renderer-steps", "2", "--threads", "1", "--jitter", "3,0.2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in results["rows"]] == ["+intensity", "+calibration", "+jitter"]
    # the laser response jitter is the +jitter row's alone, and its checkpoint records it
    from squeezeseg.predict import load_model

    assert load_model(out / "plus_jitter" / "adapted.pt").data_config.intensity_jitter == (3.0, 0.2)
    assert load_model(out / "plus_calibration" / "adapted.pt").data_config.intensity_jitter == (1.0, 0.0)
    assert all(r["steps"] == 1 and set(r["iou"]) == {"car", "pedestrian", "cyclist"} for r in results["rows"])
    renderer = results["renderer"]
    assert renderer["held_out"] and 0 < renderer["held_out_mae"] and 0 < renderer["mean_baseline_mae"]
    table = (out / "table.md").read_text()
    assert "(the target scans themselves)" in table
    oracle = renderer["ring_neighbour_ratio"]
    assert f"an oracle: {oracle:.2f})." in table and 0.4 < oracle < 0.8
    assert (out / "plus_calibration" / "adapted.pt").exists() and (out / "ablation.png").exists()
    with pytest.raises(SystemExit):
        main(["da", "run", "--source", "s", "--target", "t", "--eval", "e", "-o", "o", "--jitter", "0.5,0"])
    from domain_adapt.experiment import row_folder

    assert [row_folder(n) for n in ("+jitter+calibration", "SqueezeSeg all", "none")] == [
        "plus_jitter_plus_calibration", "SqueezeSeg_all", "none"]
