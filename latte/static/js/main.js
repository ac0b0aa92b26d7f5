// LATTE client: state (frame, document, selection), the edit queue, frame navigation with tracking, the
// interaction log and the window.latte test hook. The DOM contract and keyboard table are in the README.
import { Api, ApiError, editWithRetry, newEditId } from "./api.js";
import { Viewer } from "./viewer.js";
import { CameraPanel } from "./camera.js";
import { ObjectList } from "./objects.js";
import { bindKeys } from "./keys.js";
import { Help } from "./help.js";
import { Brush } from "./brush.js";
import { BoxViews } from "./boxview.js";

const $ = (id) => document.getElementById(id);
const NUDGE_FLUSH_MS = 120;  // held keys are coalesced: at most one update per box in flight, the rest accumulate
const LOG_FLUSH_MS = 2000;
const POINT_CACHE = 4;
const DEFAULT_HEIGHT = { Car: 1.6, Van: 2.2, Truck: 3.2, Pedestrian: 1.75, Person_sitting: 1.2, Cyclist: 1.7,
                         Tram: 3.5, Misc: 1.5 };
const COLOR_MODES = ["height", "intensity", "label"];

const api = new Api();
const state = {
  info: null, frames: [], index: -1, fid: null, doc: null, payload: null, points: null, image: null,
  selectedId: null, drag: null, drawClass: null, lastKeyframe: null, docs: new Map(), shownAt: performance.now(), colorMode: "height", navSeq: 0,
  pending: new Map(), inflight: new Map(), statuses: new Map(),
};
const counters = { clicks: 0, keys: 0 };
const held = new Set();
let viewer, cameraPanel, objects, help, brush, boxViews;
let resolveReady;
const ready = new Promise((r) => { resolveReady = r; });

// ------------------------------------------------------------------------------------------------ toast
let toastTimer = null;
function toast(msg, error = false) {
  const el = $("toast");
  el.textContent = msg;
  el.classList.toggle("error", error);
  el.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => el.classList.remove("show"), error ? 5000 : 2500);
}
function fail(err, what) {
  console.warn(what, err);
  toast(`${what}: ${err instanceof ApiError ? err.detail : err.message}`, true);
}

// ------------------------------------------------------------------------------------------------ log
const logBuffers = new Map();  // frame id -> events not yet sent
function logEvent(kind, fields = {}) {
  if (!state.fid) return;
  const buf = logBuffers.get(state.fid) || [];
  buf.push({ t: Date.now() / 1000, kind, ...fields });
  logBuffers.set(state.fid, buf);
  if (buf.length >= 50) flushLog();
}
function sinceShown() { return Math.round((performance.now() - state.shownAt)) / 1000; }
function flushLog(keepalive = false) {
  for (const [fid, events] of logBuffers) {
    if (!events.length) continue;
    logBuffers.set(fid, []);
    api.log(fid, events, keepalive).catch((err) => console.warn("interaction log not stored", err));
  }
}

// ------------------------------------------------------------------------------------------------ edit queue
// Edits run one after another so each one's base_version is the document the previous one returned.
let queue = Promise.resolve();
let navigating = 0;  // frame loads in progress (counted in latte.busy)
let queued = 0;
function enqueue(task) {
  queued += 1;
  const run = queue.then(task).finally(() => { queued -= 1; });
  queue = run.catch(() => {});
  return run;
}
async function docOf(fid) {
  return fid === state.fid ? state.doc : (await api.frame(fid)).document;
}

/** Queue an edit of frame `fid` derived from its current document; makeOp(doc) -> op | null. */
function queueEdit(fid, makeOp, { what = "edit", onDone = null } = {}) {
  flushAllNudges();
  return enqueue(async () => {
    try {
      const res = await editWithRetry(api, fid, await docOf(fid), makeOp);
      showDocument(res.document);
      if (res.dropped) toast(`${what}: the frame changed meanwhile and this no longer applies`, true);
      else if (onDone) onDone(res.document);
      return res;
    } catch (err) {
      fail(err, what);
      if (fid === state.fid) api.frame(fid).then((p) => showDocument(p.document)).catch(() => {});
      return null;
    }
  });
}

