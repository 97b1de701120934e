// LoRA Studio panel: one image card of the review queue (Approvals tab). Selection checkbox,
// approve / reject (categories + note) / reset, inline caption editing and "Move to…" another
// character. The section (panel_approvals.js) owns the list, the selection and the counts; a
// card reports back through `hooks`:
//   hooks.isSelected(id) -> bool, hooks.onSelect(id, checked)
//   hooks.onDecided(images)            image records after a decision (status changed or not)
//   hooks.onMoved(image, before)       the image record after a reassign, and the one before
//   hooks.onCaption(image)             the image record after a caption edit
//   hooks.moveOptions(image) -> [<option>|<optgroup>]  choices for "Move to…" (a character's id, or
//                                      "unassigned": the project's unassigned pool)
//
// Declarations only (ComfyUI imports every .js file of the pack). API text goes through
// textContent (the `h` helper), never innerHTML.

import { h, humanize } from "./panel_dom.js";

export const STATUSES = ["pending", "approved", "rejected"];

/** The card's data-testid: pending cards keep the historical `pending-card-<id>`. */
export function cardTestId(image) {
  return image.status === "pending" ? `pending-card-${Number(image.id)}` : `image-card-${Number(image.id)}`;
}

/** Category checkboxes + note + error line, for one card or for a batch. */
export function rejectFields(categories, testidOf, noteTestid, errorTestid) {
  const checks = Object.entries(categories).map(([key, terms]) => {
    const box = h("input", { type: "checkbox", value: key, testid: testidOf(key) });
    return h("label", { class: "ls-check", title: terms ? `adds: ${terms}` : "" }, box, humanize(key));
  });
  const note = h("input", { type: "text", placeholder: "note (optional)", testid: noteTestid });
  const error = h("div", { class: "ls-error", testid: errorTestid, hidden: true });
  return {
    checks,
    note,
    error,
    /** {categories, note} or null (and the error shown) when neither is given. */
    read() {
      const chosen = checks.map((l) => l.querySelector("input")).filter((b) => b.checked).map((b) => b.value);
      const text = note.value.trim();
      if (!chosen.length && !text) {
        error.textContent = "Choose at least one category or write a note.";
        error.hidden = false;
        return null;
      }
      error.hidden = true;
      return { categories: chosen, note: text };
    },
    clear() {
      for (const l of checks) l.querySelector("input").checked = false;
      note.value = "";
      error.hidden = true;
    },
    fail(message) {
      error.textContent = message;
      error.hidden = false;
    },
  };
}

