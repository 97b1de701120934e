"""Projects and their generation style (one style per project, used by all its characters)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from .db import Database, iso, utcnow
from .errors import Conflict, InvalidInput, NotFound
from .pagination import Page, after, decode_cursor, encode_cursor
from .samplers import SamplerNames
from .schema import characters, generation_styles, projects
from .style import DEFAULT_STYLE, StyleChanges
from .text import slugify


@dataclass(frozen=True)
class Project:
    """A project as services pass it; the routes answer it as JSON, its fields in this order."""

    id: int
    name: str
    slug: str  # names the project's dataset folder; it stays when the name changes
    description: str
    created_at: str  # ISO 8601, UTC
    updated_at: str


@dataclass(frozen=True)
class Style:
    """A project's generation style (core/style.py has the defaults), as generation and the routes use it."""

    project_id: int
    checkpoint: str  # a file name in ComfyUI's models/checkpoints ("": none chosen yet)
    sampler: str  # ComfyUI's sampler_name
    scheduler: str
    steps: int
    cfg: float
    width: int
    height: int
    clip_skip: int
    positive_template: str
    negative_template: str
    lora_strength: float
    updated_at: str
    variations: list[str]  # batch generation's pose/expression snippets (version 8; [] when none)


STYLE_FIELDS = tuple(f.name for f in fields(Style) if f.name in DEFAULT_STYLE)


def project_record(row: Any) -> Project:
    return Project(id=row.id, name=row.name, slug=row.slug, description=row.description,
                   created_at=iso(row.created_at), updated_at=iso(row.updated_at))


def style_record(row: Any) -> Style:
    return Style(project_id=row.project_id, **{k: getattr(row, k) for k in STYLE_FIELDS if k != "variations"},
                 updated_at=iso(row.updated_at), variations=list(row.variations or []))


def _slug_for(name: str) -> str:
    slug = slugify(name)
    if not slug:
        raise InvalidInput("the name must contain at least one letter or digit")
    return slug


class ProjectService:
    def __init__(self, db: Database, samplers: SamplerNames | None = None):
        self.db = db
        self.samplers = samplers or SamplerNames()  # without a ComfyUI: its standard lists

    def create(self, name: str, description: str = "") -> Project:
        slug = _slug_for(name)
        now = utcnow()
        with self.db.begin() as conn:
            if conn.execute(sa.select(projects.c.id).where(projects.c.slug == slug)).first():
                raise Conflict(f"a project with the slug '{slug}' already exists")
            pid = conn.execute(projects.insert().values(
                name=name, slug=slug, description=description,
                created_at=now, updated_at=now)).inserted_primary_key[0]
            conn.execute(generation_styles.insert().values(project_id=pid, updated_at=now, **DEFAULT_STYLE))
        return self.get(pid)

    def list(self, limit: int | None = None, cursor: str | None = None) -> Page[Project]:
        """Projects by name (then id); `limit` None: all of them (the nodes' combos)."""
        key = decode_cursor(cursor, (str, int))
        order = [projects.c.name, projects.c.id]
        q = sa.select(projects).order_by(*order)
        if key is not None:
            q = q.where(after(order, key))
        if limit is not None:
            q = q.limit(limit + 1)
        with self.db.begin() as conn:
            rows = conn.execute(q).all()
        items = [project_record(r) for r in rows[:limit]]
        more = limit is not None and len(rows) > limit
        return Page(items, encode_cursor(items[-1].name, items[-1].id) if more else None)

    def get(self, project_id: int) -> Project:
        with self.db.begin() as conn:
            return project_record(self._row(conn, project_id))

    def update(self, project_id: int, *, name: str | None = None, description: str | None = None) -> Project:
        """Change the name and/or description (None: unchanged)."""
        data = {k: v for k, v in (("name", name), ("description", description)) if v is not None}
        with self.db.begin() as conn:
            self._row(conn, project_id)
            if data:  # the slug stays: it names the dataset folder
                conn.execute(projects.update().where(projects.c.id == project_id).values(updated_at=utcnow(), **data))
        return self.get(project_id)

    def delete(self, project_id: int) -> dict:
        with self.db.begin() as conn:
            self._row(conn, project_id)
            if conn.execute(sa.select(characters.c.id).where(characters.c.project_id == project_id).limit(1)).first():
                raise Conflict("the project still has characters; delete them first")
            conn.execute(projects.delete().where(projects.c.id == project_id))
        return {"deleted": project_id}

    def get_style(self, project_id: int) -> Style:
        with self.db.begin() as conn:
            self._row(conn, project_id)
            row = conn.execute(sa.select(generation_styles).where(generation_styles.c.project_id == project_id)).first()
        return style_record(row)

    def update_style(self, project_id: int, changes: StyleChanges) -> Style:
        data = changes.changed()
        if "sampler" in data or "scheduler" in data:  # names ComfyUI has (or a human name), else a 400
            current = self.get_style(project_id)
            data["sampler"], data["scheduler"] = self.samplers.check(
                data.get("sampler", current.sampler), data.get("scheduler", current.scheduler))
        for dim in ("width", "height"):
            if dim in data and data[dim] % 8:
                raise InvalidInput(f"'{dim}' must be a multiple of 8")
        with self.db.begin() as conn:
            self._row(conn, project_id)
            conn.execute(generation_styles.update().where(generation_styles.c.project_id == project_id)
                         .values(updated_at=utcnow(), **data))
        return self.get_style(project_id)

    @staticmethod
    def _row(conn: sa.Connection, project_id: int) -> Any:
        row = conn.execute(sa.select(projects).where(projects.c.id == project_id)).first()
        if row is None:
            raise NotFound(f"project {project_id} does not exist")
        return row
