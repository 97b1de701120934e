"""Characters and their SSOT prompt: the design prompt is the one place a character's look lives;
every generation is built from it, the project's style and the negatives learned from rejections."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from .db import Database, iso, utcnow
from .errors import Conflict, InvalidInput, NotFound
from .feedback import category_counts, dropped, learned_terms, rejection_notes
from .pagination import Page, after, decode_cursor, encode_cursor
from .projects import ProjectService, Style, style_record
from .schema import characters, generation_styles, image_decisions, images, lora_models, projects
from .text import merge_terms, slugify
from .validation import check_text


@dataclass(frozen=True)
class Character:
    """A character as services pass it to each other (generation, training, export, classification);
    the routes answer it as JSON, its fields in this order."""

    id: int
    project_id: int
    name: str
    slug: str  # names the character's dataset folder; it stays when the name changes
    design_prompt: str  # the single source of truth for the character's look
    negative_prompt: str
    trigger_word: str
    current_lora_id: int | None
    project_slug: str
    created_at: str  # ISO 8601, UTC
    updated_at: str


@dataclass(frozen=True)
class CharacterPrompt:
    """The character's prompts as generation (and training's samples) use them: style + trigger + design
    prompt, and style negative + character negative + learned feedback terms (stable order, no duplicates);
    what was learned, dropped and noted on the way; the current LoRA's file name; the project's style."""

    character_id: int
    project_slug: str
    character_slug: str
    positive: str
    negative: str
    learned_terms: list[str]
    dropped_terms: list[str]
    category_counts: dict[str, int]
    rejection_notes: list[dict]  # the latest notes, newest first
    lora_name: str | None
    style: Style  # the project's style


@dataclass(frozen=True)
class ImageCounts:
    pending: int
    approved: int


@dataclass(frozen=True)
class CharacterSummary(Character):
    """A character in a list: the record and how many of its images wait for review or are approved."""

    counts: ImageCounts


def character_record(row: Any, project_slug: str) -> Character:
    return Character(id=row.id, project_id=row.project_id, name=row.name, slug=row.slug,
                     design_prompt=row.design_prompt, negative_prompt=row.negative_prompt,
                     trigger_word=row.trigger_word, current_lora_id=row.current_lora_id, project_slug=project_slug,
                     created_at=iso(row.created_at), updated_at=iso(row.updated_at))


class CharacterService:
    def __init__(self, db: Database):
        self.db = db

    def create(self, project_id: int, name: str, *, design_prompt: str = "", negative_prompt: str = "",
               trigger_word: str = "") -> Character:
        slug = slugify(name)
        if not slug:
            raise InvalidInput("the name must contain at least one letter or digit")
        now = utcnow()
        with self.db.begin() as conn:
            ProjectService._row(conn, project_id)
            exists = conn.execute(sa.select(characters.c.id).where(
                characters.c.project_id == project_id, characters.c.slug == slug)).first()
            if exists:
                raise Conflict(f"the project already has a character with the slug '{slug}'")
            cid = conn.execute(characters.insert().values(
                project_id=project_id, slug=slug, created_at=now, updated_at=now, name=name,
                design_prompt=design_prompt, negative_prompt=negative_prompt, trigger_word=trigger_word,
            )).inserted_primary_key[0]
        return self.get(cid)

    def list(self, project_id: int | None = None, limit: int | None = None,
             cursor: str | None = None) -> Page[CharacterSummary]:
        """Characters (of a project, or all) by name, then id; `limit` None: all of them."""
        key = decode_cursor(cursor, (str, int))
        order = [characters.c.name, characters.c.id]
        pending = (sa.select(sa.func.count()).where(images.c.character_id == characters.c.id,
                                                    images.c.status == "pending").scalar_subquery())
        approved = (sa.select(sa.func.count()).where(images.c.character_id == characters.c.id,
                                                     images.c.status == "approved").scalar_subquery())
        q = (sa.select(characters, projects.c.slug.label("project_slug"), pending.label("pending"),
                       approved.label("approved"))
             .join(projects, projects.c.id == characters.c.project_id).order_by(*order))
        if key is not None:
            q = q.where(after(order, key))
        if limit is not None:
            q = q.limit(limit + 1)
        with self.db.begin() as conn:
            if project_id is not None:
                ProjectService._row(conn, project_id)
                q = q.where(characters.c.project_id == project_id)
            rows = conn.execute(q).all()
        items = [CharacterSummary(**asdict(character_record(r, r.project_slug)),
                                  counts=ImageCounts(pending=r.pending, approved=r.approved)) for r in rows[:limit]]
        more = limit is not None and len(rows) > limit
        return Page(items, encode_cursor(items[-1].name, items[-1].id) if more else None)

    def get(self, character_id: int) -> Character:
        with self.db.begin() as conn:
            row, project_slug = self.row_with_project(conn, character_id)
        return character_record(row, project_slug)

    def update(self, character_id: int, *, name: str | None = None, design_prompt: str | None = None,
               negative_prompt: str | None = None, trigger_word: str | None = None) -> Character:
        """Change the given fields (None: unchanged)."""
        data = {k: v for k, v in (("name", name), ("design_prompt", design_prompt),
                                  ("negative_prompt", negative_prompt), ("trigger_word", trigger_word))
                if v is not None}
        with self.db.begin() as conn:
            self.row_with_project(conn, character_id)
            if data:  # the slug stays: it names the character's dataset folder
                conn.execute(characters.update().where(characters.c.id == character_id)
                             .values(updated_at=utcnow(), **data))
        return self.get(character_id)

    def delete(self, character_id: int) -> dict:
        """Delete the records (the studio first moves the character's images to the pool: Studio.delete_character);
        the dataset folder stays on disk, and the decision log entries stay as the pool's."""
        with self.db.begin() as conn:
            self.row_with_project(conn, character_id)
            # The cascade deletes the character's decision log entries and feedback: first lock their images in id
            # order, then the character, as decisions, undo and reassign do (else an undo and the cascade can each
            # hold an entry the other needs). Once the character is locked no image can move to it.
            held = sa.select(images.c.id).where(sa.or_(
                images.c.character_id == character_id,
                images.c.id.in_(sa.select(image_decisions.c.image_id).where(
                    image_decisions.c.character_id == character_id)))).order_by(images.c.id)
            if self.db.is_postgres:
                conn.execute(held.with_for_update()).all()
                conn.execute(sa.select(characters.c.id).where(characters.c.id == character_id).with_for_update())
            if conn.execute(sa.select(images.c.id).where(images.c.character_id == character_id).limit(1)).first():
                # the cascade would delete its record and leave its files
                raise Conflict("an image was moved to the character meanwhile: delete the character again")
            # Its images keep their history: their log entries become the pool's instead of going with the
            # cascade, so each image's chain of statuses still ends at its status (its feedback rows do go).
            conn.execute(image_decisions.update().where(image_decisions.c.character_id == character_id)
                         .values(character_id=None))
            conn.execute(characters.delete().where(characters.c.id == character_id))
        return {"deleted": character_id}

    def prompt(self, character_id: int) -> CharacterPrompt:
        """The character's prompts as generation uses them: style + trigger + design prompt, and
        style negative + character negative + learned feedback terms (stable order, no duplicates)."""
        with self.db.begin() as conn:
            row, project_slug = self.row_with_project(conn, character_id)
            style = style_record(conn.execute(sa.select(generation_styles).where(
                generation_styles.c.project_id == row.project_id)).first())
            learned = learned_terms(conn, character_id, row.project_id)
            dropped_list = dropped(conn, character_id)
            counts = category_counts(conn, character_id)
            notes = rejection_notes(conn, character_id)
            lora = None
            if row.current_lora_id is not None:
                lora = conn.execute(sa.select(lora_models.c.file_name).where(
                    lora_models.c.id == row.current_lora_id)).scalar()
        return CharacterPrompt(
            character_id=character_id, project_slug=project_slug, character_slug=row.slug,
            positive=merge_terms(style.positive_template, row.trigger_word, row.design_prompt),
            negative=merge_terms(style.negative_template, row.negative_prompt, learned),
            learned_terms=learned, dropped_terms=dropped_list, category_counts=counts, rejection_notes=notes,
            lora_name=lora, style=style)

    @staticmethod
    def row_with_project(conn: sa.Connection, character_id: int) -> tuple[Any, str]:
        row = conn.execute(sa.select(characters, projects.c.slug.label("project_slug"))
                           .join(projects, projects.c.id == characters.c.project_id)
                           .where(characters.c.id == character_id)).first()
        if row is None:
            raise NotFound(f"character {character_id} does not exist")
        return row, row.project_slug

    def find(self, project: str, character: str) -> Character:
        """Look a character up by project slug/name and character slug/name (for nodes)."""
        check_text("project", project)  # PostgreSQL refuses NUL in a text parameter
        check_text("character", character)
        with self.db.begin() as conn:
            row = conn.execute(sa.select(characters.c.id).join(projects, projects.c.id == characters.c.project_id)
                               .where(sa.or_(projects.c.slug == project, projects.c.name == project),
                                      sa.or_(characters.c.slug == character, characters.c.name == character))).first()
        if row is None:
            raise NotFound(f"no character '{character}' in project '{project}'")
        return self.get(row.id)
