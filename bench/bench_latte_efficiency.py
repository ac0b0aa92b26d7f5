"""LATTE annotation efficiency: a scripted annotator labels a simulated sequence twice in the real browser client.

Issue 12's efficiency bar: interactions and seconds per box for the LATTE flow (one-click, tracking, fusion) and for
drawing every box by hand, on the same frames, against the same real server (`squeeze latte serve`, a fresh
database per flow) in headless Debian chromium (Playwright; never a browser download).

What gets labelled: every Car, Van, Pedestrian and Cyclist of the simulated truth (training/objects) with enough
LiDAR points inside its true box (>= 50 for Car/Van, >= 20 for Pedestrian/Cyclist) whose centre is on screen in the
bird's-eye view (both flows work in that view: `B`).

(a) LATTE flow. Frame 0: per object, `A` + click on the object's point nearest the centroid of its points (where a
    person clicks) -> a one-click proposal; if its BEV IoU with the truth is below the KITTI threshold (0.7
    Car/Van, 0.5 Pedestrian/Cyclist) the annotator fixes it with keys (the adjustment model below) up to that
    threshold; `Enter` accepts. Later frames: `N` (the accepted boxes are tracked into the frame), then for each
    proposal: `Enter` when good, keys then `Enter` when not, `Delete` when it matches no object to label; objects
    without a proposal get a one-click. With --detector, `G` on the first frame asks for camera-detector fusion
    proposals, handled the same way (plus a class key when the detector's class is wrong) before the one-clicks.
(b) By hand. The frames in reverse order (`P`: moving back does not track, so no box is carried over). Per object,
    `Ctrl`+drag a rectangle in bird's-eye view around the object's points (the axis-aligned bounds of the points
    a person sees; the client makes an accepted "manual" box with yaw 0 or 90 degrees and its height from those
    points), then keys until the BEV IoU reaches what the LATTE flow reached on that same object, or at most
    --max-adjust keys.

Adjustment model (both flows): a person looking at the points sees where the box edges miss the object; the model
gives that person perfect judgement of the truth box and the best single key every time (greedy: of the 20 move,
rotate and length/width keys with and without Shift, the one that raises the BEV IoU most), stopping when the
target is reached, no key helps, or after --max-adjust keys. That is optimistic for the hand-drawn flow (no
overshoot, no second look), so a LATTE advantage measured here is a lower bound.

Measured: interactions (mouse clicks + key presses + drags, frame changes and class keys included; the client's own
counters `window.latte.events` are reported beside them), wall seconds per box (from the first frame shown to the
last edit stored: browser, client and server work, the scripted annotator itself takes no thinking time), and
the mean BEV IoU of the stored boxes with the truth (objects left without a box count as 0). A human-time estimate
by the Keystroke-Level Model (Card, Moran & Newell 1980: K = 0.28 s a key, P + B = 1.1 + 0.2 s a mouse click,
P + B + P + B = 2.6 s a drag, M = 1.35 s of mental preparation per box and per frame) plus the measured wall time
is reported too.

    .venv/bin/python bench/bench_latte_efficiency.py [--frames 5] [--seed 3] [--out DIR] [--detector MODEL]
        [--max-adjust 25] [--screenshots DIR]

One JSON object per line on stdout (also OUT/efficiency.jsonl) and OUT/efficiency.png (bar chart). Exit 1 when the
LATTE flow is not faster per box (wall seconds) than drawing by hand, 2 when the browser or Playwright is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from latte.boxes import ANNOTATION_CLASSES, Box
from latte.scene import open_source
from latte.tracking import bev_iou_velo

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
VIEWPORT = {"width": 1280, "height": 800}
MIN_POINTS = {"Car": 50, "Van": 50, "Pedestrian": 20, "Cyclist": 20}
IOU_OK = {"Car": 0.7, "Van": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}  # KITTI's evaluation thresholds
SCREEN_MARGIN_PX = 30
DRAG_ERROR_PX = 2.0  # a person's pointing error when placing a rectangle corner (one axis, standard deviation)
# Keystroke-Level Model operators (Card, Moran & Newell 1980), seconds.
KLM_K, KLM_CLICK, KLM_DRAG, KLM_M = 0.28, 1.3, 2.6, 1.35

DEG = math.pi / 180
# Playwright key -> (field, delta): the client's keyboard table (latte/static/js/keys.js).
ADJUST_KEYS = {
    "KeyI": ("x", 0.1), "Shift+KeyI": ("x", 1.0), "KeyK": ("x", -0.1), "Shift+KeyK": ("x", -1.0),
    "KeyJ": ("y", 0.1), "Shift+KeyJ": ("y", 1.0), "KeyL": ("y", -0.1), "Shift+KeyL": ("y", -1.0),
    "KeyU": ("yaw", DEG), "Shift+KeyU": ("yaw", 10 * DEG), "KeyO": ("yaw", -DEG), "Shift+KeyO": ("yaw", -10 * DEG),
    "BracketLeft": ("l", -0.1), "Shift+BracketLeft": ("l", -0.5), "BracketRight": ("l", 0.1),
    "Shift+BracketRight": ("l", 0.5), "Semicolon": ("w", -0.1), "Shift+Semicolon": ("w", -0.5),
    "Quote": ("w", 0.1), "Shift+Quote": ("w", 0.5),
}
FIELD_INDEX = {"x": 0, "y": 1, "z": 2, "l": 3, "w": 4, "h": 5, "yaw": 6}


def emit(rows: list[dict], **row) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def box7(b: dict) -> np.ndarray:
    return np.array([b[k] for k in ("x", "y", "z", "l", "w", "h", "yaw")], dtype=np.float64)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(bev_iou_velo(a, b)[0, 0])


def points_in_box(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(N,) bool: velodyne points inside a velodyne box [x, y, z, l, w, h, yaw]."""
    d = points[:, :3] - box[:3]
    c, s = math.cos(box[6]), math.sin(box[6])
    u, v = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
    return (np.abs(u) <= box[3] / 2) & (np.abs(v) <= box[4] / 2) & (np.abs(d[:, 2]) <= box[5] / 2)


