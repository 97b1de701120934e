"""50 reviewers at once through the real HTTP API (the standalone app on a real server): approve,
reject, batch decisions, undo (per character and studio-wide) and reassign on 20 overlapping images
of two characters and the project's pool, for a few seconds. No 5xx, no database error text in any
answer, only 409 for refusals; afterwards the decision log is whole (support.review_log) and every
record's file and caption are where it says, with no file left behind."""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter

import pytest
from lora_studio.app import STUDIO_KEY
from support.api import V1, make_character, make_project, upload
from support.images import image_bytes
from support.review_log import check_decision_log

REVIEWERS = 50
RACE_SECONDS = 3.0
MIN_ACTIONS = 3  # each reviewer's at least, however slow the machine
LEAKS = ("database is locked", "deadlock", "traceback", "sqlalchemy", "psycopg", "internal error")


@pytest.fixture
async def scene(client):
    p = await make_project(client, "Crowd")
    chars = [await make_character(client, p["id"], name) for name in ("Aiko", "Beni")]
    ids = []
    for n, (cid, project_id) in enumerate([(chars[0]["id"], None), (chars[1]["id"], None), (None, p["id"])]):
        files = [(f"{n}-{i}.png", image_bytes(size=(32, 32), seed=700 + 10 * n + i), "image/png")
                 for i in range(8 if cid else 4)]
        created = (await upload(client, cid, *files, project_id=project_id))["created"]
        ids += [i["id"] for i in created]
    assert len(ids) == 20
    return [c["id"] for c in chars], ids


async def test_fifty_reviewers_at_once(client, scene, database_url):
    chars, ids = scene
    answers: Counter = Counter()
    bad: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RACE_SECONDS

    def action(rng: random.Random) -> tuple[str, str, dict | None]:
        kind = rng.choice(["approve", "approve", "reject", "reject", "batch", "batch", "undo", "undo_all",
                           "reassign", "reassign"])
        image = rng.choice(ids)
        if kind == "approve":
            return kind, f"{V1}/images/{image}/approve", None
        if kind == "reject":
            return kind, f"{V1}/images/{image}/reject", {"categories": [rng.choice(["bad_quality", "not_solo"])],
                                                          "note": f"note {rng.randrange(1000)}"}
        if kind == "batch":
            decision = rng.choice(["approve", "reject", "reset"])
            body = {"image_ids": rng.sample(ids, rng.randint(2, 5)), "decision": decision}
            return kind, f"{V1}/images/decisions", body | ({"note": "batch"} if decision == "reject" else {})
        if kind == "undo":
            return kind, f"{V1}/characters/{rng.choice(chars)}/undo", None
        if kind == "undo_all":
            return kind, f"{V1}/decisions/undo", None
        to = rng.choice([{"character_id": chars[0]}, {"character_id": chars[1]}, {"unassigned": True}])
        return kind, f"{V1}/images/{image}/reassign", to

    async def reviewer(seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while n < MIN_ACTIONS or loop.time() < deadline:
            kind, url, body = action(rng)
            await post(client, kind, url, body, answers, bad)
            n += 1

    await asyncio.gather(*(reviewer(i) for i in range(REVIEWERS)))
    studio = client.server.app[STUDIO_KEY].get()
    report = check_decision_log(studio.db.engine)
    requests = sum(n for (_, status), n in answers.items() if isinstance(status, int))
    print(f"\n[{'postgres' if database_url else 'sqlite'}] {requests} requests: "
          f"{dict(sorted(answers.items(), key=str))}; log: {report.summary()}")
    assert not bad, bad[:10]
    done = {kind for kind, status in answers if status == 200}
    assert done == {"approve", "reject", "batch", "undo", "undo_all", "reassign"}, answers
    assert requests >= MIN_ACTIONS * REVIEWERS, answers
    assert report.ok, report.summary()

    await assert_files_match_records(client, studio, ids)


async def test_moves_of_the_same_images_race(client, scene):
    """Reassigning the same few images from many requests at once: each move takes the image's lock
    before it looks at the files and moves them under it, so none finds its file gone or its target
    taken by the image itself (no 500, no 409), and nothing is left behind."""
    chars, ids = scene
    targets = [{"character_id": chars[0]}, {"character_id": chars[1]}, {"unassigned": True}]
    answers: Counter = Counter()
    bad: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.5

    async def mover(seed: int) -> None:
        rng = random.Random(seed)
        while loop.time() < deadline:
            await post(client, "reassign", f"{V1}/images/{rng.choice(ids[:3])}/reassign", rng.choice(targets),
                       answers, bad)

    await asyncio.gather(*(mover(i) for i in range(30)))
    assert not bad, bad[:10]
    # nothing to refuse either: a move to where another request just put the image is a no-op
    assert set(answers) == {("reassign", 200)} and answers[("reassign", 200)] >= 30, answers
    await assert_files_match_records(client, client.server.app[STUDIO_KEY].get(), ids)


async def post(client, kind: str, url: str, body: dict | None, answers: Counter, bad: list[str]) -> None:
    r = await client.post(url, json=body if body is not None else {})
    text = await r.text()
    answers[(kind, r.status)] += 1
    if r.status == 409:  # which refusal, for the printed figures
        answers[(kind, "409: " + re.sub(r"\d+(, \d+)*", "N", (await r.json())["error"]["message"])[:40])] += 1
    if r.status not in (200, 409) or any(leak in text.lower() for leak in LEAKS):
        bad.append(f"{kind} {url} -> {r.status}: {text[:300]}")


async def assert_files_match_records(client, studio, ids: list[int]) -> None:
    """Every record's file and caption are where it says, and no file is left without a record."""
    records = [await (await client.get(f"{V1}/images/{i}")).json() for i in ids]
    expected = set()
    for rec in records:
        path = studio.layout.abs_path(rec["rel_path"])
        assert path.is_file() and path.with_suffix(".txt").is_file() and not rec["file_missing"], rec
        assert (rec["character_id"] is None) == ("/_unassigned/" in rec["rel_path"]), rec
        expected |= {path, path.with_suffix(".txt")}
    on_disk = {p for p in studio.settings.effective_datasets_dir.rglob("*") if p.is_file()}
    assert on_disk == expected, sorted(map(str, on_disk ^ expected))
