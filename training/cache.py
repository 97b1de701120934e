"""Caches for the frozen parts of the model: VAE latents on disk, text-encoder outputs in memory (and on disk).

A latent file is keyed by everything that determines its content: the image file's bytes, the bucket,
the flip, the model fingerprint, the VAE dtype and the preprocessing version, so a changed image or
model never reuses a stale entry. Files are written atomically (temporary name, then ``os.replace``);
an unreadable file is logged and recomputed. Stdlib only at import time (torch/safetensors inside).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import PREPROCESS_VERSION, Bucket, PreparedImage, TrainItem, load_for_bucket
from .hashing import sha256_file

log = logging.getLogger("lora_studio.training.cache")

CACHE_FORMAT = 1
EncodeFn = Callable[[PreparedImage], tuple[Any, Any]]  # -> (mean, std) of the VAE's latent distribution
EncodeBatchFn = Callable[[list[PreparedImage]], tuple[Any, Any]]  # -> (mean, std), each (B, C, h, w)


def _key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem[:16]}.{secrets.token_hex(8)}.tmp"
    handle = open(tmp, "xb")  # exclusive create with the umask's permissions (mkstemp's would be 0600)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _touch(path: Path) -> None:
    """Mark an entry as used now (its mtime): pruning removes the least recently used entries first."""
    try:
        os.utime(path, None)
    except OSError:
        pass


@dataclass(frozen=True)
class PruneResult:
    removed: int  # entries (and stale temporary files) deleted
    freed_bytes: int
    remaining_bytes: int


def prune(roots: Sequence[Path], max_bytes: int, keep: Collection[Path] = (), *,
          stale_tmp_s: float = 24 * 3600) -> PruneResult:
    """Bound the on-disk caches under ``roots`` to ``max_bytes``: delete ``*.safetensors`` entries, least recently
    used (mtime) first, never those in ``keep`` (the running training's), until the rest fit. Temporary files
    of writes a crash interrupted are deleted once older than ``stale_tmp_s``. Other files are left alone."""
    keep_set = {Path(p).resolve() for p in keep}
    entries: list[tuple[float, int, Path]] = []
    removed = freed = 0
    now = time.time()
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                try:
                    stat = path.stat()
                except OSError:
                    continue
                if name.startswith(".") and name.endswith(".tmp"):
                    if now - stat.st_mtime > stale_tmp_s:
                        try:
                            path.unlink()
                        except OSError:
                            continue
                        removed, freed = removed + 1, freed + stat.st_size
                elif name.endswith(".safetensors"):
                    entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _mtime, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if path.resolve() in keep_set:
            continue
        try:
            path.unlink()
        except OSError as exc:
            log.warning("cannot remove the cache entry %s: %s", path, exc)
            continue
        total, removed, freed = total - size, removed + 1, freed + size
    return PruneResult(removed=removed, freed_bytes=freed, remaining_bytes=total)


def _as_item_tensor(value: Any, name: str) -> Any:
    """(C, h, w) float32 on the CPU; a leading batch dimension of 1 is dropped."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"encode_fn must return tensors, got {type(value).__name__} for {name}")
    value = value.detach()
    if value.dim() == 4 and value.shape[0] == 1:
        value = value[0]
    if value.dim() != 3:
        raise ValueError(f"{name} must be (C, h, w) or (1, C, h, w), got {tuple(value.shape)}")
    return value.to("cpu", torch.float32).contiguous()


class LatentCache:
    """VAE latent distributions (mean, std) per (image, bucket, flip), one safetensors file each, under ``root``.

    ``hits`` / ``misses`` count lookups since construction (for progress reporting and tests).
    """

    def __init__(self, root: Path, fingerprint: str, *, vae_dtype: str = "float32") -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.vae_dtype = str(vae_dtype).removeprefix("torch.")
        self.hits = 0
        self.misses = 0
        self.used: set[Path] = set()  # the entries this object read or wrote (kept by ``prune``)
        self._hashes: dict[tuple[str, int, int], str] = {}

    def image_hash(self, path: Path) -> str:
        """SHA-256 of the file's bytes, memoised per (path, size, mtime) within this cache object."""
        stat = os.stat(path)
        memo = (str(path), stat.st_size, stat.st_mtime_ns)
        if memo not in self._hashes:
            self._hashes[memo] = sha256_file(Path(path))
        return self._hashes[memo]

    def key(self, item: TrainItem, bucket: Bucket, flip: bool) -> str:
        return _key(
            {
                "format": CACHE_FORMAT,
                "preprocess": PREPROCESS_VERSION,
                "image": self.image_hash(item.image),
                "bucket": [int(bucket[0]), int(bucket[1])],
                "flip": bool(flip),
                "model": self.fingerprint,
                "vae_dtype": self.vae_dtype,
            }
        )

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, item: TrainItem, bucket: Bucket, flip: bool) -> dict[str, Any] | None:
        """The cached entry, or None when absent or unreadable (a broken file is logged, then ignored)."""
        key = self.key(item, bucket, flip)
        entry = self._read(self.path_for(key), key)
        if entry is not None:
            self.hits += 1
        return entry

    def put(self, item: TrainItem, prepared: PreparedImage, mean: Any, std: Any) -> dict[str, Any]:
        """Store an encoded image (prepared by ``load_for_bucket``) and return the entry."""
        from safetensors.torch import save

        mean, std = _as_item_tensor(mean, "mean"), _as_item_tensor(std, "std")
        if mean.shape != std.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and std {tuple(std.shape)} differ in shape")
        key = self.key(item, prepared.bucket, prepared.flip)
        self.used.add(self.path_for(key))
        metadata = {
            "key": key,
            "original_hw": json.dumps(list(prepared.original_hw)),
            "crop_top_left": json.dumps(list(prepared.crop_top_left)),
            "bucket": json.dumps(list(prepared.bucket)),
            "flip": json.dumps(bool(prepared.flip)),
        }
        _write_atomic(self.path_for(key), save({"mean": mean, "std": std}, metadata=metadata))
        return self._entry(mean, std, prepared.original_hw, prepared.crop_top_left, prepared.bucket, prepared.flip)

    def get_or_encode(self, item: TrainItem, bucket: Bucket, flip: bool, encode_fn: EncodeFn) -> dict[str, Any]:
        """``dict(mean, std, original_hw, crop_top_left, bucket, flip)``; ``encode_fn`` runs only on a miss."""
        entry = self.get(item, bucket, flip)
        if entry is not None:
            return entry
        self.misses += 1
        prepared = load_for_bucket(item.image, bucket, flip=flip)
        mean, std = encode_fn(prepared)
        return self.put(item, prepared, mean, std)

    def get_or_encode_many(
        self,
        requests: Sequence[tuple[TrainItem, Bucket, bool]],
        encode_batch_fn: EncodeBatchFn,
        *,
        batch_size: int = 8,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Entries for all ``(item, bucket, flip)`` requests, in order; misses are encoded in batches of
        up to ``batch_size`` images of the same bucket (one VAE call each). ``on_progress(done, total)``."""
        total = len(requests)
        entries: list[dict[str, Any] | None] = [None] * total
        pending: dict[Bucket, list[int]] = {}
        done = 0
        for index, (item, bucket, flip) in enumerate(requests):
            entries[index] = self.get(item, bucket, flip)
            if entries[index] is None:
                pending.setdefault((int(bucket[0]), int(bucket[1])), []).append(index)
            else:
                done += 1
        if on_progress is not None:
            on_progress(done, total)
        for bucket, indices in pending.items():
            for start in range(0, len(indices), max(1, batch_size)):
                chunk = indices[start : start + max(1, batch_size)]
                prepared = [load_for_bucket(requests[i][0].image, bucket, flip=requests[i][2]) for i in chunk]
                means, stds = encode_batch_fn(prepared)
                if len(means) != len(chunk) or len(stds) != len(chunk):
                    raise ValueError(f"encode_batch_fn returned {len(means)} results for {len(chunk)} images")
                for row, index in enumerate(chunk):
                    self.misses += 1
                    entries[index] = self.put(requests[index][0], prepared[row], means[row], stds[row])
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
        return [entry for entry in entries if entry is not None]

    @staticmethod
    def _entry(mean: Any, std: Any, original_hw: Any, crop_top_left: Any, bucket: Any, flip: bool) -> dict[str, Any]:
        return {
            "mean": mean,
            "std": std,
            "original_hw": tuple(int(v) for v in original_hw),
            "crop_top_left": tuple(int(v) for v in crop_top_left),
            "bucket": tuple(int(v) for v in bucket),
            "flip": bool(flip),
        }

    def _read(self, path: Path, key: str) -> dict[str, Any] | None:
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                mean, std = handle.get_tensor("mean"), handle.get_tensor("std")
            if metadata.get("key") != key:
                raise ValueError("the file's key does not match its name")
            if mean.shape != std.shape or mean.dim() != 3:
                raise ValueError(f"unexpected tensor shapes {tuple(mean.shape)} / {tuple(std.shape)}")
            _touch(path)
            self.used.add(path)
            return self._entry(
                mean,
                std,
                json.loads(metadata["original_hw"]),
                json.loads(metadata["crop_top_left"]),
                json.loads(metadata["bucket"]),
                json.loads(metadata["flip"]),
            )
        except Exception as exc:  # any broken file: recompute rather than fail the run
            log.warning(
                "ignoring unreadable latent cache file %s (%s: %s); it will be recomputed",
                path,
                type(exc).__name__,
                exc,
            )
            return None


# --------------------------------------------------------------------------- text


@dataclass(frozen=True)
class CachedText:
    """Duck-compatible with models.TextConditioning: hidden (B, tokens, dim), pooled (B, dim) or None."""

    hidden: Any
    pooled: Any | None


class TextCache:
    """Text-encoder outputs per caption string for one model fingerprint; in memory, and on disk under ``root``.

    ``encode_fn(captions)`` returns an object with ``hidden`` (B, tokens, dim) and ``pooled`` ((B, dim) or
    None), e.g. ``models.encode_text(base, captions)``; it is called once per batch of missing captions.
    """

    def __init__(self, fingerprint: str, root: Path | None = None, *, dtype: str = "float32") -> None:
        self.fingerprint = fingerprint
        self.root = Path(root) if root is not None else None
        self.dtype = str(dtype).removeprefix("torch.")
        self.hits = 0
        self.misses = 0
        self.used: set[Path] = set()  # the entries this object read or wrote (kept by ``prune``)
        self._memory: dict[str, tuple[Any, Any]] = {}

    def key(self, caption: str) -> str:
        return _key({"format": CACHE_FORMAT, "caption": caption, "model": self.fingerprint, "dtype": self.dtype})

    def __len__(self) -> int:
        return len(self._memory)

    def __contains__(self, caption: str) -> bool:
        return caption in self._memory or self._load(caption) is not None

    def get_or_encode(self, caption: str, encode_fn: Callable[[list[str]], Any]) -> CachedText:
        """One caption: ``hidden`` (1, tokens, dim), ``pooled`` (1, dim) or None."""
        return self.get_batch([caption], encode_fn)

    def get_batch(self, captions: Sequence[str], encode_fn: Callable[[list[str]], Any]) -> CachedText:
        """The conditioning for ``captions`` in order (rows stacked); missing captions are encoded in one call."""
        import torch

        rows: dict[str, tuple[Any, Any]] = {}
        missing: list[str] = []
        for caption in dict.fromkeys(captions):
            found = self._memory.get(caption) or self._load(caption)
            if found is None:
                missing.append(caption)
            else:
                rows[caption] = found
        self.hits += sum(1 for caption in captions if caption in rows)
        self.misses += len(missing)
        if missing:
            encoded = encode_fn(list(missing))
            hidden, pooled = encoded.hidden.detach(), getattr(encoded, "pooled", None)
            if hidden.shape[0] != len(missing):
                raise ValueError(f"encode_fn returned {hidden.shape[0]} rows for {len(missing)} captions")
            for row, caption in enumerate(missing):
                entry = (
                    hidden[row : row + 1].to("cpu").clone(),
                    None if pooled is None else pooled.detach()[row : row + 1].to("cpu").clone(),
                )
                rows[caption] = entry
                self._memory[caption] = entry
                self._store(caption, entry)
        hidden = torch.cat([rows[caption][0] for caption in captions])
        pooled_rows = [rows[caption][1] for caption in captions]
        pooled = None if any(p is None for p in pooled_rows) else torch.cat(pooled_rows)
        return CachedText(hidden, pooled)

    def _path(self, caption: str) -> Path | None:
        if self.root is None:
            return None
        key = self.key(caption)
        return self.root / key[:2] / f"{key}.safetensors"

    def _load(self, caption: str) -> tuple[Any, Any] | None:
        path = self._path(caption)
        if path is None or not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                if (handle.metadata() or {}).get("key") != self.key(caption):
                    raise ValueError("the file's key does not match its name")
                names = set(handle.keys())
                entry = (handle.get_tensor("hidden"), handle.get_tensor("pooled") if "pooled" in names else None)
        except Exception as exc:  # any broken file: recompute rather than fail the run
            log.warning("ignoring unreadable text cache file %s (%s: %s)", path, type(exc).__name__, exc)
            return None
        _touch(path)
        self.used.add(path)
        self._memory[caption] = entry
        return entry

    def _store(self, caption: str, entry: tuple[Any, Any]) -> None:
        path = self._path(caption)
        if path is None:
            return
        from safetensors.torch import save

        self.used.add(path)
        tensors = {"hidden": entry[0].contiguous()}
        if entry[1] is not None:
            tensors["pooled"] = entry[1].contiguous()
        _write_atomic(path, save(tensors, metadata={"key": self.key(caption)}))
