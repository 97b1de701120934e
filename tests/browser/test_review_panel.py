"""The review features of the web panel, end to end: batch decisions and undo (Approvals tab), an
ingest job started from the browser (Ingest tab) and followed through the events socket or, when
it is silent, by polling, learned negative terms left out (Characters tab), caption edits, moving an
image to another character, and the project's unassigned pool. Each test seeds its own project
through the HTTP API and checks the SQLite database underneath."""

from __future__ import annotations

import json
import random
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from support.images import noise_png
from support.studio_http import call, db_rows, open_panel
from support.studio_http import upload as upload_files

pytestmark = pytest.mark.browser


# --- seeding through the HTTP API ------------------------------------------------------------


def upload(server, character_id: int, files: dict[str, bytes]) -> list[dict]:
    answer = upload_files(server, character_id, files)
    assert not answer["skipped"], answer["skipped"]
    return answer["created"]


def seed(server, n_images: int = 0, characters: int = 1):
    """A new project with `characters` characters; the first gets `n_images` distinct images."""
    tag = uuid.uuid4().hex[:8]
    project = call(server, "POST", "/projects", {"name": f"Review {tag}"})
    chars = [call(server, "POST", f"/projects/{project['id']}/characters",
                  {"name": f"{name} {tag}", "design_prompt": "1girl, silver hair"})
             for name in ["Mika", "Rin", "Aoi"][:characters]]
    base = random.Random(tag).randrange(1 << 30)
    created = upload(server, chars[0]["id"], {f"img{i}.png": noise_png(base + i) for i in range(n_images)}) \
        if n_images else []
    return project, chars, created


