"""Checkpoint -> ONNX model + JSON sidecar (deploy.sidecar), checked, simplified, and TensorRT-clean.

Steps of `export_onnx`:
1. load the checkpoint (squeeze.checkpoint; task "detection" -> squeezedet, "segmentation" -> squeezeseg);
2. fold BatchNorm: SqueezeDet's training-aid BN before the ReLU into the conv before it
   (squeezedet.model.fold_batch_norm), SqueezeSegV2's post-ReLU BN into the convs after it where that is exact
   (deploy.fold); SqueezeSeg's CRF stays in the graph (`crf="graph"`), goes to the sidecar for the runtime to apply
   on the host (`crf="host"`, squeeze.crf: about 2x faster on CPUs, float32), or is dropped (`crf="none"`);
3. put the network in NCHW memory (the torch models run channels_last for oneDNN; an ONNX graph is NCHW and
   the runtimes pick their own layouts, so channels_last would only add transposes);
4. export with torch.onnx.export(dynamo=True) (torch 2.13's default exporter, through onnxscript); the batch
   axis is dynamic unless `batch` fixes it;
5. onnx.checker.check_model(full_check=True) (which runs strict shape inference), simplification with onnxslim,
   the checker again, and the TensorRT operator check (deploy.tensorrt_ops), which fails naming the operator;
6. with `fp16`: weights and arithmetic in float16 for GPUs (onnxruntime.transformers.float16, the converter
   onnxruntime keeps; ops it knows to be unsafe in half stay float32), the inputs and outputs kept float32 with
   Casts at the graph's edges, so the runtimes' numpy pre- and post-processing is the same as for fp32; the nodes
   topologically sorted again (onnx_ir: the converter appends its Casts at the end), checked and simplified again;
7. write the model atomically, then the sidecar beside it (model.onnx -> model.json).

Interface of the exported networks:
- detection: input `image` (B, 3, H, W) float32, BGR pixels minus pixel_mean_bgr (squeeze.detection.preprocess_image);
  outputs `deltas` (B, N, 4), `confidence` (B, N) sigmoid, `class_probs` (B, N, K) softmax: what
  squeeze.detection.postprocess takes with the sidecar's anchors and thresholds.
- segmentation: inputs `range_image` (B, C, H, W) float32 normalised channels (squeeze.segmentation.normalize_channels)
  and `mask` (B, H, W) bool (a network that does not read the mask, SqueezeSeg without CRF, has no mask input);
  output `logits` (B, K, H, W), the CRF applied when exported with it in the graph; with `crf="host"` the graph
  returns the conv14 logits and the sidecar's `host_crf` holds what squeeze.crf.apply_crf needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from squeeze.errors import DataError

__all__ = ["CRF_PLACES", "DEFAULT_OPSET", "MIN_OPSET", "ExportReport", "export_onnx", "to_fp16"]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18  # torch 2.13's dynamo exporter emits opset 18 natively (no version conversion)
MIN_OPSET = 17  # LayerNormalization etc.; TensorRT 8.6+ (JetPack 5.1.2+) parses 17
# Where SqueezeSeg's recurrent CRF runs: inside the graph (every runtime, TensorRT's GPU included), on the host after
# the network (squeeze.crf, numba: about 1.9 ms against 3.5 ms inside OpenVINO's int8 graph on this project's CPU), or
# not at all. Models without a CRF ignore it.
CRF_PLACES = ("graph", "host", "none")


@dataclass(frozen=True)
class ExportReport:
    """What an export produced and what it took."""

    path: Path  # the ONNX model
    sidecar: Path  # its JSON sidecar
    task: str  # "detection" or "segmentation"
    model_name: str
    seconds: float  # wall time of the whole export (load, fold, trace, check, simplify, write)
    size_bytes: int  # of the ONNX file
    op_counts: Mapping[str, int]  # ONNX operator type -> number of nodes, after simplification
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    batch_norm_folded: int  # BatchNorm layers folded into convolutions
    batch_norm_remaining: int  # BatchNorm layers left as BatchNormalization nodes
    crf: bool  # the segmentation CRF is in the graph
    precision: str = "fp32"  # "fp32", or "fp16" (float16 weights and arithmetic, float32 inputs and outputs)
    host_crf: bool = False  # the segmentation CRF is left to the runtime (the sidecar's host_crf)

    @property
    def ops(self) -> tuple[str, ...]:
        """The distinct operator types, sorted."""
        return tuple(sorted(self.op_counts))

    @property
    def node_count(self) -> int:
        return int(sum(self.op_counts.values()))

    def summary(self) -> str:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(self.op_counts.items(), key=lambda kv: (-kv[1], kv[0])))
        bn = f"; BatchNorm folded {self.batch_norm_folded}, left {self.batch_norm_remaining}" \
            if self.batch_norm_folded or self.batch_norm_remaining else ""
        crf = ", CRF" if self.crf else ", CRF on the host" if self.host_crf else ""
        return (f"{self.path} ({self.model_name}, {self.task}{crf}, {self.precision}): "
                f"{self.seconds:.2f} s, {self.size_bytes / 1e6:.2f} MB, opset {self.opset} ({self.exporter} exporter), "
                f"{self.node_count} nodes, {len(self.op_counts)} op types{bn}\n  ops: {ops}")


def export_onnx(checkpoint_path: str | Path, out_path: str | Path, *, crf: str = "graph", opset: int = DEFAULT_OPSET,
                simplify: bool = True, batch: int | None = None, fp16: bool = False,
                fold_style: str = "max") -> ExportReport:
    """Export a detection or segmentation checkpoint to ONNX with its sidecar; see the module docstring.

    crf: where SqueezeSeg's recurrent CRF runs, one of CRF_PLACES (for segmentation models that have one).
    opset: >= MIN_OPSET.
    batch: None for a dynamic batch axis, else that fixed batch size. fp16: float16 weights and arithmetic with
    float32 inputs and outputs (for GPUs). fold_style: how SqueezeSegV2's Fire squeeze BNs fold (deploy.fold
    SQUEEZE_STYLES: "max" or "ones_channel"). Raises DataError naming the checkpoint or the output for bad options, a
    checkpoint that is not a model, or an operator TensorRT does not support.
    """
    import onnx  # noqa: F401  (fail early, with the extra's name, before the slow part)

    started = time.perf_counter()
    checkpoint_path, out_path = Path(checkpoint_path), Path(out_path)
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise DataError(out_path, f"opset must be an integer >= {MIN_OPSET} (TensorRT and the runtimes need it), "
                                  f"got {opset!r}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise DataError(out_path, f"batch must be a positive integer or None (dynamic), got {batch!r}")
    if out_path.suffix != ".onnx":
        raise DataError(out_path, "the output of an ONNX export must end in .onnx")
    if crf not in CRF_PLACES:
        raise DataError(out_path, f"crf must be one of {', '.join(CRF_PLACES)}, got {crf!r}")
    from deploy.fold import SQUEEZE_STYLES

    if fold_style not in SQUEEZE_STYLES:
        raise DataError(out_path, f"fold_style must be one of {', '.join(SQUEEZE_STYLES)}, got {fold_style!r}")
    net = _load_network(checkpoint_path, crf, fold_style)
    model_proto, exporter = _trace(net, opset, batch)
    model_proto = _finish(model_proto, simplify, out_path)
    if fp16:
        model_proto = _finish(to_fp16(model_proto), simplify, out_path)
    data = model_proto.SerializeToString()

    from deploy.sidecar import write_sidecar
    from squeeze.atomic import atomic_write_bytes

    atomic_write_bytes(out_path, data)
    sidecar = dataclasses.replace(
        net.sidecar, model_file=out_path.name, inputs=_graph_inputs(model_proto), precision="fp16" if fp16 else "fp32",
        output_names=tuple(o.name for o in model_proto.graph.output),
        export={"exporter": exporter, "opset": opset, "torch": _torch_version(), "checkpoint": checkpoint_path.name,
                "batch_norm_folded": net.folded, "batch_norm_remaining": net.remaining})
    sidecar_file = write_sidecar(out_path, sidecar)
    counts = Counter(n.op_type for n in model_proto.graph.node)
    return ExportReport(out_path, sidecar_file, sidecar.task, sidecar.model_name, time.perf_counter() - started,
                        len(data), dict(counts), exporter, opset, net.folded, net.remaining, net.crf,
                        "fp16" if fp16 else "fp32", sidecar.segmentation is not None and
                        sidecar.segmentation.host_crf is not None)


# ------------------------------------------------------------------------------------------------------ steps
@dataclass
class _Network:
    module: Any  # torch.nn.Module whose forward takes the graph inputs and returns the graph outputs
    example: tuple[Any, ...]  # example inputs, batch 2 (so a traced batch of 1 is never specialised)
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    sidecar: Any  # deploy.sidecar.Sidecar, inputs and outputs filled from the exported graph
    folded: int
    remaining: int
    crf: bool


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _load_network(path: Path, crf: str, fold_style: str) -> _Network:
    from squeeze.checkpoint import load_checkpoint

    task = load_checkpoint(path)["config"].get("task")
    if task == "detection":
        return _detector(path)
    if task == "segmentation":
        return _segmenter(path, crf, fold_style)
    raise DataError(path, f"config.task is {task!r}: only detection and segmentation checkpoints export")


def _detector(path: Path) -> _Network:
    import torch
    from torch import nn

    from deploy.equalize import equalize_detector
    from deploy.sidecar import DetectionParams, Sidecar, default_colors
    from squeezedet.model import fold_batch_norm
    from squeezedet.predict import load_model

    loaded = load_model(path)
    model, c, d = loaded.model, loaded.model_config, loaded.data_config
    folded = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    plain = fold_batch_norm(model) if c.batch_norm else model
    # exact in float (ReLU per Fire branch; ConvDet's output channels scaled by powers of two to one int8 range
    # behind a float Mul), so per-tensor uint8 activations keep the precision detections need (deploy.equalize)
    plain, _ = equalize_detector(plain.eval())
    plain = plain.eval().to(memory_format=torch.contiguous_format)

    class Raw(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = plain

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            deltas, confidence, class_probs = self.net.raw_outputs(image)
            return deltas, confidence, class_probs

    params = DetectionParams(
        image_width=d.image_width, image_height=d.image_height, pixel_mean_bgr=tuple(d.pixel_mean_bgr),
        anchor_shapes=tuple(tuple(map(float, s)) for s in c.anchor_shapes), grid=tuple(c.grid),
        exp_thresh=c.exp_thresh, top_n=c.top_n_detection, prob_thresh=c.prob_thresh, nms_thresh=c.nms_thresh,
        final_threshold=c.final_threshold, nms_mode=c.nms, soft_nms_sigma=c.soft_nms_sigma)
    sidecar = Sidecar("detection", loaded.model_name, "", "fp32", (), (), tuple(c.class_names),
                      default_colors(c.class_names), detection=params)
    example = (torch.zeros(2, 3, d.image_height, d.image_width),)
    return _Network(Raw().eval(), example, ("image",), ("deltas", "confidence", "class_probs"), sidecar,
                    folded, 0, False)


def _segmenter(path: Path, crf: str, fold_style: str) -> _Network:
    import torch
    from torch import nn

    from deploy.equalize import rectify_branches_
    from deploy.fold import fold_post_relu_batch_norm
    from deploy.sidecar import SegmentationParams, Sidecar, default_colors
    from squeeze.segmentation import RAW_CHANNELS
    from squeezeseg.predict import load_model

    loaded = load_model(path)
    result = fold_post_relu_batch_norm(loaded.model, fold_style)
    net = result.model
    # ReLU per expand branch, before the concatenation (exact): the runtimes fuse Conv + Relu, and the quantiser
    # gives each branch a [0, max] uint8 range instead of one that spans the negative half (deploy.equalize)
    rectify_branches_(net, skip_batch_norm=True)
    has_crf = crf == "graph" and net.crf is not None
    host_crf = net.crf.host_params(net.config.crf_xyz_channels) if crf == "host" and net.crf is not None else None
    if not has_crf:
        net.crf = None
    # The mask enters the graph when the network reads it: the CRF, or SqueezeSegV2's mask channel.
    takes_mask = has_crf or bool(getattr(net.config, "append_mask", False))
    d = loaded.data_config
    h, w = d.projection.height, d.projection.width

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, range_image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            if mask is None:  # a network that does not read the mask: any mask of the right shape will do
                mask = torch.ones(range_image.shape[0], range_image.shape[2], range_image.shape[3], dtype=torch.bool)
            return self.net.logits(range_image, mask)

    params = SegmentationParams(channel_names=RAW_CHANNELS[:loaded.model_config.in_channels],
                                mean=tuple(map(float, d.stats.mean)), std=tuple(map(float, d.stats.std)),
                                crf=has_crf, projection=d.projection, host_crf=host_crf)
    names = loaded.class_names
    sidecar = Sidecar("segmentation", loaded.model_name, "", "fp32", (), (), names, default_colors(names),
                      segmentation=params)
    cin = loaded.model_config.in_channels
    gen = torch.Generator().manual_seed(0)
    example: tuple[Any, ...] = (torch.randn(2, cin, h, w, generator=gen),)
    inputs: tuple[str, ...] = ("range_image",)
    if takes_mask:
        example += (torch.rand(2, h, w, generator=gen) > 0.3,)
        inputs += ("mask",)
    return _Network(Logits().eval(), example, inputs, ("logits",), sidecar, result.folded, result.remaining,
                    has_crf)


def _trace(net: _Network, opset: int, batch: int | None) -> tuple[Any, str]:
    """(onnx.ModelProto, exporter name). The dynamo exporter is torch 2.13's supported one: it exports the CRF's
    in-place ops and the TF-'SAME' padding arithmetic (static H, W) without TorchScript's tracer warnings."""
    import onnx
    import torch

    dynamic = batch is None
    example = net.example if dynamic else tuple(t[:1].expand(batch, *t.shape[1:]).contiguous() for t in net.example)
    shapes = {name: {0: torch.export.Dim("batch", min=1, max=4096)} for name in net.input_names} if dynamic else None
    with torch.no_grad(), warnings.catch_warnings(), _quiet("torch.onnx", "torch.export", "onnxscript", "onnx_ir"):
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter; failures raise
        program = torch.onnx.export(net.module, example, input_names=list(net.input_names),
                                    output_names=list(net.output_names), opset_version=opset, dynamo=True,
                                    dynamic_shapes=shapes, optimize=True, verbose=False, external_data=False)
    proto = onnx.ModelProto.FromString(program.model_proto.SerializeToString())
    if _default_opset(proto) != opset:  # torch 2.13 emits its native opset 18 whatever opset_version asks for
        proto = onnx.version_converter.convert_version(proto, opset)
    if _default_opset(proto) != opset:
        raise DataError(None, f"the exporter wrote opset {_default_opset(proto)}, not the {opset} asked for")
    return proto, "dynamo"


