"""`squeeze det ...` end to end on a tiny simulated folder: anchors, train, resume, eval, predict, demo; bad inputs."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from domain_adapt.sim import simulate
from squeeze.kitti import ObjectLabels, read_labels, write_labels
from squeeze_suite.cli import main
from squeezedet.anchors import kmeans_anchor_shapes, read_anchor_file, shape_iou

SMALL = ["--set", "image_width=320", "--set", "image_height=96"]  # a 6 x 20 grid keeps the tests fast


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("det") / "sim"
    simulate(root, frames=3, seed=11, azimuth_steps=512, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(sim_dir, tmp_path_factory):
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("det_run") / "run"
    code = main(["det", "train", str(sim_dir), "--val", str(sim_dir), "--out", str(run), *SMALL, "--steps", "2",
                 "--batch-size", "2", "--optimizer", "adamw", "--lr", "1e-4", "--eval-every", "2", "--val-frames", "2",
                 "--checkpoint-every", "1"])
    assert code == 0
    return run


# ------------------------------------------------------------------------------------------------- k-means
def test_shape_iou_by_hand():
    # 4x2 and 2x4 on a common centre: intersection 2x2 = 4, union 8 + 8 - 4 = 12.
    iou = shape_iou(np.array([[4.0, 2.0]]), np.array([[2.0, 4.0], [4.0, 2.0], [8.0, 4.0]]))
    np.testing.assert_allclose(iou, [[1 / 3, 1.0, 0.25]])


def test_kmeans_recovers_three_clusters():
    rng = np.random.default_rng(0)
    truth = np.array([[20.0, 50.0], [60.0, 40.0], [200.0, 120.0]])
    shapes = np.concatenate([t * rng.uniform(0.95, 1.05, size=(50, 2)) for t in truth])
    centres, mean_iou = kmeans_anchor_shapes(shapes, k=3, seed=1)
    np.testing.assert_allclose(centres, truth, rtol=0.03)  # sorted by area, like truth
    assert mean_iou > 0.9
    again, _ = kmeans_anchor_shapes(shapes, k=3, seed=1)
    np.testing.assert_array_equal(centres, again)


def test_kmeans_bad_inputs():
    with pytest.raises(ValueError, match="distinct"):
        kmeans_anchor_shapes(np.array([[10.0, 10.0], [10.0, 10.0]]), k=2)
    with pytest.raises(ValueError, match="positive"):
        kmeans_anchor_shapes(np.array([[10.0, 0.0], [3.0, 4.0]]), k=1)


def test_anchors_command_writes_a_file_the_trainer_reads(sim_dir, tmp_path, capsys):
    out = tmp_path / "anchors.json"
    assert main(["det", "anchors", str(sim_dir), "-k", "4", "--out", str(out)]) == 0
    anchors = read_anchor_file(out)
    assert anchors.image_size == (1248, 384) and len(anchors.shapes) == 4
    areas = [w * h for w, h in anchors.shapes]
    assert areas == sorted(areas) and anchors.meta["boxes"] > 4 and 0 < anchors.meta["mean_iou"] <= 1
    assert "mean best IoU" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["det", "train", str(sim_dir), "--out", str(run), *SMALL, "--anchors", str(out), "--steps", "1",
                 "--batch-size", "1", "--optimizer", "adamw", "--lr", "1e-5"]) == 0
    config = json.loads((run / "config.json").read_text())
    shapes = config["model"]["model"]["anchor_shapes"]
    # The file's shapes were measured at 1248 x 384; the 320 x 96 model takes them scaled per axis.
    np.testing.assert_allclose(shapes[0], [anchors.shapes[0][0] * 320 / 1248, anchors.shapes[0][1] * 96 / 384],
                               atol=1e-3)


def test_anchors_command_without_labels(tmp_path, capsys):
    (tmp_path / "training" / "label_2").mkdir(parents=True)
    assert main(["det", "anchors", str(tmp_path), "--out", str(tmp_path / "a.json")]) == 2
    assert "no label .txt files" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- train
def test_train_writes_run_folder(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"last.pt", "best.pt", "metrics.csv", "config.json", "learning_curve.png"} <= names
    header, *rows = (trained / "metrics.csv").read_text().splitlines()
    assert "eval/ap11_car_moderate" in header and "conf_loss" in header and rows[-1].startswith("2,")


def test_resume_continues_the_run(trained, sim_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    assert main(["det", "train", str(sim_dir), "--out", str(run), *SMALL, "--steps", "3", "--batch-size", "2",
                 "--optimizer", "adamw", "--lr", "1e-4", "--resume"]) == 0
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[-1].startswith("3,")


def test_batch_norm_training_writes_a_folded_plain_model(sim_dir, tmp_path):
    from squeezedet.model import SQUEEZEDET_KITTI_PARAMS
    from squeezedet.predict import load_model

    run = tmp_path / "bn"
    assert main(["det", "train", str(sim_dir), "--out", str(run), *SMALL, "--set", "batch_norm=true", "--steps", "2",
                 "--batch-size", "2", "--optimizer", "adamw", "--lr", "1e-4"]) == 0
    folded, trained = load_model(run / "folded.pt"), load_model(run / "last.pt")
    assert trained.model_config.batch_norm and not folded.model_config.batch_norm
    assert sum(p.numel() for p in folded.model.parameters()) == SQUEEZEDET_KITTI_PARAMS
    images = 40 * torch.randn(1, 3, 96, 320)
    with torch.no_grad():
        torch.testing.assert_close(folded.model.raw_outputs(images).confidence,
                                   trained.model.raw_outputs(images).confidence, rtol=1e-4, atol=1e-5)


def test_init_from_a_checkpoint_at_another_input_size(trained, sim_dir, tmp_path, capsys):
    from squeezedet.predict import load_model

    run = tmp_path / "half"
    assert main(["det", "train", str(sim_dir), "--out", str(run), "--set", "image_width=160", "--set",
                 "image_height=48", "--init", str(trained / "last.pt"), "--cache-images", "--steps", "1",
                 "--batch-size", "1", "--optimizer", "adamw", "--lr", "1e-12"]) == 0
    before, after = load_model(trained / "last.pt"), load_model(run / "last.pt")
    assert after.model_config.image_width == 160 and after.model.anchors.shape[0] == 3 * 10 * 9
    for name, value in before.model.state_dict().items():
        torch.testing.assert_close(after.model.state_dict()[name], value, atol=1e-8, rtol=0, msg=name)

    code = main(["det", "train", str(sim_dir), "--out", str(tmp_path / "cars"), *SMALL, "--set",
                 'class_names=["Car"]', "--init", str(trained / "last.pt"), "--steps", "1", "--batch-size", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "do not fit" in err and "last.pt" in err
    code = main(["det", "train", str(sim_dir), "--out", str(tmp_path / "both"), *SMALL, "--init",
                 str(trained / "last.pt"), "--pretrained", str(tmp_path / "x.pth"), "--steps", "1",
                 "--batch-size", "2"])
    assert code == 2 and "give one" in capsys.readouterr().err


def test_pretrained_missing_file_is_a_clear_error(sim_dir, tmp_path, capsys):
    code = main(["det", "train", str(sim_dir), "--out", str(tmp_path / "r"), *SMALL, "--steps", "1",
                 "--batch-size", "2", "--pretrained", str(tmp_path / "nope.pth")])
    assert code == 2 and "ImageNet SqueezeNet weights not found" in capsys.readouterr().err


def test_pretrained_download_without_network_says_what_to_do(sim_dir, tmp_path, monkeypatch, capsys):
    import urllib.error

    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    code = main(["det", "train", str(sim_dir), "--out", str(tmp_path / "r"), *SMALL, "--steps", "1",
                 "--batch-size", "2", "--pretrained", "download"])
    err = capsys.readouterr().err
    assert code == 2 and "squeezenet1_1-b8a52dc0.pth" in err and "--pretrained PATH" in err


# ------------------------------------------------------------------------------------------------- eval
def test_eval_results_folder_perfect_detections(sim_dir, tmp_path, capsys):
    results = tmp_path / "results" / "data"
    results.mkdir(parents=True)
    for path in sorted((sim_dir / "training" / "label_2").glob("*.txt")):
        gt = read_labels(path)
        write_labels(results / path.name, ObjectLabels(**{**gt.__dict__, "score": np.ones(len(gt))}))
    assert main(["det", "eval", str(sim_dir), "--results", str(tmp_path / "results"), "--out",
                 str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    # The devkit indexes precision by score threshold, not by recall: perfect detections of n <= 40 objects give
    # n thresholds, so AP11 = ceil(n / 4) / 11 and AP40 = (n - 1) / 40, not 1. Three frames hold few objects.
    for c in ("Car", "Pedestrian"):
        for d, n in zip(("Easy", "Moderate", "Hard"), metrics["num_gt"][c], strict=True):
            assert 0 < n <= 40
            assert metrics["ap11"][c][d] == pytest.approx(-(-n // 4) / 11)
            assert metrics["ap40"][c][d] == pytest.approx((n - 1) / 40)
    assert (tmp_path / "ev" / "pr_curves.png").stat().st_size > 1000
    assert "KITTI 2D detection" in capsys.readouterr().out


def test_eval_checkpoint_writes_results(trained, sim_dir, tmp_path):
    out = tmp_path / "ev"
    assert main(["det", "eval", str(sim_dir), "--checkpoint", str(trained / "last.pt"), "--out", str(out)]) == 0
    files = sorted((out / "data").glob("*.txt"))
    assert [f.stem for f in files] == sorted(p.stem for p in (sim_dir / "training" / "label_2").glob("*.txt"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["ap11"]["Car"]["Moderate"] <= 1.0
    # Soft-NMS rescores overlapping boxes instead of removing them: never fewer detections, still best first.
    soft = tmp_path / "soft"
    assert main(["det", "eval", str(sim_dir), "--checkpoint", str(trained / "last.pt"), "--out", str(soft),
                 "--nms", "soft"]) == 0
    counts = []
    for f in files:
        dets = read_labels(soft / "data" / f.name)
        assert np.all(np.diff(dets.score) <= 0)
        counts.append((len(read_labels(f)), len(dets)))
    assert all(n_soft >= n for n, n_soft in counts)


# ------------------------------------------------------------------------------------------------- predict
def test_predict_writes_kitti_results_at_original_size(trained, sim_dir, tmp_path):
    images = sim_dir / "training" / "image_2"
    out = tmp_path / "pred"
    assert main(["det", "predict", str(trained / "last.pt"), "--inputs", str(images), "--out", str(out),
                 "--labels", str(sim_dir / "training" / "label_2"), "--draw-threshold", "0"]) == 0
    results = sorted((out / "data").glob("*.txt"))
    assert len(results) == 3 and len(list((out / "images").glob("*.png"))) == 3
    for path in results:
        lines = path.read_text().splitlines()
        assert lines, "an untrained model still returns its top-N anchors (no threshold by default)"
        det = read_labels(path)
        assert all(len(line.split()) == 16 for line in lines)
        # Boxes are in the original 1242 x 375 image, not the 320 x 96 net input.
        assert det.bbox[:, [0, 2]].max() <= 1241 and det.bbox[:, [1, 3]].max() <= 374
        assert det.bbox[:, 2].max() > 320 or det.bbox[:, 3].max() > 96
        assert np.all(det.alpha == -10) and np.all(det.location == -1000)  # a 2D detector claims no 3D
        assert np.all(np.diff(det.score) <= 0) and set(det.type) <= {"Car", "Pedestrian", "Cyclist"}


def test_predict_threshold_and_single_file(trained, sim_dir, tmp_path):
    image = sorted((sim_dir / "training" / "image_2").glob("*.png"))[0]
    out = tmp_path / "pred"
    assert main(["det", "predict", str(trained / "last.pt"), "--inputs", str(image), "--out", str(out),
                 "--threshold", "0.999"]) == 0
    det = read_labels(out / "data" / f"{image.stem}.txt")
    assert main(["det", "predict", str(trained / "last.pt"), "--inputs", str(image),
                 "--out", str(tmp_path / "all")]) == 0
    everything = read_labels(tmp_path / "all" / "data" / f"{image.stem}.txt")
    assert len(everything) > 0 and np.all(everything.score > 0)  # no threshold: every survivor of NMS
    kept = everything.score > 0.999
    assert len(det) == int(kept.sum()) and np.allclose(det.score, everything.score[kept])


def test_predict_bad_inputs(trained, tmp_path, capsys):
    assert main(["det", "predict", str(trained / "last.pt"), "--inputs", str(tmp_path / "missing.png"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "no such image file or folder" in capsys.readouterr().err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert main(["det", "predict", str(trained / "last.pt"), "--inputs", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable image" in capsys.readouterr().err
    torn = tmp_path / "torn.pt"
    torn.write_bytes((trained / "last.pt").read_bytes()[:1000])
    assert main(["det", "predict", str(torn), "--inputs", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "torn.pt" in capsys.readouterr().err


def test_demo_with_a_checkpoint(trained, sim_dir, tmp_path, capsys):
    assert main(["det", "demo", str(sim_dir), "--checkpoint", str(trained / "last.pt"), "--out",
                 str(tmp_path / "demo")]) == 0
    pictures = sorted((tmp_path / "demo").glob("det_*.png"))
    assert len(pictures) == 3 and all(p.stat().st_size > 10_000 for p in pictures)
    assert "labelled objects found: Car " in capsys.readouterr().out


def test_export_is_slim_and_loads(trained, tmp_path):
    from squeezedet.predict import load_model

    out = tmp_path / "slim.pt"
    assert main(["det", "export", str(trained / "last.pt"), "--out", str(out)]) == 0
    assert out.stat().st_size < 0.6 * (trained / "last.pt").stat().st_size  # fp16, no optimiser state
    slim, full = load_model(out), load_model(trained / "last.pt")
    for (name, a), b in zip(slim.model.state_dict().items(), full.model.state_dict().values(), strict=True):
        assert a.dtype == torch.float32, name
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3)


def test_export_refuses_a_segmentation_checkpoint(tmp_path, capsys):
    from squeeze.checkpoint import save_checkpoint

    seg = save_checkpoint(tmp_path / "seg.pt", model_state={"w": torch.zeros(1)},
                          config={"task": "segmentation", "model_name": "squeezeseg_kitti"}, class_names=["a"])
    assert main(["det", "export", str(seg), "--out", str(tmp_path / "x.pt")]) == 2
    assert "not a detection checkpoint" in capsys.readouterr().err


def drawn_box_mask(shape: tuple[int, ...], results: ObjectLabels, min_score: float) -> np.ndarray:
    """(H, W) bool: where draw_detections may have drawn a box of score >= min_score or its label (above the box)."""
    mask = np.zeros(shape[:2], bool)
    scores = np.ones(len(results)) if results.score is None else results.score  # ground truth: drawn whole
    for box, score in zip(results.bbox, scores, strict=True):
        if score >= min_score:
            x0, y0, x1, y1 = np.round(box).astype(int)
            mask[max(y0 - 24, 0):y1 + 4, max(x0 - 4, 0):max(x1, x0 + 150) + 4] = True
    return mask


def test_predict_picture_keeps_the_input_colours(tmp_path):
    """Regression: det predict wrote every picture with red and blue swapped (a BGR array given to the RGB writer).

    Away from the drawn boxes the written picture must equal the input image exactly.
    """
    from squeeze.kitti import read_image, write_image

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255), (200, 120, 40)]
    image = np.zeros((375, 1242, 3), np.uint8)
    for k, colour in enumerate(colours):
        image[:, k * 1242 // len(colours):(k + 1) * 1242 // len(colours)] = colour
    write_image(tmp_path / "bands.png", image)
    out = tmp_path / "pred"
    assert main(["det", "predict", "--inputs", str(tmp_path / "bands.png"), "--out", str(out)]) == 0  # bundled
    picture = read_image(out / "images" / "bands.png")
    away = ~drawn_box_mask(image.shape, read_labels(out / "data" / "bands.txt"), 0.4)  # --draw-threshold 0.4
    assert away.mean() > 0.5
    np.testing.assert_array_equal(picture[away], image[away])


def test_predict_on_real_kitti_images(trained, kitti_mini, tmp_path):
    out = tmp_path / "real"
    images = kitti_mini / "training" / "image_2"
    assert main(["det", "predict", str(trained / "last.pt"), "--inputs", str(images), "--out", str(out),
                 "--labels", str(kitti_mini / "training" / "label_2")]) == 0
    names = sorted(p.stem for p in images.glob("*.png"))
    assert sorted(p.stem for p in (out / "data").glob("*.txt")) == names
    for name in names:
        picture = cv2.imread(str(out / "images" / f"{name}.png"))
        image = cv2.imread(str(images / f"{name}.png"))
        assert picture.shape == image.shape  # drawn at the original size
        # The input's own pixels (same channel order) wherever no box, detected or labelled, was drawn.
        away = ~(drawn_box_mask(image.shape, read_labels(out / "data" / f"{name}.txt"), 0.4)
                 | drawn_box_mask(image.shape, read_labels(kitti_mini / "training" / "label_2" / f"{name}.txt"), 0))
        assert away.mean() > 0.3
        np.testing.assert_array_equal(picture[away], image[away])


def test_train_with_a_backbone_spec_file(sim_dir, tmp_path, capsys):
    """`--backbone SPEC.json` (what DNAS writes) builds the ordinary SqueezeDet around that trunk; the checkpoint
    carries the spec, and `--set backbone=` with anything but a spec file is a one-line error."""
    from squeezedet.predict import load_model
    from tests.test_backbone import SMALL_DET_JSON

    spec = tmp_path / "tiny_det.json"
    spec.write_text(SMALL_DET_JSON)
    run = tmp_path / "tiny"
    assert main(["det", "train", str(sim_dir), "--out", str(run), *SMALL, "--backbone", str(spec), "--steps", "1",
                 "--batch-size", "2", "--optimizer", "adamw", "--lr", "1e-4"]) == 0
    loaded = load_model(run / "last.pt")
    assert loaded.model_config.backbone.name == "tiny_det"
    # the trunk of SMALL_DET_JSON, counted by hand in tests/test_backbone.py
    assert sum(p.numel() for p in loaded.model.features.parameters()) == 1_168
    assert main(["det", "train", str(sim_dir), "--out", str(tmp_path / "bad"), *SMALL, "--set", "backbone=big",
                 "--steps", "1", "--batch-size", "2"]) == 2
    assert "backbone: cannot read 'big' as a backbone: give a spec file" in capsys.readouterr().err
