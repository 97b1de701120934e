"""Generation: the character's SSOT prompt + project style + current LoRA → a ComfyUI graph (txt2img,
img2img, reference refinement, image-to-video or a project's own template), checked against the
server's `/object_info`, queued on ComfyUI's /prompt and followed to its outputs.

A generation row goes queued → running (with a progress value) → succeeded, failed or cancelled. The
state comes from ComfyUI: its websocket (generation/progress.py, while one is connected) and, on every
refresh, its /queue and /history — a prompt ComfyUI no longer knows (a restart, a cleared queue) ends
failed with that message instead of staying queued for ever."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from ..core.characters import CharacterPrompt, CharacterService
from ..core.db import Database, iso, utcnow
from ..core.errors import Conflict, InvalidInput, NotFound
from ..core.pagination import Page
from ..core.samplers import SamplerNames
from ..core.schema import generations
from ..core.text import merge_terms
from ..datasets.images import ImageService
from .checks import check_graph
from .client import ComfyUIClient, queue_ids
from .graph import build_img2img, build_reference, build_txt2img, build_video, plan_reference, plan_video
from .template_store import TemplateStore
from .templates import fill_template

log = logging.getLogger("lora_studio.generation")

KINDS = ("txt2img", "img2img", "reference", "video", "template")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE = ("queued", "running")
OBJECT_INFO_TTL = 60.0  # seconds a server's /object_info is reused (its file lists change when models are added)
MAX_IMAGES = 8
UPLOAD_FOLDER = "lora_studio"  # below ComfyUI's input folder


@dataclass(frozen=True)
class Generation:
    """A generation as services pass it; the routes answer it as JSON, its fields in this order."""

    id: int
    character_id: int
    lora_model_id: int | None
    prompt_id: str | None  # ComfyUI's id for the queued graph
    status: str  # one of STATUSES
    graph: dict  # the API-format graph sent to ComfyUI
    outputs: list | None  # ComfyUI's output files ({filename, subfolder, type}; a video: "animated")
    error: str | None
    created_at: str  # ISO 8601, UTC
    updated_at: str
    kind: str  # one of KINDS
    seed: int | None
    progress: float  # 0..1 while running (ComfyUI's sampler steps)
    params: dict  # the request's own fields (images, denoise, template, …)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


def generation_record(row: Any) -> Generation:
    return Generation(id=row.id, character_id=row.character_id, lora_model_id=row.lora_model_id,
                      prompt_id=row.prompt_id, status=row.status, graph=row.graph, outputs=row.outputs,
                      error=row.error, created_at=iso(row.created_at), updated_at=iso(row.updated_at),
                      kind=row.kind or "txt2img", seed=row.seed, progress=float(row.progress or 0.0),
                      params=row.params or {})


@dataclass(frozen=True)
class GenerationRequest:
    """What to generate (the adapters check types and bounds; the service checks the rest)."""

    kind: str = "txt2img"
    seed: int | None = None  # None: a random one
    batch_size: int = 1
    use_lora: bool = True
    image_ids: tuple[int, ...] = ()  # approved images of the character: img2img/video the first, reference all
    denoise: float | None = None  # img2img, reference (< 1: start from the first reference)
    weight: float | None = None  # reference
    method: str | None = None  # reference: ipadapter, unclip or img2img (None: the best the server has)
    template_id: int | None = None  # template
    prompt_extra: str = ""  # appended to the positive prompt (e.g. a pose for batch generation)
    frames: int | None = None  # video
    fps: float | None = None  # video

    def params(self) -> dict:
        """The request as the generation row keeps it (what was asked, for the panel and a retry)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("seed", "kind") and v not in (None, "", ())}
        if self.image_ids:
            out["image_ids"] = list(self.image_ids)
        return out


