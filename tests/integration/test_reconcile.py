"""Reconcile: files put into a character's folder by hand are adopted; records whose files vanish
are flagged, never deleted, and unflagged when the file comes back."""

from __future__ import annotations

import asyncio

from support.api import V1, finished, make_character, make_project, upload
from support.images import image_bytes


async def run_reconcile(client):
    return await finished(client, await (await client.post(f"{V1}/datasets/reconcile")).json(), timeout=10)


async def test_reconcile_adopts_and_flags(client, settings):
    p = await make_project(client)
    c = await make_character(client, p["id"])
    kept = (await upload(client, c["id"], ("a.png", image_bytes(seed=1), "image/png")))["created"][0]
    gone = (await upload(client, c["id"], ("b.png", image_bytes(seed=2), "image/png")))["created"][0]
    folder = settings.effective_datasets_dir / "moon-academy" / "aiko-tanaka" / "images"
    (folder / "by_hand.jpg").write_bytes(image_bytes("JPEG", seed=3))
    (folder / "by_hand.txt").write_text("aiko, from kohya folder")
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    (folder / "copy.png").write_bytes(image_bytes(seed=1))  # same picture as a recorded one
    gone_path = settings.effective_datasets_dir / gone["rel_path"]
    moved_away = gone_path.with_name("elsewhere.bin")
    gone_path.rename(moved_away)

    job = await run_reconcile(client)
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["adopted"] == ["moon-academy/aiko-tanaka/images/by_hand.jpg"]
    assert {s["path"].rsplit("/", 1)[1] for s in result["skipped"]} == {"broken.png", "copy.png"}
    assert result["missing"] == [gone["id"]]
    pending = (await (await client.get(f"{V1}/characters/{c['id']}/images")).json())["items"]
    adopted = [i for i in pending if i["source"] == "reconcile"]
    assert len(adopted) == 1 and adopted[0]["caption"] == "aiko, from kohya folder"
    assert (await (await client.get(f"{V1}/images/{gone['id']}")).json())["file_missing"] is True
    assert (await (await client.get(f"{V1}/images/{kept['id']}")).json())["file_missing"] is False
    assert (folder / "broken.png").exists()  # nothing is deleted

    moved_away.rename(gone_path)
    result = (await run_reconcile(client))["result"]
    assert result["adopted"] == [] and result["restored"] == [gone["id"]]
    assert (await (await client.get(f"{V1}/images/{gone['id']}")).json())["file_missing"] is False


async def test_start_up_reconcile(make_client, settings):

    first = await make_client(settings)
    p = await make_project(first)
    c = await make_character(first, p["id"])
    await first.close()
    folder = settings.effective_datasets_dir / "moon-academy" / "aiko-tanaka" / "images"
    folder.mkdir(parents=True)
    (folder / "offline.webp").write_bytes(image_bytes("WEBP", seed=9))
    second = await make_client(settings)
    for _ in range(200):
        items = (await (await second.get(f"{V1}/characters/{c['id']}/images")).json())["items"]
        if items:
            break
        await asyncio.sleep(0.05)
    assert [i["rel_path"] for i in items] == ["moon-academy/aiko-tanaka/images/offline.webp"]


async def test_an_upload_completes_a_record_that_reconcile_adopted_meanwhile(client, settings, monkeypatch):
    # The start-up reconcile can see an upload's file in the short time before its record is
    # written; the upload must then complete that record, not fail or delete the file.
    import sqlalchemy as sa
    from lora_studio.app import STUDIO_KEY
    from lora_studio.core.schema import images
    from lora_studio.datasets import images as images_module
    from lora_studio.datasets.reconcile import reconcile

    studio = client.server.app[STUDIO_KEY].get()
    p = await make_project(client)
    c = await make_character(client, p["id"])
    write_caption = images_module.atomic_write_bytes
    adopted = {}

    def reconcile_first(path, data):  # runs after the image is in place, before its record
        adopted.update(reconcile(studio.db, studio.layout))
        write_caption(path, data)

    monkeypatch.setattr(images_module, "atomic_write_bytes", reconcile_first)
    data = image_bytes(seed=42)
    body = await upload(client, c["id"], ("race.png", data, "image/png"), caption="aiko")
    assert len(adopted["adopted"]) == 1  # reconcile did take the file
    assert len(body["created"]) == 1 and body["skipped"] == []
    image = body["created"][0]
    assert image["source"] == "upload" and image["caption"] == "aiko" and image["rel_path"] == adopted["adopted"][0]
    assert (settings.effective_datasets_dir / image["rel_path"]).read_bytes() == data
    with studio.db.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(images)).scalar() == 1
