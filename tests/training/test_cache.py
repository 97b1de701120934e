"""Latent and text-encoder caches: encode only on a miss, invalidate on changed images or models, survive corruption."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from lora_studio.training.cache import CachedText, LatentCache, TextCache, prune  # noqa: E402
from lora_studio.training.data import TrainItem, load_for_bucket  # noqa: E402
from support.images import draw  # noqa: E402


class PoolEncoder:
    """A deterministic stand-in for a VAE encoder that is a real function of the pixels (8x average pool
    plus a luminance channel), counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.images = 0

    def encode(self, pixels):  # (B, 3, h, w) -> mean, std (B, 4, h/8, w/8)
        pooled = torch.nn.functional.avg_pool2d(pixels, 8)
        mean = torch.cat([pooled, pooled.mean(dim=1, keepdim=True)], dim=1)
        return mean, torch.exp(-mean.abs())

    def __call__(self, prepared):
        self.calls += 1
        self.images += 1
        return self.encode(prepared.pixels.unsqueeze(0))

    def batch(self, prepared_list):
        self.calls += 1
        self.images += len(prepared_list)
        return self.encode(torch.stack([p.pixels for p in prepared_list]))


def write_image(path: Path, size=(80, 64), seed=0) -> Path:
    draw(size, seed).save(path)
    return path


@pytest.fixture
def item(tmp_path: Path) -> TrainItem:
    return TrainItem(write_image(tmp_path / "img.png"), "1girl")


def cache_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_miss_then_hit_across_cache_objects(tmp_path: Path, item: TrainItem) -> None:
    root, encoder = tmp_path / "cache", PoolEncoder()
    first = LatentCache(root, "model-a").get_or_encode(item, (64, 64), False, encoder)
    assert encoder.calls == 1
    assert first["mean"].shape == (4, 8, 8) and first["mean"].dtype == torch.float32
    prepared = load_for_bucket(item.image, (64, 64))
    assert torch.equal(first["mean"], encoder.encode(prepared.pixels[None])[0][0])
    assert first["original_hw"] == (64, 80) and first["crop_top_left"] == (0, 8)
    assert first["bucket"] == (64, 64) and first["flip"] is False

    cache = LatentCache(root, "model-a")  # a later run: same files, new process state
    again = cache.get_or_encode(item, (64, 64), False, encoder)
    assert encoder.calls == 1 and (cache.hits, cache.misses) == (1, 0)
    for name in ("mean", "std"):
        assert torch.equal(again[name], first[name])
    assert {k: again[k] for k in ("original_hw", "crop_top_left", "bucket", "flip")} == {
        k: first[k] for k in ("original_hw", "crop_top_left", "bucket", "flip")
    }
    assert len(cache_files(root)) == 1


def test_key_covers_bucket_flip_model_and_dtype(tmp_path: Path, item: TrainItem) -> None:
    root, encoder = tmp_path / "cache", PoolEncoder()
    base = LatentCache(root, "model-a")
    base.get_or_encode(item, (64, 64), False, encoder)
    flipped = base.get_or_encode(item, (64, 64), True, encoder)
    assert encoder.calls == 2 and flipped["flip"] is True
    plain = base.get_or_encode(item, (64, 64), False, encoder)
    assert torch.allclose(flipped["mean"], torch.flip(plain["mean"], dims=[2]), atol=1e-6)
    base.get_or_encode(item, (96, 48), False, encoder)
    assert encoder.calls == 3
    LatentCache(root, "model-b").get_or_encode(item, (64, 64), False, encoder)  # another model
    assert encoder.calls == 4
    LatentCache(root, "model-a", vae_dtype="bfloat16").get_or_encode(item, (64, 64), False, encoder)
    assert encoder.calls == 5
    assert len(cache_files(root)) == 5
    LatentCache(root, "model-a").get_or_encode(item, (96, 48), False, encoder)  # all still cached
    assert encoder.calls == 5


def test_a_changed_image_is_encoded_again(tmp_path: Path, item: TrainItem) -> None:
    root, encoder = tmp_path / "cache", PoolEncoder()
    old = LatentCache(root, "m").get_or_encode(item, (64, 64), False, encoder)
    stat = os.stat(item.image)
    write_image(item.image, seed=1)  # new content under the same name, even with the old mtime
    os.utime(item.image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    new = LatentCache(root, "m").get_or_encode(item, (64, 64), False, encoder)
    assert encoder.calls == 2
    assert not torch.equal(old["mean"], new["mean"])


def test_the_key_is_the_content_not_the_path(tmp_path: Path, item: TrainItem) -> None:
    root, encoder = tmp_path / "cache", PoolEncoder()
    LatentCache(root, "m").get_or_encode(item, (64, 64), False, encoder)
    moved = TrainItem(item.image.rename(tmp_path / "renamed.png"), "other caption")
    LatentCache(root, "m").get_or_encode(moved, (64, 64), False, encoder)
    assert encoder.calls == 1


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "foreign"])
def test_corrupt_files_are_recomputed(tmp_path: Path, item: TrainItem, damage: str) -> None:
    root, encoder = tmp_path / "cache", PoolEncoder()
    good = LatentCache(root, "m").get_or_encode(item, (64, 64), False, encoder)
    [path] = cache_files(root)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x00not a safetensors file" * 10)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a valid file of another entry copied over this name
        other = TrainItem(write_image(tmp_path / "other.png", seed=3), "")
        LatentCache(root, "m").get_or_encode(other, (64, 64), False, encoder)
        encoder.calls -= 1
        path.write_bytes(next(p for p in cache_files(root) if p != path).read_bytes())
    cache = LatentCache(root, "m")
    repaired = cache.get_or_encode(item, (64, 64), False, encoder)
    assert encoder.calls == 2 and cache.misses == 1
    assert torch.equal(repaired["mean"], good["mean"])
    LatentCache(root, "m").get_or_encode(item, (64, 64), False, encoder)  # the file was rewritten
    assert encoder.calls == 2


