"""The base-model catalogue: which base models training can use, found in the host's model folders
(diffusers folders) and checkpoint folders (single-file `.safetensors`), how a name from that list
resolves to a file or folder (never a path out of every model folder), and what a model is (its
architecture, read cheaply: no torch in the studio process). The listing and the resolver agree:
a model is listed exactly when training accepts its name."""

from __future__ import annotations

import re
from pathlib import Path

from ..core.errors import InvalidInput, NotFound, StudioError
from ..core.host import Host


def is_diffusers_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "unet" / "config.json").is_file()


class BaseModels:
    """The base models of one host; the folders are asked anew on every call (ComfyUI's may change)."""

    def __init__(self, host: Host):
        self.host = host

    def listing(self) -> list[dict]:
        """Diffusers folders (a model_index.json or unet/config.json inside) in the model dirs, and
        single-file `.safetensors` checkpoints in the model dirs and ComfyUI's checkpoints folders."""
        found: dict[str, str] = {}
        for d in self.host.model_dirs():
            if not d.is_dir():
                continue
            for p in sorted(d.iterdir()):
                if p.name.startswith("."):
                    continue
                if p.is_dir() and is_diffusers_folder(p):
                    found.setdefault(p.name, "diffusers")
                elif p.is_file() and p.suffix.lower() == ".safetensors":
                    found.setdefault(p.name, "single_file")
        for d in self.host.checkpoint_dirs():
            if d.is_dir():  # named like ComfyUI lists them: the path below the folder, with '/'
                for p in sorted(d.rglob("*.safetensors")):
                    rel = p.relative_to(d)
                    if p.is_file() and not any(part.startswith(".") for part in rel.parts):
                        found.setdefault(rel.as_posix(), "single_file")
        # exactly what training accepts: the one resolver decides (a symlink out of every model folder is left out)
        return [{"name": n, "source": found[n]} for n in sorted(found) if self._accepts(n)]

    def names(self) -> list[str]:
        return [m["name"] for m in self.listing()]

    def _accepts(self, name: str) -> bool:
        try:
            self.resolve(name)
        except StudioError:
            return False
        return True

    def resolve(self, name: str) -> Path:
        """The file or folder of the model `name` from the list; 400 for a path, 404 when not found."""
        parts = name.replace("\\", "/").split("/")
        if not name.strip() or "\x00" in name or name.startswith(("/", "\\")) or any(p in ("", ".", "..") for p in parts) \
                or re.match(r"^[A-Za-z]:", name):
            raise InvalidInput("base_model must be a model name from the list (GET /models), not a path")
        roots = [(d, True) for d in self.host.model_dirs()] + [(d, False) for d in self.host.checkpoint_dirs()]
        # a model may be a symlink into another model folder (ComfyUI's extra_model_paths), never out of all of them
        allowed = [d.resolve() for d, _ in roots if d.is_dir()]
        for root, folders_too in roots:
            try:
                found = self._find_in(root, name, folders_too, allowed)
            except (OSError, RuntimeError):  # a name too long for the file system, a symlink loop
                raise InvalidInput(f"base_model cannot be resolved in {root.name}/ (too long, or a symlink loop); "
                                   "use a name from GET /models") from None
            if found is not None:
                return found
        where = ", ".join(str(d) for d in [*self.host.model_dirs(), *self.host.checkpoint_dirs()])
        raise NotFound(f"base model '{name}' was not found in {where}")

    @staticmethod
    def _find_in(root: Path, name: str, folders_too: bool, allowed: list[Path]) -> Path | None:
        """The model `name` inside `root` (None: not there); never a path that resolves outside the
        `allowed` folders (the configured model folders, resolved)."""
        if not root.is_dir():
            return None
        base = root.resolve()
        candidate = (base / name).resolve()
        if not any(candidate.is_relative_to(folder) for folder in allowed):  # a symlink out of the model folders
            return None
        if folders_too and candidate.is_dir():
            if is_diffusers_folder(candidate):
                return candidate
            raise InvalidInput(f"'{name}' is a folder but not a diffusers model (no model_index.json or "
                               "unet/config.json inside)")
        if candidate.is_file():
            if candidate.suffix.lower() != ".safetensors":
                raise InvalidInput(f"'{name}' is not a .safetensors checkpoint (pickled .ckpt files are not loaded)")
            return candidate
        return None

    @staticmethod
    def at_path(path: Path) -> Path:
        """A base model given as a path (the command line, on the user's own machine; requests only ever
        name models from the list): a checkpoint file or a diffusers folder, resolved; 404 otherwise."""
        resolved = path.resolve()
        if not (resolved.is_file() or (resolved.is_dir() and is_diffusers_folder(resolved))):
            raise NotFound(f"no checkpoint file or diffusers model folder at {path}")
        return resolved

    @staticmethod
    def detect(name: str, path: Path) -> dict:
        """{"arch", "prediction_type", "source"} read cheaply from the model (no torch); 400 when the
        model is not one the trainer can train (another architecture, a broken file)."""
        from .architecture import detect_model  # reads headers and JSON only: no torch in the studio process
        from .errors import TrainingError

        try:
            info = detect_model(path)
        except TrainingError as e:
            raise InvalidInput(f"base model '{name}' cannot be trained: {e}") from None
        except (OSError, ValueError) as e:
            raise InvalidInput(f"base model '{name}' cannot be read: {e}") from None
        return {"arch": info.arch, "prediction_type": info.prediction_type, "source": info.source}
