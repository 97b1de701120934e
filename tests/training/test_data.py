"""Training data: captions (trigger, shuffle, dropout), aspect-ratio buckets, image loading, the resumable sampler."""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from lora_studio.training.data import (
    BucketSampler,
    CaptionOptions,
    TrainItem,
    assign_buckets,
    build_caption,
    deterministic_captions,
    image_size,
    load_for_bucket,
    make_buckets,
    pick_bucket,
    with_trigger,
)
from lora_studio.training.errors import TrainingError
from PIL import Image, ImageDraw

torch = pytest.importorskip("torch")

TRAINING_DIR = Path(__file__).resolve().parents[2] / "training"
SDXL_BUCKETS = [(1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216), (1344, 768), (768, 1344)]


# --------------------------------------------------------------------------- captions


@pytest.mark.parametrize(
    ("caption", "trigger", "expected"),
    [
        ("1girl, red hair", "mychar", "mychar, 1girl, red hair"),
        ("1girl, MyChar, red hair", "mychar", "1girl, MyChar, red hair"),  # present, any case: unchanged
        ("1girl, mychars", "mychar", "mychar, 1girl, mychars"),  # only a whole word counts
        ("  ", "mychar", "mychar"),
        ("1girl ", "", "1girl"),
        ("c++ fan", "c++", "c++ fan"),  # regex characters in the trigger are literal
    ],
)
def test_trigger_word_rule(caption: str, trigger: str, expected: str) -> None:
    assert with_trigger(caption, trigger) == expected
    # with every augmentation off, build_caption is exactly the trigger rule and never uses the rng
    rng = random.Random(1)
    state = rng.getstate()
    assert build_caption(caption, CaptionOptions(trigger_word=trigger), rng) == expected
    assert rng.getstate() == state


def test_shuffle_keeps_the_first_k_tags_and_permutes_the_rest() -> None:
    caption = "1girl, red hair, smile, school uniform, outdoors, sky"
    opts = CaptionOptions(trigger_word="mychar", shuffle=True, keep_tokens=2)
    rng = random.Random(0)
    orders = set()
    for _ in range(50):
        tags = build_caption(caption, opts, rng).split(", ")
        assert tags[:2] == ["mychar", "1girl"]  # the prepended trigger counts as the first kept tag
        assert sorted(tags[2:]) == sorted(["red hair", "smile", "school uniform", "outdoors", "sky"])
        orders.add(tuple(tags[2:]))
    assert len(orders) > 10


def test_keep_tokens_zero_shuffles_everything() -> None:
    opts = CaptionOptions(shuffle=True, keep_tokens=0)
    rng = random.Random(3)
    firsts = {build_caption("a, b, c, d", opts, rng).split(", ")[0] for _ in range(60)}
    assert firsts == {"a", "b", "c", "d"}


def test_tag_dropout_never_drops_kept_tags() -> None:
    caption = ", ".join(f"tag{i}" for i in range(10))
    rng = random.Random(5)
    assert build_caption(caption, CaptionOptions(trigger_word="trig", tag_dropout=1.0), rng) == "trig"
    kept = Counter()
    draws = 400
    for _ in range(draws):
        tags = build_caption(caption, CaptionOptions(trigger_word="trig", keep_tokens=1, tag_dropout=0.3), rng)
        tags = tags.split(", ")
        assert tags[0] == "trig"
        assert tags[1:] == sorted(tags[1:], key=lambda t: int(t[3:]))  # no shuffle: order preserved
        kept.update(tags[1:])
    rate = sum(kept.values()) / (draws * 10)
    assert 0.62 < rate < 0.78  # ~0.7 kept


def test_caption_dropout_returns_empty_with_probability_p() -> None:
    rng = random.Random(7)
    assert build_caption("1girl", CaptionOptions(caption_dropout=1.0), rng) == ""
    opts = CaptionOptions(trigger_word="trig", caption_dropout=0.25)
    results = [build_caption("1girl, smile", opts, rng) for _ in range(800)]
    empty = results.count("")
    assert 150 < empty < 250
    assert set(results) == {"", "trig, 1girl, smile"}


