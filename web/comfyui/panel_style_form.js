// LoRA Studio panel: the project's generation style as a form. Sampler and scheduler are <select>s of the
// names ComfyUI itself offers (GET /samplers: ComfyUI's KSampler lists, or its standard lists while it does not
// answer); the checkpoint is a <select> of ComfyUI's own checkpoint list (GET /checkpoints) and, while ComfyUI does
// not answer, a text input whose suggestions (a <datalist>) are the .safetensors files the studio sees (GET /models).
// A value the lists do not have (an older style) stays selectable, marked.
//
// Exported (declarations only at import):
//   styleForm(ctx, { prefix = "style" }) -> { el, load(project), reload() }
//     data-testids: `${prefix}-form`, `${prefix}-<field>` (checkpoint, sampler, scheduler, steps, cfg, width,
//     height, clip_skip, lora_strength, positive_template, negative_template, variations), `${prefix}-save`,
//     `${prefix}-error`, `${prefix}-lists` (where the lists came from).
//   STYLE_FIELDS: the fields, their kinds and labels.

import { h, numberOrUndefined } from "./panel_dom.js";

export const STYLE_FIELDS = [
  ["checkpoint", "checkpoint", "Checkpoint"], ["sampler", "sampler", "Sampler"], ["scheduler", "scheduler", "Scheduler"],
  ["steps", "int", "Steps"], ["cfg", "float", "CFG"], ["width", "int", "Width"], ["height", "int", "Height"],
  ["clip_skip", "int", "CLIP skip"], ["lora_strength", "float", "LoRA strength"],
  ["positive_template", "area", "Positive template"], ["negative_template", "area", "Negative template"],
  ["variations", "lines", "Variations (one per line: batch generation uses them in turn)"],
];

let datalistCount = 0;

/** Fill a <select> with `names`; a current value not among them stays, marked, so saving keeps it. */
export function fillSelect(select, names, current) {
  const options = names.map((n) => h("option", { value: n }, n));
  if (current && !names.includes(current)) {
    options.unshift(h("option", { value: current }, `${current} (not in ComfyUI's list)`));
  }
  if (!current && !names.length) options.push(h("option", { value: "" }, "(none)"));
  select.replaceChildren(...options);
  select.value = current || names[0] || "";
}

