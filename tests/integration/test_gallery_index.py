"""The gallery's index of ComfyUI's output folder, through the HTTP API on SQLite and PostgreSQL: parameters
read from the files, filters and text search, a stable cursor, incremental passes (new, changed and removed
files; a restart reads nothing again), links to the studio's generations and characters, favourites, the
trash, sending an output to a dataset, video ranges and hostile names in the folder."""

from __future__ import annotations

import json
import os
from urllib.parse import quote

import sqlalchemy as sa
from lora_studio.app import STUDIO_KEY
from lora_studio.core.db import utcnow
from lora_studio.core.schema import gallery_items, generations
from support.api import V1, assert_error, finished, make_character, make_project
from support.gallery_files import write_animated_webp, write_png, write_webm

T0 = 1_700_000_000


def studio_of(client):
    return client.server.app[STUDIO_KEY].get()


async def page(client, **query) -> dict:
    r = await client.get(f"{V1}/gallery", params={k: str(v).lower() if isinstance(v, bool) else str(v)
                                                   for k, v in query.items()})
    assert r.status == 200, await r.text()
    return await r.json()


async def paths(client, **query) -> list[str]:
    return [i["path"] for i in (await page(client, limit=200, **query))["items"]]


async def reindex(client) -> dict:
    r = await client.post(f"{V1}/gallery/reindex")
    assert r.status == 202, await r.text()
    job = await finished(client, await r.json())
    assert job["status"] == "succeeded", job
    return job


