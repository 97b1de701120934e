"""Migrations on SQLite and PostgreSQL: a fresh database and one upgraded from version 1 (with
data in it) both end with exactly the current schema, and the data survives."""

from __future__ import annotations

import sqlalchemy as sa
from lora_studio.core import migrations, schema
from lora_studio.core.db import Database, utcnow


def columns(engine) -> dict[str, dict[str, bool]]:
    inspector = sa.inspect(engine)
    return {t: {c["name"]: c["nullable"] for c in inspector.get_columns(t)}
            for t in inspector.get_table_names() if t != "schema_version"}


def expected() -> dict[str, dict[str, bool]]:
    return {name: {c.name: c.nullable for c in table.columns} for name, table in schema.metadata.tables.items()}


def test_upgrade_from_v1_keeps_data_and_matches_a_fresh_database(settings, monkeypatch):
    db = Database(settings.effective_database_url)
    monkeypatch.setattr("lora_studio.core.db.MIGRATIONS", migrations.MIGRATIONS[:1])
    assert db.migrate() == 1
    now = utcnow()
    with db.begin() as conn:
        conn.execute(sa.text("INSERT INTO projects (name, slug, description, created_at, updated_at) "
                             "VALUES ('P', 'p', '', :t, :t)"), {"t": now})
        conn.execute(sa.text("INSERT INTO characters (project_id, name, slug, design_prompt, negative_prompt, "
                             "trigger_word, created_at, updated_at) VALUES (1, 'C', 'c', 'red hair', '', '', :t, :t)"),
                     {"t": now})
        conn.execute(sa.text("INSERT INTO images (character_id, rel_path, sha256, status, caption, source, width, "
                             "height, meta, created_at, updated_at) VALUES (1, 'p/c/images/a.png', 'ab', 'approved', "
                             "'cap', 'upload', 8, 8, '{}', :t, :t)"), {"t": now})
    monkeypatch.setattr("lora_studio.core.db.MIGRATIONS", migrations.MIGRATIONS)
    assert db.migrate() == migrations.LATEST
    assert columns(db.engine) == expected()
    with db.begin() as conn:
        row = conn.execute(sa.select(schema.images)).one()
    assert (row.status, row.caption, row.phash, row.file_missing) == ("approved", "cap", None, False)
    db.dispose()


def test_fresh_database_matches_the_schema(settings):
    db = Database(settings.effective_database_url)
    assert db.migrate() == migrations.LATEST
    assert columns(db.engine) == expected()
    db.dispose()
