"""Real and synthetic LiDAR scans for domain adaptation, whatever folder layout they come in.

`find_scans(path)` takes the scans in PATH itself (*.npy, *.bin), else, in this order (squeeze.kitti.folder_files):
- a range-image folder in the SqueezeSeg / GTA-LiDAR `.npy` layout: PATH/lidar_2d/*.npy
  ((64, 512, 6) x, y, z, intensity, range, label; rows are laser rings),
- a KITTI object folder: PATH/training/velodyne/*.bin or PATH/velodyne/*.bin,
- a KITTI raw drive: PATH/velodyne_points/data/*.bin (a DATE_drive_NNNN_sync folder; unlabelled target data).

`read_scan(file)` gives (N, 4) points and (N,) laser rings: the row of each valid pixel for range images, the ring
recovered from KITTI's point order (squeeze.range_image.scan_ring_rows) for `.bin` scans, which refuses a scan whose
points are not stored ring by ring or that keeps only some lasers (a camera-FOV 'velodyne_reduced' file): their
rings would land on the wrong lasers' rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from squeeze.errors import DataError
from squeeze.kitti import SCAN_FOLDERS, folder_files, read_velodyne
from squeeze.range_image import read_range_npy, scan_ring_rows

LAYOUTS = ("range-image .npy (lidar_2d/)", "KITTI object (training/velodyne/*.bin)",
           "KITTI raw drive (velodyne_points/data/*.bin)")
RANGE_IMAGES_FIRST = ("lidar_2d", *(f for f in SCAN_FOLDERS if f != "lidar_2d"))


def find_scans(path: str | Path) -> list[Path]:
    """The scan files of a folder in one of LAYOUTS, sorted by name; DataError naming the folder otherwise.
    Range images first: a simulated folder holds both, and its lidar_2d/*.npy carry the labels as range images."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(root, "not a folder")
    try:
        return folder_files(root, (".npy", ".bin"), RANGE_IMAGES_FIRST)
    except DataError:
        raise DataError(root, f"no LiDAR scans found; expected one of: {'; '.join(LAYOUTS)}") from None


def read_scan(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) float32 points and (N,) int64 laser rings (0 = top; -1 where unknown) of one scan file; RingOrderError
    (a DataError) for a `.bin` scan whose rings cannot be told."""
    p = Path(path)
    if p.suffix == ".npy":
        image = read_range_npy(p)
        rows, _ = np.nonzero(image.mask)
        points = np.concatenate([image.xyz[image.mask], image.intensity[image.mask][:, None]], axis=1)
        return points.astype(np.float32), rows.astype(np.int64)
    points = read_velodyne(p)
    return points, scan_ring_rows(points, source=str(p))


def spread_indices(count: int, n: int | None) -> list[int]:
    """At most `n` of the indices 0..count-1, evenly spaced (the first and last kept); all of them when n is None or
    at least `count`. A drive's neighbouring frames say much the same, and a whole data set does not fit in memory
    as images: a few hundred scans spread over it teach what all of them would."""
    if n is None or count <= n:
        return list(range(count))
    if n < 2:
        return [count - 1] if n == 1 else []
    return np.unique(np.round(np.linspace(0, count - 1, n)).astype(np.int64)).tolist()


def spread_files(files: list[Path], n: int | None) -> list[Path]:
    """At most `n` of `files`, evenly spaced over the list (`spread_indices`)."""
    return [files[i] for i in spread_indices(len(files), n)]
