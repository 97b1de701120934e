"""LoRA training loop for SD1.5 and SDXL with diffusers + peft.

``train(config, on_event, should_stop)`` loads the base model (``models.py``), freezes it, caches the VAE
latents (on disk, ``cache.LatentCache``) and, when the text encoders are frozen and the captions
deterministic, their outputs (``cache.TextCache``), then frees those models and trains peft LoRA adapters
on the UNet (kohya's module coverage, ``targets.py``) and optionally on the text encoder(s). It reports
progress through ``on_event(name, **fields)`` (the worker protocol), writes periodic checkpoints that a
later run resumes from bit-exactly (on CPU), renders sample images, and saves kohya-format weights
atomically (``kohya.py``). The config is the validated ``config.TrainConfig``.

Reproducibility: every random draw of the loop comes from three sources that a checkpoint saves and a
resume restores: a CPU ``torch.Generator`` (latent sampling, noise, timesteps), a ``random.Random``
(captions, flips) and the ``BucketSampler`` position. Noise is drawn on the CPU so a run does not depend
on the device's RNG.

Import-light at module level (stdlib only): torch, diffusers, peft, transformers, PIL and numpy are
imported inside the functions that need them, so the worker can validate a config and report a
missing dependency cleanly.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import logging
import math
import os
import random
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import data, optim
from .architecture import detect_model
from .checkpoints import CHECKPOINT_FORMAT, CheckpointInfo, find_checkpoint, remove_stale_temp, write_checkpoint_atomic
from .errors import MissingDependenciesError, TrainingCancelled, TrainingError

if TYPE_CHECKING:
    from .config import TrainConfig

log = logging.getLogger("lora_studio.training.trainer")

REQUIRED_MODULES: tuple[str, ...] = ("torch", "diffusers", "peft", "transformers", "safetensors")
EMA_BETA = 0.9
VAE_BATCH = 4
LATENT_CHUNK = 256  # items encoded/read per round while caching
# Cached latents are kept in RAM up to this size (SDXL at 1024 px: ~0.5 MiB per image and orientation); beyond
# it they are read from the on-disk cache per batch instead.
LATENTS_IN_MEMORY_MB = int(os.environ.get("LORA_STUDIO_LATENTS_IN_MEMORY_MB", "2048"))
# The on-disk latent + text caches (cache_dir) are pruned to this size when a run has cached its own entries,
# least recently used first; 0 = no limit.
CACHE_MAX_BYTES = int(float(os.environ.get("LORA_STUDIO_CACHE_MAX_MB", "20480")) * 2**20)

EventCallback = Callable[..., None]  # on_event(event, /, **fields); a phase event has a field 'name'
StopCheck = Callable[[], bool]


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


def _check_stop(stop: StopCheck) -> None:
    if stop():
        raise TrainingCancelled()


def _resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was requested but torch cannot see a CUDA GPU")
    return torch.device(name)


def _models() -> Any:
    from . import models

    return models


# --------------------------------------------------------------------------- the run


@dataclass
class _Lora:
    """The adapted modules: name ("unet", "te0", "te1") -> module, and the trainable params per module."""

    modules: dict[str, Any]
    params: dict[str, list]

    def named_trainable(self) -> dict[str, Any]:
        out = {}
        for name, module in self.modules.items():
            for pname, param in module.named_parameters():
                if param.requires_grad:
                    out[f"{name}/{pname}"] = param
        return out


class _Run:
    """One training run: setup, the step, checkpoints, samples, export."""

    def __init__(self, config: TrainConfig, emit: EventCallback, stop: StopCheck) -> None:
        self.config = config
        self.emit = emit
        self.stop = stop
        self.started = time.time()
        self.samples: list[Path] = []
        self.checkpoints: list[Path] = []
        self.ema = optim.LossEMA(EMA_BETA)
        self.resume: CheckpointInfo | None = None
        self.step = 0

    # ---------------------------------------------------------------- setup

    def prepare(self, arch: str | None) -> None:
        import torch

        config = self.config
        self.device = _resolve_device(config.device)
        self.precision = optim.resolve_precision(config.mixed_precision, self.device)
        if self.device.type == "cuda":  # TF32 tensor cores for whatever still runs in fp32 (VAE, LoRA maths)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.generator = torch.Generator().manual_seed(config.seed)
        self.py_rng = random.Random(config.seed)
        self.emit("phase", name="loading", done=0, total=1)
        self.base = self._load_base()
        self.arch = self.base.info.arch
        if arch is not None and arch != self.arch:
            raise TrainingError(f"the base model is {self.arch!r}, not {arch!r}")
        self.emit("phase", name="loading", done=1, total=1)
        _check_stop(self.stop)
        self.caption_opts = data.CaptionOptions(
            trigger_word=config.trigger_word,
            shuffle=config.shuffle_tags,
            keep_tokens=config.keep_tokens,
            tag_dropout=config.tag_dropout,
            caption_dropout=config.caption_dropout,
        )
        self.items = list(config.items)
        if config.bucketing:
            self.buckets = data.assign_buckets(self.items, data.make_buckets(config.resolution))
        else:
            self.buckets = [(config.resolution, config.resolution)] * len(self.items)
        self.sampler = data.BucketSampler(self.buckets, config.batch_size, config.seed)
        self._cache_latents()
        self._setup_text()
        self._prune_caches()
        self._prepare_sample_conditioning()
        self._free_frozen_models()
        self._add_lora()
        self._setup_optimizer()
        self.attention = self._check_attention()
        self._setup_compile()

    def _load_base(self) -> Any:
        import torch

        models = _models()
        try:
            base = models.load_base_model(self.config.base_model, device="cpu")
        except TrainingError:
            raise
        except Exception as exc:
            raise TrainingError(f"cannot load the base model {self.config.base_model}: {exc}") from exc
        for module in [base.unet, base.vae, *base.text_encoders]:
            module.requires_grad_(False)
            module.eval()
            # the frozen base in the training precision; the VAE always in fp32 (SDXL's overflows in fp16)
            dtype = torch.float32 if module is base.vae else self.precision.weight_dtype
            if any(param.dtype != dtype for param in module.parameters()):
                module.to(dtype=dtype)
            module.to(self.device)
        log.info("loaded %s (%s, %s) on %s", self.config.base_model.name, base.info.arch,
                 base.info.prediction_type, self.device)
        return base

    def _cache_latents(self) -> None:
        """Encode every (item, flip) once with the VAE (on disk under cache_dir, so a second run skips it)."""
        import torch

        from .cache import LatentCache

        config = self.config
        root = config.cache_dir
        if root is None:
            self._tmp_cache = tempfile.TemporaryDirectory(prefix="lora-studio-latents-")
            root = Path(self._tmp_cache.name)
        self.latent_cache = LatentCache(root / "latents", self.base.fingerprint, vae_dtype="float32")
        flips = (False, True) if config.flip else (False,)
        requests = [(item, self.buckets[i], flip) for i, item in enumerate(self.items) for flip in flips]
        vae = self.base.vae

        def encode(prepared: list) -> tuple[Any, Any]:
            _check_stop(self.stop)
            pixels = torch.stack([p.pixels for p in prepared]).to(self.device, torch.float32)
            with torch.no_grad():
                dist = vae.encode(pixels).latent_dist
            return dist.mean.float().cpu(), dist.std.float().cpu()

        def progress(done: int, total: int) -> None:
            self.emit("phase", name="caching", done=done, total=total)

        keys = [(i, flip) for i in range(len(self.items)) for flip in flips]
        budget = LATENTS_IN_MEMORY_MB * 2**20
        self.latents: dict[tuple[int, bool], dict] = {}
        self.latents_in_memory, held = True, 0
        for start in range(0, len(requests), LATENT_CHUNK):  # chunks: a huge dataset never sits in RAM whole
            chunk = requests[start : start + LATENT_CHUNK]
            entries = self.latent_cache.get_or_encode_many(
                chunk, encode, batch_size=VAE_BATCH,
                on_progress=lambda done, _total, base=start: progress(base + done, len(requests)))
            if not self.latents_in_memory:
                continue
            for key, entry in zip(keys[start : start + LATENT_CHUNK], entries, strict=True):
                self.latents[key] = entry
                held += 2 * entry["mean"].numel() * entry["mean"].element_size()  # mean + std
            if held > budget:
                log.info("cached latents exceed %d MiB: reading them from %s per batch", LATENTS_IN_MEMORY_MB,
                         self.latent_cache.root)
                self.latents_in_memory, self.latents = False, {}
        self.latent_stats = {"hits": self.latent_cache.hits, "misses": self.latent_cache.misses}
        self.scale = float(_models().latent_scale(self.base))
        log.info("latents: %d cached, %d encoded", self.latent_cache.hits, self.latent_cache.misses)

    def _latent(self, index: int, flip: bool) -> dict:
        if self.latents_in_memory:
            return self.latents[(index, flip)]
        entry = self.latent_cache.get(self.items[index], self.buckets[index], flip)
        if entry is None:
            raise TrainingError(f"the cached latents of {self.items[index].image} disappeared from "
                                f"{self.latent_cache.root} during training")
        return entry

    def _setup_text(self) -> None:
        """Text conditioning: cached per item when the encoders are frozen and the captions never change."""
        from .cache import TextCache

        config = self.config
        self.text_cache = None
        if config.train_text_encoder or not data.deterministic_captions(self.caption_opts):
            return
        root = config.cache_dir / "text" if config.cache_dir is not None else None
        self.text_cache = TextCache(self.base.fingerprint, root, dtype=str(self.precision.weight_dtype))
        scratch = random.Random(0)  # never drawn from: deterministic captions
        self.fixed_captions = [data.build_caption(item.caption, self.caption_opts, scratch) for item in self.items]
        unique = list(dict.fromkeys(self.fixed_captions))
        for start in range(0, len(unique), 16):
            _check_stop(self.stop)
            self.text_cache.get_batch(unique[start : start + 16], self._encode_frozen)

    def _prune_caches(self) -> None:
        """Keep the on-disk caches within CACHE_MAX_BYTES, never touching this run's entries."""
        from .cache import prune

        if self.config.cache_dir is None or CACHE_MAX_BYTES <= 0:
            return
        keep = set(self.latent_cache.used) | (set(self.text_cache.used) if self.text_cache is not None else set())
        roots = [self.latent_cache.root, self.config.cache_dir / "text"]
        result = prune(roots, CACHE_MAX_BYTES, keep)
        if result.removed:
            log.info("cache: removed %d least recently used entries (%.1f MiB); %.1f MiB left", result.removed,
                     result.freed_bytes / 2**20, result.remaining_bytes / 2**20)
        if result.remaining_bytes > CACHE_MAX_BYTES:
            log.warning("this run's cached latents alone (%.1f MiB) exceed LORA_STUDIO_CACHE_MAX_MB",
                        result.remaining_bytes / 2**20)

    def _encode_frozen(self, captions: list[str]) -> Any:
        import torch

        with torch.no_grad():
            return _models().encode_text(self.base, captions)

    def _prepare_sample_conditioning(self) -> None:
        self.sample_cond = None
        if self.config.sample_every and not self.config.train_text_encoder:
            self.sample_cond = self._encode_frozen([self.config.effective_sample_prompt, self.config.sample_negative])

    def _free_frozen_models(self) -> None:
        """The VAE is not needed once latents are cached (kept on the CPU only to decode samples); frozen text
        encoders are not needed once their outputs are cached."""
        import torch

        if self.config.sample_every:
            self.base.vae.to("cpu")
        else:
            self.base.vae = None
        if self.text_cache is not None and not self.config.sample_every:
            self.base.text_encoders = [None] * len(self.base.text_encoders)
        elif self.text_cache is not None:
            for encoder in self.base.text_encoders:
                encoder.to("cpu")  # the sampling pipeline is built with them; prompts are pre-encoded
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _add_lora(self) -> None:
        import torch

        from .targets import lora_config, text_encoder_lora_targets, unet_lora_targets

        config = self.config
        torch.manual_seed(config.seed)  # peft's random initialisation of lora_A
        unet = self.base.unet
        if config.target_modules is not None:  # explicit override: module name suffixes (e.g. to_q)
            targets = [
                path
                for path in unet_lora_targets(unet, self.arch, conv=config.conv)
                if any(path == t or path.endswith("." + t) for t in config.target_modules)
            ]
            if not targets:
                raise TrainingError(f"no UNet module matches target_modules {list(config.target_modules)}")
        else:
            targets = unet_lora_targets(unet, self.arch, conv=config.conv)
        self._add_adapter(unet, lora_config(unet, targets, rank=config.rank, alpha=config.alpha,
                                            conv_rank=config.conv_rank, conv_alpha=config.conv_alpha), "UNet")
        modules = {"unet": unet}
        if config.train_text_encoder:
            for index, encoder in enumerate(self.base.text_encoders):
                te_targets = text_encoder_lora_targets(encoder)
                self._add_adapter(encoder, lora_config(encoder, te_targets, rank=config.rank, alpha=config.alpha),
                                  f"text encoder {index + 1}")
                encoder.train()
                modules[f"te{index}"] = encoder
        optim.cast_trainable_to_fp32(list(modules.values()))
        if self.precision.autocast_dtype is not None:
            _no_peft_input_casting(modules.values())
        if self.device.type == "cuda":  # cuDNN's convolutions want NHWC: no layout conversions around each one
            unet.to(memory_format=torch.channels_last)
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            for name, module in modules.items():
                if name.startswith("te"):
                    module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        unet.train()
        params = {name: [p for p in module.parameters() if p.requires_grad] for name, module in modules.items()}
        self.lora = _Lora(modules, params)
        log.info("LoRA rank %d alpha %s on %d UNet modules%s: %d trainable tensors", config.rank, config.alpha,
                 len(targets), " + text encoders" if config.train_text_encoder else "",
                 sum(len(p) for p in params.values()))

    @staticmethod
    def _add_adapter(module: Any, lora: Any, what: str) -> None:
        from peft import inject_adapter_in_model

        try:
            if hasattr(module, "set_adapters"):  # diffusers models: also registers the adapter with diffusers
                module.add_adapter(lora)
            else:  # transformers' own add_adapter insists on a newer peft than diffusers needs
                inject_adapter_in_model(lora, module, adapter_name="default")
        except ValueError as exc:
            raise TrainingError(f"cannot add LoRA to the {what}: {exc}") from exc

    def _setup_optimizer(self) -> None:
        import torch

        config = self.config
        te_lr = config.text_encoder_lr or config.learning_rate
        groups = [optim.ParamGroup("unet", self.lora.params["unet"], config.learning_rate)]
        groups += [optim.ParamGroup(name, params, te_lr) for name, params in self.lora.params.items() if name != "unet"]
        self.optimizer = optim.make_optimizer(groups, config.optimizer, device_type=self.device.type)
        self.optimizer_name = type(self.optimizer).__name__
        self.scheduler = optim.make_scheduler(self.optimizer, config.lr_scheduler, config.steps, config.warmup_steps)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.use_scaler else None
        self.trainable = [p for params in self.lora.params.values() for p in params]

    def _check_attention(self) -> str:
        """diffusers uses PyTorch SDPA (AttnProcessor2_0) by default; make sure nothing swapped it out."""
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet = self.base.unet
        kinds = {type(p).__name__ for p in unet.attn_processors.values()}
        if kinds != {"AttnProcessor2_0"}:
            log.info("switching the UNet's attention from %s to SDPA", ", ".join(sorted(kinds)))
            unet.set_attn_processor(AttnProcessor2_0())
            kinds = {type(p).__name__ for p in unet.attn_processors.values()}
        return ", ".join(sorted(kinds))

    def _setup_compile(self) -> None:
        """Opt-in ``torch.compile`` of the UNet: a wrapper that shares the module's parameters, used for the
        training step only (samples, checkpoints and the export use the module itself). The first step
        compiles (minutes on a CPU the first time; Inductor caches the result on disk), later steps run fused
        kernels. Each new bucket shape compiles once more."""
        self.compiled_unet = None
        self.compile_pending = False
        if not self.config.compile:
            return
        import torch

        self.compiled_unet = torch.compile(self.base.unet)
        self.compile_pending = True

    def _unet(self) -> Any:
        return self.compiled_unet if self.compiled_unet is not None else self.base.unet

    def _random_state(self) -> tuple:
        return self.generator.get_state(), self.py_rng.getstate(), self.sampler.state_dict()

    def _set_random_state(self, state: tuple) -> None:
        self.generator.set_state(state[0])
        self.py_rng.setstate(state[1])
        self.sampler.load_state_dict(state[2])

    # ---------------------------------------------------------------- the step

    def _batch_inputs(self, batch: list[int]) -> dict[str, Any]:
        import torch

        config = self.config
        flips = [bool(config.flip and self.py_rng.random() < 0.5) for _ in batch]
        entries = [self._latent(i, flip) for i, flip in zip(batch, flips, strict=True)]
        mean = torch.stack([e["mean"] for e in entries])
        std = torch.stack([e["std"] for e in entries])
        latents = (mean + std * torch.randn(mean.shape, generator=self.generator)) * self.scale
        captions, text = None, None
        if self.text_cache is not None:
            text = self.text_cache.get_batch([self.fixed_captions[i] for i in batch], self._encode_frozen)
        else:
            captions = [data.build_caption(self.items[i].caption, self.caption_opts, self.py_rng) for i in batch]
        time_ids = None
        if self.arch == "sdxl":
            models = _models()
            time_ids = torch.tensor(
                [
                    models.sdxl_time_ids(e["original_hw"], e["crop_top_left"], (e["bucket"][1], e["bucket"][0]))
                    for e in entries
                ],
                dtype=torch.float32,
            )
        return {"latents": latents, "text": text, "captions": captions, "time_ids": time_ids}

    def _encode_live(self, captions: list[str]) -> Any:
        """Text conditioning computed this step (shuffled captions or trained text encoders)."""
        import torch

        models = _models()
        if self.config.train_text_encoder:
            encoders = [self.lora.modules[f"te{i}"] for i in range(len(self.base.text_encoders))]
            with torch.autocast(self.device.type, dtype=self.precision.autocast_dtype,
                                enabled=self.precision.autocast_dtype is not None):
                return models.encode_text(self.base, captions, text_encoders=encoders)
        with torch.no_grad():
            return models.encode_text(self.base, captions)

    def _micro_step(self, batch: list[int]) -> Any:
        import torch

        config = self.config
        scheduler = self.base.noise_scheduler
        inputs = self._batch_inputs(batch)
        latents = inputs["latents"]
        noise = optim.sample_noise(latents.shape, self.generator, config.noise_offset)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), generator=self.generator)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = optim.training_target(scheduler, latents, noise, timesteps)
        text = inputs["text"] if inputs["text"] is not None else self._encode_live(inputs["captions"])
        device, dtype = self.device, self.precision.weight_dtype
        added = None
        if self.arch == "sdxl":
            added = {"text_embeds": text.pooled.to(device, dtype), "time_ids": inputs["time_ids"].to(device, dtype)}
        autocast = self.precision.autocast_dtype
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

    def _optimizer_step(self) -> float:
        """One optimizer step; with torch.compile, a compiler failure (no working C++ compiler or Triton, an
        unsupported op) falls back to the plain UNet and redoes the step from the same random state."""
        if self.compiled_unet is None:
            return self._plain_optimizer_step()
        from torch._dynamo.exc import TorchDynamoException

        state = self._random_state()
        if self.compile_pending:
            self.emit("phase", name="compiling", done=0, total=1)
        try:
            loss = self._plain_optimizer_step()
        except TorchDynamoException as exc:
            reason = _compile_error_text(exc)
            log.warning("torch.compile failed, training without it: %s", reason)
            self.emit("warning", message=f"torch.compile failed, training without it: {reason}")
            self.optimizer.zero_grad(set_to_none=True)
            self._set_random_state(state)
            self.compiled_unet = None
            loss = self._plain_optimizer_step()
        if self.compile_pending:
            self.compile_pending = False
            self.emit("phase", name="compiling", done=1, total=1)
        return loss

    def _plain_optimizer_step(self) -> float:
        import torch

        config = self.config
        total = 0.0
        for _ in range(config.grad_accum):
            _check_stop(self.stop)
            loss = self._micro_step(next(self.sampler))
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

    def loop(self) -> float:
        config = self.config
        first = self.step
        self.emit("phase", name="training", done=first, total=config.steps)
        started = time.perf_counter()
        loss = float("nan")
        while self.step < config.steps:
            lr = float(self.optimizer.param_groups[0]["lr"])
            compiling = self.compile_pending
            loss = self._optimizer_step()
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
            self.emit("progress", step=self.step, total_steps=config.steps, loss=loss, smooth_loss=smooth, lr=lr,
                      **speed)
            if config.sample_every and self.step % config.sample_every == 0:
                self.sample()
            if config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.step < config.steps:
                self.save_checkpoint()
        return loss

    # ---------------------------------------------------------------- checkpoints

    def _signature(self) -> dict[str, Any]:
        config = self.config
        return {
            "arch": self.arch,
            "fingerprint": self.base.fingerprint,
            "rank": config.rank,
            "alpha": config.alpha,
            "conv": config.conv,
            "conv_rank": config.conv_rank,
            "conv_alpha": config.conv_alpha,
            "train_text_encoder": config.train_text_encoder,
            "target_modules": list(config.target_modules) if config.target_modules else None,
            "batch_size": config.batch_size,
            "grad_accum": config.grad_accum,
            "items": len(self.items),
            "seed": config.seed,
            "optimizer": self.optimizer_name,
        }

    def _state(self) -> dict[str, Any]:
        import torch

        rng = {"generator": self.generator.get_state(), "python": self.py_rng.getstate(),
               "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "step": self.step,
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "sampler": self.sampler.state_dict(),
            "rng": rng,
        }

    def save_checkpoint(self) -> Path:
        import torch
        from safetensors.torch import save_file

        config = self.config
        assert config.checkpoint_dir is not None
        state = self._state()
        weights = {name: p.detach().to("cpu").contiguous() for name, p in self.lora.named_trainable().items()}
        tensors, _ = self.export_tensors()

        def write(folder: Path) -> None:
            save_file(weights, str(folder / "adapters.safetensors"))
            lora_meta = {"ss_steps": str(self.step), "ss_network_dim": str(config.rank),
                         "ss_network_alpha": str(config.alpha)}
            save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                      str(folder / "lora.safetensors"), metadata=lora_meta)
            torch.save(state, folder / "state.pt")
            meta = {"format": CHECKPOINT_FORMAT, "step": self.step, "total_steps": config.steps,
                    "smooth_loss": self.ema.smoothed, "signature": self._signature(), "created": time.time()}
            (folder / "checkpoint.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

        path = write_checkpoint_atomic(config.checkpoint_dir, self.step, write)
        self.checkpoints.append(path)
        log.info("checkpoint at step %d: %s", self.step, path)
        self.emit("checkpoint", step=self.step, path=str(path))
        return path

    def load_checkpoint(self, info: CheckpointInfo) -> None:
        import torch
        from safetensors.torch import load_file

        expected, saved = self._signature(), info.meta.get("signature", {})
        differ = sorted(key for key in expected if saved.get(key) != expected[key])
        if differ:
            details = ", ".join(f"{key} {saved.get(key)!r} -> {expected[key]!r}" for key in differ)
            raise TrainingError(f"cannot resume from {info.path}: the settings changed ({details})")
        if info.step >= self.config.steps:
            raise TrainingError(
                f"cannot resume: the checkpoint is at step {info.step} of {self.config.steps} (raise steps)"
            )
        try:
            weights = load_file(str(info.path / "adapters.safetensors"))
            state = torch.load(info.path / "state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:
            raise TrainingError(f"cannot read the checkpoint {info.path}: {exc}") from exc
        params = self.lora.named_trainable()
        if set(weights) != set(params):
            raise TrainingError(f"cannot resume from {info.path}: its LoRA modules do not match this model")
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(weights[name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.ema.load_state_dict(state["ema"])
        rng = state["rng"]
        self.generator.set_state(rng["generator"])
        self.py_rng.setstate(_as_random_state(rng["python"]))
        torch.set_rng_state(rng["torch"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", info.path, self.step)

    # ---------------------------------------------------------------- samples

    def sample(self) -> Path:
        """Render the sample prompt with the current LoRA (fixed seed, so samples compare across steps)."""
        import torch

        config = self.config
        assert config.sample_dir is not None
        pipe = self._pipeline()
        cond = self.sample_cond if self.sample_cond is not None else self._encode_sample_prompts()
        hidden = cond.hidden.to(self.device, self.precision.weight_dtype)
        kwargs: dict[str, Any] = {"prompt_embeds": hidden[:1], "negative_prompt_embeds": hidden[1:]}
        if self.arch == "sdxl":
            pooled = cond.pooled.to(self.device, self.precision.weight_dtype)
            kwargs.update(pooled_prompt_embeds=pooled[:1], negative_pooled_prompt_embeds=pooled[1:])
        vae = self.base.vae
        vae.to(self.device)
        modules = self.lora.modules.values()
        for module in modules:
            module.eval()
        autocast = self.precision.autocast_dtype
        try:
            with torch.no_grad(), torch.autocast(self.device.type, dtype=autocast, enabled=autocast is not None):
                image = pipe(
                    num_inference_steps=config.sample_steps,
                    guidance_scale=config.sample_guidance,
                    height=config.sample_size,
                    width=config.sample_size,
                    generator=torch.Generator().manual_seed(config.seed),
                    output_type="pil",
                    **kwargs,
                ).images[0]
        finally:
            for module in modules:
                module.train()
            vae.to("cpu")
        config.sample_dir.mkdir(parents=True, exist_ok=True)
        path = config.sample_dir / f"sample-{self.step:06d}.png"
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp.png")
        try:
            image.save(tmp, format="PNG")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.samples.append(path)
        self.emit("sample", step=self.step, path=str(path), prompt=config.effective_sample_prompt)
        return path

    def _encode_sample_prompts(self) -> Any:
        import torch

        encoders = [self.lora.modules[f"te{i}"] for i in range(len(self.base.text_encoders))]
        for encoder in encoders:
            encoder.eval()
        try:
            with torch.no_grad():
                prompts = [self.config.effective_sample_prompt, self.config.sample_negative]
                return _models().encode_text(self.base, prompts, text_encoders=encoders)
        finally:
            for encoder in encoders:
                encoder.train()

    def _pipeline(self) -> Any:
        from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

        base = self.base
        scheduler = EulerDiscreteScheduler.from_config(base.noise_scheduler.config)
        encoders = list(base.text_encoders)
        if self.arch == "sdxl":
            pipe = StableDiffusionXLPipeline(
                vae=base.vae, text_encoder=encoders[0], text_encoder_2=encoders[1], tokenizer=base.tokenizers[0],
                tokenizer_2=base.tokenizers[1], unet=base.unet, scheduler=scheduler,
            )
        else:
            pipe = StableDiffusionPipeline(
                vae=base.vae, text_encoder=encoders[0], tokenizer=base.tokenizers[0], unet=base.unet,
                scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
            )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    # ---------------------------------------------------------------- export

    def export_tensors(self) -> tuple[dict[str, Any], int]:
        from peft import get_peft_model_state_dict

        from .kohya import export_kohya

        modules = self.lora.modules
        unet_state = get_peft_model_state_dict(modules["unet"])
        text_states = [get_peft_model_state_dict(modules[name]) for name in sorted(modules) if name.startswith("te")]
        tensors = export_kohya(unet_state, text_states, arch=self.arch, alpha=self.config.alpha,
                               conv_alpha=self.config.conv_alpha, unet_config=dict(modules["unet"].config))
        num_modules = sum(1 for key in tensors if key.endswith(".alpha"))
        return tensors, num_modules

    def save_output(self, final_loss: float) -> TrainResult:
        from .kohya import RunFacts, build_metadata, dataset_entries, save_lora_atomic

        config = self.config
        self.emit("phase", name="saving", done=0, total=1)
        for module in self.lora.modules.values():
            module.eval()
        tensors, num_modules = self.export_tensors()
        facts = RunFacts(
            arch=self.arch,
            started_at=self.started,
            finished_at=time.time(),
            num_train_images=len(self.items),
            output_name=config.output_path.stem,
            base_model_name=config.base_model.name,
            prediction_type=self.base.info.prediction_type,
            optimizer=self.optimizer_name,
            mixed_precision=self.precision.mode,
            dataset=dataset_entries(self.items),
        )
        metadata = build_metadata(config, facts)
        config.output_path.parent.mkdir(parents=True, exist_ok=True)
        digest = save_lora_atomic(tensors, config.output_path, metadata, before_commit=lambda: _check_stop(self.stop))
        self.emit("phase", name="saving", done=1, total=1)
        log.info("saved %d LoRA modules to %s", num_modules, config.output_path)
        return TrainResult(
            output_path=config.output_path,
            sha256=digest,
            num_modules=num_modules,
            rank=config.rank,
            alpha=config.alpha,
            final_loss=final_loss,
            arch=self.arch,
            smooth_loss=self.ema.smoothed,
            steps=config.steps,
            resumed_from=self.resume.step if self.resume else 0,
            attention=self.attention,
            latent_cache=dict(self.latent_stats),
            latents_in_memory=self.latents_in_memory,
            text_cache={"hits": self.text_cache.hits, "misses": self.text_cache.misses} if self.text_cache else {},
            samples=tuple(self.samples),
            checkpoints=tuple(self.checkpoints),
            optimizer=self.optimizer_name,
            precision=self.precision.mode,
            compiled=self.compiled_unet is not None,
        )

    def close(self) -> None:
        tmp = getattr(self, "_tmp_cache", None)
        if tmp is not None:
            tmp.cleanup()


def _as_random_state(value: Any) -> tuple:
    """random.Random.setstate wants tuples (a checkpoint round-trip may have made them lists)."""
    version, internal, gauss = value
    return (int(version), tuple(int(v) for v in internal), gauss)


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
    _check_stop(stop)
    resume = find_checkpoint(config.resume_from) if config.resume_from is not None else None
    arch = detect_model(config.base_model).arch
    if config.arch not in ("auto", arch):
        raise TrainingError(f"arch is {config.arch!r} but the base model is {arch!r}")
    emit("start", total_steps=config.steps, arch=arch, resume_step=resume.step if resume else 0)
    _import_stack()
    _check_stop(stop)  # importing torch & co. takes seconds: a stop may have arrived meanwhile
    if config.checkpoint_dir is not None:
        remove_stale_temp(config.checkpoint_dir)
    run = _Run(config, emit, stop)
    try:
        run.prepare(arch)
        if resume is not None:
            run.resume = resume
            run.load_checkpoint(resume)
        final_loss = run.loop()
        _check_stop(stop)
        return run.save_output(final_loss)
    finally:
        run.close()


def _compile_error_text(exc: BaseException) -> str:
    """One line for the user: the compiler's own error (Dynamo wraps it), not the wrapper's header."""
    inner = getattr(exc, "inner_exception", None)
    text = f"{type(inner).__name__}: {inner}" if inner is not None else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _no_peft_input_casting(modules: Any) -> None:
    """Under autocast, peft would cast every activation to the fp32 LoRA weights' dtype and autocast would cast it
    straight back: two extra kernels per LoRA module per pass. Autocast alone picks the matmul dtype."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in modules:
        for layer in module.modules():
            if isinstance(layer, BaseTunerLayer) and hasattr(layer, "cast_input_dtype_enabled"):
                layer.cast_input_dtype_enabled = False
