"""Inside ComfyUI the worker gets ComfyUI's own CLIP tokenizer files (single-file checkpoints carry none),
found from ComfyUI's base path, so it works when the pack folder is a symlink that lives elsewhere."""

from __future__ import annotations

import types
from pathlib import Path

from lora_studio.comfyui_host import _sd1_tokenizer


def test_sd1_tokenizer_found_from_comfyui_base_path(tmp_path: Path) -> None:
    folder = tmp_path / "comfy" / "sd1_tokenizer"
    folder.mkdir(parents=True)
    fp = types.SimpleNamespace(base_path=str(tmp_path))
    assert _sd1_tokenizer(fp) is None  # an empty folder is not a tokenizer
    (folder / "vocab.json").write_text("{}")
    (folder / "merges.txt").write_text("#version: 0.2\n")
    assert _sd1_tokenizer(fp) == folder


def test_no_base_path_means_no_tokenizer_dir() -> None:
    assert _sd1_tokenizer(types.SimpleNamespace()) is None
