"""Output files as ComfyUI writes them (drawn in code): PNGs with the API graph in a `prompt` text chunk,
the editor's graph in `workflow` and the studio's own mark in `lora_studio`; animated WebPs with the same
in EXIF (SaveAnimatedWEBP); WebM videos with them as container tags (SaveWEBM)."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

from lora_studio.generation.graph import build_txt2img
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .images import draw


def graph(seed: int = 1, positive: str = "aiko, red hair, school uniform", negative: str = "blurry, lowres",
          lora: str | None = "moon-aiko-v1.safetensors", strength: float = 0.8, steps: int = 20, cfg: float = 7.0,
          prefix: str = "ComfyUI") -> dict:
    return build_txt2img(checkpoint="sd15.safetensors", positive=positive, negative=negative, sampler="euler",
                         scheduler="karras", steps=steps, cfg=cfg, width=512, height=512, seed=seed, lora_name=lora,
                         lora_strength=strength, filename_prefix=prefix)


def write_png(path: Path, *, seed: int = 1, mtime: float | None = None, character_id: int | None = None,
              texts: dict[str, str] | None = None, size: tuple[int, int] = (48, 48), **graph_args) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    chunks = {"prompt": json.dumps(graph(seed=seed, **graph_args)), "workflow": json.dumps({"nodes": [], "links": []})}
    if character_id is not None:
        chunks["lora_studio"] = json.dumps({"character_id": character_id, "kind": "txt2img"})
    chunks.update(texts or {})
    for key, value in chunks.items():
        info.add_text(key, value)
    draw(size, seed).save(path, format="PNG", pnginfo=info)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write_animated_webp(path: Path, *, seed: int = 1, mtime: float | None = None, **graph_args) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [draw((40, 30), seed + i) for i in range(3)]
    exif = Image.Exif()
    exif[0x0110] = "prompt:" + json.dumps(graph(seed=seed, **graph_args))
    exif[0x010F] = "workflow:" + json.dumps({"nodes": []})
    frames[0].save(path, format="WEBP", save_all=True, append_images=frames[1:], duration=100, exif=exif)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write_webm(path: Path, *, seed: int = 1, mtime: float | None = None, size: tuple[int, int] = (32, 24),
               **graph_args) -> Path:
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    with av.open(str(path), "w", format="webm") as out:
        out.metadata["prompt"] = json.dumps(graph(seed=seed, **graph_args))
        out.metadata["workflow"] = json.dumps({"nodes": []})
        stream = out.add_stream("libvpx-vp9", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, 8)
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path
