"""The style's sampler and scheduler are names ComfyUI has: its own lists when it answers (a fake
ComfyUI serving the recorded /object_info plus a custom sampler), the standard lists when not."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import sqlalchemy as sa
from lora_studio.core.db import Database
from lora_studio.core.schema import generation_styles
from support.api import V1, assert_error, make_character, make_project
from support.comfy_schema import load_object_info
from support.fake_comfyui import create_fake_comfyui, state_of

OBJECT_INFO = load_object_info(Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "object_info.json")


async def test_without_comfyui_the_standard_names_are_checked(client):
    p = await make_project(client)
    style = f"{V1}/projects/{p['id']}/style"
    err = await assert_error(await client.patch(style, json={"sampler": "not_a_sampler"}), 400)
    assert "Unknown sampler 'not_a_sampler'" in err["message"] and "euler_ancestral" in err["message"]
    err = await assert_error(await client.patch(style, json={"sampler": "eulr", "steps": 30}), 400)
    assert "Did you mean 'euler'" in err["message"]
    err = await assert_error(await client.patch(style, json={"scheduler": "karas"}), 400)
    assert "Did you mean 'karras'" in err["message"]
    kept = await (await client.get(style)).json()
    assert (kept["sampler"], kept["scheduler"], kept["steps"]) == ("dpmpp_2m", "karras", 25)  # nothing half-saved

    r = await client.patch(style, json={"sampler": "DPM++ 2M SDE Karras"})
    assert r.status == 200 and ((await r.json())["sampler"], (await r.json())["scheduler"]) == ("dpmpp_2m_sde", "karras")
    r = await client.patch(style, json={"sampler": "uni_pc", "scheduler": "beta"})
    assert ((await r.json())["sampler"], (await r.json())["scheduler"]) == ("uni_pc", "beta")
    await assert_error(await client.patch(style, json={"sampler": "my_custom_sampler"}), 400)
    names = await (await client.get(f"{V1}/samplers")).json()
    assert names["source"] == "known" and "dpmpp_2m" in names["samplers"] and "karras" in names["schedulers"]
    assert names["human"]["DPM++ 2M Karras"] == ["dpmpp_2m", "karras"]


@pytest.fixture
async def comfy(aiohttp_server, settings):
    info = copy.deepcopy(OBJECT_INFO)
    info["KSampler"]["input"]["required"]["sampler_name"][0].append("my_custom_sampler")
    return await aiohttp_server(create_fake_comfyui(info, settings.comfyui_output_dir))


async def test_comfyuis_own_names_are_checked_for_the_style_and_the_graph(make_client, make_settings, comfy):
    settings = make_settings(comfyui_url=str(comfy.make_url("/")).rstrip("/"))
    client = await make_client(settings)
    p = await make_project(client)
    c = await make_character(client, p["id"])
    style = f"{V1}/projects/{p['id']}/style"
    r = await client.patch(style, json={"sampler": "my_custom_sampler", "scheduler": "simple",
                                        "checkpoint": "sd15.safetensors"})
    assert r.status == 200, await r.text()
    names = await (await client.get(f"{V1}/samplers")).json()
    assert names["source"] == "comfyui" and "my_custom_sampler" in names["samplers"]
    err = await assert_error(await client.patch(style, json={"sampler": "not_a_sampler"}), 400)
    assert "my_custom_sampler" in err["message"]  # the list offered is this ComfyUI's
    gen = await (await client.post(f"{V1}/characters/{c['id']}/generate", json={"seed": 1})).json()
    ks = next(n for n in gen["graph"].values() if n["class_type"] == "KSampler")["inputs"]
    assert (ks["sampler_name"], ks["scheduler"]) == ("my_custom_sampler", "simple")

    # a style saved before the names were checked is refused before anything reaches ComfyUI
    db = Database(settings.effective_database_url)
    try:
        with db.begin() as conn:
            conn.execute(generation_styles.update().where(generation_styles.c.project_id == p["id"])
                         .values(sampler="not_a_sampler"))
            assert conn.execute(sa.select(generation_styles.c.sampler)).scalar() == "not_a_sampler"
    finally:
        db.dispose()
    fake = state_of(comfy.app)
    sent = len(fake.prompts)
    err = await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate", json={}), 400)
    assert "Unknown sampler 'not_a_sampler'" in err["message"]
    assert len(fake.prompts) == sent
    object_info_calls = [path for method, path, _ in fake.requests if path.startswith("/object_info")]
    # the sampler lists and the whole /object_info (the pre-send check) are each fetched once, then cached
    assert object_info_calls == ["/object_info/KSampler", "/object_info"]


async def test_the_checkpoints_are_comfyuis_own_list(make_client, make_settings, aiohttp_server, settings):
    from support.comfy_schema import with_server_files

    info = with_server_files(OBJECT_INFO, checkpoints=["anime/aiko.safetensors", "sd15.safetensors"])
    server = await aiohttp_server(create_fake_comfyui(info, settings.comfyui_output_dir))
    client = await make_client(make_settings(comfyui_url=str(server.make_url("/")).rstrip("/")))
    listed = await (await client.get(f"{V1}/checkpoints")).json()
    assert listed == {"items": ["anime/aiko.safetensors", "sd15.safetensors"], "source": "comfyui"}
    offline = await make_client(make_settings(comfyui_url="http://127.0.0.1:9"))
    down = await (await offline.get(f"{V1}/checkpoints")).json()
    assert down["items"] == [] and down["source"] == "unavailable" and "not reachable" in down["message"]