def apply_key(b: np.ndarray, key: str) -> np.ndarray:
    """The box after one adjustment key, as the client computes it (sizes clamped to [0.1, 50], yaw wrapped)."""
    f, d = ADJUST_KEYS[key]
    out = b.copy()
    out[FIELD_INDEX[f]] += d
    out[3:6] = np.clip(out[3:6], 0.1, 50)
    out[6] = (out[6] + math.pi) % (2 * math.pi) - math.pi
    return out


def plan_adjustment(start: np.ndarray, truth: np.ndarray, target: float, max_keys: int) -> list[str]:
    """The greedy key sequence of the adjustment model (module docstring): best single key each time."""
    keys: list[str] = []
    cur, cur_iou = start, iou(start, truth)
    while cur_iou < target and len(keys) < max_keys:
        best = max(ADJUST_KEYS, key=lambda k: iou(apply_key(cur, k), truth))
        nxt = apply_key(cur, best)
        nxt_iou = iou(nxt, truth)
        if nxt_iou <= cur_iou + 1e-6:
            break
        keys.append(best)
        cur, cur_iou = nxt, nxt_iou
    return keys


# ------------------------------------------------------------------------------------------------ server
SERVER_START_S = 180  # a loaded machine: imports + the first frame's ground fit before the URL is printed


