"""Perceptual hash: bit layout, robustness to re-encoding, colour signature, near-duplicate index.
(The calibration of structure and colour together is in test_near_duplicates.py.)"""

from __future__ import annotations

import io

import numpy as np
import pytest
from lora_studio.datasets.phash import (
    COLOUR_BYTES,
    STALE_MARGIN,
    ImageHash,
    NearDuplicateIndex,
    colour_distance,
    colour_signature,
    compare,
    dhash,
    hamming,
)
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


def flat(colour, size=(32, 24)) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_rescaling_keeps_every_bit_of_a_flat_shaded_drawing():
    """Exact area averages: Pillow's reducing_gap shortcut moved cell borders by a different
    amount at each size and flipped up to 10 of the 64 bits of a drawing rescaled by 10 %."""
    im = Image.new("RGB", (256, 320), (235, 235, 225))
    draw = ImageDraw.Draw(im)
    draw.ellipse((70, 60, 186, 200), fill=(250, 220, 200))
    draw.polygon([(60, 130), (70, 40), (128, 20), (196, 45), (200, 150), (140, 70), (75, 190)], fill=(200, 40, 40))
    draw.rectangle((40, 210, 216, 320), fill=(40, 60, 140))
    for size in ((230, 288), (282, 352), (128, 160)):
        assert hamming(dhash(im.resize(size, Image.Resampling.LANCZOS)), dhash(im)) <= 2, size


def test_colour_signature_is_cielab_of_a_4x4_grid():
    sig = colour_signature(flat((255, 255, 255)))
    assert len(sig) == COLOUR_BYTES == 48
    assert sig == bytes([255, 128, 128]) * 16  # L* 100, a* = b* = 0
    assert colour_signature(flat((0, 0, 0))) == bytes([0, 128, 128]) * 16
    red = np.frombuffer(colour_signature(flat((255, 0, 0))), dtype=np.uint8)[:3]
    assert abs(red[0] / 2.55 - 53.2) < 0.5 and abs(red[1] - 128 - 80.1) <= 1 and abs(red[2] - 128 - 67.2) <= 1
    # each cell is its own quarter-by-quarter area: only the top-left cell of this one is red
    im = flat((255, 255, 255), (40, 40))
    im.paste((255, 0, 0), (0, 0, 10, 10))
    cells = np.frombuffer(colour_signature(im), dtype=np.uint8).reshape(16, 3)
    assert bytes(cells[0]) == bytes(red) and all(bytes(c) == bytes([255, 128, 128]) for c in cells[1:])
    # any mode, 16-bit grey included
    for mode in ("RGBA", "L", "P", "CMYK", "I;16"):
        assert len(colour_signature(picture(1).convert(mode) if mode != "I;16" else flat((9, 9, 9)).convert("L")
                                    .convert("I;16"))) == 48


def test_colour_distance_is_the_largest_cell_difference():
    white, black = colour_signature(flat((255, 255, 255))), colour_signature(flat((0, 0, 0)))
    assert colour_distance(white, white) == 0
    assert colour_distance(white, black) == pytest.approx(100)  # ΔE of black and white
    im = flat((255, 255, 255), (40, 40))
    im.paste((0, 0, 0), (30, 30, 40, 40))  # one cell of 16 black: still the whole difference
    assert colour_distance(white, colour_signature(im)) == pytest.approx(100)
    assert colour_distance(colour_signature(flat((200, 40, 40))), colour_signature(flat((40, 70, 200)))) > 80
    with pytest.raises(ValueError):
        colour_distance(white, b"\x00" * 3)


def test_flat_pictures_hash_alike_in_structure_but_not_in_colour():
    colours = [(255, 0, 0), (0, 0, 255), (0, 160, 0), (255, 255, 255), (0, 0, 0), (128, 128, 128)]
    hashes = [ImageHash.of(flat(c)) for c in colours]
    assert {h.structure for h in hashes} == {0}
    index = NearDuplicateIndex(5)
    assert index.extend(hashes) == [True] * 6
    assert not index.add(ImageHash.of(flat((250, 4, 3))))  # the same red, within a JND or so


