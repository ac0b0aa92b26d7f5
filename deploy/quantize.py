"""INT8: static post-training quantisation of an exported model, calibrated on a dataset folder.

Recipe (onnxruntime.quantization.quantize_static, the well-kept tool; its QDQ output is what onnxruntime,
OpenVINO and TensorRT's explicit quantisation all consume):
- QDQ format: QuantizeLinear / DequantizeLinear pairs around each quantised op, the float graph otherwise intact.
- Weights int8, symmetric, one scale per output channel (per-channel: the squeeze and expand convolutions of a
  Fire module have channels whose ranges differ by 100x, and one scale per tensor zeroes the small ones).
- Activations uint8, asymmetric, MinMax ranges over the calibration frames. The quantizer's default, int8
  activations, left most convolutions of SqueezeSegV2 unquantised in onnxruntime and made OpenVINO crash compiling
  its quantised concatenations (issue 11); after a ReLU every activation is >= 0, which uint8 covers with all 256
  levels.
- Calibration inputs are built by the runtime's own numpy pre-processing with the sidecar's parameters
  (squeeze.detection.preprocess_image; projection + squeeze.segmentation.normalize_channels), so the ranges are
  those the deployed model will see.
- Layers can be kept in float by name (`keep_float`; the ReLUs, pools and concats after one stay float too);
  `layer_sensitivity` ranks the layers by the error each adds when it is the only int8 layer (on a few calibration
  frames), so the worst can be kept in float (`worst_layers`). Neither bundled model needs it (default_keep_worst):
  each head's input gets the range `head_input_range` picks on the calibration frames, a fraction of the
  calibrated max. SqueezeDet, exported through deploy.equalize (exact rewrites without which fully
  int8 fell to car AP 0), also has its head's output at the int8 range equalize scaled it to
  (`equalized_head_outputs`): fully int8 AP11 80.2 vs fp32 80.3 (76.8 with min / max, and 79.5 then with ConvDet
  and fire11's expands float). SqueezeSegV2, exported with its BN scales folded into the convs before the ReLUs,
  lost 4.8 car IoU points fully int8 with min / max ranges before its Fire expands were rectified per branch, 1.49
  after, and 0.67 with conv14 in float; with the classifier's input range chosen it loses none (98.72 vs 98.70 on
  the simulated frames, 0.717 vs 0.717 on four labelled real scans).
- MinMax ranges by default; "percentile" (onnxruntime's calibrator, 99.999% of a 2048-bin histogram) is offered; for
  the equalised SqueezeDet fully int8 it gave AP11 77.3 against MinMax's 76.8. On SqueezeSegV2 (conv14 in float,
  OpenVINO, car IoU points against fp32; measured before the head range) neither wins throughout: the sim-trained
  model on 40 simulated frames -0.24 (percentile) and -0.64 (MinMax); the adapted one there -1.12 and -0.56, and on
  the four labelled real scans 74.7 and 69.0 against fp32's 71.7 (calibrated on kitti_mini). onnxruntime's "entropy"
  is not offered: quantize_static builds it with 128 bins and 128 quantised bins, which leaves a single candidate
  threshold, the full range, and so wrote models byte-identical to MinMax's (76.8 here too). A real KL search (its
  calibrator built directly with 2048 bins, ranges clipped to the observed min / max) cut most activation ranges to
  0.37-0.44 of MinMax's and the bundled adapted SqueezeSegV2's car IoU on the four labelled real scans to 0.40-0.51,
  against 0.69 with MinMax and 0.72 in fp32 (conv14 in float in all three).

Two targets, since the runtimes want different Q/DQ graphs (deploy.formats.TARGETS):
- "cpu" (default): the recipe above, for onnxruntime and OpenVINO on a CPU: uint8 asymmetric activations, int32
  biases, Q/DQ on every quantised op's inputs and outputs (onnxruntime fuses DQ -> Conv -> Q into QLinearConv), and
  the ReLUs, max-pools and concats quantised too, so each ReLU folds into its conv's uint8 range and the chain
  stays int8 (with the weighted ops alone a float ReLU sat between every DQ and Q: SqueezeSeg's int8 ran 1.6x slower
  in onnxruntime than the issue's hand export, quantised with every op type).
- "tensorrt": what TensorRT's explicit quantisation builds (its guide's "Q/DQ layer placement"): int8 activations,
  symmetric (zero point 0: TensorRT takes no other), per-channel int8 weights, float biases (TensorRT quantises
  biases itself; it refuses int32 ones), and Q/DQ on the inputs of the weighted ops only, so a Conv's ReLU stays
  in the graph (symmetric ranges do not make it redundant) and TensorRT fuses Conv + ReLU + the next Q. onnxruntime
  and OpenVINO run this graph too (as float convolutions on dequantised inputs in onnxruntime: correct, not fast).

The int8 model gets its own sidecar (precision "int8", everything else the fp32 model's).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploy.formats import WEIGHTED_OPS, get_target
from deploy.sidecar import Sidecar, read_sidecar, write_sidecar
from squeeze.detection import preprocess_image
from squeeze.errors import DataError
from squeeze.kitti import IMAGE_FOLDERS, IMAGE_SUFFIXES, SCAN_FOLDERS, folder_files, read_image, read_velodyne
from squeeze.range_image import project_scan, read_range_npy
from squeeze.segmentation import normalize_channels, raw_channels

__all__ = [
    "CHECK_FRAMES",
    "DEFAULT_KEEP_WORST",
    "HEAD_INPUT_FRACTIONS",
    "HEAD_INPUT_TOLERANCE",
    "OUTPUT_ERROR_MEASURES",
    "OUTPUT_RANGE",
    "OUTPUT_SCALE",
    "QUANTIZED_OPS",
    "LayerSensitivity",
    "QuantizeResult",
    "calibration_files",
    "calibration_inputs",
    "default_keep_worst",
    "equalized_head_outputs",
    "head_input_range",
    "head_input_tensors",
    "layer_names",
    "layer_sensitivity",
    "mean_output_error",
    "model_outputs",
    "quantize_model",
    "segmenter_classifier",
    "worst_layers",
]

log = logging.getLogger(__name__)

QUANTIZED_OPS = WEIGHTED_OPS  # the layers: their weights are int8; keep_float and the sensitivity name these
# deploy.equalize scales an equalised ConvDet's output channels so that the values that can change a detection lie
# in +-OUTPUT_RANGE, and multiplies them back in a float Mul by the initialiser "<...>.OUTPUT_SCALE"; the int8 range
# of that output is +-OUTPUT_RANGE (here, so that quantisation needs no torch)
OUTPUT_RANGE = 1.0
OUTPUT_SCALE = "output_scale"
# Layers `squeeze deploy quantize` keeps in float by default, the most sensitive first (layer_sensitivity), for a
# model whose head input range head_input_range cannot choose (default_keep_worst: a segmenter with its CRF in the
# graph, whose classifier feeds the CRF's ops). A model whose head it can choose keeps none. The bundled adapted
# SqueezeSegV2 calibrated on kitti_mini, on the four labelled real scans of docs/domain_adaptation.md (fp32 car IoU
# 0.717): for the CPU target fully int8 with the calibrated range 0.516, with the chosen one 0.717 in OpenVINO and
# onnxruntime alike; with conv14 (its most sensitive layer) in float instead 0.721 in OpenVINO and 0.690 in
# onnxruntime, 8-15% slower in OpenVINO (conv14 then runs in bf16 or f32). On the simulated frames of
# bench/bench_deploy.py the sim-trained one scores 98.72 fully int8, 98.21 with conv14 in float (fp32 98.70). For the
# TensorRT target (symmetric int8, run in onnxruntime): 0.248 with the calibrated range, 0.722 with the chosen one
# (0.35 of it), 0.698 with conv14 in float; and the bundled SqueezeDet's car AP11 moderate on the simulated validation
# frames 19.0 with calibrated ranges, 77.0-78.1 with its head's chosen (32 or 16 calibration frames; fp32 80.3:
# symmetric int8 gives a ReLU's output 7 bits, and keeping ConvDet in float as well gave 77.7). What keeping conv14 in
# float still buys is closeness to fp32: on those real scans 99.3-99.8% of the labels stay fp32's, 98.3-99.3% fully
# int8 (`--keep-worst 1` keeps it).
DEFAULT_KEEP_WORST = {"segmentation": 1, "detection": 0}
# What output_error measures, per task (in the sidecar's calibration check and the command's report), and on how many
# calibration frames quantize_model checks its int8 model against fp32 (frames its ranges came from: a lower bound
# of what changes on new frames, and a quick way to see a model that quantised badly).
OUTPUT_ERROR_MEASURES = {"segmentation": "fraction of valid pixels whose label changes",
                         "detection": "mean |change| of class probability x confidence"}
CHECK_FRAMES = 8


# ------------------------------------------------------------------------------------------------- calibration
def calibration_files(folder: str | Path, task: str) -> list[Path]:
    """The sorted input files of a dataset folder for a task: camera images for detection, scans (.bin, .npy) for
    segmentation, in the folder itself or else in its KITTI, SqueezeSeg or raw-drive subfolder
    (squeeze.kitti.folder_files with IMAGE_FOLDERS / SCAN_FOLDERS). DataError naming the folder when none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "calibration data must be a dataset folder")
    if task == "detection":
        return folder_files(folder, IMAGE_SUFFIXES, IMAGE_FOLDERS)
    return folder_files(folder, (".bin", ".npy"), SCAN_FOLDERS)


