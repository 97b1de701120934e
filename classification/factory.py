"""The classifier backend the settings ask for. Each backend's module is imported only when it is chosen
(the embedding backend's numpy/torch stack stays unloaded for Ollama-only set-ups)."""

from __future__ import annotations

from typing import Any

from ..core.errors import Unavailable
from ..core.settings import Settings
from .base import NoBackend


def make_backend(settings: Settings) -> Any:
    """An `OllamaBackend`, an `EmbeddingBackend` or a `NoBackend` (classification off)."""
    if settings.classifier == "ollama":
        from .ollama import OllamaBackend

        return OllamaBackend(settings.ollama_url, settings.ollama_model)
    if settings.classifier == "embedding":
        if settings.clip_model_dir is None:
            raise Unavailable("the embedding classifier needs LORA_STUDIO_CLIP_MODEL_DIR (CLIP vision weights)")
        from .embedding import EmbeddingBackend

        return EmbeddingBackend(settings.clip_model_dir)
    return NoBackend()
