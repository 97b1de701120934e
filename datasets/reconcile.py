"""Start-up reconcile of the dataset folders with the database: files without records are adopted
as pending images (of the character whose folder holds them, or of the project's unassigned pool
for `<project>/_unassigned/images/`), records whose files are gone are flagged (and unflagged when
they come back). Nothing is deleted: a person decides what to do with flagged records."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from ..core.db import Database, utcnow
from ..core.errors import InvalidInput
from ..core.owners import tag_gone
from ..core.schema import characters, images, projects
from ..training.hashing import sha256_file
from .images import check_image
from .layout import TEMP_PREFIX, UNASSIGNED, DatasetLayout

log = logging.getLogger("lora_studio.datasets.reconcile")

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
STALE_TEMP_S = 3600.0
_OWNED_TEMP = re.compile(re.escape(TEMP_PREFIX) + r"([0-9a-f]{8}-\d+)-")


def _files(folder: Path) -> list[Path]:
    """Entries named like images (files, but also links and folders: those are reported, not adopted)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


def _unusable(path: Path, root: Path) -> str | None:
    """Why an entry of an images folder cannot be adopted (None: it is a regular file, or a link to
    one inside the dataset root)."""
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return "a broken symbolic link"
        if not target.is_relative_to(root):
            return "a symbolic link that leads out of the dataset folder"
    if not path.is_file():
        return "not a regular file"
    return None


def _remove_leftover_temps(folder: Path) -> list[Path]:
    """Temporary files of atomic writes (captions) that a killed process left in an images folder:
    removed at once when the process that wrote them is gone, else (no owner in the name, another
    host's) once an hour old. A live writer's file is never touched."""
    removed = []
    for p in folder.iterdir() if folder.is_dir() else []:
        if not p.name.startswith(TEMP_PREFIX) or p.is_symlink() or not p.is_file():
            continue
        try:
            changed = p.stat().st_mtime
            m = _OWNED_TEMP.match(p.name)
            if tag_gone(m.group(1), changed) if m else time.time() - changed > STALE_TEMP_S:
                p.unlink()
                removed.append(p)
        except OSError:  # gone meanwhile (its writer renamed it), or not ours to remove
            continue
    return removed


def _exists(layout: DatasetLayout, rel_path: str) -> bool:
    try:
        return layout.abs_path(rel_path).is_file()
    except (InvalidInput, OSError):  # now a link out of the dataset root, or unreadable: not usable
        return False


def reconcile(db: Database, layout: DatasetLayout, progress: Callable[[float, str], None] | None = None) -> dict:
    with db.begin() as conn:
        folders = [(r.project_id, r.id, r.project_slug, r.slug) for r in conn.execute(
            sa.select(characters.c.id, characters.c.slug, characters.c.project_id,
                      projects.c.slug.label("project_slug"))
            .join(projects, projects.c.id == characters.c.project_id))]
        folders += [(r.id, None, r.slug, None) for r in conn.execute(sa.select(projects.c.id, projects.c.slug))]
        records = conn.execute(sa.select(images.c.id, images.c.rel_path, images.c.file_missing,
                                         images.c.character_id, images.c.project_id, images.c.sha256)).all()
    known = {r.rel_path for r in records}
    # duplicates are looked for among the character's images, or for the pool the whole project's
    hashes = {(r.character_id, r.sha256) for r in records} | {(("project", r.project_id), r.sha256) for r in records}
    adopted, skipped, temps = [], [], []
    for n, (project_id, character_id, project_slug, character_slug) in enumerate(folders, 1):
        scope = character_id if character_id is not None else ("project", project_id)
        shown = f"{project_slug}/{character_slug or UNASSIGNED}/images"
        try:  # one bad folder or file is reported and skipped: it never stops the reconcile
            folder = layout.images_dir(project_slug, character_slug)
            entries = _files(folder)
            temps += [p.relative_to(layout.root).as_posix() for p in _remove_leftover_temps(folder)]
        except InvalidInput:
            skipped.append({"path": shown, "reason": "the folder leads out of the dataset folder (a symbolic link?)"})
            entries = []
        except OSError as e:
            skipped.append({"path": shown, "reason": f"the folder cannot be read ({e.strerror or type(e).__name__})"})
            entries = []
        for path in entries:
            rel = (folder / path.name).relative_to(layout.root).as_posix()  # the entry itself, not its target
            if rel in known:
                continue
            try:
                if reason := _unusable(path, layout.root):
                    skipped.append({"path": rel, "reason": reason})
                    continue
                checked = check_image(path)  # the user's own file: read, never rewritten
                digest = sha256_file(path)
                caption_file = path.with_suffix(".txt")
                caption = caption_file.read_text(encoding="utf-8", errors="replace").strip() \
                    if caption_file.is_file() else ""
            except InvalidInput as e:
                skipped.append({"path": rel, "reason": e.message})
                continue
            except OSError as e:  # removed or replaced while we looked at it
                skipped.append({"path": rel, "reason": f"the file cannot be read ({e.strerror or type(e).__name__})"})
                continue
            if (scope, digest) in hashes:
                skipped.append({"path": rel, "reason": "exact duplicate of a recorded image"})
                continue
            now = utcnow()
            try:
                with db.begin() as conn:
                    conn.execute(images.insert().values(
                        character_id=character_id, project_id=project_id, rel_path=rel, sha256=digest, status="pending", caption=caption,
                        source="reconcile", width=checked.width, height=checked.height,
                        phash=checked.hash.structure_hex, colour_hash=checked.hash.colour_hex,
                        created_at=now, updated_at=now,
                        meta={"original_name": path.name, "format": checked.format, "found_on_disk": True}))
            except sa.exc.IntegrityError:  # an upload recorded this file meanwhile
                continue
            hashes.update({(scope, digest), (("project", project_id), digest)})
            adopted.append(rel)
        if progress:
            progress(n / max(len(folders), 1) * 0.9, f"scanned {n}/{len(folders)} folders")
    missing, restored = [], []
    for r in records:
        exists = _exists(layout, r.rel_path)
        if exists == bool(r.file_missing):
            (restored if exists else missing).append(r.id)
    with db.begin() as conn:
        for ids, flag in ((missing, True), (restored, False)):
            if ids:
                conn.execute(images.update().where(images.c.id.in_(ids)).values(file_missing=flag, updated_at=utcnow()))
    if adopted or missing or restored or temps:
        log.info("reconcile: %d adopted, %d flagged missing, %d back, %d temporary files of a crash removed",
                 len(adopted), len(missing), len(restored), len(temps))
    return {"adopted": adopted, "skipped": skipped, "missing": missing, "restored": restored,
            "temporary_removed": temps}
