"""Undo racing decisions, with real threads on the review service: 8 deciders and 4 undoers on 20
images (two characters and the project's pool) for a few seconds, while a checker reads the
decision log's invariants (support.review_log) from consistent snapshots. Nothing may fail but
the refusals a user would get (409: approving a pool image, nothing left to undo)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter

import pytest
from support.review_log import check_decision_log

RACE_SECONDS = 3.0
DECIDERS, UNDOERS = 8, 4
MIN_DECISIONS, MIN_UNDOS = 10, 5  # each thread's at least, however slow the machine
DELETE_ROUNDS = {"postgres": 8, "sqlite": 3}  # SQLite serialises writers: no deadlock to look for


def add_records(studio, project_id: int, character_id: int | None, n: int, start: int) -> list[int]:
    """Image records only (decisions never read the files)."""
    import sqlalchemy as sa
    from lora_studio.core.db import utcnow
    from lora_studio.core.schema import images

    now = utcnow()
    rows = [{"character_id": character_id, "project_id": project_id, "rel_path": f"race/{start + i}.png",
             "sha256": f"{start + i:064x}", "status": "pending", "caption": "", "source": "upload", "width": 8,
             "height": 8, "meta": {}, "created_at": now, "updated_at": now} for i in range(n)]
    with studio.db.begin() as conn:
        conn.execute(images.insert(), rows)
        return list(conn.execute(sa.select(images.c.id).where(images.c.rel_path.in_([r["rel_path"] for r in rows]))
                                 .order_by(images.c.id)).scalars())


def test_undo_racing_decisions_keeps_the_log_whole(studio, database_url):
    from lora_studio.core.errors import Conflict

    project = studio.projects.create("Race")
    a = studio.characters.create(project.id, "Aiko").id
    b = studio.characters.create(project.id, "Beni").id
    ids = (add_records(studio, project.id, a, 8, 0) + add_records(studio, project.id, b, 8, 100)
           + add_records(studio, project.id, None, 4, 200))
    counts: Counter = Counter()
    errors: list[str] = []
    reports = []
    lock = threading.Lock()
    start = threading.Barrier(DECIDERS + UNDOERS + 1)
    deadline = 0.0

    def tally(key: str, n: int = 1) -> None:
        with lock:
            counts[key] += n

    def decider(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for n in itertools.count():
            if n >= MIN_DECISIONS and time.monotonic() >= deadline:
                break
            decision = rng.choice(["approve", "approve", "reject", "reject", "reset"])
            chosen, reason = rng.sample(ids, rng.randint(1, 3)), {}
            if decision == "reject":
                reason = {"categories": [rng.choice(["bad_quality", "not_solo"])], "note": f"n{seed}"}
            try:
                result = studio.review.decide(chosen, decision, **reason)
                tally("decisions")
                tally("changes", len(result["changed"]))
            except Conflict:
                tally("refused approvals")  # a pool image in an approve batch
            except Exception as e:  # noqa: BLE001 - any other error fails the test below
                errors.append(f"decide: {type(e).__name__}: {e}")

    def undoer(scope: int | None) -> None:
        start.wait()
        for n in itertools.count():
            if n >= MIN_UNDOS and time.monotonic() >= deadline:
                break
            try:
                result = studio.review.undo(scope)
                tally("undos")
                tally("reverted", len(result["reverted"]))
            except Conflict as e:
                tally("nothing to undo" if "no decision" in e.message else f"undo 409: {e.message}")
            except Exception as e:  # noqa: BLE001
                errors.append(f"undo: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=decider, args=(i,)) for i in range(DECIDERS)]
    threads += [threading.Thread(target=undoer, args=(scope,)) for scope in (a, b, None, None)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + RACE_SECONDS
    start.wait()
    while any(t.is_alive() for t in threads):  # the main thread checks snapshots while the others race
        reports.append(check_decision_log(studio.db.engine))
        time.sleep(0.05)
        assert time.monotonic() < deadline + 60, "a thread is stuck (a deadlock?)"
    for t in threads:
        t.join()
    reports.append(check_decision_log(studio.db.engine))
    final = reports[-1]
    print(f"\n[{'postgres' if database_url else 'sqlite'}] {dict(counts)}, {len(reports)} invariant checks; "
          f"final: {final.summary()}")
    assert not errors, errors[:10]
    assert counts["decisions"] + counts["refused approvals"] >= DECIDERS * MIN_DECISIONS, counts
    assert counts["reverted"] > 0 and counts["undos"] > 0, counts
    bad = [r for r in reports if not r.ok]
    assert not bad, f"{len(bad)} of {len(reports)} snapshots broken; first: {bad[0].summary()}"


def test_undo_skips_what_was_decided_again_and_keeps_its_entries(studio):
    """A batch whose image was decided on again (here: moved to another character and rejected
    there) keeps that image's entry; undo reverts only the rest, and an older batch is next."""
    from lora_studio.core.errors import Conflict

    project = studio.projects.create("Undo")
    a = studio.characters.create(project.id, "Aiko").id
    b = studio.characters.create(project.id, "Beni").id
    i1, i2, i3 = add_records(studio, project.id, a, 3, 0)

    def status(*ids):
        return [studio.images.get(i).status for i in ids]

    studio.review.decide([i1], "approve")  # batch 0
    studio.review.decide([i2, i3], "approve")  # batch 1
    studio.images.reassign(i2, character_id=b)
    studio.review.reject(i2, categories=["not_solo"], note="two girls")  # batch 2, Beni's
    assert studio.images.get(i2).last_rejection["note"] == "two girls"

    undone = studio.review.undo(a)  # batch 1, but only i3: i2 was decided on again since
    assert undone["reverted"] == [i3] and status(i1, i2, i3) == ["approved", "rejected", "pending"]
    assert check_decision_log(studio.db.engine).ok
    assert studio.review.undo(a)["reverted"] == [i1]  # batch 0 next: batch 1's rest does not block it
    with pytest.raises(Conflict, match="no decision to undo"):
        studio.review.undo(a)
    assert studio.review.undo(None)["reverted"] == [i2]  # Beni's rejection, its feedback row with it
    assert status(i2) == ["approved"] and studio.images.get(i2).last_rejection is None
    assert studio.review.undo(a)["reverted"] == [i2]  # batch 1's entry for i2 is the last one again
    assert status(i1, i2, i3) == ["pending"] * 3
    report = check_decision_log(studio.db.engine)
    assert report.ok and report.entries == 0, report.summary()


