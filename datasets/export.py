"""Export a character's approved images as a zip in the folder layout kohya sd-scripts reads:
`<repeats>_<trigger> <class>/` holding each image and its `.txt` caption.

Each export is built into a temporary file of its own (concurrent exports of one character never
share a file) which the caller streams to the client and then removes (`Export.remove`)."""

from __future__ import annotations

import logging
import os
import re
import time
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..core.characters import Character, CharacterService
from ..core.errors import InvalidInput, NotFound
from .images import ImageService
from .layout import mkstemp_umask

log = logging.getLogger("lora_studio.datasets.export")

TEMP_PREFIX = ".export-"
STALE_SECONDS = 24 * 3600  # a temporary zip this old was left by a crash: removed by a later export
_TOKEN = re.compile(r"^[\w][\w .-]{0,63}$", re.UNICODE)


@dataclass(frozen=True)
class Export:
    path: Path  # the temporary zip: the caller's to stream and remove
    filename: str  # the name the download is saved under (may hold any Unicode letter)

    @property
    def content_disposition(self) -> str:
        """`attachment` with an ASCII `filename=` for old clients and the exact name as RFC 5987
        `filename*=UTF-8''…` (RFC 6266), which browsers prefer."""
        return f"attachment; filename=\"{ascii_filename(self.filename)}\"; filename*=UTF-8''{quote(self.filename, safe='')}"

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def ascii_filename(name: str) -> str:
    """`name` in ASCII letters, digits and '._-': accents dropped ('ï' → 'i'), anything else '_'."""
    out = []
    for ch in name:
        base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
        out.append(base if base and all(c.isalnum() or c in "._-" for c in base) else "_")
    return "".join(out)


def kohya_folder(repeats: int, trigger: str, class_token: str) -> str:
    if not 1 <= repeats <= 1000:
        raise InvalidInput("'repeats' must be between 1 and 1000")
    for name, value in (("trigger", trigger), ("class", class_token)):
        if not _TOKEN.match(value) or ".." in value:
            raise InvalidInput(f"'{name}' must be a short word (letters, digits, space, '.', '-', '_')")
    return f"{repeats}_{trigger} {class_token}"


class ExportService:
    """Zips of characters' approved sets, each in a temporary file of its own under `out_dir`."""

    def __init__(self, images: ImageService, characters: CharacterService, out_dir: Path):
        self.images, self.characters, self.out_dir = images, characters, out_dir

    def build(self, character_id: int, repeats: int = 10, class_token: str = "person") -> Export:
        """The character's zip: the caller sends it, then removes it (`Export.remove`)."""
        return export_zip(self.images, self.characters.get(character_id), self.out_dir, repeats, class_token)


def export_zip(images: ImageService, character: Character, out_dir: Path, repeats: int = 10,
               class_token: str = "person") -> Export:
    """Write the zip (stored, not deflated: images are compressed already) to a new temporary file
    in `out_dir` and return it; the caller removes it when it has been sent."""
    items = images.approved_items(character.id)
    if not items:
        raise NotFound(f"{character.name} has no approved images to export")
    folder = kohya_folder(repeats, character.trigger_word or character.slug, class_token)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(out_dir)
    fd, tmp = mkstemp_umask(out_dir, prefix=TEMP_PREFIX, suffix=".zip")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for item in items:
                zf.write(item.path, f"{folder}/{item.path.name}")
                zf.writestr(f"{folder}/{item.path.with_suffix('.txt').name}", item.caption)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Export(Path(tmp), f"{character.project_slug}-{character.slug}-{int(time.time())}.zip")


def remove_stale(out_dir: Path, older_than: float = STALE_SECONDS) -> None:
    """Remove zips left by a crash (or by versions that kept exports). Another export's file may
    vanish while this looks at it: that is fine, it is never an error."""
    now = time.time()
    for old in out_dir.glob("*.zip"):
        try:
            if now - old.stat().st_mtime > older_than:
                old.unlink(missing_ok=True)
        except OSError:
            continue
