"""Write a (tiny) diffusers SD1.5/SDXL folder as one .safetensors file in the ORIGINAL LDM key layout.

That is the layout ComfyUI users keep in models/checkpoints: ``model.diffusion_model.*`` (UNet),
``first_stage_model.*`` (VAE, 1x1-conv attention), ``cond_stage_model.transformer.text_model.*`` (SD1.5 CLIP-L)
or ``conditioner.embedders.0.transformer.text_model.*`` (SDXL CLIP-L) and ``conditioner.embedders.1.model.*``
(SDXL OpenCLIP bigG: fused ``in_proj``, ``text_projection`` stored as (width, proj)).
The mapping is written here independently of the loader, so loading the export back tests the loader.
"""

from __future__ import annotations

import re
from pathlib import Path

_RESNET_UNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str) -> str:
    for new, old in _RESNET_UNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise KeyError(rest)


def unet_to_ldm(state: dict, config: dict) -> dict:
    """diffusers UNet2DConditionModel state dict -> LDM ``model.diffusion_model.*`` keys."""
    per = config["layers_per_block"]
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module in fixed:
            new = f"{fixed[module]}.{leaf}"
        elif m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{1 + b * (per + 1) + j}.0.{_resnet(rest)}"
        elif m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{1 + b * (per + 1) + j}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"input_blocks.{(int(m[1]) + 1) * (per + 1)}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"output_blocks.{b * (per + 1) + j}.0.{_resnet(rest)}"
        elif m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
            b, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"output_blocks.{b * (per + 1) + j}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            b = int(m[1])
            new = f"output_blocks.{b * (per + 1) + per}.{2 if up_has_attn[b] else 1}.conv.{m[2]}"
        else:
            raise KeyError(f"no LDM name for UNet key {key}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(state: dict, config: dict) -> dict:
    """diffusers AutoencoderKL state dict -> LDM ``first_stage_model.*`` keys (attention as 1x1 convs)."""
    levels = len(config["block_out_channels"])
    out = {}
    for key, value in state.items():
        new = key
        if m := re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
            side, kind, i, j, rest = m[1], m[2], int(m[3]), int(m[4]), m[5]
            level = i if kind == "down" else levels - 1 - i
            new = f"{side}.{kind}.{level}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            new = f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3].replace('conv_shortcut', 'nin_shortcut')}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", key):
            new = f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
            if m[3] == "weight" and m[2] != "group_norm":
                value = value.reshape(*value.shape, 1, 1)
        elif m := re.match(r"(encoder|decoder)\.conv_norm_out\.(.*)", key):
            new = f"{m[1]}.norm_out.{m[2]}"
        elif not re.match(r"(encoder\.conv_(in|out)|decoder\.conv_(in|out)|quant_conv|post_quant_conv)\.", key):
            raise KeyError(f"no LDM name for VAE key {key}")
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(state: dict, prefix: str) -> dict:
    """HF CLIPTextModel state dict -> ``<prefix>text_model.*`` (the layout SD1.5 / SDXL CLIP-L use)."""
    return {prefix + "text_model." + key.removeprefix("text_model."): value for key, value in state.items()}


def open_clip_to_ldm(state: dict, prefix: str) -> dict:
    """HF CLIPTextModelWithProjection state dict -> open_clip layout under ``prefix`` (SDXL bigG)."""
    import torch

    state = {key.removeprefix("text_model."): value for key, value in state.items()}
    out = {prefix + "logit_scale": torch.tensor(4.6052)}  # real checkpoints carry it; the loader must ignore it
    fixed = {"embeddings.token_embedding.weight": "token_embedding.weight",
             "embeddings.position_embedding.weight": "positional_embedding",
             "final_layer_norm.weight": "ln_final.weight", "final_layer_norm.bias": "ln_final.bias"}
    layers = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
              "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for key, value in state.items():
        if key in fixed:
            out[prefix + fixed[key]] = value
        elif key == "text_projection.weight":
            out[prefix + "text_projection"] = value.T.contiguous()
        elif m := re.match(r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", key):
            i, kind = m[1], m[3]
            if m[2] == "q":
                parts = [state[f"encoder.layers.{i}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                out[f"{prefix}transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
        elif m := re.match(r"encoder\.layers\.(\d+)\.(.*)\.(weight|bias)", key):
            out[f"{prefix}transformer.resblocks.{m[1]}.{layers[m[2]]}.{m[3]}"] = value
        else:
            raise KeyError(f"no open_clip name for key {key}")
    return out


def diffusers_to_ldm(folder: Path) -> tuple[dict, str]:
    """(LDM state dict, arch) of a diffusers SD1.5 / SDXL folder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"), local_files_only=True)
    vae = AutoencoderKL.from_pretrained(str(folder / "vae"), local_files_only=True)
    state = {**unet_to_ldm(unet.state_dict(), dict(unet.config)), **vae_to_ldm(vae.state_dict(), dict(vae.config))}
    te = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True).state_dict()
    te = {k: v for k, v in te.items() if not k.endswith("position_ids")}
    if (folder / "text_encoder_2").is_dir():
        te2 = CLIPTextModelWithProjection.from_pretrained(str(folder / "text_encoder_2"), local_files_only=True)
        state.update(clip_to_ldm(te, "conditioner.embedders.0.transformer."))
        state.update(open_clip_to_ldm(te2.state_dict(), "conditioner.embedders.1.model."))
        return state, "sdxl"
    state.update(clip_to_ldm(te, "cond_stage_model.transformer."))
    return state, "sd15"


def export_single_file(folder: Path, target: Path, *, v_pred_key: bool = False, ztsnr_key: bool = False,
                       legacy_clip: bool = False, metadata: dict | None = None, dtype=None) -> Path:
    """Save ``folder`` as ``target`` (.safetensors, LDM keys). ``v_pred_key`` / ``ztsnr_key`` add the marker keys
    some v-prediction / zero-terminal-SNR checkpoints carry; ``legacy_clip`` drops the ``text_model.`` level
    as early SD1.x files do; ``metadata`` goes into the safetensors header (e.g. modelspec)."""
    import torch
    from safetensors.torch import save_file

    state, arch = diffusers_to_ldm(folder)
    # Keys real checkpoints carry besides the weights; the loader must ignore them.
    clip = "cond_stage_model.transformer." if arch == "sd15" else "conditioner.embedders.0.transformer."
    state[clip + "text_model.embeddings.position_ids"] = torch.arange(77)[None]
    if arch == "sd15":
        state["alphas_cumprod"] = torch.linspace(0.9991, 0.0047, 1000)
        state["model_ema.decay"] = torch.tensor(0.9999)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    if v_pred_key:
        state["v_pred"] = torch.tensor([])
    if ztsnr_key:
        state["ztsnr"] = torch.tensor([])
    if legacy_clip:
        old = "cond_stage_model.transformer.text_model."
        state = {("cond_stage_model.transformer." + k[len(old):] if k.startswith(old) else k): v
                 for k, v in state.items()}
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(target),
              metadata={str(k): str(v) for k, v in (metadata or {}).items()} or None)
    return target


