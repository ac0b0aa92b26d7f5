"""KITTI I/O: object-benchmark folders, calibration, labels, velodyne scans, point labels, raw drives.

Conventions (see docs/conventions.md): velodyne frame x forward, y left, z up (metres); rectified
camera frame x right, y down, z forward; a 3D label's location is the *bottom centre* of the box in
rectified camera coordinates and rotation_y turns about the camera y axis.

Every reader checks its input and raises a typed error (squeeze.errors) naming the file and the fault;
every writer writes atomically so an interrupted write never leaves a half file behind.
"""

from __future__ import annotations

import math
import os
import stat
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

# ------------------------------------------------------------------------------------------------ input files
def check_regular_file(path: str | Path, error: type[DataError] = DataError) -> None:
    """Raise `error` naming `path` unless it is a regular file (or a link to one); FileNotFoundError when absent.

    Checked before opening: opening a FIFO blocks until a writer appears (a scan given as a named pipe hung
    forever), and a folder named like an input file (`000000.bin/`) deserves a clearer word than EISDIR.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(2, "No such file", str(path)) from None
    except NotADirectoryError:
        raise FileNotFoundError(2, "No such file (a parent is not a folder)", str(path)) from None
    if stat.S_ISDIR(mode):
        raise error(path, "is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise error(path, f"is not a regular file ({_file_kind(mode)}); refusing to read it")


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO / named pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_file_bytes(path: str | Path, error: type[DataError] = DataError) -> bytes:
    """The bytes of a regular file; `error` naming the file for folders, FIFOs, devices and sockets.

    Opened non-blocking and checked again on the open descriptor, so a file swapped for a FIFO between the
    check and the open cannot hang the read either. Permission errors stay OSErrors naming the path.
    """
    path = Path(path)
    check_regular_file(path, error)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise error(path, f"is not a regular file ({_file_kind(mode)}); refusing to read it")
        return f.read()


def read_file_text(path: str | Path, error: type[DataError] = DataError) -> str:
    """A UTF-8 text file (see `read_file_bytes`); `error` naming the file when it is not text."""
    try:
        return read_file_bytes(path, error).decode("utf-8")
    except UnicodeDecodeError:
        raise error(path, "not a text file") from None


def check_frame_id(frame_id: str, source: str | Path | None = None, where: str = "") -> str:
    """Return `frame_id` if it is a plain file name (one path component); DataError naming `source` otherwise.

    Frame ids (ImageSets lines, --frames arguments) are joined into paths: '../../x', 'a/b', '.', '..', an
    absolute path or a NUL byte would read or write outside the dataset or the output folder.
    """
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    problem = None
    if not frame_id:
        problem = "is empty"
    elif frame_id in (".", ".."):
        problem = "is '.' or '..'"
    elif any(sep in frame_id for sep in seps):
        problem = "contains a path separator"
    elif "\0" in frame_id:
        problem = "contains a NUL byte"
    elif any(ord(c) < 32 for c in frame_id):
        problem = "contains a control character"
    if problem is not None:
        prefix = f"{where}: " if where else ""
        raise DataError(source, f"{prefix}frame id {frame_id[:60]!r} {problem}; frame ids must be plain file names")
    return frame_id


def read_frame_ids(list_file: str | Path) -> list[str]:
    """The frame ids of an ImageSets list (one a line, blank lines skipped), each checked by `check_frame_id`."""
    ids = []
    for lineno, line in enumerate(read_file_text(list_file).splitlines(), 1):
        fid = line.strip()
        if fid:
            ids.append(check_frame_id(fid, list_file, f"line {lineno}"))
    return ids


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
    _check_invertible(mats, source)
    for key in ("P0", "P1", "P3"):  # third-party files may carry only the colour camera
        mats.setdefault(key, mats["P2"].copy())
    mats.setdefault("Tr_imu_to_velo", np.hstack([np.eye(3), np.zeros((3, 1))]))
    return Calibration(**mats)


# Above this condition number a 3x3 block is taken as singular: a KITTI P2's left block is near 1e3, R0_rect and
# the rotation of Tr_velo_to_cam near 1; an all-zero or rank-deficient matrix is infinite or beyond 1e12.
_MAX_CONDITION = 1e10


def _check_invertible(mats: dict[str, np.ndarray], source: str | Path) -> None:
    """CalibrationError naming the matrix when a projection-critical one is singular (all zeros, zero focal length).

    Such a file parses, but every projection through it is NaN or infinite later (`seg eval` printed NaN metrics).
    """
    blocks = {"P2": (mats["P2"][:, :3], "its left 3x3 block is singular (zero focal length?)"),
              "R0_rect": (mats["R0_rect"], "singular (expected a rotation)"),
              "Tr_velo_to_cam": (mats["Tr_velo_to_cam"][:, :3], "its rotation block is singular")}
    for key, (block, fault) in blocks.items():
        try:
            with np.errstate(all="ignore"):
                cond = np.linalg.cond(block)
        except np.linalg.LinAlgError:  # SVD fails to converge on values near the float range's end
            cond = np.inf
        if not np.isfinite(cond) or cond > _MAX_CONDITION:
            raise CalibrationError(source, f"{key}: {fault}")
    if mats["P2"][0, 0] == 0 or mats["P2"][1, 1] == 0:
        raise CalibrationError(source, "P2: zero focal length (P2[0,0] or P2[1,1] is 0)")


def read_calib(path: str | Path) -> Calibration:
    path = Path(path)
    return parse_calib(read_file_text(path, CalibrationError), path)


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
    linenos: list[int] = []  # the file line of each row (blank lines are skipped)
    for lineno, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) not in (15, 16):
            raise LabelError(source, f"line {lineno}: expected 15 fields (16 with score), got {len(fields)}")
        if rows and len(fields) != len(rows[0]):
            raise LabelError(source, f"line {lineno}: {len(fields)} fields, but earlier lines have {len(rows[0])}")
        rows.append(fields)
        linenos.append(lineno)
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
                raise LabelError(source, f"line {linenos[i]}, field {j + 2}: non-numeric value {tok[:20]!r}") from None
            if not math.isfinite(v):
                raise LabelError(source, f"line {linenos[i]}, field {j + 2}: NaN or infinite value {tok!r}")
            numbers[i, j] = v
    occluded = numbers[:, 1]
    if np.any(occluded != np.round(occluded)):
        bad = int(np.argmax(occluded != np.round(occluded)))
        raise LabelError(source, f"line {linenos[bad]}, field 3 (occluded): expected an integer, "
                                 f"got {rows[bad][2]!r}")
    # A box with left > right or top > bottom is a data bug (the devkit accepts it and computes a negative area).
    # DontCare regions are exempt: they are only ignored, and some tools write them with placeholders.
    bbox = numbers[:, 3:7]
    flipped = ((bbox[:, 0] > bbox[:, 2]) | (bbox[:, 1] > bbox[:, 3])) & (types != "DontCare")
    if flipped.any():
        bad = int(np.argmax(flipped))
        side = "left > right" if bbox[bad, 0] > bbox[bad, 2] else "top > bottom"
        raise LabelError(source, f"line {linenos[bad]}: {types[bad]} box {side} "
                                 f"({' '.join(rows[bad][4:8])}; expected left top right bottom)")
    return ObjectLabels(
        type=types, truncated=numbers[:, 0], occluded=occluded.astype(np.int64), alpha=numbers[:, 2],
        bbox=numbers[:, 3:7], dimensions=numbers[:, 7:10], location=numbers[:, 10:13], rotation_y=numbers[:, 13],
        score=numbers[:, 14] if n_fields == 16 else None)


def read_labels(path: str | Path) -> ObjectLabels:
    path = Path(path)
    return parse_labels(read_file_text(path, LabelError), path)


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


# Where a dataset folder keeps its scans and camera images, in the layouts the suite reads: a KITTI object folder
# (or one of its splits), a SqueezeSeg range-image folder, a KITTI raw drive.
SCAN_FOLDERS = ("training/velodyne", "velodyne", "lidar_2d", "velodyne_points/data")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # the camera images the suite reads (squeeze.kitti.read_image)
IMAGE_FOLDERS = ("training/image_2", "image_2", "image_02/data")


def folder_files(folder: str | Path, suffixes: tuple[str, ...], subfolders: tuple[str, ...] = ()) -> list[Path]:
    """The files of `folder` whose suffix (in lower case) is one of `suffixes`, sorted by name, not recursively; when
    it holds none, those of the first of its `subfolders` that holds any (a dataset's root given for its velodyne/
    or image_2/). DataError naming the folder, and the subfolders looked in, when there are none."""
    folder = Path(folder)
    for candidate in (folder, *(folder / sub for sub in subfolders)):
        if candidate.is_dir():
            found = sorted(p for p in candidate.iterdir() if p.suffix.lower() in suffixes and p.is_file())
            if found:
                return found
    where = f" (nor in {', '.join(f'{sub}/' for sub in subfolders)})" if subfolders else ""
    raise DataError(folder, f"no {', '.join(suffixes)} files in this folder{where}")


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


def check_velodyne_file(path: str | Path) -> None:
    """Check a `.bin` scan without reading it: a regular file, not empty, a whole number of 16-byte points.

    For datasets to call at construction, so that a bad file is a ScanError naming it before training starts
    rather than inside a DataLoader worker. FileNotFoundError when absent.
    """
    path = Path(path)
    check_regular_file(path, ScanError)
    size = path.stat().st_size
    if size == 0:
        raise ScanError(path, "empty scan (0 bytes)")
    if size % 16:
        raise ScanError(path, f"size {size} bytes is not a multiple of 16 (4 float32 per point)")


def read_velodyne(path: str | Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, reflectance from a KITTI `.bin` scan."""
    path = Path(path)
    return parse_velodyne(read_file_bytes(path, ScanError), path)


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
    data = read_file_bytes(path, LabelError)
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
    """(H, W, 3) uint8 RGB (the suite's one image convention, docs/conventions.md); DataError naming the file when
    it is not a readable image, a folder or not a regular file."""
    import cv2

    path = Path(path)
    data = np.frombuffer(read_file_bytes(path), np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise DataError(path, "not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
        check_frame_id(split, self.root, "split")
        self.dir = self.root / split
        if not self.dir.is_dir():
            raise DataError(self.dir, "not a directory (expected a KITTI object folder ROOT/training/...)")
        self.list_file: Path | None = None  # the ImageSets list the frame ids came from, if any
        if image_set is not None:
            check_frame_id(image_set, self.root / "ImageSets", "image-set name")
            list_file = self.root / "ImageSets" / f"{image_set}.txt"
            if not list_file.exists():
                raise DataError(list_file, "image-set list not found")
            self.list_file = list_file
            self.frame_ids = read_frame_ids(list_file)  # plain names only: ids become paths
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
        """The file of `kind` ('velodyne', 'image_2', 'calib', 'label_2', 'point_label') for a frame.

        DataError when `frame_id` is not a plain name (it would resolve outside the folder).
        """
        ext = {"velodyne": ".bin", "image_2": ".png", "calib": ".txt", "label_2": ".txt", "point_label": ".label"}
        sub = "velodyne" if kind == "point_label" else kind
        check_frame_id(frame_id, self.list_file or self.dir)
        return self.dir / sub / f"{frame_id}{ext[kind]}"

    def missing(self, kind: str) -> list[str]:
        """The frame ids whose file of `kind` is absent ([] when every frame has one)."""
        return [fid for fid in self.frame_ids if not self.path(kind, fid).is_file()]

    def require(self, kind: str) -> None:
        """DataError naming the first frame that lacks its file of `kind`, the file expected and where the frame
        came from; a frame listed in ImageSets must not be dropped silently nor trained without its labels."""
        missing = self.missing(kind)
        if missing:
            more = f" (and {len(missing) - 1} more frames)" if len(missing) > 1 else ""
            listed = f", listed in {self.list_file}" if self.list_file is not None else ""
            raise DataError(self.path(kind, missing[0]), f"not found: frame {missing[0]}{listed} has no "
                                                         f"{kind} file{more}")

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
    """Write ROOT/ImageSets/NAME.txt, one frame id a line (each a plain name, or DataError)."""
    for fid in frame_ids:
        check_frame_id(fid, Path(root) / "ImageSets" / f"{name}.txt")
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
