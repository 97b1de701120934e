"""The Gallery view: a virtualised grid that scrolls through 2,000 outputs while asking for a few screens of
thumbnails, filters and text search that narrow it, the detail with the parameters, favourite, trash/restore,
empty trash, send-to-dataset and "use these settings"; compact (sidebar) and wide, with screenshots."""

from __future__ import annotations

import json
import os
import re
import struct
import time
import uuid
import zlib
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from support.studio_http import call

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("LORA_STUDIO_ARTIFACTS", ROOT / "build" / "artifacts")) / "browser"
SIDEBAR_PX = 360
COLOURS = ["red", "blue", "green", "silver", "black", "pink", "white", "purple"]


def tiny_png(rgb=(90, 140, 200), size: int = 8) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class MockGallery:
    """The gallery API answered in the browser (page.route) from 2,000 items in memory, with the contract's
    filters, cursor, actions and thumbnails; every thumbnail request is counted."""

    def __init__(self, count: int, character_id: int | None = None, project_id: int | None = None):
        self.items = []
        for i in range(count):
            colour = COLOURS[i % len(COLOURS)]
            video = i % 97 == 5
            name = f"ComfyUI_{i:05d}_.{'webm' if video else 'png'}"
            self.items.append({
                "id": i + 1, "path": f"run{i % 3}/{name}", "name": name, "subfolder": f"run{i % 3}",
                "kind": "video" if video else "image", "size": 2000 + i, "width": 64, "height": 64,
                "mtime": 1_800_000_000 - i * 60, "favourite": i % 10 == 0, "trashed": False,
                "params": {"positive": f"1girl, {colour} hair, item{i}", "negative": "lowres", "seed": 1000 + i,
                           "sampler": "euler", "scheduler": "karras", "steps": 20 + i % 5, "cfg": 6.5,
                           "checkpoint": "model.safetensors",
                           "loras": [{"name": f"lora_{colour}.safetensors", "strength_model": 0.8,
                                      "strength_clip": 0.8}]},
                "generation_id": None, "character_id": character_id if i % 4 == 0 else None,
                "project_id": project_id if i % 4 == 0 else None,
                "thumb_url": f"/lora-studio/v1/gallery/thumb?path=run{i % 3}%2F{name}&size=256"})
        self.thumb_requests: list[str] = []
        self.list_requests: list[dict] = []
        self.actions: list[tuple[str, str, dict]] = []

    def matches(self, item: dict, q: dict) -> bool:
        get = lambda k: (q.get(k) or [""])[0]  # noqa: E731
        if item["trashed"] != (get("trashed") == "true"):
            return False
        if get("favourite") == "true" and not item["favourite"]:
            return False
        if get("kind") and item["kind"] != get("kind"):
            return False
        if get("character_id") and str(item["character_id"]) != get("character_id"):
            return False
        if get("project_id") and str(item["project_id"]) != get("project_id"):
            return False
        if get("lora") and not any(get("lora") in lo["name"] for lo in item["params"]["loras"]):
            return False
        return not get("q") or all(w in item["params"]["positive"] for w in get("q").lower().split())

    def handle(self, route):
        request = route.request
        url = urlparse(request.url)
        path = url.path.split("/lora-studio/v1", 1)[1]
        q = parse_qs(url.query)
        if path == "/gallery/thumb":
            self.thumb_requests.append(request.url)
            return route.fulfill(status=200, body=tiny_png(), headers={"Content-Type": "image/png"})
        if path == "/gallery/file":
            return route.fulfill(status=200, body=tiny_png((200, 80, 80), 32), headers={"Content-Type": "image/png"})
        if path == "/gallery" and request.method == "GET":
            self.list_requests.append(q)
            found = [it for it in self.items if self.matches(it, q)]
            start = int((q.get("cursor") or ["0"])[0])
            limit = int((q.get("limit") or ["50"])[0])
            page = found[start:start + limit]
            nxt = str(start + limit) if start + limit < len(found) else None
            return self.json(route, {"items": page, "next_cursor": nxt})
        if path == "/gallery/trash/empty" and request.method == "POST":
            before = len(self.items)
            self.items = [it for it in self.items if not it["trashed"]]
            return self.json(route, {"deleted": before - len(self.items)})
        m = re.fullmatch(r"/gallery/(\d+)(?:/([a-z-]+))?", path)
        if m:
            item = next((it for it in self.items if it["id"] == int(m.group(1))), None)
            if item is None:
                return self.json(route, {"error": {"code": "not_found", "message": "no such item"}}, 404)
            action = m.group(2)
            body = json.loads(request.post_data or "{}") if request.method == "POST" else {}
            self.actions.append((request.method, action or "", body))
            if action == "favourite":
                item["favourite"] = bool(body.get("favourite"))
            elif action == "trash":
                item["trashed"] = True
            elif action == "restore":
                item["trashed"] = False
            elif action == "to-dataset":
                return self.json(route, {"id": 1, "status": "pending", "character_id": body.get("character_id")})
            return self.json(route, item)
        return route.continue_()

    @staticmethod
    def json(route, data, status=200):
        return route.fulfill(status=status, body=json.dumps(data), headers={"Content-Type": "application/json"})


