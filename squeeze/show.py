"""Pictures of the frames of a KITTI object folder: the library behind `squeeze show`.

For each frame: the range image coloured by class (classes from velodyne/*.label when present, else from the 3D
boxes), a bird's-eye view with the labelled boxes, and the camera image with projected LiDAR points and boxes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from squeeze import range_image as ri
from squeeze.errors import DataError
from squeeze.kitti import KittiObjectFolder
from squeeze.point_labels import squeezeseg_from_point_classes
from squeeze.vis import write_frame_pictures

# Range-image layouts by the name the command line takes; '-uniform' bins by elevation instead of laser rings.
PROJECTIONS: dict[str, Callable[[], ri.ProjectionConfig]] = {
    "front": ri.squeezeseg_front,  # SqueezeSeg's 64 x 512, the front 90 degrees
    "front-uniform": ri.squeezeseg_front_uniform,
    "360": ri.full_360,  # 64 x 2048, all around
    "360-uniform": ri.full_360_uniform,
}


def write_folder_pictures(root: str | Path, out: str | Path, split: str = "training",
                          frame_ids: Sequence[str] | None = None, projection: str = "front",
                          progress: bool = True) -> list[Path]:
    """Write the pictures of each frame of the KITTI object folder `root` into `out`; the paths written.

    frame_ids: the frames to draw (None: every frame of the folder; an empty list draws none).
    projection: a key of PROJECTIONS. Returns the PNG paths in frame order (up to three per frame: _range and
    _bev when the frame has a scan, _camera when it has an image); [] when no frame was drawn.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; choose one of {', '.join(PROJECTIONS)}")
    from tqdm import tqdm

    config = PROJECTIONS[projection]()
    folder = KittiObjectFolder(root, split=split)
    ids = folder.frame_ids if frame_ids is None else list(frame_ids)
    held_ids = set(folder.frame_ids)
    unknown = [fid for fid in ids if fid not in held_ids]
    if unknown:  # a frame that is not there is an error, not a picture silently not written
        ids_held = folder.frame_ids
        held = f"{len(ids_held)} frame(s), {ids_held[0]} to {ids_held[-1]}" if ids_held else "no frames"
        raise DataError(folder.dir, f"has no frame {', '.join(unknown)} (it holds {held})")
    written: list[Path] = []
    for fid in tqdm(ids, desc="pictures", unit="frame", disable=not progress):
        frame = folder.load(fid)
        classes = None if frame.point_class is None else squeezeseg_from_point_classes(frame.point_class)
        written += write_frame_pictures(frame, out, point_classes=classes, config=config)
    return written
