"""Training as a job: checks the request (the character, its approved images, the base model from
the catalogue, ComfyUI being idle when it shares the GPU), writes the worker's config, runs the
worker as a subprocess through `worker_client` (so the host stays responsive and GPU memory is
freed when it ends), relays its events to the job (progress, samples, checkpoints) and records the
LoRA it wrote. Also: resuming from a checkpoint, a job's sample images, a character's LoRAs."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..core.characters import CharacterService
from ..core.db import Database, iso, utcnow
from ..core.errors import Conflict, InvalidInput, NotFound, StudioError, Unavailable
from ..core.host import Host
from ..core.jobs import Job, JobCancelled, JobContext, JobRunner
from ..core.pagination import Page, decode_cursor, encode_cursor
from ..core.schema import characters, lora_models
from ..datasets.images import ImageService
from ..generation.client import queue_ids
from . import config
from .catalog import BaseModels
from .errors import ConfigError
from .request import TrainRequest
from .worker_client import TrainState, WorkerProcess, event_int, latent_cache_dir, worker_env

log = logging.getLogger("lora_studio.training.service")

TRAIN_DEPS = ("torch", "diffusers", "peft", "transformers", "safetensors")
PROGRESS_EVERY_SECONDS = 0.5  # progress lines can come every few ms: the job row is written at most this often


@dataclass(frozen=True)
class LoraModel:
    """A LoRA a training wrote (into ComfyUI's loras folder); the routes answer it as JSON, its fields in this order."""

    id: int
    character_id: int
    job_id: int | None
    file_name: str  # in ComfyUI's loras folder
    base_model: str
    rank: int
    alpha: float
    steps: int
    learning_rate: float
    sha256: str
    image_count: int
    created_at: str  # ISO 8601, UTC


def lora_record(row: Any) -> LoraModel:
    return LoraModel(id=row.id, character_id=row.character_id, job_id=row.job_id, file_name=row.file_name,
                     base_model=row.base_model, rank=row.rank, alpha=row.alpha, steps=row.steps,
                     learning_rate=row.learning_rate, sha256=row.sha256, image_count=row.image_count,
                     created_at=iso(row.created_at))


def missing_train_deps() -> list[str]:
    return [m for m in TRAIN_DEPS if importlib.util.find_spec(m) is None]


class TrainingService:
    def __init__(self, db: Database, host: Host, images: ImageService, runner: JobRunner, jobs_dir: Path,
                 min_images: int, *, base_models: BaseModels,
                 characters: CharacterService | None = None,
                 comfyui: Callable[[], Any] | None = None, cache_dir: Path | None = None):
        self.db = db
        self.host = host
        self.images = images
        self.runner = runner
        self.jobs_dir = jobs_dir
        self.min_images = min_images
        self.base_models = base_models  # the catalogue: start() resolves and checks the base model there
        self.characters = characters or CharacterService(db)
        self.comfyui = comfyui  # () -> ComfyUIClient, for /queue and /free inside ComfyUI
        self.cache_dir = cache_dir or latent_cache_dir(jobs_dir.parent)
        runner.register("train", self._run, concurrency=1)  # one training at a time per GPU; the rest queue

    # -- requests ------------------------------------------------------------------------------
    def start(self, character_id: int, request: TrainRequest, *, comfy_prompt_id: str | None = None,
              model_path: Path | None = None) -> Job:
        """Queue a training job for a checked request (the adapters check it: ``TrainRequest.check``); the
        options it does not give get the defaults of the base model's architecture (training/config.py).
        `comfy_prompt_id`: the ComfyUI prompt running the Train LoRA node (that one does not count as
        ComfyUI being busy). `model_path`: a base model given as a path on the command line (the user's own
        machine; requests only ever name models from the list)."""
        self.characters_row(character_id)  # 404 first: the request names something that is not there
        self._check_deps()
        count = len(self.images.approved_items(character_id))
        if count < self.min_images:
            raise InvalidInput(f"the character has {count} approved image(s); training needs at least {self.min_images}")
        if model_path is not None:
            path = self.base_models.at_path(model_path)
        else:
            path = self.base_models.resolve(request.base_model)
        info = self.base_models.detect(request.base_model, path)
        try:
            options = config.resolve(request.options, info["arch"])
        except ConfigError as e:  # a request made without TrainRequest.check
            raise InvalidInput(str(e)) from None
        payload = {"character_id": character_id, "base_model": request.base_model, **options,
                   "base_model_path": str(path), "arch": info["arch"], "comfy_prompt_id": comfy_prompt_id}
        self._check_comfyui_idle(payload)
        return self.runner.submit("train", payload, character_id=character_id)

    def resume(self, job_id: int, *, comfy_prompt_id: str | None = None) -> Job:
        """A new job that continues a failed or cancelled training from its last checkpoint."""
        job = self.runner.get(job_id)
        if job.kind != "train":
            raise InvalidInput(f"job {job_id} is a {job.kind} job, not a training")
        if job.status not in ("failed", "cancelled"):
            raise Conflict(f"job {job_id} is {job.status}: only a failed or cancelled training can be resumed")
        checkpoint = self.last_checkpoint(job)
        if checkpoint is None:
            raise Conflict(f"training job {job_id} saved no checkpoint to resume from (checkpoint_every steps)")
        old = {k: v for k, v in (job.payload or {}).items() if k not in ("resume_from", "resumed_from_job")}
        self.characters_row(old["character_id"])
        self._check_deps()
        if not Path(old.get("base_model_path", "")).exists():
            raise InvalidInput(f"the base model of job {job_id} is gone: {old.get('base_model')}")
        payload = {**old, "resume_from": str(checkpoint), "resumed_from_job": job_id,
                   "comfy_prompt_id": comfy_prompt_id}
        self._check_comfyui_idle(payload)
        return self.runner.submit("train", payload, character_id=old["character_id"])

    def last_checkpoint(self, job: Job) -> Path | None:
        """The newest checkpoint folder the job's worker reported (or left) in its work folder. Only
        folders that resolve inside the jobs folder count: a job, checkpoints or step folder that is a
        link out of it (planted in the data folder) is never handed to a worker to load."""
        try:
            root = self.jobs_dir.resolve()
            work = self.job_dir(job.id)
            if not work.is_relative_to(root):
                return None
            inside = lambda p: p.is_relative_to(work) and p.is_dir()  # noqa: E731
            reported = ((job.result or {}).get("checkpoint") or {}).get("path")
            if reported and inside(Path(reported).resolve()):
                return Path(reported).resolve()
            folder = work / "checkpoints"
            dirs = [p.resolve() for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []
            dirs = [p for p in dirs if inside(p)]
            if dirs:
                return max(dirs, key=lambda p: p.stat().st_mtime)
            earlier = (job.payload or {}).get("resume_from")  # a resumed run stopped before its own first
            if earlier and Path(earlier).resolve().is_relative_to(root) and Path(earlier).resolve().is_dir():
                return Path(earlier).resolve()
        except (OSError, RuntimeError):  # a symlink loop, a name too long
            return None
        return None

    def samples(self, job_id: int, limit: int | None = None, cursor: str | None = None) -> Page[dict]:
        """A training job's sample images by step (then file name), oldest first; `limit` None: all. Each is the
        worker's sample event (step, file, prompt, …: the job's JSON) and its `url`."""
        key = decode_cursor(cursor, (int, str))
        job = self.runner.get(job_id)
        if job.kind != "train":
            raise InvalidInput(f"job {job_id} is not a training job")
        found = [s for s in (job.result or {}).get("samples", [])
                 if isinstance(s, dict) and isinstance(s.get("file"), str) and s["file"]]
        ordered = sorted(found, key=lambda s: (event_int(s.get("step"), 0), s["file"]))
        if key is not None:
            ordered = [s for s in ordered if (event_int(s.get("step"), 0), s["file"]) > key]
        page = ordered if limit is None else ordered[:limit]
        items = [{**s, "url": f"/jobs/{job_id}/samples/{s['file']}"} for s in page]
        more = limit is not None and len(ordered) > limit
        return Page(items, encode_cursor(event_int(page[-1].get("step"), 0), page[-1]["file"]) if more else None)

    def sample_path(self, job_id: int, name: str) -> Path:
        """The file of one sample image; the name must stay inside the job's samples folder."""
        self.runner.get(job_id)
        if not re.fullmatch(r"[A-Za-z0-9._-]+\.(png|jpg|jpeg|webp)", name, re.IGNORECASE) or name.startswith("."):
            raise InvalidInput("not a sample image name")
        try:  # inside the jobs folder itself: a job or samples folder that is a link out is refused too
            root = self.jobs_dir.resolve()
            folder = (self.jobs_dir / str(int(job_id)) / "samples").resolve()
            path = (folder / name).resolve()
            found = path.is_relative_to(folder) and folder.is_relative_to(root) and path.is_file()
        except (OSError, RuntimeError):  # a symlink loop, a name too long
            found = False
        if not found:
            raise NotFound(f"job {job_id} has no sample {name!r}")
        return path

    def job_dir(self, job_id: int) -> Path:
        return (self.jobs_dir / str(int(job_id))).resolve()

    def loras(self, character_id: int, limit: int | None = None, cursor: int | None = None) -> Page[LoraModel]:
        """A character's LoRAs, newest first; `cursor` is the id of the last one of the previous page."""
        self.characters_row(character_id)
        q = (sa.select(lora_models).where(lora_models.c.character_id == character_id)
             .order_by(lora_models.c.id.desc()))
        if cursor is not None:
            q = q.where(lora_models.c.id < cursor)
        if limit is not None:
            q = q.limit(limit + 1)
        with self.db.begin() as conn:
            rows = conn.execute(q).all()
        items = [lora_record(r) for r in rows[:limit]]
        more = limit is not None and len(rows) > limit
        return Page(items, str(items[-1].id) if more else None)

    def characters_row(self, character_id: int) -> tuple[Any, str]:
        with self.db.begin() as conn:
            return CharacterService.row_with_project(conn, character_id)

    def _check_deps(self) -> None:
        missing = missing_train_deps()
        if missing:
            raise Unavailable(f"training needs torch and the 'train' extra; missing: {', '.join(missing)} "
                              "(install torch for your platform, then pip install 'lora-studio[train]')")

    # -- ComfyUI shares the GPU ----------------------------------------------------------------
    def gpu_busy(self) -> str | None:
        """Why the studio's own generations must wait now: a training running on the GPU ComfyUI shares (ComfyUI
        would load a checkpoint beside the trainer's models and one of them runs out of memory). None: go on."""
        if not self.host.comfyui_shares_device or self.comfyui is None:
            return None
        for job in self.runner.list(status="running", kind="train", limit=5).items:
            if job.payload.get("device") != "cpu":
                return (f"a LoRA training (job {job.id}) is using the GPU ComfyUI shares: the studio's generations "
                        "wait until it ends (cancel it, or generate when it is done)")
        return None

    def _shares_gpu(self, payload: dict) -> bool:
        return self.host.comfyui_shares_device and payload.get("device") != "cpu" and self.comfyui is not None

    def _check_comfyui_idle(self, payload: dict) -> None:
        """Inside ComfyUI: refuse to start while other prompts would run before or alongside the training
        (they need the GPU). From the Train LoRA node, its own prompt is the one running: the prompts queued
        behind it run after the node returns, so they do not count; from the panel or the API every running
        or queued prompt does."""
        if not self._shares_gpu(payload):
            return
        try:
            running, pending = queue_ids(self.comfyui().queue())
        except StudioError as e:
            raise Unavailable(f"cannot ask ComfyUI whether it is idle before training: {e.message}") from None
        own = payload.get("comfy_prompt_id")
        if own and own in running:
            busy = [p for p in running if p != own]
        else:
            busy = [p for p in running + pending if p != own]
        if busy:
            raise Conflict(f"ComfyUI is busy with {len(busy)} other prompt(s) (running or queued): training needs "
                           "the GPU to itself; start it again when ComfyUI's queue is empty")

    def _free_comfyui(self, payload: dict) -> None:
        """Ask ComfyUI to unload its models and free memory, so the trainer gets the GPU. Not for a training the
        Train LoRA node started: ComfyUI acts on /free only between prompts (after the node's own prompt, too
        late), the node unloads ComfyUI's models in-process, and /free's cache reset would cost the node its
        cache hit when it is queued again."""
        if not self._shares_gpu(payload) or payload.get("comfy_prompt_id"):
            return
        try:
            self.comfyui().free(unload_models=True, free_memory=True)
        except StudioError as e:
            raise Unavailable(f"cannot ask ComfyUI to free the GPU before training: {e.message}") from None
        log.info("asked ComfyUI to unload its models before training")

    # -- the job -------------------------------------------------------------------------------
    def _run(self, ctx: JobContext) -> dict:
        p = ctx.payload
        char, project_slug = self.characters_row(p["character_id"])
        items = self.images.approved_items(char.id)
        if len(items) < self.min_images:
            raise InvalidInput(f"only {len(items)} approved image(s) with files; need {self.min_images}")
        if not Path(p["base_model_path"]).exists():
            raise InvalidInput(f"the base model {p['base_model']} is gone ({p['base_model_path']})")
        self._check_comfyui_idle(p)
        self._free_comfyui(p)
        loras_dir = self.host.loras_dir
        loras_dir.mkdir(parents=True, exist_ok=True)
        output = _versioned_name(loras_dir, f"{project_slug}-{char.slug}")
        work = self.job_dir(ctx.job_id)
        (work / "samples").mkdir(parents=True, exist_ok=True)
        prompt = self.characters.prompt(char.id)
        worker_config = {
            **{k: p[k] for k in config.USER_OPTIONS if p.get(k) is not None},  # the job's resolved options
            "base_model": p["base_model_path"],
            "items": [{"image": str(i.path), "caption": i.caption} for i in items], "output_path": str(output),
            "trigger_word": char.trigger_word, "cache_dir": str(self.cache_dir),
            "checkpoint_dir": str(work / "checkpoints"), "sample_dir": str(work / "samples"),
            "sample_prompt": prompt.positive or char.trigger_word or char.name,
            "sample_negative": prompt.negative,
            "metadata": {"ss_output_name": output.stem, "lora_studio_character": char.name,
                         "lora_studio_base_model": p["base_model"]},
        }
        if p.get("resume_from"):
            worker_config["resume_from"] = p["resume_from"]
        (work / "config.json").write_text(json.dumps(worker_config, indent=1), encoding="utf-8")
        try:
            done, state = self._run_worker(ctx, work, p["steps"])
        finally:  # a worker killed while saving leaves its hidden temporary file behind
            for partial in loras_dir.glob(f".{output.stem}.*.partial"):
                partial.unlink(missing_ok=True)
        return {**state.snapshot(), **self._record(ctx.job_id, char.id, p, items, Path(done["output_path"]), done)}

    def worker_env(self) -> dict[str, str]:
        """The environment this studio's workers get (`train --config` builds it the same way)."""
        return worker_env(self.cache_dir, self.host.clip_tokenizer_dir)

    def _run_worker(self, ctx: JobContext, work: Path, total: int) -> tuple[dict, TrainState]:
        state = TrainState(total_steps=total, work=work, resumed_from_job=ctx.payload.get("resumed_from_job"))
        last_write = 0.0

        def started(pid: int) -> None:
            state.pid = pid
            ctx.progress(0.0, "starting the training process", result=state.snapshot())

        def on_event(event: dict) -> None:
            nonlocal last_write
            urgent = state.apply(event)
            now = time.monotonic()
            if urgent or now - last_write >= PROGRESS_EVERY_SECONDS:
                ctx.progress(state.fraction(), state.message(), result=state.snapshot())
                last_write = now

        worker = WorkerProcess(work / "config.json", self.worker_env(), work / "worker.log", cwd=work)
        end = worker.run(on_event, ctx.cancelled, on_start=started)
        ctx.progress(state.fraction(), state.message(), result=state.snapshot())  # the last lines, unthrottled
        if ctx.cancelled() or state.phase.get("name") == "cancelled":  # also a Ctrl-C the worker got itself
            raise JobCancelled()
        if end.code != 0 or state.final is None:
            tail = "\n".join(end.log_tail)[-2000:]
            why = state.error or f"the training process exited with code {end.code}"
            raise StudioError(why + (f"\n--- worker log (last lines) ---\n{tail}" if tail else ""))
        return state.final, state

    def _record(self, job_id: int, character_id: int, p: dict, items: list, output: Path, done: dict) -> dict:
        with self.db.begin() as conn:
            lora_id = conn.execute(lora_models.insert().values(
                character_id=character_id, job_id=job_id, file_name=output.name, base_model=p["base_model"],
                rank=int(done.get("rank") or p["rank"]), alpha=float(done.get("alpha") or p["alpha"]),
                steps=p["steps"], learning_rate=p["learning_rate"], sha256=done.get("sha256", ""),
                image_count=len(items), created_at=utcnow())).inserted_primary_key[0]
            conn.execute(characters.update().where(characters.c.id == character_id).values(
                current_lora_id=lora_id, updated_at=utcnow()))
        return {"lora_id": lora_id, "file_name": output.name, "sha256": done.get("sha256"),
                "num_modules": done.get("num_modules"), "compiled": bool(done.get("compiled"))}


def _versioned_name(folder: Path, stem: str) -> Path:
    """The next free `<stem>-vN.safetensors`: a new run never overwrites an earlier LoRA."""
    pattern = re.compile(re.escape(stem) + r"-v(\d+)\.safetensors$")
    taken = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return folder / f"{stem}-v{max(taken, default=0) + 1}.safetensors"
