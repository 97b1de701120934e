"""The training configuration: ``TrainConfig`` (every option the engine takes) and its parser.

Import-light (standard library only at module level): the studio's routes, the Train LoRA node and the
CLI read the option descriptions from here at start-up, and the worker process parses its config file
with ``parse_config``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import data as _data
from .architecture import detect_model
from .data import TrainItem
from .errors import ConfigError, TrainingError

log = logging.getLogger("lora_studio.training.config")

MODEL_SUBFOLDERS: tuple[str, ...] = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
DEVICES = ("cpu", "cuda", "auto")
ARCHS = ("auto", "sd15", "sdxl")
OPTIMIZERS = ("adamw", "adamw8bit")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "cosine")
MIXED_PRECISION = ("no", "fp16", "bf16")

log = logging.getLogger("lora_studio.training.worker")


@dataclass(frozen=True)
class TrainConfig:
    base_model: Path
    items: tuple[TrainItem, ...]
    output_path: Path
    steps: int
    rank: int
    alpha: float
    learning_rate: float
    resolution: int = 512
    batch_size: int = 1
    seed: int = 0
    trigger_word: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    target_modules: tuple[str, ...] | None = None  # None: kohya's default set (every Linear in the transformers)
    device: str = "cpu"
    arch: str = "auto"  # checked against the weights; "auto" = detected
    # LoRA layout
    conv: bool = False  # also the 3x3 convs of the ResNet blocks (kohya conv_dim / LoCon)
    conv_rank: int | None = None  # default: rank
    conv_alpha: float | None = None  # default: alpha
    train_text_encoder: bool = False
    text_encoder_lr: float | None = None  # default: learning_rate
    # optimisation
    optimizer: str = "adamw"
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    min_snr_gamma: float = 0.0  # 0 = off (5 is the usual value)
    noise_offset: float = 0.0
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the UNet step (one-off compile, then faster steps)
    mixed_precision: str = "bf16"  # GPU only; CPU always trains in fp32
    max_grad_norm: float = 1.0  # 0 = no clipping
    # data
    shuffle_tags: bool = False
    keep_tokens: int = 1
    tag_dropout: float = 0.0
    caption_dropout: float = 0.0
    flip: bool = False
    bucketing: bool = True
    cache_dir: Path | None = None  # latent cache (on disk); None = in memory only
    # run control
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0  # 0 = no periodic checkpoints
    resume_from: Path | None = None  # a step-<n> checkpoint folder, or a checkpoint_dir (its latest)
    sample_every: int = 0  # 0 = no samples
    sample_dir: Path | None = None
    sample_prompt: str = ""  # default: the trigger word
    sample_negative: str = ""
    sample_steps: int = 12
    sample_size: int | None = None  # default: resolution
    sample_guidance: float = 7.0

    def caption_for(self, item: TrainItem) -> str:
        """The caption with the trigger word prepended, unless it is empty or already present."""
        return _data.with_trigger(item.caption, self.trigger_word)

    @property
    def effective_sample_prompt(self) -> str:
        return self.sample_prompt.strip() or self.trigger_word.strip()


# --------------------------------------------------------------------------- config


def load_config(path: Path) -> TrainConfig:
    """Read and validate a JSON config file (checks that the model folder and images are usable)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    return parse_config(raw)


_ALIASES = {"network_alpha": "alpha", "network_dim": "rank", "conv_dim": "conv_rank"}


