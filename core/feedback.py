"""What a character has learned from its rejections: the negative terms of each rejection
category (the defaults, or the project's own), minus the terms a user dropped, and counts per
category so the panel can show what goes wrong most; the notes rejections came with, per image
(with the image records) and per character (its latest notes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import sqlalchemy as sa

from .categories import CATEGORIES, validate_categories
from .db import Database, as_utc, iso
from .schema import dropped_terms, feedback, feedback_terms, image_decisions
from .text import merge_terms, split_terms

if TYPE_CHECKING:  # characters.py imports this module's queries
    from .characters import CharacterPrompt, CharacterService
    from .projects import ProjectService

NOTES_LIMIT = 50  # rejection notes in a character's feedback summary (GET /characters/{id}/prompt)


def category_terms(conn: sa.Connection, project_id: int) -> dict[str, str]:
    rows = conn.execute(sa.select(feedback_terms.c.category, feedback_terms.c.terms)
                        .where(feedback_terms.c.project_id == project_id)).all()
    return {**CATEGORIES, **{r.category: r.terms for r in rows if r.category in CATEGORIES}}


def dropped(conn: sa.Connection, character_id: int) -> list[str]:
    return list(conn.execute(sa.select(dropped_terms.c.term).where(dropped_terms.c.character_id == character_id)
                             .order_by(dropped_terms.c.term)).scalars())


def _categories_of(conn: sa.Connection, character_id: int):
    return conn.execute(sa.select(feedback.c.categories).where(feedback.c.character_id == character_id)
                        .order_by(feedback.c.id)).scalars()


def learned_terms(conn: sa.Connection, character_id: int, project_id: int) -> list[str]:
    """Negative terms learned from this character's rejections, in the order first learned."""
    terms_of = category_terms(conn, project_id)
    skip = {t.lower() for t in dropped(conn, character_id)}
    terms: list[str] = []
    for categories in _categories_of(conn, character_id):
        for category in categories or []:
            terms.extend(t for t in split_terms(terms_of.get(category, "")) if t.lower() not in skip)
    return split_terms(merge_terms(terms))


def category_counts(conn: sa.Connection, character_id: int) -> dict[str, int]:
    counts = dict.fromkeys(CATEGORIES, 0)
    for categories in _categories_of(conn, character_id):
        for category in categories or []:
            if category in counts:
                counts[category] += 1
    return counts


def latest_rejections(conn: sa.Connection, image_ids: list[int]) -> dict[int, dict]:
    """Each image's latest rejection that still stands (undo deletes its log entry and feedback row):
    {image_id: {categories, note, character_id, rejected_at}}, for any number of images in two queries.

    The decision log holds each rejection's reason since version 7, pool images included; an entry
    logged earlier takes it from its feedback row, and a feedback row without a log entry (rejections
    from before the log existed) still counts."""
    if not image_ids:
        return {}
    found: dict[int, tuple] = {}  # image id -> (time, order, record); the latest wins
    logged = (sa.select(image_decisions.c.id, image_decisions.c.image_id, image_decisions.c.character_id,
                        image_decisions.c.created_at, image_decisions.c.categories, image_decisions.c.note,
                        feedback.c.categories.label("f_categories"), feedback.c.note.label("f_note"))
              .select_from(image_decisions.outerjoin(feedback, feedback.c.id == image_decisions.c.feedback_id))
              .where(image_decisions.c.image_id.in_(image_ids), image_decisions.c.to_status == "rejected"))
    unlogged = sa.select(feedback).where(
        feedback.c.image_id.in_(image_ids),
        ~sa.exists().where(image_decisions.c.feedback_id == feedback.c.id))
    for r in conn.execute(logged):
        categories = r.categories if r.categories is not None else r.f_categories
        note = r.note if r.note is not None else r.f_note
        _keep_latest(found, r.image_id, r.created_at, r.id, categories, note, r.character_id)
    for r in conn.execute(unlogged):
        _keep_latest(found, r.image_id, r.created_at, -1, r.categories, r.note, r.character_id)
    return {image_id: record for image_id, (_, _, record) in found.items()}


def _keep_latest(found: dict, image_id: int, at, order: int, categories, note, character_id) -> None:
    key = (as_utc(at), order)
    if image_id not in found or key > found[image_id][:2]:
        found[image_id] = (*key, {"categories": list(categories or []), "note": note or "",
                                  "character_id": character_id, "rejected_at": iso(at)})


def rejection_notes(conn: sa.Connection, character_id: int, limit: int = NOTES_LIMIT) -> list[dict]:
    """The character's latest rejection notes (rejections without a note left out), newest first."""
    rows = conn.execute(sa.select(feedback).where(feedback.c.character_id == character_id, feedback.c.note != "")
                        .order_by(feedback.c.id.desc()).limit(limit)).all()
    return [{"image_id": r.image_id, "note": r.note, "categories": list(r.categories or []),
             "rejected_at": iso(r.created_at)} for r in rows]


class FeedbackService:
    def __init__(self, db: Database, projects: ProjectService, characters: CharacterService):
        self.db = db
        self.projects = projects
        self.characters = characters

    def terms(self, project_id: int) -> dict:
        with self.db.begin() as conn:
            self.projects._row(conn, project_id)
            return {"project_id": project_id, "terms": category_terms(conn, project_id), "defaults": CATEGORIES}

    def set_terms(self, project_id: int, terms_by_category: Mapping[str, str | None]) -> dict:
        """{category: "term, term" | None (back to the default)}; unknown categories are refused."""
        validate_categories(list(terms_by_category))
        with self.db.begin() as conn:
            self.projects._row(conn, project_id)
            for category, terms in terms_by_category.items():
                conn.execute(feedback_terms.delete().where(feedback_terms.c.project_id == project_id,
                                                           feedback_terms.c.category == category))
                if terms is not None and split_terms(terms):
                    conn.execute(feedback_terms.insert().values(project_id=project_id, category=category,
                                                                terms=merge_terms(terms)))
        return self.terms(project_id)

    def set_dropped(self, character_id: int, terms: Sequence[str]) -> CharacterPrompt:
        """The learned terms to leave out of this character's negative prompt (replacing the earlier ones)."""
        with self.db.begin() as conn:
            self.characters.row_with_project(conn, character_id)
            conn.execute(dropped_terms.delete().where(dropped_terms.c.character_id == character_id))
            for term in dict.fromkeys(t.strip() for t in terms):
                conn.execute(dropped_terms.insert().values(character_id=character_id, term=term))
        return self.characters.prompt(character_id)
