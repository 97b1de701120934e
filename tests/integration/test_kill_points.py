"""kill -9 as tests, with real processes: the standalone server killed during ingest, the training
worker killed at random steps, and the server's PostgreSQL connection terminated in the middle of a
large batch decision. After each kill the studio is restarted (or asked again) and the invariants are
checked: every job is succeeded, failed with a message, or cancelled (a failed training resumable from
its checkpoint); every image record has its file and every image file its record; nothing staged or
half-written is left behind; the batch decision is all or nothing.

The kill moments are drawn from a seeded random generator (LORA_STUDIO_KILL_SEED, default below) and
printed, so a failure can be replayed; what a kill point hits is bounded by events (bytes sent, files
placed, checkpoints written, rows written), not by sleeping and hoping."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import threading
import time
import uuid
from pathlib import Path

import pytest
from support.images import image_bytes, noise_png
from support.processes import StudioServer, clean_env
from support.studio_http import upload

SEED = int(os.environ.get("LORA_STUDIO_KILL_SEED", "84019"))
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def rng_for(name: str) -> random.Random:
    print(f"kill points of {name}: LORA_STUDIO_KILL_SEED={SEED}")
    return random.Random(f"{SEED}:{name}")


def ok(server: StudioServer, method: str, path: str, body: dict | None = None, status: int = 200) -> dict:
    got, answer = server.call(method, path, body)
    assert got == status, (method, path, got, answer)
    return answer


def all_pages(server: StudioServer, path: str) -> list[dict]:
    items, cursor = [], None
    while True:
        sep = "&" if "?" in path else "?"
        page = ok(server, "GET", f"{path}{sep}limit=200" + (f"&cursor={cursor}" if cursor else ""))
        items += page["items"]
        cursor = page.get("next_cursor")
        if not cursor:
            return items


def wait_jobs_settled(server: StudioServer, timeout: float = 60) -> list[dict]:
    """Every job once none is queued or running (the start-up reconcile and any upload left queued)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = all_pages(server, "/jobs")
        busy = [j for j in jobs if j["status"] in ("queued", "running")]
        if not busy:
            return jobs
        assert time.monotonic() < deadline, f"jobs never settled: {busy}"
        time.sleep(0.05)


def assert_jobs_accounted_for(jobs: list[dict]) -> None:
    for job in jobs:
        assert job["status"] in ("succeeded", "failed", "cancelled"), job
        if job["status"] == "failed":
            assert (job["error"] or "").strip(), f"job {job['id']} failed without a message: {job}"


# -- the server killed during ingest ------------------------------------------------------------------------


