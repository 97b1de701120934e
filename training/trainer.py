"""LoRA training for SD1.5 and SDXL with diffusers + peft: ``train(config, on_event, should_stop)``.

This module is the run's orchestration; each part of a run lives in its own module, and all of them share a
``context.RunContext`` (the config, the device and precision, the event and stop callbacks):

- ``models.py`` loads the base model (``architecture.py`` says which one it is); it is frozen here;
- ``run_data.py`` buckets the images, caches the VAE latents (on disk, ``cache.LatentCache``) and, when the text
  encoders are frozen and the captions deterministic, their outputs (``cache.TextCache``), then frees those
  models;
- ``adapters.py`` adds peft LoRA adapters to the UNet (kohya's module coverage, ``targets.py``) and optionally
  to the text encoder(s);
- ``loop.py`` runs the optimizer steps and reports progress through ``on_event(name, **fields)`` (the worker
  protocol, ``worker.py``);
- ``run_state.py`` writes periodic checkpoints that a later run resumes from bit-exactly (on CPU);
- ``sampling.py`` renders sample images;
- ``kohya.py`` saves the kohya-format weights and metadata atomically.

The config is the validated ``config.TrainConfig``.

Import-light at module level (stdlib only): torch, diffusers, peft, transformers, PIL and numpy are
imported inside the functions that need them, so the worker can validate a config and report a
missing dependency cleanly.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .adapters import add_lora, export_tensors
from .architecture import detect_model
from .checkpoints import CheckpointInfo, find_checkpoint, remove_stale_temp
from .context import EventCallback, RunContext, StopCheck, check_stop, make_context
from .errors import MissingDependenciesError, TrainingError
from .kohya import RunFacts, build_metadata, dataset_entries, save_lora_atomic
from .loop import TrainLoop
from .run_data import RunData, free_frozen_models
from .run_state import load_checkpoint, save_checkpoint
from .sampling import SampleRenderer

if TYPE_CHECKING:
    from .config import TrainConfig

log = logging.getLogger("lora_studio.training.trainer")

REQUIRED_MODULES: tuple[str, ...] = ("torch", "diffusers", "peft", "transformers", "safetensors")


@dataclass(frozen=True)
class TrainResult:
    output_path: Path
    sha256: str
    num_modules: int
    rank: int
    alpha: float
    final_loss: float
    arch: str = "sd15"
    smooth_loss: float = float("nan")
    steps: int = 0
    resumed_from: int = 0
    attention: str = ""  # the UNet's attention processor class (SDPA: AttnProcessor2_0)
    latent_cache: dict[str, int] = field(default_factory=dict)  # hits / misses
    text_cache: dict[str, int] = field(default_factory=dict)
    samples: tuple[Path, ...] = ()
    checkpoints: tuple[Path, ...] = ()
    optimizer: str = ""
    precision: str = "no"
    latents_in_memory: bool = True  # False: too many for RAM, read from the on-disk cache per batch
    compiled: bool = False  # the UNet step ran through torch.compile (False also when compiling failed)


# --------------------------------------------------------------------------- dependencies


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or deliberately blocked package
        return False


def check_dependencies() -> None:
    """Cheap check (no import) that the training stack is installed."""
    missing = [name for name in REQUIRED_MODULES if not _installed(name)]
    if missing:
        log.error("missing Python packages: %s", ", ".join(missing))
        raise MissingDependenciesError()


def _import_stack() -> None:
    try:
        import diffusers  # noqa: F401
        import peft  # noqa: F401
        import safetensors  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        log.error("cannot import the training stack: %s", exc)
        raise MissingDependenciesError() from exc


# --------------------------------------------------------------------------- the run


def train(
    config: TrainConfig,
    on_event: EventCallback | None = None,
    should_stop: StopCheck | None = None,
) -> TrainResult:
    """Train a LoRA on ``config.items`` and save it (kohya format) to ``config.output_path``.

    ``on_event(event, **fields)`` receives the protocol events (see worker.py); ``should_stop()`` is polled
    before every micro-batch and while loading; a stop raises ``TrainingCancelled`` and nothing is saved at
    ``output_path`` (checkpoints already written stay, for a later resume).
    """
    emit = on_event or (lambda _event, /, **_fields: None)
    stop = should_stop or (lambda: False)
    check_dependencies()
    check_stop(stop)
    resume = find_checkpoint(config.resume_from) if config.resume_from is not None else None
    arch = detect_model(config.base_model).arch
    if config.arch not in ("auto", arch):
        raise TrainingError(f"arch is {config.arch!r} but the base model is {arch!r}")
    emit("start", total_steps=config.steps, arch=arch, resume_step=resume.step if resume else 0)
    _import_stack()
    check_stop(stop)  # importing torch & co. takes seconds: a stop may have arrived meanwhile
    if config.checkpoint_dir is not None:
        remove_stale_temp(config.checkpoint_dir)
    started = time.time()
    ctx = make_context(config, emit, stop)
    base = _load_base(ctx, arch)
    data = RunData(ctx, base)
    try:
        loop, samples = _prepare(ctx, base, arch, data)
        if resume is not None:
            load_checkpoint(loop, resume)
        checkpoints: list[Path] = []

        def after_step(step: int) -> None:
            if config.sample_every and step % config.sample_every == 0:
                samples.render(step, loop.lora)
            if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
                checkpoints.append(save_checkpoint(loop))

        final_loss = loop.run(after_step)
        ctx.check_stop()
        return _save_output(loop, final_loss, started, resume, samples.paths, checkpoints)
    finally:
        data.close()


def _prepare(ctx: RunContext, base: Any, arch: str, data: RunData) -> tuple[TrainLoop, SampleRenderer]:
    """Cache the data, encode the sample prompts, free what caching needed, add the adapters: a loop ready for
    its first step (the order matters: the adapters' initialisation draws from torch's global RNG)."""
    data.prepare()
    samples = SampleRenderer(ctx, base, arch)
    samples.encode_prompts()
    free_frozen_models(ctx, base, text_cached=data.text_cache is not None)
    lora = add_lora(ctx, base, arch)
    return TrainLoop(ctx, base, arch, data, lora), samples


def _load_base(ctx: RunContext, arch: str) -> Any:
    """The base model, frozen, in the training precision (the VAE in fp32) on the run's device."""
    import torch

    from . import models

    config = ctx.config
    ctx.emit("phase", name="loading", done=0, total=1)
    try:
        base = models.load_base_model(config.base_model, device="cpu")
    except TrainingError:
        raise
    except Exception as exc:
        raise TrainingError(f"cannot load the base model {config.base_model}: {exc}") from exc
    for module in [base.unet, base.vae, *base.text_encoders]:
        module.requires_grad_(False)
        module.eval()
        # the frozen base in the training precision; the VAE always in fp32 (SDXL's overflows in fp16)
        dtype = torch.float32 if module is base.vae else ctx.precision.weight_dtype
        if any(param.dtype != dtype for param in module.parameters()):
            module.to(dtype=dtype)
        module.to(ctx.device)
    log.info("loaded %s (%s, %s) on %s", config.base_model.name, base.info.arch,
             base.info.prediction_type, ctx.device)
    if base.info.arch != arch:
        raise TrainingError(f"the base model is {base.info.arch!r}, not {arch!r}")
    ctx.emit("phase", name="loading", done=1, total=1)
    ctx.check_stop()
    return base


