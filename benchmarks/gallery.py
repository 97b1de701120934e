"""The gallery at 50,000 outputs: indexing, first pages, filters and text search, thumbnails, against the
old walk-and-sort of the whole output folder measured in the same run.

Builds N small PNGs (64x64) in a temporary output folder, each with an API-format graph in its `prompt`
chunk as ComfyUI writes it (varied prompts, seeds, one of a few LoRAs; a tenth in a studio subfolder), with
distinct mtimes. Then times:
- the cold index (a full pass that reads every file) and a warm one (a restart: it only stats files);
- GET /gallery first page through a real aiohttp server (the studio's own thread keeps the index), without
  a filter, with a LoRA filter, with kind=video (none exist: the whole index is searched), with a text
  search, and a page deep in the list via the cursor;
- the old gallery's first page (every request walked and sorted the whole folder: its `_scan` and sort are
  copied below as the baseline) and the ratio old / indexed;
- thumbnail throughput (datasets/thumbnails.py): 256 px WebP made per second, and cached reads per second.

usage: python benchmarks/gallery.py [--count 50000] [--runs 30] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import struct
import tempfile
import time
import zlib
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from lora_studio.app import STUDIO_KEY, create_app
from lora_studio.core.db import Database
from lora_studio.core.settings import load_settings
from lora_studio.datasets.gallery_index import GalleryIndex
from PIL import Image

V1 = "/lora-studio/v1"
T0 = 1_700_000_000
WORDS = ("red hair", "blue eyes", "school uniform", "smiling", "beach", "night city", "library", "rain", "cherry "
         "blossoms", "sword", "glasses", "twin tails", "winter coat", "classroom", "sunset", "cat ears")
LORAS = ("moon-aiko-v3.safetensors", "moon-mei-v2.safetensors", "style/ink-v1.safetensors", "detail-tweaker.safetensors")


# -- the old gallery (before the index), copied as the baseline -------------------------------------
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def old_scan(root: Path) -> list[tuple[int, str, int]]:
    """datasets/gallery.py `_scan` as it was: (mtime, relative path, size) of the images below `root`."""
    out = []
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                full = Path(dirpath, name)
                try:
                    if full.is_symlink() and not full.resolve().is_relative_to(root):
                        continue
                    st = full.stat()
                except (OSError, RuntimeError):
                    continue
                out.append((st.st_mtime_ns, full.relative_to(root).as_posix(), st.st_size))
    return out


def old_first_page(root: Path, limit: int = 50) -> list:
    """`Gallery.list` as it was, for the first page: walk, sort everything, take a page."""
    entries = sorted(old_scan(root), key=lambda e: (e[0], e[1]), reverse=True)
    return entries[:limit]


# -- the outputs -----------------------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _graph(i: int, rng: random.Random) -> dict:
    positive = ", ".join(["1girl", *rng.sample(WORDS, 4), f"take {i}"])
    lora = LORAS[i % len(LORAS)]
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "anything-v5.safetensors"}},
        "10": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": lora,
                                                      "strength_model": 0.8, "strength_clip": 0.8}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": ["10", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "lowres, bad hands, blurry", "clip": ["10", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 768, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": rng.randrange(2**48), "steps": 20 + i % 10, "cfg": 7.0,
                                                   "sampler_name": "euler_ancestral", "scheduler": "karras",
                                                   "denoise": 1.0, "model": ["10", 0], "positive": ["6", 0],
                                                   "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }


def build_outputs(root: Path, count: int) -> None:
    """`count` PNGs: one picture's pixels (IHDR + IDAT) with each file's own prompt/workflow text chunks."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 120, 160)).save(buf, format="PNG")
    png = buf.getvalue()
    ihdr_end = 8 + 25
    head, tail = png[:ihdr_end], png[ihdr_end:]
    rng = random.Random(7)
    (root / "lora_studio" / "moon").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rel = f"lora_studio/moon/aiko_{i:05d}_.png" if i % 10 == 0 else f"ComfyUI_{i:05d}_.png"
        texts = _chunk(b"tEXt", b"prompt\0" + json.dumps(_graph(i, rng)).encode())
        texts += _chunk(b"tEXt", b"workflow\0" + b'{"nodes": [], "links": [], "version": 0.4}')
        path = root / rel
        path.write_bytes(head + texts + tail)
        os.utime(path, (T0 + i, T0 + i))


