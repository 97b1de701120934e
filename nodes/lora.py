"""Load Character LoRA: the character's current LoRA applied to MODEL and CLIP with ComfyUI's own LoRA loading
(what LoraLoader does: `comfy.utils.load_torch_file` + `comfy.sd.load_lora_for_models`), so
Load Checkpoint → Load Character LoRA → CLIPTextEncode(Character Prompt) → KSampler needs no other pack."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ..core.errors import NotFound
from .character import lora_file
from .context import studio
from .labels import character_input, find_character


def _current_lora(character: str) -> tuple[str, str | None, Path | None]:
    """(character name, its current LoRA's file name or None, the file or None)."""
    s = studio()
    char = find_character(s, character)
    name = s.characters.prompt(char.id).lora_name
    return char.name, name, lora_file(s, name) if name else None


def _text(message: str) -> dict:
    """The node's text, and a warning while a studio training uses the GPU this ComfyUI runs on: the trainer and
    this prompt then share its memory (the studio's own generations wait; ComfyUI's prompts are the user's)."""
    try:
        busy = studio().training.gpu_busy()
    except Exception:  # a warning is a nicety: never fail the node for it
        busy = None
    return {"text": [message] + ([f"warning: {busy.split(':')[0]}: this prompt shares its memory"] if busy else [])}


class LoadCharacterLoRA:
    CATEGORY = "LoRA Studio/characters"
    DESCRIPTION = ("Applies the character's current LoRA (the newest one LoRA Studio trained for it) to the model "
                   "and CLIP, as LoraLoader does. A character without a LoRA passes them through unchanged.")
    RETURN_TYPES = ("MODEL", "CLIP")
    RETURN_NAMES = ("model", "clip")
    OUTPUT_TOOLTIPS = ("the model with the character's LoRA", "the CLIP with the character's LoRA")
    FUNCTION = "load"

    def __init__(self):
        self.loaded: tuple[tuple, Any] | None = None  # ((path, mtime, size), tensors): reused like LoraLoader's

    @classmethod
    def INPUT_TYPES(cls):
        strength = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}
        return {"required": {
            "model": ("MODEL", {"tooltip": "the diffusion model the LoRA is applied to"}),
            "clip": ("CLIP", {"tooltip": "the CLIP model the LoRA is applied to"}),
            "character": character_input(),
            "strength_model": ("FLOAT", {**strength, "tooltip": "how strongly to modify the diffusion model"}),
            "strength_clip": ("FLOAT", {**strength, "tooltip": "how strongly to modify the CLIP model"}),
        }}

    @classmethod
    def IS_CHANGED(cls, character, **_):
        # A new training makes a new current LoRA: load again whenever the character's LoRA file changes.
        _, name, path = _current_lora(character)
        stat = path.stat() if path is not None else None
        key = [name, stat.st_mtime_ns if stat else None, stat.st_size if stat else None]
        return hashlib.sha256(repr(key).encode()).hexdigest()

    def load(self, model, clip, character, strength_model, strength_clip):
        char_name, name, path = _current_lora(character)
        if name is None:
            return {"ui": _text(f"{char_name} has no LoRA yet: model and CLIP pass through unchanged"),
                    "result": (model, clip)}
        if path is None:
            raise NotFound(f"{char_name}'s LoRA {name} is not in the loras folder ({studio().host.loras_dir})")
        if strength_model == 0 and strength_clip == 0:
            return {"ui": _text(f"{name} at strength 0: model and CLIP pass through unchanged"),
                    "result": (model, clip)}
        import comfy.sd
        import comfy.utils

        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if self.loaded is None or self.loaded[0] != key:
            self.loaded = (key, comfy.utils.load_torch_file(str(path), safe_load=True))
        model_lora, clip_lora = comfy.sd.load_lora_for_models(model, clip, self.loaded[1], strength_model,
                                                              strength_clip)
        return {"ui": _text(f"{name} (model {strength_model:g}, clip {strength_clip:g})"),
                "result": (model_lora, clip_lora)}
