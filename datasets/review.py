"""The approval state machine: decisions on one image or hundreds at once (one transaction), each
logged so the last one can be undone; rejections record feedback (categories + note).

Concurrency: the images of a batch are locked in id order (`FOR UPDATE` on PostgreSQL; SQLite
serialises writers) and a decision that would not change an image's status is a no-op, so two
reviewers deciding on the same images end consistent, without doubled feedback rows. Undo locks the
same way before it changes anything and reverts only entries that are still their image's last, so
each image's log stays one continuous chain (from_status = the previous entry's to_status) that
ends at its status, with a feedback row for each rejection of a character in it.

Images of a project's unassigned pool can be rejected (or reset) but not approved: an approved
image is training data of a character, so it needs one first (409, nothing changed)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa

from ..core.categories import CATEGORIES
from ..core.db import Database, utcnow
from ..core.errors import Conflict, InvalidInput, NotFound
from ..core.schema import feedback, image_decisions, images
from .images import ImageRecord, RejectedImage, image_records

STATUS_OF = {"approve": "approved", "reject": "rejected", "reset": "pending"}
MAX_BATCH = 1000
UNDO_TRIES = 5  # choices of the batch to undo, when other reviewers keep changing it


class ReviewService:
    def __init__(self, db: Database, regenerator=None, auto_regenerate: bool = False):
        self.db = db
        self.regenerator = regenerator
        self.auto_regenerate = auto_regenerate

    def approve(self, image_id: int) -> ImageRecord:
        return self._apply([image_id], "approved")["images"][0]

    def reject(self, image_id: int, *, categories: Sequence[str] = (), note: str = "",
               regenerate: bool | None = None) -> RejectedImage:
        """Reject one image for `categories` (rejection category names) and/or a `note`; `regenerate`
        (None: the setting) queues a generation with the refined negatives afterwards."""
        reason = self._reject_reason(categories, note)
        result = self._regenerate(self._apply([image_id], "rejected", *reason), regenerate)
        return RejectedImage.of(result["images"][0], result["regeneration"])

    def decide(self, image_ids: Sequence[int], decision: str, *, categories: Sequence[str] = (), note: str = "",
               regenerate: bool | None = None) -> dict:
        """Approve, reject or reset 1 to MAX_BATCH images in one transaction (`decision`: "approve" |
        "reject" | "reset"); a rejection takes categories and/or a note as `reject` does."""
        if decision not in STATUS_OF:
            raise InvalidInput(f"'decision' must be one of {', '.join(STATUS_OF)}")
        ids = list(dict.fromkeys(image_ids))
        if not 1 <= len(image_ids) <= MAX_BATCH:
            raise InvalidInput(f"'image_ids' must hold 1 to {MAX_BATCH} image ids")
        if decision != "reject":
            return self._apply(ids, STATUS_OF[decision])
        return self._regenerate(self._apply(ids, "rejected", *self._reject_reason(categories, note)), regenerate)

    def _regenerate(self, result: dict, regenerate: bool | None) -> dict:
        """After rejections (committed), queue bounded regenerations when asked or configured."""
        wanted = self.auto_regenerate if regenerate is None else regenerate
        changed = set(result["changed"])
        chars = [i.character_id for i in result["images"] if i.id in changed and i.character_id is not None]
        result["regeneration"] = self.regenerator.after_rejection(chars) if wanted and chars and self.regenerator else []
        return result

    @staticmethod
    def _reject_reason(categories: Sequence[str], note: str) -> tuple[list[str], str]:
        unknown = [c for c in categories if c not in CATEGORIES]
        if unknown:
            raise InvalidInput(f"unknown rejection categories: {', '.join(unknown)}; known: {', '.join(CATEGORIES)}")
        if not categories and not note:
            raise InvalidInput("a rejection needs at least one category or a note")
        return list(dict.fromkeys(categories)), note

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
                reason = {"categories": categories or [], "note": note} if status == "rejected" else {}
                conn.execute(image_decisions.insert().values(
                    batch=batch, image_id=image_id, character_id=row.character_id, from_status=row.status,
                    to_status=status, feedback_id=feedback_id, created_at=now, **reason))
                changed.append(image_id)
            result = conn.execute(sa.select(images).where(images.c.id.in_(ids))).all()
            by_id = {image.id: image for image in image_records(conn, result)}
        return {"batch": batch if changed else None, "changed": changed,
                "unchanged": [i for i in ids if i not in changed], "images": [by_id[i] for i in ids]}

    def undo(self, character_id: int | None = None) -> dict:
        """Revert the most recent decision batch (of a character, or of the whole studio) that still
        has an entry to revert. An image someone decided on again since then keeps its newer status,
        and its entry stays in the log (the chain of statuses continues through it).

        An entry is reverted (status back to its from_status, its feedback row and the entry deleted)
        only while it is its image's last entry and the image still has its to_status. The batch is
        chosen without locks, then its images are locked in id order (as `_apply` locks them) and
        its entries are checked again: if other reviewers re-decided or undid all of them in between,
        the locks are released and the choice starts over (a few times, then 409). Two undos at once
        thus revert two batches, as one after the other would."""
        for _ in range(UNDO_TRIES):
            with self.db.begin() as conn:
                batch = self._last_revertable_batch(conn, character_id)
                if batch is None:
                    raise Conflict("there is no decision to undo")
                ids = list(conn.execute(sa.select(image_decisions.c.image_id).where(image_decisions.c.batch == batch)
                                        .distinct().order_by(image_decisions.c.image_id)).scalars())
                lock = sa.select(images.c.id, images.c.status).where(images.c.id.in_(ids)).order_by(images.c.id)
                status = {r.id: r.status for r in conn.execute(lock.with_for_update() if self.db.is_postgres else lock)}
                entries = conn.execute(sa.select(image_decisions).where(image_decisions.c.batch == batch)
                                       .order_by(image_decisions.c.image_id)).all()
                last = dict(conn.execute(sa.select(image_decisions.c.image_id, sa.func.max(image_decisions.c.id))
                                         .where(image_decisions.c.image_id.in_(ids))
                                         .group_by(image_decisions.c.image_id)).all())
                revert = [e for e in entries if last.get(e.image_id) == e.id and status.get(e.image_id) == e.to_status]
                if not any(character_id in (None, e.character_id) for e in revert):
                    continue  # all re-decided or undone between the choice and the locks: choose again
                now, reverted = utcnow(), []
                for e in revert:  # the others were decided on again since: they keep their status and entry
                    conn.execute(image_decisions.delete().where(image_decisions.c.id == e.id))
                    if e.feedback_id is not None:
                        conn.execute(feedback.delete().where(feedback.c.id == e.feedback_id))
                    conn.execute(images.update().where(images.c.id == e.image_id).values(
                        status=e.from_status, updated_at=now, decided_at=None if e.from_status == "pending" else now))
                    reverted.append(e.image_id)
                rows = conn.execute(sa.select(images).where(images.c.id.in_(ids)).order_by(images.c.id)).all()
                return {"batch": batch, "reverted": reverted, "images": image_records(conn, rows)}
        raise Conflict("other reviewers kept changing these images while undoing; try again")

    @staticmethod
    def _last_revertable_batch(conn: sa.Connection, character_id: int | None) -> str | None:
        """The batch of the newest log entry that is still its image's last entry and matches the
        image's status (of the character's entries, when given)."""
        entry, later = image_decisions.alias("entry"), image_decisions.alias("later")
        q = (sa.select(entry.c.batch)
             .join(images, sa.and_(images.c.id == entry.c.image_id, images.c.status == entry.c.to_status))
             .where(~sa.exists().where(later.c.image_id == entry.c.image_id, later.c.id > entry.c.id))
             .order_by(entry.c.id.desc()).limit(1))
        if character_id is not None:
            q = q.where(entry.c.character_id == character_id)
        return conn.execute(q).scalar()
