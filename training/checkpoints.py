"""Resumable checkpoints on disk: ``<checkpoint_dir>/step-<n>/`` folders written atomically (a temp folder, then
a rename), the last few kept. What goes inside is the trainer's business (``write(folder)``); this module only
knows ``checkpoint.json`` (format and step) and that a complete checkpoint has ``state.pt``. Stdlib only."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import TrainingError

CHECKPOINT_FORMAT = 1
CHECKPOINT_KEEP = 2
CHECKPOINT_PREFIX = "step-"


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    meta: dict


def _read_checkpoint_meta(folder: Path) -> CheckpointInfo | None:
    try:
        meta = json.loads((folder / "checkpoint.json").read_text(encoding="utf-8"))
        step = int(meta["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if meta.get("format") != CHECKPOINT_FORMAT or not (folder / "state.pt").is_file():
        return None
    return CheckpointInfo(folder, step, meta)


def list_checkpoints(root: Path) -> list[CheckpointInfo]:
    """Complete ``step-<n>`` checkpoints under ``root``, oldest first (temp folders of a killed write are skipped)."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        if child.is_dir() and child.name.startswith(CHECKPOINT_PREFIX):
            info = _read_checkpoint_meta(child)
            if info is not None:
                found.append(info)
    return sorted(found, key=lambda info: info.step)


def find_checkpoint(path: Path) -> CheckpointInfo:
    """``path`` is a checkpoint folder, or a checkpoint_dir whose latest complete checkpoint is used."""
    info = _read_checkpoint_meta(path)
    if info is not None:
        return info
    found = list_checkpoints(path)
    if not found:
        raise TrainingError(f"resume_from has no usable checkpoint: {path}")
    return found[-1]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def write_checkpoint_atomic(root: Path, step: int, write: Callable[[Path], None], keep: int = CHECKPOINT_KEEP) -> Path:
    """``write(tmp_folder)`` fills a hidden temp folder, which is then renamed to ``step-<n>``; older
    checkpoints beyond the last ``keep`` are removed only after that. A kill at any point leaves the
    previous checkpoints intact (a stray temp folder is ignored by ``list_checkpoints`` and removed later)."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{CHECKPOINT_PREFIX}{step}"
    tmp = root / f".{CHECKPOINT_PREFIX}{step}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        write(tmp)
        for child in tmp.iterdir():
            _fsync_file(child)
        _fsync_dir(tmp)
        if final.exists():  # the same step written by an earlier (resumed-over) run
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def remove_stale_temp(root: Path) -> None:
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith(f".{CHECKPOINT_PREFIX}") and child.name.endswith(".tmp"):
                shutil.rmtree(child, ignore_errors=True)
