// LoRA Studio panel: the one job follower and the one progress-row renderer every tab uses.
//
// Exported API (declarations only: ComfyUI imports every .js file of the pack, nothing runs here):
//
//   ACTIVE_JOB                      Set of the statuses a job can still leave ("queued", "running").
//   isActiveJob(job) -> bool
//   isNewerJob(old, job) -> bool    whether `job` is a later state than `old` (same id): a finished job
//                                   never goes back to running; an older updated_at is refused.
//   jobPercent(job) -> 0..100       job.progress (0..1) as a whole percentage.
//
//   jobFollower({ api, pollMs = 1000, isStopped = () => false }) -> follower
//     The panel builds one (panel.js, exposed to the tabs as `ctx.jobs`) and feeds it every job
//     event of the server's event socket (`push`). A followed job is polled (GET /jobs/{id}) only
//     while no event about it came in the last 2.5 poll intervals: the socket is the normal path,
//     polling the fallback (a socket that is down, an event that was lost). One timer per job, shared
//     by all the views that follow it.
//     follower.follow(jobOrId, onUpdate, { onGone } = {}) -> unfollow()
//         onUpdate(job) runs for every newer state of the job, until (and including) the state in
//         which it has ended (succeeded / failed / cancelled); then the subscription ends by itself.
//         Given a job record, that record is the starting point (onUpdate is not called for it; it
//         is called at once, asynchronously, when the follower already knows a newer state); a
//         record that has ended is not followed. Given an id, the job is fetched at once.
//         onGone(id) runs when the server answers 404. Tabs still get every event through their
//         section's onJob(job) (panel.js), to pick up jobs started elsewhere.
//     follower.push(job)            a job event (any job; only followed ones are delivered, the last
//                                   few others are remembered: a job's events can arrive before the
//                                   answer of the request that started it, and follow() uses them).
//     follower.cancel(jobId) -> Promise<job>   POST /jobs/{id}/cancel; the answer is pushed to all
//                                   followers of the job. Rejects with the API error.
//     follower.latest(jobId) -> job | null     the newest state seen of a followed job.
//     follower.destroy()            stops every timer (the panel calls it when it is unmounted).
//
//   renderJobRow(job, options) -> HTMLElement   a job's row: label, status, progress bar, message,
//   error, Cancel (while active) and whatever the caller adds. API text through textContent only.
//     options.prefix = "job"        data-testids: `${prefix}-status-<id>`, `${prefix}-progress-<id>`,
//                                   `${prefix}-cancel-<id>`, `${prefix}-message-<id>`, `${prefix}-error-<id>`
//     options.rowPrefix = prefix    the row's data-testid: `${rowPrefix}-<id>` (data-status, data-kind)
//     options.label                 text after "#<id> " (default: job.kind)
//     options.sublabel              muted text after the label (e.g. the character's name)
//     options.compact = false       one inline line: the bar only while active, the status without
//                                   the percentage once ended (the Approvals tab's job line)
//     options.result                a Node appended under the row (the caller's summary of the result)
//     options.onCancel(job) -> Promise   shows Cancel while the job is active; the button stays
//                                   disabled while the promise runs and comes back if it rejects
//     options.onDismiss(job)        shows a × "Hide" button once the job has ended
//
//   Example (a tab's job list):
//     const onCancel = (job) => ctx.jobs.cancel(job.id).catch((e) => { ctx.showError(e, "Cannot cancel"); throw e; });
//     const draw = (job) => {
//       jobs.set(job.id, job);
//       list.replaceChildren(...Array.from(jobs.values(), (j) => renderJobRow(j, { prefix: "job", onCancel })));
//     };
//     draw(startedJob);
//     const stop = ctx.jobs.follow(startedJob, draw, { onGone: (id) => jobs.delete(id) });

import { h } from "./panel_dom.js";

export const ACTIVE_JOB = new Set(["queued", "running"]);
const DEFAULT_POLL_MS = 1000;
const EVENT_FRESH = 2.5; // poll intervals after an event during which polling waits
const REMEMBER = 200; // events of jobs nobody follows (yet) kept

