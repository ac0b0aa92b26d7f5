// The WebGL point view: one THREE.Points over the scan's typed arrays (no per-point JS objects), box meshes,
// an orbit (perspective) and a bird's-eye (orthographic, +x up the screen) camera, screen-space picking,
// Ctrl+drag rectangles in bird's-eye view and brush strokes. Coordinates are velodyne metres (x fwd, y left, z up).
import * as THREE from "three";
import { OrbitControls } from "/static/vendor/three/OrbitControls.js";

const CLICK_SLOP_PX = 5;  // a press that moves less than this is a click, not a drag
const GROUND_GRAY = [70, 74, 80];

// Turbo colormap (Mikhailov 2019), polynomial fit; t in [0, 1] -> [r, g, b] 0..255.
function turbo(t) {
  t = Math.min(1, Math.max(0, t));
  const r = 34.61 + t * (1172.33 - t * (10793.56 - t * (33300.12 - t * (38394.49 - t * 14825.05))));
  const g = 23.31 + t * (557.33 + t * (1225.33 - t * (3574.96 - t * (1073.77 + t * 707.56))));
  const b = 27.2 + t * (3211.1 - t * (15327.97 - t * (27814.0 - t * (22569.18 - t * 6838.66))));
  return [Math.max(0, Math.min(255, r)), Math.max(0, Math.min(255, g)), Math.max(0, Math.min(255, b))];
}
const TURBO = new Uint8Array(256 * 3);
for (let i = 0; i < 256; i += 1) TURBO.set(turbo(i / 255), i * 3);

/** The 8 corners of a box (velodyne), as [x, y, z] arrays: bottom 4 then top 4, front-left first. */
export function boxCorners(b) {
  const c = Math.cos(b.yaw), s = Math.sin(b.yaw);
  const out = [];
  for (const dz of [-0.5, 0.5]) {
    for (const [dx, dy] of [[0.5, 0.5], [0.5, -0.5], [-0.5, -0.5], [-0.5, 0.5]]) {
      const lx = dx * b.l, ly = dy * b.w;
      out.push([b.x + c * lx - s * ly, b.y + s * lx + c * ly, b.z + dz * b.h]);
    }
  }
  return out;
}
export const BOX_EDGES = [[0, 1], [1, 2], [2, 3], [3, 0], [4, 5], [5, 6], [6, 7], [7, 4], [0, 4], [1, 5], [2, 6], [3, 7]];

