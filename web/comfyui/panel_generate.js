// LoRA Studio panel, Generate tab: queue a txt2img on ComfyUI; edit the project's style.

import { h, numberOrUndefined } from "./panel_dom.js";

const STYLE_FIELDS = [
  ["checkpoint", "text", "Checkpoint"], ["sampler", "text", "Sampler"], ["scheduler", "text", "Scheduler"],
  ["steps", "int", "Steps"], ["cfg", "float", "CFG"], ["width", "int", "Width"], ["height", "int", "Height"],
  ["clip_skip", "int", "CLIP skip"], ["lora_strength", "float", "LoRA strength"],
  ["positive_template", "area", "Positive template"], ["negative_template", "area", "Negative template"],
];

export function generateSection(ctx) {
  const { api } = ctx;
  const target = h("div", { class: "ls-muted", testid: "gen-target" });
  const seed = h("input", { type: "number", min: 0, placeholder: "random", testid: "gen-seed", style: "width: 140px" });
  const batch = h("input", { type: "number", value: "1", min: 1, max: 16, testid: "gen-batch" });
  const useLora = h("input", { type: "checkbox", checked: true, testid: "gen-use-lora" });
  const submit = h("button", { class: "ls-btn ls-primary", testid: "gen-submit" }, "Queue generation");
  const result = h("div", { class: "ls-box", testid: "gen-result", hidden: true });
  const errorBox = h("div", { class: "ls-error", testid: "gen-error", hidden: true });
  let lastGeneration = null;
  let polling = false;

  async function refreshGeneration() {
    const g = await api.get(`/generations/${Number(lastGeneration.id)}`);
    if (lastGeneration && g.id === lastGeneration.id) showGeneration(g);
  }

  function showGeneration(g) {
    lastGeneration = g;
    const outputs = Array.isArray(g.outputs) ? g.outputs : [];
    const refresh = h("button", { class: "ls-btn", testid: "gen-refresh" }, "Refresh status");
    refresh.addEventListener("click", async () => {
      refresh.disabled = true;
      try {
        await refreshGeneration();
      } catch (e) {
        refresh.disabled = false;
        ctx.showError(e, "Cannot refresh the generation");
      }
    });
    const thumbs = outputs.filter((o) => o && o.filename && (!o.type || o.type === "output")).map((o) => {
      const path = o.subfolder ? `${o.subfolder}/${o.filename}` : o.filename;
      const src = api.url(`/gallery/file?path=${encodeURIComponent(path)}`);
      return h("a", { class: "ls-thumb", href: src, target: "_blank", rel: "noopener" }, h("img", { src, alt: o.filename }));
    });
    result.replaceChildren(
      h("h3", {}, `Generation #${g.id}`),
      h("div", { testid: "gen-status" }, `status: ${g.status}`),
      h("div", { class: "ls-muted" }, `ComfyUI prompt id: ${g.prompt_id || "–"}`),
      g.error ? h("div", { class: "ls-error" }, String(g.error)) : null,
      thumbs.length ? h("div", { class: "ls-grid" }, thumbs) : null,
      h("div", { class: "ls-row" }, refresh));
    result.hidden = false;
  }

  submit.addEventListener("click", async () => {
    const c = ctx.character();
    if (!c) return ctx.toast("warn", "Generate", "Choose a character first.");
    const body = { use_lora: useLora.checked };
    const s = numberOrUndefined(seed);
    const b = numberOrUndefined(batch);
    if (s !== undefined) body.seed = Math.round(s);
    if (b !== undefined) body.batch_size = Math.round(b);
    submit.disabled = true;
    errorBox.hidden = true;
    try {
      const g = await api.post(`/characters/${c.id}/generate`, body);
      showGeneration(g);
      ctx.toast("success", "Generation queued", `#${g.id} on ComfyUI`);
    } catch (e) {
      errorBox.textContent = e.message;
      errorBox.hidden = false;
      ctx.showError(e, "Generation failed");
    } finally {
      submit.disabled = false;
    }
  });

  // project style
  const styleInputs = {};
  let styleSeq = 0;
  const styleRows = STYLE_FIELDS.map(([key, kind, label]) => {
    const input = kind === "area"
      ? h("textarea", { rows: 2, testid: `style-${key}` })
      : h("input", { type: kind === "text" ? "text" : "number", step: kind === "float" ? "any" : "1", testid: `style-${key}` });
    styleInputs[key] = input;
    return h("label", { class: kind === "area" ? "ls-field" : "", style: kind === "area" ? "width:100%" : "" }, label, input);
  });
  const styleTitle = h("h3", {}, "Project style");
  const saveStyle = h("button", { class: "ls-btn", testid: "style-save" }, "Save style");
  saveStyle.addEventListener("click", async () => {
    const p = ctx.project();
    if (!p) return;
    const body = {};
    for (const [key, kind] of STYLE_FIELDS) {
      const input = styleInputs[key];
      if (kind === "int" || kind === "float") {
        const n = numberOrUndefined(input);
        if (n !== undefined) body[key] = kind === "int" ? Math.round(n) : n;
      } else body[key] = input.value;
    }
    saveStyle.disabled = true;
    try {
      fillStyle(await api.patch(`/projects/${p.id}/style`, body));
      ctx.toast("success", "Style saved", p.name);
    } catch (e) {
      ctx.showError(e, "Cannot save the style");
    } finally {
      saveStyle.disabled = false;
    }
  });
  function fillStyle(style) {
    for (const [key] of STYLE_FIELDS) {
      const v = style[key];
      styleInputs[key].value = v === null || v === undefined ? "" : String(v);
    }
  }
  const styleBox = h("div", { class: "ls-box", testid: "style-form" }, styleTitle,
    h("div", { class: "ls-row" }, styleRows), h("div", { class: "ls-row" }, saveStyle));

  const el = h("section", { class: "ls-section" },
    h("div", { class: "ls-box" }, h("h3", {}, "Generate on ComfyUI"), target,
      h("div", { class: "ls-row" }, h("label", {}, "Seed", seed), h("label", {}, "Batch", batch),
        h("label", { class: "ls-check", style: "align-self: flex-end; padding-bottom: 4px" }, useLora, "use the current LoRA")),
      h("div", { class: "ls-row" }, submit), errorBox),
    result, styleBox);

  return {
    el,
    async refresh() {
      const c = ctx.character();
      const p = ctx.project();
      target.textContent = c ? `Character: ${c.name}` : "Choose a character first.";
      submit.disabled = !c;
      styleBox.hidden = !p;
      if (!p) return;
      styleTitle.textContent = `Project style: ${p.name}`;
      // the inputs stay disabled until the style arrives, so nothing typed meanwhile is overwritten
      const token = ++styleSeq;
      const controls = [...Object.values(styleInputs), saveStyle];
      controls.forEach((c) => { c.disabled = true; });
      try {
        const style = await api.get(`/projects/${p.id}/style`);
        if (token === styleSeq) fillStyle(style);
      } catch (e) {
        if (token === styleSeq) ctx.showError(e, "Cannot load the project style");
      } finally {
        if (token === styleSeq) controls.forEach((c) => { c.disabled = false; });
      }
    },
    selectionChanged() {
      result.hidden = true;
      errorBox.hidden = true;
      lastGeneration = null;
    },
    async tick() {
      // follow a queued generation until ComfyUI's history has it
      if (polling || !lastGeneration || lastGeneration.status !== "queued" || !ctx.isActive("generate")) return;
      polling = true;
      try {
        await refreshGeneration();
      } catch {
        /* ComfyUI may be busy or restarting: try again on the next tick */
      } finally {
        polling = false;
      }
    },
  };
}
