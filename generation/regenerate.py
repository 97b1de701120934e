"""Auto-regeneration: after a rejection, a generation job for that character with the refined
negative prompt — bounded: nothing when the character already has its target number of approved
images, at most `max_in_flight` jobs per character, and jobs (threads of the job runner), never a
process per click. A job waits for ComfyUI to finish the graph and puts the images it made into
the character's pending queue, which closes the loop."""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa

from ..core.db import Database
from ..core.errors import UpstreamError
from ..core.jobs import JobContext, JobRunner
from ..core.schema import images, jobs
from ..datasets.images import ImageService
from ..datasets.layout import DatasetLayout
from .batch import add_outputs
from .service import GenerationService

log = logging.getLogger("lora_studio.generation.regenerate")

KIND = "regenerate"


class Regenerator:
    def __init__(self, db: Database, images_: ImageService, generation: GenerationService, runner: JobRunner,
                 layout: DatasetLayout, target_approved: int, max_in_flight: int = 2,
                 poll_seconds: float = 2.0, timeout_seconds: float = 3600.0):
        self.db, self.images, self.generation, self.jobs, self.layout = db, images_, generation, runner, layout
        self.target_approved = target_approved
        self.max_in_flight = max_in_flight
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        runner.register(KIND, self._run)

    def after_rejection(self, character_ids: list[int]) -> list[dict]:
        """Queue a regeneration for each character that is below its target and has room."""
        return [self.maybe_queue(cid) for cid in dict.fromkeys(character_ids)]

    def maybe_queue(self, character_id: int) -> dict:
        with self.db.begin() as conn:
            approved = conn.execute(sa.select(sa.func.count()).select_from(images).where(
                images.c.character_id == character_id, images.c.status == "approved")).scalar()
            in_flight = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(
                jobs.c.kind == KIND, jobs.c.character_id == character_id,
                jobs.c.status.in_(("queued", "running")))).scalar()
        if approved >= self.target_approved:
            return {"character_id": character_id, "queued": None,
                    "reason": f"already {approved} approved images (target {self.target_approved})"}
        if in_flight >= self.max_in_flight:
            return {"character_id": character_id, "queued": None,
                    "reason": f"{in_flight} regeneration(s) already in flight (at most {self.max_in_flight})"}
        job = self.jobs.submit(KIND, {"character_id": character_id}, character_id=character_id)
        return {"character_id": character_id, "queued": job.id, "reason": None}

    def _run(self, ctx: JobContext) -> dict:
        character_id = ctx.payload["character_id"]
        gen = self.generation.generate(character_id)  # built now: the newest learned negatives
        ctx.progress(0.1, f"queued on ComfyUI as {gen.prompt_id}")
        deadline = time.monotonic() + self.timeout_seconds
        while gen.active:
            ctx.check_cancelled()
            if time.monotonic() > deadline:
                raise UpstreamError("ComfyUI did not finish the generation in time")
            time.sleep(self.poll_seconds)
            gen = self.generation.get(gen.id, refresh=True)
        if gen.status != "succeeded":
            raise UpstreamError(f"ComfyUI failed the generation {gen.prompt_id}")
        ctx.progress(0.9, "adding the images to the review queue")
        return {"generation_id": gen.id, **add_outputs(self.generation, self.images, self.layout, gen, character_id)}
