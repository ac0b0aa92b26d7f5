"""Latency of exported models: torch eager and each runtime and precision present, network only and end to end.

What is timed, batch 1, `threads` threads (2 by default, the car computer of the issue):
- network: the network call alone on a prepared input (numpy feeds for the runtimes, tensors for torch);
- end_to_end: points or a decoded RGB image in, per-point labels or boxes in original pixels out: projection,
  normalisation, the network, the CRF when it is inside the network, softmax / argmax and the mapping back to the
  points, or resizing, the network, decoding, top-N and NMS (the predictors' own `segment` / `detect`).

Candidates run interleaved, one call each per round, so a slow spell of this shared machine hits all of them
alike; after `warmup` rounds, `runs` rounds are timed and p50 / p90 / p99 and FPS (1000 / p50) reported. Each
timed call waits SETTLE_MS first, so that no runtime's idle threads still spin into it.

Per model file (.onnx or .xml with its sidecar) the runtimes that are installed: onnxruntime (fp32 or int8, the
model's own precision), OpenVINO with the f32 precision hint and with the bf16 one (on an int8 model it sets the
precision of the layers left in float: 1.5-2.4x faster than f32 there on this CPU). torch eager when a checkpoint is
given (the fp32 network, as it trains).
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploy.sidecar import Sidecar, read_sidecar
from squeeze.errors import DataError

__all__ = ["MODES", "SETTLE_MS", "Candidate", "Timing", "bar_chart", "bench", "candidates", "format_table",
           "run_interleaved", "synthetic_image", "synthetic_scan", "write_json_lines"]

MODES = ("network", "end_to_end")


@dataclass(frozen=True)
class Timing:
    """One figure: a model in one runtime and precision, one mode."""

    model: str  # the model file's stem, or the checkpoint's for torch
    task: str  # "detection" or "segmentation"
    runtime: str  # "torch", "onnxruntime" or "openvino"
    precision: str  # the model's: "fp32", "int8"; with OpenVINO's bf16 hint: "bf16" (fp32 model), "int8_bf16"
    mode: str  # one of MODES
    p50_ms: float
    p90_ms: float
    p99_ms: float
    fps: float  # 1000 / p50_ms
    runs: int
    threads: int


@dataclass(frozen=True)
class Candidate:
    """What to time for one model / runtime / precision: the network call and the whole predictor call."""

    model: str
    task: str
    runtime: str
    precision: str
    network: Callable[[], Any]  # runs the network once on a prepared batch-1 input
    end_to_end: Callable[[], Any]  # runs the predictor once on the raw input (points or RGB image)


# -------------------------------------------------------------------------------------------------- inputs
def synthetic_scan(rings: int = 64, points_per_ring: int = 2048, seed: int = 0) -> np.ndarray:
    """(rings * points_per_ring, 4) float32 x, y, z, intensity: a KITTI-ordered scan (ring by ring from the top
    laser down; each ring sweeps azimuth from 0 up through +180, wraps to -180 and rises back to 0) of a flat road
    1.73 m below the sensor and a wall 40 m away, with range noise: what a bench needs when no data is given."""
    rng = np.random.default_rng(seed)
    elevation = np.deg2rad(np.linspace(2.0, -24.9, rings))[:, None]  # (rings, 1)
    azimuth = np.linspace(0.0, 2 * np.pi, points_per_ring, endpoint=False)
    azimuth = np.where(azimuth > np.pi, azimuth - 2 * np.pi, azimuth)[None, :]  # 0..+180, then -180..0
    down = -np.sin(elevation)
    ground = np.where(down > 1e-3, 1.73 / np.maximum(down, 1e-3), np.inf)
    r = np.minimum(ground, 40.0) + rng.normal(0, 0.02, (rings, points_per_ring))
    horizontal = r * np.cos(elevation)
    pts = np.stack([horizontal * np.cos(azimuth), horizontal * np.sin(azimuth), r * np.sin(elevation),
                    rng.uniform(0, 1, (rings, points_per_ring))], axis=-1)
    return pts.reshape(-1, 4).astype(np.float32)


def synthetic_image(width: int = 1242, height: int = 375, seed: int = 0) -> np.ndarray:
    """(height, width, 3) uint8 RGB noise at KITTI's camera size (decoding and NMS time grow with what the net sees,
    so a real image from --data is the better input)."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def data_input(task: str, folder: str | Path | None) -> np.ndarray:
    """The first scan or camera image of a dataset folder (deploy.quantize.calibration_files), or a synthetic one."""
    if folder is None:
        return synthetic_image() if task == "detection" else synthetic_scan()
    from deploy.quantize import calibration_files
    from squeeze.kitti import read_image, read_velodyne

    files = [f for f in calibration_files(folder, task) if f.suffix != ".npy"]
    if not files:
        raise DataError(folder, "the end-to-end bench needs .bin scans (points), not range images")
    return read_image(files[0]) if task == "detection" else read_velodyne(files[0])


