"""The project's one sha256-of-a-file helper (standard library only).

It lives in the engine because the engine may import nothing outside itself, while everything else in the
project may import the engine: the trainer hashes training images (dataset metadata, latent cache keys) and the
dataset side hashes imported images with the same function.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20  # read 1 MiB at a time: any file size in constant memory


def sha256_file(path: Path | str) -> str:
    """The sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
