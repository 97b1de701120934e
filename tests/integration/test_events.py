"""Standalone job events: every change of a job reaches the panel's websocket."""

from __future__ import annotations

import asyncio
import json

from lora_studio.app import STUDIO_KEY
from support.api import V1


async def test_job_events_reach_the_websocket(client):
    studio = client.server.app[STUDIO_KEY].get()

    def echo(ctx):
        ctx.progress(0.5, "half")
        return {"echo": ctx.payload["text"]}

    studio.jobs.register("echo", echo)
    ws = await client.ws_connect(f"{V1}/events")
    job = studio.jobs.submit("echo", {"text": "hi"})
    seen = []
    while not seen or seen[-1]["status"] != "succeeded":
        msg = await asyncio.wait_for(ws.receive(), 10)
        event = json.loads(msg.data)
        assert event["type"] == "lora_studio.job"
        if event["data"]["id"] == job.id:
            seen.append(event["data"])
    await ws.close()
    # a runner thread may claim the job before submit() has sent its "queued" event: both orders are fine
    assert seen[0]["status"] in ("queued", "running")
    assert any(e["status"] == "running" and e["message"] == "half" for e in seen)
    assert seen[-1]["result"] == {"echo": "hi"}


async def test_event_socket_refuses_other_origins(client):
    import aiohttp
    import pytest

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"{V1}/events", headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
