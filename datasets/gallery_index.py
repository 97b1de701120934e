"""The gallery's index of ComfyUI's output folder: a row per image or video (`gallery_items`), kept in step
with the folder incrementally, so a page is one indexed query instead of a walk and sort of the whole folder.

- **A full pass** walks the folder and stats every file, compares (size, mtime) with the rows and reads only
  new and changed files (their embedded graph, comfy_meta.py); rows of removed files go. After a restart the
  database still holds what was seen, so a pass only stats files. It runs at start, every few minutes and
  when asked (the `gallery_index` job).
- **A quick check** stats only the folders the last pass saw: a file added or removed changes its folder's
  mtime, and only such a folder is listed again (the listing is kept in memory). The background thread
  runs one every few seconds and each first page runs one first (a new output shows at once); a page
  request waits for nothing longer than a second and never for a running full pass.
- **Links**: a file the studio generated carries `extra_pnginfo.lora_studio.character_id` and is named in
  its generation's outputs; both link the row to the character, its project and the generation.
- **Text search** (SQLite): an FTS5 table over name and prompts, kept by triggers, created here at start
  (derived data: rebuilt from the rows when missing; PostgreSQL uses the GIN index of migration 9).

Nothing runs at import; `start()` starts the thread (Studio.start), which ComfyUI's start-up never waits for.
Hidden files and folders, links that leave the folder, names that are not valid UTF-8 or too long, and
non-regular files are not indexed: a hostile name in the output folder never breaks a pass."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from ..core.db import Database, utcnow
from ..core.errors import StudioError
from ..core.schema import characters, gallery_item_loras, gallery_items, generations
from .comfy_meta import MEDIA_TYPES, extract_params, read_media, studio_tag

log = logging.getLogger("lora_studio.gallery")

TRASH_DIR = ".lora_studio_trash"  # inside the output folder (hidden: never indexed as new files)
MAX_PATH_BYTES = 1000  # a longer relative path is not indexed (the column and PostgreSQL's b-tree limit)
BATCH = 200  # files read and written per transaction
SETTLE_NS = 2_000_000_000  # a folder changed this recently is listed again next time (coarse mtimes)
POLL_S = 2.0  # quick checks in the background
FULL_EVERY_S = 300.0  # full passes in the background (files changed in place: rare for ComfyUI outputs)
FTS = "gallery_fts"
_SURROGATES = re.compile("[\ud800-\udfff]")


def root_key(folder: Path) -> str:
    """Which output folder a row belongs to (one database may serve studios with different folders)."""
    return hashlib.sha256(str(folder.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def clean_text(value: str | None, limit: int | None = None) -> str | None:
    """Text the databases can store: no NUL, no lone surrogates (embedded texts are anyone's)."""
    if value is None:
        return None
    value = _SURROGATES.sub("\ufffd", value.replace("\x00", ""))
    return value[:limit] if limit else value


def clean_json(value):
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    if isinstance(value, dict):
        return {clean_text(str(k)): clean_json(v) for k, v in value.items()}
    return value


def indexable_name(name: str) -> bool:
    if name.startswith("."):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # not valid UTF-8 on disk (surrogate-escaped): no URL or row can name it
        return False
    return True


@dataclass
class DirState:
    """A folder as the last listing saw it: its mtime, the media files in it, its subfolders."""

    mtime_ns: int
    names: set[str] = field(default_factory=set)
    subdirs: set[str] = field(default_factory=set)  # relative paths
    settled: bool = True  # False: changed too recently to trust the mtime, or not finished: list it again


@dataclass
class PassStats:
    files: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"files": self.files, "added": self.added, "updated": self.updated, "removed": self.removed,
                "seconds": round(self.seconds, 3)}


class Stopped(Exception):
    """The index is stopping: a pass ends between batches."""


