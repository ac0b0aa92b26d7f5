"""OpenVINO runtime: an exported network (.onnx, or an OpenVINO IR .xml) and its sidecar as a squeeze.predictor
Detector or Segmenter / RangeSegmenter, with no torch and no model package.

Only the network runs in OpenVINO; pre- and post-processing are the numpy functions of squeeze.detection and
squeeze.segmentation that the torch predictors use, with the parameters of the sidecar (deploy.runtimes.common).

Settings, and why:
- precision "f32" by default: on CPUs with BF16 instructions (AVX-512 BF16, AMX) OpenVINO's CPU plugin runs
  float layers in bf16 unless INFERENCE_PRECISION_HINT says otherwise, which moves logits by ~1e-2 and flips
  labels; "bf16" is offered for speed. An INT8 (QDQ) model runs its quantised layers in int8 either way; the
  hint only sets the precision of the layers left in float.
- 2 threads and the LATENCY hint: one request at a time, batch 1, as a car computer runs it.
- The batch axis is fixed to 1 at load (static shapes let the CPU plugin pick its fastest kernels); a batch of
  several inputs runs one request per item.
- An INT8 model's QDQ graph is written for onnxruntime as well (deploy.quantize: a Q/DQ pair on every quantised
  op's output, so onnxruntime fuses DQ -> Conv -> Q into one integer kernel). OpenVINO fuses a float op into the
  int8 convolution before it, so there a pair whose values go on only to float ops, or into a concat that is
  quantised again, costs time and a rounding and buys nothing; `drop_float_requantization` removes those pairs at
  load (and in the IR `convert_to_ir` writes). On the bundled SqueezeSegV2 (its CAM gates' Sigmoid, the floors of
  its folded BatchNorms, its Fire concats) that is 41 pairs and 17.7 -> 15.1 ms a frame (int8, bf16 hint,
  interleaved in one process on this CPU; 18.0 -> 16.1 with the f32 hint); SqueezeSeg and SqueezeDet (24 and 20
  pairs, all before concats) gain 2-3 %. A pair around a BatchNorm stays: OpenVINO folds the BatchNorm into the
  requantisation (dropping those pairs made the issue's hand export of SqueezeSegV2, with its 26 BatchNorms after
  ReLUs, 1.6x slower).

Needs the `deploy` extra (pip install 'squeeze-suite[deploy]') for the openvino package.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deploy.runtimes.common import NetworkDetector, NetworkSegmenter
from deploy.sidecar import Sidecar, read_sidecar
from squeeze.errors import DataError

__all__ = ["IR_PRECISIONS", "PRECISIONS", "OpenVinoDetector", "OpenVinoNetwork", "OpenVinoSegmenter", "convert_to_ir",
           "drop_float_requantization", "load_openvino"]

PRECISIONS = ("f32", "bf16")  # INFERENCE_PRECISION_HINT values offered; f32 is the default (see module doc)
MODEL_SUFFIXES = (".onnx", ".xml")


# Ops OpenVINO's CPU plugin computes in float whatever their input: a Q/DQ pair that feeds only these rounds the
# values to 8 bits and straight back (the CAM gate of SqueezeSegV2, the per-channel floor deploy.fold leaves for a
# BatchNorm after a ReLU). Not BatchNormInference: between two pairs OpenVINO folds it into the requantisation.
FLOAT_OPS = ("Sigmoid", "Maximum")
WEIGHTED_OV_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise ImportError("the OpenVINO runtime needs the openvino package: pip install 'squeeze-suite[deploy]' "
                          "(or pip install openvino)") from None
    return openvino


def _dequantized_output(fake_quantize: Any) -> Any | None:
    """The node whose output is the dequantised value of a FakeQuantize read from ONNX Q/DQ, or None when the chain
    has another shape or branches. core.read_model reads a QuantizeLinear -> DequantizeLinear pair as FakeQuantize
    -> Convert -> Convert -> [Subtract] -> Multiply; ov.convert_model (the IR writer) folds it into one
    FakeQuantize with a float output."""
    if all(t.get_node().get_type_name() != "Convert" for t in fake_quantize.output(0).get_target_inputs()):
        return fake_quantize
    node = fake_quantize
    for step in ("Convert", "Convert", "Subtract", "Multiply"):
        targets = list(node.output(0).get_target_inputs())
        if len(targets) != 1:
            return None
        following = targets[0].get_node()
        if following.get_type_name() != step:
            if step == "Subtract" and following.get_type_name() == "Multiply":  # zero point 0: no Subtract
                return following
            return None
        node = following
    return node


def _has_int8_weights(node: Any) -> bool:
    """Whether a weighted op's weights are an integer constant (dequantised on the way: Convert, Subtract, Multiply,
    Reshape), i.e. OpenVINO runs it in int8."""
    weights = node.input_value(1).get_node()
    for _ in range(5):
        if weights.get_type_name() == "Constant":
            return weights.get_output_element_type(0).get_type_name() in ("i8", "u8")
        if weights.get_input_size() == 0:
            return False
        weights = weights.input_value(0).get_node()
    return False


def drop_float_requantization(model: Any) -> int:
    """Remove, in place, the Q/DQ pairs of an ov.Model whose dequantised values go on only to ops that run in float
    (FLOAT_OPS, or a weighted op with float weights: a layer kept in float) or only into Concats whose output is
    quantised again (the values are then rounded once, after the concat, instead of twice). Returns how many.

    A pair removed only rounded (and clipped to its calibrated range) values that float ops then took, so the
    output moves toward the float model's. A model with no Q/DQ is left as it is. Why and what it gains: the
    module doc."""
    dropped = 0
    for fake_quantize in model.get_ordered_ops():
        if fake_quantize.get_type_name() != "FakeQuantize":
            continue
        dequantized = _dequantized_output(fake_quantize)
        if dequantized is None:
            continue
        consumers = [t.get_node() for t in dequantized.output(0).get_target_inputs()]
        if consumers and all(_runs_in_float(c) or _requantized_concat(c) for c in consumers):
            dequantized.output(0).replace(fake_quantize.input_value(0))
            dropped += 1
    return dropped


def _runs_in_float(node: Any) -> bool:
    kind = node.get_type_name()
    return kind in FLOAT_OPS or (kind in WEIGHTED_OV_OPS and not _has_int8_weights(node))


def _requantized_concat(node: Any) -> bool:
    return node.get_type_name() == "Concat" and all(
        t.get_node().get_type_name() == "FakeQuantize" for t in node.output(0).get_target_inputs())


class OpenVinoNetwork:
    """One compiled network: numpy inputs by name in, outputs in the sidecar's output order out.

    model_path: .onnx or .xml (IR, its .bin beside it); sidecar: read from beside the model when None.
    """

    def __init__(self, model_path: str | Path, sidecar: Sidecar | None = None, precision: str = "f32",
                 threads: int = 2, device: str = "CPU"):
        model_path = Path(model_path)
        if model_path.suffix not in MODEL_SUFFIXES:
            raise DataError(model_path, f"OpenVINO reads {' or '.join(MODEL_SUFFIXES)} files")
        if not model_path.is_file():
            raise DataError(model_path, "no such model file")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.sidecar = sidecar if sidecar is not None else read_sidecar(model_path)
        self.threads = int(threads)  # also the host CRF's (deploy.runtimes.common)
        self.precision = precision
        ov = _openvino()
        core = ov.Core()
        try:
            model = core.read_model(str(model_path))
        except RuntimeError as e:
            raise DataError(model_path, f"OpenVINO cannot read this model: {str(e).splitlines()[0]}") from None
        names = {name for p in model.inputs for name in p.get_names()}
        wanted = [i.name for i in self.sidecar.inputs]
        if not set(wanted) <= names or len(wanted) != len(model.inputs):
            raise DataError(model_path, f"the network's inputs {sorted(names)} are not the sidecar's {wanted}")
        # Static batch 1: the CPU plugin compiles faster kernels for static shapes (a dynamic batch runs item by item).
        shapes = {}
        for port in model.inputs:
            dims = list(port.get_partial_shape())
            if dims:
                dims[0] = ov.Dimension(1)
            shapes[port.get_any_name()] = ov.PartialShape(dims)
        model.reshape(shapes)
        drop_float_requantization(model)
        config = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY",
                  "INFERENCE_PRECISION_HINT": precision}
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        # An output tensor can carry several names (OpenVINO may merge "confidence" with the view it came from).
        by_name = {name: o for o in self.compiled.outputs for name in o.get_names()}
        missing = [n for n in self.sidecar.output_names if n not in by_name]
        if missing:
            raise DataError(model_path, f"the network has no outputs {missing} (it has {sorted(by_name)})")
        self._outputs = [by_name[n] for n in self.sidecar.output_names]
        self._dtypes = {i.name: np.dtype(i.dtype) for i in self.sidecar.inputs}

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Inputs of batch B (any B >= 1) -> the outputs, batch B, in the sidecar's output order."""
        batch = len(next(iter(feeds.values())))
        if batch == 1:
            # Shared both ways (no copy in, none out): the call is synchronous, and the outputs are copied out below
            # before the next call overwrites the request's buffers.
            results = self.request.infer({k: np.ascontiguousarray(v, self._dtypes[k]) for k, v in feeds.items()},
                                         share_inputs=True, share_outputs=True)
            return [np.array(results[o]) for o in self._outputs]
        items = [self.run({k: v[i:i + 1] for k, v in feeds.items()}) for i in range(batch)]
        return [np.concatenate(parts) for parts in zip(*items, strict=True)]


