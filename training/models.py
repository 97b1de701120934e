"""Offline loading of SD1.5 / SDXL base models: single-file LDM checkpoints and diffusers folders.

Nothing here ever touches the hub. The configs that weights cannot describe (GroupNorm groups, head counts,
activation functions, scheduler betas) ship as JSON under ``configs/{sd15,sdxl}/``; every width that varies
(channels, depths, transformer depth per level, context width, text encoder sizes, vocab) is derived from
the tensor shapes, so a tiny random model in the same layout goes through exactly the same code as a
full-size one. Head counts follow the architectures' fixed rules: SD1.5 UNet 8 heads per attention, SDXL
UNet 64 channels per head, CLIP text encoders 64 channels per head.

The CLIP BPE tokenizer comes from (in order) an explicit ``tokenizer_dir``, ``$LORA_STUDIO_CLIP_TOKENIZER``,
ComfyUI's ``comfy/sd1_tokenizer`` (found relative to ``custom_nodes/<pack>/``), or is rebuilt exactly from
the ``bpe_simple_vocab_16e6.txt.gz`` that the ``open_clip_torch`` wheel ships.

Only relative imports (the worker imports this module through a synthetic package); heavy imports stay
inside functions.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import MissingDependenciesError, TrainingError

log = logging.getLogger("lora_studio.training.models")

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TOKENIZER_ENV = "LORA_STUDIO_CLIP_TOKENIZER"
MAX_TOKENS = 77
CLIP_VOCAB_SIZE = 49408
CLIP_MERGES = 48894

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
SD15_TE_PREFIX = "cond_stage_model.transformer."
SDXL_TE1_PREFIX = "conditioner.embedders.0.transformer."
SDXL_TE2_PREFIX = "conditioner.embedders.1.model."

_MAX_HEADER = 100 * 1024 * 1024
_ARCHES = ("sd15", "sdxl")
_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "timestep_spacing", "steps_offset")


@dataclass(frozen=True)
class ModelInfo:
    arch: str  # "sd15" | "sdxl"
    prediction_type: str  # "epsilon" | "v_prediction"
    source: str  # "single_file" | "diffusers"
    zero_terminal_snr: bool = False  # the checkpoint was trained with rescaled (zero terminal SNR) betas


@dataclass
class BaseModel:
    info: ModelInfo
    unet: Any
    vae: Any
    text_encoders: list
    tokenizers: list
    noise_scheduler: Any
    fingerprint: str


@dataclass
class TextConditioning:
    hidden: Any  # (B, 77, 768) sd15 | (B, 77, 2048) sdxl
    pooled: Any | None  # sdxl: (B, 1280) text_embeds of encoder 2; sd15: None


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


# --------------------------------------------------------------------------------------------- tokenizers


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte-level alphabet, in vocab order: printable bytes first, the rest mapped above U+0100."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return list(table.values())


def open_clip_bpe_path() -> Path | None:
    """``bpe_simple_vocab_16e6.txt.gz`` from an installed open_clip_torch, found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bpe_simple_vocab_16e6.txt.gz"
        if candidate.is_file():
            return candidate
    return None


def clip_vocab_from_bpe(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    """Rebuild CLIP's vocab (49,408 tokens) and merges (48,894) from open_clip's BPE merge list."""
    lines = gzip.open(bpe_path, "rt", encoding="utf-8").read().split("\n")
    # Line 0 is a version header; CLIP keeps the first 49152 - 256 - 2 merges.
    merges = lines[1 : 49152 - 256 - 2 + 1]
    alphabet = _bytes_to_unicode()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def comfyui_tokenizer_dir() -> Path | None:
    """``<ComfyUI>/comfy/sd1_tokenizer`` when this pack sits in ``<ComfyUI>/custom_nodes/<pack>/``."""
    pack = Path(__file__).resolve().parent.parent
    if pack.parent.name != "custom_nodes":
        return None
    candidate = pack.parent.parent / "comfy" / "sd1_tokenizer"
    return candidate if (candidate / "vocab.json").is_file() else None


def load_clip_vocab(tokenizer_dir: Path | str | None = None) -> tuple[dict[str, int], list[str], str]:
    """(vocab, merges, where-from) of the CLIP BPE tokenizer, from the first source that has it."""
    sources: list[tuple[str, Path]] = []
    if tokenizer_dir:
        sources.append(("tokenizer_dir", Path(tokenizer_dir)))
    elif os.environ.get(TOKENIZER_ENV):
        sources.append((TOKENIZER_ENV, Path(os.environ[TOKENIZER_ENV])))
    else:
        found = comfyui_tokenizer_dir()
        if found is not None:
            sources.append(("ComfyUI", found))
    for label, folder in sources:
        vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
        if not (vocab_file.is_file() and merges_file.is_file()):
            raise TrainingError(f"CLIP tokenizer folder {folder} ({label}) lacks vocab.json/merges.txt")
        vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
        lines = merges_file.read_text(encoding="utf-8").split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]  # header only: real merges may start with "#"
        merges = [line for line in lines if line.strip()]
        return vocab, merges, str(folder)
    bpe = open_clip_bpe_path()
    if bpe is None:
        raise TrainingError(
            "no CLIP tokenizer files found: pass tokenizer_dir, set "
            f"{TOKENIZER_ENV} to a folder with vocab.json + merges.txt (e.g. ComfyUI's comfy/sd1_tokenizer), "
            "or install the BPE file with: pip install --no-deps open_clip_torch"
        )
    vocab, merges = clip_vocab_from_bpe(bpe)
    return vocab, merges, str(bpe)


