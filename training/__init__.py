"""LoRA Studio training: a subprocess worker that trains a LoRA with diffusers + peft.

This package must stay import-light: nothing here imports torch, diffusers or peft at module
level (the studio imports it inside ComfyUI, and the worker bootstraps it without the root package).

The studio starts training as ``[sys.executable, str(WORKER_SCRIPT), "<config.json>"]`` and reads
JSON lines from the worker's stdout (see ``training/worker.py`` for the protocol).
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError, MissingDependenciesError, TrainingCancelled, TrainingError

WORKER_SCRIPT: Path = Path(__file__).resolve().with_name("worker.py")
"""Absolute path of the worker script, to run with ``sys.executable``."""

__all__ = [
    "WORKER_SCRIPT",
    "ConfigError",
    "MissingDependenciesError",
    "TrainingCancelled",
    "TrainingError",
]
