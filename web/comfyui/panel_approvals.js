// LoRA Studio panel, Approvals tab: the review queue of the selected character. A status filter
// (pending by default) and an order, a checkbox per card with "select all on page", batch approve /
// reject (one transaction, POST /images/decisions), and Undo of the character's last decision batch.
// The cards themselves live in panel_review_card.js; the "Classify project" and "Auto-review" jobs
// in panel_classify.js (the grid reloads when one of them ends). On top, the character's SSOT
// design / negative prompt, editable while reviewing, with the effective negative prompt
// (panel_ssot.js; it is reloaded after rejections, which teach it new terms). With "(unassigned)"
// chosen in the character picker, the grid shows the project's unassigned pool instead (images
// without a character: move them to one, or reject them; approving needs a character).

import { h } from "./panel_dom.js";
import { PAGE_SIZE } from "./panel_api.js";
import { reviewCard, rejectFields } from "./panel_review_card.js";
import { autoJobControls } from "./panel_classify.js";
import { ssotEditor } from "./panel_ssot.js";

const COUNTED = ["pending", "approved"]; // the statuses the character list counts

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
  const grid = h("div", { class: "ls-grid ls-review-grid", testid: "pending-grid" });
  const empty = h("div", { class: "ls-empty", testid: "pending-empty", hidden: true });
  const more = h("button", { class: "ls-btn", testid: "load-more-pending", hidden: true, onclick: () => load(false) },
    "Load more");
  const refresh = h("button", { class: "ls-btn", testid: "refresh-pending", onclick: () => load(true) }, "Refresh");

  // batch bar
  const selectAll = h("input", { type: "checkbox", testid: "select-all", "aria-label": "Select all on this page" });
  const selectedCount = h("span", { class: "ls-muted", testid: "selected-count" }, "0 selected");
  const batchApprove = h("button", { class: "ls-btn ls-ok", testid: "batch-approve", disabled: true }, "Approve selected");
  const batchReject = h("button", { class: "ls-btn ls-danger", testid: "batch-reject", disabled: true }, "Reject selected…");
  const batchReset = h("button", { class: "ls-btn", testid: "batch-reset", disabled: true, title: "Back to pending" },
    "Reset selected");
  const undo = h("button", { class: "ls-btn", testid: "undo", title: "Undo this character's last decision (batch)" },
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

  // classify / auto-review jobs: images may have been moved or decided when one ends
  const autoJobs = autoJobControls(ctx, {
    onFinished() { // also after a failure or a cancel: the images done before it stay done
      ctx.markStale("characters");
      ctx.reloadCharacters().catch(() => {});
      if (ctx.isActive("approvals")) {
        load(true);
        ssot.reloadPrompt();
      } else ctx.markStale("approvals");
    },
  });

  const el = h("section", { class: "ls-section" },
    ssot.el,
    h("div", { class: "ls-row", style: "justify-content: space-between" },
      h("span", {}, counts, poolLabel),
      h("span", { class: "ls-row" }, ...autoJobs.buttons, statusFilter, orderFilter, refresh)),
    autoJobs.el,
    h("div", { class: "ls-row ls-batchbar", testid: "batch-bar" },
      h("label", { class: "ls-check" }, selectAll, "Select all on page"), selectedCount,
      batchApprove, batchReject, batchReset, h("span", { style: "flex: 1" }), undo),
    batchForm,
    grid, empty, h("div", { class: "ls-row", style: "justify-content: center" }, more));

  const cards = new Map(); // id -> {card, image}
  const selected = new Set();
  let cursor = null;
  let seq = 0;
  let loading = false;
  let moveKey = "";

  const matches = (status) => statusFilter.value === "all" || statusFilter.value === status;
  const pool = () => ctx.unassignedProject(); // the project whose unassigned pool is shown, or null

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
    selectAll.checked = n > 0 && n === cards.size;
    selectAll.indeterminate = n > 0 && n < cards.size;
    if (n === 0) batchForm.hidden = true;
  }

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
      updateBatchBar();
    },
    onDecided: (images) => applyImages(images),
    onCaption(image) {
      const entry = cards.get(Number(image.id));
      if (entry) entry.image = image;
    },
    onMoved(image, before) {
      removeCard(Number(image.id));
      ctx.adjustCounts(before.character_id, statusDelta(before.status, null));
      ctx.adjustCounts(image.character_id, statusDelta(null, image.status));
      const target = ctx.state.characters.find((c) => c.id === image.character_id);
      const where = image.character_id == null ? "unassigned pool"
        : target ? target.name : `character ${image.character_id}`;
      ctx.toast("success", "Image moved", `#${image.id} → ${where}`);
      afterRemoval();
    },
    moveOptions,
  };

  function addCard(image) {
    const id = Number(image.id);
    const card = reviewCard(ctx, image, hooks);
    cards.set(id, { card, image });
    return card.el;
  }

  function removeCard(id) {
    const entry = cards.get(id);
    if (entry) entry.card.el.remove();
    cards.delete(id);
    selected.delete(id);
    updateBatchBar();
  }

  function afterRemoval() {
    updateEmpty();
    if (grid.children.length === 0 && cursor) load(false);
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
      } else {
        removeCard(id);
      }
    }
    if (c && Object.keys(delta).length) ctx.adjustCounts(c.id, delta);
    if (feedbackChanged) ssot.reloadPrompt();
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
      for (const image of page.items || []) {
        if (cards.has(Number(image.id))) continue;
        grid.append(addCard(image));
      }
      cursor = page.next_cursor || null;
    } catch (e) {
      if (token === seq) ctx.showError(e, "Cannot load images");
    } finally {
      if (token === seq) {
        loading = false;
        more.disabled = false;
        updateEmpty();
        updateBatchBar();
      }
    }
  }

  selectAll.addEventListener("change", () => {
    const on = selectAll.checked;
    for (const [id, { card }] of cards) {
      card.setSelected(on);
      if (on) selected.add(id);
      else selected.delete(id);
    }
    updateBatchBar();
  });

  const batchButtons = [batchApprove, batchReject, batchReset, batchConfirm, batchCancel, undo];
  const setBatchBusy = (busy) => {
    for (const b of batchButtons) b.disabled = busy;
    if (!busy) {
      updateBatchBar();
      updateEmpty();
    }
  };

  async function decideSelected(decision, reason) {
    const ids = Array.from(selected);
    if (!ids.length) return;
    setBatchBusy(true);
    try {
      const res = await api.post("/images/decisions", { image_ids: ids, decision, ...(reason || {}) });
      const changed = (res.changed || []).length;
      const unchanged = (res.unchanged || []).length;
      const verb = { approve: "approved", reject: "rejected", reset: "reset to pending" }[decision];
      ctx.toast("success", `${changed} ${verb}`, unchanged ? `${unchanged} already were` : "");
      if (decision === "reject") {
        batchForm.hidden = true;
        batchFields.clear();
      }
      applyImages(res.images || []);
      if (decision === "reject") ctx.markStale("characters");
    } catch (e) {
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
  };
  batchConfirm.addEventListener("click", submitBatchReject);
  batchForm.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && ev.target === batchFields.note) submitBatchReject();
  });

  undo.addEventListener("click", async () => {
    const c = ctx.character();
    if (!c) return;
    setBatchBusy(true);
    try {
      const res = await api.post(`/characters/${c.id}/undo`);
      const n = (res.reverted || []).length;
      ctx.toast("success", "Undone", `${n} decision(s) reverted`);
      ctx.markStale("characters");
      await ctx.reloadCharacters().catch(() => {});
      ssot.reloadPrompt();
      await load(true);
    } catch (e) {
      if (e.status === 409) ctx.toast("info", "Nothing to undo", e.message);
      else ctx.showError(e, "Undo failed");
    } finally {
      setBatchBusy(false);
    }
  });

  statusFilter.addEventListener("change", () => load(true));
  orderFilter.addEventListener("change", () => load(true));

  return {
    el,
    refresh() {
      ssot.refresh();
      autoJobs.pickUpRunning();
      return load(true);
    },
    countsChanged,
    destroy: () => autoJobs.destroy(),
  };
}
