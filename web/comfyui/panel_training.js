// LoRA Studio panel, Training tab: start a LoRA training (the form is built from GET /training/options: the
// server's defaults, bounds and choices; advanced options folded away), follow its runs (step, loss, it/s, ETA, sample images), cancel, resume from the
// last checkpoint, and list the character's LoRAs and past runs. Declarations only at import.

import { h, numberOrUndefined } from "./panel_dom.js";
import { ACTIVE_JOB, isActiveJob, isNewerJob, renderJobRow } from "./panel_jobfollow.js";
import { AUTO_KINDS, isIngestKind } from "./panel_jobs.js";

const TRAIN_KIND = "train";

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
  const modelHint = h("div", { class: "ls-muted", testid: "train-models-hint", hidden: true },
    "No base models found. Put an SD1.5 or SDXL .safetensors checkpoint (or a diffusers folder) in the models "
    + "folder (see the README).");

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
    start.disabled = true;
    try {
      const job = await api.post(`/characters/${c.id}/train`, requestBody());
      ctx.toast("success", "Training queued", `job #${job.id}`);
      upsert(job);
      follow(job);
    } catch (e) {
      ctx.showError(e, "Cannot start training");
    } finally {
      start.disabled = false;
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
      samples.length ? h("div", { class: "ls-row", testid: `train-samples-${id}` }, ...samples.map((s) =>
        h("figure", { style: "margin: 0; text-align: center" },
          h("img", { src: api.url(`/jobs/${id}/samples/${encodeURIComponent(s.file)}`), alt: s.prompt || "sample",
            title: s.prompt || "", loading: "lazy", testid: `train-sample-${id}-${Number(s.step)}`,
            style: "width: 128px; height: 128px; object-fit: contain; background: var(--ls-input)" }),
          h("figcaption", { class: "ls-muted" }, `step ${Number(s.step)}`)))) : null);
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

  async function loadModels() {
    try {
      const data = await api.get("/models");
      const items = data.items || (data.base_models || []).map((name) => ({ name }));
      const keep = baseModel.value;
      baseModel.replaceChildren(...items.map((m) => h("option", { value: m.name },
        m.source === "single_file" ? `${m.name}` : m.source === "diffusers" ? `${m.name} (diffusers)` : m.name)));
      if (items.some((m) => m.name === keep)) baseModel.value = keep;
      modelHint.hidden = items.length > 0;
      start.disabled = items.length === 0;
      if (Number.isInteger(data.min_approved_images)) minImages = data.min_approved_images;
      countsChanged();
    } catch (e) {
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

  function countsChanged() {
    const c = ctx.character();
    const approved = (c && c.counts && c.counts.approved) || 0;
    const tooFew = !!c && minImages !== null && approved < minImages;
    info.classList.toggle("ls-error", tooFew);
    info.textContent = !c ? "Choose a character first."
      : tooFew ? `${c.name} has ${approved} approved image(s); training needs at least ${minImages}: approve more in Approvals.`
        : `${c.name}: ${approved} approved image(s) will be trained on.`;
  }

  onlyThis.addEventListener("change", renderJobs);
  let ticks = 0;

  const el = h("section", { class: "ls-section" },
    h("div", { class: "ls-box" }, h("h3", {}, "New training"), info,
      h("div", { class: "ls-row" }, h("label", {}, "Base model", baseModel), basic),
      advanced,
      modelHint, h("div", { class: "ls-row" }, start)),
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
