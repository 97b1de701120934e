"""Thumbnails: WebP at 256/512 px (aspect kept, never enlarged), made once and cached on disk, remade
when the source changes, the cache capped (least recently used first), ETag/304, a video's first
frame, EXIF orientation, the first frame of an animation; hostile paths, links out of the output
folder and decompression bombs refused cleanly. Through HTTP on both databases, and the cache
itself directly."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import threading
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from lora_studio.app import STUDIO_KEY
from lora_studio.core.errors import InvalidInput
from lora_studio.core.owners import owner_tag
from lora_studio.datasets import thumbnails as thumbs
from lora_studio.datasets.layout import TEMP_PREFIX
from lora_studio.datasets.thumbnails import Thumbnails
from lora_studio.server_routes import thumbnails as thumb_routes
from PIL import Image
from support.api import V1, assert_error, make_character, make_project, upload
from support.images import draw, encode, image_bytes
from support.videos import encode_video

MARKER = b"TOPSECRET-" + uuid.uuid4().hex.encode()


def webp(body: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(body))
    assert im.format == "WEBP"
    im.load()
    return im


def put(folder: Path, rel: str, data: bytes, mtime: float | None = None) -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def solid(size: tuple[int, int], colour: tuple[int, int, int], fmt: str = "PNG", **options) -> bytes:
    return encode(Image.new("RGB", size, colour), fmt, **options)


def near(a, b, tolerance=24) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a[:3], b[:3], strict=True))


def bomb_png(width: int, height: int) -> bytes:
    """A PNG that claims `width`×`height` pixels in a few hundred bytes (what a decompression bomb looks like
    to a header reader): its IDAT holds only a few compressed rows."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\x00" + b"\x00" * (width // 8 + 1), 9) * 1
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_route_sizes_are_the_services():
    assert thumb_routes.SIZES == thumbs.SIZES and thumb_routes.SIZES[0] == thumbs.DEFAULT_SIZE


async def test_dataset_image_thumbnails(client):
    studio = client.server.app[STUDIO_KEY].get()
    p = await make_project(client)
    c = await make_character(client, p["id"])
    files = [("wide.png", encode(draw((600, 300), seed=1)), "image/png"),
             ("small.png", encode(draw((64, 40), seed=2)), "image/png")]
    wide, small = (await upload(client, c["id"], *files))["created"]

    r = await client.get(f"{V1}/images/{wide['id']}/thumb")
    assert r.status == 200 and r.content_type == "image/webp"
    assert r.headers["Cache-Control"] == "private, max-age=86400" and r.headers["ETag"].startswith('"')
    assert webp(await r.read()).size == (256, 128)  # the default size, aspect kept
    r = await client.get(f"{V1}/images/{wide['id']}/thumb?size=512")
    assert webp(await r.read()).size == (512, 256)
    r = await client.get(f"{V1}/images/{small['id']}/thumb?size=512")
    assert webp(await r.read()).size == (64, 40)  # never enlarged

    # made once: a second request reads the cache
    made = studio.thumbnails.made
    etag = r.headers["ETag"]
    cached = studio.thumbnails.path_of(etag.strip('"'))
    assert cached.is_file() and cached.is_relative_to(studio.settings.data_dir / "thumbnails")
    mtime = cached.stat().st_mtime_ns
    r2 = await client.get(f"{V1}/images/{small['id']}/thumb?size=512")
    assert r2.status == 200 and r2.headers["ETag"] == etag and await r2.read() == await r.read()
    assert studio.thumbnails.made == made and cached.stat().st_mtime_ns == mtime

    # 304 for a known ETag (weak or in a list too), 200 for another
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        r = await client.get(f"{V1}/images/{small['id']}/thumb?size=512", headers={"If-None-Match": header})
        assert r.status == 304 and await r.read() == b"" and r.headers["ETag"] == etag, header
        assert r.headers["Cache-Control"] == "private, max-age=86400"
    r = await client.get(f"{V1}/images/{small['id']}/thumb?size=256", headers={"If-None-Match": etag})
    assert r.status == 200 and r.headers["ETag"] != etag  # another size is another thumbnail

    for bad in ("128", "abc", "256.0", "-1", "5120"):
        await assert_error(await client.get(f"{V1}/images/{wide['id']}/thumb?size={bad}"), 400)
    await assert_error(await client.get(f"{V1}/images/999999/thumb"), 404)
    await assert_error(await client.get(f"{V1}/images/abc/thumb"), 400)
    studio.images.file_path(wide["id"]).unlink()
    await assert_error(await client.get(f"{V1}/images/{wide['id']}/thumb"), 404)


async def test_output_thumbnails_are_remade_when_the_source_changes(client, settings):
    studio = client.server.app[STUDIO_KEY].get()
    out = settings.comfyui_output_dir
    src = put(out, "lora_studio/aiko/x_00001_.png", solid((300, 900), (220, 20, 20)), mtime=1_700_000_000)
    url = f"{V1}/gallery/thumb?path=lora_studio/aiko/x_00001_.png&size=256"
    r = await client.get(url)
    assert r.status == 200 and r.content_type == "image/webp"
    im = webp(await r.read())
    assert im.size == (85, 256) and near(im.getpixel((40, 128)), (220, 20, 20))
    etag, made = r.headers["ETag"], studio.thumbnails.made
    assert (await client.get(url)).headers["ETag"] == etag and studio.thumbnails.made == made

    put(out, "lora_studio/aiko/x_00001_.png", solid((300, 900), (20, 20, 220)), mtime=1_700_000_500)
    r = await client.get(url, headers={"If-None-Match": etag})  # the old one is no longer current
    assert r.status == 200 and r.headers["ETag"] != etag and studio.thumbnails.made == made + 1
    assert near(webp(await r.read()).getpixel((40, 128)), (20, 20, 220))
    src.unlink()
    await assert_error(await client.get(url), 404)
    await assert_error(await client.get(f"{V1}/gallery/thumb?size=256"), 400)  # no path
    put(out, "ok.png", image_bytes())
    await assert_error(await client.get(f"{V1}/gallery/thumb?path=ok.png&size=1024"), 400)
    put(out, "notes.txt", b"not an image")
    await assert_error(await client.get(f"{V1}/gallery/thumb?path=notes.txt"), 404)


async def test_formats_orientation_animation_and_video(client, settings, tmp_path):
    out = settings.comfyui_output_dir
    # a JPEG stored 200x100 whose EXIF says "rotate 90° clockwise to view": upright it is 100x200
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.new("RGB", (200, 100), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 100, 100))  # the left half red: upright, the top half
    put(out, "rotated.jpg", encode(stored, "JPEG", exif=exif.tobytes(), quality=95))
    # an animated WebP and an animated PNG: the first frame (green) is the thumbnail
    frames = [Image.new("RGB", (120, 80), c) for c in ((0, 200, 0), (200, 0, 200))]
    for name, fmt in (("anim.webp", "WEBP"), ("anim.png", "PNG")):
        buf = io.BytesIO()
        frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        put(out, name, buf.getvalue())
    # transparency is kept; 16-bit grey is scaled, not clipped to white
    put(out, "alpha.png", encode(Image.new("RGBA", (40, 40), (255, 0, 0, 0))))
    put(out, "deep.png", encode(Image.new("I;16", (40, 40), 32768)))
    # a video: its first frame (red, then blue)
    encode_video(out / "clip.webm", [(0.25, (250, 0, 0)), (0.25, (0, 0, 250))], size=(96, 64), fps=8, codec="libvpx")
    encode_video(out / "clip.mp4", [(0.25, (250, 0, 0)), (0.25, (0, 0, 250))], size=(96, 64), fps=8)
    put(out, "broken.webm", b"\x1aE\xdf\xa3 not really a webm")
    put(out, "broken.png", image_bytes()[:60])

    async def thumb(name):
        r = await client.get(f"{V1}/gallery/thumb", params={"path": name, "size": "256"})
        assert r.status == 200, (name, await r.text())
        return webp(await r.read())

    im = await thumb("rotated.jpg")
    assert im.size == (100, 200)
    assert near(im.getpixel((50, 50)), (255, 0, 0), 40) and near(im.getpixel((50, 150)), (0, 0, 255), 40)
    for name in ("anim.webp", "anim.png"):
        im = await thumb(name)
        assert im.size == (120, 80) and near(im.getpixel((60, 40)), (0, 200, 0)), name
    im = await thumb("alpha.png")
    assert im.mode == "RGBA" and im.getpixel((20, 20))[3] == 0
    assert near((await thumb("deep.png")).convert("RGB").getpixel((20, 20)), (128, 128, 128), 2)
    for name in ("clip.webm", "clip.mp4"):
        im = await thumb(name)
        assert im.size == (96, 64) and near(im.convert("RGB").getpixel((48, 32)), (250, 0, 0), 30), name
    for name in ("broken.webm", "broken.png"):
        await assert_error(await client.get(f"{V1}/gallery/thumb", params={"path": name}), 400)
    # a refused source is remembered while unchanged: not decoded again
    studio = client.server.app[STUDIO_KEY].get()
    made = studio.thumbnails.made
    await assert_error(await client.get(f"{V1}/gallery/thumb", params={"path": "broken.png"}), 400)
    assert studio.thumbnails.made == made


