"""Optimisation helpers of the trainer: loss weighting, noise, learning-rate schedules, optimizers, precision.

Small pure functions so each can be unit-tested with known values. torch is imported inside the functions
(this module is imported by the worker before torch is known to be installed).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import TrainingError

log = logging.getLogger("lora_studio.training.optim")

LR_SCHEDULERS: tuple[str, ...] = ("constant", "constant_with_warmup", "cosine")
OPTIMIZERS: tuple[str, ...] = ("adamw", "adamw8bit")
MIXED_PRECISION: tuple[str, ...] = ("no", "fp16", "bf16")
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v_prediction")


# --------------------------------------------------------------------------- loss


def compute_snr(alphas_cumprod: Any, timesteps: Any) -> Any:
    """Signal-to-noise ratio alpha_t^2 / sigma_t^2 = abar_t / (1 - abar_t) of each timestep (float32)."""
    import torch

    abar = alphas_cumprod.to(device=timesteps.device, dtype=torch.float64)[timesteps]
    return (abar / (1.0 - abar)).float()


def min_snr_weights(snr: Any, gamma: float, prediction_type: str) -> Any:
    """Per-sample loss weights of min-SNR-gamma (Hang et al. 2023).

    epsilon: min(snr, gamma) / snr; v-prediction: min(snr, gamma) / (snr + 1) (the v target already carries
    a factor snr + 1 relative to the x0 loss). gamma <= 0 disables the weighting (all ones).
    """
    import torch

    if gamma <= 0:
        return torch.ones_like(snr)
    clipped = torch.clamp(snr, max=gamma)
    if prediction_type == "epsilon":
        return clipped / snr
    if prediction_type == "v_prediction":
        return clipped / (snr + 1.0)
    raise TrainingError(f"unsupported prediction_type {prediction_type!r}")


def sample_noise(shape: Sequence[int], generator: Any, noise_offset: float = 0.0) -> Any:
    """Gaussian noise on the CPU from ``generator`` (device-independent, so runs reproduce), plus the
    per-channel "noise offset" (Guttenberg 2023) that lets the model learn very dark/bright images."""
    import torch

    noise = torch.randn(tuple(shape), generator=generator)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator)
    return noise


def training_target(scheduler: Any, latents: Any, noise: Any, timesteps: Any) -> Any:
    """What the UNet must predict: the noise (epsilon) or the velocity (v-prediction)."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise TrainingError(f"unsupported scheduler prediction_type {prediction_type!r}")


def weighted_mse(pred: Any, target: Any, weights: Any | None = None) -> Any:
    """Mean squared error per sample (fp32), optionally weighted per sample, then averaged over the batch."""
    per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample.device)
    return per_sample.mean()


# --------------------------------------------------------------------------- schedules


