"""Image records (`ImageRecord`, passed between services; JSON only at the routes and in job results), adding and
checking image files, search, caption edits and moves between characters and the unassigned pool."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..core.characters import CharacterService
from ..core.db import Database, iso, utcnow
from ..core.errors import Conflict, InvalidInput, NotFound, StudioError
from ..core.feedback import latest_rejections
from ..core.pagination import Page
from ..core.projects import ProjectService
from ..core.schema import images
from ..training.hashing import sha256_file
from .layout import DatasetLayout, atomic_write_bytes, clean_stem, place_new
from .phash import ImageHash, NearDuplicateIndex

log = logging.getLogger("lora_studio.datasets.images")

STATUSES = ("pending", "approved", "rejected")
FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
MAX_PIXELS = 64 * 1024 * 1024  # larger images are refused as possible decompression bombs
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageRecord:
    """An image record as the services pass it around (the API answers it as JSON: its fields, in order)."""
    id: int
    project_id: int
    character_id: int | None
    unassigned: bool  # in its project's unassigned pool (no character)
    rel_path: str  # below the dataset root
    sha256: str
    status: str  # pending | approved | rejected
    caption: str
    source: str  # upload, comfyui, comfyui_output, video, generation, reconcile
    width: int | None
    height: int | None
    metadata: dict
    created_at: str | None  # ISO 8601
    updated_at: str | None
    decided_at: str | None
    file_missing: bool
    suggestion: dict | None  # the classifier's {character_id, confidence}
    last_rejection: dict | None  # its latest rejection's {categories, note, ...}; None when never (or undone)


@dataclass(frozen=True)
class RejectedImage(ImageRecord):
    """A rejected image and the regenerations queued after it."""
    regeneration: list = field(default_factory=list)

    @classmethod
    def of(cls, image: ImageRecord, regeneration: list) -> RejectedImage:
        return cls(**{f.name: getattr(image, f.name) for f in fields(ImageRecord)}, regeneration=regeneration)


@dataclass(frozen=True)
class TrainingImage:
    """An approved image whose file exists, with its caption: what training and export read."""
    path: Path
    caption: str


@dataclass(frozen=True)
class AddedFiles:
    """What `add_files` did: the images it added, and the files it skipped ({"filename", "reason"}, as job
    results report them)."""
    created: list[ImageRecord]
    skipped: list[dict]


def image_record(row: Any, last_rejection: dict | None = None) -> ImageRecord:
    """An image record; `last_rejection` (see `image_records`): its latest rejection's categories and note."""
    return ImageRecord(
        id=row.id, project_id=row.project_id, character_id=row.character_id, unassigned=row.character_id is None,
        rel_path=row.rel_path, sha256=row.sha256, status=row.status, caption=row.caption, source=row.source,
        width=row.width, height=row.height, metadata=row.meta, created_at=iso(row.created_at),
        updated_at=iso(row.updated_at), decided_at=iso(row.decided_at), file_missing=bool(row.file_missing),
        suggestion=None if row.suggestion_confidence is None else {
            "character_id": row.suggested_character_id, "confidence": row.suggestion_confidence},
        last_rejection=last_rejection)


def image_records(conn: sa.Connection, rows: list[Any]) -> list[ImageRecord]:
    """Image records with their latest rejection (categories, note; None when never rejected, or
    when the rejection was undone): one query for all of them, however many."""
    rejections = latest_rejections(conn, [r.id for r in rows])
    return [image_record(r, rejections.get(r.id)) for r in rows]


def _parse_time(value: str, name: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"'{name}' must be an ISO 8601 date or time") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _move_with_caption(src: Path, dest: Path) -> list[tuple[Path, Path]]:
    """Move an image and its .txt caption (if any): both or neither. Returns the moves made."""
    moves = [(src, dest)]
    if src.with_suffix(".txt").exists():
        moves.append((src.with_suffix(".txt"), dest.with_suffix(".txt")))
    done: list[tuple[Path, Path]] = []
    try:
        for a, b in moves:
            os.replace(a, b)
            done.append((a, b))
    except OSError:
        _move_back(done)
        raise
    return done


def _move_back(done: list[tuple[Path, Path]]) -> None:
    for a, b in reversed(done):
        os.replace(b, a)


