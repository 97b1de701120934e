"""The Gallery view against the standalone studio and its real gallery index: a virtualised grid that scrolls
through 2,000 outputs while asking for a few screens of thumbnails, filters and text search that narrow it, the
detail with the parameters read from the files, favourite, trash/restore, empty trash, send-to-dataset (a pending
image in the database) and "use these settings"; compact (sidebar) and wide, with screenshots as artifacts."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.gallery_files import write_png, write_webm
from support.processes import studio_process
from support.studio_http import RunningStudio, call, db_rows

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("LORA_STUDIO_ARTIFACTS", ROOT / "build" / "artifacts")) / "browser"
SIDEBAR_PX = 360
COLOURS = ["red", "blue", "green", "silver", "black", "pink", "white", "purple"]
COUNT = 2000
VIDEOS = (5, 1500)  # i of the two videos among the outputs
NEWEST = 1_800_000_000  # mtime of output 0; each next one a minute older
GALLERY_ROUTE = re.compile(r".*/lora-studio/v1/gallery(\?.*)?$")


@dataclass
class Server(RunningStudio):
    output_dir: Path


def output_name(i: int) -> str:
    return f"run{i % 3}/ComfyUI_{i:05d}_.{'webm' if i in VIDEOS else 'png'}"


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """A studio whose output folder holds 2,000 outputs written as ComfyUI writes them (the API graph in the
    PNG): output i has "<colour> hair, item<i>" as its prompt (COLOURS[i % 8]) and loads lora_<colour>; every
    fourth was made by the studio for the seeded character. Indexed (a reindex job) before the tests."""
    root = tmp_path_factory.mktemp("gallery")
    data, out = root / "data", root / "comfyui-output"
    out.mkdir()
    with studio_process(root, data, "--comfyui-output", str(out)) as base:
        server = Server(base, data, out)
        tag = uuid.uuid4().hex[:8]
        project = call(server, "POST", "/projects", {"name": f"Gallery {tag}"})
        character = call(server, "POST", f"/projects/{project['id']}/characters",
                         {"name": f"Nao {tag}", "design_prompt": "1girl, short hair"})
        for i in range(COUNT):
            colour = COLOURS[i % len(COLOURS)]
            args = {"seed": 1000 + i, "mtime": NEWEST - i * 60, "positive": f"1girl, {colour} hair, item{i}",
                    "lora": f"lora_{colour}.safetensors", "steps": 20 + i % 5, "cfg": 6.5}
            if i in VIDEOS:
                write_webm(out / output_name(i), **args)
            else:
                write_png(out / output_name(i), size=(24, 24),
                          character_id=character["id"] if i % 4 == 0 else None, **args)
        job = call(server, "POST", "/gallery/reindex")
        deadline = time.monotonic() + 60
        while job["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
            job = call(server, "GET", f"/jobs/{job['id']}")
        assert job["status"] == "succeeded", job
        yield server, project, character


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


def test_gallery_scrolls_through_2000_items_asking_for_few_thumbnails(page, gallery):
    from playwright.sync_api import expect

    server, _, _ = gallery
    thumbs, pages = [], []
    page.on("request", lambda r: thumbs.append(r.url) if "/gallery/thumb" in r.url else
            pages.append(r.url) if GALLERY_ROUTE.match(r.url) else None)
    open_gallery(page, server, 1280)
    expect(page.locator('[data-testid="gallery-item"]').first).to_be_visible()
    page.wait_for_timeout(300)
    first = grid_state(page)
    per_screen = first["cells"]
    assert 0 < per_screen < 200, first  # only the rows in view plus a margin exist
    assert first["imgs"] == first["cells"]
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="gallery-grid"] img'))
                                      .every((i) => i.complete && i.naturalWidth > 0)""")
    assert all("size=256" in u for u in thumbs), thumbs[:3]  # the small WebP, never the file

    # fling to the end over and over, as far as the pages go, until the last output is rendered
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
        if state["max"] == COUNT - 1:
            break
        assert time.monotonic() < deadline, f"the grid did not reach the end: {state}"
    page.wait_for_timeout(400)  # settled: the cells in view ask for their thumbnails
    end = grid_state(page)
    assert end["imgs"] == end["cells"] > 0
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="gallery-grid"] img'))
                                      .every((i) => i.complete && i.naturalWidth > 0)""")
    expect(page.get_by_test_id("gallery-status")).to_have_text(f"{COUNT} item(s)")
    last = page.locator(f'[data-testid="gallery-item"][data-path="{output_name(COUNT - 1)}"]')
    expect(last).to_be_visible()
    print(f"cells per screen {per_screen}, most cells at once {max_cells}, pages {len(pages)}, "
          f"thumbnail requests {len(thumbs)}")
    assert max_cells < 3 * per_screen, (max_cells, per_screen)  # never all 2,000 in the DOM
    assert COUNT / 100 <= len(pages) <= COUNT / 100 + 1, pages  # each page once, fetched as the end came near
    assert len(thumbs) <= 4 * per_screen, (len(thumbs), per_screen)


def test_filters_and_search_narrow_the_grid(page, gallery):
    from playwright.sync_api import expect

    server, project, character = gallery
    open_gallery(page, server, 1280)
    status = page.get_by_test_id("gallery-status")
    expect(status).to_have_text(re.compile(r"^[1-9]00\+ item\(s\)$"))  # a page or a few ahead, not all 2,000

    def paths():
        return page.locator('[data-testid="gallery-item"]').evaluate_all("(els) => els.map((e) => e.dataset.path)")

    def index(path):
        return int(re.search(r"_(\d+)_", path).group(1))

    def expect_only(count, keep):
        expect(status).to_have_text(f"{count} item(s)")
        shown = paths()
        assert shown and all(keep(index(p)) for p in shown), shown

    def starts(prefix):
        return lambda i: str(i).startswith(prefix)

    # text: every word a prefix of a word in the prompts
    page.get_by_test_id("gallery-q").fill("green hair item10")
    expect_only(15, lambda i: i % 8 == 2 and starts("10")(i))
    expect(page.get_by_test_id("gallery-item").first).to_be_visible()

    page.get_by_test_id("gallery-filters").locator("summary").click()
    page.get_by_test_id("gallery-q").fill("item19")
    page.get_by_test_id("gallery-filter-character").select_option(str(character["id"]))  # the studio's outputs
    expect_only(27, lambda i: i % 4 == 0 and i not in VIDEOS and starts("19")(i))
    page.get_by_test_id("gallery-filter-character").select_option("")
    page.get_by_test_id("gallery-filter-lora").fill("lora_red.safetensors")
    expect_only(13, lambda i: i % 8 == 0 and starts("19")(i))
    page.get_by_test_id("gallery-filter-project").select_option(str(project["id"]))
    expect_only(13, lambda i: i % 8 == 0 and starts("19")(i))  # red ones are all the studio's (i % 4 == 0)
    page.get_by_test_id("gallery-filter-project").select_option("")
    page.get_by_test_id("gallery-filter-lora").fill("")
    page.get_by_test_id("gallery-q").fill("")

    page.get_by_test_id("gallery-filter-kind").select_option("video")
    expect_only(len(VIDEOS), lambda i: i in VIDEOS)
    page.get_by_test_id("gallery-filter-kind").select_option("")

    page.get_by_test_id("gallery-filter-favourite").check()
    expect(page.get_by_test_id("gallery-message")).to_have_text("Nothing matches these filters.")
    page.get_by_test_id("gallery-filter-favourite").uncheck()

    # dates: whole local days (the oldest day of the outputs, from and until the same day)
    oldest = NEWEST - (COUNT - 1) * 60
    day = page.evaluate(f"new Date({oldest} * 1000).toLocaleDateString('en-CA')")
    on_day = page.evaluate(f"""() => {{ const day = new Date({oldest} * 1000).toDateString(); const out = [];
      for (let i = 0; i < {COUNT}; i += 1) if (new Date(({NEWEST} - i * 60) * 1000).toDateString() === day) out.push(i);
      return out; }}""")
    page.get_by_test_id("gallery-filter-since").fill(day)
    page.get_by_test_id("gallery-filter-until").fill(day)
    expect(page.get_by_test_id("gallery-filter-count")).to_have_text("(2 on)")
    if len(on_day) <= 100:
        expect_only(len(on_day), lambda i: i in on_day)
    else:  # a timezone far from UTC: more than a page that day
        expect(status).to_have_text(re.compile(r"^\d+\+ item\(s\)$"))
        assert all(index(p) in on_day for p in paths())


def test_detail_actions_in_the_sidebar(page, gallery):
    from playwright.sync_api import expect

    server, project, character = gallery
    open_gallery(page, server, SIDEBAR_PX)
    page.get_by_test_id("project-select").select_option(str(project["id"]))
    expect(page.locator('[data-testid="gallery-item"]').first).to_be_visible()
    assert page.evaluate("""() => { const g = document.querySelector('[data-testid="gallery"]');
                                    return g.scrollWidth <= g.clientWidth + 1; }""")  # no sideways overflow
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="gallery-grid"] img'))
                                      .every((i) => i.complete && i.naturalWidth > 0)""")
    page.screenshot(path=str(ARTIFACTS / "gallery-compact.png"))

    page.get_by_test_id("gallery-q").fill("black hair item12")  # i=12: the studio's, black, steps 22
    expect(page.get_by_test_id("gallery-status")).to_have_text("14 item(s)")  # 12, 12x, 12xx that are black
    page.locator(f'[data-testid="gallery-item"][data-path="{output_name(12)}"]').click()
    expect(page.get_by_test_id("gallery-detail")).to_be_visible()
    expect(page.get_by_test_id("gallery-grid")).to_be_hidden()  # compact: the detail takes the place
    expect(page.get_by_test_id("gallery-param-positive")).to_contain_text("1girl, black hair, item12")
    expect(page.get_by_test_id("gallery-param-seed")).to_contain_text("1012")
    expect(page.get_by_test_id("gallery-param-sampler")).to_contain_text("euler")
    expect(page.get_by_test_id("gallery-param-loras")).to_contain_text("lora_black.safetensors · 0.8")
    expect(page.get_by_test_id("gallery-detail-facts")).to_contain_text(character["name"])
    page.wait_for_function("""() => { const i = document.querySelector('[data-testid="gallery-detail-image"]');
                                      return i && i.complete && i.naturalWidth === 24; }""")  # the file itself
    page.screenshot(path=str(ARTIFACTS / "gallery-compact-detail.png"))

    fav = page.get_by_test_id("gallery-favourite")
    fav.click()
    expect(fav).to_have_attribute("aria-pressed", "true")
    found = call(server, "GET", "/gallery?favourite=true")["items"]
    assert [it["path"] for it in found] == [output_name(12)]
    item_id = found[0]["id"]

    # use these settings: the project's style takes the sampler, scheduler, steps, cfg and checkpoint
    page.get_by_test_id("gallery-use-settings").click()
    expect(page.get_by_test_id("toast").filter(has_text="Style updated")).to_be_visible()
    style = call(server, "GET", f"/projects/{project['id']}/style")
    assert (style["sampler"], style["scheduler"], style["steps"], style["cfg"], style["checkpoint"]) == \
        ("euler", "karras", 22, 6.5, "sd15.safetensors")

    # send to the character's dataset: a pending image with the parameters
    picker = page.get_by_test_id("gallery-dataset-character")
    expect(picker).to_have_value(str(character["id"]))  # the studio made it for this character
    page.get_by_test_id("gallery-send").click()
    expect(page.get_by_test_id("toast").filter(has_text="Sent to the dataset")).to_be_visible()
    rows = db_rows(server, "SELECT status, character_id FROM images WHERE character_id = ?", character["id"])
    assert rows == [("pending", character["id"])]
    expect(page.get_by_test_id("character-select")).to_contain_text("(1 pending)")

    # delete: to the trash (restorable), back to the grid without it
    page.get_by_test_id("gallery-trash").click()
    expect(page.get_by_test_id("gallery-grid")).to_be_visible()
    expect(page.locator(f'[data-testid="gallery-item"][data-path="{output_name(12)}"]')).to_have_count(0)
    assert not (server.output_dir / output_name(12)).exists()
    page.get_by_test_id("gallery-q").fill("")
    page.get_by_test_id("gallery-filters").locator("summary").click()
    page.get_by_test_id("gallery-filter-trash").check()
    expect(page.get_by_test_id("gallery-status")).to_have_text("1 item(s) in the trash")
    page.get_by_test_id("gallery-item").first.click()
    page.get_by_test_id("gallery-restore").click()
    expect(page.get_by_test_id("gallery-message")).to_have_text("The trash is empty.")
    assert (server.output_dir / output_name(12)).exists()

    # trash two more and empty the trash, asked first
    for i in (20, 21):
        other = call(server, "GET", f"/gallery?q=item{i}%20{COLOURS[i % 8]}")["items"]
        call(server, "POST", f"/gallery/{next(it['id'] for it in other if it['path'] == output_name(i))}/trash")
    page.get_by_test_id("gallery-refresh").click()
    expect(page.get_by_test_id("gallery-status")).to_have_text("2 item(s) in the trash")
    page.get_by_test_id("gallery-empty-trash").click()
    expect(page.get_by_test_id("gallery-empty-box")).to_be_visible()
    page.get_by_test_id("gallery-empty-cancel").click()
    expect(page.get_by_test_id("gallery-empty-box")).to_be_hidden()
    assert call(server, "GET", "/gallery?trashed=true")["items"]  # nothing deleted without the confirmation
    page.get_by_test_id("gallery-empty-trash").click()
    page.get_by_test_id("gallery-empty-confirm").click()
    expect(page.get_by_test_id("gallery-message")).to_have_text("The trash is empty.")
    assert call(server, "GET", "/gallery?trashed=true")["items"] == []
    assert item_id and call(server, "GET", f"/gallery/{item_id}")["favourite"] is True  # the restored one stays


