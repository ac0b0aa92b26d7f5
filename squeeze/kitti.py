"""KITTI I/O: object-benchmark folders, calibration, labels, velodyne scans, point labels, raw drives.

Conventions (see docs/conventions.md): velodyne frame x forward, y left, z up (metres); rectified
camera frame x right, y down, z forward; a 3D label's location is the *bottom centre* of the box in
rectified camera coordinates and rotation_y turns about the camera y axis.

Every reader checks its input and raises a typed error (squeeze.errors) naming the file and the fault;
every writer writes atomically so an interrupted write never leaves a half file behind.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from squeeze.atomic import atomic_write_bytes, atomic_write_text  # noqa: F401 (re-exported for callers)
from squeeze.errors import CalibrationError, DataError, LabelError, ScanError

CALIB_KEYS = ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo")
_CALIB_SHAPES = {"R0_rect": (3, 3)}  # every other key is 3x4
# Keys without which nothing can be projected; the others may be absent in third-party data.
REQUIRED_CALIB_KEYS = ("P2", "R0_rect", "Tr_velo_to_cam")

# The KITTI object classes, in the order the devkit lists them.
KITTI_CLASSES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")


# ------------------------------------------------------------------------------------------------ calibration
@dataclass(frozen=True)
class Calibration:
    """One KITTI object-benchmark calibration file. All matrices float64.

    P0..P3: (3, 4) projection matrices of the rectified cameras (P2 = left colour camera, image_2).
    R0_rect: (3, 3) rectifying rotation of the reference camera.
    Tr_velo_to_cam: (3, 4) velodyne -> (unrectified) reference camera.
    Tr_imu_to_velo: (3, 4) IMU -> velodyne; identity-like placeholder when the file lacks it.
    """

    P0: np.ndarray
    P1: np.ndarray
    P2: np.ndarray
    P3: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    Tr_imu_to_velo: np.ndarray

    @property
    def velo_to_rect(self) -> np.ndarray:
        """(4, 4) homogeneous transform velodyne -> rectified camera: R0_rect (padded) @ Tr_velo_to_cam (padded)."""
        r0 = np.eye(4)
        r0[:3, :3] = self.R0_rect
        tr = np.eye(4)
        tr[:3, :4] = self.Tr_velo_to_cam
        return r0 @ tr

    @property
    def rect_to_velo(self) -> np.ndarray:
        """(4, 4) inverse of velo_to_rect."""
        return np.linalg.inv(self.velo_to_rect)


def parse_calib(text: str, source: str | Path = "<calib>") -> Calibration:
    """Parse the text of a KITTI object calib file (blank lines are allowed, unlike pykitti's reader)."""
    values: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if ":" not in line:
            raise CalibrationError(source, f"line {lineno}: expected 'KEY: numbers', got {line[:40]!r}")
        key, _, rest = line.partition(":")
        key = key.strip()
        try:
            numbers = np.array([float(t) for t in rest.split()], dtype=np.float64)
        except ValueError as e:
            raise CalibrationError(source, f"{key}: non-numeric value ({e})") from None
        if not np.all(np.isfinite(numbers)):
            raise CalibrationError(source, f"{key}: NaN or infinite value")
        # The raw-data calib files call these R_rect_00 / Tr_velo_cam; accept both spellings.
        key = {"R_rect": "R0_rect", "Tr_velo_cam": "Tr_velo_to_cam", "Tr_imu_velo": "Tr_imu_to_velo"}.get(key, key)
        values[key] = numbers
    for key in REQUIRED_CALIB_KEYS:
        if key not in values:
            raise CalibrationError(source, f"missing key {key!r}")
    mats = {}
    for key in CALIB_KEYS:  # check every matrix present before any stands in for a missing one
        if key not in values:
            continue
        shape = _CALIB_SHAPES.get(key, (3, 4))
        if values[key].size != shape[0] * shape[1]:
            raise CalibrationError(
                source, f"{key}: expected {shape[0] * shape[1]} numbers for a {shape[0]}x{shape[1]} matrix, "
                f"got {values[key].size}")
        mats[key] = values[key].reshape(shape)
    for key in ("P0", "P1", "P3"):  # third-party files may carry only the colour camera
        mats.setdefault(key, mats["P2"].copy())
    mats.setdefault("Tr_imu_to_velo", np.hstack([np.eye(3), np.zeros((3, 1))]))
    return Calibration(**mats)


def read_calib(path: str | Path) -> Calibration:
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise CalibrationError(path, "not a text file") from None
    return parse_calib(text, path)


def format_calib(calib: Calibration) -> str:
    """KITTI's own layout: one 'KEY: v v ...' line per matrix in %.12e, then a blank line."""
    lines = []
    for key in CALIB_KEYS:
        m = getattr(calib, key)
        lines.append(f"{key}: " + " ".join(f"{v:.12e}" for v in m.ravel()))
    return "\n".join(lines) + "\n\n"


def write_calib(path: str | Path, calib: Calibration) -> None:
    atomic_write_text(path, format_calib(calib))


# ----------------------------------------------------------------------------------------------------- labels
@dataclass
class ObjectLabels:
    """The objects of one KITTI label (or result) file, as column arrays of length N (N may be 0).

    type:       (N,) str      class name ('Car', ..., 'DontCare')
    truncated:  (N,) float64  0..1, -1 for DontCare
    occluded:   (N,) int64    0 visible, 1 partly, 2 largely occluded, 3 unknown; -1 for DontCare
    alpha:      (N,) float64  observation angle [-pi, pi]; -10 for DontCare
    bbox:       (N, 4) float64 left, top, right, bottom in image_2 pixels (0-based)
    dimensions: (N, 3) float64 height, width, length in metres; -1 for DontCare
    location:   (N, 3) float64 x, y, z of the bottom centre in rectified camera coordinates; -1000 for DontCare
    rotation_y: (N,) float64  yaw about the camera y axis [-pi, pi]; -10 for DontCare
    score:      (N,) float64 or None  detection confidence (result files only: the 16th field)
    """

    type: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="<U16"))
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0))
    occluded: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    alpha: np.ndarray = field(default_factory=lambda: np.zeros(0))
    bbox: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    dimensions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    location: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    rotation_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    score: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.type)

    @property
    def boxes3d(self) -> np.ndarray:
        """(N, 7) float64 [x, y, z, h, w, l, rotation_y] in rectified camera coordinates (geometry's layout)."""
        return np.concatenate([self.location, self.dimensions, self.rotation_y[:, None]], axis=1)

    def select(self, keep: np.ndarray) -> ObjectLabels:
        """The subset given by a boolean mask or index array."""
        return ObjectLabels(
            type=self.type[keep], truncated=self.truncated[keep], occluded=self.occluded[keep],
            alpha=self.alpha[keep], bbox=self.bbox[keep], dimensions=self.dimensions[keep],
            location=self.location[keep], rotation_y=self.rotation_y[keep],
            score=None if self.score is None else self.score[keep])

    @staticmethod
    def concatenate(parts: list[ObjectLabels]) -> ObjectLabels:
        if not parts:
            return ObjectLabels()
        scores = [p.score for p in parts]
        return ObjectLabels(
            type=np.concatenate([p.type for p in parts]).astype("<U16"),
            truncated=np.concatenate([p.truncated for p in parts]),
            occluded=np.concatenate([p.occluded for p in parts]),
            alpha=np.concatenate([p.alpha for p in parts]),
            bbox=np.concatenate([p.bbox for p in parts]).reshape(-1, 4),
            dimensions=np.concatenate([p.dimensions for p in parts]).reshape(-1, 3),
            location=np.concatenate([p.location for p in parts]).reshape(-1, 3),
            rotation_y=np.concatenate([p.rotation_y for p in parts]),
            score=None if any(s is None for s in scores) else np.concatenate(scores))


