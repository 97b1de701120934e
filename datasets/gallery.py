"""The ComfyUI output folder as a gallery: pages from the index (gallery_index.py), newest first with a
stable cursor, filtered by character, project, kind, time, LoRA and text; and what a person does with an
output: favourite it, send it to a character's dataset, move it to the trash inside the output folder
(restorable until the trash is emptied). Every path is confined to the output folder."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

from ..core.errors import Conflict, InvalidInput, NotFound, Unavailable
from ..core.pagination import Page, decode_cursor, encode_cursor
from ..core.schema import gallery_item_loras, gallery_items
from .comfy_meta import MEDIA_TYPES, PARAM_KEYS, empty_params
from .gallery_index import FTS, TRASH_DIR, GalleryIndex
from .layout import place_new, safe_join

SERVED_SUFFIXES = set(MEDIA_TYPES)  # images and videos (the Generate tab plays a generated video)
MAX_PATH_CHARS = 4096
KINDS = ("image", "video")
MAX_SEARCH_WORDS = 8
THUMB_SIZE = 256


@dataclass(frozen=True)
class GalleryItem:
    """An image or video of ComfyUI's output folder, as indexed (the API answers its fields in order)."""

    id: int
    path: str  # where the file is now, relative to the output folder, with "/" (in the trash: below TRASH_DIR)
    name: str
    subfolder: str
    kind: str  # image | video (animated WebP/PNG/GIF count as video)
    media_type: str  # what GET /gallery/file sends it as
    size: int  # bytes
    width: int | None
    height: int | None
    mtime: float  # seconds since the epoch
    favourite: bool
    trashed: bool
    original_path: str | None  # a trashed file's place to go back to (restore)
    params: dict  # positive, negative, seed, sampler, scheduler, steps, cfg, checkpoint, loras (null: unknown)
    generation_id: int | None  # the studio generation that made it
    character_id: int | None
    project_id: int | None
    thumb_url: str  # below the API prefix


@dataclass(frozen=True)
class GalleryFilters:
    character_id: int | None = None
    project_id: int | None = None
    kind: str | None = None  # image | video
    since: str | None = None  # ISO 8601: modified at or after
    until: str | None = None  # ISO 8601: modified before
    lora: str | None = None  # a LoRA the graph loaded (its name as the graph has it)
    q: str | None = None  # words in the name or the prompts (each a prefix)
    favourite: bool | None = None
    trashed: bool = False


def item_of(row) -> GalleryItem:
    params = empty_params()
    stored = row.params if isinstance(row.params, dict) else {}
    params.update({k: stored.get(k) for k in PARAM_KEYS if k in stored})
    params["positive"], params["negative"] = row.positive, row.negative
    params["loras"] = [lora for lora in params.get("loras") or [] if isinstance(lora, dict)]
    return GalleryItem(
        id=row.id, path=row.path, name=row.name, subfolder=row.subfolder, kind=row.kind, media_type=row.media_type,
        size=row.size, width=row.width, height=row.height, mtime=row.mtime_ns / 1e9, favourite=bool(row.favourite),
        trashed=bool(row.trashed), original_path=row.original_path, params=params, generation_id=row.generation_id,
        character_id=row.character_id, project_id=row.project_id,
        thumb_url=f"/gallery/thumb?path={quote(row.path, safe='')}&size={THUMB_SIZE}")


def _time_ns(value: str, name: str) -> int:
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"'{name}' must be an ISO 8601 date or time") from None
    t = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    try:
        return int(t.timestamp() * 1e9)
    except (OverflowError, OSError, ValueError):
        raise InvalidInput(f"'{name}' is out of range") from None


def search_words(text: str) -> list[str]:
    """The words of a search (letters and digits; '_' and punctuation separate, as both databases' parsers do)."""
    words = [w.lower() for w in re.findall(r"[^\W_]+", text)][:MAX_SEARCH_WORDS]
    if not words:
        raise InvalidInput("'q' has no word to search for (letters or digits)")
    return [w[:64] for w in words]


