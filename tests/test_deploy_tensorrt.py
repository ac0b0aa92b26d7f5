"""deploy: `squeeze deploy trt` and the TensorRT runtime.

Here (no GPU, no TensorRT): the command without TensorRT (message, exit code, the trtexec command line checked
against the sidecar's input names and shapes, the engine's sidecar), the build through a stand-in trtexec on PATH,
the operator check and precision checks refusing bad models, the runtime's clear error without the package, and
bench/bench_gpu_latency.py without CUDA. Where TensorRT and a GPU are present, a real engine is built and compared
with onnxruntime.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from deploy.formats import load_predictor  # noqa: E402
from deploy.sidecar import DetectionParams, InputSpec, SegmentationParams, Sidecar, read_sidecar, write_sidecar  # noqa: E402
from deploy.tensorrt import build_engine  # noqa: E402
from squeeze.errors import DataError  # noqa: E402
from squeeze.range_image import ProjectionConfig  # noqa: E402
from squeeze_suite.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("unknown", "car", "pedestrian", "cyclist")
COLORS = ((0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255))


def seg_model(folder: Path, name: str = "seg", op: str = "Conv", qdq: str | None = None) -> Path:
    """A tiny segmentation ONNX model (range_image (B, 5, 8, 16) float, mask (B, 8, 16) bool -> logits (B, 4, 8, 16),
    one 1x1 conv, or `op` in its place) and its sidecar; `qdq` "int8" puts a symmetric int8 Q/DQ pair (zero point
    0) before the conv, "uint8" an asymmetric uint8 one (zero point 128)."""
    w = numpy_helper.from_array(np.full((4, 5, 1, 1), 0.1, np.float32), "w")
    nodes, x = [], "range_image"
    inits = [w]
    if qdq:  # what squeeze deploy quantize writes around a quantised conv's input
        inits += [numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8) if qdq == "int8" else np.array(128, np.uint8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["range_image", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        x = "dq"
    nodes.append(helper.make_node(op, [x, "w"], ["logits"]))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("range_image", TensorProto.FLOAT, ["batch", 5, 8, 16]),
                        helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 8, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4, 8, 16])], inits)
    path = folder / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    write_sidecar(path, Sidecar(
        task="segmentation", model_name="squeezeseg_v2_kitti", model_file=path.name,
        precision="int8" if qdq else "fp32",
        inputs=(InputSpec("range_image", (None, 5, 8, 16), "float32"), InputSpec("mask", (None, 8, 16), "bool")),
        output_names=("logits",), class_names=CLASSES, class_colors=COLORS,
        segmentation=SegmentationParams(("x", "y", "z", "intensity", "range"), (0.0,) * 5, (1.0,) * 5, True,
                                        ProjectionConfig(height=8, width=16)),
        export={"exporter": "hand", "opset": 18}))
    return path


def det_model(folder: Path) -> Path:
    """A tiny detection ONNX model with a fixed batch (image (2, 3, 16, 32)): no dynamic axis, so no shape flags."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["deltas"])], "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [2, 3, 16, 32])],
        [helper.make_tensor_value_info("deltas", TensorProto.FLOAT, [2, 3, 16, 32])])
    path = folder / "det.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    write_sidecar(path, Sidecar(
        task="detection", model_name="squeezedet_kitti", model_file=path.name, precision="fp32",
        inputs=(InputSpec("image", (2, 3, 16, 32), "float32"),), output_names=("deltas", "confidence", "class_probs"),
        class_names=CLASSES[1:], class_colors=COLORS[1:],
        detection=DetectionParams(32, 16, (103.9, 116.8, 123.7), ((4.0, 4.0),), (1, 2), 1.0, 64, 0.005, 0.4, 0.0,
                                  "reference", 0.5)))
    return path


@pytest.fixture
def no_tensorrt(monkeypatch, tmp_path):
    """Neither the tensorrt package nor trtexec: an import of tensorrt fails and PATH holds an empty folder."""
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setenv("PATH", str(empty))
    return empty


