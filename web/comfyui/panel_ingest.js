// LoRA Studio panel, Ingest tab: upload images for the selected character.

import { h } from "./panel_dom.js";

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
  const createdBox = h("div", { class: "ls-box", hidden: true }, h("h3", {}, "Added"), created);
  const skippedBox = h("div", { class: "ls-box", hidden: true }, h("h3", {}, "Skipped"), skipped);

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
    const c = ctx.character();
    if (!c) return ctx.toast("warn", "Ingest", "Choose a character first.");
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
        const answer = await api.post(`/characters/${c.id}/images`, form);
        for (const image of answer.created || []) {
          nCreated += 1;
          const name = (image.metadata && image.metadata.original_name) || `image ${image.id}`;
          created.append(h("div", { testid: `ingest-created-${Number(image.id)}` }, `✓ #${image.id} ${name}`));
        }
        for (const skip of answer.skipped || []) {
          nSkipped += 1;
          skipped.append(h("div", { class: "ls-error" }, `✗ ${skip.filename}: ${skip.reason}`));
        }
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
        ctx.adjustCounts(c.id, { pending: nCreated });
        ctx.markStale("approvals");
      }
    }
  });

  const el = h("section", { class: "ls-section" }, target, drop,
    h("div", { class: "ls-row" }, files), h("div", { class: "ls-row" }, caption, upload), status,
    createdBox, skippedBox);

  return {
    el,
    refresh() {
      const c = ctx.character();
      target.textContent = c ? `Images go to ${c.name} as pending (review them in Approvals).` : "Choose a character first.";
      upload.disabled = !c;
    },
  };
}
