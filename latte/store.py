"""Where annotations live: one SQLite file in WAL mode, every edit committed (fsync) before it is acknowledged.

The store keeps, per frame, the current document (a version that grows by one per edit), and every edit with its
inverse (an audit trail and the undo stacks), and the interaction log (clicks, keys, timings) for efficiency
studies. `Store` is the one small interface the server uses, so another backend could replace it.

Why this is safe to kill:
- `journal_mode=WAL` + `synchronous=FULL`: a commit returns only after the write-ahead log is fsynced, so an edit
  the server acknowledged survives `kill -9` and (as far as SQLite and the disk honour fsync) a power cut.
- Every change is one `BEGIN IMMEDIATE` transaction (the write lock is taken up front, so two writers never
  deadlock on a lock upgrade): the version check, the new document and the edit row commit together or not at all.
- Edits carry a client-made `edit_id` (unique): a retried request whose answer was lost is recognised and not
  applied a second time.

Undo/redo are per session (one browser tab) and unlimited. Undo applies the stored inverse of the session's last
edit to the frame's *current* document as a new version, so another annotator's edits to other boxes are kept;
when what the edit did was changed since by someone else, the undo is refused (StaleWrite) and that edit leaves
the session's undo stack. Redo re-applies the edit the same way. A new edit clears the session's redo stack.

Threads: the server runs handlers in a thread pool; one connection serves them all behind a lock (SQLite
serialises writers anyway). Several processes may open the same file: the busy timeout makes them wait in turn.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from latte.boxes import EditError, empty_document
from latte.edits import apply_edit, check_op, still_applied
from squeeze.errors import DataError
from squeeze.kitti import check_frame_id

APPLICATION_ID = 0x4C415454  # "LATT" in the SQLite header: tells our files from any other SQLite database
SCHEMA_VERSION = 1  # bump with a migration in _open when a table changes
BUSY_TIMEOUT_S = 30.0  # another process holding the write lock (an export, a second server) is waited for
MAX_EVENTS = 10_000  # interaction events in one log call
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")  # session ids and edit ids (uuids, hex, "s1-e42")

# Edit states (edits.state, for kind "edit"): the undo stack of a session is its APPLIED edits by seq, the redo
# stack its UNDONE ones (the most recently undone has the smallest seq, since undo takes the newest first).
APPLIED, UNDONE, CLEARED, CONFLICT = 0, 1, 2, 3

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE documents (
    frame_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    json TEXT NOT NULL,          -- the frame document (latte.boxes), version included
    updated REAL NOT NULL        -- unix time of the last edit
);
CREATE TABLE edits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    edit_id TEXT NOT NULL UNIQUE,
    session TEXT NOT NULL,
    frame_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('edit', 'undo', 'redo')),
    target INTEGER,              -- undo/redo: the seq of the edit undone or redone
    op TEXT NOT NULL,            -- the op applied (undo: the target's inverse)
    inverse TEXT NOT NULL,
    version_after INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,  -- kind 'edit': 0 applied, 1 undone, 2 off the redo stack, 3 conflict
    t REAL NOT NULL
);
CREATE INDEX edits_stack ON edits (session, kind, state, seq);
CREATE TABLE interactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    frame_id TEXT NOT NULL,
    session TEXT NOT NULL,
    t REAL NOT NULL,             -- the client's timestamp (seconds)
    kind TEXT NOT NULL,
    json TEXT NOT NULL,          -- the whole event
    received REAL NOT NULL       -- unix time the server stored it
);
CREATE INDEX interactions_frame ON interactions (frame_id, id);
"""
_TABLES = {"schema_version", "documents", "edits", "interactions"}


class StaleWrite(Exception):
    """The edit was made on an older version of the frame (or an undo no longer fits): `current` is the frame's
    current document, for the client to show and retry on."""

    def __init__(self, current: dict, message: str = "stale"):
        super().__init__(message)
        self.current = current