# ---------------------------------------------------------------------------------------------- candidates
def _predict(predictor: Any, task: str, x: np.ndarray) -> Callable[[], Any]:
    return (lambda: predictor.detect(x)) if task == "detection" else (lambda: predictor.segment(x))


def _network_feeds(sidecar: Sidecar, x: np.ndarray) -> dict[str, np.ndarray]:
    """The batch-1 network input of a raw input, by the runtimes' numpy pre-processing."""
    if sidecar.task == "detection":
        from squeeze.detection import preprocess_image

        p = sidecar.detection
        assert p is not None
        return {sidecar.inputs[0].name: preprocess_image(x, p.image_width, p.image_height, p.pixel_mean_bgr)[0][None]}
    from deploy.runtimes.common import project_points
    from squeeze.segmentation import normalize_channels, raw_channels

    s = sidecar.segmentation
    assert s is not None
    image, _ = project_points(x, s.projection)
    feeds = {next(i.name for i in sidecar.inputs if i.dtype != "bool"):
             normalize_channels(raw_channels(image), s.mean, s.std)[None]}
    mask = next((i.name for i in sidecar.inputs if i.dtype == "bool"), None)
    if mask is not None:
        feeds[mask] = image.mask[None]
    return feeds


def _network_call(predictor: Any, sidecar: Sidecar, x: np.ndarray) -> Callable[[], Any]:
    """The timed "network only" call on prepared feeds of `x`: the graph, and for a segmenter whose CRF runs on the
    host, that CRF too (squeeze.crf; the row then compares with an export that has the CRF in its graph)."""
    feeds = _network_feeds(sidecar, x)
    if sidecar.segmentation is None or sidecar.segmentation.host_crf is None:
        return lambda: predictor.network.run(feeds)
    from deploy.runtimes.common import project_points

    masks = project_points(x, sidecar.segmentation.projection)[0].mask[None]
    return lambda: predictor.network_logits(feeds, masks)


def _onnxruntime_candidate(path: Path, sidecar: Sidecar, x: np.ndarray, threads: int) -> Candidate:
    from deploy.runtimes.onnxruntime import OnnxDetector, OnnxSegmenter

    cls = OnnxDetector if sidecar.task == "detection" else OnnxSegmenter
    predictor = cls(path, sidecar, threads=threads, providers=["CPUExecutionProvider"])
    return Candidate(path.stem, sidecar.task, "onnxruntime", sidecar.precision, _network_call(predictor, sidecar, x),
                     _predict(predictor, sidecar.task, x))


def _openvino_candidate(path: Path, sidecar: Sidecar, x: np.ndarray, threads: int, hint: str) -> Candidate:
    from deploy.runtimes.openvino import OpenVinoDetector, OpenVinoSegmenter

    cls = OpenVinoDetector if sidecar.task == "detection" else OpenVinoSegmenter
    predictor = cls(path, sidecar, precision=hint, threads=threads)
    precision = sidecar.precision if hint == "f32" else ("bf16" if sidecar.precision == "fp32" else
                                                         f"{sidecar.precision}_bf16")
    return Candidate(path.stem, sidecar.task, "openvino", precision, _network_call(predictor, sidecar, x),
                     _predict(predictor, sidecar.task, x))