def _spread(files: Sequence[Path], count: int) -> list[Path]:
    """`count` files spread evenly over the sorted list (neighbouring frames of a drive look alike)."""
    if count >= len(files):
        return list(files)
    return [files[i] for i in np.linspace(0, len(files) - 1, count).round().astype(int)]


def calibration_inputs(sidecar: Sidecar, folder: str | Path, max_frames: int = 32) -> list[dict[str, np.ndarray]]:
    """Network inputs of up to max_frames frames of a dataset folder, each a {input name: (1, ...) array} feed,
    built by the same numpy pre-processing the runtimes use with the sidecar's parameters."""
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    files = _spread(calibration_files(folder, sidecar.task), max_frames)
    return [frame_feed(sidecar, path) for path in files]


def frame_feed(sidecar: Sidecar, path: Path) -> dict[str, np.ndarray]:
    """The network input of one image or scan file, batch 1."""
    if sidecar.task == "detection":
        p = sidecar.detection
        assert p is not None
        image, _ = preprocess_image(read_image(path), p.image_width, p.image_height, p.pixel_mean_bgr)
        return {sidecar.inputs[0].name: image[None]}
    s = sidecar.segmentation
    assert s is not None
    if path.suffix == ".npy":
        image = read_range_npy(path, (s.projection.height, s.projection.width))
    else:
        image, _ = project_scan(read_velodyne(path), s.projection, source=str(path))
    feed = {next(i.name for i in sidecar.inputs if i.dtype != "bool"):
            normalize_channels(raw_channels(image), s.mean, s.std)[None]}
    mask = next((i.name for i in sidecar.inputs if i.dtype == "bool"), None)
    if mask is not None:
        feed[mask] = image.mask[None].astype(bool)
    return feed


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds (get_next, None at the end)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


