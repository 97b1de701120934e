"""On-disk layout: <root>/<project>/<character>/images/<name>.<ext> with <name>.txt captions beside
them (what kohya sd-scripts and OneTrainer read), <root>/<project>/_unassigned/images/ for images
waiting for a person (or the classifier) to give them a character, and path checks for anything
from a request."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from urllib.parse import unquote

from ..core.errors import InvalidInput
from ..core.owners import owner_tag

_UNSAFE = re.compile(r"[^\w.-]+", re.UNICODE)

# A project's unassigned pool. Character slugs never start with '_' or '.' (`core.text.slugify`
# strips them, and `images_dir` refuses them), so no character folder can be this one.
UNASSIGNED = "_unassigned"
TEMP_PREFIX = ".tmp-"  # `atomic_write_bytes`' temporary files: .tmp-<owner tag>-<random><suffix>


def safe_join(root: Path, *parts: str) -> Path:
    """`root`/parts, resolved; refuses anything that would land outside `root`."""
    for part in parts:
        if "\x00" in part:
            raise InvalidInput("path contains a NUL character")
    try:  # a symlink loop (RuntimeError), a name too long for the file system (OSError)
        root = root.resolve()
        path = root.joinpath(*parts).resolve()
    except (OSError, RuntimeError):
        raise InvalidInput("path cannot be resolved (too long, or a symlink loop)") from None
    if path != root and root not in path.parents:
        raise InvalidInput("path leaves its folder")
    return path


def clean_stem(filename: str, max_len: int = 60) -> str:
    """A file-name stem safe to use on disk, from a client-supplied name (path parts dropped)."""
    if "\x00" in filename:
        raise InvalidInput("file name contains a NUL character")
    base = unquote(filename).replace("\\", "/").rsplit("/", 1)[-1]  # clients may percent-encode names
    stem = base.rsplit(".", 1)[0] if "." in base else base
    stem = _UNSAFE.sub("_", re.sub(r"\.{2,}", "_", stem)).strip("._-")[:max_len]
    return stem or "image"


def mkstemp_umask(dir: str | os.PathLike, prefix: str = ".tmp-", suffix: str = "") -> tuple[int, str]:
    """`tempfile.mkstemp` (a new, unguessable name, created exclusively, opened read-write) with the
    permissions any other new file gets, 0666 less the umask, instead of mkstemp's 0600: these
    files are renamed into the dataset, the loras folder or a download, which other tools (kohya,
    another user's ComfyUI) read."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        path = os.path.join(dir, f"{prefix}{secrets.token_hex(8)}{suffix}")
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {dir}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same folder, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # the name says which process writes it: after a crash, the start-up reconcile removes it at once
    fd, tmp = mkstemp_umask(path.parent, prefix=f"{TEMP_PREFIX}{owner_tag()}-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def place_new(src: Path, dest: Path) -> None:
    """Move `src` to `dest` only if `dest` does not exist yet (atomically where the filesystem has
    hard links), so that two uploads of the same file never overwrite each other's file."""
    try:
        os.link(src, dest)
    except FileExistsError:
        raise
    except OSError:  # no hard links here: a narrow window, checked as well as we can
        if dest.exists():
            raise FileExistsError(dest) from None
        os.replace(src, dest)
        return
    src.unlink()


class DatasetLayout:
    def __init__(self, root: Path):
        self.root = root.resolve()

    def images_dir(self, project_slug: str, character_slug: str | None) -> Path:
        """A character's image folder; `None`: the project's unassigned pool."""
        if character_slug is None:
            return safe_join(self.root, project_slug, UNASSIGNED, "images")
        if not character_slug or character_slug[0] in "_.":
            raise InvalidInput(f"'{character_slug[:80]}' cannot name a character folder")
        return safe_join(self.root, project_slug, character_slug, "images")

    def staging_dir(self) -> Path:
        """Where uploads stream to before they are checked (same filesystem: rename is atomic)."""
        path = self.root / ".staging"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def abs_path(self, rel_path: str) -> Path:
        return safe_join(self.root, rel_path)

    def rel_path(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()
