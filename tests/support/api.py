"""Helpers for tests that talk to the studio's HTTP API."""

from __future__ import annotations

import asyncio

import aiohttp

V1 = "/lora-studio/v1"


async def make_project(client, name="Moon Academy"):
    r = await client.post(f"{V1}/projects", json={"name": name})
    assert r.status == 201, await r.text()
    return await r.json()


async def make_character(client, project_id, name="Aiko Tanaka", **fields):
    r = await client.post(f"{V1}/projects/{project_id}/characters", json={"name": name, **fields})
    assert r.status == 201, await r.text()
    return await r.json()


async def assert_error(response, status, code=None):
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert "Traceback" not in body["error"]["message"]
    if code:
        assert body["error"]["code"] == code
    return body["error"]


def form(*files, caption=None):
    data = aiohttp.FormData()
    for name, content, ctype in files:
        data.add_field("files", content, filename=name, content_type=ctype)
    if caption is not None:
        data.add_field("caption", caption)
    return data


async def upload(client, cid, *files, caption=None, status=202, project_id=None):
    """Upload to a character (or with `project_id` to the project's unassigned pool) and wait for
    the ingest job: its result {created, skipped}; an error answer's body when `status` is 4xx."""
    url = f"{V1}/projects/{project_id}/images" if project_id is not None else f"{V1}/characters/{cid}/images"
    r = await client.post(url, data=form(*files, caption=caption))
    assert r.status == status, await r.text()
    if status != 202:
        return await r.json()
    job = await finished(client, await r.json())
    assert job["status"] == "succeeded", job
    return job["result"]


async def finished(client, job, timeout: float = 60.0) -> dict:
    """Poll a job (a job object or its id) until it is no longer queued or running."""
    job_id = job if isinstance(job, int) else job["id"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        current = await (await client.get(f"{V1}/jobs/{job_id}")).json()
        if current["status"] not in ("queued", "running"):
            return current
        assert loop.time() < deadline, f"job {job_id} did not finish: {current}"
        await asyncio.sleep(0.05)
