"""Automatic review through the job (a local server speaking the Ollama API): each low score rejects
with its own category, which teaches the character its negative terms."""

from __future__ import annotations

import json

from support.api import V1, finished, make_character, make_project, upload
from support.fake_ollama import create_fake_ollama
from support.images import image_bytes


async def test_low_scores_without_issue_text_reject_with_their_categories(make_client, aiohttp_server):
    good = {"character_match": 9, "solo": True, "clarity": 9, "training_value": 9, "caption": "x", "issues": []}
    verdicts = iter([
        {**good, "character_match": 2},  # off-model, nothing written: wrong_appearance (was bad_quality)
        {**good, "clarity": 1},
        {**good, "solo": False},
        {**good, "training_value": 2},
    ])
    ollama = await aiohttp_server(create_fake_ollama(lambda call: json.dumps(next(verdicts))))
    client = await make_client(classifier="ollama", ollama_url=str(ollama.make_url("")).rstrip("/"))
    p = await make_project(client)
    c = await make_character(client, p["id"])
    files = [(f"{i}.png", image_bytes(size=(32, 32), seed=900 + i), "image/png") for i in range(4)]
    ids = [i["id"] for i in (await upload(client, c["id"], *files))["created"]]
    job = await finished(client, await (await client.post(f"{V1}/characters/{c['id']}/auto-review")).json())
    assert job["status"] == "succeeded", job
    assert job["result"]["rejected"] == ids
    prompt = await (await client.get(f"{V1}/characters/{c['id']}/prompt")).json()
    counts = {name: n for name, n in prompt["category_counts"].items() if n}
    assert counts == {"wrong_appearance": 1, "bad_quality": 2, "not_solo": 1}
    assert "inaccurate character design" in prompt["negative"]  # what wrong_appearance teaches