class LatteServer:
    """`python -m squeeze_suite latte serve DATA --port 0 ...` as a subprocess: its URL (from the line it prints)
    once /api/info answers, stdout/stderr kept in files so that a failure can show them. tests/test_latte_browser.py
    uses this harness too."""

    def __init__(self, data: Path, work: Path, extra: Sequence[str] = ()):
        work.mkdir(parents=True, exist_ok=True)
        self.db = work / "annotations.db"
        self.export_dir = work / "export"
        self.log_out, self.log_err = work / "server.out", work / "server.err"
        cmd = [sys.executable, "-m", "squeeze_suite", "latte", "serve", str(data), "--port", "0",
               "--db", str(self.db), "--export", str(self.export_dir), "--no-browser", "--no-import", *extra]
        with open(self.log_out, "w") as out, open(self.log_err, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        self.url = self._wait_for_url()
        self.base = self.url.split("?")[0]
        self.info = self._wait_for_info()

    def logs(self) -> str:
        return (f"--- server stdout ---\n{self.log_out.read_text(errors='replace')}\n"
                f"--- server stderr ---\n{self.log_err.read_text(errors='replace')[-8000:]}")

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            m = re.search(r"^open (http://\S+)$", self.log_out.read_text(), re.M)
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"latte serve exited with {self.proc.returncode}\n{self.logs()}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"latte serve printed no URL in {SERVER_START_S} s\n{self.logs()}")

    def _wait_for_info(self) -> dict:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.base + "api/info", timeout=5) as r:
                    return json.loads(r.read())
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"GET {self.base}api/info never answered\n{self.logs()}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------------------------ annotator
@dataclass
class Target:
    frame: str
    truth: Box
    points: np.ndarray  # (K, 4) its points

    @property
    def key(self) -> tuple[str, int]:
        return self.frame, self.truth.track_id


@dataclass
class Tally:
    clicks: int = 0
    keys: int = 0
    drags: int = 0
    boxes: int = 0
    frames: int = 0
    adjust_keys: int = 0
    one_click_failed: int = 0
    proposals_accepted: int = 0
    proposals_fixed: int = 0
    proposals_deleted: int = 0
    class_fixes: int = 0
    final: dict = field(default_factory=dict)  # Target.key -> box id stored for it
    targets: list = field(default_factory=list)  # every Target to label

    @property
    def interactions(self) -> int:
        return self.clicks + self.keys + self.drags


