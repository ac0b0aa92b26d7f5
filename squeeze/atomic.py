"""Atomic file writes: readers see the old file or the new one, never half of one, even after kill -9.

Write to a temporary file beside the target, fsync it, rename it over the target, fsync the folder.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any


def fsync_dir(directory: str | Path) -> None:
    """fsync a folder so that a rename inside it survives power loss (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are durable once the file is flushed
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(f)`` on a binary temporary file beside `path`, fsync it, rename it over `path`, fsync the folder.

    If `write` raises (or the process dies) the temporary file is removed (or left as ``.NAME.*.tmp``) and `path`
    keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))