// ------------------------------------------------------------------------------------------------ boxes
function findBox(doc, id) { return doc ? doc.boxes.find((b) => b.id === id) || null : null; }
const FIELDS = ["x", "y", "z", "l", "w", "h", "yaw"];
function wrapYaw(a) { return ((a + Math.PI) % (2 * Math.PI) + 2 * Math.PI) % (2 * Math.PI) - Math.PI; }
function applyDelta(box, delta) {
  if (!delta) return box;
  const out = { ...box };
  for (const f of FIELDS) if (delta[f]) out[f] = box[f] + delta[f];
  for (const f of ["l", "w", "h"]) out[f] = Math.min(50, Math.max(0.1, out[f]));
  out.yaw = wrapYaw(out.yaw);
  return out;
}
/** The boxes as shown: the document plus the nudges not acknowledged yet (in flight, then not yet sent). */
function displayBoxes() {
  if (!state.doc) return [];
  const drag = state.drag;
  return state.doc.boxes.map((b) => {
    let shown = b;
    for (const d of state.inflight.get(b.id) || []) shown = applyDelta(shown, d);
    shown = applyDelta(shown, state.pending.get(b.id));
    return drag && drag.id === b.id ? applyDelta(shown, drag) : shown;
  });
}

function render({ list = true } = {}) {
  const boxes = displayBoxes();
  viewer.setBoxes(boxes, state.selectedId);
  const selected = boxes.find((b) => b.id === state.selectedId) || null;
  viewer.setHighlight(selected);
  boxViews.draw(selected, state.points ? state.points.xyzi : null, state.payload ? state.payload.ground_plane : null);
  cameraPanel.draw(boxes, state.selectedId);
  if (list) objects.render(boxes, state.selectedId);  // a nudge changes no row: class, track and state stay
  showSelection(boxes);
}

function showSelection(boxes) {
  const b = boxes.find((x) => x.id === state.selectedId);
  const el = $("selection");
  if (!b) { el.textContent = ""; return; }
  const deg = (b.yaw * 180 / Math.PI).toFixed(1);
  el.textContent = `${b.accepted ? "" : "proposal · "}${b.cls}${b.track_id >= 0 ? ` #${b.track_id}` : ""} · `
    + `${b.l.toFixed(2)} × ${b.w.toFixed(2)} × ${b.h.toFixed(2)} m · ${deg}° · `
    + `(${b.x.toFixed(2)}, ${b.y.toFixed(2)}, ${b.z.toFixed(2)})`;
}

let labelTimer = null;
function refreshLabels() {
  if (state.colorMode !== "label" || !state.fid) return;
  clearTimeout(labelTimer);
  const fid = state.fid;
  labelTimer = setTimeout(() => {
    labelTimer = null;
    api.pointLabels(fid).then((labels) => { if (fid === state.fid) viewer.setLabels(labels); })
      .catch((err) => fail(err, "point labels"));
  }, 100);
}

/** Show a document of the current frame (ignored for another frame: a late answer after navigation). */
function showDocument(doc) {
  if (doc && !(state.docs.get(doc.frame_id)?.version > doc.version)) state.docs.set(doc.frame_id, doc);
  if (!doc || doc.frame_id !== state.fid) return;
  if (state.doc && doc.version < state.doc.version) return;  // an older answer overtaken by a newer one
  const changed = !state.doc || doc.version !== state.doc.version;
  state.doc = doc;
  if (state.selectedId && !findBox(doc, state.selectedId)) state.selectedId = null;
  state.statuses.set(doc.frame_id, doc.status);
  $("frame-status").textContent = doc.status;
  $("frame-status").dataset.status = doc.status;
  const li = document.querySelector(`#frame-list li[data-frame-id="${CSS.escape(doc.frame_id)}"]`);
  if (li) li.dataset.status = doc.status;
  render();
  if (changed) refreshLabels();
}

/** Bring a box into view: centred in bird's-eye view; in orbit view only when it is off screen or at the edge. */
function focusBox(b) {
  if (viewer.view === "bev") { viewer.focus(b.x, b.y, b.z); return; }
  const q = viewer.project(b.x, b.y, b.z), r = $("viewer").getBoundingClientRect();
  const inside = q && q.x > r.left + r.width * 0.1 && q.x < r.right - r.width * 0.1
    && q.y > r.top + r.height * 0.1 && q.y < r.bottom - r.height * 0.1;
  if (!inside) viewer.focus(b.x, b.y, b.z);
}

