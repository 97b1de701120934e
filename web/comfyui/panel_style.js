// LoRA Studio panel: the stylesheet, injected by the first mountPanel call (never at import).

export const STYLE_ID = "lora-studio-panel-style";

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
.ls-review-grid { grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); }
.ls-thumb-wrap { position: relative; }
.ls-select { position: absolute; top: 4px; left: 4px; background: rgba(0, 0, 0, .55); border-radius: 4px;
  padding: 2px 4px; display: flex; cursor: pointer; }
.ls-select input { margin: 0; width: 16px; height: 16px; cursor: pointer; }
.ls-card[data-status="approved"] { border-color: var(--ls-ok); }
.ls-card[data-status="rejected"] { border-color: var(--ls-danger); }
.ls-badge { font-weight: 600; }
.ls-status-approved { color: var(--ls-ok); } .ls-status-rejected { color: var(--ls-danger); }
.ls-root textarea.ls-caption-edit { min-height: 38px; font-size: 12px; padding: 3px 5px; }
.ls-move { width: 100%; font-size: 12px; }
.ls-batchbar { border: 1px solid var(--ls-border); border-radius: 6px; padding: 4px 6px; }
.ls-chip { display: inline-flex; align-items: center; gap: 4px; }
.ls-chip-off { opacity: .6; }
.ls-chip-x { background: none; border: none; color: var(--ls-muted); cursor: pointer; padding: 0 2px; font: inherit;
  line-height: 1; }
.ls-chip-x:hover:not(:disabled) { color: var(--ls-danger); }
a.ls-btn { text-decoration: none; display: inline-block; }
.ls-gimport { margin: 0 6px 6px; font-size: 12px; padding: 2px 6px; }
.ls-autojob { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; font-size: 12px; }
.ls-autojob .ls-bar { width: 90px; }
details.ls-ssot { display: block; }
details.ls-ssot > summary { cursor: pointer; }
details.ls-ssot > :not(summary) { margin-top: 6px; }
.ls-ssot .ls-pre { max-height: 7em; overflow: auto; }
.ls-root .ls-ssot textarea { min-height: 38px; }
.ls-gitem .ls-caption { padding: 4px 6px; color: var(--ls-muted); overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
/* gallery (panel_gallery.js): fills its container; the grid scrolls by itself and is virtualised */
.ls-gallery-section { height: 100%; min-height: 360px; }
.ls-gallery { display: flex; flex-direction: column; gap: 6px; height: 100%; min-height: 0; min-width: 0; }
.ls-gtop { flex-wrap: nowrap; }
.ls-root input.ls-gsearch, input.ls-gsearch { flex: 1 1 auto; min-width: 0; }
.ls-gallery input[type=search], .ls-gallery input[type=date] { background: var(--ls-input); color: var(--ls-fg);
  border: 1px solid var(--ls-border); border-radius: 4px; padding: 4px 6px; font: inherit; max-width: 100%; color-scheme: inherit; }
details.ls-gfilters > summary { cursor: pointer; color: var(--ls-muted); font-size: 12px; }
details.ls-gfilters > .ls-row { margin-top: 4px; }
.ls-gfilters select, .ls-gfilters input[type=text] { max-width: 160px; }
.ls-gstatus { min-height: 1.4em; }
.ls-gmain { flex: 1 1 auto; min-height: 240px; display: flex; flex-direction: column; min-width: 0; }
.ls-gmain.ls-gwide { flex-direction: row; gap: 10px; }
.ls-ggridpane { flex: 1 1 auto; min-height: 0; min-width: 0; display: flex; flex-direction: column; }
.ls-gviewport { position: relative; flex: 1 1 auto; min-height: 200px; overflow-y: auto; overflow-x: hidden;
  border: 1px solid var(--ls-border); border-radius: 6px; background: var(--ls-bg); outline: none; }
.ls-gviewport:focus-visible { border-color: var(--ls-accent); }
.ls-gspacer { position: relative; width: 100%; }
.ls-gcell { position: absolute; left: 0; top: 0; display: flex; flex-direction: column; cursor: pointer;
  border-radius: 4px; overflow: hidden; background: var(--ls-bg2); border: 1px solid transparent; }
.ls-gcell[aria-selected="true"] { border-color: var(--ls-accent); box-shadow: 0 0 0 1px var(--ls-accent); }
.ls-gcell:hover { border-color: var(--ls-border); }
.ls-gthumb { flex: 1 1 auto; min-height: 0; display: flex; align-items: center; justify-content: center;
  background: var(--ls-input); }
.ls-gthumb img { width: 100%; height: 100%; object-fit: cover; display: block; }
.ls-gph { color: var(--ls-muted); font-size: 12px; }
.ls-gname { flex: none; height: 20px; line-height: 20px; padding: 0 4px; font-size: 11px; color: var(--ls-muted);
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.ls-gbadges { position: absolute; top: 3px; right: 3px; display: flex; gap: 2px; }
.ls-gbadges > span { background: rgba(0, 0, 0, .6); color: #fff; border-radius: 3px; padding: 0 4px; font-size: 11px; }
.ls-gdetail { display: flex; flex-direction: column; gap: 8px; min-width: 0; overflow-y: auto; }
.ls-gwide .ls-gdetail { flex: 0 0 min(420px, 42%); border-left: 1px solid var(--ls-border); padding-left: 10px; }
.ls-gmain:not(.ls-gwide) .ls-gdetail { flex: 1 1 auto; min-height: 0; }
.ls-gdhead { flex-wrap: nowrap; }
.ls-gdname { overflow-wrap: anywhere; min-width: 0; }
.ls-gpreview { display: flex; justify-content: center; background: var(--ls-input); border-radius: 6px; }
.ls-gpreview > a { display: block; width: 100%; }
.ls-gmedia { display: block; width: 100%; height: auto; max-height: 52vh; object-fit: contain; }
.ls-gpath { overflow-wrap: anywhere; }
.ls-gparams { display: flex; flex-direction: column; gap: 4px; }
.ls-gparam { display: grid; grid-template-columns: 84px 1fr; gap: 6px; align-items: start; font-size: 12px; }
.ls-gparam > :last-child { min-width: 0; overflow-wrap: anywhere; }
.ls-gparam .ls-pre { max-height: 8em; overflow: auto; }
/* training: the loss chart beside the samples (panel_training.js) */
.ls-train-viz { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-start; }
.ls-losschart { flex: 1 1 220px; max-width: 360px; min-width: 0; }
.ls-losschart svg { width: 100%; height: auto; display: block; background: var(--ls-input); border-radius: 4px; }
.ls-losschart polyline { fill: none; stroke: var(--ls-accent); stroke-width: 1.5; vector-effect: non-scaling-stroke; }
.ls-losschart text { fill: var(--ls-muted); font-size: 10px; }
.ls-losschart line { stroke: var(--ls-border); stroke-width: 1; vector-effect: non-scaling-stroke; }
.ls-train-blocked { border: 1px solid var(--ls-danger); border-radius: 6px; padding: 6px 8px; display: flex;
  flex-direction: column; gap: 4px; }
.ls-train-blocked code { overflow-wrap: anywhere; }
`;

export function injectStyle() {
  if (document.getElementById(STYLE_ID)) return;
  const style = document.createElement("style");
  style.id = STYLE_ID;
  style.textContent = CSS;
  document.head.append(style);
}
