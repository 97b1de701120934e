"""What a character has learned from its rejections: negative terms and counts per category."""

from __future__ import annotations

import sqlalchemy as sa

from .categories import CATEGORIES
from .schema import feedback
from .text import split_terms


def learned_terms(conn: sa.Connection, character_id: int) -> list[str]:
    """Negative terms learned from this character's rejections, in the order first learned."""
    rows = conn.execute(sa.select(feedback.c.categories).where(feedback.c.character_id == character_id)
                        .order_by(feedback.c.id)).scalars()
    terms: list[str] = []
    for categories in rows:
        for category in categories or []:
            terms.extend(split_terms(CATEGORIES.get(category, "")))
    return list(dict.fromkeys(terms))


def category_counts(conn: sa.Connection, character_id: int) -> dict[str, int]:
    counts = dict.fromkeys(CATEGORIES, 0)
    for categories in conn.execute(sa.select(feedback.c.categories).where(feedback.c.character_id == character_id)).scalars():
        for category in categories or []:
            if category in counts:
                counts[category] += 1
    return counts
