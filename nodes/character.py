"""Character Prompt: the SSOT prompt of a character from the database, for any graph."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from .context import choices, studio

if TYPE_CHECKING:
    from ..studio import Studio

NO_PROJECT = "(no projects)"
NO_CHARACTER = "(no characters)"


def _projects(s: Studio) -> list[str]:
    return [p.slug for p in s.projects.list().items]


def _characters(s: Studio) -> list[str]:
    return sorted({c.slug for c in s.characters.list().items})


class CharacterPrompt:
    CATEGORY = "LoRA Studio/characters"
    DESCRIPTION = ("The character's prompts as LoRA Studio builds them: project style + trigger word + SSOT design "
                   "prompt, and the effective negative prompt (style + character + learned from rejections).")
    RETURN_TYPES = ("STRING", "STRING", "STRING")
    RETURN_NAMES = ("positive", "negative", "lora_name")
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "project": (choices(_projects, NO_PROJECT), {"tooltip": "project slug"}),
            "character": (choices(_characters, NO_CHARACTER), {"tooltip": "character slug (in that project)"}),
        }}

    @classmethod
    def IS_CHANGED(cls, project, character):
        # The prompt lives in the database: re-run whenever it changes there.
        p = studio().characters.prompt(studio().characters.find(project, character).id)
        return hashlib.sha256(json.dumps([p.positive, p.negative, p.lora_name]).encode()).hexdigest()

    def run(self, project, character):
        s = studio()
        p = s.characters.prompt(s.characters.find(project, character).id)
        return (p.positive, p.negative, p.lora_name or "")
