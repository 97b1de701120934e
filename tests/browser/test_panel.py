"""The web panel, end to end: the standalone server, its page in headless chromium, and the
SQLite database underneath. Each test seeds its own project through the HTTP API."""

from __future__ import annotations

import json
import time
import uuid
import zlib
from pathlib import Path

import pytest
from support.images import image_bytes
from support.studio_http import call, db_rows, open_panel, upload

pytestmark = pytest.mark.browser

CATEGORIES = {"wrong_appearance", "wrong_style", "bad_quality", "not_solo", "wrong_pose", "wrong_expression"}


# --- seeding through the HTTP API ------------------------------------------------------------



def png_bytes(color: str, size: int = 96) -> bytes:
    """A distinct picture per name (plain shapes on one colour would be near duplicates, which
    uploads skip)."""
    return image_bytes("PNG", (size, size), seed=zlib.crc32(color.encode()))




def seed(server, images: dict[str, bytes] | None = None):
    """A new project with one character (and its uploaded images); returns (project, character, images)."""
    tag = uuid.uuid4().hex[:8]
    project = call(server, "POST", "/projects", {"name": f"Project {tag}"})
    character = call(server, "POST", f"/projects/{project['id']}/characters",
                     {"name": f"Mika {tag}", "design_prompt": "1girl, silver hair, blue eyes"})
    created = upload(server, character["id"], images, caption="mika test")["created"] if images else []
    return project, character, created






# --- tests -----------------------------------------------------------------------------------

def test_approve_and_reject_change_the_database(page, studio_server):
    from playwright.sync_api import expect

    project, character, created = seed(studio_server, {"red.png": png_bytes("red"), "blue.png": png_bytes("blue")})
    keep, drop = created[0]["id"], created[1]["id"]
    open_panel(page, studio_server, project, character)

    expect(page.get_by_test_id(f"pending-card-{keep}")).to_be_visible()
    expect(page.get_by_test_id(f"pending-card-{drop}")).to_be_visible()
    expect(page.get_by_test_id("pending-count")).to_have_text("2")
    # the thumbnails really load from /images/{id}/file
    page.wait_for_function(f"document.querySelector('[data-testid=pending-img-{keep}]').naturalWidth > 0")

    page.get_by_test_id(f"approve-{keep}").click()
    expect(page.get_by_test_id(f"pending-card-{keep}")).to_have_count(0)
    assert db_rows(studio_server, "SELECT status FROM images WHERE id = ?", keep) == [("approved",)]
    expect(page.get_by_test_id("approved-count")).to_have_text("1")
    expect(page.get_by_test_id("pending-count")).to_have_text("1")

    page.get_by_test_id(f"reject-{drop}").click()
    form = page.get_by_test_id(f"reject-form-{drop}")
    expect(form).to_be_visible()
    for cat in CATEGORIES:  # the six categories are offered
        expect(page.get_by_test_id(f"reject-cat-{drop}-{cat}")).to_be_visible()
    page.get_by_test_id(f"reject-confirm-{drop}").click()  # nothing chosen: refused inline
    expect(page.get_by_test_id(f"reject-error-{drop}")).to_be_visible()
    assert db_rows(studio_server, "SELECT status FROM images WHERE id = ?", drop) == [("pending",)]

    page.get_by_test_id(f"reject-cat-{drop}-wrong_style").check()
    page.get_by_test_id(f"reject-note-{drop}").fill("too painterly")
    page.get_by_test_id(f"reject-confirm-{drop}").click()
    expect(page.get_by_test_id(f"pending-card-{drop}")).to_have_count(0)
    assert db_rows(studio_server, "SELECT status FROM images WHERE id = ?", drop) == [("rejected",)]
    feedback = db_rows(studio_server, "SELECT categories, note FROM feedback WHERE image_id = ?", drop)
    assert len(feedback) == 1
    assert json.loads(feedback[0][0]) == ["wrong_style"] and feedback[0][1] == "too painterly"
    expect(page.get_by_test_id("pending-empty")).to_be_visible()
    expect(page.get_by_test_id("pending-count")).to_have_text("0")

    # the rejection shows up as learned negative terms on the Characters tab
    page.get_by_test_id("tab-characters").click()
    expect(page.get_by_test_id("learned-terms")).to_contain_text("wrong art style")


