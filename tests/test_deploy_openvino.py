"""OpenVINO runtime (deploy.runtimes.openvino): fp32 parity with onnxruntime under the f32 precision hint, the
predictors' end-to-end outputs, the IR path, bad inputs, and a run with torch and the model packages blocked.

The networks are tiny ONNX graphs built here with onnx.helper (a SqueezeSegV2-like segmenter: normalised range
channels + the mask in, a 3x3 conv, ReLU, a concat skip and a 3x3 classifier; a ConvDet-like detector), so each
test takes well under a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from deploy.sidecar import DetectionParams, InputSpec, SegmentationParams, Sidecar, default_colors, write_sidecar  # noqa: E402
from squeeze.errors import DataError  # noqa: E402
from squeeze.range_image import ProjectionConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEG_CLASSES = ("background", "car", "pedestrian", "cyclist")
SEG_H, SEG_W = 8, 16
MEAN = (10.0, 0.0, -1.0, 0.25, 12.0)
STD = (12.0, 8.0, 1.0, 0.15, 12.0)
DET_CLASSES = ("Car", "Pedestrian", "Cyclist")
DET_H, DET_W, GRID, ANCHORS = 32, 64, (4, 8), ((16.0, 12.0), (8.0, 20.0))


def _conv(name: str, x: str, out: str, cin: int, cout: int, rng: np.random.Generator, k: int = 3, stride: int = 1,
          spread: float = 1.0, scale: float = 1.0) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """A conv node and its initialisers `{name}.weight` / `{name}.bias`; output channel c has weights scaled by
    spread ** (c / cout), so channels differ in range (what per-channel scales are for)."""
    w = rng.normal(0, scale / np.sqrt(cin * k * k), (cout, cin, k, k)).astype(np.float32)
    w *= (spread ** (np.arange(cout) / cout)).astype(np.float32)[:, None, None, None]
    b = rng.normal(0, 0.1, cout).astype(np.float32)
    node = helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [out], name=f"node_{name}",
                            kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride])
    return node, [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]


def tiny_segmenter(path: Path, seed: int = 0) -> Path:
    """model.onnx + model.json: (B, 5, 8, 16) range_image and (B, 8, 16) mask -> (B, 4, 8, 16) logits."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mask_f", "axis1"], ["mask_c"]),
             helper.make_node("Concat", ["range_image", "mask_c"], ["x0"], axis=1)]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    for name, x, out, cin, cout in (("conv1", "x0", "c1", 6, 16), ("fire2", "r1", "c2", 16, 16)):
        node, w = _conv(name, x, out, cin, cout, rng, spread=20.0)
        nodes += [node, helper.make_node("Relu", [out], ["r" + out[1:]])]
        inits += w
    nodes.append(helper.make_node("Concat", ["r1", "r2"], ["skip"], axis=1))
    node, w = _conv("conv14", "skip", "logits", 32, 4, rng)
    nodes.append(node)
    inits += w
    graph = helper.make_graph(
        nodes, "tiny_seg",
        [helper.make_tensor_value_info("range_image", TensorProto.FLOAT, ["batch", 5, SEG_H, SEG_W]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", SEG_H, SEG_W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, SEG_H, SEG_W])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    projection = ProjectionConfig(height=SEG_H, width=SEG_W, fov_left_deg=45.0, fov_right_deg=-45.0, mode="uniform",
                                  fov_up_deg=2.0, fov_down_deg=-24.9)
    write_sidecar(path, Sidecar(
        "segmentation", "tiny_seg", path.name, "fp32",
        (InputSpec("range_image", (None, 5, SEG_H, SEG_W), "float32"), InputSpec("mask", (None, SEG_H, SEG_W), "bool")),
        ("logits",), SEG_CLASSES, default_colors(SEG_CLASSES),
        segmentation=SegmentationParams(("x", "y", "z", "intensity", "range"), MEAN, STD, False, projection)))
    return path


def tiny_detector(path: Path, seed: int = 0) -> Path:
    """model.onnx + model.json: (B, 3, 32, 64) image -> deltas (B, N, 4), confidence (B, N), class_probs (B, N, 3),
    N = 4 x 8 cells x 2 anchors; channel layout per cell: A x K class logits, A confidences, A x 4 deltas."""
    rng = np.random.default_rng(seed)
    a, k = len(ANCHORS), len(DET_CLASSES)
    n = GRID[0] * GRID[1] * a
    nodes, inits = [], []
    node, w = _conv("conv1", "image", "c1", 3, 16, rng, stride=8, scale=1 / 60)  # pixels minus means: +-128
    inits += w
    nodes += [node, helper.make_node("Relu", ["c1"], ["r1"])]
    node, w = _conv("convdet", "r1", "head", 16, a * (k + 1 + 4), rng)
    nodes.append(node)
    inits += w
    nodes.append(helper.make_node("Transpose", ["head"], ["nhwc"], perm=[0, 2, 3, 1]))
    splits = numpy_helper.from_array(np.array([a * k, a, a * 4], np.int64), "splits")
    inits.append(splits)
    nodes.append(helper.make_node("Split", ["nhwc", "splits"], ["cls", "conf", "dlt"], axis=3))
    for name, shape in (("cls", [0, n, k]), ("conf", [0, n]), ("dlt", [0, n, 4])):
        inits.append(numpy_helper.from_array(np.array(shape, np.int64), f"{name}_shape"))
        nodes.append(helper.make_node("Reshape", [name, f"{name}_shape"], [f"{name}_r"]))
    nodes += [helper.make_node("Softmax", ["cls_r"], ["class_probs"], axis=-1),
              helper.make_node("Sigmoid", ["conf_r"], ["confidence"]),
              helper.make_node("Identity", ["dlt_r"], ["deltas"])]
    graph = helper.make_graph(
        nodes, "tiny_det", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, DET_H, DET_W])],
        [helper.make_tensor_value_info("deltas", TensorProto.FLOAT, ["batch", n, 4]),
         helper.make_tensor_value_info("confidence", TensorProto.FLOAT, ["batch", n]),
         helper.make_tensor_value_info("class_probs", TensorProto.FLOAT, ["batch", n, k])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    write_sidecar(path, Sidecar(
        "detection", "tiny_det", path.name, "fp32", (InputSpec("image", (None, 3, DET_H, DET_W), "float32"),),
        ("deltas", "confidence", "class_probs"), DET_CLASSES, default_colors(DET_CLASSES),
        detection=DetectionParams(DET_W, DET_H, (103.939, 116.779, 123.68), ANCHORS, GRID, 1.0, 64, 0.005, 0.4, 0.0,
                                  "standard", 0.5)))
    return path


def range_images(count: int, seed: int = 0) -> np.ndarray:
    """(count, 8, 16, 6) float32 range images: a road and a box-shaped object per image, about 1/8 pixels empty."""
    rng = np.random.default_rng(seed)
    out = np.zeros((count, SEG_H, SEG_W, 6), np.float32)
    for i in range(count):
        rng_ = 5 + 30 * rng.random((SEG_H, SEG_W))
        r0, c0 = rng.integers(0, SEG_H - 3), rng.integers(0, SEG_W - 5)
        rng_[r0:r0 + 3, c0:c0 + 5] = 4 + rng.random()
        az = np.deg2rad(np.linspace(44, -44, SEG_W))[None, :]
        el = np.deg2rad(np.linspace(1.5, -24, SEG_H))[:, None]
        out[i, ..., 0] = rng_ * np.cos(el) * np.cos(az)
        out[i, ..., 1] = rng_ * np.cos(el) * np.sin(az)
        out[i, ..., 2] = rng_ * np.sin(el)
        out[i, ..., 3] = rng.random((SEG_H, SEG_W))
        out[i, ..., 4] = rng_
        out[i][rng.random((SEG_H, SEG_W)) < 0.125] = 0
    return out


def _ort_run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _has_bf16() -> bool:
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


# ---------------------------------------------------------------------------------------------------- parity
def test_fp32_logits_match_onnxruntime_with_the_f32_hint(tmp_path):
    from deploy.runtimes.openvino import OpenVinoSegmenter

    path = tiny_segmenter(tmp_path / "seg.onnx")
    seg = OpenVinoSegmenter(path)
    images = range_images(3)
    feeds = seg.feeds(images[..., :5], images[..., 4] > 0)
    (reference,) = _ort_run(path, feeds)
    got = seg.network.run(feeds)[0]  # batch 3: one request per item on the batch-1 network
    assert got.shape == (3, 4, SEG_H, SEG_W)
    assert np.abs(got - reference).max() <= 1e-4
    assert np.abs(reference).max() > 1.0  # logits of a real size, so 1e-4 means something


@pytest.mark.skipif(not _has_bf16(), reason="this CPU has no bf16 instructions: OpenVINO runs f32 whatever the hint")
def test_the_precision_hint_is_applied_bf16_moves_the_logits(tmp_path):
    from deploy.runtimes.openvino import OpenVinoSegmenter

    path = tiny_segmenter(tmp_path / "seg.onnx")
    images = range_images(1)
    f32, bf16 = OpenVinoSegmenter(path), OpenVinoSegmenter(path, precision="bf16")
    feeds = f32.feeds(images[..., :5], images[..., 4] > 0)
    (reference,) = _ort_run(path, feeds)
    # bf16 keeps 8 mantissa bits: errors of ~1e-2 on logits of size ~1; the f32 hint stays within 1e-4
    assert np.abs(bf16.network.run(feeds)[0] - reference).max() > 1e-3
    assert np.abs(f32.network.run(feeds)[0] - reference).max() <= 1e-4


def test_segment_range_gives_argmax_labels_and_softmax_scores_zero_on_empty_pixels(tmp_path):
    from deploy.runtimes.openvino import load_openvino

    path = tiny_segmenter(tmp_path / "seg.onnx")
    seg = load_openvino(path)
    image = range_images(1, seed=3)[0]
    out = seg.segment_range(image)
    mask = image[..., 4] > 0
    (logits,) = _ort_run(path, seg.feeds(image[None, ..., :5], mask[None]))
    expected = logits[0].argmax(0)
    probs = np.exp(logits[0] - logits[0].max(0)) / np.exp(logits[0] - logits[0].max(0)).sum(0)
    assert out.labels.dtype == np.int64 and out.scores.dtype == np.float32
    assert np.array_equal(out.labels, np.where(mask, expected, 0))
    np.testing.assert_allclose(out.scores, np.where(mask, probs.max(0), 0), atol=1e-5)
    assert (~mask).sum() > 0 and (out.labels[~mask] == 0).all() and (out.scores[~mask] == 0).all()
    assert len(set(out.labels[mask].tolist())) >= 2  # the test would not see a wrong argmax on one class
    assert seg.class_names == SEG_CLASSES


def test_segment_points_maps_every_point_through_its_pixel(tmp_path):
    from deploy.runtimes.openvino import OpenVinoSegmenter

    seg = OpenVinoSegmenter(tiny_segmenter(tmp_path / "seg.onnx"))
    # three points straight ahead at 10 m, one behind the sensor (outside the front 90 degrees)
    points = np.array([[10, 0, -1, 0.5], [10, 0.1, -1, 0.4], [8, 2, -0.5, 0.2], [-10, 0, 0, 0.5]], np.float32)
    out = seg.segment(points)
    assert out.labels.shape == (4,) and out.labels[3] == 0 and out.scores[3] == 0
    assert (out.scores[:3] > 0).all()
    empty = seg.segment(np.zeros((0, 4), np.float32))
    assert empty.labels.shape == (0,) and empty.scores.shape == (0,)


def test_detector_matches_numpy_postprocessing_of_onnxruntime_outputs(tmp_path):
    from deploy.runtimes.openvino import OpenVinoDetector
    from squeeze.detection import boxes_to_original, postprocess, preprocess_image

    path = tiny_detector(tmp_path / "det.onnx")
    det = OpenVinoDetector(path)
    rgb = np.random.default_rng(5).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    got = det.detect(rgb)
    net, scale = preprocess_image(rgb, DET_W, DET_H)
    deltas, conf, probs = _ort_run(path, {"image": net[None]})
    p = det.params
    want = boxes_to_original(postprocess(deltas[0], conf[0], probs[0], p.anchors(), DET_W, DET_H), scale, (80, 48))
    assert len(want) > 0 and len(got) == len(want)
    np.testing.assert_array_equal(got.classes, want.classes)
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    assert got.boxes[:, [0, 2]].max() <= 79 and got.boxes[:, [1, 3]].max() <= 47  # original pixels


def test_openvino_ir_gives_the_same_logits_as_the_onnx_file(tmp_path):
    from deploy.runtimes.openvino import OpenVinoSegmenter, convert_to_ir

    path = tiny_segmenter(tmp_path / "seg.onnx")
    xml = convert_to_ir(path, tmp_path / "ir" / "seg.xml")
    assert (tmp_path / "ir" / "seg.bin").is_file() and json.loads((tmp_path / "ir" / "seg.json").read_text())[
        "model_file"] == "seg.xml"
    images = range_images(1)
    a, b = OpenVinoSegmenter(path), OpenVinoSegmenter(xml)
    feeds = a.feeds(images[..., :5], images[..., 4] > 0)
    # fp32 weights kept (ov.save_model's default fp16 compression moved these logits by 5e-2)
    assert np.abs(a.network.run(feeds)[0] - b.network.run(feeds)[0]).max() <= 1e-5
    with pytest.raises(DataError, match="ends in .xml"):
        convert_to_ir(path, tmp_path / "seg.bin")


# ------------------------------------------------------------------------------------- int8 requantisation
def qdq_graph(path: Path, drop: tuple[str, ...] = ()) -> Path:
    """A QDQ graph as deploy.quantize writes it ("cpu": a Q/DQ pair on every quantised op's output), with the Q/DQ
    pairs named in `drop` left out (their tensors passed straight on):

        x -q_x-> conv1 (int8) -q_gate-> Sigmoid -> gate -q_head-> head (float weights) -> head_out
                 conv1        -q_cat1-> Concat -q_cat-> conv3 (int8) -> out
        x -q_x-> conv2 (int8) -q_cat2-> Concat
                 conv2        -q_pool-> MaxPool -> pooled

    q_gate feeds a Sigmoid and q_head a float conv: OpenVINO computes both in float, so those pairs only round.
    q_cat1 / q_cat2 feed a Concat that q_cat quantises again. q_x, q_cat and q_pool feed int8 ops and must stay.
    """
    rng = np.random.default_rng(4)
    nodes, inits = [], []

    def qdq(name: str, x: str, scale: float, zero: int) -> str:
        if name in drop:
            return x
        inits.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{name}.scale"),
                      numpy_helper.from_array(np.array(zero, np.uint8), f"{name}.zero")])
        nodes.extend([helper.make_node("QuantizeLinear", [x, f"{name}.scale", f"{name}.zero"], [f"{name}.q"]),
                      helper.make_node("DequantizeLinear", [f"{name}.q", f"{name}.scale", f"{name}.zero"],
                                       [f"{name}.dq"])])
        return f"{name}.dq"

    def conv(name: str, x: str, cin: int, cout: int, int8: bool = True) -> str:
        w = rng.normal(0, 1 / np.sqrt(cin * 9), (cout, cin, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(rng.normal(0, 0.1, cout).astype(np.float32), f"{name}.bias"))
        weight = f"{name}.weight"
        if int8:
            scale = np.abs(w).reshape(cout, -1).max(1) / 127
            w8 = np.round(w / scale[:, None, None, None]).astype(np.int8)
            inits.extend([numpy_helper.from_array(w8, f"{name}.w8"),
                      numpy_helper.from_array(scale.astype(np.float32), f"{name}.wscale"),
                      numpy_helper.from_array(np.zeros(cout, np.int8), f"{name}.wzero")])
            nodes.append(helper.make_node("DequantizeLinear", [f"{name}.w8", f"{name}.wscale", f"{name}.wzero"],
                                          [weight], axis=0))
        else:
            inits.append(numpy_helper.from_array(w, weight))
        nodes.append(helper.make_node("Conv", [x, weight, f"{name}.bias"], [name], kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1]))
        return name

    x = qdq("q_x", "x", 4 / 255, 128)
    c1, c2 = conv("conv1", x, 4, 8), conv("conv2", x, 4, 8)
    nodes.append(helper.make_node("Sigmoid", [qdq("q_gate", c1, 8 / 255, 128)], ["gate"]))
    conv("head", qdq("q_head", "gate", 1 / 255, 0), 8, 4, int8=False)
    nodes.append(helper.make_node("Identity", ["head"], ["head_out"]))
    nodes.append(helper.make_node("Concat", [qdq("q_cat1", c1, 8 / 255, 128), qdq("q_cat2", c2, 8 / 255, 128)],
                                  ["cat"], axis=1))
    conv("conv3", qdq("q_cat", "cat", 8 / 255, 128), 16, 4)
    nodes.append(helper.make_node("Identity", ["conv3"], ["out"]))
    nodes.append(helper.make_node("MaxPool", [qdq("q_pool", c2, 8 / 255, 128)], ["pooled"], kernel_shape=[2, 2],
                                  strides=[2, 2]))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in
               (("head_out", [1, 4, 8, 16]), ("out", [1, 4, 8, 16]), ("pooled", [1, 8, 4, 8]))]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 16])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_int8_pairs_that_only_round_values_for_float_ops_or_a_requantised_concat_are_dropped(tmp_path):
    from deploy.runtimes.openvino import drop_float_requantization

    core = ov.Core()
    x = np.random.default_rng(1).uniform(-2, 2, (1, 4, 8, 16)).astype(np.float32)
    model = core.read_model(str(qdq_graph(tmp_path / "qdq.onnx")))
    assert drop_float_requantization(model) == 4  # q_gate, q_head, q_cat1, q_cat2
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops()) == 3  # q_x, q_cat, q_pool
    assert drop_float_requantization(model) == 0  # nothing left to drop

    def run(m) -> list[np.ndarray]:
        compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return [np.asarray(v) for v in compiled({"x": x}).values()]

    # What runs is the graph without those four pairs, as onnxruntime computes it; the graph with them differs by
    # more than float noise (they rounded the gate's input and the concat's inputs to 8 bits).
    dropped = qdq_graph(tmp_path / "dropped.onnx", drop=("q_gate", "q_head", "q_cat1", "q_cat2"))
    want, kept = _ort_run(dropped, {"x": x}), _ort_run(tmp_path / "qdq.onnx", {"x": x})
    for got, w in zip(run(model), want, strict=True):
        assert np.abs(got - w).max() <= 1e-4
    assert max(np.abs(w - k).max() for w, k in zip(want, kept, strict=True)) > 1e-3
    # A float model has no pairs: nothing to drop.
    seg = tiny_segmenter(tmp_path / "seg.onnx")
    assert drop_float_requantization(core.read_model(str(seg))) == 0
    # The IR written from the QDQ model has them dropped already (it runs only in OpenVINO).
    from deploy.runtimes.openvino import convert_to_ir

    (tmp_path / "qdq.json").write_text(seg.with_suffix(".json").read_text().replace('"seg.onnx"', '"qdq.onnx"'))
    ir = core.read_model(str(convert_to_ir(tmp_path / "qdq.onnx", tmp_path / "ir" / "qdq.xml")))
    assert sum(op.get_type_name() == "FakeQuantize" for op in ir.get_ordered_ops()) == 3


