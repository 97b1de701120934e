"""The current schema, as SQLAlchemy Core tables (queries use these).

The database is brought to this shape by `migrations.py`; `tests/unit/test_schema.py` checks that
the migrated database and these tables agree, so the two cannot drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

TS = sa.DateTime(timezone=True)

projects = sa.Table(
    "projects", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("slug", sa.String(200), nullable=False, unique=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

generation_styles = sa.Table(
    "generation_styles", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, unique=True),
    sa.Column("checkpoint", sa.String(500), nullable=False, server_default=""),
    sa.Column("sampler", sa.String(100), nullable=False),
    sa.Column("scheduler", sa.String(100), nullable=False),
    sa.Column("steps", sa.Integer, nullable=False),
    sa.Column("cfg", sa.Float, nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("clip_skip", sa.Integer, nullable=False),
    sa.Column("positive_template", sa.Text, nullable=False),
    sa.Column("negative_template", sa.Text, nullable=False),
    sa.Column("lora_strength", sa.Float, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    # version 8: pose/expression variations for batch generation (a JSON list of prompt snippets; NULL: none)
    sa.Column("variations", sa.JSON, nullable=True),
)

lora_models = sa.Table(
    "lora_models", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=False),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="SET NULL"), nullable=True),
    sa.Column("file_name", sa.String(500), nullable=False, unique=True),
    sa.Column("base_model", sa.String(500), nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("alpha", sa.Float, nullable=False),
    sa.Column("steps", sa.Integer, nullable=False),
    sa.Column("learning_rate", sa.Float, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("image_count", sa.Integer, nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

characters = sa.Table(
    "characters", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("slug", sa.String(200), nullable=False),
    sa.Column("design_prompt", sa.Text, nullable=False, server_default=""),
    sa.Column("negative_prompt", sa.Text, nullable=False, server_default=""),
    sa.Column("trigger_word", sa.String(200), nullable=False, server_default=""),
    sa.Column("current_lora_id", sa.Integer,
              sa.ForeignKey("lora_models.id", ondelete="SET NULL", use_alter=True, name="fk_characters_current_lora"),
              nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("project_id", "slug", name="uq_characters_project_slug"),
)

images = sa.Table(
    "images", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    # None: the image waits in its project's unassigned pool (<project>/_unassigned/images/)
    sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=True),
    sa.Column("rel_path", sa.String(1000), nullable=False, unique=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("caption", sa.Text, nullable=False, server_default=""),
    sa.Column("source", sa.String(50), nullable=False),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.Column("decided_at", TS, nullable=True),
    sa.Column("phash", sa.String(16), nullable=True),  # perceptual hash (hex), for near-duplicates
    sa.Column("file_missing", sa.Boolean, nullable=False, server_default=sa.false()),
    # version 3: the classifier's suggestion (a character of the same project) and its confidence
    sa.Column("suggested_character_id", sa.Integer, nullable=True),
    sa.Column("suggestion_confidence", sa.Float, nullable=True),
    # version 4: every image belongs to a project (also while it has no character)
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    # version 5: colour signature (hex, datasets/phash.py) checked beside phash for near duplicates;
    # NULL for images recorded before it: filled in when an upload first needs it
    sa.Column("colour_hash", sa.String(96), nullable=True),
    sa.Index("ix_images_character_status", "character_id", "status", "id"),
    sa.Index("ix_images_sha256", "sha256"),
    sa.Index("ix_images_project_status", "project_id", "status", "id"),
)

feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=False),
    sa.Column("categories", sa.JSON, nullable=False),
    sa.Column("note", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", TS, nullable=False),
    sa.Index("ix_feedback_character", "character_id"),
    sa.Index("ix_feedback_image", "image_id", "id"),  # version 6
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="SET NULL"), nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("worker", sa.String(200), nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("started_at", TS, nullable=True),
    sa.Column("finished_at", TS, nullable=True),
    sa.Column("updated_at", TS, nullable=False),
    sa.Index("ix_jobs_status", "status", "id"),
)

generations = sa.Table(
    "generations", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=False),
    sa.Column("lora_model_id", sa.Integer, sa.ForeignKey("lora_models.id", ondelete="SET NULL"), nullable=True),
    sa.Column("prompt_id", sa.String(100), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("graph", sa.JSON, nullable=False),
    sa.Column("outputs", sa.JSON, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    # version 8: what was asked (txt2img, img2img, reference, video, template) and how far ComfyUI is
    sa.Column("kind", sa.String(20), nullable=False, server_default="txt2img"),
    sa.Column("seed", sa.BigInteger, nullable=True),
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("params", sa.JSON, nullable=True),  # the request's own fields (images, denoise, template, …)
    sa.Index("ix_generations_updated", "updated_at"),  # version 9: the gallery links outputs of recent ones
)

# -- version 2 ------------------------------------------------------------------------------------

# One row per status change, grouped by batch: what "undo the last decision" reverts.
image_decisions = sa.Table(
    "image_decisions", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("batch", sa.String(32), nullable=False),
    sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    # None (version 4): a decision on an image of the unassigned pool
    sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), nullable=True),
    sa.Column("from_status", sa.String(20), nullable=False),
    sa.Column("to_status", sa.String(20), nullable=False),
    sa.Column("feedback_id", sa.Integer, sa.ForeignKey("feedback.id", ondelete="SET NULL"), nullable=True),
    sa.Column("created_at", TS, nullable=False),
    # version 7: a rejection's reason, also for pool images (no feedback row); NULL on other entries and older ones
    sa.Column("categories", sa.JSON, nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    sa.Index("ix_image_decisions_character", "character_id", "id"),
    sa.Index("ix_image_decisions_image", "image_id", "id"),  # version 6
    sa.Index("ix_image_decisions_batch", "batch"),  # version 6
)

# A project's own negative terms for a rejection category (else the defaults apply).
feedback_terms = sa.Table(
    "feedback_terms", metadata,
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("category", sa.String(50), primary_key=True),
    sa.Column("terms", sa.Text, nullable=False),
)

# Learned negative terms a user dropped from a character's effective negative prompt.
dropped_terms = sa.Table(
    "dropped_terms", metadata,
    sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("term", sa.String(200), primary_key=True),
)

# -- version 8 ------------------------------------------------------------------------------------

# A project's imported ComfyUI workflows (API format) with their inputs bound to studio fields.
generation_templates = sa.Table(
    "generation_templates", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("graph", sa.JSON, nullable=False),
    sa.Column("bindings", sa.JSON, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
    sa.UniqueConstraint("project_id", "name", name="uq_generation_templates_project_name"),
)

# -- version 9 ------------------------------------------------------------------------------------

# ComfyUI's output folder, indexed (datasets/gallery_index.py): one row per image or video seen, with what its
# embedded graph says. Rows are derived from the files (a pass only stats them), except `favourite` and the trash.
gallery_items = sa.Table(
    "gallery_items", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("root", sa.String(32), nullable=False),  # which output folder: a key of its resolved path
    sa.Column("path", sa.String(1000), nullable=False),  # where the file is now, relative to the folder, with "/"
    sa.Column("original_path", sa.String(1000), nullable=True),  # a trashed file's place to go back to
    sa.Column("name", sa.String(1000), nullable=False),
    sa.Column("subfolder", sa.String(1000), nullable=False),
    sa.Column("kind", sa.String(10), nullable=False),  # image | video
    sa.Column("media_type", sa.String(50), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("width", sa.Integer, nullable=True),
    sa.Column("height", sa.Integer, nullable=True),
    sa.Column("positive", sa.Text, nullable=True),
    sa.Column("negative", sa.Text, nullable=True),
    sa.Column("params", sa.JSON, nullable=True),  # seed, sampler, scheduler, steps, cfg, checkpoint, loras
    sa.Column("favourite", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("trashed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("generation_id", sa.Integer, sa.ForeignKey("generations.id", ondelete="SET NULL"), nullable=True),
    sa.Column("character_id", sa.Integer, sa.ForeignKey("characters.id", ondelete="SET NULL"), nullable=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id", ondelete="SET NULL"), nullable=True),
    sa.Column("indexed_at", TS, nullable=False),
    sa.UniqueConstraint("root", "path", name="uq_gallery_items_root_path"),
    sa.Index("ix_gallery_items_page", "root", "trashed", "mtime_ns", "id"),
    sa.Index("ix_gallery_items_kind", "root", "trashed", "kind", "mtime_ns", "id"),
    sa.Index("ix_gallery_items_favourite", "root", "favourite", "trashed", "mtime_ns", "id"),
    sa.Index("ix_gallery_items_character", "character_id", "mtime_ns", "id"),
    sa.Index("ix_gallery_items_project", "project_id", "mtime_ns", "id"),
    sa.Index("ix_gallery_items_generation", "generation_id"),
    # PostgreSQL's full-text search over name and prompts (SQLite: the FTS5 table gallery_index.py keeps)
    sa.Index("ix_gallery_items_search",
             sa.text("to_tsvector('simple', coalesce(name, '') || ' ' || coalesce(positive, '') || ' ' || "
                     "coalesce(negative, ''))"), postgresql_using="gin").ddl_if(dialect="postgresql"),
)

# The LoRAs each gallery item's graph loaded, by name (the gallery's LoRA filter).
gallery_item_loras = sa.Table(
    "gallery_item_loras", metadata,
    sa.Column("item_id", sa.Integer, sa.ForeignKey("gallery_items.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(500), primary_key=True),
    sa.Index("ix_gallery_item_loras_name", "name", "item_id"),
)
