"""Which modules get a LoRA: kohya sd-scripts' default coverage (``networks.lora``), as diffusers module paths.

kohya walks the model, and inside every module whose class is one of its "target" classes wraps each child
``Linear`` / ``Conv2d``:

- UNet, default: ``Transformer2DModel`` -> every Linear and 1x1 conv (proj_in/proj_out, attn1/attn2
  to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2). Full-size SD1.5: 192 modules, SDXL: 722.
- UNet with ``conv_dim`` (LoCon-style "conv LoRA"): additionally ``ResnetBlock2D``, ``Downsample2D`` and
  ``Upsample2D``. Their 3x3 convs (resnet conv1/conv2, down/upsampler conv) train with conv_rank/conv_alpha;
  their Linear/1x1 children (time_emb_proj, conv_shortcut) with the normal rank/alpha. conv_in/conv_out sit in
  no target class, so kohya never trains them, and neither do we.
- Text encoders: ``CLIPAttention`` + ``CLIPMLP`` -> q/k/v/out_proj, fc1, fc2: 72 (CLIP-L), 192 (OpenCLIP bigG).

Classes are matched by name (as kohya does) so this module never imports diffusers/transformers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

UNET_TARGET_CLASSES = ("Transformer2DModel",)
UNET_CONV_TARGET_CLASSES = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_TARGET_CLASSES = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")
ARCHES = ("sd15", "sdxl")


def _kind(module: Any) -> str | None:
    """Kind of module: "linear", "conv1x1", "conv" (other kernels) or None for modules kohya does not wrap."""
    import torch

    if isinstance(module, torch.nn.Linear):
        return "linear"
    if isinstance(module, torch.nn.Conv2d):
        return "conv1x1" if tuple(module.kernel_size) == (1, 1) else "conv"
    return None


def _children_of_classes(root: Any, classes: Iterable[str], *, with_conv: bool) -> list[str]:
    classes = tuple(classes)
    found: dict[str, None] = {}
    for name, module in root.named_modules():
        if type(module).__name__ not in classes:
            continue
        for child_name, child in module.named_modules():
            parts = child_name.split(".")
            if not child_name or "base_layer" in parts or any(part.startswith("lora_") for part in parts):
                continue  # inside a peft wrapper: the wrapper itself stands for the original layer
            kind = _kind(getattr(child, "base_layer", child))
            if kind is None or (kind == "conv" and not with_conv):
                continue
            found[f"{name}.{child_name}" if name else child_name] = None
    return list(found)


def unet_lora_targets(unet: Any, arch: str, *, conv: bool = False) -> list[str]:
    """Full diffusers module paths of ``unet`` that kohya trains (see module doc), in model order."""
    if arch not in ARCHES:
        raise ValueError(f"unknown arch {arch!r} (expected one of {ARCHES})")
    classes = UNET_TARGET_CLASSES + (UNET_CONV_TARGET_CLASSES if conv else ())
    targets = _children_of_classes(unet, classes, with_conv=conv)
    if not targets:
        raise ValueError("no LoRA target modules found in the UNet (not a diffusers UNet2DConditionModel?)")
    return targets


def text_encoder_lora_targets(text_encoder: Any) -> list[str]:
    """q/k/v/out_proj and mlp fc1/fc2 of every CLIP encoder layer (``text_model.encoder.layers.N....``)."""
    targets = _children_of_classes(text_encoder, TEXT_ENCODER_TARGET_CLASSES, with_conv=False)
    if not targets:
        raise ValueError("no LoRA target modules found in the text encoder (not a transformers CLIP model?)")
    return targets


def conv_targets(model: Any, targets: Iterable[str]) -> list[str]:
    """The members of ``targets`` that are non-1x1 convs: they train with conv_rank / conv_alpha."""
    modules = dict(model.named_modules())
    return [path for path in targets if _kind(getattr(modules[path], "base_layer", modules[path])) == "conv"]


def lora_config(
    model: Any,
    targets: list[str],
    *,
    rank: int,
    alpha: float,
    conv_rank: int | None = None,
    conv_alpha: float | None = None,
    init_lora_weights: Any = True,
) -> Any:
    """A peft ``LoraConfig`` on exactly ``targets``; 3x3 convs get conv_rank/conv_alpha via rank/alpha patterns.

    Paths are escaped and anchored so a pattern never matches a second module (peft matches
    ``(.*\\.)?<pattern>$``).
    """
    from peft import LoraConfig

    convs = conv_targets(model, targets)
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    if convs:
        c_rank = int(conv_rank if conv_rank is not None else rank)
        c_alpha = float(conv_alpha if conv_alpha is not None else alpha)  # same default as kohya.export_kohya
        for path in convs:
            rank_pattern[re.escape(path)] = c_rank
            alpha_pattern[re.escape(path)] = c_alpha
    return LoraConfig(
        r=int(rank),
        lora_alpha=float(alpha),
        target_modules=list(targets),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        init_lora_weights=init_lora_weights,
    )
