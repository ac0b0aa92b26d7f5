"""onnxruntime runtime: an exported model.onnx and its sidecar as a squeeze.predictor Detector or Segmenter /
RangeSegmenter, with no torch and no model package.

Only the network runs in onnxruntime; pre- and post-processing are the numpy functions of squeeze.detection and
squeeze.segmentation (deploy.runtimes.common), with the sidecar's parameters.

Settings, and why:
- 2 intra-op threads by default (a car computer's budget, and these machines' core count), 1 inter-op thread (the
  graphs are one chain of convolutions), sequential execution, all graph optimisations;
- threads spin while a run lasts and stop when it returns (`session.force_spinning_stop`). onnxruntime's default
  keeps a worker spinning for 47-54 ms of CPU after every run, which on 2 cores fights the pre- and post-processing
  and any other session (LATTE runs a detector and a segmenter). Measured here, INT8, 2 threads, network only, each
  call after a 60 ms pause / back to back: SqueezeDet 27.3 / 22.6 ms against 28.3 / 26.8 with the default, SqueezeSeg
  + CRF 38.5 / 39.2 against 40.2 / 39.3, and 0.1 ms of CPU burnt after a run against ~50. Not spinning at all
  (`allow_spinning` 0) is slower: 28.8 / 27.3 and 42.3 / 42.6, each parallel section waking sleeping threads.
  `idle_spin=True` restores the default;
- execution providers: TensorRT, then CUDA, where the installed onnxruntime has them, then the CPU; `providers`
  chooses explicitly (an unavailable one is an error, not a silent fallback).

Needs the `deploy` extra (pip install 'squeeze-suite[deploy]') for the onnxruntime package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deploy.runtimes.common import NetworkDetector, NetworkSegmenter
from deploy.sidecar import Sidecar, read_sidecar
from squeeze.errors import DataError

__all__ = ["DEFAULT_THREADS", "OnnxDetector", "OnnxNetwork", "OnnxSegmenter", "default_providers", "load_onnxruntime"]

DEFAULT_THREADS = 2
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
NUMPY_OF_ONNX = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(bool)": np.bool_,
                 "tensor(int64)": np.int64, "tensor(uint8)": np.uint8}


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("the onnxruntime runtime needs the onnxruntime package: pip install "
                          "'squeeze-suite[deploy]' (or pip install onnxruntime)") from None
    return onnxruntime


def default_providers() -> list[str]:
    """The execution providers this onnxruntime has, best first (TensorRT, CUDA, CPU)."""
    available = set(_ort().get_available_providers())
    return [p for p in PREFERRED_PROVIDERS if p in available]


class OnnxNetwork:
    """One onnxruntime session: numpy inputs by name in, outputs in the sidecar's output order out.

    model_path: a .onnx file; sidecar: read from beside it (model.json) when None. DataError naming the file when
    it is missing, not ONNX, or does not match its sidecar.
    """

    def __init__(self, model_path: str | Path, sidecar: Sidecar | None = None, threads: int = DEFAULT_THREADS,
                 providers: Sequence[str] | None = None, idle_spin: bool = False):
        model_path = Path(model_path)
        if model_path.suffix != ".onnx":
            raise DataError(model_path, "onnxruntime reads .onnx files")
        if not model_path.is_file():
            raise DataError(model_path, "no such model file")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.sidecar = sidecar if sidecar is not None else read_sidecar(model_path)
        self.threads = int(threads)  # also the host CRF's (deploy.runtimes.common)
        ort = _ort()
        available = ort.get_available_providers()
        chosen = list(providers) if providers is not None else default_providers()
        missing = [p for p in chosen if p not in available]
        if missing or not chosen:
            raise ValueError(f"execution providers {missing or chosen} are not available here (this onnxruntime "
                             f"has {available})")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: the CPU provider's notes on unused providers are noise
        if not idle_spin:  # module doc: spin within a run, not for ~50 ms of CPU after it
            options.add_session_config_entry("session.force_spinning_stop", "1")
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=chosen)
        except Exception as e:  # onnxruntime raises its own Fail / InvalidGraph / InvalidProtobuf types
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise DataError(model_path, f"onnxruntime cannot load this model: {first}") from None
        self.providers = tuple(self.session.get_providers())
        inputs = {i.name: i for i in self.session.get_inputs()}
        wanted = [i.name for i in self.sidecar.inputs]
        if sorted(inputs) != sorted(wanted):
            raise DataError(model_path, f"the network's inputs {sorted(inputs)} are not its sidecar's {wanted}: "
                                        "a sidecar of another model?")
        outputs = [o.name for o in self.session.get_outputs()]
        absent = [n for n in self.sidecar.output_names if n not in outputs]
        if absent:
            raise DataError(model_path, f"the network has no outputs {absent} (it has {outputs})")
        self._dtypes = {name: NUMPY_OF_ONNX.get(i.type, np.float32) for name, i in inputs.items()}

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Named inputs of batch B -> outputs of batch B, in the sidecar's output order."""
        cast = {k: np.ascontiguousarray(v, self._dtypes[k]) for k, v in feeds.items()}
        return self.session.run(list(self.sidecar.output_names), cast)


class OnnxDetector(NetworkDetector):
    """squeeze.predictor.Detector over an exported SqueezeDet / SqueezeDet+ in onnxruntime."""

    def __init__(self, model_path: str | Path, sidecar: Sidecar | None = None, threads: int = DEFAULT_THREADS,
                 providers: Sequence[str] | None = None, idle_spin: bool = False):
        super().__init__(OnnxNetwork(model_path, sidecar, threads, providers, idle_spin), model_path)


class OnnxSegmenter(NetworkSegmenter):
    """squeeze.predictor.Segmenter and RangeSegmenter over an exported SqueezeSeg / SqueezeSegV2 in onnxruntime."""

    def __init__(self, model_path: str | Path, sidecar: Sidecar | None = None, threads: int = DEFAULT_THREADS,
                 providers: Sequence[str] | None = None, idle_spin: bool = False):
        super().__init__(OnnxNetwork(model_path, sidecar, threads, providers, idle_spin), model_path)


def load_onnxruntime(model_path: str | Path, threads: int = DEFAULT_THREADS,
                     providers: Sequence[str] | None = None) -> OnnxDetector | OnnxSegmenter:
    """The Detector or Segmenter its sidecar's task calls for."""
    sidecar = read_sidecar(model_path)
    cls = OnnxDetector if sidecar.task == "detection" else OnnxSegmenter
    return cls(model_path, sidecar, threads, providers)
