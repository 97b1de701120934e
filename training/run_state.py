"""Checkpoint state: what a resumable checkpoint of a run holds, how it is written, and how a run resumes.

A checkpoint folder (``step-<n>/``, written atomically by ``checkpoints.py``) holds the adapters' own weights
(``adapters.safetensors``), the kohya LoRA at that step (``lora.safetensors``, usable as it is),
``state.pt`` (the step, loss EMA, optimizer, LR schedule, loss scaler, sampler position and every random state:
see ``training_state``) and ``checkpoint.json`` (format, step, and the run's ``signature``). A resume refuses a
checkpoint whose signature differs from this run's (other model, rank, batch size, items, seed...), then
restores everything so the run continues as if it had never stopped.

Import-light: torch and safetensors are imported inside the functions.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .adapters import export_tensors
from .checkpoints import CHECKPOINT_FORMAT, CheckpointInfo, write_checkpoint_atomic
from .errors import TrainingError

if TYPE_CHECKING:
    from .loop import TrainLoop

log = logging.getLogger("lora_studio.training.run_state")


def signature(loop: TrainLoop) -> dict[str, Any]:
    """The settings a checkpoint only fits: a resume with any of them changed is refused."""
    config = loop.ctx.config
    return {
        "arch": loop.arch,
        "fingerprint": loop.base.fingerprint,
        "rank": config.rank,
        "alpha": config.alpha,
        "conv": config.conv,
        "conv_rank": config.conv_rank,
        "conv_alpha": config.conv_alpha,
        "train_text_encoder": config.train_text_encoder,
        "target_modules": list(config.target_modules) if config.target_modules else None,
        "batch_size": config.batch_size,
        "grad_accum": config.grad_accum,
        "items": len(loop.data.items),
        "seed": config.seed,
        "optimizer": loop.optimizer_name,
    }


def training_state(loop: TrainLoop) -> dict[str, Any]:
    """Everything besides the weights that the next step depends on."""
    import torch

    rng = {"generator": loop.generator.get_state(), "python": loop.py_rng.getstate(),
           "torch": torch.get_rng_state()}
    if loop.ctx.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {
        "step": loop.step,
        "ema": loop.ema.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scheduler": loop.scheduler.state_dict(),
        "scaler": loop.scaler.state_dict() if loop.scaler is not None else None,
        "sampler": loop.data.sampler.state_dict(),
        "rng": rng,
    }


def save_checkpoint(loop: TrainLoop) -> Path:
    """Write ``<checkpoint_dir>/step-<n>/`` for the loop's current step and report it (a 'checkpoint' event)."""
    import torch
    from safetensors.torch import save_file

    config = loop.ctx.config
    assert config.checkpoint_dir is not None
    state = training_state(loop)
    weights = {name: p.detach().to("cpu").contiguous() for name, p in loop.lora.named_trainable().items()}
    tensors, _ = export_tensors(loop.lora, loop.arch, config)

    def write(folder: Path) -> None:
        save_file(weights, str(folder / "adapters.safetensors"))
        lora_meta = {"ss_steps": str(loop.step), "ss_network_dim": str(config.rank),
                     "ss_network_alpha": str(config.alpha)}
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()},
                  str(folder / "lora.safetensors"), metadata=lora_meta)
        torch.save(state, folder / "state.pt")
        meta = {"format": CHECKPOINT_FORMAT, "step": loop.step, "total_steps": config.steps,
                "smooth_loss": loop.ema.smoothed, "signature": signature(loop), "created": time.time()}
        (folder / "checkpoint.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    path = write_checkpoint_atomic(config.checkpoint_dir, loop.step, write)
    log.info("checkpoint at step %d: %s", loop.step, path)
    loop.ctx.emit("checkpoint", step=loop.step, path=str(path))
    return path


def load_checkpoint(loop: TrainLoop, info: CheckpointInfo) -> None:
    """Restore the adapters' weights and the training state of ``info`` into ``loop`` (same settings only)."""
    import torch
    from safetensors.torch import load_file

    config = loop.ctx.config
    expected, saved = signature(loop), info.meta.get("signature", {})
    differ = sorted(key for key in expected if saved.get(key) != expected[key])
    if differ:
        details = ", ".join(f"{key} {saved.get(key)!r} -> {expected[key]!r}" for key in differ)
        raise TrainingError(f"cannot resume from {info.path}: the settings changed ({details})")
    if info.step >= config.steps:
        raise TrainingError(f"cannot resume: the checkpoint is at step {info.step} of {config.steps} (raise steps)")
    try:
        weights = load_file(str(info.path / "adapters.safetensors"))
        state = torch.load(info.path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainingError(f"cannot read the checkpoint {info.path}: {exc}") from exc
    params = loop.lora.named_trainable()
    if set(weights) != set(params):
        raise TrainingError(f"cannot resume from {info.path}: its LoRA modules do not match this model")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    if loop.scaler is not None and state.get("scaler"):
        loop.scaler.load_state_dict(state["scaler"])
    loop.data.sampler.load_state_dict(state["sampler"])
    loop.ema.load_state_dict(state["ema"])
    rng = state["rng"]
    loop.generator.set_state(rng["generator"])
    loop.py_rng.setstate(_as_random_state(rng["python"]))
    torch.set_rng_state(rng["torch"])
    if loop.ctx.device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state_all(rng["cuda"])
    loop.step = int(state["step"])
    log.info("resumed from %s at step %d", info.path, loop.step)


def _as_random_state(value: Any) -> tuple:
    """random.Random.setstate wants tuples (a checkpoint round-trip may have made them lists)."""
    version, internal, gauss = value
    return (int(version), tuple(int(v) for v in internal), gauss)
