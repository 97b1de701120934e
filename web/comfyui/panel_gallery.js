// LoRA Studio panel, Gallery: ComfyUI's output folder (GET /gallery, newest first) as a virtualised grid
// with infinite scroll, filters above it (character, project, kind, dates, LoRA, text in the prompt,
// favourites, trash), and a detail view (the picture or the playing video, its generation parameters,
// "use these settings", send to a character's dataset, favourite, trash / restore, empty the trash).
//
// Exported (declarations only: ComfyUI imports every .js file of the pack, nothing runs at import):
//   renderGallery(ctx, container, { wide = false }) -> { el, refresh(), selectionChanged(), destroy() }
//       builds the gallery inside `container` (it fills the container's height; its grid scrolls on its own).
//       Compact (the sidebar): the detail replaces the grid until "Back". Wide (the workspace): the grid and
//       the detail side by side. `ctx` is the panel's context (panel.js): api, state, toast, showError,
//       character(), project(); markStale, adjustCounts, reloadCharacters, trackJob are used when present.
//   gallerySection(ctx) -> the Gallery tab (a compact renderGallery in a section).
//   galleryQuery(filters, cursor, limit), gridMetrics(width, minCell, gap), rowRange(...): the pure parts.
//
// Virtualisation: only the rows in view plus a margin exist in the DOM, and only those cells get an <img>;
// while the grid is flung (a jump of more than half a screen per frame) the new cells wait for the scroll
// to settle before asking for their thumbnail, so scrolling through thousands of items asks for a few
// screens of thumbnails, not all of them. The next page is fetched when the rendered rows near the end.
//
// All API text goes through textContent (the `h` helper), never innerHTML.

import { h } from "./panel_dom.js";

export const GALLERY_PAGE = 100;
const GAP = 6;
const CAPTION_H = 20;
const OVERSCAN_ROWS = 1; // rows rendered above and below the view
const PREFETCH_ROWS = 8; // ask for the next page when the rendered rows come this close to the loaded end
const SETTLE_MS = 140; // a flung grid asks for thumbnails once it has been still this long
const SEARCH_DEBOUNCE_MS = 300;
const PREFIX = "/lora-studio/v1";

/** A date input's value (yyyy-mm-dd, local) as the ISO instant its day starts at; `days` later for "until". */
export function dayStart(value, days = 0) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(String(value || ""));
  if (!m) return "";
  const d = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]) + days);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

/** The query string of one page for the filters (only the ones set). Dates are whole local days: "until" a
 * day includes it (the API's until is exclusive). */
export function galleryQuery(filters, cursor, limit = GALLERY_PAGE) {
  const params = new URLSearchParams({ limit: String(limit) });
  if (cursor) params.set("cursor", cursor);
  const f = filters || {};
  if (f.q && f.q.trim()) params.set("q", f.q.trim());
  if (f.character_id) params.set("character_id", String(f.character_id));
  if (f.project_id) params.set("project_id", String(f.project_id));
  if (f.kind) params.set("kind", f.kind);
  if (dayStart(f.since)) params.set("since", dayStart(f.since));
  if (dayStart(f.until, 1)) params.set("until", dayStart(f.until, 1));
  if (f.lora && f.lora.trim()) params.set("lora", f.lora.trim());
  if (f.favourite) params.set("favourite", "true");
  if (f.trashed) params.set("trashed", "true");
  return params;
}

/** Columns and cell width for a grid `width` px wide whose cells are at least `minCell` px. */
export function gridMetrics(width, minCell, gap = GAP) {
  const cols = Math.max(1, Math.floor((Math.max(0, width) + gap) / (minCell + gap)));
  const cell = Math.max(40, Math.floor((Math.max(0, width) - gap * (cols - 1)) / cols));
  return { cols, cell };
}

/** The rows to render: those in view (scrollTop .. scrollTop + viewHeight) plus `overscan` on each side. */
export function rowRange(scrollTop, viewHeight, rowHeight, rows, overscan = OVERSCAN_ROWS) {
  if (rows <= 0 || rowHeight <= 0 || viewHeight <= 0) return { first: 0, last: -1 };
  const first = Math.max(0, Math.floor(scrollTop / rowHeight) - overscan);
  const last = Math.min(rows - 1, Math.ceil((scrollTop + viewHeight) / rowHeight) - 1 + overscan);
  return { first, last };
}

function formatBytes(n) {
  const v = Number(n) || 0;
  if (v >= 1 << 20) return `${(v / (1 << 20)).toFixed(1)} MB`;
  if (v >= 1 << 10) return `${Math.round(v / (1 << 10))} kB`;
  return `${v} B`;
}

