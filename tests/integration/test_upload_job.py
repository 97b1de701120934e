"""Image uploads are jobs: the request streams the files to a staging folder and answers 202 with
the job; the job places them with progress per file, reports what it skipped and why, and can be
cancelled (what was placed stays pending, the staged rest is removed)."""

from __future__ import annotations

import asyncio
import threading

from support.api import V1, finished, form, make_character, make_project
from support.images import image_bytes


def staged_folders(settings):
    staging = settings.effective_datasets_dir / ".staging"
    return [d for d in staging.iterdir() if d.name.startswith("upload-")] if staging.exists() else []


async def test_upload_answers_with_a_job_and_reports_per_file(client, settings):
    p = await make_project(client)
    c = await make_character(client, p["id"])
    good = [(f"{i}.png", image_bytes(seed=1000 + i), "image/png") for i in range(3)]
    bad = [("notes.png", b"plain text, not an image", "image/png"),
           ("cut.png", image_bytes(seed=1010)[:200], "image/png")]
    r = await client.post(f"{V1}/characters/{c['id']}/images", data=form(*good, *bad, good[0], caption="x"))
    assert r.status == 202, await r.text()
    job = await r.json()
    assert job["kind"] == "ingest_images" and job["character_id"] == c["id"]
    assert job["payload"]["project_id"] == p["id"] and len(job["payload"]["files"]) == 6
    job = await finished(client, job)
    assert job["status"] == "succeeded" and job["progress"] == 1.0, job
    assert job["message"] == "done"
    result = job["result"]
    assert [i["metadata"]["original_name"] for i in result["created"]] == ["0.png", "1.png", "2.png"]
    assert all(i["status"] == "pending" and i["caption"] == "x" for i in result["created"])
    reasons = [(s["filename"], s["reason"]) for s in result["skipped"]]
    assert [f for f, _ in reasons] == ["notes.png", "cut.png", "0.png"]
    assert "not a readable image" in reasons[0][1] and "damaged or truncated" in reasons[1][1]
    assert reasons[2][1] == f"exact duplicate of image {result['created'][0]['id']}"
    listed = (await (await client.get(f"{V1}/characters/{c['id']}/images")).json())["items"]
    assert [i["id"] for i in listed] == [i["id"] for i in result["created"]]
    assert staged_folders(settings) == []  # the staging folder went with the job


async def test_cancel_keeps_placed_images_and_removes_the_staged_rest(client, settings, monkeypatch):
    from lora_studio.datasets.images import ImageService

    adopt = ImageService._adopt
    calls, gate = [], threading.Event()

    def gated(self, *args, **kwargs):  # the second file waits until the test has asked to cancel
        calls.append(1)
        if len(calls) == 2:
            assert gate.wait(30)
        return adopt(self, *args, **kwargs)

    monkeypatch.setattr(ImageService, "_adopt", gated)
    p = await make_project(client)
    c = await make_character(client, p["id"])
    files = [(f"{i}.png", image_bytes(seed=1100 + i), "image/png") for i in range(6)]
    r = await client.post(f"{V1}/characters/{c['id']}/images", data=form(*files))
    assert r.status == 202
    job = await r.json()
    for _ in range(600):
        current = await (await client.get(f"{V1}/jobs/{job['id']}")).json()
        if current["progress"] > 0:
            break
        await asyncio.sleep(0.05)
    assert current["status"] == "running" and current["message"] == "1/6 files: 1 added, 0 skipped"
    assert len(staged_folders(settings)) == 1
    assert (await client.post(f"{V1}/jobs/{job['id']}/cancel")).status == 200
    gate.set()
    job = await finished(client, job)
    assert job["status"] == "cancelled", job
    assert len(job["result"]["created"]) == 2 and job["result"]["cancelled"] is True
    pending = (await (await client.get(f"{V1}/characters/{c['id']}/images")).json())["items"]
    assert [i["id"] for i in pending] == [i["id"] for i in job["result"]["created"]]
    root = settings.effective_datasets_dir
    assert all((root / i["rel_path"]).is_file() for i in pending)
    assert len(list((root / pending[0]["rel_path"]).parent.glob("*.png"))) == 2
    assert staged_folders(settings) == []


async def test_failed_requests_leave_no_staging_behind(make_client, settings):
    client = await make_client(settings)
    p = await make_project(client)
    c = await make_character(client, p["id"])
    r = await client.post(f"{V1}/characters/{c['id']}/images", data=form())  # no files
    assert r.status == 400
    r = await client.post(f"{V1}/characters/{c['id']}/images", json={"files": []})
    assert r.status == 415  # not multipart: refused before anything is staged
    r = await client.post(f"{V1}/characters/{c['id']}/images", data=form(("a.png", image_bytes(), "image/png"),
                                                                          caption="x" * 20000))
    assert r.status == 400
    assert staged_folders(settings) == []
    small = await make_client(max_upload_mb=1)  # same data folder: a file over the cap, after a good one
    r = await small.post(f"{V1}/characters/{c['id']}/images",
                         data=form(("ok.png", image_bytes(), "image/png"), ("big.png", b"\x89PNG" + b"\0" * (1 << 21),
                                                                           "image/png")))
    assert r.status == 413
    assert staged_folders(settings) == []
    assert (await (await client.get(f"{V1}/characters/{c['id']}/images?status=all")).json())["items"] == []


def test_staging_of_a_job_cancelled_before_it_ran_is_swept(settings):
    """A queued job cancelled before a worker took it never runs its clean-up: the sweep (at
    start-up and before each upload) removes its folder, and only folders nobody owns."""
    import os
    import time

    from lora_studio.core.db import Database
    from lora_studio.core.jobs import JobRunner
    from lora_studio.core.projects import ProjectService
    from lora_studio.datasets.images import ImageService
    from lora_studio.datasets.layout import DatasetLayout
    from lora_studio.datasets.upload_jobs import SWEEP_AFTER_S, ImageUploads

    db = Database(settings.effective_database_url)
    db.migrate()
    try:
        layout = DatasetLayout(settings.effective_datasets_dir)
        runner = JobRunner(db, lambda *_: None)  # never started: jobs stay queued
        uploads = ImageUploads(db, ImageService(db, layout), runner, layout)
        project = ProjectService(db).create("P")

        def staged() -> tuple:
            folder = uploads.new_staging()
            (folder / "upload-a").write_bytes(image_bytes())
            return folder, [("a.png", folder / "upload-a")]

        cancelled_folder, files = staged()
        job = uploads.start(None, cancelled_folder, files, project_id=project.id)
        queued_folder, files = staged()
        uploads.start(None, queued_folder, files, project_id=project.id)
        streaming, _ = staged()  # a request still writing its files
        stray = layout.staging_dir() / "upload-stray"  # e.g. left by a crash
        stray.mkdir()
        young = layout.staging_dir() / "upload-young"  # maybe another process streaming
        young.mkdir()
        old = time.time() - SWEEP_AFTER_S - 10
        os.utime(stray, (old, old))
        assert runner.cancel(job.id).status == "cancelled"
        removed = uploads.sweep()
        assert sorted(removed) == sorted([cancelled_folder.name, "upload-stray"])
        assert queued_folder.is_dir() and streaming.is_dir() and young.is_dir()
        uploads.discard(streaming)
        assert not streaming.exists()
    finally:
        db.dispose()
