"""Classification and automatic review as jobs, over a project's or a character's pending images.

- classify: asks the configured backend which of the project's characters (the roster comes from
  the database) each pending image of the project shows (its unassigned pool and its characters);
  the suggestion and its confidence are stored on the image, and an image whose suggestion is at
  least `classify_threshold` sure and names another character is moved to that character (files
  and record). An image of the pool below the threshold stays there for a person to sort.
- auto-review: asks the vision model for a verdict per pending image of a character; below
  `review_reject_below` (or not solo) it is rejected with the categories its issues and low scores
  map to (classify.review_verdict; feedback as from a person), at or above `review_approve_above`
  approved, otherwise left for a person."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from ..core.characters import Character
from ..core.db import Database, utcnow
from ..core.errors import InvalidInput, StudioError, Unavailable
from ..core.jobs import Job, JobContext, JobRunner
from ..core.schema import images
from ..core.settings import Settings
from ..datasets.images import ImageService
from ..datasets.review import ReviewService
from .base import RosterEntry, decide, review_verdict
from .factory import make_backend

log = logging.getLogger("lora_studio.classification.service")


def roster_entry(character: Character) -> RosterEntry:
    return RosterEntry(slug=character.slug, name=character.name, design_prompt=character.design_prompt)


class ClassificationService:
    def __init__(self, db: Database, images_: ImageService, review: ReviewService, characters_, jobs: JobRunner,
                 settings: Settings):
        self.db, self.images, self.review, self.characters, self.jobs, self.settings = (
            db, images_, review, characters_, jobs, settings)
        self._backend: Any = None
        jobs.register("classify", self._run_classify)
        jobs.register("auto_review", self._run_review)

    def backend(self) -> Any:
        if self._backend is None:
            self._backend = make_backend(self.settings)
        return self._backend

    # -- requests ------------------------------------------------------------------------------
    def start_classify(self, project_id: int) -> Job:
        roster = self.characters.list(project_id).items
        if not roster:
            raise InvalidInput("the project has no characters to classify images into")
        if self.settings.classifier == "none":
            raise Unavailable("no classifier is configured (LORA_STUDIO_CLASSIFIER=ollama or embedding)")
        return self.jobs.submit("classify", {"project_id": project_id})

    def start_review(self, character_id: int) -> Job:
        self.characters.get(character_id)
        if self.settings.classifier != "ollama":
            raise Unavailable("automatic review needs the vision-model classifier (LORA_STUDIO_CLASSIFIER=ollama)")
        return self.jobs.submit("auto_review", {"character_id": character_id}, character_id=character_id)

    # -- jobs ----------------------------------------------------------------------------------
    def _pending(self, where) -> list[Any]:
        with self.db.begin() as conn:
            return conn.execute(sa.select(images.c.id, images.c.rel_path, images.c.character_id)
                                .where(images.c.status == "pending", where).order_by(images.c.id)).all()

    def _run_classify(self, ctx: JobContext) -> dict:
        project_id = ctx.payload["project_id"]
        characters = self.characters.list(project_id).items
        roster = [roster_entry(c) for c in characters]
        by_slug = {c.slug: c for c in characters}
        todo = self._pending(images.c.project_id == project_id)
        backend = self.backend()
        references = None
        moved, suggested, failed, unsure = [], 0, [], []
        for n, row in enumerate(todo, 1):
            ctx.check_cancelled()
            path = self.images.layout.abs_path(row.rel_path)
            try:
                if self.settings.classifier == "embedding":
                    if references is None:
                        references = {c.slug: [i.path for i in self.images.approved_items(c.id)]
                                      for c in characters}
                    suggestion = backend.classify(path, references)
                else:
                    suggestion = backend.classify(path, roster)
            except StudioError as e:  # one bad image or answer does not end the job
                failed.append({"image_id": row.id, "reason": e.message})
                continue
            target = by_slug.get(suggestion.character) if suggestion.character else None
            with self.db.begin() as conn:
                conn.execute(images.update().where(images.c.id == row.id).values(
                    suggested_character_id=target.id if target else None,
                    suggestion_confidence=suggestion.confidence if target else 0.0, updated_at=utcnow()))
            suggested += 1
            chosen = decide(suggestion, self.settings.classify_threshold)
            if chosen and target and target.id != row.character_id:
                try:
                    self.images.reassign(row.id, character_id=target.id)
                    moved.append(row.id)
                except StudioError as e:
                    failed.append({"image_id": row.id, "reason": e.message})
            elif row.character_id is None and not (chosen and target):
                unsure.append(row.id)
            ctx.progress(n / len(todo), f"classified {n}/{len(todo)}")
        return {"classified": suggested, "moved": moved, "left_unassigned": unsure, "failed": failed}

    def _run_review(self, ctx: JobContext) -> dict:
        character = self.characters.get(ctx.payload["character_id"])
        todo = self._pending(images.c.character_id == character.id)
        backend = self.backend()
        approved, rejected, kept, failed = [], [], [], []
        for n, row in enumerate(todo, 1):
            ctx.check_cancelled()
            try:
                verdict = backend.review(self.images.layout.abs_path(row.rel_path), roster_entry(character))
            except StudioError as e:
                failed.append({"image_id": row.id, "reason": e.message})
                continue
            score = min(verdict.match, verdict.clarity, verdict.training_value)
            rejection = review_verdict(verdict, self.settings.review_reject_below)
            if rejection is not None:
                categories, reason = rejection
                self.review.reject(row.id, categories=categories, note=f"automatic review: {reason}"[:5000],
                                   regenerate=False)
                rejected.append(row.id)
            elif score >= self.settings.review_approve_above:
                self.review.approve(row.id)
                approved.append(row.id)
            else:
                kept.append(row.id)
            ctx.progress(n / len(todo), f"reviewed {n}/{len(todo)}")
        return {"approved": approved, "rejected": rejected, "left_pending": kept, "failed": failed}
