"""The "Classify project" and "Auto-review" buttons of the Approvals tab, end to end: a studio server
of its own (a subprocess) whose classifier is tests/support's stand-in Ollama (on its own event loop
in a thread), a project seeded through the HTTP API, the job started from the browser, followed to
its end, and the decisions checked in the SQLite database. Without a classifier (the shared
`studio_server`), the button's error is a toast with the server's message."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.studio_http import call, open_panel
from support.studio_http import upload as upload_files

pytestmark = pytest.mark.browser

STARTUP_SECONDS = 30
REVIEW = {"character_match": 10, "solo": True, "clarity": 10, "completeness": 10, "training_value": 10,
          "caption": "x", "issues": []}
CLASSIFY = {"primary": None, "others": [], "confidence": 0.0, "description": "x"}


@dataclass
class Server:
    base_url: str
    data_dir: Path

    @property
    def api(self) -> str:
        return self.base_url + "/lora-studio/v1"

    @property
    def database(self) -> Path:
        return self.data_dir / "lora_studio.sqlite3"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeOllamaThread:
    """tests/support's stand-in Ollama on its own event loop in a thread."""

    def __init__(self, answer):
        from aiohttp import web
        from support.fake_ollama import create_fake_ollama, state_of

        self.app = create_fake_ollama(answer)
        self.state = state_of(self.app)
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(self.app)
        self.port = _free_port()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-ollama", daemon=True)

    def start(self) -> str:
        from aiohttp import web

        self.thread.start()

        async def up() -> None:
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def _answer(call):
    return REVIEW if "character_match" in call.prompt else CLASSIFY


@pytest.fixture(scope="module")
def fake_ollama():
    fake = FakeOllamaThread(_answer)
    fake.url = fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module")
def classify_server(tmp_path_factory, fake_ollama) -> Server:
    """The standalone server with the Ollama classifier pointed at the stand-in."""
    root = tmp_path_factory.mktemp("classify")
    data = root / "data"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LORA_STUDIO_", "VAULT_")) and k != "COMFYUI_URL"}
    env.update(LORA_STUDIO_CLASSIFIER="ollama", LORA_STUDIO_OLLAMA_URL=fake_ollama.url)
    port = _free_port()
    log_path = root / "server.log"
    log = open(log_path, "wb")
    cmd = [sys.executable, "-m", "lora_studio", "serve", "--data", str(data), "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the studio server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(base + "/lora-studio/v1/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the studio server did not answer within {STARTUP_SECONDS}s:\n"
                            f"{log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        yield Server(base, data)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


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