def torch_candidate(checkpoint: str | Path, x: np.ndarray, threads: int, crf: bool | None = None) -> Candidate:
    """torch eager on a checkpoint: the predictor of its model package (squeezedet / squeezeseg.predict)."""
    import torch

    from squeeze.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    config = load_checkpoint(checkpoint)["config"]
    task = config.get("task") if isinstance(config, dict) else None
    name = Path(checkpoint).stem
    if task == "detection":
        from squeezedet.predict import load_model as load_det

        loaded = load_det(checkpoint)
        detector = loaded.detector
        c = loaded.data_config
        from squeeze.detection import preprocess_image

        image = torch.from_numpy(preprocess_image(x, c.image_width, c.image_height, c.pixel_mean_bgr)[0][None])

        def det_network() -> Any:
            with torch.no_grad():
                return loaded.model.raw_outputs(image)

        return Candidate(name, task, "torch", "fp32", det_network, _predict(detector, task, x))
    if task != "segmentation":
        raise DataError(checkpoint, f"not a detection or segmentation checkpoint (task {task!r})")
    from squeezeseg.predict import load_model as load_seg
    from squeezeseg.predict import project_points

    seg = load_seg(checkpoint)
    if crf is False and getattr(seg.model, "crf", None) is not None:
        seg.model.crf = None
    segmenter = seg.segmenter
    sample = project_points(x, seg.data_config)
    from squeeze.segmentation import normalize_channels

    stats = seg.data_config.stats
    inputs = torch.from_numpy(normalize_channels(sample.raw, stats.mean, stats.std)[None])
    mask = torch.from_numpy(sample.mask[None])

    def seg_network() -> Any:
        with torch.no_grad():
            return seg.model.logits(inputs, mask)

    return Candidate(name, task, "torch", "fp32", seg_network, _predict(segmenter, task, x))


def candidates(model_path: str | Path, x: np.ndarray | None = None, threads: int = 2,
               runtimes: Sequence[str] = ("onnxruntime", "openvino"), data: str | Path | None = None
               ) -> list[Candidate]:
    """Every installed runtime on one model file; OpenVINO twice, with the f32 and the bf16 precision hint (on an
    int8 model the hint sets the precision of the layers left in float: "int8_bf16")."""
    path = Path(model_path)
    sidecar = read_sidecar(path)
    x = data_input(sidecar.task, data) if x is None else x
    out: list[Candidate] = []
    if "onnxruntime" in runtimes and path.suffix == ".onnx" and importlib.util.find_spec("onnxruntime"):
        out.append(_onnxruntime_candidate(path, sidecar, x, threads))
    if "openvino" in runtimes and importlib.util.find_spec("openvino"):
        out.append(_openvino_candidate(path, sidecar, x, threads, "f32"))
        out.append(_openvino_candidate(path, sidecar, x, threads, "bf16"))
    return out


# ------------------------------------------------------------------------------------------------- timing
# By default onnxruntime's worker threads spin for 40-50 ms of CPU after a session returns (our runtime stops them:
# deploy.runtimes.onnxruntime), torch's OpenMP threads for about 7 ms, OpenVINO's not at all (time.process_time over
# an idle 300 ms here). Timed straight after such a spin, the next candidate shares the cores with it: two default
# onnxruntime sessions called in turn on 2 cores each ran in 74-78 ms instead of 33-35 ms. So the timer waits this
# long before each timed call, whatever runtime went before.
SETTLE_MS = 50.0


def run_interleaved(calls: Sequence[Callable[[], Any]], runs: int = 50, warmup: int = 10,
                    settle_ms: float = SETTLE_MS) -> np.ndarray:
    """(runs, len(calls)) float64 milliseconds: each round calls every function once, in turn; `warmup` rounds
    first, untimed. Each timed call starts `settle_ms` after the previous call returned (SETTLE_MS: the threads a
    runtime leaves spinning must not be timed against the next candidate)."""
    if runs < 1 or warmup < 0 or settle_ms < 0:
        raise ValueError(f"runs must be >= 1, warmup and settle_ms >= 0, got {runs}, {warmup} and {settle_ms}")
    for _ in range(warmup):
        for call in calls:
            call()
    out = np.empty((runs, len(calls)))
    for r in range(runs):
        for j, call in enumerate(calls):
            if settle_ms:
                time.sleep(settle_ms / 1e3)
            start = time.perf_counter()
            call()
            out[r, j] = (time.perf_counter() - start) * 1e3
    return out


