"""Classification and automatic review as jobs, against a local server speaking the Ollama API
(the roster in the prompt comes from the database)."""

from __future__ import annotations

import json

from support.api import V1, assert_error, finished, make_character, make_project, upload
from support.fake_ollama import create_fake_ollama, state_of
from support.images import image_bytes


async def test_classify_moves_sure_suggestions(make_client, aiohttp_server):
    answers = iter([{"primary": "kael", "others": [], "confidence": 0.9, "description": "a boy"},
                    {"primary": "zephyra", "others": [], "confidence": 0.95, "description": "a girl"},
                    {"primary": "kael", "others": [], "confidence": 0.3, "description": "unsure"}])
    ollama = await aiohttp_server(create_fake_ollama(lambda call: json.dumps(next(answers))))
    client = await make_client(classifier="ollama", ollama_url=str(ollama.make_url("")).rstrip("/"))
    p = await make_project(client, "Skyfall")
    zephyra = await make_character(client, p["id"], "Zephyra", design_prompt="silver hair")
    kael = await make_character(client, p["id"], "Kael", design_prompt="red scarf")
    files = [(f"{i}.png", image_bytes(size=(32, 32), seed=600 + i), "image/png") for i in range(3)]
    ids = [i["id"] for i in (await upload(client, zephyra["id"], *files))["created"]]

    r = await client.post(f"{V1}/projects/{p['id']}/classify")
    assert r.status == 202
    job = await finished(client, await r.json())
    assert job["status"] == "succeeded", job
    assert job["result"]["moved"] == [ids[0]] and job["result"]["classified"] == 3
    prompts = [c.prompt for c in state_of(ollama.app).calls]
    assert len(prompts) == 3 and all("Zephyra" in t and "Kael" in t for t in prompts)
    first = await (await client.get(f"{V1}/images/{ids[0]}")).json()
    assert first["character_id"] == kael["id"] and first["suggestion"] == {"character_id": kael["id"], "confidence": 0.9}
    unsure = await (await client.get(f"{V1}/images/{ids[2]}")).json()
    assert unsure["character_id"] == zephyra["id"] and unsure["suggestion"]["confidence"] == 0.3  # left for a person
    sure = await (await client.get(f"{V1}/images?project_id={p['id']}&min_confidence=0.9")).json()
    assert sorted(i["id"] for i in sure["items"]) == ids[:2]


async def test_auto_review_thresholds_and_feedback(make_client, aiohttp_server):
    verdicts = iter([
        {"character_match": 10, "solo": True, "clarity": 10, "training_value": 9.5, "caption": "a", "issues": []},
        {"character_match": 2, "solo": True, "clarity": 3, "training_value": 2, "caption": "b",
         "issues": ["blurry face", "wrong outfit colors"]},
        {"character_match": 8, "solo": False, "clarity": 8, "training_value": 8, "caption": "c", "issues": ["two girls"]},
        {"character_match": 7, "solo": True, "clarity": 7, "training_value": 7, "caption": "d", "issues": []},
    ])
    ollama = await aiohttp_server(create_fake_ollama(lambda call: json.dumps(next(verdicts))))
    client = await make_client(classifier="ollama", ollama_url=str(ollama.make_url("")).rstrip("/"))
    p = await make_project(client)
    c = await make_character(client, p["id"])
    files = [(f"{i}.png", image_bytes(size=(32, 32), seed=700 + i), "image/png") for i in range(4)]
    ids = [i["id"] for i in (await upload(client, c["id"], *files))["created"]]
    job = await finished(client, await (await client.post(f"{V1}/characters/{c['id']}/auto-review")).json())
    assert job["status"] == "succeeded", job
    assert job["result"]["approved"] == [ids[0]]
    assert job["result"]["rejected"] == [ids[1], ids[2]]
    assert job["result"]["left_pending"] == [ids[3]]
    prompt = await (await client.get(f"{V1}/characters/{c['id']}/prompt")).json()
    assert prompt["category_counts"]["bad_quality"] == 1 and prompt["category_counts"]["not_solo"] == 1
    assert prompt["category_counts"]["wrong_appearance"] == 1


async def test_classifier_not_configured(client):
    p = await make_project(client)
    c = await make_character(client, p["id"])
    await assert_error(await client.post(f"{V1}/projects/{p['id']}/classify"), 503)
    await assert_error(await client.post(f"{V1}/characters/{c['id']}/auto-review"), 503)
    await assert_error(await client.get(f"{V1}/images?min_confidence=2"), 400)