function select(id) {
  if (id !== state.selectedId) logEvent("select", { box_id: id });
  state.selectedId = id;
  render();
  if (brush.active) updateLegend();
}

// ---- nudges (keyboard move / rotate / resize), coalesced
let nudgeTimer = null;
function nudge(field, amount, fields = null) {
  const id = state.selectedId;
  if (!id || !findBox(state.doc, id)) { toast("select a box first (click it or Tab)"); return; }
  const d = state.pending.get(id) || {};
  for (const [f, v] of Object.entries(fields || { [field]: amount })) d[f] = (d[f] || 0) + v;
  state.pending.set(id, d);
  render({ list: false });
  if (!nudgeTimer) nudgeTimer = setTimeout(() => { nudgeTimer = null; flushAllNudges(false); }, NUDGE_FLUSH_MS);
}

// ---- mouse drags of the selected box in bird's-eye view (move; Shift: rotate), sent like a nudge on release
function canDrag(clientX, clientY) {
  const id = state.selectedId;
  if (!id || !viewer.pickBoxes(clientX, clientY).includes(id)) return null;
  return displayBoxes().find((b) => b.id === id) || null;
}
function onBoxDrag(dx, dy, dyaw, done) {
  const id = state.selectedId;
  if (!id) return;
  state.drag = done ? null : { id, x: dx, y: dy, yaw: dyaw };
  if (done) {
    counters.clicks += 1;
    logEvent(dyaw ? "drag_rotate" : "drag_move", { box_id: id });
    nudge(null, null, dyaw ? { yaw: dyaw } : { x: dx, y: dy });
  } else render({ list: false });
}
/**
 * Send the pending nudges. From the timer (force false) a box with an update in flight keeps accumulating (a held
 * key makes one request per round trip); before any other action (force true) everything pending is queued, so an
 * undo, a class change or a frame change comes after the moves the annotator made.
 */
function flushAllNudges(force = true) {
  clearTimeout(nudgeTimer);
  nudgeTimer = null;
  const fid = state.fid;
  for (const [id, delta] of [...state.pending]) {
    const flying = state.inflight.get(id) || [];
    if (!force && flying.length) continue;  // sent when the one in flight comes back
    state.pending.delete(id);
    flying.push(delta);
    state.inflight.set(id, flying);
    enqueue(async () => {
      try {
        const res = await editWithRetry(api, fid, await docOf(fid), (doc) => {
          const box = findBox(doc, id);
          return box ? { op: "update", box: applyDelta(box, delta) } : null;
        });
        landed(id, delta);
        showDocument(res.document);
        if (res.dropped) toast("the box was deleted meanwhile", true);
      } catch (err) {
        landed(id, delta);
        fail(err, "move");
        render({ list: false });
      }
      if (state.pending.has(id) && !nudgeTimer) flushAllNudges(false);
    });
  }
}
function landed(id, delta) {
  const flying = (state.inflight.get(id) || []).filter((d) => d !== delta);
  if (flying.length) state.inflight.set(id, flying);
  else state.inflight.delete(id);
}

function drawClass() { return state.drawClass || "Car"; }
function brushLabel() {
  const box = findBox(state.doc, state.selectedId);
  return (box ? box.cls : drawClass()).toLowerCase();
}

// ------------------------------------------------------------------------------------------------ actions
function acceptOp(ids) {
  return (doc) => {
    const ops = [];
    for (const id of ids) {
      const b = findBox(doc, id);
      if (b && !b.accepted) ops.push({ op: "update", box: { ...b, accepted: true } });
    }
    if (!ops.length) return null;
    return ops.length === 1 ? ops[0] : { op: "batch", ops };
  };
}

function nextProposal(doc, afterId) {
  const boxes = doc.boxes;
  const start = Math.max(0, boxes.findIndex((b) => b.id === afterId));
  for (let k = 1; k <= boxes.length; k += 1) {
    const b = boxes[(start + k) % boxes.length];
    if (!b.accepted && b.id !== afterId) return b.id;
  }
  return null;
}

