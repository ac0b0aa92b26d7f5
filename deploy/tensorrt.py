"""ONNX model -> serialized TensorRT engine + its sidecar (`squeeze deploy trt`), on the machine that will run it.

A TensorRT engine is tied to the GPU and TensorRT version it was built with, so it is built on the target (a
Jetson, or the x86 computer with its NVIDIA GPU), from the ONNX model that `squeeze deploy export` (fp32) or
`squeeze deploy quantize` (int8, QDQ) wrote. Steps of `build_engine`:

1. read the ONNX model's operators and refuse any TensorRT's ONNX parser lacks (deploy.tensorrt_ops), naming it;
2. check the precision: int8 needs a QDQ model (explicit quantisation: the scales come from the calibration of
   `squeeze deploy quantize`, TensorRT needs no calibrator) whose Q/DQ pairs are int8 with zero point 0 (TensorRT
   takes symmetric int8 only; the uint8 asymmetric activations the CPU runtimes prefer do not build), and a QDQ
   model builds only as int8;
3. write the exact `trtexec` command line beside the engine (ENGINE.trtexec.txt), so the build can be repeated or
   run by hand on the board;
4. build through the TensorRT Python API when `tensorrt` imports, else through `trtexec` when it is on PATH; when
   neither is here, stop with NoTensorRTError after steps 3 and 5 (JetPack ships both);
5. write the engine's sidecar (the ONNX model's, with the engine's file name and precision).

Dynamic axes (the batch) get an optimisation profile: batch 1 minimum and optimum (a car runs one frame at a time),
`max_batch` maximum. fp32 engines are built without TF32 (TensorRT enables it by default on Ampere and newer, which
moves logits by ~1e-3 and breaks parity with onnxruntime); fp16 lets TensorRT pick half-precision kernels.

Imports no torch and no model package; `onnx` (the deploy extra) only to read the operators.
"""

from __future__ import annotations

import dataclasses
import importlib
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.sidecar import Sidecar, read_sidecar, sidecar_path, write_sidecar
from deploy.tensorrt_ops import check_tensorrt_ops
from squeeze.atomic import atomic_write_bytes, atomic_write_text
from squeeze.errors import DataError

__all__ = ["DEFAULT_WORKSPACE_MB", "PRECISIONS", "EngineBuild", "NoTensorRTError", "build_engine",
           "default_engine_path", "input_shapes", "qdq_faults", "trtexec_command"]

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_MB = 1024  # builder scratch memory; a Jetson Orin Nano shares its 8 GB with the CPU
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
INSTALL_HINT = ("on a Jetson, JetPack 6 ships both (python3-libnvinfer, /usr/src/tensorrt/bin/trtexec: add it to "
                "PATH); on an x86 machine with an NVIDIA GPU, pip install tensorrt")


class NoTensorRTError(DataError):
    """Neither the tensorrt Python package nor trtexec is here: the engine must be built on the target."""


@dataclass(frozen=True)
class EngineBuild:
    """What `build_engine` wrote and how."""

    engine: Path  # the serialized engine (absent when `builder` is None)
    sidecar: Path  # its sidecar (engine.json), written in every case
    commands: Path  # ENGINE.trtexec.txt: the trtexec command line of this build
    precision: str  # "fp32", "fp16" or "int8"
    builder: str | None  # "tensorrt" (Python API), "trtexec", or None (neither present: nothing built)
    seconds: float  # wall time of the build; 0 when nothing was built


def default_engine_path(onnx_path: str | Path, precision: str) -> Path:
    """model.onnx -> model.fp16.engine: the precision in the name keeps the engine's sidecar (model.fp16.json) from
    overwriting the ONNX model's (model.json)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.{precision}.engine")


def input_shapes(sidecar: Sidecar, batch: int) -> dict[str, tuple[int, ...]]:
    """{input name: shape with every dynamic axis set to `batch`} of the inputs that have a dynamic axis (the others
    need no optimisation profile)."""
    return {i.name: tuple(batch if d is None else d for d in i.shape) for i in sidecar.inputs if None in i.shape}


def _shape_flag(shapes: dict[str, tuple[int, ...]]) -> str:
    return ",".join(f"{name}:{'x'.join(map(str, shape))}" for name, shape in shapes.items())


def trtexec_command(onnx_path: str | Path, engine_path: str | Path, precision: str, sidecar: Sidecar,
                    workspace_mb: int = DEFAULT_WORKSPACE_MB, max_batch: int = 1,
                    trtexec: str = "trtexec") -> list[str]:
    """The trtexec argument list that builds `engine_path` from `onnx_path` as `build_engine` does: the precision
    flag (--fp16; --int8 for a QDQ model, whose scales are in the graph; --noTF32 for fp32), the shape profile of
    the dynamic inputs named in the sidecar (batch 1 / 1 / max_batch), and the workspace pool in MiB."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    cmd += {"fp32": ["--noTF32"], "fp16": ["--fp16"], "int8": ["--int8"]}[precision]
    if input_shapes(sidecar, 1):
        cmd += [f"--minShapes={_shape_flag(input_shapes(sidecar, 1))}",
                f"--optShapes={_shape_flag(input_shapes(sidecar, 1))}",
                f"--maxShapes={_shape_flag(input_shapes(sidecar, max_batch))}"]
    cmd.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    return cmd


