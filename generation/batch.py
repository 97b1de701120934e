"""Batch generation for dataset building: N images of a character, each with the next of the project's
pose/expression variations, at most `in_flight` queued on ComfyUI at once, as one job with progress;
the images land in the character's pending review queue with a caption (trigger word + variation) and
the graph as metadata. Also the step both this and auto-regeneration end with: a finished generation's
files fetched from ComfyUI into the review queue."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path

from ..core.errors import Conflict, InvalidInput, StudioError, UpstreamError
from ..core.jobs import Job, JobContext, JobRunner
from ..core.text import merge_terms
from ..datasets.images import ImageService
from ..datasets.layout import DatasetLayout, mkstemp_umask
from .service import Generation, GenerationRequest, GenerationService

log = logging.getLogger("lora_studio.generation.batch")

KIND = "generate_batch"
MAX_COUNT = 200
MAX_IN_FLIGHT = 8


def add_outputs(generation: GenerationService, images: ImageService, layout: DatasetLayout, gen: Generation,
                character_id: int, caption: str = "") -> dict:
    """Fetch a finished generation's files from ComfyUI and add them to the character's pending queue
    (the graph, generation and prompt id as metadata): {"created": [ids], "skipped": [...]}."""
    client = generation.client()
    files = []
    try:
        for out in gen.outputs or []:
            fd, name = mkstemp_umask(layout.staging_dir(), prefix="gen-")
            os.close(fd)
            tmp = Path(name)
            files.append((out["filename"], tmp, {"generation_id": gen.id, "prompt_id": gen.prompt_id,
                                                  "prompt": gen.graph}))
            tmp.write_bytes(client.view(out["filename"], out.get("subfolder", ""), out.get("type", "output")))
    except BaseException:
        for _, tmp, _meta in files:
            tmp.unlink(missing_ok=True)
        raise
    result = images.add_files(character_id, files, caption=caption, source="generation")
    return {"created": [i.id for i in result.created], "skipped": result.skipped}


class BatchGenerator:
    def __init__(self, generation: GenerationService, images: ImageService, runner: JobRunner,
                 layout: DatasetLayout, poll_seconds: float = 1.0, timeout_seconds: float = 3600.0):
        self.generation, self.images, self.jobs, self.layout = generation, images, runner, layout
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        runner.register(KIND, self._run)

    def start(self, character_id: int, count: int, request: GenerationRequest, in_flight: int = 2) -> Job:
        """Queue the batch job (its generations are queued on ComfyUI as it runs)."""
        if request.kind == "video":
            raise InvalidInput("batch generation makes images for the dataset: video is not one of its kinds")
        if not 1 <= count <= MAX_COUNT or not 1 <= in_flight <= MAX_IN_FLIGHT:
            raise InvalidInput(f"count must be 1-{MAX_COUNT} and in_flight 1-{MAX_IN_FLIGHT}")
        self.generation.characters.get(character_id)  # 404 first
        busy = self.generation.gpu_busy()
        if busy:
            raise Conflict(busy)
        payload = {"character_id": character_id, "count": count, "in_flight": in_flight,
                   "request": {"kind": request.kind, **request.params(),
                               **({"seed": request.seed} if request.seed is not None else {})}}
        return self.jobs.submit(KIND, payload, character_id=character_id)

    def _request(self, payload: dict, index: int, variations: list[str]) -> tuple[GenerationRequest, str]:
        """The index-th generation of the batch and its variation (its images' caption, after the trigger)."""
        raw = dict(payload["request"])
        raw["image_ids"] = tuple(raw.get("image_ids") or ())
        base = GenerationRequest(**raw)
        variation = variations[index % len(variations)] if variations else ""
        seed = None if base.seed is None else base.seed + index  # a fixed seed: one per image, reproducible
        return replace(base, seed=seed, batch_size=1,
                       prompt_extra=merge_terms(base.prompt_extra, variation)), variation

    def _run(self, ctx: JobContext) -> dict:
        p = ctx.payload
        cid, count, limit = p["character_id"], p["count"], p["in_flight"]
        prompt = self.generation.characters.prompt(cid)
        variations = list(prompt.style.variations or [])
        trigger = self.generation.characters.get(cid).trigger_word
        in_flight: dict[int, str] = {}  # generation id -> its caption
        created: list[int] = []
        skipped: list = []
        failed: list[dict] = []
        queued = 0
        deadline = time.monotonic() + self.timeout_seconds
        try:
            while queued < count or in_flight:
                ctx.check_cancelled()
                if time.monotonic() > deadline:
                    raise UpstreamError("ComfyUI did not finish the batch in time")
                while queued < count and len(in_flight) < limit:
                    busy = self.generation.gpu_busy()
                    if busy:  # a training took the GPU: wait for it, then go on
                        ctx.progress(len(created) / count, f"waiting: {busy}")
                        break
                    request, variation = self._request(p, queued, variations)
                    gen = self.generation.generate(cid, request)
                    in_flight[gen.id] = merge_terms(trigger, variation)
                    queued += 1
                for gid in list(in_flight):
                    gen = self.generation.get(gid, refresh=True)
                    if gen.active:
                        continue
                    caption = in_flight.pop(gid)
                    if gen.status == "succeeded":
                        added = add_outputs(self.generation, self.images, self.layout, gen, cid, caption)
                        created += added["created"]
                        skipped += added["skipped"]
                    else:
                        failed.append({"generation_id": gid, "status": gen.status, "error": gen.error})
                done = queued - len(in_flight)
                ctx.progress(done / count, f"{done}/{count} generations done, {len(created)} images added")
                if in_flight or queued < count:
                    time.sleep(self.poll_seconds)
        except BaseException:
            for gid in in_flight:  # a cancelled or failed batch leaves nothing running on ComfyUI
                try:
                    self.generation.cancel(gid)
                except StudioError:
                    pass
            raise
        if failed and not created:
            raise UpstreamError(f"every generation of the batch failed; the first: {failed[0]['error']}")
        return {"generated": queued, "created": created, "skipped": skipped, "failed": failed}
