"""Exceptions shared by the training modules (stdlib only, safe to import anywhere)."""

from __future__ import annotations

MISSING_DEPENDENCIES_MESSAGE = (
    "training needs torch and the 'train' extra (pip install torch, then pip install 'lora-studio[train]')"
)


class TrainingError(Exception):
    """A problem the user can act on; ``str(error)`` is a complete, human-readable message."""


class ConfigError(TrainingError):
    """The training config file is missing, malformed or names things that cannot be used."""


class MissingDependenciesError(TrainingError):
    """torch, diffusers, peft, transformers or safetensors cannot be imported."""

    def __init__(self, detail: str = "") -> None:
        message = MISSING_DEPENDENCIES_MESSAGE
        if detail:
            message = f"{message} [{detail}]"
        super().__init__(message)


class TrainingCancelled(Exception):
    """Raised inside the training loop when a stop was requested (SIGTERM); nothing was saved."""
