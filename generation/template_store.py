"""A project's templates: API-format workflows exported from ComfyUI, kept with their bindings (which
input takes which studio field; generation/templates.py checks and fills them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..core.db import Database, iso, utcnow
from ..core.errors import Conflict, NotFound
from ..core.projects import ProjectService
from ..core.schema import generation_templates
from ..core.validation import check_text
from .templates import check_bindings, find_bindings, parse_template, suggest_bindings


@dataclass(frozen=True)
class Template:
    """A template as services pass it; the routes answer it as JSON, its fields in this order."""

    id: int
    project_id: int
    name: str
    graph: dict  # the API-format workflow as imported
    bindings: dict  # {field: [[node_id, input_name], ...]}
    candidates: dict  # {field: [{node_id, input_name, class_type, title}]}: where each field could go
    created_at: str
    updated_at: str


def _candidates(graph: dict) -> dict:
    return {f: [{"node_id": c.node_id, "input_name": c.input_name, "class_type": c.class_type, "title": c.title}
                for c in found] for f, found in find_bindings(graph).items()}


def template_record(row: Any) -> Template:
    return Template(id=row.id, project_id=row.project_id, name=row.name, graph=row.graph, bindings=row.bindings,
                    candidates=_candidates(row.graph), created_at=iso(row.created_at), updated_at=iso(row.updated_at))


def _stored(bindings: dict[str, list[tuple[str, str]]]) -> dict:
    return {f: [list(t) for t in targets] for f, targets in bindings.items()}


class TemplateStore:
    def __init__(self, db: Database):
        self.db = db

    def create(self, project_id: int, name: str, workflow: Any, bindings: dict | None = None) -> Template:
        """Import a workflow (API format; the editor's format is refused saying how to export it). Bindings
        None: the ones the studio can tell by itself (suggest_bindings)."""
        check_text("name", name)
        graph = parse_template(workflow)
        checked = check_bindings(graph, suggest_bindings(graph) if bindings is None else bindings)
        now = utcnow()
        with self.db.begin() as conn:
            ProjectService._row(conn, project_id)
            if conn.execute(sa.select(generation_templates.c.id).where(
                    generation_templates.c.project_id == project_id, generation_templates.c.name == name)).first():
                raise Conflict(f"the project already has a template named '{name}'")
            tid = conn.execute(generation_templates.insert().values(
                project_id=project_id, name=name, graph=graph, bindings=_stored(checked),
                created_at=now, updated_at=now)).inserted_primary_key[0]
        return self.get(tid)

    def get(self, template_id: int) -> Template:
        with self.db.begin() as conn:
            row = conn.execute(sa.select(generation_templates).where(generation_templates.c.id == template_id)).first()
        if row is None:
            raise NotFound(f"template {template_id} does not exist")
        return template_record(row)

    def list(self, project_id: int) -> list[Template]:
        with self.db.begin() as conn:
            ProjectService._row(conn, project_id)
            rows = conn.execute(sa.select(generation_templates).where(generation_templates.c.project_id == project_id)
                                .order_by(generation_templates.c.name, generation_templates.c.id)).all()
        return [template_record(r) for r in rows]

    def set_bindings(self, template_id: int, bindings: dict) -> Template:
        template = self.get(template_id)
        checked = check_bindings(template.graph, bindings)
        with self.db.begin() as conn:
            conn.execute(generation_templates.update().where(generation_templates.c.id == template_id)
                         .values(bindings=_stored(checked), updated_at=utcnow()))
        return self.get(template_id)

    def delete(self, template_id: int) -> dict:
        self.get(template_id)
        with self.db.begin() as conn:
            conn.execute(generation_templates.delete().where(generation_templates.c.id == template_id))
        return {"deleted": template_id}
