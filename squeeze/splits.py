"""Train / validation splits of a KITTI object folder, written as `ROOT/ImageSets/{train,val,trainval}.txt`.

SqueezeDet's split script (random_split_train_val.py) shuffled the 7,481 training frames 50/50 with no seed, so
no published number can be tied to a split anyone can rebuild (reference/models.md 1.5; squeezeDet issue #61).
Here a random split is a pure function of (frame ids, validation fraction, seed), stable across numpy and Python
versions and machines; or a split is read from given lists, such as the one most KITTI papers use (Chen et al.,
3DOP / MV3D: 3,712 train and 3,769 val frames, chosen so that no drive appears on both sides), and checked
against the images present.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from squeeze.atomic import atomic_write_text
from squeeze.errors import DataError
from squeeze.kitti import check_frame_id, read_frame_ids

SPLIT_NAMES = ("train", "val", "trainval")  # the ImageSets lists a split writes


@dataclass(frozen=True)
class Split:
    """Two disjoint, sorted tuples of frame ids; neither is empty."""

    train: tuple[str, ...]
    val: tuple[str, ...]

    @property
    def trainval(self) -> tuple[str, ...]:
        """Every frame of the split, sorted."""
        return tuple(sorted(self.train + self.val))

    def lists(self) -> dict[str, tuple[str, ...]]:
        """{'train': ..., 'val': ..., 'trainval': ...}, in SPLIT_NAMES order."""
        return {"train": self.train, "val": self.val, "trainval": self.trainval}


def image_frame_ids(root: str | Path) -> list[str]:
    """Sorted ids of the `ROOT/training/image_2/*.png` files; DataError naming the folder when it has none."""
    image_dir = Path(root) / "training" / "image_2"
    if not image_dir.is_dir():
        raise DataError(image_dir, "not a directory (expected a KITTI object folder ROOT/training/image_2)")
    ids = sorted(p.stem for p in image_dir.glob("*.png"))
    if not ids:
        raise DataError(image_dir, "holds no .png images")
    return ids


def val_count(n_frames: int, val_fraction: float) -> int:
    """Validation frames for a fraction: round half up (KITTI's 7,481 frames at 0.5 give 3,741, as in issue #61).

    ValueError when the fraction is outside (0, 1) or leaves either side empty.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n_val = math.floor(val_fraction * n_frames + 0.5)
    if not 0 < n_val < n_frames:
        raise ValueError(f"--val-fraction {val_fraction} of {n_frames} frame(s) leaves "
                         f"{'no validation' if n_val == 0 else 'no training'} frame")
    return n_val


def _rank_key(seed: int, frame_id: str) -> bytes:
    # A frame's place in the shuffle depends on (seed, its own id) only, through SHA-256: the same on every
    # machine and version (numpy's Generator streams may change between releases), and independent of the order
    # or the number of the other frames.
    return hashlib.sha256(f"{seed}\0{frame_id}".encode()).digest()


def random_split(frame_ids: Iterable[str], val_fraction: float = 0.5, seed: int = 0) -> Split:
    """A seeded random split: the `val_count` frames with the smallest SHA-256 of (seed, id) form val.

    Ids must be plain file names (DataError) and unique (ValueError); the input order does not matter.
    """
    ids = [check_frame_id(fid, where="split") for fid in frame_ids]
    if len(set(ids)) != len(ids):
        raise ValueError("frame ids must be unique")
    n_val = val_count(len(ids), val_fraction)
    shuffled = sorted(ids, key=lambda fid: _rank_key(seed, fid))
    return Split(train=tuple(sorted(shuffled[n_val:])), val=tuple(sorted(shuffled[:n_val])))


def split_from_lists(train_list: str | Path, val_list: str | Path, available: Sequence[str]) -> Split:
    """The split given by two ImageSets-style list files, checked: plain-name ids (DataError naming the file and
    line), no id twice, no id in both lists, every id among `available` (the images present)."""
    present = set(available)
    lists = {}
    for name, path in (("train", Path(train_list)), ("val", Path(val_list))):
        ids = read_frame_ids(path)
        if not ids:
            raise DataError(path, f"the {name} list is empty")
        seen: set[str] = set()
        repeated = [fid for fid in ids if fid in seen or seen.add(fid)]
        if repeated:
            raise DataError(path, f"frame {repeated[0]} is listed twice ({len(repeated)} repeated id(s) in all)")
        missing = [fid for fid in ids if fid not in present]
        if missing:
            raise DataError(path, f"{len(missing)} frame(s) have no image in training/image_2, e.g. "
                                  + ", ".join(missing[:3]))
        lists[name] = ids
    both = sorted(set(lists["train"]) & set(lists["val"]))
    if both:
        raise DataError(val_list, f"{len(both)} frame(s) are in both lists, e.g. {', '.join(both[:3])}")
    return Split(train=tuple(sorted(lists["train"])), val=tuple(sorted(lists["val"])))


def format_list(frame_ids: Sequence[str]) -> str:
    """ImageSets text: one id a line, each line ending in a newline (as KITTI's and 3DOP's lists)."""
    return "".join(f"{fid}\n" for fid in frame_ids)


def write_split(root: str | Path, split: Split, force: bool = False) -> list[Path]:
    """Write ROOT/ImageSets/{train,val,trainval}.txt atomically; the paths written.

    Lists that exist with other content are kept unless `force` (FileExistsError naming the first one, before
    anything is written); a list that already holds exactly this content is rewritten harmlessly.
    """
    folder = Path(root) / "ImageSets"
    texts = {folder / f"{name}.txt": format_list(ids) for name, ids in split.lists().items()}
    if not force:
        differing = [p for p, text in texts.items() if p.exists() and _read_or_none(p) != text]
        if differing:
            names = ", ".join(p.name for p in differing)
            raise FileExistsError(17, f"ImageSets list(s) {names} exist with other frame ids; pass --force to "
                                      "overwrite them", str(differing[0]))
    for path, text in texts.items():
        atomic_write_text(path, text)
    return list(texts)


def _read_or_none(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
