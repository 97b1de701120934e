"""Test images drawn in code: each seed gives a different picture (random shapes), so that two
seeds are never near duplicates of each other under a perceptual hash."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 64), seed: int = 0) -> bytes:
    return encode(draw(size, seed), fmt)


def draw(size: tuple[int, int] = (64, 64), seed: int = 0) -> Image.Image:
    rng = random.Random(seed)
    w, h = size
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    pen = ImageDraw.Draw(im)
    for _ in range(12):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        box = (x0, y0, x0 + rng.randrange(4, max(5, w // 2)), y0 + rng.randrange(4, max(5, h // 2)))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (pen.ellipse if rng.random() < 0.5 else pen.rectangle)(box, fill=colour)
    return im


def encode(im: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return buf.getvalue()


def noise_png(seed: int, size: int = 64) -> bytes:
    """A PNG of random pixels: two seeds give pictures far apart for the near-duplicate check."""
    rnd = random.Random(seed)
    img = Image.new("RGB", (size, size))
    img.putdata([(rnd.randrange(256), rnd.randrange(256), rnd.randrange(256)) for _ in range(size * size)])
    return encode(img, "PNG")
