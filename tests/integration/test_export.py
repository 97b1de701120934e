"""Export of the approved set in kohya's folder layout."""

from __future__ import annotations

import io
import zipfile

from support.api import V1, assert_error, make_character, make_project, upload
from support.images import image_bytes


async def test_export_zip_in_kohya_layout(client):
    p = await make_project(client)
    c = await make_character(client, p["id"], trigger_word="aikotnk")
    files = [(f"{i}.png", image_bytes(size=(32, 32), seed=400 + i), "image/png") for i in range(3)]
    created = (await upload(client, c["id"], *files, caption="aikotnk, 1girl"))["created"]
    await assert_error(await client.get(f"{V1}/characters/{c['id']}/export"), 404)  # nothing approved yet
    await client.post(f"{V1}/images/decisions", json={"image_ids": [i["id"] for i in created[:2]], "decision": "approve"})
    await client.patch(f"{V1}/images/{created[0]['id']}", json={"caption": "aikotnk, smiling"})

    r = await client.get(f"{V1}/characters/{c['id']}/export?repeats=8&class=girl")
    assert r.status == 200 and r.headers["Content-Type"] == "application/zip"
    assert "attachment" in r.headers["Content-Disposition"]
    zf = zipfile.ZipFile(io.BytesIO(await r.read()))
    names = sorted(zf.namelist())
    assert len(names) == 4 and all(n.startswith("8_aikotnk girl/") for n in names)
    images = [n for n in names if n.endswith(".png")]
    captions = {n: zf.read(n).decode() for n in names if n.endswith(".txt")}
    assert sorted(captions.values()) == ["aikotnk, 1girl", "aikotnk, smiling"]
    assert all(n.removesuffix(".png") + ".txt" in captions for n in images)
    assert zf.read(images[0]) in (image_bytes(size=(32, 32), seed=400), image_bytes(size=(32, 32), seed=401))

    for bad in ["repeats=0", "repeats=x", "class=../x", "class=a/b"]:
        await assert_error(await client.get(f"{V1}/characters/{c['id']}/export?{bad}"), 400)
    await assert_error(await client.get(f"{V1}/characters/999/export"), 404)
