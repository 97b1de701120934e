// LoRA Studio panel: what the review judges against, kept in sight while reviewing — the character's
// top rejection reasons (category counts, most first) and latest rejection notes and, in the workspace
// (under the large preview), the positive prompt generation uses (style + trigger + SSOT design prompt)
// and the effective negative prompt (style + character + learned terms). From
// GET /characters/{id}/prompt; reloaded after every rejection and undo.
//
// Declarations only (ComfyUI imports every .js file of the pack). API text goes through textContent.

import { h, humanize } from "./panel_dom.js";

const TOP = 3;
const NOTES = 2;

export function reasonsBox(ctx) {
  const { api } = ctx;
  const reasons = h("div", { class: "ls-chips", testid: "top-reasons" });
  const notes = h("div", { class: "ls-list ls-notes", testid: "rejection-notes" });
  const positive = h("pre", { class: "ls-pre", testid: "review-positive" });
  const negative = h("pre", { class: "ls-pre", testid: "review-negative" });
  const learned = h("span", { class: "ls-muted", testid: "review-learned" });
  const error = h("div", { class: "ls-error", testid: "reasons-error", hidden: true });
  const el = h("div", { class: "ls-box ls-reasons", testid: "reasons-box", hidden: true },
    h("div", { class: "ls-field ls-wide-only" }, h("span", {}, "SSOT prompt (positive, as generation uses it)"),
      positive),
    h("div", { class: "ls-field ls-wide-only" }, h("span", {}, "Effective negative prompt ", learned), negative),
    h("div", { class: "ls-row" }, h("strong", {}, "Top rejection reasons"), reasons), notes, error);
  let seq = 0;

  function render(p) {
    const counts = Object.entries(p.category_counts || {}).filter(([, n]) => Number(n) > 0)
      .sort((a, b) => b[1] - a[1]).slice(0, TOP);
    reasons.replaceChildren(...(counts.length
      ? counts.map(([key, n]) => h("span", { class: "ls-chip", testid: `top-reason-${key}`, "data-count": String(n) },
        `${humanize(key)} ×${n}`))
      : [h("span", { class: "ls-muted" }, "none yet")]));
    notes.replaceChildren(...(p.rejection_notes || []).filter((n) => n && n.note).slice(0, NOTES)
      .map((n) => h("div", { class: "ls-muted ls-wrap", title: `image #${n.image_id}` }, `“${n.note}”`)));
    positive.textContent = p.positive || "";
    negative.textContent = p.negative || "";
    const n = (p.learned_terms || []).length;
    learned.textContent = n ? `(${n} learned from rejections)` : "";
  }

  async function reload() {
    const c = ctx.character();
    const token = ++seq;
    el.hidden = !c;
    if (!c) return;
    try {
      const p = await api.get(`/characters/${c.id}/prompt`);
      if (token !== seq) return;
      error.hidden = true;
      render(p);
    } catch (e) {
      if (token !== seq) return;
      error.textContent = `Cannot load the rejection reasons: ${e.message}`;
      error.hidden = false;
    }
  }

  return { el, reload };
}
