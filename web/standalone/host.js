// Standalone page: provides the host interface the panel expects (the same one the ComfyUI
// extension builds from ComfyUI's api/app) and mounts the panel full-page.

import { mountPanel } from "../comfyui/panel.js";

const EVENTS_PATH = "/lora-studio/v1/events";

function toast({ severity = "info", summary = "", detail = "" }) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const el = document.createElement("div");
  el.className = `toast ${["success", "info", "warn", "error"].includes(severity) ? severity : "info"}`;
  el.dataset.testid = "toast";
  el.setAttribute("role", severity === "error" ? "alert" : "status");
  const title = document.createElement("strong");
  title.textContent = summary;
  el.append(title);
  if (detail) el.append(document.createTextNode(String(detail)));
  el.addEventListener("click", () => el.remove());
  box.append(el);
  while (box.children.length > 5) box.firstElementChild.remove();
  setTimeout(() => el.remove(), severity === "error" ? 8000 : 4000);
}

/** One WebSocket for all listeners; reconnects with a growing delay when it closes. */
function eventSource() {
  const listeners = new Map();
  let socket = null;
  let delay = 500;

  function connect() {
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${EVENTS_PATH}`;
    try {
      socket = new WebSocket(url);
    } catch {
      setTimeout(connect, delay);
      return;
    }
    socket.addEventListener("open", () => {
      delay = 500;
    });
    socket.addEventListener("message", (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      for (const cb of listeners.get(msg && msg.type) || []) {
        try {
          cb(msg.data);
        } catch (e) {
          console.error("[LoRA Studio] event listener failed", e);
        }
      }
    });
    socket.addEventListener("close", () => {
      socket = null;
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    });
  }

  connect();
  return (type, cb) => {
    if (!listeners.has(type)) listeners.set(type, new Set());
    listeners.get(type).add(cb);
    return () => listeners.get(type).delete(cb);
  };
}

const host = {
  fetchApi: (path, init) => fetch(path, init),
  apiURL: (path) => path,
  toast,
  onEvent: eventSource(),
};

mountPanel(document.getElementById("app"), host);
