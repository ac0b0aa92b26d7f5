"""The annotation application without HTTP: what each request of the browser asks for, as plain methods.

`Annotator` ties the pieces together (LATTE, Wang, Wu et al., ITSC 2019): a frame source (latte.scene), the
versioned store of frame documents (latte.store), the per-frame geometry that one-click and tracking need
(latte.one_click.FrameGeometry: ground plane + KD-tree, built once per frame and kept in a small LRU), the
tracker (latte.tracking), camera fusion and segmenter pre-labels (latte.fusion) and KITTI import/export
(latte.kitti_io). latte/server.py only parses requests, calls these methods and maps their errors to status codes:

    UnknownFrame (a KeyError)      -> 404     latte.boxes.EditError (a ValueError) -> 422
    latte.store.StaleWrite         -> 409     NothingToDo                          -> 404 / 422

Every change goes through `Store.apply` with the caller's (session, edit_id), so a retried request is applied once
and undo/redo work per session. Operations that change several frames (copy to the next frames, interpolation)
write one edit per frame with edit ids derived from the request's.

Thread-safe: the HTTP layer calls it from a thread pool. The geometry cache has its own lock, and one lock
serialises the operations that read the store and then write what they computed from it (new track ids).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from latte.boxes import ANNOTATION_CLASSES, POINT_CLASSES, Box, EditError, document_boxes
from latte.one_click import FrameGeometry, one_click_box
from squeeze.classes import color_of
from squeeze.errors import DataError

log = logging.getLogger("latte")

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# One-click and fusion boxes are new objects: their ids are derived from the request's edit id (uuid5), so a
# retried request names the same box and the store's edit-id idempotency returns it instead of adding a twin.
_BOX_NAMESPACE = uuid.UUID("6f1d3c52-8a57-4d7e-9a43-2f3b1f6c0e11")
AUTOMATIC_SOURCES = frozenset({"one_click", "fusion", "tracked", "interpolated", "copied"})  # boxes a machine placed
IMPORT_SESSION = "import"  # the session KITTI label import is stored under (never undone by an annotator)
TRACK_HISTORY = 10  # frames of accepted boxes before the previous frame that feed a track's Kalman filter
JPEG_QUALITY = 90


class UnknownFrame(KeyError):
    """A frame id that is not one of the source's frames (HTTP 404)."""

    def __init__(self, frame_id: object):
        super().__init__(frame_id)
        self.frame_id = frame_id

    def __str__(self) -> str:
        return f"unknown frame {str(self.frame_id)[:80]!r}"


class NothingToDo(LookupError):
    """A request that finds nothing to work on: no object at a one-click, nothing to undo, no image (404 / 422)."""


def _check_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise EditError(f"{field}: expected 1-64 characters of [A-Za-z0-9_-], got {str(value)[:80]!r}")
    return value