const actions = {
  keyCounted(code, shift, ctrl) {
    counters.keys += 1;
    logEvent("key", { key: code, shift, ctrl });
  },
  nudge,
  accept(all) {
    const fid = state.fid;
    if (all) {
      const ids = state.doc.boxes.filter((b) => !b.accepted).map((b) => b.id);
      if (!ids.length) { toast("no proposals to accept"); return; }
      queueEdit(fid, acceptOp(ids), { what: "accept all", onDone: () => {
        for (const id of ids) logEvent("box_accepted", { box_id: id, seconds: sinceShown() });
        toast(`accepted ${ids.length} boxes`);
      } });
      return;
    }
    const id = state.selectedId, box = findBox(state.doc, id);
    if (!box) { toast("select a proposal first"); return; }
    if (box.accepted) { toast("already accepted"); return; }
    queueEdit(fid, acceptOp([id]), { what: "accept", onDone: (doc) => {
      logEvent("box_accepted", { box_id: id, source: box.source, seconds: sinceShown() });
      if (state.selectedId === id) select(nextProposal(doc, id) || id);  // Enter, Enter, ... through proposals
    } });
  },
  remove() {
    const id = state.selectedId, box = findBox(state.doc, id);
    if (!box) { toast("select a box first"); return; }
    const next = nextProposal(state.doc, id);
    queueEdit(state.fid, (doc) => (findBox(doc, id) ? { op: "delete", id } : null), { what: "delete", onDone: () => {
      logEvent("box_deleted", { box_id: id, source: box.source, accepted: box.accepted, seconds: sinceShown() });
    } });
    state.selectedId = next;
    render();
  },
  selectNext(dir) {
    const boxes = state.doc ? state.doc.boxes : [];
    if (!boxes.length) return;
    const i = boxes.findIndex((b) => b.id === state.selectedId);
    const j = i < 0 ? (dir > 0 ? 0 : boxes.length - 1) : (i + dir + boxes.length) % boxes.length;
    select(boxes[j].id);
    focusBox(boxes[j]);
  },
  escape() {
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    if (help.open) help.toggle(false);
    else select(null);
  },
  setClass(k) {
    const cls = state.info.classes[k];
    if (!cls) return;
    const id = state.selectedId;
    if (!id) {
      state.drawClass = cls;
      updateLegend();
      toast(`new boxes${brush.active ? " and the brush" : ""}: ${cls}`);
      return;
    }
    setBoxClass(id, cls);
  },
  nextFrame(step = 1) {
    if (state.index + 1 >= state.frames.length) { toast("last frame"); return; }
    if (step > 1) state.lastKeyframe = state.fid;
    goto(Math.min(state.frames.length - 1, state.index + step), { trackFrom: state.fid });
  },
  prevFrame(step = 1) {
    if (state.index <= 0) { toast("first frame"); return; }
    goto(Math.max(0, state.index - step));
  },
  interpolate() {
    // Each accepted track of this frame is filled back to the nearest earlier frame (seen in this session) that
    // holds it accepted, when frames lie between: the keyframe workflow of Shift+N then Q.
    const k = state.index, fid = state.fid;
    const tracks = state.doc.boxes.filter((b) => b.accepted && b.track_id >= 0).map((b) => b.track_id);
    const jobs = [];
    for (const t of tracks) {
      for (let j = k - 1; j >= 0; j -= 1) {
        const d = state.docs.get(state.frames[j]);
        if (d && d.boxes.some((b) => b.track_id === t && b.accepted)) {
          if (j < k - 1) jobs.push([t, state.frames[j]]);
          break;
        }
      }
    }
    if (!jobs.length) { toast("nothing to interpolate: no accepted track of this frame has an earlier keyframe with frames between"); return; }
    flushAllNudges();
    enqueue(async () => {
      const filled = new Set();
      for (const [t, from] of jobs) {
        try {
          const res = await api.interpolate(t, from, fid);
          for (const d of res.documents) { showDocument(d); filled.add(d.frame_id); }
        } catch (err) { fail(err, `interpolate track ${t}`); }
      }
      logEvent("interpolate", { tracks: jobs.length, frames: filled.size });
      toast(`interpolated ${jobs.length} track${jobs.length > 1 ? "s" : ""} over ${filled.size} frames`);
    });
  },
  track() {
    if (state.index <= 0) { toast("no previous frame to propagate from"); return; }
    const fid = state.fid, from = state.frames[state.index - 1];
    flushAllNudges();
    enqueue(() => runTrack(fid, from, true));
  },
  fusion() {
    if (!state.info.detector) { toast("no detector: start the server with --detector CHECKPOINT_OR_MODEL"); return; }
    const fid = state.fid;
    flushAllNudges();
    enqueue(async () => {
      try {
        const res = await withConflictRetry(fid, (v) => api.fusion(fid, v));
        showDocument(res.document);
        for (const b of res.boxes) logEvent("box_created", { box_id: b.id, source: "fusion", seconds: sinceShown() });
        toast(res.boxes.length ? `${res.boxes.length} fusion proposals` : "no new detections");
        if (res.boxes.length && fid === state.fid) select(res.boxes[0].id);
      } catch (err) { fail(err, "fusion"); }
    });
  },
  copyNext() {
    const id = state.selectedId;
    if (!findBox(state.doc, id)) { toast("select a box first"); return; }
    const fid = state.fid;
    flushAllNudges();
    enqueue(async () => {
      try {
        const res = await api.copyNext(fid, id, 1);
        for (const d of res.documents) showDocument(d);
        const others = res.documents.filter((d) => d.frame_id !== fid).map((d) => d.frame_id);
        toast(others.length ? `copied to ${others.join(", ")}` : "the next frame already has this track");
        logEvent("box_copied", { box_id: id, to: others });
      } catch (err) { fail(err, "copy"); }
    });
  },
  undoRedo(which) {
    flushAllNudges();
    enqueue(async () => {
      try {
        const res = await (which === "undo" ? api.undo() : api.redo());
        logEvent(which, { frame: res.document.frame_id });
        if (res.document.frame_id !== state.fid) {
          const i = state.frames.indexOf(res.document.frame_id);
          if (i >= 0) { toast(`${which}: frame ${res.document.frame_id}`); await goto(i, { doc: res.document }); }
        } else showDocument(res.document);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) toast(`nothing to ${which}`);
        else fail(err, which);
      }
    });
  },
  toggleView() { setView(viewer.view === "bev" ? "orbit" : "bev"); },
  cycleColor() {
    const mode = COLOR_MODES[(COLOR_MODES.indexOf(state.colorMode) + 1) % COLOR_MODES.length];
    setColorMode(mode);
    toast(`colour by ${mode}`);
  },
  pointSize(dir) { viewer.setPointSize(viewer.pointSize + dir); },
  setStatus(status) {
    const target = state.doc.status === status ? "todo" : status;
    queueEdit(state.fid, () => ({ op: "status", status: target }), { what: "frame status", onDone: () => {
      logEvent("status", { status: target });
      toast(`frame ${state.fid}: ${target}`);
    } });
  },
  toggleBrush() {
    brush.active = !brush.active;
    if (brush.active && state.colorMode !== "label") setColorMode("label");
    updateMode();
    toast(brush.active ? `brush: ${brushLabel()} (Shift erases, 1-8 picks the class, M ends)` : "brush off");
  },
  exportAll() {
    flushAllNudges();
    enqueue(async () => {
      try {
        const res = await api.exportAll();
        logEvent("export", { files: res.files });
        toast(`exported ${res.files} files (${res.label_2.length} label_2) to ${res.out}`);
      } catch (err) { fail(err, "export"); }
    });
  },
  help() { help.toggle(); },
};

