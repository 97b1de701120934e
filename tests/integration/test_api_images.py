"""Upload, review queue, decisions and the feedback loop, through a real server."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from support.api import V1, assert_error, form, make_character, make_project, upload
from support.images import image_bytes


@pytest.fixture
async def character(client):
    p = await make_project(client)
    return await make_character(client, p["id"], design_prompt="1girl, silver hair")


async def test_upload_png_jpeg_webp_lands_pending_with_caption_files(client, character, settings):
    body = await upload(client, character["id"],
                        ("a.png", image_bytes("PNG", seed=1), "image/png"),
                        ("b.jpg", image_bytes("JPEG", seed=2), "image/jpeg"),
                        ("c.webp", image_bytes("WEBP", seed=3), "image/webp"),
                        caption="aiko, smiling")
    assert body["skipped"] == []
    created = body["created"]
    assert [c["metadata"]["format"] for c in created] == ["PNG", "JPEG", "WEBP"]
    root = settings.effective_datasets_dir
    for item in created:
        path = root / item["rel_path"]
        assert item["rel_path"].startswith("moon-academy/aiko-tanaka/images/")
        assert path.is_file() and path.with_suffix(".txt").read_text() == "aiko, smiling"
        assert item["status"] == "pending" and item["source"] == "upload"
    # stored losslessly: the bytes on disk are the bytes sent
    assert (root / created[0]["rel_path"]).read_bytes() == image_bytes("PNG", seed=1)
    listed = await (await client.get(f"{V1}/characters/{character['id']}/images?status=pending")).json()
    assert [i["id"] for i in listed["items"]] == [c["id"] for c in created]  # JPEG and WebP listed too
    r = await client.get(f"{V1}/images/{created[1]['id']}/file")
    assert r.status == 200 and await r.read() == image_bytes("JPEG", seed=2)


async def test_bad_files_are_reported_and_leave_nothing_behind(client, character, settings):
    png = image_bytes("PNG", seed=5)
    body = await upload(client, character["id"],
                        ("notes.txt", b"hello, not an image", "text/plain"),
                        ("cut.png", png[: len(png) // 2], "image/png"),
                        ("good.png", png, "image/png"),
                        ("again.png", png, "image/png"))
    reasons = {s["filename"]: s["reason"] for s in body["skipped"]}
    assert set(reasons) == {"notes.txt", "cut.png", "again.png"}
    assert "duplicate" in reasons["again.png"]
    assert len(body["created"]) == 1
    folder = settings.effective_datasets_dir / "moon-academy" / "aiko-tanaka" / "images"
    assert sorted(p.suffix for p in folder.iterdir()) == [".png", ".txt"]
    assert list((settings.effective_datasets_dir / ".staging").iterdir()) == []


@pytest.mark.parametrize("name", ["../../escape.png", "/etc/passwd.png", "..\\..\\win.png", "a/b/c.png"])
async def test_path_components_in_file_names_are_dropped(client, character, settings, name):
    body = await upload(client, character["id"], (name, image_bytes(seed=7), "image/png"))
    rel = body["created"][0]["rel_path"]
    assert rel.startswith("moon-academy/aiko-tanaka/images/") and ".." not in rel
    assert (settings.effective_datasets_dir / rel).resolve().is_relative_to(settings.effective_datasets_dir)


async def test_upload_cap_and_decompression_bomb(make_client):

    client = await make_client(max_upload_mb=1)
    p = await make_project(client)
    c = await make_character(client, p["id"])
    big = b"\x89PNG" + b"\0" * (1024 * 1024 + 10)
    r = await client.post(f"{V1}/characters/{c['id']}/images", data=form(("big.png", big, "image/png")))
    await assert_error(r, 413, "payload_too_large")
    import io

    from PIL import Image

    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, format="PNG")  # 144 Mpx, a few KB on the wire
    body = await upload(client, c["id"], ("bomb.png", bomb.getvalue(), "image/png"))
    assert body["created"] == [] and "too large" in body["skipped"][0]["reason"]


async def test_upload_needs_multipart_and_a_known_character(client, character):
    await assert_error(await client.post(f"{V1}/characters/{character['id']}/images", json={"x": 1}), 415,
                       "unsupported_media_type")
    r = await client.post(f"{V1}/characters/424242/images", data=form(("a.png", image_bytes(), "image/png")))
    await assert_error(r, 404)


async def test_decisions_and_feedback_terms(client, character, settings):
    cid = character["id"]
    created = (await upload(client, cid, *[(f"{i}.png", image_bytes(seed=10 + i), "image/png") for i in range(4)]))["created"]
    ids = [c["id"] for c in created]
    assert (await (await client.post(f"{V1}/images/{ids[0]}/approve")).json())["status"] == "approved"
    r = await client.post(f"{V1}/images/{ids[1]}/reject", json={"categories": ["not_solo"], "note": "two girls"})
    assert (await r.json())["status"] == "rejected"
    # a single category without a note is a valid rejection (the old parser dropped it)
    r = await client.post(f"{V1}/images/{ids[2]}/reject", json={"categories": ["bad_quality"]})
    assert r.status == 200
    await assert_error(await client.post(f"{V1}/images/{ids[3]}/reject", json={"categories": ["ugly"]}), 400)
    await assert_error(await client.post(f"{V1}/images/{ids[3]}/reject", json={}), 400)
    await assert_error(await client.post(f"{V1}/images/999999/approve"), 404)

    pending = await (await client.get(f"{V1}/characters/{cid}/images")).json()
    assert [i["id"] for i in pending["items"]] == [ids[3]]
    approved = await (await client.get(f"{V1}/characters/{cid}/images?status=approved")).json()
    assert [i["id"] for i in approved["items"]] == [ids[0]]

    prompt = await (await client.get(f"{V1}/characters/{cid}/prompt")).json()
    assert prompt["learned_terms"] == ["multiple characters", "crowd", "group shot", "blurry", "low quality",
                                       "artifacts", "distorted"]
    # style negative first; learned "blurry"/"low quality" already there, so not repeated
    assert prompt["negative"] == ("worst quality, low quality, blurry, deformed, multiple characters, crowd, "
                                  "group shot, artifacts, distorted")
    assert prompt["category_counts"]["not_solo"] == 1 and prompt["category_counts"]["bad_quality"] == 1

    from lora_studio.core.db import Database

    db = Database(settings.effective_database_url)
    with db.begin() as conn:
        notes = conn.execute(sa.text("SELECT note FROM feedback ORDER BY id")).scalars().all()
    db.dispose()
    assert notes == ["two girls", ""]


async def test_pagination_with_cursor(client, character):
    cid = character["id"]
    files = [(f"{i}.png", image_bytes(seed=40 + i), "image/png") for i in range(5)]
    ids = [c["id"] for c in (await upload(client, cid, *files))["created"]]
    seen, cursor = [], None
    while True:
        url = f"{V1}/characters/{cid}/images?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url)).json()
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids
    await assert_error(await client.get(f"{V1}/characters/{cid}/images?limit=0"), 400)
    await assert_error(await client.get(f"{V1}/characters/{cid}/images?cursor=x"), 400)
    await assert_error(await client.get(f"{V1}/characters/{cid}/images?status=weird"), 400)
