"""Character Prompt: the SSOT prompt of a character from the database, its LoRA and its project's sampler
settings, typed to wire straight into CLIPTextEncode, LoraLoader, KSampler and EmptyLatentImage."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import InvalidInput
from ..core.text import merge_terms
from ..core.validation import check_text
from .combos import blocked, lora_names, sampler_lists, sampler_names, scheduler_names
from .context import classproperty, studio
from .labels import character_input, find_character

if TYPE_CHECKING:
    from ..studio import Studio

MAX_SEED = 0xFFFFFFFFFFFFFFFF  # KSampler's seed range

# Saved links name outputs by position: new outputs go at the end.
RETURN_NAMES = ("positive", "negative", "lora_name", "sampler_name", "scheduler", "steps", "cfg", "width", "height",
                "seed")


def lora_file(s: Studio, name: str) -> Path | None:
    """The studio's LoRA file of that name (inside its loras folder), or None when it is not there."""
    root = s.host.loras_dir.resolve()
    try:
        path = (root / name).resolve()
    except (OSError, RuntimeError):
        return None
    return path if path.parent == root and path.is_file() else None


@dataclass(frozen=True)
class PromptValues:
    """What Character Prompt outputs for one set of inputs (`lora_missing`: why lora_name is blocked)."""

    character: str
    positive: str
    negative: str
    lora_name: str | None
    lora_missing: str | None
    sampler_name: str
    scheduler: str
    steps: int
    cfg: float
    width: int
    height: int


def prompt_values(s: Studio, character: str, additions: str = "", learned_negatives: bool = True) -> PromptValues:
    check_text("additions", additions)
    char = find_character(s, character)
    p = s.characters.prompt(char.id)
    style = p.style
    # p.negative is merge(style, character, learned) in that order: without the learned terms it is their prefix
    negative = p.negative if learned_negatives else merge_terms(style.negative_template, char.negative_prompt)
    samplers, schedulers = sampler_lists()
    if style.sampler not in samplers:
        raise InvalidInput(f"the project's sampler '{style.sampler}' is not one of this ComfyUI's samplers: "
                           "pick another in the project's style")
    if style.scheduler not in schedulers:
        raise InvalidInput(f"the project's scheduler '{style.scheduler}' is not one of this ComfyUI's schedulers: "
                           "pick another in the project's style")
    missing = None
    if not p.lora_name:
        missing = f"{char.name} has no LoRA yet: train one (Train LoRA) or leave lora_name unconnected"
    elif lora_file(s, p.lora_name) is None:
        missing = f"{char.name}'s LoRA {p.lora_name} is not in the loras folder ({s.host.loras_dir})"
    return PromptValues(
        character=char.name, positive=merge_terms(p.positive, additions), negative=negative,
        lora_name=p.lora_name if missing is None else None, lora_missing=missing,
        sampler_name=style.sampler, scheduler=style.scheduler, steps=style.steps, cfg=float(style.cfg),
        width=style.width, height=style.height)


def output_linked(prompt, node_id, index: int) -> bool | None:
    """Whether a node of the (API-format) prompt takes this node's output `index`; None when unknown."""
    if not isinstance(prompt, dict) or not prompt or node_id is None:
        return None
    return any(isinstance(value, list) and len(value) == 2 and str(value[0]) == str(node_id) and value[1] == index
               for node in prompt.values() if isinstance(node, dict)
               for value in (node.get("inputs") or {}).values())


class CharacterPrompt:
    CATEGORY = "LoRA Studio/characters"
    DESCRIPTION = ("The character's prompts as LoRA Studio builds them: project style + trigger word + SSOT design "
                   "prompt (+ your additions), and the negative prompt (style + character, + the terms learned from "
                   "rejections when learned_negatives is on); the character's current LoRA for LoraLoader and the "
                   "project's sampler settings for KSampler and EmptyLatentImage.")
    RETURN_NAMES = RETURN_NAMES
    OUTPUT_TOOLTIPS = (
        "style + trigger word + design prompt + additions: CLIPTextEncode's text",
        "style + character negatives (+ learned terms): CLIPTextEncode's text",
        "the character's current LoRA: LoraLoader's lora_name (none yet: the node fails when it is connected)",
        "the project's sampler: KSampler's sampler_name",
        "the project's scheduler: KSampler's scheduler",
        "the project's steps", "the project's CFG scale",
        "the project's width: EmptyLatentImage's width", "the project's height: EmptyLatentImage's height",
        "the seed input, passed on: KSampler's seed",
    )
    FUNCTION = "run"

    @classproperty
    def RETURN_TYPES(cls):  # noqa: N802 - ComfyUI's name; the combos are read when ComfyUI asks
        return ("STRING", "STRING", lora_names(), sampler_names(), scheduler_names(), "INT", "FLOAT", "INT", "INT",
                "INT")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "character": character_input(),
            "additions": ("STRING", {"default": "", "multiline": True,
                                     "tooltip": "terms appended to the positive prompt (duplicates dropped)"}),
            "learned_negatives": ("BOOLEAN", {"default": True, "tooltip": "add the negative terms learned from "
                                              "rejections (the studio's effective negative prompt)"}),
            "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                             "tooltip": "passed to the seed output (wire it to KSampler's seed)"}),
        }, "hidden": {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"}}

    @classmethod
    def IS_CHANGED(cls, character, additions="", learned_negatives=True, seed=0, **_):
        # The prompt, the LoRA and the style live in the database: run again whenever they change there.
        values = prompt_values(studio(), character, additions, learned_negatives)
        return hashlib.sha256(json.dumps(asdict(values), sort_keys=True).encode()).hexdigest()

    def run(self, character, additions="", learned_negatives=True, seed=0, prompt=None, unique_id=None):
        v = prompt_values(studio(), character, additions, learned_negatives)
        lora = v.lora_name
        if v.lora_missing is not None:
            if output_linked(prompt, unique_id, RETURN_NAMES.index("lora_name")):
                raise InvalidInput(v.lora_missing)  # the graph needs it: fail here, with the reason
            lora = blocked(v.lora_missing)  # unused (or unknown): stops only a node that would take it
        return (v.positive, v.negative, lora, v.sampler_name, v.scheduler, v.steps, v.cfg, v.width, v.height,
                int(seed))

