"""`squeeze det predict` and `squeeze seg predict` with `--model` (an exported ONNX model or OpenVINO IR) give the
result files the checkpoint gives; squeeze_suite.predictors loads either kind of file by suffix, with torch
unavailable for exported models; wrong-task and ambiguous arguments are refused naming the file.

Models are untrained and tiny (tests/test_deploy_export.py's helpers), exported once per module.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from deploy.export import export_onnx  # noqa: E402
from squeeze.errors import DataError  # noqa: E402
from squeeze.kitti import read_point_labels, write_image  # noqa: E402
from squeeze.predictor import Detector, RangeSegmenter, Segmenter  # noqa: E402
from squeeze_suite.cli import main  # noqa: E402
from squeeze_suite.predictors import load_detector, load_segmenter, model_suffixes  # noqa: E402
from tests.test_deploy_export import SEG_H, SEG_W, det_checkpoint, randomise_batch_norm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def seg_checkpoint(path: Path) -> Path:
    """A SqueezeSegV2 at 16 x 64 with random BN statistics and a classifier (conv14) whose labels vary over the
    pixels (its default init labels every pixel alike, which would make equal label files prove nothing)."""
    import torch

    from squeeze.checkpoint import save_checkpoint
    from squeeze.range_image import ProjectionConfig
    from squeezeseg.data import SegDataConfig
    from squeezeseg.predict import build_model, checkpoint_config

    torch.manual_seed(0)
    model, config = build_model("squeezeseg_v2_kitti", height=SEG_H, width=SEG_W)
    randomise_batch_norm(model, 1)
    with torch.no_grad():
        torch.nn.init.normal_(model.conv14.weight, std=0.05)
    data = SegDataConfig(projection=ProjectionConfig(height=SEG_H, width=SEG_W))
    save_checkpoint(path, model_state=model.state_dict(), config=checkpoint_config("squeezeseg_v2_kitti", config,
                    data), class_names=config.class_names)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A SqueezeDet at 320 x 96 and a SqueezeSegV2 at 16 x 64 (random BN statistics, folded on export): checkpoints
    and their ONNX exports."""
    folder = tmp_path_factory.mktemp("models")
    det = det_checkpoint(folder / "det.pt", "squeezedet_kitti")
    seg = seg_checkpoint(folder / "seg.pt")
    return {"det": det, "seg": seg, "det_onnx": export_onnx(det, folder / "det.onnx").path,
            "seg_onnx": export_onnx(seg, folder / "seg.onnx").path}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Two camera images of other sizes than the net's, a scan (N, 4) and a (16, 64, 6) range image."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(5)
    images = folder / "images"
    images.mkdir()
    for name, (h, w) in (("a", (150, 500)), ("b", (96, 320))):
        # smooth bands plus noise: a picture with structure, so the head's scores separate
        y, x = np.mgrid[:h, :w]
        base = (127 + 100 * np.sin(x / 17.0)[..., None] * np.cos(y / 11.0)[..., None] * np.array([1.0, 0.5, -0.7]))
        write_image(images / f"{name}.png", np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8))
    scans = folder / "scans"
    scans.mkdir()
    n = 3000
    azimuth = rng.uniform(-np.pi / 4 + 0.01, np.pi / 4 - 0.01, n)  # inside SqueezeSeg's 90-degree front view
    elevation = np.deg2rad(rng.uniform(-24.0, 2.0, n))
    r = rng.uniform(3, 60, n)
    points = np.stack([r * np.cos(elevation) * np.cos(azimuth), r * np.cos(elevation) * np.sin(azimuth),
                       r * np.sin(elevation), rng.uniform(0, 1, n)], axis=1).astype(np.float32)
    points.tofile(scans / "scan.bin")
    raw = rng.normal(0, 8, (SEG_H, SEG_W, 3))
    rng_ = np.linalg.norm(raw, axis=-1, keepdims=True)
    image = np.concatenate([raw, rng.uniform(0, 1, (SEG_H, SEG_W, 1)), rng_, np.zeros((SEG_H, SEG_W, 1))], -1)
    image[rng.random((SEG_H, SEG_W)) < 0.2] = 0  # empty pixels
    np.save(scans / "range.npy", image.astype(np.float32))
    return {"images": images, "scan": scans / "scan.bin", "range": scans / "range.npy", "points": points}


