"""Jobs: rows in the jobs table, run by a pool of threads; the training handler itself runs a
subprocess. Several runners (also on other machines) can share one PostgreSQL table: a job is
claimed with `FOR UPDATE SKIP LOCKED`, so each job runs once."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .db import Database, iso, utcnow
from .errors import Conflict, InvalidInput, NotFound, StudioError
from .host import EventSink
from .owners import process_gone
from .pagination import Page
from .schema import jobs

log = logging.getLogger("lora_studio.jobs")

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
INTERRUPTED = "interrupted by a restart of the studio"  # a job a dead process left running: its error starts so
FINISHED = ("succeeded", "failed", "cancelled")
JOB_EVENT = "lora_studio.job"


class JobCancelled(Exception):
    """Raised inside a handler (by `JobContext.check_cancelled`) to stop a job the user cancelled."""


@dataclass(frozen=True)
class Job:
    """A job as services pass it; the routes and the job events answer it as JSON, its fields in this order."""

    id: int
    kind: str  # the handler that runs it (train, classify, regenerate, …)
    status: str  # one of STATUSES
    progress: float  # 0..1
    message: str | None
    error: str | None
    payload: dict  # what the job was asked to do (JSON)
    result: dict | None  # what it made or how far it got (JSON; the handler's own shape)
    character_id: int | None
    cancel_requested: bool
    created_at: str  # ISO 8601, UTC
    started_at: str | None
    finished_at: str | None
    updated_at: str

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")


def job_record(row: Any) -> Job:
    return Job(id=row.id, kind=row.kind, status=row.status, progress=row.progress, message=row.message,
               error=row.error, payload=row.payload, result=row.result, character_id=row.character_id,
               cancel_requested=bool(row.cancel_requested), created_at=iso(row.created_at),
               started_at=iso(row.started_at), finished_at=iso(row.finished_at), updated_at=iso(row.updated_at))


@dataclass
class JobContext:
    job_id: int
    payload: dict
    runner: JobRunner

    def progress(self, fraction: float, message: str = "", result: dict | None = None) -> None:
        self.runner._update(self.job_id, progress=max(0.0, min(1.0, fraction)), message=message,
                            **({"result": result} if result is not None else {}))

    def cancelled(self) -> bool:
        with self.runner.db.begin() as conn:
            return bool(conn.execute(sa.select(jobs.c.cancel_requested).where(jobs.c.id == self.job_id)).scalar())

    def stop_check(self, interval: float = 0.5) -> Callable[[], bool]:
        """`cancelled`, asking the database at most every `interval` seconds (for tight loops)."""
        state = {"at": 0.0, "answer": False}

        def check() -> bool:
            now = time.monotonic()
            if not state["answer"] and now - state["at"] >= interval:
                state["at"], state["answer"] = now, self.cancelled()
            return state["answer"]

        return check

    def check_cancelled(self) -> None:
        if self.cancelled():
            raise JobCancelled()


Handler = Callable[[JobContext], dict | None]
# Cleans up after a job whose process died mid-run (found at start-up); returns the job's error
# text, e.g. what was done and what was removed (None: the generic INTERRUPTED).
OrphanHandler = Callable[[Job], str | None]


class JobRunner:
    def __init__(self, db: Database, emit: EventSink, workers: int = 2, poll_seconds: float = 1.0):
        self.db = db
        self.emit = emit
        self.workers = workers
        self.poll_seconds = poll_seconds
        self.handlers: dict[str, Handler] = {}
        self.limits: dict[str, int] = {}  # kind -> most jobs of that kind this process runs at once
        self.orphan_handlers: dict[str, OrphanHandler] = {}
        self._active: dict[str, int] = {}
        self._claim_lock = threading.Lock()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def register(self, kind: str, handler: Handler, concurrency: int | None = None,
                 on_orphan: OrphanHandler | None = None) -> None:
        """`concurrency`: at most this many jobs of `kind` run at once in this process (e.g. one
        training per GPU); the others stay queued until one finishes. `on_orphan`: clean up after a
        job of this kind that a dead process left running (see `fail_orphans`)."""
        self.handlers[kind] = handler
        if on_orphan is not None:
            self.orphan_handlers[kind] = on_orphan
        if concurrency is not None:
            self.limits[kind] = max(1, int(concurrency))

    # -- queries -------------------------------------------------------------------------------
    def submit(self, kind: str, payload: dict, character_id: int | None = None) -> Job:
        if kind not in self.handlers:
            raise InvalidInput(f"unknown job kind {kind!r}")
        now = utcnow()
        with self.db.begin() as conn:
            job_id = conn.execute(jobs.insert().values(
                kind=kind, status="queued", progress=0.0, message="queued", payload=payload,
                character_id=character_id, cancel_requested=False, created_at=now, updated_at=now,
            )).inserted_primary_key[0]
        job = self.get(job_id)
        self._emit(job)
        self._wake.set()
        return job

    def get(self, job_id: int) -> Job:
        with self.db.begin() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        return job_record(row)

    def list(self, status: str | None = None, kind: str | None = None, character_id: int | None = None,
             limit: int = 50, cursor: int | None = None) -> Page[Job]:
        if status is not None and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}")
        q = sa.select(jobs).order_by(jobs.c.id.desc()).limit(limit + 1)
        if status:
            q = q.where(jobs.c.status == status)
        if kind:
            q = q.where(jobs.c.kind == kind)
        if character_id is not None:
            q = q.where(jobs.c.character_id == character_id)
        if cursor is not None:
            q = q.where(jobs.c.id < cursor)
        with self.db.begin() as conn:
            rows = conn.execute(q).all()
        items = [job_record(r) for r in rows[:limit]]
        return Page(items, str(items[-1].id) if len(rows) > limit else None)

    def cancel(self, job_id: int) -> Job:
        now = utcnow()
        with self.db.begin() as conn:
            row = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).first()
            if row is None:
                raise NotFound(f"job {job_id} does not exist")
            if row.status == "queued":
                conn.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.status == "queued").values(
                    status="cancelled", cancel_requested=True, message="cancelled before it started",
                    finished_at=now, updated_at=now))
            elif row.status == "running":
                conn.execute(jobs.update().where(jobs.c.id == job_id).values(cancel_requested=True, updated_at=now))
        job = self.get(job_id)
        self._emit(job)
        return job

    def _emit(self, job: Job) -> None:
        self.emit(JOB_EVENT, asdict(job))  # the host sends events as JSON

    # -- running -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        self.fail_orphans()
        self._stop.clear()
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"lora-studio-job-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def fail_orphans(self) -> list[Job]:
        """Jobs a dead process of this host left running will never finish: mark them failed, then
        let their kind clean up what they left (its `on_orphan` also words the error). Safe to call
        again and from several processes at once: each orphan is failed once. Returns them."""
        with self.db.begin() as conn:
            rows = conn.execute(sa.select(jobs.c.id, jobs.c.worker, jobs.c.started_at)
                                .where(jobs.c.status == "running")).all()
        failed = []
        for row in rows:
            if not worker_gone(row.worker or "", row.started_at):
                continue
            now = utcnow()
            with self.db.begin() as conn:  # `worker` unchanged: nobody failed (or re-ran) it meanwhile
                done = conn.execute(jobs.update().where(jobs.c.id == row.id, jobs.c.status == "running",
                                                        jobs.c.worker == row.worker).values(
                    status="failed", error=f"{INTERRUPTED} (it stopped while this job ran)", message="interrupted",
                    finished_at=now, updated_at=now))
            if done.rowcount != 1:
                continue
            job = self.get(row.id)
            cleanup = self.orphan_handlers.get(job.kind)
            if cleanup is not None:
                try:
                    error = cleanup(job)
                except Exception:  # the job is failed already; what it left is swept later
                    log.exception("could not clean up after interrupted job %s (%s)", job.id, job.kind)
                else:
                    if error:
                        self._update(job.id, error=error)
            log.warning("job %s (%s) was interrupted by a restart: marked failed", job.id, job.kind)
            job = self.get(row.id)
            self._emit(job)
            failed.append(job)
        return failed

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._claim()
            except Exception:  # database briefly unavailable: try again later
                log.exception("could not claim a job")
                job = None
            if job is None:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            self._run(job)

    def run_now(self, job_id: int) -> Job:
        """Run one queued job in the calling thread (the command line's foreground run); returns it finished."""
        now = utcnow()
        with self._claim_lock:
            with self.db.begin() as conn:
                done = conn.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.status == "queued").values(
                    status="running", started_at=now, updated_at=now, worker=self.worker_id, message="started"))
                if done.rowcount != 1:
                    raise Conflict(f"job {job_id} is not queued")
                row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
            self._active[row.kind] = self._active.get(row.kind, 0) + 1
        self._run(row)
        return self.get(job_id)

    def _claim(self) -> Any:
        with self._claim_lock:  # so two threads cannot both take the last slot of a limited kind
            row = self._claim_unlocked()
            if row is not None:
                self._active[row.kind] = self._active.get(row.kind, 0) + 1
            return row

    def _claim_unlocked(self) -> Any:
        kinds = [k for k in self.handlers if self._active.get(k, 0) < self.limits.get(k, self.workers)]
        if not kinds:
            return None
        with self.db.begin() as conn:
            q = (sa.select(jobs).where(jobs.c.status == "queued", jobs.c.kind.in_(kinds))
                 .order_by(jobs.c.id).limit(1))
            if self.db.is_postgres:
                q = q.with_for_update(skip_locked=True)
            row = conn.execute(q).first()
            if row is None:
                return None
            now = utcnow()
            done = conn.execute(jobs.update().where(jobs.c.id == row.id, jobs.c.status == "queued").values(
                status="running", started_at=now, updated_at=now, worker=self.worker_id, message="started"))
            if done.rowcount != 1:
                return None
        return row

    def _run(self, row: Any) -> None:
        try:
            self._run_claimed(row)
        finally:
            with self._claim_lock:
                self._active[row.kind] -= 1
            self._wake.set()  # a job of this kind may be waiting for the slot

    def _run_claimed(self, row: Any) -> None:
        ctx = JobContext(job_id=row.id, payload=row.payload, runner=self)
        self._emit(self.get(row.id))
        try:
            result = self.handlers[row.kind](ctx)
        except JobCancelled:
            self._finish(row.id, "cancelled", message="cancelled")
        except StudioError as e:
            self._finish(row.id, "failed", error=e.message)
        except Exception as e:  # keep the worker alive; the job carries the reason
            log.exception("job %s (%s) failed", row.id, row.kind)
            self._finish(row.id, "failed", error=f"{type(e).__name__}: {e}")
        else:
            self._finish(row.id, "succeeded", message="done", result=result, progress=1.0)

    def _finish(self, job_id: int, status: str, **values: Any) -> None:
        try:
            self._update(job_id, status=status, finished_at=utcnow(), **values)
        except Exception:  # the database went away (shutdown): the start-up orphan check fails it later
            log.exception("could not record the end of job %s", job_id)

    def _update(self, job_id: int, **values: Any) -> None:
        with self.db.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(updated_at=utcnow(), **values))
        self._emit(self.get(job_id))


def worker_gone(worker: str, started_at: datetime | None = None) -> bool:
    """Whether the process named `worker` ("host:pid", as runners record it) is known to be dead
    (see `process_gone`); a worker of another host is never known to be gone."""
    name, _, pid = worker.rpartition(":")
    return name == socket.gethostname() and pid.isdigit() and process_gone(int(pid), started_at)