export class Viewer {
  /**
   * container: the #viewer element; colors: {class or point class: [r, g, b]}; pointClasses: POINT_CLASSES.
   * Callbacks (set by main.js): onClick(ev, info), onRectangle(a, b) with a/b = [x, y] velodyne,
   * onBrush(indices: Int32Array, erase), onBrushEnd(erase).
   */
  constructor(container, colors, pointClasses) {
    this.container = container;
    this.colors = colors;
    this.pointClasses = pointClasses;
    this.onClick = () => {};
    this.onRectangle = () => {};
    this.onBrush = () => {};
    this.onBrushEnd = () => {};
    this.canDrag = () => null;  // (clientX, clientY) -> the selected box {x, y} when a press lands on it (BEV only)
    this.onBoxDrag = () => {};  // (dx, dy, dyaw, done): moving (drag) or rotating (Shift+drag) the selected box
    this.colorMode = "height";
    this.pointSize = 2;
    this.view = "orbit";
    this.brush = false;
    this.brushRadius = 14;
    this.n = 0;
    this.xyzi = new Float32Array(0);
    this.flags = new Uint8Array(0);
    this.labels = null;
    this.plane = [0, 0, 1, 1.73];
    this.highlight = null;  // the selected box: its points are drawn bright so the fit can be judged
    this._highlightKey = "";
    this.boxObjects = new Map();  // box id -> THREE.Group

    this.renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.renderer.setClearColor(0x0d0e11);
    container.appendChild(this.renderer.domElement);
    this.scene = new THREE.Scene();

    this.persp = new THREE.PerspectiveCamera(60, 1, 0.1, 500);
    this.persp.up.set(0, 0, 1);
    this.persp.position.set(-14, 0, 11);
    this.orbit = new OrbitControls(this.persp, this.renderer.domElement);
    this.orbit.target.set(12, 0, 0);
    this.orbit.enableDamping = false;
    this.orbit.zoomToCursor = true;

    this.bevSpan = 60;  // metres from the bottom to the top of the view at zoom 1
    this.ortho = new THREE.OrthographicCamera(-1, 1, 1, -1, 0.1, 1000);
    this.ortho.up.set(1, 0, 0);  // +x (forward) up the screen, +y (left) to the left
    this.ortho.position.set(20, 0, 200);
    this.bev = new OrbitControls(this.ortho, this.renderer.domElement);
    this.bev.target.set(20, 0, 0);
    this.bev.enableRotate = false;
    this.bev.screenSpacePanning = true;
    this.bev.zoomToCursor = true;
    this.bev.mouseButtons = { LEFT: THREE.MOUSE.PAN, MIDDLE: THREE.MOUSE.DOLLY, RIGHT: THREE.MOUSE.PAN };
    this.bev.enabled = false;
    for (const c of [this.orbit, this.bev]) c.addEventListener("change", () => this.requestRender());

    this.geometry = new THREE.BufferGeometry();
    this.material = new THREE.PointsMaterial({ size: this.pointSize, vertexColors: true, sizeAttenuation: false });
    this.points = new THREE.Points(this.geometry, this.material);
    this.points.frustumCulled = false;
    this.scene.add(this.points);
    this.boxGroup = new THREE.Group();
    this.scene.add(this.boxGroup);
    this.scene.add(this._groundGrid());

    this.rubber = document.createElement("div");
    this.rubber.className = "rubber";
    this.rubber.hidden = true;
    this.cursor = document.createElement("div");
    this.cursor.className = "brush-cursor";
    this.cursor.hidden = true;
    const hint = document.createElement("div");
    hint.className = "hint";
    hint.textContent = "hold A + click: one-click box · Ctrl+drag (bird's-eye): draw · H: all keys";
    container.append(this.rubber, this.cursor, hint);

    this._bindPointer();
    this._resize();
    new ResizeObserver(() => this._resize()).observe(container);
  }

  get camera() { return this.view === "bev" ? this.ortho : this.persp; }
  get controls() { return this.view === "bev" ? this.bev : this.orbit; }

  _groundGrid() {
    const grid = new THREE.PolarGridHelper(80, 16, 8, 64, 0x24272d, 0x24272d);
    grid.rotation.x = Math.PI / 2;  // PolarGridHelper lies in the x-z plane; ours is x-y
    grid.position.z = -1.73;
    this.grid = grid;
    return grid;
  }

  _resize() {
    const w = Math.max(1, this.container.clientWidth), h = Math.max(1, this.container.clientHeight);
    this.renderer.setSize(w, h, false);
    this.persp.aspect = w / h;
    this.persp.updateProjectionMatrix();
    const half = this.bevSpan / 2;
    this.ortho.top = half; this.ortho.bottom = -half;
    this.ortho.left = -half * w / h; this.ortho.right = half * w / h;
    this.ortho.updateProjectionMatrix();
    this.requestRender(true);
  }

  requestRender(now = false) {
    if (now) { this._render(); return; }
    if (this._pending) return;
    this._pending = true;
    requestAnimationFrame(() => { this._pending = false; this._render(); });
  }

  _render() {
    this.renderer.render(this.scene, this.camera);
  }