def lr_lambda(kind: str, total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """Learning-rate factor as a function of the number of optimizer steps already taken.

    Warm-up ramps linearly from 1/warmup to 1 (the first step already learns, unlike a ramp from 0);
    ``constant`` ignores warm-up; ``cosine`` decays from 1 towards 0 over the steps after warm-up.
    """
    if kind not in LR_SCHEDULERS:
        raise TrainingError(f"lr_scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {kind!r}")
    warmup = 0 if kind == "constant" else max(0, int(warmup_steps))
    total = max(1, int(total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def make_scheduler(optimizer: Any, kind: str, total_steps: int, warmup_steps: int = 0) -> Any:
    import torch

    factor = lr_lambda(kind, total_steps, warmup_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor] * len(optimizer.param_groups))


# --------------------------------------------------------------------------- optimizer


@dataclass
class ParamGroup:
    name: str
    params: list
    lr: float


def bitsandbytes_available() -> bool:
    try:
        return importlib.util.find_spec("bitsandbytes") is not None
    except (ImportError, ValueError):
        return False


def make_optimizer(groups: Sequence[ParamGroup], kind: str, *, device_type: str, weight_decay: float = 1e-2) -> Any:
    """AdamW over the given parameter groups. ``adamw8bit``: bitsandbytes' AdamW8bit (8-bit blockwise state for
    tensors of 4096+ elements) when bitsandbytes is installed and can step on this device (CUDA; the CPU too
    from bitsandbytes 0.50), otherwise plain AdamW with a warning."""
    import torch

    if kind not in OPTIMIZERS:
        raise TrainingError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {kind!r}")
    param_groups = [{"params": g.params, "lr": g.lr, "name": g.name} for g in groups if g.params]
    if not param_groups:
        raise TrainingError("there is nothing to train (no LoRA parameters)")
    if kind == "adamw8bit":
        adamw8bit, reason = _adamw8bit(device_type)
        if adamw8bit is not None:
            return adamw8bit(param_groups, weight_decay=weight_decay)
        log.warning("8-bit AdamW requested but %s: using AdamW", reason)
    # fused: one kernel for all LoRA tensors instead of several per tensor (hundreds of small launches on a GPU)
    return torch.optim.AdamW(param_groups, weight_decay=weight_decay, fused=device_type == "cuda")


def _adamw8bit(device_type: str) -> tuple[Any, str]:
    """bitsandbytes' AdamW8bit class once a probe step ran on this device (a broken install, missing CUDA libraries
    or an older release without CPU kernels fail here, not in the middle of the first training step)."""
    if not bitsandbytes_available():
        return None, "bitsandbytes is not installed"
    try:
        import bitsandbytes as bnb
        import torch

        probe = torch.nn.Parameter(torch.zeros(4096, device=device_type))  # 4096+: the 8-bit state path
        probe.grad = torch.ones_like(probe)
        bnb.optim.AdamW8bit([probe], lr=1e-3).step()
        if not bool(torch.all(probe.detach() < 0)):
            return None, f"bitsandbytes' AdamW8bit did not update a tensor on {device_type}"
    except Exception as exc:  # bitsandbytes raises all sorts when it cannot run here; training goes on without it
        return None, f"bitsandbytes cannot run it on {device_type} ({type(exc).__name__}: {str(exc)[:200]})"
    return bnb.optim.AdamW8bit, ""


# --------------------------------------------------------------------------- precision


@dataclass(frozen=True)
class Precision:
    """How the step runs: ``weight_dtype`` for the frozen base, autocast dtype (None: off), GradScaler or not."""

    mode: str  # "no" | "fp16" | "bf16" (the effective one)
    weight_dtype: Any
    autocast_dtype: Any | None
    use_scaler: bool


def cpu_has_bf16() -> bool:
    """The CPU computes bf16 natively (AMX tiles or AVX512-BF16): oneDNN's bf16 convolutions and matmuls then run
    several times faster than fp32 (see benchmarks/train_vs_public.py). Without either, bf16 is emulated and slower."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check is not None and check() for check in checks)


def resolve_precision(requested: str, device: Any) -> Precision:
    """On CUDA, bf16 falls back to fp16 on GPUs without bf16 support. On a CPU, bf16 (and fp16, which CPUs lack)
    runs as bf16 autocast when the CPU computes bf16 natively, else fp32. The frozen base is held in the autocast
    dtype (no cast of every weight at every step); LoRA weights and their optimizer state stay fp32."""
    import torch

    if requested not in MIXED_PRECISION:
        raise TrainingError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION)}, got {requested!r}")
    if requested == "no":
        return Precision("no", torch.float32, None, False)
    if device.type != "cuda":
        if device.type != "cpu" or not cpu_has_bf16():
            log.info("mixed_precision %s: this %s has no native bf16, training in fp32", requested, device.type)
            return Precision("no", torch.float32, None, False)
        if requested == "fp16":
            log.info("mixed_precision fp16 on a CPU: using bf16 (CPUs have no fast fp16)")
        return Precision("bf16", torch.bfloat16, torch.bfloat16, False)
    if requested == "bf16" and not torch.cuda.is_bf16_supported():
        log.warning("this GPU has no bf16 support: using fp16 with loss scaling")
        requested = "fp16"
    dtype = torch.bfloat16 if requested == "bf16" else torch.float16
    return Precision(requested, dtype, dtype, requested == "fp16")


def cast_trainable_to_fp32(modules: Sequence[Any]) -> None:
    """LoRA weights stay fp32 under a half-precision base: Adam updates of ~1e-4 vanish in fp16/bf16."""
    import torch

    for module in modules:
        for param in module.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()


class LossEMA:
    """Exponential moving average of the loss with bias correction (meaningful from the first step)."""

    def __init__(self, beta: float = 0.9) -> None:
        self.beta = beta
        self.value = 0.0
        self.count = 0

    def update(self, loss: float) -> float:
        self.count += 1
        self.value = self.beta * self.value + (1.0 - self.beta) * loss
        return self.smoothed

    @property
    def smoothed(self) -> float:
        return self.value / (1.0 - self.beta**self.count) if self.count else float("nan")

    def state_dict(self) -> dict:
        return {"beta": self.beta, "value": self.value, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.beta, self.value, self.count = float(state["beta"]), float(state["value"]), int(state["count"])
