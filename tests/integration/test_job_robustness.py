"""One bad item never fails a whole job (it is skipped and reported), and a studio killed during an
upload leaves nothing behind once it starts again (the interrupted job says what happened)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from lora_studio.app import STUDIO_KEY
from lora_studio.datasets.gallery import Gallery
from support.api import V1, finished, make_character, make_project, upload
from support.images import image_bytes


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def studio_of(client):
    return client.server.app[STUDIO_KEY].get()


async def run_job(client, method: str, url: str, **kwargs) -> dict:
    r = await client.request(method, url, **kwargs)
    assert r.status == 202, await r.text()
    return await finished(client, await r.json())


# -- import-outputs --------------------------------------------------------------------------------

async def test_import_outputs_skips_what_it_cannot_read(client, settings, tmp_path):
    out = settings.comfyui_output_dir
    out.mkdir(parents=True)
    (out / "good1.png").write_bytes(image_bytes(seed=31))
    (out / "good2.png").write_bytes(image_bytes(seed=32))
    (out / "truncated.png").write_bytes(image_bytes(seed=33)[:200])
    (out / "folder.png").mkdir()
    (out / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "secret.png").write_bytes(image_bytes(seed=34))
    (out / "outside.png").symlink_to(tmp_path / "secret.png")
    (out / "vanishing.png").write_bytes(image_bytes(seed=35))

    class RacingGallery(Gallery):
        """The real gallery, while another program removes one file just after it was checked."""

        def file(self, rel_path):
            path = super().file(rel_path)
            if rel_path == "vanishing.png":
                path.unlink()
            return path

    studio = studio_of(client)
    studio.output_imports.gallery = RacingGallery(out)
    p = await make_project(client)
    c = await make_character(client, p["id"])
    paths = ["good1.png", "truncated.png", "folder.png", "broken.png", "outside.png", "vanishing.png", "good2.png"]
    job = await run_job(client, "POST", f"{V1}/characters/{c['id']}/import-outputs", json={"paths": paths})
    assert job["status"] == "succeeded", job
    assert len(job["result"]["created"]) == 2
    reasons = {s["filename"]: s["reason"] for s in job["result"]["skipped"]}
    assert set(reasons) == set(paths) - {"good1.png", "good2.png"}
    assert "removed after it was listed" in reasons["vanishing.png"]
    assert "leaves its folder" in reasons["outside.png"]
    assert "damaged or truncated" in reasons["truncated.png"]
    assert not any((settings.data_dir / "datasets" / ".staging").glob("output-*"))  # no copy left behind
    assert (tmp_path / "secret.png").is_file()  # the output folder is only read


# -- reconcile -------------------------------------------------------------------------------------

async def test_reconcile_skips_links_out_of_the_dataset_and_other_bad_entries(client, settings, tmp_path):
    p = await make_project(client)
    c = await make_character(client, p["id"])
    other = await make_character(client, p["id"], name="Mei")
    recorded = (await upload(client, c["id"], ("kept.png", image_bytes(seed=40), "image/png")))["created"][0]
    root = settings.effective_datasets_dir
    folder = root / p["slug"] / c["slug"] / "images"
    (tmp_path / "elsewhere").mkdir()
    outside = tmp_path / "elsewhere" / "outside.png"
    outside.write_bytes(image_bytes(seed=41))
    (folder / "found.png").write_bytes(image_bytes(seed=42))
    (folder / "found.txt").write_text("a caption", encoding="utf-8")
    (folder / "link-out.png").symlink_to(outside)
    (root / "shared").mkdir()
    (root / "shared" / "x.png").write_bytes(image_bytes(seed=44))
    (folder / "link-in.png").symlink_to(root / "shared" / "x.png")  # inside the dataset root: adopted
    (folder / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "dir.png").mkdir()
    (folder / "bad.png").write_bytes(image_bytes(seed=43)[:100])
    (root / p["slug"] / other["slug"]).symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    # a recorded file replaced by a link out of the dataset: flagged missing, never followed
    kept = root / recorded["rel_path"]
    kept.unlink()
    kept.symlink_to(outside)

    # temporary caption files of atomic writes: a killed writer's go at once, a live one's stay
    from lora_studio.core.owners import owner_tag

    crashed, writing = f".tmp-{owner_tag(dead_pid())}-0a1b.txt", f".tmp-{owner_tag(os.getppid())}-0a1b.txt"
    for name in (crashed, writing, ".tmp-unowned.txt", ".tmp-unowned-old.txt"):
        (folder / name).write_text("half a caption")
    os.utime(folder / ".tmp-unowned-old.txt", (1e9, 1e9))

    job = await run_job(client, "POST", f"{V1}/datasets/reconcile")
    assert job["status"] == "succeeded", job
    prefix = f"{p['slug']}/{c['slug']}/images/"
    assert sorted(job["result"]["temporary_removed"]) == [prefix + crashed, prefix + ".tmp-unowned-old.txt"]
    assert (folder / writing).is_file() and (folder / ".tmp-unowned.txt").is_file()
    assert sorted(job["result"]["adopted"]) == [prefix + "found.png", prefix + "link-in.png"]
    reasons = {s["path"]: s["reason"] for s in job["result"]["skipped"]}
    assert reasons[prefix + "link-out.png"] == "a symbolic link that leads out of the dataset folder"
    assert reasons[prefix + "broken.png"] == "a broken symbolic link"
    assert reasons[prefix + "dir.png"] == "not a regular file"
    assert "damaged or truncated" in reasons[prefix + "bad.png"]
    assert "leads out of the dataset folder" in reasons[f"{p['slug']}/{other['slug']}/images"]
    assert job["result"]["missing"] == [recorded["id"]]
    image = await (await client.get(f"{V1}/images/{recorded['id']}")).json()
    assert image["file_missing"] is True
    assert outside.read_bytes() == image_bytes(seed=41)  # nothing outside is touched


# -- a studio killed during an upload ------------------------------------------------------------

async def test_restart_fails_the_interrupted_upload_and_removes_its_staged_files(make_client, settings):
    """As after kill -9: an upload job left `running` by a dead process (some files placed, the rest
    staged), a request's staging folder that was still streaming, and a live process's folder."""
    import sqlalchemy as sa
    from lora_studio.core.db import Database, utcnow
    from lora_studio.core.schema import jobs

    first = await make_client(settings)
    p = await make_project(first)
    c = await make_character(first, p["id"])
    from lora_studio.datasets.upload_jobs import staging_name

    staging = settings.effective_datasets_dir / ".staging"
    pid = dead_pid()
    gone = f"{socket.gethostname()}:{pid}"

    total, placed = 150, 40
    job_folder = staging / staging_name(pid)
    job_folder.mkdir(parents=True)
    files = [[f"img{i}.png", f"upload-{i:04d}"] for i in range(total)]
    for _, stored in files[placed:]:  # the first `placed` were moved into the dataset before the kill
        (job_folder / stored).write_bytes(b"\x89PNG staged bytes")
    streaming = staging / staging_name(pid)  # the kill came while a request streamed into it
    streaming.mkdir()
    for i in range(120):
        (streaming / f"upload-{i:04d}").write_bytes(b"partial")
    (staging / staging_name(pid)).mkdir()  # ... or just after it made its folder
    alive = staging / staging_name(os.getppid())  # another studio on this host, still streaming
    alive.mkdir()

    db = Database(settings.effective_database_url)
    try:
        now = utcnow()
        with db.begin() as conn:
            job_id = conn.execute(jobs.insert().values(
                kind="ingest_images", status="running", progress=0.25, message=f"{placed}/{total} files",
                payload={"character_id": c["id"], "project_id": p["id"], "staging": job_folder.name, "files": files,
                         "caption": ""},
                character_id=c["id"], cancel_requested=False, worker=gone, created_at=now, started_at=now,
                updated_at=now)).inserted_primary_key[0]
            other_host = conn.execute(jobs.insert().values(  # another machine's job: not ours to judge
                kind="ingest_images", status="running", progress=0.0, message="started", worker="elsewhere:1",
                payload={"character_id": c["id"], "project_id": p["id"], "staging": "upload-x", "files": []},
                character_id=c["id"], cancel_requested=False, created_at=now, started_at=now,
                updated_at=now)).inserted_primary_key[0]

        second = await make_client(settings)  # the restart: same data folder, same database
        job = await (await second.get(f"{V1}/jobs/{job_id}")).json()
        assert job["status"] == "failed"
        assert job["error"] == (f"interrupted by a restart of the studio: {placed} of {total} images were placed "
                                f"(they stay pending), {total - placed} staged files removed")
        assert not job_folder.exists() and not streaming.exists()
        assert alive.is_dir()
        assert (await (await second.get(f"{V1}/jobs/{other_host}")).json())["status"] == "running"
        assert sorted(d.name for d in staging.iterdir()) == [alive.name]
        with db.begin() as conn:  # failed once, also when a third studio starts
            assert conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id)).scalar() == "failed"
        assert studio_of(second).jobs.fail_orphans() == []
    finally:
        db.dispose()