def result_lines(folder: Path) -> dict[str, list[list[str]]]:
    return {p.name: [line.split() for line in p.read_text().splitlines()] for p in sorted(folder.glob("*.txt"))}


def assert_same_kitti_results(a: Path, b: Path) -> None:
    """The same result files: the same objects in the same order, the same class words, boxes and scores as
    written (2 decimals for boxes; a last-digit difference from float rounding is allowed: 0.01 px, 1e-4 score)."""
    ra, rb = result_lines(a), result_lines(b)
    assert list(ra) == list(rb) and len(ra) == 2
    assert sum(len(v) for v in ra.values()) > 0
    for name in ra:
        assert len(ra[name]) == len(rb[name]), name
        for la, lb in zip(ra[name], rb[name], strict=True):
            assert la[0] == lb[0] and len(la) == len(lb) == 16
            np.testing.assert_allclose(np.float64(la[1:]), np.float64(lb[1:]), atol=0.011)


def test_det_predict_with_model_writes_the_checkpoints_results(models, inputs, tmp_path):
    common = ["--inputs", str(inputs["images"]), "--threshold", "0.01"]
    assert main(["det", "predict", str(models["det"]), *common, "--out", str(tmp_path / "torch")]) == 0
    assert main(["det", "predict", "--model", str(models["det_onnx"]), *common, "--out", str(tmp_path / "onnx")]) == 0
    assert_same_kitti_results(tmp_path / "torch" / "data", tmp_path / "onnx" / "data")
    assert sorted(p.name for p in (tmp_path / "onnx" / "data").iterdir()) == ["a.txt", "b.txt"]
    assert sorted(p.name for p in (tmp_path / "onnx" / "images").iterdir()) == ["a.png", "b.png"]
    # The positional argument takes an exported model too (the loader picks by suffix), with the same options.
    assert main(["det", "predict", str(models["det_onnx"]), *common, "--nms", "soft", "--out",
                 str(tmp_path / "positional")]) == 0
    assert main(["det", "predict", str(models["det"]), *common, "--nms", "soft", "--out", str(tmp_path / "soft")]) == 0
    assert_same_kitti_results(tmp_path / "soft" / "data", tmp_path / "positional" / "data")


def test_the_threshold_and_nms_overrides_reach_an_exported_detector(models, inputs):
    from squeeze.kitti import read_image

    image = read_image(inputs["images"] / "a.png")
    every = load_detector(models["det_onnx"]).detect(image)
    assert len(every) > 2
    cut = float(np.median(every.scores))
    kept = load_detector(models["det_onnx"], final_threshold=cut).detect(image)
    np.testing.assert_array_equal(kept.scores, every.scores[every.scores > cut])
    soft = load_detector(models["det_onnx"], nms="soft")
    assert soft.params.nms_mode == "soft" and load_detector(models["det_onnx"]).params.nms_mode == "standard"
    with pytest.raises(ValueError, match="nms must be one of"):
        load_detector(models["det_onnx"], nms="fastest")


