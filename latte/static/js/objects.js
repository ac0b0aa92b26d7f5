// The object list (#objects): one .object-row per box of the frame document, with data-box-id, data-track-id,
// data-cls, data-accepted, data-source; a <select class="cls"> for the class, accept and delete buttons.

export class ObjectList {
  /** el: #objects; classes: ANNOTATION_CLASSES; colors: {class: [r, g, b]}; handlers: onSelect/onClass/onAccept/onDelete(id[, cls]). */
  constructor(el, classes, colors, handlers) {
    this.el = el;
    this.classes = classes;
    this.colors = colors;
    this.h = handlers;
    this.count = document.getElementById("object-count");
    el.addEventListener("click", (ev) => {
      const row = ev.target.closest(".object-row");
      if (!row) return;
      const id = row.dataset.boxId;
      const button = ev.target.closest("button");
      if (button) button.blur();  // Enter / Delete go to the keyboard table, not to a focused button
      if (ev.target.closest("button.accept")) this.h.onAccept(id);
      else if (ev.target.closest("button.delete")) this.h.onDelete(id);
      else if (!ev.target.closest("select")) this.h.onSelect(id);
    });
    el.addEventListener("change", (ev) => {
      const sel = ev.target.closest("select.cls");
      if (!sel) return;
      const row = sel.closest(".object-row");
      this.h.onClass(row.dataset.boxId, sel.value);
      sel.blur();  // give the keys back to the annotator
    });
  }

  render(boxes, selectedId) {
    const frag = document.createDocumentFragment();
    for (const b of boxes) {
      const row = document.createElement("div");
      row.className = "object-row" + (b.id === selectedId ? " selected" : "");
      row.setAttribute("role", "listitem");
      row.dataset.boxId = b.id;
      row.dataset.trackId = String(b.track_id);
      row.dataset.cls = b.cls;
      row.dataset.accepted = b.accepted ? "true" : "false";
      row.dataset.source = b.source;
      const rgb = this.colors[b.cls] || [255, 255, 255];
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.background = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
      const select = document.createElement("select");
      select.className = "cls";
      select.title = "class (keys 1-8)";
      for (const c of this.classes) select.add(new Option(c, c, false, c === b.cls));
      const track = document.createElement("span");
      track.className = "track";
      track.textContent = b.track_id >= 0 ? `#${b.track_id}` : "–";
      track.title = "track id";
      const src = document.createElement("span");
      src.className = "source";
      src.textContent = b.source + (b.source !== "manual" && b.score < 1 ? ` ${b.score.toFixed(2)}` : "");
      const acc = document.createElement("button");
      acc.className = "accept";
      acc.textContent = "✓";
      acc.title = "accept (Enter)";
      acc.disabled = b.accepted;
      const del = document.createElement("button");
      del.className = "delete";
      del.textContent = "✕";
      del.title = "delete (Delete)";
      row.append(sw, select, track, src, acc, del);
      frag.append(row);
    }
    this.el.replaceChildren(frag);
    const proposals = boxes.filter((b) => !b.accepted).length;
    if (this.count) this.count.textContent = boxes.length ? `${boxes.length}${proposals ? ` (${proposals} proposed)` : ""}` : "";
    const sel = this.el.querySelector(".object-row.selected");
    if (sel) sel.scrollIntoView({ block: "nearest" });
  }
}
