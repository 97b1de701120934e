"""The Training tab end to end: the form built from GET /training/options, a real tiny training started from
the browser (advanced options unfolded), its progress (step, loss, it/s, ETA) and sample images shown as they
come, the LoRA in the character's list; then a long run cancelled and resumed from its checkpoint."""

from __future__ import annotations

import copy
import random
import re
import uuid

import pytest
from support.images import noise_png
from support.processes import clean_env, studio_process
from support.studio_http import RunningStudio, call, db_rows, open_panel, upload

pytestmark = [pytest.mark.browser, pytest.mark.training]

Server = RunningStudio


@pytest.fixture(scope="module")
def training_server(tmp_path_factory):
    """The standalone studio with a tiny SD1.5 model in its models folder and a minimum of two
    approved images (the settings, through the environment). Its C++ compiler is missing (CXX), so a run
    with torch.compile ticked must fall back to the plain UNet and say so."""
    pytest.importorskip("diffusers")
    from support.tiny_sd import build_tiny_sd15

    root = tmp_path_factory.mktemp("training")
    data = root / "data"
    build_tiny_sd15(data / "models" / "tiny-sd15")
    env = clean_env(LORA_STUDIO_MIN_APPROVED_IMAGES="2", OMP_NUM_THREADS="1", CXX=str(root / "no-such-g++"))
    with studio_process(root, data, "--loras-dir", str(root / "loras"), env=env) as base:
        yield Server(base, data)


def seed_character(server):
    tag = uuid.uuid4().hex[:8]
    project = call(server, "POST", "/projects", {"name": f"Train {tag}"})
    character = call(server, "POST", f"/projects/{project['id']}/characters",
                      {"name": f"Aiko {tag}", "design_prompt": "1girl, silver hair", "trigger_word": "aikotnk"})
    base = random.Random(tag).randrange(1 << 30)
    created = upload(server, character["id"], {f"img{i}.png": noise_png(base + i) for i in range(2)})["created"]
    for image in created:
        call(server, "POST", f"/images/{image['id']}/approve")
    return project, character


def fill_tiny_run(page, *, steps: int, sample_every: int, checkpoint_every: int) -> None:
    """The form for a rank-4, 64 px run on the CPU (the advanced options unfolded for it)."""
    page.get_by_test_id("train-steps").fill(str(steps))
    page.get_by_test_id("train-rank").fill("4")
    page.get_by_test_id("train-advanced").locator("summary").click()
    page.get_by_test_id("train-resolution").fill("64")
    page.get_by_test_id("train-sample-every").fill(str(sample_every))
    page.get_by_test_id("train-checkpoint-every").fill(str(checkpoint_every))
    page.get_by_test_id("train-device").select_option("cpu")


def form_state(page, option: dict) -> dict:
    """An option's control in the form: its value, checked state and placeholder (folded away or not)."""
    control = page.get_by_test_id("train-" + option["name"].replace("_", "-"))
    return control.evaluate("(e) => ({value: e.value, checked: e.checked, placeholder: e.placeholder || ''})")


def assert_form_shows(page, described: dict) -> None:
    """Every option of the route has its control, showing the route's default: the value when it is one for
    every architecture, else blank with the rule or the per-architecture values as the placeholder."""
    archs = described["architectures"]
    for option in described["options"]:
        state, defaults = form_state(page, option), [option["default"][a] for a in archs]
        if option["type"] == "boolean":
            assert state["checked"] is defaults[0], option["name"]
        elif option.get("choices"):
            assert state["value"] == defaults[0], option["name"]
        elif option["derived"]:
            assert state["value"] == "" and option["derived"] in state["placeholder"], (option["name"], state)
        elif option["by_arch"]:
            assert state["value"] == "" and all(str(v) in state["placeholder"] for v in defaults), state
        else:
            assert float(state["value"]) == defaults[0], (option["name"], state)


def test_the_form_shows_what_the_options_route_says(page, training_server):
    from playwright.sync_api import expect

    described = call(training_server, "GET", "/training/options")
    assert {o["name"] for o in described["options"]} >= {"steps", "rank", "alpha", "lr_scheduler", "min_snr_gamma"}
    project, character = seed_character(training_server)
    # the route's answer with other defaults: the form shows those (no default or option list lives in the panel)
    changed = copy.deepcopy(described)
    for option in changed["options"]:
        new = {"steps": 1234, "lr_scheduler": "constant", "bucketing": False, "min_snr_gamma": 2.5}.get(option["name"])
        if new is not None:
            option["default"] = {arch: new for arch in changed["architectures"]}
        if option["name"] == "optimizer":
            option["choices"] = [*option["choices"], "lion"]
    page.route("**/training/options", lambda route: route.fulfill(json=changed))
    open_panel(page, training_server, project, character, tab="training")
    expect(page.get_by_test_id("train-steps")).to_have_value("1234")
    assert_form_shows(page, changed)
    assert page.get_by_test_id("train-optimizer").locator("option").all_text_contents()[-1] == "lion"
    page.unroute("**/training/options")
    page.reload()
    open_panel(page, training_server, project, character, tab="training")
    expect(page.get_by_test_id("train-steps")).to_have_value(str(described["options"][0]["default"]["sd15"]))
    assert_form_shows(page, described)


def newest_run_id(page) -> int:
    row = page.locator('[data-testid="train-runs"] [data-testid^="run-"][data-status]').first
    row.wait_for()
    return int(re.fullmatch(r"run-(\d+)", row.get_attribute("data-testid")).group(1))


