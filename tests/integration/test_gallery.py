"""The ComfyUI output folder as a gallery."""

from __future__ import annotations

import os

from support.api import V1, assert_error
from support.images import image_bytes


def write(folder, rel, mtime, seed=0):
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(seed=seed))
    os.utime(path, (mtime, mtime))
    return path


async def test_gallery_newest_first_paginated(client, settings):
    out = settings.comfyui_output_dir
    for i in range(5):
        write(out, f"ComfyUI_{i:05d}_.png", 1_700_000_000 + i, seed=i)
    write(out, "lora_studio/aiko/x_00001_.png", 1_700_000_100, seed=9)
    (out / "notes.txt").write_text("not an image")
    (out / ".hidden").mkdir()
    write(out, ".hidden/secret.png", 1_800_000_000)

    names, cursor = [], None
    while True:
        page = await (await client.get(f"{V1}/gallery?limit=4" + (f"&cursor={cursor}" if cursor else ""))).json()
        names += [i["path"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert names == ["lora_studio/aiko/x_00001_.png"] + [f"ComfyUI_{i:05d}_.png" for i in range(4, -1, -1)]
    r = await client.get(f"{V1}/gallery/file?path=lora_studio/aiko/x_00001_.png")
    assert r.status == 200 and await r.read() == image_bytes(seed=9)
    # a generated video is served with its type (the Generate tab plays it); other files are not
    (out / "lora_studio" / "aiko-video_00001_.webm").write_bytes(b"\x1aE\xdf\xa3webm")
    r = await client.get(f"{V1}/gallery/file?path=lora_studio/aiko-video_00001_.webm")
    assert r.status == 200 and r.content_type == "video/webm" and await r.read() == b"\x1aE\xdf\xa3webm"
    await assert_error(await client.get(f"{V1}/gallery/file?path=notes.txt"), 404)


async def test_gallery_refuses_paths_outside_the_output_folder(client, settings, tmp_path):
    settings.comfyui_output_dir.mkdir(parents=True, exist_ok=True)
    write(tmp_path, "outside.png", 1_700_000_000)
    for bad in ["../outside.png", "/etc/passwd", "..%2Foutside.png", "a\x00.png"]:
        r = await client.get(f"{V1}/gallery/file", params={"path": bad})
        assert r.status in (400, 404), bad
        await assert_error(r, r.status)
    await assert_error(await client.get(f"{V1}/gallery?cursor=garbage"), 400)


async def test_gallery_without_output_folder_says_so(make_client):

    client = await make_client(comfyui_output_dir=None)
    error = await assert_error(await client.get(f"{V1}/gallery"), 503, "unavailable")
    assert "LORA_STUDIO_COMFYUI_OUTPUT_DIR" in error["message"]
