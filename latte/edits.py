"""Edits of a frame document: pure functions that check an edit, apply it and return its exact inverse.

An edit (an "op") is the JSON a browser sends; the store keeps each one with its inverse so that undo is just
another edit applied to the current document, and redo re-applies the original:

    {"op": "add", "box": {...}}                       # a new box; EditError if its id exists
    {"op": "update", "box": {...}}                    # full replacement of the box with that id
    {"op": "delete", "id": "b1"}
    {"op": "status", "status": "done"}                # todo | done | review
    {"op": "brush", "indices": [3, 7], "label": "car"}   # per-point labels; "" or null clears them
    {"op": "batch", "ops": [op, ...]}                 # applied in order, atomically, as one version step

`apply_edit(doc, op)` never changes `doc`; it returns a new document (version + 1) and the inverse op, such
that applying the inverse to the new document gives back `doc`'s content. The brush is kept sorted by point index,
so undoing a brush stroke restores the document exactly. A deleted box that comes back by undo is appended (boxes
are kept "in the order they were added").

`still_applied(doc, op)` says whether a document still shows what `op` left (the boxes it added or changed are
as it made them, the ones it deleted are absent, ...). The store undoes an edit only when that holds, so one
annotator's undo never overwrites what another annotator changed since (a conflict, answered with 409).
"""

from __future__ import annotations

from collections.abc import Mapping

from latte.boxes import FRAME_STATUSES, POINT_CLASSES, Box, EditError, check_document

OPS = ("add", "update", "delete", "status", "brush", "batch")
_FIELDS = {
    "add": {"op", "box"},
    "update": {"op", "box"},
    "delete": {"op", "id"},
    "status": {"op", "status"},
    "brush": {"op", "indices", "label"},
    "batch": {"op", "ops"},
}
MAX_BATCH = 10_000  # ops in one batch: a whole sequence's copy or track proposals fit, a runaway client does not
MAX_DEPTH = 4  # nested batches (a batch of undo batches); deeper is a client bug
MAX_BRUSH = 2_000_000  # indices in one brush stroke: more than a 128-beam scan holds
MAX_POINT_INDEX = 2**31 - 1  # point indices are int32 on the client


def check_op(op: object, where: str = "op", depth: int = 0) -> dict:
    """Check an edit's JSON and return it as plain JSON types (boxes normalised by Box.from_dict).

    Raises EditError naming the field: `op.box.l`, `op.ops[2].id`, ... Only the op's form is checked here;
    whether it fits a document (the id exists, ...) is checked by `apply_edit`.
    """
    if not isinstance(op, Mapping):
        raise EditError(f"{where}: expected an object, got {type(op).__name__}")
    kind = op.get("op")
    if kind not in OPS:
        raise EditError(f"{where}.op: {kind!r} is not one of {', '.join(OPS)}")
    missing = _FIELDS[kind] - set(op)
    if missing:
        raise EditError(f"{where}: missing field(s) {sorted(missing)} for op {kind!r}")
    unknown = set(op) - _FIELDS[kind]
    if unknown:
        raise EditError(f"{where}: unknown field(s) {sorted(unknown)} for op {kind!r}")
    if kind in ("add", "update"):
        return {"op": kind, "box": Box.from_dict(op["box"], f"{where}.box").to_dict()}
    if kind == "delete":
        box_id = op["id"]
        if not isinstance(box_id, str) or not box_id:
            raise EditError(f"{where}.id: expected a box id, got {box_id!r}")
        return {"op": kind, "id": box_id}
    if kind == "status":
        if op["status"] not in FRAME_STATUSES:
            raise EditError(f"{where}.status: {op['status']!r} is not one of {', '.join(FRAME_STATUSES)}")
        return {"op": kind, "status": op["status"]}
    if kind == "brush":
        indices = op["indices"]
        if not isinstance(indices, list):
            raise EditError(f"{where}.indices: expected a list of point indices")
        if len(indices) > MAX_BRUSH:
            raise EditError(f"{where}.indices: {len(indices)} indices, at most {MAX_BRUSH} in one stroke")
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i <= MAX_POINT_INDEX:
                raise EditError(f"{where}.indices: expected integers in [0, {MAX_POINT_INDEX}], got {i!r}")
        label = op["label"]
        if label == "":
            label = None
        if label is not None and label not in POINT_CLASSES:
            raise EditError(f"{where}.label: {label!r} is not one of {', '.join(POINT_CLASSES)} (or '' to clear)")
        # a stroke that passes the same point twice paints it once; sorted so the op's JSON is canonical
        return {"op": kind, "indices": sorted(set(indices)), "label": label}
    ops = op["ops"]
    if not isinstance(ops, list):
        raise EditError(f"{where}.ops: expected a list of ops")
    if len(ops) > MAX_BATCH:
        raise EditError(f"{where}.ops: {len(ops)} ops, at most {MAX_BATCH} in one batch")
    if depth >= MAX_DEPTH:
        raise EditError(f"{where}: batches nested deeper than {MAX_DEPTH}")
    return {"op": kind, "ops": [check_op(o, f"{where}.ops[{i}]", depth + 1) for i, o in enumerate(ops)]}


