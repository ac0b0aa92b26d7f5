"""latte.edits (ops and their exact inverses) and latte.store (versions, stale writes, idempotent retries, undo/redo
per session, concurrency, kill -9 durability, bad files)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import pytest

from latte.boxes import EditError, empty_document
from latte.edits import apply_edit, check_op, still_applied
from latte.store import StaleWrite, Store
from squeeze.errors import DataError


def box(box_id: str, x: float = 10.0, cls: str = "Car", **kw) -> dict:
    d = {"id": box_id, "cls": cls, "x": x, "y": -2.0, "z": -0.8, "l": 4.0, "w": 1.8, "h": 1.5, "yaw": 0.25}
    d.update(kw)
    return d


def add(box_id: str, x: float = 10.0, **kw) -> dict:
    return {"op": "add", "box": box(box_id, x, **kw)}


def ids(doc: dict) -> list[str]:
    return [b["id"] for b in doc["boxes"]]


# ------------------------------------------------------------------------------------------------ edits (pure)
def test_every_op_applies_and_its_inverse_restores_the_document():
    doc = empty_document("000003")
    ops = [
        add("a"),
        add("b", 20.0, cls="Pedestrian", l=0.8, w=0.6, h=1.7),
        {"op": "update", "box": box("a", 11.5, yaw=4.0, accepted=False, source="one_click", track_id=3)},
        {"op": "status", "status": "review"},
        {"op": "brush", "indices": [9, 2, 5, 2], "label": "car"},
        {"op": "brush", "indices": [5, 7], "label": "pedestrian"},
        {"op": "brush", "indices": [2, 7, 100], "label": ""},
        {"op": "delete", "id": "b"},
        {"op": "batch", "ops": [add("c", 30.0), {"op": "delete", "id": "a"}, {"op": "status", "status": "done"},
                                {"op": "brush", "indices": [1], "label": None}]},
    ]
    history = [doc]
    inverses = []
    for op in ops:
        before = json.dumps(history[-1], sort_keys=True)
        new, inverse = apply_edit(history[-1], op)
        assert json.dumps(history[-1], sort_keys=True) == before  # pure: the input is untouched
        assert new["version"] == history[-1]["version"] + 1
        assert still_applied(new, op)
        history.append(new)
        inverses.append(inverse)
    a = history[3]["boxes"][0]
    assert a["x"] == 11.5 and a["track_id"] == 3 and a["accepted"] is False
    assert a["yaw"] == pytest.approx(4.0 - 2 * 3.141592653589793)  # wrapped to [-pi, pi)
    assert history[4]["status"] == "review"
    assert history[5]["brush"] == {"indices": [2, 5, 9], "labels": ["car", "car", "car"]}
    assert history[6]["brush"] == {"indices": [2, 5, 7, 9], "labels": ["car", "pedestrian", "pedestrian", "car"]}
    assert history[7]["brush"] == {"indices": [5, 9], "labels": ["pedestrian", "car"]}
    assert ids(history[8]) == ["a"]
    assert ids(history[9]) == ["c"] and history[9]["status"] == "done"
    # undo everything, newest first: each inverse gives back the previous document's content exactly
    current = history[-1]
    for k in range(len(ops) - 1, -1, -1):
        current, redo = apply_edit(current, inverses[k])
        expected = dict(history[k], version=current["version"])
        if ops[k]["op"] == "delete":  # a deleted box comes back at the end ("in the order added")
            assert sorted(ids(current)) == sorted(ids(expected))
            current = dict(current, boxes=sorted(current["boxes"], key=lambda b: ids(expected).index(b["id"])))
        assert current == expected, f"undo of op {k} ({ops[k]['op']})"
    assert current["boxes"] == [] and current["brush"] == {"indices": [], "labels": []}
    assert current["version"] == 2 * len(ops)


def test_brush_inverse_restores_mixed_previous_labels():
    doc = dict(empty_document("f"), brush={"indices": [1, 2, 3], "labels": ["car", "cyclist", "car"]})
    new, inverse = apply_edit(doc, {"op": "brush", "indices": [0, 1, 2], "label": "background"})
    assert new["brush"] == {"indices": [0, 1, 2, 3], "labels": ["background"] * 3 + ["car"]}
    assert inverse["op"] == "batch"
    groups = {(op["label"], tuple(op["indices"])) for op in inverse["ops"]}
    assert groups == {(None, (0,)), ("car", (1,)), ("cyclist", (2,))}
    back, _ = apply_edit(new, inverse)
    assert back["brush"] == doc["brush"]


@pytest.mark.parametrize("op, field", [
    ({"op": "add", "box": box("a")}, "op.box.id"),  # exists
    ({"op": "update", "box": box("zz")}, "op.box.id"),
    ({"op": "delete", "id": "zz"}, "op.id"),
    ({"op": "delete", "id": 3}, "op.id"),
    ({"op": "move", "id": "a"}, "op.op"),
    ({"op": "add", "box": box("n"), "at": 0}, "unknown field"),
    ({"op": "add"}, "missing field"),
    ({"op": "add", "box": box("n", l=-1.0)}, "op.box.l"),
    ({"op": "add", "box": box("n", cls="Bus")}, "op.box.cls"),
    ({"op": "add", "box": box("n", x=float("nan"))}, "op.box.x"),
    ({"op": "add", "box": box("../n")}, "op.box.id"),
    ({"op": "status", "status": "finished"}, "op.status"),
    ({"op": "brush", "indices": [1, -1], "label": "car"}, "op.indices"),
    ({"op": "brush", "indices": [1, True], "label": "car"}, "op.indices"),
    ({"op": "brush", "indices": "1,2", "label": "car"}, "op.indices"),
    ({"op": "brush", "indices": [1], "label": "Car"}, "op.label"),
    ({"op": "batch", "ops": [add("n"), {"op": "delete", "id": "zz"}]}, "op.ops[1].id"),
    ({"op": "batch", "ops": [add("n"), add("n")]}, "op.ops[1].box.id"),
    ({"op": "batch", "ops": {"op": "status"}}, "op.ops"),
    ("add", "op: expected an object"),
])
def test_bad_ops_raise_edit_error_naming_the_field(op, field):
    doc, _ = apply_edit(empty_document("f"), add("a"))
    frozen = json.dumps(doc, sort_keys=True)
    with pytest.raises(EditError, match=field.replace("[", r"\[").replace("]", r"\]")):
        apply_edit(doc, op)
    assert json.dumps(doc, sort_keys=True) == frozen


def test_corrupt_document_is_refused_and_nested_batches_are_bounded():
    doc = dict(empty_document("f"), boxes=[box("a"), box("a")])
    with pytest.raises(EditError, match="duplicate box id"):
        apply_edit(doc, {"op": "status", "status": "done"})
    deep = {"op": "status", "status": "done"}
    for _ in range(6):
        deep = {"op": "batch", "ops": [deep]}
    with pytest.raises(EditError, match="nested deeper"):
        check_op(deep)


def test_still_applied_sees_later_changes():
    doc, _ = apply_edit(empty_document("f"), add("a"))
    moved, _ = apply_edit(doc, {"op": "update", "box": box("a", 12.0)})
    assert still_applied(doc, add("a")) and not still_applied(moved, add("a"))
    gone, _ = apply_edit(moved, {"op": "delete", "id": "a"})
    assert still_applied(gone, {"op": "delete", "id": "a"}) and not still_applied(moved, {"op": "delete", "id": "a"})
    painted, _ = apply_edit(gone, {"op": "brush", "indices": [4], "label": "car"})
    assert still_applied(painted, {"op": "brush", "indices": [4], "label": "car"})
    assert not still_applied(painted, {"op": "brush", "indices": [4, 5], "label": "car"})
    assert still_applied(painted, {"op": "brush", "indices": [5], "label": None})
    # in a batch the last op touching a box decides
    assert still_applied(gone, {"op": "batch", "ops": [add("a"), {"op": "delete", "id": "a"}]})


# ------------------------------------------------------------------------------------------------ the store
def test_versions_increment_and_survive_reopening(tmp_path):
    path = tmp_path / "sub" / "dir" / "ann.db"
    with Store(path) as store:
        assert store.document("000001") == empty_document("000001")
        assert store.documents() == {}
        d1 = store.apply("000001", 0, add("a"), "s1", "e1")
        d2 = store.apply("000001", 1, {"op": "update", "box": box("a", 12.0)}, "s1", "e2")
        d3 = store.apply("000002", 0, {"op": "status", "status": "done"}, "s1", "e3")
        assert (d1["version"], d2["version"], d3["version"]) == (1, 2, 1)
        d2["boxes"][0]["x"] = -99.0  # the caller's copy: the store is not changed through it
    with Store(path) as store:
        docs = store.documents()
        assert sorted(docs) == ["000001", "000002"]
        assert docs["000001"]["version"] == 2 and docs["000001"]["boxes"][0]["x"] == 12.0
        assert docs["000002"]["status"] == "done"
        assert [e["edit_id"] for e in store.edits()] == ["e1", "e2", "e3"]
        assert store.edits(frame_id="000001")[1]["inverse"] == {"op": "update", "box": box("a")} | {
            "box": dict(box("a"), track_id=-1, source="manual", accepted=True, score=1.0)}


def test_stale_write_carries_the_current_document(tmp_path):
    with Store(tmp_path / "a.db") as store:
        store.apply("f1", 0, add("a"), "alice", "a1")
        store.apply("f1", 1, add("b", 20.0), "bob", "b1")
        with pytest.raises(StaleWrite) as err:
            store.apply("f1", 1, add("c", 30.0), "alice", "a2")
        assert err.value.current["version"] == 2 and ids(err.value.current) == ["a", "b"]
        assert store.document("f1")["version"] == 2  # nothing stored
        assert [e["edit_id"] for e in store.edits()] == ["a1", "b1"]
        # the same edit on the version it was given back succeeds
        assert ids(store.apply("f1", 2, add("c", 30.0), "alice", "a2")) == ["a", "b", "c"]


def test_retried_edit_id_is_applied_once(tmp_path):
    with Store(tmp_path / "a.db") as store:
        first = store.apply("f1", 0, add("a"), "s", "e1")
        again = store.apply("f1", 0, add("a"), "s", "e1")  # the answer was lost; the client sends it again
        assert first == again and again["version"] == 1 and ids(again) == ["a"]
        store.apply("f1", 1, add("b"), "s", "e2")
        late = store.apply("f1", 0, add("a"), "s", "e1")  # retried after someone else's edit: no StaleWrite
        assert late["version"] == 2 and ids(late) == ["a", "b"]
        assert len(store.edits()) == 2
        stored = store.edit("e1")
        assert stored["op"] == {"op": "add", "box": dict(box("a"), track_id=-1, source="manual", accepted=True,
                                                          score=1.0)}
        assert stored["inverse"] == {"op": "delete", "id": "a"}
        assert [stored[k] for k in ("session", "frame_id", "kind", "version_after")] == ["s", "f1", "edit", 1]
        assert store.edit("nope") is None
        with pytest.raises(EditError, match="edit_id: 'e1' was already used"):
            store.apply("f1", 2, add("z"), "s", "e1")
        with pytest.raises(EditError, match="edit_id"):
            store.apply("f1", 2, add("z"), "s", "bad id/")
        with pytest.raises(EditError, match="frame_id"):
            store.apply("../etc", 0, add("z"), "s", "e9")
        with pytest.raises(EditError, match="base_version"):
            store.apply("f1", True, add("z"), "s", "e9")


def test_undo_redo_chain_across_frames_and_sessions(tmp_path):
    with Store(tmp_path / "a.db") as store:
        store.apply("f1", 0, add("a1"), "A", "A-1")
        store.apply("f2", 0, add("a2"), "A", "A-2")
        store.apply("f1", 1, add("b1", 20.0), "B", "B-1")  # another annotator, same frame
        store.apply("f1", 2, {"op": "update", "box": box("a1", 11.0)}, "A", "A-3")
        # A's undo: the move of a1 (f1), then the add on f2, then the add on f1 -- never B's box
        d = store.undo("A")
        assert d["frame_id"] == "f1" and d["version"] == 4 and d["boxes"][0]["x"] == 10.0 and ids(d) == ["a1", "b1"]
        d = store.undo("A")
        assert d["frame_id"] == "f2" and d["version"] == 2 and ids(d) == []
        d = store.undo("A")
        assert d["frame_id"] == "f1" and ids(d) == ["b1"] and d["version"] == 5
        assert store.undo("A") is None
        # redo in the order undone
        d = store.redo("A")
        assert d["frame_id"] == "f1" and ids(d) == ["b1", "a1"]
        d = store.redo("A")
        assert d["frame_id"] == "f2" and ids(d) == ["a2"]
        # a new edit clears A's redo stack (the move of a1 is gone for good)
        store.apply("f2", 3, add("a3", 40.0), "A", "A-4")
        assert store.redo("A") is None
        # B's undo touches only B's edit
        d = store.undo("B")
        assert ids(d) == ["a1"] and store.undo("B") is None
        assert ids(store.redo("B")) == ["a1", "b1"]
        kinds = [(e["kind"], e["session"]) for e in store.edits()]
        assert kinds.count(("undo", "A")) == 3 and kinds.count(("redo", "A")) == 2
    with Store(tmp_path / "a.db") as store:  # the stacks live in the database: a restarted server keeps them
        assert ids(store.undo("A")) == ["a2"]  # a3 off f2
        assert ids(store.undo("A")) == []  # a2 off f2
        assert ids(store.undo("A")) == ["b1"]  # a1 off f1 again (the redo had put it back)
        assert store.undo("A") is None


def test_undo_keeps_the_other_annotators_box_and_refuses_to_overwrite_their_change(tmp_path):
    with Store(tmp_path / "a.db") as store:
        store.apply("f", 0, add("a"), "A", "A-1")
        store.apply("f", 1, {"op": "update", "box": box("a", 15.0)}, "A", "A-2")
        store.apply("f", 2, add("b", 30.0), "B", "B-1")
        d = store.undo("A")  # B edited a different box since: A's undo applies and keeps it
        assert ids(d) == ["a", "b"] and d["boxes"][0]["x"] == 10.0 and d["boxes"][1]["x"] == 30.0
        store.redo("A")
        store.apply("f", 5, {"op": "update", "box": box("a", 99.0)}, "B", "B-2")  # B moves A's box
        with pytest.raises(StaleWrite) as err:
            store.undo("A")  # would put a back to x=15 over B's move
        assert err.value.current["version"] == 6 and err.value.current["boxes"][0]["x"] == 99.0
        assert store.document("f")["version"] == 6
        # that edit left A's stack; the next undo goes on to A's first edit, whose box B has changed too
        with pytest.raises(StaleWrite):
            store.undo("A")
        assert store.undo("A") is None
        assert store.undo("B")["boxes"][0]["x"] == 15.0  # B's own undo still works


def test_brush_through_the_store_with_undo(tmp_path):
    with Store(tmp_path / "a.db") as store:
        store.apply("f", 0, {"op": "brush", "indices": [3, 1, 2], "label": "car"}, "s", "e1")
        d = store.apply("f", 1, {"op": "brush", "indices": [2, 3, 4], "label": "cyclist"}, "s", "e2")
        assert d["brush"] == {"indices": [1, 2, 3, 4], "labels": ["car", "cyclist", "cyclist", "cyclist"]}
        d = store.apply("f", 2, {"op": "brush", "indices": [1, 4], "label": ""}, "s", "e3")
        assert d["brush"] == {"indices": [2, 3], "labels": ["cyclist", "cyclist"]}
        assert store.undo("s")["brush"] == {"indices": [1, 2, 3, 4], "labels": ["car", "cyclist", "cyclist", "cyclist"]}
        assert store.undo("s")["brush"] == {"indices": [1, 2, 3], "labels": ["car", "car", "car"]}
        assert store.redo("s")["brush"]["labels"] == ["car", "cyclist", "cyclist", "cyclist"]


def test_bad_batch_changes_nothing(tmp_path):
    with Store(tmp_path / "a.db") as store:
        store.apply("f", 0, add("a"), "s", "e1")
        bad = {"op": "batch", "ops": [add("b"), {"op": "status", "status": "done"}, {"op": "delete", "id": "zz"}]}
        with pytest.raises(EditError, match=r"op.ops\[2\].id"):
            store.apply("f", 1, bad, "s", "e2")
        d = store.document("f")
        assert d["version"] == 1 and ids(d) == ["a"] and d["status"] == "todo"
        assert [e["edit_id"] for e in store.edits()] == ["e1"]
        good = {"op": "batch", "ops": [add("b"), {"op": "status", "status": "done"}, {"op": "delete", "id": "a"}]}
        d = store.apply("f", 1, good, "s", "e2")  # the edit id was not spent by the failed try
        assert d["version"] == 2 and ids(d) == ["b"] and d["status"] == "done"
        d = store.undo("s")  # one undo reverts the whole batch
        assert d["version"] == 3 and ids(d) == ["a"] and d["status"] == "todo"


def test_eight_threads_on_one_frame_lose_and_duplicate_nothing(tmp_path):
    store = Store(tmp_path / "a.db")
    errors: list[BaseException] = []
    stale = [0] * 8

    def client(k: int) -> None:
        try:
            version = 0
            for i in range(100):
                op = add(f"t{k}-{i}", x=float(i), y=float(k))
                while True:
                    try:
                        version = store.apply("000000", version, op, f"s{k}", f"t{k}-{i}")["version"]
                        break
                    except StaleWrite as e:
                        stale[k] += 1
                        version = e.current["version"]
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    doc = store.document("000000")
    expected = {f"t{k}-{i}" for k in range(8) for i in range(100)}
    assert len(doc["boxes"]) == 800 and set(ids(doc)) == expected
    assert doc["version"] == 800
    assert sum(stale) > 0  # the threads did race
    store.close()


def test_two_store_objects_on_one_file_see_each_others_edits(tmp_path):
    a, b = Store(tmp_path / "a.db"), Store(tmp_path / "a.db")
    a.apply("f", 0, add("x"), "s", "e1")
    with pytest.raises(StaleWrite) as err:
        b.apply("f", 0, add("y"), "s2", "e2")
    assert ids(err.value.current) == ["x"]
    b.apply("f", 1, add("y"), "s2", "e2")
    assert ids(a.apply("f", 2, add("z"), "s", "e3")) == ["x", "y", "z"]  # a's cached version 1 is not reused
    assert ids(b.document("f")) == ["x", "y", "z"]
    a.close()
    b.close()


_WRITER = r"""
import sys
from latte.store import Store
store = Store(sys.argv[1])
version = 0
for i in range(100000):
    op = {"op": "add", "box": {"id": f"k{i}", "cls": "Car", "x": i % 500, "y": 0, "z": 0, "l": 4, "w": 2,
                               "h": 1.5, "yaw": 0}}
    version = store.apply("000000", version, op, "s", f"k{i}")["version"]
    store.log_interaction("000000", "s", [{"t": float(i), "kind": "key"}])
    print(f"k{i}", flush=True)
