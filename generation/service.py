"""Generation: the character's SSOT prompt + project style + current LoRA → a ComfyUI graph,
queued on ComfyUI's /prompt; the result is followed through /history."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..core.characters import CharacterPrompt, CharacterService
from ..core.db import Database, iso, utcnow
from ..core.errors import InvalidInput, NotFound
from ..core.samplers import SamplerNames
from ..core.schema import generations
from .client import ComfyUIClient
from .graph import build_txt2img


@dataclass(frozen=True)
class Generation:
    """A generation as services pass it; the routes answer it as JSON, its fields in this order."""

    id: int
    character_id: int
    lora_model_id: int | None
    prompt_id: str | None  # ComfyUI's id for the queued graph
    status: str  # queued, succeeded, failed
    graph: dict  # the API-format graph sent to ComfyUI
    outputs: list | None  # ComfyUI's output images ({filename, subfolder, type})
    error: str | None
    created_at: str  # ISO 8601, UTC
    updated_at: str


def generation_record(row: Any) -> Generation:
    return Generation(id=row.id, character_id=row.character_id, lora_model_id=row.lora_model_id,
                      prompt_id=row.prompt_id, status=row.status, graph=row.graph, outputs=row.outputs,
                      error=row.error, created_at=iso(row.created_at), updated_at=iso(row.updated_at))


class GenerationService:
    def __init__(self, db: Database, characters: CharacterService, client: Callable[[], ComfyUIClient],
                 samplers: SamplerNames | None = None):
        self.db = db
        self.characters = characters
        self.client = client
        self.samplers = samplers or SamplerNames(client)

    def build_graph(self, character_id: int, seed: int | None = None, batch_size: int = 1,
                    use_lora: bool = True) -> tuple[dict, CharacterPrompt]:
        p = self.characters.prompt(character_id)
        style = p.style
        if not style.checkpoint:
            raise InvalidInput("the project's style has no checkpoint; set one first")
        # a style saved before names were checked, or a sampler ComfyUI no longer has: a 400 here, not a 502
        sampler, scheduler = self.samplers.check(style.sampler, style.scheduler)
        graph = build_txt2img(
            checkpoint=style.checkpoint, positive=p.positive, negative=p.negative,
            sampler=sampler, scheduler=scheduler, steps=style.steps, cfg=style.cfg,
            width=style.width, height=style.height, clip_skip=style.clip_skip,
            seed=random.randrange(2**32) if seed is None else seed, batch_size=batch_size,
            lora_name=p.lora_name if use_lora else None, lora_strength=style.lora_strength,
            filename_prefix=f"lora_studio/{p.project_slug}/{p.character_slug}",
        )
        return graph, p

    def generate(self, character_id: int, seed: int | None = None, batch_size: int = 1,
                 use_lora: bool = True) -> Generation:
        """Queue the character's graph on ComfyUI (seed None: a random one) and record the generation."""
        graph, p = self.build_graph(character_id, seed, batch_size, use_lora)
        with self.db.begin() as conn:
            lora_id = CharacterService.row_with_project(conn, character_id)[0].current_lora_id
        answer = self.client().queue_prompt(graph, extra_pnginfo={"lora_studio": {"character_id": character_id}})
        now = utcnow()
        with self.db.begin() as conn:
            gid = conn.execute(generations.insert().values(
                character_id=character_id, lora_model_id=lora_id if p.lora_name and use_lora
                else None, prompt_id=answer["prompt_id"], status="queued", graph=graph,
                created_at=now, updated_at=now)).inserted_primary_key[0]
        return self.get(gid)

    def get(self, generation_id: int, refresh: bool = False) -> Generation:
        with self.db.begin() as conn:
            row = conn.execute(sa.select(generations).where(generations.c.id == generation_id)).first()
        if row is None:
            raise NotFound(f"generation {generation_id} does not exist")
        if refresh and row.status == "queued" and row.prompt_id:
            entry = self.client().history(row.prompt_id)
            if entry:
                status = entry.get("status", {})
                done = status.get("completed")
                new = "succeeded" if done else ("failed" if status.get("status_str") == "error" else "queued")
                images = [img for out in entry.get("outputs", {}).values() for img in out.get("images", [])]
                with self.db.begin() as conn:
                    conn.execute(generations.update().where(generations.c.id == generation_id).values(
                        status=new, outputs=images, updated_at=utcnow()))
                return self.get(generation_id)
        return generation_record(row)
