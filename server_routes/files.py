"""Files the routes send (image files, gallery files, training samples): the Content-Type comes from
a small explicit map of the suffixes the studio serves, not from the platform's mimetypes database,
which differs between machines (Python 3.11's, and many /etc/mime.types, have no image/webp:
aiohttp then sends application/octet-stream)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

MEDIA_TYPES: dict[str, str] = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".zip": "application/zip",
}
FALLBACK = "application/octet-stream"
FILE_HEADERS = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}


def media_type(path: str | Path) -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower(), FALLBACK)


def file_response(path: Path, headers: Mapping[str, str] | None = None) -> web.FileResponse:
    """The file with its media type (nosniff: browsers take it as sent) and a private cache lifetime."""
    return web.FileResponse(path, headers={**FILE_HEADERS, **(headers or {}), "Content-Type": media_type(path)})
