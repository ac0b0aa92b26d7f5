// The keyboard: one table (shown by the help overlay, README) and one handler. Keys are matched by physical
// position (KeyboardEvent.code) so Shift does not change them ("[" stays "[" with Shift); keys typed into a
// <select> / <input> are left alone.

export const KEY_TABLE = [
  ["hold `A` + click a point", "one-click box at that point (proposal, selected)"],
  ["`Enter`", "accept the selected proposal (`Shift`+`Enter`: accept all proposals in the frame)"],
  ["`Delete` / `Backspace`", "delete the selected box (reject a proposal)"],
  ["`Ctrl`+drag (bird's-eye view)", "draw a box by hand (rectangle; Car by default, or the class chosen with 1-8)"],
  ["click a box / `Tab`", "select a box / the next box (`Shift`+`Tab`: previous); `Esc` clears"],
  ["drag the selected box (bird's-eye view)", "move it (`Shift`+drag: rotate it about its centre)"],
  ["`I` `K` `J` `L`", "move the selected box +x / -x / +y / -y by 0.1 m (`Shift`: 1 m)"],
  ["`R` / `F`", "move the selected box up / down by 0.1 m (`Shift`: 1 m)"],
  ["`U` / `O`", "rotate +1 / -1 degree (`Shift`: 10)"],
  ["`[` `]`, `;` `'`, `-` `=`", "length -/+, width -/+, height -/+ by 0.1 m (`Shift`: 0.5 m)"],
  ["`1`..`8`", "class of the selected box (Car, Van, Truck, Pedestrian, Person_sitting, Cyclist, Tram, Misc); "
    + "with nothing selected: the class of new boxes and of the brush"],
  ["`N` / `→`", "next frame (propagates the accepted boxes: tracking)"],
  ["`P` / `←`", "previous frame"],
  ["`Shift`+`N` / `Shift`+`P`", "5 frames ahead (tracking from this frame: a keyframe) / back"],
  ["`Q`", "interpolate this frame's accepted tracks back to their previous keyframe (fills the frames between)"],
  ["`T`", "propagate from the previous frame again"],
  ["`G`", "camera-detector fusion proposals (when the server has a detector)"],
  ["`Y`", "copy the selected box to the next frame"],
  ["`Ctrl`+`Z`, `Ctrl`+`Shift`+`Z` / `Ctrl`+`Y`", "undo, redo"],
  ["`B`", "bird's-eye / orbit view"],
  ["`C`", "colour by height / intensity / label"],
  ["`,` / `.`", "point size - / +"],
  ["`X` / `V`", "mark frame done / needs review (again: back to todo)"],
  ["`M`", "brush mode (drag paints points with the selected class; `Shift` erases)"],
  ["`E`", "export (KITTI label_2, .label, JSON)"],
  ["`H` / `?`", "help overlay"],
];

const NUDGE = {  // code -> [field, direction]
  KeyI: ["x", 1], KeyK: ["x", -1], KeyJ: ["y", 1], KeyL: ["y", -1], KeyR: ["z", 1], KeyF: ["z", -1],
  KeyU: ["yaw", 1], KeyO: ["yaw", -1],
  BracketLeft: ["l", -1], BracketRight: ["l", 1], Semicolon: ["w", -1], Quote: ["w", 1],
  Minus: ["h", -1], Equal: ["h", 1],
};

function typing(target) {
  if (!target || !target.tagName) return false;
  const tag = target.tagName;
  return tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || target.isContentEditable;
}

/**
 * Route key presses to `act` (main.js's actions). `held` is a Set of the codes held down (A for one-click).
 * Returns nothing; counts every handled key through act.keyCounted(code).
 */
export function bindKeys(act, held) {
  window.addEventListener("blur", () => held.clear());
  window.addEventListener("keyup", (ev) => held.delete(ev.code));
  window.addEventListener("keydown", (ev) => {
    if (typing(ev.target) && ev.key !== "Escape") return;
    held.add(ev.code);
    const code = ev.code, shift = ev.shiftKey, ctrl = ev.ctrlKey || ev.metaKey;
    if (ev.altKey) return;
    let handled = true;
    if (ctrl) {
      if (code === "KeyZ") act.undoRedo(shift ? "redo" : "undo");
      else if (code === "KeyY") act.undoRedo("redo");
      else handled = false;  // the browser's own Ctrl shortcuts and Ctrl (held) for drawing
    } else if (NUDGE[code]) {
      const [field, dir] = NUDGE[code];
      let step;
      if (field === "yaw") step = (shift ? 10 : 1) * Math.PI / 180;
      else if ("xyz".includes(field)) step = shift ? 1 : 0.1;
      else step = shift ? 0.5 : 0.1;
      act.nudge(field, dir * step);
    } else if (ev.key === "?" || (code === "Slash" && shift)) {
      act.help();
    } else if (ev.repeat && !["Comma", "Period", "Tab"].includes(code)) {
      handled = code === "KeyA" || code === "Enter" || code === "Delete" || code === "Backspace";  // swallow
    } else {
      const digit = /^(Digit|Numpad)([1-8])$/.exec(code);
      if (digit) act.setClass(Number(digit[2]) - 1);
      else {
        switch (code) {
          case "KeyA": break;  // held with a click: one-click (main.js reads `held`)
          case "Enter": case "NumpadEnter": act.accept(shift); break;
          case "Delete": case "Backspace": act.remove(); break;
          case "Tab": act.selectNext(shift ? -1 : 1); break;
          case "Escape": act.escape(); break;
          case "KeyN": case "ArrowRight": act.nextFrame(shift ? 5 : 1); break;
          case "KeyP": case "ArrowLeft": act.prevFrame(shift ? 5 : 1); break;
          case "KeyQ": act.interpolate(); break;
          case "KeyT": act.track(); break;
          case "KeyG": act.fusion(); break;
          case "KeyY": act.copyNext(); break;
          case "KeyB": act.toggleView(); break;
          case "KeyC": act.cycleColor(); break;
          case "Comma": act.pointSize(-1); break;
          case "Period": act.pointSize(1); break;
          case "KeyX": act.setStatus("done"); break;
          case "KeyV": act.setStatus("review"); break;
          case "KeyM": act.toggleBrush(); break;
          case "KeyE": act.exportAll(); break;
          case "KeyH": act.help(); break;
          default: handled = false;
        }
      }
    }
    if (handled) {
      ev.preventDefault();
      if (!ev.repeat) act.keyCounted(code, shift, ctrl);
    }
  });
}