# ---------------------------------------------------------------------------------------------------- layers
def _load(model_path: str | Path) -> Any:
    import onnx

    try:
        return onnx.load(str(model_path))  # external data (model.onnx.data) is read in
    except FileNotFoundError:
        raise DataError(model_path, "no such model file") from None
    except Exception as e:  # onnx raises DecodeError / ValidationError of its own
        raise DataError(model_path, f"not an ONNX model: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                        ) from None


def layer_names(model: Any) -> dict[str, str]:
    """{graph node name: layer name} of the quantisable nodes (QUANTIZED_OPS) of an ONNX model, in graph order.

    The layer name is the node's weight initialiser without its ".weight" (e.g. "conv14", "fire9.expand3x3"):
    the exporter's node names ("node_conv2d_44") say nothing to a user. Wrapper prefixes stay.
    """
    inits = {t.name for t in model.graph.initializer}
    out: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS:
            weight = next((i for i in node.input[1:] if i in inits), node.name)
            out[node.name] = weight.removesuffix(".weight")
    return out


def resolve_layers(model: Any, names: Sequence[str], source: str | Path) -> list[str]:
    """Graph node names of the layers named by the user: a node name, a layer name, or a layer name's tail after
    a dot (e.g. "conv14" for "model.conv14"). DataError naming the model when a name matches nothing."""
    layers = layer_names(model)
    nodes: list[str] = []
    for name in names:
        # ".conv": a conv inside a wrapper (ConvReLU, deploy.equalize.ScaledConv) answers to the wrapper's name too
        found = [n for n, layer in layers.items()
                 if name in (n, layer, layer.removesuffix(".conv")) or layer.endswith("." + name)
                 or layer.removesuffix(".conv").endswith("." + name)]
        if not found:
            some = ", ".join(list(layers.values())[:6])
            raise DataError(source, f"no quantisable layer named {name!r} (layers are named like {some}, ...)")
        nodes += [n for n in found if n not in nodes]
    return nodes


def float_successors(model: Any, nodes: Sequence[str], ops: Sequence[str]) -> list[str]:
    """Names of the non-weighted nodes of type `ops` (ReLU, pool, concat) that lie between one of `nodes` (layers
    kept in float) and the next weighted layers, in graph order: they stay float too, so a layer kept in float
    hands its float output on as it did before those ops were quantised (only its producers' outputs carry Q/DQ)."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    by_name = {n.name: n for n in model.graph.node}
    found: set[str] = set()
    todo = [by_name[n] for n in nodes if n in by_name]
    while todo:
        node = todo.pop()
        for out in node.output:
            for nxt in consumers.get(out, []):
                if nxt.op_type in WEIGHTED_OPS or nxt.name in found:
                    continue
                found.add(nxt.name)
                todo.append(nxt)
    return [n.name for n in model.graph.node if n.name in found and n.op_type in ops]


# -------------------------------------------------------------------------------------------------- quantise
@dataclass(frozen=True)
class QuantizeResult:
    path: Path  # the int8 model
    sidecar: Path  # its sidecar
    quantized_layers: int  # QUANTIZED_OPS nodes with int8 weights
    float_layers: tuple[str, ...]  # layer names kept in float on request
    calibration_frames: int
    check_error: float  # output_error of the int8 model against fp32 on the first check_frames calibration frames
    check_frames: int


def _quantize(src: Path, out: Path, feeds: Sequence[dict[str, np.ndarray]], cache: Path,
              exclude: Sequence[str] = (), method: str = "minmax",
              target: str = "cpu", ranges: dict[str, tuple[float, float]] | None = None) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}  # see the module doc
    if method not in methods:
        raise ValueError(f"calibration method must be one of {tuple(methods)}, got {method!r}")
    t = get_target(target)
    symmetric = t.activations == "int8"
    extra: dict[str, Any] = {
        # WeightSymmetric: int8 weights centred on 0 (zero point 0), what TensorRT and the VNNI kernels want.
        "WeightSymmetric": True, "ActivationSymmetric": symmetric, "QuantizeBias": t.int32_bias,
        # With symmetric ranges a ReLU is not implied by the quantised range, so it must stay in the graph.
        "QDQKeepRemovableActivations": symmetric}
    overrides: dict[str, list[dict[str, Any]]] = {}
    if not t.output_qdq:
        extra["OpTypesToExcludeOutputQuantization"] = list(QUANTIZED_OPS)
    else:
        import onnx

        # An equalised ConvDet's output (deploy.equalize) gets the int8 range its channels were scaled to: the
        # background anchors' outliers saturate, the values that change a detection keep 8 bits.
        r = np.float32(OUTPUT_RANGE)
        overrides = {name: [{"rmin": -r, "rmax": r}] for name in equalized_head_outputs(onnx.load(str(src)))}
    for name, (low, high) in (ranges or {}).items():  # head_input_range's choice
        overrides[name] = [{"rmin": np.float32(low), "rmax": np.float32(high)}]
    if overrides:
        extra["TensorQuantOverrides"] = overrides
    quantize_static(
        str(src), str(out), _Reader(feeds) if not cache.is_file() else None,
        quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=methods[method], op_types_to_quantize=list(t.ops),
        nodes_to_exclude=list(exclude),
        calibration_cache_path=str(cache), extra_options=extra)


def equalized_head_outputs(model: Any) -> list[str]:
    """Names of the tensors that carry an equalised ConvDet's output (deploy.equalize.ScaledConv) before its float
    Mul by OUTPUT_SCALE: the Conv's output and the layout ops' (Transpose, Reshape) between it and the Mul. [] for
    a model without one."""
    inits = {t.name for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    found: list[str] = []
    for node in model.graph.node:
        if node.op_type != "Mul" or not any(i in inits and i.rsplit(".", 1)[-1] == OUTPUT_SCALE for i in node.input):
            continue
        tensor = next(i for i in node.input if i not in inits)
        chain = [tensor]
        source = producer.get(tensor)
        while source is not None and source.op_type in ("Transpose", "Reshape"):
            tensor = source.input[0]
            chain.append(tensor)
            source = producer.get(tensor)
        if source is not None and source.op_type == "Conv":
            found += [t for t in chain if t not in found]
    return found


# head_input_range: the fractions of the calibrated max it tries, and how much more score error than the least it
# accepts for a wider range (less saturation: on the bundled model the error flattens below 0.25 of the max,
# 2.7e-4 -> 2.4e-4 at 0.125, while AP40 fell 84.3 -> 81.9 there)
HEAD_INPUT_FRACTIONS = (1.0, 0.71, 0.5, 0.35, 0.25, 0.18, 0.125)
HEAD_INPUT_TOLERANCE = 1.25


def segmenter_classifier(model: Any, logits: str) -> Any | None:
    """The Conv node whose output is the `logits` graph output (through Identity nodes at most): a segmenter's
    classifier (conv14 of SqueezeSeg / SqueezeSegV2); None when other ops lie between (a CRF in the graph)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    node = producer.get(logits)
    while node is not None and node.op_type == "Identity":
        node = producer.get(node.input[0])
    return node if node is not None and node.op_type == "Conv" else None


def head_input_tensors(model: Any, task: str = "detection", logits: str = "logits") -> list[str]:
    """The activations a network's head reads through one uint8 scale, whose range head_input_range chooses.
    Detection: an equalised ConvDet's (equalized_head_outputs) input and, when that is a concatenation, the
    concatenated tensors (each quantised on its own first). Segmentation: the input of the classifier
    (segmenter_classifier). [] without such a head."""
    producer = {out: node for node in model.graph.node for out in node.output}
    if task == "segmentation":
        classifier = segmenter_classifier(model, logits)
        return [classifier.input[0]] if classifier is not None else []
    chain = equalized_head_outputs(model)
    if not chain:
        return []
    x = producer[chain[-1]].input[0]
    concat = producer.get(x)
    return [x, *concat.input] if concat is not None and concat.op_type == "Concat" else [x]


def default_keep_worst(model_path: str | Path, sidecar: Sidecar) -> int:
    """How many of the most sensitive layers `squeeze deploy quantize` keeps in float when not told: none when the
    model has a head whose input range head_input_range chooses, else DEFAULT_KEEP_WORST for its task."""
    model = _load(Path(model_path))
    return 0 if head_input_tensors(model, sidecar.task, sidecar.output_names[0]) else DEFAULT_KEEP_WORST[sidecar.task]


def head_input_range(prepared: Path, tmp: Path, feeds: Sequence[dict[str, np.ndarray]], sidecar: Sidecar,
                     exclude: Sequence[str], method: str, target: str, frames: int = 8,
                     reference: list[list[np.ndarray]] | None = None
                     ) -> tuple[dict[str, tuple[float, float]], dict[str, Any]]:
    """The int8 range of a head's input (head_input_tensors: an equalised ConvDet's, a segmenter classifier's) that
    quantises best: each fraction of HEAD_INPUT_FRACTIONS of its calibrated max is tried (the calibrated min, or 0,
    stays the low end; for symmetric int8 activations the range is +-fraction x the largest magnitude), with every
    other range as calibrated, and the widest whose int8 model changes the outputs (output_error, the sensitivity
    ranking's measure: scores for a detector, labels for a segmenter, on up to `frames` calibration frames) by at
    most HEAD_INPUT_TOLERANCE times the least wins. Returns ({tensor: (low, high)}, a record: the head's layer
    name, the calibrated max, the chosen fraction, [(fraction, error), ...]); ({}, {}) without such a head, or with
    its conv kept float.

    Why: a head turns its input's rounding into the outputs directly, and the few largest values set a min / max
    range's step. SqueezeDet: fire11's output, which ConvDet reads, is 81% zeros, its non-zero values have a median
    of 0.05 and its max is 33: min / max calibration gives it a step of 0.13, which rounds most of them away, and
    ConvDet's gain (logits of +-4500) turns that into score errors (measured on the bundled model: the scores'
    error 0.0036 at the max, 0.00027 at 0.25 of it; car AP11 fully int8 76.8 -> 80.2 against fp32's 80.3).
    SqueezeSegV2: conv14 reads values in [-2.8, 54] whose 99.99th percentile is 23; at the full range the bundled
    adapted model fully int8 scores car IoU 0.516 on the four labelled real scans (fp32 0.717), at half of it 0.717,
    at a quarter 0.725 (calibrated on kitti_mini; the simulated validation frames: 97.75 / 98.72 / 98.74 against
    fp32's 98.70). Saturating the few largest values for a finer step is the better trade, and the calibration
    frames can tell by how much."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(prepared))
    logits = sidecar.output_names[0]
    names = head_input_tensors(model, sidecar.task, logits)
    if not names:
        return {}, {}
    head = segmenter_classifier(model, logits) if sidecar.task == "segmentation" else \
        {out: node for node in model.graph.node for out in node.output}[equalized_head_outputs(model)[-1]]
    if head.name in exclude:
        return {}, {}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    test = list(feeds[:frames])
    probe = onnx.load(str(prepared))
    probe.graph.output.append(onnx.helper.make_tensor_value_info(names[0], onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    top, low = -np.inf, 0.0
    for f in feeds:  # one frame's activations at a time (32 of SqueezeSegV2's conv14 input would take 270 MB)
        values = session.run([names[0]], f)[0]
        top, low = max(top, float(values.max())), min(low, float(values.min()))
    if not top > 0:
        return {}, {}
    symmetric = get_target(target).activations == "int8"
    if symmetric:  # zero point 0: the range is +-top, top the largest magnitude (TensorRT takes no other)
        top = max(top, -low)

    def span(fraction: float) -> tuple[float, float]:
        return (-fraction * top if symmetric else low), fraction * top

    if reference is None:  # the float model's outputs on those frames (quantize_model passes the ones it has)
        reference = model_outputs(prepared, test, sidecar.output_names)
    tried = []
    for fraction in HEAD_INPUT_FRACTIONS:
        candidate = tmp / "head_range.onnx"
        _quantize(prepared, candidate, feeds, tmp / "ranges.json", exclude=exclude, method=method, target=target,
                  ranges={name: span(fraction) for name in names})
        got = model_outputs(candidate, test, sidecar.output_names)
        tried.append((fraction, mean_output_error(sidecar.task, test, reference, got)))
    least = min(error for _, error in tried)
    best = max(fraction for fraction, error in tried if error <= HEAD_INPUT_TOLERANCE * least)
    return {name: span(best) for name in names}, {"layer": layer_names(model).get(head.name, head.name),
                                                  "calibrated_max": top, "calibrated_min": low, "fraction": best,
                                                  "tried": tried}


def _prepared(model_path: Path, tmp: Path) -> Path:
    """The model as one file (external data inlined) with ONNX shape inference and onnxruntime's graph
    optimisations applied (quant_pre_process: folds what can be folded before ranges are measured), every node
    named (the quantiser excludes nodes by name; an unnamed one would match every other)."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = _load(model_path)
    whole = tmp / "model.onnx"
    onnx.save(model, str(whole), save_as_external_data=False)
    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(whole), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared))
    taken = {n.name for n in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type.lower()}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    onnx.save(model, str(prepared))
    return prepared


