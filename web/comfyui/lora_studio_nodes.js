// LoRA Studio: what the studio's nodes report when they have run, drawn on the node. A node's `ui` answer
// (nodes/results.py) comes with ComfyUI's `executed` event, also when the node was a cache hit: `text` is a
// list of lines ("2 images added to Aiko's pending queue", "trained moon-academy-aiko-v3.safetensors") and
// `lora_studio_images` lists images the studio serves itself (dataset images, training samples). ComfyUI's
// frontend shows neither for a custom node (it previews `images` from its own folders only).

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const WIDGET = "lora_studio_result";
const THUMB = 96; // px, the longer side of an image preview
const LINE = 16; // px per line of text

function resultWidget(node) {
  let widget = node.widgets && node.widgets.find((w) => w.name === WIDGET);
  if (widget) return widget;
  const element = document.createElement("div");
  element.dataset.testid = "lora-studio-node-result";
  element.style.cssText = "display:flex;flex-direction:column;gap:4px;overflow:auto;font-size:12px;"
    + "line-height:16px;color:var(--input-text,#ddd);white-space:pre-wrap;word-break:break-word;";
  widget = node.addDOMWidget(WIDGET, "lora_studio_result", element, {
    serialize: false, // not a widget value: saved workflows keep their values in place
    hideOnZoom: false,
    getMinHeight: () => element._loraStudioHeight || LINE,
  });
  widget.serialize = false;
  return widget;
}

export function showResult(node, output) {
  const lines = Array.isArray(output && output.text) ? output.text.map(String) : [];
  const images = Array.isArray(output && output.lora_studio_images) ? output.lora_studio_images : [];
  if (!lines.length && !images.length) return;
  const element = resultWidget(node).element;
  element.replaceChildren();
  for (const line of lines) {
    const p = document.createElement("div");
    p.textContent = line;
    element.append(p);
  }
  if (images.length) {
    const row = document.createElement("div");
    row.style.cssText = "display:flex;flex-wrap:wrap;gap:4px;";
    for (const image of images) {
      if (!image || typeof image.url !== "string" || !image.url.startsWith("/lora-studio/")) continue;
      const url = api.apiURL(image.url);
      const link = document.createElement("a");
      link.href = url;
      link.target = "_blank";
      link.rel = "noopener";
      const img = document.createElement("img");
      img.src = url;
      img.alt = image.kind || "image";
      img.style.cssText = `max-width:${THUMB}px;max-height:${THUMB}px;object-fit:contain;border-radius:2px;`;
      link.append(img);
      row.append(link);
    }
    element.append(row);
  }
  const rows = Math.ceil(images.length / Math.max(1, Math.floor((node.size[0] - 20) / (THUMB + 4))));
  element._loraStudioHeight = lines.length * LINE + (images.length ? rows * (THUMB + 4) + 4 : 0);
  const size = node.computeSize();
  node.setSize([Math.max(node.size[0], size[0]), Math.max(node.size[1], size[1])]);
  node.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "LoraStudio.NodeResults",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData || typeof nodeData.name !== "string" || !nodeData.name.startsWith("LoraStudio")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      if (onExecuted) onExecuted.apply(this, arguments);
      showResult(this, output);
    };
  },
});
