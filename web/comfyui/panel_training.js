// LoRA Studio panel, Training tab: start a LoRA training, follow the jobs.

import { h, numberOrUndefined } from "./panel_dom.js";
import { AUTO_KINDS, isIngestKind } from "./panel_jobs.js";

const ACTIVE_JOB = new Set(["queued", "running"]);

export function trainingSection(ctx) {
  const { api } = ctx;
  const jobs = new Map();
  const info = h("div", { class: "ls-muted", testid: "train-info" });
  const baseModel = h("select", { testid: "train-base-model", style: "min-width: 160px" });
  const steps = h("input", { type: "number", value: "1000", min: 1, max: 100000, testid: "train-steps" });
  const rank = h("input", { type: "number", value: "32", min: 1, max: 256, testid: "train-rank" });
  const lr = h("input", { type: "text", value: "1e-4", testid: "train-lr", style: "width: 80px" });
  const resolution = h("input", { type: "number", value: "512", min: 32, max: 2048, step: 32, testid: "train-resolution" });
  const start = h("button", { class: "ls-btn ls-primary", testid: "train-start" }, "Start training");
  const modelHint = h("div", { class: "ls-muted", testid: "train-models-hint", hidden: true },
    "No base models found. Put a diffusers model folder in the models folder (see the README).");
  const loras = h("div", { class: "ls-list", testid: "lora-list" });
  const onlyThis = h("input", { type: "checkbox", testid: "job-filter-character" });
  const jobList = h("div", { class: "ls-list", testid: "job-list" });

  start.addEventListener("click", async () => {
    const c = ctx.character();
    if (!c) return ctx.toast("warn", "Training", "Choose a character first.");
    if (!baseModel.value) return ctx.toast("warn", "Training", "No base model is available.");
    const body = { base_model: baseModel.value };
    const s = numberOrUndefined(steps);
    const r = numberOrUndefined(rank);
    const l = numberOrUndefined(lr);
    const res = numberOrUndefined(resolution);
    if (s !== undefined) body.steps = Math.round(s);
    if (r !== undefined) body.rank = Math.round(r);
    if (l !== undefined) body.learning_rate = l;
    if (res !== undefined) body.resolution = Math.round(res);
    start.disabled = true;
    try {
      const job = await api.post(`/characters/${c.id}/train`, body);
      ctx.toast("success", "Training queued", `job #${job.id}`);
      upsert(job);
    } catch (e) {
      ctx.showError(e, "Cannot start training");
    } finally {
      start.disabled = false;
    }
  });

  function characterName(id) {
    const c = ctx.state.characters.find((x) => x.id === id);
    return c ? c.name : id == null ? "" : `character ${id}`;
  }

  function renderJob(job) {
    const id = Number(job.id);
    const pct = Math.round(Math.max(0, Math.min(1, Number(job.progress) || 0)) * 100);
    const active = ACTIVE_JOB.has(job.status);
    const cancel = active ? h("button", { class: "ls-btn", testid: `job-cancel-${id}`,
      disabled: !!job.cancel_requested }, job.cancel_requested ? "Cancelling…" : "Cancel") : null;
    if (cancel) {
      cancel.addEventListener("click", async () => {
        cancel.disabled = true;
        try {
          upsert(await api.post(`/jobs/${id}/cancel`));
        } catch (e) {
          cancel.disabled = false;
          ctx.showError(e, "Cannot cancel the job");
        }
      });
    }
    return h("div", { class: "ls-job", testid: `job-${id}`, "data-status": job.status },
      h("div", { class: "ls-job-head" },
        h("span", {}, `#${id} ${job.kind} `, h("span", { class: "ls-muted" }, characterName(job.character_id))),
        h("span", { class: `ls-status-${job.status}`, testid: `job-status-${id}` }, `${job.status} · ${pct}%`),
        cancel),
      h("div", { class: "ls-bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
        "aria-valuenow": String(pct), testid: `job-progress-${id}` }, h("div", { style: `width: ${pct}%` })),
      job.message ? h("div", { class: "ls-muted" }, job.message) : null,
      job.error ? h("div", { class: "ls-error" }, job.error) : null);
  }

  function renderJobs() {
    const c = ctx.character();
    let items = Array.from(jobs.values()).sort((a, b) => b.id - a.id);
    if (onlyThis.checked && c) items = items.filter((j) => j.character_id === c.id);
    items = items.slice(0, 30);
    jobList.replaceChildren(...(items.length ? items.map(renderJob) : [h("div", { class: "ls-muted" }, "No jobs yet.")]));
  }

  function upsert(job) {
    const old = jobs.get(job.id);
    if (old && old.updated_at && job.updated_at && old.updated_at > job.updated_at) return;
    jobs.set(job.id, job);
    const current = jobList.querySelector(`[data-testid="job-${Number(job.id)}"]`);
    if (current) current.replaceWith(renderJob(job));
    else renderJobs();
    // ingest jobs are reported by the Ingest tab (panel_jobs.js), not twice
    const finished = old && ACTIVE_JOB.has(old.status) && !ACTIVE_JOB.has(job.status) && !isIngestKind(job.kind)
      && !AUTO_KINDS.has(job.kind);
    if (finished && job.status === "succeeded") {
      ctx.toast("success", "Job finished", `#${job.id} ${job.kind}`);
      const c = ctx.character();
      if (c && job.character_id === c.id) loadLoras();
      ctx.reloadCharacters().catch(() => {});
    } else if (finished && job.status === "failed") {
      ctx.toast("error", `Job #${job.id} failed`, job.error || job.message || "");
    }
  }

  async function loadJobs() {
    try {
      const data = await api.get("/jobs?limit=30");
      for (const job of data.items || []) upsert(job);
      renderJobs();
    } catch (e) {
      /* polling: stay quiet, the next tick retries */
    }
  }

  async function loadModels() {
    try {
      const data = await api.get("/models");
      const names = data.base_models || [];
      const keep = baseModel.value;
      baseModel.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
      if (names.includes(keep)) baseModel.value = keep;
      modelHint.hidden = names.length > 0;
      start.disabled = names.length === 0;
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
      const data = await api.get(`/characters/${c.id}/loras`);
      const items = data.items || [];
      loras.replaceChildren(...(items.length ? items.map((l) => h("div", { class: "ls-row", testid: "lora-item" },
        h("strong", {}, l.file_name),
        h("span", { class: "ls-muted" }, `rank ${l.rank} · ${l.steps} steps · ${l.created_at || ""}`)))
        : [h("div", { class: "ls-muted" }, "No LoRA trained yet.")]));
    } catch (e) {
      ctx.showError(e, "Cannot list LoRAs");
    }
  }

  function countsChanged() {
    const c = ctx.character();
    info.textContent = c
      ? `${c.name}: ${(c.counts && c.counts.approved) || 0} approved image(s) will be trained on.`
      : "Choose a character first.";
  }

  onlyThis.addEventListener("change", renderJobs);
  let ticks = 0;

  const el = h("section", { class: "ls-section" },
    h("div", { class: "ls-box" }, h("h3", {}, "New training"), info,
      h("div", { class: "ls-row" },
        h("label", {}, "Base model", baseModel), h("label", {}, "Steps", steps), h("label", {}, "Rank", rank),
        h("label", {}, "Learning rate", lr), h("label", {}, "Resolution", resolution)),
      modelHint, h("div", { class: "ls-row" }, start)),
    h("div", { class: "ls-box" }, h("h3", {}, "LoRAs of this character"), loras),
    h("div", { class: "ls-box" },
      h("div", { class: "ls-row", style: "justify-content: space-between" }, h("h3", {}, "Jobs"),
        h("label", { class: "ls-check" }, onlyThis, "only this character")),
      jobList));

  return {
    el,
    refresh() {
      countsChanged();
      loadModels();
      loadLoras();
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
