"""The approval state machine: decisions on one image or hundreds at once (one transaction), each
logged so the last one can be undone; rejections record feedback (categories + note).

Concurrency: the images of a batch are locked in id order (`FOR UPDATE` on PostgreSQL; SQLite
serialises writers) and a decision that would not change an image's status is a no-op, so two
reviewers deciding on the same images end consistent, without doubled feedback rows.

Images of a project's unassigned pool can be rejected (or reset) but not approved: an approved
image is training data of a character, so it needs one first (409, nothing changed)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from ..core.categories import validate_categories
from ..core.db import Database, utcnow
from ..core.errors import Conflict, InvalidInput, NotFound
from ..core.schema import feedback, image_decisions, images
from ..core.specs import DECIDE_SPEC, REJECT_SPEC
from ..core.validation import validate
from .images import image_dict

STATUS_OF = {"approve": "approved", "reject": "rejected", "reset": "pending"}
MAX_BATCH = 1000


class ReviewService:
    def __init__(self, db: Database, regenerator=None, auto_regenerate: bool = False):
        self.db = db
        self.regenerator = regenerator
        self.auto_regenerate = auto_regenerate

    def approve(self, image_id: int) -> dict:
        return self._apply([image_id], "approved")["images"][0]

    def reject(self, image_id: int, body: dict) -> dict:
        data = validate(body or {}, REJECT_SPEC)
        categories, note = self._reject_reason(data)
        result = self._regenerate(self._apply([image_id], "rejected", categories, note), data)
        return {**result["images"][0], "regeneration": result["regeneration"]}

    def decide(self, body: dict) -> dict:
        """{"image_ids": [...], "decision": "approve" | "reject" | "reset", "categories", "note"}"""
        data = validate(body, DECIDE_SPEC)
        ids = data["image_ids"]
        if not ids or len(ids) > MAX_BATCH or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InvalidInput(f"'image_ids' must hold 1 to {MAX_BATCH} image ids")
        categories, note = [], ""
        if data["decision"] == "reject":
            categories, note = self._reject_reason(data)
        result = self._apply(list(dict.fromkeys(ids)), STATUS_OF[data["decision"]], categories, note)
        return self._regenerate(result, data) if data["decision"] == "reject" else result

    def _regenerate(self, result: dict, data: dict) -> dict:
        """After rejections (committed), queue bounded regenerations when asked or configured."""
        wanted = data.get("regenerate", self.auto_regenerate)
        changed = set(result["changed"])
        chars = [i["character_id"] for i in result["images"] if i["id"] in changed and i["character_id"] is not None]
        result["regeneration"] = self.regenerator.after_rejection(chars) if wanted and chars and self.regenerator else []
        return result

    @staticmethod
    def _reject_reason(data: dict) -> tuple[list[str], str]:
        categories = validate_categories(data.get("categories"))
        note = data.get("note", "")
        if not categories and not note:
            raise InvalidInput("a rejection needs at least one category or a note")
        return categories, note

    def _apply(self, ids: list[int], status: str, categories: list[str] | None = None, note: str = "") -> dict:
        batch, now = uuid.uuid4().hex, utcnow()
        changed: list[int] = []
        with self.db.begin() as conn:
            q = sa.select(images.c.id, images.c.status, images.c.character_id).where(
                images.c.id.in_(ids)).order_by(images.c.id)
            if self.db.is_postgres:
                q = q.with_for_update()
            rows = {r.id: r for r in conn.execute(q)}
            missing = [i for i in ids if i not in rows]
            if missing:
                raise NotFound(f"no image with id {', '.join(map(str, missing[:20]))}" +
                               (" (nothing was changed)" if len(ids) > 1 else ""))
            if status == "approved":
                pool = [i for i in ids if rows[i].character_id is None]
                if pool:
                    raise Conflict(f"image {', '.join(map(str, pool[:20]))} has no character yet: assign it before "
                                   "approving" + (" (nothing was changed)" if len(ids) > 1 else ""))
            for image_id in ids:
                row = rows[image_id]
                if row.status == status:
                    continue
                conn.execute(images.update().where(images.c.id == image_id).values(
                    status=status, decided_at=None if status == "pending" else now, updated_at=now))
                feedback_id = None
                if status == "rejected" and row.character_id is not None:  # the pool has nobody to learn for
                    feedback_id = conn.execute(feedback.insert().values(
                        image_id=image_id, character_id=row.character_id, categories=categories or [], note=note,
                        created_at=now)).inserted_primary_key[0]
                conn.execute(image_decisions.insert().values(
                    batch=batch, image_id=image_id, character_id=row.character_id, from_status=row.status,
                    to_status=status, feedback_id=feedback_id, created_at=now))
                changed.append(image_id)
            result = conn.execute(sa.select(images).where(images.c.id.in_(ids))).all()
        by_id = {r.id: image_dict(r) for r in result}
        return {"batch": batch if changed else None, "changed": changed,
                "unchanged": [i for i in ids if i not in changed], "images": [by_id[i] for i in ids]}

    def undo(self, character_id: int | None = None) -> dict:
        """Revert the most recent decision batch (of a character, or of the whole studio). An image
        someone decided on again since then keeps its newer status."""
        with self.db.begin() as conn:
            q = sa.select(image_decisions.c.batch).order_by(image_decisions.c.id.desc()).limit(1)
            if character_id is not None:
                q = q.where(image_decisions.c.character_id == character_id)
            batch = conn.execute(q).scalar()
            if batch is None:
                raise Conflict("there is no decision to undo")
            rows = conn.execute(sa.select(image_decisions).where(image_decisions.c.batch == batch)
                                .order_by(image_decisions.c.image_id)).all()
            ids = [r.image_id for r in rows]
            lock = sa.select(images.c.id, images.c.status).where(images.c.id.in_(ids)).order_by(images.c.id)
            current = {r.id: r.status for r in conn.execute(lock.with_for_update() if self.db.is_postgres else lock)}
            reverted = []
            now = utcnow()
            for r in rows:
                if current.get(r.image_id) == r.to_status:
                    conn.execute(images.update().where(images.c.id == r.image_id).values(
                        status=r.from_status, updated_at=now,
                        decided_at=None if r.from_status == "pending" else now))
                    reverted.append(r.image_id)
                if r.feedback_id is not None:
                    conn.execute(feedback.delete().where(feedback.c.id == r.feedback_id))
            conn.execute(image_decisions.delete().where(image_decisions.c.batch == batch))
            result = {r.id: image_dict(r) for r in conn.execute(sa.select(images).where(images.c.id.in_(ids)))}
        return {"batch": batch, "reverted": reverted, "images": [result[i] for i in ids if i in result]}

