"""Projects, styles and characters through a real aiohttp server, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from support.api import V1, assert_error, make_character, make_project


async def test_health_names_the_database(client, database_url):
    body = await (await client.get(f"{V1}/health")).json()
    assert body["status"] == "ok"
    assert body["database"] == ("sqlite" if database_url is None else "postgresql")
    assert body["schema_version"] >= 1


async def test_project_crud_and_default_style(client):
    p = await make_project(client, "Moon Academy!")
    assert p["slug"] == "moon-academy"
    style = await (await client.get(f"{V1}/projects/{p['id']}/style")).json()
    assert (style["cfg"], style["steps"], style["sampler"], style["scheduler"]) == (7.0, 25, "dpmpp_2m", "karras")
    assert style["positive_template"] == "masterpiece, best quality, highly detailed"

    r = await client.patch(f"{V1}/projects/{p['id']}", json={"description": "school anime"})
    assert (await r.json())["description"] == "school anime"
    items = (await (await client.get(f"{V1}/projects")).json())["items"]
    assert [x["name"] for x in items] == ["Moon Academy!"]

    await assert_error(await client.post(f"{V1}/projects", json={"name": "moon academy"}), 409, "conflict")
    r = await client.delete(f"{V1}/projects/{p['id']}")
    assert r.status == 200
    await assert_error(await client.get(f"{V1}/projects/{p['id']}"), 404, "not_found")


async def test_style_update_maps_human_sampler_names(client):
    p = await make_project(client)
    r = await client.patch(f"{V1}/projects/{p['id']}/style",
                           json={"sampler": "Euler a", "width": 512, "height": 768, "checkpoint": "anime.safetensors"})
    style = await r.json()
    assert (style["sampler"], style["scheduler"], style["width"], style["height"]) == ("euler_ancestral", "normal", 512, 768)
    await assert_error(await client.patch(f"{V1}/projects/{p['id']}/style", json={"width": 513}), 400)
    await assert_error(await client.patch(f"{V1}/projects/{p['id']}/style", json={"steps": "many"}), 400)
    await assert_error(await client.patch(f"{V1}/projects/{p['id']}/style", json={"sampler": "no such sampler"}), 400)


async def test_characters_slug_unique_per_project(client):
    a = await make_project(client, "A")
    b = await make_project(client, "B")
    c = await make_character(client, a["id"], "Aiko Tanaka", design_prompt="1girl, silver hair, red eyes")
    assert c["slug"] == "aiko-tanaka" and c["project_slug"] == "a"
    await assert_error(await client.post(f"{V1}/projects/{a['id']}/characters", json={"name": "aiko  tanaka"}),
                       409, "conflict")
    other = await make_character(client, b["id"], "Aiko Tanaka")  # same slug, other project: fine
    assert other["slug"] == "aiko-tanaka"
    listed = (await (await client.get(f"{V1}/projects/{a['id']}/characters")).json())["items"]
    assert [x["id"] for x in listed] == [c["id"]] and listed[0]["counts"] == {"pending": 0, "approved": 0}
    await assert_error(await client.delete(f"{V1}/projects/{a['id']}"), 409)


async def test_ssot_prompt_is_built_from_style_trigger_and_design(client):
    p = await make_project(client)
    c = await make_character(client, p["id"], design_prompt="1girl, silver hair, red eyes",
                             negative_prompt="glasses, blurry", trigger_word="aikotnk")
    prompt = await (await client.get(f"{V1}/characters/{c['id']}/prompt")).json()
    assert prompt["positive"] == "masterpiece, best quality, highly detailed, aikotnk, 1girl, silver hair, red eyes"
    # style negative first, then the character's, without the duplicate "blurry"
    assert prompt["negative"] == "worst quality, low quality, blurry, deformed, glasses"
    r = await client.patch(f"{V1}/characters/{c['id']}", json={"design_prompt": "1girl, blue hair"})
    assert (await r.json())["slug"] == "aiko-tanaka"
    prompt = await (await client.get(f"{V1}/characters/{c['id']}/prompt")).json()
    assert prompt["positive"].endswith("aikotnk, 1girl, blue hair")


@pytest.mark.parametrize("path,body", [
    ("/projects", {"name": ""}),
    ("/projects", {"name": "!!!"}),
    ("/projects", {"name": 5}),
    ("/projects", {"name": "x", "extra": 1}),
    ("/projects", ["not", "an", "object"]),
    ("/projects", {"name": "a\u0000b"}),
])
async def test_bad_input_is_a_4xx_with_an_error_object(client, path, body):
    await assert_error(await client.post(V1 + path, json=body), 400, "invalid_input")


async def test_malformed_json_and_bad_ids(client):
    await assert_error(await client.post(f"{V1}/projects", data=b"{nope", headers={"Content-Type": "application/json"}),
                       400)
    await assert_error(await client.get(f"{V1}/projects/abc"), 400)
    # Unicode digits pass str.isdigit() but not int(): found by fuzzing the OpenAPI document
    for odd in ["%C2%B3", "%D9%A3", "-1", "1e3", "9" * 30]:
        await assert_error(await client.get(f"{V1}/projects/{odd}"), 400)
        await assert_error(await client.post(f"{V1}/images/{odd}/approve"), 400)
    for query in ["limit=%C2%B3", "cursor=%C2%B3", "limit=-5"]:
        await assert_error(await client.get(f"{V1}/jobs?{query}"), 400)
    await assert_error(await client.get(f"{V1}/gallery?cursor=%C2%B3:a.png"), 400)
    await assert_error(await client.get(f"{V1}/characters/999999"), 404)
    await assert_error(await client.post(f"{V1}/projects/999/characters", json={"name": "x"}), 404)


@pytest.mark.parametrize("origin,allowed", [
    (None, True), ("null", False), ("http://evil.example", False), ("same", True), ("http://127.0.0.1:1", False),
])
async def test_state_changing_requests_from_other_origins_are_refused(client, origin, allowed):
    headers = {}
    if origin == "same":
        headers["Origin"] = f"http://{client.server.host}:{client.server.port}"
    elif origin:
        headers["Origin"] = origin
    r = await client.post(f"{V1}/projects", json={"name": f"p {origin}"}, headers=headers)
    if allowed:
        assert r.status == 201
    else:
        await assert_error(r, 403, "forbidden_origin")
        assert (await (await client.get(f"{V1}/projects")).json())["items"] == []


async def test_openapi_lists_every_route(client):
    doc = await (await client.get(f"{V1}/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    for path, method in [("/projects", "post"), ("/projects/{project_id}/style", "patch"),
                         ("/characters/{character_id}/images", "post"), ("/images/{image_id}/reject", "post"),
                         ("/characters/{character_id}/train", "post"), ("/characters/{character_id}/generate", "post"),
                         ("/gallery", "get"), ("/jobs/{job_id}/cancel", "post")]:
        assert method in paths[V1 + path], path
    reject = paths[V1 + "/images/{image_id}/reject"]["post"]
    assert "categories" in reject["requestBody"]["content"]["application/json"]["schema"]["properties"]
