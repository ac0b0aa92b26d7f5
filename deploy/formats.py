"""The one table of deployment formats: which file each runtime reads, what it needs installed, which precisions it
takes. It drives `squeeze deploy` (its choices, validation and --help, `squeeze deploy formats`) and
`load_predictor`, which picks the runtime for a model file by its suffix.

Importing this module imports no runtime, no torch and no OpenCV (the CLI builds its help from it).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeeze.errors import DataError

__all__ = ["FORMATS", "TARGETS", "Format", "QuantTarget", "format_names", "format_of_path", "formats_table",
           "get_format", "get_target", "load_predictor"]


@dataclass(frozen=True)
class Format:
    name: str  # the option value, e.g. --format onnx
    suffix: str  # the network file's suffix; the sidecar is beside it (model.onnx -> model.json)
    runtime: str  # the module that runs it (imports no torch, no model package)
    loader: str  # that module's function: (model_path, **options) -> Detector | Segmenter
    package: str  # the importable package the runtime needs
    install: str  # how to get that package
    precisions: tuple[str, ...]  # model precisions the format carries
    description: str
    int8_target: str = "cpu"  # the TARGETS entry (squeeze deploy quantize --target) whose int8 graph it runs best

    @property
    def present(self) -> bool:
        """Whether the runtime and its package can be imported here (checked without importing them)."""
        try:
            return importlib.util.find_spec(self.package) is not None and \
                importlib.util.find_spec(self.runtime) is not None
        except (ImportError, ValueError):  # a parent package missing
            return False


FORMATS: tuple[Format, ...] = (
    Format("onnx", ".onnx", "deploy.runtimes.onnxruntime", "load_onnxruntime", "onnxruntime",
           "pip install 'squeeze-suite[deploy]'", ("fp32", "fp16", "int8"),
           "ONNX (opset >= 17) in onnxruntime: CPU, and CUDA / TensorRT execution providers where present"),
    Format("openvino", ".xml", "deploy.runtimes.openvino", "load_openvino", "openvino",
           "pip install 'squeeze-suite[deploy]'", ("fp32", "fp16", "int8"),
           "OpenVINO IR (.xml + .bin; it also reads .onnx): Intel CPUs and iGPUs"),
    Format("tensorrt", ".engine", "deploy.runtimes.tensorrt", "load_tensorrt", "tensorrt",
           "JetPack on a Jetson, or pip install tensorrt on an x86 machine with an NVIDIA GPU; and pip install "
           "cuda-python (deploy/jetson/README.md)",
           ("fp32", "fp16", "int8"),
           "TensorRT engine built on the target GPU (squeeze deploy trt): NVIDIA Jetson and GPUs", "tensorrt"),
)


# --------------------------------------------------------------------------------------- int8 quantisation
@dataclass(frozen=True)
class QuantTarget:
    """How `squeeze deploy quantize` writes the Q/DQ graph for one kind of runtime (deploy.quantize's docstring
    gives the reasons)."""

    name: str  # the --target value
    activations: str  # "uint8" (asymmetric) or "int8" (symmetric, zero point 0)
    int32_bias: bool  # biases quantised to int32 (scale = input scale x weight scale), else left float
    output_qdq: bool  # Q/DQ on the outputs of the quantised ops too, not only on their inputs
    ops: tuple[str, ...]  # op types quantised: the weighted ones, and for the CPU those that keep a chain in int8

    @property
    def formats(self) -> tuple[str, ...]:
        """The formats (FORMATS) whose int8 models are written for this target."""
        return tuple(f.name for f in FORMATS if f.int8_target == self.name)

    def record(self) -> dict[str, str]:
        """What the int8 sidecar says about the graph (its export.quantization)."""
        act = "uint8 asymmetric" if self.activations == "uint8" else "int8 symmetric (zero point 0)"
        return {"target": self.name, "activations": act, "weights": "int8 symmetric per-channel",
                "bias": "int32" if self.int32_bias else "float", "format": "QDQ"}


WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # the ops whose float time dominates these networks
TARGETS: dict[str, QuantTarget] = {
    # onnxruntime fuses DQ -> Conv -> Q into QLinearConv, and uint8 covers a ReLU's output with all 256 levels. The
    # ReLU, max-pool and concat are quantised too: each ReLU then folds into its conv's uint8 range (no float ReLU
    # between a DQ and a Q), and pools and Fire concats stay int8, so onnxruntime runs chains of QLinearConv; with the
    # weighted ops alone SqueezeSeg's int8 ran 1.6x slower than the hand export's in onnxruntime (bench_deploy.py).
    "cpu": QuantTarget("cpu", "uint8", int32_bias=True, output_qdq=True,
                       ops=(*WEIGHTED_OPS, "Relu", "MaxPool", "Concat")),
    # TensorRT's explicit quantisation: symmetric int8 only, biases it quantises itself, Q/DQ on weighted inputs
    # (it moves Q/DQ across ReLU, pooling and concat itself).
    "tensorrt": QuantTarget("tensorrt", "int8", int32_bias=False, output_qdq=False, ops=WEIGHTED_OPS),
}


def get_target(name: str) -> QuantTarget:
    """The quantisation target called `name`; ValueError listing the choices otherwise."""
    if name not in TARGETS:
        raise ValueError(f"unknown quantisation target {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[name]


def format_names() -> tuple[str, ...]:
    return tuple(f.name for f in FORMATS)


def get_format(name: str) -> Format:
    """The format called `name`; ValueError listing the choices otherwise."""
    for f in FORMATS:
        if f.name == name:
            return f
    raise ValueError(f"unknown format {name!r}; choose one of {', '.join(format_names())}")


def format_of_path(path: str | Path) -> Format:
    """The format whose suffix the file has; DataError naming the file and the known suffixes otherwise."""
    suffix = Path(path).suffix.lower()
    for f in FORMATS:
        if f.suffix == suffix:
            return f
    known = ", ".join(f"{f.suffix} ({f.name})" for f in FORMATS)
    raise DataError(path, f"unknown model file type {suffix or '(no suffix)'!r}: a deployed model is one of {known}, "
                          "with its .json sidecar beside it")


def formats_table() -> str:
    """The table as aligned text lines (`squeeze deploy formats`), with what is installed here."""
    rows = [("format", "file", "precisions", "runtime", "present", "needs")]
    rows += [(f.name, f.suffix, ",".join(f.precisions), f.runtime, "yes" if f.present else "no", f.install)
             for f in FORMATS]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows)


def load_predictor(path: str | Path, format: str | None = None, **options: Any) -> Any:
    """A squeeze.predictor Detector or Segmenter (by the sidecar's task) for an exported model, run by the runtime
    of `format` (default: the one of the file's suffix). `options` go to the runtime's loader (threads, ...).

    DataError naming the file when its type is unknown or the runtime is not installed (saying how to install it).
    """
    fmt = get_format(format) if format is not None else format_of_path(path)
    if not Path(path).is_file():
        raise DataError(path, "no such model file")
    if not fmt.present:
        raise DataError(path, f"the {fmt.name} runtime is not available here: it needs the {fmt.package} package "
                              f"({fmt.install})")
    module = importlib.import_module(fmt.runtime)
    return getattr(module, fmt.loader)(path, **options)
