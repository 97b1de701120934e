// LoRA Studio panel: the "Classify project" and "Auto-review" buttons of the Approvals tab. Each
// starts a job on the server (POST /projects/{id}/classify, POST /characters/{id}/auto-review);
// the job is handed to the Ingest tab's job list (ctx.trackJob: progress bar, Cancel) and is also
// followed here (ctx.jobs, panel_jobfollow.js), where a short status line shows its progress and,
// once it has ended, its result. `onFinished(job)` runs once per job when it ends (the Approvals
// tab reloads its grid then).
//
// Declarations only (ComfyUI imports every .js file of the pack). API text goes through
// textContent (the `h` helper), never innerHTML.

import { h } from "./panel_dom.js";
import { ACTIVE_JOB, isNewerJob, renderJobRow } from "./panel_jobfollow.js";
import { AUTO_KINDS, autoJobSummary } from "./panel_jobs.js";

const LABELS = { classify: "Classify", auto_review: "Auto-review" };
const list = (value) => (Array.isArray(value) ? value : []);

export function autoJobControls(ctx, { onFinished = () => {} } = {}) {
  const { api } = ctx;
  const classifyButton = h("button", { class: "ls-btn", testid: "classify-project",
    title: "Ask the classifier which character each pending image of the project shows; sure answers move the image" },
  "Classify project");
  const reviewButton = h("button", { class: "ls-btn", testid: "auto-review",
    title: "Let the vision model approve or reject this character's pending images (unsure ones stay pending)" },
  "Auto-review");
  const status = h("div", { class: "ls-list", testid: "auto-jobs", hidden: true });

  const jobs = new Map(); // id -> latest job record
  const reported = new Set();
  const unfollow = new Map(); // id -> stop following (ctx.jobs)
  let starting = 0; // requests in flight

  const projectOf = (job) => Number(job && job.payload && job.payload.project_id);
  const activeFor = (kind, test) => Array.from(jobs.values()).some((j) => j.kind === kind && ACTIVE_JOB.has(j.status) && test(j));

  function update() {
    const p = ctx.project();
    const c = ctx.character();
    classifyButton.disabled = starting > 0 || !p || ctx.charactersOfProject().length === 0
      || activeFor("classify", (j) => projectOf(j) === p.id);
    reviewButton.disabled = starting > 0 || !c || activeFor("auto_review", (j) => j.character_id === c.id);
  }

  function renderJob(job) {
    const id = Number(job.id);
    const failures = job.status === "succeeded" ? list(job.result && job.result.failed) : [];
    const result = job.status === "succeeded" ? h("span", {},
      h("span", { class: "ls-muted", testid: `auto-job-result-${id}` }, autoJobSummary(job)),
      failures.length ? h("details", { class: "ls-muted" }, h("summary", {}, "failures"),
        ...failures.slice(0, 50).map((f) => h("div", {},
          `#${(f && f.image_id) ?? "?"}: ${(f && f.reason) || ""}`))) : null) : null;
    return renderJobRow(job, { prefix: "auto-job", label: LABELS[job.kind] || job.kind, compact: true, result,
      onDismiss: () => {
        jobs.delete(id);
        render();
      } });
  }

  function render() {
    const items = Array.from(jobs.values()).sort((a, b) => b.id - a.id).slice(0, 4);
    status.replaceChildren(...items.map(renderJob));
    status.hidden = items.length === 0;
    update();
  }

  function upsert(job) {
    if (!job || job.id == null || !AUTO_KINDS.has(job.kind)) return;
    const id = Number(job.id);
    const old = jobs.get(id);
    if (!old) return; // only the jobs followed here
    if (!isNewerJob(old, job)) return;
    jobs.set(id, job);
    render();
    if (!ACTIVE_JOB.has(job.status)) {
      unfollow.delete(id);
      if (!reported.has(id)) {
        reported.add(id);
        report(job);
      }
    }
  }

  function report(job) {
    const label = `${LABELS[job.kind] || job.kind} #${job.id}`;
    if (job.status === "succeeded") {
      const failed = list(job.result && job.result.failed).length;
      ctx.toast(failed ? "warn" : "success", `${label} finished`, autoJobSummary(job));
    } else if (job.status === "failed") {
      ctx.toast("error", `${label} failed`, job.error || job.message || "");
    } else {
      ctx.toast("info", `${label} ${job.status}`, job.message || "");
    }
    try {
      onFinished(job);
    } catch (e) {
      console.error("[LoRA Studio] job handler failed", e);
    }
  }

  function follow(job) {
    const id = Number(job.id);
    if (jobs.has(id)) return;
    jobs.set(id, job);
    render();
    if (!ACTIVE_JOB.has(job.status)) { // it ended before it could be followed
      reported.add(id);
      report(job);
      return;
    }
    unfollow.set(id, ctx.jobs.follow(job, upsert, { onGone: () => { // the server no longer has it
      unfollow.delete(id);
      jobs.delete(id);
      render();
    } }));
  }

  async function start(what, path) {
    starting += 1;
    update();
    try {
      const job = await api.post(path);
      follow(job);
      ctx.trackJob(job); // progress and Cancel in the Ingest tab as well
      ctx.toast("info", `${what} started`, `job #${job.id}`);
    } catch (e) {
      ctx.showError(e, `${what} failed`);
    } finally {
      starting -= 1;
      update();
    }
  }

  classifyButton.addEventListener("click", () => {
    const p = ctx.project();
    if (!p) return ctx.toast("warn", "Classify", "Choose a project first.");
    return start("Classify", `/projects/${p.id}/classify`);
  });
  reviewButton.addEventListener("click", () => {
    const c = ctx.character();
    if (!c) return ctx.toast("warn", "Auto-review", "Choose a character first.");
    return start("Auto-review", `/characters/${c.id}/auto-review`);
  });

  /** Follow the classify / auto-review jobs of the current selection that run already (a reload). */
  async function pickUpRunning() {
    const p = ctx.project();
    const c = ctx.character();
    if (!p && !c) return;
    try {
      const data = await api.get("/jobs?limit=50");
      for (const job of data.items || []) {
        if (!AUTO_KINDS.has(job.kind) || !ACTIVE_JOB.has(job.status) || jobs.has(Number(job.id))) continue;
        const mine = job.kind === "classify" ? p && projectOf(job) === p.id : c && job.character_id === c.id;
        if (mine) {
          follow(job);
          ctx.trackJob(job);
        }
      }
    } catch {
      /* a convenience: the jobs started here are followed anyway */
    }
  }

  update();

  return {
    buttons: [classifyButton, reviewButton],
    el: status,
    update,
    pickUpRunning,
    destroy() {
      for (const stop of unfollow.values()) stop();
      unfollow.clear();
    },
  };
}