class OpenVinoDetector(NetworkDetector):
    """squeeze.predictor.Detector over an exported SqueezeDet / SqueezeDet+ in OpenVINO."""

    def __init__(self, model_path: str | Path, sidecar: Sidecar | None = None, precision: str = "f32",
                 threads: int = 2, device: str = "CPU"):
        super().__init__(OpenVinoNetwork(model_path, sidecar, precision, threads, device), model_path)


class OpenVinoSegmenter(NetworkSegmenter):
    """squeeze.predictor.Segmenter and RangeSegmenter over an exported SqueezeSeg / SqueezeSegV2 in OpenVINO."""

    def __init__(self, model_path: str | Path, sidecar: Sidecar | None = None, precision: str = "f32",
                 threads: int = 2, device: str = "CPU"):
        super().__init__(OpenVinoNetwork(model_path, sidecar, precision, threads, device), model_path)


IR_PRECISIONS = ("f32", "f16")  # weight precisions the IR writer offers (squeeze deploy convert --precision)


def convert_to_ir(model_path: str | Path, xml_path: str | Path, precision: str = "f32") -> Path:
    """An .onnx model (with its sidecar) -> OpenVINO IR (model.xml + model.bin) and its sidecar beside it.

    precision "f32" keeps the weights as they are: ov.save_model's default would compress fp32 weights to fp16,
    which moves the logits by ~1e-2 (the parity bar is 1e-4). "f16" stores float weights as float16 (half the .bin;
    OpenVINO's CPU plugin decompresses them at load and computes at its precision hint, a GPU plugin in f16). The
    IR loads faster than the ONNX file and runs the same.

    The sidecar: the ONNX model's, with model_file set to the IR (and precision "fp16" for f16 weights of an fp32
    model). When the IR sits beside the ONNX file under the same name (seg.onnx -> seg.xml) both have one sidecar,
    seg.json: it is left as it is when the IR needs no other, and the conversion is refused (DataError) when it
    would (f16 weights of an fp32 model). DataError naming the file for a bad suffix or a model OpenVINO cannot read.
    """
    import dataclasses

    from deploy.sidecar import sidecar_path, write_sidecar

    model_path, xml_path = Path(model_path), Path(xml_path)
    if xml_path.suffix != ".xml":
        raise DataError(xml_path, "an OpenVINO IR file ends in .xml")
    if model_path.suffix != ".onnx":
        raise DataError(model_path, "the IR is converted from an exported .onnx model (squeeze deploy export)")
    if precision not in IR_PRECISIONS:
        raise ValueError(f"IR precision must be one of {IR_PRECISIONS}, got {precision!r}")
    if not model_path.is_file():
        raise DataError(model_path, "no such model file")
    sidecar = read_sidecar(model_path)
    ir_precision = "fp16" if precision == "f16" and sidecar.precision == "fp32" else sidecar.precision
    shared = sidecar_path(xml_path).resolve() == sidecar_path(model_path).resolve()
    if shared and ir_precision != sidecar.precision:
        raise DataError(xml_path, f"its sidecar would be the ONNX model's ({sidecar_path(model_path).name}), which "
                                  f"says {sidecar.precision}: write the {ir_precision} IR under another name or "
                                  f"folder, e.g. {model_path.stem}_{precision}.xml")
    ov = _openvino()
    try:
        model = ov.convert_model(str(model_path))
    except Exception as e:  # OpenVINO raises its own OpConversionFailure / GeneralFailure types
        raise DataError(model_path, f"OpenVINO cannot convert this model: {str(e).strip().splitlines()[0]}") from None
    drop_float_requantization(model)  # an IR runs only in OpenVINO: the pairs onnxruntime needs can go
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=precision == "f16")
    if not shared:
        write_sidecar(xml_path, dataclasses.replace(sidecar, model_file=xml_path.name, precision=ir_precision))
    return xml_path


def load_openvino(model_path: str | Path, precision: str = "f32", threads: int = 2, device: str = "CPU"
                  ) -> OpenVinoDetector | OpenVinoSegmenter:
    """The Detector or Segmenter its sidecar's task calls for (deploy.formats' loader for .xml, and .onnx when
    OpenVINO is asked for)."""
    sidecar = read_sidecar(model_path)
    cls = OpenVinoDetector if sidecar.task == "detection" else OpenVinoSegmenter
    return cls(model_path, sidecar, precision, threads, device)
