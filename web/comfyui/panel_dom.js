// LoRA Studio panel: small DOM helpers shared by the panel modules. Declarations only: ComfyUI
// imports every .js file of the pack as an extension, so nothing here runs at import.
//
// All text coming from the API goes through textContent (the `h` helper); never innerHTML.

/** Create an element. Strings among the children become text nodes (never parsed as HTML). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  append(el, children);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "testid") el.dataset.testid = value;
    else if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (["value", "checked", "disabled", "hidden", "multiple", "selected", "min", "max", "step"].includes(key)) {
      el[key] = value;
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function humanize(key) {
  const s = String(key).replace(/_/g, " ");
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export function numberOrUndefined(input) {
  const v = String(input.value).trim();
  if (v === "") return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

const TEXT_INPUTS = new Set(["", "text", "search", "number", "email", "url", "password", "tel", "date",
  "datetime-local", "month", "time", "week"]);

/** Whether keys pressed on `target` belong to it (a text field, a textarea, a select, an editable
 * element): review shortcuts then stay quiet, so typing "a" in a note never approves an image. */
export function isTypingTarget(target) {
  if (!target || target.nodeType !== 1) return false;
  if (target.isContentEditable) return true;
  const tag = target.tagName;
  if (tag === "TEXTAREA" || tag === "SELECT") return true;
  return tag === "INPUT" && TEXT_INPUTS.has(String(target.getAttribute("type") || "").toLowerCase());
}

/** An <img> of `src` that swaps to `fallback` once when `src` fails (a thumbnail route an older
 * server lacks, a thumbnail it cannot make): the full file is slower but always there. */
export function fallbackImg(src, fallback, props) {
  const img = h("img", { draggable: "false", ...(props || {}), src });
  if (fallback && fallback !== src) {
    img.addEventListener("error", () => {
      if (img.dataset.fallback) return;
      img.dataset.fallback = "1";
      img.src = fallback;
    });
  }
  return img;
}
