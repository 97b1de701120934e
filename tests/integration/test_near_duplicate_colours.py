"""Near duplicates through the upload API are judged on structure and colour: recoloured versions
of a picture are kept, re-encodes skipped; images recorded before colour signatures existed get
theirs from their file when an upload needs it."""

from __future__ import annotations

import re

import numpy as np
import sqlalchemy as sa
from lora_studio.core.db import Database
from lora_studio.core.schema import images
from PIL import Image, ImageDraw
from support.api import make_character, make_project, upload
from support.images import encode


def portrait(hair: tuple[int, int, int]) -> Image.Image:
    """A face with asymmetric hair in the given colour (everything else the same)."""
    im = Image.new("RGB", (128, 160), (235, 235, 225))
    draw = ImageDraw.Draw(im)
    draw.rectangle((20, 105, 108, 160), fill=(40, 60, 140))
    draw.ellipse((35, 30, 93, 100), fill=(250, 220, 200))
    draw.polygon([(30, 65), (35, 20), (64, 10), (98, 22), (100, 75), (70, 35), (38, 95)], fill=hair)
    return im


def gradient(start, end) -> Image.Image:
    t = np.linspace(0, 1, 96)[None, :, None]
    row = np.array(start)[None, None] * (1 - t) + np.array(end)[None, None] * t
    return Image.fromarray(np.broadcast_to(row, (64, 96, 3)).round().astype(np.uint8))


async def character(client):
    p = await make_project(client)
    return await make_character(client, p["id"])


async def test_recoloured_pictures_are_kept_and_re_encodes_skipped(client, settings):
    c = await character(client)
    red, blue = portrait((200, 40, 40)), portrait((40, 70, 200))
    body = await upload(client, c["id"], ("red.png", encode(red), "image/png"),
                        ("blue.png", encode(blue), "image/png"))
    assert [i["metadata"]["original_name"] for i in body["created"]] == ["red.png", "blue.png"]
    assert body["skipped"] == []
    red_id = body["created"][0]["id"]
    body = await upload(client, c["id"], ("red-again.jpg", encode(red, "JPEG", quality=90), "image/jpeg"))
    assert body["created"] == []
    [skipped] = body["skipped"]
    assert skipped["filename"] == "red-again.jpg"
    assert re.fullmatch(rf"near duplicate of image {red_id} \(perceptual hash distance [01], colour difference "
                        r"[0-3]\.\d\)", skipped["reason"]), skipped
    # the colour signature is recorded with the image
    db = Database(settings.effective_database_url)
    with db.begin() as conn:
        stored = dict(conn.execute(sa.select(images.c.id, images.c.colour_hash)).all())
    db.dispose()
    assert len(stored) == 2 and all(len(h) == 96 for h in stored.values())
    # six gradients that all brighten to the right (the same dHash): six images
    ends = [((60, 0, 0), (255, 120, 120)), ((0, 60, 0), (140, 255, 140)), ((0, 0, 90), (130, 130, 255)),
            ((70, 60, 0), (255, 240, 120)), ((0, 60, 60), (140, 255, 255)), ((60, 0, 60), (255, 130, 255))]
    body = await upload(client, c["id"], *[(f"g{i}.png", encode(gradient(*e)), "image/png") for i, e in enumerate(ends)])
    assert len(body["created"]) == 6 and body["skipped"] == []


async def test_images_recorded_without_a_colour_are_hashed_again_from_their_file(client, settings):
    """As after the upgrade to schema 5: colour_hash NULL, phash from the older reduction. An upload
    within a few bits of such an image hashes its file again (and stores both hashes); an image
    whose file is gone is not compared, so nothing is skipped on structure alone."""
    c = await character(client)
    red, green = portrait((200, 40, 40)), portrait((60, 160, 80))
    body = await upload(client, c["id"], ("red.png", encode(red), "image/png"),
                        ("green.png", encode(green), "image/png"))
    red_id, green_id = (i["id"] for i in body["created"])
    db = Database(settings.effective_database_url)
    with db.begin() as conn:  # and red's dHash 6 bits off (the old reduction drifted up to 8)
        red_phash = conn.execute(sa.select(images.c.phash).where(images.c.id == red_id)).scalar()
        conn.execute(images.update().values(colour_hash=None))
        conn.execute(images.update().where(images.c.id == red_id).values(phash=f"{int(red_phash, 16) ^ 0x3F:016x}"))
    (settings.effective_datasets_dir / body["created"][1]["rel_path"]).unlink()  # green's file is gone
    body = await upload(client, c["id"], ("blue.png", encode(portrait((40, 70, 200))), "image/png"),
                        ("red.webp", encode(red, "WEBP", quality=90), "image/webp"),
                        ("green.jpg", encode(green, "JPEG", quality=90), "image/jpeg"))
    assert [i["metadata"]["original_name"] for i in body["created"]] == ["blue.png", "green.jpg"]
    assert [s["filename"] for s in body["skipped"]] == ["red.webp"]
    assert body["skipped"][0]["reason"].startswith(f"near duplicate of image {red_id} ")
    with db.begin() as conn:
        colours = dict(conn.execute(sa.select(images.c.id, images.c.colour_hash)).all())
        phash = conn.execute(sa.select(images.c.phash).where(images.c.id == red_id)).scalar()
    db.dispose()
    assert len(colours[red_id]) == 96 and colours[green_id] is None
    assert phash == red_phash  # hashed again from the file
