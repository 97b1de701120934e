"""The LoRA adapters of a run: peft LoRA layers in the UNet and, when trained, the text encoder(s).

``add_lora`` injects them (kohya's module coverage from ``targets.py``, or the config's ``target_modules``),
keeps their weights in fp32, sets up gradient checkpointing and returns the adapted modules with their trainable
parameters (``LoraModules``). ``export_tensors`` turns the adapters' peft state into the kohya tensors that a
``.safetensors`` LoRA holds (``kohya.py``): the final output and every checkpoint's ``lora.safetensors``.

Import-light: torch and peft are imported inside the functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import optim
from .context import RunContext
from .errors import TrainingError

if TYPE_CHECKING:
    from .config import TrainConfig

log = logging.getLogger("lora_studio.training.adapters")


@dataclass
class LoraModules:
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

    def text_encoders(self) -> list:
        """The adapted text encoders, in order (empty when they are not trained)."""
        return [self.modules[name] for name in sorted(self.modules) if name.startswith("te")]


def add_lora(ctx: RunContext, base: Any, arch: str) -> LoraModules:
    """Add the LoRA adapters to ``base``'s UNet (and text encoders when trained), seeded by the config's seed."""
    import torch

    from .targets import lora_config, text_encoder_lora_targets, unet_lora_targets

    config = ctx.config
    torch.manual_seed(config.seed)  # peft's random initialisation of lora_A
    unet = base.unet
    if config.target_modules is not None:  # explicit override: module name suffixes (e.g. to_q)
        targets = [
            path
            for path in unet_lora_targets(unet, arch, conv=config.conv)
            if any(path == t or path.endswith("." + t) for t in config.target_modules)
        ]
        if not targets:
            raise TrainingError(f"no UNet module matches target_modules {list(config.target_modules)}")
    else:
        targets = unet_lora_targets(unet, arch, conv=config.conv)
    _add_adapter(unet, lora_config(unet, targets, rank=config.rank, alpha=config.alpha,
                                   conv_rank=config.conv_rank, conv_alpha=config.conv_alpha), "UNet")
    modules = {"unet": unet}
    if config.train_text_encoder:
        for index, encoder in enumerate(base.text_encoders):
            te_targets = text_encoder_lora_targets(encoder)
            _add_adapter(encoder, lora_config(encoder, te_targets, rank=config.rank, alpha=config.alpha),
                         f"text encoder {index + 1}")
            encoder.train()
            modules[f"te{index}"] = encoder
    optim.cast_trainable_to_fp32(list(modules.values()))
    if ctx.precision.autocast_dtype is not None:
        _no_peft_input_casting(modules.values())
    # NHWC for the UNet's convolutions where the kernels want it: cuDNN, and oneDNN's bf16 kernels on a CPU (the
    # full SD1.5 step at 256 px on this project's 2-core AMX CPU: 3-8 % faster; in fp32 on a CPU NHWC is ~7 %
    # slower, so it stays NCHW)
    if ctx.device.type == "cuda" or ctx.precision.autocast_dtype is not None:
        unet.to(memory_format=torch.channels_last)
    if config.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        for name, module in modules.items():
            if name.startswith("te"):
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    unet.train()
    params = {name: [p for p in module.parameters() if p.requires_grad] for name, module in modules.items()}
    log.info("LoRA rank %d alpha %s on %d UNet modules%s: %d trainable tensors", config.rank, config.alpha,
             len(targets), " + text encoders" if config.train_text_encoder else "",
             sum(len(p) for p in params.values()))
    return LoraModules(modules, params)


def _add_adapter(module: Any, lora: Any, what: str) -> None:
    from peft import inject_adapter_in_model

    try:
        if hasattr(module, "set_adapters"):  # diffusers models: also registers the adapter with diffusers
            module.add_adapter(lora)
        else:  # transformers' own add_adapter insists on a newer peft than diffusers needs
            inject_adapter_in_model(lora, module, adapter_name="default")
    except ValueError as exc:
        raise TrainingError(f"cannot add LoRA to the {what}: {exc}") from exc


def _no_peft_input_casting(modules: Any) -> None:
    """Under autocast, peft would cast every activation to the fp32 LoRA weights' dtype and autocast would cast it
    straight back: two extra kernels per LoRA module per pass. Autocast alone picks the matmul dtype."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in modules:
        for layer in module.modules():
            if isinstance(layer, BaseTunerLayer) and hasattr(layer, "cast_input_dtype_enabled"):
                layer.cast_input_dtype_enabled = False


def export_tensors(lora: LoraModules, arch: str, config: TrainConfig) -> tuple[dict[str, Any], int]:
    """The adapters as kohya tensors (``lora_unet_*`` / ``lora_te*_``), and the number of LoRA modules."""
    from peft import get_peft_model_state_dict

    from .kohya import export_kohya

    modules = lora.modules
    unet_state = get_peft_model_state_dict(modules["unet"])
    text_states = [get_peft_model_state_dict(module) for module in lora.text_encoders()]
    tensors = export_kohya(unet_state, text_states, arch=arch, alpha=config.alpha,
                           conv_alpha=config.conv_alpha, unet_config=dict(modules["unet"].config))
    num_modules = sum(1 for key in tensors if key.endswith(".alpha"))
    return tensors, num_modules