def test_start_a_tiny_training_and_watch_it_finish(page, training_server):
    from playwright.sync_api import expect

    project, character = seed_character(training_server)
    open_panel(page, training_server, project, character, tab="training")
    expect(page.get_by_test_id("train-base-model")).to_have_value("tiny-sd15")
    expect(page.get_by_test_id("train-steps")).to_have_value("1500")  # defaults for a character LoRA (the route's)
    expect(page.get_by_test_id("train-rank")).to_have_value("16")
    expect(page.get_by_test_id("train-alpha")).to_have_attribute("placeholder", "auto: rank / 2")
    expect(page.get_by_test_id("train-resolution")).to_be_hidden()  # folded away
    fill_tiny_run(page, steps=6, sample_every=3, checkpoint_every=3)
    page.get_by_test_id("train-compile").check()  # no working compiler on this server: falls back
    page.get_by_test_id("train-start").click()

    job_id = newest_run_id(page)
    status = page.get_by_test_id(f"run-status-{job_id}")
    expect(status).to_have_text("succeeded · 100%", timeout=240_000)
    expect(page.get_by_test_id(f"train-warnings-{job_id}")).to_contain_text(
        "torch.compile failed, training without it: InvalidCxxCompiler")
    job = call(training_server, "GET", f"/jobs/{job_id}")
    assert job["payload"]["compile"] is True and job["result"]["compiled"] is False
    expect(page.get_by_test_id(f"train-step-{job_id}")).to_have_text("step 6/6")
    expect(page.get_by_test_id(f"train-loss-{job_id}")).to_have_text(re.compile(r"loss \d+\.\d{4}"))
    expect(page.get_by_test_id(f"train-speed-{job_id}")).to_have_text(re.compile(r"\d+\.\d\d it/s"))
    # the sample images, loaded from the server
    for step in (3, 6):
        img = page.get_by_test_id(f"train-sample-{job_id}-{step}")
        expect(img).to_be_visible()
        page.wait_for_function("(el) => el.complete && el.naturalWidth === 64", arg=img.element_handle())
    assert "aikotnk" in page.get_by_test_id(f"train-sample-{job_id}-3").get_attribute("title")
    # the loss chart (or, with a single progress record seen, its value) beside the samples
    beside = page.get_by_test_id(f"train-samples-{job_id}").locator("xpath=..").locator(".ls-losschart")
    expect(beside).to_have_count(1)
    expect(beside).to_contain_text(re.compile(r"loss"))
    # the LoRA in the run and in the character's list
    lora_name = page.get_by_test_id(f"train-lora-{job_id}").text_content()
    assert lora_name.endswith("-v1.safetensors")
    expect(page.get_by_test_id("lora-item").filter(has_text=lora_name)).to_contain_text("current")
    assert db_rows(training_server, "SELECT file_name FROM lora_models WHERE job_id = ?", job_id) == [(lora_name,)]


def test_cancel_a_run_and_resume_it_from_its_checkpoint(page, training_server):
    from playwright.sync_api import expect

    project, character = seed_character(training_server)
    open_panel(page, training_server, project, character, tab="training")
    expect(page.get_by_test_id("train-base-model")).to_have_value("tiny-sd15")
    fill_tiny_run(page, steps=3000, sample_every=0, checkpoint_every=2)
    page.get_by_test_id("train-start").click()

    job_id = newest_run_id(page)
    step = page.get_by_test_id(f"train-step-{job_id}")
    expect(step).to_have_text(re.compile(r"step ([3-9]|\d\d+)/3000"), timeout=240_000)  # it moves, past a checkpoint
    expect(page.get_by_test_id(f"train-eta-{job_id}")).to_have_text(re.compile(r"ETA \d+"))
    page.get_by_test_id(f"run-cancel-{job_id}").click()
    expect(page.get_by_test_id(f"run-status-{job_id}")).to_have_text(re.compile(r"^cancelled"), timeout=120_000)
    resume = page.get_by_test_id(f"train-resume-{job_id}")
    expect(resume).to_have_text(re.compile(r"Resume from step \d+"))
    resume.click()
    page.wait_for_function("""(id) => {
      const row = document.querySelector('[data-testid="train-runs"] [data-testid^="run-"][data-status]');
      return row && row.dataset.testid !== `run-${id}`;
    }""", arg=job_id)
    new_id = newest_run_id(page)
    assert new_id > job_id
    expect(page.get_by_test_id(f"run-{new_id}")).to_contain_text(f"resumed from #{job_id}", timeout=240_000)
    page.get_by_test_id(f"run-cancel-{new_id}").click()
    expect(page.get_by_test_id(f"run-status-{new_id}")).to_have_text(re.compile(r"^cancelled"), timeout=120_000)
    assert db_rows(training_server, "SELECT count(*) FROM lora_models l JOIN characters c ON c.id = l.character_id "
                                    "WHERE c.id = ?", character["id"]) == [(0,)]


def test_too_few_approved_images_are_said_before_starting(page, training_server):
    """The form says how many approved images the gate wants (GET /models) instead of failing on Start."""
    from playwright.sync_api import expect

    tag = uuid.uuid4().hex[:8]
    project = call(training_server, "POST", "/projects", {"name": f"Few {tag}"})
    character = call(training_server, "POST", f"/projects/{project['id']}/characters", {"name": f"Mio {tag}"})
    (image,) = upload(training_server, character["id"], {"one.png": noise_png(random.randrange(1 << 30))})["created"]
    call(training_server, "POST", f"/images/{image['id']}/approve")
    open_panel(page, training_server, project, character, tab="training")
    expect(page.get_by_test_id("train-info")).to_contain_text("has 1 approved image(s); training needs at least 2")
