// LoRA Studio panel: one image of the review queue, in one of three shapes:
//   "card"    the sidebar's card: thumbnail, selection checkbox, caption, approve / reject (categories +
//             note) / reset, "Move to…" another character;
//   "tile"    the workspace grid's thumbnail (selection checkbox and status only: the controls are in
//             the detail beside it);
//   "detail"  the workspace's current image: a large preview (`preview`) and the controls (`el`), the
//             rejection categories always open.
// The section (panel_approvals.js) owns the list, the selection, the current image and the counts; it
// drives a card from the keyboard through the returned actions (approve, reject, toggleCategory, …) and
// a card reports back through `hooks`:
//   hooks.isSelected(id) -> bool, hooks.onSelect(id, checked)
//   hooks.onDecided(images)            image records after a decision (status changed or not)
//   hooks.onFailed(id)                 a decision failed (the error is shown)
//   hooks.onMoved(image, before)       the image record after a reassign, and the one before
//   hooks.onCaption(image)             the image record after a caption edit
//   hooks.moveOptions(image) -> [<option>|<optgroup>]  choices for "Move to…" (a character's id, or
//                                      "unassigned": the project's unassigned pool)
//   hooks.run(fn) -> Promise           runs a request after the ones before it (decisions stay in order)
//   hooks.isBusy(id), hooks.setBusy(id, on)  a decision on the image is on its way
//   hooks.backToGrid()                 leave a text field: keys are shortcuts again
//
// Declarations only (ComfyUI imports every .js file of the pack). API text goes through
// textContent (the `h` helper), never innerHTML.

import { h, humanize, fallbackImg } from "./panel_dom.js";

export const STATUSES = ["pending", "approved", "rejected"];
export const THUMB_SIZE = 256;

/** The card's data-testid: pending cards keep the historical `pending-card-<id>`. */
export function cardTestId(image) {
  return image.status === "pending" ? `pending-card-${Number(image.id)}` : `image-card-${Number(image.id)}`;
}

/** The image's file and its thumbnail (GET /images/{id}/thumb; the file when the thumbnail fails). */
export function imageURLs(api, id) {
  return { file: api.url(`/images/${id}/file`), thumb: api.url(`/images/${id}/thumb?size=${THUMB_SIZE}`) };
}

/** Category checkboxes (numbered 1–6: the keys that toggle them) + note + error line, for one card or a batch. */
export function rejectFields(categories, testidOf, noteTestid, errorTestid) {
  const boxes = [];
  const checks = Object.entries(categories).map(([key, terms], i) => {
    const box = h("input", { type: "checkbox", value: key, testid: testidOf(key) });
    boxes.push(box);
    return h("label", { class: "ls-check", title: `${i < 9 ? `key ${i + 1} · ` : ""}${terms ? `adds: ${terms}` : ""}` },
      box, i < 9 ? h("kbd", { class: "ls-kbd" }, String(i + 1)) : null, humanize(key));
  });
  const note = h("input", { type: "text", placeholder: "note (optional) · N", testid: noteTestid,
    "aria-label": "Rejection note" });
  const error = h("div", { class: "ls-error", testid: errorTestid, hidden: true, role: "alert" });
  const chosen = () => boxes.filter((b) => b.checked).map((b) => b.value);
  return {
    checks,
    note,
    error,
    /** Whether a category or a note is given (R then rejects at once). */
    filled: () => chosen().length > 0 || note.value.trim() !== "",
    /** Toggle the i-th category (0-based); its key, or null when there is none. */
    toggle(i) {
      const box = boxes[i];
      if (!box) return null;
      box.checked = !box.checked;
      error.hidden = true;
      return box.value;
    },
    /** {categories, note} or null (and the error shown) when neither is given. */
    read() {
      const cats = chosen();
      const text = note.value.trim();
      if (!cats.length && !text) {
        error.textContent = `Choose at least one category (keys 1–${Math.min(boxes.length, 9)}) or write a note (N).`;
        error.hidden = false;
        return null;
      }
      error.hidden = true;
      return { categories: cats, note: text };
    },
    clear() {
      for (const b of boxes) b.checked = false;
      note.value = "";
      error.hidden = true;
    },
    fail(message) {
      error.textContent = message;
      error.hidden = false;
    },
  };
}

