// LoRA Studio panel: the Ingest tab's list of jobs (video frames, URL fetches, imports from
// ComfyUI's output folder, and the classify / auto-review jobs started in Approvals) with a
// progress bar, a Cancel button and the result. Following (job events, polling as fallback) and
// the row itself come from panel_jobfollow.js (ctx.jobs, renderJobRow).
//
// Declarations only (ComfyUI imports every .js file of the pack). API text goes through
// textContent (the `h` helper), never innerHTML.

import { h } from "./panel_dom.js";
import { ACTIVE_JOB, isNewerJob, renderJobRow } from "./panel_jobfollow.js";

const KEEP = 20; // jobs shown
const KIND_LABELS = {
  import_outputs: "Import from ComfyUI output",
  ingest_images: "Image upload",
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
  const jobs = new Map(); // id -> job
  const followed = new Set(); // ids seen queued/running (or started here)
  const reported = new Set();
  const unfollow = new Map(); // id -> stop following (ctx.jobs)

  const list = h("div", { class: "ls-list", testid });
  const clear = h("button", { class: "ls-btn", testid: `${testid}-clear`, title: "Hide finished jobs" }, "Clear finished");
  const el = h("div", { class: "ls-box" },
    h("div", { class: "ls-row", style: "justify-content: space-between" }, h("h3", {}, "Ingest jobs"), clear), list);

  clear.addEventListener("click", () => {
    for (const [id, job] of jobs) if (!ACTIVE_JOB.has(job.status)) jobs.delete(id);
    render();
  });

  const cancelJob = (job) => ctx.jobs.cancel(job.id).catch((e) => {
    ctx.showError(e, "Cannot cancel the job");
    throw e;
  });

  function resultOf(job) {
    const id = Number(job.id);
    if (job.status !== "succeeded") return null;
    if (AUTO_KINDS.has(job.kind)) return h("div", { testid: `ingest-result-${id}` }, autoJobSummary(job));
    const { created, skipped, skippedList, frames } = resultCounts(job.result);
    return h("div", { testid: `ingest-result-${id}`, "data-created": String(created), "data-skipped": String(skipped) },
      frames == null ? "" : `${frames} frame(s) taken → `, `${created} created (pending), ${skipped} skipped`,
      skippedList.length ? h("details", { class: "ls-muted" }, h("summary", {}, "skipped"),
        ...skippedList.slice(0, 50).map((s) => h("div", {},
          `${(s && (s.filename || s.path || s.name)) || "?"}: ${(s && s.reason) || ""}`))) : null);
  }

  function renderJob(job) {
    const character = ctx.state.characters.find((c) => c.id === job.character_id);
    return renderJobRow(job, { prefix: "ingest", rowPrefix: "ingest-job", label: KIND_LABELS[job.kind],
      sublabel: character ? character.name : "", result: resultOf(job), onCancel: cancelJob });
  }

  function render() {
    const items = Array.from(jobs.values()).sort((a, b) => b.id - a.id).slice(0, KEEP);
    list.replaceChildren(...(items.length ? items.map(renderJob)
      : [h("div", { class: "ls-muted", testid: `${testid}-empty` }, "No ingest jobs yet.")]));
  }

  function upsert(job) {
    if (!job || job.id == null) return;
    const id = Number(job.id);
    if (!isNewerJob(jobs.get(id), job)) return;
    jobs.set(id, job);
    if (ACTIVE_JOB.has(job.status)) followed.add(id);
    const current = list.querySelector(`[data-testid="ingest-job-${id}"]`);
    if (current) current.replaceWith(renderJob(job));
    else render();
    if (!ACTIVE_JOB.has(job.status)) {
      unfollow.delete(id);
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

  function gone(id) { // the server no longer has it: stop showing it
    unfollow.delete(id);
    jobs.delete(id);
    render();
  }

  render();

  return {
    el,
    /** Follow a job the panel started (or found running). */
    track(job) {
      if (!job || job.id == null) return;
      const id = Number(job.id);
      followed.add(id);
      upsert(job);
      const latest = jobs.get(id);
      if (latest && ACTIVE_JOB.has(latest.status) && !unfollow.has(id)) {
        unfollow.set(id, ctx.jobs.follow(latest, upsert, { onGone: gone }));
      }
    },
    /** A job event: picks up running ingest jobs of `characterId` (followed ones come through ctx.jobs). */
    onJob(job, characterId) {
      if (!job || job.id == null || jobs.has(Number(job.id))) return;
      if (isIngestKind(job.kind) && ACTIVE_JOB.has(job.status) && job.character_id === characterId) this.track(job);
    },
    has: (id) => jobs.has(Number(id)),
    active: () => Array.from(jobs.values()).filter((j) => ACTIVE_JOB.has(j.status)),
    destroy() {
      for (const stop of unfollow.values()) stop();
      unfollow.clear();
    },
  };
}
