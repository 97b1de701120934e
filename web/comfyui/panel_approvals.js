// LoRA Studio panel, Approvals tab: the review queue of the selected character, keyboard-first. A status
// filter (pending by default) and an order, a checkbox per image with "select all on page", Shift-click
// and box select, batch approve / reject (one transaction, POST /images/decisions), and Undo of the
// character's last decision batch. One image is the *current* one: the keys act on it (or on the
// selection when there is one) — A approve, R reject, 1–6 toggle a rejection category, N note, E caption,
// M move to another character, ←/→ (↑/↓ by row) move on, Space select, U undo (panel_review_keys.js).
// Deciding moves on at once; requests go out one after the other, so the database follows the keys in
// order, and the next few full images are fetched ahead.
//
// Two layouts, one state: in the sidebar a grid of cards, each with its own controls
// (panel_review_card.js); in the wide workspace (panel_workspace.js; setWide) a grid of thumbnails, the
// current image large, and its controls beside it with the SSOT prompt, the effective negative prompt
// and the top rejection reasons (panel_ssot.js, panel_reasons.js; reloaded after rejections, which teach
// new terms). The "Classify project" and "Auto-review" jobs live in panel_classify.js (the grid reloads
// when one of them ends). With "(unassigned)" chosen in the character picker, the grid shows the
// project's unassigned pool instead (move the images to a character, or reject them; approving needs one).

import { h } from "./panel_dom.js";
import { PAGE_SIZE } from "./panel_api.js";
import { reviewCard, rejectFields, imageURLs } from "./panel_review_card.js";
import { autoJobControls } from "./panel_classify.js";
import { ssotEditor } from "./panel_ssot.js";
import { reasonsBox } from "./panel_reasons.js";
import { reviewAction, keysHint, rangeIds, boxSelect } from "./panel_review_keys.js";

const COUNTED = ["pending", "approved"]; // the statuses the character list counts
const PRELOAD = 3; // full images fetched ahead of the current one
const LOAD_AHEAD = 6; // load the next page when the current image is this close to the end

function statusDelta(before, after) {
  const delta = {};
  if (before === after) return delta;
  if (COUNTED.includes(before)) delta[before] = (delta[before] || 0) - 1;
  if (COUNTED.includes(after)) delta[after] = (delta[after] || 0) + 1;
  return delta;
}

function addDelta(into, delta) {
  for (const [k, v] of Object.entries(delta)) into[k] = (into[k] || 0) + v;
  return into;
}