def _onnx_graph(onnx_path: Path) -> Any:
    """The model's main graph (onnx GraphProto), weights not loaded from external files."""
    try:
        import onnx
    except ImportError:
        raise ImportError("reading the ONNX model needs the onnx package: pip install 'squeeze-suite[deploy]'") \
            from None
    try:
        proto = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends from protobuf
        raise DataError(onnx_path, f"not an ONNX model: {str(e).strip()[:200] or type(e).__name__}") from None
    return proto.graph


def qdq_faults(graph: Any) -> dict[str, list[str]]:
    """{what is wrong: names of the Q/DQ nodes} for the Q/DQ nodes TensorRT's explicit quantisation cannot take: it
    needs int8 zero points, all 0 (symmetric), so uint8 zero points (asymmetric activations, the CPU runtimes'
    choice), int32 ones (quantised biases) and non-zero int8 ones fail to build. Empty when the model is fine."""
    from onnx import TensorProto, numpy_helper

    constants = {t.name: t for t in graph.initializer}
    constants |= {n.output[0]: a.t for n in graph.node if n.op_type == "Constant"
                  for a in n.attribute if a.name == "value"}
    faults: dict[str, list[str]] = {}
    for n in graph.node:
        if n.op_type not in QDQ_OPS or len(n.input) < 3 or not n.input[2]:
            continue  # no zero point: int8, 0 by definition
        zero = constants.get(n.input[2])
        if zero is None:
            kind = "zero point not a constant"
        elif zero.data_type == TensorProto.INT8:
            kind = "non-zero int8 zero point" if numpy_helper.to_array(zero).any() else ""
        elif zero.data_type == TensorProto.INT32:
            kind = "int32 (quantised biases)"
        elif zero.data_type == TensorProto.UINT8:
            kind = "uint8 (asymmetric activations)"
        else:
            kind = f"{TensorProto.DataType.Name(zero.data_type).lower()} zero point"
        if kind:
            faults.setdefault(kind, []).append(n.name or n.output[0])
    return faults


