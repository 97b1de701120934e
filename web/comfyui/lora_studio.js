// LoRA Studio: ComfyUI frontend extension. Adds a "LoRA Studio" sidebar tab that hosts the panel
// (panel.js). The routes live on ComfyUI's own server under /lora-studio/v1 (also reachable with
// the /api prefix that api.fetchApi adds); job events come through ComfyUI's websocket.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { mountPanel } from "./panel.js";

function makeHost() {
  return {
    fetchApi: (path, init) => api.fetchApi(path, init),
    apiURL: (path) => api.apiURL(path),
    toast: ({ severity, summary, detail }) => {
      const toasts = app.extensionManager && app.extensionManager.toast;
      if (toasts && typeof toasts.add === "function") toasts.add({ severity, summary, detail, life: 4000 });
      else console[severity === "error" ? "error" : "log"](`[LoRA Studio] ${summary}: ${detail || ""}`);
    },
    onEvent: (type, cb) => {
      const listener = (e) => cb(e.detail);
      api.addEventListener(type, listener);
      return () => api.removeEventListener(type, listener);
    },
  };
}

// Older frontends without sidebar tabs: a small button that opens the panel in an overlay.
function legacyButton(host) {
  let overlay = null;
  const button = document.createElement("button");
  button.textContent = "LoRA Studio";
  button.title = "LoRA Studio";
  button.style.cssText = "position:fixed;left:8px;bottom:8px;z-index:1000;padding:4px 10px;cursor:pointer;"
    + "background:var(--comfy-menu-bg,#353535);color:var(--fg-color,#ddd);border:1px solid var(--border-color,#4e4e4e);"
    + "border-radius:4px;";
  button.addEventListener("click", () => {
    if (!overlay) {
      overlay = document.createElement("div");
      overlay.style.cssText = "position:fixed;top:0;right:0;bottom:0;width:min(560px,100vw);z-index:999;"
        + "box-shadow:0 0 12px rgba(0,0,0,.5);";
      document.body.append(overlay);
      mountPanel(overlay, host);
    } else {
      overlay.hidden = !overlay.hidden;
    }
  });
  document.body.append(button);
}

app.registerExtension({
  name: "LoraStudio.Panel",
  setup() {
    const host = makeHost();
    const manager = app.extensionManager;
    if (!manager || typeof manager.registerSidebarTab !== "function") {
      console.warn("[LoRA Studio] this ComfyUI frontend has no sidebar tabs; using a floating button");
      legacyButton(host);
      return;
    }
    let current = null; // the mounted panel; a re-render replaces it (no duplicate timers/listeners)
    const destroy = () => {
      if (current) current.destroy();
      current = null;
    };
    manager.registerSidebarTab({
      id: "lora-studio",
      icon: "pi pi-images",
      title: "LoRA Studio",
      tooltip: "LoRA Studio",
      type: "custom",
      render: (el) => {
        destroy();
        current = mountPanel(el, host);
      },
      destroy,
    });
  },
});