async def test_decompression_bomb_is_refused_cleanly(client, settings):
    out = settings.comfyui_output_dir
    put(out, "bomb.png", bomb_png(40_000, 40_000))  # 1.6 gigapixels in a few hundred bytes
    put(out, "big.png", bomb_png(9_000, 9_000))  # 81 megapixels: under Pillow's own error, over the studio's
    for name in ("bomb.png", "big.png"):
        t0 = time.monotonic()
        r = await client.get(f"{V1}/gallery/thumb", params={"path": name, "size": "512"})
        error = await assert_error(r, 400)
        assert "too large" in error["message"] and time.monotonic() - t0 < 2, (name, error)
    put(out, "ok.png", image_bytes())
    assert (await client.get(f"{V1}/gallery/thumb", params={"path": "ok.png"})).status == 200


async def test_paths_and_links_out_of_the_output_folder_are_refused(client, settings, tmp_path):
    out = settings.comfyui_output_dir
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.png"
    secret.write_bytes(image_bytes(seed=77) + MARKER)
    put(out, "ok.png", image_bytes(seed=5))
    (out / "link.png").symlink_to(secret)
    (out / "linkdir").symlink_to(outside)
    (out / "loop.png").symlink_to(out / "loop.png")
    (out / "up").symlink_to(tmp_path)
    names = ["../outside/secret.png", "../../outside/secret.png", str(secret), "/etc/passwd", "..%2Foutside/secret.png",
             "link.png", "linkdir/secret.png", "loop.png", "up/outside/secret.png", "a\x00.png", "x" * 5000,
             "a/" * 2100 + "x.png", "..\\outside\\secret.png", "", ".", "..", "/"]
    made = client.server.app[STUDIO_KEY].get().thumbnails.made
    for name in names:
        r = await client.get(f"{V1}/gallery/thumb", params={"path": name, "size": "256"})
        body = await r.read()
        assert r.status in (400, 404), (name[:60], r.status)
        assert MARKER not in body and r.content_type == "application/json", name[:60]
    assert client.server.app[STUDIO_KEY].get().thumbnails.made == made  # nothing outside was ever decoded
    assert (await client.get(f"{V1}/gallery/thumb", params={"path": "ok.png"})).status == 200


