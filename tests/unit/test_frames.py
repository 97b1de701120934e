"""Frame extraction from whole videos: shot starts, spread samples, de-dup, cap, scaling, errors."""

from __future__ import annotations

import random
from pathlib import Path

import av
import numpy as np
import pytest
from lora_studio.core.errors import InvalidInput
from lora_studio.datasets.frames import FrameExtractionCancelled, VideoError, extract_frames
from lora_studio.datasets.phash import dhash, hamming
from PIL import Image
from support.videos import blend, encode_empty_video, encode_video, panning, pattern, pick_codec, render

A, B, C = pattern(1), pattern(2), pattern(3)
DISSOLVE = [(1 / 12, blend(A, B, (i + 1) / 13)) for i in range(12)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "three": encode_video(d / "three.mp4", [(2, A), (2, B), (2, C)]),
        # a cut through two blended frames (as field-blended telecine leaves them)
        "blended": encode_video(d / "blended.mp4", [(2, A), (1 / 12, blend(A, B, 1 / 3)),
                                                    (1 / 12, blend(A, B, 2 / 3)), (2, B)]),
        # A, a one-second dissolve to B (not a cut), then C, then a hard cut back to B
        "dissolve": encode_video(d / "dissolve.mp4", [(2, A), *DISSOLVE, (2, B), (1, C), (1, B)]),
        "shots": encode_video(d / "shots.mp4", [(1, panning(20 + i, speed=40)) for i in range(6)]),
        "pan": encode_video(d / "pan.mp4", [(8, panning(4, speed=20))]),
        "many": encode_video(d / "many.mp4", [(0.75, pattern(10 + i)) for i in range(10)]),
        "static": encode_video(d / "static.mp4", [(4, pattern(5))]),
        "wide": encode_video(d / "wide.mp4", [(1, A)], size=(320, 180)),
        "fade": encode_video(d / "fade.mp4", [(1, (0, 0, 0)), (2, C)]),
        # an elementary stream: no container, so no duration and no timestamps
        "raw": encode_video(d / ("pan.h264" if "264" in pick_codec() else "pan.m4v"), [(4, panning(6, speed=30))]),
        "ts": encode_video(d / "three.ts", [(2, A), (2, B), (2, C)]),
    }


def shows(frame, content) -> bool:
    """The frame is that picture (within codec error), not a neighbour or a blend."""
    w, h = frame.image.size
    want = render(content, 0, w, h).astype(np.int16)
    return float(np.abs(np.asarray(frame.image, dtype=np.int16) - want).mean()) < 12


def test_one_frame_per_shot_taken_just_after_each_cut(videos):
    frames = extract_frames(videos["three"])
    assert [f.reason for f in frames] == ["scene"] * 3  # samples inside a shot were duplicates
    t0, t1, t2 = (f.time_s for f in frames)
    assert t0 == 0 and 2.0 < t1 < 2.4 and 4.0 < t2 < 4.4
    assert [shows(f, c) for f, c in zip(frames, (A, B, C), strict=True)] == [True, True, True]
    for f in frames:
        assert f.image.mode == "RGB" and f.phash == dhash(f.image)


def test_shot_detection_alone_finds_the_cuts(videos):
    """Without samples, and decoding every frame: the frame right after each cut."""
    frames = extract_frames(videos["three"], samples=0, reference_frames_only=False)
    assert [(f.time_s, f.reason) for f in frames] == [(0.0, "scene"), (2.083, "scene"), (4.083, "scene")]
    assert extract_frames(videos["three"], samples=0, scene_threshold=1.01)[0].time_s == 0  # no cut counted
    assert len(extract_frames(videos["three"], samples=0, scene_threshold=1.01)) == 1


def test_blended_cut_frames_are_skipped(videos):
    frames = extract_frames(videos["blended"], samples=0, reference_frames_only=False)
    assert len(frames) == 2
    assert shows(frames[0], A)
    assert frames[1].time_s > 2.16 and shows(frames[1], B)  # B starts at 2.167