  // ---------------------------------------------------------------------------------------------- points
  /** Show a scan: xyzi Float32Array(N*4), flags Uint8Array(N) (bit 0 ground), plane [a, b, c, d] of the ground. */
  setPoints(xyzi, flags, plane) {
    this.n = flags.length;
    this.xyzi = xyzi;
    this.flags = flags;
    this.labels = null;
    this.highlight = null;
    this._highlightKey = "";
    if (plane && plane.length === 4) this.plane = plane;
    this.grid.position.z = this.plane[2] ? -this.plane[3] / this.plane[2] : -1.73;
    const buf = new THREE.InterleavedBuffer(xyzi, 4);  // x y z i interleaved: position reads 3 of every 4 floats
    this.geometry.dispose();
    this.geometry = new THREE.BufferGeometry();
    this.geometry.setAttribute("position", new THREE.InterleavedBufferAttribute(buf, 3, 0));
    this.colorArray = new Uint8Array(this.n * 3);
    this.geometry.setAttribute("color", new THREE.BufferAttribute(this.colorArray, 3, true));
    this.points.geometry = this.geometry;
    let maxI = 0;
    for (let i = 0; i < this.n; i += 1) if (xyzi[i * 4 + 3] > maxI) maxI = xyzi[i * 4 + 3];
    this.intensityScale = maxI > 1.5 ? 1 / 255 : 1;  // KITTI is 0..1, some drivers write 0..255
    this.recolor();
  }

  setLabels(labels) {
    this.labels = labels && labels.length === this.n ? labels : null;
    if (this.colorMode === "label") this.recolor();
  }

  setColorMode(mode) { this.colorMode = mode; this.recolor(); }

  setPointSize(px) {
    this.pointSize = Math.min(12, Math.max(1, px));
    this.material.size = this.pointSize;
    this.requestRender();
  }

  _labelLut() {
    const lut = new Uint8Array(256 * 3).fill(90);
    this.pointClasses.forEach((name, k) => {
      const c = k === 0 ? [95, 99, 106] : (this.colors[name] || [255, 255, 255]);
      lut.set(c, k * 3);
    });
    return lut;
  }

  recolor() {
    const n = this.n, p = this.xyzi, f = this.flags, col = this.colorArray;
    if (!n) { this.requestRender(); return; }
    const [a, b, c, d] = this.plane;
    if (this.colorMode === "label" && this.labels) {
      const lut = this._labelLut(), lab = this.labels;
      for (let i = 0; i < n; i += 1) {
        const k = lab[i] * 3;
        col[i * 3] = lut[k]; col[i * 3 + 1] = lut[k + 1]; col[i * 3 + 2] = lut[k + 2];
      }
    } else if (this.colorMode === "intensity") {
      const s = this.intensityScale;
      for (let i = 0; i < n; i += 1) {
        const t = Math.sqrt(Math.min(1, Math.max(0, p[i * 4 + 3] * s)));  // sqrt: most returns are dark
        const k = Math.round(t * 255) * 3;
        col[i * 3] = TURBO[k]; col[i * 3 + 1] = TURBO[k + 1]; col[i * 3 + 2] = TURBO[k + 2];
      }
    } else {  // height above the fitted ground plane, 0..3 m; ground points grey so objects stand out
      for (let i = 0; i < n; i += 1) {
        if (f[i] & 1) { col[i * 3] = GROUND_GRAY[0]; col[i * 3 + 1] = GROUND_GRAY[1]; col[i * 3 + 2] = GROUND_GRAY[2]; continue; }
        const h = a * p[i * 4] + b * p[i * 4 + 1] + c * p[i * 4 + 2] + d;
        const k = Math.round(Math.min(1, Math.max(0, (h + 0.2) / 3.2)) * 255) * 3;
        col[i * 3] = TURBO[k]; col[i * 3 + 1] = TURBO[k + 1]; col[i * 3 + 2] = TURBO[k + 2];
      }
    }
    if (this.highlight && this.colorMode !== "label") this._paintInside(this.highlight);
    this.geometry.attributes.color.needsUpdate = true;
    this.requestRender();
  }

  /** Draw the points inside box `b` (a frame-document dict, or null) highlighted; recolours only on a change. */
  setHighlight(b) {
    const key = b ? [b.x, b.y, b.z, b.l, b.w, b.h, b.yaw].join() : "";
    if (key === this._highlightKey) return;
    this._highlightKey = key;
    this.highlight = b;
    this.recolor();
  }

