"""How fast frame extraction gets through a video, against a naive full decode.

Encodes (untimed) a H.264 video of anime-like shots (flat-coloured cels with line art and a shading
gradient, panning, a moving shape, light grain, hard cuts every few seconds), then times, in the
same run and interleaved (``--runs`` rounds, medians shown):

- ``extract_frames`` on it, as the ingest job runs it (reference frames decoded, scene detection,
  samples, de-dup, cap), and the same decoding every frame (``reference_frames_only=False``);
- the baseline a naive implementation is: decode every frame and convert each to a full-size RGB
  ndarray (once with PyAV's default threading, once with ``thread_type = "AUTO"``).

Prints wall and CPU seconds, video frames and video seconds got through per wall second, and the
ratios extract / baseline. ``--video FILE`` measures a file of your own instead.

usage: python benchmarks/ingest.py [--seconds 60 --width 1920 --height 1080] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np


def encode(path: Path, seconds: float, width: int, height: int, fps: int, scene_s: float) -> int:
    """Encode the benchmark video; returns its frame count."""
    import av

    rng = np.random.default_rng(7)
    codec = next((c for c in ("libx264", "h264") if c in av.codecs_available), "mpeg4")
    n_frames = round(seconds * fps)
    pan = max(8, width // 8)  # pixels a background pans over one shot
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        if codec == "mpeg4":
            stream.bit_rate = 8_000_000
        else:
            stream.options = {"preset": "veryfast", "crf": "23"}  # B-frames, CABAC: like real releases
        bg = None
        shot_len = max(1, round(scene_s * fps))
        # film grain from a small pool (so generating it is cheap), changing every frame
        grain = [rng.integers(-3, 4, size=(height, width, 1), dtype=np.int16) for _ in range(7)]
        for n in range(n_frames):
            i = n % shot_len
            if i == 0:  # a new shot, wider than the frame (it pans)
                bg = shot_background(rng, width + pan, height)
                colour = rng.integers(0, 256, 3, dtype=np.uint8)
            off = pan * i // shot_len
            img = np.ascontiguousarray(bg[:, off:off + width])
            cx, cy = (width // 4) + (width // 2) * i // shot_len, height // 2 + int(height / 6 * np.sin(i / 5))
            y0, x0 = max(0, cy - height // 5), max(0, cx - width // 16)
            img[y0:cy + height // 5, x0:cx + width // 16] = colour  # a "character" crossing the shot
            img[y0:cy + height // 5:max(2, height // 60), x0:cx + width // 16] = 20  # with line art
            img = (img + grain[n % len(grain)]).clip(0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = n
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return n_frames


def shot_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Flat colour areas under a vertical shading gradient, with dark line art, as cels look."""
    bands = rng.integers(30, 226, size=(12, 3)).astype(np.int16)
    bg = np.repeat(bands, -(-height // 12), axis=0)[:height, None, :].repeat(width, axis=1)
    for _ in range(24):
        x, y = int(rng.integers(0, width - 64)), int(rng.integers(0, height - 64))
        bg[y:y + int(rng.integers(16, height // 3)), x:x + int(rng.integers(16, width // 6))] = rng.integers(30, 226, 3)
    bg += np.linspace(-25, 25, height, dtype=np.float32).astype(np.int16)[:, None, None]
    for _ in range(300):
        x, y = int(rng.integers(0, width - 8)), int(rng.integers(0, height - 8))
        if rng.random() < 0.5:
            bg[y:y + 2, x:x + int(rng.integers(8, width // 5))] = 15
        else:
            bg[y:y + int(rng.integers(8, height // 4)), x:x + 2] = 15
    return bg


def probe(path: Path) -> tuple[int, float]:
    """(frame count, duration in seconds), by demuxing only."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        packets = [p for p in c.demux(s) if p.size]
        tb = float(s.time_base)
        ends = [(p.pts + (p.duration or 0)) * tb for p in packets if p.pts is not None]
        starts = [p.pts * tb for p in packets if p.pts is not None]
        return len(packets), (max(ends) - min(starts)) if ends else 0.0


def baseline(path: Path, thread_type: str | None) -> int:
    """Naive: every frame decoded and converted to a full-size RGB ndarray."""
    import av

    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if thread_type:
            s.thread_type = thread_type
        for frame in c.decode(s):
            frame.to_ndarray(format="rgb24")
            n += 1
    return n


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, fn's result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--width", type=int, default=1920)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--fps", type=int, default=24)
    ap.add_argument("--scene", type=float, default=4.0, help="seconds per shot")
    ap.add_argument("--runs", type=int, default=1, help="timed runs of each (the median is shown)")
    ap.add_argument("--quick", action="store_true", help="a 6 s 640×360 video")
    ap.add_argument("--video", type=Path, help="benchmark this file instead of encoding one")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.width, args.height = 6.0, 640, 360
    from lora_studio.datasets.frames import extract_frames  # imported before any timing

    with tempfile.TemporaryDirectory() as tmp:
        path = args.video
        if path is None:
            path = Path(tmp) / "bench.mp4"
            t = time.perf_counter()
            encode(path, args.seconds, args.width, args.height, args.fps, args.scene)
            print(f"encoded {args.seconds:g} s {args.width}×{args.height} @ {args.fps} fps in "
                  f"{time.perf_counter() - t:.1f} s (not timed below)")
        n_frames, duration = probe(path)
        print(f"video: {path.name}, {n_frames} frames, {duration:.2f} s; {os.cpu_count()} CPUs")
        cases: dict[str, Callable[[], object]] = {
            "extract_frames": lambda: len(extract_frames(path)),
            "extract_frames (all decoded)": lambda: len(extract_frames(path, reference_frames_only=False)),
            "baseline (default threads)": lambda: baseline(path, None),
            "baseline (thread_type AUTO)": lambda: baseline(path, "AUTO"),
        }
        walls: dict[str, list[float]] = {name: [] for name in cases}
        cpus: dict[str, list[float]] = {name: [] for name in cases}
        kept: dict[str, object] = {}
        for _ in range(args.runs):  # interleaved, so drift in machine load hits all alike
            for name, fn in cases.items():
                wall, cpu, kept[name] = timed(fn)
                walls[name].append(wall)
                cpus[name].append(cpu)

    print(f"extract_frames kept {kept['extract_frames']} frames (all decoded: {kept['extract_frames (all decoded)']})")
    print(f"{'':30s} {'wall s':>7s} {'CPU s':>7s} {'frames/s':>9s} {'video-s/s':>9s}   (median of {args.runs})")
    med = {name: statistics.median(ts) for name, ts in walls.items()}
    for name, s in med.items():
        cpu = statistics.median(cpus[name])
        print(f"{name:30s} {s:7.2f} {cpu:7.2f} {n_frames / s:9.1f} {duration / s:9.2f}")
    for name in ("extract_frames", "extract_frames (all decoded)"):
        for base in ("baseline (default threads)", "baseline (thread_type AUTO)"):
            print(f"ratio {name} / {base}: {med[base] / med[name]:.2f}x")


if __name__ == "__main__":
    main()