class ScriptedAnnotator:
    """Drives the page through real mouse and keyboard events and counts every one of them."""

    def __init__(self, page, tally: Tally, max_adjust: int, verbose: bool = False):
        self.page, self.t, self.max_adjust, self.verbose = page, tally, max_adjust, verbose
        self.draw_cls = "Car"  # the client's class of new boxes until a digit key changes it
        self.browser_s = 0.0  # time in input events and waiting for the client and server (not the script's own)

    def timed(self, fn, *a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            self.browser_s += time.perf_counter() - t0

    def log(self, tg: Target, how: str, start: float, end: float, keys: int) -> None:
        if self.verbose:
            print(f"{tg.frame} {tg.truth.cls:10s} #{tg.truth.track_id:3d} {len(tg.points):5d} pts {how:9s} "
                  f"IoU {start:.3f} -> {end:.3f} with {keys} keys", file=sys.stderr)

    # -- page state
    def settle(self) -> None:
        self.timed(self.page.wait_for_function, "window.latte && window.latte.busy === 0", timeout=30000)

    def doc(self) -> dict:
        return self.page.evaluate("JSON.parse(JSON.stringify(window.latte.document))")

    def selected(self) -> str | None:
        return self.page.evaluate("window.latte.selectedId")

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        q = self.page.evaluate("([x, y, z]) => window.latte.project(x, y, z)", [float(x), float(y), float(z)])
        return q["x"], q["y"]

    # -- input, counted
    def press(self, key: str) -> None:
        self.timed(self.page.keyboard.press, key)
        self.t.keys += 1

    def set_class(self, cls: str) -> None:
        """Digit keys set the class of new boxes when nothing is selected (Esc clears the selection first)."""
        if cls == self.draw_cls:
            return
        if self.selected():
            self.press("Escape")
        self.press(f"Digit{ANNOTATION_CLASSES.index(cls) + 1}")
        self.draw_cls = cls

    def adjust(self, box_id: str, tg: Target, target: float, how: str) -> dict:
        box = next(b for b in self.doc()["boxes"] if b["id"] == box_id)
        start = iou(box7(box), tg.truth.array)
        keys = plan_adjustment(box7(box), tg.truth.array, target, self.max_adjust)
        for k in keys:
            self.press(k)
        self.t.adjust_keys += len(keys)
        if keys:
            self.settle()
            box = next(b for b in self.doc()["boxes"] if b["id"] == box_id)
        self.log(tg, how, start, iou(box7(box), tg.truth.array), len(keys))
        return box

    def one_click(self, tg: Target) -> str | None:
        """A + click on the object's point nearest the centroid of its points; the new box's id or None."""
        self.set_class(tg.truth.cls)
        before = {b["id"] for b in self.doc()["boxes"]}
        c = tg.points[:, :3].mean(axis=0)
        p = tg.points[np.argmin(np.linalg.norm(tg.points[:, :3] - c, axis=1)), :3]
        x, y = self.project(*p)
        self.timed(self._a_click, x, y)
        self.t.clicks += 1
        self.t.keys += 1
        self.settle()
        new = [b["id"] for b in self.doc()["boxes"] if b["id"] not in before]
        if not new:
            self.t.one_click_failed += 1
            return None
        return new[0]

    def _a_click(self, x: float, y: float) -> None:
        self.page.keyboard.down("a")
        self.page.mouse.click(x, y)
        self.page.keyboard.up("a")

    def _ctrl_drag(self, a: tuple[float, float], b: tuple[float, float]) -> None:
        self.page.mouse.move(*a)
        self.page.keyboard.down("Control")
        self.page.mouse.down()
        self.page.mouse.move(*b, steps=4)
        self.page.mouse.up()
        self.page.keyboard.up("Control")

    def draw(self, tg: Target) -> str | None:
        """Ctrl + drag a rectangle around the object's points in bird's-eye view; the new box's id or None.

        The corners are the axis-aligned bounds of the points a person sees, each placed with a pointing error
        (normal, DRAG_ERROR_PX pixels per axis; seeded by the object so both runs of the bench agree)."""
        self.set_class(tg.truth.cls)
        before = {b["id"] for b in self.doc()["boxes"]}
        x0, y0 = tg.points[:, :2].min(axis=0)
        x1, y1 = tg.points[:, :2].max(axis=0)
        z = float(tg.truth.z - tg.truth.h / 2)
        a, b = self.project(x1, y1, z), self.project(x0, y0, z)  # screen top-left / bottom-right in BEV
        rng = np.random.default_rng([int(tg.frame), tg.truth.track_id])
        for attempt in range(3):  # a rectangle too small to be one (a click) is drawn again, a little larger
            grow = 4.0 * attempt
            ea, eb = rng.normal(0, DRAG_ERROR_PX, 2), rng.normal(0, DRAG_ERROR_PX, 2)
            self.timed(self._ctrl_drag, (a[0] + ea[0] - grow, a[1] + ea[1] - grow),
                       (b[0] + eb[0] + grow, b[1] + eb[1] + grow))
            self.t.drags += 1
            self.settle()
            new = [x["id"] for x in self.doc()["boxes"] if x["id"] not in before]
            if new:
                return new[0]
        return None

    def accept(self) -> None:
        self.press("Enter")
        self.settle()


def frame_targets(source, fid: str, page) -> list[Target]:
    """The objects to label in a frame (module docstring), sorted by class (fewer class key presses)."""
    pts = source.points(fid)
    rect = page.evaluate("(() => { const r = document.getElementById('viewer').getBoundingClientRect(); "
                         "return [r.left, r.top, r.right, r.bottom]; })()")
    out = []
    for t in source.truth(fid):
        if t.cls not in MIN_POINTS:
            continue
        inside = pts[points_in_box(pts, t.array)]
        if len(inside) < MIN_POINTS[t.cls]:
            continue
        q = page.evaluate("([x, y, z]) => window.latte.project(x, y, z)", [t.x, t.y, t.z])
        m = SCREEN_MARGIN_PX
        if not (rect[0] + m < q["x"] < rect[2] - m and rect[1] + m < q["y"] < rect[3] - m):
            continue
        out.append(Target(fid, t, inside))
    order = {c: i for i, c in enumerate(ANNOTATION_CLASSES)}
    return sorted(out, key=lambda tg: (order[tg.truth.cls], tg.truth.track_id))


def open_page(p, url: str, errors: list[str]):
    browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport=VIEWPORT)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
    page.goto(url)
    page.wait_for_function("window.latte && window.latte.ready", timeout=60000)
    page.evaluate("window.latte.ready")
    page.wait_for_function("window.latte.busy === 0", timeout=60000)
    return browser, page


