"""A project's generation style: its fields' defaults and a typed change set. No database code here:
the routes import it while ComfyUI starts (the service is core/projects.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Defaults that worked for the original system's users.
DEFAULT_STYLE: dict[str, Any] = {
    "checkpoint": "",
    "sampler": "dpmpp_2m",
    "scheduler": "karras",
    "steps": 25,
    "cfg": 7.0,
    "width": 768,
    "height": 768,
    "clip_skip": 1,
    "positive_template": "masterpiece, best quality, highly detailed",
    "negative_template": "worst quality, low quality, blurry, deformed",
    "lora_strength": 0.8,
    "variations": [],  # pose/expression snippets batch generation goes through, one per image
}


@dataclass(frozen=True)
class StyleChanges:
    """The style fields to change (None: leave as it is); the adapter has checked types and bounds."""

    checkpoint: str | None = None
    sampler: str | None = None
    scheduler: str | None = None
    steps: int | None = None
    cfg: float | None = None
    width: int | None = None
    height: int | None = None
    clip_skip: int | None = None
    positive_template: str | None = None
    negative_template: str | None = None
    lora_strength: float | None = None
    variations: list[str] | None = None

    def changed(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}