def parse_config(raw: Any, *, check_files: bool = True) -> TrainConfig:
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a JSON object")
    raw = {key: value for key, value in raw.items() if value is not None}  # JSON null = not given
    for alias, name in _ALIASES.items():
        if alias in raw:
            if name in raw and raw[name] != raw[alias]:
                raise ConfigError(f"{alias} and {name} are the same setting but differ ({raw[alias]} != {raw[name]})")
            raw[name] = raw.pop(alias)
    for key in sorted(set(raw) - set(TrainConfig.__dataclass_fields__)):
        log.warning("ignoring unknown config field %r", key)
    rank = _get_int(raw, "rank", low=1, high=1024)
    alpha = _get_number(raw, "alpha")
    resolution = _get_int(raw, "resolution", default=512, low=32, high=4096)
    config = TrainConfig(
        base_model=Path(_get(raw, "base_model", str)),
        items=_parse_items(raw.get("items")),
        output_path=Path(_get(raw, "output_path", str)),
        steps=_get_int(raw, "steps", low=1),
        rank=rank,
        alpha=alpha,
        learning_rate=_get_number(raw, "learning_rate"),
        resolution=resolution,
        batch_size=_get_int(raw, "batch_size", default=1, low=1, high=1024),
        seed=_get_int(raw, "seed", default=0, low=0, high=2**63 - 1),
        trigger_word=_get(raw, "trigger_word", str, default="", allow_empty=True),
        metadata=_parse_metadata(raw.get("metadata", {})),
        target_modules=_parse_targets(raw["target_modules"]) if "target_modules" in raw else None,
        device=_choice(raw, "device", DEVICES, "cpu"),
        arch=_choice(raw, "arch", ARCHS, "auto"),
        conv=_get(raw, "conv", bool, default=False),
        conv_rank=_get_int(raw, "conv_rank", default=rank, low=1, high=1024),
        conv_alpha=_get_number(raw, "conv_alpha", default=alpha),
        train_text_encoder=_get(raw, "train_text_encoder", bool, default=False),
        text_encoder_lr=_get_number(raw, "text_encoder_lr", default=None),
        optimizer=_choice(raw, "optimizer", OPTIMIZERS, "adamw"),
        lr_scheduler=_choice(raw, "lr_scheduler", LR_SCHEDULERS, "constant"),
        warmup_steps=_get_int(raw, "warmup_steps", default=0, low=0),
        min_snr_gamma=_get_number(raw, "min_snr_gamma", default=0.0, allow_zero=True),
        noise_offset=_get_number(raw, "noise_offset", default=0.0, allow_zero=True, high=1.0),
        grad_accum=_get_int(raw, "grad_accum", default=1, low=1, high=1024),
        gradient_checkpointing=_get(raw, "gradient_checkpointing", bool, default=False),
        compile=_get(raw, "compile", bool, default=False),
        mixed_precision=_choice(raw, "mixed_precision", MIXED_PRECISION, "bf16"),
        max_grad_norm=_get_number(raw, "max_grad_norm", default=1.0, allow_zero=True),
        shuffle_tags=_get(raw, "shuffle_tags", bool, default=False),
        keep_tokens=_get_int(raw, "keep_tokens", default=1, low=0, high=255),
        tag_dropout=_get_number(raw, "tag_dropout", default=0.0, allow_zero=True, high=1.0, below=True),
        caption_dropout=_get_number(raw, "caption_dropout", default=0.0, allow_zero=True, high=1.0, below=True),
        flip=_get(raw, "flip", bool, default=False),
        bucketing=_get(raw, "bucketing", bool, default=True),
        cache_dir=_get_abs_path(raw, "cache_dir"),
        checkpoint_dir=_get_abs_path(raw, "checkpoint_dir"),
        checkpoint_every=_get_int(raw, "checkpoint_every", default=0, low=0),
        resume_from=_get_abs_path(raw, "resume_from"),
        sample_every=_get_int(raw, "sample_every", default=0, low=0),
        sample_dir=_get_abs_path(raw, "sample_dir"),
        sample_prompt=_get(raw, "sample_prompt", str, default="", allow_empty=True),
        sample_negative=_get(raw, "sample_negative", str, default="", allow_empty=True),
        sample_steps=_get_int(raw, "sample_steps", default=12, low=1, high=200),
        sample_size=_get_int(raw, "sample_size", default=resolution, low=32, high=4096),
        sample_guidance=_get_number(raw, "sample_guidance", default=7.0, high=50.0),
    )
    if config.resolution % 8:
        raise ConfigError(f"resolution must be a multiple of 8, got {config.resolution}")
    if config.sample_size and config.sample_size % 8:
        raise ConfigError(f"sample_size must be a multiple of 8, got {config.sample_size}")
    if config.checkpoint_every and config.checkpoint_dir is None:
        raise ConfigError("checkpoint_every needs a checkpoint_dir (the folder for the step-<n>/ checkpoints)")
    if config.sample_every and config.sample_dir is None:
        raise ConfigError("sample_every needs a sample_dir (the folder the sample images go to)")
    if config.sample_every and not config.effective_sample_prompt:
        raise ConfigError("sample_every needs a sample_prompt (or a trigger_word to use as the prompt)")
    if check_files:
        check_base_model(config.base_model, config.arch)
        check_output_path(config.output_path)
        check_images(config.items)
        if config.resume_from is not None and not config.resume_from.is_dir():
            raise ConfigError(f"resume_from is not a checkpoint folder: {config.resume_from}")
    return config


_MISSING = object()


def _get(raw: dict, key: str, kind: type, *, default: Any = _MISSING, allow_empty: bool = False) -> Any:
    value = raw.get(key, default)
    if value is _MISSING:
        raise ConfigError(f"the config is missing the required field {key!r}")
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        expected = {int: "an integer", str: "a string", bool: "true or false"}.get(kind, kind.__name__)
        raise ConfigError(f"{key} must be {expected}, got {type(value).__name__} {value!r:.60}")
    if kind is str and not allow_empty and not value.strip():
        raise ConfigError(f"{key} must not be empty")
    return value