@dataclass(frozen=True)
class CheckedImage:
    format: str
    width: int
    height: int
    phash: int  # structure (dHash)
    rotated: bool  # the pixels were turned upright from the EXIF orientation (file rewritten)
    colour: bytes  # colour signature: near duplicates match in structure and colour

    @property
    def hash(self) -> ImageHash:
        return ImageHash(self.phash, self.colour)


def check_image(path: Path, fix_orientation: bool = False) -> CheckedImage:
    """Fully decode a PNG/JPEG/WebP (refusing anything else, truncated files and decompression
    bombs) and hash it. With `fix_orientation`, an image carrying an EXIF orientation is turned
    upright and rewritten in place: PNG and WebP losslessly, JPEG at quality 95 — trainers then see
    what a viewer shows. Every other file is kept byte for byte as it came."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            fmt, (w, h) = im.format, im.size
            if fmt not in FORMATS:
                raise InvalidInput(f"unsupported image format {fmt}; use PNG, JPEG or WebP")
            if w * h > MAX_PIXELS:  # checked before any pixel is decoded (Pillow's own guard is looser)
                raise InvalidInput(f"image is too large ({w}×{h} pixels)")
            im.load()  # decodes every pixel: truncated data fails here
            rotated = fix_orientation and im.getexif().get(EXIF_ORIENTATION, 1) not in (0, 1)
            upright = ImageOps.exif_transpose(im) if rotated else im
            if rotated:
                options = {"PNG": {}, "WEBP": {"lossless": True}, "JPEG": {"quality": 95}}[fmt]
                upright.save(path, format=fmt, **options)
            h = ImageHash.of(upright)
            return CheckedImage(fmt, *upright.size, h.structure, rotated, h.colour)
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise InvalidInput("not a readable image (or too large to decode safely)") from None
    except (OSError, SyntaxError, ValueError):
        raise InvalidInput("the image is damaged or truncated") from None


@dataclass(frozen=True)
class Target:
    """Where ingested images land: a character, or (character_id None) its project's unassigned pool."""
    project_id: int
    project_slug: str
    character_id: int | None
    character_slug: str | None

    def scope(self) -> Any:
        """Which images an exact/near duplicate is looked for among: the character's, or for the
        pool every image of the project (a frame any character already has is not new)."""
        if self.character_id is None:
            return images.c.project_id == self.project_id
        return images.c.character_id == self.character_id


@dataclass(frozen=True)
class ImageFilters:
    """Which images `ImageService.search` answers: of a character, a project or the whole studio."""
    character_id: int | None = None
    project_id: int | None = None
    unassigned: bool | None = None  # True: only the pool, False: only images with a character
    status: str | None = None  # None: all
    source: str | None = None
    since: str | None = None  # ISO 8601, created at or after
    until: str | None = None  # ISO 8601, created before
    has_caption: bool | None = None
    min_confidence: float | None = None  # the classifier's suggestion at least this sure
    order: str = "oldest"  # or "newest"


# called after each file with (done, total, created, skipped); may raise to stop (a cancelled job)
FileProgress = Callable[[int, int, list, list], None]


