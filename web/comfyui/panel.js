// LoRA Studio panel: plain DOM, no framework and no build step. This module is the shell (header,
// project/character pickers, tab switching, shared state, events and polling); each tab lives in
// its own module (panel_<tab>.js), with shared helpers in panel_dom.js, panel_api.js and
// panel_style.js. The modules sit next to this one (not in a subfolder) so that each is served
// from the same folder as panel.js wherever the pack is mounted.
//
// `mountPanel(root, host)` builds the panel inside `root`. `host` is provided by the ComfyUI
// extension (lora_studio.js) or by the standalone page (standalone/host.js):
//   fetchApi(path, init) -> Promise<Response>   path starts with /lora-studio/v1
//   apiURL(path) -> string                       URL for <img src>
//   toast({severity, summary, detail})           severity: success | info | warn | error
//   onEvent(type, cb) -> optional unsubscribe    cb(data) for server events ("lora_studio.job")
//
// ComfyUI imports every .js file of the pack as an extension, so none of these modules has side
// effects at import: the stylesheet is injected by the first mountPanel call.
//
// Two sizes: the sidebar is compact (one row of view icons, every word readable at ComfyUI's default
// sidebar width); "Workspace" (or W) moves the same panel into a full-window overlay for review and the
// gallery (panel_workspace.js). Keys pressed in the panel go to the shown view (`section.onKey`); a key it
// handles, and any key typed into the panel's fields, stops there so ComfyUI's shortcuts never see it.
//
// All text coming from the API goes through textContent (the `h` helper); never innerHTML.

import { h, isTypingTarget } from "./panel_dom.js";
import { injectStyle } from "./panel_style.js";
import { makeApi } from "./panel_api.js";
import { jobFollower } from "./panel_jobfollow.js";
import { approvalsSection } from "./panel_approvals.js";
import { charactersSection } from "./panel_characters.js";
import { ingestSection } from "./panel_ingest.js";
import { trainingSection } from "./panel_training.js";
import { generateSection } from "./panel_generate.js";
import { galleryHost } from "./panel_gallery_host.js";
import { workspaceShell } from "./panel_workspace.js";
import { injectWorkspaceStyle } from "./panel_workspace_style.js";
import { icon } from "./panel_icons.js";

const STORE_KEY = "lora-studio.panel.v1";
const JOB_EVENT = "lora_studio.job";
const UNASSIGNED = "unassigned"; // the character picker's value for the project's unassigned pool
// [id, label in the view bar, full name (the button's title)]
const TABS = [
  ["approvals", "Review", "Approvals: the review queue"],
  ["characters", "Characters", "Characters, their SSOT prompts and the project's style"],
  ["ingest", "Ingest", "Ingest: uploads, video frames, URLs, ComfyUI outputs"],
  ["training", "Train", "Training"],
  ["generate", "Generate", "Generate with the character's LoRA"],
  ["gallery", "Gallery", "Gallery: ComfyUI's output folder"],
];
const WIDE_TABS = ["approvals", "gallery"]; // the views the wide workspace hosts
const DEFAULT_CATEGORIES = {
  wrong_appearance: "", wrong_style: "", bad_quality: "", not_solo: "", wrong_pose: "", wrong_expression: "",
};

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

// ---------------------------------------------------------------------------------------------
// the panel

