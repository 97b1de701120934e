"""Test images drawn in code."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (64, 64), seed: int = 0) -> bytes:
    im = Image.new("RGB", size, ((seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256))
    draw = ImageDraw.Draw(im)
    draw.ellipse((8 + seed % 10, 8, size[0] - 8, size[1] - 8 - seed % 7), fill=(255 - seed % 256, 200, 40))
    draw.rectangle((seed % 20, seed % 30, seed % 20 + 10, seed % 30 + 12), fill=(10, 10, 10))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()
