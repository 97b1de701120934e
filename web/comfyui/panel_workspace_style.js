// LoRA Studio panel: the stylesheet of the two sizes — the compact sidebar (one row of view icons, words
// that wrap instead of being cut), the wide workspace (the full-window overlay and the review's three
// panes) and the keyboard review (current image, selection, key hints). Injected after panel_style.js by
// the first mountPanel call (never at import), so its rules win where both speak. Colours come only from
// ComfyUI's theme variables (through the --ls-* names panel_style.js defines on .ls-root), so the light
// and the dark palettes both apply.

export const WORKSPACE_STYLE_ID = "lora-studio-workspace-style";

const CSS = `
/* --- compact sidebar -------------------------------------------------------------------------- */
.ls-root { overflow-wrap: break-word; } /* a long word (a path, an env name) breaks rather than spill */
.ls-head { container-type: inline-size; }
.ls-title { align-items: center; min-width: 0; }
.ls-title strong { white-space: nowrap; }
.ls-health { flex: 1 1 auto; min-width: 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.ls-icon-btn { display: inline-flex; align-items: center; gap: 4px; padding: 3px 8px; flex: none; }
.ls-icon { flex: none; display: block; }
.ls-tabs { flex-wrap: nowrap; gap: 0; }
.ls-tab { flex: 1 1 auto; min-width: 0; display: flex; flex-direction: column; align-items: center; gap: 2px;
  padding: 5px 3px 4px; font-size: 11px; line-height: 1.2; }
.ls-tab-label { max-width: 100%; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
@container (max-width: 310px) {
  .ls-tab-label, .ls-health, .ls-icon-btn > span { display: none; }
  .ls-tab { padding: 7px 1px; }
}
.ls-root:not(.ls-wide) .ls-wide-only, .ls-wide .ls-compact-only { display: none !important; }
.ls-grow { flex: 1 1 auto; min-width: 0; }
.ls-wrap { overflow-wrap: anywhere; }
.ls-job-head { flex-wrap: wrap; }
.ls-root input[type=file] { max-width: 100%; min-width: 0; }
.ls-root .ls-row > label, .ls-root .ls-field { min-width: 0; max-width: 100%; }
.ls-job-head > *, .ls-autojob > * { min-width: 0; overflow-wrap: anywhere; }
.ls-root .ls-row > select { max-width: 100%; }
.ls-placeholder { padding: 16px; display: flex; flex-direction: column; gap: 8px; align-items: flex-start; }
.ls-placeholder p { margin: 0; }

/* --- keyboard review ---------------------------------------------------------------------------- */
.ls-review-grid { grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); outline: none; }
.ls-review-grid .ls-card { position: relative; }
.ls-review-grid .ls-card.ls-current { outline: 2px solid var(--ls-accent); outline-offset: 1px; }
.ls-review-grid:focus-visible .ls-card.ls-current, .ls-review-grid:focus .ls-card.ls-current {
  outline-width: 3px; }
.ls-review-grid .ls-card.ls-selected { background: color-mix(in srgb, var(--ls-accent) 22%, var(--ls-bg2)); }
.ls-review-grid .ls-card.ls-busy { opacity: .55; }
.ls-review-grid .ls-thumb { cursor: pointer; }
.ls-review-grid img { user-select: none; -webkit-user-drag: none; }
.ls-keys { display: flex; flex-wrap: wrap; gap: 2px 10px; font-size: 11px; }
.ls-keys-box > summary { cursor: pointer; font-size: 12px; width: max-content; }
.ls-keys-box[open] > summary { margin-bottom: 3px; }
.ls-key { white-space: nowrap; }
.ls-kbd { display: inline-block; min-width: 1.4em; text-align: center; font: 10px/1.5 ui-monospace, Menlo, Consolas, monospace;
  color: var(--ls-fg); background: var(--ls-input); border: 1px solid var(--ls-border); border-bottom-width: 2px;
  border-radius: 3px; padding: 0 3px; }
.ls-check .ls-kbd { margin-right: 1px; }
.ls-reject-checks { display: flex; flex-direction: column; gap: 3px; }
.ls-meta { overflow-wrap: anywhere; }
.ls-reasons .ls-chips { flex: 1 1 auto; }
.ls-notes { font-size: 12px; }
.ls-box-select { position: fixed; z-index: 1300; pointer-events: none; border: 1px solid var(--p-primary-color, #3b82f6);
  background: color-mix(in srgb, var(--p-primary-color, #3b82f6) 18%, transparent); }

/* --- the wide workspace ------------------------------------------------------------------------- */
.ls-workspace { position: fixed; inset: 0; z-index: 1100; display: flex; outline: none;
  background: var(--comfy-menu-bg, #353535); }
.ls-workspace > .ls-root { flex: 1 1 auto; width: 100%; height: 100%; min-width: 0; }
.ls-wide .ls-head { display: flex; align-items: center; gap: 14px; padding: 6px 12px; flex-wrap: wrap; }
.ls-wide .ls-title { margin: 0; flex: 0 1 auto; order: 0; }
.ls-wide .ls-head > .ls-tabs { order: 1; }
.ls-wide .ls-head > .ls-pickers { order: 2; }
.ls-wide .ls-head > [data-testid="close-workspace"] { order: 3; }
.ls-wide .ls-health { flex: 0 1 auto; max-width: 260px; }
.ls-wide .ls-tabs { flex: 0 0 auto; gap: 4px; }
.ls-wide .ls-tab { flex: 0 0 auto; flex-direction: row; gap: 6px; padding: 6px 12px; font-size: 13px; }
.ls-wide .ls-tab:not([data-wide]) { display: none; }
.ls-wide .ls-pickers { flex: 1 1 320px; margin: 0; justify-content: flex-end; }
.ls-wide .ls-pickers select { flex: 0 1 240px; }
.ls-wide .ls-body { padding: 0; overflow: hidden; display: flex; flex-direction: column; }
.ls-wide .ls-body > .ls-section { flex: 1 1 auto; min-height: 0; overflow: auto; padding: 12px; }
.ls-wide .ls-body > .ls-review { padding: 0; overflow: hidden; }
.ls-review-wide { display: grid; height: 100%; min-height: 0;
  grid-template-columns: minmax(280px, 1fr) minmax(340px, 1.35fr) minmax(300px, 380px); }
.ls-review-left, .ls-review-right { min-height: 0; min-width: 0; overflow: auto; padding: 10px;
  display: flex; flex-direction: column; gap: 8px; }
.ls-review-left { border-right: 1px solid var(--ls-border); }
.ls-review-right { border-left: 1px solid var(--ls-border); }
.ls-review-center { min-height: 0; min-width: 0; display: flex; flex-direction: column; gap: 6px; padding: 10px;
  background: var(--ls-input); align-items: center; }
.ls-review-center > * { flex: none; }
.ls-review-center > .ls-preview-slot { flex: 1 1 auto; min-height: 0; width: 100%; display: flex; }
.ls-review-center > .ls-reasons { width: 100%; background: var(--ls-bg); }
.ls-wide .ls-reasons .ls-pre { max-height: 4.5em; overflow: auto; }
.ls-preview-box { flex: 1 1 auto; min-height: 0; width: 100%; display: flex; align-items: center;
  justify-content: center; }
.ls-preview-box img { width: 100%; height: 100%; object-fit: contain; display: block; }
.ls-review-grid.ls-tiles { grid-template-columns: repeat(auto-fill, minmax(104px, 1fr)); gap: 6px; }
.ls-tile .ls-thumb { aspect-ratio: 1 / 1; }
.ls-tile-status { position: absolute; right: 3px; bottom: 3px; background: rgba(0, 0, 0, .6); border-radius: 3px;
  padding: 0 4px; font-size: 11px; }
.ls-detail { display: flex; flex-direction: column; gap: 8px; }
.ls-detail-body { display: flex; flex-direction: column; gap: 6px; }
.ls-detail .ls-reject-checks { display: grid; grid-template-columns: 1fr 1fr; gap: 3px 8px; }
.ls-detail .ls-reject { border-top: none; padding-top: 0; }
.ls-detail .ls-actions .ls-btn { padding: 6px 4px; }
.ls-wide .ls-ssot .ls-pre { max-height: 10em; }
@media (max-width: 900px) {
  .ls-review-wide { grid-template-columns: 1fr 1fr; grid-auto-rows: minmax(0, 1fr); }
  .ls-review-right { grid-column: 1 / -1; border-left: none; border-top: 1px solid var(--ls-border); }
}
`;

export function injectWorkspaceStyle() {
  if (document.getElementById(WORKSPACE_STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = WORKSPACE_STYLE_ID;
  style.textContent = CSS;
  document.head.append(style);
}