def wait_frame(page, fid: str) -> None:
    page.wait_for_function(f"window.latte.frameId === {fid!r} && window.latte.busy === 0", timeout=60000)


def shoot(page, folder: Path | None, name: str) -> None:
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"))


def match_proposal(box: dict, todo: list[Target]) -> Target | None:
    """The object a proposal is meant for, as a person sees it: the not yet labelled one it overlaps most."""
    best, best_iou = None, 0.1
    for tg in todo:
        v = iou(box7(box), tg.truth.array)
        if v > best_iou:
            best, best_iou = tg, v
    return best


def latte_flow(page, source, frames: list[str], ann: ScriptedAnnotator, use_fusion: bool,
               shots: Path | None, targets: dict[str, list[Target]]) -> dict[tuple[str, int], float]:
    """(a) one-click + Enter, then N + accept / fix / delete on the later frames. Returns IoU per object."""
    t = ann.t
    for k, fid in enumerate(frames):
        if k > 0:
            ann.press("KeyN")
            ann.timed(wait_frame, page, fid)
            if k == 1:
                shoot(page, shots, "latte-tracked")
        t.frames += 1
        todo = list(targets[fid])
        t.targets += todo
        if use_fusion and k == 0:  # later frames: the tracked boxes; G again would mostly repeat them
            ann.press("KeyG")
            ann.settle()
        # Proposals (tracked, fusion) first: the client selects one, Enter / Delete move to the next.
        for _ in range(200):
            proposals = [b for b in ann.doc()["boxes"] if not b["accepted"]]
            if not proposals:
                break
            sel = ann.selected()
            box = next((b for b in proposals if b["id"] == sel), None)
            if box is None:
                ann.press("Tab")
                continue
            tg = match_proposal(box, todo)
            if tg is None:
                ann.press("Delete")
                ann.settle()
                t.proposals_deleted += 1
                continue
            todo.remove(tg)
            if box["cls"] != tg.truth.cls:  # a detector's wrong class: the class key on the selected box
                ann.press(f"Digit{ANNOTATION_CLASSES.index(tg.truth.cls) + 1}")
                ann.settle()
                t.class_fixes += 1
            if iou(box7(box), tg.truth.array) < IOU_OK[tg.truth.cls]:
                box = ann.adjust(box["id"], tg, IOU_OK[tg.truth.cls], box["source"])
                t.proposals_fixed += 1
            else:
                ann.log(tg, box["source"], iou(box7(box), tg.truth.array), iou(box7(box), tg.truth.array), 0)
                t.proposals_accepted += 1
            ann.accept()
            t.final[tg.key] = box["id"]
            t.boxes += 1
        for tg in todo:
            box_id = ann.one_click(tg)
            if box_id is None:  # nothing found at the click: draw it by hand instead
                box_id = ann.draw(tg)
                if box_id is None:
                    continue
            ann.adjust(box_id, tg, IOU_OK[tg.truth.cls], "one_click")
            if not next(b for b in ann.doc()["boxes"] if b["id"] == box_id)["accepted"]:
                if ann.selected() != box_id:
                    ann.timed(page.evaluate, f"window.latte.select({box_id!r})")
                    t.clicks += 1  # a person clicks the box in the list
                ann.accept()
            t.final[tg.key] = box_id
            t.boxes += 1
        if k == 0:
            shoot(page, shots, "latte-frame0-done")
    return stored_ious(page, source, frames, t)


