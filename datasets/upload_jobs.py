"""Image uploads as jobs: the request streams each file to a staging folder of its own (inside the
dataset root, so placing a file is a rename) and answers with a job; the job checks, deduplicates
and places the files one by one with progress, and can be cancelled between files (the images
placed so far stay as pending, the staged rest is removed).

A staging folder lives as long as its job is queued or running. One whose job was cancelled before
it started, or whose process died (while the request streamed into it, or while its job ran), is
swept at start-up and before each new upload. A job a dead process left running is failed at
start-up with what it had placed and what was removed (`interrupted`)."""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import sqlalchemy as sa

from ..core.db import Database
from ..core.errors import InvalidInput
from ..core.jobs import INTERRUPTED, Job, JobCancelled, JobContext, JobRunner
from ..core.owners import owner_tag, tag_gone
from ..core.schema import jobs
from .images import ImageService
from .layout import DatasetLayout

log = logging.getLogger("lora_studio.datasets.upload_jobs")

KIND = "ingest_images"
PREFIX = "upload-"
SWEEP_AFTER_S = 600.0  # an unclaimed folder this old is a leftover (another process may be streaming into a newer one)
# A staging folder's name says which process made it (`staging_name`), so a folder whose process died,
# even between its mkdir and its first file, is swept at once at the next start-up or upload.
_OWNED = re.compile(rf"^{PREFIX}([0-9a-f]{{8}}-\d+)-[0-9a-f]{{32}}$")


def staging_name(pid: int | None = None) -> str:
    """`upload-<host>-<pid>-<random>`: a new staging folder's name, owned by this host's process `pid`."""
    return f"{PREFIX}{owner_tag(pid)}-{uuid.uuid4().hex}"


