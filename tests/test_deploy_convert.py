"""`squeeze deploy convert MODEL.onnx -o MODEL.xml [--precision f32|f16]`: OpenVINO IR with its sidecar; the IR
loaded by suffix (load_predictor, `--model`) gives the ONNX model's outputs (f32: to 1e-5; f16 weights: within
float16's tolerance); int8 models stay int8; bad outputs and sidecar clashes are refused naming the file.

The networks are the tiny hand-built graphs of tests/test_deploy_openvino.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

from deploy.formats import load_predictor  # noqa: E402
from deploy.quantize import calibration_inputs, quantize_model  # noqa: E402
from deploy.runtimes.openvino import OpenVinoDetector, OpenVinoSegmenter, convert_to_ir  # noqa: E402
from deploy.sidecar import read_sidecar  # noqa: E402
from squeeze.errors import DataError  # noqa: E402
from squeeze_suite.cli import main  # noqa: E402
from tests.test_deploy_int8 import _calib_folder  # noqa: E402
from tests.test_deploy_openvino import range_images, tiny_detector, tiny_segmenter  # noqa: E402


def _logits(predictor, images: np.ndarray) -> np.ndarray:
    return predictor.network.run(predictor.feeds(images[..., :5], images[..., 4] > 0))[0]


def test_convert_command_writes_an_ir_that_loads_by_suffix_and_matches_the_onnx_model(tmp_path, capsys):
    onnx_path = tiny_segmenter(tmp_path / "seg.onnx")
    before = (tmp_path / "seg.json").read_text()
    assert main(["deploy", "convert", str(onnx_path), "-o", str(tmp_path / "seg.xml")]) == 0
    out = capsys.readouterr().out
    assert "wrote " in out and "seg.bin (f32 weights" in out and f"sidecar: {tmp_path / 'seg.json'}" in out
    assert (tmp_path / "seg.bin").stat().st_size > 4 * (6 * 16 * 9 + 16 * 16 * 9 + 32 * 4 * 9)  # fp32 weights
    assert (tmp_path / "seg.json").read_text() == before  # beside the ONNX file: one shared sidecar, untouched
    ir = load_predictor(tmp_path / "seg.xml")
    assert isinstance(ir, OpenVinoSegmenter)
    images = range_images(3, seed=8)
    ref = _logits(load_predictor(onnx_path), images)  # onnxruntime
    assert np.abs(_logits(ir, images) - ref).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_array_equal(ir.segment_range(images[0]).labels,
                                  load_predictor(onnx_path).segment_range(images[0]).labels)


def test_f16_ir_halves_the_weights_and_stays_within_half_precision(tmp_path):
    onnx_path = tiny_segmenter(tmp_path / "seg.onnx")
    f32 = convert_to_ir(onnx_path, tmp_path / "ir32" / "seg.xml")
    assert main(["deploy", "convert", str(onnx_path), "-o", str(tmp_path / "ir16" / "seg.xml"), "--precision",
                 "f16"]) == 0
    side = json.loads((tmp_path / "ir16" / "seg.json").read_text())
    assert (side["precision"], side["model_file"]) == ("fp16", "seg.xml")
    assert read_sidecar(f32).precision == "fp32"
    size32, size16 = (p.with_suffix(".bin").stat().st_size for p in (f32, tmp_path / "ir16" / "seg.xml"))
    assert 0.45 < size16 / size32 < 0.6
    images = range_images(3, seed=8)
    ref = _logits(OpenVinoSegmenter(f32), images)
    got = _logits(load_predictor(tmp_path / "ir16" / "seg.xml"), images)
    diff = float(np.abs(got - ref).max())
    assert 1e-7 < diff <= 5e-3 * float(np.abs(ref).max()), diff  # float16 weights: ~4.9e-4 relative each
    # f16 beside the fp32 ONNX file would have to rewrite its sidecar: refused, naming a way out
    with pytest.raises(DataError, match=r"seg\.xml: its sidecar would be the ONNX model's \(seg\.json\), which says "
                                        r"fp32: write the fp16 IR under another name or folder, e\.g\. seg_f16\.xml"):
        convert_to_ir(onnx_path, tmp_path / "seg.xml", precision="f16")
    assert not (tmp_path / "seg.xml").exists()


def test_detector_and_int8_models_convert_too(tmp_path):
    det = tiny_detector(tmp_path / "det.onnx")
    xml = convert_to_ir(det, tmp_path / "ir" / "det.xml")
    ir = load_predictor(xml)
    assert isinstance(ir, OpenVinoDetector)
    image = np.random.default_rng(1).integers(0, 256, (40, 90, 3), dtype=np.uint8)
    a, b = ir.detect(image), OpenVinoDetector(det).detect(image)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_array_equal(a.classes, b.classes)
    seg = tiny_segmenter(tmp_path / "seg.onnx")
    q = quantize_model(seg, tmp_path / "seg_int8.onnx",
                       calibration_inputs(read_sidecar(seg), _calib_folder(tmp_path / "data", count=4))).path
    q_ir = convert_to_ir(q, tmp_path / "seg_int8.xml", precision="f16")  # f16 touches no int8 weight
    assert read_sidecar(q_ir).precision == "int8"
    images = range_images(2, seed=3)
    ref, got = _logits(OpenVinoSegmenter(q), images), _logits(OpenVinoSegmenter(q_ir), images)
    assert (ref.argmax(1) == got.argmax(1))[images[..., 4] > 0].mean() >= 0.99


def test_bad_convert_requests_are_named(tmp_path, capsys):
    onnx_path = tiny_segmenter(tmp_path / "seg.onnx")
    assert main(["deploy", "convert", str(onnx_path), "-o", str(tmp_path / "seg.engine")]) == 2
    assert "seg.engine: convert writes OpenVINO IR (.xml); a tensorrt model (.engine) comes from squeeze deploy " \
           "trt" in capsys.readouterr().err
    assert main(["deploy", "convert", str(onnx_path), "-o", str(tmp_path / "seg.tflite")]) == 2
    assert "seg.tflite: unknown model file type '.tflite'" in capsys.readouterr().err
    assert main(["deploy", "convert", str(tmp_path / "absent.onnx"), "-o", str(tmp_path / "a.xml")]) == 2
    assert "absent.onnx: no such model file" in capsys.readouterr().err
    xml = convert_to_ir(onnx_path, tmp_path / "ir" / "seg.xml")
    with pytest.raises(DataError, match=r"seg\.xml: the IR is converted from an exported \.onnx model"):
        convert_to_ir(xml, tmp_path / "again.xml")
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    (tmp_path / "broken.json").write_text((tmp_path / "seg.json").read_text())
    with pytest.raises(DataError, match=r"broken\.onnx: OpenVINO cannot convert this model"):
        convert_to_ir(tmp_path / "broken.onnx", tmp_path / "broken.xml")
