"""Where LATTE's frames come from: a KITTI object folder (the simulated sequences are such folders) or a KITTI raw
drive read through pykitti.

A `FrameSource` lists its frame ids once and reads everything else lazily, one frame at a time, when asked:

    points(fid)    (N, 4) float32 x, y, z, intensity in the velodyne frame
    image(fid)     (H, W, 3) uint8 RGB of the left colour camera (image_2 / image_02), or None
    calib(fid)     squeeze.kitti.Calibration, or None
    pose(fid)      (4, 4) world_from_velo (simulated folders: training/pose; raw drives: OXTS), or None
    timestamp(fid) seconds (raw drives: from the drive's timestamps; otherwise frame index / frame rate)
    labels(fid)    the frame's KITTI label_2 boxes as velodyne `Box`es to import (DontCare skipped); [] without
    truth(fid)     simulated folders only: every object of training/objects (track_id = instance id); []

Layouts recognised by `open_source(path)`:

    ROOT/training/velodyne/ID.bin (+ image_2/ID.png, calib/ID.txt, label_2/ID.txt, pose/ID.txt, objects/ID.txt)
    ROOT/velodyne/ID.bin ...                    the same folder given at the split level (ROOT = .../training)
    BASE/DATE/DATE_drive_NNNN_sync/             a raw drive (velodyne_points/data/*.bin, oxts/data/*.txt,
                                                image_02/data/*.png, oxts/timestamps.txt; BASE/DATE/calib_*.txt)

Frame ids are the scan files' names without extension, sorted. Every frame id a caller passes is checked
(squeeze.kitti.check_frame_id) and must be one of the source's: anything else raises `UnknownFrameError`
(a DataError and a KeyError) before any path is built from it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from latte.boxes import ANNOTATION_CLASSES, Box
from squeeze.errors import DataError, LabelError
from squeeze.kitti import (
    Calibration,
    check_frame_id,
    read_calib,
    read_file_text,
    read_image,
    read_labels,
    read_velodyne,
)

FRAME_PERIOD_S = 0.1  # KITTI's velodyne turns at 10 Hz: the time between frames when a source gives no times
RAW_DRIVE = re.compile(r"^(?P<date>\d{4}_\d{2}_\d{2})_drive_(?P<drive>\d{4})_sync$")
SIM_CONFIG = "sim_config.json"  # written by domain_adapt.sim beside training/: its frame_rate_hz gives the times


class UnknownFrameError(DataError, KeyError):
    """A frame id that is not one of the source's frames (the server answers 404)."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return DataError.__str__(self)


@runtime_checkable
class FrameSource(Protocol):
    """A sequence (or set) of LiDAR frames with optional camera, calibration, poses and labels."""

    name: str
    root: Path

    def frame_ids(self) -> list[str]: ...

    def points(self, frame_id: str) -> np.ndarray: ...

    def image(self, frame_id: str) -> np.ndarray | None: ...

    def calib(self, frame_id: str) -> Calibration | None: ...

    def pose(self, frame_id: str) -> np.ndarray | None: ...

    def timestamp(self, frame_id: str) -> float: ...

    def labels(self, frame_id: str) -> list[Box]: ...

    def truth(self, frame_id: str) -> list[Box]: ...


class _Frames:
    """The frame-id bookkeeping both sources share: the sorted ids, their index, the check of a requested id."""

    root: Path

    def _set_ids(self, ids: list[str], where: Path) -> None:
        if not ids:
            raise DataError(where, "holds no scans (*.bin): nothing to annotate")
        for fid in ids:
            check_frame_id(fid, where)
        self._ids = sorted(ids)
        self._index = {fid: i for i, fid in enumerate(self._ids)}

    def frame_ids(self) -> list[str]:
        return list(self._ids)

    def _contained(self, path: Path) -> Path:
        """`path` if the file it names lies inside its own folder or the data root once symlinks are resolved;
        UnknownFrameError otherwise. A symlinked folder (velodyne/ on another disk) is the data owner's layout
        and is followed; a single frame file linking out of both is refused, never read."""
        if not path.is_symlink():
            return path
        real = path.resolve()
        if real.is_relative_to(path.parent.resolve()) or real.is_relative_to(self.root.resolve()):
            return path
        raise UnknownFrameError(path, "a symlink to a file outside the data folder: refused")

    def _check(self, frame_id: object) -> str:
        """`frame_id` if it is one of the source's frames; UnknownFrameError otherwise (nothing read for it)."""
        if not isinstance(frame_id, str):
            raise UnknownFrameError(self.root, f"frame id must be a string, got {type(frame_id).__name__}")
        try:
            check_frame_id(frame_id, self.root)
        except DataError as e:  # a path in disguise is an unknown frame too (HTTP 404), never joined into a path
            raise UnknownFrameError(self.root, e.fault) from None
        if frame_id not in self._index:
            raise UnknownFrameError(self.root, f"no frame {frame_id[:60]!r} in this source")
        return frame_id