"""


def test_kill_9_loses_no_acknowledged_edit(tmp_path):
    db = tmp_path / "a.db"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    acked = []
    try:
        deadline = time.monotonic() + 60
        while len(acked) < 150 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)  # mid-burst: it is inside apply() or log_interaction() now
        acked += [line.strip() for line in proc.stdout]  # acknowledged before the kill, still in the pipe
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 150, "the writer did not get going"
    with Store(db) as store:  # opens (quick_check passes) after the kill
        doc = store.document("000000")
        stored = set(ids(doc))
        assert set(acked) <= stored
        assert len(stored) - len(acked) <= 1  # at most the edit committed but not yet printed
        assert doc["version"] == len(stored)
        assert [e["edit_id"] for e in store.edits()] == ids(doc)
        assert len(store.interactions("000000")) >= len(acked)
        version = doc["version"]
        assert store.apply("000000", version, add("after"), "s", "after")["version"] == version + 1


def test_corrupt_foreign_and_unusable_files_are_data_errors_naming_the_path(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all, just bytes" * 100)
    with pytest.raises(DataError, match="junk.db: not an SQLite database"):
        Store(junk)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    conn.close()
    with pytest.raises(DataError, match="foreign.db: not a LATTE annotation database.*songs"):
        Store(foreign)
    with sqlite3.connect(foreign) as conn:  # untouched: still the other program's rollback-journal file
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()
    with pytest.raises(DataError, match="is not a file"):
        Store(tmp_path)
    newer = tmp_path / "newer.db"
    Store(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99)")
    conn.close()
    with pytest.raises(DataError, match="newer.db: written by a newer LATTE"):
        Store(newer)
    damaged = tmp_path / "damaged.db"
    with Store(damaged) as store:
        for i in range(50):
            store.apply("f", i, add(f"b{i}"), "s", f"e{i}")
    data = bytearray(damaged.read_bytes())
    data[4096 + 100: 4096 * 3] = os.urandom(4096 * 3 - 4096 - 100)  # pages after the schema page overwritten
    damaged.write_bytes(bytes(data))
    with pytest.raises(DataError, match="damaged.db"):
        Store(damaged).documents()
    store = Store(tmp_path / "closed.db")
    store.close()
    with pytest.raises(DataError, match="closed"):
        store.document("f")


def test_database_file_follows_the_umask(tmp_path):
    previous = os.umask(0o002)
    try:
        with Store(tmp_path / "g.db") as store:
            store.apply("f", 0, add("a"), "s", "e")
            assert stat.S_IMODE((tmp_path / "g.db-wal").stat().st_mode) == 0o664
        os.umask(0o077)
        Store(tmp_path / "p.db").close()
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "g.db").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "p.db").stat().st_mode) == 0o600


def test_interaction_log(tmp_path):
    with Store(tmp_path / "a.db") as store:
        events = [{"t": 0.5, "kind": "click", "x": 1.0}, {"t": 0.75, "kind": "key", "key": "a"}]
        store.log_interaction("f1", "s", events)
        store.log_interaction("f2", "s2", [{"t": 1, "kind": "box", "seconds": 4.2}])
        assert store.interactions("f1") == [{"t": 0.5, "kind": "click", "x": 1.0, "frame_id": "f1", "session": "s"},
                                            {"t": 0.75, "kind": "key", "key": "a", "frame_id": "f1", "session": "s"}]
        assert [e["kind"] for e in store.interactions()] == ["click", "key", "box"]
        for events, field in [([{"kind": "click"}], r"events\[0\].t"), ([{"t": 1.0, "kind": ""}], r"events\[0\].kind"),
                              ([{"t": 1.0, "kind": "k"}, "x"], r"events\[1\]"), ({"t": 1.0}, "events"),
                              ([{"t": float("inf"), "kind": "k"}], r"events\[0\].t"),
                              ([{"t": 1.0, "kind": "k", "blob": "x" * 5000}], "4096")]:
            with pytest.raises(EditError, match=field):
                store.log_interaction("f1", "s", events)
        assert len(store.interactions()) == 3  # nothing of a refused call stored
