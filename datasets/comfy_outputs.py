"""Import images from ComfyUI's output folder into a character's queue (or the project's unassigned
pool), keeping the graph ComfyUI
embedded in each PNG (`prompt`: the API-format graph, `workflow`: the editor's graph) as metadata.
The output folder is only read: images are copied, never moved."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from ..core.errors import InvalidInput, StudioError
from .gallery import Gallery, GalleryFilters
from .images import ImageService
from .layout import mkstemp_umask

MAX_TEXT = 2 * 1024 * 1024  # a graph larger than this is not kept
BATCH = 50


def png_metadata(path: Path) -> dict:
    """The `prompt` and `workflow` text chunks of a ComfyUI PNG, parsed (absent ones left out)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            text = dict(getattr(im, "text", {}) or {})
    except Exception:  # not an image, truncated, a bomb: the import's own check reports it
        return {}
    out = {}
    for key in ("prompt", "workflow"):
        raw = text.get(key)
        if raw and len(raw) <= MAX_TEXT:
            try:
                out[key] = json.loads(raw)
            except ValueError:
                continue
    return out


def copy_to_staging(source: Path, staging: Path) -> Path:
    """Copy one output file into the staging folder (a copy of our own: the output folder may change
    under us). OSError when it is not there any more, is not a regular file or cannot be read."""
    # O_NONBLOCK: a FIFO put in place of the image must not hang the job (harmless for regular files)
    fd_in = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with open(fd_in, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file")
        fd, tmp = mkstemp_umask(staging, prefix="output-")
        try:
            with open(fd, "wb") as out:
                shutil.copyfileobj(src, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return Path(tmp)


def unreadable_reason(e: OSError) -> str:
    if isinstance(e, FileNotFoundError):
        return "the file is gone (removed after it was listed)"
    if isinstance(e, IsADirectoryError):
        return "not a regular file"
    if isinstance(e, PermissionError):
        return "the file cannot be read (permission denied)"
    return f"the file cannot be read ({e.strerror or type(e).__name__})"


def import_outputs(images: ImageService, gallery: Gallery, staging: Path, character_id: int | None,
                   paths: list[str] | None, progress: Callable[[float, str], None],
                   check_cancelled: Callable[[], None], project_id: int | None = None) -> dict:
    """Copy the given output images (relative paths as the gallery lists them; None: every image
    in the output folder) into the character's pending queue. Images the character already has
    (exactly or nearly), files that are not readable images and files that went away since they
    were listed are skipped and reported ({filename, reason}): one bad file never fails the job."""
    if paths is None:
        # the images (a video is no training image), oldest first
        paths = [item.path for item in gallery.list(limit=100000, filters=GalleryFilters(kind="image")).items][::-1]
    created, skipped = [], []
    for start in range(0, len(paths), BATCH):
        check_cancelled()
        batch: list[tuple[str, Path, dict]] = []
        try:
            for rel in paths[start:start + BATCH]:
                try:
                    source = gallery.file(rel)
                except StudioError as e:  # outside the folder, gone, not an image: report, go on
                    skipped.append({"filename": rel, "reason": e.message})
                    continue
                try:
                    tmp = copy_to_staging(source, staging)
                except OSError as e:  # removed or replaced since it was listed, unreadable: report, go on
                    skipped.append({"filename": rel, "reason": unreadable_reason(e)})
                    continue
                batch.append((rel, tmp, {"output_path": rel, **png_metadata(tmp)}))
        except BaseException:  # add_files consumes the copies; until then they are ours to remove
            for _, tmp, _meta in batch:
                tmp.unlink(missing_ok=True)
            raise
        result = images.add_files(character_id, batch, source="comfyui_output", project_id=project_id)
        created += [i.id for i in result.created]
        skipped += result.skipped
        done = min(start + BATCH, len(paths))
        progress(done / len(paths), f"{done}/{len(paths)} output images")
    return {"created": created, "skipped": skipped}


class OutputImports:
    """Starts and runs the `import_outputs` job."""

    def __init__(self, images: ImageService, characters, gallery: Gallery, jobs, layout):
        self.images, self.characters, self.gallery, self.jobs, self.layout = images, characters, gallery, jobs, layout
        jobs.register("import_outputs", self._run)

    def start(self, character_id: int | None, *, paths: Sequence[str] | None = None, all_: bool = False,
              project_id: int | None = None) -> dict:
        """Queue the import of `paths` (output images as the gallery lists them), or with `all_` of
        every image in the output folder: one of the two."""
        if bool(paths) == all_:
            raise InvalidInput("give either 'paths' (a non-empty list) or 'all': true")
        target = self.images.target(character_id, project_id)
        self.gallery.list(limit=1)  # 503 now, not in the job, when there is no output folder
        return self.jobs.submit("import_outputs", {"character_id": character_id, "project_id": target.project_id,
                                                   "paths": None if paths is None else list(paths)},
                                character_id=character_id)

    def _run(self, ctx) -> dict:
        p = ctx.payload
        return import_outputs(self.images, self.gallery, self.layout.staging_dir(), p["character_id"], p["paths"],
                              ctx.progress, ctx.check_cancelled, project_id=p.get("project_id"))
