"""The baseline for ``train_throughput.py``: a LoRA loop shaped like diffusers' ``train_text_to_image_lora.py``.

Written from that script's per-step structure (not copied): every step loads and decodes its images
(resize the shorter side, fixed-size centre crop, no bucketing), tokenises the captions, runs the VAE
encoder and the text encoder, then noise → timesteps → ``add_noise`` → UNet → MSE → backward →
grad clip (its default ``max_grad_norm`` 1.0) → AdamW step → LR scheduler step → zero_grad. No
caching of any kind. peft LoRA on its default targets (``to_k``, ``to_q``, ``to_v``, ``to_out.0``,
gaussian init). On a GPU it does what that script does under ``--mixed_precision``: frozen weights
(UNet, VAE, text encoder) stored in the half dtype, the LoRA parameters kept in fp32, the UNet
forward under autocast; on the CPU everything is fp32.

``run_baseline(spec, on_step)`` returns timings; ``on_step(step, sections)`` is called after each
step (the loss is read with ``.item()`` every step, as that script does for its logs, so the GPU is
synchronised once per step; the sections inside a step are timed with CUDA events, without synchronising).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BASELINE_TARGETS: tuple[str, ...] = ("to_k", "to_q", "to_v", "to_out.0")


class _CaptionedImages:
    """(image path, caption) pairs; decoding, resizing and tokenising happen on access, every epoch."""

    def __init__(self, items: list[dict], tokenizer: Any, resolution: int) -> None:
        self.items, self.tokenizer, self.resolution = items, tokenizer, resolution

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        import numpy as np
        import torch
        from PIL import Image

        item = self.items[index]
        with Image.open(item["image"]) as opened:
            image = opened.convert("RGB")
        res = self.resolution
        scale = res / min(image.size)  # Resize(res): the shorter side becomes res, bilinear
        image = image.resize((max(res, round(image.width * scale)), max(res, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
        left, top = (image.width - res) // 2, (image.height - res) // 2  # CenterCrop(res)
        image = image.crop((left, top, left + res, top + res))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # ToTensor
        pixels = (pixels - 0.5) / 0.5  # Normalize([0.5], [0.5])
        ids = self.tokenizer(item["caption"], max_length=self.tokenizer.model_max_length, padding="max_length",
                             truncation=True, return_tensors="pt").input_ids[0]
        return {"pixel_values": pixels, "input_ids": ids}


def _collate(examples: list[dict]) -> dict:
    import torch

    pixels = torch.stack([e["pixel_values"] for e in examples]).to(memory_format=torch.contiguous_format).float()
    return {"pixel_values": pixels, "input_ids": torch.stack([e["input_ids"] for e in examples])}


def run_baseline(spec: dict, on_step: Callable[[int, dict[str, float]], None]) -> dict:
    """Train ``spec["total_steps"]`` steps; returns {"load_s", "loss"}. Timing per step goes to ``on_step``."""
    import torch
    import torch.nn.functional as F
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from peft import LoraConfig
    from transformers import CLIPTextModel, CLIPTokenizer

    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec["mixed_precision"]) if cuda else None
    weight_dtype = half or torch.float32

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    def mark() -> Any:
        """A point in time: a CUDA event on the GPU (no synchronisation inside the step), else the clock."""
        if cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(a: Any, b: Any) -> float:
        return a.elapsed_time(b) / 1000 if cuda else b - a

    t0 = time.perf_counter()
    torch.manual_seed(spec["seed"])
    base = str(Path(spec["base_model"]))
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", local_files_only=True)
    scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae", local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", local_files_only=True)
    for model in (unet, vae, text_encoder):
        model.requires_grad_(False)
        model.to(device, dtype=weight_dtype)
    unet.add_adapter(LoraConfig(r=spec["rank"], lora_alpha=spec["alpha"], init_lora_weights="gaussian",
                                target_modules=list(BASELINE_TARGETS)))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:  # the script's cast_training_params: trainable LoRA weights stay fp32
        p.data = p.data.float()
    optimizer = torch.optim.AdamW(params, lr=spec["learning_rate"], betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # "constant"
    dataset = _CaptionedImages(spec["items"], tokenizer, spec["resolution"])
    workers = spec.get("baseline_workers", 0)  # the script's --dataloader_num_workers, default 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=spec["batch_size"], shuffle=True, collate_fn=_collate,
                                         num_workers=workers, persistent_workers=workers > 0,
                                         generator=torch.Generator().manual_seed(spec["seed"]))
    scale = float(vae.config.scaling_factor)
    num_train_timesteps = scheduler.config.num_train_timesteps
    prediction_type = scheduler.config.prediction_type
    sync()
    load_s = time.perf_counter() - t0

    unet.train()
    step, loss_value, total = 0, float("nan"), spec["total_steps"]
    while step < total:
        batches = iter(loader)
        while step < total:
            t_start, c_start = mark(), time.process_time()
            try:
                batch = next(batches)
            except StopIteration:
                break
            pixels = batch["pixel_values"].to(device, dtype=weight_dtype)
            ids = batch["input_ids"].to(device)
            t_data, c_data = mark(), time.process_time()
            latents = vae.encode(pixels).latent_dist.sample() * scale
            encoder_hidden_states = text_encoder(ids, return_dict=False)[0]
            t_encode, c_encode = mark(), time.process_time()
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, num_train_timesteps, (latents.shape[0],), device=device).long()
            noisy = scheduler.add_noise(latents, noise, timesteps)
            target = noise if prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
            with torch.autocast(device.type, dtype=half, enabled=half is not None):
                pred = unet(noisy, timesteps, encoder_hidden_states, return_dict=False)[0]
            loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            t_end = mark()
            loss_value = loss.item()  # the script's per-step logging: one synchronisation per step
            c_end = time.process_time()
            step += 1
            on_step(step, {"data": seconds(t_start, t_data), "encode": seconds(t_data, t_encode),
                           "unet": seconds(t_encode, t_end),
                           "cpu_data": c_data - c_start, "cpu_encode": c_encode - c_data, "cpu_unet": c_end - c_encode})
    return {"load_s": load_s, "loss": loss_value, "lora_modules": sum(1 for m in unet.modules() if hasattr(m, "lora_A"))}