def test_gallery_shows_output_images(page, studio_server):
    from playwright.sync_api import expect

    (studio_server.output_dir / "sub").mkdir(exist_ok=True)
    (studio_server.output_dir / "sub" / "ComfyUI_00001_.png").write_bytes(png_bytes("green"))
    page.goto(studio_server.base_url + "/")
    page.get_by_test_id("tab-gallery").click()
    item = page.locator('[data-testid="gallery-grid"] [data-testid="gallery-item"][data-path="sub/ComfyUI_00001_.png"]')
    expect(item).to_be_visible()
    expect(item).to_contain_text("ComfyUI_00001_.png")
    page.wait_for_function("""() => { const i = document.querySelector('[data-testid="gallery-item"] img');
                                      return i && i.complete && i.naturalWidth > 0; }""")


def test_ingest_uploads_from_the_browser(page, studio_server):
    from playwright.sync_api import expect

    project, character, _ = seed(studio_server)
    open_panel(page, studio_server, project, character)
    page.get_by_test_id("tab-ingest").click()
    page.get_by_test_id("ingest-files").set_input_files([
        {"name": "a.png", "mimeType": "image/png", "buffer": png_bytes("purple")},
        {"name": "b.png", "mimeType": "image/png", "buffer": png_bytes("purple")},  # same bytes: a duplicate
        {"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image"},
    ])
    page.get_by_test_id("ingest-caption").fill("uploaded in the browser")
    page.get_by_test_id("ingest-upload").click()
    expect(page.get_by_test_id("ingest-status")).to_contain_text("1 added as pending, 2 skipped")
    expect(page.get_by_test_id("ingest-skipped")).to_contain_text("notes.png")
    rows = db_rows(studio_server, "SELECT id, status, caption FROM images WHERE character_id = ?", character["id"])
    assert [(r[1], r[2]) for r in rows] == [("pending", "uploaded in the browser")]
    page.get_by_test_id("tab-approvals").click()
    expect(page.get_by_test_id(f"pending-card-{rows[0][0]}")).to_be_visible()


def test_characters_tab_creates_and_edits_and_escapes(page, studio_server):
    from playwright.sync_api import expect

    project, _, _ = seed(studio_server)
    page.goto(studio_server.base_url + "/")
    page.get_by_test_id("project-select").select_option(str(project["id"]))
    page.get_by_test_id("tab-characters").click()
    hostile = '<img src=x onerror="window.__pwned=1">Rin'
    page.get_by_test_id("new-character-name").fill(hostile)
    page.get_by_test_id("new-character-design").fill("1girl, <b>black</b> hair")
    page.get_by_test_id("create-character").click()
    chars = call(studio_server, "GET", f"/projects/{project['id']}/characters")["items"]
    rin = next(c for c in chars if c["name"] == hostile)
    expect(page.get_by_test_id(f"character-row-{rin['id']}")).to_contain_text(hostile)  # shown as text
    expect(page.get_by_test_id("character-select")).to_have_value(str(rin["id"]))

    page.get_by_test_id("edit-design-prompt").fill("1girl, twin tails, red ribbon")
    page.get_by_test_id("edit-trigger-word").fill("rin_ls")
    page.get_by_test_id("save-character").click()
    expect(page.get_by_test_id("effective-positive")).to_contain_text("rin_ls, 1girl, twin tails, red ribbon")
    assert call(studio_server, "GET", f"/characters/{rin['id']}")["design_prompt"] == "1girl, twin tails, red ribbon"
    assert page.evaluate("window.__pwned") is None
    assert page.locator('[data-testid="lora-studio-panel"] img[src="x"]').count() == 0


def test_generate_errors_are_toasted_and_training_needs_a_model(page, studio_server):
    from playwright.sync_api import expect

    project, character, _ = seed(studio_server)
    open_panel(page, studio_server, project, character)
    page.get_by_test_id("tab-generate").click()
    expect(page.get_by_test_id("style-checkpoint")).to_have_value("")
    page.get_by_test_id("gen-submit").click()  # the style has no checkpoint: 400
    expect(page.get_by_test_id("toast").filter(has_text="checkpoint")).to_be_visible()
    expect(page.get_by_test_id("gen-error")).to_contain_text("checkpoint")

    page.get_by_test_id("tab-training").click()
    expect(page.get_by_test_id("train-models-hint")).to_be_visible()
    expect(page.get_by_test_id("train-start")).to_be_disabled()


