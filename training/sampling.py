"""Sample images during training: the sample prompt rendered with the current LoRA every ``sample_every`` steps.

``SampleRenderer`` builds a diffusers pipeline around the run's own modules (UNet with its adapters, VAE, text
encoders, an Euler scheduler from the base's noise schedule) and renders ``sample_prompt`` against
``sample_negative`` with a fixed seed, so samples compare across steps. With frozen text encoders the two
prompts are encoded once, before the encoders are released (``encode_prompts``); with trained ones they are
encoded per sample through the adapters. Each PNG is written atomically to ``sample_dir/sample-<step>.png`` and
reported as a 'sample' event.

Import-light: torch and diffusers are imported inside the methods.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from .adapters import LoraModules
from .context import RunContext


def _models() -> Any:
    from . import models

    return models


class SampleRenderer:
    """Renders the sample prompt for one run; ``paths`` lists the samples written so far."""

    def __init__(self, ctx: RunContext, base: Any, arch: str) -> None:
        self.ctx = ctx
        self.base = base
        self.arch = arch
        self.cond: Any = None  # the prompts' conditioning from the frozen text encoders
        self.paths: list[Path] = []

    def encode_prompts(self) -> None:
        """With frozen text encoders: encode the two prompts now, while the encoders are still loaded."""
        import torch

        config = self.ctx.config
        if config.sample_every and not config.train_text_encoder:
            with torch.no_grad():
                self.cond = _models().encode_text(self.base, [config.effective_sample_prompt, config.sample_negative])

    def render(self, step: int, lora: LoraModules) -> Path:
        """Render the sample prompt with the current LoRA (fixed seed, so samples compare across steps)."""
        import torch

        ctx, config = self.ctx, self.ctx.config
        assert config.sample_dir is not None
        pipe = self._pipeline()
        cond = self.cond if self.cond is not None else self._encode_prompts_live(lora)
        hidden = cond.hidden.to(ctx.device, ctx.precision.weight_dtype)
        kwargs: dict[str, Any] = {"prompt_embeds": hidden[:1], "negative_prompt_embeds": hidden[1:]}
        if self.arch == "sdxl":
            pooled = cond.pooled.to(ctx.device, ctx.precision.weight_dtype)
            kwargs.update(pooled_prompt_embeds=pooled[:1], negative_pooled_prompt_embeds=pooled[1:])
        vae = self.base.vae
        vae.to(ctx.device)
        modules = lora.modules.values()
        for module in modules:
            module.eval()
        autocast = ctx.precision.autocast_dtype
        try:
            with torch.no_grad(), torch.autocast(ctx.device.type, dtype=autocast, enabled=autocast is not None):
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
        path = config.sample_dir / f"sample-{step:06d}.png"
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp.png")
        try:
            image.save(tmp, format="PNG")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.paths.append(path)
        ctx.emit("sample", step=step, path=str(path), prompt=config.effective_sample_prompt)
        return path

    def _encode_prompts_live(self, lora: LoraModules) -> Any:
        """The prompts through the trained text encoders (with their adapters), in eval mode."""
        import torch

        encoders = lora.text_encoders()
        for encoder in encoders:
            encoder.eval()
        autocast = self.ctx.precision.autocast_dtype
        try:  # under the training's autocast, as in the step: the LoRA weights are fp32, the frozen encoder is not
            with torch.no_grad(), torch.autocast(self.ctx.device.type, dtype=autocast, enabled=autocast is not None):
                prompts = [self.ctx.config.effective_sample_prompt, self.ctx.config.sample_negative]
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