def parse_labels(text: str, source: str | Path = "<labels>") -> ObjectLabels:
    """Parse a label file (15 fields a line) or a result file (16, the last the score).

    All lines of one file must have the same field count. Blank lines are skipped.
    """
    rows: list[list[str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (15, 16):
            raise LabelError(source, f"line {lineno}: expected 15 fields (16 with score), got {len(fields)}")
        if rows and len(fields) != len(rows[0]):
            raise LabelError(source, f"line {lineno}: {len(fields)} fields, but earlier lines have {len(rows[0])}")
        rows.append(fields)
    if not rows:
        return ObjectLabels()
    n_fields = len(rows[0])
    types = np.array([r[0] for r in rows], dtype="<U16")
    numbers = np.empty((len(rows), n_fields - 1), dtype=np.float64)
    for i, r in enumerate(rows):
        for j, tok in enumerate(r[1:]):
            try:
                v = float(tok)
            except ValueError:
                raise LabelError(source, f"line {i + 1}, field {j + 2}: non-numeric value {tok[:20]!r}") from None
            if not math.isfinite(v):
                raise LabelError(source, f"line {i + 1}, field {j + 2}: NaN or infinite value {tok!r}")
            numbers[i, j] = v
    occluded = numbers[:, 1]
    if np.any(occluded != np.round(occluded)):
        bad = int(np.argmax(occluded != np.round(occluded)))
        raise LabelError(source, f"line {bad + 1}, field 3 (occluded): expected an integer, got {rows[bad][2]!r}")
    return ObjectLabels(
        type=types, truncated=numbers[:, 0], occluded=occluded.astype(np.int64), alpha=numbers[:, 2],
        bbox=numbers[:, 3:7], dimensions=numbers[:, 7:10], location=numbers[:, 10:13], rotation_y=numbers[:, 13],
        score=numbers[:, 14] if n_fields == 16 else None)


def read_labels(path: str | Path) -> ObjectLabels:
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise LabelError(path, "not a text file") from None
    return parse_labels(text, path)


def _fmt_placeholder(v: float) -> str:
    # KITTI writes DontCare placeholders (-1, -10, -1000) as bare integers.
    return str(int(v)) if v == int(v) else f"{v:.2f}"


def format_labels(labels: ObjectLabels) -> str:
    """The devkit's layout: '%s %.2f %d %.2f' + ' %.2f'*11 (+ ' %.4f' score), one object a line.

    DontCare lines keep KITTI's integer placeholders ('-1 -1 -10 ... -1 -1 -1 -1000 -1000 -1000 -10')
    so that a KITTI label file round-trips byte for byte.
    """
    out = []
    for i in range(len(labels)):
        t = str(labels.type[i])
        if not t or any(c.isspace() for c in t):
            raise LabelError(None, f"object {i}: class name {t!r} is empty or contains whitespace")
        nums = [labels.alpha[i], *labels.bbox[i], *labels.dimensions[i], *labels.location[i], labels.rotation_y[i]]
        if not np.all(np.isfinite(nums)) or not math.isfinite(labels.truncated[i]):
            raise LabelError(None, f"object {i} ({t}): NaN or infinite value")
        if t == "DontCare":
            head = f"{t} {_fmt_placeholder(labels.truncated[i])} {int(labels.occluded[i])} {_fmt_placeholder(nums[0])}"
            box = " ".join(f"{v:.2f}" for v in nums[1:5])
            rest = " ".join(_fmt_placeholder(v) for v in nums[5:])
            line = f"{head} {box} {rest}"
        else:
            line = f"{t} {labels.truncated[i]:.2f} {int(labels.occluded[i])} " + " ".join(f"{v:.2f}" for v in nums)
        if labels.score is not None:
            line += f" {labels.score[i]:.4f}"
        out.append(line + "\n")
    return "".join(out)


def write_labels(path: str | Path, labels: ObjectLabels) -> None:
    atomic_write_text(path, format_labels(labels))


# ----------------------------------------------------------------------------------------------------- scans
def parse_velodyne(data: bytes, source: str | Path = "<scan>") -> np.ndarray:
    """Raw little-endian float32 x, y, z, reflectance -> (N, 4) float32. Rejects empty, ragged and non-finite scans."""
    if len(data) == 0:
        raise ScanError(source, "empty scan (0 bytes)")
    if len(data) % 16:
        raise ScanError(source, f"size {len(data)} bytes is not a multiple of 16 (4 float32 per point)")
    points = np.frombuffer(data, dtype="<f4").reshape(-1, 4).astype(np.float32)
    check_points(points, source)
    return points


def check_points(points: np.ndarray, source: str | Path = "<points>") -> None:
    """Raise ScanError unless `points` is a non-empty finite (N, >=3) float array."""
    if points.ndim != 2 or points.shape[1] < 3:
        raise ScanError(source, f"expected an (N, 4) point array, got shape {points.shape}")
    if len(points) == 0:
        raise ScanError(source, "empty scan (no points)")
    # Fast path: a float64 sum is finite exactly when every value is (float32 values cannot overflow it).
    if np.isfinite(points.sum(dtype=np.float64)):
        return
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        first = int(np.argmin(finite))
        raise ScanError(source, f"{int((~finite).sum())} points with NaN/inf coordinates (first at index {first})")


def read_velodyne(path: str | Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance from a KITTI `.bin` scan."""
    path = Path(path)
    return parse_velodyne(path.read_bytes(), path)


def write_velodyne(path: str | Path, points: np.ndarray) -> None:
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ScanError(path, f"expected (N, 4) points to write, got shape {points.shape}")
    atomic_write_bytes(path, np.ascontiguousarray(points, dtype="<f4").tobytes())


def read_point_labels(path: str | Path, n_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """SemanticKITTI `.label`: uint32 per point, lower 16 bits class, upper 16 bits instance.

    Returns (class (N,) uint16, instance (N,) uint16). Checks the count against the scan when given.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) % 4:
        raise LabelError(path, f"size {len(data)} bytes is not a multiple of 4 (one uint32 per point)")
    raw = np.frombuffer(data, dtype="<u4")
    if n_points is not None and len(raw) != n_points:
        raise LabelError(path, f"{len(raw)} point labels for a scan of {n_points} points")
    return (raw & 0xFFFF).astype(np.uint16), (raw >> 16).astype(np.uint16)


def write_point_labels(path: str | Path, semantic: np.ndarray, instance: np.ndarray | None = None) -> None:
    semantic = np.asarray(semantic).astype(np.uint32)
    instance = np.zeros_like(semantic) if instance is None else np.asarray(instance).astype(np.uint32)
    if semantic.shape != instance.shape or semantic.ndim != 1:
        raise LabelError(path, f"class {semantic.shape} and instance {instance.shape} must be equal 1-D arrays")
    if semantic.max(initial=0) > 0xFFFF or instance.max(initial=0) > 0xFFFF:
        raise LabelError(path, "class and instance ids must fit in 16 bits")
    atomic_write_bytes(path, ((instance << 16) | semantic).astype("<u4").tobytes())


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(path, "not a readable image")
    return bgr[:, :, ::-1].copy()


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(Path(path).suffix or ".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise DataError(path, "image encoding failed")
    atomic_write_bytes(path, buf.tobytes())


# ----------------------------------------------------------------------------------------- object folders
@dataclass
class KittiFrame:
    """One frame of an object-benchmark folder, loaded. Absent parts are None."""

    frame_id: str
    points: np.ndarray | None  # (N, 4) float32 velodyne x, y, z, reflectance
    calib: Calibration | None
    labels: ObjectLabels | None
    image: np.ndarray | None  # (H, W, 3) uint8 RGB
    point_class: np.ndarray | None = None  # (N,) uint16 from velodyne/*.label
    point_instance: np.ndarray | None = None  # (N,) uint16


class KittiObjectFolder:
    """`ROOT/{training,testing}/{image_2,velodyne,calib,label_2}` plus `ROOT/ImageSets/*.txt`.

    `split` is a folder name ('training' or 'testing'); `frame_ids` come from an ImageSets list when
    given, otherwise from the files present (velodyne, else image_2, else calib).
    """

    def __init__(self, root: str | Path, split: str = "training", image_set: str | None = None):
        self.root = Path(root)
        self.dir = self.root / split
        if not self.dir.is_dir():
            raise DataError(self.dir, "not a directory (expected a KITTI object folder ROOT/training/...)")
        if image_set is not None:
            list_file = self.root / "ImageSets" / f"{image_set}.txt"
            if not list_file.exists():
                raise DataError(list_file, "image-set list not found")
            self.frame_ids = [ln.strip() for ln in list_file.read_text().splitlines() if ln.strip()]
        else:
            for sub, ext in (("velodyne", ".bin"), ("image_2", ".png"), ("calib", ".txt")):
                if (self.dir / sub).is_dir():
                    self.frame_ids = sorted(p.stem for p in (self.dir / sub).glob(f"*{ext}"))
                    break
            else:
                raise DataError(self.dir, "has none of velodyne/, image_2/, calib/")

    def __len__(self) -> int:
        return len(self.frame_ids)

    def __iter__(self) -> Iterator[KittiFrame]:
        for fid in self.frame_ids:
            yield self.load(fid)

    def path(self, kind: str, frame_id: str) -> Path:
        ext = {"velodyne": ".bin", "image_2": ".png", "calib": ".txt", "label_2": ".txt", "point_label": ".label"}
        sub = "velodyne" if kind == "point_label" else kind
        return self.dir / sub / f"{frame_id}{ext[kind]}"

    def load(self, frame_id: str, parts: tuple[str, ...] = ("velodyne", "calib", "label_2", "image_2")) -> KittiFrame:
        def opt(kind, reader):
            p = self.path(kind, frame_id)
            return reader(p) if kind in parts and p.exists() else None

        points = opt("velodyne", read_velodyne)
        frame = KittiFrame(frame_id, points, opt("calib", read_calib), opt("label_2", read_labels),
                           opt("image_2", read_image))
        lab = self.path("point_label", frame_id)
        if points is not None and lab.exists():
            frame.point_class, frame.point_instance = read_point_labels(lab, len(points))
        return frame


def write_image_set(root: str | Path, name: str, frame_ids: list[str]) -> None:
    atomic_write_text(Path(root) / "ImageSets" / f"{name}.txt", "".join(f"{f}\n" for f in frame_ids))


# ------------------------------------------------------------------------------------------------ raw drives
def open_raw_drive(base: str | Path, date: str, drive: str, frames: list[int] | None = None):
    """A KITTI raw drive (`BASE/DATE/DATE_drive_NNNN_sync`) through pykitti: `.get_velo(i)`, `.get_cam2(i)`,
    `.oxts`, `.calib.T_cam2_velo`, `.timestamps`. Raises DataError naming the folder when it is absent."""
    import pykitti

    drive = f"{int(drive):04d}" if str(drive).isdigit() else str(drive)
    folder = Path(base) / date / f"{date}_drive_{drive}_sync"
    if not folder.is_dir():
        raise DataError(folder, "raw drive folder not found")
    for calib_name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        if not (Path(base) / date / calib_name).exists():
            raise CalibrationError(Path(base) / date / calib_name, "raw-drive calibration file not found")
    return pykitti.raw(str(base), date, drive, frames=frames)


def raw_drive_calibration(drive) -> Calibration:
    """The object-benchmark style Calibration of a pykitti raw drive, so the same projections apply.

    P_i = P_rect_i0, R0_rect = R_rect_00, Tr_velo_to_cam = the unrectified velodyne -> cam0 transform.
    """
    c = drive.calib
    return Calibration(P0=c.P_rect_00, P1=c.P_rect_10, P2=c.P_rect_20, P3=c.P_rect_30, R0_rect=c.R_rect_00[:3, :3],
                       Tr_velo_to_cam=c.T_cam0_velo_unrect[:3, :4], Tr_imu_to_velo=c.T_velo_imu[:3, :4])