class GalleryIndex:
    def __init__(self, db: Database, output_dir: Path | None, *, poll_s: float = POLL_S,
                 full_every_s: float = FULL_EVERY_S):
        self.db = db
        self.output_dir = output_dir
        self.poll_s, self.full_every_s = poll_s, full_every_s
        self.root = root_key(output_dir) if output_dir is not None else ""
        self._lock = threading.Lock()
        self._dirs: dict[str, DirState] = {}  # relative folder ("" is the root) -> its last listing
        self._full_running = False
        self._last_full = 0.0
        self._gen_since = None  # generations updated since then are linked again in the next pass
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False  # the last tick failed (logged once until one succeeds)
        self.fts = False  # SQLite's FTS5 table is ready (else text search falls back to LIKE)
        self._search_checked = False
        self.last_pass: PassStats | None = None
        self._first_pass = threading.Event()  # set when the thread's first pass has ended
        self._moved: set[str] = set()  # files the gallery moved (see `moved`)
        # files read while they may still be written (ComfyUI writes in place): path -> (size, mtime, read at)
        self._recent: dict[str, tuple[int, int, int]] = {}

    # -- the background thread -------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None or self.output_dir is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="lora-studio-gallery", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.last_pass is None or time.monotonic() - self._last_full >= self.full_every_s:
                    try:
                        with self._lock:
                            self._full_pass(pause=0.005)
                    finally:
                        self._first_pass.set()
                else:
                    with self._lock:
                        self._quick(budget=None)
                self._failing = False
            except Stopped:
                return
            except Exception as e:  # the database away, a folder gone: say so once, try again at the next tick
                if not self._failing:
                    log.warning("gallery indexing failed (%s); retrying every %.0fs", str(e)[:300] or type(e).__name__,
                                self.poll_s, exc_info=not isinstance(e, StudioError))
                self._failing = True
            self._wake.wait(self.poll_s)
            self._wake.clear()

    # -- entry points ----------------------------------------------------------------------------
    def refresh(self, wait_s: float = 1.0, budget: int | None = 100) -> None:
        """Bring the index up to date with the folder as far as cheaply possible, for a page request: a
        quick check (or the first pass when none ran yet); nothing while a full pass runs."""
        if self.output_dir is None:
            return
        deadline = time.monotonic() + wait_s
        if self._thread is not None and not self._first_pass.wait(wait_s):
            return  # the thread's first pass takes longer (a cold index): never a full pass inside a request
        if self._full_running:
            return  # a full pass brings the index up to date anyway
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return
        try:
            if self.last_pass is not None or self._thread is not None:
                self._quick(budget=budget)
            else:  # no thread (a tool, a test): the first pass here
                self._full_pass()
        finally:
            self._lock.release()

    def full_pass(self, progress: Callable[[float, str], None] | None = None,
                  check_cancelled: Callable[[], None] | None = None) -> dict:
        """A full pass now (the reindex job), after any pass that is running."""
        with self._lock:
            return self._full_pass(progress=progress, check_cancelled=check_cancelled).as_dict()

    def moved(self, rel_path: str) -> None:
        """The gallery moved this file away or back (trash, restore): the next quick check lists its folder
        again, and a file found under that name then is read as new."""
        self._moved.add(rel_path)  # applied by the next quick check, under the lock

    # -- text search -----------------------------------------------------------------------------
    def ensure_search(self) -> None:
        """SQLite: the FTS5 table over gallery_items (name, positive, negative) and its triggers, built from
        the rows when new. Without FTS5 in this SQLite, search falls back to LIKE."""
        if self._search_checked:
            return
        self._search_checked = True
        if self.db.is_postgres:
            self.fts = True
            return
        try:
            probe = sqlite3.connect(":memory:")
            probe.execute("CREATE VIRTUAL TABLE t USING fts5(a)")
            probe.close()
        except sqlite3.Error:
            log.info("this SQLite has no FTS5: gallery text search uses LIKE")
            return
        with self.db.begin() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM sqlite_master WHERE name = :n"), {"n": FTS}).first()
            if not exists:
                conn.exec_driver_sql(
                    f"CREATE VIRTUAL TABLE {FTS} USING fts5(name, positive, negative, content='gallery_items', "
                    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')")
                conn.exec_driver_sql(f"INSERT INTO {FTS}({FTS}) VALUES ('rebuild')")
            for name, body in (
                ("gallery_fts_insert", f"AFTER INSERT ON gallery_items BEGIN INSERT INTO {FTS}(rowid, name, positive, "
                                       "negative) VALUES (new.id, new.name, new.positive, new.negative); END"),
                ("gallery_fts_delete", f"AFTER DELETE ON gallery_items BEGIN INSERT INTO {FTS}({FTS}, rowid, name, "
                                       "positive, negative) VALUES ('delete', old.id, old.name, old.positive, "
                                       "old.negative); END"),
                ("gallery_fts_update", f"AFTER UPDATE OF name, positive, negative ON gallery_items BEGIN "
                                       f"INSERT INTO {FTS}({FTS}, rowid, name, positive, negative) VALUES ('delete', "
                                       "old.id, old.name, old.positive, old.negative); INSERT INTO "
                                       f"{FTS}(rowid, name, positive, negative) VALUES (new.id, new.name, "
                                       "new.positive, new.negative); END"),
            ):
                conn.exec_driver_sql(f"CREATE TRIGGER IF NOT EXISTS {name} {body}")
        self.fts = True

    # -- passes ----------------------------------------------------------------------------------
    def _root_dir(self) -> Path | None:
        if self.output_dir is None:
            return None
        try:
            root = self.output_dir.resolve()
            return root if root.is_dir() else None
        except OSError:
            return None

    def _full_pass(self, progress=None, check_cancelled=None, pause: float = 0.0) -> PassStats:
        started, stats = time.monotonic(), PassStats()
        self.ensure_search()
        root = self._root_dir()
        if root is None:
            self._last_full = time.monotonic()
            self.last_pass = stats
            return stats
        self._full_running = True
        try:
            since = utcnow() - timedelta(seconds=60)
            dirs: dict[str, DirState] = {}
            disk: dict[str, tuple[int, int]] = {}
            self._walk(root, "", dirs, disk, stat_files=True)
            if "" not in dirs:  # the folder cannot be listed right now: keep the index as it is
                log.warning("gallery index: %s cannot be listed; the index is kept as it is", root)
                return stats
            stats.files = len(disk)
            with self.db.begin() as conn:
                rows = {r.path: (r.id, r.size, r.mtime_ns) for r in conn.execute(
                    sa.select(gallery_items.c.path, gallery_items.c.id, gallery_items.c.size, gallery_items.c.mtime_ns)
                    .where(gallery_items.c.root == self.root, gallery_items.c.trashed == False))}  # noqa: E712
            gone = [rows[rel][0] for rel in rows if rel not in disk]
            self._delete_ids(gone)
            stats.removed = len(gone)
            todo = [(rel, *disk[rel]) for rel in disk if rel not in rows or rows[rel][1:] != disk[rel]]
            todo.sort(key=lambda t: t[2], reverse=True)  # newest first: the first pages fill first
            for start in range(0, len(todo), BATCH):
                if self._stop.is_set():
                    raise Stopped
                if check_cancelled:
                    check_cancelled()
                added, updated = self._store(root, todo[start:start + BATCH])
                stats.added += added
                stats.updated += updated
                if progress:
                    done = min(start + BATCH, len(todo))
                    progress(done / len(todo), f"{done}/{len(todo)} new or changed files read")
                if pause:
                    time.sleep(pause)  # leave ComfyUI's threads the interpreter now and then
            stats.removed += self._drop_missing_trash(root)
            if self.db.is_postgres and stats.added + stats.removed > 1000:  # fresh statistics: the planner
                with self.db.begin() as conn:  # picks the text-search index over a walk of the whole list
                    conn.exec_driver_sql("ANALYZE gallery_items")
                    conn.exec_driver_sql("ANALYZE gallery_item_loras")
            self._link_generations(None)  # every generation: one that ended while the file was not indexed yet
            self._gen_since = since
            self._dirs = dirs
            self._last_full = time.monotonic()
        finally:
            self._full_running = False
        stats.seconds = time.monotonic() - started
        self.last_pass = stats
        if stats.added or stats.updated or stats.removed:
            log.info("gallery index: %d files, %d added, %d updated, %d removed in %.1fs", stats.files, stats.added,
                     stats.updated, stats.removed, stats.seconds)
        return stats

    def _quick(self, budget: int | None) -> None:
        """Stat the known folders; list again those that changed; read their new files (at most `budget`;
        the rest stay for the next check)."""
        root = self._root_dir()
        if root is None:
            return
        if not self._dirs:  # the folder appeared after the last pass: list it as new
            self._dirs[""] = DirState(-1, settled=False)
        while self._moved:
            folder, _, name = self._moved.pop().rpartition("/")
            if folder in self._dirs:
                self._dirs[folder].names.discard(name)
                self._dirs[folder].settled = False
        since = utcnow() - timedelta(seconds=60)
        gone_dirs, changed = [], []
        for rel, state in self._dirs.items():
            try:
                st = os.lstat(root / rel if rel else root)
            except OSError:
                gone_dirs.append(rel)
                continue
            if not stat.S_ISDIR(st.st_mode):
                gone_dirs.append(rel)
            elif st.st_mtime_ns != state.mtime_ns or not state.settled:
                changed.append(rel)
        removed_paths: list[str] = []
        for rel in gone_dirs:
            removed_paths += self._drop_dir(rel)
        rewritten = self._rewritten(root)
        new: list[tuple[str, str]] = []  # (folder, name)
        for rel in changed:
            if rel not in self._dirs:
                continue
            state = self._dirs[rel]
            listing = self._list(root, rel)
            if listing is None and not rel:
                return  # the output folder cannot be listed right now: keep everything as it is
            if listing is None:
                removed_paths += self._drop_dir(rel)
                continue
            mtime_ns, names, subdirs = listing
            for name in state.names - names:
                removed_paths.append(_join(rel, name))
            state.names &= names
            for sub in state.subdirs - subdirs:
                removed_paths += self._drop_dir(sub)
            for sub in subdirs - state.subdirs:
                self._dirs.pop(sub, None)
                self._walk(root, sub, self._dirs, None, stat_files=False)
                new += [(d, n) for d in self._under(sub) for n in self._dirs[d].names]
                for d in self._under(sub):  # read below, within the budget
                    self._dirs[d].names, self._dirs[d].settled = set(), False
            state.subdirs = subdirs
            new += [(rel, n) for n in names - state.names]
            state.mtime_ns = mtime_ns
            state.settled = time.time_ns() - mtime_ns > SETTLE_NS
        if removed_paths:
            with self.db.begin() as conn:
                ids = []
                for chunk in _chunks(removed_paths, 500):
                    ids += conn.execute(sa.select(gallery_items.c.id).where(
                        gallery_items.c.root == self.root, gallery_items.c.trashed == False,  # noqa: E712
                        gallery_items.c.path.in_(chunk))).scalars().all()
            self._delete_ids(ids)
        if budget is not None and len(new) > budget:
            for rel, _name in new[budget:]:
                self._dirs[rel].settled = False
            new = new[:budget]
        pending = {path: (path, size, mtime) for path, size, mtime in rewritten}
        for rel, name in new:
            path = _join(rel, name)
            try:
                st = os.stat(root / path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                pending[path] = (path, st.st_size, st.st_mtime_ns)
        todo = list(pending.values())
        for start in range(0, len(todo), BATCH):
            self._store(root, todo[start:start + BATCH])
        for path, _size, _mtime in todo:
            folder, _, name = path.rpartition("/")
            if folder in self._dirs:
                self._dirs[folder].names.add(name)
        self._link_generations(self._gen_since)
        self._gen_since = since

    def _rewritten(self, root: Path) -> list[tuple[str, int, int]]:
        """Recently read files whose size or mtime changed since (still being written then): read again."""
        now, out = time.time_ns(), []
        for rel, (size, mtime_ns, read_at) in list(self._recent.items()):
            try:
                st = os.stat(root / rel)
            except OSError:
                self._recent.pop(rel, None)
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                if stat.S_ISREG(st.st_mode):
                    out.append((rel, st.st_size, st.st_mtime_ns))
                self._recent.pop(rel, None)
            elif now - mtime_ns >= SETTLE_NS or now - read_at >= 5 * SETTLE_NS:
                self._recent.pop(rel, None)
        return out

    def _under(self, rel: str) -> list[str]:
        if not rel:
            return list(self._dirs)
        prefix = rel + "/"
        return [d for d in self._dirs if d == rel or d.startswith(prefix)]

    def _drop_dir(self, rel: str) -> list[str]:
        """Forget a folder that went away (and those below it): the paths of the files it held."""
        paths = []
        for d in self._under(rel):
            state = self._dirs.pop(d)
            paths += [_join(d, n) for n in state.names]
        parent = rel.rpartition("/")[0] if rel else None
        if parent is not None and parent in self._dirs:
            self._dirs[parent].subdirs.discard(rel)
        return paths

    # -- the folder ------------------------------------------------------------------------------
    def _list(self, root: Path, rel: str) -> tuple[int, set[str], set[str]] | None:
        """(mtime, media file names, subfolders) of one folder; None when it is not a folder any more."""
        folder = root / rel if rel else root
        try:
            st = os.lstat(folder)
            if not stat.S_ISDIR(st.st_mode):
                return None
            names, subdirs = set(), set()
            with os.scandir(folder) as it:
                for entry in it:
                    if not indexable_name(entry.name):
                        continue
                    child = _join(rel, entry.name)
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            subdirs.add(child)
                        elif (Path(entry.name).suffix.lower() in MEDIA_TYPES and len(child.encode()) <= MAX_PATH_BYTES
                              and self._inside(root, entry)):
                            names.add(entry.name)
                    except OSError:
                        continue
            return st.st_mtime_ns, names, subdirs
        except OSError:
            return None

    @staticmethod
    def _inside(root: Path, entry: os.DirEntry) -> bool:
        """A regular file, or a link to one inside the folder (the gallery serves nothing outside it)."""
        if entry.is_symlink():
            try:
                target = Path(entry.path).resolve()
            except (OSError, RuntimeError):
                return False
            return target.is_relative_to(root) and target.is_file()
        return entry.is_file(follow_symlinks=False)

    def _walk(self, root: Path, rel: str, dirs: dict[str, DirState], disk: dict[str, tuple[int, int]] | None, *,
              stat_files: bool) -> None:
        stack = [rel]
        while stack:
            current = stack.pop()
            listing = self._list(root, current)
            if listing is None:
                continue
            mtime_ns, names, subdirs = listing
            if stat_files and disk is not None:
                for name in list(names):
                    path = _join(current, name)
                    try:
                        st = os.stat(root / path)
                    except OSError:
                        names.discard(name)
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        names.discard(name)
                        continue
                    disk[path] = (st.st_size, st.st_mtime_ns)
            dirs[current] = DirState(mtime_ns, names, subdirs, settled=time.time_ns() - mtime_ns > SETTLE_NS)
            stack.extend(subdirs)

    # -- rows ------------------------------------------------------------------------------------
    def _store(self, root: Path, files: list[tuple[str, int, int]]) -> tuple[int, int]:
        """Read and write a batch of new or changed files; (added, updated)."""
        rows = []
        for rel, size, mtime_ns in files:
            info = read_media(root / rel)
            params = clean_json(extract_params(info.texts, rel))
            tag = studio_tag(info.texts)
            cid = tag.get("character_id")
            folder, _, name = rel.rpartition("/")
            rows.append({
                "root": self.root, "path": rel, "original_path": None, "name": name, "subfolder": folder,
                "kind": info.kind, "media_type": info.media_type, "size": size, "mtime_ns": mtime_ns,
                "width": _dimension(info.width), "height": _dimension(info.height),
                "positive": params.pop("positive"), "negative": params.pop("negative"), "params": params,
                "character_id": cid if isinstance(cid, int) and not isinstance(cid, bool) and 0 < cid < 2**31 else None,
            })
        now = time.time_ns()
        for rel, size, mtime_ns in files:
            if now - mtime_ns < SETTLE_NS:  # may still be being written: look again at the next quick check
                self._recent[rel] = (size, mtime_ns, now)
        for attempt in range(3):
            try:
                return self._write(rows)
            except sa.exc.IntegrityError:  # another studio on the same folder and database wrote one first
                if attempt == 2:
                    raise
        return 0, 0

    def _write(self, rows: list[dict]) -> tuple[int, int]:
        now = utcnow()
        with self.db.begin() as conn:
            wanted = {r["character_id"] for r in rows if r["character_id"] is not None}
            projects = dict(conn.execute(sa.select(characters.c.id, characters.c.project_id)
                                         .where(characters.c.id.in_(wanted))).all()) if wanted else {}
            existing = {}
            for chunk in _chunks([r["path"] for r in rows], 500):
                existing.update(conn.execute(sa.select(gallery_items.c.path, gallery_items.c.id).where(
                    gallery_items.c.root == self.root, gallery_items.c.path.in_(chunk))).all())
            inserts, lora_rows = [], []
            for r in rows:
                values = dict(r, indexed_at=now)
                cid = values.pop("character_id")
                if cid in projects:
                    values.update(character_id=cid, project_id=projects[cid])
                item_id = existing.get(r["path"])
                if item_id is None:
                    inserts.append({"character_id": None, "project_id": None, **values})
                    continue
                conn.execute(gallery_items.update().where(gallery_items.c.id == item_id).values(**values))
                conn.execute(gallery_item_loras.delete().where(gallery_item_loras.c.item_id == item_id))
                lora_rows += _lora_rows(item_id, r["params"])
            if inserts:
                ids = conn.execute(gallery_items.insert().returning(gallery_items.c.id, sort_by_parameter_order=True),
                                   inserts).scalars().all()
                for item_id, r in zip(ids, inserts, strict=True):
                    lora_rows += _lora_rows(item_id, r["params"])
            if lora_rows:
                conn.execute(gallery_item_loras.insert(), lora_rows)
        return len(inserts), len(rows) - len(inserts)

    def _delete_ids(self, ids: Iterable[int], trashed: bool = False) -> None:
        """Delete rows found gone; a row trashed or restored meanwhile (its file moved on purpose) stays."""
        ids = list(ids)
        for chunk in _chunks(ids, 500):
            with self.db.begin() as conn:
                conn.execute(gallery_items.delete().where(gallery_items.c.id.in_(chunk),
                                                          gallery_items.c.trashed == trashed))

    def _drop_missing_trash(self, root: Path) -> int:
        """Rows of trashed files someone removed from the trash folder by hand."""
        with self.db.begin() as conn:
            trashed = conn.execute(sa.select(gallery_items.c.id, gallery_items.c.path).where(
                gallery_items.c.root == self.root, gallery_items.c.trashed == True)).all()  # noqa: E712
        gone = [r.id for r in trashed if not os.path.lexists(root / r.path)]
        self._delete_ids(gone, trashed=True)
        return len(gone)

    def _link_generations(self, since) -> None:
        """Rows of files a studio generation wrote (its outputs) get the generation, character and project;
        `since`: only generations updated since then (None: all)."""
        q = (sa.select(generations.c.id, generations.c.character_id, generations.c.outputs, characters.c.project_id)
             .join(characters, characters.c.id == generations.c.character_id)
             .where(generations.c.outputs.is_not(None)))
        if since is not None:
            q = q.where(generations.c.updated_at >= since)
        with self.db.begin() as conn:
            for gen in conn.execute(q).all():
                paths = [_output_path(o) for o in gen.outputs if isinstance(o, dict)] if isinstance(
                    gen.outputs, list) else []
                paths = [p for p in paths if p]
                for chunk in _chunks(paths, 500):
                    conn.execute(gallery_items.update().where(
                        gallery_items.c.root == self.root, gallery_items.c.path.in_(chunk),
                        gallery_items.c.generation_id.is_(None)).values(
                        generation_id=gen.id, character_id=gen.character_id, project_id=gen.project_id))


def _join(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _dimension(value) -> int | None:
    return value if isinstance(value, int) and 0 < value < 2**31 else None


def _lora_rows(item_id: int, params: dict) -> list[dict]:
    names = {lora["name"] for lora in params.get("loras") or [] if isinstance(lora.get("name"), str)}
    return [{"item_id": item_id, "name": name[:500]} for name in sorted(names) if name]


def _output_path(output: dict) -> str | None:
    """A generation output's path relative to the output folder (ComfyUI's {filename, subfolder, type})."""
    if output.get("type", "output") != "output" or not isinstance(output.get("filename"), str):
        return None
    sub = output.get("subfolder") if isinstance(output.get("subfolder"), str) else ""
    return _join(sub.strip("/").replace("\\", "/"), output["filename"])
