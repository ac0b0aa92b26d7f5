// The #help overlay: the keyboard table of keys.js, so the overlay and the handlers cannot disagree.
import { KEY_TABLE } from "./keys.js";

function keyCell(text) {
  // "`A` + click" -> <kbd>A</kbd> + click
  const td = document.createElement("td");
  text.split(/(`[^`]+`)/).forEach((part) => {
    if (part.startsWith("`") && part.endsWith("`") && part.length > 2) {
      const k = document.createElement("kbd");
      k.textContent = part.slice(1, -1);
      td.append(k);
    } else if (part) td.append(part);
  });
  return td;
}

export class Help {
  constructor(el) {
    this.el = el;
    const h = document.createElement("h2");
    h.textContent = "Keyboard (H or ? to close)";
    const table = document.createElement("table");
    for (const [keys, action] of KEY_TABLE) {
      const tr = document.createElement("tr");
      tr.append(keyCell(keys), keyCell(action));
      table.append(tr);
    }
    const mouse = document.createElement("p");
    mouse.textContent = "Mouse: orbit view — left drag rotates, right drag pans, wheel zooms; bird's-eye view — "
      + "drag pans, wheel zooms. Click a box to select it, click empty space to clear the selection.";
    el.append(h, table, mouse);
    el.addEventListener("click", (ev) => { if (ev.target === el) this.toggle(false); });
  }

  get open() { return !this.el.hidden; }
  toggle(on = !this.open) { this.el.hidden = !on; }
}
