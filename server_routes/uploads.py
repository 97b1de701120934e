"""Streaming multipart uploads to disk in chunks: never a whole body in memory, which also keeps
uploads working inside ComfyUI (its server refuses bodies read at once above --max-upload-size)."""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from ..core.errors import InvalidInput, PayloadTooLarge
from ..core.validation import check_text
from ..datasets.layout import mkstemp_umask

CHUNK = 256 * 1024
MAX_FIELD_BYTES = 64 * 1024
MAX_FILENAME_CHARS = 1024


def check_filename(name: str) -> str:
    """A part's file name as sent: kept as the image's original name (in the job's payload and
    the database), so control characters (NUL, CR, LF…) and unencodable text are refused here; the
    name on disk is made from it later (`clean_stem`), never used as a path."""
    check_text("filename", name)
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidInput("the file name contains control characters (CR, LF, tab…)")
    if len(name) > MAX_FILENAME_CHARS:
        raise InvalidInput(f"the file name is longer than {MAX_FILENAME_CHARS} characters")
    return name


async def stream_multipart(request: web.Request, staging: Path, max_file_bytes: int, max_files: int = 200,
                           file_field: str = "files") -> tuple[list[tuple[str, Path]], dict[str, str]]:
    """Write each file part to a temporary file in `staging`; return (name, path) pairs and the
    text fields. On any error every temporary file written so far is removed."""
    if not request.content_type.startswith("multipart/"):
        raise InvalidInput("send the files as multipart/form-data")
    files: list[tuple[str, Path]] = []
    fields: dict[str, str] = {}
    try:
        await _read_parts(request, staging, max_file_bytes, max_files, file_field, files, fields)
    except (HttpProcessingError, ValueError, RuntimeError) as e:
        # a malformed body (bad part headers, an unknown transfer encoding, broken base64): the
        # client's fault; aiohttp's message names the part of the body it could not read
        for _, tmp in files:
            tmp.unlink(missing_ok=True)
        raise InvalidInput(f"the multipart body is malformed ({type(e).__name__})") from None
    except BaseException:
        for _, tmp in files:
            tmp.unlink(missing_ok=True)
        raise
    if not files:
        raise InvalidInput(f"no files were sent (use the form field '{file_field}')")
    return files, fields


async def _read_parts(request: web.Request, staging: Path, max_file_bytes: int, max_files: int, file_field: str,
                      files: list[tuple[str, Path]], fields: dict[str, str]) -> None:
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):  # a nested multipart/mixed part
            raise InvalidInput("nested multipart bodies are not accepted")
        if part.filename is None:
            if part.headers.get("Content-Encoding", "identity").lower() != "identity":  # no decompression bombs
                raise InvalidInput(f"form field '{part.name}' must not be compressed")
            value = bytearray()
            while chunk := await part.read_chunk(CHUNK):  # bounded: never a whole huge field in memory
                value += chunk
                if len(value) > MAX_FIELD_BYTES * 4:  # checked exactly once decoded, below
                    raise InvalidInput(f"form field '{part.name}' is too long")
            value = part.decode(bytes(value))
            if len(value) > MAX_FIELD_BYTES:
                raise InvalidInput(f"form field '{part.name}' is too long")
            fields[part.name or ""] = check_text(part.name or "field", value.decode("utf-8", errors="replace"))
            continue
        if part.name != file_field:
            raise InvalidInput(f"file parts must be named '{file_field}'")
        if len(files) >= max_files:
            raise InvalidInput(f"at most {max_files} files per request")
        check_filename(part.filename)
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
