// LoRA Studio panel, Characters tab: projects, characters, the SSOT prompt and the effective prompt
// (learned negative terms that can be left out and restored, rejections per category), the
// project's category terms, the project's generation style (panel_style_form.js: ComfyUI's sampler and
// scheduler lists), and the kohya zip export.
//
// The effective prompt follows the reviews without a manual reload: a decision anywhere in the panel changes
// the selected character's counts (ctx.adjustCounts / reloadCharacters call countsChanged), an automatic
// review or classification that ends is a job event, and the view asks again every 15 s while it is shown
// (rejections made elsewhere: another window, the API). Shown: at once; hidden: the next time it is shown.

import { h, humanize } from "./panel_dom.js";
import { styleForm } from "./panel_style_form.js";

const PROMPT_JOB_KINDS = new Set(["classify", "auto_review", "regenerate", "import_outputs"]);
const PROMPT_DEBOUNCE_MS = 250;
const PROMPT_POLL_TICKS = 5; // the panel ticks every 3 s

export function charactersSection(ctx) {
  const { api } = ctx;

  // new project
  const projectName = h("input", { type: "text", placeholder: "project name", testid: "new-project-name" });
  const projectDesc = h("input", { type: "text", placeholder: "description (optional)", testid: "new-project-description" });
  const createProject = h("button", { class: "ls-btn", testid: "create-project" }, "Create project");
  createProject.addEventListener("click", async () => {
    const name = projectName.value.trim();
    if (!name) return ctx.toast("warn", "Project", "Enter a project name.");
    createProject.disabled = true;
    try {
      const project = await api.post("/projects", { name, description: projectDesc.value.trim() });
      projectName.value = "";
      projectDesc.value = "";
      ctx.toast("success", "Project created", project.name);
      await ctx.reloadProjects(project.id);
    } catch (e) {
      ctx.showError(e, "Cannot create the project");
    } finally {
      createProject.disabled = false;
    }
  });

  // character list of the current project
  const list = h("div", { class: "ls-list", testid: "character-list" });

  // new character
  const newName = h("input", { type: "text", placeholder: "name", testid: "new-character-name" });
  const newTrigger = h("input", { type: "text", placeholder: "trigger word (optional)", testid: "new-character-trigger" });
  const newDesign = h("textarea", { placeholder: "design prompt: the single source of truth for the look",
    testid: "new-character-design" });
  const newNegative = h("textarea", { placeholder: "negative prompt (optional)", testid: "new-character-negative" });
  const createChar = h("button", { class: "ls-btn ls-primary", testid: "create-character" }, "Create character");
  createChar.addEventListener("click", async () => {
    const project = ctx.project();
    if (!project) return ctx.toast("warn", "Character", "Create or choose a project first.");
    const name = newName.value.trim();
    if (!name) return ctx.toast("warn", "Character", "Enter a name.");
    createChar.disabled = true;
    try {
      const c = await api.post(`/projects/${project.id}/characters`, {
        name, design_prompt: newDesign.value.trim(), negative_prompt: newNegative.value.trim(),
        trigger_word: newTrigger.value.trim(),
      });
      for (const input of [newName, newTrigger, newDesign, newNegative]) input.value = "";
      ctx.toast("success", "Character created", c.name);
      await ctx.reloadCharacters();
      ctx.selectCharacter(c.id);
    } catch (e) {
      ctx.showError(e, "Cannot create the character");
    } finally {
      createChar.disabled = false;
    }
  });

  // edit the selected character
  const editTitle = h("h3", {}, "Selected character");
  const editDesign = h("textarea", { testid: "edit-design-prompt", rows: 4 });
  const editNegative = h("textarea", { testid: "edit-negative-prompt", rows: 2 });
  const editTrigger = h("input", { type: "text", testid: "edit-trigger-word" });
  const save = h("button", { class: "ls-btn ls-primary", testid: "save-character" }, "Save");
  const editBox = h("div", { class: "ls-box", testid: "character-edit" }, editTitle,
    h("label", { class: "ls-field" }, "Design prompt (SSOT)", editDesign),
    h("label", { class: "ls-field" }, "Negative prompt", editNegative),
    h("label", { class: "ls-field" }, "Trigger word", editTrigger),
    h("div", { class: "ls-row" }, save));

  // effective prompt
  const positive = h("pre", { class: "ls-pre", testid: "effective-positive" });
  const negative = h("pre", { class: "ls-pre", testid: "effective-negative" });
  const learned = h("div", { class: "ls-chips", testid: "learned-terms" });
  const droppedList = h("div", { class: "ls-chips", testid: "dropped-terms" });
  const catCounts = h("div", { class: "ls-chips", testid: "category-counts" });
  const loraName = h("div", { class: "ls-muted", testid: "effective-lora" });
  const promptBox = h("div", { class: "ls-box", testid: "effective-prompt" },
    h("h3", {}, "Effective prompt (what generation uses)"),
    h("div", { class: "ls-field" }, "Positive", positive),
    h("div", { class: "ls-field" }, "Negative", negative),
    h("div", { class: "ls-field" }, "Learned negative terms (from rejections; × leaves one out)", learned),
    h("div", { class: "ls-field" }, "Left out (restore to learn them again)", droppedList),
    h("div", { class: "ls-field" }, "Rejections by category (most first)", catCounts),
    loraName);

  // export
  const exportRepeats = h("input", { type: "number", value: "10", min: 1, max: 1000, testid: "export-repeats" });
  const exportClass = h("input", { type: "text", value: "person", testid: "export-class", style: "width: 100px" });
  const exportLink = h("a", { class: "ls-btn", testid: "export-link", download: "", rel: "noopener" },
    "Download dataset (kohya zip)");
  const exportBox = h("div", { class: "ls-box", testid: "export-box" },
    h("h3", {}, "Export the approved images"),
    h("div", { class: "ls-row" }, h("label", {}, "Repeats", exportRepeats), h("label", {}, "Class", exportClass),
      exportLink));
  function updateExportLink() {
    const c = ctx.character();
    if (!c) {
      exportLink.removeAttribute("href");
      return;
    }
    const repeats = Math.max(1, Math.min(1000, Math.round(Number(exportRepeats.value) || 10)));
    const params = new URLSearchParams({ repeats: String(repeats), class: exportClass.value.trim() || "person" });
    exportLink.href = api.url(`/characters/${Number(c.id)}/export?${params}`);
  }
  exportRepeats.addEventListener("input", updateExportLink);
  exportClass.addEventListener("input", updateExportLink);

  // the project's rejection terms
  const feedbackInputs = h("div", { class: "ls-list", testid: "feedback-terms" });
  const feedbackSave = h("button", { class: "ls-btn ls-primary", testid: "feedback-terms-save" }, "Save terms");
  const feedbackBox = h("div", { class: "ls-box", testid: "feedback-terms-box" },
    h("h3", {}, "Rejection categories → negative terms (this project; empty = default)"),
    feedbackInputs, h("div", { class: "ls-row" }, feedbackSave));
  let feedbackData = null; // {terms, defaults} of the project shown
  let feedbackFor = null;

  save.addEventListener("click", async () => {
    const c = ctx.character();
    if (!c) return;
    save.disabled = true;
    try {
      await api.patch(`/characters/${c.id}`, {
        design_prompt: editDesign.value, negative_prompt: editNegative.value, trigger_word: editTrigger.value.trim(),
      });
      ctx.toast("success", "Saved", c.name);
      await ctx.reloadCharacters();
      await loadPrompt();
    } catch (e) {
      ctx.showError(e, "Cannot save the character");
    } finally {
      save.disabled = false;
    }
  });

  const style = styleForm(ctx, { prefix: "project-style" });

  const el = h("section", { class: "ls-section" },
    h("div", { class: "ls-box" }, h("h3", {}, "Characters of this project"), list),
    editBox, promptBox, style.el, exportBox, feedbackBox,
    h("div", { class: "ls-box" }, h("h3", {}, "New character"),
      h("div", { class: "ls-row" }, newName, newTrigger), newDesign, newNegative, h("div", { class: "ls-row" }, createChar)),
    h("div", { class: "ls-box" }, h("h3", {}, "New project"),
      h("div", { class: "ls-row" }, projectName, projectDesc, createProject)));

  function renderList() {
    const chars = ctx.charactersOfProject();
    if (!chars.length) {
      list.replaceChildren(h("div", { class: "ls-muted" }, ctx.project() ? "No characters yet." : "Create a project first."));
      return;
    }
    list.replaceChildren(...chars.map((c) => h("button", {
      class: "ls-btn ls-item", testid: `character-row-${Number(c.id)}`,
      "aria-current": String(c.id === ctx.state.characterId), onclick: () => ctx.selectCharacter(c.id),
    }, h("span", {}, c.name, c.trigger_word ? h("span", { class: "ls-muted" }, ` · ${c.trigger_word}`) : null),
    h("span", { class: "ls-muted" }, `${(c.counts && c.counts.pending) || 0} pending · ${(c.counts && c.counts.approved) || 0} approved`))));
  }

  function fillEdit() {
    const c = ctx.character();
    editBox.hidden = !c;
    promptBox.hidden = !c;
    exportBox.hidden = !c;
    if (!c) return;
    editTitle.textContent = `${c.name} (${c.project_slug || ""}/${c.slug})`;
    editDesign.value = c.design_prompt || "";
    editNegative.value = c.negative_prompt || "";
    editTrigger.value = c.trigger_word || "";
    updateExportLink();
  }

  let seq = 0;
  let droppedTerms = [];

  function renderPrompt(p) {
    positive.textContent = p.positive || "";
    negative.textContent = p.negative || "";
    const terms = p.learned_terms || [];
    droppedTerms = p.dropped_terms || [];
    learned.replaceChildren(...(terms.length ? terms.map((t) => h("span", { class: "ls-chip", testid: "learned-term",
      "data-term": t }, t, h("button", { class: "ls-chip-x", testid: `drop-term-${t}`, title: `Leave "${t}" out`,
      "aria-label": `Leave ${t} out`, onclick: (ev) => setDropped([...droppedTerms, t], ev.currentTarget) }, "×")))
      : [h("span", { class: "ls-muted" }, "none yet")]));
    droppedList.replaceChildren(...(droppedTerms.length ? droppedTerms.map((t) => h("span", {
      class: "ls-chip ls-chip-off", testid: "dropped-term", "data-term": t }, t,
    h("button", { class: "ls-chip-x", testid: `restore-term-${t}`, title: `Learn "${t}" again`,
      "aria-label": `Restore ${t}`, onclick: (ev) => setDropped(droppedTerms.filter((x) => x !== t), ev.currentTarget) },
    "↺"))) : [h("span", { class: "ls-muted" }, "none")]));
    const counts = Object.entries(p.category_counts || {})
      .sort(([ka, a], [kb, b]) => (b - a) || ka.localeCompare(kb));
    catCounts.replaceChildren(...(counts.length ? counts.map(([k, n]) => h("span", {
      class: n > 0 ? "ls-chip" : "ls-chip ls-chip-off", testid: `category-count-${k}`, "data-count": String(n) },
    `${humanize(k)}: ${n}`)) : [h("span", { class: "ls-muted" }, "none")]));
    loraName.textContent = p.lora_name ? `Current LoRA: ${p.lora_name}` : "No LoRA trained yet.";
  }

  async function loadPrompt({ quiet = false } = {}) {
    const c = ctx.character();
    if (!c) return;
    const token = ++seq;
    try {
      const p = await api.get(`/characters/${c.id}/prompt`);
      if (token !== seq) return;
      renderPrompt(p);
    } catch (e) {
      if (token === seq && !quiet) ctx.showError(e, "Cannot load the effective prompt");
    }
  }

  // the effective prompt after reviews: at once while shown, on the next showing otherwise
  let promptTimer = null;
  let countsSeen = null; // "<id>:<pending>/<approved>" of the selected character when last seen
  const countsKey = (c) => (c ? `${c.id}:${(c.counts && c.counts.pending) || 0}/${(c.counts && c.counts.approved) || 0}`
    : "");
  function promptMayHaveChanged() {
    if (ctx.isActive && !ctx.isActive("characters")) {
      if (ctx.markStale) ctx.markStale("characters");
      return;
    }
    clearTimeout(promptTimer);
    promptTimer = setTimeout(() => loadPrompt({ quiet: true }), PROMPT_DEBOUNCE_MS);
  }

  async function setDropped(terms, button) {
    const c = ctx.character();
    if (!c) return;
    const token = ++seq;
    if (button) button.disabled = true;
    try {
      const p = await api.put(`/characters/${c.id}/dropped-terms`, { terms: Array.from(new Set(terms)) });
      if (token === seq) renderPrompt(p);
    } catch (e) {
      if (button) button.disabled = false;
      ctx.showError(e, "Cannot change the learned terms");
    }
  }

  function renderFeedbackTerms() {
    const data = feedbackData || { terms: {}, defaults: {} };
    const keys = Object.keys(data.defaults || {}).length ? Object.keys(data.defaults) : Object.keys(ctx.state.categories);
    feedbackInputs.replaceChildren(...keys.map((k) => {
      const def = (data.defaults || {})[k] || "";
      const current = (data.terms || {})[k] ?? def;
      const input = h("input", { type: "text", testid: `feedback-term-${k}`, "data-category": k,
        placeholder: def, "aria-label": humanize(k), style: "width: 100%" });
      input.value = current;
      return h("label", { class: "ls-field", title: def ? `default: ${def}` : "" }, humanize(k), input);
    }));
  }

  async function loadFeedbackTerms(force) {
    const project = ctx.project();
    feedbackBox.hidden = !project;
    if (!project) return;
    if (!force && feedbackFor === project.id && feedbackData) return;
    try {
      const data = await api.get(`/projects/${project.id}/feedback-terms`);
      if (!ctx.project() || ctx.project().id !== project.id) return;
      feedbackData = data;
      feedbackFor = project.id;
      renderFeedbackTerms();
    } catch (e) {
      ctx.showError(e, "Cannot load the rejection terms");
    }
  }

  feedbackSave.addEventListener("click", async () => {
    const project = ctx.project();
    if (!project || feedbackFor !== project.id) return;
    const defaults = (feedbackData && feedbackData.defaults) || {};
    const body = {};
    for (const input of feedbackInputs.querySelectorAll("input[data-category]")) {
      const k = input.dataset.category;
      const v = input.value.trim();
      body[k] = !v || v === defaults[k] ? null : v;
    }
    feedbackSave.disabled = true;
    try {
      feedbackData = await api.patch(`/projects/${project.id}/feedback-terms`, body);
      renderFeedbackTerms();
      ctx.toast("success", "Rejection terms saved", project.name);
      await loadPrompt();
    } catch (e) {
      ctx.showError(e, "Cannot save the rejection terms");
    } finally {
      feedbackSave.disabled = false;
    }
  });

  let ticks = 0;
  return {
    el,
    refresh() {
      countsSeen = countsKey(ctx.character());
      renderList();
      fillEdit();
      loadPrompt();
      loadFeedbackTerms(true);
      style.load(ctx.project());
    },
    countsChanged() {
      renderList();
      const key = countsKey(ctx.character());
      if (countsSeen !== null && key !== countsSeen && key.split(":")[0] === countsSeen.split(":")[0]) {
        promptMayHaveChanged(); // a decision on the selected character: a rejection teaches terms
      }
      countsSeen = key;
    },
    onJob(job) {
      const c = ctx.character();
      if (!c || !job || !PROMPT_JOB_KINDS.has(job.kind) || ["queued", "running"].includes(job.status)) return;
      if (job.character_id === c.id || job.character_id == null) promptMayHaveChanged();
    },
    tick() {
      ticks += 1;
      if (ticks % PROMPT_POLL_TICKS === 0 && ctx.isActive && ctx.isActive("characters")) loadPrompt({ quiet: true });
    },
    destroy() {
      clearTimeout(promptTimer);
    },
  };
}
