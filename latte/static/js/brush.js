// Brush mode: drag over the point view to label points (the per-point labels outside boxes, SemanticKITTI export).
// A stroke is collected in a mask over the scan (typed array, one byte a point), painted at once for feedback and
// sent as ONE brush op when the button is released: {"op": "brush", "indices": [...], "label": "car" | null}.

const ERASE_GRAY = [95, 99, 106];

export class Brush {
  /**
   * viewer: the Viewer; colors: {point class: [r, g, b]}; label(): the point class painted now ("car"...);
   * send(indices: number[], label: string | null): queue the edit (main.js).
   */
  constructor(viewer, colors, label, send) {
    this.viewer = viewer;
    this.colors = colors;
    this.label = label;
    this.send = send;
    this.mask = null;
    this.count = 0;
    viewer.onBrush = (indices, erase) => this._stroke(indices, erase);
    viewer.onBrushEnd = (erase) => this._end(erase);
  }

  get active() { return this.viewer.brush; }
  set active(on) { this.viewer.setBrush(on); }

  _stroke(indices, erase) {
    if (!this.mask || this.mask.length !== this.viewer.n) { this.mask = new Uint8Array(this.viewer.n); this.count = 0; }
    const fresh = [];
    for (const i of indices) if (!this.mask[i]) { this.mask[i] = 1; fresh.push(i); }
    this.count += fresh.length;
    const rgb = erase ? ERASE_GRAY : (this.colors[this.label()] || [255, 255, 255]);
    if (fresh.length) this.viewer.paint(fresh, rgb);
  }

  _end(erase) {
    const mask = this.mask;
    this.mask = null;
    if (!mask || !this.count) return;
    const indices = [];
    for (let i = 0; i < mask.length; i += 1) if (mask[i]) indices.push(i);
    this.count = 0;
    this.send(indices, erase ? null : this.label());
  }
}
