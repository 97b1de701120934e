"""Streaming multipart uploads to disk in chunks: never a whole body in memory, which also keeps
uploads working inside ComfyUI (its server refuses bodies read at once above --max-upload-size)."""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from ..core.errors import InvalidInput, PayloadTooLarge
from ..datasets.layout import mkstemp_umask

CHUNK = 256 * 1024
MAX_FIELD_BYTES = 64 * 1024


async def stream_multipart(request: web.Request, staging: Path, max_file_bytes: int, max_files: int = 200,
                           file_field: str = "files") -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """Write each file part to a temporary file in `staging`; return (name, path) pairs and the
    text fields. On any error every temporary file written so far is removed."""
    if not request.content_type.startswith("multipart/"):
        raise InvalidInput("send the files as multipart/form-data")
    files: list[tuple[str, Path]] = []
    fields: dict[str, str] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.filename is None:
                value = await part.read(decode=True)
                if len(value) > MAX_FIELD_BYTES:
                    raise InvalidInput(f"form field '{part.name}' is too long")
                fields[part.name or ""] = value.decode("utf-8", errors="replace")
                continue
            if part.name != file_field:
                raise InvalidInput(f"file parts must be named '{file_field}'")
            if len(files) >= max_files:
                raise InvalidInput(f"at most {max_files} files per request")
            fd, tmp = mkstemp_umask(staging, prefix="upload-")
            files.append((part.filename, Path(tmp)))
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := await part.read_chunk(CHUNK):
                    size += len(chunk)
                    if size > max_file_bytes:
                        raise PayloadTooLarge(f"'{part.filename[:100]}' is larger than the "
                                              f"{max_file_bytes // (1024 * 1024)} MB limit")
                    out.write(chunk)
    except BaseException:
        for _, tmp in files:
            tmp.unlink(missing_ok=True)
        raise
    if not files:
        raise InvalidInput(f"no files were sent (use the form field '{file_field}')")
    return files, fields