function setBoxClass(id, cls) {
  queueEdit(state.fid, (doc) => {
    const b = findBox(doc, id);
    return b ? { op: "update", box: { ...b, cls } } : null;
  }, { what: "class", onDone: () => logEvent("box_class", { box_id: id, cls }) });
}

function setView(view) {
  viewer.setView(view);
  updateMode();
}
function setColorMode(mode) {
  state.colorMode = mode;
  viewer.setColorMode(mode);
  if (mode === "label") refreshLabels();
  updateMode();
}
function updateLegend() {
  let el = document.querySelector("#viewer .legend");
  if (!el) {
    el = document.createElement("div");
    el.className = "legend";
    $("viewer").append(el);
  }
  el.hidden = state.colorMode !== "label";
  if (el.hidden) return;
  const current = brush.active ? brushLabel() : null;
  el.replaceChildren(...state.info.point_classes.map((name, k) => {
    const item = document.createElement("span");
    const rgb = k === 0 ? [95, 99, 106] : (state.info.colors[name] || [255, 255, 255]);
    const chip = document.createElement("i");
    chip.style.background = `rgb(${rgb.map(Number).join(",")})`;
    item.append(chip, name);
    if (name === current) item.className = "current";
    return item;
  }));
}
function updateMode() {
  updateLegend();
  const el = $("mode");
  el.dataset.view = viewer.view;
  el.dataset.brush = brush.active ? "on" : "off";
  el.dataset.color = state.colorMode;
  el.textContent = `${viewer.view === "bev" ? "bev" : "orbit"} · ${state.colorMode}${brush.active ? " · brush on" : ""}`;
}

