"""Files the studio writes get the permissions of any other new file (0666/0777 less the umask),
not mkstemp's 0600: datasets, captions and LoRAs are read by other tools (kohya, another user's
ComfyUI). A strict umask (077) is respected."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from lora_studio.datasets.layout import atomic_write_bytes, mkstemp_umask

UMASKS = [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)]


@pytest.fixture
def umask():
    """Set the process umask for one test (restored afterwards)."""
    old = os.umask(0o022)
    try:
        yield lambda value: os.umask(value)
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), UMASKS, ids=["umask022", "umask077", "umask002"])
def test_temporary_and_atomic_files_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    fd, name = mkstemp_umask(tmp_path, prefix="up-", suffix=".png")
    os.close(fd)
    assert Path(name).parent == tmp_path and Path(name).name.startswith("up-") and name.endswith(".png")
    assert mode(Path(name)) == file_mode
    with pytest.raises(FileExistsError):  # created exclusively: never someone else's file
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    target = tmp_path / "new" / "folder" / "a.txt"
    atomic_write_bytes(target, b"caption")
    assert target.read_bytes() == b"caption" and mode(target) == file_mode
    assert mode(target.parent) == dir_mode and mode(target.parent.parent) == dir_mode
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]  # no temporary name left


def test_temporary_names_do_not_collide(tmp_path):
    names = set()
    for _ in range(200):
        fd, name = mkstemp_umask(tmp_path)
        os.close(fd)
        names.add(name)
    assert len(names) == 200


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), UMASKS[:2], ids=["umask022", "umask077"])
def test_training_cache_entries_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    from lora_studio.training.cache import _write_atomic

    umask(mask)
    path = tmp_path / "cache" / "entry.safetensors"
    _write_atomic(path, b"x" * 10)
    assert path.read_bytes() == b"x" * 10 and mode(path) == file_mode and mode(path.parent) == dir_mode
    assert [p.name for p in path.parent.iterdir()] == ["entry.safetensors"]
