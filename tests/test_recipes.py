"""The training recipes (squeezedet/train.py, squeezeseg/train.py) on tiny synthetic folders."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from squeeze.checkpoint import CheckpointError
from squeeze.config import named_config
from squeeze.kitti import ObjectLabels, write_image, write_labels
from squeeze.range_image import ProjectionConfig, full_360
from squeeze.train import TrainConfig
from squeezedet.data import DetectionDataset
from squeezedet.models import MODELS as DET_MODELS
from squeezedet.predict import load_model
from squeezedet.train import detector_run, train_detector
from squeezeseg.data import squeezeseg_kitti_stats
from squeezeseg.models import MODELS as SEG_MODELS
from squeezeseg.train import projection_for, segmenter_run

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"image_width": 320, "image_height": 96}  # a 6 x 20 grid
GREY = 100  # every pixel of the synthetic images, all channels
# pixel std of a uniform grey image after subtracting the VGG means (103.939, 116.779, 123.68):
# sqrt(((100 - 103.939)^2 + (100 - 116.779)^2 + (100 - 123.68)^2) / 3) = sqrt(857.7929 / 3)
GREY_STD = math.sqrt(857.7929 / 3)


def car(left: float, top: float, right: float, bottom: float) -> ObjectLabels:
    return ObjectLabels(type=np.array(["Car"]), truncated=np.zeros(1), occluded=np.zeros(1, np.int64),
                        alpha=np.zeros(1), bbox=np.array([[left, top, right, bottom]]),
                        dimensions=np.array([[1.5, 1.6, 3.9]]), location=np.array([[0.0, 1.7, 20.0]]),
                        rotation_y=np.zeros(1))


@pytest.fixture
def det_folder(tmp_path):
    """Two 320 x 96 grey images, one car each."""
    root = tmp_path / "det"
    for i, box in enumerate([(100, 30, 180, 70), (20, 20, 120, 80)]):
        write_image(root / "training" / "image_2" / f"{i:06d}.png", np.full((96, 320, 3), GREY, np.uint8))
        write_labels(root / "training" / "label_2" / f"{i:06d}.txt", car(*box))
    return root


def test_detector_run_applies_anchors_scratch_scale_and_input_size(det_folder):
    shapes = [(10.0 * k, 20.0 * k) for k in range(1, 10)]
    run = detector_run(det_folder, overrides=SMALL, anchors=shapes, flip=False, drift=(0, 0))
    assert run.model_config.anchor_shapes == tuple(shapes)
    assert run.model_config.conv1_init_scale == pytest.approx(1 / GREY_STD, rel=1e-6)
    assert run.model_config.fire_init_std is None  # He init (from_scratch)
    assert (run.data_config.image_width, run.data_config.image_height) == (320, 96)
    assert run.train_set.train and run.val_set is None

    # At half size the anchors halve and the init scale stays the full-size one.
    half = detector_run(det_folder, overrides=SMALL, anchors=shapes, input_size=(160, 48), flip=False, drift=(0, 0))
    assert half.model_config.anchor_shapes == tuple((w / 2, h / 2) for w, h in shapes)
    assert half.model_config.conv1_init_scale == run.model_config.conv1_init_scale
    assert half.train_set.sample(0).image.shape == (48, 160, 3)

    # ImageNet weights coming (scratch=False) or an explicit init scale: the named config's init is kept.
    named = named_config(DET_MODELS, "squeezedet_kitti", **SMALL)
    kept = detector_run(det_folder, overrides=SMALL, scratch=False)
    assert (kept.model_config.conv1_init_scale, kept.model_config.fire_init_std) == (1.0, named.fire_init_std)
    explicit = detector_run(det_folder, overrides={**SMALL, "conv1_init_scale": 0.5})
    assert explicit.model_config.conv1_init_scale == 0.5


def test_detector_run_shares_an_open_dataset_and_its_image_cache(det_folder):
    opened = DetectionDataset(det_folder, train=True, cache_images=True)
    first = detector_run(opened, overrides=SMALL, val=DetectionDataset(det_folder, cache_images=True))
    expected = first.train_set.sample(0).image
    (det_folder / "training" / "image_2" / "000000.png").unlink()  # from now on only the cache has it
    second = detector_run(opened, overrides=SMALL, input_size=(320, 96))
    assert np.array_equal(second.train_set.sample(0).image, expected)
    with pytest.raises(ValueError, match="train=True"):
        detector_run(DetectionDataset(det_folder, cache_images=True), overrides=SMALL)


def test_train_detector_folds_batch_norm_and_refuses_weights_that_do_not_fit(det_folder, tmp_path):
    run = detector_run(det_folder, overrides={**SMALL, "batch_norm": True})
    config = TrainConfig(optimizer="adamw", lr=1e-3, max_steps=2, batch_size=2, eval_every=2, checkpoint_every=2,
                         log_every=1, tensorboard=False, progress=False, device="cpu")
    trained = train_detector(run, tmp_path / "run", config)
    assert trained.result.step == 2 and trained.result.last_checkpoint.exists()
    assert trained.deployed is trained.folded and not trained.folded.config.batch_norm
    x = torch.randn(1, 3, 96, 320)
    with torch.no_grad():
        bn_out = trained.model.eval().raw_outputs(x)
        plain_out = trained.folded.eval().raw_outputs(x)
        saved_out = load_model(tmp_path / "run" / "folded.pt").model.eval().raw_outputs(x)
    for a, b, c in zip(bn_out, plain_out, saved_out, strict=True):
        assert torch.allclose(a, b, atol=1e-4) and torch.equal(b, c)
    assert trained.learning_curve.stat().st_size > 0

    three = detector_run(det_folder, overrides=SMALL, anchors=[(10.0, 20.0)] * 3)  # 3 anchors, no BN
    with pytest.raises(CheckpointError, match="do not fit"):
        train_detector(three, tmp_path / "other", config, init=trained.model)
    with pytest.raises(ValueError, match="give one"):
        train_detector(three, tmp_path / "other", config, init=trained.model, pretrained=tmp_path / "x.pth")


@pytest.fixture
def npy_folder(tmp_path):
    """A SqueezeSeg .npy folder of two empty 64 x 512 range images."""
    root = tmp_path / "seg"
    (root / "lidar_2d").mkdir(parents=True)
    for name in ("a", "b"):
        np.save(root / "lidar_2d" / f"{name}.npy", np.zeros((64, 512, 6), np.float32))
    return root


def test_segmenter_run_assembles_the_data_config(npy_folder):
    run = segmenter_run(npy_folder, model="squeezeseg_kitti", overrides={"use_crf": False}, val=npy_folder,
                        point_drop=0.25, seed=7)
    assert run.model_config.use_crf is False
    assert run.data_config.stats == squeezeseg_kitti_stats()
    assert run.data_config.projection == ProjectionConfig(height=64, width=512)
    assert (run.data_config.flip, run.data_config.point_drop, run.data_config.seed) == (True, 0.25, 7)
    assert (run.val_set.config.flip, run.val_set.config.point_drop) == (False, 0.0)  # validation: no augmentation
    assert type(run.new_model()) is SEG_MODELS["squeezeseg_kitti"][1]
    assert run.train_set.train and len(run.train_set) == 2


def test_projection_follows_the_model_config():
    wide = named_config(SEG_MODELS, "squeezeseg_v2_kitti_360")
    assert projection_for(wide) == replace(full_360(), height=64)
    assert projection_for(named_config(SEG_MODELS, "squeezeseg_v2_kitti")) == ProjectionConfig(height=64, width=512)
