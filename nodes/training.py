"""Train LoRA: starts the same training job as the panel and the API, follows it on ComfyUI's own
progress bar (with the latest sample image as the preview), and returns the LoRA's file name.
ComfyUI's Cancel raises its interrupt through the progress call: the job is cancelled, then the
interrupt goes on up so ComfyUI stops the prompt."""

from __future__ import annotations

import logging
import time

from ..core.errors import StudioError
from .character import NO_CHARACTER, NO_PROJECT, _characters, _projects
from .context import choices, studio

log = logging.getLogger("lora_studio.nodes.training")

NO_MODEL = "(no base models in models/checkpoints or models/diffusers)"
PREVIEW_MAX_SIZE = 512
POLL_SECONDS = 0.5
CANCEL_WAIT_SECONDS = 60  # after Cancel, wait this long for the worker to let go of the GPU


def current_prompt_id() -> str | None:
    """The ComfyUI prompt running this node: it does not count as ComfyUI being busy."""
    try:
        from comfy_execution.utils import get_executing_context

        context = get_executing_context()
        if context is not None and context.prompt_id:
            return context.prompt_id
    except ImportError:
        pass
    try:
        from server import PromptServer

        return getattr(PromptServer.instance, "last_prompt_id", None)
    except (ImportError, AttributeError):
        return None


def _comfy():
    """(comfy.utils, comfy.model_management), or (None, None) outside ComfyUI."""
    try:
        import comfy.model_management as mm
        import comfy.utils as utils
    except ImportError:
        return None, None
    return utils, mm


def _load_preview(path):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return ("PNG", im.convert("RGB"), PREVIEW_MAX_SIZE)


def follow_job(s, job: dict, node_id: str | None = None, poll: float = POLL_SECONDS) -> dict:
    """Wait for a training job, relaying step/total and new sample images to ComfyUI's progress bar.
    Any exception from ComfyUI (its interrupt) cancels the job and is re-raised."""
    utils, mm = _comfy()
    total = int((job.get("payload") or {}).get("steps") or 1)
    bar = utils.ProgressBar(total, node_id=node_id) if utils is not None else None
    shown_step, shown_sample = -1, None
    job_id = job["id"]
    try:
        while True:
            job = s.jobs.get(job_id)
            result = job.get("result") or {}
            progress = result.get("progress") or {}
            total = int(progress.get("total_steps") or total)
            step = int(progress.get("step") or 0)
            preview = None
            samples = [x for x in result.get("samples") or [] if isinstance(x, dict) and x.get("file")]
            if samples and samples[-1]["file"] != shown_sample:
                shown_sample = samples[-1]["file"]
                try:
                    preview = _load_preview(s.training.sample_path(job_id, shown_sample))
                except Exception:  # a preview is a nicety: never stop the training for it
                    log.exception("cannot load sample %s of job %s", shown_sample, job_id)
            if bar is not None and (step != shown_step or preview is not None):
                bar.update_absolute(step, total, preview)  # ComfyUI's hook raises its interrupt here
                shown_step = step
            if job["status"] not in ("queued", "running"):
                return job
            if mm is not None:  # also while no step moves (loading, caching)
                mm.throw_exception_if_processing_interrupted()
            time.sleep(poll)
    except BaseException:
        _cancel_and_wait(s, job_id)
        raise


def _cancel_and_wait(s, job_id: int) -> None:
    try:
        job = s.jobs.cancel(job_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while job["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = s.jobs.get(job_id)
    except Exception:
        log.exception("cannot cancel training job %s", job_id)


class TrainLoRA:
    CATEGORY = "LoRA Studio/training"
    DESCRIPTION = ("Trains a LoRA on the character's approved images (a subprocess job, the same as the panel's) "
                   "and returns its file name; progress and sample images show on the node.")
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("lora_name",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "project": (choices(_projects, NO_PROJECT),),
                "character": (choices(_characters, NO_CHARACTER),),
                "base_model": (choices(lambda s: s.base_models.names(), NO_MODEL),
                               {"tooltip": "SD1.5 or SDXL: a .safetensors checkpoint or a diffusers folder"}),
                "steps": ("INT", {"default": 1500, "min": 1, "max": 100000}),
                "rank": ("INT", {"default": 16, "min": 1, "max": 256}),
                "learning_rate": ("FLOAT", {"default": 1e-4, "min": 1e-7, "max": 1.0, "step": 1e-5, "round": False}),
            },
            "optional": {
                "resolution": ("INT", {"default": 0, "min": 0, "max": 2048, "step": 64,
                                       "tooltip": "0: 512 for SD1.5, 1024 for SDXL"}),
                "network_alpha": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1024.0, "step": 0.5,
                                            "tooltip": "0: half the rank"}),
                "train_text_encoder": ("BOOLEAN", {"default": False}),
                "sample_every": ("INT", {"default": 250, "min": 0, "max": 100000,
                                         "tooltip": "render a sample with the character's prompt every N steps (0: never)"}),
                "torch_compile": ("BOOLEAN", {"default": False, "tooltip": "torch.compile the UNet: faster steps "
                                              "after a one-off compile (needs Triton on the GPU; without it the "
                                              "run goes on uncompiled)"}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def run(self, project, character, base_model, steps, rank, learning_rate, resolution=0, network_alpha=0.0,
            train_text_encoder=False, sample_every=250, torch_compile=False, unique_id=None):
        s = studio()
        char = s.characters.find(project, character)
        body = {"base_model": base_model, "steps": int(steps), "rank": int(rank),
                "alpha": float(network_alpha) if network_alpha else float(rank) / 2,
                "learning_rate": float(learning_rate), "train_text_encoder": bool(train_text_encoder),
                "sample_every": int(sample_every), "compile": bool(torch_compile)}
        if resolution:
            body["resolution"] = int(resolution)
        job = s.training.start(char.id, body, comfy_prompt_id=current_prompt_id())
        job = follow_job(s, job, node_id=unique_id)
        if job["status"] != "succeeded":
            raise StudioError(f"training job {job['id']} {job['status']}: {job['error'] or job['message']}")
        name = job["result"]["file_name"]
        return {"ui": {"text": [f"trained {name}"]}, "result": (name,)}
