"""Perceptual hashes for finding near-duplicate images (video frames of the same shot, re-encodes).

``dhash`` is the difference hash: the image is reduced to ``(size + 1) × size`` grey pixels and bit
``row * size + col`` (counted from the most significant bit) is 1 when pixel ``col + 1`` of that row
is brighter than pixel ``col``. It survives rescaling, recompression and brightness shifts; two
hashes within a few bits of each other (``hamming``) are the same picture. Flat pictures (one solid
colour, whatever the colour) all hash to 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


def dhash(image: Image.Image, size: int = 8) -> int:
    """Difference hash of ``image`` (any mode): a ``size * size``-bit integer (64 bits by default)."""
    import numpy as np
    from PIL import Image

    if size < 1:
        raise ValueError("size must be at least 1")
    grey = image if image.mode == "L" else image.convert("L")
    # Pillow's resize with a reducing gap first shrinks by whole factors (cheap box averaging), so a
    # large frame costs about as much as a small one.
    small = grey.resize((size + 1, size), Image.Resampling.BOX, reducing_gap=2.0)
    px = np.asarray(small, dtype=np.int16)
    bits = (px[:, 1:] > px[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big") >> (-bits.size % 8)


def hamming(a: int, b: int) -> int:
    """How many bits differ between two hashes."""
    return (a ^ b).bit_count()


class NearDuplicateIndex:
    """Hashes seen so far; ``add`` refuses one within ``threshold`` bits of any of them.

    A linear scan: meant for the tens to thousands of hashes of one video or one upload batch."""

    def __init__(self, threshold: int):
        if threshold < 0:
            raise ValueError("threshold must be >= 0")
        self.threshold = threshold
        self._hashes: list[int] = []

    def find(self, h: int) -> int | None:
        """A stored hash within the threshold of ``h`` (the closest), or None."""
        best, best_d = None, self.threshold + 1
        for other in self._hashes:
            d = hamming(h, other)
            if d < best_d:
                best, best_d = other, d
        return best

    def __contains__(self, h: int) -> bool:
        return self.find(h) is not None

    def add(self, h: int) -> bool:
        """Store ``h`` and return True, or return False (storing nothing) when it is a near duplicate."""
        if h in self:
            return False
        self._hashes.append(h)
        return True

    def extend(self, hashes: Iterable[int]) -> list[bool]:
        return [self.add(h) for h in hashes]

    def __len__(self) -> int:
        return len(self._hashes)

    def __iter__(self) -> Iterator[int]:
        return iter(self._hashes)
