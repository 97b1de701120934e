"""Auto-regeneration after a rejection: a bounded job that generates with the refined negatives
on ComfyUI and brings the images back into the pending queue."""

from __future__ import annotations

from pathlib import Path

from support.api import V1, finished, make_character, make_project, upload
from support.comfy_schema import load_object_info
from support.fake_comfyui import create_fake_comfyui, state_of
from support.images import image_bytes

OBJECT_INFO = load_object_info(Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "object_info.json")




async def setup(make_client, aiohttp_server, tmp_path, exec_delay=0.02, **settings):
    comfy = await aiohttp_server(create_fake_comfyui(OBJECT_INFO, tmp_path / "comfy_out", exec_delay=exec_delay))
    client = await make_client(comfyui_url=str(comfy.make_url("")).rstrip("/"), **settings)
    p = await make_project(client)
    await client.patch(f"{V1}/projects/{p['id']}/style", json={"checkpoint": "random_sd15.safetensors"})
    c = await make_character(client, p["id"], design_prompt="1girl, silver hair")
    files = [(f"{i}.png", image_bytes(size=(32, 32), seed=500 + i), "image/png") for i in range(4)]
    ids = [i["id"] for i in (await upload(client, c["id"], *files))["created"]]
    return client, comfy, c, ids


async def test_rejection_regenerates_with_refined_negatives(make_client, aiohttp_server, tmp_path):
    client, comfy, c, ids = await setup(make_client, aiohttp_server, tmp_path)
    r = await client.post(f"{V1}/images/{ids[0]}/reject", json={"categories": ["not_solo"], "regenerate": True})
    body = await r.json()
    assert body["status"] == "rejected"
    job_id = body["regeneration"][0]["queued"]
    job = await finished(client, job_id)
    assert job["status"] == "succeeded", job
    graph = state_of(comfy.app).prompts[-1]["prompt"]
    negative = [n["inputs"]["text"] for n in graph.values() if n["class_type"] == "CLIPTextEncode"][1]
    assert "multiple characters" in negative and "group shot" in negative
    new = job["result"]["created"]
    assert len(new) == 1
    image = await (await client.get(f"{V1}/images/{new[0]}")).json()
    assert image["status"] == "pending" and image["source"] == "generation"
    assert image["metadata"]["generation_id"] == job["result"]["generation_id"]
    # without the flag (and auto_regenerate off by default) nothing is queued
    body = await (await client.post(f"{V1}/images/{ids[1]}/reject", json={"categories": ["bad_quality"]})).json()
    assert body["regeneration"] == []
    assert len(state_of(comfy.app).prompts) == 1


async def test_regeneration_is_bounded(make_client, aiohttp_server, tmp_path):
    client, comfy, c, ids = await setup(make_client, aiohttp_server, tmp_path, exec_delay=3.0,
                                        auto_regenerate=True, regenerate_max_in_flight=1)
    first = await (await client.post(f"{V1}/images/{ids[0]}/reject", json={"note": "off model"})).json()
    assert first["regeneration"][0]["queued"]
    second = await (await client.post(f"{V1}/images/{ids[1]}/reject", json={"note": "off model"})).json()
    assert second["regeneration"][0]["queued"] is None and "in flight" in second["regeneration"][0]["reason"]
    await finished(client, first["regeneration"][0]["queued"])
    # target reached (2 approved with min_approved_images=2): no more generations
    await client.post(f"{V1}/images/decisions", json={"image_ids": ids[2:], "decision": "approve"})
    body = await (await client.post(f"{V1}/images/decisions", json={"image_ids": [ids[1]], "decision": "reset"})).json()
    assert "regeneration" not in body
    third = await (await client.post(f"{V1}/images/{ids[1]}/reject", json={"note": "again"})).json()
    assert third["regeneration"][0]["queued"] is None and "approved" in third["regeneration"][0]["reason"]
    assert len(state_of(comfy.app).prompts) == 1
