"""The training step and loop.

``TrainLoop`` owns what changes from step to step: the optimizer, learning-rate schedule and loss scaler, the
loss EMA, the step counter, and the loop's random sources: a CPU ``torch.Generator`` (latent samples, noise,
timesteps), a ``random.Random`` (flips, captions) and the ``BucketSampler``'s position (in ``RunData``). Noise is
drawn on the CPU so a run does not depend on the device's RNG; a checkpoint saves all three and a resume
restores them (``run_state.py``), so a resumed run continues bit-exactly (on CPU).

One optimizer step = ``grad_accum`` micro-steps (latents from the cache, noise, the UNet's prediction under
autocast, the min-SNR weighted MSE), then gradient clipping and the optimizer. With ``compile`` the UNet runs
through ``torch.compile``; if compiling fails the step is redone with the plain UNet from the same random state.
``run`` reports progress events and calls back after every step (samples and checkpoints are the caller's).

Import-light: torch is imported inside the methods.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

from . import optim
from .adapters import LoraModules
from .context import RunContext
from .errors import TrainingError
from .run_data import RunData

log = logging.getLogger("lora_studio.training.loop")

EMA_BETA = 0.9


class TrainLoop:
    """The optimizer and random state of a prepared run (adapters added, data cached) and its steps."""

    def __init__(self, ctx: RunContext, base: Any, arch: str, data: RunData, lora: LoraModules) -> None:
        import torch

        config = ctx.config
        self.ctx = ctx
        self.base = base
        self.arch = arch
        self.data = data
        self.lora = lora
        self.generator = torch.Generator().manual_seed(config.seed)
        self.py_rng = random.Random(config.seed)
        self.ema = optim.LossEMA(EMA_BETA)
        self.step = 0
        self._setup_optimizer()
        self.attention = _check_attention(base.unet)
        self._setup_compile()

    # ---------------------------------------------------------------- setup

    def _setup_optimizer(self) -> None:
        import torch

        config = self.ctx.config
        te_lr = config.text_encoder_lr or config.learning_rate
        groups = [optim.ParamGroup("unet", self.lora.params["unet"], config.learning_rate)]
        groups += [optim.ParamGroup(name, params, te_lr) for name, params in self.lora.params.items() if name != "unet"]
        self.optimizer = optim.make_optimizer(groups, config.optimizer, device_type=self.ctx.device.type)
        self.optimizer_name = type(self.optimizer).__name__
        self.scheduler = optim.make_scheduler(self.optimizer, config.lr_scheduler, config.steps, config.warmup_steps)
        self.scaler = torch.amp.GradScaler("cuda") if self.ctx.precision.use_scaler else None
        self.trainable = [p for params in self.lora.params.values() for p in params]

    def _setup_compile(self) -> None:
        """Opt-in ``torch.compile`` of the UNet: a wrapper that shares the module's parameters, used for the
        training step only (samples, checkpoints and the export use the module itself). The first step
        compiles (minutes on a CPU the first time; Inductor caches the result on disk), later steps run fused
        kernels. Each new bucket shape compiles once more."""
        self.compiled_unet = None
        self.compile_pending = False
        if not self.ctx.config.compile:
            return
        import torch

        self.compiled_unet = torch.compile(self.base.unet)
        self.compile_pending = True

    def _unet(self) -> Any:
        return self.compiled_unet if self.compiled_unet is not None else self.base.unet

    def _random_state(self) -> tuple:
        return self.generator.get_state(), self.py_rng.getstate(), self.data.sampler.state_dict()

    def _set_random_state(self, state: tuple) -> None:
        self.generator.set_state(state[0])
        self.py_rng.setstate(state[1])
        self.data.sampler.load_state_dict(state[2])

    # ---------------------------------------------------------------- the step

    def _encode_live(self, captions: list[str]) -> Any:
        """Text conditioning computed this step (shuffled captions or trained text encoders)."""
        import torch

        from . import models

        precision = self.ctx.precision
        if self.ctx.config.train_text_encoder:
            with torch.autocast(self.ctx.device.type, dtype=precision.autocast_dtype,
                                enabled=precision.autocast_dtype is not None):
                return models.encode_text(self.base, captions, text_encoders=self.lora.text_encoders())
        with torch.no_grad():
            return models.encode_text(self.base, captions)

    def micro_step(self, batch: list[int]) -> Any:
        """The loss of one micro-batch (item indices), with its graph for backward."""
        import torch

        config = self.ctx.config
        scheduler = self.base.noise_scheduler
        inputs = self.data.batch_inputs(batch, self.py_rng, self.generator, self.arch)
        latents = inputs["latents"]
        noise = optim.sample_noise(latents.shape, self.generator, config.noise_offset)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), generator=self.generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = optim.training_target(scheduler, latents, noise, timesteps)
        text = inputs["text"] if inputs["text"] is not None else self._encode_live(inputs["captions"])
        device, dtype = self.ctx.device, self.ctx.precision.weight_dtype
        added = None
        if self.arch == "sdxl":
            added = {"text_embeds": text.pooled.to(device, dtype), "time_ids": inputs["time_ids"].to(device, dtype)}
        autocast = self.ctx.precision.autocast_dtype
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            pred = self._unet()(
                noisy.to(device, dtype),
                timesteps.to(device),
                encoder_hidden_states=text.hidden.to(device, dtype),
                added_cond_kwargs=added,
            ).sample
        weights = None
        if config.min_snr_gamma > 0:
            snr = optim.compute_snr(scheduler.alphas_cumprod, timesteps)
            weights = optim.min_snr_weights(snr, config.min_snr_gamma, scheduler.config.prediction_type)
        return optim.weighted_mse(pred, target.to(device), weights)

    def optimizer_step(self) -> float:
        """One optimizer step; with torch.compile, a compiler failure (no working C++ compiler or Triton, an
        unsupported op) falls back to the plain UNet and redoes the step from the same random state."""
        if self.compiled_unet is None:
            return self._plain_optimizer_step()
        from torch._dynamo.exc import TorchDynamoException

        state = self._random_state()
        if self.compile_pending:
            self.ctx.emit("phase", name="compiling", done=0, total=1)
        try:
            loss = self._plain_optimizer_step()
        except TorchDynamoException as exc:
            reason = _compile_error_text(exc)
            log.warning("torch.compile failed, training without it: %s", reason)
            self.ctx.emit("warning", message=f"torch.compile failed, training without it: {reason}")
            self.optimizer.zero_grad(set_to_none=True)
            self._set_random_state(state)
            self.compiled_unet = None
            loss = self._plain_optimizer_step()
        if self.compile_pending:
            self.compile_pending = False
            self.ctx.emit("phase", name="compiling", done=1, total=1)
        return loss

    def _plain_optimizer_step(self) -> float:
        import torch

        config = self.ctx.config
        total = 0.0
        for _ in range(config.grad_accum):
            self.ctx.check_stop()
            loss = self.micro_step(next(self.data.sampler))
            scaled = loss / config.grad_accum
            (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total += float(loss.detach()) / config.grad_accum
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, config.max_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    # ---------------------------------------------------------------- loop

    def run(self, after_step: Callable[[int], None]) -> float:
        """Train from ``self.step`` to ``config.steps``; ``after_step(step)`` runs after each step's progress
        event. Returns the last step's loss."""
        config, emit = self.ctx.config, self.ctx.emit
        first = self.step
        emit("phase", name="training", done=first, total=config.steps)
        started = time.perf_counter()
        loss = float("nan")
        while self.step < config.steps:
            lr = float(self.optimizer.param_groups[0]["lr"])
            compiling = self.compile_pending
            loss = self.optimizer_step()
            self.step += 1
            if not math.isfinite(loss):
                raise TrainingError(
                    f"training diverged at step {self.step} (loss is {loss}): try a lower learning_rate"
                )
            smooth = self.ema.update(loss)
            now = time.perf_counter()
            speed = {}
            if compiling:  # the compile's minutes say nothing about the speed of the steps that follow
                first, started = self.step, now
            else:
                it_s = (self.step - first) / max(now - started, 1e-9)
                speed = {"it_s": it_s, "eta_s": (config.steps - self.step) / it_s}
            emit("progress", step=self.step, total_steps=config.steps, loss=loss, smooth_loss=smooth, lr=lr,
                 **speed)
            after_step(self.step)
        return loss


def _check_attention(unet: Any) -> str:
    """diffusers uses PyTorch SDPA (AttnProcessor2_0) by default; make sure nothing swapped it out."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    kinds = {type(p).__name__ for p in unet.attn_processors.values()}
    if kinds != {"AttnProcessor2_0"}:
        log.info("switching the UNet's attention from %s to SDPA", ", ".join(sorted(kinds)))
        unet.set_attn_processor(AttnProcessor2_0())
        kinds = {type(p).__name__ for p in unet.attn_processors.values()}
    return ", ".join(sorted(kinds))


def _compile_error_text(exc: BaseException) -> str:
    """One line for the user: the compiler's own error (Dynamo wraps it), not the wrapper's header."""
    inner = getattr(exc, "inner_exception", None)
    text = f"{type(inner).__name__}: {inner}" if inner is not None else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]
