"""The ONNX operators TensorRT's ONNX parser supports (onnx-tensorrt's operator table, TensorRT 8.6 - 10.x), so an
export can fail at export time, naming the operator, instead of on the Jetson.

Only the default ONNX domain ("" / "ai.onnx") counts: an operator from another domain (com.microsoft, a custom
one) would need a TensorRT plugin. Some operators carry restrictions in TensorRT (e.g. Resize modes, Pad modes);
this list checks names, and the TensorRT build on the board is the final word.
"""

from __future__ import annotations

from collections.abc import Iterable

from squeeze.errors import DataError

__all__ = ["TENSORRT_ONNX_OPS", "check_tensorrt_ops", "unsupported_ops"]

TENSORRT_ONNX_OPS = frozenset({
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "BitShift", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat", "Constant",
    "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv", "DepthToSpace",
    "DequantizeLinear", "Div", "Dropout", "DynamicQuantizeLinear", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand",
    "EyeLike", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool",
    "GlobalLpPool", "GlobalMaxPool", "Greater", "GreaterOrEqual", "GridSample", "GroupNormalization", "GRU",
    "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If", "ImageScaler", "InstanceNormalization", "IsInf",
    "IsNaN", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization",
    "LpPool", "LRN", "LSTM", "MatMul", "Max", "MaxPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod",
    "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not", "OneHot", "Or", "Pad", "ParametricSoftplus", "Pow", "PRelu",
    "QuantizeLinear", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range",
    "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
    "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RNN", "RoiAlign",
    "Round", "ScaledTanh", "Scan", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid",
    "Sign", "Sin", "Sinh", "Size", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt",
    "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze",
    "Upsample", "Where", "Xor",
})
DEFAULT_DOMAINS = ("", "ai.onnx")


def unsupported_ops(ops: Iterable[tuple[str, str]]) -> list[str]:
    """Sorted names ("Op" or "domain::Op") of the (domain, op type) pairs TensorRT's parser does not take."""
    bad = {op if domain in DEFAULT_DOMAINS else f"{domain}::{op}" for domain, op in ops
           if domain not in DEFAULT_DOMAINS or op not in TENSORRT_ONNX_OPS}
    return sorted(bad)


def check_tensorrt_ops(ops: Iterable[tuple[str, str]], source: str | None = None) -> None:
    """DataError naming every operator TensorRT does not support (and `source`, the model file)."""
    bad = unsupported_ops(ops)
    if bad:
        raise DataError(source, f"operator(s) {', '.join(bad)} are not supported by TensorRT's ONNX parser "
                                "(deploy/tensorrt_ops.py); the model would not build on a Jetson")
