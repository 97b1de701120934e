"""What a node shows on the canvas when it has run: its `ui` answer, which ComfyUI sends to the editor with the
`executed` event (and again on a cache hit). `text` is a list of lines; `lora_studio_images` lists images by the
studio's own routes (dataset images, training samples), which web/comfyui/lora_studio_nodes.js draws on the
node: they are files of the studio, served by it, so no copy goes to ComfyUI's temp folder."""

from __future__ import annotations

from ..server_routes.api import PREFIX

UI_IMAGES = "lora_studio_images"


def image_preview(image_id: int) -> dict:
    return {"url": f"{PREFIX}/images/{int(image_id)}/file", "kind": "image", "id": int(image_id)}


def sample_preview(job_id: int, file: str) -> dict:
    return {"url": f"{PREFIX}/jobs/{int(job_id)}/samples/{file}", "kind": "sample", "job_id": int(job_id)}


def ui(text: str | list[str], images: list[dict] | None = None) -> dict:
    out: dict = {"text": [text] if isinstance(text, str) else list(text)}
    if images:
        out[UI_IMAGES] = images
    return out


def plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")