# -- timing ----------------------------------------------------------------------------------------
async def timed(client, url: str, runs: int) -> tuple[float, dict]:
    samples, body = [], {}
    for _ in range(runs):
        t = time.perf_counter()
        r = await client.get(url)
        body = await r.json()
        assert r.status == 200, body
        samples.append(time.perf_counter() - t)
    return statistics.median(samples), body


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def run(count: int, runs: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="lora-studio-gallery-") as tmp:
        tmp_path = Path(tmp)
        out = tmp_path / "output"
        out.mkdir()
        t = time.perf_counter()
        build_outputs(out, count)
        print(f"built {count} PNGs with embedded graphs in {time.perf_counter() - t:.1f}s")
        settings = load_settings(cli={"data_dir": tmp_path / "data", "database_url": database_url,
                                      "comfyui_output_dir": out, "comfyui_url": "http://127.0.0.1:9"}, env={})
        db = Database(settings.effective_database_url)
        db.migrate()
        print(f"database: {'postgresql' if db.is_postgres else 'sqlite'}")

        index = GalleryIndex(db, out)
        t = time.perf_counter()
        cold = index.full_pass()
        print(f"cold index (read every file):     {time.perf_counter() - t:.1f}s  "
              f"({cold['added']} items, {cold['added'] / max(cold['seconds'], 1e-9):.0f} files/s)")
        t = time.perf_counter()
        warm = GalleryIndex(db, out).full_pass()
        print(f"restart pass (stat only):         {time.perf_counter() - t:.2f}s  (read {warm['added']} files)")
        db.dispose()

        old = []
        for _ in range(3):
            t = time.perf_counter()
            old_first_page(out)
            old.append(time.perf_counter() - t)
        old_median = statistics.median(old)

        async with TestClient(TestServer(create_app(settings))) as client:
            studio = client.server.app[STUDIO_KEY].get()
            while studio.gallery_index.last_pass is None:  # the studio's own first pass (warm)
                await asyncio.sleep(0.05)
            first, body = await timed(client, f"{V1}/gallery?limit=50", runs)
            assert len(body["items"]) == 50 and body["items"][0]["mtime"] == T0 + count - 1
            lora, body = await timed(client, f"{V1}/gallery?limit=50&lora={LORAS[2]}", runs)
            assert len(body["items"]) == 50
            studio_only, _ = await timed(client, f"{V1}/gallery?limit=50&kind=image&q=aiko", runs)
            video, body = await timed(client, f"{V1}/gallery?limit=50&kind=video", runs)
            assert body["items"] == []
            search, body = await timed(client, f"{V1}/gallery?limit=50&q=cherry%20blossom%20sword", runs)
            assert body["items"], "the text search found nothing"
            rare, body = await timed(client, f"{V1}/gallery?limit=50&q=take%20{count // 2}", runs)
            assert [i["params"]["positive"].endswith(f"take {count // 2}") for i in body["items"]][:1] == [True]
            cursor = None
            for _ in range(count // 2 // 200):  # walk half way down with the largest pages
                body = await (await client.get(f"{V1}/gallery?limit=200" + (f"&cursor={cursor}" if cursor else ""))
                              ).json()
                cursor = body["next_cursor"]
            deep, _ = await timed(client, f"{V1}/gallery?limit=50&cursor={cursor}", runs)

            thumbs = studio.thumbnails if hasattr(studio, "thumbnails") else None
            thumb_line = "thumbnails: datasets/thumbnails.py is not in this checkout"
            if thumbs is not None:
                names = [f"ComfyUI_{i:05d}_.png" for i in range(1, min(count, 400)) if i % 10][:300]
                t = time.perf_counter()
                for name in names:
                    thumbs.for_output(name, 256)
                made = time.perf_counter() - t
                t = time.perf_counter()
                for name in names:
                    thumbs.for_output(name, 256)
                cached = time.perf_counter() - t
                thumb_line = (f"thumbnails (256 px WebP, one thread): {len(names) / made:.0f}/s made, "
                              f"{len(names) / cached:.0f}/s from the cache")

        print(f"\nGET /gallery, median of {runs} (through HTTP, index up to date, {count} items):")
        print(f"  first page (50), no filter:      {ms(first)}")
        print(f"  first page, LoRA filter:         {ms(lora)}")
        print(f"  first page, kind=video (none):   {ms(video)}")
        print(f"  text search, common words:       {ms(search)}")
        print(f"  text search, one item's words:   {ms(rare)}")
        print(f"  text search + kind:              {ms(studio_only)}")
        print(f"  a page half way down (cursor):   {ms(deep)}")
        print(f"old walk-and-sort first page:      {ms(old_median)}  (median of 3, in-process, no HTTP)")
        print(f"ratio old / indexed first page:    {old_median / first:.0f}x")
        print(thumb_line)
        goal = "met" if first < 0.1 else "NOT met"
        print(f"goal (first page < 100 ms at {count}): {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--database-url", default=None, help="default: SQLite in the temporary data folder")
    args = parser.parse_args()
    asyncio.run(run(args.count, args.runs, args.database_url))


if __name__ == "__main__":
    main()