async def test_slow_thumbnails_do_not_hold_up_other_routes(client, settings, monkeypatch):
    """A grid asks for a screenful of thumbnails at once: while they are drawn, the rest of the API answers."""
    import asyncio

    out = settings.comfyui_output_dir
    for i in range(12):
        put(out, f"g{i}.png", image_bytes(seed=i))
    real, release = thumbs.render, threading.Event()

    def slow_render(source, size):
        release.wait(10)
        return real(source, size)

    monkeypatch.setattr(thumbs, "render", slow_render)
    grid = [asyncio.ensure_future(client.get(f"{V1}/gallery/thumb", params={"path": f"g{i}.png"})) for i in range(12)]
    await asyncio.sleep(0.3)  # every thumbnail thread is now waiting
    try:
        for _ in range(3):
            r = await asyncio.wait_for(client.get(f"{V1}/health"), 3)
            assert r.status == 200
    finally:
        release.set()
    assert [r.status for r in await asyncio.gather(*grid)] == [200] * 12


async def test_without_an_output_folder_says_so(make_client):
    client = await make_client(comfyui_output_dir=None)
    error = await assert_error(await client.get(f"{V1}/gallery/thumb?path=x.png"), 503, "unavailable")
    assert "LORA_STUDIO_COMFYUI_OUTPUT_DIR" in error["message"]