def test_seg_predict_with_model_writes_the_checkpoints_labels(models, inputs, tmp_path):
    files = [str(inputs["scan"]), str(inputs["range"])]
    assert main(["seg", "predict", str(models["seg"]), *files, "--uniform", "--out", str(tmp_path / "torch")]) == 0
    # --model first, then the inputs: the first input lands in the optional CHECKPOINT slot and is taken back
    assert main(["seg", "predict", "--model", str(models["seg_onnx"]), *files, "--uniform", "--out",
                 str(tmp_path / "onnx")]) == 0
    ref, got = read_point_labels(tmp_path / "torch" / "scan.label")[0], read_point_labels(tmp_path / "onnx" /
                                                                                          "scan.label")[0]
    assert len(ref) == len(inputs["points"]) and len(np.unique(ref)) >= 2  # several classes: a real comparison
    assert (ref == got).mean() >= 0.999
    a, b = np.load(tmp_path / "torch" / "range_classes.npy"), np.load(tmp_path / "onnx" / "range_classes.npy")
    valid = np.load(inputs["range"])[..., 4] > 0
    assert (a[valid] == b[valid]).mean() >= 0.999 and (a[~valid] == 0).all() and (b[~valid] == 0).all()
    names = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert names == ["range_bev.png", "range_classes.npy", "range_range.png", "scan.label", "scan_bev.png",
                     "scan_range.png"]


def test_seg_predict_with_an_openvino_ir(models, inputs, tmp_path):
    pytest.importorskip("openvino")
    from deploy.runtimes.openvino import convert_to_ir

    xml = convert_to_ir(models["seg_onnx"], tmp_path / "ir" / "seg.xml")
    assert main(["seg", "predict", "--model", str(xml), str(inputs["range"]), "--out", str(tmp_path / "ov")]) == 0
    assert main(["seg", "predict", str(models["seg_onnx"]), str(inputs["range"]), "--out", str(tmp_path / "ort")]) == 0
    valid = np.load(inputs["range"])[..., 4] > 0
    a, b = np.load(tmp_path / "ort" / "range_classes.npy"), np.load(tmp_path / "ov" / "range_classes.npy")
    assert (a[valid] == b[valid]).mean() >= 0.999


def test_loaders_pick_by_suffix_and_refuse_the_other_task(models, tmp_path, capsys):
    assert isinstance(load_detector(models["det"]), Detector) and type(load_detector(models["det"])).__name__ == \
        "TorchDetector"
    det = load_detector(models["det_onnx"])
    seg = load_segmenter(models["seg_onnx"])
    assert type(det).__name__ == "OnnxDetector" and isinstance(det, Detector)
    assert isinstance(seg, Segmenter) and isinstance(seg, RangeSegmenter) and type(seg).__name__ == "OnnxSegmenter"
    assert seg.projection == load_segmenter(models["seg"]).projection  # the sidecar's is the checkpoint's
    with pytest.raises(DataError, match=r"seg\.onnx: this is a segmentation model, not a detector"):
        load_detector(models["seg_onnx"])
    with pytest.raises(DataError, match=r"det\.onnx: this is a detection model, not a segmenter"):
        load_segmenter(models["det_onnx"])
    with pytest.raises(DataError, match=r"model\.tflite: unknown model file type .\.tflite.: a model is one of \.pt"):
        load_detector(tmp_path / "model.tflite")
    assert model_suffixes().startswith(".pt/.pth (checkpoint), .onnx (onnx), .xml (openvino), .engine (tensorrt)")
    out = str(tmp_path / "o")
    images = str(tmp_path)
    assert main(["det", "predict", "--model", str(models["seg_onnx"]), "--inputs", images, "--out", out]) == 2
    assert "seg.onnx: this is a segmentation model, not a detector" in capsys.readouterr().err
    assert main(["det", "predict", str(models["det"]), "--model", str(models["det_onnx"]), "--inputs", images,
                 "--out", out]) == 2
    assert "give the checkpoint or --model, not both" in capsys.readouterr().err
    np.float32([[1, 2, 3, 0.5]]).tofile(tmp_path / "one.bin")
    assert main(["seg", "predict", "--model", str(models["det_onnx"]), str(tmp_path / "one.bin"), "--out", out]) == 2
    assert "det.onnx: this is a detection model, not a segmenter" in capsys.readouterr().err