def manual_flow(page, source, frames: list[str], ann: ScriptedAnnotator, targets_iou: dict,
                targets: dict[str, list[Target]]) -> dict:
    """(b) frames backwards (P), Ctrl+drag per object, then keys up to the LATTE flow's IoU for that object."""
    t = ann.t
    for k, fid in enumerate(reversed(frames)):
        if k > 0:
            ann.press("KeyP")
            ann.timed(wait_frame, page, fid)
        t.frames += 1
        todo = list(targets[fid])
        t.targets += todo
        for tg in todo:
            box_id = ann.draw(tg)
            if box_id is None:
                continue
            target = max(IOU_OK[tg.truth.cls], targets_iou.get(tg.key, 0.0))
            ann.adjust(box_id, tg, target, "manual")
            t.final[tg.key] = box_id
            t.boxes += 1
    return stored_ious(page, source, frames, t)


def stored_ious(page, source, frames: list[str], t: Tally) -> dict[tuple[str, int], float]:
    """BEV IoU with the truth of the box stored for each object (as the server holds it); 0 when it got none."""
    out = {}
    for fid in frames:
        doc = page.evaluate(f"fetch('/api/frames/{fid}').then((r) => r.json())")["document"]
        boxes = {b["id"]: b for b in doc["boxes"]}
        for tg in t.targets:
            if tg.frame == fid:
                bid = t.final.get(tg.key)
                out[tg.key] = iou(box7(boxes[bid]), tg.truth.array) if bid in boxes else 0.0
    return out


