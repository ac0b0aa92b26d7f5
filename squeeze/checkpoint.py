"""Checkpoints: one file per snapshot, written atomically, loadable with ``torch.load(..., weights_only=True)``.

A checkpoint is a plain dict (see DESIGN.md, "Checkpoints")::

    {
        "format": "squeeze-checkpoint",  # marker, so that a foreign .pt file is recognised as such
        "version": 1,                    # layout version of this dict
        "state_dict": {...},             # the model's state_dict (tensors)
        "config": {...},                 # the model's config dataclass, as dataclasses.asdict
        "class_names": ["car", ...],     # the model's output classes, in index order
        "train_state": {...},            # optimiser, schedule, step, epoch, RNG states, best metric ({} if none)
    }

Only tensors, dicts, lists, tuples, str, int, float, bool and None go in, so the file loads with
``weights_only=True``: loading a checkpoint never runs code from the file (no pickle of arbitrary objects).
``save_checkpoint`` checks this before writing and names the offending key.

Writes go to a temporary file in the destination folder, are fsynced, renamed over the destination with
``os.replace`` and the folder is fsynced, so a crash at any moment leaves either the previous file or the new
one, never half a file. The trainer keeps ``last.pt`` (resume) and ``best.pt`` (best evaluation) as two separate
files, each replaced this way.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from squeeze.atomic import atomic_write, atomic_write_text, fsync_dir  # noqa: F401 (re-exported)
from squeeze.errors import DataError

FORMAT = "squeeze-checkpoint"
VERSION = 1
ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive format (the default since torch 1.6)
REQUIRED_KEYS = ("format", "version", "state_dict", "config", "class_names", "train_state")


class CheckpointError(DataError):
    """A checkpoint file that is missing, truncated, corrupt, not weights-only loadable, or lacks a key."""


# ------------------------------------------------------------------------------------------------ plain values
def to_plain(value: Any, where: str = "checkpoint") -> Any:
    """Return `value` as weights-only-loadable data: tensors, dicts, lists, tuples, str, int, float, bool, None.

    Dataclass instances become dicts (dataclasses.asdict), paths become str, numpy scalars become Python
    numbers and numpy arrays become tensors. Anything else raises TypeError naming its place (`where`), so a
    checkpoint that `torch.load(weights_only=True)` would refuse is never written.
    """
    if isinstance(value, np.generic):  # before the plain types: numpy.float64 is a subclass of float
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_plain(dataclasses.asdict(value), where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Mapping):
        out: dict[Any, Any] = OrderedDict() if isinstance(value, OrderedDict) else {}
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__name__}; only str and int keys are stored")
            out[key] = to_plain(item, f"{where}[{key!r}]")
        if isinstance(out, OrderedDict) and hasattr(value, "_metadata"):
            # nn.Module.state_dict() carries per-module versions that load_state_dict uses; they are plain dicts
            out._metadata = value._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(value, tuple):
        return tuple(to_plain(item, f"{where}[{i}]") for i, item in enumerate(value))
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [to_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise TypeError(
        f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored in a weights-only "
        "checkpoint; convert it to tensors, dicts, lists, str, int, float, bool or None"
    )


# ----------------------------------------------------------------------------------------------- atomic files
# ------------------------------------------------------------------------------------------------ save / load
def save_checkpoint(
    path: str | Path,
    *,
    model_state: Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | Any,
    class_names: Sequence[str],
    train_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write one checkpoint file atomically and return its path.

    model_state: the model's ``state_dict()`` (an unwrapped model, not DistributedDataParallel).
    config: the model's config, a dataclass (stored with dataclasses.asdict) or a plain dict.
    class_names: the output classes in index order.
    train_state: what resuming needs (the trainer fills it); ``{}`` or None for a model-only checkpoint.
    Raises TypeError, before touching the disk, if any value could not be loaded with ``weights_only=True``.
    """
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": to_plain(model_state, "state_dict"),
        "config": to_plain(config, "config"),
        "class_names": [str(name) for name in class_names],
        "train_state": to_plain(dict(train_state or {}), "train_state"),
    }
    if not isinstance(payload["config"], dict):
        raise TypeError(f"config must be a dataclass or a dict, got {type(config).__name__}")
    atomic_write(Path(path), lambda f: _save_with_crc(payload, f))
    return Path(path)


def _save_with_crc(payload: dict[str, Any], f: Any) -> None:
    """torch.save with CRC-32s in the archive (torch's default, forced here: load_checkpoint verifies them)."""
    get, set_ = (getattr(torch.serialization, name, None) for name in ("get_crc32_options", "set_crc32_options"))
    previous = get() if get is not None else True
    if set_ is not None and not previous:
        set_(True)
    try:
        torch.save(payload, f)
    finally:
        if set_ is not None and not previous:
            set_(previous)


