"""Helpers for the trainer tests: config dicts, event recorders, stand-in model folders (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_RESOLUTION = 64


def fake_model_folder(folder: Path, arch: str = "sd15") -> Path:
    """A diffusers-folder skeleton whose config files say SD1.5/SDXL (no weights): enough for config checks."""
    folder = Path(folder)
    names = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"]
    if arch == "sdxl":
        names += ["text_encoder_2", "tokenizer_2"]
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {
        "_class_name": "StableDiffusionXLPipeline" if arch == "sdxl" else "StableDiffusionPipeline",
        "text_encoder": ["transformers", "CLIPTextModel"],
    }
    unet: dict[str, Any] = {"in_channels": 4, "cross_attention_dim": 96 if arch == "sdxl" else 32}
    if arch == "sdxl":
        index["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
        unet["addition_embed_type"] = "text_time"
        (folder / "text_encoder_2" / "config.json").write_text(json.dumps({"hidden_size": 64}), encoding="utf-8")
    (folder / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    (folder / "unet" / "config.json").write_text(json.dumps(unet), encoding="utf-8")
    (folder / "text_encoder" / "config.json").write_text(
        json.dumps({"hidden_size": 32, "hidden_act": "quick_gelu"}), encoding="utf-8"
    )
    return folder


def add_approved_images(studio: Any, character_id: int, folder: Path, count: int = 2, seed: int = 0) -> list:
    """Add ``count`` small generated PNGs (staged in ``folder``) to a character and approve them: what a training
    of that character needs."""
    from .images import image_bytes

    staged = []
    for i in range(count):
        path = Path(folder) / f"staged-{i}.png"
        path.write_bytes(image_bytes(size=(72, 64), seed=seed + i))
        staged.append((f"{i}.png", path))
    created = studio.images.add_files(character_id, staged).created
    for image in created:
        studio.review.approve(image.id)
    return created


def train_fields(model: Path, items: list[dict], output: Path, **overrides: Any) -> dict:
    """A small, fast training config (64 px, rank 2, 2 steps) as the JSON the studio writes."""
    fields: dict[str, Any] = {
        "base_model": str(model),
        "items": items,
        "output_path": str(output),
        "steps": 2,
        "rank": 2,
        "alpha": 1.0,
        "learning_rate": 1e-3,
        "resolution": TINY_RESOLUTION,
        "batch_size": 1,
        "seed": 11,
        # the engine tests' plain recipe (the studio's defaults are cosine, min-SNR 5, device auto)
        "lr_scheduler": "constant",
        "min_snr_gamma": 0.0,
        "device": "cpu",
    }
    fields.update(overrides)
    return {key: value for key, value in fields.items() if value is not None}


def item_dicts(images: list[Path], captions: list[str] | None = None) -> list[dict]:
    captions = captions or [f"1girl, red hair, smile, picture {i}" for i in range(len(images))]
    return [{"image": str(path), "caption": caption} for path, caption in zip(images, captions, strict=False)]


class EventLog:
    """``on_event`` recorder: ``log(event, **fields)``; ``of(name)`` lists the fields of one kind of event."""

    def __init__(self, stop_after: tuple[str, int] | None = None) -> None:
        self.events: list[tuple[str, dict]] = []
        self.stop_after = stop_after  # (event name, step): should_stop() turns True once that event was seen

    def __call__(self, event: str, /, **fields: Any) -> None:
        self.events.append((event, fields))

    def of(self, name: str) -> list[dict]:
        return [fields for event, fields in self.events if event == name]

    def names(self) -> list[str]:
        return [event for event, _ in self.events]

    def should_stop(self) -> bool:
        if self.stop_after is None:
            return False
        name, step = self.stop_after
        return any(fields.get("step") == step for fields in self.of(name))
