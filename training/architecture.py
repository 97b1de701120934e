"""Which model a base checkpoint is, and what its architecture looks like: SD1.5 or SDXL.

``detect_model`` answers from a single-file checkpoint's safetensors header (tensor shapes and metadata) or a
diffusers folder's JSON configs alone, cheaply and without torch (the studio lists base models with it): the
architecture, the prediction type (epsilon or v), the layout, zero-terminal-SNR betas; anything else (SD2.x,
SDXL refiner, inpainting, Flux, SD3, a LoRA) is refused with a one-line description of what it is.

The configs that weights cannot describe (GroupNorm groups, head counts, activation functions, scheduler betas)
ship as JSON under ``configs/{sd15,sdxl}/`` (``shipped_config``); every width that varies (channels, depths,
transformer depth per level, context width, text encoder sizes, vocab) is derived from the tensor shapes
(``derive_*_config``), so a tiny random model in the same layout goes through exactly the same code as a
full-size one. Head counts follow the architectures' fixed rules: SD1.5 UNet 8 heads per attention, SDXL UNet
64 channels per head, CLIP text encoders 64 channels per head.

Standard library only.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import TrainingError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_TE_PREFIX = "cond_stage_model.transformer."
SDXL_TE1_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."

_MAX_HEADER = 100 * 1024 * 1024
_ARCHES = ("sd15", "sdxl")


@dataclass(frozen=True)
class ModelInfo:
    arch: str  # "sd15" | "sdxl"
    prediction_type: str  # "epsilon" | "v_prediction"
    source: str  # "single_file" | "diffusers"
    zero_terminal_snr: bool = False  # the checkpoint was trained with rescaled (zero terminal SNR) betas


# --------------------------------------------------------------------------------------------- shipped configs


def shipped_config(arch: str, name: str) -> dict:
    """A copy of ``configs/<arch>/<name>.json`` (private keys such as ``_class_name`` dropped)."""
    if arch not in _ARCHES:
        raise TrainingError(f"unknown architecture {arch!r} (expected one of {', '.join(_ARCHES)})")
    data = json.loads((CONFIG_DIR / arch / f"{name}.json").read_text(encoding="utf-8"))
    return {key: value for key, value in data.items() if not key.startswith("_")}


# --------------------------------------------------------------------------------------------- safetensors header


def read_safetensors_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Shapes of every tensor and the ``__metadata__`` of a .safetensors file, reading only its header."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(8)
            if len(raw) != 8:
                raise ValueError("file shorter than a safetensors header")
            (length,) = struct.unpack("<Q", raw)
            if length <= 1 or length > _MAX_HEADER:
                raise ValueError(f"implausible header length {length}")
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as error:
        raise TrainingError(f"cannot read model file {path}: {error}") from error
    except (ValueError, UnicodeDecodeError) as error:
        raise TrainingError(f"{path.name} is not a valid .safetensors file ({error})") from error
    if not isinstance(header, dict):
        raise TrainingError(f"{path.name} is not a valid .safetensors file (header is not an object)")
    metadata = header.pop("__metadata__", None) or {}
    shapes: dict[str, tuple[int, ...]] = {}
    for key, entry in header.items():
        if not isinstance(entry, dict) or "shape" not in entry:
            raise TrainingError(f"{path.name} is not a valid .safetensors file (bad entry {key!r})")
        shapes[key] = tuple(int(n) for n in entry["shape"])
    return shapes, {str(k): str(v) for k, v in metadata.items()}


def _legacy_key(key: str) -> str:
    """Early SD1.x files keep CLIP without the ``text_model.`` level (older transformers layout)."""
    if key.startswith(SD15_TE_PREFIX) and not key.startswith(SD15_TE_PREFIX + "text_model."):
        return SD15_TE_PREFIX + "text_model." + key[len(SD15_TE_PREFIX):]
    return key


def read_checkpoint_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, str]]:
    """(shapes by normalised key, metadata, normalised key -> key in the file)."""
    raw, metadata = read_safetensors_header(path)
    names = {_legacy_key(key): key for key in raw}
    return {key: raw[name] for key, name in names.items()}, metadata, names


# --------------------------------------------------------------------------------------------- detection


def _count(shapes, pattern: str) -> int:
    """Number of distinct integers captured by ``pattern`` (one group) over the keys."""
    regex = re.compile(pattern)
    return len({m.group(1) for key in shapes if (m := regex.match(key))})


def _describe_foreign(shapes: dict[str, tuple[int, ...]]) -> str:
    """A short human name for a checkpoint that is not SD1.5/SDXL (best effort; shapes only)."""
    keys = shapes.keys()

    def has(prefix: str) -> bool:
        return any(key.startswith(prefix) for key in keys)

    unet_in = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    if has(UNET_PREFIX + "joint_blocks.") or has("joint_blocks."):
        return "an SD3 / SD3.5 (MMDiT) checkpoint"
    if has(UNET_PREFIX + "double_blocks.") or has("double_blocks."):
        return "a Flux checkpoint"
    if has(UNET_PREFIX + "t_block.") or has("t_block."):
        return "a PixArt checkpoint"
    if has("cond_stage_model.model.") or (has("conditioner.embedders.0.model.") and not has(SDXL_TE1_PREFIX)):
        ctx = _context_dim(shapes)
        if has("conditioner.embedders.0.model."):
            return "an SDXL refiner checkpoint (OpenCLIP bigG only)"
        return f"an SD2.x checkpoint (OpenCLIP-H text encoder, {ctx or 1024}-dim context)"
    if unet_in is not None and len(unet_in) == 4 and unet_in[1] != 4:
        return f"a UNet with {unet_in[1]} input channels (inpainting/instruct-pix2pix style models are not supported)"
    if unet_in is not None and not has(VAE_PREFIX):
        return "a UNet without its VAE (first_stage_model.*): a full checkpoint is needed"
    if unet_in is not None and not (has(SD15_TE_PREFIX) or has(SDXL_TE1_PREFIX)):
        return "a checkpoint without its CLIP text encoder: a full checkpoint is needed"
    if has("down_blocks.") or has("up_blocks."):
        return "a diffusers-format component or an unsupported architecture"
    if unet_in is None:
        if any(".lora_down." in key or ".lora_A." in key for key in keys):
            return "a LoRA, not a base model"
        return "no Stable Diffusion UNet (model.diffusion_model.*)"
    return "an unsupported Stable Diffusion variant"


def _context_dim(shapes) -> int | None:
    for key, shape in shapes.items():
        if key.startswith(UNET_PREFIX) and key.endswith(".attn2.to_k.weight"):
            return shape[1]
    return None


def _prediction_from(shapes, metadata: dict[str, str]) -> str:
    """v-prediction when the file says so (a ``v_pred`` key, or modelspec metadata); epsilon otherwise."""
    if "v_pred" in shapes:
        return "v_prediction"
    declared = (metadata.get("modelspec.prediction_type") or metadata.get("prediction_type") or "").strip().lower()
    if declared in ("v", "v_prediction", "v-prediction", "vpred", "v_pred"):
        return "v_prediction"
    return "epsilon"


def _arch_from_shapes(path: Path, shapes: dict[str, tuple[int, ...]]) -> str:
    unet_in = shapes.get(UNET_PREFIX + "input_blocks.0.0.weight")
    has_te = any(k.startswith(SD15_TE_PREFIX) for k in shapes)
    has_te1 = any(k.startswith(SDXL_TE1_PREFIX) for k in shapes)
    has_te2 = any(k.startswith(SDXL_TE2_PREFIX) for k in shapes)
    has_vae = any(k.startswith(VAE_PREFIX) for k in shapes)
    arch = None
    if unet_in is not None and len(unet_in) == 4 and unet_in[1] == 4 and has_vae:
        ctx = _context_dim(shapes)
        label = shapes.get(UNET_PREFIX + "label_emb.0.0.weight")
        if has_te1 and has_te2 and label is not None:
            te1 = shapes.get(SDXL_TE1_PREFIX + "text_model.embeddings.token_embedding.weight")
            te2 = shapes.get(SDXL_TE2_PREFIX + "token_embedding.weight")
            if te1 and te2 and ctx == te1[1] + te2[1]:
                arch = "sdxl"
        elif has_te and label is None and not has_te1:
            te = shapes.get(SD15_TE_PREFIX + "text_model.embeddings.token_embedding.weight")
            if te and ctx == te[1]:
                arch = "sd15"
    if arch is None:
        raise TrainingError(
            f"{path.name}: unsupported model; only SD1.5 and SDXL base checkpoints can be trained on, "
            f"found {_describe_foreign(shapes)}"
        )
    return arch


def _detect_folder(path: Path) -> ModelInfo:
    def load(name: str) -> dict:
        file = path / name
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TrainingError(f"{path.name}: not a diffusers model folder (missing {name})") from None
        except (OSError, ValueError) as error:
            raise TrainingError(f"{path.name}: cannot read {name} ({error})") from error

    index = load("model_index.json")
    unet = load("unet/config.json")
    te = load("text_encoder/config.json")
    pipeline = str(index.get("_class_name", ""))
    in_channels = unet.get("in_channels", 4)
    if in_channels != 4:
        raise TrainingError(f"{path.name}: unsupported model; found a UNet with {in_channels} input channels "
                            "(inpainting-style models are not supported); only SD1.5 and SDXL base models")
    if unet.get("addition_embed_type") == "text_time" or "text_encoder_2" in index:
        if not isinstance(index.get("text_encoder"), list) or index.get("text_encoder", [None])[0] is None:
            raise TrainingError(f"{path.name}: unsupported model; found an SDXL refiner (no CLIP-L text encoder)")
        te2 = load("text_encoder_2/config.json")
        if unet.get("cross_attention_dim") != te.get("hidden_size", 0) + te2.get("hidden_size", 0):
            raise TrainingError(f"{path.name}: unsupported model; the UNet's context width does not match SDXL's "
                                "two text encoders")
        arch = "sdxl"
    elif pipeline in ("StableDiffusionPipeline", "") and unet.get("cross_attention_dim") == te.get("hidden_size"):
        if te.get("hidden_act") == "gelu" or te.get("hidden_size") == 1024:
            raise TrainingError(f"{path.name}: unsupported model; found an SD2.x model (OpenCLIP-H text encoder, "
                                f"{unet.get('cross_attention_dim')}-dim context); only SD1.5 and SDXL")
        arch = "sd15"
    else:
        raise TrainingError(f"{path.name}: unsupported model; found a {pipeline or 'unknown'} pipeline; "
                            "only SD1.5 and SDXL base models")
    scheduler = {}
    if (path / "scheduler" / "scheduler_config.json").is_file():
        scheduler = load("scheduler/scheduler_config.json")
    prediction = "v_prediction" if scheduler.get("prediction_type") == "v_prediction" else "epsilon"
    return ModelInfo(arch=arch, prediction_type=prediction, source="diffusers",
                     zero_terminal_snr=bool(scheduler.get("rescale_betas_zero_snr")))


def detect_model(path: Path) -> ModelInfo:
    """Architecture, prediction type and layout of a base model, from its header/config only (cheap)."""
    path = Path(path)
    if path.is_dir():
        return _detect_folder(path)
    if not path.is_file():
        raise TrainingError(f"base model not found: {path}")
    if path.suffix.lower() != ".safetensors":
        raise TrainingError(
            f"{path.name}: only .safetensors checkpoints (or diffusers folders) can be loaded; "
            f"'{path.suffix or 'no extension'}' files can run code when unpickled and are refused"
        )
    shapes, metadata, _ = read_checkpoint_header(path)
    arch = _arch_from_shapes(path, shapes)
    return ModelInfo(arch=arch, prediction_type=_prediction_from(shapes, metadata), source="single_file",
                     zero_terminal_snr="ztsnr" in shapes)


# --------------------------------------------------------------------------------------------- derived configs


def _heads(arch: str, channels: int) -> int:
    # Not stored in weights: SD1.5 uses 8 heads everywhere, SDXL 64 channels per head.
    return 8 if arch == "sd15" else max(1, channels // 64)


def derive_unet_config(arch: str, shapes: dict[str, tuple[int, ...]]) -> dict:
    """diffusers UNet2DConditionModel config from LDM UNet shapes (keys with the ``model.diffusion_model.`` prefix)."""
    p = UNET_PREFIX
    config = shipped_config(arch, "unet")
    conv_in = shapes[p + "input_blocks.0.0.weight"]
    config["in_channels"] = conv_in[1]
    config["out_channels"] = shapes[p + "out.2.weight"][0]
    n_input = _count(shapes, re.escape(p) + r"input_blocks\.(\d+)\.")
    levels: list[dict] = [{"channels": None, "resnets": 0, "depth": 0}]
    for i in range(1, n_input):
        if p + f"input_blocks.{i}.0.op.weight" in shapes:
            levels.append({"channels": None, "resnets": 0, "depth": 0})
            continue
        level = levels[-1]
        level["resnets"] += 1
        level["channels"] = shapes[p + f"input_blocks.{i}.0.out_layers.3.weight"][0]
        depth = _count(shapes, re.escape(p + f"input_blocks.{i}.1.transformer_blocks.") + r"(\d+)\.")
        if level["resnets"] > 1 and depth != level["depth"]:
            raise TrainingError("unsupported UNet: transformer depth varies inside one level")
        level["depth"] = depth
    if any(level["resnets"] == 0 for level in levels) or len({level["resnets"] for level in levels}) != 1:
        raise TrainingError("unsupported UNet: levels have different numbers of ResNet blocks")
    channels = [level["channels"] for level in levels]
    config["block_out_channels"] = channels
    config["layers_per_block"] = levels[0]["resnets"]
    config["down_block_types"] = ["CrossAttnDownBlock2D" if lv["depth"] else "DownBlock2D" for lv in levels]
    config["up_block_types"] = ["CrossAttnUpBlock2D" if lv["depth"] else "UpBlock2D" for lv in reversed(levels)]
    mid_depth = _count(shapes, re.escape(p + "middle_block.1.transformer_blocks.") + r"(\d+)\.")
    depths = [lv["depth"] or 1 for lv in levels]
    if mid_depth and mid_depth != depths[-1]:
        raise TrainingError("unsupported UNet: middle block depth differs from the last level's")
    if arch == "sdxl":
        config["transformer_layers_per_block"] = depths
        config["attention_head_dim"] = [_heads(arch, c) for c in channels]
    elif any(d != 1 for d in depths):
        raise TrainingError("unsupported SD1.5 UNet: transformer depth other than 1")
    context = _context_dim(shapes)
    if context is None:
        raise TrainingError("unsupported UNet: no cross-attention layers")
    config["cross_attention_dim"] = context
    proj_in = next(shape for key, shape in shapes.items() if key.startswith(p) and key.endswith(".proj_in.weight"))
    config["use_linear_projection"] = len(proj_in) == 2
    if arch == "sdxl":
        adm = shapes[p + "label_emb.0.0.weight"][1]
        pooled = shapes[SDXL_TE2_PREFIX + "text_projection"][1]
        if (adm - pooled) % 6 or adm <= pooled:
            raise TrainingError(f"unsupported SDXL UNet: added-conditioning width {adm} does not fit pooled {pooled}")
        config["projection_class_embeddings_input_dim"] = adm
        config["addition_time_embed_dim"] = (adm - pooled) // 6
    return config


def derive_vae_config(arch: str, shapes: dict[str, tuple[int, ...]]) -> dict:
    p = VAE_PREFIX
    config = shipped_config(arch, "vae")
    n_levels = _count(shapes, re.escape(p + "encoder.down.") + r"(\d+)\.")
    config["block_out_channels"] = [shapes[p + f"encoder.down.{i}.block.0.conv1.weight"][0] for i in range(n_levels)]
    config["layers_per_block"] = _count(shapes, re.escape(p + "encoder.down.0.block.") + r"(\d+)\.")
    config["down_block_types"] = ["DownEncoderBlock2D"] * n_levels
    config["up_block_types"] = ["UpDecoderBlock2D"] * n_levels
    config["in_channels"] = shapes[p + "encoder.conv_in.weight"][1]
    config["out_channels"] = shapes[p + "decoder.conv_out.weight"][0]
    config["latent_channels"] = shapes[p + "decoder.conv_in.weight"][1]
    return config


def derive_clip_config(base: dict, shapes, prefix: str) -> dict:
    """CLIPTextConfig kwargs for an HF-layout CLIP text model stored under ``prefix`` (``...transformer.``)."""
    t = prefix + "text_model."
    config = dict(base)
    vocab, hidden = shapes[t + "embeddings.token_embedding.weight"]
    config.update(
        vocab_size=vocab,
        hidden_size=hidden,
        max_position_embeddings=shapes[t + "embeddings.position_embedding.weight"][0],
        num_hidden_layers=_count(shapes, re.escape(t + "encoder.layers.") + r"(\d+)\."),
        intermediate_size=shapes[t + "encoder.layers.0.mlp.fc1.weight"][0],
        num_attention_heads=max(1, hidden // 64),
    )
    if prefix + "text_projection.weight" in shapes:
        config["projection_dim"] = shapes[prefix + "text_projection.weight"][0]
    return config


def derive_open_clip_config(base: dict, shapes, prefix: str) -> dict:
    """CLIPTextConfig kwargs for an open_clip-layout text tower (SDXL's bigG) stored under ``prefix``."""
    config = dict(base)
    vocab, hidden = shapes[prefix + "token_embedding.weight"]
    config.update(
        vocab_size=vocab,
        hidden_size=hidden,
        max_position_embeddings=shapes[prefix + "positional_embedding"][0],
        num_hidden_layers=_count(shapes, re.escape(prefix + "transformer.resblocks.") + r"(\d+)\."),
        intermediate_size=shapes[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0],
        num_attention_heads=max(1, hidden // 64),
        projection_dim=shapes[prefix + "text_projection"][1],
    )
    return config