def build_clip_tokenizer(arch: str, vocab: dict[str, int], merges: list[str], *, second: bool = False):
    """A CLIPTokenizer (77 tokens) from vocab + merges; SDXL's second tokenizer pads with "!" (id 0)."""
    from transformers import CLIPTokenizer

    settings = shipped_config(arch, "tokenizer_2_config" if second else "tokenizer_config")
    max_length = settings.pop("model_max_length", MAX_TOKENS)
    pairs = [tuple(merge.split()) for merge in merges]
    tokenizer = CLIPTokenizer(vocab=dict(vocab), merges=pairs, **settings)
    tokenizer.model_max_length = max_length
    return tokenizer


def _tokenizers_for(arch: str, tokenizer_dir) -> list:
    vocab, merges, origin = load_clip_vocab(tokenizer_dir)
    log.info("CLIP tokenizer from %s (%d tokens)", origin, len(vocab))
    tokenizers = [build_clip_tokenizer(arch, vocab, merges)]
    if arch == "sdxl":
        tokenizers.append(build_clip_tokenizer(arch, vocab, merges, second=True))
    return tokenizers


# --------------------------------------------------------------------------------------------- module building


def _imports():
    try:
        import diffusers  # noqa: F401
        import safetensors  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        raise MissingDependenciesError(str(error)) from error


def _on_meta(factory):
    import torch

    with torch.device("meta"):
        return factory()


def _text_config(config: dict, tokenizer=None):
    from transformers import CLIPTextConfig

    config = dict(config)
    config.pop("architectures", None)
    config.pop("model_type", None)
    if tokenizer is not None:
        config.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id)
    return CLIPTextConfig(**config)


def build_meta_modules(arch: str) -> dict:
    """Full-size UNet and text encoders of ``arch`` on the ``meta`` device (no weights, no memory)."""
    _imports()
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    unet = _on_meta(lambda: UNet2DConditionModel(**shipped_config(arch, "unet")))
    encoders = [_on_meta(lambda: CLIPTextModel(_text_config(shipped_config(arch, "text_encoder"))))]
    if arch == "sdxl":
        config2 = _text_config(shipped_config(arch, "text_encoder_2"))
        encoders.append(_on_meta(lambda: CLIPTextModelWithProjection(config2)))
    return {"unet": unet, "text_encoders": encoders}


def _materialize(module, state: dict, what: str, dtype) -> Any:
    """Load ``state`` into a meta-built module strictly, then fill the non-persistent buffers."""
    import torch

    # cast here, not with module.to() afterwards: that copies every weight once more, and diffusers warns for it
    state = {k: v.to(dtype) if v.is_floating_point() and v.dtype != dtype else v for k, v in state.items()}
    result = module.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise TrainingError(
            f"cannot load the {what}: {len(result.missing_keys)} missing weights "
            f"(e.g. {result.missing_keys[:3]}), {len(result.unexpected_keys)} unexpected "
            f"(e.g. {result.unexpected_keys[:3]})"
        )
    for name, buffer in list(module.named_buffers()):
        if not buffer.is_meta:
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if leaf == "position_ids":
            owner.register_buffer(leaf, torch.arange(buffer.shape[-1]).expand((1, -1)), persistent=False)
        else:
            raise TrainingError(f"cannot load the {what}: buffer {name} has no value")
    if any(p.dtype != dtype for p in module.parameters()):
        module.to(dtype=dtype)
    return module.eval()


def _tensors(handle, prefix: str, names: dict[str, str]) -> dict:
    """Tensors under ``prefix`` (normalised keys); unaligned buffers are copied (an unaligned weight takes other
    BLAS kernels, so outputs would differ in the last bits from the same model saved any other way)."""
    out = {}
    for key, name in names.items():
        if key.startswith(prefix):
            tensor = handle.get_tensor(name)
            out[key] = tensor.clone() if tensor.data_ptr() % 64 else tensor
    return out


