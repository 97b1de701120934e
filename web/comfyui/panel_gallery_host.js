// LoRA Studio panel: the Gallery view in either size. The gallery itself is panel_gallery.js's
// renderGallery(ctx, container, {wide}); this wraps it as a panel section that lays out again when the
// workspace opens or closes (setWide): the compact gallery (the detail replaces the grid) in the sidebar,
// the wide one (grid and detail side by side) in the workspace. The gallery's filters and scroll start
// over on a switch; the next refresh (now when the view shows, else when it is chosen) loads it again.
//
// Declarations only (ComfyUI imports every .js file of the pack).

import { h } from "./panel_dom.js";
import { renderGallery } from "./panel_gallery.js";

export function galleryHost(ctx) {
  const el = h("section", { class: "ls-section ls-gallery-section" });
  let wide = false;
  let gallery = renderGallery(ctx, el, { wide });
  const section = {
    el,
    refresh: () => gallery.refresh(),
    selectionChanged: () => gallery.selectionChanged(),
    countsChanged: () => {},
    /** Open a gallery item by its id (e.g. from a generation's result). */
    open: (id) => (typeof gallery.open === "function" ? gallery.open(id) : undefined),
    setWide(on) {
      if (wide === on) return;
      wide = on;
      gallery.destroy();
      gallery = renderGallery(ctx, el, { wide });
      section.stale = true; // panel.js refreshes a stale view when it shows
    },
    destroy: () => gallery.destroy(),
  };
  return section;
}