def _save_output(loop: TrainLoop, final_loss: float, started: float, resume: CheckpointInfo | None,
                 samples: list[Path], checkpoints: list[Path]) -> TrainResult:
    """Export the adapters as a kohya LoRA with its metadata, atomically, at ``config.output_path``."""
    ctx, config, data = loop.ctx, loop.ctx.config, loop.data
    ctx.emit("phase", name="saving", done=0, total=1)
    for module in loop.lora.modules.values():
        module.eval()
    tensors, num_modules = export_tensors(loop.lora, loop.arch, config)
    facts = RunFacts(
        arch=loop.arch,
        started_at=started,
        finished_at=time.time(),
        num_train_images=len(data.items),
        output_name=config.output_path.stem,
        base_model_name=config.base_model.name,
        prediction_type=loop.base.info.prediction_type,
        optimizer=loop.optimizer_name,
        mixed_precision=ctx.precision.mode,
        dataset=dataset_entries(data.items),
    )
    metadata = build_metadata(config, facts)
    config.output_path.parent.mkdir(parents=True, exist_ok=True)
    digest = save_lora_atomic(tensors, config.output_path, metadata, before_commit=ctx.check_stop)
    ctx.emit("phase", name="saving", done=1, total=1)
    log.info("saved %d LoRA modules to %s", num_modules, config.output_path)
    return TrainResult(
        output_path=config.output_path,
        sha256=digest,
        num_modules=num_modules,
        rank=config.rank,
        alpha=config.alpha,
        final_loss=final_loss,
        arch=loop.arch,
        smooth_loss=loop.ema.smoothed,
        steps=config.steps,
        resumed_from=resume.step if resume else 0,
        attention=loop.attention,
        latent_cache=dict(data.latent_stats),
        latents_in_memory=data.latents_in_memory,
        text_cache=data.text_stats,
        samples=tuple(samples),
        checkpoints=tuple(checkpoints),
        optimizer=loop.optimizer_name,
        precision=ctx.precision.mode,
        compiled=loop.compiled_unet is not None,
    )
