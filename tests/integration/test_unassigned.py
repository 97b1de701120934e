"""A project's unassigned pool: ingest without a character, the classifier sorts the sure images
and leaves the rest for a person, who moves them (files and records together); approval needs a
character; training/export see only a character's approved images; reconcile knows the folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.api import V1, assert_error, finished, make_character, make_project, upload
from support.fake_ollama import create_fake_ollama
from support.images import image_bytes

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "samples" / "comfyui_output_with_metadata.png"


def pngs(seed: int, n: int):
    return [(f"{seed + i}.png", image_bytes(size=(32, 32), seed=seed + i), "image/png") for i in range(n)]


async def get(client, path):
    r = await client.get(f"{V1}{path}")
    assert r.status == 200, await r.text()
    return await r.json()


async def test_pool_ingest_classify_sort_and_decide(make_client, aiohttp_server, settings):
    answers = iter([{"primary": "kael", "others": [], "confidence": 0.9, "description": "a boy"},
                    {"primary": "kael", "others": [], "confidence": 0.3, "description": "unsure"},
                    {"primary": "zephyra", "others": [], "confidence": 0.95, "description": "a girl"},
                    {"primary": "nobody", "others": [], "confidence": 0.99, "description": "not on the roster"}])
    ollama = await aiohttp_server(create_fake_ollama(lambda call: json.dumps(next(answers))))
    client = await make_client(classifier="ollama", ollama_url=str(ollama.make_url("")).rstrip("/"))
    root = settings.effective_datasets_dir
    p = await make_project(client, "Skyfall")
    zephyra = await make_character(client, p["id"], "Zephyra")
    kael = await make_character(client, p["id"], "Kael")

    body = await upload(client, None, *pngs(800, 4), caption="1girl", project_id=p["id"])
    assert body["skipped"] == [] and len(body["created"]) == 4
    ids = [i["id"] for i in body["created"]]
    for image in body["created"]:
        assert (image["character_id"], image["project_id"], image["unassigned"]) == (None, p["id"], True)
        assert image["rel_path"].startswith("skyfall/_unassigned/images/") and image["status"] == "pending"
        assert (root / image["rel_path"]).is_file()
        assert (root / image["rel_path"]).with_suffix(".txt").read_text() == "1girl"
    pool = await get(client, f"/projects/{p['id']}/images?unassigned=true")
    assert [i["id"] for i in pool["items"]] == ids
    assert (await get(client, f"/images?project_id={p['id']}&unassigned=false"))["items"] == []
    assert (await get(client, f"/characters/{zephyra['id']}/images"))["items"] == []
    await assert_error(await client.get(f"{V1}/images?unassigned=maybe"), 400)

    # a pool image can be rejected (and the rejection undone) but not approved
    err = await assert_error(await client.post(f"{V1}/images/{ids[3]}/approve"), 409)
    assert "no character" in err["message"]
    await assert_error(await client.post(f"{V1}/images/decisions", json={"image_ids": ids, "decision": "approve"}), 409)
    assert all(i["status"] == "pending" for i in (await get(client, f"/projects/{p['id']}/images"))["items"])
    rejected = await (await client.post(f"{V1}/images/{ids[3]}/reject", json={"categories": ["not_solo"]})).json()
    assert rejected["status"] == "rejected" and rejected["character_id"] is None
    undone = await (await client.post(f"{V1}/decisions/undo")).json()
    assert undone["reverted"] == [ids[3]]

    # the classifier moves the sure ones (files and records) and leaves the rest in the pool
    job = await finished(client, await (await client.post(f"{V1}/projects/{p['id']}/classify")).json())
    assert job["status"] == "succeeded", job
    assert job["result"]["moved"] == [ids[0], ids[2]] and job["result"]["left_unassigned"] == [ids[1], ids[3]]
    first = await get(client, f"/images/{ids[0]}")
    assert first["character_id"] == kael["id"] and first["rel_path"].startswith("skyfall/kael/images/")
    assert (root / first["rel_path"]).is_file() and (root / first["rel_path"]).with_suffix(".txt").is_file()
    assert not (root / body["created"][0]["rel_path"]).exists()
    assert not (root / body["created"][0]["rel_path"]).with_suffix(".txt").exists()
    assert (await get(client, f"/images/{ids[2]}"))["character_id"] == zephyra["id"]
    unsure = await get(client, f"/images/{ids[1]}")
    assert unsure["unassigned"] and unsure["suggestion"] == {"character_id": kael["id"], "confidence": 0.3}
    assert [i["id"] for i in (await get(client, f"/projects/{p['id']}/images?unassigned=true"))["items"]] == [
        ids[1], ids[3]]

    # a person sorts the rest: into a character, and back into the pool
    r = await client.post(f"{V1}/images/{ids[1]}/reassign", json={"character_id": zephyra["id"]})
    moved = await r.json()
    assert r.status == 200 and moved["character_id"] == zephyra["id"] and not moved["unassigned"]
    assert (root / moved["rel_path"]).is_file() and not (root / unsure["rel_path"]).exists()
    back = await (await client.post(f"{V1}/images/{ids[2]}/reassign", json={"unassigned": True})).json()
    assert back["unassigned"] and back["rel_path"].startswith("skyfall/_unassigned/images/")
    assert (root / back["rel_path"]).is_file() and (root / back["rel_path"]).with_suffix(".txt").read_text() == "1girl"
    for bad in ({}, {"character_id": kael["id"], "unassigned": True}, {"unassigned": False}):
        await assert_error(await client.post(f"{V1}/images/{ids[2]}/reassign", json=bad), 400)
    await assert_error(await client.post(f"{V1}/images/{ids[2]}/reassign", json={"character_id": 99999}), 404)

    # approval of assigned images; training and export only ever see a character's approved images
    ok = await (await client.post(f"{V1}/images/decisions", json={"image_ids": [ids[0], ids[1]],
                                                                   "decision": "approve"})).json()
    assert ok["changed"] == [ids[0], ids[1]]
    kael_list = await get(client, f"/characters/{kael['id']}/images?status=approved")
    assert [i["id"] for i in kael_list["items"]] == [ids[0]]
    r = await client.get(f"{V1}/characters/{kael['id']}/export")
    assert r.status == 200
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(await r.read())).namelist()
    assert names == [f"10_kael person/{Path(first['rel_path']).name}",
                     f"10_kael person/{Path(first['rel_path']).with_suffix('.txt').name}"]
    chars = {c["slug"]: c["counts"] for c in (await get(client, f"/projects/{p['id']}/characters"))["items"]}
    assert chars == {"kael": {"pending": 0, "approved": 1}, "zephyra": {"pending": 0, "approved": 1}}


async def test_pool_duplicates_and_unknown_projects(client, settings):
    p = await make_project(client)
    c = await make_character(client, p["id"])
    files = pngs(900, 2)
    mine = (await upload(client, c["id"], files[0]))["created"][0]
    # the pool skips what any character of the project already has, and its own duplicates
    body = await upload(client, None, *files, project_id=p["id"])
    assert [i["metadata"]["original_name"] for i in body["created"]] == ["901.png"]
    assert body["skipped"] == [{"filename": "900.png", "reason": f"exact duplicate of image {mine['id']}"}]
    body = await upload(client, None, files[1], project_id=p["id"])
    assert body["created"] == [] and "duplicate" in body["skipped"][0]["reason"]
    for url in (f"{V1}/projects/424242/images", f"{V1}/projects/424242/ingest/video"):
        r = await client.post(url, data=b"x", headers={"Content-Type": "multipart/form-data; boundary=x"})
        await assert_error(r, 404)
    await assert_error(await client.post(f"{V1}/projects/424242/ingest/url", json={"url": "https://example.com/v"}),
                       404)
    await assert_error(await client.post(f"{V1}/projects/424242/import-outputs", json={"all": True}), 404)
    await assert_error(await client.get(f"{V1}/projects/424242/images"), 404)
    staging = settings.effective_datasets_dir / ".staging"
    assert not [d for d in staging.iterdir() if d.name.startswith("upload-")]


async def test_output_import_and_video_into_the_pool(client, settings, tmp_path):
    import aiohttp
    from support.videos import encode_video, pattern

    out = settings.comfyui_output_dir
    out.mkdir(parents=True)
    shutil.copy(SAMPLE, out / "aiko_00001_.png")
    p = await make_project(client)
    r = await client.post(f"{V1}/projects/{p['id']}/import-outputs", json={"all": True})
    assert r.status == 202, await r.text()
    job = await finished(client, await r.json())
    assert job["status"] == "succeeded" and job["character_id"] is None and len(job["result"]["created"]) == 1
    image = await get(client, f"/images/{job['result']['created'][0]}")
    assert image["unassigned"] and image["source"] == "comfyui_output" and "prompt" in image["metadata"]

    video = encode_video(tmp_path / "clip.mp4", [(1.0, pattern(1)), (1.0, pattern(2))])
    form = aiohttp.FormData()
    form.add_field("file", video.read_bytes(), filename="clip.mp4", content_type="video/mp4")
    form.add_field("max_frames", "4")
    r = await client.post(f"{V1}/projects/{p['id']}/ingest/video", data=form)
    assert r.status == 202, await r.text()
    job = await finished(client, await r.json())
    assert job["status"] == "succeeded", job
    frames = [await get(client, f"/images/{i}") for i in job["result"]["created"]]
    assert frames and all(f["unassigned"] and f["source"] == "video" and f["project_id"] == p["id"] for f in frames)


async def test_reconcile_adopts_and_flags_files_of_the_pool(client, settings):
    p = await make_project(client, "Moon")
    await make_character(client, p["id"], "Aiko")
    for startup in (await get(client, "/jobs?kind=reconcile"))["items"]:  # else it may adopt the file first
        await finished(client, startup)
    folder = settings.effective_datasets_dir / "moon" / "_unassigned" / "images"
    folder.mkdir(parents=True)
    (folder / "found.png").write_bytes(image_bytes(seed=950))
    (folder / "found.txt").write_text("a caption")
    job = await finished(client, await (await client.post(f"{V1}/datasets/reconcile")).json())
    assert job["status"] == "succeeded" and job["result"]["adopted"] == ["moon/_unassigned/images/found.png"]
    pool = (await get(client, f"/projects/{p['id']}/images?unassigned=true"))["items"]
    assert [(i["rel_path"], i["caption"], i["source"]) for i in pool] == [
        ("moon/_unassigned/images/found.png", "a caption", "reconcile")]
    (folder / "found.png").unlink()
    job = await finished(client, await (await client.post(f"{V1}/datasets/reconcile")).json())
    assert job["result"]["missing"] == [pool[0]["id"]] and job["result"]["adopted"] == []
    assert (await get(client, f"/images/{pool[0]['id']}"))["file_missing"] is True


async def test_no_character_folder_can_be_the_pool(client, settings):
    from lora_studio.core.errors import InvalidInput
    from lora_studio.datasets.layout import UNASSIGNED, DatasetLayout

    p = await make_project(client)
    c = await make_character(client, p["id"], UNASSIGNED)
    assert c["slug"] == "unassigned"  # slugs never start with '_' (nor '.')
    layout = DatasetLayout(settings.effective_datasets_dir)
    assert layout.images_dir("p", None).parent.name == UNASSIGNED
    for slug in (UNASSIGNED, ".staging", ""):
        with pytest.raises(InvalidInput):
            layout.images_dir("p", slug)
    body = await upload(client, c["id"], *pngs(970, 1))
    assert body["created"][0]["rel_path"].split("/")[1] == "unassigned"


async def test_deleting_a_character_moves_its_images_to_the_pool(client, settings):
    """Nothing curated is lost: files, captions and statuses go to the project's pool (a name the pool already
    has gets the image id), the character's feedback and LoRA records go; refused while it has a job queued."""
    from datetime import datetime, timezone

    import sqlalchemy as sa
    from lora_studio.app import STUDIO_KEY
    from lora_studio.core.schema import feedback, jobs

    root = settings.effective_datasets_dir
    p = await make_project(client, "Harbor")
    aiko = await make_character(client, p["id"], "Aiko")
    other = await make_character(client, p["id"], "Ren")
    created = (await upload(client, aiko["id"], *pngs(900, 3), caption="1girl"))["created"]
    ids = [i["id"] for i in created]
    pooled = (await upload(client, None, *pngs(990, 1), project_id=p["id"]))["created"][0]
    first_name = Path(created[0]["rel_path"]).name
    clash = root / "harbor" / "_unassigned" / "images" / first_name  # the pool folder has that name already
    clash.write_bytes(b"someone else's file")
    ren_image = (await upload(client, other["id"], *pngs(950, 1)))["created"][0]
    assert (await client.post(f"{V1}/images/{ids[0]}/approve")).status == 200
    assert (await client.post(f"{V1}/images/{ids[1]}/reject", json={"categories": ["not_solo"]})).status == 200

    studio = client.server.app[STUDIO_KEY].get()
    with studio.db.begin() as conn:  # as if a training of this character were running (the runner only claims
        now = datetime.now(timezone.utc)  # queued jobs: this row stays as it is)
        job_id = conn.execute(jobs.insert().values(
            kind="train", status="running", progress=0.5, message="step 3/6", payload={}, character_id=aiko["id"],
            cancel_requested=False, created_at=now, updated_at=now)).inserted_primary_key[0]
    err = await assert_error(await client.delete(f"{V1}/characters/{aiko['id']}"), 409)
    assert f"train job (#{job_id}) running" in err["message"]
    with studio.db.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(status="cancelled"))

    from lora_studio.core.schema import images
    (root / created[2]["rel_path"]).unlink()  # a file that went missing on disk (reconcile marked it)
    with studio.db.begin() as conn:
        conn.execute(images.update().where(images.c.id == ids[2]).values(file_missing=True))

    r = await client.delete(f"{V1}/characters/{aiko['id']}")
    assert r.status == 200, await r.text()
    assert await r.json() == {"deleted": aiko["id"], "images_to_pool": ids}
    await assert_error(await client.get(f"{V1}/characters/{aiko['id']}"), 404)
    pending_pool = (await get(client, f"/projects/{p['id']}/images?unassigned=true"))["items"]
    assert {i["id"] for i in pending_pool} == {ids[2], pooled["id"]}  # the review queue lists pending images
    pool = {i: await get(client, f"/images/{i}") for i in (*ids, pooled["id"])}
    assert [pool[i]["status"] for i in ids] == ["approved", "rejected", "pending"]
    stem, suffix = first_name.rsplit(".", 1)
    assert pool[ids[0]]["rel_path"] == f"harbor/_unassigned/images/{stem}-{ids[0]}.{suffix}"
    assert clash.read_bytes() == b"someone else's file"
    assert pool[pooled["id"]]["rel_path"] == pooled["rel_path"]
    for image in created[:2]:
        moved = pool[image["id"]]
        assert moved["character_id"] is None and moved["project_id"] == p["id"]
        assert (root / moved["rel_path"]).is_file() and not (root / image["rel_path"]).exists()
        assert (root / moved["rel_path"]).with_suffix(".txt").read_text() == "1girl"
    missing = pool[ids[2]]  # the record moves all the same, still marked missing; its caption came along
    assert missing["character_id"] is None and missing["rel_path"].startswith("harbor/_unassigned/images/")
    assert (root / missing["rel_path"]).with_suffix(".txt").read_text() == "1girl"
    with studio.db.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(feedback)).scalar() == 0
    assert (await get(client, f"/images/{ren_image['id']}"))["character_id"] == other["id"]  # others untouched
    await assert_error(await client.delete(f"{V1}/characters/{aiko['id']}"), 404)