# ------------------------------------------------------------------------------------------------ main
def run_flow(name: str, data: Path, work: Path, frames: list[str], source, args, targets_iou: dict,
             rows: list[dict], playwright) -> tuple[Tally, dict, float]:
    extra = ["--detector", str(args.detector)] if (args.detector and name == "latte") else []
    server = LatteServer(data, work / name, extra)
    errors: list[str] = []
    try:
        url = server.url
        if name == "manual":  # start on the last frame: going back (P) tracks nothing
            url += ("&" if "?" in url else "?") + f"frame={frames[-1]}"
        browser, page = open_page(playwright, url, errors)
        try:
            tally = Tally()
            ann = ScriptedAnnotator(page, tally, args.max_adjust, args.verbose)
            ann.press("KeyB")  # bird's-eye view for both flows
            page.wait_for_function("window.latte.view === 'bev'")
            # The objects to label: from the first bird's-eye view (the same for both flows; BEV is ego-centred).
            targets = {fid: frame_targets(source, fid, page) for fid in frames}
            ann.browser_s = 0.0
            t0 = time.perf_counter()
            if name == "latte":
                reached = latte_flow(page, source, frames, ann, bool(args.detector), args.screenshots, targets)
            else:
                reached = manual_flow(page, source, frames, ann, targets_iou, targets)
            ann.settle()
            script_s = time.perf_counter() - t0
            wall = ann.browser_s
            if name == "manual":
                shoot(page, args.screenshots, "manual-frame0-done")
            if args.screenshots is not None and name == "latte":
                page.keyboard.press("KeyH")
                shoot(page, args.screenshots, "help-overlay")
                page.keyboard.press("KeyH")
            client_events = page.evaluate("({clicks: window.latte.events.clicks, keys: window.latte.events.keys})")
        finally:
            browser.close()
    finally:
        server.stop()
    if errors:
        raise RuntimeError(f"{name} flow: page errors: {errors[:5]}")
    n = max(tally.boxes, 1)
    ious = list(reached.values())
    klm = (KLM_K * tally.keys + KLM_CLICK * tally.clicks + KLM_DRAG * tally.drags
           + KLM_M * (tally.boxes + tally.frames) + wall)
    common = {"flow": name, "frames": len(frames)}
    emit(rows, name=f"{name}_interactions_per_box", value=round(tally.interactions / n, 3), unit="interactions",
         clicks=tally.clicks, keys=tally.keys, drags=tally.drags, boxes=tally.boxes,
         adjust_keys=tally.adjust_keys, client_counted=client_events, **common)
    emit(rows, name=f"{name}_seconds_per_box", value=round(wall / n, 3), unit="s", browser_s=round(wall, 2),
         script_s=round(script_s, 2),
         note="wall time of the input events and of waiting for the client and server to finish them; the "
              "scripted annotator's own planning and no human thinking time excluded", **common)
    emit(rows, name=f"{name}_klm_seconds_per_box", value=round(klm / n, 3), unit="s",
         note="Keystroke-Level Model estimate of a person's time + the measured wall time", **common)
    emit(rows, name=f"{name}_mean_bev_iou", value=round(float(np.mean(ious)) if ious else 0.0, 4), unit="IoU",
         objects=len(ious), **common)
    if name == "latte":
        emit(rows, name="latte_proposals", value=tally.proposals_accepted + tally.proposals_fixed, unit="boxes",
             accepted_as_is=tally.proposals_accepted, fixed=tally.proposals_fixed, deleted=tally.proposals_deleted,
             class_fixes=tally.class_fixes, one_click_failed=tally.one_click_failed, **common)
    return tally, reached, wall


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    val = {r["name"]: r["value"] for r in rows}
    metrics = [("interactions_per_box", "interactions / box"), ("seconds_per_box", "wall s / box"),
               ("klm_seconds_per_box", "estimated human s / box"), ("mean_bev_iou", "mean BEV IoU")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(10, 2.8), dpi=80)
    for ax, (m, title) in zip(axes, metrics, strict=True):
        vs = [val[f"latte_{m}"], val[f"manual_{m}"]]
        bars = ax.bar(["LATTE", "by hand"], vs, color=["#f2b632", "#7a8699"])
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.margins(y=0.2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--sim", type=Path, default=None, help="an existing simulated sequence (default: simulate one)")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "latte_efficiency")
    ap.add_argument("--detector", type=Path, default=None, help="a 2D detector for fusion proposals (G)")
    ap.add_argument("--max-adjust", type=int, default=25, help="most adjustment keys per box")
    ap.add_argument("--screenshots", type=Path, default=None, help="save screenshots of the flows here")
    ap.add_argument("--verbose", action="store_true", help="one line per object on stderr (start/end IoU, keys)")
    args = ap.parse_args(argv)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("playwright (Python package) is not installed", file=sys.stderr)
        return 2
    if not CHROMIUM.is_file():
        print(f"{CHROMIUM} is not installed (Debian chromium; this bench never downloads a browser)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="latte_eff_") as tmp:
        work = Path(tmp)
        data = args.sim
        if data is None:
            from domain_adapt.sim.writer import simulate

            data = work / "seq"
            simulate(data, frames=args.frames, seed=args.seed, sequence=True, progress=False)
        source = open_source(data)
        frames = source.frame_ids()[: args.frames]
        rows: list[dict] = []
        with sync_playwright() as p:
            _, latte_iou, latte_wall = run_flow("latte", data, work, frames, source, args, {}, rows, p)
            _, _, manual_wall = run_flow("manual", data, work, frames, source, args, latte_iou, rows, p)
    val = {r["name"]: r["value"] for r in rows}
    speedup = val["manual_seconds_per_box"] / max(val["latte_seconds_per_box"], 1e-9)
    emit(rows, name="latte_speedup_per_box", value=round(speedup, 2), unit="x",
         interactions_ratio=round(val["manual_interactions_per_box"] / max(val["latte_interactions_per_box"], 1e-9),
                                  2),
         klm_ratio=round(val["manual_klm_seconds_per_box"] / max(val["latte_klm_seconds_per_box"], 1e-9), 2),
         bar="LATTE flow faster per box than drawing by hand")
    (args.out / "efficiency.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    chart(rows, args.out / "efficiency.png")
    print(f"wrote {args.out / 'efficiency.jsonl'} and {args.out / 'efficiency.png'}", file=sys.stderr)
    return 0 if val["latte_seconds_per_box"] < val["manual_seconds_per_box"] else 1


if __name__ == "__main__":
    sys.exit(main())