/** Run a server operation that takes a base version; on a 409 retry once on the current document. */
async function withConflictRetry(fid, call) {
  let doc = await docOf(fid);
  for (let i = 0; ; i += 1) {
    try {
      return await call(doc.version);
    } catch (err) {
      if (i < 2 && err instanceof ApiError && err.status === 409 && err.body && err.body.document) {
        doc = err.body.document;
        if (fid === state.fid) showDocument(doc);
        continue;
      }
      throw err;
    }
  }
}

async function runTrack(fid, from, verbose) {
  try {
    const res = await withConflictRetry(fid, (v) => api.track(fid, from, v));
    if (fid === state.fid) {
      showDocument(res.document);
      for (const b of res.boxes) logEvent("box_created", { box_id: b.id, source: "tracked", seconds: sinceShown() });
      if (res.boxes.length && !state.selectedId) select(res.boxes[0].id);
    }
    if (verbose) toast(res.boxes.length ? `${res.boxes.length} boxes propagated from ${from}` : "nothing new to propagate");
    return res;
  } catch (err) {
    fail(err, "tracking");
    return null;
  }
}

// ---- one-click and hand-drawn boxes
function oneClick(index) {
  const p = state.points.xyzi, xyz = [p[index * 4], p[index * 4 + 1], p[index * 4 + 2]];
  // the class the box gets is the class whose size prior fits it (Car until another is chosen)
  const fid = state.fid, cls = drawClass();
  flushAllNudges();
  enqueue(async () => {
    try {
      const res = await withConflictRetry(fid, (v) => api.oneClick(fid, xyz, cls, v));
      showDocument(res.document);
      logEvent("box_created", { box_id: res.box.id, source: "one_click", n_points: res.n_points, seconds: sinceShown() });
      if (fid === state.fid) select(res.box.id);
    } catch (err) {
      if (err instanceof ApiError && (err.status === 422 || err.status === 404)) toast(`one-click: ${err.detail}`, true);
      else fail(err, "one-click");
    }
  });
}

function drawRectangle(a, b) {
  counters.clicks += 1;
  const [x0, x1] = [Math.min(a[0], b[0]), Math.max(a[0], b[0])];
  const [y0, y1] = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
  const dx = x1 - x0, dy = y1 - y0;
  if (Math.max(dx, dy) < 0.2) return;
  const cls = drawClass();
  const [pa, pb, pc, pd] = state.payload.ground_plane;
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const zGround = pc ? -(pa * cx + pb * cy + pd) / pc : -1.73;
  // Height from the points inside the rectangle (top above the ground plane), else the class's usual height.
  const p = state.points.xyzi, f = state.points.flags;
  let top = 0;
  for (let i = 0; i < state.points.n; i += 1) {
    const x = p[i * 4], y = p[i * 4 + 1];
    if (x < x0 || x > x1 || y < y0 || y > y1 || (f[i] & 1)) continue;
    const h = pa * x + pb * y + pc * p[i * 4 + 2] + pd;
    if (h > top && h < 5) top = h;
  }
  const h = top > 0.3 ? top : DEFAULT_HEIGHT[cls] || 1.6;
  const along = dx >= dy;  // the longer side is the length; the heading is then refined with U / O
  const box = { id: newEditId().replace(/-/g, ""), cls, x: cx, y: cy, z: zGround + h / 2,
                l: Math.max(0.1, along ? dx : dy), w: Math.max(0.1, along ? dy : dx), h, yaw: along ? 0 : Math.PI / 2,
                track_id: -1, source: "manual", accepted: true, score: 1 };
  const fid = state.fid;
  queueEdit(fid, (doc) => (findBox(doc, box.id) ? null : { op: "add", box }), { what: "draw", onDone: () => {
    logEvent("box_created", { box_id: box.id, source: "manual", seconds: sinceShown() });
    if (fid === state.fid) select(box.id);
  } });
}

