"""The job runner: claim, progress, failure, cancel, and several runners sharing one table."""

from __future__ import annotations

import threading
import time

from lora_studio.core.db import Database
from lora_studio.core.errors import InvalidInput
from lora_studio.core.jobs import JobRunner


def wait_for(runner, job_id, statuses=("succeeded", "failed", "cancelled"), timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = runner.get(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} stayed {runner.get(job_id)['status']}")


def make_db(settings):
    db = Database(settings.effective_database_url)
    db.migrate()
    return db


def test_jobs_run_report_progress_and_fail_cleanly(settings):
    db = make_db(settings)
    events = []
    runner = JobRunner(db, lambda e, d: events.append((e, d["status"], d["progress"])), workers=1, poll_seconds=0.05)

    def ok(ctx):
        ctx.progress(0.5, "half way")
        return {"answer": ctx.payload["x"] * 2}

    def bad(ctx):
        raise InvalidInput("the input was wrong")

    def crash(ctx):
        raise RuntimeError("boom")

    runner.register("ok", ok)
    runner.register("bad", bad)
    runner.register("crash", crash)
    runner.start()
    try:
        a = runner.submit("ok", {"x": 21})
        b = runner.submit("bad", {})
        c = runner.submit("crash", {})
        assert wait_for(runner, a.id).result == {"answer": 42}
        assert wait_for(runner, b.id).error == "the input was wrong"
        assert wait_for(runner, c.id).error == "RuntimeError: boom"
    finally:
        runner.stop()
        db.dispose()
    statuses = [(s, p) for e, s, p in events if e == "lora_studio.job"]
    assert ("running", 0.5) in statuses and ("succeeded", 1.0) in statuses


def test_cancel_queued_and_running(settings):
    db = make_db(settings)
    runner = JobRunner(db, lambda e, d: None, workers=1, poll_seconds=0.05)
    started = threading.Event()

    def slow(ctx):
        started.set()
        while True:
            ctx.check_cancelled()
            time.sleep(0.02)

    runner.register("slow", slow)
    runner.start()
    try:
        running = runner.submit("slow", {})
        queued = runner.submit("slow", {})
        assert started.wait(10)
        assert runner.cancel(queued.id).status == "cancelled"
        runner.cancel(running.id)
        assert wait_for(runner, running.id).status == "cancelled"
        time.sleep(0.2)
        assert runner.get(queued.id).status == "cancelled"  # never started
    finally:
        runner.stop()
        db.dispose()


def test_several_runners_share_one_table_and_run_each_job_once(settings):
    runs: list[int] = []
    lock = threading.Lock()

    def record(ctx):
        with lock:
            runs.append(ctx.job_id)
        time.sleep(0.01)

    dbs = [make_db(settings) for _ in range(3)]
    runners = [JobRunner(db, lambda e, d: None, workers=2, poll_seconds=0.02) for db in dbs]
    for r in runners:
        r.register("work", record)
    ids = [runners[0].submit("work", {"i": i}).id for i in range(30)]
    for r in runners:
        r.start()
    try:
        for job_id in ids:
            assert wait_for(runners[0], job_id).status == "succeeded"
    finally:
        for r in runners:
            r.stop()
        for db in dbs:
            db.dispose()
    assert sorted(runs) == sorted(ids)  # each exactly once
