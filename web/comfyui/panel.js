// LoRA Studio panel: the whole UI, plain DOM, no framework and no build step.
//
// `mountPanel(root, host)` builds the panel inside `root`. `host` is provided by the ComfyUI
// extension (lora_studio.js) or by the standalone page (standalone/host.js):
//   fetchApi(path, init) -> Promise<Response>   path starts with /lora-studio/v1
//   apiURL(path) -> string                       URL for <img src>
//   toast({severity, summary, detail})           severity: success | info | warn | error
//   onEvent(type, cb) -> optional unsubscribe    cb(data) for server events ("lora_studio.job")
//
// ComfyUI imports every .js file of the pack as an extension, so this module has no side effects
// at import: the stylesheet is injected by the first mountPanel call.
//
// All text coming from the API goes through textContent (the `h` helper); never innerHTML.

const PREFIX = "/lora-studio/v1";
const STYLE_ID = "lora-studio-panel-style";
const STORE_KEY = "lora-studio.panel.v1";
const PAGE_SIZE = 48;
const UPLOAD_BATCH = 16;
const JOB_EVENT = "lora_studio.job";
const ACTIVE_JOB = new Set(["queued", "running"]);
const TABS = [
  ["approvals", "Approvals"],
  ["characters", "Characters"],
  ["ingest", "Ingest"],
  ["training", "Training"],
  ["generate", "Generate"],
  ["gallery", "Gallery"],
];
const DEFAULT_CATEGORIES = {
  wrong_appearance: "", wrong_style: "", bad_quality: "", not_solo: "", wrong_pose: "", wrong_expression: "",
};

const CSS = `
.ls-root { --ls-bg: var(--comfy-menu-bg, #353535); --ls-bg2: var(--comfy-menu-secondary-bg, var(--comfy-input-bg, #222));
  --ls-input: var(--comfy-input-bg, #222); --ls-fg: var(--fg-color, #ddd); --ls-muted: var(--descrip-text, #999);
  --ls-border: var(--border-color, #4e4e4e); --ls-accent: var(--p-primary-color, #3b82f6);
  --ls-accent-fg: var(--p-primary-contrast-color, #fff); --ls-danger: var(--error-text, #e05252); --ls-ok: #3fa56b;
  display: flex; flex-direction: column; height: 100%; min-height: 0; box-sizing: border-box;
  background: var(--ls-bg); color: var(--ls-fg); font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
.ls-root *, .ls-root *::before, .ls-root *::after { box-sizing: border-box; }
.ls-root [hidden] { display: none !important; }
.ls-head { padding: 8px 10px 0; border-bottom: 1px solid var(--ls-border); flex: none; }
.ls-title { display: flex; align-items: baseline; gap: 8px; margin-bottom: 6px; }
.ls-title strong { font-size: 15px; }
.ls-muted { color: var(--ls-muted); font-size: 12px; }
.ls-pickers { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin-bottom: 8px; }
.ls-pickers select { flex: 1 1 140px; min-width: 0; }
.ls-tabs { display: flex; flex-wrap: wrap; gap: 2px; }
.ls-tab { background: none; border: none; border-bottom: 2px solid transparent; color: var(--ls-muted);
  padding: 6px 8px; cursor: pointer; font: inherit; border-radius: 0; }
.ls-tab:hover { color: var(--ls-fg); }
.ls-tab[aria-selected="true"] { color: var(--ls-fg); border-bottom-color: var(--ls-accent); }
.ls-body { flex: 1 1 auto; overflow: auto; padding: 10px; min-height: 0; }
.ls-section { display: flex; flex-direction: column; gap: 10px; }
.ls-row { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; }
.ls-row > label { display: flex; flex-direction: column; gap: 2px; font-size: 12px; color: var(--ls-muted); }
.ls-field { display: flex; flex-direction: column; gap: 2px; font-size: 12px; color: var(--ls-muted); }
.ls-root input[type=text], .ls-root input[type=number], .ls-root textarea, .ls-root select {
  background: var(--ls-input); color: var(--ls-fg); border: 1px solid var(--ls-border); border-radius: 4px;
  padding: 4px 6px; font: inherit; max-width: 100%; }
.ls-root textarea { width: 100%; min-height: 56px; resize: vertical; }
.ls-root input[type=number] { width: 96px; }
.ls-root input[type=text] { min-width: 0; }
.ls-btn { background: var(--ls-bg2); color: var(--ls-fg); border: 1px solid var(--ls-border); border-radius: 4px;
  padding: 4px 10px; cursor: pointer; font: inherit; }
.ls-btn:hover:not(:disabled) { border-color: var(--ls-accent); }
.ls-btn:disabled { opacity: .5; cursor: default; }
.ls-btn.ls-primary { background: var(--ls-accent); color: var(--ls-accent-fg); border-color: var(--ls-accent); }
.ls-btn.ls-ok { background: var(--ls-ok); border-color: var(--ls-ok); color: #fff; }
.ls-btn.ls-danger { background: var(--ls-danger); border-color: var(--ls-danger); color: #fff; }
.ls-box { border: 1px solid var(--ls-border); border-radius: 6px; padding: 8px; display: flex; flex-direction: column; gap: 6px; }
.ls-root h3 { margin: 0; font-size: 13px; font-weight: 600; }
.ls-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 8px; align-items: start; }
.ls-card { background: var(--ls-bg2); border: 1px solid var(--ls-border); border-radius: 6px; overflow: hidden;
  display: flex; flex-direction: column; }
.ls-thumb { display: block; aspect-ratio: 1 / 1; background: var(--ls-input); }
.ls-thumb img { width: 100%; height: 100%; object-fit: contain; display: block; }
.ls-card-body { padding: 6px; display: flex; flex-direction: column; gap: 6px; }
.ls-caption { font-size: 12px; word-break: break-word; }
.ls-actions { display: flex; gap: 4px; }
.ls-actions .ls-btn { flex: 1; padding: 4px 4px; }
.ls-reject { display: flex; flex-direction: column; gap: 3px; border-top: 1px solid var(--ls-border); padding-top: 6px; }
.ls-check { display: flex; gap: 4px; align-items: flex-start; font-size: 12px; cursor: pointer; }
.ls-check input { margin: 2px 0 0; }
.ls-row > label.ls-check { flex-direction: row; align-items: center; color: var(--ls-fg); }
.ls-error { color: var(--ls-danger); font-size: 12px; }
.ls-empty { color: var(--ls-muted); padding: 16px 4px; text-align: center; }
.ls-list { display: flex; flex-direction: column; gap: 4px; }
.ls-item { text-align: left; display: flex; justify-content: space-between; gap: 8px; width: 100%; }
.ls-item[aria-current="true"] { border-color: var(--ls-accent); }
.ls-pre { white-space: pre-wrap; word-break: break-word; background: var(--ls-input); border: 1px solid var(--ls-border);
  border-radius: 4px; padding: 6px; margin: 0; font: 12px/1.4 ui-monospace, Menlo, Consolas, monospace; }
.ls-chips { display: flex; flex-wrap: wrap; gap: 4px; }
.ls-chip { background: var(--ls-input); border: 1px solid var(--ls-border); border-radius: 10px; padding: 1px 8px; font-size: 12px; }
.ls-job { border: 1px solid var(--ls-border); border-radius: 6px; padding: 6px; display: flex; flex-direction: column; gap: 4px; }
.ls-job-head { display: flex; justify-content: space-between; gap: 6px; align-items: center; }
.ls-bar { height: 6px; background: var(--ls-input); border-radius: 3px; overflow: hidden; }
.ls-bar > div { height: 100%; background: var(--ls-accent); transition: width .3s; }
.ls-status-succeeded { color: var(--ls-ok); } .ls-status-failed { color: var(--ls-danger); }
.ls-status-cancelled { color: var(--ls-muted); }
.ls-drop { border: 2px dashed var(--ls-border); border-radius: 6px; padding: 14px; text-align: center; color: var(--ls-muted);
  cursor: pointer; }
.ls-drop.ls-over { border-color: var(--ls-accent); color: var(--ls-fg); }
.ls-gitem .ls-caption { padding: 4px 6px; color: var(--ls-muted); overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
`;