def _get_int(raw: dict, key: str, *, default: Any = _MISSING, low: int, high: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, float) and value.is_integer():
        raw = {**raw, key: int(value)}
    value = _get(raw, key, int, default=default)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{key} must be {bound}, got {value}")
    return value


def _get_number(
    raw: dict,
    key: str,
    *,
    default: Any = _MISSING,
    allow_zero: bool = False,
    high: float | None = None,
    below: bool = False,
) -> Any:
    value = raw.get(key, default)
    if value is _MISSING:
        raise ConfigError(f"the config is missing the required field {key!r}")
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key} must be a {'non-negative' if allow_zero else 'positive'} number, got {value}")
    if high is not None and (value >= high if below else value > high):
        raise ConfigError(f"{key} must be {'below' if below else 'at most'} {high}, got {value}")
    return float(value)


def _choice(raw: dict, key: str, choices: tuple[str, ...], default: str) -> str:
    value = _get(raw, key, str, default=default)
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _get_abs_path(raw: dict, key: str) -> Path | None:
    value = _get(raw, key, str) if key in raw else None
    if value is None:
        return None
    if not Path(value).is_absolute():
        raise ConfigError(f"{key} must be an absolute path, got {value!r}")
    return Path(value)


def _parse_items(value: Any) -> tuple[TrainItem, ...]:
    if value is None:
        raise ConfigError("the config is missing the required field 'items'")
    if not isinstance(value, list):
        raise ConfigError(f"items must be a list of {{image, caption}} objects, got {type(value).__name__}")
    if not value:
        raise ConfigError("there are no training items: add at least one image to the dataset")
    items = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ConfigError(f"items[{index}] must be an object with 'image' and 'caption'")
        image, caption = entry.get("image"), entry.get("caption") or ""
        if not isinstance(image, str) or not image.strip():
            raise ConfigError(f"items[{index}] has no image path")
        if not Path(image).is_absolute():
            raise ConfigError(f"items[{index}]: the image path must be absolute, got {image!r}")
        if not isinstance(caption, str):
            raise ConfigError(f"items[{index}]: caption must be a string, got {type(caption).__name__}")
        items.append(TrainItem(Path(image), caption))
    return tuple(items)


def _parse_metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"metadata must be an object of strings, got {type(value).__name__}")
    bad = [k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ConfigError(f"metadata values must be strings; not a string: {', '.join(map(str, bad[:5]))}")
    return dict(value)


def _parse_targets(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError("target_modules must be a non-empty list of module names such as 'to_q'")
    return tuple(value)


def check_base_model(path: Path, arch: str = "auto") -> str:
    """The base model exists and is SD1.5 or SDXL (cheap: headers and config files only); returns its arch."""
    if not path.exists():
        raise ConfigError(f"base model not found: {path}")
    if path.is_dir():
        missing = [name for name in MODEL_SUBFOLDERS if not (path / name).is_dir()]
        if missing:
            raise ConfigError(
                f"base model {path} is not a diffusers-format folder: missing {', '.join(m + '/' for m in missing)}"
            )
    try:
        info = detect_model(path)
    except ConfigError:
        raise
    except TrainingError as exc:
        raise ConfigError(str(exc)) from None
    if arch != "auto" and info.arch != arch:
        raise ConfigError(f"arch is {arch!r} but the base model {path.name} is {info.arch!r}")
    return info.arch


def check_output_path(path: Path) -> None:
    if not path.is_absolute():
        raise ConfigError(f"output_path must be an absolute path, got {str(path)!r}")
    if path.suffix.lower() != ".safetensors":
        raise ConfigError(f"output_path must end with .safetensors, got {path.name!r}")
    if path.exists():
        raise ConfigError(f"output_path already exists: {path} (a previous LoRA is never overwritten)")
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"the output folder is not a folder: {path.parent}")


def check_images(items: tuple[TrainItem, ...]) -> None:
    """Open every image header (PIL ``verify``) so broken files fail before any model is loaded."""
    from PIL import Image

    problems = []
    for index, item in enumerate(items):
        try:
            with Image.open(item.image) as image:
                image.verify()
        except FileNotFoundError:
            problems.append(f"items[{index}] {item.image}: file not found")
        except Exception as exc:  # PIL raises many types for corrupt files
            problems.append(f"items[{index}] {item.image}: {exc}")
    if problems:
        shown = "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else "")
        raise ConfigError(f"cannot open {len(problems)} of {len(items)} training images: {shown}")