# ----------------------------------------------------------------------------------------------- bad inputs
def test_bad_models_sidecars_and_options_are_named(tmp_path):
    from deploy.runtimes.openvino import OpenVinoDetector, OpenVinoSegmenter

    path = tiny_segmenter(tmp_path / "seg.onnx")
    with pytest.raises(ValueError, match="precision must be one of"):
        OpenVinoSegmenter(path, precision="fp16")
    with pytest.raises(DataError, match="not a detector"):
        OpenVinoDetector(path)
    with pytest.raises(DataError, match="OpenVINO reads"):
        OpenVinoSegmenter(tmp_path / "seg.engine")
    with pytest.raises(DataError, match="no such model file"):
        OpenVinoSegmenter(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    (tmp_path / "junk.json").write_text((tmp_path / "seg.json").read_text())
    with pytest.raises(DataError, match="junk.onnx: OpenVINO cannot read"):
        OpenVinoSegmenter(junk)
    other = tiny_detector(tmp_path / "det.onnx")
    side = json.loads((tmp_path / "seg.json").read_text())
    (tmp_path / "det.json").write_text(json.dumps(side))  # a segmenter's sidecar beside a detector
    with pytest.raises(DataError, match="inputs .* are not the sidecar's"):
        OpenVinoSegmenter(other)
    (tmp_path / "seg.json").unlink()
    with pytest.raises(DataError, match="no sidecar beside seg.onnx"):
        OpenVinoSegmenter(path)


# ------------------------------------------------------------------------------------------------ no torch
BLOCKED_RUN = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "squeezeseg", "squeezedet"}:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
import numpy as np
from deploy.runtimes.openvino import load_openvino
seg = load_openvino(sys.argv[1])
image = np.load(sys.argv[2])
out = seg.segment_range(image)
assert not any(m.split(".")[0] in {"torch", "squeezeseg", "squeezedet"} for m in sys.modules)
print(out.labels.sum(), round(float(out.scores.sum()), 3))
"""


def test_runtime_runs_with_torch_and_the_model_packages_blocked(tmp_path):
    from deploy.runtimes.openvino import OpenVinoSegmenter

    path = tiny_segmenter(tmp_path / "seg.onnx")
    image = range_images(1, seed=7)[0]
    np.save(tmp_path / "image.npy", image)
    expected = OpenVinoSegmenter(path).segment_range(image)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", BLOCKED_RUN, str(path), str(tmp_path / "image.npy")], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(expected.labels.sum()), str(round(float(expected.scores.sum()), 3))]


# --------------------------------------------------------------------------------------------------- bench
def test_interleaved_timing_calls_each_function_once_per_round_in_turn():
    from deploy.bench import run_interleaved

    calls: list[str] = []
    ms = run_interleaved([lambda: calls.append("a"), lambda: calls.append("b")], runs=3, warmup=2)
    assert calls == ["a", "b"] * 5 and ms.shape == (3, 2) and (ms >= 0).all()
    with pytest.raises(ValueError, match="runs must be >= 1"):
        run_interleaved([lambda: None], runs=0)
    with pytest.raises(ValueError, match="settle_ms >= 0"):
        run_interleaved([lambda: None], settle_ms=-1)


def test_bench_times_network_and_end_to_end_in_the_same_rounds():
    """A network-only figure and its end-to-end one are taken under the same load: one round calls every candidate
    in every mode, so the two can be compared (e2e minus network is the pre- and post-processing)."""
    from deploy.bench import Candidate, bench

    calls: list[str] = []
    cands = [Candidate(name, "segmentation", "onnxruntime", "fp32", lambda n=name: calls.append(f"{n} net"),
                       lambda n=name: calls.append(f"{n} e2e")) for name in ("a", "b")]
    rows = bench(cands, runs=2, warmup=1, settle_ms=0)
    assert calls == ["a net", "b net", "a e2e", "b e2e"] * 3
    assert [(r.model, r.mode, r.runs) for r in rows] == [("a", "network", 2), ("b", "network", 2),
                                                         ("a", "end_to_end", 2), ("b", "end_to_end", 2)]
    with pytest.raises(ValueError, match="mode must be one of"):
        bench(cands, runs=1, modes=("network", "warm"))
    assert calls == ["a net", "b net", "a e2e", "b e2e"] * 3  # refused before calling anything


def test_each_timed_call_starts_after_the_previous_runtime_has_settled():
    """onnxruntime's threads spin ~40 ms after a run; a candidate timed at once behind it ran 2x slower. Every timed
    call must start at least settle_ms after the call before it returned (warm-up calls need not wait)."""
    import time

    from deploy.bench import SETTLE_MS, run_interleaved

    assert SETTLE_MS >= 45.0  # above the measured spin
    events: list[tuple[str, float]] = []

    def call(name):
        def run():
            events.append((f"{name} start", time.perf_counter()))
            events.append((f"{name} end", time.perf_counter()))
        return run

    run_interleaved([call("a"), call("b")], runs=2, warmup=1, settle_ms=20.0)
    timed = events[4:]  # after one warm-up round of two calls
    gaps = [timed[i + 1][1] - timed[i][1] for i in range(1, len(timed) - 1, 2)]
    assert [e[0] for e in timed] == ["a start", "a end", "b start", "b end"] * 2
    assert len(gaps) == 3 and min(gaps) >= 0.019


def test_synthetic_scan_is_ring_ordered_and_projects_to_every_row():
    from deploy.bench import synthetic_scan
    from squeeze.range_image import project_scan

    points = synthetic_scan(rings=64, points_per_ring=1024)
    image, pixel_of_point = project_scan(points)  # ring mode: rows from the point order
    assert image.mask.any(axis=1).all()  # every one of the 64 rings lands in its own row
    assert (pixel_of_point >= 0).sum() == 64 * 256  # the front 90 degrees: a quarter of each ring
    # the lowest ring hits the road 1.73 m below: range 1.73 / sin(24.9 deg)
    assert image.range[63][image.mask[63]].mean() == pytest.approx(1.73 / np.sin(np.deg2rad(24.9)), rel=0.01)


def test_bench_command_times_each_runtime_and_precision_and_writes_json_and_chart(tmp_path, capsys):
    import cv2

    from squeeze_suite.cli import main

    model = tiny_segmenter(tmp_path / "seg.onnx")
    out = tmp_path / "bench"
    assert main(["deploy", "bench", str(model), "--runs", "3", "--warmup", "1", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    got = {(r["runtime"], r["precision"], r["mode"]) for r in rows}
    expected = {(rt, p, m) for rt, p in (("onnxruntime", "fp32"), ("openvino", "fp32")) for m in
                ("network", "end_to_end")}
    if _has_bf16():
        expected |= {("openvino", "bf16", m) for m in ("network", "end_to_end")}
    assert got == expected and len(rows) == len(expected)
    for r in rows:
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["fps"] == pytest.approx(1000 / r["p50_ms"], rel=1e-2)
        assert (r["runs"], r["threads"], r["model"]) == (3, 2, "seg")
    chart = cv2.imread(str(out / "bench.png"))[:, :, ::-1]
    assert chart.shape[0] > 100 and (chart == (66, 133, 244)).all(axis=2).sum() > 100  # network bars, in blue
    assert (chart == (244, 160, 0)).all(axis=2).sum() > 100  # end-to-end bars, in orange
    assert "openvino" in capsys.readouterr().out
    assert main(["deploy", "bench", str(model), "--runs", "0", "--out", str(out)]) == 2
    assert main(["deploy", "bench", str(model), "--settle-ms", "-1", "--out", str(out)]) == 2


def test_bench_help_states_the_settle_default_it_uses(capsys):
    from deploy.bench import SETTLE_MS
    from squeeze_suite.cli import main

    with pytest.raises(SystemExit):
        main(["deploy", "bench", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"(default {SETTLE_MS:g}, deploy.bench.SETTLE_MS; 0: calls back to back)" in help_text
