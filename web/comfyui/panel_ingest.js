// LoRA Studio panel, Ingest tab: upload images for the selected character, and the ingest jobs:
// frames of an uploaded video, a video/image from a URL, images from ComfyUI's output folder.
// Each job is followed with a progress bar, a Cancel button and its result (panel_jobs.js).
// An image upload is a job too (kind ingest_images): the request answers 202 with the job once the
// files are on the server; its result {created, skipped} is shown when it ends.

import { h, numberOrUndefined } from "./panel_dom.js";
import { ACTIVE_JOB } from "./panel_jobfollow.js";
import { jobTracker, isIngestKind, resultCounts } from "./panel_jobs.js";

const UPLOAD_BATCH = 16;

export function ingestSection(ctx) {
  const { api } = ctx;
  const target = h("div", { class: "ls-muted", testid: "ingest-target" });
  const files = h("input", { type: "file", multiple: true, accept: "image/png,image/jpeg,image/webp", testid: "ingest-files" });
  const caption = h("input", { type: "text", placeholder: "caption for these images (optional)", testid: "ingest-caption",
    style: "flex: 1 1 200px" });
  const upload = h("button", { class: "ls-btn ls-primary", testid: "ingest-upload" }, "Upload");
  const status = h("div", { class: "ls-muted", testid: "ingest-status" });
  const created = h("div", { class: "ls-list", testid: "ingest-created" });
  const skipped = h("div", { class: "ls-list", testid: "ingest-skipped" });
  const drop = h("div", { class: "ls-drop", testid: "ingest-drop" }, "Drop images here or choose files below");
  let dropped = null;
  const uploadJobs = new Set(); // ids of upload jobs started by the Upload button (it reports them)
  const createdBox = h("div", { class: "ls-box", hidden: true }, h("h3", {}, "Added"), created);
  const skippedBox = h("div", { class: "ls-box", hidden: true }, h("h3", {}, "Skipped"), skipped);

  /** Where ingested images go: the selected character, or the project's unassigned pool (Approvals' picker). */
  function dest() {
    const c = ctx.character();
    if (c) return { path: `/characters/${c.id}`, name: c.name, characterId: c.id, projectId: c.project_id };
    const p = ctx.unassignedProject ? ctx.unassignedProject() : null;
    if (p) return { path: `/projects/${p.id}`, name: `the unassigned pool of ${p.name}`, characterId: null, projectId: p.id };
    return null;
  }

  drop.addEventListener("click", () => files.click());

  drop.addEventListener("dragover", (ev) => {
    ev.preventDefault();
    drop.classList.add("ls-over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("ls-over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("ls-over");
    dropped = Array.from((ev.dataTransfer && ev.dataTransfer.files) || []);
    status.textContent = `${dropped.length} file(s) ready`;
  });
  files.addEventListener("change", () => {
    dropped = null;
    status.textContent = `${files.files.length} file(s) ready`;
  });

  upload.addEventListener("click", async () => {
    const d = dest();
    if (!d) return ctx.toast("warn", "Ingest", "Choose a character (or the unassigned pool) first.");
    const chosen = dropped || Array.from(files.files || []);
    if (!chosen.length) return ctx.toast("warn", "Ingest", "Choose some images first.");
    upload.disabled = true;
    createdBox.hidden = true;
    skippedBox.hidden = true;
    created.replaceChildren();
    skipped.replaceChildren();
    let nCreated = 0;
    let nSkipped = 0;
    try {
      for (let i = 0; i < chosen.length; i += UPLOAD_BATCH) {
        status.textContent = `Uploading ${Math.min(i + UPLOAD_BATCH, chosen.length)} / ${chosen.length}…`;
        const form = new FormData();
        for (const f of chosen.slice(i, i + UPLOAD_BATCH)) form.append("files", f, f.name);
        if (caption.value.trim()) form.append("caption", caption.value.trim());
        const started = await api.post(`${d.path}/images`, form);
        uploadJobs.add(Number(started.id));
        tracker.track(started);
        status.textContent = `Adding ${Math.min(i + UPLOAD_BATCH, chosen.length)} / ${chosen.length} (job #${started.id})…`;
        const job = await jobEnd(started);
        if (job.status === "failed") throw new Error(job.error || `upload job #${job.id} failed`);
        const answer = (job.result && typeof job.result === "object") ? job.result : {};
        for (const image of answer.created || []) {
          nCreated += 1;
          const name = (image.metadata && image.metadata.original_name) || `image ${image.id}`;
          created.append(h("div", { testid: `ingest-created-${Number(image.id)}` }, `✓ #${image.id} ${name}`));
        }
        for (const skip of answer.skipped || []) {
          nSkipped += 1;
          skipped.append(h("div", { class: "ls-error" }, `✗ ${skip.filename}: ${skip.reason}`));
        }
        if (job.status === "cancelled") throw new Error(`upload job #${job.id} was cancelled`);
      }
      status.textContent = `${nCreated} added as pending, ${nSkipped} skipped.`;
      ctx.toast(nCreated ? "success" : "warn", "Upload finished", status.textContent);
      files.value = "";
      dropped = null;
    } catch (e) {
      status.textContent = `${nCreated} added, ${nSkipped} skipped, then: ${e.message}`;
      ctx.showError(e, "Upload failed");
    } finally {
      upload.disabled = false;
      createdBox.hidden = nCreated === 0;
      skippedBox.hidden = nSkipped === 0;
      if (nCreated) {
        if (d.characterId != null) ctx.adjustCounts(d.characterId, { pending: nCreated });
        ctx.markStale("approvals");
      }
    }
  });

  /** The job's final state (succeeded, failed or cancelled). */
  function jobEnd(job) {
    if (!ACTIVE_JOB.has(job.status)) return Promise.resolve(job);
    return new Promise((resolve, reject) => {
      ctx.jobs.follow(job, (j) => { if (!ACTIVE_JOB.has(j.status)) resolve(j); },
        { onGone: () => reject(new Error(`upload job #${job.id} no longer exists`)) });
    });
  }

  // ingest jobs
  const tracker = jobTracker(ctx, {
    onFinished(job) {
      if (uploadJobs.has(Number(job.id))) return; // the Upload button reports its own jobs
      if (!isIngestKind(job.kind)) { // classify / auto-review: the Approvals tab reports them
        ctx.reloadCharacters().catch(() => {});
        return;
      }
      const label = `Job #${job.id}`;
      if (job.status === "succeeded") {
        const { created: n, skipped: m } = resultCounts(job.result);
        ctx.toast(n ? "success" : "warn", "Ingest finished", `${label}: ${n} added as pending, ${m} skipped`);
        if (n) ctx.markStale("approvals");
        ctx.reloadCharacters().catch(() => {});
      } else if (job.status === "failed") {
        ctx.toast("error", `${label} failed`, job.error || job.message || "");
      } else {
        ctx.toast("info", `${label} ${job.status}`, job.message || "");
      }
    },
  });

  function routeError(e, what) {
    // the video and URL routes may be missing on an older server: say so plainly
    if ((e.status === 404 || e.status === 405) && e.code === "http_error") {
      return new Error(`${what} is not available on this server (HTTP ${e.status})`);
    }
    return e;
  }

  async function startJob(button, what, call) {
    const d = dest();
    if (!d) {
      ctx.toast("warn", "Ingest", "Choose a character (or the unassigned pool) first.");
      return null;
    }
    button.disabled = true;
    try {
      const job = await call(d);
      tracker.track(job);
      ctx.toast("info", `${what} started`, `job #${job.id}`);
      return job;
    } catch (e) {
      ctx.showError(routeError(e, what), `${what} failed`);
      return null;
    } finally {
      button.disabled = !dest();
    }
  }

  // video upload
  const videoFile = h("input", { type: "file", accept: "video/*", testid: "video-file" });
  const videoMax = h("input", { type: "number", min: 1, max: 200, placeholder: "max frames", testid: "video-max-frames", style: "width: 110px",
    title: "At most this many frames (optional)" });
  const videoCaption = h("input", { type: "text", placeholder: "caption (optional)", testid: "video-caption",
    style: "flex: 1 1 160px" });
  const videoSubmit = h("button", { class: "ls-btn ls-primary", testid: "video-submit" }, "Extract frames");
  videoSubmit.addEventListener("click", async () => {
    const file = videoFile.files && videoFile.files[0];
    if (!file) return ctx.toast("warn", "Video", "Choose a video file first.");
    const job = await startJob(videoSubmit, "Video ingest", (d) => {
      const form = new FormData();
      form.append("file", file, file.name);
      const max = numberOrUndefined(videoMax);
      if (max !== undefined) form.append("max_frames", String(Math.round(max)));
      if (videoCaption.value.trim()) form.append("caption", videoCaption.value.trim());
      return api.post(`${d.path}/ingest/video`, form);
    });
    if (job) videoFile.value = "";
  });

  // URL
  const urlInput = h("input", { type: "text", placeholder: "https://… (a video page or a file)", testid: "url-input",
    style: "flex: 1 1 240px", inputmode: "url" });
  const urlMax = h("input", { type: "number", min: 1, max: 200, placeholder: "max frames", testid: "url-max-frames", style: "width: 110px",
    title: "At most this many frames (optional)" });
  const urlCaption = h("input", { type: "text", placeholder: "caption (optional)", testid: "url-caption",
    style: "flex: 1 1 160px" });
  const urlSubmit = h("button", { class: "ls-btn ls-primary", testid: "url-submit" }, "Fetch");
  const submitUrl = async () => {
    const url = urlInput.value.trim();
    if (!url) return ctx.toast("warn", "URL", "Enter a URL first.");
    const job = await startJob(urlSubmit, "URL ingest", (d) => {
      const body = { url };
      const max = numberOrUndefined(urlMax);
      if (max !== undefined) body.max_frames = Math.round(max);
      if (urlCaption.value.trim()) body.caption = urlCaption.value.trim();
      return api.post(`${d.path}/ingest/url`, body);
    });
    if (job) urlInput.value = "";
  };
  urlSubmit.addEventListener("click", submitUrl);
  urlInput.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") submitUrl();
  });

  // ComfyUI's output folder
  const importAll = h("button", { class: "ls-btn ls-primary", testid: "import-outputs-all" },
    "Import all from ComfyUI output");
  importAll.addEventListener("click", () => startJob(importAll, "Import from ComfyUI output",
    (d) => api.post(`${d.path}/import-outputs`, { all: true })));

  const jobButtons = [videoSubmit, urlSubmit, importAll];

  const el = h("section", { class: "ls-section" }, target,
    h("div", { class: "ls-box" }, h("h3", {}, "Images"), drop,
      h("div", { class: "ls-row" }, files), h("div", { class: "ls-row" }, caption, upload), status),
    createdBox, skippedBox,
    h("div", { class: "ls-box", testid: "video-form" }, h("h3", {}, "Video → frames"),
      h("div", { class: "ls-row" }, videoFile),
      h("div", { class: "ls-row" }, videoMax, videoCaption, videoSubmit)),
    h("div", { class: "ls-box", testid: "url-form" }, h("h3", {}, "From a URL"),
      h("div", { class: "ls-row" }, urlInput),
      h("div", { class: "ls-row" }, urlMax, urlCaption, urlSubmit)),
    h("div", { class: "ls-box", testid: "import-outputs" }, h("h3", {}, "From ComfyUI's output folder"),
      h("div", { class: "ls-muted" },
        "Copies images (with their embedded workflow) into the queue; ones the character already has are skipped. "
        + "Single images can be imported from the Gallery tab."),
      h("div", { class: "ls-row" }, importAll)),
    tracker.el);

  /** Does this job put its images where `d` points (a character, or a project's pool)? */
  function sameDest(job, d) {
    if (d.characterId != null) return job.character_id === d.characterId;
    return job.character_id == null && !!job.payload && job.payload.project_id === d.projectId;
  }

  async function pickUpRunning() {
    // ingest jobs of this character that run already (started elsewhere, or before a reload)
    const d = dest();
    if (!d) return;
    try {
      const data = await api.get("/jobs?limit=50");
      for (const job of data.items || []) {
        if (isIngestKind(job.kind) && ACTIVE_JOB.has(job.status) && sameDest(job, d) && !tracker.has(job.id)) {
          tracker.track(job);
        }
      }
    } catch {
      /* the list is a convenience; the jobs started here are followed anyway */
    }
  }

  return {
    el,
    refresh() {
      const d = dest();
      target.textContent = d ? `Images go to ${d.name} as pending (${d.characterId == null ? "sort" : "review"} them in Approvals).`
        : "Choose a character (or a project's unassigned pool in Approvals) first.";
      upload.disabled = !d;
      for (const b of jobButtons) b.disabled = !d;
      pickUpRunning();
    },
    track: (job) => tracker.track(job),
    onJob: (job) => {
      const d = dest();
      if (d && sameDest(job, d)) tracker.onJob(job, job.character_id);
    },
    destroy: () => tracker.destroy(),
  };
}