def test_captions_are_reproducible_from_the_seed() -> None:
    opts = CaptionOptions(trigger_word="t", shuffle=True, tag_dropout=0.2, caption_dropout=0.1)
    caption = "a, b, c, d, e, f"
    first = [build_caption(caption, opts, rng) for rng in [random.Random(42)] for _ in range(30)]
    again = [build_caption(caption, opts, rng) for rng in [random.Random(42)] for _ in range(30)]
    other = [build_caption(caption, opts, rng) for rng in [random.Random(43)] for _ in range(30)]
    assert first == again
    assert first != other


def test_deterministic_captions() -> None:
    assert deterministic_captions(CaptionOptions(trigger_word="t", keep_tokens=3))
    assert not deterministic_captions(CaptionOptions(shuffle=True))
    assert not deterministic_captions(CaptionOptions(tag_dropout=0.1))
    assert not deterministic_captions(CaptionOptions(caption_dropout=0.05))


@pytest.mark.parametrize("bad", [{"keep_tokens": -1}, {"tag_dropout": 1.5}, {"caption_dropout": -0.1}])
def test_caption_options_are_validated(bad: dict) -> None:
    with pytest.raises(ValueError):
        CaptionOptions(**bad)


# --------------------------------------------------------------------------- buckets


@pytest.mark.parametrize("resolution", [512, 768, 1024])
def test_buckets_respect_step_area_and_aspect(resolution: int) -> None:
    buckets = make_buckets(resolution, step=64, max_aspect=2.0)
    assert (resolution, resolution) in buckets
    for w, h in buckets:
        assert w % 64 == 0 and h % 64 == 0
        assert w * h <= resolution * resolution
        assert max(w, h) / min(w, h) <= 2.0
        assert (h, w) in buckets
    aspects = [w / h for w, h in buckets]
    assert aspects == sorted(aspects)
    assert max(aspects) > 1.6  # real landscape buckets exist, not just the square


def test_sdxl_buckets_are_the_familiar_ones() -> None:
    buckets = make_buckets(1024)
    assert set(SDXL_BUCKETS) <= set(buckets)
    assert (1408, 704) in buckets and (1472, 704) not in buckets  # 2.0 allowed, 2.09 not
    assert make_buckets(1024, max_aspect=1.5) == [b for b in buckets if max(b) / min(b) <= 1.5]


def test_tiny_resolution_and_bad_arguments() -> None:
    assert make_buckets(64, step=64) == [(64, 64)]
    assert make_buckets(64, step=16) == [(48, 80), (64, 64), (80, 48)]  # 96x32 would be 3:1
    with pytest.raises(ValueError):
        make_buckets(32, step=64)
    with pytest.raises(ValueError):
        pick_bucket(10, 10, [])


def test_pick_bucket_chooses_the_closest_aspect() -> None:
    buckets = make_buckets(1024)
    assert pick_bucket(1000, 1000, buckets) == (1024, 1024)
    assert pick_bucket(1920, 1080, buckets) == (1344, 768)  # 1.78 -> 1.75
    assert pick_bucket(1080, 1920, buckets) == (768, 1344)
    assert pick_bucket(4000, 1000, buckets) == (1408, 704)  # wider than any bucket: the widest
    assert pick_bucket(832, 1216, buckets) == (832, 1216)


# --------------------------------------------------------------------------- images