export function reviewCard(ctx, image, hooks) {
  const { api } = ctx;
  const id = Number(image.id);
  const src = api.url(`/images/${id}/file`);
  const buttons = [];
  const setBusy = (busy) => buttons.forEach((b) => { b.disabled = busy; });

  // selection
  const select = h("input", { type: "checkbox", testid: `select-${id}`, checked: hooks.isSelected(id),
    "aria-label": `Select image ${id}`, onchange: () => hooks.onSelect(id, select.checked) });

  // decisions
  const approve = h("button", { class: "ls-btn ls-ok", testid: `approve-${id}`, title: "Approve",
    hidden: image.status === "approved" }, "Approve");
  const reject = h("button", { class: "ls-btn ls-danger", testid: `reject-${id}`, title: "Reject…",
    hidden: image.status === "rejected" }, "Reject");
  const reset = h("button", { class: "ls-btn", testid: `reset-${id}`, title: "Back to pending",
    hidden: image.status === "pending" }, "Reset");
  const fields = rejectFields(ctx.state.categories, (key) => `reject-cat-${id}-${key}`, `reject-note-${id}`,
    `reject-error-${id}`);
  const confirm = h("button", { class: "ls-btn ls-danger", testid: `reject-confirm-${id}` }, "Reject");
  const cancel = h("button", { class: "ls-btn", testid: `reject-cancel-${id}` }, "Cancel");
  const form = h("div", { class: "ls-reject", testid: `reject-form-${id}`, hidden: true },
    fields.checks, fields.note, fields.error, h("div", { class: "ls-actions" }, confirm, cancel));

  // caption
  const caption = h("textarea", { class: "ls-caption-edit", rows: 2, testid: `caption-${id}`,
    placeholder: "caption", "aria-label": `Caption of image ${id}` });
  caption.value = image.caption || "";
  const saveCaption = h("button", { class: "ls-btn", testid: `caption-save-${id}`, title: "Save the caption",
    disabled: true }, "Save caption");

  // move to another character
  const move = h("select", { testid: `move-${id}`, class: "ls-move", "aria-label": `Move image ${id} to…` });
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
  const cardEl = h("div", { class: "ls-card", testid: cardTestId(image), "data-image-id": String(id),
    "data-status": image.status },
  h("div", { class: "ls-thumb-wrap" },
    h("a", { class: "ls-thumb", href: src, target: "_blank", rel: "noopener", title: "Open full size" },
      h("img", { src, alt: image.caption || `image ${id}`, loading: "lazy", testid: `pending-img-${id}` })),
    h("label", { class: "ls-select", title: "Select" }, select)),
  h("div", { class: "ls-card-body" },
    h("div", { class: "ls-muted" }, meta,
      image.status !== "pending" ? h("span", { class: `ls-badge ls-status-${image.status}` }, ` ${image.status}`) : null,
      image.file_missing ? h("span", { class: "ls-error" }, " · file missing") : null),
    suggestion, caption, h("div", { class: "ls-actions" }, saveCaption),
    h("div", { class: "ls-actions" }, approve, reject, reset),
    form, move));

  const decide = async (label, call) => {
    setBusy(true);
    try {
      const images = await call();
      hooks.onDecided(images);
      return true;
    } catch (e) {
      setBusy(false);
      ctx.showError(e, `${label} failed`);
      if (label === "Reject") fields.fail(e.message);
      return false;
    }
  };

  approve.addEventListener("click", () => decide("Approve", async () => [await api.post(`/images/${id}/approve`)]));
  reset.addEventListener("click", () => decide("Reset", async () => {
    const res = await api.post("/images/decisions", { image_ids: [id], decision: "reset" });
    return res.images || [];
  }));
  reject.addEventListener("click", () => {
    form.hidden = !form.hidden;
    if (!form.hidden) (form.querySelector("input") || fields.note).focus();
  });
  cancel.addEventListener("click", () => {
    form.hidden = true;
    fields.error.hidden = true;
  });
  const submitReject = () => {
    const reason = fields.read();
    if (!reason) return;
    decide("Reject", async () => [await api.post(`/images/${id}/reject`, reason)]);
  };
  confirm.addEventListener("click", submitReject);
  fields.note.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") submitReject();
  });

  let savedCaption = caption.value;
  caption.addEventListener("input", () => { saveCaption.disabled = caption.value === savedCaption; });
  const doSaveCaption = async () => {
    if (caption.value === savedCaption) return;
    setBusy(true);
    try {
      const updated = await api.patch(`/images/${id}`, { caption: caption.value });
      savedCaption = updated && typeof updated.caption === "string" ? updated.caption : caption.value;
      caption.value = savedCaption;
      setBusy(false);
      saveCaption.disabled = true;
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
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      doSaveCaption();
    }
  });

  move.addEventListener("change", async () => {
    const toPool = move.value === "unassigned"; // back to the project's unassigned pool
    const target = Number(move.value);
    if (!move.value || (!toPool && !Number.isFinite(target))) return;
    setBusy(true);
    try {
      const moved = await api.post(`/images/${id}/reassign`, toPool ? { unassigned: true } : { character_id: target });
      hooks.onMoved(moved, image);
    } catch (e) {
      setBusy(false);
      move.value = "";
      ctx.showError(e, "Cannot move the image");
    }
  });

  return {
    el: cardEl,
    id,
    setSelected(on) {
      select.checked = on;
    },
    refreshMoveOptions: fillMove,
  };
}
