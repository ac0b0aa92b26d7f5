// Side and back views of the selected box (#box-views): the points around it in the box's own frame, so height,
// length and the ground contact can be judged (what the bird's-eye view cannot show). Drawn on 2D canvases from the
// scan's Float32Array with a cheap bounding-square reject, so a nudge redraws them at once.

const MARGIN = 0.6;  // metres shown around the box

export class BoxViews {
  constructor(el, colors) {
    this.el = el;
    this.colors = colors;
    this.side = this._canvas("side (length × height)");
    this.back = this._canvas("back (width × height)");
  }

  _canvas(title) {
    const wrap = document.createElement("figure");
    const c = document.createElement("canvas");
    c.width = 260; c.height = 150;
    const cap = document.createElement("figcaption");
    cap.textContent = title;
    wrap.append(c, cap);
    this.el.append(wrap);
    return c;
  }

  /** Draw box `b` (frame-document dict, or null to hide) with the scan xyzi (Float32Array N*4), plane [a,b,c,d]. */
  draw(b, xyzi, plane) {
    this.el.hidden = !b || !xyzi;
    if (this.el.hidden) return;
    const c = Math.cos(b.yaw), s = Math.sin(b.yaw);
    const hl = b.l / 2 + MARGIN, hw = b.w / 2 + MARGIN, hh = b.h / 2 + MARGIN, r = Math.hypot(hl, hw);
    const n = xyzi.length / 4;
    const us = [], vs = [], zs = [];
    for (let i = 0; i < n; i += 1) {
      const dx = xyzi[i * 4] - b.x, dy = xyzi[i * 4 + 1] - b.y;
      if (dx > r || dx < -r || dy > r || dy < -r) continue;
      const dz = xyzi[i * 4 + 2] - b.z;
      if (dz > hh || dz < -hh) continue;
      const u = c * dx + s * dy, v = -s * dx + c * dy;
      if (u > hl || u < -hl || v > hw || v < -hw) continue;
      us.push(u); vs.push(v); zs.push(dz);
    }
    // Ground height under the box centre, relative to it (plane a x + b y + c z + d = 0).
    const [pa, pb, pc, pd] = plane || [0, 0, 1, 1.73];
    const ground = pc ? -(pa * b.x + pb * b.y + pd) / pc - b.z : null;
    const rgb = this.colors[b.cls] || [255, 255, 255];
    this._view(this.side, us, zs, vs, b.l / 2, b.w / 2, b.h / 2, hl, hh, ground, rgb, true);
    this._view(this.back, vs, zs, us, b.w / 2, b.l / 2, b.h / 2, hw, hh, ground, rgb, false);
  }

  /** One view: horizontal a (half extent ha), vertical z; `depth` is the third coordinate (inside test only). */
  _view(canvas, as, zs, depth, ha, hd, hz, spanA, spanZ, ground, rgb, front) {
    const ctx = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height;
    ctx.fillStyle = "#0d0e11";
    ctx.fillRect(0, 0, W, H);
    const k = Math.min(W / (2 * spanA), H / (2 * spanZ));
    const X = (a) => W / 2 + a * k, Y = (z) => H / 2 - z * k;
    for (let i = 0; i < as.length; i += 1) {
      const inside = Math.abs(as[i]) <= ha && Math.abs(zs[i]) <= hz && Math.abs(depth[i]) <= hd;
      ctx.fillStyle = inside ? "#ffec8c" : "#6b717b";
      ctx.fillRect(X(as[i]) - 1, Y(zs[i]) - 1, 2, 2);
    }
    if (ground !== null) {
      ctx.strokeStyle = "#3f6f3f";
      ctx.setLineDash([4, 3]);
      ctx.beginPath(); ctx.moveTo(0, Y(ground)); ctx.lineTo(W, Y(ground)); ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.strokeStyle = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
    ctx.lineWidth = 1.5;
    ctx.strokeRect(X(-ha), Y(hz), 2 * ha * k, 2 * hz * k);
    if (front) {  // the heading end of the box (+length), thicker
      ctx.lineWidth = 3;
      ctx.beginPath(); ctx.moveTo(X(ha), Y(hz)); ctx.lineTo(X(ha), Y(-hz)); ctx.stroke();
    }
    ctx.fillStyle = "#8a909a";
    ctx.font = "10px system-ui";
    ctx.fillText(`${(2 * ha).toFixed(2)} × ${(2 * hz).toFixed(2)} m`, 4, H - 4);
  }
}
