"""Lists that were answered whole now take `limit` and `cursor` and answer `next_cursor` (keyset
pagination in a stable order), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64

import pytest
from lora_studio.core.db import Database, utcnow
from lora_studio.core.schema import jobs, lora_models
from support.api import V1, assert_error, make_character, make_project


async def pages(client, path: str, limit: int) -> list[list[dict]]:
    """Every page of a list, following next_cursor."""
    out, cursor = [], None
    for _ in range(50):
        sep = "&" if "?" in path else "?"
        url = f"{V1}{path}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        r = await client.get(url)
        assert r.status == 200, await r.text()
        page = await r.json()
        assert len(page["items"]) <= limit
        out.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError(f"{path}: the cursor never ran out")


async def test_projects_and_characters_page_by_name(client):
    names = ["Moon", "Aster", "Comet", "Moon Two", "Nova"]  # one case: the same order under any collation
    ids = {n: (await make_project(client, n))["id"] for n in names}
    everything = (await (await client.get(f"{V1}/projects")).json())  # the default page holds them all
    by_name = [p["name"] for p in everything["items"]]
    assert by_name == ["Aster", "Comet", "Moon", "Moon Two", "Nova"] and everything["next_cursor"] is None
    got = await pages(client, "/projects", 2)
    assert [len(p) for p in got] == [2, 2, 1]
    assert [p["name"] for page in got for p in page] == by_name  # the same order, nothing twice or lost

    # a project added between pages before the cursor is not shown; one after it is
    r = await client.get(f"{V1}/projects?limit=2")
    first = await r.json()
    await make_project(client, "0 first")
    await make_project(client, "zz last")
    rest = await pages(client, f"/projects?cursor={first['next_cursor']}", 10)
    assert [p["name"] for page in rest for p in page] == by_name[2:] + ["zz last"]

    moon, nova = ids["Moon"], ids["Nova"]
    for n, name in enumerate(["Kael", "Aiko", "Bea", "Kael Two"]):
        await make_character(client, moon if n % 2 == 0 else nova, name)
    await make_character(client, moon, "Zed")
    all_chars = await pages(client, "/characters", 2)
    assert [len(p) for p in all_chars] == [2, 2, 1]
    flat = [c["name"] for page in all_chars for c in page]
    assert flat == [c["name"] for c in (await (await client.get(f"{V1}/characters")).json())["items"]]
    assert flat == ["Aiko", "Bea", "Kael", "Kael Two", "Zed"]
    assert "counts" in all_chars[0][0] and all_chars[0][0]["project_slug"]
    mine = await pages(client, f"/projects/{moon}/characters", 1)
    assert [[c["name"] for c in page] for page in mine] == [["Bea"], ["Kael"], ["Zed"]]

    # cursors are client input: garbage, the wrong shape, and keys no database can compare with are a 400
    forged = [base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=") for raw in (
        '["Moon", 100000000000000000000000]', '["Mo\\u0000on", 1]', '["\\ud800", 1]', '["Moon", true]', '[1, "Moon"]')]
    for path in ("/projects", "/characters", f"/projects/{moon}/characters"):
        for bad in ("limit=0", "limit=501", "limit=x", "cursor=%25%25%25", "cursor=WzFd", "cursor=" + "A" * 3000,
                    *(f"cursor={c}" for c in forged)):
            await assert_error(await client.get(f"{V1}{path}?{bad}"), 400)
    await assert_error(await client.get(f"{V1}/projects/999/characters?limit=1"), 404)


async def test_loras_and_samples_page(client, settings):
    p = await make_project(client)
    c = await make_character(client, p["id"])
    other = await make_character(client, p["id"], "Other")
    db = Database(settings.effective_database_url)
    try:
        with db.begin() as conn:
            lora_ids = [conn.execute(lora_models.insert().values(
                character_id=cid, file_name=f"lora-{n}.safetensors", base_model="tiny", rank=4, alpha=2.0, steps=3,
                learning_rate=1e-4, sha256="0" * 64, image_count=2, created_at=utcnow())).inserted_primary_key[0]
                for n, cid in enumerate([c["id"], other["id"], c["id"], c["id"], c["id"]])]
            samples = [{"step": step, "file": f"step-{step:06d}{suffix}", "prompt": "aiko"}
                       for step, suffix in [(30, ".png"), (10, ".png"), (20, ".webp"), (10, ".jpg"), (200, ".png")]]
            job_id = conn.execute(jobs.insert().values(
                kind="train", status="succeeded", payload={}, result={"samples": samples}, character_id=c["id"],
                created_at=utcnow(), updated_at=utcnow())).inserted_primary_key[0]
            other_job = conn.execute(jobs.insert().values(
                kind="reconcile", status="succeeded", payload={}, result={}, created_at=utcnow(),
                updated_at=utcnow())).inserted_primary_key[0]
    finally:
        db.dispose()

    mine = [i for n, i in enumerate(lora_ids) if n != 1]
    got = await pages(client, f"/characters/{c['id']}/loras", 3)
    assert [[lo["id"] for lo in page] for page in got] == [mine[::-1][:3], mine[::-1][3:]]  # newest first
    assert (await (await client.get(f"{V1}/characters/{c['id']}/loras")).json())["next_cursor"] is None
    await assert_error(await client.get(f"{V1}/characters/{c['id']}/loras?cursor=abc"), 400)

    got = await pages(client, f"/jobs/{job_id}/samples", 2)
    assert [[(s["step"], s["file"]) for s in page] for page in got] == [
        [(10, "step-000010.jpg"), (10, "step-000010.png")], [(20, "step-000020.webp"), (30, "step-000030.png")],
        [(200, "step-000200.png")]]
    assert got[0][0]["url"] == f"/jobs/{job_id}/samples/step-000010.jpg"
    whole = (await (await client.get(f"{V1}/jobs/{job_id}/samples")).json())
    assert len(whole["items"]) == 5 and whole["next_cursor"] is None
    await assert_error(await client.get(f"{V1}/jobs/{job_id}/samples?cursor=nope"), 400)
    await assert_error(await client.get(f"{V1}/jobs/{other_job}/samples?limit=1"), 400)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_openapi_declares_the_list_parameters(client):
    paths = (await (await client.get(f"{V1}/openapi.json")).json())["paths"]
    for path in ("/projects", "/characters", "/projects/{project_id}/characters", "/characters/{character_id}/loras",
                 "/jobs/{job_id}/samples", "/jobs", "/gallery"):
        names = {p["name"] for p in paths[V1 + path]["get"].get("parameters", []) if p["in"] == "query"}
        assert {"limit", "cursor"} <= names, path