def _dumps(obj: object, canonical: bool = True) -> str:
    """Compact JSON; `canonical` sorts keys (ops are compared as text to recognise a retried edit)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=canonical, allow_nan=False)


def _copy(doc: dict) -> dict:
    """A copy the caller may change without touching the store's cache (boxes hold only scalars)."""
    return {**doc, "boxes": [dict(b) for b in doc["boxes"]],
            "brush": {"indices": list(doc["brush"]["indices"]), "labels": list(doc["brush"]["labels"])}}


def _sync_dir(folder: Path) -> None:
    """fsync a folder so that a file just created in it is durable (POSIX; Windows cannot open folders)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise EditError(f"{field}: expected 1-128 characters of [A-Za-z0-9_.:-], got {str(value)[:60]!r}")
    return value


def _check_frame(frame_id: object) -> str:
    if not isinstance(frame_id, str) or len(frame_id) > 128:
        raise EditError(f"frame_id: expected a frame id of at most 128 characters, got {str(frame_id)[:60]!r}")
    try:
        return check_frame_id(frame_id)
    except DataError as e:
        raise EditError(f"frame_id: {e.fault}") from None


class Store:
    """The annotation database at `path` (created with its parent folder when absent; follows the umask)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.RLock()
        self._cache: dict[str, dict] = {}  # frame id -> its current document as last read or written
        self._pending: list[str] = []
        self._conn: sqlite3.Connection | None = None
        self._conn = self._open()

    # -- opening ------------------------------------------------------------------------------------------------

    def _fail(self, what: str, error: BaseException | None = None) -> DataError:
        detail = f": {str(error).splitlines()[0] if str(error) else type(error).__name__}" if error else ""
        return DataError(self.path, f"{what}{detail}")

    def _open(self) -> sqlite3.Connection:
        path = self.path
        if path.exists() and not path.is_file():
            raise DataError(path, "the annotation database path exists and is not a file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # created here rather than by SQLite (which uses 0644) so it follows the umask like any file the
                # user writes; SQLite gives the -wal and -shm files the database's own permissions
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o666))
                _sync_dir(path.parent)  # the new name itself survives a power cut (SQLite does this for the WAL)
            with open(path, "rb") as f:
                header = f.read(16)
        except OSError as e:
            raise DataError(path, f"cannot create or read the annotation database: {e.strerror or e}") from None
        if header and header != b"SQLite format 3\x00":
            raise DataError(path, "not an SQLite database (a LATTE annotation database was expected)")
        try:
            conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise self._fail("cannot open the annotation database", e) from None
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            tables.discard("sqlite_sequence")
            if app_id != APPLICATION_ID and (app_id != 0 or tables):
                raise DataError(path, f"not a LATTE annotation database (application id {app_id:#x}, tables "
                                      f"{', '.join(sorted(tables)) or 'none'}); give another --db path")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise DataError(path, f"SQLite refused WAL mode (journal mode {mode!r}); put the database on a "
                                      "local disk")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA fullfsync = ON")  # macOS: F_FULLFSYNC, a flush to the platter; no-op elsewhere
            conn.execute("PRAGMA checkpoint_fullfsync = ON")
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                # looked at again under the write lock: two processes may create the same new file together
                if conn.execute("PRAGMA application_id").fetchone()[0] == 0:
                    # statement by statement: executescript would COMMIT the transaction first
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not _TABLES <= tables:
                raise DataError(path, f"damaged LATTE database: table(s) {sorted(_TABLES - tables)} missing")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            if row is None or row[0] is None:
                raise DataError(path, "damaged LATTE database: no schema version")
            if row[0] > SCHEMA_VERSION:
                raise DataError(path, f"written by a newer LATTE (schema {row[0]}, this one reads {SCHEMA_VERSION})")
            check = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if check != "ok":
                raise DataError(path, f"damaged SQLite database: {check}")
        except DataError:
            conn.close()
            raise
        except sqlite3.Error as e:
            conn.close()
            raise self._fail("cannot use the annotation database (damaged, unreadable or read-only)", e) from None
        return conn

    # -- transactions -------------------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction under the thread lock; committed (fsynced) when the block ends normally."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise self._fail("cannot write the annotation database", e) from None
            self._pending = []  # frames whose cached document this transaction changed
            try:
                yield conn
            except BaseException:
                self._forget_pending()
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                self._forget_pending()
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise self._fail("cannot commit to the annotation database", e) from None

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction under the thread lock: versions checked and documents read come from one snapshot."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN")
            except sqlite3.Error as e:
                raise self._fail("cannot read the annotation database", e) from None
            try:
                yield conn
            except sqlite3.Error as e:
                raise self._fail("cannot read the annotation database", e) from None
            finally:
                try:
                    conn.execute("COMMIT")  # ends a read transaction; nothing was written
                except sqlite3.Error:
                    pass

    def _forget_pending(self) -> None:
        """Drop the cached documents a rolled-back transaction wrote: they were never stored."""
        for frame_id in self._pending:
            self._cache.pop(frame_id, None)
        self._pending = []

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DataError(self.path, "the annotation store is closed")
        return self._conn

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._connection().execute(sql, args).fetchall()
            except sqlite3.Error as e:
                raise self._fail("cannot read the annotation database", e) from None

    def _current(self, conn: sqlite3.Connection, frame_id: str) -> dict:
        """The frame's current document inside a transaction (the cached copy when its version is current).

        Versions only grow and each (frame, version) is written once, so an equal version means equal content,
        whichever process wrote it.
        """
        row = conn.execute("SELECT version FROM documents WHERE frame_id = ?", (frame_id,)).fetchone()
        if row is None:
            return empty_document(frame_id)
        cached = self._cache.get(frame_id)
        if cached is not None and cached["version"] == row[0]:
            return cached
        text = conn.execute("SELECT json FROM documents WHERE frame_id = ?", (frame_id,)).fetchone()[0]
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise DataError(self.path, f"damaged document of frame {frame_id!r}: {e}") from None
        self._cache[frame_id] = doc
        return doc

    def _put(self, conn: sqlite3.Connection, doc: dict) -> None:
        conn.execute("INSERT INTO documents (frame_id, version, json, updated) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (frame_id) DO UPDATE SET version = excluded.version, json = excluded.json, "
                     "updated = excluded.updated",
                     (doc["frame_id"], doc["version"], _dumps(doc, canonical=False), time.time()))
        self._cache[doc["frame_id"]] = doc
        self._pending.append(doc["frame_id"])

    def _record(self, conn: sqlite3.Connection, edit_id: str, session: str, frame_id: str, kind: str,
                op: dict, inverse: dict, version_after: int, target: int | None = None) -> None:
        conn.execute("INSERT INTO edits (edit_id, session, frame_id, kind, target, op, inverse, version_after, t) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (edit_id, session, frame_id, kind, target, _dumps(op), _dumps(inverse), version_after,
                      time.time()))

    # -- the interface ------------------------------------------------------------------------------------------

    def document(self, frame_id: str) -> dict:
        """The frame's current document; empty_document(frame_id) (version 0) when nobody has edited it."""
        frame_id = _check_frame(frame_id)
        with self._snapshot() as conn:
            return _copy(self._current(conn, frame_id))

    def documents(self) -> dict[str, dict]:
        """Every frame that has been edited: frame id -> current document (sorted by frame id)."""
        with self._snapshot() as conn:  # through the cache: the annotator reads them all for each new track id
            frame_ids = [r[0] for r in conn.execute("SELECT frame_id FROM documents ORDER BY frame_id")]
            return {frame_id: _copy(self._current(conn, frame_id)) for frame_id in frame_ids}

    def apply(self, frame_id: str, base_version: int, op: dict, session: str, edit_id: str) -> dict:
        """Apply `op` to the frame as one new version and return the new document.

        Raises StaleWrite (with the current document) when `base_version` is not the current version, EditError
        for a malformed op or one that does not fit the document (nothing is stored then). Idempotent on
        `edit_id`: the same edit again (a client retrying after a lost answer) is not applied twice; it returns
        the frame's current document, which holds that edit's result unless someone changed it since.
        """
        frame_id = _check_frame(frame_id)
        _check_name(session, "session")
        _check_name(edit_id, "edit_id")
        if isinstance(base_version, bool) or not isinstance(base_version, int) or base_version < 0:
            raise EditError(f"base_version: expected an integer >= 0, got {base_version!r}")
        op = check_op(op)
        with self._write() as conn:
            seen = conn.execute("SELECT session, frame_id, kind, op FROM edits WHERE edit_id = ?",
                                (edit_id,)).fetchone()
            if seen is not None:
                if seen != (session, frame_id, "edit", _dumps(op)):
                    raise EditError(f"edit_id: {edit_id!r} was already used for a different edit")
                return _copy(self._current(conn, frame_id))
            doc = self._current(conn, frame_id)
            if doc["version"] != base_version:
                raise StaleWrite(_copy(doc), f"frame {frame_id} is at version {doc['version']}, "
                                             f"the edit was made on version {base_version}")
            new, inverse = apply_edit(doc, op, check=False)
            self._put(conn, new)
            # a new edit ends the session's redo stack (the classic linear undo model)
            conn.execute("UPDATE edits SET state = ? WHERE session = ? AND kind = 'edit' AND state = ?",
                         (CLEARED, session, UNDONE))
            self._record(conn, edit_id, session, frame_id, "edit", op, inverse, new["version"])
        return _copy(new)

    def undo(self, session: str, edit_id: str | None = None) -> dict | None:
        """Undo the session's last edit (on whichever frame) as a new version of that frame; its document, or
        None when the session has nothing to undo. StaleWrite (with that frame's current document) when what the
        edit did was changed since by someone else; that edit then leaves the undo stack. `edit_id` makes a
        retried undo idempotent, like `apply`."""
        return self._step(session, edit_id, "undo")

    def redo(self, session: str, edit_id: str | None = None) -> dict | None:
        """Re-apply the session's last undone edit; None when there is none. StaleWrite as for `undo`."""
        return self._step(session, edit_id, "redo")

    def _step(self, session: str, edit_id: str | None, kind: str) -> dict | None:
        _check_name(session, "session")
        edit_id = _check_name(edit_id, "edit_id") if edit_id is not None else f"{kind}-{uuid.uuid4().hex}"
        conflict: StaleWrite | None = None
        with self._write() as conn:
            seen = conn.execute("SELECT session, frame_id, kind FROM edits WHERE edit_id = ?", (edit_id,)).fetchone()
            if seen is not None:
                if seen[0] != session or seen[2] != kind:
                    raise EditError(f"edit_id: {edit_id!r} was already used for a different edit")
                return _copy(self._current(conn, seen[1]))
            if kind == "undo":
                row = conn.execute("SELECT seq, frame_id, op, inverse FROM edits WHERE session = ? AND kind = 'edit' "
                                   "AND state = ? ORDER BY seq DESC LIMIT 1", (session, APPLIED)).fetchone()
            else:
                row = conn.execute("SELECT seq, frame_id, op, inverse FROM edits WHERE session = ? AND kind = 'edit' "
                                   "AND state = ? ORDER BY seq ASC LIMIT 1", (session, UNDONE)).fetchone()
            if row is None:
                return None
            seq, frame_id, op_text, inverse_text = row
            op, inverse = json.loads(op_text), json.loads(inverse_text)
            done, todo = (op, inverse) if kind == "undo" else (inverse, op)
            doc = self._current(conn, frame_id)
            new = None
            if still_applied(doc, done):
                try:
                    new, new_inverse = apply_edit(doc, todo, check=False)
                except EditError:
                    new = None
            if new is None:
                # someone changed what this edit did: undoing it would overwrite their work. The edit leaves the
                # stacks (committed below) so the next undo goes on to the one before.
                conn.execute("UPDATE edits SET state = ? WHERE seq = ?", (CONFLICT, seq))
                conflict = StaleWrite(_copy(doc), f"cannot {kind} the edit on frame {frame_id}: another edit has "
                                                  "changed it since")
            else:
                self._put(conn, new)
                conn.execute("UPDATE edits SET state = ? WHERE seq = ?", (UNDONE if kind == "undo" else APPLIED, seq))
                if kind == "redo":  # the redone edit's inverse, taken on today's document, is what a later undo needs
                    conn.execute("UPDATE edits SET inverse = ? WHERE seq = ?", (_dumps(new_inverse), seq))
                self._record(conn, edit_id, session, frame_id, kind, todo, done, new["version"], target=seq)
        if conflict is not None:
            raise conflict
        return _copy(new)

    def edit(self, edit_id: str) -> dict | None:
        """The stored edit (or undo/redo step) with this id, as one row of `edits()`; None when there is none.

        For callers that rewrite an op before `apply` (a server assigning a new track id): a retried request would
        make a different op under the same edit_id, which `apply` refuses; asking first recognises the retry."""
        rows = self.edits(edit_id=edit_id)
        return rows[0] if rows else None

    def edits(self, frame_id: str | None = None, session: str | None = None, edit_id: str | None = None) -> list[dict]:
        """The stored edits (and undo/redo steps) in the order applied: {"seq", "edit_id", "session", "frame_id",
        "kind", "target", "op", "inverse", "version_after", "state", "t"}; filtered by frame, session, edit id."""
        where, args = [], []
        if edit_id is not None:
            where.append("edit_id = ?")
            args.append(edit_id)
        if frame_id is not None:
            where.append("frame_id = ?")
            args.append(frame_id)
        if session is not None:
            where.append("session = ?")
            args.append(session)
        sql = ("SELECT seq, edit_id, session, frame_id, kind, target, op, inverse, version_after, state, t FROM edits"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY seq")
        keys = ("seq", "edit_id", "session", "frame_id", "kind", "target", "op", "inverse", "version_after",
                "state", "t")
        out = []
        for row in self._read(sql, tuple(args)):
            item = dict(zip(keys, row, strict=True))
            item["op"], item["inverse"] = json.loads(item["op"]), json.loads(item["inverse"])
            out.append(item)
        return out

    def log_interaction(self, frame_id: str, session: str, events: list[dict]) -> None:
        """Store interaction events ({"t": seconds, "kind": "click" | "key" | "box" | ..., anything else}) of a
        frame, in one transaction. EditError naming the event and field when one is malformed."""
        frame_id = _check_frame(frame_id)
        _check_name(session, "session")
        if not isinstance(events, list):
            raise EditError("events: expected a list of {'t', 'kind', ...} objects")
        if len(events) > MAX_EVENTS:
            raise EditError(f"events: {len(events)} events, at most {MAX_EVENTS} in one call")
        rows = []
        now = time.time()
        for i, event in enumerate(events):
            if not isinstance(event, Mapping):
                raise EditError(f"events[{i}]: expected an object")
            t = event.get("t")
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
                raise EditError(f"events[{i}].t: expected a finite number of seconds, got {t!r}")
            kind = event.get("kind")
            if not isinstance(kind, str) or not 0 < len(kind) <= 64:
                raise EditError(f"events[{i}].kind: expected a name of 1-64 characters, got {kind!r}")
            try:
                text = _dumps(dict(event))
            except (TypeError, ValueError) as e:
                raise EditError(f"events[{i}]: not plain JSON ({e})") from None
            if len(text) > 4096:
                raise EditError(f"events[{i}]: {len(text)} bytes of JSON, at most 4096 per event")
            rows.append((frame_id, session, float(t), kind, text, now))
        with self._write() as conn:
            conn.executemany("INSERT INTO interactions (frame_id, session, t, kind, json, received) "
                             "VALUES (?, ?, ?, ?, ?, ?)", rows)

    def interactions(self, frame_id: str | None = None) -> list[dict]:
        """Logged events in the order stored, each {"frame_id", "session", **event}; one frame's or all."""
        if frame_id is None:
            rows = self._read("SELECT frame_id, session, json FROM interactions ORDER BY id")
        else:
            rows = self._read("SELECT frame_id, session, json FROM interactions WHERE frame_id = ? ORDER BY id",
                              (frame_id,))
        return [{**json.loads(text), "frame_id": f, "session": s} for f, s, text in rows]

    def close(self) -> None:
        """Close the database (everything acknowledged is already committed); later calls raise DataError."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
                    self._cache.clear()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