export function styleForm(ctx, { prefix = "style" } = {}) {
  const { api } = ctx;
  const inputs = {};
  const listId = `ls-checkpoints-${(datalistCount += 1)}`;
  const checkpoints = h("datalist", { id: listId, testid: `${prefix}-checkpoint-list` });
  const rows = STYLE_FIELDS.map(([key, kind, label]) => {
    let input;
    if (kind === "area" || kind === "lines") input = h("textarea", { rows: kind === "lines" ? 3 : 2, testid: `${prefix}-${key}` });
    else if (kind === "sampler" || kind === "scheduler") input = h("select", { testid: `${prefix}-${key}` });
    else if (kind === "checkpoint") {
      input = h("input", { type: "text", list: listId, testid: `${prefix}-${key}`, placeholder: "model.safetensors",
        autocomplete: "off", style: "min-width: 180px" });
    } else {
      input = h("input", { type: "number", step: kind === "float" ? "any" : "1", testid: `${prefix}-${key}` });
    }
    inputs[key] = input;
    if (kind === "checkpoint") {
      // ComfyUI's own list when it answers (fill() swaps it in); the text input stays for when it does not
      const select = h("select", { testid: `${prefix}-${key}-select`, hidden: true, style: "min-width: 180px" });
      inputs.checkpointSelect = select;
      return h("label", {}, label, input, select);
    }
    const wideField = kind === "area" || kind === "lines";
    return h("label", { class: wideField ? "ls-field" : "", style: wideField ? "width: 100%" : "" }, label, input);
  });
  const title = h("h3", {}, "Project style");
  const save = h("button", { class: "ls-btn ls-primary", testid: `${prefix}-save` }, "Save style");
  const error = h("div", { class: "ls-error", role: "alert", testid: `${prefix}-error`, hidden: true });
  const source = h("div", { class: "ls-muted", testid: `${prefix}-lists` });
  const el = h("div", { class: "ls-box", testid: `${prefix}-form` }, title,
    h("div", { class: "ls-row" }, rows.slice(0, 9)), ...rows.slice(9), checkpoints, source,
    h("div", { class: "ls-row" }, save), error);

  let project = null;
  let seq = 0;
  let lists = null; // {samplers, schedulers, source, checkpoints}

  async function loadLists() {
    const [samplers, models, ckpts] = await Promise.all([
      api.get("/samplers").catch((e) => ({ error: e })),
      api.get("/models").catch(() => null),
      api.get("/checkpoints").catch(() => null),
    ]);
    const names = (models && (models.items || []).filter((m) => m.source === "single_file").map((m) => m.name)) || [];
    const comfyCheckpoints = ckpts && ckpts.source === "comfyui" && Array.isArray(ckpts.items) ? ckpts.items : null;
    if (samplers.error) {
      error.textContent = `Cannot load ComfyUI's sampler list: ${samplers.error.message}`;
      error.hidden = false;
      return { samplers: [], schedulers: [], source: "none", checkpoints: names, comfyCheckpoints };
    }
    return { samplers: samplers.samplers || [], schedulers: samplers.schedulers || [], source: samplers.source,
      checkpoints: names, comfyCheckpoints };
  }

  function fill(style) {
    for (const [key, kind] of STYLE_FIELDS) {
      const v = style[key];
      if (kind === "sampler") fillSelect(inputs[key], lists.samplers, v || "");
      else if (kind === "scheduler") fillSelect(inputs[key], lists.schedulers, v || "");
      else if (kind === "lines") inputs[key].value = Array.isArray(v) ? v.join("\n") : "";
      else inputs[key].value = v === null || v === undefined ? "" : String(v);
    }
    checkpoints.replaceChildren(...lists.checkpoints.map((n) => h("option", { value: n })));
    const useSelect = Array.isArray(lists.comfyCheckpoints);
    inputs.checkpointSelect.hidden = !useSelect;
    inputs.checkpoint.hidden = useSelect;
    if (useSelect) {
      fillSelect(inputs.checkpointSelect, lists.comfyCheckpoints, style.checkpoint || "");
      if (!style.checkpoint && lists.comfyCheckpoints.length) {  // none chosen yet: saving must not pick one
        inputs.checkpointSelect.prepend(h("option", { value: "" }, "— choose a checkpoint —"));
        inputs.checkpointSelect.value = "";
      }
    }
    source.textContent = lists.source === "comfyui" ? "Samplers and schedulers: ComfyUI's own lists."
      : lists.source === "known" ? "ComfyUI does not answer: samplers and schedulers from its standard lists."
        : "";
  }

  function body() {
    const out = {};
    for (const [key, kind] of STYLE_FIELDS) {
      const input = inputs[key];
      if (kind === "int" || kind === "float") {
        const n = numberOrUndefined(input);
        if (n !== undefined) out[key] = kind === "int" ? Math.round(n) : n;
      } else if (kind === "lines") {
        out[key] = input.value.split("\n").map((s) => s.trim()).filter(Boolean);
      } else if ((kind === "sampler" || kind === "scheduler") && !input.value) {
        continue; // an empty list (ComfyUI's lists failed): leave the field as it is
      } else if (kind === "checkpoint" && !inputs.checkpointSelect.hidden) {
        out[key] = inputs.checkpointSelect.value;
      } else out[key] = input.value;
    }
    return out;
  }

  const controls = () => [...Object.values(inputs), save];  // the checkpoint's select is one of the inputs

  async function load(p) {
    project = p || null;
    el.hidden = !project;
    if (!project) return;
    title.textContent = `Project style: ${project.name}`;
    const token = ++seq;
    // the inputs stay disabled until the style arrives, so nothing typed meanwhile is overwritten
    controls().forEach((c) => { c.disabled = true; });
    error.hidden = true;
    try {
      const [style, fetched] = await Promise.all([api.get(`/projects/${Number(project.id)}/style`),
        lists ? Promise.resolve(lists) : loadLists()]);
      if (token !== seq) return;
      lists = fetched;
      fill(style);
    } catch (e) {
      if (token !== seq) return;
      error.textContent = `Cannot load the project style: ${e.message}`;
      error.hidden = false;
      ctx.showError(e, "Cannot load the project style");
    } finally {
      if (token === seq) controls().forEach((c) => { c.disabled = false; });
    }
  }

  save.addEventListener("click", async () => {
    if (!project) return;
    const p = project;
    save.disabled = true;
    error.hidden = true;
    try {
      const style = await api.patch(`/projects/${Number(p.id)}/style`, body());
      if (project === p) fill(style);
      ctx.toast("success", "Style saved", p.name);
      if (ctx.markStale) ctx.markStale("generate");
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
      ctx.showError(e, "Cannot save the style");
    } finally {
      save.disabled = false;
    }
  });

  return {
    el,
    load,
    /** Read the lists and the style again (ComfyUI's lists may have changed, or the style elsewhere). */
    reload() {
      lists = null;
      return load(project || (ctx.project && ctx.project()));
    },
  };
}
