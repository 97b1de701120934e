// LoRA Studio panel: the selected character's SSOT design prompt and negative prompt, editable
// while reviewing (top of the Approvals tab), with the effective negative prompt generation uses
// (style negative + character negative + learned feedback terms, from GET /characters/{id}/prompt).
// Saving goes through PATCH /characters/{id} (the same route as the Characters tab); unsaved
// edits survive a refresh of the same character and are dropped when another one is chosen.
//
// Declarations only (ComfyUI imports every .js file of the pack). API text goes through
// textContent (the `h` helper), never innerHTML.

import { h } from "./panel_dom.js";

export function ssotEditor(ctx) {
  const { api } = ctx;
  const name = h("span", { testid: "ssot-character" });
  const dirtyMark = h("span", { class: "ls-muted", testid: "ssot-dirty", hidden: true }, " · unsaved");
  const design = h("textarea", { testid: "ssot-design", rows: 3, "aria-label": "Design prompt (SSOT)",
    placeholder: "design prompt: the single source of truth for the look" });
  const negative = h("textarea", { testid: "ssot-negative", rows: 2, "aria-label": "Character negative prompt",
    placeholder: "negative prompt of this character (optional)" });
  const save = h("button", { class: "ls-btn ls-primary", testid: "ssot-save", disabled: true,
    title: "Save (Ctrl+Enter)" }, "Save prompt");
  const revert = h("button", { class: "ls-btn", testid: "ssot-revert", disabled: true }, "Revert");
  const error = h("div", { class: "ls-error", testid: "ssot-error", hidden: true });
  const effective = h("pre", { class: "ls-pre", testid: "ssot-effective-negative" });
  const learned = h("span", { class: "ls-muted", testid: "ssot-learned" });
  const el = h("details", { class: "ls-box ls-ssot", testid: "ssot-box", open: true, hidden: true },
    h("summary", {}, h("strong", {}, "SSOT prompt · "), name, dirtyMark),
    h("label", { class: "ls-field" }, "Design prompt (every later generation uses it)", design),
    h("label", { class: "ls-field" }, "Negative prompt", negative),
    h("div", { class: "ls-row" }, save, revert, error),
    h("div", { class: "ls-field" }, h("span", {}, "Effective negative prompt ", learned), effective));

  let forId = null; // the character the fields belong to
  let saved = { design: "", negative: "" };
  let seq = 0;
  let saving = false;

  const dirty = () => design.value !== saved.design || negative.value !== saved.negative;
  function updateButtons() {
    const d = dirty();
    save.disabled = saving || !d;
    revert.disabled = saving || !d;
    dirtyMark.hidden = !d;
  }

  function fill(c) {
    forId = c.id;
    saved = { design: c.design_prompt || "", negative: c.negative_prompt || "" };
    design.value = saved.design;
    negative.value = saved.negative;
    error.hidden = true;
    updateButtons();
  }

  async function reloadPrompt() {
    const c = ctx.character();
    if (!c) return;
    const token = ++seq;
    try {
      const p = await api.get(`/characters/${c.id}/prompt`);
      if (token !== seq || forId !== c.id) return;
      effective.textContent = p.negative || "";
      const n = (p.learned_terms || []).length;
      learned.textContent = n ? `(${n} learned term(s) from rejections; leave one out in Characters)` : "";
    } catch (e) {
      if (token === seq) ctx.showError(e, "Cannot load the effective prompt");
    }
  }

  function refresh() {
    const c = ctx.character();
    el.hidden = !c;
    if (!c) {
      forId = null;
      return;
    }
    name.textContent = c.name;
    if (c.id !== forId || !dirty()) fill(c);
    reloadPrompt();
  }

  async function doSave() {
    const c = ctx.character();
    if (!c || c.id !== forId || !dirty() || saving) return;
    const body = { design_prompt: design.value, negative_prompt: negative.value };
    saving = true;
    updateButtons();
    try {
      const updated = await api.patch(`/characters/${c.id}`, body);
      const local = ctx.state.characters.find((x) => x.id === c.id);
      if (local) Object.assign(local, updated || body); // the other tabs read the same record
      ctx.markStale("characters", "generate");
      if (forId === c.id) {
        saved = { design: body.design_prompt, negative: body.negative_prompt };
        error.hidden = true;
      }
      ctx.toast("success", "SSOT prompt saved", c.name);
      await reloadPrompt();
    } catch (e) {
      if (forId === c.id) {
        error.textContent = e.message;
        error.hidden = false;
      }
      ctx.showError(e, "Cannot save the SSOT prompt");
    } finally {
      saving = false;
      updateButtons();
    }
  }

  design.addEventListener("input", updateButtons);
  negative.addEventListener("input", updateButtons);
  save.addEventListener("click", doSave);
  revert.addEventListener("click", () => {
    design.value = saved.design;
    negative.value = saved.negative;
    error.hidden = true;
    updateButtons();
  });
  el.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && (ev.target === design || ev.target === negative)) {
      ev.preventDefault();
      doSave();
    }
  });

  return { el, refresh, reloadPrompt };
}
