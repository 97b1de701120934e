"""The data side of a run: which image trains at which size, its cached latents and captions, and the batches.

``RunData.prepare`` gives every training image its bucket (an aspect-ratio resolution, ``data.py``), creates the
seeded ``BucketSampler`` that draws the batches, encodes every (image, flip) once with the VAE into the on-disk
``LatentCache`` (kept in RAM up to LATENTS_IN_MEMORY_MB, else read back per batch), caches the frozen text
encoders' outputs when the captions never change (``TextCache``) and prunes the on-disk caches to
CACHE_MAX_BYTES (``cache.py``). ``free_frozen_models`` then releases what only caching needed. During training,
``batch_inputs`` turns a batch of item indices into noisy-ready latents (sampled from the cached distributions),
text conditioning (cached) or captions (built this step), and SDXL's time ids.

Import-light: torch is imported inside the methods.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

from . import data
from .context import RunContext
from .errors import TrainingError

log = logging.getLogger("lora_studio.training.run_data")

VAE_BATCH = 4
LATENT_CHUNK = 256  # items encoded/read per round while caching
# Cached latents are kept in RAM up to this size (SDXL at 1024 px: ~0.5 MiB per image and orientation); beyond
# it they are read from the on-disk cache per batch instead.
LATENTS_IN_MEMORY_MB = int(os.environ.get("LORA_STUDIO_LATENTS_IN_MEMORY_MB", "2048"))
# The on-disk latent + text caches (cache_dir) are pruned to this size when a run has cached its own entries,
# least recently used first; 0 = no limit.
CACHE_MAX_BYTES = int(float(os.environ.get("LORA_STUDIO_CACHE_MAX_MB", "20480")) * 2**20)


def _models() -> Any:
    from . import models

    return models


class RunData:
    """The run's items, buckets, sampler and caches (``prepare`` fills the caches; ``close`` removes a temporary
    latent cache)."""

    def __init__(self, ctx: RunContext, base: Any) -> None:
        config = ctx.config
        self.ctx = ctx
        self.base = base
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
        self.text_cache: Any = None
        self._tmp_cache: tempfile.TemporaryDirectory | None = None

    def prepare(self) -> None:
        self._cache_latents()
        self._cache_text()
        self._prune_caches()

    def close(self) -> None:
        if self._tmp_cache is not None:
            self._tmp_cache.cleanup()

    # ---------------------------------------------------------------- caching

    def _cache_latents(self) -> None:
        """Encode every (item, flip) once with the VAE (on disk under cache_dir, so a second run skips it)."""
        import torch

        from .cache import LatentCache

        ctx, config = self.ctx, self.ctx.config
        root = config.cache_dir
        if root is None:
            self._tmp_cache = tempfile.TemporaryDirectory(prefix="lora-studio-latents-")
            root = Path(self._tmp_cache.name)
        self.latent_cache = LatentCache(root / "latents", self.base.fingerprint, vae_dtype="float32")
        flips = (False, True) if config.flip else (False,)
        requests = [(item, self.buckets[i], flip) for i, item in enumerate(self.items) for flip in flips]
        vae = self.base.vae

        def encode(prepared: list) -> tuple[Any, Any]:
            ctx.check_stop()
            pixels = torch.stack([p.pixels for p in prepared]).to(ctx.device, torch.float32)
            with torch.no_grad():
                dist = vae.encode(pixels).latent_dist
            return dist.mean.float().cpu(), dist.std.float().cpu()

        def progress(done: int, total: int) -> None:
            ctx.emit("phase", name="caching", done=done, total=total)

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

    def _cache_text(self) -> None:
        """Text conditioning: cached per item when the encoders are frozen and the captions never change."""
        from .cache import TextCache

        config = self.ctx.config
        if config.train_text_encoder or not data.deterministic_captions(self.caption_opts):
            return
        root = config.cache_dir / "text" if config.cache_dir is not None else None
        self.text_cache = TextCache(self.base.fingerprint, root, dtype=str(self.ctx.precision.weight_dtype))
        scratch = random.Random(0)  # never drawn from: deterministic captions
        self.fixed_captions = [data.build_caption(item.caption, self.caption_opts, scratch) for item in self.items]
        unique = list(dict.fromkeys(self.fixed_captions))
        for start in range(0, len(unique), 16):
            self.ctx.check_stop()
            self.text_cache.get_batch(unique[start : start + 16], self.encode_frozen)

    def _prune_caches(self) -> None:
        """Keep the on-disk caches within CACHE_MAX_BYTES, never touching this run's entries."""
        from .cache import prune

        cache_dir = self.ctx.config.cache_dir
        if cache_dir is None or CACHE_MAX_BYTES <= 0:
            return
        keep = set(self.latent_cache.used) | (set(self.text_cache.used) if self.text_cache is not None else set())
        roots = [self.latent_cache.root, cache_dir / "text"]
        result = prune(roots, CACHE_MAX_BYTES, keep)
        if result.removed:
            log.info("cache: removed %d least recently used entries (%.1f MiB); %.1f MiB left", result.removed,
                     result.freed_bytes / 2**20, result.remaining_bytes / 2**20)
        if result.remaining_bytes > CACHE_MAX_BYTES:
            log.warning("this run's cached latents alone (%.1f MiB) exceed LORA_STUDIO_CACHE_MAX_MB",
                        result.remaining_bytes / 2**20)

    @property
    def text_stats(self) -> dict[str, int]:
        return {"hits": self.text_cache.hits, "misses": self.text_cache.misses} if self.text_cache else {}

    # ---------------------------------------------------------------- batches

    def encode_frozen(self, captions: list[str]) -> Any:
        """Text conditioning from the frozen text encoders."""
        import torch

        with torch.no_grad():
            return _models().encode_text(self.base, captions)

    def latent(self, index: int, flip: bool) -> dict:
        if self.latents_in_memory:
            return self.latents[(index, flip)]
        entry = self.latent_cache.get(self.items[index], self.buckets[index], flip)
        if entry is None:
            raise TrainingError(f"the cached latents of {self.items[index].image} disappeared from "
                                f"{self.latent_cache.root} during training")
        return entry

    def batch_inputs(self, batch: list[int], py_rng: random.Random, generator: Any, arch: str) -> dict[str, Any]:
        """Latents, text (cached conditioning) or captions (built now), SDXL time ids for ``batch``. Draws, in this
        order: the flips (``py_rng``), the latent samples (``generator``), the captions (``py_rng``)."""
        import torch

        config = self.ctx.config
        flips = [bool(config.flip and py_rng.random() < 0.5) for _ in batch]
        entries = [self.latent(i, flip) for i, flip in zip(batch, flips, strict=True)]
        mean = torch.stack([e["mean"] for e in entries])
        std = torch.stack([e["std"] for e in entries])
        latents = (mean + std * torch.randn(mean.shape, generator=generator)) * self.scale
        captions, text = None, None
        if self.text_cache is not None:
            text = self.text_cache.get_batch([self.fixed_captions[i] for i in batch], self.encode_frozen)
        else:
            captions = [data.build_caption(self.items[i].caption, self.caption_opts, py_rng) for i in batch]
        time_ids = None
        if arch == "sdxl":
            models = _models()
            time_ids = torch.tensor(
                [
                    models.sdxl_time_ids(e["original_hw"], e["crop_top_left"], (e["bucket"][1], e["bucket"][0]))
                    for e in entries
                ],
                dtype=torch.float32,
            )
        return {"latents": latents, "text": text, "captions": captions, "time_ids": time_ids}


def free_frozen_models(ctx: RunContext, base: Any, text_cached: bool) -> None:
    """The VAE is not needed once latents are cached (kept on the CPU only to decode samples); frozen text
    encoders are not needed once their outputs are cached."""
    import torch

    sampling = bool(ctx.config.sample_every)
    if sampling:
        base.vae.to("cpu")
    else:
        base.vae = None
    if text_cached and not sampling:
        base.text_encoders = [None] * len(base.text_encoders)
    elif text_cached:
        for encoder in base.text_encoders:
            encoder.to("cpu")  # the sampling pipeline is built with them; prompts are pre-encoded
    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()
