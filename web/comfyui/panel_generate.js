// LoRA Studio panel, Generate tab: queue a graph on ComfyUI for the selected character — txt2img, img2img or
// reference refinement from its approved images, image-to-video, or one of the project's templates — and
// follow it (queued → running with its progress → its images or video, the error, or cancelled; Cancel while
// it is queued or running); the character's recent generations; a batch for the dataset (a job whose images
// land in the pending queue); the project's templates (panel_templates.js) and style. Declarations only at
// import.
//
// Generations have no events: the active ones shown are polled (GET /generations/{id}, which asks ComfyUI)
// about every second while the tab is open.

import { h, numberOrUndefined } from "./panel_dom.js";
import { isActiveJob, renderJobRow } from "./panel_jobfollow.js";
import { templatesBox } from "./panel_templates.js";

const STYLE_FIELDS = [
  ["checkpoint", "text", "Checkpoint"], ["sampler", "text", "Sampler"], ["scheduler", "text", "Scheduler"],
  ["steps", "int", "Steps"], ["cfg", "float", "CFG"], ["width", "int", "Width"], ["height", "int", "Height"],
  ["clip_skip", "int", "CLIP skip"], ["lora_strength", "float", "LoRA strength"],
  ["positive_template", "area", "Positive template"], ["negative_template", "area", "Negative template"],
];

export const GENERATION_KINDS = ["txt2img", "img2img", "reference", "video", "template"];
export const BATCH_KINDS = ["txt2img", "img2img", "reference", "template"];
const KIND_LABELS = {
  txt2img: "Text to image", img2img: "Image to image", reference: "Reference refinement",
  video: "Image to video", template: "Project template",
};
// what each kind sends (the route's GENERATE_SPEC; everything else is left out of the request)
const KIND_FIELDS = {
  txt2img: ["prompt_extra", "seed", "batch_size", "use_lora"],
  img2img: ["prompt_extra", "seed", "batch_size", "use_lora", "image_ids", "denoise"],
  reference: ["prompt_extra", "seed", "batch_size", "use_lora", "image_ids", "denoise", "weight", "method"],
  video: ["prompt_extra", "seed", "image_ids", "frames", "fps"],
  template: ["prompt_extra", "seed", "use_lora", "image_ids", "template_id"],
};
const MAX_IMAGES = { img2img: 1, reference: 8, video: 1, template: 1 };
const ACTIVE = new Set(["queued", "running"]);
const POLL_MS = 1000;
const RECENT = 10;
const BATCH_KIND = "generate_batch";
const IMAGE_PAGE = 48;

export const isActiveGeneration = (g) => !!g && ACTIVE.has(g.status);

/** A generation output's file as the studio serves it (ComfyUI's output folder through /gallery/file). */
export function outputPath(o) {
  return o.subfolder ? `${o.subfolder}/${o.filename}` : String(o.filename);
}

/** "video" (webm/mp4: a <video>), "animated" (an animated webp/gif: an <img> that plays) or "image". */
export function outputMedia(o) {
  const name = String((o && o.filename) || "").toLowerCase();
  if (/\.(webm|mp4|mov|mkv)$/.test(name)) return "video";
  if (o && o.animated && /\.(webp|gif|png)$/.test(name)) return "animated";
  return "image";
}

function percent(g) {
  return Math.round(Math.max(0, Math.min(1, Number(g && g.progress) || 0)) * 100);
}

/** "status: running · 42%" — the status line of a generation (the percentage only while it runs). */
export function statusText(g) {
  return g.status === "running" ? `status: running · ${percent(g)}%` : `status: ${g.status}`;
}