def _tensorrt() -> Any | None:
    """The tensorrt module, or None when it is not installed."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        return None


def build_engine(onnx_path: str | Path, precision: str | None = None, engine_path: str | Path | None = None,
                 workspace_mb: int = DEFAULT_WORKSPACE_MB, max_batch: int = 1) -> EngineBuild:
    """Build a TensorRT engine of `onnx_path` (with its sidecar) in `precision` (default: int8 for a QDQ model,
    fp16 for an fp16 export, else fp32), written to `engine_path` (default model.PRECISION.engine beside the model).

    DataError naming the file for an unsupported operator, a precision the model cannot take, or an engine path
    whose sidecar would overwrite the ONNX model's; NoTensorRTError (after writing the command file and the
    engine's sidecar) when neither the tensorrt package nor trtexec is present.
    """
    onnx_path = Path(onnx_path)
    if onnx_path.suffix != ".onnx":
        raise DataError(onnx_path, "TensorRT engines are built from an exported .onnx model (squeeze deploy export)")
    if not onnx_path.is_file():
        raise DataError(onnx_path, "no such model file")
    if workspace_mb < 1 or max_batch < 1:
        raise ValueError(f"workspace (MB) and max batch must be >= 1, got {workspace_mb} and {max_batch}")
    sidecar = read_sidecar(onnx_path)
    graph = _onnx_graph(onnx_path)
    ops = [(n.domain, n.op_type) for n in graph.node]
    check_tensorrt_ops(ops, str(onnx_path))
    qdq = sidecar.precision == "int8" or any(op in QDQ_OPS for _, op in ops)
    # An fp16 export builds as fp16 by default: its weights are half already, fp32 kernels would only cast them.
    precision = precision or ("int8" if qdq else "fp16" if sidecar.precision == "fp16" else "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8" and not qdq:
        raise DataError(onnx_path, "an int8 engine needs a quantised (QDQ) model: run 'squeeze deploy quantize "
                                   "--calib DIR' first and build from its output")
    faults = qdq_faults(graph) if precision == "int8" else {}
    if faults:
        listed = "; ".join(f"{kind}: {len(names)} ({', '.join(names[:2])}{', ...' if len(names) > 2 else ''})"
                           for kind, names in faults.items())
        raise DataError(onnx_path, f"Q/DQ nodes TensorRT cannot build: {listed}. TensorRT's explicit quantisation "
                                   "takes int8 Q/DQ with zero point 0 (symmetric) and float biases; 'squeeze deploy "
                                   "quantize' writes uint8 activations and int32 biases for the CPU runtimes; "
                                   "quantise with '--target tensorrt' for TensorRT")
    if precision != "int8" and qdq:
        raise DataError(onnx_path, f"this is a quantised (QDQ) model: it builds as int8 (--int8), not {precision}; "
                                   "build the fp32 model for an fp16 engine")
    engine_path = Path(engine_path) if engine_path is not None else default_engine_path(onnx_path, precision)
    if engine_path.suffix != ".engine":
        raise DataError(engine_path, "a TensorRT engine file must end in .engine")
    if sidecar_path(engine_path).resolve() == sidecar_path(onnx_path).resolve():
        raise DataError(engine_path, f"its sidecar would overwrite the ONNX model's ({sidecar_path(onnx_path)}): "
                                     "name the engine differently, e.g. "
                                     f"{default_engine_path(onnx_path, precision).name}")

    commands = engine_path.with_name(engine_path.name + ".trtexec.txt")
    cmd = trtexec_command(onnx_path, engine_path, precision, sidecar, workspace_mb, max_batch)
    atomic_write_text(commands, f"# build {engine_path.name} from {onnx_path.name} ({precision}) on the target GPU\n"
                                f"{shlex.join(cmd)}\n")
    engine_sidecar = dataclasses.replace(
        sidecar, model_file=engine_path.name, precision=precision,
        export={**sidecar.export, "tensorrt": {"onnx": onnx_path.name, "precision": precision,
                                               "workspace_mb": int(workspace_mb), "max_batch": int(max_batch)}})
    sidecar_file = write_sidecar(engine_path, engine_sidecar)

    trt = _tensorrt()
    trtexec = shutil.which("trtexec")
    start = time.perf_counter()
    if trt is not None:
        _build_with_api(trt, onnx_path, engine_path, precision, sidecar, workspace_mb, max_batch)
        builder = "tensorrt"
    elif trtexec is not None:
        _build_with_trtexec([trtexec, *cmd[1:]], engine_path)
        builder = "trtexec"
    else:
        raise NoTensorRTError(onnx_path, f"neither the tensorrt Python package nor trtexec is available here, so no "
                                         f"engine was built ({INSTALL_HINT}); the trtexec command is in {commands} "
                                         f"and the engine's sidecar in {sidecar_file}")
    return EngineBuild(engine_path, sidecar_file, commands, precision, builder, time.perf_counter() - start)


def _build_with_trtexec(cmd: Sequence[str], engine_path: Path) -> None:
    done = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if done.returncode != 0 or not engine_path.is_file():
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise DataError(engine_path, f"trtexec failed (exit {done.returncode}): {tail[-600:]}")


def _build_with_api(trt: Any, onnx_path: Path, engine_path: Path, precision: str, sidecar: Sidecar,
                    workspace_mb: int, max_batch: int) -> None:
    """The build of `trtexec_command` through the TensorRT Python API (TensorRT 8.6 and 10)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it for ONNX models.
    major = int(str(trt.__version__).split(".")[0])
    network = builder.create_network(0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DataError(onnx_path, f"TensorRT's ONNX parser refused the model: {errors[:600]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    elif precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        config.set_flag(trt.BuilderFlag.INT8)
    low, high = input_shapes(sidecar, 1), input_shapes(sidecar, max_batch)
    if low:
        profile = builder.create_optimization_profile()
        for name in low:
            profile.set_shape(name, low[name], low[name], high[name])
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DataError(onnx_path, f"TensorRT could not build a {precision} engine (see the log above)")
    atomic_write_bytes(engine_path, bytes(serialized))