function formatTime(mtime) {
  const n = Number(mtime);
  if (!Number.isFinite(n) || n <= 0) return "";
  try {
    return new Date(n * 1000).toLocaleString();
  } catch {
    return "";
  }
}

const isVideo = (item) => item && (item.kind === "video" || /\.(webm|mp4|mov|mkv)$/i.test(item.name || item.path || ""));
const keyOf = (item) => (item.id != null ? `id:${item.id}` : `path:${item.path}`);

/** A URL the page can load for an API path that may carry the prefix already (the server's thumb_url). */
function apiSrc(api, path) {
  const rel = String(path).startsWith(PREFIX) ? String(path).slice(PREFIX.length) : String(path);
  return api.url(rel);
}

function thumbSrc(api, item, size) {
  if (item.thumb_url) {
    const [path, query = ""] = String(item.thumb_url).split("?");
    const params = new URLSearchParams(query);
    if (params.has("size")) params.set("size", String(size));
    const qs = params.toString();
    return apiSrc(api, qs ? `${path}?${qs}` : path);
  }
  return api.url(`/gallery/thumb?path=${encodeURIComponent(item.path)}&size=${size}`);
}

const fileSrc = (api, item) => api.url(`/gallery/file?path=${encodeURIComponent(item.path)}`);

// ---------------------------------------------------------------------------------------------

