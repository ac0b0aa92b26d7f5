"""deploy bundle: the folder `squeeze deploy bundle` writes, and its single-file infer.py run with torch, numba and
the suite blocked, against the suite's onnxruntime runtime (end to end) and squeeze.detection / squeeze.segmentation
/ squeeze.range_image (function by function): the script's copy of the pre- and post-processing must stay equal.

Models are untrained and tiny (SqueezeDet at 320 x 96, SqueezeSeg with a 1-iteration CRF at 16 x 64).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from deploy import bundle_infer as script  # noqa: E402
from deploy.bundle import make_bundle  # noqa: E402
from deploy.export import export_onnx  # noqa: E402
from deploy.runtimes.onnxruntime import OnnxDetector, OnnxSegmenter  # noqa: E402
from deploy.sidecar import anchor_grid, read_sidecar  # noqa: E402
from squeeze import detection, segmentation  # noqa: E402
from squeeze.checkpoint import save_checkpoint  # noqa: E402
from squeeze.errors import DataError  # noqa: E402
from squeeze.kitti import format_labels, read_image, read_velodyne  # noqa: E402
from squeeze.range_image import ProjectionConfig, project_scan  # noqa: E402
from squeeze_suite.cli import main  # noqa: E402

SEG_H, SEG_W = 16, 64

# Runs infer.py as `python infer.py ARGS` would, with torch, numba and every package of the suite unimportable;
# prints, last, the blocked names something tried to import anyway (None entries are the blockers themselves).
BLOCKED = ("torch", "numba", "squeeze", "squeezedet", "squeezeseg", "deploy", "domain_adapt", "squeeze_suite")
RUNNER = textwrap.dedent(f"""
    import json, runpy, sys
    for name in {BLOCKED!r}:
        sys.modules[name] = None  # `import name` now raises ImportError
    script, sys.argv = sys.argv[1], sys.argv[1:]
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code or 0
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r} and sys.modules[m] is not None)
    print(json.dumps({{"code": code, "leaked": leaked}}))
    sys.exit(code)
""")


def run_infer(bundle: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """python infer.py ARGS, from the bundle's folder, PYTHONPATH empty, the suite and torch blocked."""
    out = subprocess.run([sys.executable, "-c", RUNNER, str(bundle / "infer.py"), *args], capture_output=True,
                         text=True, timeout=60, cwd=bundle, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ""})
    return out, json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def det_model(tmp_path_factory) -> Path:
    from squeezedet.predict import build_model, checkpoint_config, data_config_for

    folder = tmp_path_factory.mktemp("det")
    torch.manual_seed(0)
    model, config = build_model("squeezedet_kitti", image_width=320, image_height=96)
    with torch.no_grad():  # scores that separate (the tiny init std leaves near-ties everywhere)
        torch.nn.init.normal_(model.convdet.weight, std=0.02)
    ckpt = save_checkpoint(folder / "det.pt", model_state=model.state_dict(),
                           config=checkpoint_config("squeezedet_kitti", config, data_config_for(config)),
                           class_names=config.class_names)
    return export_onnx(ckpt, folder / "tiny_det.onnx").path


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory) -> Path:
    from squeezeseg.data import SegDataConfig
    from squeezeseg.predict import build_model, checkpoint_config

    folder = tmp_path_factory.mktemp("seg")
    torch.manual_seed(0)
    model, config = build_model("squeezeseg_kitti", height=SEG_H, width=SEG_W, crf_iterations=1)
    data = SegDataConfig(projection=ProjectionConfig(height=SEG_H, width=SEG_W))
    ckpt = save_checkpoint(folder / "seg.pt", model_state=model.state_dict(),
                           config=checkpoint_config("squeezeseg_kitti", config, data), class_names=config.class_names)
    return export_onnx(ckpt, folder / "tiny_seg.onnx").path