def _verify_archive(path: Path, size: int) -> None:
    """Check every member's CRC-32 (torch's reader does not, so a damaged tensor would load as wrong numbers)."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except Exception as e:  # BadZipFile, or garbage decoded as names/compression methods
        raise CheckpointError(path, f"truncated or corrupt archive ({size} bytes; {type(e).__name__}: "
                                    f"{str(e)[:200]})") from e
    if damaged is not None:
        raise CheckpointError(path, f"corrupt: CRC-32 mismatch in {damaged!r} (damaged on disk or in transfer)")


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by `save_checkpoint` with ``weights_only=True`` (no code runs from the file).

    Returns the dict described in the module docstring. Raises CheckpointError naming the file when it is
    missing, empty, truncated, corrupt (every archive member's CRC-32 is checked, so damaged tensor bytes are
    caught rather than loaded), holds objects other than plain data, or lacks one of REQUIRED_KEYS.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "empty file (0 bytes); an interrupted copy or write?")
    with path.open("rb") as f:
        head = f.read(4)
    if head != ZIP_MAGIC:  # torch.save writes a zip archive; anything else is damaged or another format
        raise CheckpointError(path, f"not a torch checkpoint archive ({size} bytes starting {head!r}): corrupt, "
                                    "overwritten, or another format")
    _verify_archive(path, size)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused a class, or the pickled record is garbled
        detail = next((line.strip() for line in str(e).splitlines() if "WeightsUnpickler error" in line), str(e))
        raise CheckpointError(path, f"holds something other than tensors and plain data, or is corrupt; refused by "
                                    f"weights-only loading ({detail[:200]})") from e
    except Exception as e:  # zipfile/EOF/RuntimeError variants: the archive is cut short or damaged
        first = str(e).strip().split(". ")[0][:200]
        raise CheckpointError(path, f"truncated or corrupt ({size} bytes; {type(e).__name__}: {first})") from e
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"holds a {type(payload).__name__}, expected the checkpoint dict")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        hint = " (a bare state_dict? save with squeeze.checkpoint.save_checkpoint)" if "format" in missing else ""
        raise CheckpointError(path, f"missing key(s) {', '.join(missing)}{hint}")
    if payload["format"] != FORMAT:
        raise CheckpointError(path, f"format is {payload['format']!r}, expected {FORMAT!r}")
    if not isinstance(payload["version"], int) or payload["version"] > VERSION:
        raise CheckpointError(path, f"version {payload['version']!r} is newer than this code reads ({VERSION})")
    for key, kind in (("state_dict", dict), ("config", dict), ("class_names", list), ("train_state", dict)):
        if not isinstance(payload[key], kind):
            raise CheckpointError(path, f"{key} is a {type(payload[key]).__name__}, expected a {kind.__name__}")
    return payload


def export_weights(checkpoint: str | Path, out: str | Path, half: bool = True) -> Path:
    """A deployable checkpoint: weights (fp16 when `half`; loading casts them back) + configs, no training state."""
    ckpt = load_checkpoint(checkpoint)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    return save_checkpoint(out, model_state=state, config=ckpt["config"], class_names=ckpt["class_names"])


def load_named_model(path: str | Path, task: str, models: Mapping[str, tuple[Any, type]], device: str = "cpu",
                     **overrides: Any) -> tuple[torch.nn.Module, str, Any, dict[str, Any]]:
    """(model in eval mode, model name, model config, the checkpoint's config) from a checkpoint of `task`.

    models: the package's MODELS table {name: (config factory, model class)}; the config class must have
    `from_dict`. overrides replace config fields (inference settings). CheckpointError naming the file when the
    checkpoint is of another task, names an unknown model, or its weights do not fit.
    """
    ckpt = load_checkpoint(path, map_location=device)
    config = ckpt["config"]
    if not isinstance(config, dict) or config.get("task") != task:
        raise CheckpointError(path, f"not a {task} checkpoint (config.task != {task!r})")
    name = config.get("model_name")
    if name not in models:
        raise CheckpointError(path, f"unknown model {name!r}")
    make_config, model_cls = models[name]
    try:  # a config this code cannot rebuild (a field unknown here, a value of the wrong type): name the file
        model_config = type(make_config()).from_dict(config["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(path, f"its {name} config does not load: {e}") from None
    if overrides:
        model_config = dataclasses.replace(model_config, **overrides)
    try:
        model = model_cls(model_config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(path, f"its {name} config does not build a model: {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(path, f"weights do not fit the model: {str(e).splitlines()[0]}") from None
    return model.to(device).eval(), name, model_config, config


def require_train_state(payload: Mapping[str, Any], path: str | Path, keys: Sequence[str]) -> dict[str, Any]:
    """Return ``payload["train_state"]`` after checking it has `keys`; CheckpointError naming the file otherwise."""
    state = payload["train_state"]
    missing = [key for key in keys if key not in state]
    if missing:
        raise CheckpointError(path, f"train_state lacks {', '.join(missing)}; this checkpoint cannot resume training")
    return dict(state)
