"""ComfyUI's output folder: pages of images and their files."""

from __future__ import annotations

from ..core.validation import Field, parse_limit
from .api import Api, Req
from .files import file_response

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


LIMIT = Field(int, min=1, max=500, description="page size, 1-500 (default 50)")


@routes.route("GET", "/gallery", "Images in ComfyUI's output folder, newest first",
              query={"limit": LIMIT, "cursor": "from next_cursor"}, tag="gallery", response="GalleryPage")
async def gallery(r: Req):
    limit, cursor = parse_limit(r.q("limit")), r.q("cursor")
    return await r.call(lambda s: s.gallery.list(limit, cursor))


@routes.route("GET", "/gallery/file", "One image of the output folder",
              query={"path": Field(str, required=True, description="relative path from /gallery")},
              tag="gallery", binary=True, media="image/*", errors=(404,))
async def gallery_file(r: Req):
    rel = r.q("path") or ""
    path = await r.call(lambda s: s.gallery.file(rel))
    return file_response(path)