def ring_scan(rings: int = SEG_H, per_ring: int = 720, seed: int = 0) -> np.ndarray:
    """(rings * per_ring, 4) float32 scan stored as KITTI stores it: ring by ring from the top laser down, each
    ring's azimuth rising from 0 through +180, wrapping to -180 and rising back to 0; ranges 3-40 m."""
    rng = np.random.default_rng(seed)
    az = np.deg2rad(np.arange(per_ring) * 360.0 / per_ring)
    az = np.where(az > np.pi, az - 2 * np.pi, az)
    el = np.deg2rad(np.linspace(1.5, -24.0, rings))
    r = rng.uniform(3, 40, (rings, per_ring))
    x = r * np.cos(el)[:, None] * np.cos(az)[None]
    y = r * np.cos(el)[:, None] * np.sin(az)[None]
    z = r * np.sin(el)[:, None] * np.ones_like(az)[None]
    return np.stack([x, y, z, rng.random((rings, per_ring))], -1).reshape(-1, 4).astype(np.float32)


# ------------------------------------------------------------------------------------------- end to end
def test_detection_bundle_runs_without_torch_and_matches_the_runtime(det_model, tmp_path):
    folder = tmp_path / "bundle"
    assert main(["deploy", "bundle", str(det_model), "-o", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["README.txt", "infer.py", "labels.json", "model.json",
                                                        "model.onnx"]
    assert (folder / "model.onnx").read_bytes() == det_model.read_bytes()
    side = read_sidecar(folder / "model.onnx")
    assert side.model_file == "model.onnx" and side.detection == read_sidecar(det_model).detection
    labels = json.loads((folder / "labels.json").read_text())
    assert labels["task"] == "detection"
    assert [(c["id"], c["name"]) for c in labels["classes"]] == list(enumerate(side.class_names))
    assert [tuple(c["color_rgb"]) for c in labels["classes"]] == list(side.class_colors)
    assert 'DEFAULT_RUNTIME = "onnxruntime"' in (folder / "infer.py").read_text()
    assert "python infer.py image1.png image2.png --out results" in (folder / "README.txt").read_text()

    rng = np.random.default_rng(3)
    images = []
    for i, (h, w) in enumerate(((150, 500), (96, 320))):
        path = tmp_path / f"im{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        images.append(path)
    proc, report = run_infer(folder, *map(str, images), "--out", str(tmp_path / "out"), "--npz")
    assert proc.returncode == 0 and report == {"code": 0, "leaked": []}, proc.stderr[-2000:]

    from squeezedet.predict import detections_to_labels

    runtime = OnnxDetector(det_model)
    for path in images:
        ref = runtime.detect(read_image(path))
        got = np.load(tmp_path / "out" / f"{path.stem}.npz")
        assert len(ref) > 0
        np.testing.assert_allclose(got["boxes"], ref.boxes, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(got["classes"], ref.classes)
        np.testing.assert_allclose(got["scores"], ref.scores, atol=1e-6, rtol=0)
        text = (tmp_path / "out" / f"{path.stem}.txt").read_text()
        assert text == format_labels(detections_to_labels(ref, side.class_names))  # the suite's KITTI writer
        picture = cv2.imread(str(tmp_path / "out" / f"{path.stem}.png"))  # BGR
        left, top = np.round(ref.boxes[0, :2]).astype(int)
        r, g, b = side.class_colors[ref.classes[0]]  # the best box is drawn last, in its class colour
        assert picture[top, left].tolist() == [b, g, r]


def test_segmentation_bundle_runs_without_torch_and_matches_the_runtime(seg_model, tmp_path):
    folder = make_bundle(seg_model, tmp_path / "bundle").folder
    scans = {"ring": ring_scan(), "shuffled": np.random.default_rng(1).permutation(ring_scan(seed=2))}
    for name, points in scans.items():
        points.tofile(tmp_path / f"{name}.bin")
    paths = [str(tmp_path / f"{n}.bin") for n in scans]
    proc, report = run_infer(folder, *paths, "--out", str(tmp_path / "out"), "--npz")
    assert proc.returncode == 0 and report == {"code": 0, "leaked": []}, proc.stderr[-2000:]
    # The shuffled scan has no ring order: uniform rows, with the warning the runtime gives too.
    assert proc.stderr.count("the laser ring of each point cannot be found") == 1

    runtime = OnnxSegmenter(seg_model)
    side = read_sidecar(seg_model)
    for name in scans:
        points = read_velodyne(tmp_path / f"{name}.bin")
        ref = runtime.segment(points)
        labels = np.fromfile(tmp_path / "out" / f"{name}.label", "<u4")
        assert labels.shape == (len(points),) and (labels >> 16 == 0).all()
        np.testing.assert_array_equal(labels, ref.labels)
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"{name}.npz")["scores"], ref.scores, atol=1e-6,
                                   rtol=0)
        assert (ref.labels > 0).sum() > 100  # an untrained network still calls classes other than 0
    # The picture: the range image coloured by class, rows repeated 4 times, empty pixels black.
    image, _ = project_scan(ring_scan(), side.segmentation.projection)
    pixels = runtime.segment_range(image.to_array())
    picture = cv2.imread(str(tmp_path / "out" / "ring.png"))
    assert picture.shape == (4 * SEG_H, SEG_W, 3)
    colours = np.array(side.class_colors, np.uint8)[:, ::-1]
    colours[0] = 0
    np.testing.assert_array_equal(picture[::4], colours[pixels.labels])


def test_openvino_bundle_runs_its_default_runtime(seg_model, tmp_path):
    pytest.importorskip("openvino")
    folder = make_bundle(seg_model, tmp_path / "bundle", runtime="openvino").folder
    assert 'DEFAULT_RUNTIME = "openvino"' in (folder / "infer.py").read_text()
    ring_scan().tofile(tmp_path / "scan.bin")
    proc, report = run_infer(folder, str(tmp_path / "scan.bin"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0 and report["leaked"] == [], proc.stderr[-2000:]
    ref = OnnxSegmenter(seg_model).segment(ring_scan())
    labels = np.fromfile(tmp_path / "out" / "scan.label", "<u4")
    assert (labels == ref.labels).mean() >= 0.999  # OpenVINO f32 against onnxruntime: float32 rounding only


def test_script_drops_the_same_int8_pairs_for_openvino_as_the_runtime(tmp_path):
    ov = pytest.importorskip("openvino")
    from deploy.runtimes import openvino as runtime
    from tests.test_deploy_openvino import qdq_graph

    assert (script.FLOAT_OPS, script.WEIGHTED_OV_OPS) == (runtime.FLOAT_OPS, runtime.WEIGHTED_OV_OPS)
    path = qdq_graph(tmp_path / "qdq.onnx")
    ours, suites = ov.Core().read_model(str(path)), ov.Core().read_model(str(path))
    assert script.drop_float_requantization(ours) == runtime.drop_float_requantization(suites) == 4
    kinds = [[op.get_type_name() for op in m.get_ordered_ops()] for m in (ours, suites)]
    assert kinds[0] == kinds[1] and kinds[0].count("FakeQuantize") == 3


def test_bad_bundles_and_inputs_give_clear_errors(det_model, seg_model, tmp_path):
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(det_model.read_bytes())
    with pytest.raises(DataError, match=r"lonely\.json: no sidecar beside lonely\.onnx"):
        make_bundle(lonely, tmp_path / "b1")
    with pytest.raises(DataError, match=r"unknown runtime 'tensorrt': a bundle runs in one of onnxruntime, openvino"):
        make_bundle(det_model, tmp_path / "b2", runtime="tensorrt")
    with pytest.raises(DataError, match=r"model\.xml: a bundle takes an exported \.onnx model"):
        make_bundle(tmp_path / "model.xml", tmp_path / "b3")
    with pytest.raises(DataError, match=r"missing\.onnx: no such model file"):
        make_bundle(tmp_path / "missing.onnx", tmp_path / "b4")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="must be a folder"):
        make_bundle(det_model, tmp_path / "afile")
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["deploy", "bundle", str(det_model), "-o", str(tmp_path / "b5"), "--runtime", "tensorrt"])

    folder = make_bundle(det_model, tmp_path / "bundle").folder
    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.zeros((20, 30, 3), np.uint8))
    cases = [(["--runtime", "tensorrt"], "error: unknown runtime 'tensorrt': choose one of onnxruntime, openvino"),
             (["--model", str(lonely)], "lonely.json: no sidecar beside lonely.onnx")]
    for extra, message in cases:
        proc, report = run_infer(folder, str(image), "--out", str(tmp_path / "o"), *extra)
        assert proc.returncode == 2 and report["code"] == 2 and message in proc.stderr, proc.stderr
    (tmp_path / "scan.bin").write_bytes(b"\0" * 16)
    proc, _ = run_infer(folder, str(tmp_path / "scan.bin"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "scan.bin: a detection model takes .png .jpg .jpeg .bmp files" in proc.stderr
    seg_folder = make_bundle(seg_model, tmp_path / "seg_bundle").folder
    (tmp_path / "bad.bin").write_bytes(b"\0" * 10)
    proc, _ = run_infer(seg_folder, str(tmp_path / "bad.bin"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "bad.bin: 8 bytes is not a whole number of 16-byte points" in proc.stderr


def test_a_model_with_its_crf_on_the_host_is_not_bundled(seg_model, tmp_path):
    """infer.py runs numpy only, so a model that leaves its CRF to the host (numba) is refused by `deploy bundle`,
    and by infer.py when its sidecar is put in a bundle by hand: no run silently without the CRF."""
    host = export_onnx(seg_model.parent / "seg.pt", tmp_path / "host.onnx", crf="host").path
    with pytest.raises(DataError, match=r"host\.onnx: this model leaves its CRF to the host .* --crf graph"):
        make_bundle(host, tmp_path / "refused")
    folder = make_bundle(seg_model, tmp_path / "bundle").folder
    (folder / "model.onnx").write_bytes(host.read_bytes())
    side = json.loads(host.with_suffix(".json").read_text())
    (folder / "model.json").write_text(json.dumps({**side, "model_file": "model.onnx"}))
    ring_scan().tofile(tmp_path / "scan.bin")
    proc, report = run_infer(folder, str(tmp_path / "scan.bin"), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and report["leaked"] == []
    assert "model.json: the model leaves its CRF to the host, which this script does not run" in proc.stderr


# ------------------------------------------------------------------------------ the script's own functions
def random_boxes(rng: np.random.Generator, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xy = rng.uniform(0, 200, (m, 2))
    wh = rng.uniform(5, 60, (m, 2))
    scores = np.round(rng.random(m), 2).astype(np.float32)  # rounded: ties, which must keep the input order
    return np.concatenate([xy, xy + wh], 1).astype(np.float32), scores, rng.integers(0, 3, m)


@pytest.mark.parametrize("m", [0, 1, 300, detection.DENSE_NMS_MAX + 40])
def test_script_nms_equals_the_core(m):
    assert script.DENSE_NMS_MAX == detection.DENSE_NMS_MAX
    boxes, scores, labels = random_boxes(np.random.default_rng(m), m)
    for mode in ("standard", "reference"):
        np.testing.assert_array_equal(script.nms(boxes, scores, 0.4, labels, mode),
                                      detection.nms(boxes, scores, 0.4, labels, mode))
    if m <= 300:
        for a, b in zip(script.soft_nms(boxes, scores, 0.5, labels, 0.05),
                        detection.soft_nms(boxes, scores, 0.5, labels, 0.05), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["standard", "reference", "soft"])
def test_script_decoding_equals_the_core(mode):
    rng = np.random.default_rng(5)
    grid, shapes = (6, 20), ((36.0, 37.0), (366.0, 174.0), (115.0, 59.0))
    anchors = anchor_grid(*grid, 320, 96, shapes)
    np.testing.assert_array_equal(script.anchor_grid(*grid, 320, 96, shapes), anchors)
    n = len(anchors)
    deltas = rng.normal(0, 0.8, (n, 4)).astype(np.float32)
    conf = rng.random(n).astype(np.float32)
    probs = rng.dirichlet(np.ones(3), n).astype(np.float32)
    p = {"image_width": 320, "image_height": 96, "exp_thresh": 1.0, "top_n": 64, "prob_thresh": 0.005,
         "nms_thresh": 0.4, "final_threshold": 0.1, "nms_mode": mode, "soft_nms_sigma": 0.5}
    boxes, classes, scores = script.postprocess(deltas, conf, probs, anchors, p)
    ref = detection.postprocess(deltas, conf, probs, anchors, 320, 96, exp_thresh=1.0, top_n=64, prob_thresh=0.005,
                                nms_thresh=0.4, final_threshold=0.1, nms_mode=mode, soft_nms_sigma=0.5)
    assert len(ref) > 3
    np.testing.assert_array_equal(boxes, ref.boxes)
    np.testing.assert_array_equal(classes, ref.classes)
    np.testing.assert_array_equal(scores, ref.scores)
    image = rng.integers(0, 256, (150, 500, 3), dtype=np.uint8)
    x, scale = script.preprocess_image(image, 320, 96, detection.VGG_MEANS_BGR)
    x_ref, scale_ref = detection.preprocess_image(image, 320, 96, detection.VGG_MEANS_BGR)
    np.testing.assert_array_equal(x, x_ref)
    assert scale == scale_ref
    original = script.boxes_to_original(boxes, scale, (500, 150))
    np.testing.assert_array_equal(original, detection.boxes_to_original(ref, scale, (500, 150)).boxes)


def projection_cases(kitti: Path | None) -> list[tuple[str, np.ndarray, ProjectionConfig]]:
    full = ring_scan(64, 1800, seed=4)
    az = np.degrees(np.arctan2(full[:, 1], full[:, 0]))
    cases = [("ring", full, ProjectionConfig()),
             ("cropped to the front", full[np.abs(az) < 50], ProjectionConfig()),
             ("cropped to the right", full[(az < 0) & (az > -50)], ProjectionConfig()),
             ("uniform", full, ProjectionConfig(mode="uniform")),
             ("360 degrees", full, ProjectionConfig(fov_left_deg=180.0, fov_right_deg=-180.0, width=1024))]
    if kitti is not None:
        cases.append(("kitti 000000", read_velodyne(kitti / "training" / "velodyne" / "000000.bin"),
                      ProjectionConfig()))
    return cases


def test_script_projection_equals_the_core(request):
    """The script's numpy projection gives the core's (numba) range image, mask and pixel of every point, in ring
    mode (full and cropped scans, and a real KITTI scan when kitti_mini is present) and in uniform mode."""
    try:
        kitti = request.getfixturevalue("kitti_mini")
    except pytest.skip.Exception:
        kitti = None
    for name, points, config in projection_cases(kitti):
        proj = {"height": config.height, "width": config.width, "fov_left_deg": config.fov_left_deg,
                "fov_right_deg": config.fov_right_deg, "mode": config.mode, "fov_up_deg": config.fov_up_deg,
                "fov_down_deg": config.fov_down_deg}
        raw, mask, pixel = script.project(points, proj)
        image, ref_pixel = project_scan(points, config)
        np.testing.assert_array_equal(pixel, ref_pixel, err_msg=name)
        np.testing.assert_array_equal(mask, image.mask, err_msg=name)
        np.testing.assert_array_equal(raw, segmentation.raw_channels(image), err_msg=name)
        assert mask.sum() > 0.3 * mask.size, name


def test_script_normalisation_and_argmax_equal_the_core():
    rng = np.random.default_rng(9)
    raw = rng.normal(0, 10, (SEG_H, SEG_W, 5)).astype(np.float32)
    mean, std = (10.9, 0.0, -1.0, 0.25, 12.1), (11.5, 7.0, 0.85, 0.15, 12.3)
    np.testing.assert_array_equal(script.normalize(raw, mean, std), segmentation.normalize_channels(raw, mean, std))
    logits = rng.normal(0, 5, (4, SEG_H, SEG_W)).astype(np.float32)
    mask = rng.random((SEG_H, SEG_W)) > 0.3
    labels, scores = script.labels_and_scores(logits, mask)
    ref = segmentation.labels_and_scores(logits, mask)
    np.testing.assert_array_equal(labels, ref.labels)
    # the core's kernel (numba) takes a polynomial exp (relative error <= 1.2e-7), the script numpy's: 2 ulp at most
    np.testing.assert_allclose(scores, ref.scores, rtol=0, atol=2 * float(np.finfo(np.float32).eps))
    assert (ref.labels[~mask] == 0).all() and (ref.scores[~mask] == 0).all() and (ref.scores[mask] >= 0.25).all()
