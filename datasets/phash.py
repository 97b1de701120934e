"""Perceptual hashes for finding near-duplicate images (video frames of the same shot, re-encodes).

Two images are near duplicates only when both their structure and their colours are close:

- structure: ``dhash``, the difference hash. The image is reduced to ``(size + 1) × size`` grey
  pixels (exact area averages) and bit ``row * size + col`` (counted from the most significant
  bit) is 1 when pixel ``col + 1`` of that row is brighter than pixel ``col``. It survives
  rescaling, recompression and brightness shifts; ``hamming`` counts the bits two hashes differ
  in. Being computed on grey pixels it is blind to colour: a red and a blue version of a picture,
  or differently coloured gradients, hash alike, and every flat picture hashes to 0.
- colour: ``colour_signature``, the mean colour of each cell of a 4×4 grid in CIELAB (48 bytes).
  ``colour_distance`` is the largest CIE76 colour difference (ΔE) between corresponding cells, so
  one recoloured region (hair, eyes, an outfit) counts fully however small the rest of the change.

One threshold ``t`` (in dHash bits) sets both: structure within ``t`` bits and every cell within
``t * COLOUR_TOLERANCE_PER_BIT`` ΔE (12.5 at the default 5 bits). ΔE 2.3 is a just-noticeable
difference; re-encoding moves cells by under 2, a ±8 % brightness change or a 2 % crop by under
9, while a recoloured region of a character moves its cells by 18 or more (see
``tests/unit/test_near_duplicates.py`` for the calibration set).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

GRID = 4  # colour signature cells per side
COLOUR_BYTES = GRID * GRID * 3
COLOUR_TOLERANCE_PER_BIT = 2.5  # ΔE allowed per bit of the structural threshold
STALE_MARGIN = 8  # extra bits within which a hash without colour (an older one) is refreshed

K = TypeVar("K")


def dhash(image: Image.Image, size: int = 8) -> int:
    """Difference hash of ``image`` (any mode): a ``size * size``-bit integer (64 bits by default)."""
    import numpy as np
    from PIL import Image

    if size < 1:
        raise ValueError("size must be at least 1")
    grey = image if image.mode == "L" else image.convert("L")
    # An exact area average (no reducing_gap: Pillow's integer pre-reduction shifts the cell
    # borders by a different amount at each image size, which flipped up to 10 bits of a picture
    # rescaled by 10 %). A box filter reads each pixel once, so a large picture stays cheap.
    small = grey.resize((size + 1, size), Image.Resampling.BOX)
    px = np.asarray(small, dtype=np.int16)
    bits = (px[:, 1:] > px[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big") >> (-bits.size % 8)


def hamming(a: int, b: int) -> int:
    """How many bits differ between two hashes."""
    return (a ^ b).bit_count()


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError:  # modes without a direct conversion (16-bit grey): through 8-bit grey
        return image.convert("L").convert("RGB")


def _lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB values 0-255, shape (..., 3)."""
    import numpy as np

    c = rgb / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ np.array([[0.4124564, 0.3575761, 0.1804375],
                             [0.2126729, 0.7151522, 0.0721750],
                             [0.0193339, 0.1191920, 0.9503041]]).T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def colour_signature(image: Image.Image) -> bytes:
    """Mean colour of each cell of a 4×4 grid, in CIELAB: row by row, 3 bytes a cell (L* × 2.55,
    a* + 128, b* + 128; quantised to half a unit or better)."""
    import numpy as np
    from PIL import Image

    # the mean of the gamma-encoded values, as a viewer at a distance roughly sees it
    small = _rgb(image).resize((GRID, GRID), Image.Resampling.BOX)
    lab = _lab(np.asarray(small, dtype=np.float64)).reshape(-1, 3)
    q = np.rint(lab * (2.55, 1, 1) + (0, 128, 128))
    return np.clip(q, 0, 255).astype(np.uint8).tobytes()


def _decode(signature: bytes) -> np.ndarray:
    import numpy as np

    if len(signature) != COLOUR_BYTES:
        raise ValueError(f"a colour signature has {COLOUR_BYTES} bytes, not {len(signature)}")
    return np.frombuffer(signature, dtype=np.uint8).reshape(-1, 3) / (2.55, 1, 1)


def colour_distance(a: bytes, b: bytes) -> float:
    """The largest ΔE (CIE76) between corresponding cells of two colour signatures."""
    import numpy as np

    return float(np.sqrt(((_decode(a) - _decode(b)) ** 2).sum(axis=1)).max())


def colour_tolerance(threshold: int) -> float:
    """The colour distance (ΔE) that goes with a structural threshold in bits."""
    return threshold * COLOUR_TOLERANCE_PER_BIT


