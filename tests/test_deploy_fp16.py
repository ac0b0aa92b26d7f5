"""FP16 export for GPUs (`squeeze deploy export --fp16`): float16 weights and arithmetic, float32 inputs and outputs,
and outputs within float16's tolerance of torch float32, for SqueezeDet (through the command) and SqueezeSeg with
its recurrent CRF; onnxruntime and OpenVINO both run it through the unchanged numpy pre- and post-processing.

Models are untrained and tiny (tests/test_deploy_export.py's helpers).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto  # noqa: E402

from deploy.export import export_onnx  # noqa: E402
from deploy.runtimes.onnxruntime import OnnxDetector, OnnxSegmenter  # noqa: E402
from deploy.sidecar import read_sidecar  # noqa: E402
from deploy.tensorrt import NoTensorRTError, build_engine  # noqa: E402
from deploy.tensorrt_ops import TENSORRT_ONNX_OPS  # noqa: E402
from squeeze_suite.cli import main  # noqa: E402
from tests.test_deploy_export import det_checkpoint, random_range_batch, seg_checkpoint, torch_seg_logits  # noqa: E402


def half_tolerance(reference: np.ndarray) -> float:
    """What float16 arithmetic may move an output: 11 significant bits (relative 4.9e-4 per rounding), compounded
    over ~20 layers; measured 2e-3 (SqueezeDet's deltas) and 4e-4 (SqueezeSeg's CRF logits) of the largest value."""
    return 5e-3 * float(np.abs(reference).max()) + 1e-4


def assert_half_graph(path) -> None:
    """Every float weight is float16, the graph's inputs and outputs stay float32 (or bool), each op is TensorRT's."""
    model = onnx.load(str(path))
    floats = [t for t in model.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert floats and all(t.data_type == TensorProto.FLOAT16 for t in floats)
    io = [v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)]
    assert set(io) <= {TensorProto.FLOAT, TensorProto.BOOL} and TensorProto.FLOAT in io
    assert {n.op_type for n in model.graph.node} <= TENSORRT_ONNX_OPS
    onnx.checker.check_model(model, full_check=True)
    assert read_sidecar(path).precision == "fp16"


def test_fp16_detector_export_command_matches_torch_within_half_precision(tmp_path, capsys):
    from squeeze.detection import preprocess_image
    from squeezedet.predict import load_model

    ckpt = det_checkpoint(tmp_path / "det.pt", "squeezedet_kitti")
    assert main(["deploy", "export", str(ckpt), "-o", str(tmp_path / "det16.onnx"), "--fp16"]) == 0
    assert "fp16)" in capsys.readouterr().out
    path = tmp_path / "det16.onnx"
    assert_half_graph(path)
    loaded = load_model(ckpt)
    weights = sum(p.numel() for p in loaded.model.parameters())
    assert path.stat().st_size < 2.3 * weights  # 2 bytes a weight (fp32: 4)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (150, 500, 3), dtype=np.uint8), rng.integers(0, 256, (96, 320, 3), dtype=np.uint8)]
    c = loaded.data_config
    x = np.stack([preprocess_image(im, c.image_width, c.image_height, c.pixel_mean_bgr)[0] for im in images])
    with torch.no_grad():
        ref = [t.numpy() for t in loaded.model.raw_outputs(torch.from_numpy(x))]
    ours = OnnxDetector(path)
    got = ours.network.run({"image": x})
    for a, b in zip(got, ref, strict=True):
        assert a.dtype == np.float32 and a.shape == b.shape
        diff = float(np.abs(a - b).max())
        assert 1e-7 < diff <= half_tolerance(b), (diff, half_tolerance(b))  # > 0: the arithmetic really is half
    # After NMS: the same strongest detections (boxes within a pixel, scores within fp16's tolerance)
    for d16, d32 in zip(ours.detect_batch(images), loaded.detector.detect_batch(images), strict=True):
        top = min(5, len(d32))
        assert top > 0 and len(d16) >= top
        np.testing.assert_array_equal(d16.classes[:top], d32.classes[:top])
        np.testing.assert_allclose(d16.boxes[:top], d32.boxes[:top], atol=1.0)
        np.testing.assert_allclose(d16.scores[:top], d32.scores[:top], atol=2e-3)
    # TensorRT: an fp16 export builds as fp16 unless told otherwise (here only the command file is written)
    try:
        build = build_engine(path)
        assert build.precision == "fp16"
    except NoTensorRTError:
        assert "--fp16" in (tmp_path / "det16.fp16.engine.trtexec.txt").read_text()


def test_to_fp16_keeps_a_segmenters_interface_and_its_labels(tmp_path):
    """The conversion alone, on the hand-built SqueezeSegV2-like graph (mask input cast to float inside): bool and
    float32 inputs, float32 logits, the labels of fp32 on the valid pixels, in both CPU runtimes."""
    import dataclasses

    from deploy.export import to_fp16
    from deploy.sidecar import write_sidecar
    from tests.test_deploy_openvino import MEAN, STD, range_images, tiny_segmenter

    fp32 = tiny_segmenter(tmp_path / "seg.onnx")
    half = tmp_path / "seg16.onnx"
    onnx.save(to_fp16(onnx.load(str(fp32))), str(half))
    write_sidecar(half, dataclasses.replace(read_sidecar(fp32), precision="fp16", model_file=half.name))
    assert_half_graph(half)
    images = range_images(6, seed=4)
    mask = images[..., 4] > 0
    norm = ((images[..., :5] - np.array(MEAN, np.float32)) / np.array(STD, np.float32)).transpose(0, 3, 1, 2)
    feeds = {"range_image": np.ascontiguousarray(norm, np.float32), "mask": mask}
    ref = OnnxSegmenter(fp32).network.run(feeds)[0]
    nets = [OnnxSegmenter(half).network]
    if __import__("importlib").util.find_spec("openvino"):
        from deploy.runtimes.openvino import OpenVinoNetwork

        nets.append(OpenVinoNetwork(half))
    for net in nets:
        got = net.run(feeds)[0]
        assert got.dtype == np.float32 and 1e-7 < float(np.abs(got - ref).max()) <= half_tolerance(ref)
        assert float((got.argmax(1) == ref.argmax(1))[mask].mean()) >= 0.99


@pytest.mark.slow  # the CRF export took 37 s on the shared 2-core machine: in the long run (-m slow)
def test_fp16_squeezeseg_with_crf_matches_torch_in_onnxruntime_and_openvino(tmp_path):
    ckpt = seg_checkpoint(tmp_path / "seg.pt", "squeezeseg_kitti", crf_iterations=2)
    report = export_onnx(ckpt, tmp_path / "seg16.onnx", fp16=True)
    assert report.precision == "fp16" and report.crf and "fp16" in report.summary()
    assert_half_graph(report.path)
    assert [(i.name, i.dtype) for i in read_sidecar(report.path).inputs] == [("range_image", "float32"),
                                                                              ("mask", "bool")]
    raw, mask = random_range_batch(7)
    ref = torch_seg_logits(ckpt, raw, mask, crf=True)
    runs = {"onnxruntime": OnnxSegmenter(report.path)}
    if __import__("importlib").util.find_spec("openvino"):
        from deploy.runtimes.openvino import OpenVinoSegmenter

        runs["openvino"] = OpenVinoSegmenter(report.path)
    for name, seg in runs.items():
        logits = seg.network.run(seg.feeds(raw, mask))[0]
        diff = float(np.abs(logits - ref).max())
        assert logits.dtype == np.float32 and 1e-7 < diff <= half_tolerance(ref), (name, diff)
        same = float((logits.argmax(1) == ref.argmax(1))[mask].mean())
        assert same >= 0.99, (name, same)
        labels = seg.segment_pixels(raw, mask)
        assert all((s.labels[~m] == 0).all() for s, m in zip(labels, mask, strict=True))  # post-processing as fp32
