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


def _v4_tables(images_name: str, decisions_name: str) -> tuple[sa.Table, sa.Table]:
    """images and image_decisions as they stand at version 4 (frozen here), under the given names."""
    ts = sa.DateTime(timezone=True)
    md = sa.MetaData()
    for name in ("characters", "projects", "feedback"):  # targets of the foreign keys
        sa.Table(name, md, sa.Column("id", sa.Integer, primary_key=True))
    imgs = sa.Table(
        images_name, md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=True),
        sa.Column("rel_path", sa.String(1000), nullable=False, unique=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("caption", sa.Text, nullable=False, server_default=""),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("decided_at", ts, nullable=True),
        sa.Column("phash", sa.String(16), nullable=True),
        sa.Column("file_missing", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("suggested_character_id", sa.Integer, nullable=True),
        sa.Column("suggestion_confidence", sa.Float, nullable=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    )
    if images_name != "images":  # the decisions refer to "images": the rebuilt table once it is renamed
        sa.Table("images", md, sa.Column("id", sa.Integer, primary_key=True))
    decisions = sa.Table(
        decisions_name, md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("batch", sa.String(32), nullable=False),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=True),
        sa.Column("from_status", sa.String(20), nullable=False),
        sa.Column("to_status", sa.String(20), nullable=False),
        sa.Column("feedback_id", sa.Integer, sa.ForeignKey("feedback.id", ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", ts, nullable=False),
    )
    return imgs, decisions


V4_INDEXES = [
    ("ix_images_character_status", "images", ("character_id", "status", "id")),
    ("ix_images_sha256", "images", ("sha256",)),
    ("ix_images_project_status", "images", ("project_id", "status", "id")),
    ("ix_image_decisions_character", "image_decisions", ("character_id", "id")),
]


def _v4_unassigned_pool(conn: sa.Connection) -> None:
    """Images belong to a project and may have no character (the unassigned pool); so may the
    decisions logged on them."""
    if conn.dialect.name == "sqlite":
        _v4_sqlite(conn)
        return
    conn.execute(sa.text("ALTER TABLE images ADD COLUMN project_id INTEGER "
                         "REFERENCES projects (id) ON DELETE CASCADE"))
    conn.execute(sa.text("UPDATE images SET project_id = characters.project_id FROM characters "
                         "WHERE characters.id = images.character_id"))
    conn.execute(sa.text("ALTER TABLE images ALTER COLUMN project_id SET NOT NULL"))
    conn.execute(sa.text("ALTER TABLE images ALTER COLUMN character_id DROP NOT NULL"))
    conn.execute(sa.text("ALTER TABLE image_decisions ALTER COLUMN character_id DROP NOT NULL"))
    conn.execute(sa.text("CREATE INDEX ix_images_project_status ON images (project_id, status, id)"))


def _v4_sqlite(conn: sa.Connection) -> None:
    """SQLite cannot drop a NOT NULL: the tables are rebuilt (create new, copy, drop, rename,
    indexes). With foreign keys on, dropping `images` would cascade-delete its feedback and
    decisions, and renames would rewrite the references of other tables; `PRAGMA foreign_keys`
    only changes outside a transaction, so the migration so far is committed, the rebuild runs in
    its own transaction with foreign keys off and checked with `foreign_key_check` before it
    commits, and a transaction is open again when this returns. The rebuild is skipped when it is
    already done (a crash between its commit and the version row)."""
    sql = conn.exec_driver_sql
    sql("COMMIT")
    sql("PRAGMA foreign_keys=OFF")
    sql("BEGIN IMMEDIATE")
    try:
        done = any(c["name"] == "project_id" for c in sa.inspect(conn).get_columns("images"))
        if not done:
            imgs, decisions = _v4_tables("images_v4", "image_decisions_v4")
            imgs.create(conn)
            decisions.create(conn)
            old = [c.name for c in imgs.columns if c.name != "project_id"]
            cols = ", ".join(old)
            sql(f"INSERT INTO images_v4 ({cols}, project_id) SELECT {cols}, "
                "(SELECT characters.project_id FROM characters WHERE characters.id = images.character_id) FROM images")
            cols = ", ".join(c.name for c in decisions.columns)
            sql(f"INSERT INTO image_decisions_v4 ({cols}) SELECT {cols} FROM image_decisions")
            sql("DROP TABLE image_decisions")  # its indexes go with it
            sql("DROP TABLE images")
            sql("ALTER TABLE images_v4 RENAME TO images")
            sql("ALTER TABLE image_decisions_v4 RENAME TO image_decisions")
            for name, table, columns in V4_INDEXES:
                sql(f"CREATE INDEX {name} ON {table} ({', '.join(columns)})")
            broken = sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration 4 would leave broken foreign keys: {broken[:5]}")
        sql("COMMIT")
    except BaseException:
        sql("ROLLBACK")
        raise
    finally:
        sql("PRAGMA foreign_keys=ON")
        sql("BEGIN IMMEDIATE")


def _v5_colour_hash(conn: sa.Connection) -> None:
    """A colour signature beside the structural hash: near duplicates must match in both. Images
    already recorded keep NULL until an upload needs theirs (computed from the file then)."""
    conn.execute(sa.text("ALTER TABLE images ADD COLUMN colour_hash VARCHAR(96)"))


def _v6_lookups_by_image(conn: sa.Connection) -> None:
    """The decision log and feedback looked up by image and by batch: an image's last log entry and a
    batch's entries (undo), the latest rejection of each listed image, and the cascade when an image is
    deleted, without whole-table scans."""
    conn.execute(sa.text("CREATE INDEX ix_image_decisions_image ON image_decisions (image_id, id)"))
    conn.execute(sa.text("CREATE INDEX ix_image_decisions_batch ON image_decisions (batch)"))
    conn.execute(sa.text("CREATE INDEX ix_feedback_image ON feedback (image_id, id)"))


def _v7_decision_reasons(conn: sa.Connection) -> None:
    """A rejection's categories and note on its decision log entry, for every image: an image of the
    unassigned pool has no feedback row (no character to learn for), so its note had nowhere to go.
    Entries logged earlier keep NULL (their feedback row, if any, still has the note)."""
    conn.execute(sa.text("ALTER TABLE image_decisions ADD COLUMN categories JSON"))
    conn.execute(sa.text("ALTER TABLE image_decisions ADD COLUMN note TEXT"))


def _v8_generation_modes(conn: sa.Connection) -> None:
    """Generations say what they were (txt2img, img2img, reference, video, template), their seed, progress and
    request; a project's style gains batch variations; projects hold imported workflow templates."""
    for statement in (
        "ALTER TABLE generations ADD COLUMN kind VARCHAR(20) DEFAULT 'txt2img' NOT NULL",
        "ALTER TABLE generations ADD COLUMN seed BIGINT",
        "ALTER TABLE generations ADD COLUMN progress FLOAT DEFAULT 0 NOT NULL",
        "ALTER TABLE generations ADD COLUMN params JSON",
        "ALTER TABLE generation_styles ADD COLUMN variations JSON",
    ):
        conn.execute(sa.text(statement))
    frozen = sa.MetaData()
    sa.Table("projects", frozen, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table(
        "generation_templates", frozen,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("graph", sa.JSON, nullable=False),
        sa.Column("bindings", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project_id", "name", name="uq_generation_templates_project_name"),
    ).create(conn)


def _v9_gallery_index(conn: sa.Connection) -> None:
    """An index of ComfyUI's output folder (the gallery reads pages from it instead of walking the folder),
    the LoRAs each item loaded, and on PostgreSQL a GIN index for text search over the prompts (SQLite's
    FTS5 table is derived data the gallery index builds and keeps itself); generations by their last
    update (the index links the outputs of those that ended recently)."""
    ts = sa.DateTime(timezone=True)
    frozen = sa.MetaData()
    for name in ("generations", "characters", "projects"):  # targets of the foreign keys
        sa.Table(name, frozen, sa.Column("id", sa.Integer, primary_key=True))
    items = sa.Table(
        "gallery_items", frozen,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("root", sa.String(32), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("original_path", sa.String(1000), nullable=True),
        sa.Column("name", sa.String(1000), nullable=False),
        sa.Column("subfolder", sa.String(1000), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("media_type", sa.String(50), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("positive", sa.Text, nullable=True),
        sa.Column("negative", sa.Text, nullable=True),
        sa.Column("params", sa.JSON, nullable=True),
        sa.Column("favourite", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("trashed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("generation_id", sa.Integer, sa.ForeignKey("generations.id", ondelete="SET NULL"), nullable=True),
        sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="SET NULL"), nullable=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="SET NULL"), nullable=True),
        sa.Column("indexed_at", ts, nullable=False),
        sa.UniqueConstraint("root", "path", name="uq_gallery_items_root_path"),
        sa.Index("ix_gallery_items_page", "root", "trashed", "mtime_ns", "id"),
        sa.Index("ix_gallery_items_kind", "root", "trashed", "kind", "mtime_ns", "id"),
        sa.Index("ix_gallery_items_favourite", "root", "favourite", "trashed", "mtime_ns", "id"),
        sa.Index("ix_gallery_items_character", "character_id", "mtime_ns", "id"),
        sa.Index("ix_gallery_items_project", "project_id", "mtime_ns", "id"),
        sa.Index("ix_gallery_items_generation", "generation_id"),
    )
    loras = sa.Table(
        "gallery_item_loras", frozen,
        sa.Column("item_id", sa.Integer, sa.ForeignKey("gallery_items.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(500), primary_key=True),
        sa.Index("ix_gallery_item_loras_name", "name", "item_id"),
    )
    items.create(conn)
    loras.create(conn)
    conn.execute(sa.text("CREATE INDEX ix_generations_updated ON generations (updated_at)"))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text(
            "CREATE INDEX ix_gallery_items_search ON gallery_items USING gin (to_tsvector('simple', "
            "coalesce(name, '') || ' ' || coalesce(positive, '') || ' ' || coalesce(negative, '')))"))


MIGRATIONS: list[tuple[int, str, Callable[[sa.Connection], None]]] = [
    (1, "initial schema", _v1_initial),
    (2, "review: decision log, feedback terms, dropped terms, image hashes", _v2_review),
    (3, "classifier suggestions on images", _v3_suggestions),
    (4, "unassigned pool: images carry their project, the character is optional", _v4_unassigned_pool),
    (5, "colour signature of images for near duplicates", _v5_colour_hash),
    (6, "decision log and feedback indexed by image, the decision log by batch", _v6_lookups_by_image),
    (7, "a rejection's categories and note on its decision log entry (also in the pool)", _v7_decision_reasons),
    (8, "generation kinds, seed, progress and request; style variations; workflow templates", _v8_generation_modes),
    (9, "gallery index of ComfyUI's output folder, its LoRAs and text search", _v9_gallery_index),
]

LATEST = MIGRATIONS[-1][0]