def _load_single_file(path: Path, info: ModelInfo, *, dtype, tokenizer_dir) -> tuple:
    from safetensors import safe_open

    shapes, _, names = read_checkpoint_header(path)
    tokenizers = _tokenizers_for(info.arch, tokenizer_dir)
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        unet, vae, encoders = modules_from_ldm(
            info.arch, shapes, lambda prefix: _tensors(handle, prefix, names), tokenizers, dtype=dtype, name=path.name
        )
    return unet, vae, encoders, tokenizers


def modules_from_ldm(arch: str, shapes: dict, fetch, tokenizers: list, *, dtype=None, name: str = "checkpoint"):
    """(unet, vae, text_encoders) from LDM-layout tensors: ``fetch(prefix)`` returns the tensors under a prefix.
    Configs are the shipped ones with every varying width derived from ``shapes``; loading is strict."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders import single_file_utils as sfu
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    dtype = dtype or torch.float32
    unet_config = derive_unet_config(arch, shapes)
    vae_config = derive_vae_config(arch, shapes)
    te_prefix = SD15_TE_PREFIX if arch == "sd15" else SDXL_TE1_PREFIX
    te_config = derive_clip_config(shipped_config(arch, "text_encoder"), shapes, te_prefix)
    _check_vocab(name, te_config["vocab_size"], tokenizers[0])
    te2_config = None
    if arch == "sdxl":
        te2_config = derive_open_clip_config(shipped_config(arch, "text_encoder_2"), shapes, SDXL_TE2_PREFIX)
        _check_vocab(name, te2_config["vocab_size"], tokenizers[1])

    unet_state = sfu.convert_ldm_unet_checkpoint(fetch(UNET_PREFIX), unet_config)
    unet = _materialize(_on_meta(lambda: UNet2DConditionModel(**unet_config)), unet_state, "UNet", dtype)
    del unet_state
    vae_state = sfu.convert_ldm_vae_checkpoint(fetch(VAE_PREFIX), vae_config)
    vae = _materialize(_on_meta(lambda: AutoencoderKL(**vae_config)), vae_state, "VAE", dtype)
    del vae_state

    te_state = sfu.convert_ldm_clip_checkpoint(fetch(te_prefix))
    te_state.pop("text_model.embeddings.position_ids", None)  # regenerated; some files carry corrupted ones
    encoder = _on_meta(lambda: CLIPTextModel(_text_config(te_config, tokenizers[0])))
    if not hasattr(encoder, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        te_state = {key.removeprefix("text_model."): value for key, value in te_state.items()}
    encoders = [_materialize(encoder, te_state, "text encoder", dtype)]
    if te2_config is not None:
        encoder2 = _on_meta(lambda: CLIPTextModelWithProjection(_text_config(te2_config, tokenizers[1])))
        raw = fetch(SDXL_TE2_PREFIX)
        raw.pop(SDXL_TE2_PREFIX + "logit_scale", None)
        te2_state = sfu.convert_open_clip_checkpoint(encoder2, raw, prefix=SDXL_TE2_PREFIX)
        encoders.append(_materialize(encoder2, te2_state, "second text encoder (OpenCLIP bigG)", dtype))
    return unet, vae, encoders


def _check_vocab(name, vocab_size: int, tokenizer) -> None:
    if len(tokenizer) != vocab_size:
        raise TrainingError(
            f"{Path(name).name}: the text encoder has {vocab_size} tokens but the CLIP tokenizer found has "
            f"{len(tokenizer)}; pass the matching tokenizer folder"
        )


def _load_folder(path: Path, info: ModelInfo, *, dtype, tokenizer_dir) -> tuple:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    dtype = dtype or torch.float32
    common = {"local_files_only": True, "torch_dtype": dtype}
    try:
        unet = UNet2DConditionModel.from_pretrained(str(path / "unet"), **common)
        vae = AutoencoderKL.from_pretrained(str(path / "vae"), **common)
        encoders = [CLIPTextModel.from_pretrained(str(path / "text_encoder"), **common)]
        if info.arch == "sdxl":
            encoders.append(CLIPTextModelWithProjection.from_pretrained(str(path / "text_encoder_2"), **common))
    except (OSError, ValueError) as error:
        raise TrainingError(f"cannot load diffusers model {path.name}: {error}") from error
    tokenizers: list = []
    names = ["tokenizer", "tokenizer_2"][: len(encoders)]
    has_files = [any((path / name / f).is_file() for f in ("tokenizer.json", "vocab.json")) for name in names]
    if tokenizer_dir is None and all(has_files):
        for name in names:
            tokenizers.append(CLIPTokenizer.from_pretrained(str(path / name), local_files_only=True))
    else:
        tokenizers = _tokenizers_for(info.arch, tokenizer_dir)
    for encoder, tokenizer in zip(encoders, tokenizers, strict=True):
        _check_vocab(path, encoder.config.vocab_size, tokenizer)
    for module in (unet, vae, *encoders):
        module.eval()
    return unet, vae, encoders, tokenizers


# --------------------------------------------------------------------------------------------- fingerprint


def _file_digest(path: Path, digest) -> None:
    """Size, safetensors header and 16 sampled 64 KiB chunks: cheap on multi-GB files, and any re-save,
    merge or fine-tune changes it (a copy or a renamed file keeps it)."""
    size = path.stat().st_size
    digest.update(f"{size}:".encode())
    chunk = 64 * 1024
    with path.open("rb") as handle:
        positions = [0] + [size * k // 16 for k in range(1, 16)] + [max(0, size - chunk)]
        for position in positions:
            handle.seek(position)
            digest.update(handle.read(chunk))


def model_fingerprint(path: Path) -> str:
    path = Path(path)
    digest = hashlib.sha256(b"lora-studio-model-v1\n")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors", ".bin",
                                                                                   ".txt"))
        for file in files:
            digest.update(str(file.relative_to(path)).encode())
            _file_digest(file, digest)
    else:
        _file_digest(path, digest)
    return digest.hexdigest()[:32]


# --------------------------------------------------------------------------------------------- public API


def load_base_model(path: Path, *, device="cpu", dtype=None, tokenizer_dir: Path | str | None = None) -> BaseModel:
    """Load an SD1.5/SDXL base model (a .safetensors LDM checkpoint or a diffusers folder), fully offline."""
    _imports()
    from diffusers import DDPMScheduler

    path = Path(path)
    info = detect_model(path)
    loader = _load_single_file if info.source == "single_file" else _load_folder
    unet, vae, encoders, tokenizers = loader(path, info, dtype=dtype, tokenizer_dir=tokenizer_dir)
    scheduler_config = shipped_config(info.arch, "scheduler")
    folder_scheduler = path / "scheduler" / "scheduler_config.json"
    if info.source == "diffusers" and folder_scheduler.is_file():
        # the folder's own noise schedule (betas, spacing) wins over the architecture default
        declared = json.loads(folder_scheduler.read_text(encoding="utf-8"))
        scheduler_config.update({k: declared[k] for k in _SCHEDULE_KEYS if k in declared})
    scheduler_config["prediction_type"] = info.prediction_type
    scheduler_config["rescale_betas_zero_snr"] = info.zero_terminal_snr
    scheduler = DDPMScheduler.from_config(scheduler_config)
    for module in (unet, vae, *encoders):
        module.requires_grad_(False)
        module.to(device)
    log.info("loaded %s base model %s (%s, %s)", info.arch, path.name, info.source, info.prediction_type)
    return BaseModel(info=info, unet=unet, vae=vae, text_encoders=encoders, tokenizers=tokenizers,
                     noise_scheduler=scheduler, fingerprint=model_fingerprint(path))


def tokenize(tokenizer, captions: list[str]):
    return tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


def encode_text(base: BaseModel, captions: list[str], *, text_encoders=None) -> TextConditioning:
    """Text conditioning: SD1.5 last hidden state; SDXL penultimate states of both encoders + pooled of #2."""
    import torch

    encoders = list(text_encoders) if text_encoders is not None else list(base.text_encoders)
    if len(encoders) != len(base.tokenizers):
        raise TrainingError(f"expected {len(base.tokenizers)} text encoders, got {len(encoders)}")
    trainable = any(p.requires_grad for encoder in encoders for p in encoder.parameters())
    with torch.set_grad_enabled(trainable and torch.is_grad_enabled()):
        outputs = []
        for encoder, tokenizer in zip(encoders, base.tokenizers, strict=True):
            device = next(encoder.parameters()).device
            ids = tokenize(tokenizer, captions).to(device)
            outputs.append(encoder(ids, output_hidden_states=base.info.arch == "sdxl"))
        if base.info.arch == "sd15":
            return TextConditioning(hidden=outputs[0].last_hidden_state, pooled=None)
        hidden = torch.cat([out.hidden_states[-2] for out in outputs], dim=-1)
        return TextConditioning(hidden=hidden, pooled=outputs[1].text_embeds)


def sdxl_time_ids(original_hw, crop_top_left, target_hw) -> list[int]:
    """SDXL micro-conditioning: original size, crop top-left and target size, each (height, width)."""
    values = [*original_hw, *crop_top_left, *target_hw]
    if len(values) != 6:
        raise ValueError("sdxl_time_ids needs three (h, w) pairs")
    return [int(v) for v in values]


def latent_scale(base) -> float:
    vae = base.vae if hasattr(base, "vae") else base
    return float(vae.config.scaling_factor)