def test_failed_encode_leaves_no_file(tmp_path: Path, item: TrainItem) -> None:
    root = tmp_path / "cache"

    def broken(_prepared):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        LatentCache(root, "m").get_or_encode(item, (64, 64), False, broken)
    assert cache_files(root) == []
    encoder = PoolEncoder()
    for flip in (False, True):
        LatentCache(root, "m").get_or_encode(item, (64, 64), flip, encoder)
    assert [p.suffix for p in cache_files(root)] == [".safetensors", ".safetensors"]  # no temporary files left


def test_get_or_encode_many_batches_misses_per_bucket(tmp_path: Path) -> None:
    items = [TrainItem(write_image(tmp_path / f"{i}.png", seed=i), "") for i in range(5)]
    requests = [
        (items[0], (64, 64), False),
        (items[1], (96, 48), False),
        (items[2], (64, 64), False),
        (items[3], (64, 64), True),
        (items[4], (96, 48), False),
    ]
    root, encoder = tmp_path / "cache", PoolEncoder()
    LatentCache(root, "m").get_or_encode(items[2], (64, 64), False, encoder)  # one already cached
    progress = []
    cache = LatentCache(root, "m")
    entries = cache.get_or_encode_many(
        requests, encoder.batch, batch_size=2, on_progress=lambda d, t: progress.append((d, t))
    )
    assert encoder.images == 1 + 4
    assert encoder.calls == 1 + 2  # (64, 64): 2 misses -> one batch; (96, 48): 2 misses -> one batch
    assert (cache.hits, cache.misses) == (1, 4)
    assert progress[0] == (1, 5) and progress[-1] == (5, 5)
    for (it, bucket, flip), entry in zip(requests, entries, strict=True):
        single = LatentCache(tmp_path / "single", "m").get_or_encode(it, bucket, flip, PoolEncoder())
        assert torch.allclose(entry["mean"], single["mean"], atol=1e-6)
        assert entry["bucket"] == bucket and entry["flip"] == flip
    cache.get_or_encode_many(requests, encoder.batch)
    assert encoder.calls == 3


@pytest.mark.training
def test_with_the_tiny_vae(tmp_path: Path, item: TrainItem) -> None:
    """The real encoder the trainer uses: cached latents equal a direct encode."""
    pytest.importorskip("diffusers")
    from support.tiny_sd import _build_vae

    torch.manual_seed(0)
    vae = _build_vae().eval()
    calls = []

    def encode(prepared):
        calls.append(prepared.bucket)
        with torch.no_grad():
            dist = vae.encode(prepared.pixels[None]).latent_dist
        return dist.mean, dist.std

    cache = LatentCache(tmp_path / "cache", "tiny")
    entry = cache.get_or_encode(item, (64, 64), False, encode)
    again = LatentCache(tmp_path / "cache", "tiny").get_or_encode(item, (64, 64), False, encode)
    assert calls == [(64, 64)]
    with torch.no_grad():
        direct = vae.encode(load_for_bucket(item.image, (64, 64)).pixels[None]).latent_dist
    assert entry["mean"].shape == (4, 8, 8)
    assert torch.equal(again["mean"], direct.mean[0]) and torch.equal(again["std"], direct.std[0])


# --------------------------------------------------------------------------- text


class TextEncoder:
    """Deterministic captions -> (hidden, pooled), a real function of the caption's bytes; counts calls."""

    def __init__(self, pooled: bool = True) -> None:
        self.calls: list[list[str]] = []
        self.pooled = pooled

    def __call__(self, captions: list[str]) -> CachedText:
        self.calls.append(list(captions))
        rows = []
        for caption in captions:
            codes = torch.tensor(list(caption.encode("utf-8"))[:77] + [0] * (77 - min(77, len(caption.encode()))))
            rows.append(codes.float()[:, None] / 255 * torch.arange(1, 9).float())
        hidden = torch.stack(rows)  # (B, 77, 8)
        return CachedText(hidden, hidden.mean(dim=1)[:, :4] if self.pooled else None)