def _default_opset(proto: Any) -> int | None:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Raise these loggers to ERROR for the block: the exporter and its optimiser log every pass at INFO, and warn
    about torchvision operators this model does not use."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _finish(proto: Any, simplify: bool, out_path: Path) -> Any:
    import onnx

    from deploy.tensorrt_ops import check_tensorrt_ops

    onnx.checker.check_model(proto, full_check=True)
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
        onnx.checker.check_model(proto, full_check=True)
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    check_tensorrt_ops(((n.domain, n.op_type) for n in proto.graph.node), str(out_path))
    return proto


def to_fp16(proto: Any) -> Any:
    """An fp32 ONNX model with float16 weights and arithmetic, its float32 inputs and outputs kept (a Cast after each
    input and before each output), the nodes in topological order. Values beyond float16's range saturate at
    +-65504 and weights below its smallest subnormal become 0 (the converter's defaults); the ops the converter
    keeps float32 by default (DEFAULT_OP_BLOCK_LIST: Range, Resize, NonMaxSuppression, ...) get Casts around them."""
    import onnx_ir
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(proto, keep_io_types=True)
    # The converter appends the input Casts after the nodes that read them; sort (onnx_ir, onnxscript's IR).
    model = onnx_ir.from_proto(half)
    model.graph.sort()
    return onnx_ir.to_proto(model)


def _graph_inputs(proto: Any) -> tuple[Any, ...]:
    import onnx

    from deploy.sidecar import InputSpec

    initializers = {i.name for i in proto.graph.initializer}
    out = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        t = value.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        out.append(InputSpec(value.name, shape, "bool" if dtype == "bool" else dtype))
    return tuple(out)