def test_wide_gallery_plays_videos_and_shows_errors_in_words(page, gallery):
    """renderGallery({wide: true}) as the workspace hosts it (mounted here on its own, full window)."""
    from playwright.sync_api import expect

    server, _, _ = gallery
    page.set_viewport_size({"width": 1400, "height": 860})
    page.goto(server.base_url + "/")
    page.get_by_test_id("tab-gallery").click()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    if page.get_by_test_id("open-workspace").count():  # the panel's workspace hosts the wide gallery
        page.get_by_test_id("open-workspace").click()
        hosted = page.locator('[data-testid="gallery"][data-mode="wide"]')
        expect(hosted).to_be_visible()
        hosted.locator('[data-testid="gallery-item"]').nth(1).click()
        expect(hosted.get_by_test_id("gallery-detail-image")).to_be_visible()
        page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-mode="wide"] img'))
                                          .every((i) => i.complete && i.naturalWidth > 0)""")
        page.screenshot(path=str(ARTIFACTS / "gallery-workspace.png"))
        page.keyboard.press("Escape")
        expect(hosted).to_have_count(0)
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
    wide.get_by_test_id("gallery-filter-kind").select_option("video")
    video = wide.locator(f'[data-testid="gallery-item"][data-path="{output_name(5)}"]')
    video.click()
    player = wide.get_by_test_id("gallery-detail-video")
    expect(player).to_be_visible()
    assert player.get_attribute("src").endswith("/gallery/file?path=" + output_name(5).replace("/", "%2F"))
    assert player.evaluate("(v) => v.controls") is True
    page.wait_for_function("""() => { const v = document.querySelector('[data-testid="gallery-detail-video"]');
                                      return v && v.readyState >= 1 && v.videoWidth === 32; }""")  # it plays
    expect(wide.get_by_test_id("gallery-send")).to_be_disabled()  # a dataset takes pictures
    expect(wide.get_by_test_id("gallery-grid")).to_be_visible()  # side by side
    wide.get_by_test_id("gallery-filter-kind").select_option("")
    wide.locator(f'[data-testid="gallery-item"][data-path="{output_name(1)}"]').click()
    expect(wide.get_by_test_id("gallery-detail-image")).to_be_visible()
    expect(wide.get_by_test_id("gallery-param-loras")).to_contain_text("lora_blue.safetensors")
    page.keyboard.press("ArrowRight")  # the grid has the focus: the detail follows the selection
    expect(wide.get_by_test_id("gallery-detail-name")).to_have_text(output_name(2).split("/")[1])
    page.keyboard.press("ArrowLeft")
    expect(wide.get_by_test_id("gallery-detail-name")).to_have_text(output_name(1).split("/")[1])
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="wide-host"] img'))
                                      .every((i) => i.complete && i.naturalWidth > 0)""")
    page.screenshot(path=str(ARTIFACTS / "gallery-wide.png"))

    # API errors are shown in words, on the page and as a toast, and as text (never HTML)
    page.route(GALLERY_ROUTE, lambda route: route.fulfill(status=503, headers={"Content-Type": "application/json"},
               body=json.dumps({"error": {"code": "unavailable", "message": "the gallery index is being built"}})))
    wide.get_by_test_id("gallery-refresh").click()
    expect(wide.get_by_test_id("gallery-message")).to_have_text("the gallery index is being built")
    page.unroute(GALLERY_ROUTE)
    page.route(GALLERY_ROUTE, lambda route: route.fulfill(status=500, headers={"Content-Type": "application/json"},
               body=json.dumps({"error": {"code": "internal_error", "message": "disk <b>full</b>"}})))
    wide.get_by_test_id("gallery-refresh").click()
    expect(wide.get_by_test_id("gallery-message")).to_have_text("disk <b>full</b>")
    assert ["error", "Cannot load the gallery", "disk <b>full</b>"] in page.evaluate("window.__toasts")
    page.unroute(GALLERY_ROUTE)
    page.evaluate("window.__wide.destroy()")
    expect(wide.get_by_test_id("gallery")).to_have_count(0)