def apply_edit(doc: Mapping, op: object, check: bool = True) -> tuple[dict, dict]:
    """(new document with version + 1, inverse op) of `op` applied to `doc`; `doc` is not changed.

    Raises EditError naming the field when the document or the op is malformed or the op does not fit the
    document (add of an existing id, update or delete of an absent one). A batch is all or nothing: an error in
    its third op leaves nothing of the first two.
    check=False trusts `doc` to be a checked document in plain JSON types (the store's own, checked when they
    were written): checking 800 boxes costs ~16 ms, the shallow copy taken instead microseconds.
    """
    if check:
        new = check_document(doc)  # a fresh copy in plain JSON types; a corrupt document is refused here
    else:
        # box dicts and the brush are replaced by _apply, never changed in place, so sharing them is safe
        new = {**doc, "boxes": list(doc["boxes"]), "brush": doc["brush"]}
    inverse = _apply(new, check_op(op), "op")
    new["version"] += 1
    return new, inverse


def _apply(doc: dict, op: dict, where: str) -> dict:
    """Apply a checked op to `doc` in place (a private copy) and return its inverse."""
    kind = op["op"]
    boxes: list[dict] = doc["boxes"]
    if kind == "add":
        box = op["box"]
        if any(b["id"] == box["id"] for b in boxes):
            raise EditError(f"{where}.box.id: a box with id {box['id']!r} already exists")
        boxes.append(dict(box))
        return {"op": "delete", "id": box["id"]}
    if kind in ("update", "delete"):
        box_id = op["box"]["id"] if kind == "update" else op["id"]
        at = next((i for i, b in enumerate(boxes) if b["id"] == box_id), None)
        if at is None:
            field = "box.id" if kind == "update" else "id"
            raise EditError(f"{where}.{field}: no box with id {box_id!r} in frame {doc['frame_id']!r}")
        old = boxes[at]
        if kind == "update":
            boxes[at] = dict(op["box"])
            return {"op": "update", "box": old}
        del boxes[at]
        return {"op": "add", "box": old}
    if kind == "status":
        old_status = doc["status"]
        doc["status"] = op["status"]
        return {"op": "status", "status": old_status}
    if kind == "brush":
        painted = dict(zip(doc["brush"]["indices"], doc["brush"]["labels"], strict=True))
        before: dict[str | None, list[int]] = {}  # previous label (None: unpainted) -> indices, for the inverse
        for i in op["indices"]:
            before.setdefault(painted.get(i), []).append(i)
            if op["label"] is None:
                painted.pop(i, None)
            else:
                painted[i] = op["label"]
        order = sorted(painted)
        doc["brush"] = {"indices": order, "labels": [painted[i] for i in order]}
        undo = [{"op": "brush", "indices": idx, "label": lab} for lab, idx in before.items()]
        if len(undo) == 1:
            return undo[0]
        return {"op": "batch", "ops": undo}
    inverses = [_apply(doc, sub, f"{where}.ops[{i}]") for i, sub in enumerate(op["ops"])]
    return {"op": "batch", "ops": inverses[::-1]}


def still_applied(doc: Mapping, op: object) -> bool:
    """True when `doc` still shows what `op` left: its boxes as it made them (or absent where it deleted them),
    its status, its brush labels. False once someone changed one of them since (or `op` is malformed)."""
    try:
        boxes, status, brush = _effect(check_op(op))
    except EditError:
        return False
    current = {b["id"]: b for b in doc["boxes"]}
    for box_id, box in boxes.items():
        now = current.get(box_id)
        if box is None and now is not None:
            return False
        if box is not None and (now is None or Box.from_dict(now).to_dict() != box):
            return False
    if status is not None and doc["status"] != status:
        return False
    if brush:
        painted = dict(zip(doc["brush"]["indices"], doc["brush"]["labels"], strict=True))
        if any(painted.get(i) != lab for i, lab in brush.items()):
            return False
    return True


def _effect(op: dict) -> tuple[dict[str, dict | None], str | None, dict[int, str | None]]:
    """What a checked op leaves: box id -> box dict (None: deleted), the status (None: untouched), point index ->
    label (None: cleared). In a batch the last op touching a thing decides."""
    boxes: dict[str, dict | None] = {}
    status: str | None = None
    brush: dict[int, str | None] = {}
    kind = op["op"]
    if kind in ("add", "update"):
        boxes[op["box"]["id"]] = op["box"]
    elif kind == "delete":
        boxes[op["id"]] = None
    elif kind == "status":
        status = op["status"]
    elif kind == "brush":
        brush = dict.fromkeys(op["indices"], op["label"])
    else:
        for sub in op["ops"]:
            b, s, p = _effect(sub)
            boxes.update(b)
            status = s if s is not None else status
            brush.update(p)
    return boxes, status, brush
