// LoRA Studio panel, Approvals tab: the pending queue of the selected character.

import { h, humanize } from "./panel_dom.js";
import { PAGE_SIZE } from "./panel_api.js";

export function approvalsSection(ctx) {
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