export function approvalsSection(ctx) {
  const { api } = ctx;
  const pendingCount = h("span", { testid: "pending-count" }, "0");
  const approvedCount = h("span", { testid: "approved-count" }, "0");
  const counts = h("span", {}, pendingCount, " pending · ", approvedCount, " approved");
  const poolLabel = h("span", { testid: "pool-label", hidden: true });
  const statusFilter = h("select", { testid: "status-filter", "aria-label": "Status", title: "Status" },
    ...[["pending", "Pending"], ["approved", "Approved"], ["rejected", "Rejected"], ["all", "All"]]
      .map(([v, label]) => h("option", { value: v }, label)));
  const orderFilter = h("select", { testid: "order-filter", "aria-label": "Order", title: "Order" },
    h("option", { value: "oldest" }, "Oldest first"), h("option", { value: "newest" }, "Newest first"));
  const grid = h("div", { class: "ls-grid ls-review-grid", testid: "pending-grid", tabindex: "0",
    "aria-label": "Review queue: A approve, R reject, 1–6 reasons, arrows move" });
  const empty = h("div", { class: "ls-empty", testid: "pending-empty", hidden: true });
  const more = h("button", { class: "ls-btn", testid: "load-more-pending", hidden: true, onclick: () => load(false) },
    "Load more");
  const moreRow = h("div", { class: "ls-row", style: "justify-content: center" }, more);
  const refresh = h("button", { class: "ls-btn", testid: "refresh-pending", onclick: () => load(true) }, "Refresh");
  const position = h("span", { class: "ls-muted", testid: "review-position" });

  // batch bar
  const selectAll = h("input", { type: "checkbox", testid: "select-all", "aria-label": "Select all on this page" });
  const selectedCount = h("span", { class: "ls-muted", testid: "selected-count" }, "0 selected");
  const batchApprove = h("button", { class: "ls-btn ls-ok", testid: "batch-approve", disabled: true,
    title: "Approve the selected images (A)" }, "Approve selected");
  const batchReject = h("button", { class: "ls-btn ls-danger", testid: "batch-reject", disabled: true,
    title: "Reject the selected images (R)" }, "Reject selected…");
  const batchReset = h("button", { class: "ls-btn", testid: "batch-reset", disabled: true, title: "Back to pending" },
    "Reset selected");
  const undo = h("button", { class: "ls-btn", testid: "undo", title: "Undo this character's last decision (batch) (U)" },
    "↶ Undo");
  let batchFields = null;
  const batchConfirm = h("button", { class: "ls-btn ls-danger", testid: "batch-reject-confirm" }, "Reject selected");
  const batchCancel = h("button", { class: "ls-btn", testid: "batch-reject-cancel" }, "Cancel");
  const batchChecks = h("div", { class: "ls-row" });
  const batchNoteRow = h("div", { class: "ls-row" });
  const batchForm = h("div", { class: "ls-box ls-reject", testid: "batch-reject-form", hidden: true },
    h("h3", {}, "Reject the selected images (once for all of them)"), batchChecks, batchNoteRow,
    h("div", { class: "ls-row" }, batchConfirm, batchCancel));
  function buildBatchFields() {
    batchFields = rejectFields(ctx.state.categories, (key) => `batch-cat-${key}`, "batch-note", "batch-reject-error");
    batchChecks.replaceChildren(...batchFields.checks);
    batchFields.note.style.flex = "1 1 200px";
    batchNoteRow.replaceChildren(batchFields.note, batchFields.error);
  }
  buildBatchFields();
  let fieldsFor = ctx.state.categories;

  const ssot = ssotEditor(ctx);
  const reasons = reasonsBox(ctx);
  const reloadPrompts = () => {
    ssot.reloadPrompt();
    reasons.reload();
  };

  // classify / auto-review jobs: images may have been moved or decided when one ends
  const autoJobs = autoJobControls(ctx, {
    onFinished() { // also after a failure or a cancel: the images done before it stay done
      ctx.markStale("characters");
      ctx.reloadCharacters().catch(() => {});
      if (ctx.isActive("approvals")) {
        load(true);
        reloadPrompts();
      } else ctx.markStale("approvals");
    },
  });

  const toolbar = h("div", { class: "ls-row ls-review-toolbar" },
    h("span", { class: "ls-grow" }, counts, poolLabel),
    h("span", { class: "ls-row" }, ...autoJobs.buttons, statusFilter, orderFilter, refresh));
  const batchBar = h("div", { class: "ls-row ls-batchbar", testid: "batch-bar" },
    h("label", { class: "ls-check" }, selectAll, "Select all on page"), selectedCount,
    batchApprove, batchReject, batchReset, h("span", { style: "flex: 1" }), undo);
  const hint = keysHint();

  // the workspace's panes (filled by layout())
  const previewSlot = h("div", { class: "ls-preview-slot" }); // the current image, large
  const previewPane = h("div", { class: "ls-review-center", testid: "review-preview" });
  const detailPane = h("div", { class: "ls-detail-pane" });
  const left = h("div", { class: "ls-review-left" });
  const right = h("div", { class: "ls-review-right" });
  const wideBox = h("div", { class: "ls-review-wide" }, left, previewPane, right);

  const el = h("section", { class: "ls-section ls-review" });

  const cards = new Map(); // id -> {card, image}, in grid order
  const selected = new Set();
  const busy = new Set(); // ids whose decision is on its way
  let cursor = null;
  let seq = 0;
  let loading = false;
  let moveKey = "";
  let wide = false;
  let current = null; // the image the keys act on
  let anchor = null; // where a Shift range starts
  let detail = null; // the workspace's card of the current image
  let queue = Promise.resolve(); // decisions, one after the other
  const preloaded = new Map(); // url -> Image (kept so the fetch is not dropped), the last few

  const matches = (status) => statusFilter.value === "all" || statusFilter.value === status;
  const pool = () => ctx.unassignedProject(); // the project whose unassigned pool is shown, or null
  const order = () => Array.from(cards.keys());

  function layout() {
    grid.classList.toggle("ls-tiles", wide);
    hint.open = wide;
    if (wide) {
      left.replaceChildren(toolbar, autoJobs.el, batchBar, batchForm, grid, empty, moreRow);
      previewPane.replaceChildren(previewSlot, position, reasons.el);
      right.replaceChildren(detailPane, hint, ssot.el);
      el.replaceChildren(wideBox);
    } else {
      el.replaceChildren(ssot.el, reasons.el, toolbar, autoJobs.el, batchBar, batchForm, hint, grid, empty, moreRow);
    }
  }
  layout();

  function countsChanged() {
    autoJobs.update();
    const c = ctx.character();
    const p = pool();
    counts.hidden = !!p;
    poolLabel.hidden = !p;
    poolLabel.textContent = p ? `Unassigned images of ${p.name}` : "";
    pendingCount.textContent = String(c && c.counts ? c.counts.pending || 0 : 0);
    approvedCount.textContent = String(c && c.counts ? c.counts.approved || 0 : 0);
    const key = ctx.state.characters.map((x) => `${x.id}:${x.name}:${x.project_id}`).join("|");
    if (key !== moveKey) {
      moveKey = key;
      for (const { card } of cards.values()) card.refreshMoveOptions();
      if (detail) detail.refreshMoveOptions();
    }
  }

  function updateEmpty() {
    const c = ctx.character();
    const none = grid.children.length === 0;
    empty.hidden = !none || loading;
    const status = statusFilter.value;
    if (pool()) empty.textContent = `No ${status === "all" ? "" : `${status} `}unassigned images in this project.`;
    else if (!c) empty.textContent = "Choose or create a character (Characters tab).";
    else if (status === "pending") empty.textContent = "No pending images. Upload some in the Ingest tab.";
    else empty.textContent = status === "all" ? "No images yet." : `No ${status} images.`;
    more.hidden = !cursor;
    undo.disabled = !c;
  }

  function updateBatchBar() {
    for (const id of Array.from(selected)) if (!cards.has(id)) selected.delete(id);
    const n = selected.size;
    selectedCount.textContent = `${n} selected`;
    batchApprove.disabled = n === 0 || !!pool(); // an approved image needs a character
    batchReject.disabled = n === 0;
    batchReset.disabled = n === 0;
    for (const b of [batchApprove, batchReject, batchReset]) b.hidden = n === 0; // room for the queue until then
    selectAll.checked = n > 0 && n === cards.size;
    selectAll.indeterminate = n > 0 && n < cards.size;
    if (n === 0) batchForm.hidden = true;
    for (const [id, { card }] of cards) {
      card.el.classList.toggle("ls-selected", selected.has(id));
      card.setSelected(selected.has(id));
    }
  }

  function setSelection(ids, additive) {
    if (!additive) selected.clear();
    for (const id of ids) if (cards.has(id)) selected.add(id);
    updateBatchBar();
  }

  // --- the current image ----------------------------------------------------------------------

  function preloadAfter(id) {
    const ids = order();
    const i = ids.indexOf(id);
    for (const next of ids.slice(i + 1, i + 1 + PRELOAD)) {
      const url = imageURLs(api, next).file;
      if (preloaded.has(url)) continue;
      const img = new Image();
      img.decoding = "async";
      img.src = url;
      preloaded.set(url, img);
      while (preloaded.size > 4 * PRELOAD) preloaded.delete(preloaded.keys().next().value);
    }
    if (cursor && !loading && ids.length - i <= LOAD_AHEAD) load(false);
  }

  function renderDetail() {
    if (!wide) {
      detail = null;
      return;
    }
    const entry = current != null ? cards.get(current) : null;
    if (!entry) {
      detail = null;
      detailPane.replaceChildren(h("div", { class: "ls-empty" }, loading ? "Loading…" : "Nothing to review here."));
      previewSlot.replaceChildren();
      return;
    }
    if (detail && detail.id === current && detail.image === entry.image) return;
    detail = reviewCard(ctx, entry.image, hooks, "detail");
    detailPane.replaceChildren(detail.el);
    previewSlot.replaceChildren(detail.preview);
  }

  function setCurrent(id, { scroll = true } = {}) {
    const prev = current != null ? cards.get(current) : null;
    if (prev) {
      prev.card.el.classList.remove("ls-current");
      prev.card.el.removeAttribute("aria-current");
    }
    current = id != null && cards.has(id) ? id : null;
    const entry = current != null ? cards.get(current) : null;
    if (entry) {
      entry.card.el.classList.add("ls-current");
      entry.card.el.setAttribute("aria-current", "true");
      if (scroll) entry.card.el.scrollIntoView({ block: "nearest" });
      preloadAfter(current);
    }
    grid.dataset.current = current == null ? "" : String(current);
    const ids = order();
    position.textContent = current == null ? "" : `${ids.indexOf(current) + 1} of ${ids.length}${cursor ? "+" : ""}`;
    renderDetail();
  }

  /** The id `step` away from the current one (a number, or up/down by a grid row, home/end). */
  function neighbour(step) {
    const ids = order();
    if (!ids.length) return null;
    const i = current == null ? -1 : ids.indexOf(current);
    if (step === "home") return ids[0];
    if (step === "end") return ids[ids.length - 1];
    if (step === "up" || step === "down") {
      const cells = Array.from(grid.children);
      const top = cells.length ? cells[0].offsetTop : 0;
      const cols = Math.max(1, cells.filter((c) => c.offsetTop === top).length);
      step = step === "up" ? -cols : cols;
    }
    if (i < 0) return ids[0];
    return ids[Math.max(0, Math.min(ids.length - 1, i + step))];
  }

  /** After a decision by key: the next image not already on its way. */
  function advance() {
    const ids = order();
    const i = ids.indexOf(current);
    const next = ids.slice(i + 1).find((id) => !busy.has(id));
    if (next != null) setCurrent(next);
  }

  // --- cards --------------------------------------------------------------------------------

  function moveOptions(image) {
    const others = ctx.state.characters.filter((c) => c.id !== image.character_id);
    const toPool = image.character_id == null ? [] : [h("option", { value: "unassigned" }, "(unassigned pool)")];
    const byProject = new Map();
    for (const c of others) {
      if (!byProject.has(c.project_id)) byProject.set(c.project_id, []);
      byProject.get(c.project_id).push(c);
    }
    const groups = [];
    for (const [pid, chars] of byProject) {
      const project = ctx.state.projects.find((p) => p.id === pid);
      groups.push(h("optgroup", { label: project ? project.name : `project ${pid}` },
        ...chars.map((c) => h("option", { value: String(c.id) }, c.name))));
    }
    return [...toPool, ...groups];
  }

  const hooks = {
    isSelected: (id) => selected.has(id),
    onSelect(id, on) {
      if (on) selected.add(id);
      else selected.delete(id);
      anchor = id;
      updateBatchBar();
    },
    onDecided: (images) => applyImages(images),
    onFailed() {},
    onCaption(image) {
      const entry = cards.get(Number(image.id));
      if (entry) entry.image = image;
      if (detail && detail.id === Number(image.id)) detail.image = image;
    },
    onMoved(image, before) {
      const id = Number(image.id);
      if (current === id) advance();
      removeCard(id);
      ctx.adjustCounts(before.character_id, statusDelta(before.status, null));
      ctx.adjustCounts(image.character_id, statusDelta(null, image.status));
      const target = ctx.state.characters.find((c) => c.id === image.character_id);
      const where = image.character_id == null ? "unassigned pool"
        : target ? target.name : `character ${image.character_id}`;
      ctx.toast("success", "Image moved", `#${image.id} → ${where}`);
      afterRemoval();
      focusGrid();
    },
    moveOptions,
    run(fn) {
      const next = queue.then(fn);
      queue = next.catch(() => {});
      return next;
    },
    isBusy: (id) => busy.has(id),
    setBusy(id, on) {
      if (on) busy.add(id);
      else busy.delete(id);
      const entry = cards.get(id);
      if (entry) entry.card.el.classList.toggle("ls-busy", on);
    },
    backToGrid: () => focusGrid(),
  };

  function buildCard(image) {
    const card = reviewCard(ctx, image, hooks, wide ? "tile" : "card");
    card.el.classList.toggle("ls-selected", selected.has(Number(image.id)));
    card.el.classList.toggle("ls-busy", busy.has(Number(image.id)));
    return card;
  }

  function addCard(image) {
    const id = Number(image.id);
    const card = buildCard(image);
    cards.set(id, { card, image });
    return card.el;
  }

  function rebuildCards() {
    const entries = Array.from(cards.values());
    const els = entries.map(({ image }) => addCard(image));
    grid.replaceChildren(...els);
    detail = null;
    setCurrent(current, { scroll: false });
  }

  function removeCard(id) {
    const entry = cards.get(id);
    if (current === id) {
      const ids = order();
      const i = ids.indexOf(id);
      const replacement = ids[i + 1] ?? ids[i - 1] ?? null;
      current = null;
      if (entry) entry.card.el.remove();
      cards.delete(id);
      selected.delete(id);
      setCurrent(replacement);
    } else {
      if (entry) entry.card.el.remove();
      cards.delete(id);
      selected.delete(id);
    }
    updateBatchBar();
  }

  function afterRemoval() {
    updateEmpty();
    if (cursor && !loading && grid.children.length <= LOAD_AHEAD) load(false);
    if (current == null && cards.size) setCurrent(order()[0]);
    position.textContent = current == null ? "" : `${order().indexOf(current) + 1} of ${cards.size}${cursor ? "+" : ""}`;
  }

  /** Image records after a decision: update or drop their cards and the counts. */
  function applyImages(images) {
    const c = ctx.character();
    const delta = {};
    let feedbackChanged = false; // a rejection (or its reversal) changes the learned negative terms
    for (const image of images || []) {
      const id = Number(image.id);
      const entry = cards.get(id);
      if (!entry) continue;
      addDelta(delta, statusDelta(entry.image.status, image.status));
      if ((entry.image.status === "rejected") !== (image.status === "rejected")) feedbackChanged = true;
      selected.delete(id);
      if (matches(image.status)) {
        const old = entry.card.el;
        old.replaceWith(addCard(image));
        if (current === id) setCurrent(id, { scroll: false });
      } else {
        removeCard(id);
      }
    }
    if (c && Object.keys(delta).length) ctx.adjustCounts(c.id, delta);
    if (feedbackChanged) reloadPrompts();
    updateBatchBar();
    afterRemoval();
  }

  async function load(reset) {
    const c = ctx.character();
    const token = ++seq;
    if (reset) {
      cursor = null;
      grid.replaceChildren();
      cards.clear();
      selected.clear();
      current = null;
      anchor = null;
      detail = null;
      batchForm.hidden = true;
      if (fieldsFor !== ctx.state.categories) {
        fieldsFor = ctx.state.categories;
        buildBatchFields();
      }
    }
    countsChanged();
    updateBatchBar();
    const p = pool();
    if (!c && !p) {
      updateEmpty();
      setCurrent(null);
      return;
    }
    const params = new URLSearchParams({ status: statusFilter.value, order: orderFilter.value, limit: String(PAGE_SIZE) });
    if (p) params.set("unassigned", "true");
    if (cursor) params.set("cursor", String(cursor));
    loading = true;
    more.disabled = true;
    try {
      const page = await api.get(p ? `/projects/${p.id}/images?${params}` : `/characters/${c.id}/images?${params}`);
      if (token !== seq) return;
      let added = 0;
      for (const image of page.items || []) {
        if (cards.has(Number(image.id))) continue;
        grid.append(addCard(image));
        added += 1;
      }
      // a page with nothing new ends the paging (loading ahead must not ask for the same page forever)
      cursor = added || reset ? page.next_cursor || null : null;
    } catch (e) {
      if (token === seq) {
        ctx.showError(e, "Cannot load images");
        empty.textContent = `Cannot load images: ${e.message}`;
      }
    } finally {
      if (token === seq) {
        loading = false;
        more.disabled = false;
        updateEmpty();
        updateBatchBar();
        if (current == null || !cards.has(current)) setCurrent(order()[0] ?? null, { scroll: false });
        else setCurrent(current, { scroll: false });
      }
    }
  }

  function focusGrid() {
    if (!el.isConnected || el.closest("[hidden]")) return;
    grid.focus({ preventScroll: true });
  }

  // --- mouse: click (current), Shift-click (range), Ctrl/⌘-click (toggle), box select, double-click --------

  boxSelect(grid, {
    onBox(ids, additive) {
      if (!additive) selected.clear();
      for (const id of ids) selected.add(id);
      updateBatchBar();
    },
    onClick(ev) {
      const cardEl = ev.target.closest("[data-image-id]");
      if (!cardEl || !grid.contains(cardEl)) return;
      const id = Number(cardEl.dataset.imageId);
      const onCheckbox = ev.target.matches('input[type="checkbox"]');
      if (ev.shiftKey) {
        ev.preventDefault(); // the checkbox follows the selection, not the click
        setSelection(rangeIds(order(), anchor ?? current ?? id, id), true);
        setCurrent(id, { scroll: false });
        return;
      }
      if (ev.ctrlKey || ev.metaKey) {
        ev.preventDefault();
        hooks.onSelect(id, !selected.has(id));
        setCurrent(id, { scroll: false });
        return;
      }
      if (onCheckbox || ev.target.closest("input, textarea, select, button, a, label")) {
        if (!onCheckbox) return;
      }
      anchor = id;
      setCurrent(id, { scroll: false });
    },
  });
  grid.addEventListener("dblclick", (ev) => {
    const cardEl = ev.target.closest("[data-image-id]");
    if (!cardEl || wide || ev.target.closest("input, textarea, select, button")) return;
    setCurrent(Number(cardEl.dataset.imageId), { scroll: false });
    ctx.openWorkspace();
  });

  selectAll.addEventListener("change", () => {
    setSelection(selectAll.checked ? order() : [], false);
  });

  const batchButtons = [batchApprove, batchReject, batchReset, batchConfirm, batchCancel, undo];
  const setBatchBusy = (on) => {
    for (const b of batchButtons) b.disabled = on;
    if (!on) {
      updateBatchBar();
      updateEmpty();
    }
  };

  async function decideSelected(decision, reason) {
    const ids = Array.from(selected);
    if (!ids.length) return;
    if (decision === "approve" && pool()) {
      ctx.toast("warn", "Approve", "An image needs a character to be approved: move it to one first (M).");
      return;
    }
    setBatchBusy(true);
    ids.forEach((id) => hooks.setBusy(id, true));
    try {
      const res = await hooks.run(() => api.post("/images/decisions", { image_ids: ids, decision, ...(reason || {}) }));
      const changed = (res.changed || []).length;
      const unchanged = (res.unchanged || []).length;
      const verb = { approve: "approved", reject: "rejected", reset: "reset to pending" }[decision];
      ctx.toast("success", `${changed} ${verb}`, unchanged ? `${unchanged} already were` : "");
      if (decision === "reject") {
        batchForm.hidden = true;
        batchFields.clear();
      }
      ids.forEach((id) => hooks.setBusy(id, false));
      applyImages(res.images || []);
      if (decision === "reject") ctx.markStale("characters");
    } catch (e) {
      ids.forEach((id) => hooks.setBusy(id, false));
      if (decision === "reject") batchFields.fail(e.message);
      ctx.showError(e, "Batch decision failed");
    } finally {
      setBatchBusy(false);
    }
  }

  batchApprove.addEventListener("click", () => decideSelected("approve"));
  batchReset.addEventListener("click", () => decideSelected("reset"));
  batchReject.addEventListener("click", () => {
    batchForm.hidden = !batchForm.hidden;
    if (!batchForm.hidden) (batchForm.querySelector("input") || batchFields.note).focus();
  });
  batchCancel.addEventListener("click", () => {
    batchForm.hidden = true;
    batchFields.error.hidden = true;
  });
  const submitBatchReject = () => {
    const reason = batchFields.read();
    if (reason) decideSelected("reject", reason);
    return !!reason;
  };
  batchConfirm.addEventListener("click", submitBatchReject);
  batchForm.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && ev.target === batchFields.note) {
      ev.preventDefault();
      if (submitBatchReject()) focusGrid();
    }
  });

  async function doUndo() {
    const c = ctx.character();
    if (!c) return;
    setBatchBusy(true);
    try {
      const res = await hooks.run(() => api.post(`/characters/${c.id}/undo`));
      const reverted = res.reverted || [];
      ctx.toast("success", "Undone", `${reverted.length} decision(s) reverted`);
      ctx.markStale("characters");
      await ctx.reloadCharacters().catch(() => {});
      reloadPrompts();
      await load(true);
      const back = reverted.map(Number).find((id) => cards.has(id));
      if (back != null) setCurrent(back);
    } catch (e) {
      if (e.status === 409) ctx.toast("info", "Nothing to undo", e.message);
      else ctx.showError(e, "Undo failed");
    } finally {
      setBatchBusy(false);
      focusGrid();
    }
  }
  undo.addEventListener("click", doUndo);

  statusFilter.addEventListener("change", () => load(true));
  orderFilter.addEventListener("change", () => load(true));

  // --- keys -------------------------------------------------------------------------------------

  /** The card the keys act on: the workspace's detail, or the current card in the sidebar. */
  const target = () => (wide ? detail : current != null && cards.get(current) ? cards.get(current).card : null);

  /** A keydown inside the panel while this tab shows; true when it was a review key (the panel then stops it). */
  function onKey(ev, { typing }) {
    if (typing) {
      if (ev.key === "Escape") { // out of a field: the keys are shortcuts again
        focusGrid();
        return true;
      }
      return false;
    }
    const action = reviewAction(ev);
    if (!action) return false;
    const card = target();
    const batch = selected.size > 0;
    switch (action.name) {
      case "move": {
        const next = neighbour(action.step);
        if (next == null) return true;
        if (action.extend) {
          if (anchor == null) anchor = current ?? next;
          setSelection(rangeIds(order(), anchor, next), false);
        }
        setCurrent(next);
        focusGrid();
        return true;
      }
      case "approve":
        if (batch) decideSelected("approve");
        else if (card && card.approve()) advance();
        return true;
      case "reject":
        if (batch) {
          if (batchForm.hidden && !batchFields.filled()) batchForm.hidden = false;
          else submitBatchReject();
        } else if (card && card.reject()) advance();
        return true;
      case "category":
        if (batch) {
          batchForm.hidden = false;
          batchFields.toggle(action.index);
        } else if (card) card.toggleCategory(action.index);
        return true;
      case "note":
        if (batch) {
          batchForm.hidden = false;
          batchFields.note.focus();
        } else if (card) card.focusNote();
        return true;
      case "caption":
        if (card) card.focusCaption();
        return true;
      case "reassign":
        if (card) card.focusMove();
        return true;
      case "undo":
        if (ctx.character()) doUndo();
        return true;
      case "toggleSelect":
        if (ev.target.matches("button, input[type=checkbox], summary, a")) return false; // Space presses it
        if (current != null) hooks.onSelect(current, !selected.has(current));
        return true;
      case "selectAll":
        setSelection(order(), false);
        return true;
      case "escape":
        if (wide || !batch) return false; // the workspace closes on Esc
        setSelection([], false);
        return true;
      default:
        return false;
    }
  }

  return {
    el,
    refresh() {
      ssot.refresh();
      reasons.reload();
      autoJobs.pickUpRunning();
      return load(true);
    },
    countsChanged,
    onKey,
    /** The workspace opened (true) or closed: the other layout, the same queue. */
    setWide(on) {
      if (wide === on) return;
      wide = on;
      layout();
      rebuildCards();
    },
    focus: focusGrid,
    destroy: () => autoJobs.destroy(),
  };
}
