"""Exports of one character at the same time: each request gets a zip of its own, nothing is left
behind (also when a client leaves mid-download), and a non-ASCII name survives the header."""

from __future__ import annotations

import asyncio
import io
import random
import zipfile
from urllib.parse import unquote

from PIL import Image
from support.api import V1, make_character, make_project, upload
from support.images import encode, image_bytes

CLIENTS, EACH = 8, 4


def random_png(seed: int, side: int) -> bytes:
    """Random pixels: a PNG that does not compress (side² × 3 bytes)."""
    return encode(Image.frombytes("RGB", (side, side), random.Random(seed).randbytes(side * side * 3)),
                  compress_level=1)


async def approved_character(client, name: str, files: list[tuple[str, bytes, str]]) -> dict:
    p = await make_project(client)
    c = await make_character(client, p["id"], name=name, trigger_word="aikotnk")
    created = (await upload(client, c["id"], *files, caption="aikotnk, 1girl"))["created"]
    r = await client.post(f"{V1}/images/decisions", json={"image_ids": [i["id"] for i in created], "decision": "approve"})
    assert r.status == 200, await r.text()
    return c


def left_over(settings) -> list[str]:
    folder = settings.data_dir / "exports"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


async def nothing_left(settings, timeout: float = 20.0) -> None:
    """The server removes a zip once it has sent it: just after the client has read the last byte."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while left_over(settings):
        assert loop.time() < deadline, f"left behind: {left_over(settings)}"
        await asyncio.sleep(0.02)


async def test_concurrent_exports_of_one_character(client, settings):
    files = [(f"{i}.png", image_bytes(size=(48, 48), seed=900 + i), "image/png") for i in range(3)]
    c = await approved_character(client, "Aïko 桜", files)

    async def one_client() -> list[tuple[int, str, dict[str, bytes]]]:
        got = []
        for _ in range(EACH):
            r = await client.get(f"{V1}/characters/{c['id']}/export")
            body = await r.read()
            if r.status != 200:
                got.append((r.status, body.decode(errors="replace"), {}))
                continue
            zf = zipfile.ZipFile(io.BytesIO(body))
            assert zf.testzip() is None
            got.append((200, r.headers["Content-Disposition"], {n: zf.read(n) for n in zf.namelist()}))
        return got

    results = [x for batch in await asyncio.gather(*(one_client() for _ in range(CLIENTS))) for x in batch]
    failures = [(status, text) for status, text, _ in results if status != 200]
    assert not failures, f"{len(failures)} of {len(results)} exports failed: {failures[:3]}"
    contents = [content for _, _, content in results]
    assert len(contents[0]) == 6 and all(content == contents[0] for content in contents)
    assert sorted(v for n, v in contents[0].items() if n.endswith(".png")) == sorted(f[1] for f in files)
    await nothing_left(settings)

    # the name: an ASCII fallback and the exact name (RFC 5987 / RFC 6266)
    disposition = results[0][1]
    disposition.encode("ascii")  # a header must be ASCII
    assert disposition.startswith('attachment; filename="moon-academy-aiko-_-')
    exact = disposition.split("filename*=UTF-8''", 1)[1]
    assert unquote(exact).startswith("moon-academy-aïko-桜-") and unquote(exact).endswith(".zip")


async def test_export_temp_file_removed_when_the_client_leaves(client, settings):
    """A zip larger than the socket buffers: the client reads a little and closes the connection."""
    files = [(f"{i}.png", random_png(700 + i, 1024), "image/png") for i in range(3)]  # ~9 MB of zip
    c = await approved_character(client, "Aiko", files)
    r = await client.get(f"{V1}/characters/{c['id']}/export")
    assert r.status == 200 and int(r.headers["Content-Length"]) > 8_000_000
    await r.content.readexactly(64 * 1024)
    assert len(left_over(settings)) == 1  # the request's own temporary zip, while it is being sent
    r.close()  # drops the connection mid-download
    await nothing_left(settings)
    r = await client.get(f"{V1}/characters/{c['id']}/export")  # the server still answers
    assert r.status == 200 and len(await r.read()) == int(r.headers["Content-Length"])
    await nothing_left(settings)