async def test_items_carry_the_parameters_of_their_graph_and_filters_narrow_them(client, settings):
    out = settings.comfyui_output_dir
    p = await make_project(client)
    c = await make_character(client, p["id"])
    write_png(out / "ComfyUI_00001_.png", seed=11, mtime=T0 + 1, positive="aiko, red hair, beach",
              lora="moon-aiko-v1.safetensors", strength=0.8)
    write_png(out / "ComfyUI_00002_.png", seed=12, mtime=T0 + 2, positive="mei, blue eyes, library", lora=None)
    write_png(out / "lora_studio/moon/aiko_00001_.png", seed=13, mtime=T0 + 3, character_id=c["id"],
              positive="aiko, smiling, classroom", negative="bad hands", steps=28, cfg=5.5)
    write_animated_webp(out / "anim_00001_.webp", seed=14, mtime=T0 + 4, positive="aiko waving")
    write_webm(out / "clip_00001_.webm", seed=15, mtime=T0 + 5, positive="aiko walking")
    (out / "notes.txt").write_text("not an image")

    items = (await page(client))["items"]
    assert [i["path"] for i in items] == ["clip_00001_.webm", "anim_00001_.webp", "lora_studio/moon/aiko_00001_.png",
                                          "ComfyUI_00002_.png", "ComfyUI_00001_.png"]
    studio_made = items[2]
    assert studio_made["params"] == {
        "positive": "aiko, smiling, classroom", "negative": "bad hands", "seed": 13, "sampler": "euler",
        "scheduler": "karras", "steps": 28, "cfg": 5.5, "checkpoint": "sd15.safetensors",
        "loras": [{"name": "moon-aiko-v1.safetensors", "strength_model": 0.8, "strength_clip": 0.8}]}
    assert (studio_made["character_id"], studio_made["project_id"], studio_made["generation_id"]) == (
        c["id"], p["id"], None)
    assert (studio_made["name"], studio_made["subfolder"], studio_made["kind"], studio_made["media_type"]) == (
        "aiko_00001_.png", "lora_studio/moon", "image", "image/png")
    assert (studio_made["width"], studio_made["height"], studio_made["favourite"], studio_made["trashed"]) == (
        48, 48, False, False)
    assert studio_made["size"] == (out / "lora_studio/moon/aiko_00001_.png").stat().st_size
    assert studio_made["mtime"] == T0 + 3
    assert studio_made["thumb_url"] == f"/gallery/thumb?path={quote('lora_studio/moon/aiko_00001_.png', safe='')}&size=256"
    assert items[0]["kind"] == "video" and items[0]["media_type"] == "video/webm"
    assert (items[0]["width"], items[0]["height"], items[0]["params"]["seed"]) == (32, 24, 15)
    assert items[1]["kind"] == "video" and items[1]["params"]["positive"] == "aiko waving"  # animated WebP: EXIF
    assert items[3]["params"]["loras"] == [] and items[4]["params"]["loras"][0]["name"] == "moon-aiko-v1.safetensors"
    assert await (await client.get(f"{V1}/gallery/{items[2]['id']}")).json() == studio_made

    assert await paths(client, kind="video") == ["clip_00001_.webm", "anim_00001_.webp"]
    assert await paths(client, kind="image") == ["lora_studio/moon/aiko_00001_.png", "ComfyUI_00002_.png",
                                                 "ComfyUI_00001_.png"]
    assert await paths(client, character_id=c["id"]) == ["lora_studio/moon/aiko_00001_.png"]
    assert await paths(client, project_id=p["id"]) == ["lora_studio/moon/aiko_00001_.png"]
    assert await paths(client, lora="moon-aiko-v1.safetensors", kind="image") == [
        "lora_studio/moon/aiko_00001_.png", "ComfyUI_00001_.png"]
    loras = await (await client.get(f"{V1}/gallery/loras")).json()
    assert loras == {"items": [{"name": "moon-aiko-v1.safetensors", "count": 4}]}
    assert await paths(client, since="2023-11-14T22:13:22Z", until="2023-11-14T22:13:24+00:00") == [
        "lora_studio/moon/aiko_00001_.png", "ComfyUI_00002_.png"]  # T0 + 2 <= mtime < T0 + 4
    # text search: words are prefixes, all must match, over the prompts and the name
    assert await paths(client, q="blue eye") == ["ComfyUI_00002_.png"]
    assert await paths(client, q="Aiko beach") == ["ComfyUI_00001_.png"]
    assert await paths(client, q="bad_hands") == ["lora_studio/moon/aiko_00001_.png"]  # the negative prompt too
    assert await paths(client, q="clip") == ["clip_00001_.webm"]  # the file name
    assert await paths(client, q="aiko", kind="image", lora="moon-aiko-v1.safetensors") == [
        "lora_studio/moon/aiko_00001_.png", "ComfyUI_00001_.png"]
    assert await paths(client, q="nothing matches this") == []

    r = await client.post(f"{V1}/gallery/{items[3]['id']}/favourite", json={"favourite": True})
    assert r.status == 200 and (await r.json())["favourite"] is True
    assert await paths(client, favourite=True) == ["ComfyUI_00002_.png"]
    assert len(await paths(client, favourite=False)) == 4

    for query in ({"kind": "gif"}, {"since": "yesterday"}, {"q": "!!"}, {"limit": 201}, {"limit": 0},
                  {"character_id": "x"}, {"favourite": "yes"}, {"cursor": "garbage"}, {"lora": "x" * 501}):
        await assert_error(await client.get(f"{V1}/gallery", params=query), 400)
    await assert_error(await client.get(f"{V1}/gallery/99999"), 404)
    await assert_error(await client.post(f"{V1}/gallery/{items[0]['id']}/favourite", json={}), 400)
    await assert_error(await client.post(f"{V1}/gallery/99999/favourite", json={"favourite": True}), 404)