// ---------------------------------------------------------------------------------------------
// small helpers

/** Create an element. Strings among the children become text nodes (never parsed as HTML). */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  append(el, children);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "testid") el.dataset.testid = value;
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (["value", "checked", "disabled", "hidden", "multiple", "selected", "min", "max", "step"].includes(key)) {
      el[key] = value;
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function injectStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = CSS;
  document.head.append(style);
}

function humanize(key) {
  const s = String(key).replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function loadStore() {
  try {
    return JSON.parse(window.localStorage.getItem(STORE_KEY) || "{}") || {};
  } catch {
    return {};
  }
}

function saveStore(data) {
  try {
    window.localStorage.setItem(STORE_KEY, JSON.stringify(data));
  } catch {
    /* private mode, quota: the selection is just not remembered */
  }
}

function numberOrUndefined(input) {
  const v = String(input.value).trim();
  if (v === "") return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function makeApi(host) {
  async function request(method, path, body) {
    const init = { method, headers: {} };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    let res;
    try {
      res = await host.fetchApi(PREFIX + path, init);
    } catch (e) {
      throw new ApiError(0, "network", `cannot reach LoRA Studio (${e && e.message ? e.message : e})`);
    }
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!res.ok) {
      const err = data && data.error ? data.error : {};
      throw new ApiError(res.status, err.code || "http_error", err.message || `HTTP ${res.status}`);
    }
    return data;
  }
  return {
    get: (path) => request("GET", path),
    post: (path, body) => request("POST", path, body),
    patch: (path, body) => request("PATCH", path, body),
    url: (path) => host.apiURL(PREFIX + path),
  };
}

// ---------------------------------------------------------------------------------------------
// the panel

export function mountPanel(root, host) {
  injectStyle();
  const api = makeApi(host);
  const store = loadStore();
  const state = {
    tab: TABS.some(([id]) => id === store.tab) ? store.tab : "approvals",
    projects: [],
    characters: [],
    projectId: store.projectId ?? null,
    characterId: store.characterId ?? null,
    categories: { ...DEFAULT_CATEGORIES },
    destroyed: false,
  };
  const cleanups = [];

  const toast = (severity, summary, detail) => {
    try {
      host.toast({ severity, summary, detail });
    } catch (e) {
      console.warn("[LoRA Studio]", summary, detail, e);
    }
  };
  const showError = (err, summary = "LoRA Studio") => {
    toast("error", summary, err && err.message ? err.message : String(err));
  };

  const ctx = {
    api,
    state,
    toast,
    showError,
    character: () => state.characters.find((c) => c.id === state.characterId) || null,
    project: () => state.projects.find((p) => p.id === state.projectId) || null,
    charactersOfProject: () => state.characters.filter((c) => c.project_id === state.projectId),
    reloadCharacters: () => reloadCharacters(),
    reloadProjects: (selectId) => reloadProjects(selectId),
    selectCharacter: (id) => selectCharacter(id),
    adjustCounts: (characterId, delta) => adjustCounts(characterId, delta),
    markStale: (...ids) => ids.forEach((id) => sections[id] && (sections[id].stale = true)),
    isActive: (id) => state.tab === id && !state.destroyed && root.isConnected,
  };

  // header: title, pickers, tabs
  const healthText = h("span", { class: "ls-muted", testid: "health" });
  const projectSelect = h("select", { testid: "project-select", title: "Project", "aria-label": "Project" });
  const characterSelect = h("select", { testid: "character-select", title: "Character", "aria-label": "Character" });
  const refreshButton = h("button", { class: "ls-btn", testid: "refresh", title: "Reload everything" }, "↻");
  const tabButtons = {};
  const tabBar = h("div", { class: "ls-tabs", role: "tablist" });
  for (const [id, label] of TABS) {
    tabButtons[id] = h("button", {
      class: "ls-tab", role: "tab", testid: `tab-${id}`, "aria-selected": "false", onclick: () => showTab(id),
    }, label);
    tabBar.append(tabButtons[id]);
  }
  const head = h("div", { class: "ls-head" },
    h("div", { class: "ls-title" }, h("strong", {}, "LoRA Studio"), healthText),
    h("div", { class: "ls-pickers" }, projectSelect, characterSelect, refreshButton),
    tabBar);
  const body = h("div", { class: "ls-body" });

  const sections = {
    approvals: approvalsSection(ctx),
    characters: charactersSection(ctx),
    ingest: ingestSection(ctx),
    training: trainingSection(ctx),
    generate: generateSection(ctx),
    gallery: gallerySection(ctx),
  };
  for (const [id, section] of Object.entries(sections)) {
    section.el.dataset.testid = `section-${id}`;
    section.el.hidden = true;
    section.stale = true;
    body.append(section.el);
  }

  root.replaceChildren(h("div", { class: "ls-root", testid: "lora-studio-panel" }, head, body));

  function persist() {
    saveStore({ tab: state.tab, projectId: state.projectId, characterId: state.characterId });
  }

  function showTab(id) {
    state.tab = id;
    for (const [tid, button] of Object.entries(tabButtons)) button.setAttribute("aria-selected", String(tid === id));
    for (const [sid, section] of Object.entries(sections)) section.el.hidden = sid !== id;
    persist();
    const section = sections[id];
    if (section.stale) {
      section.stale = false;
      section.refresh();
    }
  }

  function selectionChanged() {
    persist();
    renderPickers();
    for (const section of Object.values(sections)) {
      section.stale = true;
      if (section.selectionChanged) section.selectionChanged();
    }
    const current = sections[state.tab];
    current.stale = false;
    current.refresh();
  }

  function renderPickers() {
    const projectOptions = state.projects.length
      ? state.projects.map((p) => h("option", { value: String(p.id) }, p.name))
      : [h("option", { value: "" }, "No projects yet")];
    projectSelect.replaceChildren(...projectOptions);
    projectSelect.value = state.projectId == null ? "" : String(state.projectId);
    const chars = ctx.charactersOfProject();
    const charOptions = chars.length
      ? chars.map((c) => h("option", { value: String(c.id) },
        `${c.name} (${(c.counts && c.counts.pending) || 0} pending)`))
      : [h("option", { value: "" }, "No characters yet")];
    characterSelect.replaceChildren(...charOptions);
    characterSelect.value = state.characterId == null ? "" : String(state.characterId);
  }

  function fixSelection() {
    if (!state.projects.some((p) => p.id === state.projectId)) {
      state.projectId = state.projects.length ? state.projects[0].id : null;
    }
    const chars = ctx.charactersOfProject();
    if (!chars.some((c) => c.id === state.characterId)) {
      state.characterId = chars.length ? chars[0].id : null;
    }
  }

  function selectCharacter(id) {
    const c = state.characters.find((x) => x.id === id);
    if (!c) return;
    state.projectId = c.project_id;
    state.characterId = c.id;
    selectionChanged();
  }

  function adjustCounts(characterId, delta) {
    const c = state.characters.find((x) => x.id === characterId);
    if (!c) return;
    c.counts = c.counts || { pending: 0, approved: 0 };
    for (const [k, v] of Object.entries(delta)) c.counts[k] = Math.max(0, (c.counts[k] || 0) + v);
    renderPickers();
    for (const section of Object.values(sections)) if (section.countsChanged) section.countsChanged();
    scheduleCharacterReload();
  }

  let reloadTimer = null;
  function scheduleCharacterReload() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => reloadCharacters().catch(() => {}), 1500);
  }

  async function reloadCharacters() {
    const data = await api.get("/characters");
    const before = `${state.projectId}/${state.characterId}`;
    state.characters = data.items || [];
    fixSelection();
    renderPickers();
    for (const section of Object.values(sections)) if (section.countsChanged) section.countsChanged();
    if (`${state.projectId}/${state.characterId}` !== before) selectionChanged();
  }

  async function reloadProjects(selectId) {
    const data = await api.get("/projects");
    state.projects = data.items || [];
    if (selectId != null) state.projectId = selectId;
    await reloadCharacters();
  }

  projectSelect.addEventListener("change", () => {
    state.projectId = projectSelect.value ? Number(projectSelect.value) : null;
    const chars = ctx.charactersOfProject();
    state.characterId = chars.length ? chars[0].id : null;
    selectionChanged();
  });
  characterSelect.addEventListener("change", () => {
    state.characterId = characterSelect.value ? Number(characterSelect.value) : null;
    selectionChanged();
  });
  refreshButton.addEventListener("click", () => initialLoad());

  async function initialLoad() {
    try {
      const [health, cats, projects, chars] = await Promise.all([
        api.get("/health").catch(() => null),
        api.get("/feedback/categories").catch(() => null),
        api.get("/projects"),
        api.get("/characters"),
      ]);
      if (health) healthText.textContent = `v${health.version} · ${health.host} · ${health.database}`;
      if (cats && cats.categories) state.categories = cats.categories;
      state.projects = projects.items || [];
      state.characters = chars.items || [];
      fixSelection();
    } catch (e) {
      showError(e, "LoRA Studio: cannot load projects");
    }
    selectionChanged();
  }

  // server events (job progress); the training section also polls
  const onJobEvent = (job) => {
    if (state.destroyed || !job || typeof job !== "object") return;
    sections.training.onJob(job);
  };
  try {
    const off = host.onEvent && host.onEvent(JOB_EVENT, onJobEvent);
    if (typeof off === "function") cleanups.push(off);
  } catch (e) {
    console.warn("[LoRA Studio] events unavailable", e);
  }

  const poll = setInterval(() => {
    if (state.destroyed || !root.isConnected) return;
    for (const section of Object.values(sections)) if (section.tick) section.tick();
  }, 3000);
  cleanups.push(() => clearInterval(poll));

  for (const [tid, button] of Object.entries(tabButtons)) button.setAttribute("aria-selected", String(tid === state.tab));
  for (const [sid, section] of Object.entries(sections)) section.el.hidden = sid !== state.tab;
  initialLoad();

  return {
    destroy() {
      state.destroyed = true;
      clearTimeout(reloadTimer);
      for (const fn of cleanups.splice(0)) {
        try {
          fn();
        } catch {
          /* ignore */
        }
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Approvals: the pending queue of the selected character

function approvalsSection(ctx) {
  const { api } = ctx;
  const pendingCount = h("span", { testid: "pending-count" }, "0");
  const approvedCount = h("span", { testid: "approved-count" }, "0");
  const grid = h("div", { class: "ls-grid", testid: "pending-grid" });
  const empty = h("div", { class: "ls-empty", testid: "pending-empty", hidden: true });
  const more = h("button", { class: "ls-btn", testid: "load-more-pending", hidden: true, onclick: () => load(false) },
    "Load more");
  const refresh = h("button", { class: "ls-btn", testid: "refresh-pending", onclick: () => load(true) }, "Refresh");
  const el = h("section", { class: "ls-section" },
    h("div", { class: "ls-row", style: "justify-content: space-between" },
      h("span", {}, pendingCount, " pending · ", approvedCount, " approved"), refresh),
    grid, empty, h("div", { class: "ls-row", style: "justify-content: center" }, more));

  let cursor = null;
  let seq = 0;
  let loading = false;

  function countsChanged() {
    const c = ctx.character();
    pendingCount.textContent = String(c && c.counts ? c.counts.pending || 0 : 0);
    approvedCount.textContent = String(c && c.counts ? c.counts.approved || 0 : 0);
  }

  function updateEmpty() {
    const c = ctx.character();
    const none = grid.children.length === 0;
    empty.hidden = !none || loading;
    if (!c) empty.textContent = "Choose or create a character (Characters tab).";
    else empty.textContent = "No pending images. Upload some in the Ingest tab.";
    more.hidden = !cursor;
  }

  async function load(reset) {
    const c = ctx.character();
    const token = ++seq;
    if (reset) {
      cursor = null;
      grid.replaceChildren();
    }
    countsChanged();
    if (!c) {
      updateEmpty();
      return;
    }
    const params = new URLSearchParams({ status: "pending", limit: String(PAGE_SIZE) });
    if (cursor) params.set("cursor", String(cursor));
    loading = true;
    more.disabled = true;
    try {
      const page = await api.get(`/characters/${c.id}/images?${params}`);
      if (token !== seq) return;
      for (const image of page.items || []) {
        if (grid.querySelector(`[data-image-id="${Number(image.id)}"]`)) continue;
        grid.append(card(image));
      }
      cursor = page.next_cursor || null;
    } catch (e) {
      if (token === seq) ctx.showError(e, "Cannot load pending images");
    } finally {
      if (token === seq) {
        loading = false;
        more.disabled = false;
        updateEmpty();
      }
    }
  }

  function decided(cardEl, image, status) {
    cardEl.remove();
    ctx.adjustCounts(image.character_id, status === "approved" ? { pending: -1, approved: 1 } : { pending: -1 });
    updateEmpty();
    if (grid.children.length === 0 && cursor) load(false);
  }

  function card(image) {
    const id = Number(image.id);
    const src = api.url(`/images/${id}/file`);
    const buttons = [];
    const setBusy = (busy) => buttons.forEach((b) => { b.disabled = busy; });

    const approve = h("button", { class: "ls-btn ls-ok", testid: `approve-${id}`, title: "Approve" }, "Approve");
    const reject = h("button", { class: "ls-btn ls-danger", testid: `reject-${id}`, title: "Reject…" }, "Reject");
    const checks = Object.entries(ctx.state.categories).map(([key, terms]) => {
      const box = h("input", { type: "checkbox", value: key, testid: `reject-cat-${id}-${key}` });
      return h("label", { class: "ls-check", title: terms ? `adds: ${terms}` : "" }, box, humanize(key));
    });
    const note = h("input", { type: "text", placeholder: "note (optional)", testid: `reject-note-${id}` });
    const formError = h("div", { class: "ls-error", testid: `reject-error-${id}`, hidden: true });
    const confirm = h("button", { class: "ls-btn ls-danger", testid: `reject-confirm-${id}` }, "Reject");
    const cancel = h("button", { class: "ls-btn", testid: `reject-cancel-${id}` }, "Cancel");
    const form = h("div", { class: "ls-reject", testid: `reject-form-${id}`, hidden: true },
      checks, note, formError, h("div", { class: "ls-actions" }, confirm, cancel));
    buttons.push(approve, reject, confirm, cancel);

    const cardEl = h("div", { class: "ls-card", testid: `pending-card-${id}`, "data-image-id": String(id) },
      h("a", { class: "ls-thumb", href: src, target: "_blank", rel: "noopener", title: "Open full size" },
        h("img", { src, alt: image.caption || `image ${id}`, loading: "lazy", testid: `pending-img-${id}` })),
      h("div", { class: "ls-card-body" },
        image.caption ? h("div", { class: "ls-caption" }, image.caption) : null,
        h("div", { class: "ls-muted" }, `#${id} · ${image.width}×${image.height} · ${image.source || ""}`),
        h("div", { class: "ls-actions" }, approve, reject),
        form));

    approve.addEventListener("click", async () => {
      setBusy(true);
      try {
        await api.post(`/images/${id}/approve`);
        decided(cardEl, image, "approved");
      } catch (e) {
        setBusy(false);
        ctx.showError(e, "Approve failed");
      }
    });
    reject.addEventListener("click", () => {
      form.hidden = !form.hidden;
      if (!form.hidden) (form.querySelector("input") || note).focus();
    });
    cancel.addEventListener("click", () => {
      form.hidden = true;
      formError.hidden = true;
    });
    const submitReject = async () => {
      const categories = checks.map((l) => l.querySelector("input")).filter((b) => b.checked).map((b) => b.value);
      const text = note.value.trim();
      if (!categories.length && !text) {
        formError.textContent = "Choose at least one category or write a note.";
        formError.hidden = false;
        return;
      }
      formError.hidden = true;
      setBusy(true);
      try {
        await api.post(`/images/${id}/reject`, { categories, note: text });
        decided(cardEl, image, "rejected");
      } catch (e) {
        setBusy(false);
        formError.textContent = e.message;
        formError.hidden = false;
        ctx.showError(e, "Reject failed");
      }
    };
    confirm.addEventListener("click", submitReject);
    note.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") submitReject();
    });
    return cardEl;
  }

  return { el, refresh: () => load(true), countsChanged };
}

// ---------------------------------------------------------------------------------------------
// Characters: projects, characters, the SSOT prompt and the effective prompt

function charactersSection(ctx) {
  const { api } = ctx;

  // new project
  const projectName = h("input", { type: "text", placeholder: "project name", testid: "new-project-name" });
  const projectDesc = h("input", { type: "text", placeholder: "description (optional)", testid: "new-project-description" });
  const createProject = h("button", { class: "ls-btn", testid: "create-project" }, "Create project");
  createProject.addEventListener("click", async () => {
    const name = projectName.value.trim();
    if (!name) return ctx.toast("warn", "Project", "Enter a project name.");
    createProject.disabled = true;
    try {
      const project = await api.post("/projects", { name, description: projectDesc.value.trim() });
      projectName.value = "";
      projectDesc.value = "";
      ctx.toast("success", "Project created", project.name);
      await ctx.reloadProjects(project.id);
    } catch (e) {
      ctx.showError(e, "Cannot create the project");
    } finally {
      createProject.disabled = false;
    }
  });

  // character list of the current project
  const list = h("div", { class: "ls-list", testid: "character-list" });

  // new character
  const newName = h("input", { type: "text", placeholder: "name", testid: "new-character-name" });
  const newTrigger = h("input", { type: "text", placeholder: "trigger word (optional)", testid: "new-character-trigger" });
  const newDesign = h("textarea", { placeholder: "design prompt: the single source of truth for the look",
    testid: "new-character-design" });
  const newNegative = h("textarea", { placeholder: "negative prompt (optional)", testid: "new-character-negative" });
  const createChar = h("button", { class: "ls-btn ls-primary", testid: "create-character" }, "Create character");
  createChar.addEventListener("click", async () => {
    const project = ctx.project();
    if (!project) return ctx.toast("warn", "Character", "Create or choose a project first.");
    const name = newName.value.trim();
    if (!name) return ctx.toast("warn", "Character", "Enter a name.");
    createChar.disabled = true;
    try {
      const c = await api.post(`/projects/${project.id}/characters`, {
        name, design_prompt: newDesign.value.trim(), negative_prompt: newNegative.value.trim(),
        trigger_word: newTrigger.value.trim(),
      });
      for (const input of [newName, newTrigger, newDesign, newNegative]) input.value = "";
      ctx.toast("success", "Character created", c.name);
      await ctx.reloadCharacters();
      ctx.selectCharacter(c.id);
    } catch (e) {
      ctx.showError(e, "Cannot create the character");
    } finally {
      createChar.disabled = false;
    }
  });

  // edit the selected character
  const editTitle = h("h3", {}, "Selected character");
  const editDesign = h("textarea", { testid: "edit-design-prompt", rows: 4 });
  const editNegative = h("textarea", { testid: "edit-negative-prompt", rows: 2 });
  const editTrigger = h("input", { type: "text", testid: "edit-trigger-word" });
  const save = h("button", { class: "ls-btn ls-primary", testid: "save-character" }, "Save");
  const editBox = h("div", { class: "ls-box", testid: "character-edit" }, editTitle,
    h("label", { class: "ls-field" }, "Design prompt (SSOT)", editDesign),
    h("label", { class: "ls-field" }, "Negative prompt", editNegative),
    h("label", { class: "ls-field" }, "Trigger word", editTrigger),
    h("div", { class: "ls-row" }, save));

  // effective prompt
  const positive = h("pre", { class: "ls-pre", testid: "effective-positive" });
  const negative = h("pre", { class: "ls-pre", testid: "effective-negative" });
  const learned = h("div", { class: "ls-chips", testid: "learned-terms" });
  const catCounts = h("div", { class: "ls-chips", testid: "category-counts" });
  const loraName = h("div", { class: "ls-muted", testid: "effective-lora" });
  const promptBox = h("div", { class: "ls-box", testid: "effective-prompt" },
    h("h3", {}, "Effective prompt (what generation uses)"),
    h("div", { class: "ls-field" }, "Positive", positive),
    h("div", { class: "ls-field" }, "Negative", negative),
    h("div", { class: "ls-field" }, "Learned negative terms (from rejections)", learned),
    h("div", { class: "ls-field" }, "Rejections by category", catCounts),
    loraName);

  save.addEventListener("click", async () => {
    const c = ctx.character();
    if (!c) return;
    save.disabled = true;
    try {
      await api.patch(`/characters/${c.id}`, {
        design_prompt: editDesign.value, negative_prompt: editNegative.value, trigger_word: editTrigger.value.trim(),
      });
      ctx.toast("success", "Saved", c.name);
      await ctx.reloadCharacters();
      await loadPrompt();
    } catch (e) {
      ctx.showError(e, "Cannot save the character");
    } finally {
      save.disabled = false;
    }
  });

  const el = h("section", { class: "ls-section" },
    h("div", { class: "ls-box" }, h("h3", {}, "Characters of this project"), list),
    editBox, promptBox,
    h("div", { class: "ls-box" }, h("h3", {}, "New character"),
      h("div", { class: "ls-row" }, newName, newTrigger), newDesign, newNegative, h("div", { class: "ls-row" }, createChar)),
    h("div", { class: "ls-box" }, h("h3", {}, "New project"),
      h("div", { class: "ls-row" }, projectName, projectDesc, createProject)));

  function renderList() {
    const chars = ctx.charactersOfProject();
    if (!chars.length) {
      list.replaceChildren(h("div", { class: "ls-muted" }, ctx.project() ? "No characters yet." : "Create a project first."));
      return;
    }
    list.replaceChildren(...chars.map((c) => h("button", {
      class: "ls-btn ls-item", testid: `character-row-${Number(c.id)}`,
      "aria-current": String(c.id === ctx.state.characterId), onclick: () => ctx.selectCharacter(c.id),
    }, h("span", {}, c.name, c.trigger_word ? h("span", { class: "ls-muted" }, ` · ${c.trigger_word}`) : null),
    h("span", { class: "ls-muted" }, `${(c.counts && c.counts.pending) || 0} pending · ${(c.counts && c.counts.approved) || 0} approved`))));
  }

  function fillEdit() {
    const c = ctx.character();
    editBox.hidden = !c;
    promptBox.hidden = !c;
    if (!c) return;
    editTitle.textContent = `${c.name} (${c.project_slug || ""}/${c.slug})`;
    editDesign.value = c.design_prompt || "";
    editNegative.value = c.negative_prompt || "";
    editTrigger.value = c.trigger_word || "";
  }

  let seq = 0;
  async function loadPrompt() {
    const c = ctx.character();
    if (!c) return;
    const token = ++seq;
    try {
      const p = await api.get(`/characters/${c.id}/prompt`);
      if (token !== seq) return;
      positive.textContent = p.positive || "";
      negative.textContent = p.negative || "";
      const terms = p.learned_terms || [];
      learned.replaceChildren(...(terms.length ? terms.map((t) => h("span", { class: "ls-chip" }, t))
        : [h("span", { class: "ls-muted" }, "none yet")]));
      const counts = Object.entries(p.category_counts || {}).filter(([, n]) => n > 0);
      catCounts.replaceChildren(...(counts.length ? counts.map(([k, n]) => h("span", { class: "ls-chip" }, `${humanize(k)}: ${n}`))
        : [h("span", { class: "ls-muted" }, "none")]));
      loraName.textContent = p.lora_name ? `Current LoRA: ${p.lora_name}` : "No LoRA trained yet.";
    } catch (e) {
      if (token === seq) ctx.showError(e, "Cannot load the effective prompt");
    }
  }

  return {
    el,
    refresh() {
      renderList();
      fillEdit();
      loadPrompt();
    },
    countsChanged: renderList,
  };
}

// ---------------------------------------------------------------------------------------------
// Ingest: upload images for the selected character

function ingestSection(ctx) {
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

// ---------------------------------------------------------------------------------------------
// Training: start a LoRA training, follow the jobs

function trainingSection(ctx) {
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
    const finished = old && ACTIVE_JOB.has(old.status) && !ACTIVE_JOB.has(job.status);
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

// ---------------------------------------------------------------------------------------------
// Generate: queue a txt2img on ComfyUI; edit the project's style

const STYLE_FIELDS = [
  ["checkpoint", "text", "Checkpoint"], ["sampler", "text", "Sampler"], ["scheduler", "text", "Scheduler"],
  ["steps", "int", "Steps"], ["cfg", "float", "CFG"], ["width", "int", "Width"], ["height", "int", "Height"],
  ["clip_skip", "int", "CLIP skip"], ["lora_strength", "float", "LoRA strength"],
  ["positive_template", "area", "Positive template"], ["negative_template", "area", "Negative template"],
];

function generateSection(ctx) {
  const { api } = ctx;
  const target = h("div", { class: "ls-muted", testid: "gen-target" });
  const seed = h("input", { type: "number", min: 0, placeholder: "random", testid: "gen-seed", style: "width: 140px" });
  const batch = h("input", { type: "number", value: "1", min: 1, max: 16, testid: "gen-batch" });
  const useLora = h("input", { type: "checkbox", checked: true, testid: "gen-use-lora" });
  const submit = h("button", { class: "ls-btn ls-primary", testid: "gen-submit" }, "Queue generation");
  const result = h("div", { class: "ls-box", testid: "gen-result", hidden: true });
  const errorBox = h("div", { class: "ls-error", testid: "gen-error", hidden: true });
  let lastGeneration = null;
  let polling = false;

  async function refreshGeneration() {
    const g = await api.get(`/generations/${Number(lastGeneration.id)}`);
    if (lastGeneration && g.id === lastGeneration.id) showGeneration(g);
  }

  function showGeneration(g) {
    lastGeneration = g;
    const outputs = Array.isArray(g.outputs) ? g.outputs : [];
    const refresh = h("button", { class: "ls-btn", testid: "gen-refresh" }, "Refresh status");
    refresh.addEventListener("click", async () => {
      refresh.disabled = true;
      try {
        await refreshGeneration();
      } catch (e) {
        refresh.disabled = false;
        ctx.showError(e, "Cannot refresh the generation");
      }
    });
    const thumbs = outputs.filter((o) => o && o.filename && (!o.type || o.type === "output")).map((o) => {
      const path = o.subfolder ? `${o.subfolder}/${o.filename}` : o.filename;
      const src = api.url(`/gallery/file?path=${encodeURIComponent(path)}`);
      return h("a", { class: "ls-thumb", href: src, target: "_blank", rel: "noopener" }, h("img", { src, alt: o.filename }));
    });
    result.replaceChildren(
      h("h3", {}, `Generation #${g.id}`),
      h("div", { testid: "gen-status" }, `status: ${g.status}`),
      h("div", { class: "ls-muted" }, `ComfyUI prompt id: ${g.prompt_id || "–"}`),
      g.error ? h("div", { class: "ls-error" }, String(g.error)) : null,
      thumbs.length ? h("div", { class: "ls-grid" }, thumbs) : null,
      h("div", { class: "ls-row" }, refresh));
    result.hidden = false;
  }

  submit.addEventListener("click", async () => {
    const c = ctx.character();
    if (!c) return ctx.toast("warn", "Generate", "Choose a character first.");
    const body = { use_lora: useLora.checked };
    const s = numberOrUndefined(seed);
    const b = numberOrUndefined(batch);
    if (s !== undefined) body.seed = Math.round(s);
    if (b !== undefined) body.batch_size = Math.round(b);
    submit.disabled = true;
    errorBox.hidden = true;
    try {
      const g = await api.post(`/characters/${c.id}/generate`, body);
      showGeneration(g);
      ctx.toast("success", "Generation queued", `#${g.id} on ComfyUI`);
    } catch (e) {
      errorBox.textContent = e.message;
      errorBox.hidden = false;
      ctx.showError(e, "Generation failed");
    } finally {
      submit.disabled = false;
    }
  });

  // project style
  const styleInputs = {};
  let styleSeq = 0;
  const styleRows = STYLE_FIELDS.map(([key, kind, label]) => {
    const input = kind === "area"
      ? h("textarea", { rows: 2, testid: `style-${key}` })
      : h("input", { type: kind === "text" ? "text" : "number", step: kind === "float" ? "any" : "1", testid: `style-${key}` });
    styleInputs[key] = input;
    return h("label", { class: kind === "area" ? "ls-field" : "", style: kind === "area" ? "width:100%" : "" }, label, input);
  });
  const styleTitle = h("h3", {}, "Project style");
  const saveStyle = h("button", { class: "ls-btn", testid: "style-save" }, "Save style");
  saveStyle.addEventListener("click", async () => {
    const p = ctx.project();
    if (!p) return;
    const body = {};
    for (const [key, kind] of STYLE_FIELDS) {
      const input = styleInputs[key];
      if (kind === "int" || kind === "float") {
        const n = numberOrUndefined(input);
        if (n !== undefined) body[key] = kind === "int" ? Math.round(n) : n;
      } else body[key] = input.value;
    }
    saveStyle.disabled = true;
    try {
      fillStyle(await api.patch(`/projects/${p.id}/style`, body));
      ctx.toast("success", "Style saved", p.name);
    } catch (e) {
      ctx.showError(e, "Cannot save the style");
    } finally {
      saveStyle.disabled = false;
    }
  });
  function fillStyle(style) {
    for (const [key] of STYLE_FIELDS) {
      const v = style[key];
      styleInputs[key].value = v === null || v === undefined ? "" : String(v);
    }
  }
  const styleBox = h("div", { class: "ls-box", testid: "style-form" }, styleTitle,
    h("div", { class: "ls-row" }, styleRows), h("div", { class: "ls-row" }, saveStyle));

  const el = h("section", { class: "ls-section" },
    h("div", { class: "ls-box" }, h("h3", {}, "Generate on ComfyUI"), target,
      h("div", { class: "ls-row" }, h("label", {}, "Seed", seed), h("label", {}, "Batch", batch),
        h("label", { class: "ls-check", style: "align-self: flex-end; padding-bottom: 4px" }, useLora, "use the current LoRA")),
      h("div", { class: "ls-row" }, submit), errorBox),
    result, styleBox);

  return {
    el,
    async refresh() {
      const c = ctx.character();
      const p = ctx.project();
      target.textContent = c ? `Character: ${c.name}` : "Choose a character first.";
      submit.disabled = !c;
      styleBox.hidden = !p;
      if (!p) return;
      styleTitle.textContent = `Project style: ${p.name}`;
      // the inputs stay disabled until the style arrives, so nothing typed meanwhile is overwritten
      const token = ++styleSeq;
      const controls = [...Object.values(styleInputs), saveStyle];
      controls.forEach((c) => { c.disabled = true; });
      try {
        const style = await api.get(`/projects/${p.id}/style`);
        if (token === styleSeq) fillStyle(style);
      } catch (e) {
        if (token === styleSeq) ctx.showError(e, "Cannot load the project style");
      } finally {
        if (token === styleSeq) controls.forEach((c) => { c.disabled = false; });
      }
    },
    selectionChanged() {
      result.hidden = true;
      errorBox.hidden = true;
      lastGeneration = null;
    },
    async tick() {
      // follow a queued generation until ComfyUI's history has it
      if (polling || !lastGeneration || lastGeneration.status !== "queued" || !ctx.isActive("generate")) return;
      polling = true;
      try {
        await refreshGeneration();
      } catch {
        /* ComfyUI may be busy or restarting: try again on the next tick */
      } finally {
        polling = false;
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Gallery: ComfyUI's output folder, newest first

function gallerySection(ctx) {
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
        h("div", { class: "ls-caption" }, item.name)));
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

  return { el, refresh: () => load(true) };
}