class Gallery:
    def __init__(self, output_dir: Path | None, index: GalleryIndex | None = None, *, images=None, layout=None,
                 jobs=None):
        self.output_dir = output_dir
        self.index = index
        self.images, self.layout, self.jobs = images, layout, jobs
        if jobs is not None and index is not None:
            jobs.register("gallery_index", self._run_index)

    def _root(self) -> Path:
        if self.output_dir is None:
            raise Unavailable("no ComfyUI output folder is configured (set LORA_STUDIO_COMFYUI_OUTPUT_DIR)")
        return self.output_dir

    def _index(self) -> GalleryIndex:
        self._root()
        if self.index is None:
            raise Unavailable("the gallery index is not running")
        return self.index

    # -- pages -----------------------------------------------------------------------------------
    def list(self, limit: int = 50, cursor: str | None = None, filters: GalleryFilters | None = None
             ) -> Page[GalleryItem]:
        """Newest first (mtime, then id); the cursor is the (mtime, id) of the last item, so files arriving
        between pages do not shift later pages. A first page brings the index up to date first."""
        f = filters or GalleryFilters()
        key = decode_cursor(cursor, (int, int))
        if not self._root().is_dir() or self.index is None:  # no index: a Gallery for file access only
            return Page([], None)
        index = self.index
        if key is None:
            index.refresh()
        t = gallery_items
        q = sa.select(t).where(t.c.root == index.root, t.c.trashed == f.trashed)
        if f.character_id is not None:
            q = q.where(t.c.character_id == f.character_id)
        if f.project_id is not None:
            q = q.where(t.c.project_id == f.project_id)
        if f.kind is not None:
            if f.kind not in KINDS:
                raise InvalidInput("'kind' must be image or video")
            q = q.where(t.c.kind == f.kind)
        if f.favourite is not None:
            q = q.where(t.c.favourite == f.favourite)
        if f.since:
            q = q.where(t.c.mtime_ns >= _time_ns(f.since, "since"))
        if f.until:
            q = q.where(t.c.mtime_ns < _time_ns(f.until, "until"))
        if f.lora:
            q = q.where(sa.exists().where(gallery_item_loras.c.item_id == t.c.id, gallery_item_loras.c.name == f.lora))
        if f.q:
            q = q.where(self._search(search_words(f.q)))
        if key is not None:
            q = q.where(sa.tuple_(t.c.mtime_ns, t.c.id) < sa.tuple_(sa.literal(key[0]), sa.literal(key[1])))
        q = q.order_by(t.c.mtime_ns.desc(), t.c.id.desc()).limit(limit + 1)
        with index.db.begin() as conn:
            rows = conn.execute(q).all()
        items = [item_of(r) for r in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        return Page(items, encode_cursor(last.mtime_ns, last.id) if last is not None else None)

    def _search(self, words: list[str]) -> sa.ColumnElement[bool]:
        t = gallery_items
        index = self._index()
        index.ensure_search()
        if index.db.is_postgres:
            return sa.text("to_tsvector('simple', coalesce(gallery_items.name, '') || ' ' || "
                           "coalesce(gallery_items.positive, '') || ' ' || coalesce(gallery_items.negative, '')) "
                           "@@ to_tsquery('simple', :gallery_query)").bindparams(
                gallery_query=" & ".join(f"{w}:*" for w in words))
        if index.fts:
            match = " AND ".join(f'"{w}"*' for w in words)
            return t.c.id.in_(sa.select(sa.column("rowid")).select_from(sa.table(FTS))
                              .where(sa.text(f"{FTS} MATCH :gallery_match").bindparams(gallery_match=match)))
        clauses = []
        for w in words:  # no FTS5 in this SQLite: substrings
            pattern = f"%{w}%"
            clauses.append(sa.or_(t.c.name.ilike(pattern), t.c.positive.ilike(pattern), t.c.negative.ilike(pattern)))
        return sa.and_(*clauses)

    def get(self, item_id: int) -> GalleryItem:
        return item_of(self._row(item_id))

    def _row(self, item_id: int):
        index = self._index()
        with index.db.begin() as conn:
            row = conn.execute(sa.select(gallery_items).where(gallery_items.c.id == item_id,
                                                              gallery_items.c.root == index.root)).first()
        if row is None:
            raise NotFound(f"gallery item {item_id} does not exist")
        return row

    def loras(self) -> list[dict]:
        """The LoRAs the indexed outputs loaded, with how many items each (the LoRA filter's choices)."""
        index = self._index()
        q = (sa.select(gallery_item_loras.c.name, sa.func.count().label("count"))
             .join(gallery_items, gallery_items.c.id == gallery_item_loras.c.item_id)
             .where(gallery_items.c.root == index.root, gallery_items.c.trashed == False)  # noqa: E712
             .group_by(gallery_item_loras.c.name).order_by(gallery_item_loras.c.name).limit(1000))
        with index.db.begin() as conn:
            return [{"name": r.name, "count": r.count} for r in conn.execute(q).all()]

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

    # -- actions ---------------------------------------------------------------------------------
    def set_favourite(self, item_id: int, favourite: bool) -> GalleryItem:
        self._row(item_id)
        with self._index().db.begin() as conn:
            conn.execute(gallery_items.update().where(gallery_items.c.id == item_id).values(favourite=favourite))
        return self.get(item_id)

    def _lexical(self, rel: str) -> Path:
        """root/rel without following a link at its end (a link is moved, never its target); the folder it
        is in must resolve inside the output folder."""
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts) or "\x00" in rel:
            raise InvalidInput("the item's path is not a plain relative path")
        root = self._root().resolve()
        parent = safe_join(root, *parts[:-1]) if len(parts) > 1 else root
        return parent / parts[-1]

    def _trash_dir(self) -> Path:
        trash = self._root().resolve() / TRASH_DIR
        if trash.is_symlink() or (trash.exists() and not trash.is_dir()):
            raise Conflict(f"{TRASH_DIR} in the output folder is not a folder of the studio's; move it away")
        return trash

    def trash(self, item_id: int) -> GalleryItem:
        """Move the file to <output>/.lora_studio_trash/<id>/<its path>; the item stays listed as trashed."""
        row = self._row(item_id)
        if row.trashed:
            raise Conflict("the item is in the trash already")
        src = self._lexical(row.path)
        if not os.path.lexists(src) or src.is_dir():
            raise NotFound("the file is not in the output folder any more")
        trash_rel = f"{TRASH_DIR}/{row.id}/{row.path}"
        trash = self._trash_dir()
        trash.mkdir(exist_ok=True)
        folder = trash
        for part in [str(row.id), *row.path.split("/")[:-1]]:  # made one by one: never through a planted link
            folder = folder / part
            if folder.is_symlink() or (os.path.lexists(folder) and not folder.is_dir()):
                raise Conflict(f"{folder.relative_to(trash.parent).as_posix()[:200]} is in the way in the trash")
            folder.mkdir(exist_ok=True)
        dest = folder / row.name
        if os.path.lexists(dest):
            raise Conflict("the trash already holds a file of that name for this item")
        _move(src, dest)
        try:
            with self._index().db.begin() as conn:
                conn.execute(gallery_items.update().where(gallery_items.c.id == row.id).values(
                    path=trash_rel, original_path=row.path, trashed=True))
        except BaseException:
            _move(dest, src)
            raise
        self._index().moved(row.path)
        return self.get(item_id)

    def restore(self, item_id: int) -> GalleryItem:
        """Move a trashed file back to where it was (refused while another file has its name)."""
        row = self._row(item_id)
        if not row.trashed or not row.original_path:
            raise Conflict("the item is not in the trash")
        src = self._lexical(row.path)
        dest = self._lexical(row.original_path)
        if not os.path.lexists(src):
            raise NotFound("the file is not in the trash any more (emptied or removed)")
        if os.path.lexists(dest):
            raise Conflict(f"another file is at {row.original_path[:200]} now; move it away first")
        dest.parent.mkdir(parents=True, exist_ok=True)
        safe_join(self._root(), row.original_path.rpartition("/")[0] or ".")  # still inside after mkdir
        try:
            place_new(src, dest)
        except FileExistsError:
            raise Conflict(f"another file is at {row.original_path[:200]} now; move it away first") from None
        folder, _, name = row.original_path.rpartition("/")
        try:
            with self._index().db.begin() as conn:
                conn.execute(gallery_items.update().where(gallery_items.c.id == row.id).values(
                    path=row.original_path, original_path=None, trashed=False, name=name, subfolder=folder))
        except BaseException:
            _move(dest, src)
            raise
        self._prune(src.parent)
        self._index().moved(row.original_path)
        return self.get(item_id)

    def empty_trash(self) -> dict:
        """Delete every trashed file of this output folder for good; {"deleted": how many}."""
        index = self._index()
        trash = self._trash_dir()
        with index.db.begin() as conn:
            rows = conn.execute(sa.select(gallery_items.c.id, gallery_items.c.path).where(
                gallery_items.c.root == index.root, gallery_items.c.trashed == True)).all()  # noqa: E712
        deleted = 0
        for row in rows:
            path = self._lexical(row.path)
            if not path.is_relative_to(trash):
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                continue  # still there (a folder in its place, no permission): the row stays
            with index.db.begin() as conn:
                deleted += conn.execute(gallery_items.delete().where(gallery_items.c.id == row.id,
                                                                     gallery_items.c.trashed == True)).rowcount  # noqa: E712
            self._prune(path.parent)
        return {"deleted": deleted}

    def _prune(self, folder: Path) -> None:
        """Remove empty folders inside the trash, up to (not including) the trash folder."""
        trash = self._root().resolve() / TRASH_DIR
        while folder != trash and folder.is_relative_to(trash):
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    def to_dataset(self, item_id: int, character_id: int):
        """Copy the file into the character's pending queue with its graph and parameters as metadata (the
        import of ComfyUI outputs does the same, comfy_outputs.py); the new image record."""
        from .comfy_outputs import copy_to_staging, png_metadata, unreadable_reason  # it imports this module

        item = self.get(item_id)
        if item.kind != "image":
            raise InvalidInput("only still images can go to a dataset (this is a video or an animation)")
        if self.images is None or self.layout is None:
            raise Unavailable("the dataset service is not available")
        source = self.file(item.path)
        try:
            tmp = copy_to_staging(source, self.layout.staging_dir())
        except OSError as e:
            raise NotFound(unreadable_reason(e)) from None
        meta = {"output_path": item.path, **png_metadata(tmp), "parameters": item.params,
                "gallery_item_id": item.id}
        result = self.images.add_files(character_id, [(item.name, tmp, meta)], source="comfyui_output")
        if result.created:
            return result.created[0]
        reason = result.skipped[0]["reason"] if result.skipped else "the image was not added"
        if "duplicate" in reason:
            raise Conflict(reason, code="duplicate")
        raise InvalidInput(reason)

    def reindex(self):
        """A job that runs a full pass of the index now."""
        self._index()
        return self.jobs.submit("gallery_index", {})

    def _run_index(self, ctx) -> dict:
        return self._index().full_pass(progress=ctx.progress, check_cancelled=ctx.check_cancelled)


def _move(src: Path, dest: Path) -> None:
    try:
        os.rename(src, dest)
    except OSError as e:
        if e.errno != 18:  # EXDEV: a subfolder on another file system
            raise
        shutil.move(str(src), str(dest))