async def test_the_cursor_is_stable_while_files_arrive(client, settings):
    out = settings.comfyui_output_dir
    for i in range(7):  # same mtime for several: the id breaks the tie
        write_png(out / f"f{i}.png", seed=i, mtime=T0 + i // 3)
    first = await page(client, limit=3)
    write_png(out / "newer.png", seed=50, mtime=T0 + 100)  # arrives between pages: later pages do not shift
    seen = [i["path"] for i in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        nxt = await page(client, limit=3, cursor=cursor)
        seen += [i["path"] for i in nxt["items"]]
        cursor = nxt["next_cursor"]
    assert sorted(seen) == [f"f{i}.png" for i in range(7)] and len(set(seen)) == 7
    assert seen[:1] == ["f6.png"] and set(seen[-3:]) == {"f0.png", "f1.png", "f2.png"}
    assert (await paths(client))[0] == "newer.png"  # the next first page has it


async def test_incremental_passes_see_new_changed_and_removed_files(client, settings, monkeypatch):
    out = settings.comfyui_output_dir
    write_png(out / "a.png", seed=1, mtime=T0 + 1, positive="first version")
    write_png(out / "sub/b.png", seed=2, mtime=T0 + 2)
    write_png(out / "sub/c.png", seed=3, mtime=T0 + 3)
    assert await paths(client) == ["sub/c.png", "sub/b.png", "a.png"]
    ids = {i["path"]: i["id"] for i in (await page(client))["items"]}

    # a first page notices a new file, a removed file and a new folder at once (a quick check of the folders)
    (out / "sub/b.png").unlink()
    write_png(out / "new/deeper/d.png", seed=4, mtime=T0 + 4)
    assert await paths(client) == ["new/deeper/d.png", "sub/c.png", "a.png"]
    # a file rewritten in place (same name) is read again by a full pass; the row keeps its id and favourite
    await client.post(f"{V1}/gallery/{ids['a.png']}/favourite", json={"favourite": True})
    write_png(out / "a.png", seed=5, mtime=T0 + 5, positive="second version")
    job = await reindex(client)
    assert job["result"]["updated"] == 1 and job["result"]["added"] == 0
    item = await (await client.get(f"{V1}/gallery/{ids['a.png']}")).json()
    assert (item["params"]["positive"], item["favourite"], item["mtime"]) == ("second version", True, T0 + 5)
    assert await paths(client, q="second") == ["a.png"] and await paths(client, q="first") == []
    # a removed folder takes its items along
    for f in (out / "new/deeper").iterdir():
        f.unlink()
    (out / "new/deeper").rmdir()
    (out / "new").rmdir()
    assert await paths(client) == ["a.png", "sub/c.png"]

    # after a restart the database still holds what was seen: the first pass reads no file again
    studio = studio_of(client)
    from lora_studio.datasets import gallery_index

    reads = []
    real = gallery_index.read_media
    monkeypatch.setattr(gallery_index, "read_media", lambda path: reads.append(path) or real(path))
    fresh = gallery_index.GalleryIndex(studio.db, out)
    stats = fresh.full_pass()
    assert (stats["files"], stats["added"], stats["updated"], stats["removed"], reads) == (2, 0, 0, 0, [])
    write_png(out / "e.png", seed=6, mtime=T0 + 6)
    stats = fresh.full_pass()
    assert (stats["added"], [p.name for p in reads]) == (1, ["e.png"])


async def test_the_background_thread_indexes_without_requests(make_client, settings):
    """New outputs reach the index while nobody asks (the thread's quick checks), not only on a page request."""
    import asyncio

    client = await make_client(settings)
    out = settings.comfyui_output_dir
    out.mkdir(parents=True, exist_ok=True)
    studio = studio_of(client)
    studio.gallery_index.poll_s = 0.1
    write_png(out / "quiet.png", seed=1, mtime=T0)
    studio.gallery_index._wake.set()
    for _ in range(100):
        with studio.db.begin() as conn:
            found = conn.execute(sa.select(gallery_items.c.path)).scalars().all()
        if found:
            break
        await asyncio.sleep(0.05)
    assert found == ["quiet.png"]


async def test_outputs_link_to_the_generation_that_made_them(client, settings):
    out = settings.comfyui_output_dir
    p = await make_project(client)
    c = await make_character(client, p["id"])
    studio = studio_of(client)
    write_png(out / "lora_studio/moon/aiko_00007_.png", seed=7, mtime=T0)  # no studio mark in the file
    write_png(out / "lora_studio/moon/aiko_00008_.png", seed=8, mtime=T0 + 1)
    assert len(await paths(client)) == 2
    now = utcnow()
    with studio.db.begin() as conn:  # the generation ends after the file was indexed (ComfyUI's history)
        gid = conn.execute(generations.insert().values(
            character_id=c["id"], prompt_id="p-1", status="succeeded", graph={}, created_at=now, updated_at=now,
            outputs=[{"filename": "aiko_00007_.png", "subfolder": "lora_studio/moon", "type": "output"},
                     {"filename": "aiko_00008_.png", "subfolder": "lora_studio/moon", "type": "temp"}],
        )).inserted_primary_key[0]
    items = {i["name"]: i for i in (await page(client))["items"]}
    assert (items["aiko_00007_.png"]["generation_id"], items["aiko_00007_.png"]["character_id"],
            items["aiko_00007_.png"]["project_id"]) == (gid, c["id"], p["id"])
    assert items["aiko_00008_.png"]["generation_id"] is None  # a temp (preview) output is not this file
    assert await paths(client, character_id=c["id"]) == ["lora_studio/moon/aiko_00007_.png"]
    # the character goes: its items stay in the gallery, unlinked
    r = await client.delete(f"{V1}/characters/{c['id']}")
    assert r.status in (200, 202, 204), await r.text()
    if r.status == 202:
        await finished(client, await r.json())
    item = await (await client.get(f"{V1}/gallery/{items['aiko_00007_.png']['id']}")).json()
    assert item["character_id"] is None and item["generation_id"] is None


async def test_trash_restore_and_empty(client, settings):
    out = settings.comfyui_output_dir
    write_png(out / "sub/keep.png", seed=1, mtime=T0)
    write_png(out / "sub/gone.png", seed=2, mtime=T0 + 1)
    items = {i["name"]: i for i in (await page(client))["items"]}
    gone = items["gone.png"]
    data = (out / "sub/gone.png").read_bytes()

    r = await client.post(f"{V1}/gallery/{gone['id']}/trash")
    assert r.status == 200, await r.text()
    trashed = await r.json()
    assert trashed["trashed"] is True and trashed["original_path"] == "sub/gone.png"
    assert trashed["path"] == f".lora_studio_trash/{gone['id']}/sub/gone.png" and trashed["name"] == "gone.png"
    assert not (out / "sub/gone.png").exists() and (out / trashed["path"]).read_bytes() == data
    assert await paths(client) == ["sub/keep.png"]
    assert await paths(client, trashed=True) == [trashed["path"]]
    r = await client.get(f"{V1}/gallery/file", params={"path": trashed["path"]})  # still viewable in the trash
    assert r.status == 200 and await r.read() == data
    await reindex(client)  # a full pass neither drops the trashed item nor takes its file for a new one
    assert await paths(client, trashed=True) == [trashed["path"]] and await paths(client) == ["sub/keep.png"]
    await assert_error(await client.post(f"{V1}/gallery/{gone['id']}/trash"), 409)

    r = await client.post(f"{V1}/gallery/{gone['id']}/restore")
    assert r.status == 200, await r.text()
    restored = await r.json()
    assert (restored["path"], restored["trashed"], restored["original_path"], restored["id"]) == (
        "sub/gone.png", False, None, gone["id"])
    assert (out / "sub/gone.png").read_bytes() == data and not (out / ".lora_studio_trash" / str(gone["id"])).exists()
    assert await paths(client) == ["sub/gone.png", "sub/keep.png"]
    await assert_error(await client.post(f"{V1}/gallery/{gone['id']}/restore"), 409)

    # a file that took the name meanwhile is never overwritten by a restore
    await client.post(f"{V1}/gallery/{gone['id']}/trash")
    write_png(out / "sub/gone.png", seed=3, mtime=T0 + 2)
    await assert_error(await client.post(f"{V1}/gallery/{gone['id']}/restore"), 409)
    assert (out / "sub/gone.png").read_bytes() != data

    r = await client.post(f"{V1}/gallery/trash/empty")
    assert r.status == 200 and await r.json() == {"deleted": 1}
    assert await paths(client, trashed=True) == []
    assert not any((out / ".lora_studio_trash").rglob("*.png"))
    assert sorted(await paths(client)) == ["sub/gone.png", "sub/keep.png"]  # the newcomer stays
    await assert_error(await client.post(f"{V1}/gallery/99999/trash"), 404)


async def test_the_trash_folder_must_be_the_studios(client, settings, tmp_path):
    out = settings.comfyui_output_dir
    write_png(out / "sub/x.png", seed=1, mtime=T0)
    (tmp_path / "elsewhere").mkdir()
    (out / ".lora_studio_trash").symlink_to(tmp_path / "elsewhere")
    item = (await page(client))["items"][0]
    await assert_error(await client.post(f"{V1}/gallery/{item['id']}/trash"), 409)
    assert (out / "sub/x.png").exists() and not any((tmp_path / "elsewhere").iterdir())
    (out / ".lora_studio_trash").unlink()
    (out / ".lora_studio_trash").mkdir()
    (out / ".lora_studio_trash" / str(item["id"])).symlink_to(tmp_path / "elsewhere")  # a link planted inside
    await assert_error(await client.post(f"{V1}/gallery/{item['id']}/trash"), 409)
    assert (out / "sub/x.png").exists() and not any((tmp_path / "elsewhere").iterdir())


async def test_send_to_dataset_adds_a_pending_image_with_the_parameters(client, settings):
    out = settings.comfyui_output_dir
    p = await make_project(client)
    c = await make_character(client, p["id"])
    write_png(out / "ComfyUI_00001_.png", seed=21, mtime=T0, positive="aiko, red hair", size=(64, 64))
    write_webm(out / "clip.webm", seed=22, mtime=T0 + 1)
    items = {i["name"]: i for i in (await page(client))["items"]}
    item = items["ComfyUI_00001_.png"]

    r = await client.post(f"{V1}/gallery/{item['id']}/to-dataset", json={"character_id": c["id"]})
    assert r.status == 201, await r.text()
    image = await r.json()
    assert (image["status"], image["character_id"], image["source"]) == ("pending", c["id"], "comfyui_output")
    assert image["metadata"]["parameters"]["positive"] == "aiko, red hair"
    assert image["metadata"]["parameters"]["loras"][0]["name"] == "moon-aiko-v1.safetensors"
    assert image["metadata"]["output_path"] == "ComfyUI_00001_.png" and image["metadata"]["prompt"]["3"]
    queue = await (await client.get(f"{V1}/characters/{c['id']}/images")).json()
    assert [i["id"] for i in queue["items"]] == [image["id"]]
    assert (out / "ComfyUI_00001_.png").exists()  # copied, never moved

    await assert_error(await client.post(f"{V1}/gallery/{item['id']}/to-dataset", json={"character_id": c["id"]}),
                       409, "duplicate")
    await assert_error(await client.post(f"{V1}/gallery/{items['clip.webm']['id']}/to-dataset",
                                         json={"character_id": c["id"]}), 400)
    await assert_error(await client.post(f"{V1}/gallery/{item['id']}/to-dataset", json={"character_id": 99999}), 404)
    await assert_error(await client.post(f"{V1}/gallery/{item['id']}/to-dataset", json={}), 400)


async def test_videos_are_served_with_ranges(client, settings):
    out = settings.comfyui_output_dir
    write_webm(out / "clip.webm", seed=1, mtime=T0)
    data = (out / "clip.webm").read_bytes()
    r = await client.get(f"{V1}/gallery/file", params={"path": "clip.webm"}, headers={"Range": "bytes=4-19"})
    assert r.status == 206 and r.content_type == "video/webm" and await r.read() == data[4:20]
    assert r.headers["Content-Range"] == f"bytes 4-19/{len(data)}"
    r = await client.get(f"{V1}/gallery/file", params={"path": "clip.webm"})
    assert r.status == 200 and await r.read() == data


async def test_hostile_names_and_contents_never_break_the_index(client, settings, tmp_path):
    out = settings.comfyui_output_dir
    out.mkdir(parents=True)
    good = ["new\nline.png", "%2e%2e%2fx.png", "x..png", "名前 スペース.png", "a'b\"c;--.png", "sub/<script>.png"]
    for n, name in enumerate(good):
        write_png(out / name, seed=n, mtime=T0 + n)
    write_png(out / "bad-json.png", seed=30, mtime=T0 + 30,
              texts={"prompt": "{not json", "workflow": "\x00", "lora_studio": '{"character_id": 99999}'})
    odd = {"1": {"class_type": "KSampler", "inputs": {"seed": ["1", 0], "steps": "many", "cfg": "x",
                                                       "positive": ["4", 0], "model": ["1", 0]}},
           "2": [1, 2], "3": {"class_type": 5}, "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "PLACEHOLDER"}}}
    write_png(out / "odd-graph.png", seed=31, mtime=T0 + 31,  # a link loop, junk nodes, NUL and a lone surrogate
              texts={"prompt": json.dumps(odd).replace("PLACEHOLDER", "nul\\u0000 lone \\ud800 end")})
    (out / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00")
    os.utime(out / "truncated.png", (T0 + 40, T0 + 40))
    os.close(os.open(os.fsencode(out) + b"/bad-\xff.png", os.O_CREAT | os.O_WRONLY, 0o644))
    os.mkfifo(out / "fifo.png")
    (out / "folder.png").mkdir()
    (tmp_path / "secret.png").write_bytes(b"secret")
    (out / "outside.png").symlink_to(tmp_path / "secret.png")
    (out / "loop.png").symlink_to(out / "loop.png")
    (out / "dirlink").symlink_to(tmp_path)
    deep = out / "/".join(["d" * 200] * 6)
    deep.mkdir(parents=True)
    write_png(deep / "too-long.png", seed=41)
    (out / ".hidden.png").write_bytes(b"x")

    listed = await paths(client)
    expected = {*good, "bad-json.png", "odd-graph.png", "truncated.png"}
    assert set(listed) == expected
    items = {i["path"]: i for i in (await page(client, limit=200))["items"]}
    assert items["bad-json.png"]["params"]["seed"] is None and items["bad-json.png"]["character_id"] is None
    assert items["odd-graph.png"]["params"]["steps"] is None
    assert items["odd-graph.png"]["params"]["positive"] == "nul lone \ufffd end"
    assert items["truncated.png"]["width"] is None
    assert items["new\nline.png"]["params"]["seed"] == 0
    for path in listed:
        r = await client.get(f"{V1}/gallery/file", params={"path": path})
        assert r.status == 200, path
    assert await paths(client, q="名前") == ["名前 スペース.png"]
    await reindex(client)
    assert set(await paths(client)) == expected


async def test_without_output_folder_the_gallery_says_so(make_client):
    client = await make_client(comfyui_output_dir=None)
    for method, url in (("GET", "/gallery"), ("GET", "/gallery/1"), ("POST", "/gallery/reindex"),
                        ("POST", "/gallery/trash/empty"), ("GET", "/gallery/loras")):
        await assert_error(await client.request(method, f"{V1}{url}"), 503, "unavailable")


async def test_a_cold_index_never_holds_up_start_up_or_pages(make_client, settings, monkeypatch):
    """Reading the folder takes its time in the index's thread: the studio starts, pages answer (with what is
    indexed so far) and the event loop stays free meanwhile."""
    import asyncio
    import time

    from lora_studio.datasets import gallery_index

    out = settings.comfyui_output_dir
    for i in range(40):
        write_png(out / f"f{i:02d}.png", seed=i, mtime=T0 + i)
    real = gallery_index.read_media

    def slow(path):
        time.sleep(0.1)  # a slow disk: 4 s for the whole folder
        return real(path)

    monkeypatch.setattr(gallery_index, "read_media", slow)
    started = time.monotonic()
    client = await make_client(settings)
    assert time.monotonic() - started < 2
    t = time.monotonic()
    first = await page(client)
    assert time.monotonic() - t < 2.5 and len(first["items"]) < 40  # what the first batch holds, if anything
    t = time.monotonic()
    assert (await client.get(f"{V1}/health")).status == 200 and time.monotonic() - t < 0.5
    for _ in range(200):
        if len((await page(client))["items"]) == 40:
            break
        await asyncio.sleep(0.1)
    assert [i["path"] for i in (await page(client))["items"]][:2] == ["f39.png", "f38.png"]


async def test_an_unreadable_output_folder_keeps_the_index(client, settings, monkeypatch):
    """A folder that cannot be listed for a moment (permissions, a network drive) is not taken for an empty one:
    the items and their favourites stay."""
    from lora_studio.datasets.gallery_index import GalleryIndex

    out = settings.comfyui_output_dir
    write_png(out / "a.png", seed=1, mtime=T0)
    item = (await page(client))["items"][0]
    await client.post(f"{V1}/gallery/{item['id']}/favourite", json={"favourite": True})
    real = GalleryIndex._list
    monkeypatch.setattr(GalleryIndex, "_list", lambda self, root, rel: None if rel == "" else real(self, root, rel))
    job = await reindex(client)
    assert job["result"]["removed"] == 0
    assert [i["favourite"] for i in (await page(client))["items"]] == [True]
    monkeypatch.setattr(GalleryIndex, "_list", real)
    (out / "a.png").unlink()
    assert (await reindex(client))["result"]["removed"] == 1  # once listed again, a removal is a removal
