"""What the surrounding program provides: ComfyUI (filled in by the root `__init__.py`) or the
standalone app (`app.py`). Services below the adapter line see only this, never ComfyUI modules."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("lora_studio.host")

EventSink = Callable[[str, dict], None]


def _no_events(event: str, data: dict) -> None:
    log.debug("event %s (no listener)", event)


@dataclass
class Host:
    kind: str  # "comfyui" or "standalone"
    loras_dir: Path
    output_dir: Path | None  # ComfyUI's output folder (gallery); None when unknown
    models_dir: Path  # where base models for training are looked up (diffusers folders)
    comfyui_url: Callable[[], str]  # base URL of the ComfyUI server that runs generations
    emit: EventSink = field(default=_no_events)
    extra_model_dirs: Callable[[], list[Path]] = field(default=lambda: [])
    # single-file checkpoints (ComfyUI's models/checkpoints); the model dirs may hold some too
    checkpoint_dirs: Callable[[], list[Path]] = field(default=lambda: [])
    # inside ComfyUI training shares its GPU: ComfyUI must unload its models and be idle first
    comfyui_shares_device: bool = False
    # ComfyUI's own CLIP tokenizer files (comfy/sd1_tokenizer): single-file checkpoints carry none
    clip_tokenizer_dir: Path | None = None

    def model_dirs(self) -> list[Path]:
        return [self.models_dir, *self.extra_model_dirs()]
