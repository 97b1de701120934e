"""The review queue: filters across characters and projects, caption edits that keep the .txt in
step, and moving an image to another character."""

from __future__ import annotations

from support.api import V1, assert_error, make_character, make_project, upload
from support.images import image_bytes


async def setup(client):
    a = await make_project(client, "A")
    b = await make_project(client, "B")
    aiko = await make_character(client, a["id"], "Aiko")
    ren = await make_character(client, a["id"], "Ren")
    mio = await make_character(client, b["id"], "Mio")
    up = {}
    for char, seeds, caption in ((aiko, (1, 2, 3), "aiko"), (ren, (4,), ""), (mio, (5, 6), "mio")):
        files = [(f"{s}.png", image_bytes(size=(32, 32), seed=200 + s), "image/png") for s in seeds]
        up[char["slug"]] = [i["id"] for i in (await upload(client, char["id"], *files, caption=caption))["created"]]
    return a, b, aiko, ren, mio, up


async def ids(client, url):
    body = await (await client.get(url)).json()
    assert "items" in body, body
    return [i["id"] for i in body["items"]]


async def test_filters_across_the_studio(client):
    a, b, aiko, ren, mio, up = await setup(client)
    await client.post(f"{V1}/images/{up['aiko'][0]}/approve")
    everything = up["aiko"] + up["ren"] + up["mio"]
    assert await ids(client, f"{V1}/images?status=all") == everything
    assert await ids(client, f"{V1}/images?status=all&order=newest") == everything[::-1]
    assert await ids(client, f"{V1}/images") == everything[1:]  # pending by default
    assert await ids(client, f"{V1}/images?project_id={a['id']}&status=all") == up["aiko"] + up["ren"]
    assert await ids(client, f"{V1}/images?project_id={b['id']}") == up["mio"]
    assert await ids(client, f"{V1}/images?status=approved") == [up["aiko"][0]]
    assert await ids(client, f"{V1}/images?has_caption=false") == up["ren"]
    assert await ids(client, f"{V1}/images?source=comfyui") == []
    assert await ids(client, f"{V1}/images?since=2000-01-01&until=2999-01-01") == everything[1:]
    assert await ids(client, f"{V1}/images?since=2999-01-01T00:00:00Z") == []
    page = await (await client.get(f"{V1}/images?status=all&order=newest&limit=2")).json()
    rest = await ids(client, f"{V1}/images?status=all&order=newest&cursor={page['next_cursor']}")
    assert [i["id"] for i in page["items"]] + rest == everything[::-1]
    for bad in ["since=yesterday", "has_caption=maybe", "order=random", "project_id=x", "project_id=999"]:
        r = await client.get(f"{V1}/images?{bad}")
        await assert_error(r, 404 if bad == "project_id=999" else 400)


async def test_caption_edit_keeps_the_txt_file_equal(client, settings):
    *_, up = await setup(client)
    image_id = up["aiko"][0]
    r = await client.patch(f"{V1}/images/{image_id}", json={"caption": "aiko, smiling, 1girl"})
    body = await r.json()
    assert body["caption"] == "aiko, smiling, 1girl"
    txt = (settings.effective_datasets_dir / body["rel_path"]).with_suffix(".txt")
    assert txt.read_text() == "aiko, smiling, 1girl"
    await assert_error(await client.patch(f"{V1}/images/{image_id}", json={"caption": 3}), 400)
    await assert_error(await client.patch(f"{V1}/images/999999", json={"caption": "x"}), 404)
    assert txt.read_text() == "aiko, smiling, 1girl"


async def test_reassign_moves_files_and_record(client, settings):
    a, b, aiko, ren, mio, up = await setup(client)
    image_id = up["aiko"][1]
    before = await (await client.get(f"{V1}/images/{image_id}")).json()
    old = settings.effective_datasets_dir / before["rel_path"]
    r = await client.post(f"{V1}/images/{image_id}/reassign", json={"character_id": mio["id"]})
    moved = await r.json()
    assert moved["character_id"] == mio["id"] and moved["rel_path"].startswith("b/mio/images/")
    new = settings.effective_datasets_dir / moved["rel_path"]
    assert new.is_file() and new.with_suffix(".txt").read_text() == "aiko"
    assert not old.exists() and not old.with_suffix(".txt").exists()
    assert image_id in await ids(client, f"{V1}/characters/{mio['id']}/images")
    assert image_id not in await ids(client, f"{V1}/characters/{aiko['id']}/images")
    # the same picture already in the target: refused, nothing moves
    dup = (await upload(client, ren["id"], ("d.png", image_bytes(size=(32, 32), seed=201), "image/png")))["created"][0]
    await assert_error(await client.post(f"{V1}/images/{up['aiko'][0]}/reassign", json={"character_id": ren["id"]}),
                       409)
    assert (settings.effective_datasets_dir / dup["rel_path"]).is_file()
    await assert_error(await client.post(f"{V1}/images/{image_id}/reassign", json={"character_id": 999}), 404)
    await assert_error(await client.post(f"{V1}/images/{image_id}/reassign", json={}), 400)
