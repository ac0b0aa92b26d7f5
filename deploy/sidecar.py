"""The JSON sidecar beside an exported model (model.onnx -> model.json): everything inference needs without torch.

A runtime (deploy/runtimes/) reads the network file and this sidecar, and nothing of the model packages: the
input names and shapes, the normalisation, the class names and colours, and for detection the anchor grid and the
decoding / NMS settings, for segmentation the range-image projection. The pre- and post-processing themselves are
the numpy functions of squeeze.detection and squeeze.segmentation, the ones the torch predictors use.

Schema (format "squeeze-deploy-sidecar", version 1), keys in this order::

    format, version, task ("detection" | "segmentation"), model_name, model_file, precision,
    inputs: [{name, shape (null = dynamic axis), dtype}], output_names, class_names, class_colors (RGB),
    detection: {image_width, image_height, channel_order "BGR", pixel_mean_bgr, anchor_shapes, grid, exp_thresh,
                top_n, prob_thresh, nms_thresh, final_threshold, nms_mode, soft_nms_sigma}      (detection only)
    segmentation: {channel_names, mean, std, crf, projection: {height, width, fov_left_deg, fov_right_deg,
                   mode, fov_up_deg, fov_down_deg},
                   host_crf: null | {mode, iterations, window, theta_a, bilateral_theta_a, theta_r,
                                     angular_compat, bilateral_compat, xyz_channels}}          (segmentation only)
    export: {exporter, opset, torch, checkpoint}                                                (provenance)

The file is written atomically, UTF-8, 2-space indent, trailing newline; `to_json(from_json(text)) == text` for
every file `to_json` wrote.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from squeeze.atomic import atomic_write_text
from squeeze.classes import color_of
from squeeze.crf import CrfParams
from squeeze.detection import NMS_MODES
from squeeze.errors import DataError
from squeeze.range_image import ProjectionConfig

__all__ = [
    "FORMAT",
    "TASKS",
    "VERSION",
    "DetectionParams",
    "InputSpec",
    "SegmentationParams",
    "Sidecar",
    "anchor_grid",
    "read_sidecar",
    "sidecar_path",
    "write_sidecar",
]

FORMAT = "squeeze-deploy-sidecar"
VERSION = 1
TASKS = ("detection", "segmentation")
DTYPES = ("float32", "float16", "bool", "int64", "uint8")


@dataclass(frozen=True)
class InputSpec:
    """One network input: its graph name, shape (None for a dynamic axis: the batch) and element type."""

    name: str
    shape: tuple[int | None, ...]  # e.g. (None, 3, 384, 1248)
    dtype: str  # one of DTYPES


@dataclass(frozen=True)
class DetectionParams:
    """Pre- and post-processing of a detector: squeeze.detection.preprocess_image and postprocess take these."""

    image_width: int  # net input width, pixels; images are resized to it
    image_height: int  # net input height, pixels
    pixel_mean_bgr: tuple[float, float, float]  # subtracted from 0-255 pixels in the network's channel order
    anchor_shapes: tuple[tuple[float, float], ...]  # A (w, h) pairs, net-input pixels
    grid: tuple[int, int]  # (grid_h, grid_w) of the ConvDet output; N = grid_h * grid_w * A anchors
    exp_thresh: float  # safe_exp is linear above this delta
    top_n: int  # anchors kept before NMS; <= 0 keeps all
    prob_thresh: float  # drop anchors at or below this before NMS
    nms_thresh: float  # per-class NMS IoU threshold
    final_threshold: float  # drop detections at or below this after NMS; 0 keeps all
    nms_mode: str  # one of squeeze.detection.NMS_MODES
    soft_nms_sigma: float  # Gaussian Soft-NMS sigma (nms_mode "soft")
    channel_order: str = "BGR"  # the network's input channel order (the images in memory are RGB)

    def anchors(self) -> np.ndarray:
        """(N, 4) float32 anchors [cx, cy, w, h] in net-input pixels, in the network's output order."""
        return anchor_grid(*self.grid, self.image_width, self.image_height, self.anchor_shapes)