class ImageUploads:
    def __init__(self, db: Database, images: ImageService, jobs_: JobRunner, layout: DatasetLayout):
        self.db, self.images, self.jobs, self.layout = db, images, jobs_, layout
        self._streaming: set[str] = set()  # folders requests of this process are still writing
        self._lock = threading.Lock()
        jobs_.register(KIND, self._run, on_orphan=self._interrupted)

    # -- requests ------------------------------------------------------------------------------
    def new_staging(self) -> Path:
        """A fresh folder for one request's files (call `discard` if the request fails)."""
        self.sweep()
        folder = self.layout.staging_dir() / staging_name()
        folder.mkdir()
        with self._lock:
            self._streaming.add(folder.name)
        return folder

    def discard(self, folder: Path) -> None:
        with self._lock:
            self._streaming.discard(folder.name)
        shutil.rmtree(folder, ignore_errors=True)

    def start(self, character_id: int | None, folder: Path, files: list[tuple[str, Path]], caption: str = "",
              project_id: int | None = None) -> dict:
        """Queue the job for files streamed into `folder` (by `new_staging`): to the character, or
        (character_id None) to the project's unassigned pool. The folder belongs to the job now."""
        try:
            target = self.images.target(character_id, project_id)
            if len(caption) > 10000:
                raise InvalidInput("'caption' is too long (at most 10000 characters)")
            staged = [[name[:500], path.name] for name, path in files]
            if any(path.parent != folder for _, path in files):
                raise InvalidInput("staged files must be in the request's staging folder")
            job = self.jobs.submit(KIND, {"character_id": character_id, "project_id": target.project_id,
                                          "staging": folder.name, "files": staged, "caption": caption},
                                   character_id=character_id)
        except BaseException:
            self.discard(folder)
            raise
        with self._lock:
            self._streaming.discard(folder.name)
        return job

    # -- the job -------------------------------------------------------------------------------
    def _run(self, ctx: JobContext) -> dict:
        p = ctx.payload
        folder = self._folder(p["staging"])
        files = [(name, folder / stored) for name, stored in p["files"]]
        present = [f for f in files if f[1].is_file()]
        gone = [{"filename": name, "reason": "the staged file is gone"} for name, path in files if not path.is_file()]
        counts: dict[str, list] = {"created": [], "skipped": gone}
        stop = ctx.cancelled  # one small query per file: files take longer than that

        def on_file(done: int, total: int, created: list, skipped: list) -> None:
            counts["created"], counts["skipped"] = created, gone + skipped
            ctx.progress(done / total, f"{done}/{total} files: {len(created)} added, {len(skipped)} skipped")
            if done < total and stop():
                raise JobCancelled()

        try:
            if stop():
                raise JobCancelled()
            result = self.images.add_files(p["character_id"], present, caption=p.get("caption", ""),
                                           source="upload", project_id=p.get("project_id"), on_file=on_file)
            # the job's result is stored as JSON: the image records as the API answers them
            return {"created": [asdict(i) for i in result.created], "skipped": gone + result.skipped}
        except JobCancelled:
            # what was placed stays (pending); the job records it before it ends as cancelled
            ctx.progress(len(counts["created"] + counts["skipped"]) / max(len(files), 1),
                         f"cancelled: {len(counts['created'])} added before it stopped",
                         result={"created": [asdict(i) for i in counts["created"]], "skipped": counts["skipped"],
                                 "cancelled": True})
            raise
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _interrupted(self, job: Job) -> str:
        """After a crash: remove the job's staging folder and say what the job had done. Placing a
        file moves it out of the folder, so the payload's files no longer there were placed (or were
        never there); the rest, skipped ones included, are removed with the folder."""
        p = job.payload
        folder = self._folder(p["staging"])
        files = [stored for _name, stored in p["files"]]
        if not folder.is_dir():
            return f"{INTERRUPTED}: its staging folder was gone already (the images it placed stay pending)"
        left = sum((folder / stored).is_file() for stored in files)
        shutil.rmtree(folder, ignore_errors=True)
        placed = len(files) - left
        log.warning("upload job %s was interrupted: %d of %d files placed, %d staged files removed",
                    job.id, placed, len(files), left)
        return (f"{INTERRUPTED}: {placed} of {len(files)} images were placed (they stay pending), "
                f"{left} staged files removed")

    def _folder(self, name: str) -> Path:
        if not name.startswith(PREFIX) or "/" in name or "\\" in name or ".." in name:
            raise InvalidInput("bad staging folder in the job")
        return self.layout.staging_dir() / name

    # -- leftovers -----------------------------------------------------------------------------
    def sweep(self) -> list[str]:
        """Remove staging folders that no queued or running upload job owns and no request of
        this process is writing: at once when their job was cancelled before it ran or the process
        that made them is dead, else (perhaps another process's) once older than SWEEP_AFTER_S."""
        root = self.layout.staging_dir()
        folders = [d for d in root.iterdir() if d.is_dir() and d.name.startswith(PREFIX)]
        if not folders:
            return []
        with self.db.begin() as conn:
            live = {row.payload.get("staging") for row in conn.execute(
                sa.select(jobs.c.payload).where(jobs.c.kind == KIND,
                                                               jobs.c.status.in_(("queued", "running"))))}
            # cancelled before it started: its handler, which removes the folder, never ran
            never_ran = {row.payload.get("staging") for row in conn.execute(
                sa.select(jobs.c.payload).where(jobs.c.kind == KIND, jobs.c.status == "cancelled",
                                                jobs.c.started_at.is_(None)))}
        with self._lock:
            busy = live | self._streaming
        removed = []
        now = time.time()
        for d in folders:
            if d.name in busy:
                continue
            try:
                changed = max([d.stat().st_mtime] + [f.stat().st_mtime for f in d.iterdir()])
            except OSError:
                continue
            if d.name in never_ran or now - changed > SWEEP_AFTER_S or _owner_gone(d, changed):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d.name)
        if removed:
            log.info("removed %d leftover upload staging folder(s)", len(removed))
        return removed


def _owner_gone(folder: Path, mtime: float) -> bool:
    """Whether the process that made `folder` (its name says) is dead; unknown (another host, an older
    name) is not gone. `mtime`: the folder's last change, for a process that has this one's pid."""
    m = _OWNED.match(folder.name)
    return m is not None and tag_gone(m.group(1), mtime)
