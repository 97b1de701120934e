// LoRA Studio panel, Generate tab: the project's workflow templates (API-format workflows exported from
// ComfyUI) — import from a file, their bindings (which node input takes which studio field) with a picker
// per field among the inputs the studio found, delete. Declarations only at import.
//
//   templatesBox(ctx, { onChange(items) }) -> { el, load(), items() }
//     load() lists the selected project's templates (GET /projects/{pid}/templates); onChange gets the
//     list after every load, import, rebinding and delete (the Generate form's template picker uses it).

import { h } from "./panel_dom.js";
import { ApiError } from "./panel_api.js";

// the studio fields a template can bind, in the order the server documents them (generation/templates.py)
export const TEMPLATE_FIELDS = ["positive", "negative", "seed", "checkpoint", "lora_name", "lora_strength", "width",
  "height", "image"];
const UNBOUND = "";
const ALL = "__all__"; // every input the studio found for the field (e.g. the seed of each sampler)
const KEEP = "__keep__"; // a field bound to several inputs otherwise (set through the API): kept as it is

const targetKey = (nodeId, input) => JSON.stringify([String(nodeId), String(input)]);

/** "7.text · CLIPTextEncode "Positive"" for a candidate input (any missing part left out). */
export function candidateLabel(c) {
  const where = `${c.node_id}.${c.input_name}`;
  const what = [c.class_type, c.title && c.title !== c.class_type ? `"${c.title}"` : ""].filter(Boolean).join(" ");
  return what ? `${where} · ${what}` : where;
}