def bench(cands: Sequence[Candidate], runs: int = 50, warmup: int = 10, threads: int = 2,
          modes: Sequence[str] = MODES, progress: bool = False, settle_ms: float = SETTLE_MS) -> list[Timing]:
    """Time every candidate in every mode, interleaved: each round calls every candidate in every mode once, so a
    network-only figure and the end-to-end one around it are taken under the same load (timed in separate passes,
    a slow spell of this shared machine once put a model's end-to-end median 10% under its network-only one)."""
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    calls = [(c, mode) for mode in modes for c in cands]
    ms = run_interleaved([getattr(c, mode) for c, mode in calls], runs, warmup, settle_ms)
    rows: list[Timing] = []
    for (c, mode), column in zip(calls, ms.T, strict=True):
        p50, p90, p99 = np.percentile(column, [50, 90, 99])
        rows.append(Timing(c.model, c.task, c.runtime, c.precision, mode, round(float(p50), 3), round(float(p90), 3),
                           round(float(p99), 3), round(1000.0 / float(p50), 1), runs, threads))
        if progress:
            print(f"{mode:10s} {c.model:24s} {c.runtime:11s} {c.precision:9s} p50 {p50:8.2f} ms", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------- output
def format_table(rows: Sequence[Timing]) -> str:
    """A fixed-width table, one line per figure."""
    head = f"{'model':24s} {'runtime':11s} {'prec':9s} {'mode':10s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} " \
           f"{'FPS':>7s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.model[:24]:24s} {r.runtime:11s} {r.precision:9s} {r.mode:10s} {r.p50_ms:8.2f} "
                     f"{r.p90_ms:8.2f} {r.p99_ms:8.2f} {r.fps:7.1f}")
    return "\n".join(lines)


def write_json_lines(rows: Sequence[Timing], path: str | Path) -> None:
    from squeeze.atomic import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(asdict(r)) + "\n" for r in rows))


def bar_chart(rows: Sequence[Timing], path: str | Path) -> None:
    """A PNG of horizontal bars, FPS (1000 / p50) per figure, network-only and end-to-end side by side per
    model / runtime / precision, the value written at each bar's end."""
    import cv2

    from squeeze.kitti import write_image

    keys = list(dict.fromkeys((r.model, r.runtime, r.precision) for r in rows))
    by = {(r.model, r.runtime, r.precision, r.mode): r.fps for r in rows}
    top = max([r.fps for r in rows] + [1.0])
    label_w, bar_w, row_h, pad = 360, 520, 22, 10
    colours = {"network": (66, 133, 244), "end_to_end": (244, 160, 0)}  # RGB
    height = pad * 3 + 24 + len(keys) * (2 * row_h + 8)
    img = np.full((height, label_w + bar_w + 90, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, "FPS (1000 / median ms), batch 1", (pad, pad + 14), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for j, (mode, colour) in enumerate(colours.items()):
        x = label_w + j * 170
        cv2.rectangle(img, (x, pad + 3), (x + 14, pad + 15), colour, -1)
        cv2.putText(img, mode, (x + 20, pad + 14), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    y = pad * 2 + 24
    for model, runtime, precision in keys:
        cv2.putText(img, f"{model[:22]} {runtime} {precision}", (pad, y + row_h), font, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
        for k, (mode, colour) in enumerate(colours.items()):
            fps = by.get((model, runtime, precision, mode))
            if fps is None:
                continue
            y0 = y + k * row_h
            x1 = label_w + int(round(bar_w * fps / top))
            cv2.rectangle(img, (label_w, y0 + 2), (max(x1, label_w + 1), y0 + row_h - 2), colour, -1)
            cv2.putText(img, f"{fps:.1f}", (x1 + 4, y0 + row_h - 6), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        y += 2 * row_h + 8
    write_image(path, img)
