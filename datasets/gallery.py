"""The ComfyUI output folder as a gallery: images newest first, paginated with a stable cursor."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InvalidInput, NotFound, Unavailable
from ..core.pagination import Page
from ..core.validation import parse_uint
from .layout import safe_join

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
SERVED_SUFFIXES = IMAGE_SUFFIXES | {".webm", ".mp4"}  # a generated video is served too (the Generate tab plays it)
MAX_PATH_CHARS = 4096


def _scan(root: Path) -> list[tuple[int, str, int]]:
    """(mtime, relative path, size) of the images below `root`; links that lead out of it are left
    out (`file` would refuse them anyway)."""
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


@dataclass(frozen=True)
class GalleryFile:
    """An image in ComfyUI's output folder."""

    path: str  # relative to the output folder, with "/"
    name: str
    subfolder: str
    size: int  # bytes
    mtime: float  # seconds since the epoch


class Gallery:
    def __init__(self, output_dir: Path | None):
        self.output_dir = output_dir

    def _root(self) -> Path:
        if self.output_dir is None:
            raise Unavailable("no ComfyUI output folder is configured (set LORA_STUDIO_COMFYUI_OUTPUT_DIR)")
        return self.output_dir

    def list(self, limit: int = 50, cursor: str | None = None) -> Page[GalleryFile]:
        """Newest first; the cursor is the (mtime, path) of the last item, so new files arriving
        between pages do not shift later pages."""
        key = None
        if cursor:
            mtime, sep, rel = cursor.partition(":")
            if not sep:
                raise InvalidInput("'cursor' is not valid")
            key = (parse_uint(mtime, "cursor", max_digits=20), rel)
        root = self._root()
        if not root.is_dir():
            return Page([], None)
        entries = sorted(_scan(root), key=lambda e: (e[0], e[1]), reverse=True)
        if key is not None:
            entries = [e for e in entries if (e[0], e[1]) < key]
        page = entries[:limit]
        items = [GalleryFile(path=rel, name=rel.rsplit("/", 1)[-1], subfolder=rel.rpartition("/")[0],
                             size=size, mtime=mtime / 1e9) for mtime, rel, size in page]
        nxt = f"{page[-1][0]}:{page[-1][1]}" if len(entries) > limit else None
        return Page(items, nxt)

    def file(self, rel_path: str) -> Path:
        if not rel_path:
            raise InvalidInput("'path' is required (a path from GET /gallery)")
        if len(rel_path) > MAX_PATH_CHARS:
            raise InvalidInput(f"'path' is longer than {MAX_PATH_CHARS} characters")
        path = safe_join(self._root(), rel_path)
        try:  # stat errors other than "not there" (a name too long for the file system) are bad input
            is_file = path.is_file()
        except OSError:
            raise InvalidInput("'path' cannot be read as a file name") from None
        if path.suffix.lower() not in SERVED_SUFFIXES or not is_file:
            raise NotFound("no such image or video in the output folder")
        return path