  _paintInside(b) {
    const p = this.xyzi, col = this.colorArray, n = this.n;
    const c = Math.cos(b.yaw), s = Math.sin(b.yaw), hl = b.l / 2, hw = b.w / 2, hh = b.h / 2;
    const r = Math.hypot(hl, hw);
    for (let i = 0; i < n; i += 1) {
      const dx = p[i * 4] - b.x, dy = p[i * 4 + 1] - b.y;
      if (dx > r || dx < -r || dy > r || dy < -r) continue;  // cheap reject before the rotation
      const u = c * dx + s * dy, v = -s * dx + c * dy, dz = p[i * 4 + 2] - b.z;
      if (u > hl || u < -hl || v > hw || v < -hw || dz > hh || dz < -hh) continue;
      col[i * 3] = 255; col[i * 3 + 1] = 236; col[i * 3 + 2] = 140;
    }
  }

  /** Colour some points now (a brush stroke before the server's labels come back). */
  paint(indices, rgb) {
    const col = this.colorArray;
    for (let j = 0; j < indices.length; j += 1) {
      const i = indices[j] * 3;
      col[i] = rgb[0]; col[i + 1] = rgb[1]; col[i + 2] = rgb[2];
    }
    this.geometry.attributes.color.needsUpdate = true;
    this.requestRender();
  }

  // ---------------------------------------------------------------------------------------------- views
  setView(view) {
    if (view === this.view) return;
    // Keep looking at the same place: the BEV centre follows the orbit target and back.
    if (view === "bev") {
      const t = this.orbit.target;
      this.bev.target.set(t.x, t.y, 0);
      this.ortho.position.set(t.x, t.y, 200);
    } else {
      const t = this.bev.target;
      const off = this.persp.position.clone().sub(this.orbit.target);
      this.orbit.target.set(t.x, t.y, this.orbit.target.z);
      this.persp.position.copy(this.orbit.target).add(off);
    }
    this.view = view;
    this.orbit.enabled = view === "orbit";
    this.bev.enabled = view === "bev";
    this.controls.update();
    this.requestRender(true);
  }

  /** Centre the view on a velodyne point (keeps zoom and, in orbit, the viewing direction). */
  focus(x, y, z) {
    if (this.view === "bev") {
      this.bev.target.set(x, y, 0);
      this.ortho.position.set(x, y, 200);
      this.bev.update();
    } else {
      const off = this.persp.position.clone().sub(this.orbit.target);
      this.orbit.target.set(x, y, z);
      this.persp.position.set(x, y, z).add(off);
      this.orbit.update();
    }
    this.requestRender();
  }

  // ---------------------------------------------------------------------------------------------- projection
  _viewProj() {
    const cam = this.camera;
    cam.updateMatrixWorld();
    return new THREE.Matrix4().multiplyMatrices(cam.projectionMatrix, cam.matrixWorldInverse).elements;
  }

  /** Page (client) pixel coordinates of a velodyne point; null when it is behind the camera. */
  project(x, y, z) {
    const e = this._viewProj();
    const w = e[3] * x + e[7] * y + e[11] * z + e[15];
    if (w <= 1e-9) return null;
    const r = this.renderer.domElement.getBoundingClientRect();
    const nx = (e[0] * x + e[4] * y + e[8] * z + e[12]) / w, ny = (e[1] * x + e[5] * y + e[9] * z + e[13]) / w;
    return { x: r.left + (nx + 1) / 2 * r.width, y: r.top + (1 - ny) / 2 * r.height };
  }

