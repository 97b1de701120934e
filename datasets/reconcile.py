"""Start-up reconcile of the dataset folders with the database: files without records are adopted
as pending images (of the character whose folder holds them, or of the project's unassigned pool
for `<project>/_unassigned/images/`), records whose files are gone are flagged (and unflagged when
they come back). Nothing is deleted: a person decides what to do with flagged records."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from ..core.db import Database, utcnow
from ..core.errors import InvalidInput
from ..core.schema import characters, images, projects
from .images import check_image, sha256_of
from .layout import DatasetLayout

log = logging.getLogger("lora_studio.datasets.reconcile")

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


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
    adopted, skipped = [], []
    for n, (project_id, character_id, project_slug, character_slug) in enumerate(folders, 1):
        scope = character_id if character_id is not None else ("project", project_id)
        for path in _files(layout.images_dir(project_slug, character_slug)):
            rel = layout.rel_path(path)
            if rel in known:
                continue
            try:
                checked = check_image(path)  # the user's own file: read, never rewritten
            except InvalidInput as e:
                skipped.append({"path": rel, "reason": e.message})
                continue
            digest = sha256_of(path)
            if (scope, digest) in hashes:
                skipped.append({"path": rel, "reason": "exact duplicate of a recorded image"})
                continue
            caption_file = path.with_suffix(".txt")
            caption = caption_file.read_text(encoding="utf-8", errors="replace").strip() if caption_file.is_file() else ""
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
        exists = layout.abs_path(r.rel_path).is_file()
        if exists == bool(r.file_missing):
            (restored if exists else missing).append(r.id)
    with db.begin() as conn:
        for ids, flag in ((missing, True), (restored, False)):
            if ids:
                conn.execute(images.update().where(images.c.id.in_(ids)).values(file_missing=flag, updated_at=utcnow()))
    if adopted or missing or restored:
        log.info("reconcile: %d adopted, %d flagged missing, %d back", len(adopted), len(missing), len(restored))
    return {"adopted": adopted, "skipped": skipped, "missing": missing, "restored": restored}