export const isActiveJob = (job) => !!job && ACTIVE_JOB.has(job.status);

export function jobPercent(job) {
  return Math.round(Math.max(0, Math.min(1, Number(job && job.progress) || 0)) * 100);
}

const sameState = (a, b) => a.status === b.status && a.progress === b.progress && a.message === b.message
  && a.error === b.error && !!a.cancel_requested === !!b.cancel_requested;

export function isNewerJob(old, job) {
  if (!job || job.id == null) return false;
  if (!old) return true;
  if (!isActiveJob(old) && isActiveJob(job)) return false; // an older state arriving late
  if (old.updated_at && job.updated_at) {
    if (job.updated_at < old.updated_at) return false;
    if (job.updated_at > old.updated_at) return true;
  }
  return !sameState(old, job);
}

export function jobFollower({ api, pollMs = DEFAULT_POLL_MS, isStopped = () => false } = {}) {
  const entries = new Map(); // id -> {job, subs: Set<{onUpdate, onGone}>, timer, lastEvent}
  const seen = new Map(); // id -> {job, at}: the newest event of a job nobody followed then
  let stopped = false;
  const dead = () => stopped || isStopped();

  function deliver(entry, job) {
    for (const sub of Array.from(entry.subs)) {
      try {
        sub.onUpdate(job);
      } catch (e) {
        console.error("[LoRA Studio] job update handler failed", e);
      }
    }
  }

  function finish(id, entry) {
    clearTimeout(entry.timer);
    entry.timer = null;
    entry.subs.clear();
    entries.delete(id);
  }

  /** A newer state from anywhere (event, poll, cancel answer): delivered once to every follower. */
  function accept(job, fromEvent) {
    if (!job || job.id == null) return false;
    const id = Number(job.id);
    const entry = entries.get(id);
    if (!entry) {
      if (fromEvent) remember(id, job);
      return false;
    }
    if (fromEvent) entry.lastEvent = Date.now();
    if (!isNewerJob(entry.job, job)) return false;
    entry.job = job;
    deliver(entry, job);
    if (!isActiveJob(job)) finish(id, entry);
    return true;
  }

  function remember(id, job) {
    const old = seen.get(id);
    if (old && !isNewerJob(old.job, job)) return;
    seen.delete(id); // re-inserted last: the Map's order is the eviction order
    seen.set(id, { job, at: Date.now() });
    while (seen.size > REMEMBER) seen.delete(seen.keys().next().value);
  }

  function schedule(id, entry, delay = pollMs) {
    if (dead() || entry.timer) return;
    entry.timer = setTimeout(() => tick(id, entry), delay);
  }

  async function tick(id, entry) {
    entry.timer = null;
    if (dead() || entries.get(id) !== entry) return;
    if (entry.job && Date.now() - entry.lastEvent < pollMs * EVENT_FRESH) {
      schedule(id, entry); // events are flowing: no request
      return;
    }
    try {
      accept(await api.get(`/jobs/${id}`), false);
    } catch (e) {
      if (e && e.status === 404 && entries.get(id) === entry) {
        const subs = Array.from(entry.subs);
        finish(id, entry);
        for (const sub of subs) {
          try {
            if (sub.onGone) sub.onGone(id);
          } catch (err) {
            console.error("[LoRA Studio] job handler failed", err);
          }
        }
        return;
      }
      // network trouble: try again on the next tick
    }
    if (entries.get(id) === entry) schedule(id, entry);
  }

  return {
    follow(jobOrId, onUpdate, { onGone } = {}) {
      const given = jobOrId && typeof jobOrId === "object" ? jobOrId : null;
      const id = Number(given ? given.id : jobOrId);
      if (!Number.isFinite(id) || typeof onUpdate !== "function") return () => {};
      if (given && !isActiveJob(given)) { // it has ended: tell those who follow it, nothing to follow
        accept(given, false);
        return () => {};
      }
      const early = seen.get(id);
      let entry = entries.get(id);
      let current = entry ? entry.job : null;
      for (const candidate of [given, early && early.job]) {
        if (candidate && isNewerJob(current, candidate)) current = candidate;
      }
      if (current && !isActiveJob(current)) { // its events said it has ended before it was followed
        if (entry) accept(current, false);
        let live = true;
        Promise.resolve().then(() => live && onUpdate(current));
        return () => { live = false; };
      }
      seen.delete(id); // followed from now on: its events go to the entry
      if (!entry) {
        entry = { job: null, subs: new Set(), timer: null, lastEvent: 0 };
        entries.set(id, entry);
      }
      if (current && current !== entry.job) {
        entry.job = current;
        if (current === (early && early.job)) entry.lastEvent = early.at;
      }
      const sub = { onUpdate, onGone };
      entry.subs.add(sub);
      if (current && current !== given) { // a newer state is known: hand it over
        Promise.resolve().then(() => entry.subs.has(sub) && onUpdate(current));
      }
      schedule(id, entry, current ? pollMs : 0);
      return () => {
        entry.subs.delete(sub);
        if (entry.subs.size === 0 && entries.get(id) === entry) finish(id, entry);
      };
    },
    push: (job) => accept(job, true),
    async cancel(jobId) {
      const job = await api.post(`/jobs/${Number(jobId)}/cancel`);
      accept(job, false);
      return job;
    },
    latest: (jobId) => {
      const entry = entries.get(Number(jobId));
      return entry ? entry.job : null;
    },
    destroy() {
      stopped = true;
      for (const [id, entry] of Array.from(entries)) finish(id, entry);
      seen.clear();
    },
  };
}