  /** Screen coordinates (canvas-relative px) of every point: Float32Array(2N), NaN for points behind the camera. */
  screenCoords() {
    const e = this._viewProj(), p = this.xyzi, n = this.n;
    const r = this.renderer.domElement.getBoundingClientRect();
    const hw = r.width / 2, hh = r.height / 2;
    const out = new Float32Array(n * 2);
    for (let i = 0; i < n; i += 1) {
      const x = p[i * 4], y = p[i * 4 + 1], z = p[i * 4 + 2];
      const w = e[3] * x + e[7] * y + e[11] * z + e[15];
      if (w <= 1e-9) { out[i * 2] = NaN; out[i * 2 + 1] = NaN; continue; }
      out[i * 2] = ((e[0] * x + e[4] * y + e[8] * z + e[12]) / w + 1) * hw;
      out[i * 2 + 1] = (1 - (e[1] * x + e[5] * y + e[9] * z + e[13]) / w) * hh;
    }
    return out;
  }

  /**
   * The point under a click: the nearest projected point within `radius` px, preferring non-ground points
   * (a one-click on a car should not land on the road beside it) and, at the same distance, the nearer one.
   * Returns the point index or -1. One pass over the Float32Array.
   */
  pick(clientX, clientY, radius = 6) {
    const e = this._viewProj(), p = this.xyzi, n = this.n, f = this.flags;
    const r = this.renderer.domElement.getBoundingClientRect();
    const cx = clientX - r.left, cy = clientY - r.top, hw = r.width / 2, hh = r.height / 2, r2 = radius * radius;
    let best = -1, bestScore = Infinity, bestGround = -1, bestGroundScore = Infinity;
    for (let i = 0; i < n; i += 1) {
      const x = p[i * 4], y = p[i * 4 + 1], z = p[i * 4 + 2];
      const w = e[3] * x + e[7] * y + e[11] * z + e[15];
      if (w <= 1e-9) continue;
      const dx = ((e[0] * x + e[4] * y + e[8] * z + e[12]) / w + 1) * hw - cx;
      const dy = (1 - (e[1] * x + e[5] * y + e[9] * z + e[13]) / w) * hh - cy;
      const d2 = dx * dx + dy * dy;
      if (d2 > r2) continue;
      const depth = (e[2] * x + e[6] * y + e[10] * z + e[14]) / w;  // NDC z in [-1, 1]
      const score = d2 + depth * 2;  // 1 px of screen distance outweighs a small depth difference
      if (f[i] & 1) { if (score < bestGroundScore) { bestGroundScore = score; bestGround = i; } }
      else if (score < bestScore) { bestScore = score; best = i; }
    }
    return best >= 0 ? best : bestGround;
  }

  /** Velodyne (x, y) where the ray through a client pixel meets the horizontal plane at height z. */
  groundAt(clientX, clientY, z = null) {
    const r = this.renderer.domElement.getBoundingClientRect();
    const ndc = new THREE.Vector2((clientX - r.left) / r.width * 2 - 1, 1 - (clientY - r.top) / r.height * 2);
    const ray = new THREE.Raycaster();
    ray.setFromCamera(ndc, this.camera);
    const height = z ?? (this.plane[2] ? -this.plane[3] / this.plane[2] : 0);
    const plane = new THREE.Plane(new THREE.Vector3(0, 0, 1), -height);
    const hit = ray.ray.intersectPlane(plane, new THREE.Vector3());
    return hit ? [hit.x, hit.y] : null;
  }

  /** The id of the box under a client pixel (nearest hit of the box solids), or null. */
  pickBox(clientX, clientY) {
    return this.pickBoxes(clientX, clientY)[0] ?? null;
  }

  /** The ids of every box under a client pixel, nearest first. */
  pickBoxes(clientX, clientY) {
    const r = this.renderer.domElement.getBoundingClientRect();
    const ndc = new THREE.Vector2((clientX - r.left) / r.width * 2 - 1, 1 - (clientY - r.top) / r.height * 2);
    const ray = new THREE.Raycaster();
    ray.setFromCamera(ndc, this.camera);
    const solids = [];
    for (const g of this.boxObjects.values()) solids.push(g.userData.solid);
    const ids = [];
    for (const h of ray.intersectObjects(solids, false)) {
      if (!ids.includes(h.object.userData.boxId)) ids.push(h.object.userData.boxId);
    }
    return ids;
  }

