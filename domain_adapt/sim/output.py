"""The output folder of `simulate`: which folders it may fill, and how a run appears there all at once.

A run writes into a hidden sibling `.NAME.squeeze-sim-HOST-PID.partial` and renames it to NAME at the end, so
an interrupted run never leaves a half-written NAME behind (which the next run would have to refuse as "not a
simulator output"), and an earlier output stays whole until the new one is complete. Partial folders of a
process that no longer exists on this host are removed by the next run into the same NAME.

NAME may be missing, an empty folder, or an earlier simulator output holding only files a simulation writes;
anything else is refused before any work, so that real data and a user's own files are never overwritten.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
from pathlib import Path

SIM_CONFIG = "sim_config.json"  # written last into every complete output: marks a folder as ours
FRAME_DIRS = ("image_2", "velodyne", "calib", "label_2", "pose", "objects")  # under training/
# Every file a simulation writes, relative to its folder; plus the temporary files of an atomic write.
_OURS = re.compile(r"^(sim_config\.json"
                   r"|ImageSets?/(all|train|val)\.txt"
                   r"|training/(image_2/\d{6}\.png|velodyne/\d{6}\.(bin|label)|(calib|label_2|pose|objects)/\d{6}\.txt)"
                   r"|lidar_2d/\d{6}\.npy)$")
_ATOMIC_TEMP = re.compile(r"^\..+\.squeeze-.+\.tmp$")


def check_out_dir(out: Path) -> None:
    """Raise unless `out` may receive a simulation: missing, empty, or an earlier output of ours only.

    NotADirectoryError for a file; FileExistsError naming the folder (and a few foreign files) otherwise.
    """
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if not (out / SIM_CONFIG).exists():
        raise FileExistsError(f"{out}: not empty and not a simulator output (no {SIM_CONFIG}); "
                              "choose a new or empty folder")
    foreign = _foreign_files(out)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise FileExistsError(f"{out}: a simulator output that also holds files a simulation does not write "
                              f"({shown}); replacing it would delete them: move them or choose another folder")


def _foreign_files(out: Path) -> list[str]:
    """Files under `out` (relative, sorted) that a simulation does not write."""
    foreign = []
    for dirpath, _, files in os.walk(out):
        for name in files:
            rel = Path(dirpath, name).relative_to(out).as_posix()
            if not _OURS.match(rel) and not _ATOMIC_TEMP.match(name):
                foreign.append(rel)
    return sorted(foreign)


_SIBLING = re.compile(r"^\.(?P<name>.+)\.squeeze-sim-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.(partial|old)$")


def _host_tag() -> str:
    """8 hex digits naming this host (host names may hold characters that file names should not)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _sibling(out: Path, kind: str) -> Path:
    """The hidden sibling of `out` that this process uses: kind "partial" (being written) or "old"."""
    return out.parent / f".{out.name}.squeeze-sim-{_host_tag()}-{os.getpid()}.{kind}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # another user's process, or not checkable: assume alive
        return True
    return True


def remove_stale_siblings(out: Path) -> list[Path]:
    """Remove the partial (and set-aside old) folders of `out` left by killed runs on this host; return them.

    Only folders of our own name pattern whose process no longer exists are touched: another run still
    writing, or one on another host sharing the folder, is left alone.
    """
    removed = []
    if not out.parent.is_dir():
        return removed
    for entry in out.parent.iterdir():
        m = _SIBLING.match(entry.name)
        if m is None or m["name"] != out.name or m["host"] != _host_tag() or not entry.is_dir():
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or not _process_exists(pid):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def start_partial(out: Path) -> Path:
    """Create (empty, mode from the umask) and return this process's partial folder for `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(out)
    partial = _sibling(out, "partial")
    partial.mkdir()
    return partial


def discard(partial: Path) -> None:
    """Remove a partial folder (after an error or an interrupt); never raises."""
    shutil.rmtree(partial, ignore_errors=True)


def publish(partial: Path, out: Path) -> None:
    """Rename the complete `partial` folder to `out`, replacing an empty folder or an earlier output.

    An earlier output is first renamed aside (and deleted after), since a folder can only replace an empty one.
    """
    if out.is_dir() and any(out.iterdir()):
        old = _sibling(out, "old")
        os.replace(out, old)
        os.replace(partial, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, out)