def quantize_model(model_path: str | Path, out: str | Path, feeds: Sequence[dict[str, np.ndarray]],
                   keep_float: Sequence[str] = (), sidecar: Sidecar | None = None, method: str = "minmax",
                   target: str = "cpu", head_range: bool = True) -> QuantizeResult:
    """Quantise `model_path` (an fp32 .onnx with its sidecar) into `out` (QDQ int8) for `target` (TARGETS),
    calibrated on `feeds` (calibration_inputs), with the layers named in keep_float left in float; with
    `head_range`, the range of a head's input (an equalised ConvDet's, a segmenter's classifier's) is chosen by
    head_input_range. Writes out's sidecar (its export record lists the head ranges tried)."""
    import onnx

    t = get_target(target)
    model_path, out = Path(model_path), Path(out)
    if not feeds:
        raise ValueError("quantisation needs at least one calibration frame")
    sidecar = sidecar if sidecar is not None else read_sidecar(model_path)
    if sidecar.precision != "fp32":
        raise DataError(model_path, f"only an fp32 model can be quantised; this one is {sidecar.precision}")
    if out.resolve() == model_path.resolve():
        raise DataError(out, "the int8 model would overwrite the fp32 model it is made from")
    with tempfile.TemporaryDirectory(prefix="squeeze-quant-") as tmp_name:
        tmp = Path(tmp_name)
        prepared = _prepared(model_path, tmp)
        graph = onnx.load(str(prepared))
        exclude = resolve_layers(graph, keep_float, model_path) if keep_float else []
        exclude += float_successors(graph, exclude, t.ops)
        staged = tmp / "int8.onnx"
        check = list(feeds[:CHECK_FRAMES])
        reference = model_outputs(prepared, check, sidecar.output_names)  # fp32, for the head range and the check
        ranges, record = head_input_range(prepared, tmp, feeds, sidecar, exclude, method, t.name,
                                          frames=CHECK_FRAMES, reference=reference) if head_range else ({}, {})
        _quantize(prepared, staged, feeds, tmp / "ranges.json", exclude=exclude, method=method, target=t.name,
                  ranges=ranges)
        quantized = onnx.load(str(staged))
        check_error = mean_output_error(sidecar.task, check, reference,
                                        model_outputs(staged, check, sidecar.output_names))
        out.parent.mkdir(parents=True, exist_ok=True)
        from squeeze.atomic import atomic_write_bytes

        atomic_write_bytes(out, quantized.SerializeToString())
    side = write_sidecar(out, dataclasses.replace(sidecar, precision="int8", model_file=out.name,
                                                  export={**sidecar.export, "quantized_from": model_path.name,
                                                          "calibration_frames": len(feeds),
                                                          "float_layers": list(keep_float),
                                                          "head_input_range": {
                                                              **record, "tensors": {k: list(v) for k, v in
                                                                                    ranges.items()}},
                                                          "quantization": t.record(),
                                                          "calibration_check": {
                                                              "frames": len(check), "value": check_error,
                                                              "measure": OUTPUT_ERROR_MEASURES[sidecar.task]}}))
    n_int8 = len(int8_weights(quantized))
    return QuantizeResult(out, side, n_int8, tuple(keep_float), len(feeds), check_error, len(check))