  // ---------------------------------------------------------------------------------------------- boxes
  /** Draw the boxes (dicts of the frame document); proposals dashed and paler, the selected one highlighted. */
  setBoxes(boxes, selectedId) {
    for (const g of this.boxObjects.values()) {
      this.boxGroup.remove(g);
      g.traverse((o) => { if (o.geometry) o.geometry.dispose(); if (o.material) o.material.dispose(); });
    }
    this.boxObjects.clear();
    for (const b of boxes) {
      const g = this._boxObject(b, b.id === selectedId);
      this.boxGroup.add(g);
      this.boxObjects.set(b.id, g);
    }
    this.requestRender();
  }

  _boxObject(b, selected) {
    const rgb = this.colors[b.cls] || [255, 255, 255];
    const color = selected ? new THREE.Color(1, 0.85, 0.3) : new THREE.Color(rgb[0] / 255, rgb[1] / 255, rgb[2] / 255);
    const g = new THREE.Group();
    g.position.set(b.x, b.y, b.z);
    g.rotation.z = b.yaw;
    const hl = b.l / 2, hw = b.w / 2, hh = b.h / 2;
    const c = [[hl, hw, -hh], [hl, -hw, -hh], [-hl, -hw, -hh], [-hl, hw, -hh],
               [hl, hw, hh], [hl, -hw, hh], [-hl, -hw, hh], [-hl, hw, hh]];
    const seg = [];
    for (const [i, j] of BOX_EDGES) seg.push(...c[i], ...c[j]);
    // heading: from the top centre to the front, and a cross on the front face
    seg.push(0, 0, hh, hl, 0, hh, ...c[0], ...c[5], ...c[1], ...c[4]);
    const geo = new THREE.BufferGeometry();
    geo.setAttribute("position", new THREE.Float32BufferAttribute(seg, 3));
    const proposal = !b.accepted;
    const mat = proposal
      ? new THREE.LineDashedMaterial({ color, dashSize: 0.3, gapSize: 0.2, transparent: true, opacity: selected ? 1 : 0.75 })
      : new THREE.LineBasicMaterial({ color });
    const lines = new THREE.LineSegments(geo, mat);
    if (proposal) lines.computeLineDistances();
    g.add(lines);
    const solid = new THREE.Mesh(new THREE.BoxGeometry(b.l, b.w, b.h),
                                 new THREE.MeshBasicMaterial({ color, transparent: true, depthWrite: false,
                                                               opacity: selected ? 0.22 : 0.06 }));
    solid.userData.boxId = b.id;
    g.userData.solid = solid;
    g.add(solid);
    return g;
  }