# ------------------------------------------------------------------------------------------------ KITTI object
class KittiObjectSource(_Frames):
    """A KITTI object folder `ROOT/training/{velodyne,image_2,calib,label_2}` (or the split folder itself), plus
    the simulator's `pose/` (3 x 4 world_from_velo, 12 numbers) and `objects/` (tracking truth) when present."""

    def __init__(self, root: str | Path):
        root = Path(root)
        if (root / "training" / "velodyne").is_dir():
            self.dir = root / "training"
        elif (root / "velodyne").is_dir():
            self.dir = root
        else:
            raise DataError(root, "not a KITTI object folder (no training/velodyne/ or velodyne/ inside)")
        self.root = root
        self.name = (root.resolve().parent.name if root.resolve().name == "training" else root.resolve().name) \
            or str(root)
        self._set_ids([p.stem for p in (self.dir / "velodyne").glob("*.bin") if not p.name.startswith(".")],
                      self.dir / "velodyne")
        self._period = _frame_period(self.dir.parent / SIM_CONFIG)

    def _path(self, sub: str, frame_id: str, ext: str) -> Path:
        return self._contained(self.dir / sub / f"{self._check(frame_id)}{ext}")

    def points(self, frame_id: str) -> np.ndarray:
        return read_velodyne(self._path("velodyne", frame_id, ".bin"))

    def image(self, frame_id: str) -> np.ndarray | None:
        path = self._path("image_2", frame_id, ".png")
        return read_image(path) if path.exists() else None

    def calib(self, frame_id: str) -> Calibration | None:
        path = self._path("calib", frame_id, ".txt")
        return read_calib(path) if path.exists() else None

    def pose(self, frame_id: str) -> np.ndarray | None:
        path = self._path("pose", frame_id, ".txt")
        return read_pose(path) if path.exists() else None

    def timestamp(self, frame_id: str) -> float:
        return self._index[self._check(frame_id)] * self._period

    def labels(self, frame_id: str) -> list[Box]:
        path = self._path("label_2", frame_id, ".txt")
        if not path.exists():
            return []
        labels = read_labels(path)
        calib = self.calib(frame_id)
        if calib is None:
            if np.any(labels.type != "DontCare"):
                raise DataError(self._path("calib", frame_id, ".txt"),
                                "not found: the frame's label_2 boxes need its calibration to become velodyne boxes")
            return []
        from latte.kitti_io import boxes_from_labels

        return boxes_from_labels(labels, calib, path)

    def truth(self, frame_id: str) -> list[Box]:
        path = self._path("objects", frame_id, ".txt")
        return read_objects(path) if path.exists() else []


def _frame_period(config: Path) -> float:
    """Seconds between frames: 1 / frame_rate_hz of a simulated folder's sim_config.json, else 0.1 s."""
    if not config.is_file():
        return FRAME_PERIOD_S
    try:
        rate = json.loads(read_file_text(config)).get("frame_rate_hz")
    except (json.JSONDecodeError, AttributeError):
        raise DataError(config, "not a JSON object") from None
    if rate is None:
        return FRAME_PERIOD_S
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise DataError(config, f"frame_rate_hz: expected a positive number, got {rate!r}")
    return 1.0 / float(rate)


def read_pose(path: str | Path) -> np.ndarray:
    """(4, 4) float64 world_from_velo from a pose file of 12 numbers (a 3 x 4 matrix, row-major)."""
    path = Path(path)
    try:
        values = np.array([float(t) for t in read_file_text(path).split()], np.float64)
    except ValueError:
        raise DataError(path, "non-numeric value in a pose (expected 12 numbers)") from None
    if values.size != 12 or not np.all(np.isfinite(values)):
        raise DataError(path, f"expected 12 finite numbers (a 3x4 pose), got {values.size}")
    pose = np.eye(4)
    pose[:3, :4] = values.reshape(3, 4)
    _check_rotation(pose[:3, :3], path)
    return pose


def _check_rotation(r: np.ndarray, where: str | Path) -> None:
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-4) or np.linalg.det(r) < 0:
        raise DataError(where, "the pose's 3x3 block is not a rotation")


