"""Perceptual hash: bit layout, robustness to re-encoding, near-duplicate index."""

from __future__ import annotations

import io

import numpy as np
import pytest
from lora_studio.datasets.phash import NearDuplicateIndex, dhash, hamming
from PIL import Image, ImageDraw, ImageEnhance


def picture(seed: int, size: tuple[int, int] = (320, 180)) -> Image.Image:
    """Coloured blocks and shapes, different for each seed."""
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)).resize(size, Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(im)
    for _ in range(4):
        x, y = int(rng.integers(0, size[0] - 40)), int(rng.integers(0, size[1] - 40))
        draw.ellipse((x, y, x + 40, y + 40), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return im


def test_bits_follow_horizontal_gradients():
    ramp = np.tile(np.linspace(0, 255, 90).astype(np.uint8), (40, 1))
    assert dhash(Image.fromarray(ramp)) == 2**64 - 1  # brighter to the right: every bit set
    assert dhash(Image.fromarray(np.ascontiguousarray(ramp[:, ::-1]))) == 0
    # only the top half brightens to the right: the first 32 bits (most significant) are set
    half = np.vstack([ramp[:20], np.ascontiguousarray(ramp[20:, ::-1])])
    assert dhash(Image.fromarray(half)) == (2**32 - 1) << 32
    assert dhash(Image.fromarray(ramp), size=5) == 2**25 - 1  # sizes whose bits don't fill whole bytes


def test_size_sets_bit_count_and_any_mode_works():
    im = picture(1)
    for size in (4, 8, 16):
        assert 0 <= dhash(im, size) < 2 ** (size * size)
    assert dhash(im, 16).bit_length() > 200  # 256 bits of content, not 64
    assert dhash(im.convert("RGBA")) == dhash(im)
    assert dhash(im.convert("L")) == dhash(im)
    assert hamming(dhash(im.convert("P")), dhash(im)) <= 4
    with pytest.raises(ValueError):
        dhash(im, 0)


def test_same_picture_survives_rescale_recompression_and_brightness():
    im = picture(2)
    h = dhash(im)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=40)
    variants = [im.resize((160, 90), Image.Resampling.BILINEAR), im.resize((1280, 720)),
                Image.open(io.BytesIO(buf.getvalue())), ImageEnhance.Brightness(im).enhance(1.2)]
    for v in variants:
        assert hamming(dhash(v), h) <= 6


def test_different_pictures_are_far_apart():
    hashes = [dhash(picture(seed)) for seed in range(10)]
    for i, a in enumerate(hashes):
        for b in hashes[i + 1:]:
            assert hamming(a, b) > 12


def test_hamming():
    assert hamming(0, 0) == 0
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2**64 - 1, 0) == 64
    assert hamming(1 << 63, 1) == 2


def test_near_duplicate_index():
    index = NearDuplicateIndex(threshold=2)
    assert index.add(0b0000_0000)
    assert not index.add(0b0000_0011)  # 2 bits away: a duplicate (threshold is inclusive)
    assert index.add(0b0000_0111)  # 3 bits from the first (the refused one was not stored)
    assert not index.add(0b0000_0110)
    assert index.add(0xFF00)
    assert len(index) == 3 and list(index) == [0, 0b111, 0xFF00]
    assert index.find(0b0000_0101) == 0b111  # the closest one
    assert 0xFF01 in index and 0xF0F0 not in index
    exact = NearDuplicateIndex(threshold=0)
    assert exact.extend([5, 5, 4]) == [True, False, True]
    with pytest.raises(ValueError):
        NearDuplicateIndex(-1)


def test_real_frames_dedupe():
    """Frames of one shot (slight motion) collapse; other shots stay."""
    index = NearDuplicateIndex(6)
    base = picture(3)
    shifted = Image.new("RGB", base.size)
    shifted.paste(base, (2, 1))
    assert index.add(dhash(base))
    assert not index.add(dhash(shifted))
    assert index.add(dhash(picture(4)))
