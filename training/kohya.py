"""Export peft LoRA weights of a diffusers UNet as a kohya-ss ``.safetensors`` that ComfyUI loads.

For every wrapped module ``m`` (diffusers path such as
``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``) the file holds
``lora_unet_<m with dots as underscores>.lora_down.weight`` (peft ``lora_A``),
``.lora_up.weight`` (peft ``lora_B``) and ``.alpha`` (the alpha trained with). ComfyUI applies
``strength * (alpha / rank) * up @ down``, which is exactly peft's ``scaling = lora_alpha / r``.

torch and safetensors are imported lazily so this module stays cheap to import.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .errors import TrainingError

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


def peft_to_kohya(state_dict: Mapping[str, Any], alpha: float, prefix: str = UNET_PREFIX) -> dict[str, Any]:
    """Map a peft LoRA state dict to kohya keys; every module gets ``.alpha`` = ``alpha`` (not the rank)."""
    import torch

    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in state_dict.items():
        try:
            module, which = split_peft_key(key)
        except ValueError:
            raise ValueError(f"cannot export {key!r}: only plain LoRA A/B weights can be converted") from None
        if which in pairs.setdefault(module, {}):
            raise ValueError(f"two LoRA {which} weights for module {module!r} (several adapters?)")
        pairs[module][which] = tensor
    tensors: dict[str, Any] = {}
    for module in sorted(pairs):
        down, up = pairs[module].get("A"), pairs[module].get("B")
        if down is None or up is None:
            raise ValueError(f"module {module!r} has only one of lora_A / lora_B")
        if down.shape[0] != up.shape[1]:
            raise ValueError(f"module {module!r}: lora_A rank {down.shape[0]} != lora_B rank {up.shape[1]}")
        name = kohya_module_name(module, prefix)
        tensors[name + DOWN_SUFFIX] = down.detach().contiguous()
        tensors[name + UP_SUFFIX] = up.detach().contiguous()
        tensors[name + ALPHA_SUFFIX] = torch.tensor(float(alpha), dtype=torch.float32)
    return tensors


def module_names(tensors: Mapping[str, Any]) -> list[str]:
    """The kohya module names present in a converted dict (one per ``.alpha`` key)."""
    return sorted(key[: -len(ALPHA_SUFFIX)] for key in tensors if key.endswith(ALPHA_SUFFIX))


def build_metadata(
    *,
    rank: int,
    alpha: float,
    steps: int,
    learning_rate: float,
    resolution: int,
    num_train_images: int,
    output_name: str,
    seed: int,
    trigger_word: str,
    started_at: float,
    finished_at: float,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """kohya-style ``ss_*`` header. ``extra`` is merged first, so it can add keys but not falsify these."""
    metadata = {str(k): str(v) for k, v in (extra or {}).items()}
    metadata.update(
        {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(int(rank)),
            "ss_network_alpha": str(float(alpha)),
            "ss_base_model_version": "sd_v1",
            "ss_v2": "False",
            "ss_steps": str(int(steps)),
            "ss_learning_rate": str(float(learning_rate)),
            "ss_resolution": f"({int(resolution)}, {int(resolution)})",
            "ss_num_train_images": str(int(num_train_images)),
            "ss_output_name": output_name,
            "ss_training_started_at": str(started_at),
            "ss_training_finished_at": str(finished_at),
            "ss_seed": str(int(seed)),
            "lora_studio_trigger_word": trigger_word,
        }
    )
    return metadata


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_lora_atomic(
    tensors: Mapping[str, Any],
    output_path: Path,
    metadata: Mapping[str, str],
    before_commit: Callable[[], None] | None = None,
) -> str:
    """Write to a hidden temp file next to ``output_path``, then ``os.replace``; never overwrites.

    ``before_commit`` runs after the temp file is complete and may raise (e.g. cancellation): the temp
    file is then removed and nothing appears at ``output_path``. Returns the file's sha256 (hex).
    """
    from safetensors.torch import save

    output_path = Path(output_path)
    if output_path.exists():
        raise TrainingError(f"output_path already exists: {output_path} (a previous LoRA is never overwritten)")
    data = save({key: value.detach().to("cpu").contiguous() for key, value in tensors.items()}, dict(metadata))
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