def int8_weights(model: Any) -> list[str]:
    """Names of the int8 weight initialisers that a DequantizeLinear reads (one per quantised layer)."""
    from onnx import TensorProto

    inits = {t.name: t for t in model.graph.initializer}
    return [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].data_type == TensorProto.INT8]


# ------------------------------------------------------------------------------------------------ sensitivity
@dataclass(frozen=True)
class LayerSensitivity:
    node: str  # graph node name
    layer: str  # layer name (layer_names)
    error: float  # the task's error with only this layer in int8 (see layer_sensitivity)


def output_error(task: str) -> Callable[[dict[str, np.ndarray], list[np.ndarray], list[np.ndarray]], float]:
    """How far quantised outputs are from the float ones, for one feed. Segmentation: the fraction of valid pixels
    (the bool mask input, all pixels when there is none) whose class changes; detection: the mean absolute change
    of the class probability x confidence score, the quantity top-N and NMS rank on."""
    if task == "segmentation":
        def seg(feed: dict[str, np.ndarray], ref: list[np.ndarray], got: list[np.ndarray]) -> float:
            changed = ref[0].argmax(1) != got[0].argmax(1)  # (1, H, W)
            mask = next((v for v in feed.values() if v.dtype == bool), None)
            return float(changed[mask].mean()) if mask is not None and mask.any() else float(changed.mean())

        return seg

    def det(feed: dict[str, np.ndarray], ref: list[np.ndarray], got: list[np.ndarray]) -> float:
        return float(np.mean(np.abs(ref[1][..., None] * ref[2] - got[1][..., None] * got[2])))

    return det