def command_line(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and lines[0].startswith("# build ")
    return shlex.split(lines[1])


def test_without_tensorrt_writes_the_fp16_trtexec_command_and_the_engine_sidecar(tmp_path, no_tensorrt, capsys):
    model = seg_model(tmp_path)
    onnx_sidecar = (tmp_path / "seg.json").read_bytes()
    rc = main(["deploy", "trt", str(model), "--fp16", "--workspace", "512", "--max-batch", "4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "neither the tensorrt Python package nor trtexec" in err and "JetPack" in err
    assert "pip install tensorrt" in err
    engine = tmp_path / "seg.fp16.engine"
    assert not engine.exists()
    commands = tmp_path / "seg.fp16.engine.trtexec.txt"
    assert str(commands) in err
    assert command_line(commands) == [
        "trtexec", f"--onnx={model}", f"--saveEngine={engine}", "--fp16",
        "--minShapes=range_image:1x5x8x16,mask:1x8x16", "--optShapes=range_image:1x5x8x16,mask:1x8x16",
        "--maxShapes=range_image:4x5x8x16,mask:4x8x16", "--memPoolSize=workspace:512M"]
    side = read_sidecar(engine)
    assert (side.model_file, side.precision) == ("seg.fp16.engine", "fp16")
    assert side.inputs == read_sidecar(model).inputs and side.segmentation == read_sidecar(model).segmentation
    assert side.export["tensorrt"] == {"onnx": "seg.onnx", "precision": "fp16", "workspace_mb": 512, "max_batch": 4}
    assert (tmp_path / "seg.json").read_bytes() == onnx_sidecar  # the ONNX model's sidecar is untouched


def test_without_tensorrt_writes_the_int8_command_of_a_qdq_model(tmp_path, no_tensorrt, capsys):
    model = seg_model(tmp_path, "seg_int8", qdq="int8")
    out = tmp_path / "board" / "car.engine"
    out.parent.mkdir()
    assert main(["deploy", "trt", str(model), "--int8", "-o", str(out)]) == 2
    assert command_line(tmp_path / "board" / "car.engine.trtexec.txt") == [
        "trtexec", f"--onnx={model}", f"--saveEngine={out}", "--int8",
        "--minShapes=range_image:1x5x8x16,mask:1x8x16", "--optShapes=range_image:1x5x8x16,mask:1x8x16",
        "--maxShapes=range_image:1x5x8x16,mask:1x8x16", "--memPoolSize=workspace:1024M"]
    assert read_sidecar(out).precision == "int8"
    # A QDQ model is int8 without the flag too, and refuses fp16.
    with pytest.raises(DataError, match="neither the tensorrt"):
        build_engine(model)
    assert "--int8" in command_line(tmp_path / "seg_int8.int8.engine.trtexec.txt")
    with pytest.raises(DataError, match="builds as int8"):
        build_engine(model, "fp16")
    # uint8 asymmetric activations (what squeeze deploy quantize writes for the CPU runtimes) do not build.
    uint8 = seg_model(tmp_path, "seg_uint8", qdq="uint8")
    with pytest.raises(DataError, match=r"cannot build: uint8 \(asymmetric activations\): 2 \(q, dq\)\. .*symmetric"):
        build_engine(uint8, "int8")
    assert not (tmp_path / "seg_uint8.int8.engine.trtexec.txt").exists()


def test_a_fixed_batch_model_gets_no_shape_flags_and_fp32_turns_tf32_off(tmp_path, no_tensorrt):
    model = det_model(tmp_path)
    with pytest.raises(DataError, match="neither the tensorrt"):
        build_engine(model)
    assert command_line(tmp_path / "det.fp32.engine.trtexec.txt") == [
        "trtexec", f"--onnx={model}", f"--saveEngine={tmp_path / 'det.fp32.engine'}", "--noTF32",
        "--memPoolSize=workspace:1024M"]
    assert read_sidecar(tmp_path / "det.fp32.engine").detection == read_sidecar(model).detection


def test_builds_through_trtexec_on_path_with_the_written_command(tmp_path, no_tensorrt, capsys):
    log = tmp_path / "argv.json"
    fake = no_tensorrt / "trtexec"  # a stand-in: records its arguments and writes the engine file
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, sys
        json.dump(sys.argv[1:], open({str(log)!r}, "w"))
        save = next(a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--saveEngine="))
        open(save, "wb").write(b"ENGINE")
        """))
    fake.chmod(0o755)
    model = seg_model(tmp_path)
    assert main(["deploy", "trt", str(model), "--fp16"]) == 0
    assert "(fp16, trtexec," in capsys.readouterr().out
    assert (tmp_path / "seg.fp16.engine").read_bytes() == b"ENGINE"
    assert json.loads(log.read_text()) == command_line(tmp_path / "seg.fp16.engine.trtexec.txt")[1:]


def test_a_failing_trtexec_is_reported_with_its_output(tmp_path, no_tensorrt):
    fake = no_tensorrt / "trtexec"
    fake.write_text("#!/bin/sh\necho '[E] Error[4]: unsupported layer' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(DataError, match=r"trtexec failed \(exit 1\): \[E\] Error\[4\]: unsupported layer"):
        build_engine(seg_model(tmp_path), "fp16")


def test_an_operator_tensorrt_lacks_is_refused_before_anything_is_written(tmp_path, no_tensorrt, capsys):
    model = seg_model(tmp_path, op="Col2Im")
    assert main(["deploy", "trt", str(model), "--fp16"]) == 2
    err = capsys.readouterr().err
    assert "operator(s) Col2Im are not supported by TensorRT" in err and str(model) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty_bin", "seg.json", "seg.onnx"]


def test_bad_precisions_and_paths_fail_loudly(tmp_path, no_tensorrt, capsys):
    model = seg_model(tmp_path)
    with pytest.raises(DataError, match="needs a quantised \\(QDQ\\) model: run 'squeeze deploy quantize"):
        build_engine(model, "int8")
    with pytest.raises(DataError, match="would overwrite the ONNX model's"):
        build_engine(model, "fp16", tmp_path / "seg.engine")  # seg.engine's sidecar is seg.json
    with pytest.raises(DataError, match="must end in .engine"):
        build_engine(model, "fp16", tmp_path / "seg.trt")
    with pytest.raises(DataError, match="from an exported .onnx model"):
        build_engine(tmp_path / "seg.json")
    with pytest.raises(DataError, match="missing.onnx: no such model file"):
        build_engine(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="workspace"):
        build_engine(model, "fp16", workspace_mb=0)
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf at all")
    (tmp_path / "bad.json").write_bytes((tmp_path / "seg.json").read_bytes())
    with pytest.raises(DataError, match="not an ONNX model"):
        build_engine(tmp_path / "bad.onnx")
    with pytest.raises(SystemExit):  # argparse: the two precisions exclude each other
        main(["deploy", "trt", str(model), "--fp16", "--int8"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_runtime_without_tensorrt_names_the_package(tmp_path, no_tensorrt):
    model = seg_model(tmp_path)
    with pytest.raises(DataError):
        build_engine(model, "fp16")
    engine = tmp_path / "seg.fp16.engine"
    engine.write_bytes(b"ENGINE")
    with pytest.raises(DataError, match="needs the tensorrt package"):
        load_predictor(engine)
    from deploy.runtimes.tensorrt import TensorRTNetwork

    with pytest.raises(ImportError, match="needs the tensorrt package: JetPack"):
        TensorRTNetwork(engine)
    with pytest.raises(DataError, match="reads .engine files"):
        TensorRTNetwork(model)


def fake_tensorrt_and_cuda(monkeypatch) -> dict[int, bytearray]:
    """Stand-ins for tensorrt and cuda-python's runtime, enough for TensorRTNetwork: "device memory" is a dict of
    bytearrays, and the "engine" (the bytes b"ENGINE") computes logits[:, k] = range_image[:, k % 5] * (k + 1)."""
    import ctypes
    import importlib.machinery
    import itertools
    import types

    memory: dict[int, bytearray] = {}
    pointers = itertools.count(4096, 4096)

    def malloc(n):
        ptr = next(pointers)
        memory[ptr] = bytearray(n)
        return 0, ptr

    def memcpy(dst, src, n, kind, stream):
        if kind == "h2d":
            memory[dst][:n] = ctypes.string_at(src, n)
        else:
            ctypes.memmove(dst, bytes(memory[src][:n]), n)
        return (0,)

    cudart = types.SimpleNamespace(
        cudaMalloc=malloc, cudaFree=lambda ptr: (memory.pop(ptr), 0)[1:], cudaStreamCreate=lambda: (0, "stream"),
        cudaStreamSynchronize=lambda stream: (0,), cudaMemcpyAsync=memcpy,
        cudaMemcpyKind=types.SimpleNamespace(cudaMemcpyHostToDevice="h2d", cudaMemcpyDeviceToHost="d2h"))
    tensors = {"range_image": ("in", np.float32), "mask": ("in", np.bool_), "logits": ("out", np.float32)}

    class Context:
        def __init__(self):
            self.shapes, self.addresses = {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)

        def get_tensor_shape(self, name):
            b, _, h, w = self.shapes["range_image"]
            return (b, 4, h, w)

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr

        def execute_async_v3(self, stream):
            shape = self.shapes["range_image"]
            x = np.frombuffer(memory[self.addresses["range_image"]], np.float32, int(np.prod(shape))).reshape(shape)
            logits = np.stack([x[:, k % 5] * (k + 1) for k in range(4)], 1).astype(np.float32)
            memory[self.addresses["logits"]][:logits.nbytes] = logits.tobytes()
            return True

    class Engine:
        num_io_tensors = len(tensors)

        def get_tensor_name(self, i):
            return list(tensors)[i]

        def get_tensor_mode(self, name):
            return tensors[name][0]

        def get_tensor_dtype(self, name):
            return tensors[name][1]

        def create_execution_context(self):
            return Context()

    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = "10.3.0"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Runtime = lambda logger: types.SimpleNamespace(
        deserialize_cuda_engine=lambda data: Engine() if data == b"ENGINE" else None)
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dtype: dtype
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cuda", types.SimpleNamespace(bindings=bindings))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    return memory


def test_the_runtime_runs_an_engine_through_the_tensorrt_and_cuda_calls(tmp_path, monkeypatch):
    """The runtime's plumbing (shapes, addresses, copies both ways, dtype casts, buffers grown for a larger batch,
    the segmenter on top) against stand-ins of tensorrt and cuda-python; the real libraries run in the test below."""
    from deploy.runtimes.tensorrt import TensorRTSegmenter

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    model = seg_model(tmp_path)
    with pytest.raises(DataError):
        build_engine(model, "fp16")  # writes seg.fp16.json, the engine's sidecar
    engine = tmp_path / "seg.fp16.engine"
    engine.write_bytes(b"ENGINE")
    memory = fake_tensorrt_and_cuda(monkeypatch)
    seg = load_predictor(engine)
    assert isinstance(seg, TensorRTSegmenter)
    rng = np.random.default_rng(0)
    for batch in (1, 3):  # the second call needs larger buffers
        x = rng.normal(size=(batch, 5, 8, 16))  # float64 in: cast to the engine's float32
        (logits,) = seg.network.run({"range_image": x, "mask": np.ones((batch, 8, 16), np.uint8)})
        assert logits.dtype == np.float32 and logits.shape == (batch, 4, 8, 16)
        np.testing.assert_array_equal(logits, np.stack([x[:, k].astype(np.float32) * (k + 1) for k in range(4)], 1))
    assert len(memory) == 3  # one buffer per tensor, the batch-1 ones freed when grown
    raw = np.zeros((1, 8, 16, 5), np.float32)
    raw[0, 2, 3] = (1.0, 0.0, 0.0, 0.0, -1.0)  # logits (1, 0, 0, 0): class 0
    raw[0, 4, 5] = (-1.0, 0.0, 0.5, 0.0, 0.0)  # logits (-1, 0, 1.5, 0): class 2
    (out,) = seg.segment_pixels(raw, np.ones((1, 8, 16), bool))
    assert out.labels[4, 5] == 2 and out.labels[2, 3] == 0
    engine.write_bytes(b"OTHER")
    with pytest.raises(DataError, match="built for another GPU or TensorRT version"):
        load_predictor(engine)


def test_trt_runtime_and_builder_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None; import deploy.tensorrt, deploy.runtimes.tensorrt, deploy.cli; "
            "assert 'tensorrt' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_gpu_latency_bench_exits_cleanly_without_cuda():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu_latency.py")], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and "no CUDA device" in done.stdout


@pytest.mark.slow
def test_gpu_latency_bench_dry_run_on_cpu():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_gpu_latency.py"), "--device", "cpu",
                           "--dry-run"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["squeezeseg_no_crf_latency_ms", "squeezeseg_crf_latency_ms",
                                         "squeezeseg_v2_latency_ms", "squeezedet_latency_ms"]
    assert all(r["value"] > 0 and r["dry_run"] for r in rows)


def test_tensorrt_engine_builds_and_matches_onnxruntime(tmp_path):
    pytest.importorskip("tensorrt", reason="TensorRT is not installed here (JetPack on a Jetson, or pip install "
                                           "tensorrt with an NVIDIA GPU): the engine build and parity run there")
    pytest.importorskip("onnxruntime")
    from deploy.export import export_onnx
    from deploy.runtimes.onnxruntime import OnnxSegmenter
    from tests.test_deploy_export import random_range_batch, seg_checkpoint

    onnx_path = export_onnx(seg_checkpoint(tmp_path / "seg.pt", "squeezeseg_kitti"), tmp_path / "seg.onnx").path
    build = build_engine(onnx_path, "fp32", max_batch=3)
    assert build.builder in ("tensorrt", "trtexec") and build.engine.stat().st_size > 0
    raw, mask = random_range_batch(0)
    ref, ours = OnnxSegmenter(onnx_path), load_predictor(build.engine)
    expected = ref.network.run(ref.feeds(raw, mask))[0]
    got = ours.network.run(ours.feeds(raw, mask))[0]
    assert np.abs(got - expected).max() <= 1e-3
    assert (got.argmax(1) == expected.argmax(1))[mask].mean() >= 0.999
