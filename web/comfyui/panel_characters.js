// LoRA Studio panel, Characters tab: projects, characters, the SSOT prompt and the effective prompt.

import { h, humanize } from "./panel_dom.js";

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
  const catCounts = h("div", { class: "ls-chips", testid: "category-counts" });
  const loraName = h("div", { class: "ls-muted", testid: "effective-lora" });
  const promptBox = h("div", { class: "ls-box", testid: "effective-prompt" },
    h("h3", {}, "Effective prompt (what generation uses)"),
    h("div", { class: "ls-field" }, "Positive", positive),
    h("div", { class: "ls-field" }, "Negative", negative),
    h("div", { class: "ls-field" }, "Learned negative terms (from rejections)", learned),
    h("div", { class: "ls-field" }, "Rejections by category", catCounts),
    loraName);

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

  const el = h("section", { class: "ls-section" },
    h("div", { class: "ls-box" }, h("h3", {}, "Characters of this project"), list),
    editBox, promptBox,
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
    if (!c) return;
    editTitle.textContent = `${c.name} (${c.project_slug || ""}/${c.slug})`;
    editDesign.value = c.design_prompt || "";
    editNegative.value = c.negative_prompt || "";
    editTrigger.value = c.trigger_word || "";
  }

  let seq = 0;
  async function loadPrompt() {
    const c = ctx.character();
    if (!c) return;
    const token = ++seq;
    try {
      const p = await api.get(`/characters/${c.id}/prompt`);
      if (token !== seq) return;
      positive.textContent = p.positive || "";
      negative.textContent = p.negative || "";
      const terms = p.learned_terms || [];
      learned.replaceChildren(...(terms.length ? terms.map((t) => h("span", { class: "ls-chip" }, t))
        : [h("span", { class: "ls-muted" }, "none yet")]));
      const counts = Object.entries(p.category_counts || {}).filter(([, n]) => n > 0);
      catCounts.replaceChildren(...(counts.length ? counts.map(([k, n]) => h("span", { class: "ls-chip" }, `${humanize(k)}: ${n}`))
        : [h("span", { class: "ls-muted" }, "none")]));
      loraName.textContent = p.lora_name ? `Current LoRA: ${p.lora_name}` : "No LoRA trained yet.";
    } catch (e) {
      if (token === seq) ctx.showError(e, "Cannot load the effective prompt");
    }
  }

  return {
    el,
    refresh() {
      renderList();
      fillEdit();
      loadPrompt();
    },
    countsChanged: renderList,
  };
}