/** What the request asked for, in a few words ("images #4, #9 · denoise 0.5"); never "null"/"undefined". */
export function paramsText(g) {
  const p = (g && g.params) || {};
  const parts = [];
  if (Array.isArray(p.image_ids) && p.image_ids.length) {
    parts.push(`${p.image_ids.length > 1 ? "images" : "image"} ${p.image_ids.map((i) => `#${i}`).join(", ")}`);
  }
  if (p.template_id != null) parts.push(`template #${p.template_id}`);
  for (const key of ["denoise", "weight", "method", "frames", "fps"]) {
    if (p[key] != null && p[key] !== "") parts.push(`${key} ${p[key]}`);
  }
  if (Number(p.batch_size) > 1) parts.push(`batch ${p.batch_size}`);
  if (p.use_lora === false) parts.push("without LoRA");
  if (p.prompt_extra) parts.push(`+ “${p.prompt_extra}”`);
  return parts.join(" · ");
}

function outputElement(api, o, testid) {
  const src = api.url(`/gallery/file?path=${encodeURIComponent(outputPath(o))}`);
  const media = outputMedia(o);
  if (media === "video") {
    return h("div", { class: "ls-thumb", style: "aspect-ratio: auto" },
      h("video", { src, controls: true, muted: true, loop: true, playsinline: true, preload: "metadata",
        testid, "data-media": media, title: o.filename, style: "width: 100%; display: block" }));
  }
  return h("a", { class: "ls-thumb", href: src, target: "_blank", rel: "noopener", title: o.filename },
    h("img", { src, alt: o.filename, loading: "lazy", testid, "data-media": media }));
}

/**
 * A generation's box: title, status (with a progress bar while queued/running), the ComfyUI prompt id when
 * there is one, the error, the outputs, Cancel while active. `ids(part)` names the data-testids.
 */
export function renderGeneration(api, g, { ids, onCancel, title } = {}) {
  const id = Number(g.id);
  const active = isActiveGeneration(g);
  const pct = g.status === "running" ? percent(g) : 0;
  const outputs = (Array.isArray(g.outputs) ? g.outputs : [])
    .filter((o) => o && o.filename && (!o.type || o.type === "output"));
  let cancel = null;
  if (active && onCancel) {
    cancel = h("button", { class: "ls-btn", testid: ids("cancel") }, "Cancel");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        await onCancel(g);
      } catch {
        cancel.disabled = false;
      }
    });
  }
  const meta = [g.kind || "txt2img", g.seed != null ? `seed ${g.seed}` : "", paramsText(g)].filter(Boolean).join(" · ");
  const promptLine = g.prompt_id ? `ComfyUI prompt id: ${g.prompt_id}` : active ? "not queued yet" : "";
  const error = g.error && !(g.status === "cancelled" && g.error === "cancelled") ? String(g.error) : "";
  return h("div", { class: "ls-job", testid: ids("row"), "data-status": g.status, "data-kind": g.kind || "",
    "data-id": String(id) },
  h("div", { class: "ls-job-head" },
    h("span", { style: "min-width: 0" }, title || `#${id} `, h("span", { class: "ls-muted" }, meta)),
    cancel),
  h("span", { class: `ls-status-${g.status}`, testid: ids("status") }, statusText(g)),
  active ? h("div", { class: "ls-bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
    "aria-valuenow": String(pct), testid: ids("progress") }, h("div", { style: `width: ${pct}%` })) : null,
  promptLine ? h("div", { class: "ls-muted", testid: ids("prompt") }, promptLine) : null,
  error ? h("div", { class: g.status === "failed" ? "ls-error" : "ls-muted", testid: ids("error") }, error) : null,
  outputs.length ? h("div", { class: "ls-grid", testid: ids("outputs") },
    outputs.map((o) => outputElement(api, o, ids("output")))) : null);
}

const BANNER = "border: 1px solid var(--ls-danger); border-radius: 6px; padding: 6px 8px; font-size: 12px;";

/** An error banner (role=alert) that says what the API said; a 409 (the GPU is busy) gets its own title. */
function banner(testid) {
  const el = h("div", { class: "ls-error", role: "alert", testid, hidden: true, style: BANNER });
  return {
    el,
    show(e, summary) {
      const busy = e && e.status === 409;
      el.replaceChildren(h("strong", {}, busy ? "Not now: " : `${summary}: `), e && e.message ? e.message : String(e));
      el.dataset.status = String((e && e.status) || "");
      el.hidden = false;
    },
    hide() {
      el.hidden = true;
      el.replaceChildren();
    },
  };
}

