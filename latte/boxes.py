"""What LATTE annotates: oriented 3D boxes in the velodyne frame, and the per-frame document that holds them.

A box is one row of squeeze.geometry's velodyne layout [x, y, z, l, w, h, yaw] (geometric centre, yaw about
+z from +x) plus what an annotation tool needs around it: a stable id, a track id that persists across
frames, a KITTI class, where it came from and whether a person accepted it.

The frame document is what the store versions and the browser edits:

    {"frame_id": "000003", "version": 7, "status": "todo" | "done" | "review",
     "boxes": [box dict, ...],                       # in the order they were added
     "brush": {"indices": [int, ...], "labels": [str, ...]}}   # point labels painted outside boxes

Everything here is pure and JSON-safe: `Box.from_dict` checks every field and raises `EditError` naming it,
so a bad request never reaches the store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np

# KITTI object types an annotator picks from; DontCare is not drawn, it is what export writes for regions.
ANNOTATION_CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc")
# Per-point labels (the brush and the boxes' points): background plus the annotation classes, lower case
# like SEGMENTATION_CLASSES so a segmenter's "car" / "pedestrian" / "cyclist" map by name.
POINT_CLASSES = ("background",) + tuple(c.lower() for c in ANNOTATION_CLASSES)
BOX_SOURCES = ("manual", "one_click", "fusion", "tracked", "interpolated", "copied", "imported")
FRAME_STATUSES = ("todo", "done", "review")

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_EXTENT = 50.0  # m; no road user is longer, wider or taller: a larger box is a client bug, refused
MAX_COORD = 1000.0  # m from the sensor


class EditError(ValueError):
    """A box, frame document or edit that is malformed; the message names the field."""


@dataclass(frozen=True)
class Box:
    """One annotated object, velodyne frame, metres and radians."""

    id: str  # unique within its frame; made by whoever creates the box (browser or server), [A-Za-z0-9_-]
    cls: str  # one of ANNOTATION_CLASSES
    x: float
    y: float
    z: float  # geometric centre
    l: float  # noqa: E741 - the field's own name for the length along the heading
    w: float
    h: float
    yaw: float  # about velodyne +z from +x, wrapped to [-pi, pi)
    track_id: int = -1  # the same object in other frames has the same track id; -1 for none
    source: str = "manual"  # one of BOX_SOURCES
    accepted: bool = True  # proposals (one-click, fusion, tracked, interpolated) start False until accepted
    score: float = 1.0  # detector or fit confidence, 1 for boxes a person drew

    @property
    def array(self) -> np.ndarray:
        """(7,) float64 [x, y, z, l, w, h, yaw] for squeeze.geometry."""
        return np.array([self.x, self.y, self.z, self.l, self.w, self.h, self.yaw], dtype=np.float64)

    def with_array(self, box7: np.ndarray | Iterable[float], **changes: object) -> Box:
        """A copy placed at `box7` = [x, y, z, l, w, h, yaw] (yaw wrapped), other fields from `changes`."""
        x, y, z, l, w, h, yaw = (float(v) for v in box7)  # noqa: E741
        return replace(self, x=x, y=y, z=z, l=l, w=w, h=h, yaw=wrap_yaw(yaw), **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: Mapping, where: str = "box") -> Box:
        """Check and build a box from JSON; raises EditError naming the field."""
        if not isinstance(d, Mapping):
            raise EditError(f"{where}: expected an object, got {type(d).__name__}")
        unknown = set(d) - set(Box.__dataclass_fields__)
        if unknown:
            raise EditError(f"{where}: unknown field(s) {sorted(unknown)}")
        for name in ("id", "cls", "x", "y", "z", "l", "w", "h", "yaw"):
            if name not in d:
                raise EditError(f"{where}: missing field {name!r}")
        box_id = d["id"]
        if not isinstance(box_id, str) or not _ID.match(box_id):
            raise EditError(f"{where}.id: expected 1-64 characters of [A-Za-z0-9_-], got {box_id!r}")
        if d["cls"] not in ANNOTATION_CLASSES:
            raise EditError(f"{where}.cls: {d['cls']!r} is not one of {', '.join(ANNOTATION_CLASSES)}")
        values = {}
        for name in ("x", "y", "z", "l", "w", "h", "yaw", "score"):
            if name not in d:
                continue
            v = d[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise EditError(f"{where}.{name}: expected a finite number, got {v!r}")
            values[name] = float(v)
        for name in ("x", "y", "z"):
            if abs(values[name]) > MAX_COORD:
                raise EditError(f"{where}.{name}: {values[name]} is more than {MAX_COORD:g} m from the sensor")
        for name in ("l", "w", "h"):
            if not 0.0 < values[name] <= MAX_EXTENT:
                raise EditError(f"{where}.{name}: expected a size in (0, {MAX_EXTENT:g}] m, got {values[name]}")
        track_id = d.get("track_id", -1)
        if isinstance(track_id, bool) or not isinstance(track_id, int) or track_id < -1:
            raise EditError(f"{where}.track_id: expected an integer >= -1, got {track_id!r}")
        source = d.get("source", "manual")
        if source not in BOX_SOURCES:
            raise EditError(f"{where}.source: {source!r} is not one of {', '.join(BOX_SOURCES)}")
        accepted = d.get("accepted", True)
        if not isinstance(accepted, bool):
            raise EditError(f"{where}.accepted: expected true or false, got {accepted!r}")
        values["yaw"] = wrap_yaw(values["yaw"])
        return Box(id=box_id, cls=d["cls"], track_id=track_id, source=source, accepted=accepted, **values)


def wrap_yaw(yaw: float) -> float:
    """yaw wrapped to [-pi, pi)."""
    return float((yaw + math.pi) % (2 * math.pi) - math.pi)


def boxes_array(boxes: Iterable[Box]) -> np.ndarray:
    """(N, 7) float64 velodyne boxes of `boxes`; (0, 7) for none."""
    rows = [b.array for b in boxes]
    return np.stack(rows) if rows else np.zeros((0, 7), dtype=np.float64)


def empty_document(frame_id: str) -> dict:
    """The document of a frame nobody has edited: version 0, no boxes, status todo."""
    return {"frame_id": frame_id, "version": 0, "status": "todo", "boxes": [], "brush": {"indices": [], "labels": []}}


def check_document(doc: Mapping, where: str = "document") -> dict:
    """Check a frame document (as stored or received) and return it as plain JSON types; raises EditError."""
    if not isinstance(doc, Mapping):
        raise EditError(f"{where}: expected an object")
    for name in ("frame_id", "version", "status", "boxes", "brush"):
        if name not in doc:
            raise EditError(f"{where}: missing field {name!r}")
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise EditError(f"{where}.version: expected an integer >= 0, got {version!r}")
    if doc["status"] not in FRAME_STATUSES:
        raise EditError(f"{where}.status: {doc['status']!r} is not one of {', '.join(FRAME_STATUSES)}")
    if not isinstance(doc["boxes"], list):
        raise EditError(f"{where}.boxes: expected a list")
    boxes = [Box.from_dict(b, f"{where}.boxes[{i}]") for i, b in enumerate(doc["boxes"])]
    ids = [b.id for b in boxes]
    if len(set(ids)) != len(ids):
        raise EditError(f"{where}.boxes: duplicate box id(s) {sorted({i for i in ids if ids.count(i) > 1})}")
    brush = doc["brush"]
    if not isinstance(brush, Mapping) or set(brush) != {"indices", "labels"}:
        raise EditError(f"{where}.brush: expected {{'indices': [...], 'labels': [...]}}")
    indices, labels = brush["indices"], brush["labels"]
    if not isinstance(indices, list) or not isinstance(labels, list) or len(indices) != len(labels):
        raise EditError(f"{where}.brush: indices and labels must be lists of the same length")
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in indices):
        raise EditError(f"{where}.brush.indices: expected integers >= 0")
    if len(set(indices)) != len(indices):
        raise EditError(f"{where}.brush.indices: an index appears twice")
    bad = [lab for lab in labels if lab not in POINT_CLASSES]
    if bad:
        raise EditError(f"{where}.brush.labels: {bad[0]!r} is not one of {', '.join(POINT_CLASSES)}")
    return {"frame_id": str(doc["frame_id"]), "version": version, "status": doc["status"],
            "boxes": [b.to_dict() for b in boxes], "brush": {"indices": list(indices), "labels": list(labels)}}


def document_boxes(doc: Mapping) -> list[Box]:
    """The boxes of a (checked) frame document."""
    return [Box.from_dict(b) for b in doc["boxes"]]
