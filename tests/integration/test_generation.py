"""Generation: SSOT prompt + style + learned negatives + current LoRA → a graph on (a stand-in for)
ComfyUI's /prompt, which validates it against the real node schema; results reach the gallery."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.api import V1, assert_error, make_character, make_project, upload
from support.comfy_schema import load_object_info, validate_graph
from support.fake_comfyui import create_fake_comfyui, state_of
from support.images import image_bytes

OBJECT_INFO = load_object_info(Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "object_info.json")


@pytest.fixture
async def comfy(aiohttp_server, settings):
    return await aiohttp_server(create_fake_comfyui(OBJECT_INFO, settings.comfyui_output_dir))


@pytest.fixture
async def studio_client(make_client, make_settings, comfy):

    settings = make_settings(comfyui_url=str(comfy.make_url("/")).rstrip("/"))
    return await make_client(settings), settings


async def setup_character(client, checkpoint="random_sd15.safetensors"):
    p = await make_project(client)
    if checkpoint:
        await client.patch(f"{V1}/projects/{p['id']}/style",
                           json={"checkpoint": checkpoint, "width": 512, "height": 768, "lora_strength": 0.7})
    return await make_character(client, p["id"], design_prompt="1girl, silver hair, red eyes", trigger_word="aikotnk")


def nodes_of(graph, class_type):
    return [n for n in graph.values() if n["class_type"] == class_type]


async def test_generate_queues_a_valid_graph_with_ssot_prompt_and_learned_negatives(studio_client, comfy):
    client, _ = studio_client
    c = await setup_character(client)
    img = (await upload(client, c["id"], ("x.png", image_bytes(seed=3), "image/png")))["created"][0]
    await client.post(f"{V1}/images/{img['id']}/reject", json={"categories": ["not_solo"]})

    r = await client.post(f"{V1}/characters/{c['id']}/generate", json={"seed": 42})
    assert r.status == 201, await r.text()
    gen = await r.json()
    fake = state_of(comfy.app)
    assert len(fake.accepted) == 1
    graph = gen["graph"]
    assert validate_graph(graph, OBJECT_INFO) == {}
    texts = [n["inputs"]["text"] for n in nodes_of(graph, "CLIPTextEncode")]
    assert texts[0] == "masterpiece, best quality, highly detailed, aikotnk, 1girl, silver hair, red eyes"
    assert texts[1] == "worst quality, low quality, blurry, deformed, multiple characters, crowd, group shot"
    ks = nodes_of(graph, "KSampler")[0]["inputs"]
    assert (ks["seed"], ks["steps"], ks["cfg"], ks["sampler_name"], ks["scheduler"]) == (42, 25, 7.0, "dpmpp_2m", "karras")
    latent = nodes_of(graph, "EmptyLatentImage")[0]["inputs"]
    assert (latent["width"], latent["height"]) == (512, 768)
    assert nodes_of(graph, "LoraLoader") == []  # no LoRA trained yet

    for _ in range(100):
        gen = await (await client.get(f"{V1}/generations/{gen['id']}")).json()
        if gen["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.05)
    assert gen["status"] == "succeeded" and gen["outputs"][0]["filename"].endswith(".png")
    gallery = await (await client.get(f"{V1}/gallery")).json()
    assert gallery["items"][0]["name"] == gen["outputs"][0]["filename"]


async def test_generate_loads_the_characters_current_lora(studio_client, comfy):
    client, settings = studio_client
    c = await setup_character(client)
    from lora_studio.core.db import Database, utcnow
    from lora_studio.core.schema import characters, lora_models

    db = Database(settings.effective_database_url)
    with db.begin() as conn:
        lid = conn.execute(lora_models.insert().values(
            character_id=c["id"], file_name="moon-academy-aiko-tanaka-v1.safetensors", base_model="tiny", rank=4,
            alpha=2.0, steps=3, learning_rate=1e-4, sha256="0" * 64, image_count=2,
            created_at=utcnow())).inserted_primary_key[0]
        conn.execute(characters.update().where(characters.c.id == c["id"]).values(current_lora_id=lid))
        count = conn.execute(sa.select(sa.func.count()).select_from(lora_models)).scalar()
    db.dispose()
    assert count == 1
    gen = await (await client.post(f"{V1}/characters/{c['id']}/generate", json={})).json()
    lora = nodes_of(gen["graph"], "LoraLoader")
    assert len(lora) == 1 and lora[0]["inputs"]["lora_name"] == "moon-academy-aiko-tanaka-v1.safetensors"
    assert lora[0]["inputs"]["strength_model"] == 0.7
    lora_id = [k for k, n in gen["graph"].items() if n["class_type"] == "LoraLoader"][0]
    # both the sampler's model and the text encoders' clip come through the LoRA
    assert nodes_of(gen["graph"], "KSampler")[0]["inputs"]["model"] == [lora_id, 0]
    assert all(n["inputs"]["clip"] == [lora_id, 1] for n in nodes_of(gen["graph"], "CLIPTextEncode"))
    assert gen["lora_model_id"] == lid
    gen = await (await client.post(f"{V1}/characters/{c['id']}/generate", json={"use_lora": False})).json()
    assert nodes_of(gen["graph"], "LoraLoader") == []


async def test_generate_errors_are_clear(studio_client, make_client):
    client, _ = studio_client
    c = await setup_character(client, checkpoint="")
    err = await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate", json={}), 400)
    assert "checkpoint" in err["message"]
    await assert_error(await client.post(f"{V1}/characters/999/generate", json={}), 404)
    await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate", json={"batch_size": 0}), 400)


    offline = await make_client(comfyui_url="http://127.0.0.1:9")
    p2 = await make_project(offline, "Offline")
    await offline.patch(f"{V1}/projects/{p2['id']}/style", json={"checkpoint": "x.safetensors"})
    c2 = await make_character(offline, p2["id"])
    err = await assert_error(await offline.post(f"{V1}/characters/{c2['id']}/generate", json={}), 503)
    assert "not reachable" in err["message"]


async def test_comfyui_refusal_is_a_502_with_its_reason(studio_client, comfy):
    client, _ = studio_client
    p = await make_project(client)
    c = await make_character(client, p["id"])
    await client.patch(f"{V1}/projects/{p['id']}/style", json={"checkpoint": "x.safetensors"})
    r = await client.patch(f"{V1}/projects/{p['id']}/style", json={"sampler": "euler", "scheduler": "beta"})
    assert r.status == 200, await r.text()
    r = await client.post(f"{V1}/characters/{c['id']}/generate", json={})
    assert r.status == 201, await r.text()  # the studio now holds the server's /object_info (for a minute)
    # ComfyUI stops offering the scheduler after the studio cached its names: our check passes, ComfyUI's refuses
    fake = state_of(comfy.app)
    fake.object_info = copy.deepcopy(fake.object_info)
    fake.object_info["KSampler"]["input"]["required"]["scheduler"][0].remove("beta")
    err = await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate", json={}), 502)
    assert "scheduler" in err["message"] and "beta" in err["message"]