function onViewerClick(ev) {
  counters.clicks += 1;
  const oneClickHeld = held.has("KeyA");
  logEvent("click", { x: Math.round(ev.clientX), y: Math.round(ev.clientY), view: viewer.view, a: oneClickHeld });
  if (!state.points) return;
  if (oneClickHeld) {
    const i = viewer.pick(ev.clientX, ev.clientY, 8);
    if (i < 0) { toast("no point under the cursor"); return; }
    oneClick(i);
    return;
  }
  // Overlapping boxes: clicking again where the selected one is goes to the next box under the cursor.
  const hits = viewer.pickBoxes(ev.clientX, ev.clientY);
  const k = hits.indexOf(state.selectedId);
  select(hits.length ? hits[(k + 1) % hits.length] : null);
}

// ------------------------------------------------------------------------------------------------ frames
const pointCache = new Map();  // frame id -> Promise of {n, xyzi, flags}
function getPoints(fid) {
  if (!pointCache.has(fid)) {
    const p = api.points(fid);
    p.catch(() => pointCache.delete(fid));
    pointCache.set(fid, p);
    while (pointCache.size > POINT_CACHE) pointCache.delete(pointCache.keys().next().value);
  }
  return pointCache.get(fid);
}

/** Show frame `i`; with trackFrom, propagate that frame's accepted boxes first (after the queued edits). */
async function goto(i, { trackFrom = null, doc = null } = {}) {
  const fid = state.frames[i];
  const seq = ++state.navSeq;
  const t0 = performance.now();
  flushAllNudges();
  flushLog();
  navigating += 1;
  const open = trackFrom && state.doc ? state.doc.boxes.filter((b) => !b.accepted).length : 0;
  const note = open ? `${open} proposal${open > 1 ? "s" : ""} left unaccepted in ${trackFrom} (not tracked)` : "";
  try {
    const pointsP = getPoints(fid);
    const payload = await api.frame(fid);
    const imageP = payload.image ? api.image(fid) : Promise.resolve(null);
    let shownDoc = doc && doc.version >= payload.document.version ? doc : payload.document;
    let tracked = [];
    if (trackFrom) {
      // Through the queue: the previous frame's accepts are stored before its boxes are propagated.
      const res = await enqueue(async () => {
        try {
          const r = await api.track(fid, trackFrom, payload.document.version);
          return r;
        } catch (err) {
          if (err instanceof ApiError && err.status === 409 && err.body) {
            return api.track(fid, trackFrom, err.body.document.version);
          }
          throw err;
        }
      }).catch((err) => { fail(err, "tracking"); return null; });
      if (res) { shownDoc = res.document; tracked = res.boxes; }
    }
    const [pts, image] = await Promise.all([pointsP, imageP.catch(() => null)]);
    if (seq !== state.navSeq) return;  // another navigation started meanwhile
    state.index = i;
    state.fid = fid;
    state.payload = payload;
    state.points = pts;
    state.doc = null;
    state.selectedId = null;
    state.pending.clear();
    viewer.setPoints(pts.xyzi, pts.flags, payload.ground_plane);
    cameraPanel.setFrame(image, payload.calib, pts.xyzi);
    $("frame-name").textContent = fid;
    for (const li of document.querySelectorAll("#frame-list li.current")) li.classList.remove("current");
    const li = document.querySelector(`#frame-list li[data-frame-id="${CSS.escape(fid)}"]`);
    if (li) { li.classList.add("current"); li.scrollIntoView({ block: "nearest" }); }
    showDocument(shownDoc);
    state.shownAt = performance.now();
    state.loadMs = state.shownAt - t0;
    logEvent("frame_shown", { n_points: pts.n, boxes: shownDoc.boxes.length, load_ms: Math.round(state.loadMs) });
    for (const b of tracked) logEvent("box_created", { box_id: b.id, source: "tracked", seconds: 0 });
    if (tracked.length) select(tracked[0].id);
    const told = tracked.length ? `${tracked.length} boxes tracked from ${trackFrom}` : "";
    if (told || note) toast([told, note].filter(Boolean).join(" · "));
    if (state.colorMode === "label") refreshLabels();
    const url = new URL(window.location.href);
    url.searchParams.set("frame", fid);
    window.history.replaceState(null, "", url);
    resolveReady(fid);
    if (i + 1 < state.frames.length) getPoints(state.frames[i + 1]);  // prefetch: N is the usual next key
  } catch (err) {
    fail(err, `frame ${fid}`);
  } finally {
    navigating -= 1;
  }
}

