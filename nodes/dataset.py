"""Save to Dataset: generated images go to a character's pending queue, with the graph that made them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.validation import check_text
from ..datasets.layout import mkstemp_umask
from .context import studio
from .labels import character_input, find_character
from .results import image_preview, plural, ui

MAX_PREVIEWS = 16  # images drawn on the node; the text counts them all


def _added(result) -> tuple[list, list]:
    """(created images, skipped files) of an add_files answer."""
    return result.created, result.skipped


def _png_with_metadata(array, path: Path, prompt, extra_pnginfo) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if prompt is not None:
        info.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        info.add_text(key, json.dumps(value))
    Image.fromarray(array).save(path, format="PNG", pnginfo=info, compress_level=4)


class SaveToDataset:
    CATEGORY = "LoRA Studio/datasets"
    DESCRIPTION = ("Adds the images to the character's pending review queue (with the graph as metadata), shows what "
                   "was added, and passes them on.")
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "character": character_input(),
                "caption": ("STRING", {"default": "", "multiline": True}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def run(self, images, character, caption, prompt=None, extra_pnginfo=None):
        import numpy as np

        check_text("caption", caption)  # text the databases can hold (the routes check theirs)
        s = studio()
        char = find_character(s, character)
        staging = s.layout.staging_dir()
        files = []
        for i, image in enumerate(images):
            array = np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8)
            fd, tmp = mkstemp_umask(staging, prefix="node-", suffix=".png")
            os.close(fd)
            _png_with_metadata(array, Path(tmp), prompt, extra_pnginfo)
            files.append((f"{char.slug}_{i:03d}.png", Path(tmp)))
        result = s.images.add_files(char.id, files, caption=caption, source="comfyui",
                                    meta={"prompt": prompt} if prompt is not None else {})
        created, skipped = _added(result)
        lines = [f"{plural(len(created), 'image')} added to {char.name}'s pending queue"]
        lines += [f"skipped {x['filename']}: {x['reason']}" for x in skipped]
        return {"ui": ui(lines, [image_preview(i.id) for i in created[:MAX_PREVIEWS]]), "result": (images,)}