class ImageService:
    def __init__(self, db: Database, layout: DatasetLayout, near_duplicate_distance: int = 5):
        self.db = db
        self.layout = layout
        # dHash bits, and 2.5 ΔE of colour per bit (see phash.py); 0 turns the check off
        self.near_duplicate_distance = near_duplicate_distance

    def target(self, character_id: int | None = None, project_id: int | None = None) -> Target:
        """The character (404 if unknown), or with `character_id` None the project's pool."""
        with self.db.begin() as conn:
            if character_id is not None:
                char, project_slug = CharacterService.row_with_project(conn, character_id)
                return Target(char.project_id, project_slug, char.id, char.slug)
            if project_id is None:
                raise InvalidInput("give a character or a project")
            project = ProjectService._row(conn, project_id)
            return Target(project.id, project.slug, None, None)

    def add_files(self, character_id: int | None, files: list[tuple[str, Path] | tuple[str, Path, dict]],
                  caption: str = "", source: str = "upload", meta: dict | None = None, *,
                  project_id: int | None = None, on_file: FileProgress | None = None) -> AddedFiles:
        """Adopt staged files (original name, temporary path[, own metadata]) as pending images of
        a character, or (character_id None, project_id given) of the project's unassigned pool.
        Files are stored as they came (see `check_image` for the one exception: EXIF rotation).
        Each temporary file is consumed: moved into the dataset or deleted, also when `on_file`
        raises to stop early (the files placed so far stay as pending images). Bad, duplicate and
        near-duplicate files are reported, not fatal."""
        created: list[ImageRecord] = []
        skipped: list[dict] = []
        try:
            target = self.target(character_id, project_id)
            folder = self.layout.images_dir(target.project_slug, target.character_slug)
            near = self._near_index(target)
            for n, (name, tmp, *own) in enumerate(files, 1):
                try:
                    file_meta = {**(meta or {}), **(own[0] if own else {})}
                    image = self._adopt(target, folder, name, tmp, caption, source, file_meta, near)
                    created.append(image)
                except InvalidInput as e:
                    skipped.append({"filename": name, "reason": e.message})
                if on_file:
                    on_file(n, len(files), created, skipped)
        finally:
            for _, tmp, *_own in files:
                tmp.unlink(missing_ok=True)
        return AddedFiles(created, skipped)

    def _adopt(self, target: Target, folder: Path, name: str, tmp: Path, caption: str, source: str,
               meta: dict, near: NearDuplicateIndex[int]) -> ImageRecord:
        checked = check_image(tmp, fix_orientation=True)
        fmt, width, height = checked.format, checked.width, checked.height
        digest = sha256_file(tmp)
        with self.db.begin() as conn:
            dup = conn.execute(sa.select(images.c.id).where(target.scope(), images.c.sha256 == digest)).first()
        if dup:
            raise InvalidInput(f"exact duplicate of image {dup.id}")
        if self.near_duplicate_distance and (match := near.find(checked.hash)) is not None:
            raise InvalidInput(f"near duplicate of image {match.key} (perceptual hash distance "
                               f"{match.bits}, colour difference {match.colour:.1f})")
        folder.mkdir(parents=True, exist_ok=True)
        dest = folder / f"{clean_stem(name)}-{digest[:10]}{FORMATS[fmt]}"
        caption_path = dest.with_suffix(".txt")
        try:
            place_new(tmp, dest)
        except FileExistsError:
            raise InvalidInput("exact duplicate of an image being added at the same time") from None
        values = dict(character_id=target.character_id, project_id=target.project_id,
                      rel_path=self.layout.rel_path(dest), sha256=digest,
                      status="pending", caption=caption, source=source, width=width, height=height,
                      phash=checked.hash.structure_hex, colour_hash=checked.hash.colour_hex,
                      meta={"original_name": name[:200], "format": fmt, "exif_rotated": checked.rotated, **meta})
        try:
            atomic_write_bytes(caption_path, caption.encode("utf-8"))
            now = utcnow()
            try:
                with self.db.begin() as conn:
                    image_id = conn.execute(images.insert().values(
                        created_at=now, updated_at=now, **values)).inserted_primary_key[0]
            except sa.exc.IntegrityError:
                # A reconcile that ran meanwhile adopted this very file: the record is ours to complete.
                image_id = self._complete_adopted(values)
        except BaseException:  # no file without its record
            dest.unlink(missing_ok=True)
            caption_path.unlink(missing_ok=True)
            raise
        near.put(checked.hash, image_id)
        return self.get(image_id)

    def _near_index(self, target: Target) -> NearDuplicateIndex[int]:
        """The target's recorded hashes, keyed by image id. Images hashed before colour signatures
        existed are hashed again from their file the first time an upload comes close to them
        (stored then, see NearDuplicateIndex); one whose file cannot be read matches nothing."""
        near: NearDuplicateIndex[int] = NearDuplicateIndex(self.near_duplicate_distance, self._rehash)
        if not self.near_duplicate_distance:
            return near
        with self.db.begin() as conn:
            for r in conn.execute(sa.select(images.c.id, images.c.phash, images.c.colour_hash).where(
                    target.scope(), images.c.phash.is_not(None)).order_by(images.c.id)):
                near.put(ImageHash.from_hex(r.phash, r.colour_hash), r.id)
        return near

    def _rehash(self, image_id: int) -> ImageHash | None:
        with self.db.begin() as conn:
            row = conn.execute(sa.select(images.c.rel_path, images.c.phash, images.c.colour_hash).where(
                images.c.id == image_id)).first()
        if row is None:
            return None
        if row.colour_hash and row.phash:  # another upload did it meanwhile
            return ImageHash.from_hex(row.phash, row.colour_hash)
        try:  # the file as stored (an upload's was turned upright, a reconciled one is as found)
            h = check_image(self.layout.abs_path(row.rel_path)).hash
        except InvalidInput as e:  # missing (flagged), damaged
            log.info("image %d cannot be hashed again (%s): not compared", image_id, e.message)
            return None
        with self.db.begin() as conn:
            conn.execute(images.update().where(images.c.id == image_id, images.c.colour_hash.is_(None))
                         .values(phash=h.structure_hex, colour_hash=h.colour_hex))
        return h

    def _complete_adopted(self, values: dict) -> int:
        with self.db.begin() as conn:
            row = conn.execute(sa.select(images.c.id, images.c.sha256, images.c.source).where(
                images.c.rel_path == values["rel_path"])).first()
            if row is None or row.sha256 != values["sha256"] or row.source != "reconcile":
                raise InvalidInput("another image was stored under the same name at the same time")
            conn.execute(images.update().where(images.c.id == row.id).values(updated_at=utcnow(), **values))
        return row.id

    def list(self, character_id: int, status: str | None = "pending", limit: int = 50,
             cursor: int | None = None) -> Page[ImageRecord]:
        """A character's review queue, oldest first."""
        return self.search(ImageFilters(character_id=character_id, status=status), limit, cursor)

    def search(self, filters: ImageFilters, limit: int = 50, cursor: int | None = None) -> Page[ImageRecord]:
        """Images of a character, a project or the whole studio, filtered and paginated by id."""
        status, order = filters.status, filters.order or "oldest"
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, or all")
        if order not in ("oldest", "newest"):
            raise InvalidInput("order must be oldest or newest")
        newest = order == "newest"
        q = sa.select(images).order_by(images.c.id.desc() if newest else images.c.id).limit(limit + 1)
        if status:
            q = q.where(images.c.status == status)
        if filters.source:
            q = q.where(images.c.source == filters.source)
        for name, op in (("since", "__ge__"), ("until", "__lt__")):
            if getattr(filters, name):
                q = q.where(getattr(images.c.created_at, op)(_parse_time(getattr(filters, name), name)))
        if filters.min_confidence is not None:
            q = q.where(images.c.suggestion_confidence >= filters.min_confidence)
        if filters.unassigned is not None:
            q = q.where(images.c.character_id.is_(None) if filters.unassigned else images.c.character_id.is_not(None))
        if filters.has_caption is not None:
            q = q.where(images.c.caption != "" if filters.has_caption else images.c.caption == "")
        if cursor is not None:
            q = q.where(images.c.id < cursor if newest else images.c.id > cursor)
        with self.db.begin() as conn:
            if filters.character_id is not None:
                CharacterService.row_with_project(conn, filters.character_id)
                q = q.where(images.c.character_id == filters.character_id)
            if filters.project_id is not None:
                ProjectService._row(conn, filters.project_id)
                q = q.where(images.c.project_id == filters.project_id)
            rows = conn.execute(q).all()
            items = image_records(conn, rows[:limit])
        return Page(items, str(items[-1].id) if len(rows) > limit else None)

    def update(self, image_id: int, *, caption: str | None = None) -> ImageRecord:
        """Edit the caption (None: unchanged): the .txt beside the image and the record change together."""
        if caption is None:
            return self.get(image_id)
        with self.db.begin() as conn:
            row = self._row(conn, image_id)
            conn.execute(images.update().where(images.c.id == image_id).values(caption=caption, updated_at=utcnow()))
            # written inside the transaction: if the file cannot be written, the record rolls back
            atomic_write_bytes(self.layout.abs_path(row.rel_path).with_suffix(".txt"), caption.encode("utf-8"))
        return self.get(image_id)

    def reassign(self, image_id: int, *, character_id: int | None = None, unassigned: bool = False) -> ImageRecord:
        """Move an image (file, caption and record together) to another character (`character_id`),
        or back to its project's unassigned pool (`unassigned`): one of the two."""
        if (character_id is not None) == unassigned:
            raise InvalidInput("give either 'character_id' or 'unassigned': true")
        with self.db.begin() as conn:
            row = self._row(conn, image_id)
        if unassigned:
            to = self.target(None, row.project_id)
        else:
            to = self.target(character_id)
        if row.character_id == to.character_id and row.project_id == to.project_id:
            return self.get(image_id)
        self._move(image_id, to)
        return self.get(image_id)

    def release_character(self, character_id: int) -> list[int]:
        """Move every image of a character (files, captions and records, statuses kept) into its project's
        unassigned pool, so that deleting the character loses no image. A file name the pool already has gets
        the image id appended. One image at a time: a crash half-way leaves each image whole, in one place."""
        pool = self.target(None, self.target(character_id).project_id)  # 404 for an unknown character
        with self.db.begin() as conn:
            ids = list(conn.execute(sa.select(images.c.id).where(images.c.character_id == character_id)
                                    .order_by(images.c.id)).scalars())
        for image_id in ids:
            self._move(image_id, pool, rename_on_clash=True)
        return ids

    def _move(self, image_id: int, to: Target, *, rename_on_clash: bool = False) -> None:
        """Move the record and the files together. The files move while the image's row is locked (on
        SQLite: while the write lock is held), so two moves of one image queue instead of racing for its
        files; a file move that fails rolls the record back, a commit that fails moves the files back."""
        moved: list[tuple[Path, Path]] = []
        try:
            with self.db.begin() as conn:
                row = self._row(conn, image_id, lock=self.db.is_postgres)
                if row.character_id == to.character_id and row.project_id == to.project_id:
                    return  # another request moved it there meanwhile
                if to.character_id is not None:  # the pool may hold a copy a character has: it is sorted later
                    dup = conn.execute(sa.select(images.c.id).where(to.scope(), images.c.sha256 == row.sha256,
                                                                    images.c.id != image_id)).first()
                    if dup:
                        raise Conflict(f"the character already has this image (image {dup.id})")
                src = self.layout.abs_path(row.rel_path)
                dest = self.layout.images_dir(to.project_slug, to.character_slug) / src.name
                if dest.exists() and rename_on_clash:
                    dest = dest.with_name(f"{src.stem}-{image_id}{src.suffix}")
                if dest.exists():
                    raise Conflict(f"a file named {dest.name} already exists in the target folder")
                dest.parent.mkdir(parents=True, exist_ok=True)
                conn.execute(images.update().where(images.c.id == image_id).values(
                    character_id=to.character_id, project_id=to.project_id, rel_path=self.layout.rel_path(dest),
                    updated_at=utcnow()))
                if src.exists():
                    try:
                        moved = _move_with_caption(src, dest)
                    except OSError as e:
                        raise StudioError(f"could not move the image's files: {e.strerror}", status=500) from None
                else:  # the record moves (a reconcile marks a missing file); the caption follows
                    try:
                        if src.with_suffix(".txt").exists():
                            os.replace(src.with_suffix(".txt"), dest.with_suffix(".txt"))
                            moved = [(src.with_suffix(".txt"), dest.with_suffix(".txt"))]
                    except OSError as e:
                        log.warning("could not move the caption of image %d: %s", image_id, e)
        except sa.exc.IntegrityError:  # the target character was deleted meanwhile
            _move_back(moved)
            raise Conflict(f"the target of image {image_id} no longer exists; nothing was moved") from None
        except BaseException:
            _move_back(moved)
            raise

    def get(self, image_id: int) -> ImageRecord:
        with self.db.begin() as conn:
            return image_records(conn, [self._row(conn, image_id)])[0]

    def file_path(self, image_id: int) -> Path:
        path = self.layout.abs_path(self.get(image_id).rel_path)
        if not path.is_file():
            raise NotFound(f"the file of image {image_id} is missing")
        return path

    def approved_items(self, character_id: int) -> list[TrainingImage]:
        """Absolute paths and captions of the approved images whose files exist."""
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(images.c.rel_path, images.c.caption).where(
                images.c.character_id == character_id, images.c.status == "approved").order_by(images.c.id)).all()
        items = [TrainingImage(self.layout.abs_path(r.rel_path), r.caption) for r in rows]
        return [i for i in items if i.path.is_file()]

    @staticmethod
    def _row(conn: sa.Connection, image_id: int, lock: bool = False) -> Any:
        q = sa.select(images).where(images.c.id == image_id)
        row = conn.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise NotFound(f"image {image_id} does not exist")
        return row
