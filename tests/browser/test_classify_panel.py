"""The "Classify project" and "Auto-review" buttons of the Approvals tab, end to end: a studio server
of its own (a subprocess) whose classifier is tests/support's stand-in Ollama (on its own event loop
in a thread), a project seeded through the HTTP API, the job started from the browser, followed to
its end, and the decisions checked in the SQLite database. Without a classifier (the shared
`studio_server`), the button's error is a toast with the server's message."""

from __future__ import annotations

import sqlite3
import uuid
from types import SimpleNamespace

import pytest
from support.processes import app_in_thread, clean_env, studio_process
from support.studio_http import RunningStudio, call, open_panel
from support.studio_http import upload as upload_files

pytestmark = pytest.mark.browser

REVIEW = {"character_match": 10, "solo": True, "clarity": 10, "completeness": 10, "training_value": 10,
          "caption": "x", "issues": []}
CLASSIFY = {"primary": None, "others": [], "confidence": 0.0, "description": "x"}


Server = RunningStudio


def _answer(call):
    return REVIEW if "character_match" in call.prompt else CLASSIFY


@pytest.fixture(scope="module")
def fake_ollama():
    from support.fake_ollama import create_fake_ollama, state_of

    app = create_fake_ollama(_answer)
    with app_in_thread(app, "fake-ollama") as url:
        yield SimpleNamespace(url=url, state=state_of(app))


@pytest.fixture(scope="module")
def classify_server(tmp_path_factory, fake_ollama) -> Server:
    """The standalone server with the Ollama classifier pointed at the stand-in."""
    root = tmp_path_factory.mktemp("classify")
    data = root / "data"
    env = clean_env(LORA_STUDIO_CLASSIFIER="ollama", LORA_STUDIO_OLLAMA_URL=fake_ollama.url)
    with studio_process(root, data, env=env) as base:
        yield Server(base, data)


# --- seeding through the HTTP API ------------------------------------------------------------





def upload(server, character_id: int, files: dict[str, bytes]) -> list[dict]:
    answer = upload_files(server, character_id, files)
    assert not answer["skipped"], answer["skipped"]
    return answer["created"]


def seed(server, n_images: int):
    from support.images import image_bytes

    tag = uuid.uuid4().hex[:8]
    project = call(server, "POST", "/projects", {"name": f"Classify {tag}"})
    character = call(server, "POST", f"/projects/{project['id']}/characters",
                     {"name": f"Mika {tag}", "design_prompt": "1girl, silver hair"})
    created = upload(server, character["id"],
                     {f"img{i}.png": image_bytes(size=(48, 48), seed=7100 + i) for i in range(n_images)}) \
        if n_images else []
    return project, character, created




def statuses(server, ids) -> dict[int, str]:
    conn = sqlite3.connect(server.database, timeout=5)
    try:
        marks = ",".join("?" * len(ids))
        return dict(conn.execute(f"SELECT id, status FROM images WHERE id IN ({marks})", list(ids)).fetchall())
    finally:
        conn.close()


# --- tests -----------------------------------------------------------------------------------

def test_classify_without_a_classifier_toasts_the_servers_message(page, studio_server):
    from playwright.sync_api import expect

    project, character, _ = seed(studio_server, 0)
    open_panel(page, studio_server, project, character, tab="approvals")
    button = page.get_by_test_id("classify-project")
    expect(button).to_be_enabled()
    button.click()
    expect(page.get_by_test_id("toast").filter(has_text="no classifier is configured")).to_be_visible()
    expect(button).to_be_enabled()  # usable again
    expect(page.locator('[data-testid="auto-jobs"] > *')).to_have_count(0)  # no job started


def test_auto_review_approves_and_reloads_the_queue(page, classify_server, fake_ollama):
    from playwright.sync_api import expect

    project, character, created = seed(classify_server, 2)
    ids = [img["id"] for img in created]
    open_panel(page, classify_server, project, character, tab="approvals")
    for i in ids:
        expect(page.get_by_test_id(f"pending-card-{i}")).to_be_visible()

    page.get_by_test_id("auto-review").click()
    row = page.locator('[data-testid="auto-jobs"] > [data-kind="auto_review"]')
    expect(row).to_have_count(1)
    job_id = int(row.get_attribute("data-testid").rsplit("-", 1)[1])
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(page.get_by_test_id(f"auto-job-status-{job_id}")).to_have_text("succeeded")
    expect(page.get_by_test_id(f"auto-job-result-{job_id}")).to_have_text("2 approved, 0 rejected, 0 left pending")
    expect(page.get_by_test_id("toast").filter(has_text="2 approved")).to_be_visible()

    # the grid reloaded: nothing pending any more, both counted as approved
    for i in ids:
        expect(page.get_by_test_id(f"pending-card-{i}")).to_have_count(0)
    expect(page.get_by_test_id("pending-empty")).to_be_visible()
    expect(page.get_by_test_id("approved-count")).to_have_text("2")
    assert statuses(classify_server, ids) == {i: "approved" for i in ids}
    reviews = [c for c in fake_ollama.state.calls if "character_match" in c.prompt]
    assert len(reviews) == 2 and all(c.image_count == 1 for c in reviews)

    # the job was handed to the Ingest tab's job list as well
    page.get_by_test_id("tab-ingest").click()
    expect(page.get_by_test_id(f"ingest-status-{job_id}")).to_have_text("succeeded · 100%")
