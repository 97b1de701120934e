"""Image records and the approval state machine (pending → approved | rejected)."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..core.characters import CharacterService
from ..core.db import Database, iso, utcnow
from ..core.errors import InvalidInput, NotFound
from ..core.schema import images
from .layout import DatasetLayout, atomic_write_bytes, clean_stem

log = logging.getLogger("lora_studio.datasets.images")

STATUSES = ("pending", "approved", "rejected")
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
MAX_PIXELS = 64 * 1024 * 1024  # larger images are refused as possible decompression bombs



def image_dict(row: Any) -> dict:
    return {"id": row.id, "character_id": row.character_id, "rel_path": row.rel_path, "sha256": row.sha256,
            "status": row.status, "caption": row.caption, "source": row.source, "width": row.width,
            "height": row.height, "metadata": row.meta, "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at), "decided_at": iso(row.decided_at)}


def inspect_image(path: Path) -> tuple[str, int, int]:
    """(format, width, height) of a fully decodable PNG/JPEG/WebP; refuses anything else,
    truncated files and decompression bombs."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            fmt, (w, h) = im.format, im.size
            if fmt not in FORMATS:
                raise InvalidInput(f"unsupported image format {fmt}; use PNG, JPEG or WebP")
            if w * h > MAX_PIXELS:  # checked before any pixel is decoded (Pillow's own guard is looser)
                raise InvalidInput(f"image is too large ({w}×{h} pixels)")
            im.load()  # decodes every pixel: truncated data fails here
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise InvalidInput("not a readable image (or too large to decode safely)") from None
    except (OSError, SyntaxError, ValueError):
        raise InvalidInput("the image is damaged or truncated") from None
    return fmt, w, h


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ImageService:
    def __init__(self, db: Database, layout: DatasetLayout):
        self.db = db
        self.layout = layout

    def add_files(self, character_id: int, files: list[tuple[str, Path]], caption: str = "",
                  source: str = "upload", meta: dict | None = None) -> dict:
        """Adopt staged files (original name, temporary path) as pending images of a character.
        Files are stored as they came (lossless, no re-encoding). Each temporary file is consumed:
        moved into the dataset or deleted. Bad or duplicate files are reported, not fatal."""
        created, skipped = [], []
        try:
            with self.db.begin() as conn:
                char, project_slug = CharacterService.row_with_project(conn, character_id)
            folder = self.layout.images_dir(project_slug, char.slug)
            for name, tmp in files:
                try:
                    created.append(self._adopt(char.id, folder, name, tmp, caption, source, meta or {}))
                except InvalidInput as e:
                    skipped.append({"filename": name, "reason": e.message})
        finally:
            for _, tmp in files:
                tmp.unlink(missing_ok=True)
        return {"created": created, "skipped": skipped}

    def _adopt(self, character_id: int, folder: Path, name: str, tmp: Path, caption: str, source: str,
               meta: dict) -> dict:
        fmt, width, height = inspect_image(tmp)
        digest = sha256_of(tmp)
        with self.db.begin() as conn:
            dup = conn.execute(sa.select(images.c.id).where(images.c.character_id == character_id,
                                                            images.c.sha256 == digest)).first()
        if dup:
            raise InvalidInput(f"exact duplicate of image {dup.id}")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{clean_stem(name)}-{digest[:10]}{FORMATS[fmt]}"
        caption_path = target.with_suffix(".txt")
        os.replace(tmp, target)
        try:
            atomic_write_bytes(caption_path, caption.encode("utf-8"))
            now = utcnow()
            with self.db.begin() as conn:
                image_id = conn.execute(images.insert().values(
                    character_id=character_id, rel_path=self.layout.rel_path(target), sha256=digest,
                    status="pending", caption=caption, source=source, width=width, height=height,
                    meta={"original_name": name[:200], "format": fmt, **meta},
                    created_at=now, updated_at=now)).inserted_primary_key[0]
        except BaseException:  # no file without its record
            target.unlink(missing_ok=True)
            caption_path.unlink(missing_ok=True)
            raise
        return self.get(image_id)

    def list(self, character_id: int, status: str | None = "pending", limit: int = 50,
             cursor: int | None = None) -> dict:
        """Oldest first (a review queue), paginated by id."""
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
        q = sa.select(images).where(images.c.character_id == character_id).order_by(images.c.id).limit(limit + 1)
        if status:
            q = q.where(images.c.status == status)
        if cursor is not None:
            q = q.where(images.c.id > cursor)
        with self.db.begin() as conn:
            CharacterService.row_with_project(conn, character_id)
            rows = conn.execute(q).all()
        items = [image_dict(r) for r in rows[:limit]]
        return {"items": items, "next_cursor": str(items[-1]["id"]) if len(rows) > limit else None}

    def get(self, image_id: int) -> dict:
        with self.db.begin() as conn:
            return image_dict(self._row(conn, image_id))

    def file_path(self, image_id: int) -> Path:
        path = self.layout.abs_path(self.get(image_id)["rel_path"])
        if not path.is_file():
            raise NotFound(f"the file of image {image_id} is missing")
        return path

    def approved_items(self, character_id: int) -> list[dict]:
        """Absolute paths and captions of the approved images whose files exist."""
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(images.c.rel_path, images.c.caption).where(
                images.c.character_id == character_id, images.c.status == "approved").order_by(images.c.id)).all()
        items = [{"image": str(self.layout.abs_path(r.rel_path)), "caption": r.caption} for r in rows]
        return [i for i in items if Path(i["image"]).is_file()]

    @staticmethod
    def _row(conn: sa.Connection, image_id: int) -> Any:
        row = conn.execute(sa.select(images).where(images.c.id == image_id)).first()
        if row is None:
            raise NotFound(f"image {image_id} does not exist")
        return row