class GenerationService:
    def __init__(self, db: Database, characters: CharacterService, client: Callable[[], ComfyUIClient],
                 samplers: SamplerNames | None = None, images: ImageService | None = None,
                 templates: TemplateStore | None = None, gpu_busy: Callable[[], str | None] | None = None):
        self.db = db
        self.characters = characters
        self.client = client
        self.samplers = samplers or SamplerNames(client)
        self.images = images
        self.templates = templates
        self.gpu_busy = gpu_busy or (lambda: None)  # why the studio's generations must wait now (a training), or None
        self.client_id = f"lora-studio-{uuid.uuid4().hex[:12]}"  # ComfyUI sends our prompts' progress to this client
        self._info: tuple[float, str, dict] | None = None  # (fetched at, server URL, /object_info)
        self._info_lock = threading.Lock()
        self.on_queued: Callable[[], None] = lambda: None  # the progress watcher starts on the first generation

    # -- the server ----------------------------------------------------------------------------
    def object_info(self, client: ComfyUIClient, fresh: bool = False) -> dict:
        """The server's `/object_info`, reused for OBJECT_INFO_TTL seconds (about 1 MB)."""
        with self._info_lock:
            now = time.monotonic()
            if (not fresh and self._info is not None and self._info[1] == client.base_url
                    and now - self._info[0] < OBJECT_INFO_TTL):
                return self._info[2]
        info = client.object_info()
        with self._info_lock:
            self._info = (time.monotonic(), client.base_url, info)
        return info

    # -- building ------------------------------------------------------------------------------
    def _source_images(self, character_id: int, request: GenerationRequest) -> list[tuple[int, str, bytes]]:
        """(image id, LoadImage name, bytes) of the request's images: approved images of this character."""
        needs = {"img2img": (1, 1), "video": (1, 1), "reference": (1, MAX_IMAGES), "template": (0, 1),
                 "txt2img": (0, 0)}[request.kind]
        ids = list(dict.fromkeys(request.image_ids))
        if not needs[0] <= len(ids) <= needs[1]:
            want = "no image" if needs[1] == 0 else (
                f"{needs[0]} image" if needs[0] == needs[1] else f"{needs[0]} to {needs[1]} images")
            raise InvalidInput(f"a {request.kind} generation takes {want} (image_ids), not {len(ids)}")
        if not ids:
            return []
        if self.images is None:
            raise InvalidInput("this studio cannot read images for generation")
        out = []
        for iid in ids:
            record = self.images.get(iid)
            if record.character_id != character_id or record.status != "approved":
                raise InvalidInput(f"image {iid} is not an approved image of character {character_id}")
            data = self.images.file_path(iid).read_bytes()
            suffix = record.rel_path.rsplit(".", 1)[-1].lower() if "." in record.rel_path else "png"
            out.append((iid, f"{UPLOAD_FOLDER}/image-{iid}.{suffix}", data))
        return out

    def build_graph(self, character_id: int, request: GenerationRequest | None = None, *,
                    object_info: dict | None = None, image_names: list[str] | None = None
                    ) -> tuple[dict, CharacterPrompt, int]:
        """The graph of a request (txt2img when none), the character's prompts and the seed it uses.
        `object_info` (the server's) is needed for reference, video and template graphs; `image_names`
        are the request's images as LoadImage names (in ComfyUI's input folder)."""
        request = request or GenerationRequest()
        if request.kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
        p = self.characters.prompt(character_id)
        style = p.style
        seed = random.randrange(2**32) if request.seed is None else request.seed
        positive = merge_terms(p.positive, request.prompt_extra) if request.prompt_extra else p.positive
        names = list(image_names or [])
        if request.kind == "video":
            plan = plan_video(object_info or {})
            return build_video(plan, image=names[0], positive=positive, negative=p.negative, seed=seed,
                               frames=request.frames, fps=request.fps,
                               filename_prefix=f"lora_studio/{p.project_slug}/{p.character_slug}-video"), p, seed
        if request.kind == "template":
            return self._template_graph(p, request, positive, seed, names), p, seed
        if not style.checkpoint:
            raise InvalidInput("the project's style has no checkpoint; set one first")
        # a style saved before names were checked, or a sampler ComfyUI no longer has: a 400 here, not a 502
        sampler, scheduler = self.samplers.check(style.sampler, style.scheduler)
        common = dict(
            checkpoint=style.checkpoint, positive=positive, negative=p.negative,
            sampler=sampler, scheduler=scheduler, steps=style.steps, cfg=style.cfg,
            width=style.width, height=style.height, clip_skip=style.clip_skip, seed=seed,
            batch_size=request.batch_size, lora_name=p.lora_name if request.use_lora else None,
            lora_strength=style.lora_strength, filename_prefix=f"lora_studio/{p.project_slug}/{p.character_slug}",
        )
        if request.kind == "txt2img":
            graph = build_txt2img(**common)
        elif request.kind == "img2img":
            extra = {} if request.denoise is None else {"denoise": request.denoise}
            graph = build_img2img(image=names[0], **extra, **common)
        else:  # reference
            plan = plan_reference(object_info or {}, references=len(names), method=request.method)
            extra = {k: v for k, v in (("denoise", request.denoise), ("weight", request.weight)) if v is not None}
            graph = build_reference(plan, images=names, **extra, **common)
        return graph, p, seed

    def _template_graph(self, p: CharacterPrompt, request: GenerationRequest, positive: str, seed: int,
                        names: list[str]) -> dict:
        if request.template_id is None:
            raise InvalidInput("a template generation needs template_id")
        if self.templates is None:
            raise InvalidInput("this studio has no templates")
        template = self.templates.get(request.template_id)
        with self.db.begin() as conn:
            project_id = CharacterService.row_with_project(conn, p.character_id)[0].project_id
        if template.project_id != project_id:
            raise InvalidInput(f"template {template.id} belongs to another project")
        style = p.style
        values: dict[str, Any] = {"positive": positive, "negative": p.negative, "seed": seed,
                                  "width": style.width, "height": style.height}
        if style.checkpoint:
            values["checkpoint"] = style.checkpoint
        if p.lora_name and request.use_lora:
            values["lora_name"], values["lora_strength"] = p.lora_name, style.lora_strength
        if names:
            if "image" not in template.bindings:
                raise InvalidInput(f"template '{template.name}' binds no input to the image")
            values["image"] = names[0]
        return fill_template(template.graph, template.bindings, values)

    # -- queueing ------------------------------------------------------------------------------
    def generate(self, character_id: int, request: GenerationRequest | None = None) -> Generation:
        """Build the request's graph (txt2img when none; seed None: a random one), check it against the
        server's /object_info, upload its images, queue it on ComfyUI and record the generation. Refused
        (409) while a training uses the GPU ComfyUI shares (`gpu_busy`)."""
        request = request or GenerationRequest()
        busy = self.gpu_busy()
        if busy:
            raise Conflict(busy)
        sources = self._source_images(character_id, request)
        client = self.client()
        info = self.object_info(client)
        graph, p, used_seed = self.build_graph(character_id, request, object_info=info,
                                               image_names=[name for _, name, _ in sources])
        try:
            check_graph(graph, info)
        except InvalidInput:
            info = self.object_info(client, fresh=True)  # a model added in the last minute: look again once
            check_graph(graph, info)
        for iid, name, data in sources:
            uploaded = client.upload_image(data, name.rsplit("/", 1)[-1], UPLOAD_FOLDER)
            if uploaded != name:
                raise InvalidInput(f"ComfyUI stored image {iid} as {uploaded!r} instead of {name!r}")
        with self.db.begin() as conn:
            lora_id = CharacterService.row_with_project(conn, character_id)[0].current_lora_id
        answer = client.queue_prompt(graph, client_id=self.client_id,
                                     extra_pnginfo={"lora_studio": {"character_id": character_id,
                                                                    "kind": request.kind}})
        now = utcnow()
        with self.db.begin() as conn:
            gid = conn.execute(generations.insert().values(
                character_id=character_id,
                lora_model_id=lora_id if p.lora_name and request.use_lora and request.kind != "video" else None,
                prompt_id=answer["prompt_id"], status="queued", graph=graph, kind=request.kind, seed=used_seed,
                progress=0.0, params=request.params(), created_at=now, updated_at=now)).inserted_primary_key[0]
        self.on_queued()
        return self.get(gid)

    # -- following -----------------------------------------------------------------------------
    def _row(self, generation_id: int) -> Any:
        with self.db.begin() as conn:
            row = conn.execute(sa.select(generations).where(generations.c.id == generation_id)).first()
        if row is None:
            raise NotFound(f"generation {generation_id} does not exist")
        return row

    def get(self, generation_id: int, refresh: bool = False) -> Generation:
        row = self._row(generation_id)
        if refresh and row.status in ACTIVE and row.prompt_id:
            self._refresh(row, self.client())
            row = self._row(generation_id)
        return generation_record(row)

    def list(self, character_id: int, limit: int = 50, cursor: int | None = None) -> Page[Generation]:
        """A character's generations, newest first; `cursor`: the id of the last one of the previous page."""
        with self.db.begin() as conn:
            CharacterService.row_with_project(conn, character_id)
            q = (sa.select(generations).where(generations.c.character_id == character_id)
                 .order_by(generations.c.id.desc()).limit(limit + 1))
            if cursor is not None:
                q = q.where(generations.c.id < cursor)
            rows = conn.execute(q).all()
        items = [generation_record(r) for r in rows[:limit]]
        return Page(items, str(items[-1].id) if len(rows) > limit else None)

    def active_ids(self) -> list[int]:
        with self.db.begin() as conn:
            return list(conn.execute(sa.select(generations.c.id).where(generations.c.status.in_(ACTIVE))
                                     .order_by(generations.c.id)).scalars())

    def _update(self, generation_id: int, **values: Any) -> bool:
        """Change an active generation (a finished one stays as it ended); whether it changed."""
        with self.db.begin() as conn:
            done = conn.execute(generations.update().where(generations.c.id == generation_id,
                                                           generations.c.status.in_(ACTIVE))
                                .values(updated_at=utcnow(), **values))
        return done.rowcount == 1

    def _refresh(self, row: Any, client: ComfyUIClient) -> None:
        """Where ComfyUI is with the prompt: its queue first, then its history (a prompt moves from one
        to the other), so a prompt found in neither is one ComfyUI lost."""
        running, pending = queue_ids(client.queue())
        if row.prompt_id in running:
            if row.status != "running":
                self._update(row.id, status="running")
            return
        if row.prompt_id in pending:
            return
        entry = client.history(row.prompt_id)
        if entry is None:
            self._update(row.id, status="failed", error=f"ComfyUI no longer has prompt {row.prompt_id} (it was "
                         "restarted or its queue was cleared before the prompt ran): generate again")
            return
        self.record_history(row.id, entry)

    def record_history(self, generation_id: int, entry: dict) -> None:
        """End a generation from its ComfyUI history entry: its outputs (images or a video), or the error."""
        status = entry.get("status") if isinstance(entry.get("status"), dict) else {}
        messages = [m for m in status.get("messages") or [] if isinstance(m, list | tuple) and len(m) == 2]
        outputs = [dict(item, animated=bool(out.get("animated") and any(out["animated"])))
                   if isinstance(out.get("animated"), list) else dict(item)
                   for out in (entry.get("outputs") or {}).values() if isinstance(out, dict)
                   for key in ("images", "gifs", "videos") for item in out.get(key) or [] if isinstance(item, dict)]
        if status.get("completed") or status.get("status_str") == "success":
            self._update(generation_id, status="succeeded", outputs=outputs, progress=1.0)
            return
        if status.get("status_str") != "error":
            return  # still running: the history has the entry before the end
        interrupted = any(m[0] == "execution_interrupted" for m in messages)
        error = next((m[1].get("exception_message") for m in messages
                      if m[0] == "execution_error" and isinstance(m[1], dict)), None)
        if interrupted:
            self._update(generation_id, status="cancelled", outputs=outputs, error="interrupted in ComfyUI")
        else:
            self._update(generation_id, status="failed", outputs=outputs,
                         error=f"ComfyUI failed the graph: {error or 'no details'}"[:2000])

    def record_progress(self, prompt_id: str, value: float) -> None:
        """ComfyUI reports a step of a prompt of ours (its websocket): running, with that progress."""
        with self.db.begin() as conn:
            conn.execute(generations.update().where(generations.c.prompt_id == prompt_id,
                                                    generations.c.status.in_(ACTIVE))
                         .values(status="running", progress=max(0.0, min(1.0, value)), updated_at=utcnow()))

    def give_up(self, generation_id: int, error: str) -> None:
        """End an active generation as failed without asking ComfyUI (it has not answered for a long time)."""
        self._update(generation_id, status="failed", error=error[:2000])

    def by_prompt(self, prompt_id: str) -> int | None:
        with self.db.begin() as conn:
            return conn.execute(sa.select(generations.c.id).where(generations.c.prompt_id == prompt_id)).scalar()

    def cancel(self, generation_id: int) -> Generation:
        """Take a queued generation off ComfyUI's queue, or interrupt it while it runs; a finished one is a 409."""
        row = self._row(generation_id)
        if row.status not in ACTIVE:
            raise Conflict(f"generation {generation_id} is {row.status}: only a queued or running one can be cancelled")
        client = self.client()
        running, _ = queue_ids(client.queue())
        if row.prompt_id in running:
            client.interrupt(row.prompt_id)
        else:
            client.delete_queued([row.prompt_id])
        self._update(generation_id, status="cancelled", error="cancelled")
        return self.get(generation_id)
