// LoRA Studio panel: the review's keyboard map and mouse selection (Shift-click ranges, box select), kept
// apart from the queue itself (panel_approvals.js), which acts on what these return.
//
// Declarations only (ComfyUI imports every .js file of the pack).

import { h } from "./panel_dom.js";

/** The keys, as the hint line shows them. */
export const REVIEW_KEYS = [
  ["A", "approve"], ["R", "reject"], ["1–6", "reasons"], ["N", "note"], ["E", "caption"], ["M", "move"],
  ["←/→", "move on"], ["Space", "select"], ["U", "undo"], ["W", "workspace"],
];

/** The action a keydown means, or null. Plain keys only (Shift for ranges; Ctrl/⌘ for select-all and undo). */
export function reviewAction(ev) {
  const mod = ev.ctrlKey || ev.metaKey;
  if (ev.altKey) return null;
  const key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
  if (mod) {
    if (key === "a" && !ev.shiftKey) return { name: "selectAll" };
    if (key === "z" && !ev.shiftKey) return { name: "undo" };
    return null;
  }
  const arrows = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: "up", ArrowDown: "down", Home: "home", End: "end" };
  if (key in arrows) return { name: "move", step: arrows[key], extend: ev.shiftKey };
  // digits: by the physical key too, so Shift or a layout without plain digits still reaches them
  const digit = /^[1-9]$/.test(key) ? Number(key) : /^Digit[1-9]$/.test(ev.code || "") ? Number(ev.code.slice(5)) : 0;
  if (digit) return { name: "category", index: digit - 1 };
  if (ev.shiftKey && key !== " ") return null;
  return { a: { name: "approve" }, r: { name: "reject" }, n: { name: "note" }, e: { name: "caption" },
    m: { name: "reassign" }, u: { name: "undo" }, " ": { name: "toggleSelect" }, Escape: { name: "escape" } }[key]
    || null;
}

/** The keys, each in a <kbd>, folded under a "Keys" line (the sidebar is short; the workspace shows them open). */
export function keysHint(testid = "review-keys") {
  return h("details", { class: "ls-keys-box", testid },
    h("summary", { class: "ls-muted", title: "The review's keyboard shortcuts" }, "Keys"),
    h("div", { class: "ls-keys ls-muted" },
      REVIEW_KEYS.map(([k, what]) => h("span", { class: "ls-key" }, h("kbd", { class: "ls-kbd" }, k), ` ${what}`))));
}

/** The ids from `a` to `b` (inclusive, either order) in `order`. */
export function rangeIds(order, a, b) {
  const i = order.indexOf(a);
  const j = order.indexOf(b);
  if (i < 0 || j < 0) return j >= 0 ? [b] : [];
  return order.slice(Math.min(i, j), Math.max(i, j) + 1);
}

const CONTROLS = "input, textarea, select, button, a[href]:not(.ls-preview-box), label, summary, option";

/**
 * Box (rubber-band) selection on `grid`: a drag that starts on the grid (not on a control) draws a box and
 * selects the cards it touches. onBox(ids, additive) is called as the box changes (additive: Shift or
 * Ctrl/⌘ was held, the box adds to the selection); onClick(ev) for a press that did not become a drag.
 */
export function boxSelect(grid, { onBox, onClick }) {
  let start = null;
  let box = null;
  let suppressClick = false;

  const cardsIn = (r) => Array.from(grid.querySelectorAll("[data-image-id]")).filter((el) => {
    const c = el.getBoundingClientRect();
    return c.right >= r.left && c.left <= r.right && c.bottom >= r.top && c.top <= r.bottom;
  }).map((el) => Number(el.dataset.imageId));

  function rect(ev) {
    return { left: Math.min(start.x, ev.clientX), right: Math.max(start.x, ev.clientX),
      top: Math.min(start.y, ev.clientY), bottom: Math.max(start.y, ev.clientY) };
  }

  function onMove(ev) {
    if (!start) return;
    if (!box) {
      if (Math.abs(ev.clientX - start.x) + Math.abs(ev.clientY - start.y) < 6) return;
      box = h("div", { class: "ls-box-select", testid: "box-select" });
      document.body.append(box);
    }
    const r = rect(ev);
    Object.assign(box.style, { left: `${r.left}px`, top: `${r.top}px`, width: `${r.right - r.left}px`,
      height: `${r.bottom - r.top}px` });
    onBox(cardsIn(r), start.additive);
  }

  function onUp(ev) {
    window.removeEventListener("mousemove", onMove, true);
    window.removeEventListener("mouseup", onUp, true);
    if (box) {
      onBox(cardsIn(rect(ev)), start.additive);
      box.remove();
      box = null;
      suppressClick = true; // the click that ends a drag is not a click on a card
      setTimeout(() => { suppressClick = false; }, 0);
    }
    start = null;
  }

  grid.addEventListener("mousedown", (ev) => {
    if (ev.button !== 0 || ev.target.closest(CONTROLS)) return;
    ev.preventDefault(); // no text selection or image drag; the grid takes the focus instead
    grid.focus({ preventScroll: true });
    start = { x: ev.clientX, y: ev.clientY, additive: ev.shiftKey || ev.ctrlKey || ev.metaKey };
    window.addEventListener("mousemove", onMove, true);
    window.addEventListener("mouseup", onUp, true);
  });
  grid.addEventListener("click", (ev) => {
    if (suppressClick) {
      ev.preventDefault();
      ev.stopPropagation();
      return;
    }
    onClick(ev);
  }, true);
}