export function reviewCard(ctx, image, hooks, variant = "card") {
  const { api } = ctx;
  const id = Number(image.id);
  const urls = imageURLs(api, id);
  const detail = variant === "detail";
  const noop = () => false;

  // selection
  const select = h("input", { type: "checkbox", testid: `select-${id}`, checked: hooks.isSelected(id),
    "aria-label": `Select image ${id}`, onchange: () => hooks.onSelect(id, select.checked) });
  const statusBadge = image.status !== "pending"
    ? h("span", { class: `ls-badge ls-status-${image.status}`, title: image.status }, image.status) : null;

  if (variant === "tile") {
    const el = h("div", { class: "ls-card ls-tile", testid: cardTestId(image), "data-image-id": String(id),
      "data-status": image.status, title: `#${id}${image.caption ? ` · ${image.caption}` : ""}` },
    h("div", { class: "ls-thumb-wrap" },
      h("div", { class: "ls-thumb" },
        fallbackImg(urls.thumb, urls.file, { alt: image.caption || `image ${id}`, loading: "lazy",
          testid: `pending-img-${id}` })),
      h("label", { class: "ls-select", title: "Select (Space; Shift-click for a range)" }, select),
      statusBadge ? h("span", { class: "ls-tile-status" }, statusBadge) : null));
    return { el, id, image, setSelected: (on) => { select.checked = on; }, refreshMoveOptions() {},
      approve: noop, reject: noop, reset: noop, toggleCategory: () => null, focusNote: noop, focusCaption: noop,
      focusMove: noop };
  }

  const buttons = [];
  const setBusy = (busy) => {
    hooks.setBusy(id, busy);
    buttons.forEach((b) => { b.disabled = busy; });
  };

  // decisions
  const approve = h("button", { class: "ls-btn ls-ok", testid: `approve-${id}`, title: "Approve (A)",
    hidden: image.status === "approved" }, "Approve");
  const reject = h("button", { class: "ls-btn ls-danger", testid: `reject-${id}`,
    title: detail ? "Reject with the categories and note below (R)" : "Reject… (R)",
    hidden: image.status === "rejected" }, "Reject");
  const reset = h("button", { class: "ls-btn", testid: `reset-${id}`, title: "Back to pending",
    hidden: image.status === "pending" }, "Reset");
  const fields = rejectFields(ctx.state.categories, (key) => `reject-cat-${id}-${key}`, `reject-note-${id}`,
    `reject-error-${id}`);
  const confirm = h("button", { class: "ls-btn ls-danger", testid: `reject-confirm-${id}`, hidden: detail },
    "Reject");
  const cancel = h("button", { class: "ls-btn", testid: `reject-cancel-${id}`, hidden: detail }, "Cancel");
  const form = h("div", { class: "ls-reject", testid: `reject-form-${id}`, hidden: !detail || image.status === "rejected" },
    detail ? h("div", { class: "ls-muted" }, "Rejection reasons") : null,
    h("div", { class: "ls-reject-checks" }, fields.checks), fields.note, fields.error,
    h("div", { class: "ls-actions" }, confirm, cancel));

  // caption
  const caption = h("textarea", { class: "ls-caption-edit", rows: detail ? 3 : 2, testid: `caption-${id}`,
    placeholder: "caption · E", "aria-label": `Caption of image ${id}`,
    title: "Enter saves, Shift+Enter a new line, Esc back to the keys" });
  caption.value = image.caption || "";
  const saveCaption = h("button", { class: "ls-btn", testid: `caption-save-${id}`, title: "Save the caption (Enter)",
    disabled: true }, "Save caption");

  // move to another character
  const move = h("select", { testid: `move-${id}`, class: "ls-move", "aria-label": `Move image ${id} to…`,
    title: "Move to another character (M)" });
  const fillMove = () => {
    move.replaceChildren(h("option", { value: "" }, "Move to…"), ...hooks.moveOptions(image));
    move.value = "";
  };
  fillMove();

  buttons.push(approve, reject, reset, confirm, cancel, saveCaption, move, caption);

  const sug = image.suggestion && image.suggestion.character_id != null ? image.suggestion : null;
  const sugChar = sug ? ctx.state.characters.find((c) => c.id === sug.character_id) : null;
  const suggestion = sug ? h("div", { class: "ls-muted", testid: `suggestion-${id}`,
    title: "The classifier's suggestion" }, `suggested: ${sugChar ? sugChar.name : `character ${sug.character_id}`}`
    + ` · ${Math.round((Number(sug.confidence) || 0) * 100)}%`) : null;
  const meta = [`#${id}`, image.width && image.height ? `${image.width}×${image.height}` : "", image.source || ""]
    .filter(Boolean).join(" · ");
  const metaLine = h("div", { class: "ls-muted ls-meta" }, meta, statusBadge ? " · " : null, statusBadge,
    image.file_missing ? h("span", { class: "ls-error" }, " · file missing") : null);
  const last = image.last_rejection;
  const lastLine = detail && last && image.status === "rejected"
    ? h("div", { class: "ls-muted", testid: `last-rejection-${id}` }, "rejected for: ",
      [...(last.categories || []).map(humanize), last.note || ""].filter(Boolean).join(" · ")) : null;
  const original = image.metadata && typeof image.metadata.original_name === "string" ? image.metadata.original_name : "";

  const body = h("div", { class: detail ? "ls-detail-body" : "ls-card-body" },
    metaLine, detail && original ? h("div", { class: "ls-muted ls-wrap" }, original) : null, lastLine, suggestion,
    detail ? h("div", { class: "ls-actions" }, approve, reject, reset) : null,
    detail ? form : null,
    caption, h("div", { class: "ls-actions" }, saveCaption),
    detail ? null : h("div", { class: "ls-actions" }, approve, reject, reset),
    detail ? null : form, move);

  let el;
  let preview = null;
  if (detail) {
    el = h("div", { class: "ls-detail", testid: "review-detail", "data-image-id": String(id),
      "data-status": image.status }, body);
    const big = fallbackImg(urls.file, null, { alt: image.caption || `image ${id}`, testid: "review-preview-img",
      "data-image-id": String(id) });
    preview = h("a", { class: "ls-preview-box", href: urls.file, target: "_blank", rel: "noopener",
      title: "Open the full-size file" }, big);
  } else {
    el = h("div", { class: "ls-card", testid: cardTestId(image), "data-image-id": String(id),
      "data-status": image.status },
    h("div", { class: "ls-thumb-wrap" },
      h("div", { class: "ls-thumb", title: "Double-click: open in the workspace" },
        fallbackImg(urls.thumb, urls.file, { alt: image.caption || `image ${id}`, loading: "lazy",
          testid: `pending-img-${id}` })),
      h("label", { class: "ls-select", title: "Select (Space; Shift-click for a range)" }, select)),
    body);
  }

  if (hooks.isBusy(id)) buttons.forEach((b) => { b.disabled = true; });

  const decide = (label, call) => {
    setBusy(true);
    return hooks.run(call).then((images) => {
      setBusy(false);
      hooks.onDecided(images);
      return true;
    }, (e) => {
      setBusy(false);
      ctx.showError(e, `${label} failed`);
      if (label === "Reject") fields.fail(e.message);
      hooks.onFailed(id, e);
      return false;
    });
  };
  const canDecide = () => !hooks.isBusy(id);

  function doApprove() {
    if (!canDecide() || approve.hidden) return false;
    decide("Approve", async () => [await api.post(`/images/${id}/approve`)]);
    return true;
  }
  function doReset() {
    if (!canDecide() || reset.hidden) return false;
    decide("Reset", async () => (await api.post("/images/decisions", { image_ids: [id], decision: "reset" })).images || []);
    return true;
  }
  /** Reject with the chosen categories / note; with none, open the form and say what is missing. */
  function doReject() {
    if (!canDecide() || reject.hidden) return false;
    if (form.hidden) {
      form.hidden = false;
      if (!fields.filled()) return false;
    }
    const reason = fields.read();
    if (!reason) return false;
    decide("Reject", async () => [await api.post(`/images/${id}/reject`, reason)]);
    return true;
  }

  approve.addEventListener("click", doApprove);
  reset.addEventListener("click", doReset);
  reject.addEventListener("click", () => {
    if (detail) return doReject();
    form.hidden = !form.hidden;
    if (!form.hidden) (form.querySelector("input") || fields.note).focus();
    return undefined;
  });
  cancel.addEventListener("click", () => {
    form.hidden = true;
    fields.error.hidden = true;
  });
  confirm.addEventListener("click", doReject);
  fields.note.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      if (doReject()) hooks.backToGrid();
    }
  });

  let savedCaption = caption.value;
  caption.addEventListener("input", () => { saveCaption.disabled = caption.value === savedCaption; });
  const doSaveCaption = async () => {
    if (caption.value === savedCaption) return;
    const text = caption.value;
    setBusy(true);
    try {
      const updated = await api.patch(`/images/${id}`, { caption: text });
      savedCaption = updated && typeof updated.caption === "string" ? updated.caption : text;
      if (caption.value === text) caption.value = savedCaption;
      setBusy(false);
      saveCaption.disabled = caption.value === savedCaption;
      ctx.toast("success", "Caption saved", `#${id}`);
      hooks.onCaption({ ...image, ...(updated || {}) });
    } catch (e) {
      setBusy(false);
      saveCaption.disabled = false;
      ctx.showError(e, "Cannot save the caption");
    }
  };
  saveCaption.addEventListener("click", doSaveCaption);
  caption.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { // captions are one line: Enter saves, Shift+Enter breaks the line
      ev.preventDefault();
      doSaveCaption();
      if (!ev.ctrlKey && !ev.metaKey) hooks.backToGrid();
    }
  });

  move.addEventListener("keydown", (ev) => {
    // a closed <select> moves the image on the first arrow key: open the list instead, Enter chooses
    if ((ev.key === "ArrowDown" || ev.key === "ArrowUp") && !ev.altKey && typeof move.showPicker === "function") {
      ev.preventDefault();
      try {
        move.showPicker();
      } catch {
        /* not allowed here: the arrow key does nothing */
      }
    }
  });
  move.addEventListener("change", async () => {
    const toPool = move.value === "unassigned"; // back to the project's unassigned pool
    const target = Number(move.value);
    if (!move.value || (!toPool && !Number.isFinite(target))) return;
    setBusy(true);
    try {
      const moved = await api.post(`/images/${id}/reassign`, toPool ? { unassigned: true } : { character_id: target });
      setBusy(false);
      hooks.onMoved(moved, image);
    } catch (e) {
      setBusy(false);
      move.value = "";
      ctx.showError(e, "Cannot move the image");
    }
  });

  return {
    el,
    preview,
    id,
    image,
    setSelected(on) {
      select.checked = on;
    },
    refreshMoveOptions: fillMove,
    approve: doApprove,
    reject: doReject,
    reset: doReset,
    /** Toggle the i-th rejection category (0-based) and show the form; the category's key or null. */
    toggleCategory(i) {
      if (reject.hidden) return null;
      form.hidden = false;
      return fields.toggle(i);
    },
    focusNote() {
      if (reject.hidden) return false;
      form.hidden = false;
      fields.note.focus();
      return true;
    },
    focusCaption() {
      caption.focus();
      caption.setSelectionRange(caption.value.length, caption.value.length);
      return true;
    },
    focusMove() {
      if (move.disabled) return false;
      move.focus();
      try {
        if (typeof move.showPicker === "function") move.showPicker();
      } catch {
        /* the list opens with Alt+↓ / Space instead */
      }
      return true;
    },
  };
}
