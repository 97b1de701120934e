"""Build API-format ComfyUI graphs for the studio's generations.

The graphs use ComfyUI's core nodes only, so that any ComfyUI can run them; they are checked against
the real `/object_info` in tests (tests/support/comfy_schema.py).
"""

from __future__ import annotations

import logging
import math
import posixpath
from typing import Any

from ..core.errors import InvalidInput
from ..core.samplers import resolve_sampler

log = logging.getLogger("lora_studio.comfy")

# Node ids: those of ComfyUI's default txt2img workflow, plus 10 (LoRA) and 11 (CLIP skip).
ID_CHECKPOINT, ID_LORA, ID_CLIP_SKIP = "4", "10", "11"
ID_POSITIVE, ID_NEGATIVE, ID_LATENT = "6", "7", "5"
ID_SAMPLER, ID_DECODE, ID_SAVE = "3", "8", "9"

MAX_SEED = 2**64 - 1  # KSampler's seed range
MAX_SIZE = 16384


def _int(name: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{name} must be a whole number, not {value!r}.")
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, not {value}.")
    return value


def _float(name: str, value: Any, low: float, high: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a number, not {value!r}.")
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low:g} and {high:g}, not {value:g}.")
    return float(value)


def _size(name: str, value: Any) -> int:
    value = _int(name, value, 16, MAX_SIZE)
    if value % 8:
        raise InvalidInput(f"{name} must be a multiple of 8, not {value}.")
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text, not {type(value).__name__}.")
    return value


def _file_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} is required.")
    if "\x00" in value:
        raise InvalidInput(f"{name} is not a valid file name.")
    return value


def _prefix(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("filename_prefix is required.")
    cleaned = value.replace("\\", "/")
    parts = cleaned.split("/")
    if cleaned.startswith("/") or ".." in parts or "\x00" in cleaned or not parts[-1].strip():
        raise InvalidInput(f"filename_prefix {value!r} must be a relative path inside ComfyUI's output folder "
                           "ending with a file name, e.g. 'lora_studio/out'.")
    return posixpath.normpath(cleaned)


def build_txt2img(
    *,
    checkpoint: str,
    positive: str,
    negative: str,
    sampler: str,
    scheduler: str | None,
    steps: int,
    cfg: float,
    width: int,
    height: int,
    clip_skip: int = 1,
    seed: int,
    batch_size: int = 1,
    lora_name: str | None = None,
    lora_strength: float = 1.0,
    filename_prefix: str = "lora_studio/out",
) -> dict:
    """The API-format txt2img graph (node id -> {"class_type", "inputs"}) for ComfyUI's POST /prompt.

    CheckpointLoaderSimple -> [CLIPSetLastLayer when clip_skip > 1] -> [LoraLoader when lora_name,
    on both the model and the CLIP] -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode
    -> SaveImage. `lora_name` None or "" means no LoRA. Raises InvalidInput for bad values.
    """
    checkpoint = _file_name("checkpoint", checkpoint)
    positive = _text("positive", positive)
    negative = _text("negative", negative)
    sampler_name, scheduler_name = resolve_sampler(sampler, scheduler)
    steps = _int("steps", steps, 1, 10000)
    cfg = _float("cfg", cfg, 0.0, 100.0)
    width = _size("width", width)
    height = _size("height", height)
    clip_skip = _int("clip_skip", clip_skip, 1, 24)
    seed = _int("seed", seed, 0, MAX_SEED)
    batch_size = _int("batch_size", batch_size, 1, 4096)
    lora = None if lora_name is None or lora_name == "" else _file_name("lora_name", lora_name)
    strength = _float("lora_strength", lora_strength, -100.0, 100.0)
    prefix = _prefix(filename_prefix)

    graph: dict[str, dict] = {
        ID_CHECKPOINT: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
    }
    model: list = [ID_CHECKPOINT, 0]
    clip: list = [ID_CHECKPOINT, 1]
    vae: list = [ID_CHECKPOINT, 2]
    if clip_skip > 1:
        graph[ID_CLIP_SKIP] = {"class_type": "CLIPSetLastLayer",
                               "inputs": {"clip": clip, "stop_at_clip_layer": -clip_skip}}
        clip = [ID_CLIP_SKIP, 0]
    if lora is not None:
        graph[ID_LORA] = {"class_type": "LoraLoader", "inputs": {
            "model": model, "clip": clip, "lora_name": lora,
            "strength_model": strength, "strength_clip": strength,
        }}
        model, clip = [ID_LORA, 0], [ID_LORA, 1]
    graph[ID_POSITIVE] = {"class_type": "CLIPTextEncode", "inputs": {"text": positive, "clip": list(clip)}}
    graph[ID_NEGATIVE] = {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": list(clip)}}
    graph[ID_LATENT] = {"class_type": "EmptyLatentImage",
                        "inputs": {"width": width, "height": height, "batch_size": batch_size}}
    graph[ID_SAMPLER] = {"class_type": "KSampler", "inputs": {
        "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler_name, "scheduler": scheduler_name,
        "denoise": 1.0, "model": model, "positive": [ID_POSITIVE, 0], "negative": [ID_NEGATIVE, 0],
        "latent_image": [ID_LATENT, 0],
    }}
    graph[ID_DECODE] = {"class_type": "VAEDecode", "inputs": {"samples": [ID_SAMPLER, 0], "vae": vae}}
    graph[ID_SAVE] = {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": [ID_DECODE, 0]}}
    log.debug("txt2img graph: %s, %s/%s, %dx%d, lora=%s", checkpoint, sampler_name, scheduler_name,
              width, height, lora)
    return graph
