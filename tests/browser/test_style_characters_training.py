"""The Characters view and the Training view against the standalone studio (and its stand-in ComfyUI): the project
style's sampler and scheduler are <select>s holding ComfyUI's own lists, the effective prompt follows a rejection
without a reload, Start stays disabled below the approved-images gate, the view says why training cannot run,
and a run's loss chart is drawn from its progress."""

from __future__ import annotations

import json
import random
import time
import uuid

import pytest
from support.images import noise_png
from support.studio_http import call, open_panel, upload

pytestmark = pytest.mark.browser


def seed(server, images: int = 0):
    tag = uuid.uuid4().hex[:8]
    project = call(server, "POST", "/projects", {"name": f"Style {tag}"})
    character = call(server, "POST", f"/projects/{project['id']}/characters",
                     {"name": f"Yui {tag}", "design_prompt": "1girl, ponytail"})
    base = random.Random(tag).randrange(1 << 30)
    created = upload(server, character["id"], {f"i{i}.png": noise_png(base + i) for i in range(images)})["created"] \
        if images else []
    return project, character, created


def test_style_form_offers_comfyuis_lists_as_selects(page, studio_server):
    from playwright.sync_api import expect

    models = studio_server.data_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / "picked.safetensors").write_bytes(b"{}")  # listed by name: the datalist suggests it
    project, character, _ = seed(studio_server)
    lists = call(studio_server, "GET", "/samplers")
    assert lists["source"] == "comfyui"  # the stand-in ComfyUI answered /object_info/KSampler
    # the recorded /object_info lists no checkpoint files: answer GET /checkpoints as a ComfyUI that has two
    # (the route itself is tested in tests/integration/test_style_samplers.py)
    page.route("**/lora-studio/v1/checkpoints", lambda route: route.fulfill(json={
        "items": ["other.safetensors", "picked.safetensors"], "source": "comfyui"}))
    open_panel(page, studio_server, project, character, "characters")

    sampler = page.get_by_test_id("project-style-sampler")
    scheduler = page.get_by_test_id("project-style-scheduler")
    expect(sampler).to_have_value("dpmpp_2m")  # the project's default style
    assert sampler.evaluate("(e) => e.tagName") == "SELECT"
    assert sampler.locator("option").evaluate_all("(os) => os.map((o) => o.value)") == lists["samplers"]
    assert scheduler.locator("option").evaluate_all("(os) => os.map((o) => o.value)") == lists["schedulers"]
    expect(page.get_by_test_id("project-style-lists")).to_contain_text("ComfyUI's own lists")
    options = page.get_by_test_id("project-style-checkpoint-list").locator("option")
    assert "picked.safetensors" in options.evaluate_all("(os) => os.map((o) => o.value)")

    sampler.select_option("euler_ancestral")
    scheduler.select_option("normal")
    checkpoint = page.get_by_test_id("project-style-checkpoint-select")
    assert checkpoint.locator("option").evaluate_all("(os) => os.map((o) => o.value)") == [
        "", "other.safetensors", "picked.safetensors"]  # none chosen yet: nothing is picked for the user
    expect(page.get_by_test_id("project-style-checkpoint")).to_be_hidden()  # no free text while ComfyUI answers
    checkpoint.select_option("picked.safetensors")
    page.get_by_test_id("project-style-steps").fill("31")
    page.get_by_test_id("project-style-variations").fill("smiling\nfrom behind\n")
    page.get_by_test_id("project-style-save").click()
    expect(page.get_by_test_id("toast").filter(has_text="Style saved")).to_be_visible()
    style = call(studio_server, "GET", f"/projects/{project['id']}/style")
    assert (style["sampler"], style["scheduler"], style["checkpoint"], style["steps"], style["variations"]) == \
        ("euler_ancestral", "normal", "picked.safetensors", 31, ["smiling", "from behind"])

    # a value ComfyUI does not list (an older style) stays, marked, and the server's refusal is shown in words
    page.get_by_test_id("project-style-cfg").fill("500")
    page.get_by_test_id("project-style-save").click()
    expect(page.get_by_test_id("project-style-error")).to_contain_text("cfg")


def test_characters_view_follows_a_rejection_without_reload(page, studio_server):
    from playwright.sync_api import expect

    project, character, created = seed(studio_server, images=2)
    sockets = []  # the events socket answered by Playwright: the test sends the job event below itself
    page.route_web_socket("**/lora-studio/v1/events", lambda ws: sockets.append(ws))
    open_panel(page, studio_server, project, character, "characters")
    learned = page.get_by_test_id("learned-terms")
    expect(learned).to_have_text("none yet")

    page.get_by_test_id("tab-approvals").click()
    drop = created[0]["id"]
    page.get_by_test_id(f"reject-{drop}").click()
    page.get_by_test_id(f"reject-cat-{drop}-wrong_style").check()
    page.get_by_test_id(f"reject-confirm-{drop}").click()
    expect(page.get_by_test_id(f"pending-card-{drop}")).to_have_count(0)

    page.get_by_test_id("tab-characters").click()  # no ↻: the view noticed the decision
    expect(learned).to_contain_text("wrong art style")
    expect(page.get_by_test_id("effective-negative")).to_contain_text("wrong art style")
    expect(page.get_by_test_id("category-count-wrong_style")).to_have_attribute("data-count", "1")

    # while the view is shown, an automatic review that ends (its job event) brings the terms it taught
    call(studio_server, "POST", f"/images/{created[1]['id']}/reject", {"categories": ["not_solo"]})
    assert sockets, "the page did not open the events websocket"
    job = {"id": 770001, "kind": "auto_review", "status": "succeeded", "progress": 1.0, "message": "done",
           "error": None, "result": {}, "character_id": character["id"], "updated_at": "2099-01-01T00:00:00+00:00"}
    sockets[-1].send(json.dumps({"type": "lora_studio.job", "data": job}))
    expect(learned).to_contain_text("multiple characters")