def test_dissolve_is_not_a_cut_and_shot_frames_win_over_samples(videos):
    frames = extract_frames(videos["dissolve"], samples=0)
    assert [f.time_s for f in frames] == [0.0, pytest.approx(5.1, abs=0.1), pytest.approx(6.1, abs=0.1)]
    assert [shows(f, c) for f, c in zip(frames, (A, C, B), strict=True)] == [True] * 3
    # samples saw B first (during its first appearance, 3-5 s); the shot frame of its return
    # stands for it, and the samples that duplicate it go
    frames = extract_frames(videos["dissolve"])
    b = dhash(Image.fromarray(render(B, 0, 160, 90)))
    as_b = [f for f in frames if hamming(f.phash, b) <= 6]
    assert [(f.reason, f.time_s > 6) for f in as_b] == [("scene", True)]


def test_samples_spread_over_the_whole_video(videos):
    frames = extract_frames(videos["pan"])  # 8 s of steady panning: no cut, every sample distinct
    times = [f.time_s for f in frames]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert len(frames) >= 10
    assert times[-1] - times[0] > 0.8 * 8 and times[-1] > 7
    assert [f.time_s for f in frames if f.reason == "scene"] == [0.0]  # motion is not a cut
    gaps = np.diff(times[1:])
    assert gaps.max() < 1.0  # evenly spaced, not bunched


def test_max_frames_cap_keeps_a_spread(videos):
    everything = extract_frames(videos["many"], max_frames=100)
    assert len(everything) >= 10
    capped = extract_frames(videos["many"], max_frames=4)
    assert len(capped) == 4
    times = [f.time_s for f in capped]
    assert times == sorted(times) and times[0] < 0.5 and times[-1] > 6.0
    assert len(extract_frames(videos["pan"], max_frames=3)) == 3
    assert len(extract_frames(videos["pan"], max_frames=1)) == 1


def test_cap_keeps_one_frame_per_shot_before_samples(videos):
    frames = extract_frames(videos["shots"], max_frames=100)  # 6 panning shots of 1 s
    assert sum(f.reason == "scene" for f in frames) == 6 and sum(f.reason == "sample" for f in frames) >= 6
    capped = extract_frames(videos["shots"], max_frames=6)
    assert [f.reason for f in capped] == ["scene"] * 6
    assert [int(f.time_s) for f in capped] == [0, 1, 2, 3, 4, 5]


def test_flash_cuts_closer_than_half_a_second_are_ignored(tmp_path):
    path = encode_video(tmp_path / "flashes.mp4", [(0.25, pattern(30 + i)) for i in range(8)])
    frames = extract_frames(path, samples=0, reference_frames_only=False)
    # cuts at 0.25 s intervals: 0.25 ignored, 0.5 taken (0.583), 0.75 and 1.0 ignored, 1.25 taken...
    assert [f.time_s for f in frames] == [0.0, 0.583, 1.333]


def test_frames_are_scaled_to_max_side(videos):
    for f in extract_frames(videos["wide"], max_side=100):
        assert f.image.size == (100, 56)
    assert {f.image.size for f in extract_frames(videos["three"])} == {(160, 90)}  # never enlarged