GALLERY_ROUTE = re.compile(r".*/lora-studio/v1/gallery(/.*)?(\?.*)?$")


def seed_project(server):
    tag = uuid.uuid4().hex[:8]
    project = call(server, "POST", "/projects", {"name": f"Gallery {tag}"})
    character = call(server, "POST", f"/projects/{project['id']}/characters",
                     {"name": f"Nao {tag}", "design_prompt": "1girl, short hair"})
    return project, character


def open_gallery(page, server, width: int):
    page.set_viewport_size({"width": width, "height": 820})
    page.goto(server.base_url + "/")
    page.get_by_test_id("tab-gallery").click()


def grid_state(page) -> dict:
    return page.evaluate("""() => {
      const vp = document.querySelector('[data-testid="gallery-grid"]');
      const cells = vp.querySelectorAll('[data-testid="gallery-item"]');
      const idx = Array.from(cells, (c) => Number(c.dataset.index));
      return {cells: cells.length, imgs: vp.querySelectorAll('img').length, max: Math.max(-1, ...idx),
              top: vp.scrollTop, height: vp.scrollHeight, view: vp.clientHeight};
    }""")


def test_gallery_scrolls_through_2000_items_asking_for_few_thumbnails(page, studio_server):
    from playwright.sync_api import expect

    mock = MockGallery(2000)
    page.route(GALLERY_ROUTE, mock.handle)
    open_gallery(page, studio_server, 1280)
    expect(page.locator('[data-testid="gallery-item"]').first).to_be_visible()
    page.wait_for_timeout(300)
    first = grid_state(page)
    per_screen = first["cells"]
    assert 0 < per_screen < 200, first  # only the rows in view plus a margin exist
    assert first["imgs"] == first["cells"]

    # fling to the end over and over, as far as the pages go, until the last item is rendered
    deadline = time.monotonic() + 40
    max_cells = 0
    while True:
        state = page.evaluate("""async () => {
          const vp = document.querySelector('[data-testid="gallery-grid"]');
          for (let i = 0; i < 8; i += 1) {
            vp.scrollTop = vp.scrollHeight;
            await new Promise((r) => setTimeout(r, 25));
          }
          const cells = vp.querySelectorAll('[data-testid="gallery-item"]');
          return {cells: cells.length, max: Math.max(-1, ...Array.from(cells, (c) => Number(c.dataset.index)))};
        }""")
        max_cells = max(max_cells, state["cells"])
        if state["max"] == 1999:
            break
        assert time.monotonic() < deadline, f"the grid did not reach the end: {state}"
    page.wait_for_timeout(400)  # settled: the cells in view ask for their thumbnails
    end = grid_state(page)
    assert end["imgs"] == end["cells"] > 0
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="gallery-grid"] img'))
                                      .every((i) => i.complete && i.naturalWidth > 0)""")
    assert max_cells < 3 * per_screen, (max_cells, per_screen)  # never all 2,000 in the DOM
    pages = len(mock.list_requests)
    assert 2000 / 100 <= pages <= 2000 / 100 + 1, pages  # every page once, fetched as the end came near
    print(f"cells per screen {per_screen}, most cells at once {max_cells}, pages {pages}, "
          f"thumbnail requests {len(mock.thumb_requests)}")
    assert len(mock.thumb_requests) <= 4 * per_screen, (len(mock.thumb_requests), per_screen)


def test_filters_and_search_narrow_the_grid(page, studio_server):
    from playwright.sync_api import expect

    mock = MockGallery(300)
    page.route(GALLERY_ROUTE, mock.handle)
    open_gallery(page, studio_server, 1280)
    status = page.get_by_test_id("gallery-status")
    expect(status).to_have_text(re.compile(r"^[12]00\+ item\(s\)$"))  # a page or two ahead, not all 300

    page.get_by_test_id("gallery-q").fill("green hair")
    expect(status).to_have_text("38 item(s)")  # 300 items, every eighth is green
    names = page.locator('[data-testid="gallery-item"]').evaluate_all("(els) => els.map((e) => e.dataset.path)")
    assert names and all(int(re.search(r"_(\d+)_", n).group(1)) % 8 == 2 for n in names)
    assert mock.list_requests[-1]["q"] == ["green hair"]

    page.get_by_test_id("gallery-filters").locator("summary").click()
    page.get_by_test_id("gallery-filter-favourite").check()
    expect(status).to_have_text("8 item(s)")  # green (i % 8 == 2) and favourite (i % 10 == 0): i % 40 == 10
    page.get_by_test_id("gallery-q").fill("")
    page.get_by_test_id("gallery-filter-favourite").uncheck()
    page.get_by_test_id("gallery-filter-kind").select_option("video")
    expect(status).to_have_text("4 item(s)")
    assert mock.list_requests[-1]["kind"] == ["video"]
    page.get_by_test_id("gallery-filter-kind").select_option("")
    page.get_by_test_id("gallery-filter-lora").fill("lora_pink")
    expect(status).to_have_text("37 item(s)")
    page.get_by_test_id("gallery-filter-since").fill("2026-01-02")
    expect(page.get_by_test_id("gallery-filter-count")).to_have_text("(2 on)")
    assert mock.list_requests[-1]["since"] == ["2026-01-02"]


def test_detail_actions_and_screenshots(page, studio_server):
    from playwright.sync_api import expect

    project, character = seed_project(studio_server)
    mock = MockGallery(60, character["id"], project["id"])
    page.route(GALLERY_ROUTE, mock.handle)
    open_gallery(page, studio_server, SIDEBAR_PX)
    page.get_by_test_id("project-select").select_option(str(project["id"]))
    expect(page.locator('[data-testid="gallery-item"]').first).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "gallery-compact.png"))

    # no horizontal overflow at the sidebar's width
    assert page.evaluate("""() => { const g = document.querySelector('[data-testid="gallery"]');
                                    return g.scrollWidth <= g.clientWidth + 1; }""")

    page.locator('[data-testid="gallery-item"][data-id="5"]').click()  # i=4: black, not a favourite
    detail = page.get_by_test_id("gallery-detail")
    expect(detail).to_be_visible()
    expect(page.get_by_test_id("gallery-grid")).to_be_hidden()
    expect(page.get_by_test_id("gallery-param-positive")).to_contain_text("1girl, black hair, item4")
    expect(page.get_by_test_id("gallery-param-sampler")).to_contain_text("euler")
    expect(page.get_by_test_id("gallery-param-loras")).to_contain_text("lora_black.safetensors · 0.8")
    page.screenshot(path=str(ARTIFACTS / "gallery-compact-detail.png"))

    page.get_by_test_id("gallery-favourite").click()
    expect(page.get_by_test_id("gallery-favourite")).to_have_attribute("aria-pressed", "true")
    assert ("POST", "favourite", {"favourite": True}) in mock.actions

    # use these settings: the project's style takes them (the real route)
    page.get_by_test_id("gallery-use-settings").click()
    expect(page.get_by_test_id("toast").filter(has_text="Style updated")).to_be_visible()
    style = call(studio_server, "GET", f"/projects/{project['id']}/style")
    assert (style["sampler"], style["scheduler"], style["steps"], style["cfg"], style["checkpoint"]) == \
        ("euler", "karras", 24, 6.5, "model.safetensors")

    page.get_by_test_id("gallery-dataset-character").select_option(str(character["id"]))
    page.get_by_test_id("gallery-send").click()
    expect(page.get_by_test_id("toast").filter(has_text="Sent to the dataset")).to_be_visible()
    assert ("POST", "to-dataset", {"character_id": character["id"]}) in mock.actions

    page.get_by_test_id("gallery-trash").click()
    expect(page.get_by_test_id("gallery-grid")).to_be_visible()  # back to the grid, the item gone
    expect(page.locator('[data-testid="gallery-item"][data-id="5"]')).to_have_count(0)

    page.get_by_test_id("gallery-filters").locator("summary").click()
    page.get_by_test_id("gallery-filter-trash").check()
    expect(page.get_by_test_id("gallery-status")).to_have_text("1 item(s) in the trash")
    page.locator('[data-testid="gallery-item"][data-id="5"]').click()
    page.get_by_test_id("gallery-restore").click()
    expect(page.get_by_test_id("gallery-message")).to_have_text("The trash is empty.")

    # trash two and empty the trash (asked first)
    mock.items[10]["trashed"] = mock.items[11]["trashed"] = True
    page.get_by_test_id("gallery-refresh").click()
    expect(page.get_by_test_id("gallery-status")).to_have_text("2 item(s) in the trash")
    page.get_by_test_id("gallery-empty-trash").click()
    expect(page.get_by_test_id("gallery-empty-box")).to_be_visible()
    page.get_by_test_id("gallery-empty-confirm").click()
    expect(page.get_by_test_id("gallery-message")).to_have_text("The trash is empty.")
    assert len(mock.items) == 58


def test_wide_gallery_plays_videos_and_shows_errors_in_words(page, studio_server):
    from playwright.sync_api import expect

    mock = MockGallery(120)
    page.route(GALLERY_ROUTE, mock.handle)
    page.set_viewport_size({"width": 1400, "height": 860})
    page.goto(studio_server.base_url + "/")
    page.get_by_test_id("tab-gallery").wait_for()
    # the workspace hosts renderGallery({wide: true}); here it is mounted on its own, full page
    page.evaluate("""async () => {
      const { renderGallery } = await import('/lora-studio/web/comfyui/panel_gallery.js');
      const { makeApi } = await import('/lora-studio/web/comfyui/panel_api.js');
      const host = { fetchApi: (p, i) => fetch(p, i), apiURL: (p) => p };
      const box = document.createElement('div');
      box.className = 'ls-root';
      box.dataset.testid = 'wide-host';
      box.style.cssText = 'position:fixed;inset:0;z-index:50;padding:10px';
      document.body.append(box);
      window.__toasts = [];
      const ctx = { api: makeApi(host), state: { projects: [], characters: [] },
                    toast: (s, summary, detail) => window.__toasts.push([s, summary, detail]),
                    showError: (e, summary) => window.__toasts.push(['error', summary, e.message]),
                    character: () => null, project: () => null };
      window.__wide = renderGallery(ctx, box, { wide: true });
      window.__wide.refresh();
    }""")
    wide = page.get_by_test_id("wide-host")
    expect(wide.locator('[data-testid="gallery-item"]').first).to_be_visible()
    video = wide.locator('[data-testid="gallery-item"][data-id="6"]')  # i=5 is a video
    video.click()
    player = wide.get_by_test_id("gallery-detail-video")
    expect(player).to_be_visible()
    assert player.get_attribute("src").endswith("/gallery/file?path=run2%2FComfyUI_00005_.webm")
    assert player.evaluate("(v) => v.controls") is True
    expect(wide.get_by_test_id("gallery-grid")).to_be_visible()  # side by side
    wide.locator('[data-testid="gallery-item"][data-id="2"]').click()
    expect(wide.get_by_test_id("gallery-detail-image")).to_be_visible()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)
    page.screenshot(path=str(ARTIFACTS / "gallery-wide.png"))

    # an API error is shown in words, on the page and as a toast
    page.unroute(GALLERY_ROUTE)
    page.route(GALLERY_ROUTE, lambda route: route.fulfill(status=503, headers={"Content-Type": "application/json"},
               body=json.dumps({"error": {"code": "unavailable", "message": "the gallery index is being built"}})))
    wide.get_by_test_id("gallery-refresh").click()
    expect(wide.get_by_test_id("gallery-message")).to_have_text("the gallery index is being built")
    page.unroute(GALLERY_ROUTE)
    page.route(GALLERY_ROUTE, lambda route: route.fulfill(status=500, headers={"Content-Type": "application/json"},
               body=json.dumps({"error": {"code": "internal_error", "message": "disk <b>full</b>"}})))
    wide.get_by_test_id("gallery-refresh").click()
    expect(wide.get_by_test_id("gallery-message")).to_have_text("disk <b>full</b>")  # text, not HTML
    assert ["error", "Cannot load the gallery", "disk <b>full</b>"] in page.evaluate("window.__toasts")
    page.evaluate("window.__wide.destroy()")
    expect(wide.get_by_test_id("gallery")).to_have_count(0)
