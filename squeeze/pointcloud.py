"""Point-cloud files other than KITTI's `.bin`: PCD (the Point Cloud Library's format) read and written.

The header is parsed here, and the data is checked against it, so a file whose header promises more points than
it holds is a ScanError naming the file instead of a silently shorter (or garbage) cloud. ``ascii`` and ``binary``
data are decoded with numpy; ``binary_compressed`` (LZF) is decoded by open3d after its sizes are checked here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from squeeze.atomic import atomic_write_bytes
from squeeze.errors import ScanError
from squeeze.kitti import check_points, read_file_bytes

# Field names taken as the intensity channel, in order of preference (PCL writes "intensity").
INTENSITY_FIELDS = ("intensity", "i", "reflectance", "remission")
_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4", ("I", 8): "i8",
          ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}
_HEADER_KEYS = ("VERSION", "FIELDS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")


@dataclass(frozen=True)
class PcdHeader:
    """The header of a PCD file. fields/sizes/types/counts are parallel tuples, one entry per field."""

    fields: tuple[str, ...]
    sizes: tuple[int, ...]
    types: tuple[str, ...]  # "F", "I" or "U"
    counts: tuple[int, ...]  # values per field (1 for x, y, z; more for descriptors)
    points: int  # number of points the data holds
    data: str  # "ascii", "binary" or "binary_compressed"
    data_offset: int  # byte offset of the data after the DATA line

    @property
    def dtype(self) -> np.dtype:
        """The little-endian structured dtype of one point of binary data (padding fields renamed uniquely)."""
        names, formats = [], []
        for k, (name, size, kind, count) in enumerate(zip(self.fields, self.sizes, self.types, self.counts,
                                                          strict=True)):
            names.append(name if name != "_" and name not in names else f"_pad{k}")
            base = "<" + _TYPES[(kind, size)]
            formats.append(base if count == 1 else (base, (count,)))
        return np.dtype({"names": names, "formats": formats})


def parse_pcd_header(data: bytes, source: str | Path = "<pcd>") -> PcdHeader:
    """Parse the header lines up to and including DATA; ScanError naming `source` and the line when malformed."""
    values: dict[str, list[str]] = {}
    offset = 0
    lineno = 0
    while True:
        end = data.find(b"\n", offset)
        if end < 0:
            raise ScanError(source, "not a PCD file: no DATA line in the header")
        raw = data[offset:end]
        offset = end + 1
        lineno += 1
        try:
            line = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ScanError(source, f"header line {lineno}: not text (not a PCD file?)") from None
        if not line or line.startswith("#"):
            continue
        key, *rest = line.split()
        if key not in _HEADER_KEYS:
            raise ScanError(source, f"header line {lineno}: unknown key {key[:20]!r} (not a PCD file?)")
        values[key] = rest
        if key == "DATA":
            break
    for key in ("FIELDS", "SIZE", "TYPE", "WIDTH", "HEIGHT"):
        if key not in values:
            raise ScanError(source, f"header has no {key} line")
    fields = tuple(values["FIELDS"])
    n = len(fields)
    counts_text = values.get("COUNT", ["1"] * n)
    for key, got in (("SIZE", values["SIZE"]), ("TYPE", values["TYPE"]), ("COUNT", counts_text)):
        if len(got) != n:
            raise ScanError(source, f"header: {len(got)} {key} entries for {n} FIELDS")

    def integer(key: str, text: str, low: int) -> int:
        try:
            v = int(text)
        except ValueError:
            raise ScanError(source, f"header: {key} {text[:20]!r} is not an integer") from None
        if v < low:
            raise ScanError(source, f"header: {key} {v} is below {low}")
        return v

    sizes = tuple(integer("SIZE", t, 1) for t in values["SIZE"])
    counts = tuple(integer("COUNT", t, 1) for t in counts_text)
    types = tuple(t.upper() for t in values["TYPE"])
    for name, size, kind in zip(fields, sizes, types, strict=True):
        if (kind, size) not in _TYPES:
            raise ScanError(source, f"header: field {name!r} has TYPE {kind} with SIZE {size}, which PCD does not "
                                    "define")
    width = integer("WIDTH", (values["WIDTH"] or [""])[0], 0)
    height = integer("HEIGHT", (values["HEIGHT"] or [""])[0], 0)
    points = integer("POINTS", values["POINTS"][0], 0) if values.get("POINTS") else width * height
    if points != width * height:
        raise ScanError(source, f"header: POINTS {points} is not WIDTH x HEIGHT = {width} x {height}")
    kind = (values["DATA"] or [""])[0].lower()
    if kind not in ("ascii", "binary", "binary_compressed"):
        raise ScanError(source, f"header: DATA {kind!r}; expected ascii, binary or binary_compressed")
    for axis in ("x", "y", "z"):
        if axis not in fields:
            raise ScanError(source, f"header: no field {axis!r} among FIELDS {' '.join(fields)}")
    return PcdHeader(fields, sizes, types, counts, points, kind, offset)


def _columns(header: PcdHeader, table: np.ndarray, source: str | Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity from a structured array of the header's dtype."""
    out = np.zeros((len(table), 4), np.float32)
    names = header.dtype.names or ()
    for j, axis in enumerate(("x", "y", "z")):
        out[:, j] = _first_value(table[names[header.fields.index(axis)]])
    intensity = next((f for f in INTENSITY_FIELDS if f in header.fields), None)
    if intensity is not None:
        out[:, 3] = _first_value(table[names[header.fields.index(intensity)]])
    return out


