"""LoRA training loop for SD1.5-family UNets with diffusers + peft.

``train(config, on_progress, should_stop)`` loads a diffusers-format SD1.5 folder, freezes it, adds a
peft LoRA adapter to the UNet's attention projections, trains it with the epsilon / v-prediction
MSE objective and saves kohya-format weights atomically (see ``kohya.py``). The config object is the
validated ``TrainConfig`` built by ``worker.parse_config``.

Import-light at module level (stdlib only): torch, diffusers, peft, transformers, PIL and numpy are
imported inside the functions that need them, so the worker can validate a config and report a
missing dependency cleanly.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MissingDependenciesError, TrainingCancelled, TrainingError

if TYPE_CHECKING:
    from .worker import TrainConfig

log = logging.getLogger("lora_studio.training.trainer")

REQUIRED_MODULES: tuple[str, ...] = ("torch", "diffusers", "peft", "transformers", "safetensors")

ProgressCallback = Callable[[int, int, float], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class TrainResult:
    output_path: Path
    sha256: str
    num_modules: int
    rank: int
    alpha: float
    final_loss: float


# --------------------------------------------------------------------------- dependencies


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken or deliberately blocked package
        return False


def check_dependencies() -> None:
    """Cheap check (no import) that the training stack is installed."""
    missing = [name for name in REQUIRED_MODULES if not _installed(name)]
    if missing:
        log.error("missing Python packages: %s", ", ".join(missing))
        raise MissingDependenciesError()


def _import_stack() -> None:
    try:
        import diffusers  # noqa: F401
        import peft  # noqa: F401
        import safetensors  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        log.error("cannot import the training stack: %s", exc)
        raise MissingDependenciesError() from exc


# --------------------------------------------------------------------------- data


def load_image_tensor(path: Path, resolution: int) -> Any:
    """RGB image → float tensor (3, resolution, resolution) in [-1, 1], shorter side resized then centre-cropped."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            image = _to_rgb(ImageOps.exif_transpose(opened))
    except Exception as exc:
        raise TrainingError(f"cannot load training image {path}: {exc}") from exc
    scale = resolution / min(image.size)
    size = (max(resolution, round(image.width * scale)), max(resolution, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _to_rgb(image: Any) -> Any:
    """Flatten transparency onto white (transparent anime PNGs would otherwise turn black)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@dataclass
class _Encoded:
    mean: Any  # (N, C, h, w) latent distribution mean
    std: Any  # (N, C, h, w) latent distribution std
    text: Any  # (N, tokens, dim) text encoder last hidden state


def _load_models(base: Path, device: Any, stop: StopCheck) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    loaders = {
        "tokenizer": CLIPTokenizer,
        "scheduler": DDPMScheduler,
        "text_encoder": CLIPTextModel,
        "vae": AutoencoderKL,
        "unet": UNet2DConditionModel,
    }
    models: dict[str, Any] = {}
    for name, cls in loaders.items():
        _check_stop(stop)
        log.info("loading %s from %s", name, base / name)
        try:
            models[name] = cls.from_pretrained(str(base), subfolder=name, local_files_only=True)
        except Exception as exc:
            raise TrainingError(f"cannot load the {name} of the base model {base}: {exc}") from exc
        if hasattr(models[name], "requires_grad_"):
            _prepare_frozen(models[name], device)
    return models


def _prepare_frozen(model: Any, device: Any) -> None:
    """Freeze, make float32 (some checkpoints are saved in half precision), move to the device."""
    import torch

    model.requires_grad_(False)
    if any(param.dtype != torch.float32 for param in model.parameters()):
        model.to(dtype=torch.float32)
    if device.type != "cpu":
        model.to(device)


def _encode_dataset(config: TrainConfig, models: dict[str, Any], device: Any, stop: StopCheck) -> _Encoded:
    """VAE latent distributions and text embeddings for every item, computed once (the base is frozen)."""
    import torch

    tokenizer, text_encoder, vae = models["tokenizer"], models["text_encoder"], models["vae"]
    max_length = min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)
    means, stds, texts = [], [], []
    with torch.no_grad():
        for item in config.items:
            _check_stop(stop)
            pixels = load_image_tensor(item.image, config.resolution).unsqueeze(0).to(device)
            dist = vae.encode(pixels).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
            ids = tokenizer(
                config.caption_for(item),
                padding="max_length",
                max_length=max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device)
            texts.append(text_encoder(ids)[0].cpu())
    return _Encoded(torch.cat(means), torch.cat(stds), torch.cat(texts))


def _batches(count: int, batch_size: int, generator: Any) -> Iterator[list[int]]:
    """Endless batches of item indices: a fresh shuffle per epoch, wrapping across epochs."""
    import torch

    pending: list[int] = []
    while True:
        while len(pending) < batch_size:
            pending.extend(torch.randperm(count, generator=generator).tolist())
        yield pending[:batch_size]
        pending = pending[batch_size:]


# --------------------------------------------------------------------------- training


def _check_stop(stop: StopCheck) -> None:
    if stop():
        raise TrainingCancelled()


def _resolve_device(name: str) -> Any:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was requested but torch cannot see a CUDA GPU")
    return torch.device(name)


def _add_lora(unet: Any, config: TrainConfig) -> list[Any]:
    from peft import LoraConfig

    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        target_modules=list(config.target_modules),
        init_lora_weights="gaussian",
    )
    try:
        unet.add_adapter(lora)
    except ValueError as exc:
        raise TrainingError(
            f"cannot add LoRA to the UNet (target_modules {list(config.target_modules)}): {exc}"
        ) from exc
    params = [p for p in unet.parameters() if p.requires_grad]
    log.info("LoRA rank %d alpha %s: %d trainable tensors", config.rank, config.alpha, len(params))
    return params


def _step_loss(
    unet: Any, scheduler: Any, encoded: _Encoded, batch: list[int], scale: float, gen: Any, device: Any
) -> Any:
    import torch
    import torch.nn.functional as F

    index = torch.tensor(batch)
    mean, std = encoded.mean[index], encoded.std[index]
    latents = (mean + std * torch.randn(mean.shape, generator=gen)) * scale
    noise = torch.randn(latents.shape, generator=gen)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(batch),), generator=gen)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise TrainingError(f"unsupported scheduler prediction_type {prediction_type!r}")
    text = encoded.text[index].to(device)
    pred = unet(noisy.to(device), timesteps.to(device), encoder_hidden_states=text).sample
    return F.mse_loss(pred.float(), target.to(device).float())


def _latent_scale(vae: Any) -> float:
    return float(getattr(vae.config, "scaling_factor", 0.18215))


def train(
    config: TrainConfig,
    on_progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> TrainResult:
    """Train a LoRA on ``config.items`` and save it (kohya format) to ``config.output_path``."""
    stop = should_stop or (lambda: False)
    check_dependencies()
    _import_stack()
    import torch
    from peft import get_peft_model_state_dict

    from .kohya import build_metadata, peft_to_kohya, save_lora_atomic

    _check_stop(stop)  # importing torch & co. takes seconds: a stop may have arrived meanwhile
    started = time.time()
    device = _resolve_device(config.device)
    torch.manual_seed(config.seed)
    models = _load_models(config.base_model, device, stop)
    encoded = _encode_dataset(config, models, device, stop)
    scale = _latent_scale(models["vae"])
    del models["vae"], models["text_encoder"]
    unet, scheduler = models["unet"], models["scheduler"]
    params = _add_lora(unet, config)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    batches = _batches(len(config.items), config.batch_size, generator)
    unet.train()
    loss_value = float("nan")
    for step in range(1, config.steps + 1):
        _check_stop(stop)
        loss = _step_loss(unet, scheduler, encoded, next(batches), scale, generator, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise TrainingError(f"training diverged at step {step} (loss is {loss_value}): try a lower learning_rate")
        if on_progress is not None:
            on_progress(step, config.steps, loss_value)
    _check_stop(stop)
    unet.eval()
    tensors = peft_to_kohya(get_peft_model_state_dict(unet), config.alpha)
    metadata = build_metadata(
        rank=config.rank,
        alpha=config.alpha,
        steps=config.steps,
        learning_rate=config.learning_rate,
        resolution=config.resolution,
        num_train_images=len(config.items),
        output_name=config.output_path.stem,
        seed=config.seed,
        trigger_word=config.trigger_word,
        started_at=started,
        finished_at=time.time(),
        extra=config.metadata,
    )
    config.output_path.parent.mkdir(parents=True, exist_ok=True)
    digest = save_lora_atomic(tensors, config.output_path, metadata, before_commit=lambda: _check_stop(stop))
    num_modules = sum(1 for key in tensors if key.endswith(".alpha"))
    log.info("saved %d LoRA modules to %s", num_modules, config.output_path)
    return TrainResult(config.output_path, digest, num_modules, config.rank, config.alpha, loss_value)
