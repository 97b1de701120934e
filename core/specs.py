"""The shapes of request bodies: checked by `validation.validate` in the services and published
in the OpenAPI document by the routes. Kept apart from the services so that declaring routes
(at ComfyUI start-up) imports no database code."""

from __future__ import annotations

from .validation import Field, Spec

TRAIN_SPEC: Spec = {
    "base_model": Field(str, required=True, max_len=500,
                        description="a base model from GET /models: a diffusers folder or a single-file checkpoint"),
    "steps": Field(int, min=1, max=100000, description="optimiser steps (default 1500)"),
    "rank": Field(int, min=1, max=256, description="LoRA rank (default 16)"),
    "alpha": Field(float, min=1e-6, max=1024.0, description="LoRA alpha (default 8; scale = alpha / rank)"),
    "network_alpha": Field(float, min=1e-6, max=1024.0, description="the same as alpha (kohya's name)"),
    "learning_rate": Field(float, min=1e-10, max=1.0, description="UNet learning rate (default 1e-4)"),
    "resolution": Field(int, min=32, max=2048, description="training side in pixels (default 512 SD1.5, 1024 SDXL)"),
    "batch_size": Field(int, min=1, max=64),
    "seed": Field(int, min=0, max=2**31 - 1),
    "device": Field(str, choices=("auto", "cuda", "cpu"), description="auto: the GPU when there is one"),
    # advanced (the panel folds these away)
    "bucketing": Field(bool, description="aspect-ratio buckets instead of square crops (default true)"),
    "flip": Field(bool, description="random horizontal flips"),
    "shuffle_tags": Field(bool, description="shuffle caption tags after the first keep_tokens"),
    "keep_tokens": Field(int, min=0, max=75),
    "tag_dropout": Field(float, min=0.0, max=1.0),
    "caption_dropout": Field(float, min=0.0, max=1.0),
    "train_text_encoder": Field(bool, description="also train text-encoder LoRA (default false)"),
    "text_encoder_lr": Field(float, min=1e-10, max=1.0),
    "conv": Field(bool, description="also train the 3x3 convolutions (LoCon)"),
    "conv_rank": Field(int, min=1, max=256),
    "conv_alpha": Field(float, min=1e-6, max=1024.0),
    "optimizer": Field(str, choices=("adamw", "adamw8bit"),
                       description="adamw8bit: bitsandbytes' 8-bit AdamW when it is installed (else AdamW)"),
    "lr_scheduler": Field(str, choices=("cosine", "constant", "constant_with_warmup"), description="default cosine"),
    "warmup_steps": Field(int, min=0, max=100000, description="default: 5% of the steps, at most 100"),
    "min_snr_gamma": Field(float, min=0.0, max=100.0, description="min-SNR weighting, 0 = off (default 5)"),
    "noise_offset": Field(float, min=0.0, max=1.0),
    "grad_accum": Field(int, min=1, max=1024),
    "gradient_checkpointing": Field(bool),
    "compile": Field(bool, description="torch.compile the UNet: faster steps after a one-off compile (minutes the "
                     "first time, cached on disk; needs a C++ compiler on a CPU, Triton on a GPU)"),
    "mixed_precision": Field(str, choices=("no", "fp16", "bf16"), description="GPU only; fp32 on a CPU"),
    "checkpoint_every": Field(int, min=0, max=100000, description="save a resumable checkpoint every N steps (0 = off)"),
    "sample_every": Field(int, min=0, max=100000, description="render a sample image every N steps (0 = off)"),
    "sample_steps": Field(int, min=1, max=150),
    "sample_size": Field(int, min=32, max=2048),
}
