"""One loader for every kind of model file: a training checkpoint or an exported model, as a predictor.

`load_detector(path)` and `load_segmenter(path)` return a squeeze.predictor Detector / Segmenter whatever the file
is, chosen by its suffix:

- a checkpoint (.pt, .pth) -> the torch predictor of its model package (squeezedet.predict.TorchDetector,
  squeezeseg.predict.TorchSegmenter);
- a deployed model -> the runtime that deploy/formats.py's one table of formats gives its suffix (.onnx:
  onnxruntime, .xml: OpenVINO IR, .engine: TensorRT), with its JSON sidecar beside it; no torch is imported.

It lives in the top package because only the top package may import both the model packages and deploy
(tests/test_layering.py): the model packages' `predict` commands receive these loaders from the command root
(squeeze_suite/cli.py passes them to `add_det_parser` / `add_seg_parser`) instead of importing deploy.

Both predictors answer the same calls beyond the protocols that the commands use: a detector's `detect_batch` and
`class_names`; a segmenter's `segment_pixels(raws, masks)`, `segment_range` and `projection` (the range-image
projection its network was trained on).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from squeeze.errors import DataError

__all__ = ["CHECKPOINT_SUFFIXES", "is_checkpoint", "load_detector", "load_segmenter", "model_suffixes"]

CHECKPOINT_SUFFIXES = (".pt", ".pth")  # torch checkpoints (squeeze.checkpoint); every other suffix is deploy's


def is_checkpoint(path: str | Path) -> bool:
    """Whether the file is a training checkpoint (by suffix), as opposed to an exported model."""
    return Path(path).suffix.lower() in CHECKPOINT_SUFFIXES


def model_suffixes() -> str:
    """'.pt/.pth (checkpoint), .onnx (onnx), .xml (openvino), .engine (tensorrt)': for help texts and errors."""
    from deploy.formats import FORMATS

    return ", ".join(["/".join(CHECKPOINT_SUFFIXES) + " (checkpoint)"] + [f"{f.suffix} ({f.name})" for f in FORMATS])


def load_detector(path: str | Path, *, nms: str | None = None, final_threshold: float | None = None,
                  **options: Any) -> Any:
    """A squeeze.predictor.Detector for a SqueezeDet checkpoint or an exported detection model.

    nms / final_threshold: override the model's NMS mode ("standard", "reference", "soft") and the score at or
    below which detections are dropped after NMS (None keeps the checkpoint's / sidecar's). options: passed to
    the runtime's loader of an exported model (threads, providers, precision, ...); a checkpoint takes `device`.
    DataError naming the file when it is of another task, of an unknown type, or its runtime is not installed.
    """
    path = Path(path)
    if is_checkpoint(path):
        from squeezedet.predict import load_model

        overrides = {k: v for k, v in (("nms", nms), ("final_threshold", final_threshold)) if v is not None}
        return load_model(path, **options, **overrides).detector
    from deploy.formats import load_predictor
    from squeeze.detection import NMS_MODES

    _check_task(path, "detection")
    predictor = load_predictor(path, **options)
    changes: dict[str, Any] = {}
    if nms is not None:
        if nms not in NMS_MODES:
            raise ValueError(f"nms must be one of {NMS_MODES}, got {nms!r}")
        changes["nms_mode"] = nms
    if final_threshold is not None:
        changes["final_threshold"] = float(final_threshold)
    if changes:  # the post-processing reads its parameters from here on every call (deploy.runtimes.common)
        predictor.params = dataclasses.replace(predictor.params, **changes)
    return predictor


def load_segmenter(path: str | Path, **options: Any) -> Any:
    """A squeeze.predictor.Segmenter (and RangeSegmenter) for a SqueezeSeg / SqueezeSegV2 checkpoint or an exported
    segmentation model. options: as for load_detector. DataError naming the file as there."""
    path = Path(path)
    if is_checkpoint(path):
        from squeezeseg.predict import load_model

        return load_model(path, **options).segmenter
    from deploy.formats import load_predictor

    _check_task(path, "segmentation")
    return load_predictor(path, **options)


def _check_task(path: Path, task: str) -> None:
    """DataError naming the file when an exported model is of the other task (its sidecar says), before the network
    is loaded; a file of unknown type or a missing one is left to load_predictor, which names what is wrong."""
    from deploy.formats import format_of_path
    from deploy.sidecar import read_sidecar, sidecar_path

    try:
        format_of_path(path)
    except DataError:
        raise DataError(path, f"unknown model file type {path.suffix or '(no suffix)'!r}: a model is one of "
                              f"{model_suffixes()}") from None
    if not path.is_file() or not sidecar_path(path).is_file():
        return
    got = read_sidecar(path).task
    if got != task:
        wanted = "detector" if task == "detection" else "segmenter"
        raise DataError(path, f"this is a {got} model, not a {wanted}")