export function mountPanel(root, host) {
  injectStyle();
  injectWorkspaceStyle();
  const api = makeApi(host);
  const store = loadStore();
  const state = {
    tab: TABS.some(([id]) => id === store.tab) ? store.tab : "approvals",
    projects: [],
    characters: [],
    projectId: store.projectId ?? null,
    characterId: store.characterId ?? null,
    unassigned: store.unassigned === true, // "(unassigned)" chosen: the project's pool, no character
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
    // the project whose unassigned pool is chosen in the character picker (then character() is null)
    unassignedProject: () => (state.unassigned && state.projects.find((p) => p.id === state.projectId)) || null,
    project: () => state.projects.find((p) => p.id === state.projectId) || null,
    charactersOfProject: () => state.characters.filter((c) => c.project_id === state.projectId),
    reloadCharacters: () => reloadCharacters(),
    reloadProjects: (selectId) => reloadProjects(selectId),
    selectCharacter: (id) => selectCharacter(id),
    adjustCounts: (characterId, delta) => adjustCounts(characterId, delta),
    markStale: (...ids) => ids.forEach((id) => sections[id] && (sections[id].stale = true)),
    isActive: (id) => state.tab === id && !state.destroyed && (root.isConnected || workspace.isOpen()),
    // the wide workspace (full-window overlay) is open; sections lay out with setWide(on)
    isWide: () => workspace.isOpen(),
    openWorkspace: () => workspace.open(),
    // follow a job in the Ingest tab (progress, cancel, result); used by the Gallery's imports
    trackJob: (job) => sections.ingest.track(job),
    // the one job follower (panel_jobfollow.js): job events from the socket, polling as fallback
    jobs: null,
  };
  const jobs = jobFollower({ api, isStopped: () => state.destroyed });
  ctx.jobs = jobs;
  cleanups.push(() => jobs.destroy());

  // header: title, workspace button, pickers, the view bar
  const healthText = h("span", { class: "ls-muted ls-health", testid: "health" });
  const projectSelect = h("select", { testid: "project-select", title: "Project", "aria-label": "Project" });
  const characterSelect = h("select", { testid: "character-select", title: "Character", "aria-label": "Character" });
  const refreshButton = h("button", { class: "ls-btn", testid: "refresh", title: "Reload everything" }, "↻");
  const openButton = h("button", { class: "ls-btn ls-icon-btn ls-compact-only", testid: "open-workspace",
    title: "Open the wide workspace for review and the gallery (W)", "aria-label": "Open the wide workspace",
    onclick: () => workspace.open() }, icon("expand"), h("span", {}, "Workspace"));
  const closeButton = h("button", { class: "ls-btn ls-icon-btn ls-wide-only", testid: "close-workspace",
    title: "Back to the sidebar (Esc)", "aria-label": "Close the workspace", onclick: () => workspace.close() },
  icon("close"), h("span", {}, "Close"));
  const tabButtons = {};
  const tabBar = h("div", { class: "ls-tabs", role: "tablist", "aria-label": "Views", testid: "view-bar" });
  for (const [id, label, title] of TABS) {
    tabButtons[id] = h("button", {
      class: "ls-tab", role: "tab", testid: `tab-${id}`, "aria-selected": "false", title, "aria-label": title,
      "data-wide": WIDE_TABS.includes(id) ? "true" : null, onclick: () => showTab(id),
    }, icon(id), h("span", { class: "ls-tab-label" }, label));
    tabBar.append(tabButtons[id]);
  }
  const head = h("div", { class: "ls-head" },
    h("div", { class: "ls-title" }, h("strong", {}, "LoRA Studio"), healthText, openButton),
    h("div", { class: "ls-pickers" }, projectSelect, characterSelect, refreshButton),
    tabBar, closeButton);
  const body = h("div", { class: "ls-body" });

  const sections = {
    approvals: approvalsSection(ctx),
    characters: charactersSection(ctx),
    ingest: ingestSection(ctx),
    training: trainingSection(ctx),
    generate: generateSection(ctx),
    gallery: galleryHost(ctx),
  };
  for (const [id, section] of Object.entries(sections)) {
    section.el.dataset.testid = `section-${id}`;
    section.el.hidden = true;
    section.stale = true;
    body.append(section.el);
  }

  const panelEl = h("div", { class: "ls-root", testid: "lora-studio-panel" }, head, body);
  // ComfyUI's sidebar scrolls the tab's element as a whole: filling its height instead keeps the header
  // (pickers, views) in place and scrolls only the view below it
  if (!root.style.height) root.style.height = "100%";
  root.replaceChildren(panelEl);

  const workspace = workspaceShell({
    root,
    panel: panelEl,
    onChange(open) {
      for (const section of Object.values(sections)) if (section.setWide) section.setWide(open);
      if (open && !WIDE_TABS.includes(state.tab)) showTab("approvals");
      const section = sections[state.tab];
      if (section.stale) {
        section.stale = false;
        section.refresh();
      }
      if (section.focus) section.focus();
      else if (open) closeButton.focus();
    },
  });
  cleanups.push(() => workspace.destroy());

  // keys: the shown view's shortcuts; nothing typed in the panel reaches ComfyUI's keybindings
  panelEl.addEventListener("keydown", (ev) => {
    if (state.destroyed) return;
    const typing = isTypingTarget(ev.target);
    let handled = false;
    if (!typing && !ev.ctrlKey && !ev.metaKey && !ev.altKey && !ev.shiftKey && ev.key.toLowerCase() === "w") {
      workspace.toggle();
      handled = true;
    } else {
      const section = sections[state.tab];
      if (section && section.onKey) {
        try {
          handled = section.onKey(ev, { typing, wide: workspace.isOpen() }) === true;
        } catch (e) {
          console.error("[LoRA Studio] key handler failed", e);
        }
      }
    }
    if (handled) {
      ev.preventDefault();
      ev.stopPropagation();
    } else if (typing) ev.stopPropagation();
  });

  function persist() {
    saveStore({ tab: state.tab, projectId: state.projectId, characterId: state.characterId,
      unassigned: state.unassigned });
  }

  function showTab(id) {
    if (workspace.isOpen() && !WIDE_TABS.includes(id)) id = "approvals";
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
    if (state.projectId != null) charOptions.push(h("option", { value: UNASSIGNED }, "(unassigned)"));
    characterSelect.replaceChildren(...charOptions);
    characterSelect.value = state.unassigned ? UNASSIGNED : state.characterId == null ? "" : String(state.characterId);
  }

  function fixSelection() {
    if (!state.projects.some((p) => p.id === state.projectId)) {
      state.projectId = state.projects.length ? state.projects[0].id : null;
    }
    if (state.projectId == null) state.unassigned = false;
    const chars = ctx.charactersOfProject();
    if (state.unassigned) state.characterId = null;
    else if (!chars.some((c) => c.id === state.characterId)) {
      state.characterId = chars.length ? chars[0].id : null;
    }
  }

  function selectCharacter(id) {
    const c = state.characters.find((x) => x.id === id);
    if (!c) return;
    state.projectId = c.project_id;
    state.characterId = c.id;
    state.unassigned = false;
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
    const data = await api.getAll("/characters");
    const before = `${state.projectId}/${state.characterId}/${state.unassigned}`;
    state.characters = data.items || [];
    fixSelection();
    renderPickers();
    for (const section of Object.values(sections)) if (section.countsChanged) section.countsChanged();
    if (`${state.projectId}/${state.characterId}/${state.unassigned}` !== before) selectionChanged();
  }

  async function reloadProjects(selectId) {
    const data = await api.getAll("/projects");
    state.projects = data.items || [];
    if (selectId != null) state.projectId = selectId;
    await reloadCharacters();
  }

  projectSelect.addEventListener("change", () => {
    state.projectId = projectSelect.value ? Number(projectSelect.value) : null;
    const chars = ctx.charactersOfProject();
    state.characterId = chars.length ? chars[0].id : null;
    state.unassigned = false;
    selectionChanged();
  });
  characterSelect.addEventListener("change", () => {
    state.unassigned = characterSelect.value === UNASSIGNED;
    state.characterId = characterSelect.value && !state.unassigned ? Number(characterSelect.value) : null;
    selectionChanged();
  });
  refreshButton.addEventListener("click", () => initialLoad());

  async function initialLoad() {
    try {
      const [health, cats, projects, chars] = await Promise.all([
        api.get("/health").catch(() => null),
        api.get("/feedback/categories").catch(() => null),
        api.getAll("/projects"),
        api.getAll("/characters"),
      ]);
      if (health) {
        healthText.textContent = `v${health.version} · ${health.host} · ${health.database}`;
        healthText.title = healthText.textContent;
      }
      if (cats && cats.categories) state.categories = cats.categories;
      state.projects = projects.items || [];
      state.characters = chars.items || [];
      fixSelection();
    } catch (e) {
      showError(e, "LoRA Studio: cannot load projects");
    }
    selectionChanged();
  }

  // server events (job progress): first to the job follower, then to the tabs (which pick up jobs
  // started elsewhere); followed jobs are polled while their events do not come
  const onJobEvent = (job) => {
    if (state.destroyed || !job || typeof job !== "object") return;
    jobs.push(job);
    for (const section of Object.values(sections)) {
      if (!section.onJob) continue;
      try {
        section.onJob(job);
      } catch (e) {
        console.error("[LoRA Studio] job event handler failed", e);
      }
    }
  };
  try {
    const off = host.onEvent && host.onEvent(JOB_EVENT, onJobEvent);
    if (typeof off === "function") cleanups.push(off);
  } catch (e) {
    console.warn("[LoRA Studio] events unavailable", e);
  }

  const poll = setInterval(() => {
    if (state.destroyed || !(root.isConnected || workspace.isOpen())) return;
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
      for (const section of Object.values(sections)) if (section.destroy) cleanups.push(() => section.destroy());
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
