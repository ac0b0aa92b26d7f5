"""TensorRT runtime: a serialized engine (model.fp16.engine, built on this GPU by `squeeze deploy trt`) and its
sidecar as a squeeze.predictor Detector or Segmenter / RangeSegmenter, with no torch and no model package.

Only the network runs in TensorRT; pre- and post-processing are the numpy functions of squeeze.detection and
squeeze.segmentation (deploy.runtimes.common), with the sidecar's parameters, as in the onnxruntime runtime.

How it runs, and why:
- TensorRT's named-tensor API (TensorRT 8.6 and 10: set_input_shape, set_tensor_address, execute_async_v3), the
  only one TensorRT 10 (JetPack 6) has;
- device memory and copies through cuda-python's CUDA runtime bindings (the `cuda-python` package; JetPack's
  TensorRT wheels do not bring their own), one stream, buffers kept between calls and grown when a batch is
  larger; host arrays are copied in, the engine runs, the outputs are copied back and the stream synchronised;
- inputs are cast to the engine's tensor types (an fp16 engine keeps float32 inputs and outputs unless it was
  built otherwise).

Needs TensorRT (JetPack on a Jetson; pip install tensorrt on x86) and pip install cuda-python.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from deploy.runtimes.common import NetworkDetector, NetworkSegmenter
from deploy.sidecar import Sidecar, read_sidecar
from squeeze.errors import DataError

__all__ = ["TensorRTDetector", "TensorRTNetwork", "TensorRTSegmenter", "load_tensorrt"]


def _tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError:
        raise ImportError("the TensorRT runtime needs the tensorrt package: JetPack on a Jetson ships it "
                          "(python3-libnvinfer), pip install tensorrt on an x86 machine with an NVIDIA GPU") from None
    return tensorrt


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise ImportError("the TensorRT runtime needs CUDA's Python bindings: pip install cuda-python") from None
    return cudart


def _check(result: Any) -> Any:
    """Unwrap a cuda-python call's (error, value...) tuple; RuntimeError naming the CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(getattr(err, "value", err)) != 0:  # cudaError_t.cudaSuccess is 0
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else values


class TensorRTNetwork:
    """One deserialized engine with its execution context: numpy inputs by name in, outputs in the sidecar's order
    out. DataError naming the file when it is missing, not an engine for this GPU / TensorRT, or does not match its
    sidecar."""

    def __init__(self, model_path: str | Path, sidecar: Sidecar | None = None):
        model_path = Path(model_path)
        if model_path.suffix != ".engine":
            raise DataError(model_path, "the TensorRT runtime reads .engine files (squeeze deploy trt)")
        if not model_path.is_file():
            raise DataError(model_path, "no such model file")
        self.sidecar = sidecar if sidecar is not None else read_sidecar(model_path)
        trt, self._cudart = _tensorrt(), _cudart()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(model_path.read_bytes())
        if self.engine is None:
            raise DataError(model_path, "TensorRT cannot load this engine: it was built for another GPU or "
                                        f"TensorRT version (this is {trt.__version__}); rebuild it here")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in self._inputs]
        wanted = [i.name for i in self.sidecar.inputs]
        if sorted(self._inputs) != sorted(wanted):
            raise DataError(model_path, f"the engine's inputs {sorted(self._inputs)} are not its sidecar's {wanted}: "
                                        "a sidecar of another model?")
        absent = [n for n in self.sidecar.output_names if n not in outputs]
        if absent:
            raise DataError(model_path, f"the engine has no outputs {absent} (it has {outputs})")
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes allocated)
        self._stream = _check(self._cudart.cudaStreamCreate())

    def _device(self, name: str, nbytes: int) -> int:
        """A device buffer of at least `nbytes` for tensor `name` (reused between calls, grown when needed)."""
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr))
            ptr, size = int(_check(self._cudart.cudaMalloc(max(nbytes, 1)))), nbytes
            self._buffers[name] = (ptr, size)
        return ptr

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Named inputs of batch B -> outputs of batch B, in the sidecar's output order."""
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        hosts = {}
        for name in self._inputs:
            host = np.ascontiguousarray(feeds[name], self._dtypes[name])
            hosts[name] = host  # kept alive until the stream is synchronised
            ptr = self._device(name, host.nbytes)
            self.context.set_input_shape(name, host.shape)
            _check(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, self._stream))
            self.context.set_tensor_address(name, ptr)
        outputs = []
        for name in self.sidecar.output_names:
            out = np.empty(tuple(self.context.get_tensor_shape(name)), self._dtypes[name])
            self.context.set_tensor_address(name, self._device(name, out.nbytes))
            outputs.append(out)
        if not self.context.execute_async_v3(self._stream):
            raise RuntimeError("TensorRT failed to run the engine (see its log)")
        for name, out in zip(self.sidecar.output_names, outputs, strict=True):
            _check(cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[name][0], out.nbytes, d2h, self._stream))
        _check(cudart.cudaStreamSynchronize(self._stream))
        return [o.astype(np.float32, copy=False) for o in outputs]

    def __del__(self) -> None:
        for ptr, _ in getattr(self, "_buffers", {}).values():
            self._cudart.cudaFree(ptr)


class TensorRTDetector(NetworkDetector):
    """squeeze.predictor.Detector over a SqueezeDet / SqueezeDet+ engine."""

    def __init__(self, model_path: str | Path, sidecar: Sidecar | None = None):
        super().__init__(TensorRTNetwork(model_path, sidecar), model_path)


class TensorRTSegmenter(NetworkSegmenter):
    """squeeze.predictor.Segmenter and RangeSegmenter over a SqueezeSeg / SqueezeSegV2 engine."""

    def __init__(self, model_path: str | Path, sidecar: Sidecar | None = None):
        super().__init__(TensorRTNetwork(model_path, sidecar), model_path)


def load_tensorrt(model_path: str | Path, threads: int | None = None) -> TensorRTDetector | TensorRTSegmenter:
    """The Detector or Segmenter its sidecar's task calls for. `threads` is taken so every runtime's loader can be
    called alike (deploy.formats.load_predictor); the engine runs on the GPU and ignores it."""
    sidecar = read_sidecar(model_path)
    cls = TensorRTDetector if sidecar.task == "detection" else TensorRTSegmenter
    return cls(model_path, sidecar)
