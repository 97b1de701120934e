"""Training data: items, caption augmentation, aspect-ratio buckets, image loading and a resumable sampler.

Stdlib only at import time (the worker imports this before it knows torch is installed); PIL, numpy
and torch are imported inside the functions that need them. Only relative imports within training/.

Conventions: a bucket is ``(width, height)`` in pixels; image sizes given as ``_hw`` are ``(height,
width)`` like SDXL's time ids (``original_size``, ``crops_coords_top_left``, ``target_size``).
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TrainingError

log = logging.getLogger("lora_studio.training.data")

Bucket = tuple[int, int]  # (width, height)

# Bumped when the pixels load_for_bucket produces change for the same file and bucket (cache keys use it).
PREPROCESS_VERSION = 1

_EXIF_ORIENTATION = 0x0112
_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


@dataclass(frozen=True)
class TrainItem:
    image: Path
    caption: str


# --------------------------------------------------------------------------- captions


@dataclass(frozen=True)
class CaptionOptions:
    trigger_word: str = ""
    shuffle: bool = False  # shuffle the tags after the first ``keep_tokens``
    keep_tokens: int = 1  # leading tags that keep their place (and are never dropped); the trigger counts
    tag_dropout: float = 0.0  # probability of dropping each non-kept tag
    caption_dropout: float = 0.0  # probability of training on the empty caption

    def __post_init__(self) -> None:
        if self.keep_tokens < 0:
            raise ValueError(f"keep_tokens must be >= 0, got {self.keep_tokens}")
        for name in ("tag_dropout", "caption_dropout"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be between 0 and 1, got {value}")


def with_trigger(caption: str, trigger_word: str) -> str:
    """The caption with the trigger word prepended, unless it is empty or already present as a whole word."""
    caption, trigger = caption.strip(), trigger_word.strip()
    if not trigger or re.search(rf"(?<!\w){re.escape(trigger)}(?!\w)", caption, re.IGNORECASE):
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def split_tags(caption: str) -> list[str]:
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def build_caption(item_caption: str, opts: CaptionOptions, rng: random.Random) -> str:
    """The caption to train on for one draw of an item.

    Random draws, in this order and only for the options that are on: caption dropout (one draw),
    tag dropout (one draw per non-kept tag), shuffle. With every option off the result is exactly
    ``with_trigger(item_caption, opts.trigger_word)`` (the caption as written, not re-joined).
    """
    if opts.caption_dropout > 0 and rng.random() < opts.caption_dropout:
        return ""
    caption = with_trigger(item_caption, opts.trigger_word)
    if not opts.shuffle and opts.tag_dropout <= 0:
        return caption
    tags = split_tags(caption)
    kept, rest = tags[: opts.keep_tokens], tags[opts.keep_tokens :]
    if opts.tag_dropout > 0:
        rest = [tag for tag in rest if rng.random() >= opts.tag_dropout]
    if opts.shuffle:
        rng.shuffle(rest)
    return ", ".join(kept + rest)


def deterministic_captions(opts: CaptionOptions) -> bool:
    """True when ``build_caption`` never uses its rng, so text-encoder outputs can be cached per item."""
    return not opts.shuffle and opts.tag_dropout <= 0 and opts.caption_dropout <= 0


# --------------------------------------------------------------------------- buckets


def make_buckets(resolution: int, *, step: int = 64, max_aspect: float = 2.0) -> list[Bucket]:
    """kohya-style bucket sizes ``(w, h)``: multiples of ``step``, area <= resolution², aspect <= max_aspect.

    For each width, the tallest height that keeps the area within budget (so every bucket trains on
    about the same number of pixels); both orientations; sorted by aspect ratio (w / h).
    """
    if step <= 0 or resolution < step:
        raise ValueError(f"resolution ({resolution}) must be at least the bucket step ({step})")
    if max_aspect < 1:
        raise ValueError(f"max_aspect must be >= 1, got {max_aspect}")
    area = resolution * resolution
    buckets: set[Bucket] = set()
    width = step
    while width * step <= area:
        height = (area // width) // step * step
        if height >= step and max(width, height) <= max_aspect * min(width, height) + 1e-9:
            buckets.add((width, height))
            buckets.add((height, width))
        width += step
    return sorted(buckets, key=lambda b: (b[0] / b[1], b[0] * b[1]))


def pick_bucket(width: int, height: int, buckets: Sequence[Bucket]) -> Bucket:
    """The bucket whose aspect ratio is closest to the image's (log scale: 2:1 and 1:2 are equally far)."""
    if not buckets:
        raise ValueError("no buckets to choose from")
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid image size {width}x{height}")
    aspect = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1], b))


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` as displayed (EXIF rotation applied), from the header only."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception as exc:  # PIL raises many types for broken files
        raise TrainingError(f"cannot read training image {path}: {exc}") from exc
    return (height, width) if orientation in _SWAPPED_ORIENTATIONS else (width, height)


def assign_buckets(items: Sequence[TrainItem], buckets: Sequence[Bucket]) -> list[Bucket]:
    """The bucket of every item, in item order (reads image headers only)."""
    return [pick_bucket(*image_size(item.image), buckets) for item in items]


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class PreparedImage:
    pixels: Any  # torch float32 (3, h, w) in [-1, 1]
    original_hw: tuple[int, int]  # the image's size before resizing (EXIF rotation applied)
    crop_top_left: tuple[int, int]  # (top, left) of the crop in the resized image (mirrored when flipped)
    bucket: Bucket  # (w, h) == pixels' (w, h)
    flip: bool = False


def cover_crop(width: int, height: int, bucket: Bucket) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resize size ``(w, h)`` that covers ``bucket`` keeping the aspect, and the centred crop's ``(left, top)``."""
    bucket_w, bucket_h = bucket
    scale = max(bucket_w / width, bucket_h / height)
    resized = (max(bucket_w, round(width * scale)), max(bucket_h, round(height * scale)))
    return resized, ((resized[0] - bucket_w) // 2, (resized[1] - bucket_h) // 2)


def to_rgb(image: Any) -> Any:
    """Flatten transparency onto white (transparent anime PNGs would otherwise turn black)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_for_bucket(path: Path, bucket: Bucket, *, flip: bool = False) -> PreparedImage:
    """Load an image for ``bucket``: EXIF rotation, alpha onto white, LANCZOS resize to cover the bucket,
    centre-crop of the small excess only, optional horizontal flip, float (3, h, w) in [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            image = to_rgb(ImageOps.exif_transpose(opened))
    except Exception as exc:  # PIL raises many types for broken files
        raise TrainingError(f"cannot load training image {path}: {exc}") from exc
    width, height = image.size
    resized, (left, top) = cover_crop(width, height, bucket)
    if resized != image.size:
        image = image.resize(resized, Image.Resampling.LANCZOS)
    image = image.crop((left, top, left + bucket[0], top + bucket[1]))
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        left = resized[0] - bucket[0] - left  # the crop as seen in the mirrored image (kohya does the same)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    pixels = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return PreparedImage(pixels, (height, width), (top, left), (int(bucket[0]), int(bucket[1])), flip)


# --------------------------------------------------------------------------- sampler


class BucketSampler:
    """Endless, seeded batches of item indices; a batch never mixes buckets.

    Each epoch shuffles the items within each bucket, cuts them into batches (a bucket's last,
    partial batch is kept) and shuffles the order of all batches. The plan of an epoch is a pure
    function of (seed, epoch, the buckets), so ``state_dict()`` only records the position, and
    ``load_state_dict`` makes a resumed sampler yield exactly the batches the original would have.
    """

    def __init__(self, buckets_of_items: Sequence[Bucket], batch_size: int, seed: int) -> None:
        if not buckets_of_items:
            raise ValueError("BucketSampler needs at least one item")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.buckets_of_items = [(int(w), int(h)) for w, h in buckets_of_items]
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.position = 0  # next batch within the epoch's plan
        self._by_bucket: dict[Bucket, list[int]] = {}
        for index, bucket in enumerate(self.buckets_of_items):
            self._by_bucket.setdefault(bucket, []).append(index)
        self._plan: list[list[int]] | None = None

    def __len__(self) -> int:
        """Batches per epoch."""
        return sum(math.ceil(len(indices) / self.batch_size) for indices in self._by_bucket.values())

    def plan(self, epoch: int) -> list[list[int]]:
        # A str seed is hashed with SHA-512 by random.seed: stable across processes and PYTHONHASHSEED.
        rng = random.Random(f"lora-studio-buckets:{self.seed}:{epoch}")
        batches: list[list[int]] = []
        for bucket in sorted(self._by_bucket):
            indices = list(self._by_bucket[bucket])
            rng.shuffle(indices)
            batches.extend(indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size))
        rng.shuffle(batches)
        return batches

    def bucket_of(self, batch: Sequence[int]) -> Bucket:
        return self.buckets_of_items[batch[0]]

    def __iter__(self) -> Iterator[list[int]]:
        return self

    def __next__(self) -> list[int]:
        if self._plan is None:
            self._plan = self.plan(self.epoch)
        if self.position >= len(self._plan):
            self.epoch, self.position = self.epoch + 1, 0
            self._plan = self.plan(self.epoch)
        batch = self._plan[self.position]
        self.position += 1
        return list(batch)

    def state_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "epoch": self.epoch,
            "position": self.position,
            "buckets_of_items": [list(b) for b in self.buckets_of_items],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position; refuses a state from a different dataset, batch size or seed."""
        saved_buckets = [tuple(b) for b in state.get("buckets_of_items", [])]
        if (
            saved_buckets != self.buckets_of_items
            or state.get("batch_size") != self.batch_size
            or state.get("seed") != self.seed
        ):
            raise TrainingError(
                "cannot resume: the checkpoint's data order was made for a different dataset, batch size or seed"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._plan = None
