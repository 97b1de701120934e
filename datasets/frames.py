"""Frames for a character dataset from a whole video: the first frame of each shot plus evenly
spaced samples, near duplicates dropped, at most ``max_frames``, scaled to ``max_side``.

One decoding pass with PyAV, in bounded memory. Every decoded frame is shrunk to 64×36 for
analysis; only the frames picked are converted at full size (as soon as they are picked, to a
picture no larger than ``max_side``). The difference between consecutive decoded frames is the
distance between their soft colour histograms (0: same colours, 1: none in common) plus twice the
mean grey-level difference less the previous frame's (ffmpeg's scene score: steady motion does not
add up), capped at 1. Above ``scene_threshold`` it is a cut: hard cuts score 0.45-1, pans and
dissolves under 0.25. The frame taken is the first after the cut that has stopped changing (a
field-blended cut frame is skipped; a shot that never settles is left to the samples). Flat frames
(black or white screens) are never taken unless the video has nothing else.

By default only reference frames (I/P) are decoded, which roughly halves decoding for H.264/HEVC
with B-frames; the frames picked are then the better-compressed ones too.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..core.errors import InvalidInput
from .phash import ImageHash, NearDuplicateIndex, compare

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("lora_studio.datasets.frames")

ANALYSIS_SIZE = (64, 36)
MIN_SHOT_S = 0.5  # a cut this soon after the last shot's frame is ignored (strobes, flashes)
SETTLE_FRAMES = 4  # decoded frames waited after a cut for one that has stopped changing
FLAT_STD = 3.0  # grey standard deviation (0-255) under which a frame counts as flat
MAX_DECODE_ERRORS = 50
STOP_CHECK_EVERY = 12  # frames between should_stop calls (it may query a database)
NOT_VIDEO_FORMATS = {"tty", "bin", "xbin", "adf", "idf"}  # FFmpeg renders text files as "video"


class VideoError(InvalidInput):
    """The file is not a video that can be decoded (not a video, corrupt, no frames)."""

    code = "invalid_video"


class FrameExtractionCancelled(Exception):
    """``should_stop`` returned True."""


@dataclass
class Frame:
    image: Image.Image  # RGB, longer side <= max_side
    time_s: float  # seconds from the start of the video
    reason: Literal["scene", "sample"]
    phash: int  # dhash of image (its structure)
    colour: bytes  # colour_signature of image: near duplicates must match in both

    @property
    def hash(self) -> ImageHash:
        return ImageHash(self.phash, self.colour)


def extract_frames(path: Path, *, max_frames: int = 20, max_side: int = 768, samples: int = 12,
                   scene_threshold: float = 0.35, dedupe_threshold: int = 6,
                   progress: Callable[[float, str], None] | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   reference_frames_only: bool = True) -> list[Frame]:
    """Pick up to ``max_frames`` distinct frames from the whole video, sorted by time."""
    import av

    if not 1 <= max_frames <= 1000:
        raise InvalidInput("max_frames must be between 1 and 1000")
    if not 16 <= max_side <= 8192:
        raise InvalidInput("max_side must be between 16 and 8192")
    if not 0 <= samples <= 1000 or dedupe_threshold < 0 or scene_threshold <= 0:
        raise InvalidInput("samples must be 0-1000, dedupe_threshold >= 0 and scene_threshold > 0")
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path.name}: no such file")
    scan = _Scan(max_frames, max_side, samples, scene_threshold, dedupe_threshold, progress, should_stop)
    for skip in ((True, False) if reference_frames_only else (False,)):
        try:
            with av.open(str(path)) as container:
                scan.start(container, path)
                scan.decode(container, skip_nonref=skip)
        except (av.FFmpegError, OSError) as e:  # opening, or a demuxer that gave up before any frame
            log.info("%s: cannot read as a video: %s", path.name, e)
            if not scan.frames_seen:
                raise VideoError(f"{path.name} is not a readable video "
                                 f"({getattr(e, 'strerror', None) or type(e).__name__})") from None
        if scan.frames_seen:
            break
    if not scan.frames_seen:
        raise VideoError(f"{path.name} has no decodable video frame")
    result = scan.select()
    scan.report(1.0, f"done: {len(result)} frames from {scan.frames_seen} decoded")
    return result


class _Scan:
    def __init__(self, max_frames: int, max_side: int, samples: int, scene_threshold: float,
                 dedupe_threshold: int, progress: Callable[[float, str], None] | None,
                 should_stop: Callable[[], bool] | None):
        self.max_frames, self.max_side, self.samples = max_frames, max_side, samples
        self.threshold, self.dedupe = scene_threshold, dedupe_threshold
        self.progress, self.should_stop = progress, should_stop
        self.frames_seen = 0
        self.shots: list[Frame] = []
        self.spread: dict[int, Frame] = {}  # sample slot -> frame
        self.fallback: Frame | None = None  # the first frame, in case every frame is flat
        self._reported = -1.0

    def start(self, container: Any, path: Path) -> None:
        fmt = container.format.name
        if fmt in NOT_VIDEO_FORMATS:
            raise VideoError(f"{path.name} is not a video")
        if fmt in ("image2", "image2pipe") or fmt.endswith("_pipe"):
            raise VideoError(f"{path.name} is a still image, not a video")
        if not container.streams.video:
            raise VideoError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        tb = stream.time_base
        self.origin = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
        if stream.duration and tb:
            self.duration: float | None = float(stream.duration * tb)
        elif container.duration:
            self.duration = container.duration / 1_000_000
        elif stream.frames and stream.average_rate:
            self.duration = float(stream.frames / stream.average_rate)
        else:
            self.duration = None  # progress then follows the byte position
        self.size = path.stat().st_size or 1
        self.rate = float(stream.average_rate or stream.guessed_rate or 24)
        sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
        self.sar = float(sar) if sar and float(sar) > 0 else 1.0

    def decode(self, container: Any, *, skip_nonref: bool) -> None:
        """One pass over the video stream, picking shot starts and samples as frames go by."""
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if skip_nonref:
            stream.codec_context.skip_frame = "NONREF"
        self.shots, self.spread, self.fallback = [], {}, None
        slots = [(k + 0.5) * self.duration / self.samples for k in range(self.samples)] if self.duration else []
        unknown_step = 0.25  # unknown length: keep a sample every step s, doubling step as needed
        prev_hist = prev_grey = None
        prev_mad: float | None = None
        last_shot, settle = -1e9, 0
        self._check_stop()
        for frame, pos in _decoded_frames(container, stream):
            if frame.time is None and skip_nonref and not self.frames_seen:
                return  # no timestamps (a raw stream): times come from counting frames, so decode all
            t = max(0.0, frame.time - self.origin) if frame.time is not None else self.frames_seen / self.rate
            hist, grey = _analyse(frame)
            usable = float(grey.std()) >= FLAT_STD and not frame.is_corrupt
            if prev_hist is None:  # the opening shot
                self.fallback = self._convert(frame, t, "scene")
                if usable:
                    self._add_shot(self.fallback)
                last_shot = t
            else:
                mad = float(abs(grey - prev_grey).mean()) / 255
                pixel = min(mad, abs(mad - prev_mad)) if prev_mad is not None else 0.0
                score = min(1.0, 0.5 * float(abs(hist - prev_hist).sum()) + 2 * pixel)
                prev_mad = mad
                if settle:  # after a cut: take the first frame that has stopped changing
                    settle -= 1
                    if score <= self.threshold / 2:
                        settle = 0
                        if usable:
                            self._add_shot(self._convert(frame, t, "scene"))
                            last_shot = t
                elif score > self.threshold and t - last_shot >= MIN_SHOT_S:
                    settle = SETTLE_FRAMES
            if usable and slots:
                k = bisect.bisect_right(slots, t) - 1
                if k >= 0 and k not in self.spread:
                    self.spread[k] = self._convert(frame, t, "sample")
            elif usable and self.samples and not self.duration and t >= len(self.spread) * unknown_step:
                self.spread[len(self.spread)] = self._convert(frame, t, "sample")
                if len(self.spread) > 2 * self.samples:  # keep every other one, twice as far apart
                    self.spread = dict(enumerate(list(self.spread.values())[::2]))
                    unknown_step *= 2
            prev_hist, prev_grey = hist, grey
            self.frames_seen += 1
            if self.frames_seen % STOP_CHECK_EVERY == 0:
                self._check_stop()
            if self.duration:
                self.report(0.98 * min(1.0, t / self.duration), f"decoding {t:.1f} s / {self.duration:.1f} s")
            elif pos is not None and pos >= 0:
                self.report(0.98 * min(1.0, pos / self.size), f"decoding {t:.1f} s")

    def _add_shot(self, cand: Frame) -> None:
        if any(compare(cand.hash, f.hash, self.dedupe) for f in self.shots):
            return  # the same picture as an earlier shot (cutting back and forth)
        self.shots.append(cand)
        if len(self.shots) > 2 * self.max_frames + 8:  # bounded memory: thin the densest stretch
            gaps = [b.time_s - a.time_s for a, b in zip(self.shots, self.shots[1:], strict=False)]
            del self.shots[1 + gaps.index(min(gaps))]

    def _convert(self, frame: Any, t: float, reason: Literal["scene", "sample"]) -> Frame:
        w, h = frame.width * self.sar, frame.height
        scale = min(1.0, self.max_side / max(w, h))
        size = max(1, round(w * scale)), max(1, round(h * scale))
        image = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA").to_image()
        h = ImageHash.of(image)
        return Frame(image=image, time_s=round(t, 3), reason=reason, phash=h.structure, colour=h.colour)

    def select(self) -> list[Frame]:
        """Shots first, then samples, near duplicates dropped; capped with a spread over time."""
        self.report(0.99, "selecting frames")
        index = NearDuplicateIndex(self.dedupe)
        spread = list(self.spread.values())
        if len(spread) > self.samples:  # unknown length: up to twice as many were kept
            spread = [spread[round(i * (len(spread) - 1) / max(1, self.samples - 1))] for i in range(self.samples)]
        kept = [f for f in [*self.shots, *spread] if index.add(f.hash)]
        if not kept and self.fallback is not None:
            kept = [self.fallback]
        return sorted(_spread_out(kept, self.max_frames), key=lambda f: f.time_s)

    def report(self, fraction: float, message: str) -> None:
        if self.progress is not None and (fraction >= self._reported + 0.01 or fraction >= 1.0):
            self._reported = fraction
            self.progress(fraction, message)

    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise FrameExtractionCancelled("frame extraction was cancelled")


def _decoded_frames(container: Any, stream: Any) -> Iterator[tuple[Any, int | None]]:
    """(frame, byte position) for each frame; undecodable packets are skipped (up to a limit), a
    demuxer error ends the stream early. What the decoder still holds is flushed either way."""
    import av

    packets, errors = container.demux(stream), 0
    while True:
        try:
            packet = next(packets, None)
        except av.FFmpegError as e:
            log.info("demuxing stopped: %s", e)
            packet = None
        if packet is None:
            break
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            errors += 1
            log.debug("undecodable packet: %s", e)
            if errors > MAX_DECODE_ERRORS:
                break
            continue
        for frame in frames:
            yield frame, packet.pos
    try:
        for frame in stream.codec_context.decode(None):
            yield frame, None
    except av.FFmpegError:
        pass  # already flushed by the end of the demuxer's packets
    if errors:
        log.warning("%d video packets could not be decoded", errors)


def _analyse(frame: Any) -> tuple[Any, Any]:
    """(soft 4×4×4 colour histogram, 64×36 grey array) of a frame, from a tiny rescale."""
    import numpy as np

    small = frame.reformat(width=ANALYSIS_SIZE[0], height=ANALYSIS_SIZE[1], format="rgb24",
                           interpolation="FAST_BILINEAR", threads=1).to_ndarray()
    grey = small.mean(axis=2, dtype=np.float32)
    # the histogram of a half-size (32×18) average is as telling and 6 times cheaper
    half = small.reshape(ANALYSIS_SIZE[1] // 2, 2, ANALYSIS_SIZE[0] // 2, 2, 3).mean(axis=(1, 3), dtype=np.float32)
    p = half.reshape(-1, 3) * np.float32(3 / 255)
    lo = np.minimum(p.astype(np.intp), 2)  # each channel falls between bin centres lo and lo + 1...
    up = p - lo  # ...this close to the upper one: its weight there, 1 - up below (trilinear)
    w = np.stack([1 - up, up], axis=2)
    weights = (w[:, 0, :, None, None] * w[:, 1, None, :, None] * w[:, 2, None, None, :]).reshape(-1, 8)
    bins = (lo @ np.array([16, 4, 1], dtype=np.intp))[:, None] + np.array([0, 1, 4, 5, 16, 17, 20, 21])
    hist = np.bincount(bins.ravel(), weights=weights.ravel(), minlength=64) / len(p)
    return hist, grey


def _spread_out(frames: list[Frame], n: int) -> list[Frame]:
    """At most n frames, chosen greedily to be as far apart in time as possible; a sample counts as
    half as far as a shot frame (each of which stands for a different shot)."""
    if len(frames) <= n:
        return frames
    by_time = sorted(frames, key=lambda f: f.time_s)
    chosen, rest = by_time[:1], by_time[1:]
    while len(chosen) < n:
        best = max(rest, key=lambda f: min(abs(f.time_s - c.time_s) for c in chosen)
                   * (1.0 if f.reason == "scene" else 0.5))
        rest.remove(best)
        chosen.append(best)
    return chosen