# -- the cache, directly ---------------------------------------------------------------------------------

def sources(folder: Path, n: int) -> list[Path]:
    """Noisy pictures (so each thumbnail has a real size in bytes)."""
    from support.images import noise_png

    return [put(folder, f"src{i}.png", noise_png(300 + i, size=256)) for i in range(n)]


def test_the_cap_evicts_the_least_recently_used(tmp_path):
    src = sources(tmp_path / "src", 5)
    probe = Thumbnails(tmp_path / "probe", 1 << 30)
    one = max(probe.make(s, 256).stat().st_size for s in src)
    cap = int(one * 2.5)  # room for two
    cache = Thumbnails(tmp_path / "cache", cap)
    a, b = cache.make(src[0], 256), cache.make(src[1], 256)
    assert a.is_file() and b.is_file()
    cache.get(src[0], 256)  # a used again: b is now the least recently used
    c = cache.make(src[2], 256)
    assert a.is_file() and c.is_file() and not b.exists()
    assert cache.cached_bytes() <= cap
    assert sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*.webp")) <= cap

    # a restarted studio reads the order from the files' mtimes
    os.utime(a, (1_000_000, 1_000_000))
    os.utime(c, (2_000_000, 2_000_000))
    again = Thumbnails(tmp_path / "cache", cap)
    assert again.cached_bytes() == a.stat().st_size + c.stat().st_size
    d = again.make(src[3], 256)
    assert d.is_file() and c.is_file() and not a.exists()
    made = again.made
    assert again.make(src[3], 256) == d and again.made == made  # a hit


def test_a_hit_refreshes_the_file_time_for_the_next_start(tmp_path, monkeypatch):
    src = sources(tmp_path / "src", 1)[0]
    cache = Thumbnails(tmp_path / "cache", 1 << 30)
    path = cache.make(src, 512)
    os.utime(path, (1_000_000, 1_000_000))
    fresh = Thumbnails(tmp_path / "cache", 1 << 30)
    fresh.get(src, 512)  # its index says the file was last used long ago: a hit touches it
    assert path.stat().st_mtime > time.time() - 60


def test_concurrent_requests_make_a_thumbnail_once(tmp_path, monkeypatch):
    src = sources(tmp_path / "src", 1)[0]
    cache = Thumbnails(tmp_path / "cache", 1 << 30)
    calls, real = [], thumbs.render

    def slow_render(source, size):
        calls.append(source)
        time.sleep(0.2)
        return real(source, size)

    monkeypatch.setattr(thumbs, "render", slow_render)
    barrier = threading.Barrier(8)

    def one(_):
        barrier.wait()
        return cache.get(src, 256)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert len(calls) == 1 and cache.made == 1
    assert len({r.etag for r in results}) == 1 and len({r.data for r in results}) == 1
    assert cache._key_locks == {}  # every key lock was given back


def test_leftover_temporary_files_are_swept(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    shard = tmp_path / "cache" / "ab"
    shard.mkdir(parents=True)
    left = shard / f"{TEMP_PREFIX}{owner_tag(dead.pid)}-0123456789abcdef.webp"
    left.write_bytes(b"half a thumbnail")
    live = shard / f"{TEMP_PREFIX}{owner_tag()}-fedcba9876543210.webp"
    live.write_bytes(b"being written")
    cache = Thumbnails(tmp_path / "cache", 1 << 30)
    assert cache.cached_bytes() == 0
    assert not left.exists() and live.exists()  # this process's writer may still be at work


def test_refusals_and_missing_sources(tmp_path):
    cache = Thumbnails(tmp_path / "cache", 1 << 20)
    with pytest.raises(InvalidInput, match="size"):
        cache.make(sources(tmp_path, 1)[0], 100)
    from lora_studio.core.errors import NotFound

    with pytest.raises(NotFound):
        cache.make(tmp_path / "missing.png", 256)
    with pytest.raises(NotFound):
        cache.make(tmp_path, 256)  # a folder
    put(tmp_path, "text.png", b"hello")
    with pytest.raises(InvalidInput):
        cache.make(tmp_path / "text.png", 256)
    put(tmp_path, "pic.gif", encode(Image.new("RGB", (10, 10)), "GIF"))
    with pytest.raises(InvalidInput, match="format"):
        cache.make(tmp_path / "pic.gif", 256)
