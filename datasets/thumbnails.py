"""WebP thumbnails of dataset images and of ComfyUI's outputs (images and videos), made once and kept
in a disk cache under the data folder, so the review queue, the gallery and generation results never
load the full-size files.

A thumbnail is named by its key: a hash of the source's resolved path, its mtime (ns) and size, and
the thumbnail size. A changed or moved source has a new key, so a stale thumbnail is never served
(the old one ages out of the cache); the key is also the HTTP ETag. Files live in
`<cache>/<key[:2]>/<key>.webp`, written atomically. The cache is capped in bytes: an in-memory index
(filled from the folder once, by mtime) keeps the files in least-recently-used order, a hit refreshes
the file's mtime (at most once a minute, so the order survives a restart), and the oldest files go
when a new one takes the total over the cap. One lock per key: concurrent requests for the same
thumbnail decode the source once."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import InvalidInput, NotFound
from ..core.owners import tag_gone
from .images import MAX_PIXELS
from .layout import TEMP_PREFIX, atomic_write_bytes

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("lora_studio.datasets.thumbnails")

SIZES = (256, 512)  # the longest side, in pixels; a smaller source is never enlarged
DEFAULT_SIZE = 256
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: tens of thousands of thumbnails (about 10-30 KB each at 512 px)
VIDEO_SUFFIXES = {".webm", ".mp4"}
IMAGE_FORMATS = {"PNG", "JPEG", "WEBP"}
WEBP_QUALITY = 80
WEBP_METHOD = 2  # libwebp effort 0-6: 2 encodes about twice as fast as the default 4, ~2% larger
KEY_VERSION = "1"  # part of every key: bump it when the way thumbnails are drawn changes
TOUCH_EVERY_S = 60.0  # a hit refreshes the file's mtime (the on-disk LRU order) at most this often
MAX_VIDEO_PACKETS = 300  # packets read looking for a first decodable frame before giving up
MAX_FAILURES = 1000  # remembered sources that cannot be thumbnailed (not decoded again while unchanged)
STALE_TEMP_S = 3600.0
_OWNED_TEMP = re.compile(re.escape(TEMP_PREFIX) + r"([0-9a-f]{8}-\d+)-")
# EXIF orientation -> the transpose that makes the picture upright (what ImageOps.exif_transpose does)
_ORIENTATION = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
                7: "TRANSVERSE", 8: "ROTATE_90"}
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Thumbnail:
    """A thumbnail as a route answers it."""

    etag: str  # the cache key: changes whenever the source (or the size) does
    data: bytes | None  # WebP; None when the caller already holds this one (its etag was in `known`)


class Thumbnails:
    def __init__(self, cache_dir: Path, max_cache_bytes: int = DEFAULT_MAX_BYTES, *,
                 image_file: Callable[[int], Path] | None = None, output_file: Callable[[str], Path] | None = None):
        """`image_file`: a dataset image's file by id (ImageService.file_path); `output_file`: a file of
        ComfyUI's output folder by relative path, confined there (Gallery.file)."""
        if max_cache_bytes < 1:
            raise ValueError("max_cache_bytes must be positive")
        self.cache_dir = cache_dir
        self.max_cache_bytes = max_cache_bytes
        self._image_file = image_file
        self._output_file = output_file
        self._lock = threading.Lock()  # guards the index, the key locks and the failures
        self._index: OrderedDict[str, tuple[int, float]] | None = None  # key -> (bytes, last use), oldest first
        self._total = 0
        self._key_locks: dict[str, list] = {}  # key -> [lock, users]
        self._failures: OrderedDict[str, str] = OrderedDict()  # key -> why it cannot be made
        self.made = 0  # thumbnails decoded and written by this process (tests, the benchmark)

    # -- the doors the routes use ------------------------------------------------------------------

    def for_image(self, image_id: int, size: int, known: Collection[str] = ()) -> Thumbnail:
        """A dataset image's thumbnail (NotFound when the record or its file is missing)."""
        if self._image_file is None:
            raise NotFound("dataset image thumbnails are not available")
        return self.get(self._image_file(image_id), size, known)

    def for_output(self, rel_path: str, size: int, known: Collection[str] = ()) -> Thumbnail:
        """The thumbnail of an image or video in ComfyUI's output folder, by its path there (confined to
        the folder exactly as the gallery's file route is)."""
        if self._output_file is None:
            raise NotFound("output thumbnails are not available")
        return self.get(self._output_file(rel_path), size, known)

    def get(self, source: Path, size: int, known: Collection[str] = ()) -> Thumbnail:
        """The thumbnail's bytes, made if needed; none when its key is in `known` (an If-None-Match; "*": any)."""
        key = self.key(source, size)
        if key in known or "*" in known:
            return Thumbnail(key, None)
        return Thumbnail(key, self._read_or_make(source, size, key))

    # -- the cache ---------------------------------------------------------------------------------

    def key(self, source: Path, size: int) -> str:
        """The cache key (and ETag) of `source` at `size`; NotFound when the source is not a file."""
        if size not in SIZES:
            raise InvalidInput(f"'size' must be one of {', '.join(map(str, SIZES))}")
        try:
            resolved = source.resolve(strict=True)
            st = resolved.stat()
        except (OSError, RuntimeError):
            raise NotFound("the source file is missing") from None
        if not stat.S_ISREG(st.st_mode):
            raise NotFound("the source is not a file")
        text = f"{KEY_VERSION}\0{resolved}\0{st.st_mtime_ns}\0{st.st_size}\0{size}"
        return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    def path_of(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.webp"

    def make(self, source: Path, size: int) -> Path:
        """Make (or find) the thumbnail of `source` at `size` and return its cache file (the benchmark's door)."""
        key = self.key(source, size)
        self._read_or_make(source, size, key)
        return self.path_of(key)

    def cached_bytes(self) -> int:
        """The cache's size as the index counts it."""
        with self._lock:
            self._load_index()
            return self._total

    def _read_or_make(self, source: Path, size: int, key: str) -> bytes:
        data = self._read(key)
        if data is not None:
            return data
        with self._key_lock(key):
            data = self._read(key)  # made by a request that held the lock before this one
            if data is not None:
                return data
            with self._lock:
                failed = self._failures.get(key)
            if failed is not None:
                raise InvalidInput(failed)
            try:
                data = render(source, size)
            except InvalidInput as e:
                with self._lock:
                    self._failures[key] = e.message
                    while len(self._failures) > MAX_FAILURES:
                        self._failures.popitem(last=False)
                raise
            self.made += 1
            try:
                atomic_write_bytes(self.path_of(key), data)
            except OSError as e:  # a full or read-only disk: the thumbnail is still served, just not kept
                log.warning("could not cache thumbnail %s: %s", key, e)
                return data
            self._added(key, len(data))
            return data

    def _read(self, key: str) -> bytes | None:
        path = self.path_of(key)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            with self._lock:
                if self._index is not None and key in self._index:  # removed behind our back
                    self._total -= self._index.pop(key)[0]
            return None
        now = time.time()
        with self._lock:
            self._load_index()
            entry = self._index.get(key)
            if entry is None:  # made by another process sharing the folder
                self._index[key] = (len(data), now)
                self._total += len(data)
                touch = False
            else:
                self._index.move_to_end(key)
                touch = now - entry[1] > TOUCH_EVERY_S
                if touch:
                    self._index[key] = (entry[0], now)
        if touch:
            try:
                os.utime(path, (now, now))
            except OSError:
                pass
        self._evict()
        return data

    def _added(self, key: str, nbytes: int) -> None:
        with self._lock:
            self._load_index()
            old = self._index.pop(key, None)
            self._total += nbytes - (old[0] if old else 0)
            self._index[key] = (nbytes, time.time())
        self._evict()

    def _evict(self) -> None:
        """Remove least-recently-used thumbnails until the cache is under its cap (the newest always stays)."""
        victims = []
        with self._lock:
            while self._index and self._total > self.max_cache_bytes and len(self._index) > 1:
                key, (nbytes, _) = self._index.popitem(last=False)
                self._total -= nbytes
                victims.append(key)
        for key in victims:
            try:
                self.path_of(key).unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("could not remove thumbnail %s: %s", key, e)

    def _load_index(self) -> None:
        """Fill the index from the folder once (least recently used first, by mtime); called under the
        lock. Temporary files a killed writer left are removed here."""
        if self._index is not None:
            return
        entries = []
        for shard in _scandir(self.cache_dir):
            if not shard.is_dir(follow_symlinks=False):
                continue
            for entry in _scandir(Path(shard.path)):
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                    if entry.name.startswith(TEMP_PREFIX):
                        m = _OWNED_TEMP.match(entry.name)
                        if tag_gone(m.group(1), st.st_mtime) if m else time.time() - st.st_mtime > STALE_TEMP_S:
                            os.unlink(entry.path)
                        continue
                    if entry.name.endswith(".webp"):
                        entries.append((st.st_mtime, entry.name[:-5], st.st_size))
                except OSError:
                    continue
        entries.sort()
        self._index = OrderedDict((key, (nbytes, mtime)) for mtime, key, nbytes in entries)
        self._total = sum(nbytes for _, _, nbytes in entries)

    def _key_lock(self, key: str) -> _KeyLock:
        return _KeyLock(self, key)


class _KeyLock:
    """The lock of one key, dropped from the table when its last user leaves."""

    def __init__(self, owner: Thumbnails, key: str):
        self.owner, self.key = owner, key

    def __enter__(self) -> None:
        with self.owner._lock:
            slot = self.owner._key_locks.setdefault(self.key, [threading.Lock(), 0])
            slot[1] += 1
        slot[0].acquire()

    def __exit__(self, *exc) -> None:
        with self.owner._lock:
            slot = self.owner._key_locks[self.key]
            slot[0].release()
            slot[1] -= 1
            if slot[1] == 0:
                del self.owner._key_locks[self.key]


def _scandir(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError:
        return []


# -- drawing -----------------------------------------------------------------------------------------

def render(source: Path, size: int) -> bytes:
    """The WebP thumbnail of an image (its first frame) or a video (its first frame), the longest side at
    most `size`; InvalidInput when the file cannot be decoded or is too large to decode safely."""
    if source.suffix.lower() in VIDEO_SUFFIXES:
        picture = _video_frame(source)
        picture.thumbnail((size, size))
    else:
        picture = _image(source, size)
    out = io.BytesIO()
    picture.save(out, format="WEBP", quality=WEBP_QUALITY, method=WEBP_METHOD)
    return out.getvalue()


def _image(source: Path, size: int) -> Image.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as im:  # reads the header only
            w, h = im.size
            if im.format not in IMAGE_FORMATS:
                raise InvalidInput(f"unsupported image format {im.format}; thumbnails are made of PNG, JPEG and WebP")
            if w * h > MAX_PIXELS:  # before any pixel is decoded (Pillow's own guard is looser)
                raise InvalidInput(f"the image is too large to make a thumbnail safely ({w}×{h} pixels)")
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, still at least `size`
            picture = _displayable(im)
            picture.thumbnail((size, size), Image.Resampling.LANCZOS)
            method = _ORIENTATION.get(orientation)
            # a new image either way: closing the file leaves `im` itself unusable
            return picture.transpose(getattr(Image.Transpose, method)) if method else picture.copy()
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise InvalidInput("not a readable image (or too large to decode safely)") from None
    except (OSError, SyntaxError, ValueError):
        raise InvalidInput("the image is damaged or truncated") from None


def _displayable(im: Image.Image) -> Image.Image:
    """RGB, or RGBA where the picture has transparency; 16-bit greys scaled down instead of clipped."""
    if im.mode in ("RGB", "RGBA"):
        im.load()
        return im
    if im.mode.startswith("I;16") or im.mode == "I":
        return im.convert("I").point(lambda v: v * (1 / 256)).convert("L").convert("RGB")
    if im.mode in ("LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        return im.convert("RGBA")
    return im.convert("RGB")


def _video_frame(source: Path) -> Image.Image:
    import av

    try:
        with av.open(str(source), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise InvalidInput("the file has no video stream")
            stream = container.streams.video[0]
            w, h = stream.codec_context.width, stream.codec_context.height
            if w * h > MAX_PIXELS:
                raise InvalidInput(f"the video is too large to make a thumbnail safely ({w}×{h} pixels)")
            for n, packet in enumerate(container.demux(stream)):
                if n > MAX_VIDEO_PACKETS:
                    break
                for frame in packet.decode():
                    if frame.width * frame.height > MAX_PIXELS:
                        raise InvalidInput("the video is too large to make a thumbnail safely")
                    return frame.to_image()
    except InvalidInput:
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError):
        raise InvalidInput("not a readable video") from None
    raise InvalidInput("the video has no decodable frame")