def model_outputs(source: str | Path | bytes, feeds: Sequence[dict[str, np.ndarray]], output_names: Sequence[str],
                  threads: int = 1) -> list[list[np.ndarray]]:
    """Each feed's outputs (in `output_names` order) of an ONNX model (a path or its bytes) in onnxruntime."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(source) if isinstance(source, Path) else source, options,
                                   providers=["CPUExecutionProvider"])
    return [session.run(list(output_names), f) for f in feeds]


def mean_output_error(task: str, feeds: Sequence[dict[str, np.ndarray]], reference: list[list[np.ndarray]],
                      got: list[list[np.ndarray]]) -> float:
    """output_error(task) averaged over the feeds."""
    measure = output_error(task)
    return float(np.mean([measure(f, r, g) for f, r, g in zip(feeds, reference, got, strict=True)]))


def layer_sensitivity(model_path: str | Path, feeds: Sequence[dict[str, np.ndarray]], frames: int = 4,
                      sidecar: Sidecar | None = None, progress: bool = False, target: str = "cpu", threads: int = 2
                      ) -> list[LayerSensitivity]:
    """Each quantisable layer's error (output_error) when it is the only int8 layer, on the first `frames` feeds,
    worst first: the model `quantize_model` writes with every other layer in keep_float (so the ReLUs, pools and
    concats the target quantises are int8 wherever no float layer precedes them, as there). Ranges are measured
    once on all feeds (a calibration cache) and reused for every layer. `threads`: onnxruntime's intra-op threads."""
    from tqdm import tqdm

    model_path = Path(model_path)
    sidecar = sidecar if sidecar is not None else read_sidecar(model_path)
    test = list(feeds[:frames])

    def outputs(path: Path) -> list[list[np.ndarray]]:
        return model_outputs(path, test, sidecar.output_names, threads)

    with tempfile.TemporaryDirectory(prefix="squeeze-sens-") as tmp_name:
        tmp = Path(tmp_name)
        prepared = _prepared(model_path, tmp)
        import onnx

        graph = onnx.load(str(prepared))
        layers = layer_names(graph)
        reference = outputs(prepared)
        cache = tmp / "ranges.json"
        result = []
        ops = get_target(target).ops
        for node, layer in tqdm(layers.items(), desc="sensitivity", unit="layer", disable=not progress):
            one = tmp / "one.onnx"
            others = [n for n in layers if n != node]
            _quantize(prepared, one, feeds, cache, exclude=others + float_successors(graph, others, ops),
                      target=target)
            result.append(LayerSensitivity(node, layer, mean_output_error(sidecar.task, test, reference, outputs(one))))
    return sorted(result, key=lambda s: -s.error)


def worst_layers(model_path: str | Path, feeds: Sequence[dict[str, np.ndarray]], count: int, frames: int = 4,
                 sidecar: Sidecar | None = None, target: str = "cpu", threads: int = 2
                 ) -> tuple[list[str], list[LayerSensitivity]]:
    """(the `count` most sensitive layer names, the whole ranking): what `keep_float` takes to leave them float.

    On SqueezeDet trained on the simulated world and exported through deploy.equalize, its ConvDet head and
    fire11's two expands change the scores 10-200x more than any layer before fire11 (module docstring)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if count == 0:
        return [], []
    ranking = layer_sensitivity(model_path, feeds, frames=frames, sidecar=sidecar, target=target, threads=threads)
    return [s.layer for s in ranking[:count]], ranking
