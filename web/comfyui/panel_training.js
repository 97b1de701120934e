// LoRA Studio panel, Training tab: start a LoRA training (the form is built from GET /training/options: the
// server's defaults, bounds and choices; advanced options folded away), follow its runs (step, loss, it/s, ETA, sample images), cancel, resume from the
// last checkpoint, and list the character's LoRAs and past runs. Declarations only at import.
//
// Up front it says when training cannot run here (GET /models: no base models — with the folders they go in —
// and, where the server reports them, the missing training libraries), and Start stays disabled while the
// character has fewer approved images than the server's gate (min_approved_images). Each run shows a loss
// chart (an inline SVG) beside its samples: from the job's `result.loss_history` ([[step, loss], …]) when the
// server keeps one; otherwise from the progress records (`result.progress`, the latest step and loss only)
// that reach the panel while it is open, so a run followed from its start has its whole curve.

import { h, numberOrUndefined } from "./panel_dom.js";
import { ACTIVE_JOB, isActiveJob, isNewerJob, renderJobRow } from "./panel_jobfollow.js";
import { AUTO_KINDS, isIngestKind } from "./panel_jobs.js";

const TRAIN_KIND = "train";
const SVG_NS = "http://www.w3.org/2000/svg";
const MAX_POINTS = 2000; // per run, in the client-side series

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "testid") el.setAttribute("data-testid", v);
    else el.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** [{step, loss}] sorted by step, one per step, finite numbers only, from [[step, loss]] or [{step, loss}]. */
export function lossPoints(history) {
  const byStep = new Map();
  for (const entry of history || []) {
    const step = Number(Array.isArray(entry) ? entry[0] : entry && entry.step);
    const raw = Array.isArray(entry) ? entry[1] : entry && (entry.smooth_loss ?? entry.loss);
    const loss = Number(raw);
    if (raw !== null && raw !== undefined && Number.isFinite(step) && Number.isFinite(loss)) byStep.set(step, loss);
  }
  return Array.from(byStep, ([step, loss]) => ({ step, loss })).sort((a, b) => a.step - b.step);
}

/** An inline SVG chart of the loss over the steps: a polyline scaled into width × height with the ranges. */
export function lossChart(points, { width = 320, height = 120, testid } = {}) {
  const pad = { l: 40, r: 6, t: 8, b: 18 };
  const steps = points.map((p) => p.step);
  const losses = points.map((p) => p.loss);
  const x0 = Math.min(...steps);
  const x1 = Math.max(...steps);
  let y0 = Math.min(...losses);
  let y1 = Math.max(...losses);
  if (y1 - y0 < 1e-9) {
    y0 -= 0.5 * Math.abs(y0 || 1) * 0.1;
    y1 += 0.5 * Math.abs(y1 || 1) * 0.1;
  }
  const w = width - pad.l - pad.r;
  const ht = height - pad.t - pad.b;
  const sx = (v) => pad.l + (x1 > x0 ? ((v - x0) / (x1 - x0)) * w : w / 2);
  const sy = (v) => pad.t + (1 - (v - y0) / (y1 - y0)) * ht;
  const coords = points.map((p) => `${sx(p.step).toFixed(1)},${sy(p.loss).toFixed(1)}`).join(" ");
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));
  return svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", testid,
    "aria-label": `loss from ${fmt(losses[0])} to ${fmt(losses[losses.length - 1])} over steps ${x0}–${x1}` },
  svg("line", { x1: pad.l, y1: pad.t + ht, x2: width - pad.r, y2: pad.t + ht }),
  svg("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: pad.t + ht }),
  svg("text", { x: pad.l - 4, y: pad.t + 8, "text-anchor": "end" }, fmt(y1)),
  svg("text", { x: pad.l - 4, y: pad.t + ht, "text-anchor": "end" }, fmt(y0)),
  svg("text", { x: pad.l, y: height - 4 }, `step ${x0}`),
  svg("text", { x: width - pad.r, y: height - 4, "text-anchor": "end" }, `${x1}`),
  svg("polyline", { points: coords, testid: testid ? `${testid}-line` : undefined, "data-points": points.length }));
}