def striped(path: Path, size: tuple[int, int], *, mode: str = "RGB", **save) -> Path:
    """Red left stripe, green right stripe, blue top band, grey elsewhere: shows what a crop removed."""
    w, h = size
    image = Image.new(mode, size, (128, 128, 128, 255)[: len(mode)])
    pen = ImageDraw.Draw(image)
    pen.rectangle((0, 0, w // 10 - 1, h - 1), fill=(255, 0, 0, 255)[: len(mode)])
    pen.rectangle((w - w // 10, 0, w - 1, h - 1), fill=(0, 255, 0, 255)[: len(mode)])
    pen.rectangle((w // 10, 0, w - w // 10 - 1, h // 10 - 1), fill=(0, 0, 255, 255)[: len(mode)])
    image.save(path, **save)
    return path


def test_load_for_bucket_keeps_the_whole_frame_when_the_aspect_matches(tmp_path: Path) -> None:
    path = striped(tmp_path / "wide.png", (400, 200))
    prepared = load_for_bucket(path, (128, 64))
    assert prepared.pixels.shape == (3, 64, 128) and prepared.pixels.dtype == torch.float32
    assert prepared.original_hw == (200, 400) and prepared.crop_top_left == (0, 0) and prepared.bucket == (128, 64)
    assert float(prepared.pixels.min()) >= -1.0 and float(prepared.pixels.max()) <= 1.0
    red, green = prepared.pixels[:, 32, 2], prepared.pixels[:, 32, -3]
    assert red.tolist() == pytest.approx([1.0, -1.0, -1.0], abs=0.05)  # a square centre crop would cut it off
    assert green.tolist() == pytest.approx([-1.0, 1.0, -1.0], abs=0.05)


def test_load_for_bucket_crops_only_the_excess_centred(tmp_path: Path) -> None:
    path = striped(tmp_path / "img.png", (100, 60))  # aspect 1.67 into a 2.0 bucket: too tall by 13 px
    prepared = load_for_bucket(path, (128, 64))
    assert prepared.pixels.shape == (3, 64, 128)
    assert prepared.original_hw == (60, 100)
    assert prepared.crop_top_left == (6, 0)  # resized to 128x77, 13 excess rows: 6 above, 7 below
    assert prepared.pixels[:, 32, 1].tolist() == pytest.approx([1.0, -1.0, -1.0], abs=0.05)  # full width kept
    tall = load_for_bucket(striped(tmp_path / "tall.png", (60, 100)), (64, 128))
    assert tall.crop_top_left == (0, 6) and tall.pixels.shape == (3, 128, 64)


def test_flip_mirrors_pixels_and_crop(tmp_path: Path) -> None:
    path = striped(tmp_path / "img.png", (90, 64))  # resized 90x64 -> covers (64, 64) after a 26 px crop
    plain = load_for_bucket(path, (64, 64))
    flipped = load_for_bucket(path, (64, 64), flip=True)
    assert torch.equal(flipped.pixels, torch.flip(plain.pixels, dims=[2]))
    assert plain.crop_top_left == (0, 13) and flipped.crop_top_left == (0, 13)
    odd = striped(tmp_path / "odd.png", (91, 64))  # 27 px excess: 13 left, 14 right; mirrored 14 left
    assert load_for_bucket(odd, (64, 64)).crop_top_left == (0, 13)
    assert load_for_bucket(odd, (64, 64), flip=True).crop_top_left == (0, 14)
    assert flipped.flip and not plain.flip


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    image = Image.open(striped(tmp_path / "src.png", (120, 60)))
    exif = image.getexif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise (portrait)
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    assert image_size(path) == (60, 120)
    buckets = make_buckets(128, step=32)
    bucket = pick_bucket(*image_size(path), buckets)
    assert bucket[1] > bucket[0]
    prepared = load_for_bucket(path, bucket)
    assert prepared.original_hw == (120, 60)
    assert prepared.pixels.shape[1:] == (bucket[1], bucket[0])
    # rotated clockwise: the blue top band is now the right edge
    assert prepared.pixels[:, bucket[1] // 2, -3].tolist() == pytest.approx([-1.0, -1.0, 1.0], abs=0.1)


def test_transparency_is_flattened_onto_white(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((0, 0, 31, 63), fill=(255, 0, 0, 255))
    image.save(path)
    pixels = load_for_bucket(path, (64, 64)).pixels
    assert pixels[:, 10, 50].tolist() == pytest.approx([1.0, 1.0, 1.0])  # transparent -> white, not black
    assert pixels[:, 10, 5].tolist() == pytest.approx([1.0, -1.0, -1.0])


def test_broken_image_is_a_training_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG not really")
    with pytest.raises(TrainingError, match="broken.png"):
        load_for_bucket(path, (64, 64))
    with pytest.raises(TrainingError, match="broken.png"):
        image_size(path)


def test_assign_buckets(tmp_path: Path) -> None:
    items = [
        TrainItem(striped(tmp_path / "a.png", (200, 100)), "a"),
        TrainItem(striped(tmp_path / "b.png", (100, 100)), "b"),
        TrainItem(striped(tmp_path / "c.png", (100, 190)), "c"),
    ]
    buckets = make_buckets(64, step=16)
    assert assign_buckets(items, buckets) == [(80, 48), (64, 64), (48, 80)]


# --------------------------------------------------------------------------- sampler


def sample_buckets() -> list[tuple[int, int]]:
    # 7 items in bucket A, 4 in B, 1 in C, interleaved in item order
    layout = ["A"] * 7 + ["B"] * 4 + ["C"]
    random.Random(0).shuffle(layout)
    return [{"A": (64, 64), "B": (96, 48), "C": (48, 96)}[name] for name in layout]


def test_sampler_epochs_cover_every_item_once_without_mixing_buckets() -> None:
    buckets = sample_buckets()
    sampler = BucketSampler(buckets, batch_size=3, seed=1)
    assert len(sampler) == 3 + 2 + 1  # ceil(7/3) + ceil(4/3) + ceil(1/3): partial batches are kept
    epochs = []
    for _ in range(3):
        batches = [next(sampler) for _ in range(len(sampler))]
        for batch in batches:
            assert len({buckets[i] for i in batch}) == 1
            assert 1 <= len(batch) <= 3
            assert sampler.bucket_of(batch) == buckets[batch[0]]
        assert sorted(i for batch in batches for i in batch) == list(range(len(buckets)))
        assert sorted(len(b) for b in batches) == [1, 1, 1, 3, 3, 3]
        epochs.append(batches)
    assert sampler.epoch == 2
    assert epochs[0] != epochs[1] != epochs[2]  # a fresh shuffle each epoch


def test_sampler_is_seeded() -> None:
    buckets = sample_buckets()
    draw = lambda seed: [next(s) for s in [BucketSampler(buckets, 2, seed)] for _ in range(20)]  # noqa: E731
    assert draw(5) == draw(5)
    assert draw(5) != draw(6)


@pytest.mark.parametrize("consumed", [0, 4, 6, 13])  # start, mid-epoch, exactly at an epoch end, later epoch
def test_sampler_resume_continues_with_the_same_batches(consumed: int) -> None:
    buckets = sample_buckets()
    original = BucketSampler(buckets, batch_size=3, seed=9)
    for _ in range(consumed):
        next(original)
    state = json.loads(json.dumps(original.state_dict()))  # checkpoints store it as JSON
    expected = [next(original) for _ in range(15)]
    resumed = BucketSampler(buckets, batch_size=3, seed=9)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(15)] == expected
    fresh = BucketSampler(buckets, batch_size=3, seed=9)
    if consumed:
        assert [next(fresh) for _ in range(15)] != expected


def test_sampler_refuses_a_state_from_another_dataset() -> None:
    buckets = sample_buckets()
    state = BucketSampler(buckets, 3, 9).state_dict()
    with pytest.raises(TrainingError, match="cannot resume"):
        BucketSampler(buckets[:-1], 3, 9).load_state_dict(state)
    with pytest.raises(TrainingError, match="cannot resume"):
        BucketSampler(buckets, 2, 9).load_state_dict(state)
    with pytest.raises(ValueError):
        BucketSampler([], 1, 0)


# --------------------------------------------------------------------------- import rules


@pytest.mark.parametrize("module", ["data.py", "cache.py"])
def test_modules_import_stdlib_and_siblings_only(module: str) -> None:
    tree = ast.parse((TRAINING_DIR / module).read_text(encoding="utf-8"))
    for node in tree.body:  # module level: stdlib or relative imports only
        if isinstance(node, ast.Import):
            assert all(alias.name.split(".")[0] in sys.stdlib_module_names for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 1 or (node.module or "").split(".")[0] in sys.stdlib_module_names, node.module
    for node in ast.walk(tree):  # nowhere an absolute import of the pack or a parent-relative import
        if isinstance(node, ast.ImportFrom):
            assert node.level <= 1 and (node.module or "").split(".")[0] != "lora_studio"


def test_modules_load_through_a_synthetic_package_without_heavy_imports() -> None:
    code = (
        "import importlib, importlib.machinery, sys, types\n"
        f"root = {str(TRAINING_DIR.parent)!r}\n"
        "spec = importlib.machinery.ModuleSpec('_synthetic_pack', None, is_package=True)\n"
        "spec.submodule_search_locations = [root]\n"
        "pkg = types.ModuleType('_synthetic_pack'); pkg.__spec__ = spec; pkg.__path__ = [root]\n"
        "sys.modules['_synthetic_pack'] = pkg\n"
        "data = importlib.import_module('_synthetic_pack.training.data')\n"
        "importlib.import_module('_synthetic_pack.training.cache')\n"
        "assert data.make_buckets(512)\n"
        "heavy = [m for m in ('torch', 'numpy', 'PIL', 'safetensors', 'lora_studio') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