def _check_int(value: object, field: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EditError(f"{field}: expected an integer >= {minimum}, got {value!r}")
    return value


def _box_id(*parts: object) -> str:
    """A uuid (hex) determined by `parts`: the same request names the same box."""
    return uuid.uuid5(_BOX_NAMESPACE, "/".join(str(p) for p in parts)).hex


def _world(box7: np.ndarray, pose: np.ndarray | None) -> np.ndarray:
    from latte.tracking import box_to_world

    return box_to_world(box7, np.eye(4) if pose is None else pose)


class Annotator:
    """The application over one frame source and one store.

    source:     a latte.scene.FrameSource (its frame ids are the only frame ids requests may name)
    store:      a latte.store.Store
    detector:   squeeze.predictor.Detector for camera fusion, or None
    segmenter:  squeeze.predictor.Segmenter for point pre-labels, or None
    export_dir: where `export` writes (fixed here, never taken from a request); None: SOURCE_ROOT/latte_export
    import_labels: import a frame's KITTI label_2 boxes the first time it is opened (when it has no document)
    cache_frames: how many frames' geometry (points, ground, KD-tree, JPEG, pre-labels) stay in memory
    prefetch: after a frame's payload is served, prepare the next frame in a background thread (an annotator
              mostly moves forward, so the next frame opens warm)
    """

    def __init__(self, source: Any, store: Any, detector: Any = None, segmenter: Any = None,
                 export_dir: str | Path | None = None, import_labels: bool = True, cache_frames: int = 4,
                 prefetch: bool = True):
        self.source = source
        self.store = store
        self.detector = detector
        self.segmenter = segmenter
        self.export_dir = Path(export_dir) if export_dir is not None else Path(source.root) / "latte_export"
        self.import_labels = import_labels
        self.frame_ids: list[str] = list(source.frame_ids())
        self._index = {fid: i for i, fid in enumerate(self.frame_ids)}
        self._cache_frames = max(1, int(cache_frames))
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()  # fid -> {"values": {key: value}, "locks"}
        self._cache_lock = threading.Lock()
        self._helper: ThreadPoolExecutor | None = None
        self._write_lock = threading.RLock()
        self._imported: set[str] = set()
        self._prefetch = prefetch
        self._prefetcher: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------------------------------ frames
    def frame_id(self, fid: object) -> str:
        """`fid` if it is one of the source's frames; UnknownFrame otherwise (nothing is read for it)."""
        if not isinstance(fid, str) or fid not in self._index:
            raise UnknownFrame(fid)
        return fid

    def info(self) -> dict:
        """What the client needs once: frames, classes, colours, which models run, and a fresh session id."""
        return {"name": self.source.name, "frames": list(self.frame_ids), "classes": list(ANNOTATION_CLASSES),
                "point_classes": list(POINT_CLASSES),
                "colors": {c: list(color_of(c.lower())) for c in (*ANNOTATION_CLASSES, *POINT_CLASSES)},
                "detector": self.detector is not None, "segmenter": self.segmenter is not None,
                "session": uuid.uuid4().hex}

    def _memo(self, fid: str, key: str, make: Callable[[], Any]) -> Any:
        """A per-frame value computed once while the frame stays in the LRU cache: "geom" (the FrameGeometry: scan
        read, ground fitted, KD-tree built), "image" (JPEG), "prelabel", "detections".

        Threads asking for the same value wait for one computation; different values of a frame (geometry and
        image) and different frames are computed concurrently.
        """
        with self._cache_lock:
            entry = self._cache.get(fid)
            if entry is None:
                entry = self._cache[fid] = {"values": {}, "locks": {}}
                while len(self._cache) > self._cache_frames:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(fid)
            values = entry["values"]
            if key in values:
                return values[key]
            lock = entry["locks"].setdefault(key, threading.Lock())
        with lock:
            with self._cache_lock:
                if key in values:
                    return values[key]
            value = make()
            with self._cache_lock:
                values[key] = value
            return value

    def geometry(self, fid: str) -> FrameGeometry:
        """The frame's FrameGeometry (from the LRU cache)."""
        fid = self.frame_id(fid)
        return self._memo(fid, "geom", lambda: FrameGeometry(self.source.points(fid)))

    def warm(self, fid: str) -> None:
        """Prepare a frame now: scan read, ground fitted, KD-tree built, image encoded (also the first call's
        one-time costs: JIT compilation, imports)."""
        fid = self.frame_id(fid)
        image = self._helpers().submit(self._image, fid)
        self.geometry(fid)
        image.result()

    def _warm_quietly(self, fid: str) -> None:
        try:
            self.warm(fid)
        except Exception as e:  # a broken next frame is reported when it is opened, not by the prefetch
            log.warning("prefetching frame %s failed: %s", fid, e)

    def _prefetch_next(self, fid: str) -> None:
        i = self._index[fid] + 1
        if not self._prefetch or i >= len(self.frame_ids):
            return
        nxt = self.frame_ids[i]
        with self._cache_lock:
            if nxt in self._cache:
                return
            if self._prefetcher is None:
                self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="latte-prefetch")
        self._prefetcher.submit(self._warm_quietly, nxt)

    def _helpers(self) -> ThreadPoolExecutor:
        """Threads that prepare a frame's image while the caller builds its geometry (OpenCV's decoding and
        encoding and SQLite's commit release the GIL, so the two overlap)."""
        with self._cache_lock:
            if self._helper is None:
                self._helper = ThreadPoolExecutor(max_workers=2, thread_name_prefix="latte-frame")
            return self._helper

    def close(self) -> None:
        """Stop the helper threads (the store is closed by its owner)."""
        for pool in (self._prefetcher, self._helper):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def document(self, fid: str) -> dict:
        """The frame's current document; on the first open of a frame with KITTI labels and no document, the
        labels are imported first (one edit of session "import")."""
        fid = self.frame_id(fid)
        if self.import_labels and fid not in self._imported:
            self._import(fid)
        return self.store.document(fid)

    def _import(self, fid: str) -> None:
        from latte.store import StaleWrite

        with self._write_lock:
            if fid in self._imported:
                return
            if self.store.document(fid)["version"] == 0:
                try:
                    boxes = list(self.source.labels(fid))
                except (DataError, OSError) as e:  # the frame stays usable; its labels are not imported
                    log.warning("frame %s: KITTI labels not imported: %s", fid, e)
                    boxes = []
                if boxes:  # each a track of its own, so that an imported frame seeds tracking
                    track = self._next_track_id()
                    boxes = [b if b.track_id >= 0 else replace(b, track_id=track + k) for k, b in enumerate(boxes)]
                    op = {"op": "batch", "ops": [{"op": "add", "box": b.to_dict()} for b in boxes]}
                    try:  # the edit id makes a second import of the same frame (another process) a no-op
                        self.store.apply(fid, 0, op, IMPORT_SESSION, f"import-{_box_id('import', fid)}")
                    except StaleWrite:  # someone edited it meanwhile: their document wins
                        pass
            self._imported.add(fid)

    def frame(self, fid: str) -> dict:
        """The frame payload: document, point count, image size, calibration, pose, time, ground plane."""
        fid = self.frame_id(fid)
        # The three slow parts of a first open run side by side: image decoded and JPEG-encoded (the client asks
        # for it next), labels imported (a committed SQLite write), geometry built (here).
        image_job = self._helpers().submit(self._image, fid)
        doc_job = self._helpers().submit(self.document, fid)
        geom = self.geometry(fid)
        doc, image = doc_job.result(), image_job.result()
        calib = self.source.calib(fid)
        pose = self.source.pose(fid)
        self._prefetch_next(fid)
        return {
            "document": doc,
            "n_points": int(len(geom.points)),
            "image": None if image is None else {"width": image["width"], "height": image["height"]},
            "calib": None if calib is None else {"P2": np.asarray(calib.P2, float).tolist(),
                                                 "velo_to_rect": np.asarray(calib.velo_to_rect, float).tolist()},
            "pose": None if pose is None else np.asarray(pose, float).tolist(),
            "timestamp": float(self.source.timestamp(fid)),
            "ground_plane": [float(v) for v in geom.ground.plane],
        }

    def points_bytes(self, fid: str) -> tuple[int, bytes]:
        """(N, the scan as bytes): N x 4 little-endian float32 x, y, z, intensity, then N uint8 flags (bit 0:
        ground point). An empty scan gives (0, b"")."""
        geom = self.geometry(fid)
        pts = np.ascontiguousarray(geom.points[:, :4], dtype="<f4")
        flags = np.asarray(geom.ground.mask, dtype=np.uint8)
        return len(pts), pts.tobytes() + flags.tobytes()

    def point_labels(self, fid: str) -> np.ndarray:
        """(N,) uint8 index into POINT_CLASSES per point: the brush, else the boxes, else the segmenter's label."""
        from latte.kitti_io import point_labels

        fid = self.frame_id(fid)
        doc = self.document(fid)
        geom = self.geometry(fid)
        semantic, _ = point_labels(geom.points, document_boxes(doc), doc["brush"])
        labels = np.asarray(semantic).astype(np.uint8)
        if self.segmenter is not None:
            pre = self._prelabels(fid)
            free = labels == 0
            if doc["brush"]["indices"]:  # painted "background" is a person's word: the segmenter does not override it
                free[np.asarray(doc["brush"]["indices"], np.int64)] = False
            labels[free] = pre[free]
        return labels

    def _prelabels(self, fid: str) -> np.ndarray:
        """(N,) uint8 POINT_CLASSES index of the segmenter's label per point, computed once per cached frame."""

        def run() -> np.ndarray:
            from latte.fusion import prelabel

            names = np.asarray(prelabel(self.segmenter, self.geometry(fid).points), dtype=str)
            if names.size == 0:
                return np.zeros(0, np.uint8)
            lookup = {name: i for i, name in enumerate(POINT_CLASSES)}
            unique, inverse = np.unique(names, return_inverse=True)  # a few names over ~120k points
            return np.array([lookup.get(str(n).lower(), 0) for n in unique], np.uint8)[inverse.reshape(-1)]

        return self._memo(fid, "prelabel", run)

    def image_jpeg(self, fid: str) -> bytes:
        """The frame's camera image as JPEG (quality 90); NothingToDo when the frame has no image."""
        image = self._image(self.frame_id(fid))
        if image is None:
            raise NothingToDo(f"frame {fid} has no camera image")
        return image["jpeg"]

    def _image(self, fid: str) -> dict | None:
        """{"jpeg": bytes, "width", "height"} of the frame's image, encoded once per cached frame; None without one."""

        def encode() -> dict | None:
            import cv2

            image = self.source.image(fid)
            if image is None:
                return None
            # RGB in memory everywhere (docs/conventions.md); OpenCV's encoder takes BGR.
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]),
                                   [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError(f"frame {fid}: JPEG encoding failed")
            return {"jpeg": buf.tobytes(), "width": int(image.shape[1]), "height": int(image.shape[0])}

        return self._memo(fid, "image", encode)

    # ------------------------------------------------------------------------------------------ edits
    def edit(self, fid: str, base_version: int, op: Mapping, session: str, edit_id: str) -> dict:
        """Apply one edit op (latte.edits) to the frame; returns the new document. StaleWrite when base_version
        is not the current version, EditError for a malformed op."""
        fid = self.frame_id(fid)
        self._request(base_version, session, edit_id)
        if not isinstance(op, Mapping):
            raise EditError("op: expected an object")
        self.document(fid)  # an import on first open comes before the client's first edit
        with self._write_lock:
            # A retry (same edit id) gets the track ids its first attempt got, so that the store recognises it.
            stored = self.store.edit(edit_id)
            op = self._with_new_tracks(op, _added_boxes(stored["op"]) if stored is not None else None)
            return self.store.apply(fid, base_version, op, session, edit_id)

    def _with_new_tracks(self, op: Mapping, first: list[dict] | None = None) -> dict:
        """`op` with a new track id for every box it adds without one (a box drawn by hand): every object can be
        tracked to the next frame and copied, like the boxes one-click and fusion create. `first`: the boxes the
        same edit added when it was first stored (a retry reuses their track ids)."""
        op = dict(op)
        if op.get("op") == "batch" and isinstance(op.get("ops"), list):
            op["ops"] = [dict(o) if isinstance(o, Mapping) else o for o in op["ops"]]
        adds = _add_ops(op)
        untracked = [k for k, o in enumerate(adds) if isinstance(o.get("box"), Mapping)
                     and o["box"].get("track_id", -1) == -1]
        if not untracked:
            return op
        if first is not None and len(first) == len(adds):
            tracks = [first[k].get("track_id", -1) if isinstance(first[k], Mapping) else -1 for k in untracked]
        else:
            start = self._next_track_id()
            tracks = list(range(start, start + len(untracked)))
        for k, track in zip(untracked, tracks, strict=True):
            adds[k]["box"] = {**adds[k]["box"], "track_id": track}
        return op

    @staticmethod
    def _request(base_version: int | None, session: str, edit_id: str) -> None:
        if base_version is not None:
            _check_int(base_version, "base_version", 0)
        _check_name(session, "session")
        _check_name(edit_id, "edit_id")

    def undo(self, session: str) -> dict:
        doc = self.store.undo(_check_name(session, "session"))
        if doc is None:
            raise NothingToDo("nothing to undo")
        return doc

    def redo(self, session: str) -> dict:
        doc = self.store.redo(_check_name(session, "session"))
        if doc is None:
            raise NothingToDo("nothing to redo")
        return doc

    def log(self, fid: str, session: str, events: Sequence[Mapping]) -> None:
        """Store interaction events ({"t": seconds, "kind": ..., ...}) of a frame for efficiency studies."""
        fid = self.frame_id(fid)
        _check_name(session, "session")
        if not isinstance(events, Sequence) or isinstance(events, (str, bytes)):
            raise EditError("events: expected a list")
        for i, e in enumerate(events):
            if not isinstance(e, Mapping) or "t" not in e or "kind" not in e:
                raise EditError(f"events[{i}]: expected an object with 't' and 'kind'")
            t = e["t"]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not np.isfinite(t):
                raise EditError(f"events[{i}].t: expected a finite number of seconds, got {t!r}")
            if not isinstance(e["kind"], str) or not e["kind"]:
                raise EditError(f"events[{i}].kind: expected a non-empty string")
        self.store.log_interaction(fid, session, [dict(e) for e in events])

    def _next_track_id(self, extra: Iterable[Mapping] = ()) -> int:
        """max track id over every stored document (and `extra` docs) + 1; 0 for the first track."""
        best = -1
        for doc in [*self.store.documents().values(), *extra]:
            for b in doc["boxes"]:
                best = max(best, int(b.get("track_id", -1)))
        return best + 1

    # ------------------------------------------------------------------------------------------ one-click
    def one_click(self, fid: str, xyz: Sequence[float], cls: str | None, base_version: int, session: str,
                  edit_id: str) -> tuple[dict, dict, int]:
        """A box fitted to the object under a clicked point (latte.one_click), stored as a proposal with a new
        track id. Returns (document, the box dict, cluster size); NothingToDo when no object is there."""
        fid = self.frame_id(fid)
        self._request(base_version, session, edit_id)
        if cls is not None and cls not in ANNOTATION_CLASSES:
            raise EditError(f"cls: {cls!r} is not one of {', '.join(ANNOTATION_CLASSES)}")
        click = np.asarray(xyz, np.float64)
        if click.shape != (3,) or not np.all(np.isfinite(click)):
            raise EditError("x, y, z: expected three finite numbers")
        # The box is labelled cls (Car when none is given) and fitted with that class's size prior: without one,
        # two cars parked a metre apart along the line of sight came back as one 9 m box.
        cls = cls or "Car"
        geom = self.geometry(fid)
        found = one_click_box(geom, click, cls)
        if found is None:
            raise NothingToDo(f"no object at ({click[0]:.2f}, {click[1]:.2f}, {click[2]:.2f})")
        box7, cluster = found
        box_id = _box_id(fid, session, edit_id)
        with self._write_lock:
            doc = self.document(fid)
            done = next((b for b in doc["boxes"] if b["id"] == box_id), None)
            if done is not None:  # a retried request: its box is stored already (with the track id it got then)
                return doc, done, int(len(cluster))
            box = Box(id=box_id, cls=cls or "Car", x=0, y=0, z=0, l=1, w=1, h=1, yaw=0,
                      track_id=self._next_track_id(), source="one_click", accepted=False).with_array(box7)
            doc = self.store.apply(fid, base_version, {"op": "add", "box": box.to_dict()}, session, edit_id)
        stored = next((b for b in doc["boxes"] if b["id"] == box_id), box.to_dict())
        return doc, stored, int(len(cluster))

    # ------------------------------------------------------------------------------------------ tracking
    def track(self, fid: str, from_fid: str, base_version: int, session: str, edit_id: str) -> tuple[dict, list]:
        """Propagate the accepted, tracked boxes of `from_fid` into `fid` (latte.tracking: constant-velocity
        Kalman filter in the world frame over the tracks' earlier accepted boxes, re-fitted to the points).
        Tracks already in `fid` are skipped. Returns (document, the new proposal dicts) — one batch edit."""
        from latte.tracking import DEFAULT_CONFIG, TrackObservation, propagate_boxes

        fid, from_fid = self.frame_id(fid), self.frame_id(from_fid)
        self._request(base_version, session, edit_id)
        if fid == from_fid:
            raise EditError("from: tracking needs another frame than the target")
        doc = self.document(fid)
        present = {b["track_id"] for b in doc["boxes"] if b["track_id"] >= 0}
        prev = [b for b in document_boxes(self.document(from_fid))
                if b.accepted and b.track_id >= 0 and b.track_id not in present]
        if not prev:
            return doc, []
        wanted = {b.track_id for b in prev}
        # Histories: the tracks' accepted boxes in the frames before `from` (in the direction of travel), oldest
        # first, then `from` itself; frames far back add little to a constant-velocity filter.
        i_from, i_to = self._index[from_fid], self._index[fid]
        step = 1 if i_to > i_from else -1
        first = i_from - step * TRACK_HISTORY
        lo, hi = sorted((first, i_from))
        history_ids = [self.frame_ids[i] for i in range(max(lo, 0), min(hi, len(self.frame_ids) - 1) + 1)]
        if step < 0:
            history_ids.reverse()
        # Tracking backwards (to an earlier frame) is the same constant-velocity model with time reversed.
        def t_of(frame: str) -> float:
            return step * float(self.source.timestamp(frame))

        histories: dict[int, list] = {}
        for hid in history_ids:
            hdoc = self.store.document(hid) if hid != from_fid else self.document(hid)
            pose = self.source.pose(hid)
            t = t_of(hid)
            observed = [b for b in document_boxes(hdoc) if b.accepted and b.track_id in wanted]
            # A proposal accepted exactly as the machine placed it is a re-fit, not a person's placement: it
            # enters the filter with the re-fit's accuracy (latte.tracking.TrackingConfig.refit_position_std).
            placed = self._added_geometry(hid) if any(b.source in AUTOMATIC_SOURCES for b in observed) else {}
            for b in observed:
                first = placed.get(b.id)
                unchanged = b.source in AUTOMATIC_SOURCES and first is not None and np.array_equal(first, b.array)
                std = DEFAULT_CONFIG.refit_position_std if unchanged else None
                histories.setdefault(b.track_id, []).append(TrackObservation(t, _world(b.array, pose), std=std))
        geom = self.geometry(fid)
        proposals = propagate_boxes(prev, histories, t_of(fid), self.source.pose(fid), geom, self.source.pose(from_fid),
                                    t_prev=t_of(from_fid))
        boxes = [replace(p, id=_box_id(fid, session, edit_id, p.track_id), source="tracked", accepted=False)
                 for p in proposals if p.track_id not in present]
        return self._add_proposals(fid, doc, boxes, base_version, session, edit_id)

    def _add_proposals(self, fid: str, doc: dict, boxes: list[Box], base_version: int, session: str,
                       edit_id: str) -> tuple[dict, list[dict]]:
        """Store `boxes` in one batch edit; (the new document, the added box dicts). Nothing to add: (doc, [])."""
        if not boxes:
            return doc, []
        op = {"op": "batch", "ops": [{"op": "add", "box": b.to_dict()} for b in boxes]}
        doc = self.store.apply(fid, base_version, op, session, edit_id)
        ids = {b.id for b in boxes}
        return doc, [b for b in doc["boxes"] if b["id"] in ids]

    def _added_geometry(self, fid: str) -> dict[str, np.ndarray]:
        """{box id: (7,) box as its add edit placed it} for the boxes added to a frame through the store."""
        placed: dict[str, np.ndarray] = {}
        for e in self.store.edits(frame_id=fid):
            if e["kind"] != "edit":
                continue
            for box in _added_boxes(e["op"]):
                if isinstance(box, Mapping) and box.get("id") not in placed:
                    try:
                        placed[box["id"]] = Box.from_dict(box).array
                    except EditError:
                        continue
        return placed

    # ------------------------------------------------------------------------------------------ fusion
    def fusion(self, fid: str, base_version: int, session: str, edit_id: str) -> tuple[dict, list]:
        """Camera-detector proposals (latte.fusion.frustum_proposals: each 2D detection's frustum points
        clustered and fitted), each a new track; detections whose box centre falls in an existing box are
        skipped. NothingToDo without a detector or without an image."""
        fid = self.frame_id(fid)
        self._request(base_version, session, edit_id)
        if self.detector is None:
            raise NothingToDo("no detector: start the server with --detector CHECKPOINT_OR_MODEL")
        from latte.fusion import frustum_proposals

        calib, image = self.source.calib(fid), self._image(fid)
        if image is None or calib is None:
            raise NothingToDo(f"frame {fid} has no camera image and calibration to detect on")
        # The detector sees the frame's image itself (not the JPEG sent to the browser); once per cached frame.
        detections = self._memo(fid, "detections", lambda: self.detector.detect(self.source.image(fid)))
        proposals = frustum_proposals(self.geometry(fid), calib, detections, tuple(self.detector.class_names),
                                      image_size=(image["width"], image["height"]))
        with self._write_lock:
            doc = self.document(fid)
            existing = document_boxes(doc)
            track = self._next_track_id()
            boxes = []
            for k, p in enumerate(proposals):
                if any(_inside_bev(p.x, p.y, e) for e in existing):
                    continue
                boxes.append(replace(p, id=_box_id(fid, session, edit_id, k), track_id=track, source="fusion",
                                     accepted=False))
                track += 1
            return self._add_proposals(fid, doc, boxes, base_version, session, edit_id)

    # ------------------------------------------------------------------------------------------ copy, interpolate
    def copy_next(self, fid: str, box_id: str, count: int, session: str, edit_id: str) -> list[dict]:
        """Copy a box into the next `count` frames (source "copied", a proposal, same track id; a box without a
        track first gets a new one, in its own frame). Frames already holding the track are left alone.
        Returns the documents of every frame changed (the source frame first when its box got a track id)."""
        fid = self.frame_id(fid)
        self._request(None, session, edit_id)
        _check_int(count, "count", 1)
        with self._write_lock:
            doc = self.document(fid)
            box = next((b for b in document_boxes(doc) if b.id == box_id), None)
            if box is None:
                raise EditError(f"box_id: no box {str(box_id)[:80]!r} in frame {fid}")
            changed = []
            if box.track_id < 0:
                box = replace(box, track_id=self._next_track_id())
                changed.append(self.store.apply(fid, doc["version"], {"op": "update", "box": box.to_dict()}, session,
                                                f"{edit_id}-t"[:64]))
            i = self._index[fid]
            for k, target in enumerate(self.frame_ids[i + 1:i + 1 + count]):
                tdoc = self.document(target)
                if any(b["track_id"] == box.track_id for b in tdoc["boxes"]):
                    continue
                copy = replace(box, id=_box_id(target, session, edit_id), source="copied", accepted=False)
                changed.append(self.store.apply(target, tdoc["version"], {"op": "add", "box": copy.to_dict()},
                                                session, f"{edit_id}-{k}"[:64]))
        return changed

    def interpolate(self, track_id: int, from_fid: str, to_fid: str, session: str, edit_id: str) -> list[dict]:
        """Fill the frames between two keyframes of a track (linear in the world frame, latte.tracking);
        frames that already hold the track are left alone. Returns the documents of the frames changed."""
        from latte.tracking import interpolate_track

        from_fid, to_fid = self.frame_id(from_fid), self.frame_id(to_fid)
        self._request(None, session, edit_id)
        _check_int(track_id, "track_id", 0)
        i_a, i_b = sorted((self._index[from_fid], self._index[to_fid]))
        fa, fb = self.frame_ids[i_a], self.frame_ids[i_b]
        a = next((b for b in document_boxes(self.document(fa)) if b.track_id == track_id), None)
        b = next((b for b in document_boxes(self.document(fb)) if b.track_id == track_id), None)
        if a is None or b is None:
            raise EditError(f"track_id: track {track_id} is not in both frame {fa} and frame {fb}")
        between = self.frame_ids[i_a + 1:i_b]
        if not between:
            return []
        frames = [(float(self.source.timestamp(f)), self.source.pose(f)) for f in between]
        boxes = interpolate_track(a, b, float(self.source.timestamp(fa)), float(self.source.timestamp(fb)),
                                  self.source.pose(fa), self.source.pose(fb), frames)
        changed = []
        with self._write_lock:
            for k, (target, box) in enumerate(zip(between, boxes, strict=True)):
                tdoc = self.document(target)
                if any(x["track_id"] == track_id for x in tdoc["boxes"]):
                    continue
                new = replace(box, id=_box_id(target, session, edit_id), track_id=track_id, source="interpolated",
                              accepted=False)
                changed.append(self.store.apply(target, tdoc["version"], {"op": "add", "box": new.to_dict()},
                                                session, f"{edit_id}-{k}"[:64]))
        return changed

    # ------------------------------------------------------------------------------------------ export
    def export(self) -> dict:
        """Write KITTI label_2, SemanticKITTI .label and the JSON dump of every stored document to export_dir."""
        from latte.kitti_io import export_frames

        written = export_frames(self.source, self.store.documents(), self.export_dir, only_accepted=True)
        files = len(written["label_2"]) + len(written["label"]) + 1  # + annotations.json
        return {"out": str(self.export_dir), "files": files, "label_2": list(written["label_2"]),
                "label": list(written["label"]), "json": written["json"], "no_label_2": list(written["no_label_2"])}


def _add_ops(op: dict) -> list[dict]:
    """The add ops of an op (itself, or the adds of a batch), in order; the same dict objects."""
    if op.get("op") == "add":
        return [op]
    if op.get("op") == "batch" and isinstance(op.get("ops"), list):
        return [o for o in op["ops"] if isinstance(o, dict) and o.get("op") == "add"]
    return []


def _added_boxes(op: Mapping) -> list:
    """The boxes a stored op added, in order."""
    return [o.get("box") for o in _add_ops(dict(op))]


def _inside_bev(x: float, y: float, box: Box) -> bool:
    """Whether the BEV point (x, y) lies inside the footprint of `box` (velodyne frame)."""
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    dx, dy = x - box.x, y - box.y
    return abs(c * dx + s * dy) <= box.l / 2 and abs(-s * dx + c * dy) <= box.w / 2
