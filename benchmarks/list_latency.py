"""Latency of the review queue with 20,000 pending images (SQLite by default, or --database-url).

Fills a fresh database with N pending images of one character (records only), then times, in the
same run: GET /characters/{id}/images (first page, a page deep in the queue via the cursor, and a
filtered page) through a real aiohttp server, and as the baseline the bare SQL query for the same
page. Prints medians and the ratio API/SQL.

usage: python benchmarks/list_latency.py [--images 20000] [--runs 30] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from aiohttp.test_utils import TestClient, TestServer
from lora_studio.app import STUDIO_KEY, create_app
from lora_studio.core.db import utcnow
from lora_studio.core.schema import images
from lora_studio.core.settings import load_settings

V1 = "/lora-studio/v1"


def fill(studio, character_id: int, n: int) -> None:
    now = utcnow()
    project_id = studio.characters.get(character_id).project_id
    rows = [{"character_id": character_id, "project_id": project_id, "rel_path": f"p/c/images/img{i:06d}.png", "sha256": f"{i:064x}",
             "status": "pending", "caption": "aiko, 1girl" if i % 3 else "", "source": "upload" if i % 2 else "video",
             "width": 512, "height": 512, "meta": {"original_name": f"{i}.png", "format": "PNG"},
             "created_at": now, "updated_at": now, "phash": f"{i:016x}", "file_missing": False} for i in range(n)]
    with studio.db.begin() as conn:
        for start in range(0, n, 5000):
            conn.execute(images.insert(), rows[start:start + 5000])


async def timed(client, url: str, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        r = await client.get(url)
        assert r.status == 200, await r.text()
        await r.read()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def timed_sql(studio, character_id: int, cursor: int | None, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        q = (sa.select(images).where(images.c.character_id == character_id, images.c.status == "pending")
             .order_by(images.c.id).limit(51))
        if cursor:
            q = q.where(images.c.id > cursor)
        with studio.db.begin() as conn:
            conn.execute(q).all()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--database-url")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(cli={"data_dir": Path(tmp), "database_url": args.database_url}, env={})
        app = create_app(settings)
        async with TestClient(TestServer(app)) as client:
            p = await (await client.post(f"{V1}/projects", json={"name": "Bench"})).json()
            c = await (await client.post(f"{V1}/projects/{p['id']}/characters", json={"name": "Aiko"})).json()
            studio = app[STUDIO_KEY].get()
            t = time.perf_counter()
            fill(studio, c["id"], args.images)
            print(f"filled {args.images} pending image records in {time.perf_counter() - t:.1f} s "
                  f"({'postgresql' if studio.db.is_postgres else 'sqlite'})")
            deep = args.images * 9 // 10
            cases = [("first page", f"{V1}/characters/{c['id']}/images?limit=50", None),
                     ("page at 90%", f"{V1}/characters/{c['id']}/images?limit=50&cursor={deep}", deep),
                     ("filtered (video, no caption)",
                      f"{V1}/characters/{c['id']}/images?limit=50&source=video&has_caption=false", None)]
            for name, url, cursor in cases:
                api = await timed(client, url, args.runs)
                sql = timed_sql(studio, c["id"], cursor, args.runs)
                print(f"{name:30s} API {api * 1000:7.2f} ms   bare SQL {sql * 1000:6.2f} ms   ratio {api / sql:5.1f}")


if __name__ == "__main__":
    asyncio.run(main())