def test_eval_with_model_gives_the_checkpoints_metrics(models, inputs, tmp_path):
    from squeeze.kitti import read_image

    # detection: a KITTI folder of two labelled images (the inputs' pictures)
    root = tmp_path / "kitti" / "training"
    (root / "image_2").mkdir(parents=True)
    (root / "label_2").mkdir()
    for i, name in enumerate(("a", "b")):
        write_image(root / "image_2" / f"{i:06d}.png", read_image(inputs["images"] / f"{name}.png"))
        (root / "label_2" / f"{i:06d}.txt").write_text(
            "Car 0.00 0 -1.57 40.00 30.00 160.00 90.00 1.50 1.60 3.90 -3.00 1.70 20.00 -1.60\n")
    data = str(tmp_path / "kitti")
    assert main(["det", "eval", data, "--checkpoint", str(models["det"]), "--out", str(tmp_path / "e1")]) == 0
    assert main(["det", "eval", data, "--model", str(models["det_onnx"]), "--out", str(tmp_path / "e2")]) == 0
    a, b = (json.loads((tmp_path / e / "metrics.json").read_text()) for e in ("e1", "e2"))
    assert a["ap11"] == b["ap11"] and a["ap40"] == b["ap40"] and a["frames"] == b["frames"] == 2
    assert_same_kitti_results(tmp_path / "e1" / "data", tmp_path / "e2" / "data")
    assert sorted(p.name for p in (tmp_path / "e2" / "data").iterdir()) == ["000000.txt", "000001.txt"]
    # segmentation: a folder of labelled 16 x 64 range images
    folder = tmp_path / "seg" / "lidar_2d"
    folder.mkdir(parents=True)
    image = np.load(inputs["range"])
    rng = np.random.default_rng(2)
    for i in range(3):
        frame = image.copy()
        frame[..., 5] = np.where(frame[..., 4] > 0, rng.integers(0, 4, frame.shape[:2]), 0)
        np.save(folder / f"{i:06d}.npy", frame)
    seg_data = str(tmp_path / "seg")
    assert main(["seg", "eval", str(models["seg"]), seg_data, "--out", str(tmp_path / "s1")]) == 0
    assert main(["seg", "eval", "--model", str(models["seg_onnx"]), seg_data, "--out", str(tmp_path / "s2")]) == 0
    a, b = (json.loads((tmp_path / e / "metrics.json").read_text()) for e in ("s1", "s2"))
    assert a["frames"] == b["frames"] == 3
    for key, value in a["pixels"].items():
        if isinstance(value, float):
            assert b["pixels"][key] == pytest.approx(value, abs=2e-3), key  # a label or two may flip on a tie


TORCH_BLOCKED = textwrap.dedent("""
    import json, sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError
    from squeeze.kitti import read_image
    from squeeze_suite.predictors import load_detector, load_segmenter
    import numpy as np

    det = load_detector(sys.argv[1], final_threshold=0.01).detect(read_image(sys.argv[3]))
    seg = load_segmenter(sys.argv[2]).segment_range(np.load(sys.argv[4]))
    loaded = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "squeezedet", "squeezeseg"})
    print(json.dumps({"scores": det.scores.tolist(), "labels": seg.labels.tolist(), "loaded": loaded}))
""")


def test_the_loaders_run_exported_models_with_torch_unavailable(models, inputs):
    image = inputs["images"] / "a.png"
    done = subprocess.run([sys.executable, "-c", TORCH_BLOCKED, str(models["det_onnx"]), str(models["seg_onnx"]),
                           str(image), str(inputs["range"])], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] == ["torch"]  # only the blocker itself: no torch, no model package
    from squeeze.kitti import read_image

    ref = load_detector(models["det"], final_threshold=0.01).detect(read_image(image))
    np.testing.assert_allclose(report["scores"], ref.scores, atol=1e-5)
    labels = load_segmenter(models["seg"]).segment_range(np.load(inputs["range"])).labels
    assert (np.array(report["labels"]) == labels).mean() >= 0.999
