// LoRA Studio panel: follows the ingest jobs (video frames, URL fetches, imports from ComfyUI's
// output folder) with a progress bar, a Cancel button and the result. A job is updated by the
// server's job events (onJob) and by polling GET /jobs/{id} every second until it finishes.
//
// Declarations only (ComfyUI imports every .js file of the pack). API text goes through
// textContent (the `h` helper), never innerHTML.

import { h } from "./panel_dom.js";

export const ACTIVE_JOB = new Set(["queued", "running"]);
const POLL_MS = 1000;
const KEEP = 20; // jobs shown
const KIND_LABELS = {
  import_outputs: "Import from ComfyUI output",
  ingest_video: "Video frames",
  ingest_url: "Video/image from URL",
  classify: "Classify project",
  auto_review: "Auto-review",
};

/** Classification and automatic review: started from the Approvals tab, listed here too. */
export const AUTO_KINDS = new Set(["classify", "auto_review"]);

const list = (value) => (Array.isArray(value) ? value : []);

/** One line about a finished classify / auto-review job's result. */
export function autoJobSummary(job) {
  const r = job && job.result && typeof job.result === "object" ? job.result : {};
  const failed = list(r.failed).length;
  const tail = failed ? `, ${failed} failed` : "";
  if (job.kind === "classify") {
    return `${countOf(r.classified)} classified, ${list(r.moved).length} moved to another character${tail}`;
  }
  return `${list(r.approved).length} approved, ${list(r.rejected).length} rejected, `
    + `${list(r.left_pending).length} left pending${tail}`;
}

/** Whether a job kind belongs to the Ingest tab. */
export function isIngestKind(kind) {
  const k = String(kind || "");
  return k === "import_outputs" || k.startsWith("ingest");
}

function countOf(value) {
  if (Array.isArray(value)) return value.length;
  const n = Number(value);
  return Number.isFinite(n) ? n : 0;
}

/** {created, skipped, skippedList} of a finished ingest job's result (lists or counts). */
export function resultCounts(result) {
  const r = result && typeof result === "object" ? result : {};
  const skippedList = Array.isArray(r.skipped) ? r.skipped : [];
  return { created: countOf(r.created), skipped: countOf(r.skipped), skippedList,
    frames: r.frames == null ? null : countOf(r.frames) };
}

/**
 * A list of followed jobs. `onFinished(job)` runs once for each job this tracker followed while
 * it was queued or running, when it ends (succeeded, failed or cancelled).
 */
