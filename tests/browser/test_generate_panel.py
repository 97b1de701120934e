"""The Generate tab end to end against the standalone studio and the stand-in ComfyUI, in a panel as narrow as
ComfyUI's sidebar: txt2img to its thumbnail, img2img/reference sent with the chosen approved images, a running
generation cancelled, the recent list, a 409 shown as a banner, a batch for the dataset, and templates (an
editor-format file refused with the API's message, an API export imported, rebound, used and deleted)."""

from __future__ import annotations

import json
import random
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.images import noise_png
from support.processes import app_in_thread, studio_process
from support.studio_http import RunningStudio, call, open_panel, upload

pytestmark = [pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[2]
OBJECT_INFO = ROOT / "tests" / "fixtures" / "comfyui" / "object_info.json"
EDITOR_WORKFLOW = ROOT / "example_workflows" / "character_txt2img_with_lora.json"
SIDEBAR_PX = 360  # ComfyUI's default sidebar is about 360-400 px wide


@dataclass
class Server(RunningStudio):
    fake: Any  # the stand-in ComfyUI's aiohttp app

    @property
    def comfy(self):
        from support.fake_comfyui import state_of

        return state_of(self.fake)

    def fake_has(self, method: str, path: str) -> bool:
        """Whether the stand-in ComfyUI answers this route (it grows; the tests use only what it has)."""
        return any(r.method == method and r.resource is not None and r.resource.canonical == path
                   for r in self.fake.router.routes())


@pytest.fixture(scope="module")
def gen_server(tmp_path_factory):
    """The standalone studio whose generations go to a stand-in ComfyUI that writes into the gallery folder."""
    from support.fake_comfyui import create_fake_comfyui

    root = tmp_path_factory.mktemp("generate")
    data, out = root / "data", root / "comfyui-output"
    out.mkdir()
    fake = create_fake_comfyui(json.loads(OBJECT_INFO.read_text()), out)
    with app_in_thread(fake, "fake-comfyui") as comfyui_url, \
            studio_process(root, data, "--comfyui-output", str(out), "--comfyui-url", comfyui_url) as base:
        yield Server(base, data, fake)


def seed_character(server, approved: int = 0):
    """A project whose style can generate, a character and `approved` approved images of it."""
    tag = uuid.uuid4().hex[:8]
    project = call(server, "POST", "/projects", {"name": f"Gen {tag}"})
    call(server, "PATCH", f"/projects/{project['id']}/style",
         {"checkpoint": "model.safetensors", "width": 512, "height": 512, "steps": 4})
    character = call(server, "POST", f"/projects/{project['id']}/characters",
                     {"name": f"Aiko {tag}", "design_prompt": "1girl, silver hair", "trigger_word": "aikotnk"})
    ids = []
    if approved:
        base = random.Random(tag).randrange(1 << 30)
        created = upload(server, character["id"], {f"a{i}.png": noise_png(base + i) for i in range(approved)})["created"]
        for image in created:
            call(server, "POST", f"/images/{image['id']}/approve")
            ids.append(image["id"])
    return project, character, ids


def open_generate(page, server, project, character):
    """The panel in a container as wide as ComfyUI's sidebar, on the Generate tab."""
    open_panel(page, server, project, character, tab="generate")
    page.evaluate(f"() => {{ const a = document.getElementById('app'); a.style.width = '{SIDEBAR_PX}px'; "
                  "a.style.margin = '0'; }")
    page.get_by_test_id("gen-target").filter(has_text=character["name"]).wait_for()


def assert_fits(page):
    """No horizontal overflow: the tab, its scrolling body and every visible element stay inside the panel."""
    found = page.evaluate("""() => {
      const section = document.querySelector('[data-testid="section-generate"]');
      const body = section.closest('.ls-body');
      const edge = body.getBoundingClientRect().right;
      const outside = Array.from(section.querySelectorAll('*')).filter((e) => {
        const r = e.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && r.right > edge + 0.5;
      }).map((e) => e.dataset.testid || e.tagName);
      return {section: [section.scrollWidth, section.clientWidth], body: [body.scrollWidth, body.clientWidth],
              panel: body.clientWidth, outside};
    }""")
    assert found["panel"] <= SIDEBAR_PX, found
    assert found["section"][0] <= found["section"][1], found
    assert found["body"][0] <= found["body"][1], found
    assert found["outside"] == [], found


def assert_no_null_text(page):
    text = page.get_by_test_id("section-generate").inner_text()
    assert not re.search(r"\b(null|undefined|NaN)\b", text), text


def posted_generate(page, click):
    """The JSON body the panel POSTs to /characters/{id}/generate when `click()` runs."""
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/generate")) as req:
        click()
    return req.value.post_data_json


def wait_image_loaded(page, selector: str):
    page.wait_for_function("""(sel) => { const i = document.querySelector(sel);
                                         return i && i.complete && i.naturalWidth > 0; }""", arg=selector)


# --- tests -----------------------------------------------------------------------------------


def test_txt2img_reaches_succeeded_with_its_thumbnail_in_a_sidebar_wide_panel(page, gen_server):
    from playwright.sync_api import expect

    project, character, _ = seed_character(gen_server)
    open_generate(page, gen_server, project, character)
    expect(page.get_by_test_id("gen-image-picker")).to_be_hidden()  # txt2img takes no image
    expect(page.get_by_test_id("gen-denoise")).to_be_hidden()
    expect(page.get_by_test_id("gen-recent")).to_contain_text("No generations yet.")
    assert_fits(page)

    page.get_by_test_id("gen-seed").fill("1234")
    page.get_by_test_id("gen-prompt-extra").fill("smiling")
    body = posted_generate(page, page.get_by_test_id("gen-submit").click)
    assert body == {"kind": "txt2img", "seed": 1234, "batch_size": 1, "use_lora": True, "prompt_extra": "smiling"}

    expect(page.get_by_test_id("gen-status")).to_have_text("status: succeeded", timeout=15_000)  # polled, no click
    wait_image_loaded(page, '[data-testid="gen-result"] img[data-testid="gen-output"]')
    (gen,) = call(gen_server, "GET", f"/characters/{character['id']}/generations?limit=10")["items"]
    assert gen["status"] == "succeeded" and gen["seed"] == 1234
    assert "smiling" in json.dumps(gen["graph"])
    expect(page.get_by_test_id("gen-prompt")).to_have_text(f"ComfyUI prompt id: {gen['prompt_id']}")
    # the recent list has it too, with the same rendering
    expect(page.get_by_test_id(f"generation-status-{gen['id']}")).to_have_text("status: succeeded")
    assert_no_null_text(page)
    assert_fits(page)

    # after a reload the character's recent generations still show it, with its thumbnail
    open_generate(page, gen_server, project, character)
    row = page.get_by_test_id(f"generation-{gen['id']}")
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(row).to_contain_text("seed 1234")
    wait_image_loaded(page, f'[data-testid="generation-{gen["id"]}"] img')
    assert_no_null_text(page)


def test_img2img_and_reference_send_the_chosen_approved_images(page, gen_server):
    from playwright.sync_api import expect

    project, character, ids = seed_character(gen_server, approved=3)
    open_generate(page, gen_server, project, character)
    page.get_by_test_id("gen-kind").select_option("img2img")
    picker = page.get_by_test_id("gen-image-picker")
    expect(picker).to_be_visible()
    for iid in ids:  # the approved images' thumbnails, from the image file route
        wait_image_loaded(page, f'[data-testid="gen-images"] label:has([data-testid="gen-pick-{iid}"]) img')
    expect(page.get_by_test_id("gen-weight")).to_be_hidden()  # reference only
    # img2img takes one image: a second pick replaces the first
    page.get_by_test_id(f"gen-pick-{ids[0]}").check()
    page.get_by_test_id(f"gen-pick-{ids[1]}").check()
    expect(page.get_by_test_id(f"gen-pick-{ids[0]}")).not_to_be_checked()
    page.get_by_test_id("gen-denoise").fill("0.5")
    assert_fits(page)
    body = posted_generate(page, page.get_by_test_id("gen-submit").click)
    assert body == {"kind": "img2img", "image_ids": [ids[1]], "denoise": 0.5, "batch_size": 1, "use_lora": True}

    if gen_server.fake_has("POST", "/upload/image"):  # the studio uploads the image to ComfyUI first
        expect(page.get_by_test_id("gen-status")).to_have_text("status: succeeded", timeout=15_000)
        (gen,) = call(gen_server, "GET", f"/characters/{character['id']}/generations")["items"]
        assert gen["kind"] == "img2img" and gen["params"]["image_ids"] == [ids[1]]
        assert any(n["class_type"] == "LoadImage" for n in gen["graph"].values())
        wait_image_loaded(page, '[data-testid="gen-result"] img[data-testid="gen-output"]')
    else:  # a ComfyUI that cannot take the upload: the reason is shown, not swallowed
        expect(page.get_by_test_id("gen-error")).to_be_visible()

    # reference: up to eight images, with weight and method; nothing of another kind is sent
    page.get_by_test_id("gen-kind").select_option("reference")
    expect(page.get_by_test_id("gen-weight")).to_be_visible()
    page.get_by_test_id(f"gen-pick-{ids[2]}").check()
    expect(page.get_by_test_id("gen-images-info")).to_contain_text(f"#{ids[1]}, #{ids[2]}")
    page.get_by_test_id("gen-weight").fill("0.8")
    page.get_by_test_id("gen-method").select_option("img2img")
    page.get_by_test_id("gen-use-lora").uncheck()
    body = posted_generate(page, page.get_by_test_id("gen-submit").click)
    assert body == {"kind": "reference", "image_ids": [ids[1], ids[2]], "denoise": 0.5, "weight": 0.8,
                    "method": "img2img", "batch_size": 1, "use_lora": False}

    # video: one image, frames and fps, no batch size, no LoRA switch
    page.get_by_test_id("gen-kind").select_option("video")
    expect(page.get_by_test_id("gen-batch")).to_be_hidden()
    expect(page.get_by_test_id("gen-use-lora")).to_be_hidden()
    page.get_by_test_id("gen-frames").fill("9")
    page.get_by_test_id("gen-fps").fill("8")
    body = posted_generate(page, page.get_by_test_id("gen-submit").click)
    assert body == {"kind": "video", "image_ids": [ids[1]], "frames": 9, "fps": 8}
    # the recorded server has no video model: the API's reason is on the tab
    expect(page.get_by_test_id("gen-error")).to_be_visible()
    assert_no_null_text(page)
    assert_fits(page)


def test_queued_and_running_generations_are_cancelled_from_the_tab(page, gen_server):
    from playwright.sync_api import expect

    project, character, _ = seed_character(gen_server)
    open_generate(page, gen_server, project, character)
    comfy = gen_server.comfy
    interrupts = len(comfy.interrupt_calls)
    status = page.get_by_test_id("gen-status")
    comfy.exec_delay = 120.0  # each prompt "runs" two minutes: it stays running until interrupted
    try:
        page.get_by_test_id("gen-submit").click()
        expect(status).to_have_text(re.compile(r"^status: running"), timeout=15_000)
        expect(page.get_by_test_id("gen-progress")).to_be_visible()
        expect(page.get_by_test_id("gen-prompt")).to_contain_text("ComfyUI prompt id: ")
        first = int(page.get_by_test_id("gen-current").get_attribute("data-id"))
        assert_no_null_text(page)
        if gen_server.fake_has("POST", "/queue"):  # a stand-in that can take a prompt off its queue
            page.get_by_test_id("gen-submit").click()  # waits behind the first
            expect(page.get_by_test_id("gen-current")).not_to_have_attribute("data-id", str(first))
            expect(status).to_have_text("status: queued")
            second = int(page.get_by_test_id("gen-current").get_attribute("data-id"))
            page.get_by_test_id("gen-cancel").click()
            expect(status).to_have_text("status: cancelled")
            expect(page.get_by_test_id(f"generation-status-{second}")).to_have_text("status: cancelled")
            prompt_id = call(gen_server, "GET", f"/generations/{second}")["prompt_id"]
            assert prompt_id not in [entry[1] for entry in comfy.pending]
        # the running one, from the recent list
        page.get_by_test_id(f"generation-cancel-{first}").click()
        expect(page.get_by_test_id(f"generation-status-{first}")).to_have_text("status: cancelled")
        expect(page.get_by_test_id(f"generation-cancel-{first}")).to_have_count(0)
        expect(page.get_by_test_id(f"generation-progress-{first}")).to_have_count(0)
    finally:
        comfy.exec_delay = 0.02
    assert len(comfy.interrupt_calls) > interrupts  # ComfyUI was told to stop it
    assert call(gen_server, "GET", f"/generations/{first}")["status"] == "cancelled"
    assert_no_null_text(page)


def test_a_busy_gpu_409_is_a_banner_with_the_apis_message(page, gen_server):
    from playwright.sync_api import expect

    project, character, _ = seed_character(gen_server)
    message = ("a LoRA training (job 7) is using the GPU ComfyUI shares: the studio's generations wait until it "
               "ends (cancel it, or generate when it is done)")
    page.route("**/lora-studio/v1/characters/*/generate", lambda route: route.fulfill(
        status=409, json={"error": {"code": "conflict", "message": message}}))
    open_generate(page, gen_server, project, character)
    page.get_by_test_id("gen-submit").click()
    banner = page.get_by_test_id("gen-error")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(message)
    expect(banner).to_have_attribute("data-status", "409")
    expect(banner).to_have_attribute("role", "alert")
    expect(page.get_by_test_id("gen-result")).to_be_hidden()
    assert_fits(page)
    page.unroute("**/lora-studio/v1/characters/*/generate")
    page.get_by_test_id("gen-submit").click()  # the next try goes through and the banner goes
    expect(banner).to_be_hidden()
    expect(page.get_by_test_id("gen-status")).to_have_text("status: succeeded", timeout=15_000)


def test_a_batch_for_the_dataset_adds_images_to_the_pending_queue(page, gen_server):
    from playwright.sync_api import expect

    project, character, _ = seed_character(gen_server)
    open_generate(page, gen_server, project, character)
    page.get_by_test_id("batch-count").fill("2")
    page.get_by_test_id("batch-in-flight").fill("1")
    expect(page.get_by_test_id("batch-kind")).to_have_value("txt2img")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/generate-batch")) as req:
        page.get_by_test_id("batch-start").click()
    assert req.value.post_data_json == {"kind": "txt2img", "count": 2, "in_flight": 1, "use_lora": True}
    row = page.locator('[data-testid^="batch-"][data-kind="generate_batch"]').first
    expect(row).to_have_attribute("data-status", "succeeded", timeout=30_000)
    job_id = int(row.get_attribute("data-testid").rsplit("-", 1)[1])
    expect(page.get_by_test_id(f"batch-status-{job_id}")).to_have_text("succeeded · 100%")
    result = call(gen_server, "GET", f"/jobs/{job_id}")["result"]
    created, skipped = len(result["created"]), len(result["skipped"])
    assert result["generated"] == 2 and result["failed"] == [] and created + skipped == 2 and created >= 1
    # what the job did, in words (an older stand-in draws the same picture for every seed: the dataset's
    # duplicate check skips the second)
    said = f"{created} image{'s' if created > 1 else ''} added to the pending queue"
    expect(page.get_by_test_id(f"batch-result-{job_id}")).to_have_text(
        said + (f" · {skipped} skipped as duplicates" if skipped else ""))
    pending = call(gen_server, "GET", f"/characters/{character['id']}/images?status=pending")["items"]
    assert len(pending) == created
    # the character picker's pending count follows
    expect(page.get_by_test_id("character-select").locator("option:checked")).to_contain_text(f"({created} pending)")
    # video cannot be batched
    page.get_by_test_id("gen-kind").select_option("video")
    expect(page.get_by_test_id("batch-start")).to_be_disabled()
    assert_no_null_text(page)
    assert_fits(page)


def api_workflow() -> dict:
    """An API-format export (ComfyUI: Export (API)) with two samplers: the seed has two candidate inputs."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"},
              "_meta": {"title": "Load Checkpoint"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}, "_meta": {"title": "Positive"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly", "clip": ["1", 1]}, "_meta": {"title": "Negative"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 4, "cfg": 5.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0]},
            "_meta": {"title": "First pass"}},
        "6": {"class_type": "KSampler", "inputs": {
            "seed": 2, "steps": 4, "cfg": 5.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.4,
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0]},
            "_meta": {"title": "Refine"}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"filename_prefix": "mine", "images": ["7", 0]}},
    }


def test_templates_import_rebind_generate_and_delete(page, gen_server, tmp_path):
    from playwright.sync_api import expect

    project, character, _ = seed_character(gen_server)
    open_generate(page, gen_server, project, character)
    expect(page.get_by_test_id("tpl-list")).to_contain_text("No templates yet.")

    # the editor's format (what Save writes) is refused with the API's message
    page.get_by_test_id("tpl-file").set_input_files(str(EDITOR_WORKFLOW))
    expect(page.get_by_test_id("tpl-name")).to_have_value("character_txt2img_with_lora")
    page.get_by_test_id("tpl-import").click()
    error = page.get_by_test_id("tpl-error")
    expect(error).to_contain_text("graph editor's format")
    expect(error).to_contain_text("Export (API)")
    assert call(gen_server, "GET", f"/projects/{project['id']}/templates")["items"] == []

    exported = tmp_path / "two pass.json"
    exported.write_text(json.dumps(api_workflow()))
    page.get_by_test_id("tpl-file").set_input_files(str(exported))
    page.get_by_test_id("tpl-name").fill("two pass")
    page.get_by_test_id("tpl-import").click()
    expect(page.get_by_test_id("tpl-list")).to_contain_text("two pass")
    expect(error).to_be_hidden()
    (template,) = call(gen_server, "GET", f"/projects/{project['id']}/templates")["items"]
    tid = template["id"]
    row = page.get_by_test_id(f"tpl-{tid}")
    expect(row).to_contain_text("two pass")
    # each field shows what it is bound to, among the inputs the studio found
    positive = page.get_by_test_id(f"tpl-binding-{tid}-positive")
    expect(positive.locator("option:checked")).to_have_text('2.text · CLIPTextEncode "Positive"')
    seed_select = page.get_by_test_id(f"tpl-binding-{tid}-seed")
    assert seed_select.locator("option").all_text_contents() == [
        "not bound", '5.seed · KSampler "First pass"', '6.seed · KSampler "Refine"', "all 2: 5.seed, 6.seed"]
    assert template["bindings"]["seed"] == [["5", "seed"], ["6", "seed"]]
    expect(seed_select.locator("option:checked")).to_have_text("all 2: 5.seed, 6.seed")
    seed_select.select_option('["6","seed"]')  # the option's value: [node, input]
    page.wait_for_function("""(url) => fetch(url).then((r) => r.json()).then((d) =>
        JSON.stringify(d.items[0].bindings.seed) === '[["6","seed"]]')""",
                           arg=f"{gen_server.api}/projects/{project['id']}/templates")
    expect(page.get_by_test_id(f"tpl-binding-{tid}-seed").locator("option:checked")).to_have_text(
        '6.seed · KSampler "Refine"')
    assert_fits(page)

    # the form's template picker has it; a template generation runs it with the character's prompt
    page.get_by_test_id("gen-kind").select_option("template")
    expect(page.get_by_test_id("gen-template")).to_have_value(str(tid))
    expect(page.get_by_test_id("gen-image-picker")).to_be_hidden()  # it binds no image
    page.get_by_test_id("gen-seed").fill("99")
    body = posted_generate(page, page.get_by_test_id("gen-submit").click)
    assert body == {"kind": "template", "template_id": tid, "seed": 99, "use_lora": True}
    expect(page.get_by_test_id("gen-status")).to_have_text("status: succeeded", timeout=15_000)
    (gen,) = call(gen_server, "GET", f"/characters/{character['id']}/generations")["items"]
    assert gen["graph"]["6"]["inputs"]["seed"] == 99 and gen["graph"]["5"]["inputs"]["seed"] == 1
    assert "aikotnk" in gen["graph"]["2"]["inputs"]["text"]

    # deleted after a confirmation
    page.get_by_test_id(f"tpl-delete-{tid}").click()
    page.get_by_test_id(f"tpl-delete-confirm-{tid}").click()
    expect(page.get_by_test_id("tpl-list")).to_contain_text("No templates yet.")
    assert call(gen_server, "GET", f"/projects/{project['id']}/templates")["items"] == []
    expect(page.get_by_test_id("gen-template")).to_have_value("")
    assert_no_null_text(page)


def test_video_outputs_errors_and_unqueued_generations_render_without_null(page, gen_server):
    """States the stand-in cannot produce on its recorded server (no video model), as the API shapes them:
    a video and an animated webp output, a failed generation's error, an active one with no prompt id yet."""
    from playwright.sync_api import expect

    project, character, _ = seed_character(gen_server)
    base = {"character_id": character["id"], "lora_model_id": None, "graph": {}, "created_at": "2099-01-01T00:00:00Z",
            "updated_at": "2099-01-01T00:00:00Z", "seed": 5, "progress": 0.0, "params": {}, "error": None,
            "outputs": None, "prompt_id": "p-1"}
    video = {**base, "id": 990003, "kind": "video", "status": "succeeded", "progress": 1.0,
             "params": {"image_ids": [4], "frames": 9},
             "outputs": [{"filename": "clip_00001_.webm", "subfolder": "lora_studio/p", "type": "output"},
                         {"filename": "clip_00001_.webp", "subfolder": "lora_studio/p", "type": "output",
                          "animated": True},
                         {"filename": "preview.png", "subfolder": "", "type": "temp"}]}
    failed = {**base, "id": 990002, "kind": "img2img", "status": "failed",
              "error": "ComfyUI failed the graph: out of memory"}
    waiting = {**base, "id": 990001, "kind": "txt2img", "status": "queued", "prompt_id": None, "seed": None}
    page.route(f"**/lora-studio/v1/characters/{character['id']}/generations?*", lambda route: route.fulfill(
        json={"items": [video, failed, waiting], "next_cursor": None}))
    page.route("**/lora-studio/v1/generations/990001", lambda route: route.fulfill(json=waiting))
    open_generate(page, gen_server, project, character)

    clip = page.get_by_test_id("generation-output-990003")
    expect(clip).to_have_count(2)  # the temp preview is not an output
    assert clip.nth(0).evaluate("(e) => [e.tagName, e.controls, e.dataset.media]") == ["VIDEO", True, "video"]
    assert clip.nth(0).get_attribute("src").endswith("/gallery/file?path=lora_studio%2Fp%2Fclip_00001_.webm")
    assert clip.nth(1).evaluate("(e) => [e.tagName, e.dataset.media]") == ["IMG", "animated"]
    expect(page.get_by_test_id("generation-990003")).to_contain_text("image #4 · frames 9")
    expect(page.get_by_test_id("generation-error-990002")).to_have_text("ComfyUI failed the graph: out of memory")
    expect(page.get_by_test_id("generation-status-990002")).to_have_text("status: failed")
    expect(page.get_by_test_id("generation-prompt-990001")).to_have_text("not queued yet")
    expect(page.get_by_test_id("generation-cancel-990001")).to_be_visible()
    expect(page.get_by_test_id("generation-cancel-990002")).to_have_count(0)
    assert_no_null_text(page)
    assert_fits(page)
