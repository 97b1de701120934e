"""Batch decisions, undo, and two reviewers deciding on the same images at once."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from support.api import V1, assert_error, make_character, make_project, upload
from support.images import image_bytes


@pytest.fixture
async def images(client):
    p = await make_project(client)
    c = await make_character(client, p["id"])
    files = [(f"{i}.png", image_bytes(size=(32, 32), seed=100 + i), "image/png") for i in range(30)]
    created = (await upload(client, c["id"], *files))["created"]
    return c, [i["id"] for i in created]


def count(settings, sql):
    from lora_studio.core.db import Database

    db = Database(settings.effective_database_url)
    with db.begin() as conn:
        n = conn.execute(sa.text(sql)).scalar()
    db.dispose()
    return n


async def decide(client, ids, decision, **extra):
    r = await client.post(f"{V1}/images/decisions", json={"image_ids": ids, "decision": decision, **extra})
    assert r.status == 200, await r.text()
    return await r.json()


async def test_batch_decisions_and_undo(client, images, settings):
    c, ids = images
    result = await decide(client, ids[:20], "approve")
    assert result["changed"] == ids[:20] and result["unchanged"] == []
    assert {i["status"] for i in result["images"]} == {"approved"}
    result = await decide(client, ids[15:25], "reject", categories=["bad_quality"], note="soft")
    assert result["changed"] == ids[15:25]
    assert count(settings, "SELECT count(*) FROM feedback") == 10
    # repeating a decision changes nothing and adds no feedback
    again = await decide(client, ids[15:25], "reject", categories=["bad_quality"])
    assert again["changed"] == [] and again["batch"] is None
    assert count(settings, "SELECT count(*) FROM feedback") == 10

    undone = await (await client.post(f"{V1}/characters/{c['id']}/undo")).json()
    assert sorted(undone["reverted"]) == ids[15:25]
    statuses = {i["id"]: i["status"] for i in undone["images"]}
    assert all(statuses[i] == "approved" for i in ids[15:20]) and all(statuses[i] == "pending" for i in ids[20:25])
    assert count(settings, "SELECT count(*) FROM feedback") == 0
    prompt = await (await client.get(f"{V1}/characters/{c['id']}/prompt")).json()
    assert prompt["learned_terms"] == []  # the undone rejections teach nothing
    undone = await (await client.post(f"{V1}/characters/{c['id']}/undo")).json()
    assert sorted(undone["reverted"]) == ids[:20]
    await assert_error(await client.post(f"{V1}/characters/{c['id']}/undo"), 409)
    pending = await (await client.get(f"{V1}/characters/{c['id']}/images?limit=100")).json()
    assert len(pending["items"]) == 30


async def test_batch_is_all_or_nothing(client, images, settings):
    _, ids = images
    r = await client.post(f"{V1}/images/decisions", json={"image_ids": [ids[0], 987654], "decision": "approve"})
    err = await assert_error(r, 404)
    assert "987654" in err["message"] and "nothing was changed" in err["message"]
    assert count(settings, "SELECT count(*) FROM images WHERE status = 'approved'") == 0
    for body in [{"image_ids": [], "decision": "approve"}, {"image_ids": ids, "decision": "maybe"},
                 {"image_ids": ["1"], "decision": "approve"}, {"image_ids": ids, "decision": "reject"},
                 {"image_ids": ids, "decision": "reject", "categories": ["nope"]}]:
        await assert_error(await client.post(f"{V1}/images/decisions", json=body), 400)


async def test_two_reviewers_at_once_end_consistent(client, images, settings):
    c, ids = images
    reviewer_a = [decide(client, [i], "approve") for i in ids[:25]]
    reviewer_b = [decide(client, [i], "reject", categories=["not_solo"]) for i in ids[:25]]
    results = await asyncio.gather(*[x for pair in zip(reviewer_a, reviewer_b, strict=True) for x in pair])
    assert len(results) == 50
    records = [await (await client.get(f"{V1}/images/{i}")).json() for i in ids[:25]]
    final = {r["id"]: r["status"] for r in records}
    # every image ended in exactly one state, and the decision log explains it
    for image_id in ids[:25]:
        assert final[image_id] in ("approved", "rejected")
    rejected = sum(1 for s in final.values() if s == "rejected")
    decisions = count(settings, "SELECT count(*) FROM image_decisions")
    changes = sum(len(r["changed"]) for r in results)
    assert decisions == changes  # one log row per real change, none lost
    # each image's last logged change is its current status
    from lora_studio.core.db import Database

    db = Database(settings.effective_database_url)
    with db.begin() as conn:
        last = dict(conn.execute(sa.text(
            "SELECT image_id, to_status FROM image_decisions d WHERE id = "
            "(SELECT max(id) FROM image_decisions e WHERE e.image_id = d.image_id)")).all())
        feedback_rows = conn.execute(sa.text("SELECT count(*) FROM feedback")).scalar()
        rejections_logged = conn.execute(sa.text(
            "SELECT count(*) FROM image_decisions WHERE to_status = 'rejected'")).scalar()
    db.dispose()
    assert last == final
    assert feedback_rows == rejections_logged >= rejected
