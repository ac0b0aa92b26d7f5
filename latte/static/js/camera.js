// The camera panel (#camera): the frame's JPEG, the scan projected with the calibration (KITTI: rect = velo_to_rect
// @ [x y z 1], pixel = P2 @ rect) coloured by depth, and the boxes' outlines projected the same way.
import { boxCorners, BOX_EDGES } from "./viewer.js";

const MIN_DEPTH = 0.5;  // m in front of the camera; nearer points / corners are not projected
const MAX_DEPTH = 60;

// A depth ramp: near = red, far = blue (HSV hue 0 -> 240 deg), 256 entries.
const RAMP = new Uint8Array(256 * 3);
for (let i = 0; i < 256; i += 1) {
  const h = (i / 255) * 4, x = 1 - Math.abs((h % 2) - 1);
  const [r, g, b] = h < 1 ? [1, x, 0] : h < 2 ? [x, 1, 0] : h < 3 ? [0, 1, x] : [0, x, 1];
  RAMP.set([r * 255, g * 255, b * 255], i * 3);
}

export class CameraPanel {
  constructor(canvas, colors) {
    this.canvas = canvas;
    this.panel = canvas.parentElement;
    this.ctx = canvas.getContext("2d", { willReadFrequently: true });
    this.colors = colors;
    this.image = null;
    this.calib = null;
    this.xyzi = null;
    this.showPoints = true;
    this._base = null;  // ImageData of image + points: boxes are redrawn over it without re-projecting the scan
    canvas.title = "click: enlarge / shrink the camera view";
    canvas.addEventListener("click", () => this.panel.classList.toggle("large"));
  }

  /** A new frame: image (ImageBitmap | null), calib ({P2, velo_to_rect} | null), the scan's Float32Array(N*4). */
  setFrame(image, calib, xyzi) {
    this.image = image;
    this.calib = calib;
    this.xyzi = xyzi;
    this._base = null;
    this.panel.classList.toggle("empty", !image);
  }

  /** (u, v, depth) of a velodyne point, or null when it is behind the camera. */
  projectPoint(x, y, z) {
    const T = this.calib.velo_to_rect, P = this.calib.P2;
    const cx = T[0][0] * x + T[0][1] * y + T[0][2] * z + T[0][3];
    const cy = T[1][0] * x + T[1][1] * y + T[1][2] * z + T[1][3];
    const cz = T[2][0] * x + T[2][1] * y + T[2][2] * z + T[2][3];
    if (cz < MIN_DEPTH) return null;
    const w = P[2][0] * cx + P[2][1] * cy + P[2][2] * cz + P[2][3];
    return [(P[0][0] * cx + P[0][1] * cy + P[0][2] * cz + P[0][3]) / w,
            (P[1][0] * cx + P[1][1] * cy + P[1][2] * cz + P[1][3]) / w, cz];
  }

  _drawBase() {
    const { canvas, ctx, image } = this;
    canvas.width = image.width;
    canvas.height = image.height;
    ctx.drawImage(image, 0, 0);
    if (this.calib && this.xyzi && this.showPoints) {
      // Straight into the pixel buffer: a 2x2 dot per point, no per-point canvas calls (120k points stay fast).
      const W = canvas.width, H = canvas.height;
      const data = ctx.getImageData(0, 0, W, H);
      const px = data.data, p = this.xyzi, n = p.length / 4;
      const T = this.calib.velo_to_rect.flat(), P = this.calib.P2.flat();
      for (let i = 0; i < n; i += 1) {
        const x = p[i * 4], y = p[i * 4 + 1], z = p[i * 4 + 2];
        const cz = T[8] * x + T[9] * y + T[10] * z + T[11];
        if (cz < MIN_DEPTH) continue;
        const cx = T[0] * x + T[1] * y + T[2] * z + T[3], cy = T[4] * x + T[5] * y + T[6] * z + T[7];
        const w = P[8] * cx + P[9] * cy + P[10] * cz + P[11];
        const u = Math.floor((P[0] * cx + P[1] * cy + P[2] * cz + P[3]) / w);
        const v = Math.floor((P[4] * cx + P[5] * cy + P[6] * cz + P[7]) / w);
        if (u < 0 || v < 0 || u >= W - 1 || v >= H - 1) continue;
        const k = Math.min(255, Math.floor((cz / MAX_DEPTH) * 255)) * 3;
        for (const o of [0, 4, W * 4, W * 4 + 4]) {
          const j = (v * W + u) * 4 + o;
          px[j] = RAMP[k]; px[j + 1] = RAMP[k + 1]; px[j + 2] = RAMP[k + 2];
        }
      }
      ctx.putImageData(data, 0, 0);
    }
    this._base = ctx.getImageData(0, 0, canvas.width, canvas.height);
  }

  /** Redraw with these boxes (frame-document dicts); the selected one thicker and yellow. */
  draw(boxes, selectedId) {
    if (!this.image) return;
    if (!this._base) this._drawBase();
    else this.ctx.putImageData(this._base, 0, 0);
    if (!this.calib) return;
    const ctx = this.ctx;
    for (const b of boxes) {
      const uv = boxCorners(b).map(([x, y, z]) => this.projectPoint(x, y, z));
      const rgb = this.colors[b.cls] || [255, 255, 255];
      const sel = b.id === selectedId;
      ctx.strokeStyle = sel ? "rgb(255,216,77)" : `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
      ctx.lineWidth = sel ? 3 : 2;
      ctx.setLineDash(b.accepted ? [] : [6, 4]);
      ctx.beginPath();
      for (const [i, j] of BOX_EDGES) {
        if (!uv[i] || !uv[j]) continue;  // an edge partly behind the camera: left out rather than drawn wrong
        ctx.moveTo(uv[i][0], uv[i][1]);
        ctx.lineTo(uv[j][0], uv[j][1]);
      }
      if (uv[0] && uv[5] && uv[1] && uv[4]) {  // a cross on the front face shows the heading
        ctx.moveTo(uv[0][0], uv[0][1]); ctx.lineTo(uv[5][0], uv[5][1]);
        ctx.moveTo(uv[1][0], uv[1][1]); ctx.lineTo(uv[4][0], uv[4][1]);
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);
  }
}