export function renderJobRow(job, options = {}) {
  const { prefix = "job", rowPrefix = prefix, label, sublabel, compact = false, result, onCancel, onDismiss } = options;
  const id = Number(job.id);
  const pct = jobPercent(job);
  const active = isActiveJob(job);

  let cancel = null;
  if (active && onCancel) {
    cancel = h("button", { class: "ls-btn", testid: `${prefix}-cancel-${id}`, disabled: !!job.cancel_requested },
      job.cancel_requested ? "Cancelling…" : "Cancel");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        await onCancel(job);
      } catch (e) {
        cancel.disabled = false;
        console.error("[LoRA Studio] cancel failed", e);
      }
    });
  }
  const dismiss = !active && onDismiss ? h("button", { class: "ls-chip-x", title: "Hide", "aria-label": "Hide",
    onclick: () => onDismiss(job) }, "×") : null;
  const title = h("span", {}, `#${id} ${label || job.kind || "job"} `,
    sublabel ? h("span", { class: "ls-muted" }, sublabel) : null);
  const statusText = compact && !active ? job.status : `${job.status} · ${pct}%`;
  const status = h("span", { class: `ls-status-${job.status}`, testid: `${prefix}-status-${id}` }, statusText);
  const bar = compact && !active ? null : h("div", { class: "ls-bar", role: "progressbar", "aria-valuemin": "0",
    "aria-valuemax": "100", "aria-valuenow": String(pct), testid: `${prefix}-progress-${id}` },
  h("div", { style: `width: ${pct}%` }));
  const message = job.message && (active || !compact || !result)
    ? h(compact ? "span" : "div", { class: "ls-muted", testid: `${prefix}-message-${id}` }, job.message) : null;
  const error = job.error ? h(compact ? "span" : "div", { class: "ls-error", testid: `${prefix}-error-${id}` },
    job.error) : null;
  const attrs = { testid: `${rowPrefix}-${id}`, "data-status": job.status, "data-kind": job.kind || "" };

  if (compact) {
    return h("div", { class: "ls-autojob", ...attrs }, title, status, bar, message, error, result || null,
      cancel, dismiss);
  }
  return h("div", { class: "ls-job", ...attrs },
    h("div", { class: "ls-job-head" }, title, status, cancel, dismiss),
    bar, message, error, result || null);
}
