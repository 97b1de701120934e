// LoRA Studio panel: a few line icons (24×24, stroked with currentColor, so they follow the theme's text
// colour) for the view bar and the workspace buttons. Built with createElementNS from the constant
// shapes below; nothing from the API ever goes in here. Declarations only (ComfyUI imports every .js
// file of the pack).

const SVG_NS = "http://www.w3.org/2000/svg";

const SHAPES = {
  approvals: [["path", { d: "M9 11l3 3L22 4" }], ["path", { d: "M21 12v7a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2h11" }]],
  characters: [["circle", { cx: 9, cy: 7, r: 4 }], ["path", { d: "M17 21v-2a4 4 0 0 0-4-4H5a4 4 0 0 0-4 4v2" }],
    ["path", { d: "M23 21v-2a4 4 0 0 0-3-3.87" }], ["path", { d: "M16 3.13a4 4 0 0 1 0 7.75" }]],
  ingest: [["path", { d: "M21 15v4a2 2 0 0 1-2 2H5a2 2 0 0 1-2-2v-4" }], ["path", { d: "M7 10l5 5 5-5" }],
    ["path", { d: "M12 15V3" }]],
  training: [["path", { d: "M22 12h-4l-3 9L9 3l-3 9H2" }]],
  generate: [["path", { d: "M12 3l1.9 5.8L20 10l-6.1 1.2L12 17l-1.9-5.8L4 10l6.1-1.2z" }], ["path", { d: "M19 17v4" }],
    ["path", { d: "M17 19h4" }]],
  gallery: [["rect", { x: 3, y: 3, width: 18, height: 18, rx: 2 }], ["circle", { cx: 8.5, cy: 8.5, r: 1.5 }],
    ["path", { d: "M21 15l-5-5L5 21" }]],
  expand: [["path", { d: "M15 3h6v6" }], ["path", { d: "M9 21H3v-6" }], ["path", { d: "M21 3l-7 7" }],
    ["path", { d: "M3 21l7-7" }]],
  close: [["path", { d: "M18 6L6 18" }], ["path", { d: "M6 6l12 12" }]],
  dot: [["circle", { cx: 12, cy: 12, r: 4 }]],
};

/** An inline SVG icon (aria-hidden: the button around it carries the name). */
export function icon(name, size = 16) {
  const svg = document.createElementNS(SVG_NS, "svg");
  for (const [k, v] of Object.entries({ viewBox: "0 0 24 24", width: size, height: size, fill: "none",
    stroke: "currentColor", "stroke-width": 2, "stroke-linecap": "round", "stroke-linejoin": "round",
    "aria-hidden": "true", focusable: "false", class: "ls-icon" })) {
    svg.setAttribute(k, String(v));
  }
  for (const [tag, attrs] of SHAPES[name] || SHAPES.dot) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    svg.append(el);
  }
  return svg;
}