def test_start_is_disabled_below_the_gate(page, studio_server):
    from playwright.sync_api import expect

    models = studio_server.data_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / "gate.safetensors").write_bytes(b"{}")
    gate = call(studio_server, "GET", "/models")["min_approved_images"]
    project, character, created = seed(studio_server, images=gate)
    call(studio_server, "POST", "/images/decisions",
         {"image_ids": [i["id"] for i in created[: gate - 1]], "decision": "approve"})
    open_panel(page, studio_server, project, character, "training")
    start = page.get_by_test_id("train-start")
    expect(page.get_by_test_id("train-info")).to_contain_text(f"has {gate - 1} approved image(s)")
    expect(start).to_be_disabled()
    expect(start).to_have_attribute("title", f"Needs {gate} approved images ({gate - 1} now).")
    expect(page.get_by_test_id("train-blocked")).to_be_hidden()  # a model is there: only the gate holds it

    # the last approval, made in the panel, opens the gate without a reload
    page.get_by_test_id("tab-approvals").click()
    page.get_by_test_id(f"approve-{created[-1]['id']}").click()
    expect(page.get_by_test_id(f"pending-card-{created[-1]['id']}")).to_have_count(0)
    page.get_by_test_id("tab-training").click()
    expect(start).to_be_enabled()
    expect(page.get_by_test_id("train-info")).to_contain_text(f"{gate} approved image(s) will be trained on")


def test_training_says_up_front_why_it_cannot_run(page, studio_server):
    from playwright.sync_api import expect

    project, character, _ = seed(studio_server)
    for f in (studio_server.data_dir / "models").glob("*.safetensors"):
        f.unlink()
    open_panel(page, studio_server, project, character, "training")
    blocked = page.get_by_test_id("train-blocked")
    expect(blocked).to_be_visible()
    expect(page.get_by_test_id("train-models-hint")).to_contain_text("No base models found")
    expect(page.get_by_test_id("train-deps-hint")).to_be_hidden()
    expect(page.get_by_test_id("train-start")).to_be_disabled()

    # a server that reports its missing libraries and its model folders (mocked answer of GET /models)
    answer = {"base_models": [], "items": [], "min_approved_images": 10, "missing_dependencies": ["torch", "peft"],
              "model_dirs": ["/srv/comfy/models/lora_studio"], "checkpoint_dirs": ["/srv/comfy/models/checkpoints"]}
    page.route("**/lora-studio/v1/models", lambda route: route.fulfill(
        status=200, body=json.dumps(answer), headers={"Content-Type": "application/json"}))
    page.get_by_test_id("refresh").click()
    expect(page.get_by_test_id("train-deps-hint")).to_contain_text("torch, peft")
    dirs = page.get_by_test_id("train-models-dir")
    expect(dirs).to_have_count(2)
    expect(dirs.nth(0)).to_have_text("/srv/comfy/models/lora_studio")
    expect(page.get_by_test_id("train-start")).to_be_disabled()


def test_loss_chart_from_the_runs_progress(page, studio_server):
    """A run's progress records, as the job events bring them (the events socket is answered by Playwright: a
    real training needs torch and a model; tests/browser/test_training_panel.py runs one), become a polyline."""
    from playwright.sync_api import expect

    project, character, _ = seed(studio_server)
    sockets = []
    page.route_web_socket("**/lora-studio/v1/events", lambda ws: sockets.append(ws))
    open_panel(page, studio_server, project, character, "training")
    deadline = time.monotonic() + 5
    while not sockets and time.monotonic() < deadline:
        page.wait_for_timeout(50)
    assert sockets, "the page did not open the events websocket"

    job_id = 880000 + random.randrange(10000)
    losses = [0.31, 0.22, 0.27, 0.18, 0.15, 0.16, 0.11]
    for i, loss in enumerate(losses, start=1):
        job = {"id": job_id, "kind": "train", "status": "running", "progress": i / 10, "message": f"step {i * 10}/100",
               "error": None, "character_id": character["id"], "payload": {"base_model": "m.safetensors", "steps": 100},
               "result": {"progress": {"step": i * 10, "total_steps": 100, "loss": loss + 0.01, "smooth_loss": loss}},
               "updated_at": f"2099-01-01T00:00:{i:02d}+00:00"}
        sockets[-1].send(json.dumps({"type": "lora_studio.job", "data": job}))
    line = page.get_by_test_id(f"train-loss-chart-{job_id}-line")
    expect(line).to_have_attribute("data-points", str(len(losses)))
    expect(page.get_by_test_id(f"train-loss-note-{job_id}")).to_contain_text("while this panel is open")
    points = [tuple(map(float, p.split(","))) for p in line.get_attribute("points").split()]
    assert [x for x, _ in points] == sorted(x for x, _ in points)  # steps left to right
    ys = [y for _, y in points]
    assert ys.index(max(ys)) == losses.index(min(losses)) and ys.index(min(ys)) == losses.index(max(losses))

    # the run ends with the server's own history: the chart takes it whole
    history = [[s, 0.5 / s] for s in range(1, 101)]
    done = {**job, "status": "succeeded", "progress": 1.0, "updated_at": "2099-01-01T00:01:00+00:00",
            "result": {"progress": {"step": 100, "total_steps": 100, "loss": 0.1}, "loss_history": history}}
    sockets[-1].send(json.dumps({"type": "lora_studio.job", "data": done}))
    expect(line).to_have_attribute("data-points", "100")
    expect(page.get_by_test_id(f"train-loss-note-{job_id}")).to_have_count(0)