function buildFrameList() {
  const ol = $("frame-list");
  const frag = document.createDocumentFragment();
  for (const fid of state.frames) {
    const li = document.createElement("li");
    li.dataset.frameId = fid;
    li.textContent = fid;
    frag.append(li);
  }
  ol.replaceChildren(frag);
  ol.addEventListener("click", (ev) => {
    const li = ev.target.closest("li[data-frame-id]");
    if (!li) return;
    counters.clicks += 1;
    const i = state.frames.indexOf(li.dataset.frameId);
    const forward = i === state.index + 1;  // clicking the next frame tracks like N does
    goto(i, { trackFrom: forward ? state.fid : null });
  });
}

// ------------------------------------------------------------------------------------------------ start
async function start() {
  api.onBusy = (n) => { $("busy").hidden = n === 0; };
  window.latte = {
    ready,
    get frameId() { return state.fid; },
    get document() { return state.doc; },
    project: (x, y, z) => viewer.project(x, y, z),
    get selectedId() { return state.selectedId; },
    get points() { return state.points ? state.points.xyzi : null; },
    get busy() { return api.busy + queued + navigating + state.pending.size + (nudgeTimer ? 1 : 0) + (labelTimer ? 1 : 0); },
    events: counters,
    get view() { return viewer ? viewer.view : null; },
    get loadMs() { return state.loadMs; },  // the last frame's load: request to shown, ms (tracking included)
    select: (id) => select(id),
    goto: (fid) => goto(state.frames.indexOf(fid)),
  };
  let info;
  try {
    info = await api.info();
  } catch (err) {
    toast(err.status === 403 ? "wrong or missing token: open the URL the server printed (…?token=…)"
                             : `cannot reach the server: ${err.detail || err.message}`, true);
    return;
  }
  state.info = info;
  state.frames = info.frames;
  $("source-name").textContent = info.name;
  viewer = new Viewer($("viewer"), info.colors, info.point_classes);
  viewer.onClick = onViewerClick;
  viewer.onRectangle = drawRectangle;
  viewer.canDrag = canDrag;
  viewer.onBoxDrag = onBoxDrag;
  window.latte.viewer = viewer;
  cameraPanel = new CameraPanel($("camera"), info.colors);
  objects = new ObjectList($("objects"), info.classes, info.colors, {
    onSelect: (id) => { counters.clicks += 1; select(id); },
    onClass: (id, cls) => { counters.clicks += 1; setBoxClass(id, cls); },
    onAccept: (id) => { counters.clicks += 1; select(id); actions.accept(false); },
    onDelete: (id) => { counters.clicks += 1; select(id); actions.remove(); },
  });
  help = new Help($("help"));
  boxViews = new BoxViews($("box-views"), info.colors);
  brush = new Brush(viewer, info.colors, brushLabel, (indices, label) => {
    counters.clicks += 1;
    queueEdit(state.fid, () => ({ op: "brush", indices, label }), { what: "brush", onDone: () => {
      logEvent("brush", { n: indices.length, label });
    } });
  });
  bindKeys(actions, held);
  for (const [id, fn] of [["prev-frame", actions.prevFrame], ["next-frame", actions.nextFrame],
                          ["undo", () => actions.undoRedo("undo")], ["redo", () => actions.undoRedo("redo")],
                          ["export", actions.exportAll], ["help-button", actions.help]]) {
    $(id).addEventListener("click", (ev) => { counters.clicks += 1; ev.currentTarget.blur(); fn(); });
  }
  $("mode").addEventListener("click", () => { counters.clicks += 1; actions.toggleView(); });
  $("frame-status").addEventListener("click", () => { counters.clicks += 1; actions.setStatus("done"); });
  buildFrameList();
  updateMode();
  setInterval(() => flushLog(), LOG_FLUSH_MS);
  window.addEventListener("pagehide", () => flushLog(true));
  if (!state.frames.length) { toast("the data source has no frames", true); return; }
  const wanted = new URLSearchParams(window.location.search).get("frame");
  await goto(Math.max(0, state.frames.indexOf(wanted)));
}

start();
