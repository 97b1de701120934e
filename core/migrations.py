"""Versioned migrations, applied in order at start-up (`Database.migrate`).

Each migration is (version, description, function(connection)). Version 1 creates the schema of
`schema.py` as it stood at version 1. When a later change alters a table, add a migration that
alters it *and* freeze version 1 (copy its tables into a snapshot here), so that a fresh database
and an upgraded one end the same; `tests/unit/test_schema.py` fails loudly until that is done.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa

from . import schema

version_table = sa.Table(
    "schema_version", sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)


def _v1_initial(conn: sa.Connection) -> None:
    schema.metadata.create_all(conn)


MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "initial schema", _v1_initial),
]

LATEST = MIGRATIONS[-1][0]
