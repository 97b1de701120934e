"""Training as a job: checks the request, then runs `training/worker.py` as a subprocess (so the
host stays responsive and GPU memory is freed when it ends), relays its progress lines to the job,
and records the LoRA it wrote. The worker is started by file path, so it works both when the
package is installed and when the folder only sits in ComfyUI's custom_nodes/ (any folder name)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..core.characters import CharacterService
from ..core.db import Database, iso, utcnow
from ..core.errors import InvalidInput, NotFound, StudioError, Unavailable
from ..core.host import Host
from ..core.jobs import JobCancelled, JobContext, JobRunner
from ..core.schema import characters, lora_models
from ..core.specs import TRAIN_SPEC
from ..core.validation import validate
from ..datasets.images import ImageService

log = logging.getLogger("lora_studio.training.service")

WORKER = Path(__file__).resolve().parent / "worker.py"
CANCEL_GRACE_SECONDS = 300  # a full-size step on a CPU can take minutes; then it is killed
TRAIN_DEPS = ("torch", "diffusers", "peft", "transformers", "safetensors")

TRAIN_DEFAULTS = {"steps": 1000, "rank": 32, "alpha": 16.0, "learning_rate": 1e-4, "resolution": 512, "seed": 0}


def lora_dict(row: Any) -> dict:
    return {"id": row.id, "character_id": row.character_id, "job_id": row.job_id, "file_name": row.file_name,
            "base_model": row.base_model, "rank": row.rank, "alpha": row.alpha, "steps": row.steps,
            "learning_rate": row.learning_rate, "sha256": row.sha256, "image_count": row.image_count,
            "created_at": iso(row.created_at)}


def missing_train_deps() -> list[str]:
    return [m for m in TRAIN_DEPS if importlib.util.find_spec(m) is None]


class TrainingService:
    def __init__(self, db: Database, host: Host, images: ImageService, runner: JobRunner, jobs_dir: Path,
                 min_images: int):
        self.db = db
        self.host = host
        self.images = images
        self.runner = runner
        self.jobs_dir = jobs_dir
        self.min_images = min_images
        runner.register("train", self._run)

    # -- base models ---------------------------------------------------------------------------
    def base_models(self) -> list[str]:
        """Diffusers-format model folders (a model_index.json or unet/ inside) in the model dirs."""
        names: set[str] = set()
        for d in self.host.model_dirs():
            if d.is_dir():
                names.update(p.name for p in d.iterdir() if p.is_dir() and _is_diffusers_folder(p))
        return sorted(names)

    def resolve_base_model(self, name: str) -> Path:
        if "/" in name or "\\" in name or name in ("", ".", "..") or "\x00" in name:
            raise InvalidInput("base_model must be a model name from the list, not a path")
        for d in self.host.model_dirs():
            candidate = d / name
            if candidate.is_dir() and _is_diffusers_folder(candidate):
                return candidate.resolve()
            if candidate.is_file():
                raise InvalidInput(f"'{name}' is a single-file checkpoint; this version trains from a diffusers-format "
                                   "model folder (single-file loading is planned)")
        raise NotFound(f"base model '{name}' was not found in {', '.join(str(d) for d in self.host.model_dirs())}")

    # -- requests ------------------------------------------------------------------------------
    def start(self, character_id: int, body: dict) -> dict:
        data = {**TRAIN_DEFAULTS, **validate(body, TRAIN_SPEC)}
        self.characters_row(character_id)  # 404 first: the request names something that is not there
        missing = missing_train_deps()
        if missing:
            raise Unavailable(f"training needs torch and the 'train' extra; missing: {', '.join(missing)} "
                              "(install torch for your platform, then pip install 'lora-studio[train]')")
        count = len(self.images.approved_items(character_id))
        if count < self.min_images:
            raise InvalidInput(f"the character has {count} approved image(s); training needs at least {self.min_images}")
        data["base_model_path"] = str(self.resolve_base_model(data["base_model"]))
        return self.runner.submit("train", {"character_id": character_id, **data}, character_id=character_id)

    def loras(self, character_id: int) -> dict:
        self.characters_row(character_id)
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(lora_models).where(lora_models.c.character_id == character_id)
                                .order_by(lora_models.c.id.desc())).all()
        return {"items": [lora_dict(r) for r in rows]}

    def characters_row(self, character_id: int) -> tuple[Any, str]:
        with self.db.begin() as conn:
            return CharacterService.row_with_project(conn, character_id)

    # -- the job -------------------------------------------------------------------------------
    def _run(self, ctx: JobContext) -> dict:
        p = ctx.payload
        char, project_slug = self.characters_row(p["character_id"])
        items = self.images.approved_items(char.id)
        if len(items) < self.min_images:
            raise InvalidInput(f"only {len(items)} approved image(s) with files; need {self.min_images}")
        loras_dir = self.host.loras_dir
        loras_dir.mkdir(parents=True, exist_ok=True)
        output = _versioned_name(loras_dir, f"{project_slug}-{char.slug}")
        work = self.jobs_dir / str(ctx.job_id)
        work.mkdir(parents=True, exist_ok=True)
        config = {
            "base_model": p["base_model_path"], "items": items, "output_path": str(output),
            "steps": p["steps"], "rank": p["rank"], "alpha": p["alpha"], "learning_rate": p["learning_rate"],
            "resolution": p["resolution"], "seed": p["seed"], "trigger_word": char.trigger_word,
            "metadata": {"ss_output_name": output.stem, "lora_studio_character": char.name,
                         "lora_studio_base_model": p["base_model"]},
        }
        (work / "config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
        try:
            done = self._run_worker(ctx, work, p["steps"])
        finally:  # a worker killed while saving leaves its hidden temporary file behind
            for partial in loras_dir.glob(f".{output.stem}.*.partial"):
                partial.unlink(missing_ok=True)
        return self._record(ctx.job_id, char.id, p, items, Path(done["output_path"]), done)

    def _run_worker(self, ctx: JobContext, work: Path, total: int) -> dict:
        log_tail: deque[str] = deque(maxlen=40)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        with open(work / "worker.log", "w", encoding="utf-8") as log_file:
            proc = subprocess.Popen([sys.executable, str(WORKER), str(work / "config.json")], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env, cwd=str(work))
            err_thread = threading.Thread(target=_drain, args=(proc.stderr, log_file, log_tail), daemon=True)
            err_thread.start()
            watcher = threading.Thread(target=self._cancel_watch, args=(ctx, proc), daemon=True)
            watcher.start()
            final: dict | None = None
            error: str | None = None
            for line in proc.stdout:
                event = _parse(line)
                if event is None:
                    continue
                kind = event.get("event")
                if kind == "progress":
                    step, n = int(event.get("step", 0)), int(event.get("total_steps", total)) or total
                    loss = event.get("loss")
                    ctx.progress(step / n, f"step {step}/{n}" + (f", loss {loss:.4f}" if isinstance(loss, float) else ""))
                elif kind == "done":
                    final = event
                elif kind == "error":
                    error = str(event.get("message", "training failed"))
            code = proc.wait()
            err_thread.join(5)
        if ctx.cancelled():
            raise JobCancelled()
        if code != 0 or final is None:
            tail = "\n".join(log_tail)[-2000:]
            raise StudioError(error or f"the training process exited with code {code}" + (f"\n{tail}" if tail else ""))
        return final

    def _cancel_watch(self, ctx: JobContext, proc: subprocess.Popen) -> None:
        while proc.poll() is None:
            try:
                if ctx.cancelled():
                    proc.send_signal(signal.SIGTERM)  # the worker stops after its current step
                    try:
                        proc.wait(CANCEL_GRACE_SECONDS)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    return
            except Exception:  # database hiccup: keep watching
                log.exception("cancel watch failed")
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                pass

    def _record(self, job_id: int, character_id: int, p: dict, items: list, output: Path, done: dict) -> dict:
        with self.db.begin() as conn:
            lora_id = conn.execute(lora_models.insert().values(
                character_id=character_id, job_id=job_id, file_name=output.name, base_model=p["base_model"],
                rank=p["rank"], alpha=p["alpha"], steps=p["steps"], learning_rate=p["learning_rate"],
                sha256=done.get("sha256", ""), image_count=len(items), created_at=utcnow())).inserted_primary_key[0]
            conn.execute(characters.update().where(characters.c.id == character_id).values(
                current_lora_id=lora_id, updated_at=utcnow()))
        return {"lora_id": lora_id, "file_name": output.name, "sha256": done.get("sha256")}


def _is_diffusers_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "unet" / "config.json").is_file()


def _versioned_name(folder: Path, stem: str) -> Path:
    """The next free `<stem>-vN.safetensors`: a new run never overwrites an earlier LoRA."""
    pattern = re.compile(re.escape(stem) + r"-v(\d+)\.safetensors$")
    taken = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
    return folder / f"{stem}-v{max(taken, default=0) + 1}.safetensors"


def _parse(line: str) -> dict | None:
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _drain(stream, log_file, tail: deque) -> None:
    for line in stream:
        log_file.write(line)
        log_file.flush()
        tail.append(line.rstrip())
