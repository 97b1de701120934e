"""Upload checks beyond format: EXIF orientation applied, near duplicates skipped."""

from __future__ import annotations

from PIL import Image, ImageFilter
from support.api import V1, make_character, make_project, upload
from support.images import draw, encode


async def character(client):
    p = await make_project(client)
    return await make_character(client, p["id"])


async def test_exif_orientation_is_applied(client, settings):
    c = await character(client)
    im = draw((80, 40), seed=7)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    body = await upload(client, c["id"], ("phone.jpg", encode(im, "JPEG", exif=exif.tobytes(), quality=95),
                                          "image/jpeg"),
                        ("plain.png", encode(draw((80, 40), seed=8)), "image/png"))
    rotated, plain = body["created"]
    assert (rotated["width"], rotated["height"]) == (40, 80) and rotated["metadata"]["exif_rotated"] is True
    with Image.open(settings.effective_datasets_dir / rotated["rel_path"]) as stored:
        assert stored.size == (40, 80) and stored.getexif().get(0x0112, 1) == 1
    assert (plain["width"], plain["height"]) == (80, 40) and plain["metadata"]["exif_rotated"] is False
    assert (settings.effective_datasets_dir / plain["rel_path"]).read_bytes() == encode(draw((80, 40), seed=8))


async def test_near_duplicates_are_skipped_and_reported(client):
    c = await character(client)
    original = draw((96, 96), seed=11)
    first = await upload(client, c["id"], ("a.png", encode(original), "image/png"))
    assert len(first["created"]) == 1
    image_id = first["created"][0]["id"]
    near = [("resaved.jpg", encode(original, "JPEG", quality=80), "image/jpeg"),
            ("smaller.png", encode(original.resize((64, 64))), "image/png"),
            ("blurred.png", encode(original.filter(ImageFilter.GaussianBlur(0.8))), "image/png")]
    other = ("different.png", encode(draw((96, 96), seed=12)), "image/png")
    body = await upload(client, c["id"], *near, other)
    assert [i["metadata"]["original_name"] for i in body["created"]] == ["different.png"]
    reasons = {s["filename"]: s["reason"] for s in body["skipped"]}
    assert set(reasons) == {"resaved.jpg", "smaller.png", "blurred.png"}
    assert all(f"near duplicate of image {image_id}" in r for r in reasons.values())
    # within one upload too: the second of two near-identical files is skipped
    twin = draw((96, 96), seed=13)
    body = await upload(client, c["id"], ("t1.png", encode(twin), "image/png"),
                        ("t2.jpg", encode(twin, "JPEG", quality=85), "image/jpeg"))
    assert len(body["created"]) == 1 and body["skipped"][0]["filename"] == "t2.jpg"


async def test_near_duplicate_check_can_be_turned_off(make_client):
    client = await make_client(near_duplicate_distance=0)
    c = await character(client)
    original = draw((96, 96), seed=21)
    body = await upload(client, c["id"], ("a.png", encode(original), "image/png"),
                        ("b.jpg", encode(original, "JPEG", quality=80), "image/jpeg"))
    assert len(body["created"]) == 2


async def test_uploads_larger_than_the_servers_body_limit_stream_through(client, settings):
    # The app reads at most 1 MB bodies at once (as ComfyUI refuses bodies over its
    # --max-upload-size); multipart uploads are streamed to disk in chunks instead.
    import os

    from PIL import Image

    noise = Image.frombytes("RGB", (1100, 1000), os.urandom(1100 * 1000 * 3))
    big = encode(noise)
    assert len(big) > 3 * 1024 * 1024
    c = await character(client)
    body = await upload(client, c["id"], ("big.png", big, "image/png"))
    assert body["skipped"] == [] and (settings.effective_datasets_dir / body["created"][0]["rel_path"]).read_bytes() == big
    r = await client.post(f"{V1}/projects", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                          headers={"Content-Type": "application/json"})
    assert r.status == 413  # JSON bodies stay small


async def test_the_same_file_uploaded_twice_at_once_keeps_one_intact_copy(client, settings):
    import asyncio

    c = await character(client)
    data = encode(draw((64, 64), seed=31))
    bodies = await asyncio.gather(*[upload(client, c["id"], ("same.png", data, "image/png")) for _ in range(6)])
    created = [i for b in bodies for i in b["created"]]
    assert len(created) == 1
    assert all("duplicate" in s["reason"] for b in bodies for s in b["skipped"])
    assert (settings.effective_datasets_dir / created[0]["rel_path"]).read_bytes() == data
