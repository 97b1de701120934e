"""LoRA Studio training.

The engine (``config``, ``worker``, ``trainer`` and the modules it uses) runs in a subprocess started as
``[sys.executable, "<pack>/training/worker.py", "<config.json>"]`` and reports JSON lines on its stdout (the
protocol is in ``worker.py``). It imports only the standard library, the ML libraries and itself, and stays
import-light: nothing imports torch, diffusers or peft at module level. The studio side (``service``,
``catalog``, ``worker_client``) runs in the studio and starts, follows and records those processes.
"""

from __future__ import annotations

from .errors import ConfigError, MissingDependenciesError, TrainingCancelled, TrainingError

__all__ = ["ConfigError", "MissingDependenciesError", "TrainingCancelled", "TrainingError"]