def read_objects(path: str | Path) -> list[Box]:
    """The simulator's objects/ID.txt (`instance_id class x y z l w h yaw vx vy moving label_row`, velodyne frame,
    geometric centre) as Boxes: id "obj-INSTANCE", track_id = instance id, source "imported", accepted."""
    path = Path(path)
    boxes = []
    for lineno, line in enumerate(read_file_text(path, LabelError).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 13:
            raise LabelError(path, f"line {lineno}: expected 13 fields (instance_id class x y z l w h yaw vx vy "
                                   f"moving label_row), got {len(fields)}")
        cls = fields[1]
        if cls not in ANNOTATION_CLASSES:
            raise LabelError(path, f"line {lineno}: class {cls[:20]!r} is not one of {', '.join(ANNOTATION_CLASSES)}")
        try:
            instance = int(fields[0])
            box7 = np.array([float(v) for v in fields[2:9]])
        except ValueError:
            raise LabelError(path, f"line {lineno}: non-numeric value") from None
        if instance < 0 or not np.all(np.isfinite(box7)) or np.any(box7[3:6] <= 0):
            raise LabelError(path, f"line {lineno}: negative instance id, non-finite value or size <= 0")
        boxes.append(Box(id=f"obj-{instance}", cls=cls, x=0, y=0, z=0, l=1, w=1, h=1, yaw=0, track_id=instance,
                         source="imported", accepted=True).with_array(box7))
    return boxes


# ------------------------------------------------------------------------------------------------ KITTI raw
class RawDriveSource(_Frames):
    """A KITTI raw drive `BASE/DATE/DATE_drive_NNNN_sync` read through pykitti (squeeze.kitti.open_raw_drive).

    Poses: pykitti's OXTS pose T_w_imu (East-North-Up, origin at the drive's first GPS fix, Mercator scale of the
    first latitude) times the inverse of the velodyne-from-IMU calibration: world_from_velo = T_w_imu @ T_velo_imu^-1.
    Times: the drive's oxts/timestamps.txt, in seconds after its first line. Calibration: one for the whole drive
    (squeeze.kitti.raw_drive_calibration). Frames are matched by file name (0000000042.bin <-> 0000000042.png,
    0000000042.txt, line 42 of the timestamps), so a frame missing its image or OXTS packet only lacks that.
    """

    def __init__(self, folder: str | Path):
        from squeeze.kitti import open_raw_drive, raw_drive_calibration

        folder = Path(folder)
        m = RAW_DRIVE.match(folder.name)
        if m is None or folder.parent.name != m["date"]:
            raise DataError(folder, "not a KITTI raw drive folder (expected BASE/DATE/DATE_drive_NNNN_sync)")
        velo_dir = folder / "velodyne_points" / "data"
        if not velo_dir.is_dir():
            raise DataError(velo_dir, "not found: a raw drive needs velodyne_points/data/*.bin")
        self.root = folder
        self.name = folder.name
        try:
            self._drive = open_raw_drive(folder.parent.parent, m["date"], m["drive"])
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(folder, f"pykitti could not read the drive ({type(e).__name__}: {e})") from None
        self._set_ids([Path(p).stem for p in self._drive.velo_files], velo_dir)
        self._calib = raw_drive_calibration(self._drive)
        velo_from_imu = np.asarray(self._drive.calib.T_velo_imu, np.float64)
        _check_rotation(velo_from_imu[:3, :3], folder.parent / "calib_imu_to_velo.txt")
        imu_from_velo = np.linalg.inv(velo_from_imu)
        self._images = {Path(p).stem: Path(p) for p in self._drive.cam2_files}
        self._poses = {Path(p).stem: np.asarray(o.T_w_imu, np.float64) @ imu_from_velo
                       for p, o in zip(self._drive.oxts_files, self._drive.oxts, strict=False)}
        stamps = list(self._drive.timestamps)
        self._times = [(t - stamps[0]).total_seconds() for t in stamps] if stamps else []

    def points(self, frame_id: str) -> np.ndarray:
        return read_velodyne(self._contained(self.root / "velodyne_points" / "data" / f"{self._check(frame_id)}.bin"))

    def image(self, frame_id: str) -> np.ndarray | None:
        path = self._images.get(self._check(frame_id))
        return read_image(self._contained(path)) if path is not None else None

    def calib(self, frame_id: str) -> Calibration | None:
        self._check(frame_id)
        return self._calib

    def pose(self, frame_id: str) -> np.ndarray | None:
        pose = self._poses.get(self._check(frame_id))
        return None if pose is None else pose.copy()

    def timestamp(self, frame_id: str) -> float:
        fid = self._check(frame_id)
        k = int(fid) if fid.isdigit() else -1
        if 0 <= k < len(self._times):
            return float(self._times[k])
        return self._index[fid] * FRAME_PERIOD_S

    def labels(self, frame_id: str) -> list[Box]:
        self._check(frame_id)
        return []  # raw drives carry tracklets, not label_2 files

    def truth(self, frame_id: str) -> list[Box]:
        self._check(frame_id)
        return []


# ------------------------------------------------------------------------------------------------ opening
def open_source(path: str | Path) -> FrameSource:
    """The FrameSource of a folder: a KITTI raw drive (DATE_drive_NNNN_sync) or a KITTI object folder (ROOT with
    training/velodyne/, or a folder holding velodyne/ itself; simulated folders are such). DataError naming the
    path for anything else."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "not found")
    if not path.is_dir():
        raise DataError(path, "is not a folder (expected a KITTI object folder or a raw drive folder)")
    if RAW_DRIVE.match(path.name):
        return RawDriveSource(path)
    if (path / "training" / "velodyne").is_dir() or (path / "velodyne").is_dir():
        return KittiObjectSource(path)
    raise DataError(path, "neither a KITTI object folder (ROOT/training/velodyne/ or ROOT/velodyne/) nor a KITTI raw "
                          "drive folder (BASE/DATE/DATE_drive_NNNN_sync)")
