// LoRA Studio panel: the wide workspace. The sidebar is narrow; reviewing hundreds of images or browsing
// the gallery wants the whole window. Opening the workspace moves the panel itself (its one state: the
// selection, the loaded queue, the pickers) into a full-window overlay above ComfyUI's canvas and marks it
// `.ls-wide`; the sections lay themselves out for the width (setWide). Closing moves it back into the
// sidebar. While it is open:
//   - Esc (outside a text field) or the close button closes it;
//   - focus stays inside (Tab cycles, focus that escapes is brought back), and returns to where it was;
//   - no key pressed inside reaches ComfyUI's own shortcuts (its keybindings listen on window, in the
//     bubble phase: every key event stops at the overlay).
// The sidebar meanwhile shows a line saying where the panel went, with a button to bring it back.
//
// Declarations only (ComfyUI imports every .js file of the pack).

import { h, isTypingTarget } from "./panel_dom.js";

const FOCUSABLE = "a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), "
  + "textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])";

/** Elements Tab can reach inside `box`, in order (visible ones only). */
export function focusables(box) {
  return Array.from(box.querySelectorAll(FOCUSABLE)).filter((el) => el.getClientRects().length > 0
    && !el.closest("[hidden], [inert]"));
}

/**
 * The overlay around the panel.
 *   root     the sidebar element the panel was mounted in (it keeps a placeholder while open)
 *   panel    the panel's own element (.ls-root), moved between the two
 *   onChange(open)  called after the move (the sections re-lay themselves out, focus is placed)
 */
export function workspaceShell({ root, panel, onChange }) {
  let overlay = null;
  let returnFocus = null;
  let lastInside = null;
  const placeholder = h("div", { class: "ls-root ls-placeholder", testid: "workspace-placeholder" },
    h("p", {}, "LoRA Studio is open in the wide workspace."),
    h("button", { class: "ls-btn", testid: "workspace-back", onclick: () => close() }, "Back to the sidebar"));

  function onKey(ev) {
    if (ev.type === "keydown" && ev.key === "Escape" && !ev.defaultPrevented && !isTypingTarget(ev.target)) {
      ev.preventDefault();
      close();
    }
    ev.stopPropagation(); // ComfyUI's shortcuts never see a key pressed in the workspace
  }

  /** Tab and Shift+Tab cycle inside (capture phase: whatever the focused field does with its keys). */
  function trapTab(ev) {
    if (ev.key !== "Tab" || ev.ctrlKey || ev.altKey || ev.metaKey) return;
    const items = focusables(overlay);
    if (!items.length) return;
    const i = items.indexOf(document.activeElement);
    const next = ev.shiftKey ? (i <= 0 ? items.length - 1 : i - 1) : (i < 0 || i === items.length - 1 ? 0 : i + 1);
    ev.preventDefault();
    items[next].focus();
  }

  function onFocusIn(ev) {
    if (!overlay) return;
    if (overlay.contains(ev.target)) {
      lastInside = ev.target;
      return;
    }
    const back = lastInside && lastInside.isConnected && overlay.contains(lastInside) ? lastInside
      : focusables(overlay)[0] || overlay;
    back.focus();
  }

  function open() {
    if (overlay) return;
    returnFocus = document.activeElement;
    overlay = h("div", { class: "ls-workspace", role: "dialog", "aria-modal": "true", tabindex: "-1",
      "aria-label": "LoRA Studio workspace", testid: "workspace" });
    for (const type of ["keydown", "keyup", "keypress"]) overlay.addEventListener(type, onKey);
    overlay.addEventListener("keydown", trapTab, true);
    panel.classList.add("ls-wide");
    root.replaceChildren(placeholder);
    overlay.append(panel);
    document.body.append(overlay);
    document.addEventListener("focusin", onFocusIn, true);
    onChange(true);
    if (!overlay.contains(document.activeElement)) overlay.focus();
  }

  function close() {
    if (!overlay) return;
    document.removeEventListener("focusin", onFocusIn, true);
    const box = overlay;
    overlay = null;
    lastInside = null;
    panel.classList.remove("ls-wide");
    if (root.isConnected || !box.isConnected) root.replaceChildren(panel);
    box.remove();
    onChange(false);
    const target = returnFocus && returnFocus.isConnected ? returnFocus : null;
    returnFocus = null;
    if (target) target.focus();
  }

  return {
    open,
    close,
    toggle: () => (overlay ? close() : open()),
    isOpen: () => !!overlay,
    /** The panel is going away (ComfyUI re-renders or closes the sidebar tab): drop the overlay. */
    destroy() {
      if (!overlay) return;
      document.removeEventListener("focusin", onFocusIn, true);
      overlay.remove();
      overlay = null;
      panel.classList.remove("ls-wide");
    },
  };
}