def _first_value(column: np.ndarray) -> np.ndarray:
    return column if column.ndim == 1 else column[:, 0]


def read_pcd(path: str | Path) -> np.ndarray:
    """(N, 4) float32 x, y, z, intensity from a `.pcd` file (intensity 0 when the file has none).

    ScanError naming the file when it is not a regular file, its header is malformed, its data holds fewer (or,
    by a whole point or more, more) points than the header promises, or a coordinate is NaN or infinite.
    """
    path = Path(path)
    data = read_file_bytes(path, ScanError)
    header = parse_pcd_header(data, path)
    body = data[header.data_offset:]
    if header.points == 0:
        raise ScanError(path, "empty scan (the header says 0 points)")
    if header.data == "ascii":
        table = _parse_ascii(header, body, path)
    elif header.data == "binary":
        need = header.points * header.dtype.itemsize
        if len(body) < need:
            raise ScanError(path, f"the header promises {header.points} points ({need} bytes of data) but the file "
                                  f"holds {len(body)} bytes ({len(body) // header.dtype.itemsize} whole points): "
                                  "truncated?")
        if len(body) - need >= header.dtype.itemsize:
            raise ScanError(path, f"the file holds {len(body) - need} bytes after the {header.points} points its "
                                  "header promises")
        table = np.frombuffer(body, dtype=header.dtype, count=header.points)
    else:
        return _read_compressed(path, header, body)
    points = _columns(header, table, path)
    check_points(points, path)
    return points


def _parse_ascii(header: PcdHeader, body: bytes, path: Path) -> np.ndarray:
    lines = [ln for ln in body.decode("ascii", errors="replace").splitlines() if ln.strip()]
    if len(lines) != header.points:
        more_or_fewer = "fewer" if len(lines) < header.points else "more"
        raise ScanError(path, f"the header promises {header.points} points but the data holds {len(lines)} lines "
                              f"({more_or_fewer}): truncated or inconsistent")
    width = sum(header.counts)
    try:
        flat = np.array([float(t) for ln in lines for t in ln.split()], np.float64)
    except ValueError as e:
        raise ScanError(path, f"non-numeric value in the data ({e})") from None
    if flat.size != width * header.points:
        bad = next(i for i, ln in enumerate(lines) if len(ln.split()) != width)
        raise ScanError(path, f"data line {bad + 1} has {len(lines[bad].split())} values, the header's fields "
                              f"need {width}")
    table = np.zeros(header.points, dtype=header.dtype)
    col = 0
    values = flat.reshape(header.points, width)
    for name, count in zip(header.dtype.names or (), header.counts, strict=True):
        table[name] = values[:, col] if count == 1 else values[:, col:col + count]
        col += count
    return table


def _read_compressed(path: Path, header: PcdHeader, body: bytes) -> np.ndarray:
    """binary_compressed: check the two size words against the header and the file, then let open3d decode."""
    if len(body) < 8:
        raise ScanError(path, "binary_compressed data is shorter than its 8-byte size prefix: truncated")
    compressed, uncompressed = struct.unpack("<II", body[:8])
    need = header.points * header.dtype.itemsize
    if uncompressed != need:
        raise ScanError(path, f"the header promises {header.points} points ({need} bytes) but the compressed data "
                              f"says it holds {uncompressed} bytes")
    if len(body) - 8 < compressed:
        raise ScanError(path, f"the compressed data is {len(body) - 8} bytes, its prefix says {compressed}: truncated")
    try:
        import open3d as o3d
    except ImportError as e:  # open3d is a core dependency; a broken install still gets a clear word
        raise ScanError(path, f"binary_compressed PCD needs open3d, which failed to import ({e})") from None
    cloud = o3d.t.io.read_point_cloud(str(path))
    if "positions" not in cloud.point or len(cloud.point.positions) != header.points:
        got = len(cloud.point.positions) if "positions" in cloud.point else 0
        raise ScanError(path, f"open3d decoded {got} points, the header promises {header.points}")
    xyz = cloud.point.positions.numpy().astype(np.float32).reshape(-1, 3)
    inten = np.zeros((len(xyz), 1), np.float32)
    for name in INTENSITY_FIELDS:
        if name in cloud.point:
            inten = cloud.point[name].numpy().reshape(len(xyz), -1)[:, :1].astype(np.float32)
            break
    points = np.concatenate([xyz, inten], axis=1)
    check_points(points, path)
    return points


def write_pcd(path: str | Path, points: np.ndarray, data: str = "binary") -> None:
    """Write (N, 4) x, y, z, intensity as a PCD v0.7 file (float32 fields), `data` "binary" or "ascii", atomically."""
    points = np.asarray(points, np.float32)
    if points.ndim != 2 or points.shape[1] != 4:
        raise ScanError(path, f"expected (N, 4) points to write, got shape {points.shape}")
    if data not in ("binary", "ascii"):
        raise ValueError(f"data must be 'binary' or 'ascii', got {data!r}")
    n = len(points)
    header = ("# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS x y z intensity\nSIZE 4 4 4 4\n"
              f"TYPE F F F F\nCOUNT 1 1 1 1\nWIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {data}\n")
    if data == "binary":
        body = np.ascontiguousarray(points, dtype="<f4").tobytes()
    else:
        body = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in points).encode("ascii")
    atomic_write_bytes(path, header.encode("ascii") + body)