def test_text_cache_hits_and_misses() -> None:
    encoder, cache = TextEncoder(), TextCache("model-a")
    one = cache.get_or_encode("mychar, 1girl", encoder)
    assert one.hidden.shape == (1, 77, 8) and one.pooled.shape == (1, 4)
    assert cache.get_or_encode("mychar, 1girl", encoder) is not None
    assert encoder.calls == [["mychar, 1girl"]]
    batch = cache.get_batch(["a", "mychar, 1girl", "b", "a"], encoder)
    assert encoder.calls[-1] == ["a", "b"]  # only the missing captions, once each, in one call
    assert batch.hidden.shape == (4, 77, 8)
    direct = encoder(["a", "mychar, 1girl", "b", "a"])
    assert torch.equal(batch.hidden, direct.hidden) and torch.equal(batch.pooled, direct.pooled)
    assert (cache.hits, cache.misses) == (2, 3) and len(cache) == 3  # a repeat within a batch is neither
    cache.get_batch(["b", "a"], encoder)
    assert len(encoder.calls) == 3  # 2 cache calls + the direct one above
    assert "a" in cache and "zzz" not in cache


def test_text_cache_without_pooled_and_per_model() -> None:
    encoder = TextEncoder(pooled=False)
    result = TextCache("sd15").get_batch(["x", "y"], encoder)
    assert result.pooled is None and result.hidden.shape == (2, 77, 8)
    TextCache("other-model").get_or_encode("x", encoder)
    assert len(encoder.calls) == 2


def test_text_cache_on_disk(tmp_path: Path) -> None:
    encoder = TextEncoder()
    first = TextCache("m", tmp_path / "text").get_batch(["a", "b"], encoder)
    later = TextCache("m", tmp_path / "text")
    again = later.get_batch(["b", "a"], encoder)
    assert len(encoder.calls) == 1 and later.hits == 2
    assert torch.equal(again.hidden, first.hidden.flip(0)) and torch.equal(again.pooled, first.pooled.flip(0))
    TextCache("other", tmp_path / "text").get_or_encode("a", encoder)  # another model: miss
    assert len(encoder.calls) == 2
    for path in (tmp_path / "text").rglob("*.safetensors"):
        path.write_bytes(b"broken")
    repaired = TextCache("m", tmp_path / "text").get_batch(["a", "b"], encoder)
    assert len(encoder.calls) == 3 and torch.equal(repaired.hidden, first.hidden)


def entry_file(path: Path, size: int, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = os.path.getmtime(path) - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_prune_removes_least_recently_used_entries_but_never_kept_ones(tmp_path: Path) -> None:
    latents, text = tmp_path / "latents", tmp_path / "text"
    oldest = entry_file(latents / "aa" / "oldest.safetensors", 100, age_s=5000)
    kept = entry_file(latents / "bb" / "kept.safetensors", 100, age_s=4000)  # old, but the running training's
    old = entry_file(text / "cc" / "old.safetensors", 100, age_s=3000)
    recent = entry_file(latents / "dd" / "recent.safetensors", 100, age_s=10)
    stale_tmp = entry_file(latents / "aa" / ".x.123.tmp", 7, age_s=3 * 24 * 3600)  # a crashed write
    fresh_tmp = entry_file(latents / "aa" / ".y.456.tmp", 7, age_s=5)  # a write in progress
    other = entry_file(latents / "notes.txt", 1000, age_s=9000)  # not an entry: left alone
    result = prune([latents, text, tmp_path / "missing"], max_bytes=250, keep=[kept])
    assert not oldest.exists() and not old.exists() and not stale_tmp.exists()
    assert kept.exists() and recent.exists() and fresh_tmp.exists() and other.exists()
    assert (result.removed, result.freed_bytes, result.remaining_bytes) == (3, 207, 200)
    # within the budget: nothing goes; a budget below the kept entries removes all the others
    assert prune([latents, text], max_bytes=10_000).removed == 0
    assert prune([latents, text], max_bytes=0, keep=[kept]).remaining_bytes == 100 and not recent.exists()


def test_cache_hits_mark_entries_as_recently_used(tmp_path: Path, item: TrainItem) -> None:
    root, encoder = tmp_path / "cache", PoolEncoder()
    LatentCache(root, "model-a").get_or_encode(item, (64, 64), False, encoder)
    (path,) = cache_files(root)
    os.utime(path, (1_000_000, 1_000_000))
    cache = LatentCache(root, "model-a")
    cache.get_or_encode(item, (64, 64), False, encoder)
    assert os.path.getmtime(path) > 1_000_000 and cache.used == {path}
    text = TextCache("m", tmp_path / "text")
    text.get_batch(["a"], TextEncoder())
    (text_path,) = cache_files(tmp_path / "text")
    os.utime(text_path, (1_000_000, 1_000_000))
    later = TextCache("m", tmp_path / "text")
    later.get_batch(["a"], TextEncoder())
    assert os.path.getmtime(text_path) > 1_000_000 and later.used == {text_path} and text.used == {text_path}
