"""Migrations on SQLite and PostgreSQL: a fresh database and one upgraded from version 1 (with
data in it) both end with exactly the current schema, and the data survives."""

from __future__ import annotations

import pytest
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


def test_upgrade_from_v3_moves_images_into_projects_and_keeps_everything(settings, monkeypatch):
    """v4 rebuilds `images` on SQLite (character_id loses NOT NULL): the rows, their feedback and
    decision log (children with ON DELETE CASCADE) survive, project_id is filled in from the
    character, and foreign keys are enforced again afterwards."""
    db = Database(settings.effective_database_url)
    monkeypatch.setattr("lora_studio.core.db.MIGRATIONS", migrations.MIGRATIONS[:3])
    assert db.migrate() == 3
    now = utcnow()
    with db.begin() as conn:
        for pid, slug in ((1, "p"), (2, "q")):
            conn.execute(sa.text("INSERT INTO projects (id, name, slug, description, created_at, updated_at) "
                                 "VALUES (:id, :s, :s, '', :t, :t)"), {"id": pid, "s": slug, "t": now})
        for cid, pid in ((1, 1), (2, 2)):
            conn.execute(sa.text("INSERT INTO characters (id, project_id, name, slug, design_prompt, negative_prompt, "
                                 "trigger_word, created_at, updated_at) VALUES (:c, :p, 'C', 'c', '', '', '', :t, :t)"),
                         {"c": cid, "p": pid, "t": now})
        for iid, cid in ((1, 1), (2, 2), (3, 2)):
            conn.execute(sa.text(
                "INSERT INTO images (id, character_id, rel_path, sha256, status, caption, source, width, height, meta, "
                "created_at, updated_at, phash, file_missing, suggested_character_id, suggestion_confidence) VALUES "
                "(:i, :c, :r, 'ab', 'rejected', 'cap', 'upload', 8, 8, '{\"k\": 1}', :t, :t, '00ff', true, 1, 0.5)"),
                {"i": iid, "c": cid, "r": f"x/c/images/{iid}.png", "t": now})
        conn.execute(sa.text("INSERT INTO feedback (id, image_id, character_id, categories, note, created_at) "
                             "VALUES (1, 2, 2, '[\"bad_quality\"]', 'n', :t)"), {"t": now})
        conn.execute(sa.text("INSERT INTO image_decisions (batch, image_id, character_id, from_status, to_status, "
                             "feedback_id, created_at) VALUES ('b', 2, 2, 'pending', 'rejected', 1, :t)"), {"t": now})
    monkeypatch.setattr("lora_studio.core.db.MIGRATIONS", migrations.MIGRATIONS)
    assert db.migrate() == migrations.LATEST
    assert columns(db.engine) == expected()
    indexes = {i["name"] for i in sa.inspect(db.engine).get_indexes("images")}
    assert {"ix_images_character_status", "ix_images_sha256", "ix_images_project_status"} <= indexes
    with db.begin() as conn:
        rows = conn.execute(sa.select(schema.images).order_by(schema.images.c.id)).all()
        assert [(r.id, r.character_id, r.project_id) for r in rows] == [(1, 1, 1), (2, 2, 2), (3, 2, 2)]
        r = rows[1]
        assert (r.status, r.caption, r.meta, r.phash, r.file_missing, r.suggestion_confidence) == (
            "rejected", "cap", {"k": 1}, "00ff", True, 0.5)
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.feedback)).scalar() == 1
        decision = conn.execute(sa.select(schema.image_decisions)).one()
        assert (decision.image_id, decision.feedback_id) == (2, 1)
        # an image may now wait without a character
        conn.execute(schema.images.insert().values(
            id=4, character_id=None, project_id=1, rel_path="p/_unassigned/images/u.png", sha256="cd", status="pending",
            source="upload", width=8, height=8, meta={}, created_at=now, updated_at=now))
    with pytest.raises(sa.exc.IntegrityError), db.begin() as conn:  # foreign keys are enforced again
        conn.execute(schema.images.insert().values(
            character_id=None, project_id=99, rel_path="z.png", sha256="cd", status="pending", source="upload",
            width=8, height=8, meta={}, created_at=now, updated_at=now))
    with db.begin() as conn:  # and cascade: deleting project 2 takes its images, their feedback and decisions
        conn.execute(schema.projects.delete().where(schema.projects.c.id == 2))
        assert conn.execute(sa.select(schema.images.c.id).order_by(schema.images.c.id)).scalars().all() == [1, 4]
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.feedback)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.image_decisions)).scalar() == 0
    assert db.migrate() == migrations.LATEST  # nothing left to apply
    db.dispose()
