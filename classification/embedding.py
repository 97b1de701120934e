"""Classify images by CLIP image embeddings against each character's approved (reference) images.

Local weights only (transformers `CLIPVisionModelWithProjection` + `CLIPImageProcessor` saved in one
folder, loaded with local_files_only). torch and transformers are imported on first use, never at
import time. Runs on the CPU, in worker threads.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..core.errors import InvalidInput
from .base import ClassifierError, Suggestion, snippet

log = logging.getLogger("lora_studio.classification.base")

TOP_K = 3  # a character's score: mean of its TOP_K best reference similarities


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.draft("RGB", (1024, 1024))
        return ImageOps.exif_transpose(im).convert("RGB")


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class EmbeddingBackend:
    """Nearest neighbours between an image and each character's references, by cosine similarity.

    Confidence = P(best) under a softmax over the character scores (temperature `temperature`) times
    a ramp on the best score itself (0 at `floor`, 1 at `ceiling`), so a lone character only gets a
    high confidence when the image really looks like its references. Reference embeddings are cached
    in memory by (path, mtime, size), up to `cache_size` images (least recently used dropped first).
    """

    name = "embedding"

    def __init__(self, model_dir: Path | str, *, batch_size: int = 16, temperature: float = 0.025,
                 floor: float = 0.55, ceiling: float = 0.85, cache_size: int = 20000):
        if temperature <= 0 or ceiling <= floor or batch_size < 1:
            raise InvalidInput("EmbeddingBackend needs temperature > 0, ceiling > floor and batch_size >= 1.")
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size
        self.temperature, self.floor, self.ceiling = float(temperature), float(floor), float(ceiling)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # model loading and the cache
        self._model: Any = None
        self._processor: Any = None

    def __repr__(self) -> str:
        return f"EmbeddingBackend({str(self.model_dir)!r})"

    # -- model -------------------------------------------------------------------------------------

    def _load(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            try:
                import torch  # noqa: F401
                import transformers
            except ImportError as exc:
                raise ClassifierError(f"The embedding classifier needs torch and transformers: "
                                      f"{exc.name or exc} is not installed") from None
            if not self.model_dir.is_dir():
                raise ClassifierError(f"No CLIP vision model folder at {self.model_dir}")
            processor_cls = transformers.CLIPImageProcessor
            if importlib.util.find_spec("torchvision") is None and hasattr(transformers, "CLIPImageProcessorPil"):
                processor_cls = transformers.CLIPImageProcessorPil  # what CLIPImageProcessor falls back to
            try:
                config = transformers.CLIPVisionConfig.from_pretrained(str(self.model_dir), local_files_only=True)
                full = _read_json(self.model_dir / "config.json")
                if full.get("model_type") == "clip" and isinstance(full.get("projection_dim"), int):
                    config.projection_dim = full["projection_dim"]  # a full CLIP folder: its visual projection
                model = transformers.CLIPVisionModelWithProjection.from_pretrained(
                    str(self.model_dir), config=config, local_files_only=True)
                processor = processor_cls.from_pretrained(str(self.model_dir), local_files_only=True)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ClassifierError(f"Cannot load CLIP vision weights from {self.model_dir}: "
                                      f"{type(exc).__name__}: {snippet(str(exc), 200)}") from None
            model.to("cpu").eval()
            self._processor, self._model = processor, model
            log.info("loaded CLIP vision model from %s (%d-d embeddings)", self.model_dir,
                     model.config.projection_dim)

    @property
    def dim(self) -> int:
        self._load()
        return int(self._model.config.projection_dim)

    # -- embeddings --------------------------------------------------------------------------------

    def embed(self, paths: list[Path]) -> np.ndarray:
        """(n, d) float32 L2-normalised embeddings of the images (not cached). An unreadable image
        raises InvalidInput."""
        self._load()
        import torch

        out = np.zeros((len(paths), self.dim), dtype=np.float32)
        for start in range(0, len(paths), self.batch_size):
            batch = paths[start:start + self.batch_size]
            images = []
            for path in batch:
                try:
                    images.append(_load_rgb(Path(path)))
                except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
                    raise InvalidInput(f"Cannot read image {Path(path).name}: {type(exc).__name__}") from None
            pixels = self._processor(images=images, return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                vectors = self._model(pixel_values=pixels).image_embeds
                vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
            out[start:start + len(batch)] = vectors.cpu().numpy()
        return out

    def _references(self, paths: list[Path]) -> np.ndarray:
        """Embeddings of the readable reference images (cached); missing or unreadable ones are skipped."""
        keys: list[tuple[str, int, int]] = []
        for path in paths:
            try:
                stat = Path(path).stat()
            except OSError:
                log.warning("reference image %s is missing: skipped", path)
                continue
            keys.append((str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size))
        with self._lock:
            todo = [key for key in dict.fromkeys(keys) if key not in self._cache]
        computed = self._embed_keys(todo)
        rows = []
        with self._lock:
            for key in keys:
                vector = computed.get(key)
                if vector is None and key in self._cache:
                    vector = self._cache[key]
                    self._cache.move_to_end(key)
                if vector is not None:
                    rows.append(vector)
            self._cache.update(computed)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def _embed_keys(self, keys: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], np.ndarray]:
        if not keys:
            return {}
        try:
            return dict(zip(keys, self.embed([Path(k[0]) for k in keys]), strict=True))
        except InvalidInput:  # one unreadable file: embed one at a time to skip only the bad ones
            pass
        computed = {}
        for key in keys:
            try:
                computed[key] = self.embed([Path(key[0])])[0]
            except InvalidInput as exc:
                log.warning("reference image skipped: %s", exc.message)
        return computed

    # -- classification ----------------------------------------------------------------------------

    def scores(self, image_path: Path | str, references: dict[str, list[Path]]) -> dict[str, float]:
        """Each character's score (mean of its top-3 cosine similarities to the image); characters
        without readable references are left out."""
        refs = {slug: self._references(list(paths)) for slug, paths in references.items() if paths}
        refs = {slug: vectors for slug, vectors in refs.items() if len(vectors)}
        if not refs:
            return {}
        query = self.embed([Path(image_path)])[0]
        result = {}
        for slug, vectors in refs.items():
            sims = np.sort(vectors @ query)[::-1][:TOP_K]
            result[slug] = float(sims.mean())
        return result

    def classify(self, image_path: Path | str, references: dict[str, list[Path]]) -> Suggestion:
        """The character whose references look most like the image (see the class docstring)."""
        scores = self.scores(image_path, references)
        if not scores:
            return Suggestion(None, 0.0, [], "no reference images", self.name)
        ranked = sorted(scores, key=scores.__getitem__, reverse=True)
        values = np.array([scores[s] for s in ranked], dtype=np.float64)
        weights = np.exp((values - values[0]) / self.temperature)
        relative = float(weights[0] / weights.sum())
        absolute = min(1.0, max(0.0, float(values[0] - self.floor) / (self.ceiling - self.floor)))
        confidence = min(1.0, max(0.0, relative * absolute))
        description = ", ".join(f"{slug} {scores[slug]:.3f}" for slug in ranked[:5])
        return Suggestion(ranked[0], confidence, ranked[1:], f"cosine top-{TOP_K}: {description}", self.name)
