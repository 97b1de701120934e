"""Offline loading of SD1.5 / SDXL base models: single-file LDM checkpoints and diffusers folders.

Nothing here ever touches the hub. ``load_base_model`` detects the architecture (``architecture.py``), builds
the UNet, VAE and text encoder(s) on the ``meta`` device from the shipped configs with every width derived from
the checkpoint's shapes, loads the weights strictly, and pairs them with the CLIP tokenizer(s)
(``clip_tokenizer.py``) and the noise scheduler. ``encode_text`` turns captions into the UNet's conditioning;
``model_fingerprint`` identifies a model's bytes cheaply (the latent and text caches key on it).

Only relative imports (the worker imports this module through a synthetic package); heavy imports stay
inside functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .architecture import (
    SD15_TE_PREFIX,
    SDXL_TE1_PREFIX,
    SDXL_TE2_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    ModelInfo,
    derive_clip_config,
    derive_open_clip_config,
    derive_unet_config,
    derive_vae_config,
    detect_model,
    read_checkpoint_header,
    shipped_config,
)
from .clip_tokenizer import tokenize, tokenizers_for
from .errors import MissingDependenciesError, TrainingError

log = logging.getLogger("lora_studio.training.models")

_SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "timestep_spacing", "steps_offset")


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
    tokenizers = tokenizers_for(info.arch, tokenizer_dir)
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
        tokenizers = tokenizers_for(info.arch, tokenizer_dir)
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