def db_eventually(server, sql: str, *args, expected, timeout: float = 10.0):
    """The UI shows a change before the request behind it has committed: poll the database."""
    deadline = time.monotonic() + timeout
    while (rows := db_rows(server, sql, *args)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows


def statuses(server, ids) -> dict[int, str]:
    marks = ",".join("?" * len(ids))
    return dict(db_rows(server, f"SELECT id, status FROM images WHERE id IN ({marks})", *ids))


# --- tests -----------------------------------------------------------------------------------

def test_batch_approve_then_undo(page, studio_server):
    from playwright.sync_api import expect

    project, (mika,), created = seed(studio_server, 3)
    a, b, c = (img["id"] for img in created)
    open_panel(page, studio_server, project, mika)
    for i in (a, b, c):
        expect(page.get_by_test_id(f"pending-card-{i}")).to_be_visible()
    expect(page.get_by_test_id("batch-approve")).to_be_disabled()

    page.get_by_test_id(f"select-{a}").check()
    page.get_by_test_id(f"select-{b}").check()
    expect(page.get_by_test_id("selected-count")).to_have_text("2 selected")
    page.get_by_test_id("batch-approve").click()
    expect(page.get_by_test_id(f"pending-card-{a}")).to_have_count(0)
    expect(page.get_by_test_id(f"pending-card-{b}")).to_have_count(0)
    expect(page.get_by_test_id(f"pending-card-{c}")).to_be_visible()
    assert statuses(studio_server, [a, b, c]) == {a: "approved", b: "approved", c: "pending"}
    decisions = db_rows(studio_server, "SELECT DISTINCT batch FROM image_decisions WHERE image_id IN (?, ?)", a, b)
    assert len(decisions) == 1  # one batch
    expect(page.get_by_test_id("approved-count")).to_have_text("2")
    expect(page.get_by_test_id("pending-count")).to_have_text("1")

    page.get_by_test_id("undo").click()
    expect(page.get_by_test_id(f"pending-card-{a}")).to_be_visible()
    expect(page.get_by_test_id(f"pending-card-{b}")).to_be_visible()
    assert statuses(studio_server, [a, b, c]) == {a: "pending", b: "pending", c: "pending"}
    expect(page.get_by_test_id("pending-count")).to_have_text("3")

    # select all on the page, reject once for the batch (a category is needed)
    page.get_by_test_id("select-all").check()
    expect(page.get_by_test_id("selected-count")).to_have_text("3 selected")
    page.get_by_test_id("batch-reject").click()
    page.get_by_test_id("batch-reject-confirm").click()
    expect(page.get_by_test_id("batch-reject-error")).to_be_visible()
    assert set(statuses(studio_server, [a, b, c]).values()) == {"pending"}
    page.get_by_test_id("batch-cat-bad_quality").check()
    page.get_by_test_id("batch-note").fill("all blurry")
    page.get_by_test_id("batch-reject-confirm").click()
    expect(page.get_by_test_id("pending-empty")).to_be_visible()
    assert set(statuses(studio_server, [a, b, c]).values()) == {"rejected"}
    feedback = db_rows(studio_server, "SELECT categories, note FROM feedback WHERE character_id = ?", mika["id"])
    assert sorted((tuple(json.loads(cats)), note) for cats, note in feedback) == [(("bad_quality",), "all blurry")] * 3

    # the status filter shows them again, marked rejected
    page.get_by_test_id("status-filter").select_option("rejected")
    expect(page.locator('[data-testid^="image-card-"][data-status="rejected"]')).to_have_count(3)
    page.get_by_test_id("order-filter").select_option("newest")
    first = page.locator('[data-testid="pending-grid"] > [data-image-id]').first
    expect(first).to_have_attribute("data-image-id", str(c))


def test_import_from_comfyui_output_runs_as_a_job(page, studio_server):
    from playwright.sync_api import expect

    folder = studio_server.output_dir / "review"
    folder.mkdir(exist_ok=True)
    (folder / "ComfyUI_review_00001_.png").write_bytes(noise_png(424242))
    project, (mika,), _ = seed(studio_server)
    open_panel(page, studio_server, project, mika, tab="ingest")
    page.get_by_test_id("import-outputs-all").click()

    job = page.locator('[data-testid^="ingest-job-"]')
    expect(job).to_have_count(1)
    job_id = int(job.get_attribute("data-testid").rsplit("-", 1)[1])
    expect(page.get_by_test_id(f"ingest-status-{job_id}")).to_have_text("succeeded · 100%")
    expect(page.get_by_test_id(f"ingest-progress-{job_id}")).to_have_attribute("aria-valuenow", "100")
    expect(page.get_by_test_id(f"ingest-result-{job_id}")).to_have_attribute("data-created", "1")
    expect(page.get_by_test_id(f"ingest-cancel-{job_id}")).to_have_count(0)

    rows = db_rows(studio_server, "SELECT id, status, source FROM images WHERE character_id = ?", mika["id"])
    assert [(r[1], r[2]) for r in rows] == [("pending", "comfyui_output")]
    assert call(studio_server, "GET", f"/jobs/{job_id}")["status"] == "succeeded"
    page.get_by_test_id("tab-approvals").click()
    expect(page.get_by_test_id(f"pending-card-{rows[0][0]}")).to_be_visible()


def test_dropping_a_learned_term_removes_it_from_the_negative_prompt(page, studio_server):
    from playwright.sync_api import expect

    project, (mika,), (image,) = seed(studio_server, 1)
    call(studio_server, "POST", f"/images/{image['id']}/reject", {"categories": ["wrong_style"]})
    term = "wrong art style"
    open_panel(page, studio_server, project, mika, tab="characters")

    chip = page.locator(f'[data-testid="learned-term"][data-term="{term}"]')
    expect(chip).to_be_visible()
    expect(page.get_by_test_id("effective-negative")).to_contain_text(term)
    counts = page.locator('[data-testid="category-counts"] > [data-testid^="category-count-"]')
    expect(counts.first).to_have_attribute("data-testid", "category-count-wrong_style")  # most first
    expect(page.get_by_test_id("category-count-wrong_style")).to_contain_text("1")

    page.get_by_test_id(f"drop-term-{term}").click()
    expect(chip).to_have_count(0)
    expect(page.get_by_test_id("effective-negative")).not_to_contain_text(term)
    expect(page.get_by_test_id(f"restore-term-{term}")).to_be_visible()
    prompt = call(studio_server, "GET", f"/characters/{mika['id']}/prompt")
    assert term not in prompt["negative"] and term not in prompt["learned_terms"]
    assert prompt["dropped_terms"] == [term]
    assert "inconsistent style" in prompt["learned_terms"]  # the category's other term stays

    page.get_by_test_id(f"restore-term-{term}").click()
    expect(chip).to_be_visible()
    assert call(studio_server, "GET", f"/characters/{mika['id']}/prompt")["dropped_terms"] == []

    # the project's own terms for a category replace the defaults
    field = page.get_by_test_id("feedback-term-wrong_style")
    expect(field).to_have_value("wrong art style, inconsistent style")
    field.fill("watercolor, sketch")
    page.get_by_test_id("feedback-terms-save").click()
    expect(page.locator('[data-testid="learned-term"][data-term="watercolor"]')).to_be_visible()
    assert call(studio_server, "GET", f"/projects/{project['id']}/feedback-terms")["terms"]["wrong_style"] == \
        "watercolor, sketch"
    href = page.get_by_test_id("export-link").get_attribute("href")
    assert urllib.parse.urlsplit(href).path == f"/lora-studio/v1/characters/{mika['id']}/export"


def test_caption_edit_and_move_to_another_character(page, studio_server):
    from playwright.sync_api import expect

    project, (mika, rin), (one, two) = seed(studio_server, 2, characters=2)
    open_panel(page, studio_server, project, mika)
    page.get_by_test_id(f"caption-{one['id']}").fill("1girl, <b>smiling</b>")
    page.get_by_test_id(f"caption-save-{one['id']}").click()
    expect(page.get_by_test_id(f"caption-save-{one['id']}")).to_be_disabled()
    expected = [("1girl, <b>smiling</b>",)]
    assert db_eventually(studio_server, "SELECT caption FROM images WHERE id = ?", one["id"], expected=expected) == expected

    page.get_by_test_id(f"move-{two['id']}").select_option(str(rin["id"]))
    expect(page.get_by_test_id(f"pending-card-{two['id']}")).to_have_count(0)
    assert db_eventually(studio_server, "SELECT character_id FROM images WHERE id = ?", two["id"],
                         expected=[(rin["id"],)]) == [(rin["id"],)]
    page.get_by_test_id("character-select").select_option(str(rin["id"]))
    expect(page.get_by_test_id(f"pending-card-{two['id']}")).to_be_visible()


def start_import_job(page, server, name: str) -> int:
    """Put one new picture in ComfyUI's output folder, open a new character's Ingest tab, import
    everything from the output folder; returns the job's id as the panel shows it."""
    from playwright.sync_api import expect

    folder = server.output_dir / "follow"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.png").write_bytes(noise_png(random.randrange(1 << 30)))
    project, (mika,), _ = seed(server)
    open_panel(page, server, project, mika, tab="ingest")
    page.get_by_test_id("import-outputs-all").click()
    job = page.locator('[data-testid^="ingest-job-"]')
    expect(job).to_have_count(1)
    return int(job.get_attribute("data-testid").rsplit("-", 1)[1])


def test_a_job_is_followed_through_its_events(page, studio_server):
    """With GET /jobs/{id} refused, the job still reaches its end in the panel: through the events
    socket (panel_jobfollow.js), including events that came before the start request's answer."""
    import re

    from playwright.sync_api import expect

    refused = []

    def refuse(route):
        if route.request.method == "GET":
            refused.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route(re.compile(r".*/lora-studio/v1/jobs/\d+$"), refuse)
    job_id = start_import_job(page, studio_server, "ComfyUI_events_00001_")
    expect(page.get_by_test_id(f"ingest-status-{job_id}")).to_have_text("succeeded · 100%")
    expect(page.get_by_test_id(f"ingest-result-{job_id}")).not_to_have_attribute("data-created", "0")
    assert call(studio_server, "GET", f"/jobs/{job_id}")["status"] == "succeeded"


def test_a_job_is_polled_when_the_socket_is_silent(page, studio_server):
    """The events socket answered by Playwright and never speaking: polling brings the job to its end."""
    from playwright.sync_api import expect

    sockets = []
    page.route_web_socket("**/lora-studio/v1/events", lambda ws: sockets.append(ws))  # never connected through
    polled = []
    page.on("request", lambda req: polled.append(req.url) if "/lora-studio/v1/jobs/" in req.url else None)
    job_id = start_import_job(page, studio_server, "ComfyUI_polled_00001_")
    expect(page.get_by_test_id(f"ingest-status-{job_id}")).to_have_text("succeeded · 100%")
    assert sockets, "the page did not open the events websocket"
    assert any(url.endswith(f"/lora-studio/v1/jobs/{job_id}") for url in polled), polled


def upload_to_pool(server, project_id: int, files: dict[str, bytes]) -> list[dict]:
    """POST images to the project's unassigned pool (202, a job) and return the images the job created."""
    answer = upload_files(server, None, files, project_id=project_id)
    assert not answer["skipped"], answer
    return answer["created"]


def test_the_unassigned_pool_in_approvals(page, studio_server):
    """"(unassigned)" in the character picker shows the project's pool; an image moves from the pool
    to a character and from a character back to the pool."""
    from playwright.sync_api import expect

    project, (mika, rin), (kept,) = seed(studio_server, 1, characters=2)
    (loose,) = upload_to_pool(studio_server, project["id"], {"loose.png": noise_png(random.randrange(1 << 30))})
    assert loose["character_id"] is None
    open_panel(page, studio_server, project, mika)
    expect(page.get_by_test_id(f"pending-card-{kept['id']}")).to_be_visible()

    page.get_by_test_id("character-select").select_option("unassigned")
    expect(page.get_by_test_id("pool-label")).to_contain_text(project["name"])
    expect(page.get_by_test_id(f"pending-card-{loose['id']}")).to_be_visible()
    expect(page.get_by_test_id(f"pending-card-{kept['id']}")).to_have_count(0)
    expect(page.get_by_test_id("ssot-box")).to_be_hidden()  # no character: no SSOT prompt
    page.get_by_test_id(f"select-{loose['id']}").check()
    expect(page.get_by_test_id("batch-approve")).to_be_disabled()  # approving needs a character
    expect(page.get_by_test_id("batch-reject")).to_be_enabled()

    page.get_by_test_id(f"move-{loose['id']}").select_option(str(rin["id"]))
    expect(page.get_by_test_id(f"pending-card-{loose['id']}")).to_have_count(0)
    expect(page.get_by_test_id("pending-empty")).to_be_visible()
    assert db_eventually(studio_server, "SELECT character_id FROM images WHERE id = ?", loose["id"],
                         expected=[(rin["id"],)]) == [(rin["id"],)]

    # and back: from a character to the pool
    page.get_by_test_id("character-select").select_option(str(mika["id"]))
    page.get_by_test_id(f"move-{kept['id']}").select_option("unassigned")
    expect(page.get_by_test_id(f"pending-card-{kept['id']}")).to_have_count(0)
    assert db_eventually(studio_server, "SELECT character_id FROM images WHERE id = ?", kept["id"],
                         expected=[(None,)]) == [(None,)]
    page.get_by_test_id("character-select").select_option("unassigned")
    expect(page.get_by_test_id(f"pending-card-{kept['id']}")).to_be_visible()
    page.reload()  # the choice of the pool is remembered like a character's
    expect(page.get_by_test_id("character-select")).to_have_value("unassigned")
    expect(page.get_by_test_id(f"pending-card-{kept['id']}")).to_be_visible()


def test_ingest_tab_uploads_into_the_unassigned_pool(page, studio_server):
    """With "(unassigned)" chosen, the Ingest tab sends uploads to the project's pool (no character)."""
    from playwright.sync_api import expect

    project, (mika,), _ = seed(studio_server, 0)
    open_panel(page, studio_server, project, mika)
    page.get_by_test_id("character-select").select_option("unassigned")
    page.get_by_test_id("tab-ingest").click()
    expect(page.get_by_test_id("ingest-target")).to_contain_text("unassigned pool")
    page.get_by_test_id("ingest-files").set_input_files([
        {"name": "pool.png", "mimeType": "image/png", "buffer": noise_png(random.randrange(1 << 30))}])
    page.get_by_test_id("ingest-upload").click()
    expect(page.get_by_test_id("ingest-status")).to_contain_text("1 added as pending, 0 skipped")
    rows = db_rows(studio_server, "SELECT character_id, project_id, status FROM images WHERE project_id = ?",
                   project["id"])
    assert rows == [(None, project["id"], "pending")]
