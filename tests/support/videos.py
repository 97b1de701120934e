"""Short test videos encoded with PyAV (no ffmpeg binary needed).

A scene is ``(seconds, content)``: content is an ``(r, g, b)`` colour (a solid frame), or a
function ``fn(t, width, height) -> ndarray`` (H×W×3 uint8) of the time ``t`` in seconds since the
scene started.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

Content = tuple[int, int, int] | Callable[[float, int, int], np.ndarray]


def pick_codec() -> str:
    """libx264 when PyAV's build has it (as real anime files are H.264), else MPEG-4 part 2;
    LORA_STUDIO_TEST_CODEC=mpeg4 forces the fallback."""
    import av

    forced = os.environ.get("LORA_STUDIO_TEST_CODEC")
    for name in ((forced,) if forced else ("libx264", "h264", "mpeg4")):
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
                return name
            except Exception:  # listed as a decoder only
                continue
    return "mpeg4"


def encode_video(path: Path, scenes: Sequence[tuple[float, Content]], size: tuple[int, int] = (160, 90),
                 fps: int = 12, codec: str | None = None) -> Path:
    """Encode the scenes one after the other (hard cuts) into ``path`` (the container follows the
    suffix: .mp4, .mkv, .ts…) and return it. Frame n shows time n / fps."""
    import av

    codec = codec or pick_codec()
    width, height = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        if codec in ("libx264", "h264"):
            stream.options = {"crf": "18", "preset": "veryfast"}
        else:
            stream.bit_rate = 4_000_000
        n = 0
        for seconds, content in scenes:
            for i in range(max(1, round(seconds * fps))):
                frame = av.VideoFrame.from_ndarray(render(content, i / fps, width, height), format="rgb24")
                frame.pts = n
                n += 1
                out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def render(content: Content, t: float, width: int, height: int) -> np.ndarray:
    if callable(content):
        arr = np.asarray(content(t, width, height), dtype=np.uint8)
        assert arr.shape == (height, width, 3), arr.shape
        return np.ascontiguousarray(arr)
    return np.broadcast_to(np.array(content, dtype=np.uint8), (height, width, 3)).copy()


def encode_empty_video(path: Path, size: tuple[int, int] = (160, 90), fps: int = 12) -> Path:
    """A container with a video stream and no frame in it (use a .avi path: MP4 and Matroska drop
    or refuse an empty track)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        out.start_encoding()
    return path


# ---- patterns (functions of t, width, height) ----------------------------------------------

def pattern(seed: int, cells: tuple[int, int] = (8, 6)) -> Callable[[float, int, int], np.ndarray]:
    """A static picture of random coloured blocks: distinct seeds give very different hashes."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 256, size=(cells[1], cells[0], 3), dtype=np.uint8)

    def fn(t: float, width: int, height: int) -> np.ndarray:
        ys = np.arange(height) * cells[1] // height
        xs = np.arange(width) * cells[0] // width
        return grid[ys][:, xs]

    return fn


def panning(seed: int, speed: float, cell: int = 10) -> Callable[[float, int, int], np.ndarray]:
    """A random block texture in a palette of its own (around a colour drawn from the seed),
    scrolling to the left at ``speed`` pixels per second: steady motion, no frame-to-frame cut,
    yet frames seconds apart look different."""
    rng = np.random.default_rng(seed)
    base = rng.integers(50, 206, size=3)
    tex = np.clip(base + rng.integers(-50, 51, size=(64, 256, 3)), 0, 255).astype(np.uint8)

    def fn(t: float, width: int, height: int) -> np.ndarray:
        ys = (np.arange(height) // cell) % tex.shape[0]
        xs = ((np.arange(width) + int(round(speed * t))) // cell) % tex.shape[1]
        return tex[ys][:, xs]

    return fn


def blend(a: Content, b: Content, alpha: float = 0.5) -> Callable[[float, int, int], np.ndarray]:
    """A cross-faded frame of two contents (what a field-blended cut frame looks like)."""

    def fn(t: float, width: int, height: int) -> np.ndarray:
        mixed = (1 - alpha) * render(a, t, width, height).astype(np.float32) \
            + alpha * render(b, t, width, height).astype(np.float32)
        return mixed.round().astype(np.uint8)

    return fn
