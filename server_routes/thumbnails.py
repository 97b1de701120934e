"""Thumbnails (WebP, 256 or 512 px on the longest side) of dataset images and of ComfyUI's outputs, for
the review queue, the gallery and generation results:

    /lora-studio/v1/images/{image_id}/thumb?size=256
    /lora-studio/v1/gallery/thumb?path=<path from GET /gallery>&size=512

Each answer carries an ETag (the cache key: it changes when the source does) and a private day-long
Cache-Control; a request with a matching If-None-Match gets 304 without the thumbnail being read."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web

from ..core.errors import InvalidInput
from ..core.validation import Field
from .api import Api, Req

if TYPE_CHECKING:
    from ..datasets.thumbnails import Thumbnail
    from ..studio import Studio

T = TypeVar("T")

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


# datasets.thumbnails' SIZES (tests/integration/test_thumbnails.py holds them equal); not imported from there:
# declaring the routes at ComfyUI start-up must not import database code (tests/unit/test_comfyui_load.py)
SIZES = (256, 512)
CACHE_CONTROL = "private, max-age=86400"
MAX_ETAGS = 64  # If-None-Match entries looked at
# Thumbnails are drawn on threads of their own (created on first use): a grid asking for a screenful
# of them must not queue every other route's `Req.call` (the event loop's default pool) behind the decoding.
WORKERS = min(4, os.cpu_count() or 1)
_pool: ThreadPoolExecutor | None = None


async def off_loop(r: Req, fn: Callable[[Studio], T]) -> T:
    """`Req.call` on the thumbnail threads."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="lora-studio-thumbnails")
    loop = asyncio.get_running_loop()
    studio = await loop.run_in_executor(_pool, r.ref.get)
    return await loop.run_in_executor(_pool, lambda: fn(studio))

QUERY = {"size": Field(int, choices=SIZES, description="the longest side in pixels: 256 (default) or 512; "
                                                       "a smaller source is not enlarged"),
         "v": "ignored by the server: a version (e.g. the file's mtime) that gives a changed source a new URL, "
              "so a browser's cached copy is not reused"}


def parse_size(r: Req) -> int:
    value = r.q("size")
    if value in (None, ""):
        return SIZES[0]
    if value not in {str(s) for s in SIZES}:
        raise InvalidInput(f"'size' must be one of {', '.join(map(str, SIZES))}")
    return int(value)


def known_etags(r: Req) -> frozenset[str]:
    """The entity tags of If-None-Match, unquoted (weak ones too: a thumbnail is the same either way)."""
    header = r.request.headers.get("If-None-Match", "")
    tags = set()
    for part in header.split(",")[:MAX_ETAGS]:
        part = part.strip()
        if part.startswith("W/"):
            part = part[2:]
        if part:
            tags.add(part.strip('"'))
    return frozenset(tags)


def thumbnail_response(thumb: Thumbnail) -> web.Response:
    """The thumbnail as an answer: the WebP, or 304 when the client holds it already."""
    headers = {"ETag": f'"{thumb.etag}"', "Cache-Control": CACHE_CONTROL, "X-Content-Type-Options": "nosniff"}
    if thumb.data is None:
        return web.Response(status=304, headers=headers)
    return web.Response(body=thumb.data, content_type="image/webp", headers=headers)


@routes.route("GET", "/images/{image_id}/thumb", "A dataset image's thumbnail (WebP)", query=QUERY, tag="images",
              binary=True, media="image/webp")
async def image_thumb(r: Req):
    iid, size, known = r.int_param("image_id"), parse_size(r), known_etags(r)
    return thumbnail_response(await off_loop(r, lambda s: s.thumbnails.for_image(iid, size, known)))


@routes.route("GET", "/gallery/thumb", "The thumbnail (WebP) of an image or video in ComfyUI's output folder "
              "(a video's first frame)",
              query={"path": Field(str, required=True, description="relative path from /gallery"), **QUERY},
              tag="gallery", binary=True, media="image/webp", errors=(404,))
async def gallery_thumb(r: Req):
    rel, size, known = r.q("path") or "", parse_size(r), known_etags(r)
    return thumbnail_response(await off_loop(r, lambda s: s.thumbnails.for_output(rel, size, known)))
