"""Helpers for tests that drive a studio server in another process (the browser tests): plain
urllib calls, a multipart upload, the panel opened on a character, and reads of its SQLite file.
`server` has `.api` (the API base URL), `.base_url` and `.database` (the SQLite path): a `RunningStudio`."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunningStudio:
    """A studio server the tests started: its base URL and data folder (subclasses add what their fixture has)."""

    base_url: str  # http://127.0.0.1:<port>
    data_dir: Path

    @property
    def api(self) -> str:
        return self.base_url + "/lora-studio/v1"

    @property
    def database(self) -> Path:
        return self.data_dir / "lora_studio.sqlite3"


def call(server, method: str, path: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.api + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def upload(server, character_id: int | None, files: dict[str, bytes], caption: str = "",
           project_id: int | None = None) -> dict:
    """POST the files as multipart (field "files") to the character, or (character_id None) to the project's
    unassigned pool; wait for the ingest job, return {created, skipped}."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
             f"Content-Type: image/png\r\n\r\n".encode() + content + b"\r\n" for name, content in files.items()]
    if caption:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="caption"\r\n\r\n{caption}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    target = f"/characters/{character_id}" if character_id is not None else f"/projects/{project_id}"
    req = urllib.request.Request(f"{server.api}{target}/images", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        job = json.loads(r.read())
    deadline = time.monotonic() + 60  # the answer is the ingest job: its result is {created, skipped}
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"upload job did not finish: {job}"
        time.sleep(0.05)
        job = call(server, "GET", f"/jobs/{job['id']}")
    assert job["status"] == "succeeded", job
    return job["result"]


def open_panel(page, server, project, character, tab: str | None = None):
    page.goto(server.base_url + "/")
    page.get_by_test_id("project-select").select_option(str(project["id"]))
    page.get_by_test_id("character-select").select_option(str(character["id"]))
    if tab:
        page.get_by_test_id(f"tab-{tab}").click()


def db_rows(server, sql: str, *args):
    conn = sqlite3.connect(server.database, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()
