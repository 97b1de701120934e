"""Video and URL ingest as jobs: a video (uploaded, or downloaded from a URL with yt-dlp behind
the SSRF guard) becomes a few distinct frames from its whole length, which land as pending
images of the character (or of the project's unassigned pool, for the classifier or a person to
sort) with the time they were taken from."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from ..core.errors import InvalidInput
from ..core.jobs import JobCancelled, JobContext, JobRunner
from ..core.settings import Settings
from .images import ImageService
from .layout import DatasetLayout, clean_stem, mkstemp_umask

log = logging.getLogger("lora_studio.datasets.video_ingest")

VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ts", ".gif"}


class VideoIngest:
    def __init__(self, images: ImageService, characters, jobs: JobRunner, layout: DatasetLayout,
                 settings: Settings):
        self.images, self.characters, self.jobs, self.layout, self.settings = (
            images, characters, jobs, layout, settings)
        self.work_dir = settings.data_dir / "ingest"
        jobs.register("ingest_video", self._run_video)
        jobs.register("ingest_url", self._run_url)

    # -- requests ------------------------------------------------------------------------------
    def start_video(self, character_id: int | None, name: str, staged: Path, *, max_frames: int | None = None,
                    caption: str = "", project_id: int | None = None) -> dict:
        """Take over an uploaded video (a staged temporary file) and queue its ingest job; the
        frames (at most `max_frames`, None: the setting) go to the character, or (character_id
        None) to the project's unassigned pool."""
        try:
            target = self.images.target(character_id, project_id)
            suffix = Path(name).suffix.lower()
            if suffix not in VIDEO_SUFFIXES:
                raise InvalidInput(f"'{name[:100]}' does not look like a video ({', '.join(sorted(VIDEO_SUFFIXES))})")
            self.work_dir.mkdir(parents=True, exist_ok=True)
            kept = self.work_dir / f"{uuid.uuid4().hex}{suffix}"
            shutil.move(staged, kept)
        finally:
            staged.unlink(missing_ok=True)
        payload = {"character_id": character_id, "project_id": target.project_id, "video": str(kept),
                   "name": name[:200], "max_frames": self.settings.video_max_frames if max_frames is None else max_frames,
                   "caption": caption}
        return self.jobs.submit("ingest_video", payload, character_id=character_id)

    def start_url(self, character_id: int | None, url: str, *, max_frames: int | None = None, caption: str = "",
                  project_id: int | None = None) -> dict:
        """Queue the download of `url` (checked against the SSRF guard now, not in the job) and the
        ingest of its frames, as `start_video` does."""
        from .url_fetch import check_url

        target = self.images.target(character_id, project_id)
        check_url(url, self.settings.ingest_allowed_hosts)  # refused now, not in the job
        payload = {"character_id": character_id, "project_id": target.project_id, "url": url,
                   "max_frames": self.settings.video_max_frames if max_frames is None else max_frames, "caption": caption}
        return self.jobs.submit("ingest_url", payload, character_id=character_id)

    # -- jobs ----------------------------------------------------------------------------------
    def _run_video(self, ctx: JobContext) -> dict:
        p = ctx.payload
        video = Path(p["video"])
        try:
            return self._frames_to_pending(ctx, video, p, 0.0, 1.0, {"video": p["name"]})
        finally:
            video.unlink(missing_ok=True)

    def _run_url(self, ctx: JobContext) -> dict:
        from .url_fetch import FetchCancelled, fetch_video

        p = ctx.payload
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix="url-") as tmp:
            try:
                fetched = fetch_video(
                    p["url"], Path(tmp), max_bytes=self.settings.max_video_mb * 1024 * 1024,
                    max_duration_s=self.settings.url_max_duration_s,
                    allowed_extractors=list(self.settings.url_extractors) or None,
                    allowed_hosts=self.settings.ingest_allowed_hosts,
                    progress=lambda f, m: ctx.progress(0.5 * f, f"download: {m}"),
                    should_stop=ctx.cancelled)
            except FetchCancelled:
                raise JobCancelled() from None
            meta = {"video": fetched.title[:200], "url": fetched.webpage_url, "extractor": fetched.extractor}
            return self._frames_to_pending(ctx, fetched.path, p, 0.5, 0.5, meta)

    def _frames_to_pending(self, ctx: JobContext, video: Path, p: dict, base: float, span: float,
                           meta: dict) -> dict:
        from .frames import FrameExtractionCancelled, extract_frames

        try:
            frames = extract_frames(video, max_frames=p["max_frames"], max_side=self.settings.frame_max_side,
                                    progress=lambda f, m: ctx.progress(base + span * 0.95 * f, m),
                                    should_stop=ctx.stop_check())
        except FrameExtractionCancelled:
            raise JobCancelled() from None
        staging = self.layout.staging_dir()
        stem = clean_stem(meta.get("video") or "video", max_len=40)
        files = []
        try:
            for frame in frames:
                fd, name = mkstemp_umask(staging, prefix="frame-", suffix=".png")
                os.close(fd)
                tmp = Path(name)
                files.append((f"{stem}-{frame.time_s:08.2f}s.png", tmp,
                              {**meta, "time_s": round(frame.time_s, 3), "frame_reason": frame.reason}))
                frame.image.save(tmp, format="PNG")
        except BaseException:
            for _, tmp, _meta in files:
                tmp.unlink(missing_ok=True)
            raise
        result = self.images.add_files(p["character_id"], files, caption=p["caption"], source="video",
                                       project_id=p.get("project_id"))
        return {"frames": len(frames), "created": [i.id for i in result.created], "skipped": result.skipped}
