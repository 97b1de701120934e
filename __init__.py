"""LoRA Studio — ComfyUI entry point.

ComfyUI imports this folder as a package named after its path (the folder may be called
`lora-studio`, `ComfyUI-LoRA-Studio`, …), so everything inside uses relative imports. Loading is
cheap: no torch/diffusers/peft/transformers/yt_dlp here; the Studio (database, job runner) is
built in a background thread, and routes wait for it.
"""

from __future__ import annotations

import sys

WEB_DIRECTORY = "./web/comfyui"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]

if __package__:  # imported as a package: by ComfyUI (named after the folder), or installed as lora_studio
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # loaded by path as a lone module (pytest sets up the repository's root this way when the clone's folder
    # name is not a Python name, e.g. `lora-studio`): there is no package to import from, and nothing to register
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}


def _inside_comfyui() -> bool:
    """ComfyUI has imported its `server` and `folder_paths` before it loads custom nodes; we only
    look at what is already loaded (importing a module called `server` could pick up anything)."""
    server = sys.modules.get("server")
    return sys.modules.get("folder_paths") is not None and getattr(getattr(server, "PromptServer", None),
                                                                   "instance", None) is not None


if __package__ and _inside_comfyui():
    from .comfyui_host import attach

    attach()
