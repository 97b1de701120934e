"""Versioned migrations, applied in order at start-up (`Database.migrate`).

Each migration is (version, description, function(connection)) and describes its change with its
own frozen definitions (never the current `schema.py`, which moves on), so a fresh database and an
upgraded one end the same; `tests/unit/test_schema.py` checks both against `schema.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from . import schema_v1

version_table = sa.Table(
    "schema_version", sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


def _v1_initial(conn: sa.Connection) -> None:
    schema_v1.metadata.create_all(conn)


def _v2_review(conn: sa.Connection) -> None:
    """Decision log (undo), per-project category terms, dropped learned terms, image hashes."""
    conn.execute(sa.text("ALTER TABLE images ADD COLUMN phash VARCHAR(16)"))
    conn.execute(sa.text("ALTER TABLE images ADD COLUMN file_missing BOOLEAN NOT NULL DEFAULT false"))
    ts = sa.DateTime(timezone=True)
    md = sa.MetaData()
    for name in ("images", "characters", "projects", "feedback"):  # targets of the foreign keys
        sa.Table(name, md, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "image_decisions", md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("batch", sa.String(32), nullable=False),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=False),
        sa.Column("from_status", sa.String(20), nullable=False),
        sa.Column("to_status", sa.String(20), nullable=False),
        sa.Column("feedback_id", sa.Integer, sa.ForeignKey("feedback.id", ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Index("ix_image_decisions_character", "character_id", "id"),
    )
    sa.Table(
        "feedback_terms", md,
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("category", sa.String(50), primary_key=True),
        sa.Column("terms", sa.Text, nullable=False),
    )
    sa.Table(
        "dropped_terms", md,
        sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("term", sa.String(200), primary_key=True),
    )
    for name in ("image_decisions", "feedback_terms", "dropped_terms"):
        md.tables[name].create(conn)


def _v3_suggestions(conn: sa.Connection) -> None:
    """The classifier's suggestion for each image."""
    conn.execute(sa.text("ALTER TABLE images ADD COLUMN suggested_character_id INTEGER"))
    conn.execute(sa.text("ALTER TABLE images ADD COLUMN suggestion_confidence FLOAT"))


MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "initial schema", _v1_initial),
    (2, "review: decision log, feedback terms, dropped terms, image hashes", _v2_review),
    (3, "classifier suggestions on images", _v3_suggestions),
]

LATEST = MIGRATIONS[-1][0]