export function renderGallery(ctx, container, { wide = false } = {}) {
  const { api } = ctx;
  const minCell = wide ? 150 : 104;
  const call = (name, ...args) => {
    try {
      return typeof ctx[name] === "function" ? ctx[name](...args) : undefined;
    } catch (e) {
      console.warn(`[LoRA Studio] ${name} failed`, e);
      return undefined;
    }
  };
  const toastError = (e, summary) => (ctx.showError ? ctx.showError(e, summary) : console.error(summary, e));

  // ---- filters -------------------------------------------------------------------------------
  const filters = { q: "", character_id: "", project_id: "", kind: "", since: "", until: "", lora: "",
    favourite: false, trashed: false };
  const q = h("input", { type: "search", testid: "gallery-q", placeholder: "Search prompts…",
    "aria-label": "Search the prompts", class: "ls-gsearch" });
  const fCharacter = h("select", { testid: "gallery-filter-character", "aria-label": "Character" });
  const fProject = h("select", { testid: "gallery-filter-project", "aria-label": "Project" });
  const fKind = h("select", { testid: "gallery-filter-kind", "aria-label": "Kind" },
    h("option", { value: "" }, "Images and videos"), h("option", { value: "image" }, "Images"),
    h("option", { value: "video" }, "Videos"));
  const fSince = h("input", { type: "date", testid: "gallery-filter-since", "aria-label": "From" });
  const fUntil = h("input", { type: "date", testid: "gallery-filter-until", "aria-label": "Until" });
  const loraListId = `ls-gloras-${Math.random().toString(36).slice(2)}`;
  const loraList = h("datalist", { id: loraListId, testid: "gallery-lora-list" });
  const fLora = h("input", { type: "text", testid: "gallery-filter-lora", placeholder: "LoRA name",
    "aria-label": "LoRA", list: loraListId, autocomplete: "off" });
  const fFav = h("input", { type: "checkbox", testid: "gallery-filter-favourite" });
  const fTrash = h("input", { type: "checkbox", testid: "gallery-filter-trash" });
  const refreshBtn = h("button", { class: "ls-btn", testid: "gallery-refresh", title: "Reload the gallery",
    "aria-label": "Reload the gallery" }, "↻");
  const activeCount = h("span", { class: "ls-muted", testid: "gallery-filter-count" });
  const filterBox = h("details", { class: "ls-gfilters", testid: "gallery-filters", open: wide },
    h("summary", {}, "Filters ", activeCount),
    h("div", { class: "ls-row" },
      h("label", {}, "Project", fProject), h("label", {}, "Character", fCharacter), h("label", {}, "Kind", fKind),
      h("label", {}, "From", fSince), h("label", {}, "Until", fUntil), h("label", {}, "LoRA", fLora),
      h("label", { class: "ls-check" }, fFav, "★ Favourites only"),
      h("label", { class: "ls-check" }, fTrash, "Trash")), loraList);

  /** The LoRAs the indexed outputs used, as the LoRA filter's suggestions (GET /gallery/loras). */
  async function loadLoras() {
    try {
      const data = await api.get("/gallery/loras");
      loraList.replaceChildren(...((data && data.items) || []).filter((l) => l && l.name)
        .map((l) => h("option", { value: l.name }, `${l.name} (${Number(l.count) || 0})`)));
    } catch {
      /* suggestions only: the filter still takes a typed name */
    }
  }

  // empty the trash, with an inline confirmation
  const emptyTrash = h("button", { class: "ls-btn ls-danger", testid: "gallery-empty-trash", hidden: true },
    "Empty trash…");
  const emptyYes = h("button", { class: "ls-btn ls-danger", testid: "gallery-empty-confirm" }, "Delete for good");
  const emptyNo = h("button", { class: "ls-btn", testid: "gallery-empty-cancel" }, "Cancel");
  const emptyBox = h("div", { class: "ls-box", role: "alertdialog", testid: "gallery-empty-box", hidden: true },
    h("div", {}, "Delete every file in the trash from the disk? This cannot be undone."),
    h("div", { class: "ls-row" }, emptyYes, emptyNo));

  const status = h("div", { class: "ls-muted ls-gstatus", testid: "gallery-status", "aria-live": "polite" });
  const message = h("div", { class: "ls-empty", testid: "gallery-message", hidden: true });

  // ---- the grid ------------------------------------------------------------------------------
  const spacer = h("div", { class: "ls-gspacer" });
  const viewport = h("div", { class: "ls-gviewport", testid: "gallery-grid", tabindex: "0",
    "aria-label": "Gallery" }, spacer);

  // ---- the detail ----------------------------------------------------------------------------
  const detail = h("div", { class: "ls-gdetail", testid: "gallery-detail", hidden: !wide });

  const gridPane = h("div", { class: "ls-ggridpane" }, message, viewport);
  const main = h("div", { class: wide ? "ls-gmain ls-gwide" : "ls-gmain" }, gridPane, detail);
  const el = h("div", { class: wide ? "ls-gallery ls-gallery-wide" : "ls-gallery", testid: "gallery",
    "data-mode": wide ? "wide" : "compact" },
  h("div", { class: "ls-row ls-gtop" }, q, refreshBtn, emptyTrash),
  filterBox, emptyBox, status, main);
  container.append(el);

  // ---- state ---------------------------------------------------------------------------------
  let items = [];
  let cursor = null;
  let exhausted = false;
  let loading = false;
  let seq = 0; // filter changes: a page answering for older filters is dropped
  let loadError = null;
  let metrics = { cols: 1, cell: minCell, rowH: minCell + CAPTION_H + GAP };
  const cells = new Map(); // key -> {el, item, index, img}
  let selectedKey = null;
  let destroyed = false;
  let lastScrollTop = 0;
  let settleTimer = null;
  let flinging = false;
  let frame = 0;
  let searchTimer = null;

  // ---- filters wiring ------------------------------------------------------------------------
  function fillFilterOptions() {
    const keepP = fProject.value;
    const keepC = fCharacter.value;
    const projects = (ctx.state && ctx.state.projects) || [];
    const characters = (ctx.state && ctx.state.characters) || [];
    const projectValue = projects.some((p) => String(p.id) === keepP) ? keepP : "";
    fProject.replaceChildren(h("option", { value: "" }, "All projects"),
      ...projects.map((p) => h("option", { value: String(p.id) }, p.name)));
    fProject.value = projectValue;
    const chars = projectValue ? characters.filter((c) => String(c.project_id) === projectValue) : characters;
    fCharacter.replaceChildren(h("option", { value: "" }, "All characters"),
      ...chars.map((c) => h("option", { value: String(c.id) }, c.name)));
    fCharacter.value = chars.some((c) => String(c.id) === keepC) ? keepC : "";
  }

  function readFilters() {
    filters.q = q.value;
    filters.project_id = fProject.value;
    filters.character_id = fCharacter.value;
    filters.kind = fKind.value;
    filters.since = fSince.value;
    filters.until = fUntil.value;
    filters.lora = fLora.value;
    filters.favourite = fFav.checked;
    filters.trashed = fTrash.checked;
    const n = ["project_id", "character_id", "kind", "since", "until", "lora"].filter((k) => String(filters[k]).trim())
      .length + (filters.favourite ? 1 : 0) + (filters.trashed ? 1 : 0);
    activeCount.textContent = n ? `(${n} on)` : "";
    emptyTrash.hidden = !filters.trashed;
    if (!filters.trashed) emptyBox.hidden = true;
  }

  const onFilter = () => {
    readFilters();
    reload();
  };
  for (const input of [fCharacter, fKind, fSince, fUntil, fFav, fTrash]) input.addEventListener("change", onFilter);
  fProject.addEventListener("change", () => {
    fillFilterOptions(); // the character list follows the project
    onFilter();
  });
  const debounced = () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(onFilter, SEARCH_DEBOUNCE_MS);
  };
  q.addEventListener("input", debounced);
  fLora.addEventListener("input", debounced);
  q.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      clearTimeout(searchTimer);
      onFilter();
    }
  });
  refreshBtn.addEventListener("click", () => reload());

  emptyTrash.addEventListener("click", () => {
    emptyBox.hidden = false;
    emptyYes.focus();
  });
  emptyNo.addEventListener("click", () => { emptyBox.hidden = true; });
  emptyYes.addEventListener("click", async () => {
    emptyYes.disabled = true;
    try {
      const res = await api.post("/gallery/trash/empty");
      const n = res && (res.deleted ?? res.count);
      ctx.toast("success", "Trash emptied", n != null ? `${n} file(s) deleted` : "");
      emptyBox.hidden = true;
      reload();
    } catch (e) {
      toastError(e, "Cannot empty the trash");
    } finally {
      emptyYes.disabled = false;
    }
  });

  // ---- loading pages -------------------------------------------------------------------------
  function updateStatus() {
    if (loadError) {
      status.textContent = "";
      message.textContent = loadError;
      message.hidden = false;
      return;
    }
    const more = !exhausted;
    status.textContent = loading && !items.length ? "Loading…"
      : `${items.length}${more ? "+" : ""} item(s)${filters.trashed ? " in the trash" : ""}${loading ? " · loading…" : ""}`;
    message.hidden = loading || items.length > 0;
    message.textContent = filters.trashed ? "The trash is empty."
      : activeCount.textContent || filters.q.trim() ? "Nothing matches these filters."
        : "No images or videos in the output folder yet.";
  }

  async function loadMore() {
    if (loading || exhausted || destroyed) return;
    loading = true;
    const token = seq;
    updateStatus();
    try {
      const page = await api.get(`/gallery?${galleryQuery(filters, cursor)}`);
      if (token !== seq || destroyed) return;
      const known = new Set(items.map(keyOf));
      for (const item of (page && page.items) || []) {
        if (item && item.path && !known.has(keyOf(item))) items.push(item);
      }
      cursor = (page && page.next_cursor) || null;
      exhausted = !cursor;
      loadError = null;
    } catch (e) {
      if (token !== seq || destroyed) return;
      exhausted = true; // a refresh tries again
      loadError = e.message || String(e);
      if (e.status !== 503) toastError(e, "Cannot load the gallery");
    } finally {
      if (token === seq) {
        loading = false;
        layout();
        updateStatus();
      }
    }
  }

  function reload() {
    seq += 1;
    items = [];
    cursor = null;
    exhausted = false;
    loading = false;
    loadError = null;
    clearCells();
    viewport.scrollTop = 0;
    lastScrollTop = 0; // an open detail stays: "Back" shows the grid of the new filters
    layout();
    loadMore();
  }

  // ---- virtual grid --------------------------------------------------------------------------
  function clearCells() {
    for (const entry of cells.values()) entry.el.remove();
    cells.clear();
  }

  function layout() {
    if (destroyed) return;
    const width = viewport.clientWidth - 2 * GAP;
    if (width > 0) {
      const { cols, cell } = gridMetrics(width, minCell, GAP);
      if (cols !== metrics.cols || cell !== metrics.cell) {
        metrics = { cols, cell, rowH: cell + CAPTION_H + GAP };
        for (const entry of cells.values()) place(entry);
      }
    }
    const rows = Math.ceil(items.length / metrics.cols);
    spacer.style.height = `${rows * metrics.rowH + (exhausted ? 0 : metrics.rowH) + GAP}px`;
    render();
  }

  function place(entry) {
    const row = Math.floor(entry.index / metrics.cols);
    const col = entry.index % metrics.cols;
    const s = entry.el.style;
    s.transform = `translate(${GAP + col * (metrics.cell + GAP)}px, ${GAP + row * metrics.rowH}px)`;
    s.width = `${metrics.cell}px`;
    s.height = `${metrics.cell + CAPTION_H}px`;
  }

  function thumbSize() {
    return metrics.cell * (window.devicePixelRatio || 1) > 256 ? 512 : 256;
  }

  function attachImage(entry) {
    if (entry.img || destroyed) return;
    const item = entry.item;
    const img = h("img", { alt: item.name || "", decoding: "async", draggable: "false" });
    let fellBack = false;
    img.addEventListener("error", () => {
      // no thumbnail (an older server, a video without a poster): the image itself, or a video mark
      if (!fellBack && !isVideo(item)) {
        fellBack = true;
        img.src = fileSrc(api, item);
      } else {
        img.replaceWith(h("span", { class: "ls-gph" }, isVideo(item) ? "▶ video" : "no preview"));
      }
    });
    img.src = thumbSrc(api, item, thumbSize());
    entry.thumb.replaceChildren(img);
    entry.img = img;
  }

  function makeCell(item, index) {
    const key = keyOf(item);
    const thumb = h("div", { class: "ls-gthumb" });
    const badges = h("span", { class: "ls-gbadges" },
      item.favourite ? h("span", { title: "Favourite", testid: "gallery-item-fav" }, "★") : null,
      isVideo(item) ? h("span", { title: "Video" }, "▶") : null);
    const cellEl = h("div", { class: "ls-gcell", testid: "gallery-item", role: "button", tabindex: "-1",
      "data-path": item.path, "data-id": item.id != null ? String(item.id) : undefined, "data-index": String(index),
      "aria-selected": String(selectedKey === key), title: item.path },
    thumb, badges, h("div", { class: "ls-caption ls-gname" }, item.name || item.path));
    cellEl.addEventListener("click", () => openDetail(item));
    const entry = { el: cellEl, item, index, img: null, thumb };
    place(entry);
    return entry;
  }

  function render() {
    if (destroyed) return;
    const viewH = viewport.clientHeight;
    const rows = Math.ceil(items.length / metrics.cols);
    const { first, last } = rowRange(viewport.scrollTop, viewH, metrics.rowH, rows);
    const from = first * metrics.cols;
    const to = Math.min(items.length, (last + 1) * metrics.cols);
    const wanted = new Set();
    for (let i = from; i < to; i += 1) wanted.add(keyOf(items[i]));
    for (const [key, entry] of cells) {
      if (!wanted.has(key)) {
        entry.el.remove();
        cells.delete(key);
      }
    }
    const fresh = [];
    for (let i = from; i < to; i += 1) {
      const item = items[i];
      const key = keyOf(item);
      let entry = cells.get(key);
      if (!entry) {
        entry = makeCell(item, i);
        cells.set(key, entry);
        spacer.append(entry.el);
        fresh.push(entry);
      } else if (entry.index !== i || entry.item !== item) {
        entry.index = i;
        entry.item = item;
        place(entry);
      }
    }
    if (!flinging) for (const entry of fresh) attachImage(entry);
    if (!exhausted && !loading && !loadError && viewH > 0 && last >= rows - PREFETCH_ROWS) loadMore();
  }

  function settle() {
    flinging = false;
    for (const entry of cells.values()) attachImage(entry);
  }

  function onScroll() {
    const top = viewport.scrollTop;
    if (Math.abs(top - lastScrollTop) > viewport.clientHeight * 0.5) flinging = true;
    lastScrollTop = top;
    clearTimeout(settleTimer);
    settleTimer = setTimeout(settle, SETTLE_MS);
    if (!frame) {
      frame = requestAnimationFrame(() => {
        frame = 0;
        render();
      });
    }
  }
  viewport.addEventListener("scroll", onScroll, { passive: true });

  const resizer = typeof ResizeObserver === "function" ? new ResizeObserver(() => layout()) : null;
  if (resizer) resizer.observe(viewport);

  // keyboard: arrows move the selection in the grid (wide: the detail follows), Enter opens it
  viewport.addEventListener("keydown", (ev) => {
    if (!items.length) return;
    const at = items.findIndex((it) => keyOf(it) === selectedKey);
    if (ev.key === "Enter" && at >= 0) {
      ev.preventDefault();
      openDetail(items[at]);
      return;
    }
    const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: metrics.cols, ArrowUp: -metrics.cols }[ev.key];
    if (!step) return;
    ev.preventDefault();
    const next = at < 0 ? 0 : Math.max(0, Math.min(items.length - 1, at + step));
    scrollIntoView(next);
    if (wide) openDetail(items[next]);
    else {
      selectedKey = keyOf(items[next]);
      render();
      markSelected();
    }
  });

  function scrollIntoView(index) {
    const row = Math.floor(index / metrics.cols);
    const top = row * metrics.rowH;
    if (top < viewport.scrollTop) viewport.scrollTop = top;
    else if (top + metrics.rowH > viewport.scrollTop + viewport.clientHeight) {
      viewport.scrollTop = top + metrics.rowH - viewport.clientHeight + GAP;
    }
  }

  function markSelected() {
    for (const [key, entry] of cells) entry.el.setAttribute("aria-selected", String(key === selectedKey));
  }

  /** An item changed (favourite): its record and its cell. */
  function replaceItem(updated) {
    const i = items.findIndex((it) => keyOf(it) === keyOf(updated));
    if (i < 0) return;
    items[i] = { ...items[i], ...updated };
    const entry = cells.get(keyOf(updated));
    if (entry) {
      entry.el.remove();
      cells.delete(keyOf(updated));
    }
    render();
  }

  /** An item left this view (trashed, restored, or it no longer matches): the grid closes the gap. */
  function dropItem(item) {
    const i = items.findIndex((it) => keyOf(it) === keyOf(item));
    if (i < 0) return;
    const next = items[i + 1] || items[i - 1] || null;
    items.splice(i, 1);
    clearCells();
    layout();
    updateStatus();
    if (selectedKey === keyOf(item)) {
      if (next && wide) openDetail(next);
      else closeDetail();
    }
  }

  // ---- detail --------------------------------------------------------------------------------
  let detailSeq = 0;

  function closeDetail() {
    selectedKey = null;
    markSelected();
    if (wide) {
      detail.replaceChildren(h("div", { class: "ls-empty" }, "Choose a picture to see its parameters."));
    } else {
      detail.hidden = true;
      detail.replaceChildren();
      gridPane.hidden = false;
      const top = lastScrollTop;
      requestAnimationFrame(() => {
        viewport.scrollTop = top;
        layout();
        if (el.isConnected) viewport.focus({ preventScroll: true }); // the keys go on where they were
      });
    }
  }

  function characterLabel(id) {
    const c = ((ctx.state && ctx.state.characters) || []).find((x) => x.id === id);
    return c ? c.name : id == null ? "" : `character ${id}`;
  }

  function projectOf(item) {
    const projects = (ctx.state && ctx.state.projects) || [];
    const pid = item.project_id != null ? item.project_id : ctx.project && ctx.project() ? ctx.project().id : null;
    return projects.find((p) => p.id === pid) || null;
  }

  function paramRows(params) {
    const p = params || {};
    const rows = [["positive", "Positive"], ["negative", "Negative"], ["seed", "Seed"], ["sampler", "Sampler"],
      ["scheduler", "Scheduler"], ["steps", "Steps"], ["cfg", "CFG"], ["checkpoint", "Checkpoint"]]
      .filter(([k]) => p[k] !== null && p[k] !== undefined && p[k] !== "")
      .map(([k, label]) => h("div", { class: "ls-gparam", "data-param": k, testid: `gallery-param-${k}` },
        h("span", { class: "ls-muted" }, label),
        k === "positive" || k === "negative" ? h("pre", { class: "ls-pre" }, String(p[k])) : h("span", {}, String(p[k]))));
    const loras = Array.isArray(p.loras) ? p.loras.filter((l) => l && l.name) : [];
    if (loras.length) {
      rows.push(h("div", { class: "ls-gparam", "data-param": "loras", testid: "gallery-param-loras" },
        h("span", { class: "ls-muted" }, "LoRAs"),
        h("div", { class: "ls-chips" }, ...loras.map((l) => h("span", { class: "ls-chip", testid: "gallery-param-lora" },
          `${l.name} · ${l.strength_model ?? "?"}${l.strength_clip != null && l.strength_clip !== l.strength_model
            ? ` / clip ${l.strength_clip}` : ""}`)))));
    }
    return rows;
  }

  function datasetPicker(item) {
    const characters = (ctx.state && ctx.state.characters) || [];
    const projects = (ctx.state && ctx.state.projects) || [];
    const select = h("select", { testid: "gallery-dataset-character", "aria-label": "Character to send it to" });
    const groups = new Map();
    for (const c of characters) {
      if (!groups.has(c.project_id)) groups.set(c.project_id, []);
      groups.get(c.project_id).push(c);
    }
    for (const [pid, chars] of groups) {
      const p = projects.find((x) => x.id === pid);
      select.append(h("optgroup", { label: p ? p.name : `project ${pid}` },
        ...chars.map((c) => h("option", { value: String(c.id) }, c.name))));
    }
    const current = ctx.character && ctx.character();
    const preferred = item.character_id != null ? item.character_id : current ? current.id : null;
    if (preferred != null && characters.some((c) => c.id === preferred)) select.value = String(preferred);
    return select;
  }

  function openDetail(item) {
    if (!item) return;
    selectedKey = keyOf(item);
    markSelected();
    const token = ++detailSeq;
    if (!wide) {
      lastScrollTop = viewport.scrollTop;
      gridPane.hidden = true;
    }
    detail.hidden = false;
    drawDetail(item);
    if (!item.params && item.id != null) { // a list without parameters: the item's own record has them
      api.get(`/gallery/${encodeURIComponent(item.id)}`).then((full) => {
        if (token === detailSeq && full) {
          replaceItem(full);
          drawDetail({ ...item, ...full });
        }
      }).catch(() => {});
    }
  }

  function drawDetail(item) {
    const src = fileSrc(api, item);
    const video = isVideo(item);
    const media = video
      ? h("video", { src, controls: true, preload: "metadata", testid: "gallery-detail-video", class: "ls-gmedia",
        playsinline: true })
      : h("a", { href: src, target: "_blank", rel: "noopener", title: "Open the original" },
        h("img", { src, alt: item.name || "", testid: "gallery-detail-image", class: "ls-gmedia" }));
    const hasId = item.id != null;
    const error = h("div", { class: "ls-error", testid: "gallery-detail-error", role: "alert", hidden: true });
    const fail = (e, summary) => {
      error.textContent = `${summary}: ${e.message || e}`;
      error.hidden = false;
      toastError(e, summary);
    };
    const busy = (button, fn) => async () => {
      button.disabled = true;
      error.hidden = true;
      try {
        await fn();
      } finally {
        if (button.isConnected) button.disabled = false;
      }
    };

    const fav = h("button", { class: "ls-btn", testid: "gallery-favourite", disabled: !hasId,
      "aria-pressed": String(!!item.favourite), title: item.favourite ? "Remove from favourites" : "Add to favourites" },
    item.favourite ? "★ Favourite" : "☆ Favourite");
    fav.addEventListener("click", busy(fav, async () => {
      try {
        const res = await api.post(`/gallery/${encodeURIComponent(item.id)}/favourite`, { favourite: !item.favourite });
        const updated = { ...item, ...(res && res.id != null ? res : {}), favourite: res && typeof res.favourite === "boolean"
          ? res.favourite : !item.favourite };
        if (filters.favourite && !updated.favourite) dropItem(updated);
        else {
          replaceItem(updated);
          if (selectedKey === keyOf(updated)) drawDetail(updated);
        }
      } catch (e) {
        fail(e, "Cannot change the favourite");
      }
    }));

    const trash = item.trashed
      ? h("button", { class: "ls-btn", testid: "gallery-restore", disabled: !hasId }, "Restore")
      : h("button", { class: "ls-btn ls-danger", testid: "gallery-trash", disabled: !hasId,
        title: "Move to the trash folder (restorable until the trash is emptied)" }, "Delete");
    trash.addEventListener("click", busy(trash, async () => {
      const action = item.trashed ? "restore" : "trash";
      try {
        const res = await api.post(`/gallery/${encodeURIComponent(item.id)}/${action}`);
        ctx.toast("success", item.trashed ? "Restored" : "Moved to the trash", (res && res.name) || item.name || "");
        dropItem(item); // the trash view and the normal view never show the same item
      } catch (e) {
        fail(e, item.trashed ? "Cannot restore" : "Cannot delete");
      }
    }));

    // use these settings: the project's style takes the sampler, scheduler, steps, cfg and checkpoint
    const project = projectOf(item);
    const p = item.params || {};
    const styleBody = {};
    for (const k of ["sampler", "scheduler", "steps", "cfg", "checkpoint"]) {
      if (p[k] !== null && p[k] !== undefined && p[k] !== "") styleBody[k] = p[k];
    }
    const use = h("button", { class: "ls-btn", testid: "gallery-use-settings",
      disabled: !project || !Object.keys(styleBody).length,
      title: project ? `Set ${Object.keys(styleBody).join(", ") || "nothing"} in the style of ${project.name}`
        : "Choose a project first" }, project ? `Use these settings in ${project.name}` : "Use these settings");
    use.addEventListener("click", busy(use, async () => {
      try {
        await api.patch(`/projects/${Number(project.id)}/style`, styleBody);
        const seed = p.seed != null ? ` (seed ${p.seed}: enter it in Generate to repeat the picture)` : "";
        ctx.toast("success", "Style updated", `${project.name}: ${Object.keys(styleBody).join(", ")}${seed}`);
        // the seed for the Generate view to take once (ctx.state.pendingSeed), the style for every view
        if (ctx.state && Number.isInteger(p.seed)) ctx.state.pendingSeed = p.seed;
        call("markStale", "generate", "characters");
      } catch (e) {
        fail(e, "Cannot update the style");
      }
    }));

    // send to a character's dataset (a pending image with these parameters)
    const picker = datasetPicker(item);
    const sendable = hasId && !video; // a dataset takes pictures: a video's frames go through Ingest
    const send = h("button", { class: "ls-btn ls-primary", testid: "gallery-send", disabled: !sendable || !picker.value,
      title: video ? "Videos go to a dataset frame by frame: use Ingest (video)" : "Copy it into the character's "
        + "pending queue with these parameters" }, "Send to dataset");
    picker.addEventListener("change", () => { send.disabled = !sendable || !picker.value; });
    send.addEventListener("click", busy(send, async () => {
      const cid = Number(picker.value);
      if (!cid) return;
      try {
        const res = await api.post(`/gallery/${encodeURIComponent(item.id)}/to-dataset`, { character_id: cid });
        if (res && res.kind && res.status && ["queued", "running"].includes(res.status)) { // a job
          call("trackJob", res);
          ctx.toast("info", "Sending to the dataset", `${item.name} → ${characterLabel(cid)} (job #${res.id})`);
        } else {
          ctx.toast("success", "Sent to the dataset", `${item.name} → ${characterLabel(cid)} (pending review)`);
          if (res && res.status === "pending") call("adjustCounts", cid, { pending: 1 });
          else call("reloadCharacters");
        }
        call("markStale", "approvals");
      } catch (e) {
        fail(e, "Cannot send to the dataset");
      }
    }));

    const back = wide ? null : h("button", { class: "ls-btn", testid: "gallery-back", onclick: closeDetail }, "← Back");
    const facts = [
      item.width && item.height ? `${item.width}×${item.height}` : null,
      item.size != null ? formatBytes(item.size) : null,
      formatTime(item.mtime),
      item.character_id != null ? characterLabel(item.character_id) : null,
    ].filter(Boolean).join(" · ");

    detail.replaceChildren(
      h("div", { class: "ls-row ls-gdhead" }, back, h("strong", { class: "ls-gdname", testid: "gallery-detail-name" },
        item.name || item.path)),
      h("div", { class: "ls-gpreview" }, media),
      h("div", { class: "ls-muted", testid: "gallery-detail-facts" }, facts),
      h("div", { class: "ls-muted ls-gpath" }, item.path),
      h("div", { class: "ls-row" }, fav, trash,
        h("a", { class: "ls-btn", href: src, target: "_blank", rel: "noopener", testid: "gallery-open" }, "Open")),
      h("div", { class: "ls-gparams", testid: "gallery-params" },
        ...(paramRows(item.params).length ? paramRows(item.params)
          : [h("div", { class: "ls-muted" }, "No generation parameters in this file.")])),
      h("div", { class: "ls-row" }, use),
      h("div", { class: "ls-row" }, h("label", {}, "Send to the dataset of", picker), send),
      error);
  }

  if (wide) closeDetail();

  // ---- the public face -----------------------------------------------------------------------
  return {
    el,
    refresh() {
      fillFilterOptions();
      readFilters();
      reload();
      loadLoras();
    },
    selectionChanged() {
      fillFilterOptions();
      const current = selectedKey && items.find((it) => keyOf(it) === selectedKey);
      if (current) drawDetail(current); // the dataset picker follows the chosen character
    },
    /** Open an item by its id (e.g. from a generation's result). */
    open(id) {
      const item = items.find((it) => String(it.id) === String(id));
      if (item) openDetail(item);
      else if (id != null) {
        api.get(`/gallery/${encodeURIComponent(id)}`).then(openDetail).catch((e) => toastError(e, "Cannot open it"));
      }
    },
    destroy() {
      destroyed = true;
      seq += 1;
      clearTimeout(settleTimer);
      clearTimeout(searchTimer);
      if (frame) cancelAnimationFrame(frame);
      if (resizer) resizer.disconnect();
      clearCells();
      el.remove();
    },
  };
}

/** The Gallery tab of the sidebar: a compact gallery. */
export function gallerySection(ctx) {
  const el = h("section", { class: "ls-section ls-gallery-section" });
  const gallery = renderGallery(ctx, el, { wide: false });
  return {
    el,
    refresh: () => gallery.refresh(),
    selectionChanged: () => gallery.selectionChanged(),
    countsChanged: () => {},
    destroy: () => gallery.destroy(),
  };
}
