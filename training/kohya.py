"""Export peft LoRA weights (UNet + text encoders) as a kohya-ss ``.safetensors`` that ComfyUI loads.

For every wrapped module ``m`` the file holds ``<name>.lora_down.weight`` (peft ``lora_A``),
``<name>.lora_up.weight`` (peft ``lora_B``) and ``<name>.alpha`` (the alpha trained with), where ``<name>`` is
``lora_unet_`` + the diffusers path with dots as underscores (SD1.x) or + the ORIGINAL (LDM) block path (SDXL,
e.g. ``lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q``), and ``lora_te_`` / ``lora_te1_`` /
``lora_te2_`` + the transformers path for text encoders, exactly as kohya sd-scripts writes them. ComfyUI applies
``strength * (alpha / rank) * up @ down``, which is exactly peft's ``scaling = lora_alpha / r``.

torch and safetensors are imported lazily so this module stays cheap to import.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TrainingError
from .hashing import sha256_file

if TYPE_CHECKING:
    from .config import TrainConfig

log = logging.getLogger("lora_studio.training.kohya")

UNET_PREFIX = "lora_unet"
DOWN_SUFFIX = ".lora_down.weight"
UP_SUFFIX = ".lora_up.weight"
ALPHA_SUFFIX = ".alpha"
TEMP_SUFFIX = ".partial"

_WRAPPER_PREFIXES = ("base_model.model.", "unet.")
_PEFT_KEY = re.compile(r"^(?P<module>.+?)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")


def kohya_module_name(diffusers_module_path: str, prefix: str = UNET_PREFIX) -> str:
    """``down_blocks.0.attentions.0.proj_in`` → ``lora_unet_down_blocks_0_attentions_0_proj_in``."""
    path = diffusers_module_path.strip().strip(".")
    if not path:
        raise ValueError("empty module path")
    return f"{prefix}_{path.replace('.', '_')}"


def split_peft_key(key: str) -> tuple[str, str]:
    """``<wrappers>.<module>.lora_A[.<adapter>].weight`` → (module path, "A" or "B")."""
    for wrapper in _WRAPPER_PREFIXES:
        if key.startswith(wrapper):
            key = key[len(wrapper) :]
    match = _PEFT_KEY.match(key)
    if match is None:
        raise ValueError(f"not a plain LoRA weight key: {key!r}")
    return match["module"], match["which"]


SDXL_UNET_LAYOUT: dict[str, Any] = {
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
}
# diffusers ResnetBlock2D child -> original (LDM) ResBlock child
_RESNET_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_TOP_LEVEL_LDM = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_BLOCK_PATH = re.compile(
    r"^(?P<side>down_blocks|up_blocks)\.(?P<i>\d+)\.(?P<part>resnets|attentions)\.(?P<j>\d+)\.(?P<rest>.+)$"
)
_MID_PATH = re.compile(r"^mid_block\.(?P<part>resnets|attentions)\.(?P<j>\d+)\.(?P<rest>.+)$")
_SAMPLER_PATH = re.compile(r"^(?P<side>down_blocks|up_blocks)\.(?P<i>\d+)\.(?:downsamplers|upsamplers)\.0\.conv$")


def _layout(unet_config: Mapping[str, Any] | None) -> tuple[int, tuple[str, ...]]:
    config = {**SDXL_UNET_LAYOUT, **{k: v for k, v in dict(unet_config or {}).items() if k in SDXL_UNET_LAYOUT}}
    layers = config["layers_per_block"]
    if not isinstance(layers, int):  # a per-block list: the original layout needs one number
        if len(set(layers)) != 1:
            raise ValueError(f"cannot name LDM blocks for per-block layers_per_block {layers!r}")
        layers = int(layers[0])
    return int(layers), tuple(config["up_block_types"])


def _resnet_child(rest: str) -> str:
    head, _, tail = rest.partition(".")
    if head not in _RESNET_LDM:
        raise ValueError(f"unknown ResnetBlock2D child {rest!r}")
    return _RESNET_LDM[head] + (f".{tail}" if tail else "")


def sdxl_unet_ldm_path(path: str, unet_config: Mapping[str, Any] | None = None) -> str:
    """diffusers SDXL UNet module path -> original (LDM/sgm) path, as kohya names SDXL LoRA modules.

    ``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q`` -> ``input_blocks.4.1.transformer_blocks.0.attn1.to_q``.
    Down block i, layer j is ``input_blocks[1 + i*(L+1) + j]`` (resnet ``.0``, attention ``.1``), its downsampler
    ``input_blocks[(i+1)*(L+1)].0.op``; up block i, layer j is ``output_blocks[i*(L+1) + j]`` with L+1 layers per
    up block and the upsampler after the last layer's resnet (+ attention); the middle block is resnet, attention,
    resnet. ``unet_config`` (the UNet's ``config``) overrides SDXL's layers_per_block / block types.
    """
    layers, up_types = _layout(unet_config)
    if path in _TOP_LEVEL_LDM:
        return _TOP_LEVEL_LDM[path]
    match = _BLOCK_PATH.match(path)
    if match:
        i, j, rest = int(match["i"]), int(match["j"]), match["rest"]
        if match["side"] == "down_blocks":
            if j >= layers:
                raise ValueError(f"{path!r}: layer {j} >= layers_per_block {layers}")
            index = 1 + i * (layers + 1) + j
            prefix = "input_blocks"
        else:
            if j > layers:
                raise ValueError(f"{path!r}: layer {j} > layers_per_block {layers}")
            index = i * (layers + 1) + j
            prefix = "output_blocks"
        if match["part"] == "resnets":
            return f"{prefix}.{index}.0.{_resnet_child(rest)}"
        return f"{prefix}.{index}.1.{rest}"
    match = _MID_PATH.match(path)
    if match:
        j, rest = int(match["j"]), match["rest"]
        if match["part"] == "resnets" and j in (0, 1):
            return f"middle_block.{2 * j}.{_resnet_child(rest)}"
        if match["part"] == "attentions" and j == 0:
            return f"middle_block.1.{rest}"
    match = _SAMPLER_PATH.match(path)
    if match:
        i = int(match["i"])
        if match["side"] == "down_blocks":
            return f"input_blocks.{(i + 1) * (layers + 1)}.0.op"
        has_attention = i < len(up_types) and "CrossAttn" in up_types[i]
        return f"output_blocks.{i * (layers + 1) + layers}.{2 if has_attention else 1}.conv"
    raise ValueError(f"no original SDXL name for UNet module {path!r}")


def _lora_pairs(state_dict: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """peft state -> {module path: (lora_A, lora_B)}; refuses anything but plain LoRA A/B weights."""
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in state_dict.items():
        try:
            module, which = split_peft_key(key)
        except ValueError:
            raise ValueError(f"cannot export {key!r}: only plain LoRA A/B weights can be converted") from None
        if which in pairs.setdefault(module, {}):
            raise ValueError(f"two LoRA {which} weights for module {module!r} (several adapters?)")
        pairs[module][which] = tensor
    out: dict[str, tuple[Any, Any]] = {}
    for module, pair in pairs.items():
        down, up = pair.get("A"), pair.get("B")
        if down is None or up is None:
            raise ValueError(f"module {module!r} has only one of lora_A / lora_B")
        if down.shape[0] != up.shape[1]:
            raise ValueError(f"module {module!r}: lora_A rank {down.shape[0]} != lora_B rank {up.shape[1]}")
        out[module] = (down, up)
    return out


_CLIP_TEXT_TOP = ("embeddings.", "encoder.", "final_layer_norm")


def text_encoder_path(path: str) -> str:
    """transformers >= 5 flattened ``CLIPTextModel`` (``encoder.layers.0...``, no ``text_model.``); kohya and
    ComfyUI name the modules as in the transformers 4 layout, ``text_model.encoder.layers.0...``."""
    return f"text_model.{path}" if path.startswith(_CLIP_TEXT_TOP) else path


def is_conv_lora(down: Any) -> bool:
    """A LoRA on a non-1x1 conv (kohya's "conv_dim" modules): lora_down is (r, in, kh, kw) with kh*kw > 1."""
    return down.dim() == 4 and tuple(down.shape[2:]) != (1, 1)


def _convert(
    state_dict: Mapping[str, Any],
    prefix: str,
    alpha: float,
    conv_alpha: float | None,
    rename: Callable[[str], str] | None,
    out: dict[str, Any],
) -> None:
    import torch

    for module, (down, up) in sorted(_lora_pairs(state_dict).items()):
        name = kohya_module_name(rename(module) if rename else module, prefix)
        if name + ALPHA_SUFFIX in out:
            raise ValueError(f"two modules export to the same kohya name {name!r}")
        module_alpha = conv_alpha if conv_alpha is not None and is_conv_lora(down) else alpha
        out[name + DOWN_SUFFIX] = down.detach().contiguous()
        out[name + UP_SUFFIX] = up.detach().contiguous()
        out[name + ALPHA_SUFFIX] = torch.tensor(float(module_alpha), dtype=torch.float32)


def peft_to_kohya(state_dict: Mapping[str, Any], alpha: float, prefix: str = UNET_PREFIX) -> dict[str, Any]:
    """Map a peft LoRA state dict to kohya keys with diffusers module names (SD1.x); ``.alpha`` = ``alpha``."""
    tensors: dict[str, Any] = {}
    _convert(state_dict, prefix, alpha, None, None, tensors)
    return tensors


TEXT_PREFIXES = {"sd15": ("lora_te",), "sdxl": ("lora_te1", "lora_te2")}


def export_kohya(
    unet_state: Mapping[str, Any],
    text_states: Sequence[Mapping[str, Any]] = (),
    *,
    arch: str,
    alpha: float,
    conv_alpha: float | None = None,
    unet_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """peft state dicts (``get_peft_model_state_dict`` of the UNet and of each trained text encoder) -> kohya file.

    UNet modules: ``lora_unet_<diffusers path>`` for sd15, ``lora_unet_<original block path>`` for sdxl (as
    kohya writes them). Text encoders: ``lora_te_`` (sd15) / ``lora_te1_`` (CLIP-L), ``lora_te2_`` (bigG); pass
    an empty mapping for an encoder that was not trained. ``.alpha`` is ``alpha``, or ``conv_alpha`` for LoRAs on
    3x3 convs when given (the alphas the modules were trained with, never the rank).
    """
    if arch not in TEXT_PREFIXES:
        raise ValueError(f"unknown arch {arch!r} (expected one of {sorted(TEXT_PREFIXES)})")
    prefixes = TEXT_PREFIXES[arch]
    if len(text_states) > len(prefixes):
        raise ValueError(f"{arch} has {len(prefixes)} text encoder(s), got {len(text_states)} state dicts")
    rename = (lambda path: sdxl_unet_ldm_path(path, unet_config)) if arch == "sdxl" else None
    tensors: dict[str, Any] = {}
    _convert(unet_state, UNET_PREFIX, alpha, conv_alpha, rename, tensors)
    for prefix, state in zip(prefixes[: len(text_states)], text_states, strict=True):
        _convert(state, prefix, alpha, conv_alpha, text_encoder_path, tensors)
    if not tensors:
        raise ValueError("nothing to export: the LoRA state dicts are empty")
    return tensors


def module_names(tensors: Mapping[str, Any]) -> list[str]:
    """The kohya module names present in a converted dict (one per ``.alpha`` key)."""
    return sorted(key[: -len(ALPHA_SUFFIX)] for key in tensors if key.endswith(ALPHA_SUFFIX))


def split_tags(caption: str) -> list[str]:
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def tag_frequency(captions: Iterable[str], trigger_word: str = "") -> dict[str, int]:
    """kohya's per-folder tag counts: comma-separated tags, stripped, lower-cased, counted once per caption
    occurrence. The trigger word counts for every caption it is prepended to (as trained)."""
    counts: dict[str, int] = {}
    trigger = trigger_word.strip().lower()
    for caption in captions:
        tags = [tag.lower() for tag in split_tags(caption)]
        if trigger and trigger not in tags:
            tags.insert(0, trigger)
        for tag in tags:
            counts[tag] = counts.get(tag, 0) + 1
    return counts


def dataset_sha256(entries: Iterable[tuple[str, str]]) -> str:
    """Order-independent hash of a dataset: sha256 over sorted (image content sha256, caption) lines."""
    lines = sorted(f"{image_hash}\t{caption}\n" for image_hash, caption in entries)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def dataset_entries(items: Iterable[Any]) -> list[tuple[str, str]]:
    """(image content sha256, caption) for items with ``.image`` (a path) and ``.caption``."""
    return [(sha256_file(Path(item.image)), str(item.caption)) for item in items]


def _opt(metadata: dict[str, str], key: str, value: Any) -> None:
    if value is not None:
        metadata[key] = str(value)


BASE_MODEL_VERSIONS = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}
MODELSPEC_ARCHITECTURES = {"sd15": "stable-diffusion-v1/lora", "sdxl": "stable-diffusion-xl-v1-base/lora"}


@dataclass(frozen=True)
class RunFacts:
    """What the metadata says about a run beyond its ``TrainConfig``: what happened and what was resolved."""

    arch: str  # "sd15" | "sdxl" (detected)
    started_at: float  # time.time()
    finished_at: float
    num_train_images: int
    output_name: str
    base_model_name: str | None = None
    prediction_type: str = "epsilon"  # the base model's
    epochs: int | None = None
    optimizer: str | None = None  # the optimizer that ran (its class name: AdamW8bit may fall back to AdamW)
    mixed_precision: str | None = None  # the precision that ran ("no" on a CPU whatever the config asked)
    dataset: Sequence[tuple[str, str]] | None = None  # (image content sha256, caption) per image
    dataset_name: str = "lora_studio"


def build_metadata(config: TrainConfig, facts: RunFacts) -> dict[str, str]:
    """kohya-style ``ss_*`` header (+ SAI ``modelspec.*``) for a run of ``config``. ``config.metadata`` is merged
    first: it can add keys, not falsify these. ``facts.dataset`` = (image content sha256, caption) per training
    image (see ``dataset_entries``): it gives ``lora_studio_dataset_sha256``, ``ss_dataset_dirs`` and
    ``ss_tag_frequency``. Facts left at None are not written, nor are options that were off (conv, the text
    encoder's learning rate, min-SNR)."""
    import datetime
    import json

    arch, resolution, steps, output_name = facts.arch, int(config.resolution), int(config.steps), facts.output_name
    if arch not in BASE_MODEL_VERSIONS:
        raise ValueError(f"unknown arch {arch!r}")
    metadata = {str(k): str(v) for k, v in (config.metadata or {}).items()}
    unet_lr = float(config.learning_rate)
    metadata.update(
        {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(int(config.rank)),
            "ss_network_alpha": str(float(config.alpha)),
            "ss_base_model_version": BASE_MODEL_VERSIONS[arch],
            "ss_v2": "False",
            "ss_steps": str(steps),
            "ss_max_train_steps": str(steps),
            "ss_learning_rate": str(unet_lr),
            "ss_unet_lr": str(unet_lr),
            "ss_resolution": f"({resolution}, {resolution})",
            "ss_num_train_images": str(int(facts.num_train_images)),
            "ss_output_name": output_name,
            "ss_training_started_at": str(facts.started_at),
            "ss_training_finished_at": str(facts.finished_at),
            "ss_seed": str(int(config.seed)),
            "ss_network_train_unet_only": str(not config.train_text_encoder),
            "lora_studio_trigger_word": config.trigger_word,
            "modelspec.sai_model_spec": "1.0.0",
            "modelspec.architecture": MODELSPEC_ARCHITECTURES[arch],
            "modelspec.implementation": (
                "https://github.com/Stability-AI/generative-models" if arch == "sdxl" else "diffusers"
            ),
            "modelspec.title": output_name,
            "modelspec.resolution": f"{resolution}x{resolution}",
            "modelspec.date": datetime.datetime.fromtimestamp(facts.finished_at, datetime.timezone.utc).isoformat(),
        }
    )
    if facts.prediction_type == "v_prediction":
        metadata["ss_v_parameterization"] = "True"
    metadata["modelspec.prediction_type"] = "v" if facts.prediction_type == "v_prediction" else "epsilon"
    if facts.base_model_name:
        metadata["ss_sd_model_name"] = facts.base_model_name
    if config.conv and config.conv_rank:
        conv_alpha = float(config.conv_alpha if config.conv_alpha is not None else config.alpha)
        metadata["ss_network_args"] = json.dumps({"conv_dim": str(int(config.conv_rank)), "conv_alpha": str(conv_alpha)})
    if config.train_text_encoder:
        metadata["ss_text_encoder_lr"] = str(float(config.text_encoder_lr or unet_lr))
    if facts.epochs is not None:
        metadata["ss_num_epochs"] = metadata["ss_epoch"] = str(int(facts.epochs))
    metadata["ss_batch_size_per_device"] = str(int(config.batch_size))
    metadata["ss_total_batch_size"] = str(int(config.batch_size) * int(config.grad_accum))
    metadata["ss_gradient_accumulation_steps"] = str(config.grad_accum)
    _opt(metadata, "ss_optimizer", facts.optimizer)
    metadata["ss_lr_scheduler"] = str(config.lr_scheduler)
    metadata["ss_lr_warmup_steps"] = str(config.warmup_steps)
    metadata["ss_noise_offset"] = str(float(config.noise_offset))
    if config.min_snr_gamma:  # kohya writes it only when enabled
        metadata["ss_min_snr_gamma"] = str(float(config.min_snr_gamma))
    _opt(metadata, "ss_mixed_precision", facts.mixed_precision)
    metadata["ss_gradient_checkpointing"] = str(config.gradient_checkpointing)
    metadata["ss_enable_bucket"] = str(config.bucketing)
    metadata["ss_flip_aug"] = str(config.flip)
    metadata["ss_shuffle_caption"] = str(config.shuffle_tags)
    metadata["ss_keep_tokens"] = str(config.keep_tokens)
    metadata["ss_caption_tag_dropout_rate"] = str(float(config.tag_dropout))
    metadata["ss_caption_dropout_rate"] = str(float(config.caption_dropout))
    if facts.dataset is not None:
        entries = list(facts.dataset)
        metadata["lora_studio_dataset_sha256"] = dataset_sha256(entries)
        metadata["ss_dataset_dirs"] = json.dumps({facts.dataset_name: {"n_repeats": 1, "img_count": len(entries)}})
        frequency = tag_frequency((caption for _, caption in entries), config.trigger_word)
        metadata["ss_tag_frequency"] = json.dumps({facts.dataset_name: frequency}, ensure_ascii=False)
    return metadata


def kohya_model_hashes(tensors: Mapping[str, Any], metadata: Mapping[str, str]) -> dict[str, str]:
    """``sshs_model_hash`` / ``sshs_legacy_hash`` as kohya precomputes them for sd-webui-additional-networks:
    sha256 of the tensor data after the header, and the first 8 hex of sha256(bytes 0x100000..0x110000) of the
    file serialised with only the ``ss_*`` metadata."""
    from safetensors.torch import save

    training_metadata = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    data = save(_cpu(tensors), training_metadata)
    header_len = int.from_bytes(data[:8], "little")
    return {
        "sshs_model_hash": hashlib.sha256(data[8 + header_len :]).hexdigest(),
        "sshs_legacy_hash": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8],
    }


def _cpu(tensors: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}


def save_lora_atomic(
    tensors: Mapping[str, Any],
    output_path: Path,
    metadata: Mapping[str, str],
    before_commit: Callable[[], None] | None = None,
    *,
    model_hashes: bool = True,
) -> str:
    """Write to a hidden temp file next to ``output_path``, then ``os.replace``; never overwrites.

    ``before_commit`` runs after the temp file is complete and may raise (e.g. cancellation): the temp
    file is then removed and nothing appears at ``output_path``. ``model_hashes`` (default on, as kohya) adds its
    ``sshs_model_hash`` / ``sshs_legacy_hash`` to the metadata. Returns the file's sha256 (hex).
    """
    from safetensors.torch import save

    output_path = Path(output_path)
    if output_path.exists():
        raise TrainingError(f"output_path already exists: {output_path} (a previous LoRA is never overwritten)")
    metadata = dict(metadata)
    if model_hashes:
        metadata.update(kohya_model_hashes(tensors, metadata))
    data = save(_cpu(tensors), metadata)
    digest = hashlib.sha256(data).hexdigest()
    tmp = output_path.with_name(f".{output_path.stem}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    handle = open(tmp, "xb")  # exclusive create (never someone else's file), normal umask permissions
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if before_commit is not None:
            before_commit()
        if output_path.exists():
            raise TrainingError(f"output_path appeared while training: {output_path} (not overwritten)")
        os.replace(tmp, output_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.info("wrote %s (sha256 %s)", output_path, digest)
    return digest
