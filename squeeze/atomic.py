"""Atomic file writes: readers see the old file or the new one, never half of one, even after kill -9.

Write to a temporary file beside the target, fsync it, rename it over the target, fsync the folder.

Three things every write here does like any other tool would:

- **Permissions follow the umask.** The temporary file is created with ``os.open(..., 0o666)``, so the kernel
  applies the user's umask (and a folder's default ACL) exactly as for ``open(path, "w")``: 0644 under umask 022,
  0600 under 077. (``tempfile.mkstemp`` creates 0600 files, and that mode survived the rename: teammates could
  not read datasets or checkpoints.)
- **Errors name the target.** An OSError while creating, writing or renaming (permission denied, disk full,
  read-only file system) is re-raised as the same OSError class naming the file the caller asked for, not the
  temporary file.
- **Killed writes are cleaned up.** The temporary file is ``.NAME.squeeze-HOST-PID-RANDOM.tmp``. The first write
  into a folder in a process (and `clean_stale_temp_files`, callable at start-up) removes files of exactly that
  pattern that are stale (see `is_stale_temp`); nothing else is ever touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Any

# A temporary file of ours that has not been written for this long belongs to no running write: a write streams
# its bytes, then fsyncs and renames within seconds; only a process stopped mid-write (SIGSTOP) pauses this long,
# and its rename then fails loudly instead of replacing the target.
STALE_AGE_S = 600.0
# A temporary file written on this host by a process that no longer exists is stale once it is this old. The
# guard covers a folder shared with another pid namespace (a container) on a host of the same name.
DEAD_WRITER_AGE_S = 60.0

_TEMP_RE = re.compile(r"^\..+\.squeeze-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}\.tmp$")
_cleaned_dirs: set[str] = set()
_cleaned_lock = threading.Lock()


def _host_tag() -> str:
    """8 hex digits naming this host (a hash: host names may hold characters that file names should not)."""
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def temp_name(target_name: str) -> str:
    """The name of a temporary file for `target_name`: ``.NAME.squeeze-HOST-PID-RANDOM.tmp``."""
    return f".{target_name}.squeeze-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.tmp"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):  # exists but belongs to another user; or not checkable
        return True
    return True


def is_stale_temp(name: str, age_s: float) -> bool:
    """Whether a file called `name`, last modified `age_s` seconds ago, is a temporary file of ours nobody writes.

    Only names of our own pattern qualify. Stale means: not modified for STALE_AGE_S, or written on this host by
    a process that has exited and not modified for DEAD_WRITER_AGE_S.
    """
    m = _TEMP_RE.match(name)
    if m is None:
        return False
    if age_s >= STALE_AGE_S:
        return True
    return (age_s >= DEAD_WRITER_AGE_S and m["host"] == _host_tag() and int(m["pid"]) != os.getpid()
            and not _pid_alive(int(m["pid"])))


def clean_stale_temp_files(directory: str | Path) -> list[Path]:
    """Remove the stale temporary files of ours (see `is_stale_temp`) in `directory`; return their paths.

    Never raises: a folder that cannot be listed or a file that cannot be removed is left as it is.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.endswith(".tmp") or _TEMP_RE.match(entry.name) is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if is_stale_temp(entry.name, now - entry.stat(follow_symlinks=False).st_mtime):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


def _clean_once(directory: Path) -> None:
    # Once per folder and process: listing a folder of thousands of frames before each write would cost O(n^2).
    key = os.path.abspath(directory)
    with _cleaned_lock:
        if key in _cleaned_dirs:
            return
        _cleaned_dirs.add(key)
    clean_stale_temp_files(directory)


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


def _naming_target(e: OSError, target: Path, tmp: Path) -> OSError:
    """The same kind of OSError, naming `target` instead of the temporary file (or of no file, as ENOSPC does)."""
    if e.filename not in (None, str(tmp), os.fsencode(tmp)):
        return e  # about another file (the write callback read one): keep it as it is
    if e.errno is None:  # raised with a bare message (OSError("...")): keep it, and name the target in it
        return type(e)(f"{target}: {e}")
    return type(e)(e.errno, e.strerror or os.strerror(e.errno), str(target))


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # the error that brought us here is the one to report
        pass


def atomic_write(path: str | Path, write: Any) -> None:
    """Call ``write(f)`` on a binary temporary file beside `path`, fsync it, rename it over `path`, fsync the folder.

    If `write` raises (or the process dies) the temporary file is removed (or left, to be cleaned later) and
    `path` keeps its previous content. The new file's permissions follow the umask. An OSError names `path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_once(path.parent)
    tmp = path.parent / temp_name(path.name)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask, as for any file a tool creates
    except OSError as e:
        raise _naming_target(e, path, tmp) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise _naming_target(e, path, tmp) from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    atomic_write(path, lambda f: f.write(data))