def test_job_events_update_the_job_list(page, studio_server):
    """A job event pushed over the websocket shows up with its progress bar, without a reload.
    The events socket is answered by Playwright (the server only emits events for real jobs,
    and a real training job needs a base model)."""
    from playwright.sync_api import expect

    sockets = []
    page.route_web_socket("**/lora-studio/v1/events", lambda ws: sockets.append(ws))
    page.goto(studio_server.base_url + "/")
    page.get_by_test_id("tab-training").click()
    deadline = time.monotonic() + 5
    while not sockets and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert sockets, "the page did not open the events websocket"

    job = {"id": 987654, "kind": "training", "status": "running", "progress": 0.42, "message": "step 42/100",
           "error": None, "result": None, "character_id": None, "updated_at": "2099-01-01T00:00:00+00:00"}
    sockets[-1].send(json.dumps({"type": "lora_studio.job", "data": job}))
    expect(page.get_by_test_id("job-987654")).to_be_visible()
    expect(page.get_by_test_id("job-progress-987654")).to_have_attribute("aria-valuenow", "42")
    expect(page.get_by_test_id("job-status-987654")).to_have_text("running · 42%")
    expect(page.get_by_test_id("job-cancel-987654")).to_be_visible()

    done = {**job, "status": "succeeded", "progress": 1.0, "message": "done", "updated_at": "2099-01-01T00:01:00+00:00"}
    sockets[-1].send(json.dumps({"type": "lora_studio.job", "data": done}))
    expect(page.get_by_test_id("job-status-987654")).to_have_text("succeeded · 100%")
    expect(page.get_by_test_id("job-cancel-987654")).to_have_count(0)


def test_panel_module_has_no_import_side_effects(page, studio_server):
    page.goto(studio_server.base_url + "/lora-studio/v1/health")
    result = page.evaluate("""async () => {
      const before = document.documentElement.outerHTML;
      const mod = await import('/lora-studio/web/comfyui/panel.js');
      return {same: document.documentElement.outerHTML === before, exported: typeof mod.mountPanel};
    }""")
    assert result == {"same": True, "exported": "function"}


def test_generate_queues_on_comfyui_and_shows_the_result(page, studio_server):
    """Set the project's checkpoint in the style form, queue a generation on the stand-in ComfyUI,
    follow it to 'succeeded' and see its image, then find it in the gallery."""
    from playwright.sync_api import expect

    project, character, _ = seed(studio_server)
    open_panel(page, studio_server, project, character)
    page.get_by_test_id("tab-generate").click()
    page.get_by_test_id("style-checkpoint").fill("model.safetensors")
    page.get_by_test_id("style-width").fill("512")
    page.get_by_test_id("style-height").fill("512")
    page.get_by_test_id("style-save").click()
    expect(page.get_by_test_id("toast").filter(has_text="Style saved")).to_be_visible()
    style = call(studio_server, "GET", f"/projects/{project['id']}/style")
    assert (style["checkpoint"], style["width"], style["height"]) == ("model.safetensors", 512, 512)

    page.get_by_test_id("gen-seed").fill("1234")
    page.get_by_test_id("gen-submit").click()
    result = page.get_by_test_id("gen-result")
    expect(result).to_contain_text("Generation #")
    expect(result).to_contain_text("ComfyUI prompt id:")
    page.get_by_test_id("gen-refresh").click()
    expect(page.get_by_test_id("gen-status")).to_have_text("status: succeeded")  # the refresh, or the tick
    page.wait_for_function("""() => { const i = document.querySelector('[data-testid="gen-result"] img');
                                      return i && i.complete && i.naturalWidth > 0; }""")

    page.get_by_test_id("tab-gallery").click()
    expect(page.locator(f'[data-testid="gallery-item"][data-path^="lora_studio/{project["slug"]}/"]')).to_have_count(1)


