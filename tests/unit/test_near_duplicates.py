"""Calibration of the near-duplicate rule (structure AND colour, datasets/phash.py) on pictures
drawn in code, at the upload default of 5 bits (12.5 ΔE):

- caught: re-encodes (JPEG q70-95, PNG → WebP → PNG), rescales by ±10 %, 1.5 % cropped off any
  edge, brightness ±8 %;
- kept: recoloured characters (hair, outfit, hair/outfit swapped), hue rotations, six differently
  coloured gradients, flat colours, horizontal flips of asymmetric pictures, frames of a scene
  where a figure walked across.

Run with ``-s`` to see the table of distances (the figures quoted in the README and notes).
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable

import numpy as np
import pytest
from lora_studio.core.settings import Settings
from lora_studio.datasets.phash import ImageHash, NearDuplicateIndex, colour_distance, colour_tolerance, hamming
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

THRESHOLD = Settings.near_duplicate_distance  # what uploads use by default

HAIR = {"red": (200, 40, 40), "blue": (40, 70, 200), "blonde": (235, 205, 110), "black": (30, 30, 35),
        "pink": (240, 150, 190), "brown": (110, 70, 40), "green": (60, 160, 80), "white": (240, 240, 245)}
OUTFIT = {"navy": (40, 60, 140), "red": (180, 30, 40), "green": (40, 130, 60), "black": (25, 25, 25),
          "white": (245, 245, 245)}


def character(hair=HAIR["red"], outfit=OUTFIT["navy"], eyes=(40, 120, 200), skin=(250, 220, 200),
              background=(235, 235, 225), size=(256, 320)) -> Image.Image:
    """A flat-shaded bust: hair with a side fringe and a ribbon on one side (asymmetric), eyes, outfit."""
    w, _ = size
    im = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(im)
    s = w / 256

    def pts(*xy: float) -> list[tuple[float, float]]:
        return [(x * s, y * s) for x, y in zip(xy[::2], xy[1::2], strict=True)]

    draw.polygon(pts(40, 320, 60, 210, 196, 210, 216, 320), fill=outfit)
    draw.polygon(pts(110, 210, 128, 250, 146, 210), fill=tuple(min(255, c + 60) for c in outfit))  # collar
    draw.ellipse(pts(70, 60, 186, 200), fill=skin)
    draw.polygon(pts(60, 130, 70, 40, 128, 20, 196, 45, 200, 150, 180, 90, 140, 70, 90, 100, 75, 190), fill=hair)
    for x in (100, 150):
        draw.ellipse(pts(x - 12, 120, x + 12, 146), fill=(255, 255, 255))
        draw.ellipse(pts(x - 8, 123, x + 8, 143), fill=eyes)
        draw.ellipse(pts(x - 3, 129, x + 3, 137), fill=(20, 20, 20))
    draw.arc(pts(110, 160, 146, 180), 20, 160, fill=(160, 60, 60), width=3)
    draw.polygon(pts(200, 60, 230, 40, 236, 80), fill=(230, 200, 40))  # ribbon
    return im


def shapes(seed: int, size=(256, 256)) -> Image.Image:
    """Random triangles and ellipses on a coloured ground (asymmetric)."""
    rng = np.random.default_rng(seed)
    w, h = size
    im = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(im)
    for _ in range(7):
        x, y = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
        bw, bh = int(rng.integers(30, w // 2)), int(rng.integers(30, h // 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x, y, x + bw, y + bh), fill=colour)
        else:
            draw.polygon([(x, y), (x + bw, y + bh // 3), (x + bw // 4, y + bh)], fill=colour)
    return im


def gradient(start, end, size=(256, 192)) -> Image.Image:
    """Left to right from one colour to another: dark to light, so every dHash bit is set."""
    t = np.linspace(0, 1, size[0])[None, :, None]
    row = np.array(start)[None, None] * (1 - t) + np.array(end)[None, None] * t
    return Image.fromarray(np.broadcast_to(row, (size[1], size[0], 3)).round().astype(np.uint8))


GRADIENTS = {"red": ((60, 0, 0), (255, 120, 120)), "green": ((0, 60, 0), (140, 255, 140)),
             "blue": ((0, 0, 90), (130, 130, 255)), "yellow": ((70, 60, 0), (255, 240, 120)),
             "cyan": ((0, 60, 60), (140, 255, 255)), "magenta": ((60, 0, 60), (255, 130, 255))}


def scene(x: int, size=(320, 180)) -> Image.Image:
    """Sky, grass, a house, and a small figure (yellow head, red coat) standing at ``x``."""
    im = Image.new("RGB", size, (120, 170, 220))
    draw = ImageDraw.Draw(im)
    draw.rectangle((0, 120, 320, 180), fill=(90, 140, 60))
    draw.rectangle((230, 50, 290, 125), fill=(150, 90, 50))
    draw.polygon([(220, 50), (260, 20), (300, 50)], fill=(170, 40, 40))
    draw.rectangle((x, 85, x + 24, 140), fill=(200, 30, 40))
    draw.ellipse((x + 2, 62, x + 22, 86), fill=(240, 200, 30))
    return im


def reencoded(im: Image.Image, fmt: str, **options) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    with Image.open(io.BytesIO(buf.getvalue())) as decoded:
        return decoded.convert("RGB")


def cropped(im: Image.Image, side: str, fraction: float) -> Image.Image:
    w, h = im.size
    k = round((w if side in "lr" else h) * fraction)
    return im.crop({"left": (k, 0, w, h), "right": (0, 0, w - k, h), "top": (0, k, w, h),
                    "bottom": (0, 0, w, h - k)}[side])


def hue_rotated(im: Image.Image, degrees: int) -> Image.Image:
    hsv = np.asarray(im.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(degrees / 360 * 256)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


DUPLICATE_EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    **{f"JPEG q{q}": (lambda im, q=q: reencoded(im, "JPEG", quality=q)) for q in (70, 85, 95)},
    "WebP q90": lambda im: reencoded(im, "WEBP", quality=90),
    "WebP → PNG": lambda im: reencoded(reencoded(im, "WEBP", quality=80), "PNG"),
    **{f"resized {f:+.0%}": (lambda im, f=f: im.resize((round(im.width * (1 + f)), round(im.height * (1 + f))),
                                                          Image.Resampling.LANCZOS)) for f in (-0.1, 0.1)},
    **{f"1.5% off the {side}": (lambda im, side=side: cropped(im, side, 0.015))
       for side in ("left", "right", "top", "bottom")},
    **{f"brightness {f:+.0%}": (lambda im, f=f: ImageEnhance.Brightness(im).enhance(1 + f)) for f in (-0.08, 0.08)},
}


def originals() -> dict[str, Image.Image]:
    return {"character": character(),
            "character, blonde in white": character(hair=HAIR["blonde"], outfit=OUTFIT["white"]),
            "character, dark ground": character(hair=HAIR["black"], outfit=OUTFIT["red"], background=(60, 70, 90)),
            **{f"shapes {seed}": shapes(seed) for seed in range(3)},
            "scene": scene(40),
            "gradient": gradient((20, 20, 120), (250, 230, 120))}


def different_pairs() -> list[tuple[str, str, Image.Image, Image.Image]]:
    """(kind, what, a, b): pictures a person wants both of."""
    pairs = []
    base = character()
    for name, colour in HAIR.items():
        if name != "red":
            pairs.append(("recoloured", f"hair red → {name}", base, character(hair=colour)))
    for name, colour in OUTFIT.items():
        if name != "navy":
            pairs.append(("recoloured", f"outfit navy → {name}", base, character(outfit=colour)))
    pairs.append(("recoloured", "hair and outfit colours swapped", base,
                  character(hair=OUTFIT["navy"], outfit=HAIR["red"])))
    dark = character(hair=HAIR["black"], outfit=OUTFIT["red"], background=(60, 70, 90))
    for name in ("brown", "blonde", "pink"):
        pairs.append(("recoloured", f"dark ground: hair black → {name}", dark,
                      character(hair=HAIR[name], outfit=OUTFIT["red"], background=(60, 70, 90))))
    for name, im in originals().items():
        for degrees in (45, 90, 180):
            pairs.append(("hue rotated", f"{name} by {degrees}°", im, hue_rotated(im, degrees)))
        if name != "gradient":
            pairs.append(("flipped", name, im, ImageOps.mirror(im)))
    grads = {name: gradient(*ends) for name, ends in GRADIENTS.items()}
    for a, b in itertools.combinations(grads, 2):
        pairs.append(("gradients", f"{a} / {b}", grads[a], grads[b]))
    flats = {"red": (200, 40, 40), "blue": (40, 70, 200), "green": (60, 160, 80), "white": (245, 245, 245),
             "black": (20, 20, 20), "grey": (128, 128, 128)}
    for a, b in itertools.combinations(flats, 2):
        pairs.append(("flat colours", f"{a} / {b}", Image.new("RGB", (64, 64), flats[a]),
                      Image.new("RGB", (64, 64), flats[b])))
    for a, b in itertools.combinations((40, 90, 140, 190), 2):
        pairs.append(("moving figure", f"x {a} → {b} px (of 320)", scene(a), scene(b)))
    return pairs


def measure(a: Image.Image, b: Image.Image) -> tuple[int, float, bool]:
    """(dHash bits, colour ΔE, near duplicate at the default threshold) — the last through the
    index the uploads use."""
    ha, hb = ImageHash.of(a), ImageHash.of(b)
    index = NearDuplicateIndex(THRESHOLD)
    index.add(ha)
    return hamming(ha.structure, hb.structure), colour_distance(ha.colour, hb.colour), hb in index


@pytest.fixture(scope="module")
def table() -> list[tuple[str, str, str, int, float, bool]]:
    rows = []
    for name, im in originals().items():
        for edit, fn in DUPLICATE_EDITS.items():
            rows.append(("duplicate", edit, name, *measure(im, fn(im))))
    for kind, what, a, b in different_pairs():
        rows.append(("different", kind, what, *measure(a, b)))
    return rows


def test_calibration(table):
    """Every edited copy is caught, every different picture kept; the table is printed."""
    print(f"\nthreshold {THRESHOLD} bits / {colour_tolerance(THRESHOLD):.1f} ΔE")
    print(f"{'':9} {'kind':24} {'pairs':>5} {'caught':>6}  {'dHash bits':>10}  {'ΔE (max cell)':>13}")
    for (expect, kind), group in itertools.groupby(sorted(table, key=lambda r: (r[0], r[1])), lambda r: r[:2]):
        group = list(group)
        bits, de = [r[3] for r in group], [r[4] for r in group]
        print(f"{expect:9} {kind:24} {len(group):5} {sum(r[5] for r in group):6}  "
              f"{min(bits):4}-{max(bits):<5}  {min(de):6.1f}-{max(de):<6.1f}")
    missed = [r for r in table if r[0] == "duplicate" and not r[5]]
    lost = [r for r in table if r[0] == "different" and r[5]]
    assert not missed, f"copies not caught: {missed}"
    assert not lost, f"different pictures treated as duplicates: {lost}"
    # each rule alone would fail: structure alone loses recolours, hue rotations, gradients and
    # flat colours; colour alone loses frames where a figure moved (the colours stay close)
    by_structure = [r for r in table if r[0] == "different" and r[3] <= THRESHOLD]
    by_colour = [r for r in table if r[0] == "different" and r[4] <= colour_tolerance(THRESHOLD)]
    assert {r[1] for r in by_structure} >= {"recoloured", "hue rotated", "gradients", "flat colours"}
    assert {r[1] for r in by_colour} >= {"moving figure"}
    print(f"structure alone would skip {len(by_structure)} of the {sum(r[0] == 'different' for r in table)} "
          f"different pairs, colour alone {len(by_colour)}")


def test_margins(table):
    """Neither side sits on the edge of the tolerance: copies stay well inside it, recolours of
    structurally close pictures well outside."""
    tol = colour_tolerance(THRESHOLD)
    assert max(r[4] for r in table if r[0] == "duplicate") < 0.75 * tol
    assert min(r[4] for r in table if r[0] == "different" and r[3] <= THRESHOLD) > 1.4 * tol
    assert max(r[3] for r in table if r[0] == "duplicate") <= THRESHOLD


def test_larger_crops_are_left_to_the_structure():
    """Cropping shifts every dHash cell; from about 2 % off the right or left some drawings move
    6 or more bits and are kept. The colours of 2-3 % crops stay within the tolerance, so colour
    never is what lets a crop through."""
    counts = {}
    for fraction in (0.02, 0.03):
        rows = [measure(im, cropped(im, side, fraction)) for im in originals().values()
                for side in ("left", "right", "top", "bottom")]
        counts[fraction] = sum(r[2] for r in rows), len(rows)
        print(f"\n{fraction:.0%} crops: {counts[fraction][0]} of {len(rows)} caught, dHash bits "
              f"{min(r[0] for r in rows)}-{max(r[0] for r in rows)}, ΔE up to {max(r[1] for r in rows):.1f}")
        assert all(r[1] <= colour_tolerance(THRESHOLD) for r in rows)
        assert all(r[2] == (r[0] <= THRESHOLD) for r in rows)  # structure alone decides
    assert counts[0.02][0] >= 30 and counts[0.03][0] >= 28


def test_six_gradients_and_flat_colours_are_all_kept_in_one_batch():
    index = NearDuplicateIndex(THRESHOLD)
    assert index.extend(ImageHash.of(gradient(*ends)) for ends in GRADIENTS.values()) == [True] * 6
    assert not index.add(ImageHash.of(reencoded(gradient(*GRADIENTS["cyan"]), "JPEG", quality=80)))
    flats = NearDuplicateIndex(THRESHOLD)
    colours = [(200, 40, 40), (40, 70, 200), (60, 160, 80), (245, 245, 245), (20, 20, 20), (128, 128, 128)]
    assert flats.extend(ImageHash.of(Image.new("RGB", (64, 64), c)) for c in colours) == [True] * 6


def test_frames_of_a_moving_scene():
    """A figure walking across: a frame a few pixels on is the same picture, one a figure's
    width or more on is kept."""
    index = NearDuplicateIndex(THRESHOLD)
    assert index.extend(ImageHash.of(scene(x)) for x in (40, 42, 90, 93, 140, 190)) == [
        True, False, True, False, True, True]


def test_the_tolerance_follows_the_threshold():
    """A larger distance is looser in both structure and colour; 0 keeps only identical hashes."""
    base, pink = character(), character(hair=HAIR["pink"])
    assert measure(base, pink)[2] is False
    loose = NearDuplicateIndex(16)  # 40 ΔE
    loose.add(ImageHash.of(base))
    assert ImageHash.of(pink) in loose
    exact = NearDuplicateIndex(0)
    exact.add(ImageHash.of(base))
    assert ImageHash.of(base) in exact and ImageHash.of(reencoded(base, "JPEG", quality=70)) not in exact


def test_video_frames_use_the_same_rule(tmp_path):
    """Frame extraction drops near duplicates by structure and colour too: frames of the same
    drawing with other hair colours are kept, the return to the first colours is not."""
    from lora_studio.datasets.frames import extract_frames
    from support.videos import encode_video

    def still(hair):
        arr = np.asarray(character(hair=hair).resize((160, 90)))
        return lambda t, w, h: arr

    video = encode_video(tmp_path / "recolour.mp4", [(1, still(HAIR["red"])), (1, still(HAIR["blue"])),
                                                     (1, still(HAIR["red"]))])
    frames = extract_frames(video, samples=6)
    assert [int(f.time_s) for f in frames] == [0, 1]
    assert hamming(frames[0].phash, frames[1].phash) <= 2  # alike in grey
    assert colour_distance(frames[0].colour, frames[1].colour) > 3 * colour_tolerance(6)