export function jobTracker(ctx, { testid = "ingest-jobs", onFinished = () => {} } = {}) {
  const { api } = ctx;
  const jobs = new Map(); // id -> job
  const followed = new Set(); // ids seen queued/running (or started here)
  const reported = new Set();
  const timers = new Map(); // id -> timeout
  let stopped = false;

  const list = h("div", { class: "ls-list", testid });
  const clear = h("button", { class: "ls-btn", testid: `${testid}-clear`, title: "Hide finished jobs" }, "Clear finished");
  const el = h("div", { class: "ls-box" },
    h("div", { class: "ls-row", style: "justify-content: space-between" }, h("h3", {}, "Ingest jobs"), clear), list);

  clear.addEventListener("click", () => {
    for (const [id, job] of jobs) if (!ACTIVE_JOB.has(job.status)) jobs.delete(id);
    render();
  });

  function renderJob(job) {
    const id = Number(job.id);
    const pct = Math.round(Math.max(0, Math.min(1, Number(job.progress) || 0)) * 100);
    const active = ACTIVE_JOB.has(job.status);
    const cancel = active ? h("button", { class: "ls-btn", testid: `ingest-cancel-${id}`,
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
    let result = null;
    if (job.status === "succeeded" && AUTO_KINDS.has(job.kind)) {
      result = h("div", { testid: `ingest-result-${id}` }, autoJobSummary(job));
    } else if (job.status === "succeeded") {
      const { created, skipped, skippedList, frames } = resultCounts(job.result);
      result = h("div", { testid: `ingest-result-${id}`, "data-created": String(created), "data-skipped": String(skipped) },
        frames == null ? "" : `${frames} frame(s) taken → `, `${created} created (pending), ${skipped} skipped`,
        skippedList.length ? h("details", { class: "ls-muted" }, h("summary", {}, "skipped"),
          ...skippedList.slice(0, 50).map((s) => h("div", {},
            `${(s && (s.filename || s.path || s.name)) || "?"}: ${(s && s.reason) || ""}`))) : null);
    }
    const character = ctx.state.characters.find((c) => c.id === job.character_id);
    return h("div", { class: "ls-job", testid: `ingest-job-${id}`, "data-status": job.status },
      h("div", { class: "ls-job-head" },
        h("span", {}, `#${id} ${KIND_LABELS[job.kind] || job.kind || "job"} `,
          h("span", { class: "ls-muted" }, character ? character.name : "")),
        h("span", { class: `ls-status-${job.status}`, testid: `ingest-status-${id}` }, `${job.status} · ${pct}%`),
        cancel),
      h("div", { class: "ls-bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
        "aria-valuenow": String(pct), testid: `ingest-progress-${id}` }, h("div", { style: `width: ${pct}%` })),
      job.message ? h("div", { class: "ls-muted" }, job.message) : null,
      job.error ? h("div", { class: "ls-error" }, job.error) : null,
      result);
  }

  function render() {
    const items = Array.from(jobs.values()).sort((a, b) => b.id - a.id).slice(0, KEEP);
    list.replaceChildren(...(items.length ? items.map(renderJob)
      : [h("div", { class: "ls-muted", testid: `${testid}-empty` }, "No ingest jobs yet.")]));
  }

  function upsert(job) {
    if (!job || job.id == null) return;
    const id = Number(job.id);
    const old = jobs.get(id);
    if (old && old.updated_at && job.updated_at && old.updated_at > job.updated_at) return;
    if (old && !ACTIVE_JOB.has(old.status) && ACTIVE_JOB.has(job.status)) return; // an older state
    jobs.set(id, job);
    if (ACTIVE_JOB.has(job.status)) followed.add(id);
    const current = list.querySelector(`[data-testid="ingest-job-${id}"]`);
    if (current) current.replaceWith(renderJob(job));
    else render();
    if (!ACTIVE_JOB.has(job.status)) {
      clearTimeout(timers.get(id));
      timers.delete(id);
      if (followed.has(id) && !reported.has(id)) {
        reported.add(id);
        try {
          onFinished(job);
        } catch (e) {
          console.error("[LoRA Studio] job handler failed", e);
        }
      }
    }
  }

  function schedule(id) {
    if (stopped || timers.has(id)) return;
    timers.set(id, setTimeout(() => poll(id), POLL_MS));
  }

  async function poll(id) {
    timers.delete(id);
    if (stopped || ctx.state.destroyed) return;
    try {
      upsert(await api.get(`/jobs/${id}`));
    } catch (e) {
      if (e.status === 404) { // gone: stop following it
        jobs.delete(id);
        render();
        return;
      }
    }
    const job = jobs.get(id);
    if (job && ACTIVE_JOB.has(job.status)) schedule(id);
  }

  render();

  return {
    el,
    /** Follow a job the panel started (or found running). */
    track(job) {
      if (!job || job.id == null) return;
      followed.add(Number(job.id));
      upsert(job);
      if (ACTIVE_JOB.has(job.status)) schedule(Number(job.id));
    },
    /** A job event: updates a followed job, and picks up running ingest jobs of `characterId`. */
    onJob(job, characterId) {
      if (!job || job.id == null) return;
      const id = Number(job.id);
      if (jobs.has(id)) upsert(job);
      else if (isIngestKind(job.kind) && ACTIVE_JOB.has(job.status) && job.character_id === characterId) this.track(job);
    },
    has: (id) => jobs.has(Number(id)),
    active: () => Array.from(jobs.values()).filter((j) => ACTIVE_JOB.has(j.status)),
    destroy() {
      stopped = true;
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
    },
  };
}