@dataclass(frozen=True)
class ImageHash:
    """Structure (64-bit dHash) and colour (``colour_signature``; None when not known)."""

    structure: int
    colour: bytes | None

    @classmethod
    def of(cls, image: Image.Image) -> ImageHash:
        return cls(dhash(image), colour_signature(image))

    @classmethod
    def from_hex(cls, structure: str, colour: str | None) -> ImageHash:
        """From the database's columns (``phash``, ``colour_hash``)."""
        return cls(int(structure, 16), bytes.fromhex(colour) if colour else None)

    @property
    def structure_hex(self) -> str:
        return f"{self.structure:016x}"

    @property
    def colour_hex(self) -> str | None:
        return None if self.colour is None else self.colour.hex()


@dataclass(frozen=True)
class Match(Generic[K]):
    key: K
    hash: ImageHash
    bits: int  # structural distance
    colour: float  # colour distance (ΔE)


def compare(a: ImageHash, b: ImageHash, threshold: int) -> tuple[int, float] | None:
    """(bits, ΔE) when ``a`` and ``b`` are near duplicates under ``threshold``, else None. A hash
    whose colour is not known matches nothing: a duplicate is never declared on structure alone."""
    bits = hamming(a.structure, b.structure)
    if bits > threshold or a.colour is None or b.colour is None:
        return None
    d = colour_distance(a.colour, b.colour)
    return (bits, d) if d <= colour_tolerance(threshold) else None


@dataclass
class _Entry(Generic[K]):
    hash: ImageHash
    key: K
    lab: np.ndarray | None = field(default=None, repr=False)  # decoded colour, cached
    resolved: bool = False  # the colour was decoded (after asking ``rehash`` when it was missing)


class NearDuplicateIndex(Generic[K]):
    """Hashes seen so far, each with a key (an image id…); ``add`` refuses one that is a near
    duplicate (``compare``) of any of them.

    Entries may come without a colour: images hashed before colours were, whose structural hash
    is also from before dHash used exact area averages (up to 8 bits off). ``rehash(key)`` is then
    asked for a fresh hash the first time such an entry is within ``threshold + STALE_MARGIN`` bits
    of a query — so a large collection costs nothing until it matters, and each entry at most once
    — and an entry that cannot be rehashed matches nothing. A linear scan: meant for the tens to
    thousands of hashes of one video or upload."""

    def __init__(self, threshold: int, rehash: Callable[[K], ImageHash | None] | None = None):
        if threshold < 0:
            raise ValueError("threshold must be >= 0")
        self.threshold = threshold
        self.tolerance = colour_tolerance(threshold)
        self._rehash = rehash
        self._entries: list[_Entry[K]] = []

    def _resolve(self, entry: _Entry[K]) -> None:
        entry.resolved = True
        if entry.hash.colour is None and self._rehash is not None:
            entry.hash = self._rehash(entry.key) or entry.hash
        entry.lab = None if entry.hash.colour is None else _decode(entry.hash.colour)

    def find(self, h: ImageHash) -> Match[K] | None:
        """The closest stored near duplicate of ``h`` (fewest bits, then smallest ΔE), or None."""
        import numpy as np

        if h.colour is None:
            return None
        lab = _decode(h.colour)
        best: Match[K] | None = None
        for entry in self._entries:
            bits = hamming(h.structure, entry.hash.structure)
            if not entry.resolved:
                if bits > self.threshold + (STALE_MARGIN if entry.hash.colour is None else 0):
                    continue
                self._resolve(entry)
                bits = hamming(h.structure, entry.hash.structure)
            if entry.lab is None or bits > self.threshold or (best is not None and bits > best.bits):
                continue
            d = float(np.sqrt(((lab - entry.lab) ** 2).sum(axis=1)).max())
            if d <= self.tolerance and (best is None or (bits, d) < (best.bits, best.colour)):
                best = Match(entry.key, entry.hash, bits, d)
        return best

    def __contains__(self, h: ImageHash) -> bool:
        return self.find(h) is not None

    def put(self, h: ImageHash, key: K = None) -> None:  # type: ignore[assignment]
        """Store ``h`` without checking it (hashes already kept, such as recorded images)."""
        self._entries.append(_Entry(h, key))

    def add(self, h: ImageHash, key: K = None) -> bool:  # type: ignore[assignment]
        """Store ``h`` and return True, or return False (storing nothing) when it is a near duplicate."""
        if h in self:
            return False
        self.put(h, key)
        return True

    def extend(self, hashes: Iterable[ImageHash]) -> list[bool]:
        return [self.add(h) for h in hashes]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[ImageHash]:
        return (e.hash for e in self._entries)
