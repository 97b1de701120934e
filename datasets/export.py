"""Export a character's approved images as a zip in the folder layout kohya sd-scripts reads:
`<repeats>_<trigger> <class>/` holding each image and its `.txt` caption."""

from __future__ import annotations

import os
import re
import tempfile
import time
import zipfile
from pathlib import Path

from ..core.errors import InvalidInput, NotFound
from .images import ImageService

KEEP_SECONDS = 3600  # exports are cache files: older ones are removed on the next export
_TOKEN = re.compile(r"^[\w][\w .-]{0,63}$", re.UNICODE)


def kohya_folder(repeats: int, trigger: str, class_token: str) -> str:
    if not 1 <= repeats <= 1000:
        raise InvalidInput("'repeats' must be between 1 and 1000")
    for name, value in (("trigger", trigger), ("class", class_token)):
        if not _TOKEN.match(value) or ".." in value:
            raise InvalidInput(f"'{name}' must be a short word (letters, digits, space, '.', '-', '_')")
    return f"{repeats}_{trigger} {class_token}"


def export_zip(images: ImageService, character: dict, out_dir: Path, repeats: int = 10,
               class_token: str = "person") -> Path:
    """Write the zip (stored, not deflated: images are compressed already) and return its path."""
    items = images.approved_items(character["id"])
    if not items:
        raise NotFound(f"{character['name']} has no approved images to export")
    folder = kohya_folder(repeats, character["trigger_word"] or character["slug"], class_token)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in out_dir.glob("*.zip"):
        if now - old.stat().st_mtime > KEEP_SECONDS:
            old.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".export-", suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for item in items:
                path = Path(item["image"])
                zf.write(path, f"{folder}/{path.name}")
                zf.writestr(f"{folder}/{path.with_suffix('.txt').name}", item["caption"])
        final = out_dir / f"{character['project_slug']}-{character['slug']}-{int(now)}.zip"
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final