COMFY_APP_STUB = """
export const app = {
  extensions: [], tabs: [], toasts: [],
  extensionManager: {
    registerSidebarTab(tab) { app.tabs.push(tab); },
    toast: { add(t) { app.toasts.push(t); } },
  },
  registerExtension(ext) { app.extensions.push(ext); if (ext.setup) ext.setup(); },
};
window.comfyApp = app;
"""
COMFY_API_STUB = """
class Api extends EventTarget {
  constructor() { super(); this.calls = []; }
  fetchApi(route, options) { this.calls.push(route); return fetch(route, options); }
  apiURL(route) { return route; }
}
export const api = new Api();
window.comfyApi = api;
"""
COMFY_PAGE = """<!doctype html><html><body>
<div id="sidebar" style="width: 420px; height: 700px"></div>
<script type="module">
  // ComfyUI imports every .js file of WEB_DIRECTORY as an extension module
  await import("/extensions/lora-studio/panel.js");
  await import("/extensions/lora-studio/lora_studio.js");
  window.extensionsLoaded = true;
</script></body></html>"""


def test_comfyui_extension_registers_a_sidebar_tab(page, studio_server):
    """lora_studio.js against stand-ins of ComfyUI's scripts/app.js and scripts/api.js, served at
    the paths ComfyUI uses (/extensions/<pack>/…, ../../scripts/…)."""
    from playwright.sync_api import expect

    web_dir = Path(__file__).resolve().parents[2] / "web" / "comfyui"
    js = "text/javascript"
    page.route("**/scripts/app.js", lambda r: r.fulfill(body=COMFY_APP_STUB, content_type=js))
    page.route("**/scripts/api.js", lambda r: r.fulfill(body=COMFY_API_STUB, content_type=js))
    page.route("**/extensions/lora-studio/*.js", lambda r: r.fulfill(
        body=(web_dir / r.request.url.rsplit("/", 1)[-1]).read_text(), content_type=js))
    page.route("**/comfyui-test.html", lambda r: r.fulfill(body=COMFY_PAGE, content_type="text/html"))
    project, character, _ = seed(studio_server)

    page.goto(studio_server.base_url + "/comfyui-test.html")
    page.wait_for_function("window.extensionsLoaded === true")
    reg = page.evaluate("""() => ({names: comfyApp.extensions.map((e) => e.name),
      tabs: comfyApp.tabs.map((t) => ({id: t.id, icon: t.icon, title: t.title, type: t.type,
                                       render: typeof t.render, destroy: typeof t.destroy}))})""")
    assert reg == {"names": ["LoraStudio.Panel"], "tabs": [{"id": "lora-studio", "icon": "pi pi-images",
        "title": "LoRA Studio", "type": "custom", "render": "function", "destroy": "function"}]}
    assert page.locator('[data-testid="lora-studio-panel"]').count() == 0  # nothing until the tab opens

    page.evaluate("() => { const s = document.getElementById('sidebar'); comfyApp.tabs[0].render(s); "
                  "comfyApp.tabs[0].render(s); }")  # opened twice: one panel
    expect(page.locator('[data-testid="lora-studio-panel"]')).to_have_count(1)
    expect(page.locator("style#lora-studio-panel-style")).to_have_count(1)
    page.get_by_test_id("project-select").select_option(str(project["id"]))
    page.get_by_test_id("character-select").select_option(str(character["id"]))
    page.get_by_test_id("tab-generate").click()
    page.get_by_test_id("gen-submit").click()  # no checkpoint yet: a ComfyUI toast
    page.wait_for_function("comfyApp.toasts.some((t) => t.severity === 'error' && /checkpoint/.test(t.detail))")
    toast = page.evaluate("comfyApp.toasts.find((t) => t.severity === 'error')")
    assert toast["life"] == 4000 and toast["summary"]
    calls = page.evaluate("comfyApi.calls")
    paths = {c.split("?")[0] for c in calls}  # the project list is fetched page by page (?limit=…&cursor=…)
    assert "/lora-studio/v1/projects" in paths and f"/lora-studio/v1/characters/{character['id']}/generate" in paths

    page.get_by_test_id("tab-training").click()
    page.evaluate("""() => comfyApi.dispatchEvent(new CustomEvent('lora_studio.job', {detail: {
      id: 4242, kind: 'training', status: 'running', progress: 0.5, message: 'half way', character_id: null}}))""")
    expect(page.get_by_test_id("job-status-4242")).to_have_text("running · 50%")
