"""The migrated database has exactly the tables and columns of core/schema.py."""

from __future__ import annotations

import sqlalchemy as sa
from lora_studio.core import schema
from lora_studio.core.db import Database
from lora_studio.core.migrations import LATEST


def test_migrations_build_the_current_schema_and_are_idempotent(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    assert db.migrate() == LATEST
    assert db.migrate() == LATEST  # a second start-up applies nothing
    inspector = sa.inspect(db.engine)
    tables = set(inspector.get_table_names()) - {"schema_version"}
    assert tables == set(schema.metadata.tables)
    for name, table in schema.metadata.tables.items():
        columns = {c["name"]: c for c in inspector.get_columns(name)}
        assert set(columns) == {c.name for c in table.columns}, name
        for c in table.columns:
            assert columns[c.name]["nullable"] == c.nullable, (name, c.name)
    with db.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM schema_version")).scalar() == LATEST
    db.dispose()


def test_sqlite_enforces_foreign_keys(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 's.db'}")
    db.migrate()
    import pytest

    with pytest.raises(sa.exc.IntegrityError), db.begin() as conn:
        conn.execute(sa.text("INSERT INTO feedback (image_id, character_id, categories, note, created_at) "
                             "VALUES (999, 999, '[]', '', '2026-01-01')"))
    db.dispose()
