"""Train LoRA: starts the same training job as the panel and the API, waits for it, and returns
the LoRA's file name (ComfyUI's Cancel cancels the job)."""

from __future__ import annotations

import time

from ..core.errors import StudioError
from .character import NO_CHARACTER, NO_PROJECT, _characters, _projects
from .context import choices, studio

NO_MODEL = "(no diffusers models in models/diffusers)"


def _interrupted() -> bool:
    try:
        import comfy.model_management as mm
    except ImportError:
        return False
    return bool(getattr(mm, "processing_interrupted", lambda: False)())


class TrainLoRA:
    CATEGORY = "LoRA Studio/training"
    DESCRIPTION = "Trains a LoRA on the character's approved images (a subprocess job) and returns its file name."
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("lora_name",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "project": (choices(_projects, NO_PROJECT),),
            "character": (choices(_characters, NO_CHARACTER),),
            "base_model": (choices(lambda s: s.training.base_models(), NO_MODEL),
                           {"tooltip": "diffusers-format SD1.5 model folder"}),
            "steps": ("INT", {"default": 1000, "min": 1, "max": 100000}),
            "rank": ("INT", {"default": 32, "min": 1, "max": 256}),
            "learning_rate": ("FLOAT", {"default": 1e-4, "min": 0.0, "max": 1.0, "step": 1e-5, "round": False}),
        }}

    def run(self, project, character, base_model, steps, rank, learning_rate):
        s = studio()
        char = s.characters.find(project, character)
        job = s.training.start(char["id"], {"base_model": base_model, "steps": steps, "rank": rank,
                                            "alpha": float(rank) / 2, "learning_rate": learning_rate})
        while job["status"] in ("queued", "running"):
            if _interrupted():
                s.jobs.cancel(job["id"])
            time.sleep(1.0)
            job = s.jobs.get(job["id"])
        if job["status"] != "succeeded":
            raise StudioError(f"training job {job['id']} {job['status']}: {job['error'] or job['message']}")
        name = job["result"]["file_name"]
        return {"ui": {"text": [f"trained {name}"]}, "result": (name,)}
