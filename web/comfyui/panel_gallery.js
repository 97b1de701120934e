// LoRA Studio panel, Gallery tab: ComfyUI's output folder, newest first; each image can be
// imported into the selected character's queue (a job followed in the Ingest tab).

import { h } from "./panel_dom.js";
import { PAGE_SIZE } from "./panel_api.js";

export function gallerySection(ctx) {
  const { api } = ctx;
  const grid = h("div", { class: "ls-grid", testid: "gallery-grid" });
  const message = h("div", { class: "ls-empty", testid: "gallery-message", hidden: true });
  const more = h("button", { class: "ls-btn", testid: "gallery-load-more", hidden: true, onclick: () => load(false) },
    "Load more");
  const refresh = h("button", { class: "ls-btn", testid: "gallery-refresh", onclick: () => load(true) }, "Refresh");
  const el = h("section", { class: "ls-section" },
    h("div", { class: "ls-row", style: "justify-content: space-between" },
      h("span", { class: "ls-muted" }, "ComfyUI output folder, newest first"), refresh),
    message, grid, h("div", { class: "ls-row", style: "justify-content: center" }, more));
  let cursor = null;
  let seq = 0;

  function importLabel() {
    const c = ctx.character();
    return c ? `Import to ${c.name}` : "Import (choose a character)";
  }

  function importButton(item) {
    const button = h("button", { class: "ls-btn ls-gimport", testid: "gallery-import", disabled: !ctx.character(),
      title: "Copy into the selected character's queue as pending" }, importLabel());
    button.addEventListener("click", async () => {
      const c = ctx.character();
      if (!c) return ctx.toast("warn", "Import", "Choose a character first.");
      button.disabled = true;
      try {
        const job = await api.post(`/characters/${c.id}/import-outputs`, { paths: [item.path] });
        ctx.trackJob(job);
        button.textContent = `Queued for ${c.name} (job #${job.id})`;
        ctx.toast("info", "Import started", `${item.name} → ${c.name} (progress in the Ingest tab)`);
      } catch (e) {
        button.disabled = false;
        ctx.showError(e, "Import failed");
      }
    });
    return button;
  }

  function selectionChanged() {
    const c = ctx.character();
    for (const b of grid.querySelectorAll('[data-testid="gallery-import"]')) {
      b.textContent = importLabel();
      b.disabled = !c;
    }
  }

  async function load(reset) {
    const token = ++seq;
    if (reset) cursor = null;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (cursor) params.set("cursor", cursor);
    more.disabled = true;
    try {
      const page = await api.get(`/gallery?${params}`);
      if (token !== seq) return;
      if (reset) grid.replaceChildren();
      for (const item of page.items || []) {
        const src = api.url(`/gallery/file?path=${encodeURIComponent(item.path)}`);
        grid.append(h("div", { class: "ls-card ls-gitem", testid: "gallery-item", "data-path": item.path,
          title: item.path },
        h("a", { class: "ls-thumb", href: src, target: "_blank", rel: "noopener" },
          h("img", { src, alt: item.name, loading: "lazy" })),
        h("div", { class: "ls-caption" }, item.name),
        importButton(item)));
      }
      cursor = page.next_cursor || null;
      message.hidden = grid.children.length > 0;
      message.textContent = "No images in the output folder yet.";
    } catch (e) {
      if (token !== seq) return;
      if (reset) grid.replaceChildren();
      cursor = null;
      message.textContent = e.message;
      message.hidden = false;
      if (e.status !== 503) ctx.showError(e, "Cannot load the gallery");
    } finally {
      if (token === seq) {
        more.hidden = !cursor;
        more.disabled = false;
      }
    }
  }

  return { el, refresh: () => load(true), selectionChanged };
}
