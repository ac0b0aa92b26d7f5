"""INT8 for TensorRT (`squeeze deploy quantize --target tensorrt`): symmetric int8 activations (zero point 0),
per-channel int8 weights (axis 0 for Conv, 1 for ConvTranspose: the output channels), float biases, Q/DQ on the
inputs of the weighted ops only and the ReLUs kept; `squeeze deploy trt --int8` takes it and refuses the CPU flavour;
onnxruntime still runs it close to fp32.

The network is a tiny hand-built ONNX graph with a strided conv, a transposed conv and a skip (SqueezeSegV2's
pattern), with the sidecar of tests/test_deploy_openvino.py's segmenter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from deploy.formats import TARGETS, get_target  # noqa: E402
from deploy.quantize import calibration_inputs, int8_weights, quantize_model  # noqa: E402
from deploy.sidecar import read_sidecar, write_sidecar  # noqa: E402
from deploy.tensorrt import qdq_faults  # noqa: E402
from squeeze_suite.cli import main  # noqa: E402
from tests.test_deploy_int8 import _calib_folder  # noqa: E402
from tests.test_deploy_openvino import MEAN, SEG_H, SEG_W, STD, _conv, range_images, tiny_segmenter  # noqa: E402

WEIGHTED = ("Conv", "ConvTranspose")


def deconv_segmenter(path: Path, seed: int = 0) -> Path:
    """model.onnx + model.json, the interface of tiny_segmenter: conv1 (stride 1 x 2) -> ReLU -> fire (3x3) -> ReLU
    -> deconv (ConvTranspose 1 x 4, stride 1 x 2, back to full width) -> ReLU, concatenated with the input
    features (a skip) -> 3x3 classifier."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Cast", ["mask"], ["mask_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["mask_f", "axis1"], ["mask_c"]),
             helper.make_node("Concat", ["range_image", "mask_c"], ["x0"], axis=1)]
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    node, w = _conv("conv1", "x0", "c1", 6, 16, rng, spread=20.0)
    node.attribute.remove(next(a for a in node.attribute if a.name == "strides"))
    node.attribute.append(helper.make_attribute("strides", [1, 2]))
    nodes += [node, helper.make_node("Relu", ["c1"], ["r1"])]
    inits += w
    node, w = _conv("fire2", "r1", "c2", 16, 16, rng, spread=20.0)
    nodes += [node, helper.make_node("Relu", ["c2"], ["r2"])]
    inits += w
    wt = (rng.normal(0, 0.25, (16, 12, 1, 4)) * (10.0 ** (np.arange(12) / 12))[None, :, None, None]).astype(np.float32)
    inits += [numpy_helper.from_array(wt, "deconv3.weight"),
              numpy_helper.from_array(rng.normal(0, 0.1, 12).astype(np.float32), "deconv3.bias")]
    nodes += [helper.make_node("ConvTranspose", ["r2", "deconv3.weight", "deconv3.bias"], ["c3"], name="node_deconv3",
                               kernel_shape=[1, 4], strides=[1, 2], pads=[0, 1, 0, 1]),
              helper.make_node("Relu", ["c3"], ["r3"]),
              helper.make_node("Concat", ["x0", "r3"], ["skip"], axis=1)]
    node, w = _conv("conv14", "skip", "logits", 18, 4, rng)
    nodes.append(node)
    inits += w
    graph = helper.make_graph(
        nodes, "tiny_deconv_seg",
        [helper.make_tensor_value_info("range_image", TensorProto.FLOAT, ["batch", 5, SEG_H, SEG_W]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", SEG_H, SEG_W])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, SEG_H, SEG_W])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    # the sidecar of tiny_segmenter (same inputs, outputs, classes and projection)
    other = tiny_segmenter(path.with_name("_sidecar_source.onnx"))
    import dataclasses

    write_sidecar(path, dataclasses.replace(read_sidecar(other), model_name="tiny_deconv_seg", model_file=path.name))
    return path


def _feeds(images: np.ndarray) -> dict[str, np.ndarray]:
    norm = ((images[..., :5] - np.array(MEAN, np.float32)) / np.array(STD, np.float32)).transpose(0, 3, 1, 2)
    return {"range_image": np.ascontiguousarray(norm, np.float32), "mask": images[..., 4] > 0}


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("trt_int8")
    model = deconv_segmenter(folder / "seg.onnx")
    feeds = calibration_inputs(read_sidecar(model), _calib_folder(folder / "data", count=8))
    return {"fp32": model,
            "tensorrt": quantize_model(model, folder / "seg_trt.onnx", feeds, target="tensorrt").path,
            "cpu": quantize_model(model, folder / "seg_cpu.onnx", feeds).path}


def test_the_tensorrt_graph_is_symmetric_int8_with_float_biases_and_qdq_on_weighted_inputs(quantized):
    fp32, q = onnx.load(str(quantized["fp32"])), onnx.load(str(quantized["tensorrt"]))
    ops = [n.op_type for n in q.graph.node]
    # Q/DQ on the 4 activation tensors the weighted ops read (x0, r1, r2, skip), one DQ per weight
    assert ops.count("QuantizeLinear") == 4 and ops.count("DequantizeLinear") == 4 + 4
    assert ops.count("Relu") == 3 == [n.op_type for n in fp32.graph.node].count("Relu")  # ReLUs kept
    assert ops.count("Conv") == 3 and ops.count("ConvTranspose") == 1
    # every zero point is int8 and 0; no uint8, no int32 tensor anywhere
    dtypes = {t.data_type for t in q.graph.initializer}
    assert TensorProto.UINT8 not in dtypes and TensorProto.INT32 not in dtypes
    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero = next(t for t in q.graph.initializer if t.name == n.input[2])
            assert zero.data_type == TensorProto.INT8 and not numpy_helper.to_array(zero).any(), n.name
    # activation scales: one per tensor, the symmetric range max|x| / 127 of the calibration frames
    assert all(_constant(q, n.input[1]).shape == () for n in q.graph.node if n.op_type == "QuantizeLinear")
    # weights: int8 per output channel (axis 0 for Conv, 1 for ConvTranspose), biases float straight into the op
    producer = {o: n for n in q.graph.node for o in n.output}
    inits = {t.name: t for t in q.graph.initializer}
    assert len(int8_weights(q)) == 4
    for n in (n for n in q.graph.node if n.op_type in WEIGHTED):
        dq = producer[n.input[1]]
        axis = {a.name: a.i for a in dq.attribute}.get("axis", 1)
        w, scale = _constant(q, dq.input[0]), _constant(q, dq.input[1])
        assert w.dtype == np.int8 and axis == (0 if n.op_type == "Conv" else 1)
        assert scale.shape == (w.shape[axis],) and len(np.unique(scale)) == w.shape[axis]
        assert np.abs(w).max() == 127  # symmetric: each channel's largest weight takes the full range
        assert n.input[2] in inits and inits[n.input[2]].data_type == TensorProto.FLOAT
        # no Q on the weighted op's output: TensorRT fuses conv + ReLU + the next Q itself
        assert not any(n.output[0] in m.input for m in q.graph.node if m.op_type == "QuantizeLinear")
    assert qdq_faults(q.graph) == {}
    side = json.loads(quantized["tensorrt"].with_suffix(".json").read_text())
    assert side["precision"] == "int8" and side["export"]["quantization"] == get_target("tensorrt").record() == {
        "target": "tensorrt", "activations": "int8 symmetric (zero point 0)", "weights": "int8 symmetric per-channel",
        "bias": "float", "format": "QDQ"}
    # the CPU flavour is what TensorRT refuses: uint8 activations and int32 biases
    cpu = qdq_faults(onnx.load(str(quantized["cpu"])).graph)
    assert set(cpu) == {"uint8 (asymmetric activations)", "int32 (quantised biases)"} and len(cpu["int32 (quantised "
                                                                                                   "biases)"]) == 4


def test_onnxruntime_runs_the_tensorrt_graph_close_to_fp32(quantized):
    """About as close to fp32 as the CPU flavour, on frames not used for calibration: measured 98.5 % equal labels
    (CPU flavour 98.6 %), mean |error| 3.5 % of the mean |logit| (CPU 2.6 %: uint8 gives a ReLU's output 8 bits,
    symmetric int8 7)."""
    images = range_images(12, seed=99)
    feeds = _feeds(images)
    mask = feeds["mask"]

    def run(path: Path) -> np.ndarray:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]

    ref = run(quantized["fp32"])
    figures = {}
    for target in ("tensorrt", "cpu"):
        got = run(quantized[target])
        figures[target] = (float((ref.argmax(1) == got.argmax(1))[mask].mean()),
                           float(np.abs(ref - got).mean() / np.abs(ref).mean()))
    (agree, err), (cpu_agree, cpu_err) = figures["tensorrt"], figures["cpu"]
    assert agree >= 0.97 and 1e-3 < err < 0.06, figures  # > 1e-3: it really is quantised
    assert agree >= cpu_agree - 0.01 and err <= 1.6 * cpu_err, figures


def test_the_cpu_graph_folds_relus_into_uint8_and_keeps_the_float_path_of_a_float_layer(quantized, tmp_path):
    """CPU target: ReLUs, pools and concats are quantised, so every ReLU is folded into its conv's uint8 range
    (onnxruntime then chains QLinearConvs). A layer kept in float keeps its ReLU and the concat after it float: no
    Q/DQ between it and the next weighted layer."""
    q = onnx.load(str(quantized["cpu"]))
    ops = [n.op_type for n in q.graph.node]
    assert "Relu" not in ops and ops.count("Conv") == 3 and ops.count("ConvTranspose") == 1
    quantised_inputs = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    concats = [n for n in q.graph.node if n.op_type == "Concat"]
    assert all(c.output[0] in quantised_inputs for c in concats[1:])  # the skip concat's output is int8
    model = quantized["fp32"]
    feeds = calibration_inputs(read_sidecar(model), _calib_folder(tmp_path / "data", count=4))
    kept = onnx.load(str(quantize_model(model, tmp_path / "kept.onnx", feeds, keep_float=["deconv3"]).path))
    producer = {o: n for n in kept.graph.node for o in n.output}
    deconv = next(n for n in kept.graph.node if n.op_type == "ConvTranspose")
    relu = next(n for n in kept.graph.node if n.op_type == "Relu")  # the deconv's, kept
    assert relu.input[0] == deconv.output[0] and deconv.input[1] not in producer  # its weight a float initializer
    quantised = {n.input[0] for n in kept.graph.node if n.op_type == "QuantizeLinear"}
    assert deconv.output[0] not in quantised and relu.output[0] not in quantised  # float up to the concat
    assert [n.op_type for n in kept.graph.node].count("Relu") == 1  # the other two still fold


def test_targets_are_one_table_linked_to_the_formats():
    assert list(TARGETS) == ["cpu", "tensorrt"]
    assert TARGETS["cpu"].formats == ("onnx", "openvino") and TARGETS["tensorrt"].formats == ("tensorrt",)
    with pytest.raises(ValueError, match="unknown quantisation target 'gpu'; choose one of cpu, tensorrt"):
        get_target("gpu")


def test_quantize_for_tensorrt_then_trt_int8_accepts_it_and_refuses_the_cpu_flavour(tmp_path, capsys):
    if shutil.which("trtexec") or __import__("importlib").util.find_spec("tensorrt"):
        pytest.skip("TensorRT is installed here: the engine build itself is tests/test_deploy_tensorrt.py's")
    model = deconv_segmenter(tmp_path / "seg.onnx")
    calib = _calib_folder(tmp_path / "data", count=4)
    assert main(["deploy", "quantize", str(model), "--calib", str(calib), "-o", str(tmp_path / "trt8.onnx"),
                 "--target", "tensorrt", "--frames", "4", "--keep-worst", "0"]) == 0
    assert "target tensorrt" in capsys.readouterr().out
    # accepted: every check passes, and without TensorRT here it stops naming what to install (exit 2)
    assert main(["deploy", "trt", str(tmp_path / "trt8.onnx"), "--int8"]) == 2
    err = capsys.readouterr().err
    assert "neither the tensorrt Python package nor trtexec is available here" in err and "cannot build" not in err
    assert "--int8" in (tmp_path / "trt8.int8.engine.trtexec.txt").read_text()
    assert main(["deploy", "quantize", str(model), "--calib", str(calib), "-o", str(tmp_path / "cpu8.onnx"),
                 "--frames", "4", "--keep-worst", "0"]) == 0
    capsys.readouterr()
    assert main(["deploy", "trt", str(tmp_path / "cpu8.onnx"), "--int8"]) == 2
    err = capsys.readouterr().err
    assert "cpu8.onnx: Q/DQ nodes TensorRT cannot build: int32 (quantised biases): 4 (" in err
    assert "uint8 (asymmetric activations): 16 (" in err and "quantise with '--target tensorrt' for TensorRT" in err
    with pytest.raises(SystemExit):  # argparse: not a choice
        main(["deploy", "quantize", str(model), "--calib", str(calib), "-o", str(tmp_path / "x.onnx"), "--target",
              "gpu"])
    assert "invalid choice: 'gpu'" in capsys.readouterr().err