  // ---------------------------------------------------------------------------------------------- pointer
  _bindPointer() {
    const el = this.container;
    let down = null;  // {x, y, t, mode: "click" | "rect" | "brush", erase}
    // Capture phase on the container: runs before OrbitControls' listeners on the canvas, so a rectangle or a
    // brush stroke does not also pan or orbit the view.
    el.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      let mode = "click";
      let box = null;
      if (this.brush) mode = "brush";
      else if ((ev.ctrlKey || ev.metaKey) && this.view === "bev") mode = "rect";  // Cmd on macOS (Ctrl+click is a right click)
      else if (this.view === "bev" && (box = this.canDrag(ev.clientX, ev.clientY))) mode = "drag";
      down = { x: ev.clientX, y: ev.clientY, t: performance.now(), mode, erase: ev.shiftKey, moved: false,
               ctrl: ev.ctrlKey, shift: ev.shiftKey, alt: ev.altKey, box, start: this.groundAt(ev.clientX, ev.clientY) };
      if (mode !== "click") {
        ev.stopPropagation();
        ev.preventDefault();
        el.setPointerCapture(ev.pointerId);
        if (mode === "brush") {
          this._screen = this.screenCoords();
          this._stroke(ev, down.erase);
        }
      }
    }, true);
    el.addEventListener("pointermove", (ev) => {
      if (this.brush) this._moveCursor(ev);
      if (!down) return;
      const dist = Math.hypot(ev.clientX - down.x, ev.clientY - down.y);
      if (dist > CLICK_SLOP_PX) down.moved = true;
      if (down.mode === "rect") {
        ev.stopPropagation();
        const r = el.getBoundingClientRect();
        Object.assign(this.rubber.style, {
          left: `${Math.min(down.x, ev.clientX) - r.left}px`, top: `${Math.min(down.y, ev.clientY) - r.top}px`,
          width: `${Math.abs(ev.clientX - down.x)}px`, height: `${Math.abs(ev.clientY - down.y)}px` });
        this.rubber.hidden = false;
      } else if (down.mode === "brush") {
        ev.stopPropagation();
        this._stroke(ev, down.erase);
      } else if (down.mode === "drag") {
        ev.stopPropagation();
        if (down.moved) this._drag(down, ev, false);
      }
    }, true);
    const finish = (ev) => {
      if (!down) return;
      const d = down;
      down = null;
      if (d.mode === "rect") {
        ev.stopPropagation();
        this.rubber.hidden = true;
        if (d.moved) {
          const a = this.groundAt(d.x, d.y), b = this.groundAt(ev.clientX, ev.clientY);
          if (a && b) this.onRectangle(a, b);
        }
      } else if (d.mode === "brush") {
        ev.stopPropagation();
        this._screen = null;
        this.onBrushEnd(d.erase);
      } else if (d.mode === "drag" && d.moved) {
        ev.stopPropagation();
        this._drag(d, ev, true);
      } else if (!d.moved && ev.type === "pointerup") {
        this.onClick({ clientX: ev.clientX, clientY: ev.clientY, shiftKey: d.shift, ctrlKey: d.ctrl, altKey: d.alt });
      }
    };
    el.addEventListener("pointerup", finish, true);
    el.addEventListener("pointercancel", finish, true);
    el.addEventListener("pointerleave", () => { this.cursor.hidden = true; });
  }

  /** Drag of the selected box in BEV: translation on the ground, or with Shift a rotation about its centre. */
  _drag(d, ev, done) {
    const now = this.groundAt(ev.clientX, ev.clientY);
    if (!now || !d.start) return;
    if (d.shift) {
      const a0 = Math.atan2(d.start[1] - d.box.y, d.start[0] - d.box.x);
      const a1 = Math.atan2(now[1] - d.box.y, now[0] - d.box.x);
      let da = a1 - a0;
      da = Math.atan2(Math.sin(da), Math.cos(da));
      this.onBoxDrag(0, 0, da, done);
    } else {
      this.onBoxDrag(now[0] - d.start[0], now[1] - d.start[1], 0, done);
    }
  }

  _moveCursor(ev) {
    const r = this.container.getBoundingClientRect(), d = this.brushRadius * 2;
    Object.assign(this.cursor.style, { left: `${ev.clientX - r.left - this.brushRadius}px`,
                                       top: `${ev.clientY - r.top - this.brushRadius}px`,
                                       width: `${d}px`, height: `${d}px` });
    this.cursor.hidden = false;
  }

  /** Indices of the points whose projection lies within the brush circle (ground points only when erasing). */
  _stroke(ev, erase) {
    const s = this._screen;
    if (!s) return;
    const r = this.renderer.domElement.getBoundingClientRect();
    const cx = ev.clientX - r.left, cy = ev.clientY - r.top, r2 = this.brushRadius * this.brushRadius;
    const f = this.flags, hits = [];
    for (let i = 0; i < this.n; i += 1) {
      const dx = s[i * 2] - cx, dy = s[i * 2 + 1] - cy;
      if (dx * dx + dy * dy <= r2 && (erase || !(f[i] & 1))) hits.push(i);
    }
    if (hits.length) this.onBrush(Int32Array.from(hits), erase);
  }

  setBrush(on) {
    this.brush = on;
    this.container.classList.toggle("brush", on);
    if (!on) this.cursor.hidden = true;
  }
}
