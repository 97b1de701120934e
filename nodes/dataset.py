"""Save to Dataset: generated images go to a character's pending queue, with the graph that made them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.validation import check_text
from ..datasets.layout import mkstemp_umask
from .character import NO_CHARACTER, NO_PROJECT, _characters, _projects
from .context import choices, studio


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
    DESCRIPTION = "Adds the images to the character's pending review queue (with the graph as metadata) and passes them on."
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE",),
                "project": (choices(_projects, NO_PROJECT),),
                "character": (choices(_characters, NO_CHARACTER),),
                "caption": ("STRING", {"default": "", "multiline": True}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def run(self, images, project, character, caption, prompt=None, extra_pnginfo=None):
        import numpy as np

        check_text("caption", caption)  # text the databases can hold (the routes check theirs)
        s = studio()
        char = s.characters.find(project, character)
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
        text = f"{len(result['created'])} image(s) added to {char.name}'s queue"
        if result["skipped"]:
            text += f", {len(result['skipped'])} skipped"
        return {"ui": {"text": [text]}, "result": (images,)}