@dataclass(frozen=True)
class SegmentationParams:
    """Pre-processing of a segmenter: projection, then squeeze.segmentation.normalize_channels with mean / std."""

    channel_names: tuple[str, ...]  # the normalised input channels, in order (x, y, z, intensity, range)
    mean: tuple[float, ...]  # per channel, subtracted
    std: tuple[float, ...]  # per channel, divided by (> 0)
    crf: bool  # the recurrent CRF is inside the network (it then takes the mask input)
    projection: ProjectionConfig  # points -> range image (squeeze.range_image.project_scan)
    # The recurrent CRF the runtime applies to the network's logits on the host (squeeze.crf.apply_crf); None when
    # the network has none or carries it in its graph (`crf`). Absent in sidecars written before it existed.
    host_crf: CrfParams | None = None

    def __post_init__(self) -> None:
        if self.crf and self.host_crf is not None:
            raise ValueError("a segmenter's CRF runs either in the graph (crf) or on the host (host_crf), not both")
        if self.host_crf is not None and max(self.host_crf.xyz_channels) >= len(self.channel_names):
            raise ValueError(f"host_crf.xyz_channels {self.host_crf.xyz_channels} are not channels of "
                             f"{self.channel_names}")


@dataclass(frozen=True)
class Sidecar:
    """The parsed sidecar. Exactly one of `detection` / `segmentation` is set, the one `task` names."""

    task: str  # "detection" or "segmentation"
    model_name: str  # the named config the checkpoint was built from (squeezedet.models / squeezeseg.models)
    model_file: str  # the network file's name, beside the sidecar
    precision: str  # "fp32", "fp16" or "int8"
    inputs: tuple[InputSpec, ...]
    output_names: tuple[str, ...]  # detection: deltas, confidence, class_probs; segmentation: logits
    class_names: tuple[str, ...]  # class i of the outputs
    class_colors: tuple[tuple[int, int, int], ...]  # RGB per class (squeeze.classes)
    detection: DetectionParams | None = None
    segmentation: SegmentationParams | None = None
    export: Mapping[str, Any] = field(default_factory=dict)  # exporter, opset, torch version, source checkpoint

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if (self.detection is None) != (self.task == "segmentation") or \
                (self.segmentation is None) != (self.task == "detection"):
            raise ValueError(f"a {self.task} sidecar needs exactly its own '{self.task}' parameters")
        if len(self.class_colors) != len(self.class_names) or not self.class_names:
            raise ValueError(f"class_colors ({len(self.class_colors)}) must give one colour per class "
                             f"({len(self.class_names)})")
        if self.detection is not None and self.detection.nms_mode not in NMS_MODES:
            raise ValueError(f"nms_mode must be one of {NMS_MODES}, got {self.detection.nms_mode!r}")
        if self.segmentation is not None:
            s = self.segmentation
            if not len(s.mean) == len(s.std) == len(s.channel_names) or not all(v > 0 for v in s.std):
                raise ValueError(f"segmentation needs one mean and one std > 0 per channel {s.channel_names}, got "
                                 f"{s.mean} and {s.std}")

    def input(self, name: str) -> InputSpec | None:
        """The input of that name, None when the network has none (SqueezeSeg without CRF takes no mask)."""
        return next((i for i in self.inputs if i.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = dict(value) if f.name == "export" else _plain(value)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> Sidecar:
        """Parse a sidecar; DataError naming `source` and the field when something is missing or wrong."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(source, f"not JSON: {e}") from None
        return cls.from_dict(doc, source)

    @classmethod
    def from_dict(cls, doc: Any, source: str | Path | None = None) -> Sidecar:
        if not isinstance(doc, Mapping):
            raise DataError(source, "a sidecar is a JSON object")
        if doc.get("format") != FORMAT:
            raise DataError(source, f"format is {doc.get('format')!r}, expected {FORMAT!r} (not a deploy sidecar)")
        if doc.get("version") != VERSION:
            raise DataError(source, f"sidecar version {doc.get('version')!r} is not supported (this code reads "
                                    f"version {VERSION})")
        try:
            det = doc.get("detection")
            seg = doc.get("segmentation")
            return cls(
                task=str(doc["task"]), model_name=str(doc["model_name"]), model_file=str(doc["model_file"]),
                precision=str(doc["precision"]),
                inputs=tuple(InputSpec(str(i["name"]), tuple(None if d is None else int(d) for d in i["shape"]),
                                       str(i["dtype"])) for i in doc["inputs"]),
                output_names=tuple(map(str, doc["output_names"])),
                class_names=tuple(map(str, doc["class_names"])),
                class_colors=tuple(tuple(int(v) for v in c) for c in doc["class_colors"]),  # type: ignore[misc]
                detection=None if det is None else DetectionParams(**_tuples(det, DetectionParams)),
                segmentation=None if seg is None else SegmentationParams(
                    **{**_tuples(seg, SegmentationParams), "projection": ProjectionConfig(**seg["projection"]),
                       "host_crf": None if seg.get("host_crf") is None else CrfParams(**_tuples(seg["host_crf"],
                                                                                                  CrfParams))}),
                export=dict(doc.get("export", {})))
        except KeyError as e:
            raise DataError(source, f"sidecar field {e} is missing") from None
        except (TypeError, ValueError) as e:
            raise DataError(source, f"bad sidecar: {e}") from None


def _plain(value: Any) -> Any:
    """Dataclasses, tuples and numpy values -> JSON types, field order kept."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _tuples(doc: Mapping[str, Any], cls: type) -> dict[str, Any]:
    """The known fields of `cls` from `doc`, JSON lists as (nested) tuples; unknown keys are an error."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}")

    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return {k: tup(v) for k, v in doc.items()}


def anchor_grid(grid_h: int, grid_w: int, image_w: float, image_h: float,
                shapes: Sequence[Sequence[float]]) -> np.ndarray:
    """(grid_h * grid_w * A, 4) float32 anchors [cx, cy, w, h]: row n = (row * grid_w + col) * A + k, centre
    ((col + 1) * image_w / (grid_w + 1), (row + 1) * image_h / (grid_h + 1)), shape shapes[k] (the reference's
    layout, as squeezedet.anchors.make_anchors builds it; a test keeps the two equal, since a runtime may not
    import the model package)."""
    wh = np.asarray(shapes, np.float64).reshape(-1, 2)
    if grid_h < 1 or grid_w < 1 or len(wh) == 0:
        raise ValueError(f"anchor grid needs grid >= 1 x 1 and at least one shape, got {grid_h} x {grid_w}, "
                         f"{len(wh)} shapes")
    cx = np.arange(1, grid_w + 1, dtype=np.float64) * (float(image_w) / (grid_w + 1))
    cy = np.arange(1, grid_h + 1, dtype=np.float64) * (float(image_h) / (grid_h + 1))
    out = np.empty((grid_h, grid_w, len(wh), 4), np.float64)
    out[..., 0] = cx[None, :, None]
    out[..., 1] = cy[:, None, None]
    out[..., 2:] = wh[None, None]
    return out.reshape(-1, 4).astype(np.float32)


def default_colors(class_names: Sequence[str]) -> tuple[tuple[int, int, int], ...]:
    """The suite's palette colour of each class (squeeze.classes.color_of)."""
    return tuple(tuple(int(v) for v in color_of(n)) for n in class_names)  # type: ignore[misc]


def sidecar_path(model_path: str | Path) -> Path:
    """model.onnx -> model.json (also model.xml, model.engine): the sidecar beside a network file."""
    return Path(model_path).with_suffix(".json")


def write_sidecar(model_path: str | Path, sidecar: Sidecar) -> Path:
    """Write `sidecar` beside `model_path`, atomically; returns the sidecar's path."""
    path = sidecar_path(model_path)
    atomic_write_text(path, sidecar.to_json())
    return path


def read_sidecar(model_path: str | Path) -> Sidecar:
    """The sidecar beside a network file (or the sidecar file itself); DataError naming it when it is missing or
    malformed."""
    model_path = Path(model_path)
    path = model_path if model_path.suffix == ".json" else sidecar_path(model_path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, f"no sidecar beside {model_path.name}: an exported model needs the JSON file "
                              "'squeeze deploy export' writes next to it") from None
    except OSError as e:
        raise DataError(path, f"cannot read the sidecar: {e.strerror or e}") from None
    return Sidecar.from_json(text, path)