export function templatesBox(ctx, { onChange = () => {} } = {}) {
  const { api } = ctx;
  let templates = [];
  let seq = 0;

  const file = h("input", { type: "file", accept: ".json,application/json", testid: "tpl-file",
    style: "max-width: 100%" });
  const name = h("input", { type: "text", placeholder: "name", testid: "tpl-name", style: "flex: 1 1 120px" });
  const importButton = h("button", { class: "ls-btn", testid: "tpl-import" }, "Import");
  const error = h("div", { class: "ls-error", role: "alert", testid: "tpl-error", hidden: true });
  const list = h("div", { class: "ls-list", testid: "tpl-list" });

  function showError(e, summary) {
    error.textContent = `${summary}: ${e && e.message ? e.message : String(e)}`;
    error.hidden = false;
    ctx.showError(e, summary);
  }

  file.addEventListener("change", () => {
    const f = file.files && file.files[0];
    if (f && !name.value.trim()) name.value = f.name.replace(/\.json$/i, "");
  });

  importButton.addEventListener("click", async () => {
    const p = ctx.project();
    const f = file.files && file.files[0];
    if (!p) return ctx.toast("warn", "Templates", "Choose a project first.");
    if (!f) return ctx.toast("warn", "Templates", "Choose a workflow file (ComfyUI: Workflow → Export (API)).");
    error.hidden = true;
    importButton.disabled = true;
    try {
      let workflow;
      try {
        workflow = JSON.parse(await f.text());
      } catch (e) {
        throw new ApiError(400, "invalid_input", `${f.name} is not JSON (${e.message})`);
      }
      const title = name.value.trim() || f.name.replace(/\.json$/i, "");
      const created = await api.post(`/projects/${p.id}/templates`, { name: title, workflow });
      ctx.toast("success", "Template imported", created.name);
      file.value = "";
      name.value = "";
      await load();
    } catch (e) {
      showError(e, "Cannot import the template");
    } finally {
      importButton.disabled = false;
    }
  });

  /** The binding picker of one field: not bound, each input the studio found, and what is bound now. */
  function fieldSelect(t, field) {
    const bound = Array.isArray((t.bindings || {})[field]) ? t.bindings[field] : [];
    const candidates = Array.isArray((t.candidates || {})[field]) ? t.candidates[field] : [];
    const options = [h("option", { value: UNBOUND }, "not bound")];
    const known = new Set();
    for (const c of candidates) {
      const key = targetKey(c.node_id, c.input_name);
      known.add(key);
      options.push(h("option", { value: key }, candidateLabel(c)));
    }
    const where = (pairs) => pairs.map((b) => `${b[0]}.${b[1]}`).join(", ");
    if (candidates.length > 1) {
      options.push(h("option", { value: ALL }, `all ${candidates.length}: ${where(candidates.map((c) => [c.node_id, c.input_name]))}`));
    }
    const boundKeys = bound.map((b) => targetKey(b[0], b[1]));
    let value = UNBOUND;
    if (bound.length === 1) {
      value = boundKeys[0];
      if (!known.has(value)) options.push(h("option", { value }, `${bound[0][0]}.${bound[0][1]}`));
    } else if (bound.length > 1 && candidates.length > 1 && boundKeys.length === known.size
      && boundKeys.every((k) => known.has(k))) {
      value = ALL;
    } else if (bound.length > 1) {
      value = KEEP;
      options.push(h("option", { value: KEEP }, `${bound.length} inputs: ${where(bound)}`));
    }
    const select = h("select", { testid: `tpl-binding-${t.id}-${field}`, "data-field": field,
      style: "flex: 1 1 150px; min-width: 0; width: 100%" }, ...options);
    select.value = value;
    return select;
  }

  function renderTemplate(t) {
    const id = Number(t.id);
    const bindings = t.bindings || {};
    const candidates = t.candidates || {};
    const fields = TEMPLATE_FIELDS.filter((f) => (bindings[f] || []).length || (candidates[f] || []).length);
    const missing = TEMPLATE_FIELDS.filter((f) => !fields.includes(f));
    const selects = fields.map((f) => fieldSelect(t, f));
    const rows = fields.map((f, i) => h("div", { class: "ls-row", style: "flex-wrap: nowrap" },
      h("span", { class: "ls-muted", style: "flex: 0 0 88px" }, f), selects[i]));

    async function rebind(changed) {
      const chosen = {};
      for (const s of selects) {
        const field = s.dataset.field;
        if (s.value === KEEP) chosen[field] = bindings[field];
        else if (s.value === ALL) chosen[field] = candidates[field].map((c) => [c.node_id, c.input_name]);
        else if (s.value !== UNBOUND) chosen[field] = [JSON.parse(s.value)];
      }
      selects.forEach((s) => { s.disabled = true; });
      error.hidden = true;
      try {
        const updated = await api.put(`/templates/${id}/bindings`, { bindings: chosen });
        templates = templates.map((x) => (x.id === updated.id ? updated : x));
        ctx.toast("success", "Bindings saved", `${updated.name}: ${changed}`);
        render();
        onChange(templates);
      } catch (e) {
        showError(e, "Cannot change the binding");
        render(); // back to what the server has
      }
    }
    selects.forEach((s) => s.addEventListener("change", () => rebind(s.dataset.field)));

    const remove = h("button", { class: "ls-btn", testid: `tpl-delete-${id}` }, "Delete");
    const confirm = h("span", { class: "ls-row", hidden: true },
      h("span", { class: "ls-muted" }, "Delete it?"),
      h("button", { class: "ls-btn ls-danger", testid: `tpl-delete-confirm-${id}`, onclick: async (ev) => {
        ev.currentTarget.disabled = true;
        try {
          await api.del(`/templates/${id}`);
          ctx.toast("success", "Template deleted", t.name);
          await load();
        } catch (e) {
          showError(e, "Cannot delete the template");
          await load();
        }
      } }, "Delete"),
      h("button", { class: "ls-btn", onclick: () => { confirm.hidden = true; remove.hidden = false; } }, "Keep"));
    remove.addEventListener("click", () => { remove.hidden = true; confirm.hidden = false; });

    const nodes = t.graph && typeof t.graph === "object" ? Object.keys(t.graph).length : 0;
    return h("div", { class: "ls-job", testid: `tpl-${id}` },
      h("div", { class: "ls-job-head" },
        h("span", { style: "min-width: 0" }, h("strong", {}, t.name), " ",
          h("span", { class: "ls-muted" }, `#${id} · ${nodes} nodes`)),
        remove, confirm),
      ...rows,
      missing.length ? h("div", { class: "ls-muted", testid: `tpl-unbindable-${id}` },
        `no input for: ${missing.join(", ")}`) : null);
  }

  function render() {
    const p = ctx.project();
    list.replaceChildren(...(templates.length ? templates.map(renderTemplate)
      : [h("div", { class: "ls-muted" }, p ? "No templates yet." : "Choose a project.")]));
  }

  async function load() {
    const token = ++seq;
    const p = ctx.project();
    if (!p) {
      templates = [];
      render();
      onChange(templates);
      return;
    }
    try {
      const data = await api.get(`/projects/${p.id}/templates`);
      if (token !== seq) return;
      templates = (data && data.items) || [];
    } catch (e) {
      if (token !== seq) return;
      templates = [];
      ctx.showError(e, "Cannot list the templates");
    }
    render();
    onChange(templates);
  }

  const el = h("div", { class: "ls-box", testid: "tpl-box" }, h("h3", {}, "Workflow templates"),
    h("div", { class: "ls-muted" }, "A workflow saved with ComfyUI's Workflow → Export (API); the studio fills "
      + "the inputs bound below (prompt, negatives, seed, checkpoint, LoRA, size, image) and queues it."),
    h("div", { class: "ls-row" }, file),
    h("div", { class: "ls-row" }, name, importButton),
    error, list);

  return {
    el,
    load,
    items: () => templates,
    reset() {
      templates = [];
      error.hidden = true;
      render();
    },
  };
}