export function formatSeconds(seconds) {
  const s = Math.max(0, Math.round(Number(seconds) || 0));
  if (s >= 3600) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

/** The pieces of a training job's progress record (job.result.progress), for display. */
export function trainStats(job) {
  const result = (job && job.result) || {};
  const p = result.progress || {};
  const total = Number(p.total_steps) || Number(job && job.payload && job.payload.steps) || 0;
  const loss = p.smooth_loss != null ? p.smooth_loss : p.loss;
  return {
    step: `${Number(p.step) || 0}/${total}`,
    loss: loss != null && Number.isFinite(Number(loss)) ? Number(loss).toFixed(4) : "–",
    speed: `${p.it_s ? Number(p.it_s).toFixed(2) : "–"} it/s`,
    eta: p.eta_s != null && isActiveJob(job) ? formatSeconds(p.eta_s) : "–",
  };
}

/** "learning_rate" -> "Learning rate" (the options' names are their labels). */
export function optionLabel(name) {
  const words = String(name).replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** What the form shows for an option's default: the value when it is the same for every architecture and not
 * derived from other options; otherwise blank, with the rule or the per-architecture values as a placeholder. */
export function defaultShown(option, architectures) {
  const values = architectures.map((arch) => option.default[arch]);
  if (option.derived) return { value: "", placeholder: `auto: ${option.derived}` };
  if (option.by_arch || values.some((v) => v !== values[0])) {
    return { value: "", placeholder: `auto: ${architectures.map((a, i) => `${values[i]} ${a}`).join(", ")}` };
  }
  return { value: values[0], placeholder: "" };
}

/** One form control for a training option described by GET /training/options (type, bounds, choices, default). */
export function optionControl(option, architectures) {
  const testid = `train-${option.name.replace(/_/g, "-")}`;
  const shown = defaultShown(option, architectures);
  const title = option.help || "";
  if (option.type === "boolean") return h("input", { type: "checkbox", testid, checked: shown.value === true, title });
  if (option.choices) {
    const el = h("select", { testid, title }, ...option.choices.map((c) => h("option", { value: c }, c)));
    el.value = shown.value;
    return el;
  }
  if (option.type === "string") return h("input", { type: "text", testid, value: shown.value, title });
  return h("input", { type: "number", testid, title, style: "width: 90px", min: option.min, max: option.max,
    step: option.type === "integer" ? String(option.step || 1) : "any", placeholder: shown.placeholder || undefined,
    value: shown.value === "" ? "" : String(shown.value) });
}

/** The request body the form's controls make: blank numbers are left out (the server's default for the model). */
export function optionValues(controls, options) {
  const body = {};
  for (const option of options) {
    const el = controls.get(option.name);
    if (!el) continue;
    if (el.type === "checkbox") body[option.name] = el.checked;
    else if (el.tagName === "SELECT") body[option.name] = el.value;
    else if (option.type === "string") {
      if (el.value.trim()) body[option.name] = el.value.trim();
    } else {
      const v = numberOrUndefined(el);
      if (v !== undefined) body[option.name] = option.type === "integer" ? Math.round(v) : v;
    }
  }
  return body;
}

export function trainingSection(ctx) {
  const { api } = ctx;
  const jobs = new Map();
  const following = new Set();
  const info = h("div", { class: "ls-muted", testid: "train-info" });
  let minImages = null; // the server's gate (GET /models), known once the models are listed
  const baseModel = h("select", { testid: "train-base-model", style: "min-width: 160px" });
  const start = h("button", { class: "ls-btn ls-primary", testid: "train-start" }, "Start training");
  // why training cannot run here (filled from GET /models), shown above the form
  const modelHint = h("div", { testid: "train-models-hint", hidden: true });
  const depsHint = h("div", { testid: "train-deps-hint", hidden: true });
  const blocked = h("div", { class: "ls-train-blocked", role: "status", testid: "train-blocked", hidden: true },
    h("strong", {}, "Training cannot run here yet"), depsHint, modelHint);
  let ready = { models: false, deps: true, known: false }; // what GET /models said

  // the options' form, built from GET /training/options (types, bounds, choices, defaults: all the server's)
  let options = [];
  const controls = new Map();
  const basic = h("span", { class: "ls-row", testid: "train-basic" });
  const advancedRow = h("div", { class: "ls-row" });
  const advanced = h("details", { class: "ls-ssot", testid: "train-advanced" },
    h("summary", {}, "Advanced options"), advancedRow);

  function buildForm(described) {
    options = described.options || [];
    const architectures = described.architectures || [];
    controls.clear();
    const label = (option, el) => (el.type === "checkbox"
      ? h("label", { class: "ls-check", title: option.help || "" }, el, optionLabel(option.name))
      : h("label", { title: option.help || "" }, optionLabel(option.name), el));
    const row = (list) => list.map((o) => {
      const el = optionControl(o, architectures);
      controls.set(o.name, el);
      return label(o, el);
    });
    basic.replaceChildren(...row(options.filter((o) => !o.advanced)));
    advancedRow.replaceChildren(...row(options.filter((o) => o.advanced)));
  }

  async function loadOptions() {
    if (options.length) return;
    try {
      buildForm(await api.get("/training/options"));
    } catch (e) {
      ctx.showError(e, "Cannot load the training options");
    }
  }

  const runs = h("div", { class: "ls-list", testid: "train-runs" });
  const loras = h("div", { class: "ls-list", testid: "lora-list" });
  const onlyThis = h("input", { type: "checkbox", testid: "job-filter-character" });
  const jobList = h("div", { class: "ls-list", testid: "job-list" });

  function requestBody() {
    return { base_model: baseModel.value, ...optionValues(controls, options) };
  }

  start.addEventListener("click", async () => {
    const c = ctx.character();
    if (!c) return ctx.toast("warn", "Training", "Choose a character first.");
    if (!baseModel.value) return ctx.toast("warn", "Training", "No base model is available.");
    starting = true;
    updateStart();
    try {
      const job = await api.post(`/characters/${c.id}/train`, requestBody());
      ctx.toast("success", "Training queued", `job #${job.id}`);
      upsert(job);
      follow(job);
    } catch (e) {
      ctx.showError(e, "Cannot start training");
    } finally {
      starting = false;
      updateStart();
    }
  });

  function follow(job) {
    if (!ctx.jobs || following.has(job.id) || !isActiveJob(job)) return;
    following.add(job.id);
    ctx.jobs.follow(job, upsert, { onGone: (id) => { following.delete(id); jobs.delete(id); renderAll(); } });
  }

  function characterName(id) {
    const c = ctx.state.characters.find((x) => x.id === id);
    return c ? c.name : id == null ? "" : `character ${id}`;
  }

  const cancelJob = async (job) => {
    try {
      upsert(ctx.jobs ? await ctx.jobs.cancel(job.id) : await api.post(`/jobs/${job.id}/cancel`));
    } catch (e) {
      ctx.showError(e, "Cannot cancel the job");
      throw e;
    }
  };

  async function resume(job, button) {
    button.disabled = true;
    try {
      const next = await api.post(`/train/${job.id}/resume`);
      ctx.toast("success", "Training resumed", `job #${next.id} continues #${job.id}`);
      upsert(next);
      follow(next);
    } catch (e) {
      button.disabled = false;
      ctx.showError(e, "Cannot resume the training");
    }
  }

  // loss per step of each run: the server's history when it keeps one, else what the panel has seen
  const lossSeen = new Map(); // job id -> Map(step -> loss)
  function recordLoss(job) {
    if (!job || job.kind !== TRAIN_KIND) return;
    const p = (job.result && job.result.progress) || {};
    const loss = p.smooth_loss != null ? Number(p.smooth_loss) : p.loss != null ? Number(p.loss) : NaN;
    const step = Number(p.step);
    if (!Number.isFinite(loss) || !Number.isFinite(step) || step <= 0) return;
    if (!lossSeen.has(job.id)) lossSeen.set(job.id, new Map());
    const series = lossSeen.get(job.id);
    series.set(step, loss);
    if (series.size > MAX_POINTS) series.delete(series.keys().next().value);
  }

  function lossBox(job) {
    const id = Number(job.id);
    const history = job.result && Array.isArray(job.result.loss_history) ? job.result.loss_history : null;
    const points = lossPoints(history || Array.from(lossSeen.get(job.id) || [], ([step, loss]) => [step, loss]));
    const note = history ? null : h("div", { class: "ls-muted", testid: `train-loss-note-${id}` },
      "Drawn from the progress seen while this panel is open (the server keeps the latest loss only).");
    if (points.length < 2) {
      return h("div", { class: "ls-losschart", testid: `train-loss-${id}-chart-empty` },
        h("div", { class: "ls-muted" }, points.length ? `loss ${points[0].loss.toFixed(4)} at step ${points[0].step}`
          : "The loss chart appears as the steps come in."), note);
    }
    return h("figure", { class: "ls-losschart", style: "margin: 0" },
      lossChart(points, { testid: `train-loss-chart-${id}` }),
      h("figcaption", { class: "ls-muted" }, `loss over ${points.length} step(s)`), note);
  }

  /** Step, loss, speed, ETA, samples, the LoRA written, Resume: what a training run adds to its row. */
  function runDetails(job) {
    const id = Number(job.id);
    const result = job.result || {};
    const stats = trainStats(job);
    const samples = (result.samples || []).filter((s) => s && s.file);
    const resumeButton = ["failed", "cancelled"].includes(job.status) && result.checkpoint
      ? h("button", { class: "ls-btn", testid: `train-resume-${id}` }, `Resume from step ${result.checkpoint.step}`)
      : null;
    if (resumeButton) resumeButton.addEventListener("click", () => resume(job, resumeButton));
    return h("div", { class: "ls-train-run" },
      h("div", { class: "ls-row" },
        h("span", { testid: `train-step-${id}` }, `step ${stats.step}`),
        h("span", { testid: `train-loss-${id}` }, `loss ${stats.loss}`),
        h("span", { testid: `train-speed-${id}` }, stats.speed),
        h("span", { testid: `train-eta-${id}` }, `ETA ${stats.eta}`),
        result.resumed_from_job ? h("span", { class: "ls-muted" }, `resumed from #${result.resumed_from_job}`) : null,
        result.file_name ? h("strong", { testid: `train-lora-${id}` }, result.file_name) : null,
        resumeButton),
      (result.warnings || []).length ? h("div", { class: "ls-muted", testid: `train-warnings-${id}` },
        ...result.warnings.map((w) => h("div", {}, `⚠ ${w}`))) : null,
      h("div", { class: "ls-train-viz" }, lossBox(job),
        samples.length ? h("div", { class: "ls-row", testid: `train-samples-${id}` }, ...samples.map((s) =>
          h("figure", { style: "margin: 0; text-align: center" },
            h("img", { src: api.url(`/jobs/${id}/samples/${encodeURIComponent(s.file)}`), alt: s.prompt || "sample",
              title: s.prompt || "", loading: "lazy", testid: `train-sample-${id}-${Number(s.step)}`,
              style: "width: 128px; height: 128px; object-fit: contain; background: var(--ls-input)" }),
            h("figcaption", { class: "ls-muted" }, `step ${Number(s.step)}`)))) : null));
  }

  function renderRun(job) {
    return renderJobRow(job, { prefix: "run", label: "training", sublabel: (job.payload || {}).base_model || "",
      onCancel: cancelJob, result: runDetails(job) });
  }

  function renderJob(job) {
    return renderJobRow(job, { prefix: "job", sublabel: characterName(job.character_id), onCancel: cancelJob });
  }

  function renderRuns() {
    const c = ctx.character();
    const items = c ? Array.from(jobs.values()).filter((j) => j.kind === TRAIN_KIND && j.character_id === c.id)
      .sort((a, b) => b.id - a.id).slice(0, 20) : [];
    runs.replaceChildren(...(items.length ? items.map(renderRun)
      : [h("div", { class: "ls-muted" }, c ? "No training runs yet." : "Choose a character.")]));
  }

  function renderJobs() {
    const c = ctx.character();
    let items = Array.from(jobs.values()).sort((a, b) => b.id - a.id);
    if (onlyThis.checked && c) items = items.filter((j) => j.character_id === c.id);
    items = items.slice(0, 30);
    jobList.replaceChildren(...(items.length ? items.map(renderJob) : [h("div", { class: "ls-muted" }, "No jobs yet.")]));
  }

  function renderAll() {
    renderRuns();
    renderJobs();
  }

  function upsert(job) {
    if (!job || job.id == null) return;
    recordLoss(job);
    const old = jobs.get(job.id);
    if (old && !isNewerJob(old, job) && !(job.result && !old.result)) return;
    jobs.set(job.id, job);
    const row = jobList.querySelector(`[data-testid="job-${Number(job.id)}"]`);
    if (row) row.replaceWith(renderJob(job));
    else renderJobs();
    const c = ctx.character();
    if (job.kind === TRAIN_KIND && c && job.character_id === c.id) {
      const run = runs.querySelector(`[data-testid="run-${Number(job.id)}"]`);
      if (run) run.replaceWith(renderRun(job));
      else renderRuns();
    }
    if (isActiveJob(job) && job.kind === TRAIN_KIND) follow(job);
    // ingest and automatic jobs are reported by their own tabs, not twice
    const finished = old && ACTIVE_JOB.has(old.status) && !ACTIVE_JOB.has(job.status) && !isIngestKind(job.kind)
      && !AUTO_KINDS.has(job.kind) && job.kind !== "generate_batch";  // the Generate tab reports its batches
    if (finished && job.status === "succeeded") {
      ctx.toast("success", "Job finished", `#${job.id} ${job.kind}`);
      // the character's current LoRA changes with a training: reload it before listing the LoRAs
      Promise.resolve(ctx.reloadCharacters()).catch(() => {}).then(() => {
        const now = ctx.character();
        if (now && job.character_id === now.id) loadLoras();
      });
    } else if (finished && job.status === "failed") {
      ctx.toast("error", `Job #${job.id} failed`, job.error || job.message || "");
    }
  }

  async function loadJobs() {
    try {
      const c = ctx.character();
      const [all, mine] = await Promise.all([api.get("/jobs?limit=30"),
        c ? api.get(`/jobs?kind=${TRAIN_KIND}&character_id=${c.id}&limit=20`) : Promise.resolve({ items: [] })]);
      for (const job of [...(all.items || []), ...(mine.items || [])]) upsert(job);
      renderAll();
    } catch (e) {
      /* polling: stay quiet, the next tick retries */
    }
  }

  function folderList(data) {
    const dirs = [...(data.model_dirs || []), ...(data.checkpoint_dirs || [])].filter((d) => typeof d === "string" && d);
    return dirs.length ? dirs : null;
  }

  function showReadiness(data, items) {
    const missing = Array.isArray(data.missing_dependencies) ? data.missing_dependencies.filter(Boolean) : [];
    ready = { models: items.length > 0, deps: missing.length === 0 && data.training_available !== false, known: true };
    depsHint.hidden = ready.deps;
    depsHint.replaceChildren(missing.length
      ? `The training libraries are not installed in the Python that runs the studio: ${missing.join(", ")}. `
        + "Install torch for your platform, then pip install 'lora-studio[train]', and restart."
      : "This server cannot train (it says so in GET /models).");
    const dirs = folderList(data);
    modelHint.hidden = ready.models;
    modelHint.replaceChildren(
      "No base models found. Put an SD1.5 or SDXL .safetensors checkpoint (or a diffusers folder) in ",
      ...(dirs ? dirs.flatMap((d, i) => [i ? " or " : "", h("code", { testid: "train-models-dir" }, d)])
        : ["the studio's models folder (<data>/models, or LORA_STUDIO_MODELS_DIR) or ComfyUI's models/checkpoints"]),
      ", then press ↻.");
    blocked.hidden = ready.models && ready.deps;
  }

  async function loadModels() {
    try {
      const data = await api.get("/models");
      const items = data.items || (data.base_models || []).map((name) => ({ name }));
      const keep = baseModel.value;
      baseModel.replaceChildren(...items.map((m) => h("option", { value: m.name },
        m.source === "single_file" ? `${m.name}` : m.source === "diffusers" ? `${m.name} (diffusers)` : m.name)));
      if (items.some((m) => m.name === keep)) baseModel.value = keep;
      if (Number.isInteger(data.min_approved_images)) minImages = data.min_approved_images;
      showReadiness(data, items);
      countsChanged();
    } catch (e) {
      ready = { models: false, deps: true, known: false };
      depsHint.hidden = false;
      depsHint.textContent = `Cannot ask the server which base models it has: ${e.message}`;
      modelHint.hidden = true;
      blocked.hidden = false;
      countsChanged();
      ctx.showError(e, "Cannot list base models");
    }
  }

  async function loadLoras() {
    const c = ctx.character();
    if (!c) {
      loras.replaceChildren(h("div", { class: "ls-muted" }, "Choose a character."));
      return;
    }
    try {
      const data = await api.getAll(`/characters/${c.id}/loras`);
      const items = data.items || [];
      loras.replaceChildren(...(items.length ? items.map((l) => h("div", { class: "ls-row", testid: "lora-item" },
        h("strong", {}, l.file_name),
        h("span", { class: "ls-muted" }, `rank ${l.rank} · alpha ${l.alpha} · ${l.steps} steps · ${l.image_count} images`
          + `${l.job_id ? ` · job #${l.job_id}` : ""} · ${l.created_at || ""}`),
        c.current_lora_id === l.id ? h("span", { class: "ls-status-succeeded" }, "current") : null))
        : [h("div", { class: "ls-muted" }, "No LoRA trained yet.")]));
    } catch (e) {
      ctx.showError(e, "Cannot list LoRAs");
    }
  }

  let starting = false;
  function updateStart() {
    const c = ctx.character();
    const approved = (c && c.counts && c.counts.approved) || 0;
    const tooFew = !!c && minImages !== null && approved < minImages;
    const why = !c ? "Choose a character first."
      : !ready.known ? "Waiting for the server's list of base models."
        : !ready.deps ? "The training libraries are missing on the server."
          : !ready.models ? "No base model is available."
            : tooFew ? `Needs ${minImages ?? "more"} approved images (${approved} now).` : "";
    start.disabled = starting || !!why;
    start.title = why || "Start the training";
    start.dataset.reason = why;
  }

  function countsChanged() {
    const c = ctx.character();
    const approved = (c && c.counts && c.counts.approved) || 0;
    const tooFew = !!c && minImages !== null && approved < minImages;
    info.classList.toggle("ls-error", tooFew);
    info.textContent = !c ? "Choose a character first."
      : tooFew ? `${c.name} has ${approved} approved image(s); training needs at least ${minImages}: approve more in Approvals.`
        : `${c.name}: ${approved} approved image(s) will be trained on.`;
    updateStart();
  }

  onlyThis.addEventListener("change", renderJobs);
  let ticks = 0;

  const el = h("section", { class: "ls-section" },
    h("div", { class: "ls-box" }, h("h3", {}, "New training"), blocked, info,
      h("div", { class: "ls-row" }, h("label", {}, "Base model", baseModel), basic),
      advanced,
      h("div", { class: "ls-row" }, start)),
    h("div", { class: "ls-box" }, h("h3", {}, "Training runs of this character"), runs),
    h("div", { class: "ls-box" }, h("h3", {}, "LoRAs of this character"), loras),
    h("div", { class: "ls-box" },
      h("div", { class: "ls-row", style: "justify-content: space-between" }, h("h3", {}, "Jobs"),
        h("label", { class: "ls-check" }, onlyThis, "only this character")),
      jobList));

  return {
    el,
    refresh() {
      loadOptions();
      countsChanged();
      loadModels();
      loadLoras();
      renderRuns();
      loadJobs();
    },
    countsChanged,
    onJob: upsert,
    tick() {
      ticks += 1;
      if (!ctx.isActive("training")) return;
      const active = Array.from(jobs.values()).some((j) => ACTIVE_JOB.has(j.status));
      if (active || ticks % 5 === 0) loadJobs();
    },
  };
}