def multipart(files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
             "Content-Type: image/png\r\n\r\n".encode() + content + b"\r\n" for name, content in files.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="caption"\r\n\r\nkill test\r\n'.encode())
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def image_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def kill_during_upload(server: StudioServer, target: str, files: dict[str, bytes], kind: str, rng: random.Random,
                       images_dir: Path) -> str:
    """Upload `files` and kill -9 the server at a moment of `kind`; says where the kill landed."""
    body, ctype = multipart(files)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("POST", f"/lora-studio/v1{target}/images")
        conn.putheader("Content-Type", ctype)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if kind == "stream":  # the request body only partly sent: files half-streamed into the staging folder
            cut = rng.randrange(1, len(body))
            conn.send(body[:cut])
            staging = server.data / "datasets" / ".staging"
            deadline = time.monotonic() + 5
            while not (staging.is_dir() and any(staging.iterdir())) and time.monotonic() < deadline:
                time.sleep(0.005)  # the server has started streaming into its staging folder
            server.kill()
            return f"after {cut}/{len(body)} bytes of the request body"
        conn.send(body)
        response = conn.getresponse()
        job = json.loads(response.read())
        assert response.status == 202, job
    finally:
        conn.close()
    if kind == "job":  # the ingest job has placed k of the files
        before = len(image_files(images_dir))
        k = rng.randrange(1, len(files))
        deadline = time.monotonic() + 20
        while len(image_files(images_dir)) - before < k and time.monotonic() < deadline:
            time.sleep(0.002)
        placed = len(image_files(images_dir)) - before
        server.kill()
        return f"job {job['id']}: after file {placed} of {len(files)} was placed (aimed at {k})"
    delay = rng.uniform(0, 0.3)  # "after": any moment once the job is queued
    time.sleep(delay)
    server.kill()
    return f"job {job['id']}: {delay:.3f}s after its 202"


def check_dataset(server: StudioServer, project_id: int) -> list[dict]:
    """Records and files in step: each record's file exists with its hash, each file has a record, no
    temporary files in the image folders."""
    root = server.data / "datasets"
    records = all_pages(server, f"/images?project_id={project_id}&status=all")
    for image in records:
        path = root / image["rel_path"]
        assert not image["file_missing"] and path.is_file(), f"a record without its file: {image}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == image["sha256"], image
    on_disk = {p.relative_to(root).as_posix() for p in image_files(root) if ".staging" not in p.parts}
    assert on_disk == {i["rel_path"] for i in records}, "image files without records (or the reverse)"
    for scope in {(i["character_id"], i["project_id"]) for i in records}:
        hashes = [i["sha256"] for i in records if (i["character_id"], i["project_id"]) == scope]
        assert len(hashes) == len(set(hashes)), f"an image stored twice in {scope}"
    leftovers = [p for p in root.rglob(".tmp-*") if ".staging" not in p.parts]
    assert leftovers == [], f"half-written files in the dataset: {leftovers}"
    return records


def staging_leftovers(server: StudioServer) -> list[str]:
    staging = server.data / "datasets" / ".staging"
    return sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []


INGEST_KILLS = 12
BATCH = 8


def test_server_killed_during_ingest(tmp_path):
    rng = rng_for("ingest")
    server = StudioServer(tmp_path, tmp_path / "data")
    server.start()
    log: list[str] = []
    leftovers: list[str] = []
    try:
        project = ok(server, "POST", "/projects", {"name": "Moon"}, 201)
        char = ok(server, "POST", f"/projects/{project['id']}/characters", {"name": "Aiko"}, 201)
        char_dir = server.data / "datasets" / project["slug"] / char["slug"] / "images"
        pool_dir = server.data / "datasets" / project["slug"] / "_unassigned" / "images"
        kinds = ["stream", "job", "after"] * (INGEST_KILLS // 3)
        rng.shuffle(kinds)
        for point, kind in enumerate(kinds):
            to_pool = point % 4 == 3  # some batches go to the project's unassigned pool
            files = {f"p{point}-{i}.png": image_bytes(size=(96, 96), seed=SEED + 100 * point + i) for i in range(BATCH)}
            target = f"/projects/{project['id']}" if to_pool else f"/characters/{char['id']}"
            where = kill_during_upload(server, target, files, kind, rng, pool_dir if to_pool else char_dir)
            log.append(f"kill point {point} ({kind}{', pool' if to_pool else ''}): {where}")
            print(log[-1])
            server.start()
            jobs = wait_jobs_settled(server)
            assert_jobs_accounted_for(jobs)
            assert [j for j in jobs if j["kind"] == "reconcile"][0]["status"] == "succeeded", jobs
            check_dataset(server, project["id"])
            leftovers += [f"after kill point {point}: {name}" for name in staging_leftovers(server)]
        # and the studio works on: a plain upload after all that
        created = upload(server, char["id"], {"after.png": image_bytes(size=(96, 96), seed=SEED - 1)})["created"]
        assert len(created) == 1
        records = check_dataset(server, project["id"])
        uploads = [j for j in wait_jobs_settled(server) if j["kind"] == "ingest_images"]
        print(f"{len(records)} image records consistent with their files after {INGEST_KILLS} kills; upload jobs: "
              + ", ".join(f"#{j['id']} {j['status']}" + (f" ({j['error']})" if j["error"] else "") for j in uploads))
    finally:
        server.kill()
    # the start-up sweep removes what a killed request or job staged (its process is dead), at once
    assert leftovers == [], "staged upload files left after a restart:\n" + "\n".join(leftovers + log)


# -- the training worker killed at random steps ---------------------------------------------------------------

TRAIN_STEPS = 24
WORKER_KILLS = 2


def complete_checkpoints(folder: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("step-*")
                  if (p / "checkpoint.json").is_file() and (p / "state.pt").is_file())


def wait_job(server: StudioServer, job_id: int, until, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = ok(server, "GET", f"/jobs/{job_id}")
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} never got there: {job}"
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_worker_at(server: StudioServer, job_id: int, step: int, rng: random.Random) -> str:
    """kill -9 the job's worker while it writes checkpoint `step`, or a random moment (0-150 ms) after."""
    job = wait_job(server, job_id, lambda j: (j["result"] or {}).get("pid") or j["status"] not in ("queued", "running"))
    assert job["status"] == "running", job
    pid = job["result"]["pid"]
    folder = server.data / "jobs" / str(job_id) / "checkpoints"
    temp, after = f".step-{step}.", rng.choice([0.0, rng.uniform(0, 0.15)])
    deadline = time.monotonic() + 180
    while True:
        names = [e.name for e in os.scandir(folder)] if folder.is_dir() else []
        if not after and any(n.startswith(temp) for n in names):
            where = f"while checkpoint {step} was being written"
            break
        if step in complete_checkpoints(folder):
            time.sleep(after)
            where = f"{after * 1000:.0f} ms after checkpoint {step} was written"
            break
        if time.monotonic() > deadline or not alive(pid):
            pytest.fail(f"the worker ended (or hung) before checkpoint {step}: {ok(server, 'GET', f'/jobs/{job_id}')}")
        time.sleep(0.002)
    os.kill(pid, 9)
    return f"job {job_id}, worker {pid}: {where}"


@pytest.mark.training
def test_training_worker_killed_at_random_steps(tmp_path):
    pytest.importorskip("diffusers")
    from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15

    rng = rng_for("training worker")
    build_tiny_sd15(tmp_path / "models" / "tiny")
    loras = tmp_path / "loras"
    server = StudioServer(tmp_path, tmp_path / "data", "--models-dir", str(tmp_path / "models"),
                          "--loras-dir", str(loras),
                          env=clean_env(LORA_STUDIO_MIN_APPROVED_IMAGES="2", OMP_NUM_THREADS="1"))
    server.start()
    log: list[str] = []
    try:
        project = ok(server, "POST", "/projects", {"name": "Moon"}, 201)
        char = ok(server, "POST", f"/projects/{project['id']}/characters", {"name": "Aiko", "trigger_word": "aikotnk"},
                  201)
        created = upload(server, char["id"], {f"{i}.png": image_bytes(size=(72, 64), seed=SEED + i) for i in range(2)})
        for image in created["created"]:
            ok(server, "POST", f"/images/{image['id']}/approve")
        body = {"base_model": "tiny", "steps": TRAIN_STEPS, "rank": 4, "alpha": 2.0, "resolution": TINY_RESOLUTION,
                "sample_every": 0, "checkpoint_every": 2, "device": "cpu"}
        job = ok(server, "POST", f"/characters/{char['id']}/train", body, 202)
        t0 = time.monotonic()
        steps = sorted(rng.sample(range(2, TRAIN_STEPS - 6, 2), WORKER_KILLS))  # one kill per run, later each time
        resumed_step = 0
        for point, drawn in enumerate(steps):
            step = max(drawn, resumed_step + 2)  # a checkpoint the resumed run will write
            if step > TRAIN_STEPS - 4:  # the runs got that far already: let the last one finish
                print(f"worker kill point {point} skipped: the run resumed at step {resumed_step}")
                break
            where = kill_worker_at(server, job["id"], step, rng)
            log.append(f"worker kill point {point} at {time.monotonic() - t0:.1f}s: {where}")
            print(log[-1])
            failed = wait_job(server, job["id"], lambda j: j["status"] not in ("queued", "running"), timeout=60)
            assert failed["status"] == "failed", failed
            assert "exited with code -9" in failed["error"], failed["error"]
            assert failed["error"].split("worker log (last lines) ---")[1].strip(), failed["error"]
            assert not loras.exists() or list(loras.iterdir()) == [], "a LoRA (or part of one) after a kill"
            # resumable: from the run's newest complete checkpoint, or (killed before its first one) from the
            # checkpoint the run itself had resumed from
            own = server.data.resolve() / "jobs" / str(job["id"]) / "checkpoints"
            expected = (own / f"step-{complete_checkpoints(own)[-1]}" if complete_checkpoints(own)
                        else Path(job["payload"]["resume_from"]))
            resumed = ok(server, "POST", f"/train/{job['id']}/resume", None, 202)
            checkpoint = Path(resumed["payload"]["resume_from"])
            assert checkpoint == expected, (checkpoint, expected, where)
            assert (checkpoint / "state.pt").is_file() and (checkpoint / "checkpoint.json").is_file(), checkpoint
            resumed_step = json.loads((checkpoint / "checkpoint.json").read_text())["step"]
            job = resumed
        done = wait_job(server, job["id"], lambda j: j["status"] not in ("queued", "running"), timeout=240)
        print(f"the last run finished at {time.monotonic() - t0:.1f}s")
        assert done["status"] == "succeeded", done
        assert done["result"]["resume_step"] == resumed_step and done["result"]["progress"]["step"] == TRAIN_STEPS
        assert sorted(p.name for p in loras.iterdir()) == ["moon-aiko-v1.safetensors"]  # nothing partial beside it
        listed = ok(server, "GET", f"/characters/{char['id']}/loras")["items"]
        assert [(x["file_name"], x["job_id"]) for x in listed] == [("moon-aiko-v1.safetensors", done["id"])]
        assert_jobs_accounted_for(wait_jobs_settled(server))
    finally:
        server.kill()


# -- the database connection terminated mid-transaction (PostgreSQL) -----------------------------------------

DB_KILLS = 8
BATCH_IMAGES = 240

# Test instrumentation inside the test database: an INSERT into the decision log for the chosen image
# waits for an advisory lock the test holds, so the server's transaction stalls after a known number of
# its rows were written; the test then terminates it from outside.
STALL_SQL = """
CREATE TABLE kill_point (image_id bigint);
INSERT INTO kill_point VALUES (NULL);
CREATE FUNCTION stall_at_kill_point() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.image_id = (SELECT image_id FROM kill_point) THEN
        PERFORM pg_advisory_xact_lock(84010009);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER stall_at_kill_point BEFORE INSERT ON image_decisions
    FOR EACH ROW EXECUTE FUNCTION stall_at_kill_point();
"""


def statuses(server: StudioServer, project_id: int) -> dict[int, str]:
    return {i["id"]: i["status"] for i in all_pages(server, f"/images?project_id={project_id}&status=all")}


def call_into(answer: dict, server: StudioServer, method: str, path: str, body: dict) -> None:
    answer["status"], answer["body"] = server.call(method, path, body)


def stalled_backend(admin, dbname: str, own: set[int], timeout: float = 20) -> int:
    """The pid of the server's backend that waits on a lock (the stalled batch)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                             (dbname,)).fetchall()
        pids = [pid for (pid,) in rows if pid not in own]
        if pids:
            return pids[0]
        assert time.monotonic() < deadline, "the batch never reached its kill point"
        time.sleep(0.005)


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_database_connection_terminated_mid_batch_decision(tmp_path, database_url):
    import psycopg

    rng = rng_for("database connection")
    server = StudioServer(tmp_path, tmp_path / "data", "--database-url", database_url)
    server.start()
    dbname = database_url.rsplit("/", 1)[1]
    log: list[str] = []
    t0 = time.monotonic()
    try:
        project = ok(server, "POST", "/projects", {"name": "Moon"}, 201)
        char = ok(server, "POST", f"/projects/{project['id']}/characters", {"name": "Aiko"}, 201)
        folder = server.data / "datasets" / project["slug"] / char["slug"] / "images"
        folder.mkdir(parents=True)
        for i in range(BATCH_IMAGES):  # dropped into the folder and adopted by a reconcile: quicker than uploads
            (folder / f"{i}.png").write_bytes(noise_png(SEED + i, size=16))
        job = ok(server, "POST", "/datasets/reconcile", None, 202)
        wait_job(server, job["id"], lambda j: j["status"] == "succeeded")
        ids = sorted(statuses(server, project["id"]))
        assert len(ids) == BATCH_IMAGES
        print(f"{BATCH_IMAGES} images ready at {time.monotonic() - t0:.1f}s")
        with psycopg.connect(database_url, autocommit=True) as admin, \
                psycopg.connect(database_url, autocommit=True) as locker:
            admin.execute(STALL_SQL)
            own = {admin.info.backend_pid, locker.info.backend_pid}
            decisions = ["approve", "reject", "reset"]
            for point in range(DB_KILLS):
                decision = decisions[point % 3]
                body = {"image_ids": rng.sample(ids, len(ids)), "decision": decision}
                if decision == "reject":
                    body["categories"] = ["bad_quality"]
                before = statuses(server, project["id"])
                decided = admin.execute("SELECT count(*) FROM image_decisions").fetchone()[0]
                changing = [i for i in ids if before[i] != {"approve": "approved", "reject": "rejected",
                                                             "reset": "pending"}[decision]]
                if point % 2 and changing:  # stall after k rows of the batch were written
                    k = rng.randrange(len(changing))
                    victim = sorted(changing, key=body["image_ids"].index)[k]
                    admin.execute("UPDATE kill_point SET image_id = %s", (victim,))
                    locker.execute("SELECT pg_advisory_lock(84010009)")
                    where = f"{decision}: after {k} of {len(changing)} changed images were written"
                else:  # stall while taking the batch's row locks, at a random image
                    victim = rng.choice(ids)
                    locker.execute("BEGIN")
                    locker.execute("SELECT id FROM images WHERE id = %s FOR UPDATE", (victim,))
                    where = f"{decision}: while locking the batch's rows, at image {victim}"
                answer: dict = {}
                request = threading.Thread(target=call_into, args=(answer, server, "POST", "/images/decisions", body))
                request.start()
                pid = stalled_backend(admin, dbname, own)
                # the stalled transaction and, for good measure, the pool's idle connections
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                              "AND pid <> ALL(%s) AND (pid = %s OR state = 'idle')", (dbname, list(own), pid))
                request.join(30)
                if point % 2 and changing:
                    locker.execute("SELECT pg_advisory_unlock(84010009)")
                    admin.execute("UPDATE kill_point SET image_id = NULL")
                else:
                    locker.execute("ROLLBACK")
                log.append(f"db kill point {point} at {time.monotonic() - t0:.1f}s ({where}): "
                           f"answered {answer.get('status')}")
                print(log[-1])
                assert answer["status"] == 503, (answer, log)
                assert set(answer["body"]) == {"error"} and answer["body"]["error"]["code"] == "database_unavailable"
                assert "Traceback" not in answer["body"]["error"]["message"]
                # all or nothing: no image changed, no decision logged
                assert statuses(server, project["id"]) == before, log
                assert admin.execute("SELECT count(*) FROM image_decisions").fetchone()[0] == decided
                # and the next request works (a dead pooled connection is replaced)
                done = ok(server, "POST", "/images/decisions", body)
                assert sorted(done["changed"]) == sorted(changing), log
                target = {"approve": "approved", "reject": "rejected", "reset": "pending"}[decision]
                assert set(statuses(server, project["id"]).values()) == {target}
    finally:
        server.kill()
