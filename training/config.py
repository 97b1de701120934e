"""The training configuration: ``TrainConfig``, the one description of every training option, and its parser.

(Over 500 lines on purpose: the ~45 option descriptions are the point of the module and read best in one place.)

Each field of ``TrainConfig`` carries an ``Option`` (``dataclasses.field(metadata={"option": ...})``): its type,
bounds, choices, default (a value, one per architecture, or derived from other fields), help text, whether the
panel folds it away ("advanced") and whether a user may set it (``user``) or the studio fills it (the plumbing:
items, output_path, the job's folders, metadata). Everything else is derived from these descriptions: the
worker's parser (``parse_config``), the defaults every door gets (``resolve``), the HTTP request check and
OpenAPI (training/request.py), ``GET /training/options`` and the panel's form, the Train LoRA node's inputs
and the CLI's flags.

Import-light (standard library only at module level): the studio's routes, the Train LoRA node and the CLI
read the option descriptions from here at start-up, and the worker process parses its config file with
``load_config``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import data as _data
from .architecture import detect_model
from .data import TrainItem
from .errors import ConfigError, TrainingError
from .optim import LR_SCHEDULERS, MIXED_PRECISION, OPTIMIZERS

log = logging.getLogger("lora_studio.training.config")

MODEL_SUBFOLDERS: tuple[str, ...] = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
DEVICES = ("auto", "cuda", "cpu")
ARCHS = ("auto", "sd15", "sdxl")
ARCHITECTURES = ("sd15", "sdxl")  # the ones defaults are given for
ARCH_LABELS = {"sd15": "SD1.5", "sdxl": "SDXL"}
KINDS = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}  # user options' JSON types
_NO_DEFAULT = dataclasses.MISSING


@dataclass(frozen=True)
class Option:
    """One option's description. ``kind``: int, float, bool, str (the user options' types) or path, items,
    metadata, targets (the plumbing's). Bounds are inclusive, except ``max`` when ``below`` is set; a float
    whose ``min`` is above 0 must be positive. The default is ``default``, or ``by_arch[arch]``, or
    ``derive(values so far)`` (described in words by ``derived``)."""

    kind: str
    help: str = ""
    min: float | None = None
    max: float | None = None
    below: bool = False
    multiple_of: int | None = None
    choices: tuple[str, ...] | None = None
    max_len: int | None = None
    default: Any = None
    by_arch: Mapping[str, Any] | None = None
    derive: Callable[[dict], Any] | None = None
    derived: str = ""
    step: float | None = None  # a UI hint: the widgets' increment
    advanced: bool = True
    user: bool = True
    aliases: tuple[str, ...] = ()

    def default_for(self, arch: str, values: Mapping[str, Any]) -> Any:
        if self.derive is not None:
            return self.derive(dict(values))
        if self.by_arch is not None:
            return self.by_arch.get(arch, self.by_arch[ARCHITECTURES[0]])
        return self.default


def _opt(kind: str, help: str = "", *, default: Any = _NO_DEFAULT, positional: bool = False,
         field_default: Any = _NO_DEFAULT, **kw: Any) -> Any:
    """A dataclass field described by an ``Option``. The dataclass default is the option's static default (the
    SD1.5 one when it depends on the architecture; ``field_default`` for derived ones); ``positional`` fields
    have none (the engine's code and tests build TrainConfig with them as arguments)."""
    option = Option(kind, help, default=None if default is _NO_DEFAULT else default, **kw)
    if positional:
        return dataclasses.field(metadata={"option": option})
    if field_default is _NO_DEFAULT:
        field_default = option.default_for(ARCHITECTURES[0], {}) if option.derive is None else None
    if isinstance(field_default, dict):
        return dataclasses.field(default_factory=dict, metadata={"option": option})
    return dataclasses.field(default=field_default, metadata={"option": option})


PLUMBING = {"user": False}  # filled by the studio (or written by hand in a worker config), never a request field
STEPS_DEFAULT = 1500


@dataclass(frozen=True)
class TrainConfig:
    base_model: Path = _opt("path", "the base model: a diffusers folder or a single-file .safetensors checkpoint",
                            positional=True, **PLUMBING)
    items: tuple[TrainItem, ...] = _opt("items", "the training images: [{image (absolute path), caption}]",
                                        positional=True, **PLUMBING)
    output_path: Path = _opt("path", "where the LoRA is written (.safetensors; never overwritten)", positional=True,
                             **PLUMBING)
    steps: int = _opt("int", "optimiser steps", min=1, max=100000, default=STEPS_DEFAULT, positional=True,
                      advanced=False)
    rank: int = _opt("int", "LoRA rank (kohya's network_dim): the size of each LoRA matrix", min=1, max=256,
                     default=16, positional=True, advanced=False, aliases=("network_dim",))
    alpha: float = _opt("float", "LoRA alpha (kohya's network_alpha): the LoRA's output is scaled by alpha / rank. "
                        "Half the rank by default (scale 0.5, the usual kohya recipe), so the learning rate means the "
                        "same whatever rank you choose", min=1e-6, max=1024.0, positional=True, step=0.5,
                        derive=lambda v: v["rank"] / 2, derived="rank / 2", aliases=("network_alpha",))
    learning_rate: float = _opt("float", "UNet learning rate", min=1e-10, max=1.0, default=1e-4, positional=True,
                                advanced=False, step=1e-5)
    resolution: int = _opt("int", "training side in pixels (a multiple of 8); each model's native size by default",
                           min=32, max=2048, multiple_of=8, by_arch={"sd15": 512, "sdxl": 1024}, step=64)
    batch_size: int = _opt("int", "images per step", min=1, max=64, default=1)
    seed: int = _opt("int", "random seed (noise, timesteps, shuffling)", min=0, max=2**31 - 1, default=0)
    trigger_word: str = _opt("str", "prepended to every caption (the character's trigger word)", default="",
                             **PLUMBING)
    metadata: dict[str, str] = _opt("metadata", "extra string metadata written into the LoRA file", default={},
                                    **PLUMBING)
    target_modules: tuple[str, ...] | None = _opt(
        "targets", "module names to put LoRAs on (default: kohya's set, every Linear in the transformers)",
        **PLUMBING)
    device: str = _opt("str", "auto: the GPU when there is one, else the CPU", choices=DEVICES, default="auto")
    arch: str = _opt("str", "checked against the weights; auto = detected", choices=ARCHS, default="auto",
                     **PLUMBING)
    # LoRA layout
    conv: bool = _opt("bool", "also train the 3x3 convolutions of the ResNet blocks (LoCon, kohya's conv_dim)",
                      default=False)
    conv_rank: int | None = _opt("int", "rank of the convolution LoRAs (kohya's conv_dim)",
                                 min=1, max=256, derive=lambda v: v["rank"], derived="rank", aliases=("conv_dim",))
    conv_alpha: float | None = _opt("float", "alpha of the convolution LoRAs", min=1e-6,
                                    max=1024.0, derive=lambda v: v["alpha"], derived="alpha", step=0.5)
    train_text_encoder: bool = _opt("bool", "also train text-encoder LoRAs (kohya trains them unless "
                                    "network_train_unet_only; off here: a character learns well from the UNet "
                                    "alone and the LoRA stays smaller)", default=False)
    text_encoder_lr: float | None = _opt("float", "text-encoder learning rate",
                                         min=1e-10, max=1.0, derive=lambda v: v["learning_rate"],
                                         derived="learning_rate", step=1e-5)
    # optimisation
    optimizer: str = _opt("str", "adamw8bit: bitsandbytes' 8-bit AdamW when it is installed (else AdamW)",
                          choices=OPTIMIZERS, default="adamw")
    lr_scheduler: str = _opt("str", "learning-rate schedule: cosine decays towards 0 after a short warm-up, the "
                             "usual recipe for a character LoRA", choices=LR_SCHEDULERS,
                             default="cosine")
    warmup_steps: int = _opt("int", "learning-rate warm-up steps (ignored by the constant schedule)", min=0, max=100000,
                             derive=lambda v: min(100, v["steps"] // 20), derived="5% of steps, at most 100",
                             field_default=0)
    min_snr_gamma: float = _opt("float", "min-SNR-γ loss weighting (Hang et al. 2023), 0 = off; 5 is the value of "
                                "the paper and kohya's guides: steadier, faster training", min=0.0,
                                max=100.0, default=5.0, step=0.5)
    noise_offset: float = _opt("float", "noise offset: lets the LoRA learn very dark or bright images", min=0.0,
                               max=1.0, default=0.0, step=0.01)
    grad_accum: int = _opt("int", "gradient accumulation: batches per optimiser step", min=1, max=1024, default=1)
    gradient_checkpointing: bool = _opt("bool", "recompute activations in the backward pass: less GPU memory, "
                                        "slower steps", default=False)
    compile: bool = _opt("bool", "torch.compile the UNet: faster steps after a one-off compile (minutes the first "
                         "time, cached on disk; needs a C++ compiler on a CPU, Triton on a GPU; without one the run "
                         "goes on uncompiled)", default=False)
    mixed_precision: str = _opt("str", "bf16: the frozen model in bf16 and bf16 autocast, LoRA weights in fp32 (fp16 "
                                "with loss scaling on GPUs without bf16). On a CPU bf16 runs where the CPU computes "
                                "it natively (AMX or AVX512-BF16; about 2x faster steps), else fp32. no: fp32 everywhere",
                                choices=MIXED_PRECISION, default="bf16")
    max_grad_norm: float = _opt("float", "gradient clipping norm (0 = no clipping)", min=0.0, max=1e6, default=1.0,
                                **PLUMBING)
    # data
    shuffle_tags: bool = _opt("bool", "shuffle the caption's tags after the first keep_tokens", default=False)
    keep_tokens: int = _opt("int", "leading caption tags that keep their place (the trigger word counts)", min=0,
                            max=75, default=1)
    tag_dropout: float = _opt("float", "probability of dropping each tag (after keep_tokens)", min=0.0, max=1.0,
                              below=True, default=0.0, step=0.05)
    caption_dropout: float = _opt("float", "probability of training a step on the empty caption", min=0.0, max=1.0,
                                  below=True, default=0.0, step=0.05)
    flip: bool = _opt("bool", "random horizontal flips", default=False)
    bucketing: bool = _opt("bool", "aspect-ratio buckets instead of square crops", default=True)
    cache_dir: Path | None = _opt("path", "the latent cache on disk (none: in memory only)", **PLUMBING)
    # run control
    checkpoint_dir: Path | None = _opt("path", "the folder for the step-<n>/ checkpoints (a config file: "
                                       "checkpoints/ beside it)", **PLUMBING)
    checkpoint_every: int = _opt("int", "save a resumable checkpoint every N steps (0 = off; off without a "
                                 "checkpoint_dir)", min=0, max=100000, default=250, field_default=0)
    resume_from: Path | None = _opt("path", "a step-<n> checkpoint folder, or a checkpoint_dir (its latest)",
                                    **PLUMBING)
    sample_every: int = _opt("int", "render a sample image every N steps (0 = off; off without a sample_dir or a "
                             "prompt)", min=0, max=100000, default=250, field_default=0)
    sample_dir: Path | None = _opt("path", "the folder for the sample images (a config file: samples/ beside it)",
                                   **PLUMBING)
    sample_prompt: str = _opt("str", "the samples' prompt (default: the trigger word)", default="", **PLUMBING)
    sample_negative: str = _opt("str", "the samples' negative prompt", default="", **PLUMBING)
    sample_steps: int = _opt("int", "denoising steps of each sample image", min=1, max=150, default=12)
    sample_size: int | None = _opt("int", "side of the sample images in pixels", min=32,
                                   max=2048, multiple_of=8, derive=lambda v: v["resolution"], derived="resolution",
                                   step=64)
    sample_guidance: float = _opt("float", "classifier-free guidance of the samples", min=1e-6, max=50.0,
                                  default=7.0, **PLUMBING)

    def caption_for(self, item: TrainItem) -> str:
        """The caption with the trigger word prepended, unless it is empty or already present."""
        return _data.with_trigger(item.caption, self.trigger_word)

    @property
    def effective_sample_prompt(self) -> str:
        return self.sample_prompt.strip() or self.trigger_word.strip()


# --------------------------------------------------------------------------- the descriptions


def options() -> tuple[tuple[str, Option], ...]:
    """Every option, in TrainConfig's order (derived defaults only read options before them)."""
    return tuple((f.name, f.metadata["option"]) for f in dataclasses.fields(TrainConfig))


def option(name: str) -> Option:
    return TrainConfig.__dataclass_fields__[name].metadata["option"]


USER_OPTIONS: tuple[str, ...] = tuple(name for name, o in options() if o.user)
ALIASES: dict[str, str] = {alias: name for name, o in options() for alias in o.aliases}


def defaults(arch: str) -> dict[str, Any]:
    """Every user option's default for a model of ``arch`` ("sd15" or "sdxl"), derived ones included."""
    return resolve({}, arch)


def default_text(name: str) -> str:
    """An option's default in words: "1500", "rank / 2", "512 for SD1.5, 1024 for SDXL"."""
    o = option(name)
    if o.derived:
        return o.derived
    if o.by_arch is not None:
        return ", ".join(f"{_text(value)} for {ARCH_LABELS[arch]}" for arch, value in o.by_arch.items())
    return _text(o.default)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def user_options() -> list[dict]:
    """The user options as JSON (GET /training/options): type, bounds, choices, the default for each
    architecture, how a derived default is found, help, advanced and aliases."""
    per_arch = {arch: defaults(arch) for arch in ARCHITECTURES}
    out = []
    for name, o in options():
        if not o.user:
            continue
        entry: dict[str, Any] = {"name": name, "type": KINDS[o.kind], "help": o.help, "advanced": o.advanced,
                                 "default": {arch: per_arch[arch][name] for arch in ARCHITECTURES},
                                 "derived": o.derived or None, "by_arch": o.by_arch is not None}
        for key in ("min", "max", "multiple_of", "step"):
            if getattr(o, key) is not None:
                entry[key] = getattr(o, key)
        if o.below:
            entry["below"] = True  # max itself is not allowed
        if o.choices:
            entry["choices"] = list(o.choices)
        if o.aliases:
            entry["aliases"] = list(o.aliases)
        out.append(entry)
    return out


def canonical(raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with the aliases renamed (network_alpha -> alpha, ...) and JSON nulls left out (null = not given)."""
    out = {key: value for key, value in raw.items() if value is not None}
    for alias, name in ALIASES.items():
        if alias in out:
            if name in out and out[name] != out[alias]:
                raise ConfigError(f"{alias} and {name} are the same setting but differ ({out[alias]} != {out[name]})")
            out[name] = out.pop(alias)
    return out


def check_options(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The user options ``raw`` gives (aliases renamed), each checked against its description; others refused."""
    given = canonical(raw)
    unknown = sorted(set(given) - set(USER_OPTIONS))
    if unknown:
        raise ConfigError(f"not training options: {', '.join(unknown)}")
    return {name: check_value(name, option(name), given[name]) for name in USER_OPTIONS if name in given}


def resolve(raw: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """Every user option for a model of ``arch``: the ones ``raw`` gives (checked), the rest their defaults
    (static, per architecture, or derived from the others). The one set of defaults of every door."""
    given = check_options(raw)
    values: dict[str, Any] = {}
    for name, o in options():
        if o.user:
            values[name] = given[name] if name in given else o.default_for(arch, values)
    return values


# --------------------------------------------------------------------------- checks


def check_value(name: str, o: Option, value: Any) -> Any:
    """One value against its description (the same numbers at the API, in the worker and in the node)."""
    if o.choices is not None:
        value = _typed(name, value, str)
        if value not in o.choices:
            raise ConfigError(f"{name} must be one of {', '.join(o.choices)}, got {value!r}")
        return value
    if o.kind == "bool":
        return _typed(name, value, bool)
    if o.kind == "str":
        return _typed(name, value, str)
    if o.kind == "path":
        return _abs_path(name, value)
    if o.kind == "int":
        value = _typed(name, int(value) if isinstance(value, float) and value.is_integer() else value, int)
        if (o.min is not None and value < o.min) or (o.max is not None and value > o.max):
            bound = f"between {o.min} and {o.max}" if o.max is not None else f"at least {o.min}"
            raise ConfigError(f"{name} must be {bound}, got {value}")
    elif o.kind == "float":
        value = _number(name, value, o)
    if o.multiple_of and value % o.multiple_of:
        raise ConfigError(f"{name} must be a multiple of {o.multiple_of}, got {value}")
    return value


def _typed(name: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        expected = {int: "an integer", str: "a string", bool: "true or false"}[kind]
        raise ConfigError(f"{name} must be {expected}, got {type(value).__name__} {value!r:.60}")
    return value


def _number(name: str, value: Any, o: Option) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__}")
    positive = o.min is not None and o.min > 0
    if not math.isfinite(value) or value < 0 or (value == 0 and positive):
        raise ConfigError(f"{name} must be a {'positive' if positive else 'non-negative'} number, got {value}")
    if o.min is not None and value < o.min:
        raise ConfigError(f"{name} must be at least {o.min}, got {value}")
    if o.max is not None and (value >= o.max if o.below else value > o.max):
        raise ConfigError(f"{name} must be {'below' if o.below else 'at most'} {o.max}, got {value}")
    return float(value)


def _abs_path(name: str, value: Any) -> Path:
    value = _typed(name, value, str)
    if not value.strip():
        raise ConfigError(f"{name} must not be empty")
    if not Path(value).is_absolute():
        raise ConfigError(f"{name} must be an absolute path, got {value!r}")
    return Path(value)


# --------------------------------------------------------------------------- the worker's config file


def load_config(path: Path) -> TrainConfig:
    """Read and validate a JSON config file (checks that the model folder and images are usable). A file without
    checkpoint_dir / sample_dir gets checkpoints/ and samples/ beside it, as the studio's job folder has."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if isinstance(raw, dict):
        folder = Path(path).resolve().parent
        raw = {"checkpoint_dir": str(folder / "checkpoints"), "sample_dir": str(folder / "samples"), **raw}
    return parse_config(raw)


def parse_config(raw: Any, *, check_files: bool = True) -> TrainConfig:
    """The worker's config: the user options resolved for the model's architecture (``resolve``: the same
    defaults as every door), the plumbing checked; ``check_files``: the model, output path and images too."""
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a JSON object")
    raw = canonical(raw)
    for key in sorted(set(raw) - set(TrainConfig.__dataclass_fields__)):
        log.warning("ignoring unknown config field %r", key)
    for name in ("base_model", "items", "output_path"):
        if name not in raw:
            raise ConfigError(f"the config is missing the required field {name!r}")
    if not _typed("base_model", raw["base_model"], str).strip():  # a path, relative ones too (a hand-written file)
        raise ConfigError("base_model must not be empty")
    base_model = Path(raw["base_model"])
    arch = check_value("arch", option("arch"), raw.get("arch", "auto"))
    model_arch = _arch_of(base_model, arch, check_files)
    values = resolve({k: v for k, v in raw.items() if k in USER_OPTIONS}, model_arch)
    for name, o in options():
        if o.user or name in ("base_model", "arch"):
            continue
        if name == "items":
            values[name] = _parse_items(raw[name])
        elif name == "metadata":
            values[name] = _parse_metadata(raw.get(name, {}))
        elif name == "target_modules":
            values[name] = _parse_targets(raw[name]) if name in raw else None
        else:
            values[name] = check_value(name, o, raw[name]) if name in raw else o.default_for(model_arch, values)
    # the periodic checkpoints and samples need their folders (and a prompt): without them the defaults are off
    if "checkpoint_every" not in raw and values["checkpoint_dir"] is None:
        values["checkpoint_every"] = 0
    prompt = values["sample_prompt"].strip() or values["trigger_word"].strip()
    if "sample_every" not in raw and (values["sample_dir"] is None or not prompt):
        values["sample_every"] = 0
    config = TrainConfig(base_model=base_model, arch=arch, **values)
    if config.checkpoint_every and config.checkpoint_dir is None:
        raise ConfigError("checkpoint_every needs a checkpoint_dir (the folder for the step-<n>/ checkpoints)")
    if config.sample_every and config.sample_dir is None:
        raise ConfigError("sample_every needs a sample_dir (the folder the sample images go to)")
    if config.sample_every and not config.effective_sample_prompt:
        raise ConfigError("sample_every needs a sample_prompt (or a trigger_word to use as the prompt)")
    if check_files:
        check_output_path(config.output_path)
        check_images(config.items)
        if config.resume_from is not None and not config.resume_from.is_dir():
            raise ConfigError(f"resume_from is not a checkpoint folder: {config.resume_from}")
    return config


def _arch_of(base_model: Path, arch: str, check_files: bool) -> str:
    """The architecture whose defaults apply: checked against the model (``check_files``), else as given or
    detected when the model can be read (SD1.5's defaults when it cannot)."""
    if check_files:
        return check_base_model(base_model, arch)
    if arch != "auto":
        return arch
    try:
        return detect_model(base_model).arch
    except (TrainingError, OSError, ValueError):
        return ARCHITECTURES[0]


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