def test_hex_round_trip():
    h = ImageHash.of(picture(5))
    assert ImageHash.from_hex(h.structure_hex, h.colour_hex) == h and len(h.colour_hex) == 96
    assert ImageHash.from_hex("00000000000000ff", None) == ImageHash(255, None)
    assert ImageHash(255, None).colour_hex is None


def test_compare_needs_structure_and_colour_close():
    base = ImageHash.of(picture(6))
    assert compare(base, base, 0) == (0, 0.0)
    flipped_bit = ImageHash(base.structure ^ 1, base.colour)
    assert compare(base, flipped_bit, 0) is None and compare(base, flipped_bit, 1) == (1, 0.0)
    recoloured = ImageHash(base.structure, colour_signature(picture(6).point(lambda v: 255 - v)))
    assert compare(base, recoloured, 5) is None  # same structure, other colours
    assert compare(base, recoloured, 64) is not None  # 64 bits: 160 ΔE, anything goes
    assert compare(base, ImageHash(base.structure, None), 64) is None  # colour unknown: never a duplicate


def test_near_duplicate_index():
    def h(structure: int, grey: int = 128) -> ImageHash:
        return ImageHash(structure, colour_signature(flat((grey, grey, grey))))

    index = NearDuplicateIndex(threshold=2)  # 2 bits, 5 ΔE
    assert index.add(h(0b0000_0000))
    assert not index.add(h(0b0000_0011))  # 2 bits away: a duplicate (threshold is inclusive)
    assert index.add(h(0b0000_0011, grey=150))  # ...unless its colours differ (ΔE 8)
    assert index.add(h(0b0000_0111))  # 3 bits from the first (the refused one was not stored)
    assert not index.add(h(0b0000_0110))
    assert index.add(h(0xFF00))
    assert len(index) == 4 and [x.structure for x in index] == [0, 0b11, 0b111, 0xFF00]
    match = index.find(h(0b0000_0101))
    assert (match.hash.structure, match.bits, match.colour) == (0b111, 1, 0.0)  # the closest one
    assert h(0xFF01) in index and h(0xF0F0) not in index
    assert index.find(ImageHash(0, None)) is None
    exact = NearDuplicateIndex(threshold=0)
    assert exact.extend([h(5), h(5), h(4), h(5, grey=129)]) == [True, False, True, True]
    with pytest.raises(ValueError):
        NearDuplicateIndex(-1)


def test_index_keys_and_stale_hashes_refreshed_lazily():
    """Entries stored without a colour (hashed before colours were, their dHash possibly a few
    bits off) are hashed again through ``rehash`` once, and only when they come within the
    threshold plus STALE_MARGIN bits of a query."""
    red, blue = colour_signature(flat((200, 40, 40))), colour_signature(flat((40, 70, 200)))
    fresh = {"old-red": ImageHash(0, red), "gone": None, "far": ImageHash(2**64 - 1, red)}
    asked = []

    def rehash(key):
        asked.append(key)
        return fresh[key]

    index = NearDuplicateIndex(5, rehash)
    index.put(ImageHash(0b1111_1111, None), "old-red")  # 8 bits off its fresh hash
    index.put(ImageHash(0, None), "gone")
    index.put(ImageHash(2**64 - 1, None), "far")
    assert index.find(ImageHash(3, blue)) is None  # close in structure only
    assert asked == ["old-red", "gone"]  # "far" was never needed
    match = index.find(ImageHash(1, red))
    assert (match.key, match.hash, match.bits, match.colour) == ("old-red", ImageHash(0, red), 1, 0.0)
    assert asked == ["old-red", "gone"]  # asked once each
    assert index.add(ImageHash(0, blue), "new") and index.find(ImageHash(0, blue)).key == "new"
    assert STALE_MARGIN == 8
    lone = NearDuplicateIndex(5, rehash)
    lone.put(ImageHash(2**64 - 1, None), "far")
    assert lone.find(ImageHash(2**14 - 1, red)) is None and asked[-1] != "far"  # 50 bits: not asked


def test_real_frames_dedupe():
    """Frames of one shot (slight motion) collapse; other shots stay."""
    index = NearDuplicateIndex(6)
    base = picture(3)
    shifted = Image.new("RGB", base.size)
    shifted.paste(base, (2, 1))
    assert index.add(ImageHash.of(base))
    assert not index.add(ImageHash.of(shifted))
    assert index.add(ImageHash.of(picture(4)))