def test_deleting_a_character_while_its_decisions_are_decided_and_undone(studio, database_url):
    """The delete changes the character's log entries (they become the pool's) and its cascade removes its
    feedback: it locks their images in id order first, as decisions and undo do (was on PostgreSQL: 6 deadlocks
    in 80 such rounds). Afterwards every image's log still ends at its status."""
    from lora_studio.core.errors import Conflict

    project = studio.projects.create("Gone")
    errors: list[str] = []
    # SQLite's busy handler backs off while the workers take the write lock in turn: fewer, slower workers there
    workers, pause = (8, 0.0) if database_url else (2, 0.005)
    for n in range(DELETE_ROUNDS["postgres" if database_url else "sqlite"]):
        x = studio.characters.create(project.id, f"X{n}").id
        ids = add_records(studio, project.id, x, 12, 1000 * (n + 1))
        studio.review.decide(ids, "approve")
        stop = threading.Event()

        def work(seed: int, x: int = x, ids: list[int] = ids, stop: threading.Event = stop) -> None:
            rng = random.Random(seed)
            while not stop.is_set():
                try:
                    if seed % 2:
                        studio.review.undo(x if seed % 4 == 1 else None)
                    else:
                        studio.review.decide(rng.sample(ids, 8), rng.choice(["reject", "reset", "approve"]),
                                             note="n")
                except Conflict:
                    pass  # nothing to undo, or approving images that are in the pool by now
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{type(e).__name__}: {e}")
                time.sleep(pause)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        time.sleep(0.03)
        try:
            assert studio.character_removal.delete(x)["images_to_pool"] == ids
        except Exception as e:  # noqa: BLE001
            errors.append(f"delete: {type(e).__name__}: {e}")
        time.sleep(0.03)
        stop.set()
        for t in threads:
            t.join()
        assert all(studio.images.get(i).unassigned for i in ids)
    assert not errors, errors[:5]
    report = check_decision_log(studio.db.engine)  # the images' history stayed with them (as the pool's)
    assert report.ok and report.entries > 0, report.summary()


def test_a_character_that_got_an_image_meanwhile_is_not_deleted(studio):
    """Between moving a character's images to the pool and deleting its record, another request can move an
    image in: the cascade would delete that image's record and leave its file, so the delete is refused."""
    from lora_studio.core.errors import Conflict

    project = studio.projects.create("Late")
    x = studio.characters.create(project.id, "Aiko").id
    (late,) = add_records(studio, project.id, x, 1, 0)  # as if moved in after the images went to the pool
    with pytest.raises(Conflict, match="moved to the character meanwhile"):
        studio.characters.delete(x)
    assert studio.images.get(late).character_id == x
    assert studio.character_removal.delete(x)["images_to_pool"] == [late]  # asked again, it goes through