export function generateSection(ctx) {
  const { api } = ctx;
  let destroyed = false;
  let seq = 0; // the selection the loaded data belongs to

  // ---- the form ----------------------------------------------------------------------------
  const target = h("div", { class: "ls-muted", testid: "gen-target" });
  const kind = h("select", { testid: "gen-kind", style: "min-width: 0" },
    ...GENERATION_KINDS.map((k) => h("option", { value: k }, KIND_LABELS[k])));
  const promptExtra = h("textarea", { rows: 2, testid: "gen-prompt-extra", maxlength: "2000",
    placeholder: "added to the character's prompt (optional)" });
  const seed = h("input", { type: "number", min: 0, placeholder: "random", testid: "gen-seed" });
  const batch = h("input", { type: "number", value: "1", min: 1, max: 16, testid: "gen-batch" });
  const useLora = h("input", { type: "checkbox", checked: true, testid: "gen-use-lora" });
  const denoise = h("input", { type: "number", min: 0.01, max: 1, step: "0.05", placeholder: "0.6", testid: "gen-denoise" });
  const weight = h("input", { type: "number", min: 0, max: 2, step: "0.05", placeholder: "auto", testid: "gen-weight" });
  const method = h("select", { testid: "gen-method" }, h("option", { value: "" }, "best available"),
    ...["ipadapter", "unclip", "img2img"].map((m) => h("option", { value: m }, m)));
  const frames = h("input", { type: "number", min: 1, max: 1025, placeholder: "model's", testid: "gen-frames" });
  const fps = h("input", { type: "number", min: 1, max: 60, step: "any", placeholder: "model's", testid: "gen-fps" });
  const template = h("select", { testid: "gen-template", style: "min-width: 0; max-width: 100%" });
  const submit = h("button", { class: "ls-btn ls-primary", testid: "gen-submit" }, "Queue generation");
  const errorBanner = banner("gen-error");

  const field = (label, control, name) => h("label", { "data-field": name }, label, control);
  const fieldEls = {
    batch_size: field("Batch", batch, "batch_size"),
    denoise: field("Denoise", denoise, "denoise"),
    weight: field("Weight", weight, "weight"),
    method: field("Method", method, "method"),
    frames: field("Frames", frames, "frames"),
    fps: field("FPS", fps, "fps"),
    template_id: h("label", { "data-field": "template_id", style: "flex: 1 1 100%; min-width: 0" }, "Template", template),
    use_lora: h("label", { class: "ls-check", "data-field": "use_lora" }, useLora, "use the current LoRA"),
  };

  // approved images of the character (img2img, reference, video; a template's image input)
  const picked = []; // image ids, in the order chosen
  const pickGrid = h("div", { testid: "gen-images", style: "display: grid; gap: 4px; "
    + "grid-template-columns: repeat(auto-fill, minmax(64px, 1fr))" });
  const pickInfo = h("div", { class: "ls-muted", testid: "gen-images-info" });
  const pickMore = h("button", { class: "ls-btn", testid: "gen-images-more", hidden: true }, "More images");
  const pickBox = h("div", { class: "ls-field", testid: "gen-image-picker" }, pickInfo, pickGrid, pickMore);
  let images = [];
  let imagesCursor = null;
  let imagesFor = null; // the character id the images belong to

  function maxImages() {
    return MAX_IMAGES[kind.value] || 0;
  }

  function renderPickInfo() {
    const c = ctx.character();
    const max = maxImages();
    const need = kind.value === "template" ? "optional, for a template that binds an image"
      : max === 1 ? "choose 1" : `choose 1 to ${max}`;
    if (!images.length) {
      pickInfo.textContent = c ? `No approved images of ${c.name} yet: approve some in Approvals.` : "";
      return;
    }
    pickInfo.textContent = `Approved images (${need}): ${picked.length ? picked.map((i) => `#${i}`).join(", ")
      : "none chosen"}`;
  }

  function syncPicks() {
    for (const box of pickGrid.querySelectorAll("input[type=checkbox]")) {
      box.checked = picked.includes(Number(box.dataset.imageId));
      box.closest("label").style.outline = box.checked ? "2px solid var(--ls-accent)" : "none";
    }
    renderPickInfo();
  }

  function toggle(id, on) {
    const at = picked.indexOf(id);
    if (on && at < 0) {
      const max = maxImages();
      if (max === 1) picked.splice(0, picked.length);
      else if (picked.length >= max) {
        ctx.toast("warn", "Images", `A ${kind.value} generation takes at most ${max} images.`);
        syncPicks();
        return;
      }
      picked.push(id);
    } else if (!on && at >= 0) picked.splice(at, 1);
    syncPicks();
  }

  function imageTile(image) {
    const id = Number(image.id);
    const box = h("input", { type: "checkbox", testid: `gen-pick-${id}`, "data-image-id": String(id),
      "aria-label": `Use image ${id}`, style: "position: absolute; top: 2px; left: 2px; margin: 0" });
    box.addEventListener("change", () => toggle(id, box.checked));
    return h("label", { class: "ls-thumb", title: image.caption || `image ${id}`,
      style: "position: relative; cursor: pointer; border-radius: 4px; overflow: hidden" },
    h("img", { src: api.url(`/images/${id}/file`), alt: `image ${id}`, loading: "lazy" }), box);
  }

  async function loadImages(more = false) {
    const c = ctx.character();
    const token = seq;
    if (!c) return;
    if (!more && imagesFor === c.id) return;
    const params = new URLSearchParams({ status: "approved", limit: String(IMAGE_PAGE) });
    if (more && imagesCursor) params.set("cursor", imagesCursor);
    pickMore.disabled = true;
    try {
      const page = await api.get(`/characters/${c.id}/images?${params}`);
      if (token !== seq) return;
      const items = (page && page.items) || [];
      images = more ? images.concat(items) : items;
      imagesCursor = page && page.next_cursor ? page.next_cursor : null;
      imagesFor = c.id;
      if (more) pickGrid.append(...items.map(imageTile));
      else pickGrid.replaceChildren(...items.map(imageTile));
      pickMore.hidden = !imagesCursor;
      syncPicks();
    } catch (e) {
      if (token === seq) ctx.showError(e, "Cannot list the approved images");
    } finally {
      pickMore.disabled = false;
    }
  }
  pickMore.addEventListener("click", () => loadImages(true));

  let templates = [];
  function renderTemplatePicker(items) {
    templates = items || [];
    const keep = template.value;
    template.replaceChildren(...(templates.length
      ? templates.map((t) => h("option", { value: String(t.id) }, t.name))
      : [h("option", { value: "" }, "no templates: import one below")]));
    if (templates.some((t) => String(t.id) === keep)) template.value = keep;
    showFields();
  }

  function selectedTemplate() {
    return templates.find((t) => String(t.id) === template.value) || null;
  }

  /** Only the controls of the chosen kind are shown (and only their values are sent). */
  function showFields() {
    const k = kind.value;
    const wanted = new Set(KIND_FIELDS[k]);
    for (const [name, el] of Object.entries(fieldEls)) el.hidden = !wanted.has(name);
    let showImages = wanted.has("image_ids");
    if (k === "template") { // a template takes an image only when it binds one
      const t = selectedTemplate();
      showImages = !!(t && t.bindings && t.bindings.image && t.bindings.image.length);
    }
    pickBox.hidden = !showImages;
    if (picked.length > maxImages()) picked.splice(maxImages());
    if (showImages) loadImages();
    syncPicks();
    batchKind.value = BATCH_KINDS.includes(k) ? k : "";
    batchStart.disabled = !BATCH_KINDS.includes(k) || !ctx.character();
    batchHint.textContent = BATCH_KINDS.includes(k)
      ? "Uses the form above (images, denoise, template, prompt additions, seed, LoRA); each image gets the next "
        + "of the project style's variations."
      : "A video cannot be batched into the dataset: choose another kind.";
  }
  kind.addEventListener("change", showFields);
  template.addEventListener("change", showFields);

  /** The request body for `k`: only the fields that kind uses; blank numbers are left to the server. */
  function requestBody(k, { forBatch = false } = {}) {
    const body = { kind: k };
    const fields = new Set(KIND_FIELDS[k]);
    if (forBatch) fields.delete("batch_size");
    const num = (input, integer) => {
      const v = numberOrUndefined(input);
      return v === undefined ? undefined : integer ? Math.round(v) : v;
    };
    const values = {
      prompt_extra: promptExtra.value.trim() || undefined,
      seed: num(seed, true),
      batch_size: num(batch, true),
      use_lora: useLora.checked,
      image_ids: picked.length ? picked.slice(0, maxImages()) : undefined,
      denoise: num(denoise, false),
      weight: num(weight, false),
      method: method.value || undefined,
      frames: num(frames, true),
      fps: num(fps, false),
      template_id: template.value ? Number(template.value) : undefined,
    };
    for (const name of fields) if (values[name] !== undefined) body[name] = values[name];
    return body;
  }

  submit.addEventListener("click", async () => {
    const c = ctx.character();
    if (!c) return ctx.toast("warn", "Generate", "Choose a character first.");
    const body = requestBody(kind.value);
    submit.disabled = true;
    errorBanner.hide();
    try {
      const g = await api.post(`/characters/${c.id}/generate`, body);
      current = g;
      remember(g);
      recent = [g, ...recent.filter((x) => x.id !== g.id)].slice(0, RECENT);
      renderCurrent();
      renderRecent();
      ctx.toast("success", "Generation queued", `#${g.id} on ComfyUI`);
    } catch (e) {
      errorBanner.show(e, "Generation failed");
      ctx.showError(e, e && e.status === 409 ? "Generation must wait" : "Generation failed");
    } finally {
      submit.disabled = !ctx.character();
    }
  });

  // ---- generations: the current one and the recent ones, polled while active ---------------
  let current = null;
  let recent = [];
  const known = new Map(); // id -> newest state seen
  const result = h("div", { class: "ls-box", testid: "gen-result", hidden: true });
  const recentList = h("div", { class: "ls-list", testid: "gen-recent" });
  const recentRefresh = h("button", { class: "ls-btn", testid: "gen-recent-refresh" }, "Refresh");
  let timer = null;
  let polling = false;

  /** Keep the newest state of a generation (a finished one never goes back to queued/running). */
  function remember(g) {
    const old = known.get(g.id);
    if (old && !isActiveGeneration(old) && isActiveGeneration(g)) return old;
    known.set(g.id, g);
    if (isActiveGeneration(g)) schedule();
    return g;
  }

  const latest = (g) => known.get(g.id) || g;

  async function cancelGeneration(g) {
    try {
      const updated = remember(await api.post(`/generations/${Number(g.id)}/cancel`));
      ctx.toast("info", "Generation cancelled", `#${updated.id}`);
    } catch (e) {
      ctx.showError(e, "Cannot cancel the generation");
      try {
        remember(await api.get(`/generations/${Number(g.id)}`));
      } catch {
        /* the next poll tells */
      }
      renderAll();
      throw e;
    }
    renderAll();
  }

  function renderCurrent() {
    if (!current) {
      result.hidden = true;
      result.replaceChildren();
      return;
    }
    const g = latest(current);
    const refresh = h("button", { class: "ls-btn", testid: "gen-refresh" }, "Refresh status");
    refresh.addEventListener("click", async () => {
      refresh.disabled = true;
      try {
        remember(await api.get(`/generations/${Number(g.id)}`));
        renderAll();
      } catch (e) {
        refresh.disabled = false;
        ctx.showError(e, "Cannot refresh the generation");
      }
    });
    result.replaceChildren(
      h("h3", {}, `Generation #${g.id}`),
      renderGeneration(api, g, { ids: (part) => (part === "row" ? "gen-current" : `gen-${part}`),
        onCancel: cancelGeneration, title: " " }),
      h("div", { class: "ls-row" }, refresh));
    result.hidden = false;
  }

  function renderRecent() {
    const c = ctx.character();
    const items = recent.map(latest);
    recentList.replaceChildren(...(items.length
      ? items.map((g) => renderGeneration(api, g, { onCancel: cancelGeneration,
        ids: (part) => (part === "row" ? `generation-${g.id}` : `generation-${part}-${g.id}`) }))
      : [h("div", { class: "ls-muted" }, c ? "No generations yet." : "Choose a character.")]));
  }

  function renderAll() {
    renderCurrent();
    renderRecent();
  }

  async function loadRecent() {
    const c = ctx.character();
    const token = seq;
    if (!c) {
      recent = [];
      renderRecent();
      return;
    }
    try {
      const page = await api.get(`/characters/${c.id}/generations?limit=${RECENT}`);
      if (token !== seq) return;
      recent = ((page && page.items) || []).map(remember);
      renderRecent();
    } catch (e) {
      if (token === seq) ctx.showError(e, "Cannot list the generations");
    }
  }
  recentRefresh.addEventListener("click", () => loadRecent());

  function schedule() {
    if (destroyed || timer) return;
    timer = setTimeout(poll, POLL_MS);
  }

  /** Refresh every active generation shown (GET /generations/{id} asks ComfyUI where it is). */
  async function poll() {
    timer = null;
    if (destroyed || polling) return;
    const shown = new Set([current && current.id, ...recent.map((g) => g.id)]);
    const active = Array.from(known.values()).filter((g) => shown.has(g.id) && isActiveGeneration(g));
    if (!active.length) return;
    if (!ctx.isActive("generate")) { // hidden: look again later, without requests
      schedule();
      return;
    }
    polling = true;
    const token = seq;
    try {
      const fresh = await Promise.all(active.map((g) => api.get(`/generations/${Number(g.id)}`).catch(() => null)));
      if (token !== seq) return;
      let changed = false;
      for (const g of fresh) {
        if (!g) continue;
        const old = known.get(g.id);
        remember(g);
        if (!old || old.status !== g.status || old.progress !== g.progress || old.prompt_id !== g.prompt_id) {
          changed = true;
          if (old && isActiveGeneration(old) && !isActiveGeneration(g)) announce(g);
        }
      }
      if (changed) renderAll();
    } finally {
      polling = false;
      if (Array.from(known.values()).some((g) => shown.has(g.id) && isActiveGeneration(g))) schedule();
    }
  }

  function announce(g) {
    if (g.status === "succeeded") ctx.toast("success", "Generation finished", `#${g.id}`);
    else if (g.status === "failed") ctx.toast("error", `Generation #${g.id} failed`, g.error || "");
  }

  // ---- batch for the dataset (a job) -------------------------------------------------------
  const batchCount = h("input", { type: "number", value: "8", min: 1, max: 200, testid: "batch-count" });
  const batchInFlight = h("input", { type: "number", value: "2", min: 1, max: 8, testid: "batch-in-flight" });
  const batchKind = h("select", { testid: "batch-kind" },
    h("option", { value: "", hidden: true }, "—"),
    ...BATCH_KINDS.map((k) => h("option", { value: k }, KIND_LABELS[k])));
  const batchStart = h("button", { class: "ls-btn", testid: "batch-start" }, "Generate for the dataset");
  const batchHint = h("div", { class: "ls-muted" });
  const batchBanner = banner("batch-error");
  const batchJobs = new Map();
  const batchList = h("div", { class: "ls-list", testid: "batch-jobs" });
  const followed = new Set();
  batchKind.addEventListener("change", () => {
    if (batchKind.value) {
      kind.value = batchKind.value;
      showFields();
    }
  });

  function batchSummary(job) {
    const r = job.result || {};
    if (job.status !== "succeeded" && !Array.isArray(r.created)) return null;
    const created = Array.isArray(r.created) ? r.created.length : 0;
    const failed = Array.isArray(r.failed) ? r.failed.length : 0;
    const skipped = Array.isArray(r.skipped) ? r.skipped.length : 0;
    const extra = [failed ? `${failed} failed` : "", skipped ? `${skipped} skipped as duplicates` : ""]
      .filter(Boolean).join(", ");
    return h("div", { testid: `batch-result-${Number(job.id)}` },
      `${created} image${created === 1 ? "" : "s"} added to the pending queue${extra ? ` · ${extra}` : ""}`);
  }

  const cancelBatch = async (job) => {
    try {
      drawBatch(ctx.jobs ? await ctx.jobs.cancel(job.id) : await api.post(`/jobs/${job.id}/cancel`));
    } catch (e) {
      ctx.showError(e, "Cannot cancel the batch");
      throw e;
    }
  };

  function drawBatch(job) {
    if (!job || job.id == null) return;
    const old = batchJobs.get(job.id);
    batchJobs.set(job.id, job);
    const c = ctx.character();
    const items = Array.from(batchJobs.values()).filter((j) => !c || j.character_id === c.id)
      .sort((a, b) => b.id - a.id).slice(0, 5);
    batchList.replaceChildren(...items.map((j) => renderJobRow(j, { prefix: "batch", label: "batch generation",
      onCancel: cancelBatch, result: batchSummary(j) })));
    if (old && isActiveJob(old) && !isActiveJob(job)) {
      if (job.status === "succeeded") {
        ctx.toast("success", "Batch finished", batchSummary(job) ? batchSummary(job).textContent : `#${job.id}`);
        Promise.resolve(ctx.reloadCharacters()).catch(() => {}); // the pending counts grew
        ctx.markStale("approvals");
      } else if (job.status === "failed") ctx.toast("error", `Batch #${job.id} failed`, job.error || "");
    }
  }

  function followBatch(job) {
    if (!isActiveJob(job) || followed.has(job.id) || !ctx.jobs) return;
    followed.add(job.id);
    ctx.jobs.follow(job, drawBatch, { onGone: (id) => { batchJobs.delete(id); followed.delete(id); } });
  }

  batchStart.addEventListener("click", async () => {
    const c = ctx.character();
    if (!c) return ctx.toast("warn", "Batch", "Choose a character first.");
    const k = batchKind.value;
    if (!BATCH_KINDS.includes(k)) return;
    const body = requestBody(k, { forBatch: true });
    const count = numberOrUndefined(batchCount);
    const inFlight = numberOrUndefined(batchInFlight);
    if (count !== undefined) body.count = Math.round(count);
    if (inFlight !== undefined) body.in_flight = Math.round(inFlight);
    batchStart.disabled = true;
    batchBanner.hide();
    try {
      const job = await api.post(`/characters/${c.id}/generate-batch`, body);
      drawBatch(job);
      followBatch(job);
      ctx.toast("success", "Batch started", `job #${job.id}: ${body.count} images`);
    } catch (e) {
      batchBanner.show(e, "Cannot start the batch");
      ctx.showError(e, "Cannot start the batch");
    } finally {
      batchStart.disabled = !ctx.character() || !BATCH_KINDS.includes(batchKind.value);
    }
  });

  async function loadBatches() {
    const c = ctx.character();
    const token = seq;
    if (!c) return;
    try {
      const page = await api.get(`/jobs?kind=${BATCH_KIND}&character_id=${c.id}&limit=5`);
      if (token !== seq) return;
      for (const job of (page && page.items) || []) {
        drawBatch(job);
        followBatch(job);
      }
    } catch {
      /* the list is a convenience: a started batch is followed anyway */
    }
  }

  // ---- templates ---------------------------------------------------------------------------
  const templatesUi = templatesBox(ctx, { onChange: renderTemplatePicker });

  // ---- project style -----------------------------------------------------------------------
  const styleInputs = {};
  let styleSeq = 0;
  const styleRows = STYLE_FIELDS.map(([key, kindOf, label]) => {
    const input = kindOf === "area"
      ? h("textarea", { rows: 2, testid: `style-${key}` })
      : h("input", { type: kindOf === "text" ? "text" : "number", step: kindOf === "float" ? "any" : "1",
        testid: `style-${key}` });
    styleInputs[key] = input;
    return h("label", { class: kindOf === "area" ? "ls-field" : "", style: kindOf === "area" ? "width:100%" : "" },
      label, input);
  });
  const styleTitle = h("h3", {}, "Project style");
  const saveStyle = h("button", { class: "ls-btn", testid: "style-save" }, "Save style");
  saveStyle.addEventListener("click", async () => {
    const p = ctx.project();
    if (!p) return;
    const body = {};
    for (const [key, kindOf] of STYLE_FIELDS) {
      const input = styleInputs[key];
      if (kindOf === "int" || kindOf === "float") {
        const n = numberOrUndefined(input);
        if (n !== undefined) body[key] = kindOf === "int" ? Math.round(n) : n;
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

  async function loadStyle(p) {
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
  }

  // ---- layout ------------------------------------------------------------------------------
  const el = h("section", { class: "ls-section", style: "overflow-wrap: anywhere; min-width: 0" },
    h("div", { class: "ls-box", testid: "gen-form" }, h("h3", {}, "Generate on ComfyUI"), target,
      h("label", { class: "ls-field" }, "Kind", kind),
      pickBox,
      h("div", { class: "ls-row" }, fieldEls.template_id),
      h("label", { class: "ls-field" }, "Prompt additions", promptExtra),
      h("div", { class: "ls-row" }, field("Seed", seed, "seed"), fieldEls.batch_size, fieldEls.denoise,
        fieldEls.weight, fieldEls.method, fieldEls.frames, fieldEls.fps),
      h("div", { class: "ls-row" }, fieldEls.use_lora),
      h("div", { class: "ls-row" }, submit), errorBanner.el),
    result,
    h("div", { class: "ls-box" },
      h("div", { class: "ls-row", style: "justify-content: space-between" },
        h("h3", {}, "Recent generations of this character"), recentRefresh),
      recentList),
    h("div", { class: "ls-box", testid: "batch-box" }, h("h3", {}, "Batch for the dataset"),
      h("div", { class: "ls-row" }, h("label", {}, "Kind", batchKind), h("label", {}, "Count", batchCount),
        h("label", {}, "In flight", batchInFlight)),
      batchHint, h("div", { class: "ls-row" }, batchStart), batchBanner.el, batchList),
    templatesUi.el,
    styleBox);
  showFields();

  return {
    el,
    async refresh() {
      const c = ctx.character();
      const p = ctx.project();
      target.textContent = c ? `Character: ${c.name}` : "Choose a character first.";
      submit.disabled = !c;
      styleBox.hidden = !p;
      templatesUi.load();
      loadRecent();
      loadBatches();
      showFields();
      renderCurrent();
      if (p) await loadStyle(p);
    },
    selectionChanged() {
      seq += 1;
      current = null;
      recent = [];
      known.clear();
      picked.splice(0);
      images = [];
      imagesFor = null;
      imagesCursor = null;
      pickGrid.replaceChildren();
      batchJobs.clear();
      batchList.replaceChildren();
      errorBanner.hide();
      batchBanner.hide();
      templatesUi.reset();
      renderAll();
    },
    countsChanged() {
      // approvals elsewhere change the approved images: list them again (now when the picker is in view)
      imagesFor = null;
      if (!pickBox.hidden && ctx.isActive("generate")) loadImages();
    },
    onJob(job) {
      const c = ctx.character();
      if (job && job.kind === BATCH_KIND && c && job.character_id === c.id && !batchJobs.has(job.id)) {
        drawBatch(job);
        followBatch(job);
      }
    },
    destroy() {
      destroyed = true;
      clearTimeout(timer);
      timer = null;
    },
  };
}
