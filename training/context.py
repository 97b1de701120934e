"""What every part of a training run shares: the config, where and in what precision it runs, and the two
callbacks to the outside (``emit`` for the worker protocol's events, ``stop`` for a cancellation request).

``make_context`` resolves the device ("auto" = CUDA when torch sees one) and the precision (``optim``), and
turns on TF32 tensor cores on CUDA. Import-light: torch is imported inside ``make_context``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import optim
from .errors import TrainingCancelled, TrainingError

if TYPE_CHECKING:
    from .config import TrainConfig

EventCallback = Callable[..., None]  # on_event(event, /, **fields); a phase event has a field 'name'
StopCheck = Callable[[], bool]


def check_stop(stop: StopCheck) -> None:
    """Raise ``TrainingCancelled`` when a stop was requested."""
    if stop():
        raise TrainingCancelled()


@dataclass(frozen=True)
class RunContext:
    """The run-wide settings and callbacks every part of a run is given."""

    config: TrainConfig
    device: Any  # torch.device
    precision: optim.Precision
    emit: EventCallback
    stop: StopCheck

    def check_stop(self) -> None:
        check_stop(self.stop)


def resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was requested but torch cannot see a CUDA GPU")
    return torch.device(name)


def make_context(config: TrainConfig, emit: EventCallback, stop: StopCheck) -> RunContext:
    import torch

    device = resolve_device(config.device)
    precision = optim.resolve_precision(config.mixed_precision, device)
    if device.type == "cuda":  # TF32 tensor cores for whatever still runs in fp32 (VAE, LoRA maths)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return RunContext(config=config, device=device, precision=precision, emit=emit, stop=stop)