def test_anamorphic_video_gets_its_display_shape(tmp_path):
    import av

    path = tmp_path / "sar.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=12)
        stream.width, stream.height, stream.pix_fmt = 160, 90, "yuv420p"
        stream.codec_context.sample_aspect_ratio = 2  # pixels twice as wide as tall
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(render(A, 0, 160, 90), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert [f.image.size for f in extract_frames(path, max_side=100)] == [(100, 28)]


def test_near_duplicates_removed(videos):
    frames = extract_frames(videos["static"])
    assert len(frames) == 1 and frames[0].reason == "scene" and frames[0].time_s == 0
    # a looser threshold merges more: the panning samples collapse
    assert len(extract_frames(videos["pan"], dedupe_threshold=64)) == 1


def test_flat_frames_are_not_picked(videos):
    frames = extract_frames(videos["fade"])  # 1 s black, then a picture
    assert frames and all(shows(f, C) for f in frames)
    assert frames[0].time_s >= 1.0
    black = extract_frames(videos["fade"], samples=0, scene_threshold=1.01)  # nothing but the black opening
    assert len(black) == 1 and black[0].time_s == 0  # rather one frame than none


def test_stream_without_timestamps_or_duration(videos):
    frames = extract_frames(videos["raw"])
    times = [f.time_s for f in frames]
    assert len(frames) >= 6 and times == sorted(times)
    assert times[-1] - times[0] > 0.8 * times[-1]


def test_damaged_video_keeps_what_decodes(videos, tmp_path):
    data = videos["ts"].read_bytes()
    truncated = tmp_path / "truncated.ts"
    truncated.write_bytes(data[: len(data) * 6 // 10])
    frames = extract_frames(truncated)
    assert shows(frames[0], A) and shows(frames[-1], B) and all(f.time_s < 6 for f in frames)
    # garbage over shot B's packets: they fail to decode, decoding goes on to shot C
    with av.open(str(videos["three"])) as container:
        keys = [(float(p.pts * p.time_base), p.pos) for p in container.demux(video=0) if p.is_keyframe and p.size]
    b_start = next(pos for t, pos in keys if t >= 2) + 50
    c_start = next(pos for t, pos in keys if t >= 4)  # the encoders used put a key frame at each cut
    garbled = bytearray(videos["three"].read_bytes())
    garbled[b_start:c_start] = random.Random(1).randbytes(c_start - b_start)
    (tmp_path / "garbled.mp4").write_bytes(bytes(garbled))
    frames = extract_frames(tmp_path / "garbled.mp4")
    assert shows(frames[0], A) and shows(frames[-1], C) and frames[-1].time_s > 4


@pytest.mark.parametrize(("kind", "says"), [
    ("random", "is not a readable video"), ("text", "is not a video"), ("png", "is a still image"),
    ("empty", "has no decodable video frame"), ("missing", "no such file"),
    ("truncated_mp4", "is not a readable video"), ("audio", "has no video stream"),
])
def test_not_a_video(kind, says, videos, tmp_path):
    path = tmp_path / f"clip-{kind}.mp4"
    if kind == "random":
        path.write_bytes(random.Random(0).randbytes(20_000))
    elif kind == "text":
        path = tmp_path / "notes.txt"  # FFmpeg would render a .txt as a "video" of its text
        path.write_text("hello\n" * 200)
    elif kind == "png":
        path = tmp_path / "still.png"
        Image.new("RGB", (64, 48), (200, 30, 30)).save(path)
    elif kind == "empty":
        path = encode_empty_video(tmp_path / "empty.avi")
    elif kind == "truncated_mp4":  # index (moov) at the end, cut off
        path.write_bytes(videos["three"].read_bytes()[:3000])
    elif kind == "audio":
        path = tmp_path / "sound.wav"
        _write_wav(path)
    with pytest.raises(VideoError) as info:
        extract_frames(path)
    err = info.value
    assert isinstance(err, InvalidInput) and err.status == 400 and err.code == "invalid_video"
    assert err.message.startswith(path.name) and says in err.message


def _write_wav(path: Path) -> None:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 8000)


def test_bad_arguments(videos):
    for kwargs in ({"max_frames": 0}, {"max_side": 4}, {"samples": -1}, {"dedupe_threshold": -1},
                   {"scene_threshold": 0}):
        with pytest.raises(InvalidInput):
            extract_frames(videos["static"], **kwargs)


def test_progress_covers_the_video(videos):
    seen: list[tuple[float, str]] = []
    extract_frames(videos["pan"], progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(0.3 < f < 0.7 for f in fractions) and len(fractions) <= 102
    assert all(isinstance(m, str) and m for _, m in seen)


def test_should_stop_cancels(videos):
    with pytest.raises(FrameExtractionCancelled):
        extract_frames(videos["pan"], should_stop=lambda: True)
    reached: list[float] = []
    calls: list[int] = []

    def stop() -> bool:
        calls.append(1)
        return bool(reached) and reached[-1] > 0.3

    with pytest.raises(FrameExtractionCancelled):
        extract_frames(videos["pan"], progress=lambda f, m: reached.append(f), should_stop=stop,
                       reference_frames_only=False)
    assert len(calls) > 2 and reached[-1] < 0.6  # honoured mid-way, soon after it said so
