"""Rejection notes come back: each image record carries its latest standing rejection (categories,
note), in lists with one query for the whole page; the character's feedback summary
(GET /characters/{id}/prompt) lists its latest notes."""

from __future__ import annotations

import sqlalchemy as sa
from lora_studio.app import STUDIO_KEY
from support.api import V1, make_character, make_project, upload
from support.images import image_bytes


async def post(client, url, body=None):
    r = await client.post(url, json=body or {})
    assert r.status == 200, await r.text()
    return await r.json()


async def test_images_and_the_prompt_carry_the_notes(client):
    p = await make_project(client)
    c = await make_character(client, p["id"])
    files = [(f"{i}.png", image_bytes(size=(32, 32), seed=900 + i), "image/png") for i in range(4)]
    i1, i2, i3, i4 = [i["id"] for i in (await upload(client, c["id"], *files))["created"]]
    image = lambda i: client.get(f"{V1}/images/{i}")  # noqa: E731

    rejected = await post(client, f"{V1}/images/{i1}/reject", {"categories": ["not_solo"], "note": "two girls"})
    assert rejected["last_rejection"]["note"] == "two girls"
    record = await (await image(i1)).json()
    assert record["last_rejection"]["categories"] == ["not_solo"] and record["last_rejection"]["note"] == "two girls"
    assert record["last_rejection"]["character_id"] == c["id"] and record["last_rejection"]["rejected_at"]
    batch = await post(client, f"{V1}/images/decisions", {"image_ids": [i2, i3], "decision": "reject",
                                                          "categories": ["bad_quality"], "note": "blurry hands"})
    assert [i["last_rejection"]["note"] for i in batch["images"]] == ["blurry hands"] * 2
    await post(client, f"{V1}/images/{i4}/reject", {"categories": ["wrong_pose"]})  # no note
    # the latest rejection is the one shown; an approval later does not hide it
    await post(client, f"{V1}/images/decisions", {"image_ids": [i1], "decision": "reset"})
    await post(client, f"{V1}/images/{i1}/reject", {"categories": ["wrong_pose"], "note": "still two"})
    await post(client, f"{V1}/images/{i1}/approve")
    listed = await (await client.get(f"{V1}/characters/{c['id']}/images?status=all")).json()
    notes = {i["id"]: i["last_rejection"] and i["last_rejection"]["note"] for i in listed["items"]}
    assert notes == {i1: "still two", i2: "blurry hands", i3: "blurry hands", i4: ""}
    project_list = await (await client.get(f"{V1}/projects/{p['id']}/images?status=approved")).json()
    assert [i["last_rejection"]["note"] for i in project_list["items"]] == ["still two"]
    prompt = await (await client.get(f"{V1}/characters/{c['id']}/prompt")).json()
    assert [(n["image_id"], n["note"]) for n in prompt["rejection_notes"]] == [
        (i1, "still two"), (i3, "blurry hands"), (i2, "blurry hands"), (i1, "two girls")]
    assert prompt["rejection_notes"][0]["categories"] == ["wrong_pose"]

    # an undone rejection takes its note with it; the earlier one stands again
    await post(client, f"{V1}/characters/{c['id']}/undo")  # the approval
    undone = await post(client, f"{V1}/characters/{c['id']}/undo")  # "still two"
    assert undone["images"][0]["status"] == "pending" and undone["images"][0]["last_rejection"]["note"] == "two girls"
    prompt = await (await client.get(f"{V1}/characters/{c['id']}/prompt")).json()
    assert [n["note"] for n in prompt["rejection_notes"]] == ["blurry hands", "blurry hands", "two girls"]
    await post(client, f"{V1}/characters/{c['id']}/undo")  # the reset
    await post(client, f"{V1}/characters/{c['id']}/undo")  # i4
    await post(client, f"{V1}/characters/{c['id']}/undo")  # the batch
    await post(client, f"{V1}/characters/{c['id']}/undo")  # "two girls"
    assert (await (await image(i1)).json())["last_rejection"] is None
    assert (await (await client.get(f"{V1}/characters/{c['id']}/prompt")).json())["rejection_notes"] == []


async def test_a_page_of_images_costs_the_same_queries_however_many_were_rejected(client):
    p = await make_project(client)
    c = await make_character(client, p["id"])
    files = [(f"{i}.png", image_bytes(size=(32, 32), seed=950 + i), "image/png") for i in range(12)]
    ids = [i["id"] for i in (await upload(client, c["id"], *files))["created"]]
    engine = client.server.app[STUDIO_KEY].get().db.engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        if "images" in statement or "feedback" in statement:  # not the job runner's polling
            statements.append(statement)

    async def queries_for_page(limit: int) -> int:
        statements.clear()
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            r = await client.get(f"{V1}/characters/{c['id']}/images?status=all&limit={limit}")
            assert r.status == 200 and len((await r.json())["items"]) == limit
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
        return len(statements)

    await post(client, f"{V1}/images/decisions", {"image_ids": ids[:1], "decision": "reject", "note": "one"})
    one = await queries_for_page(1)
    await post(client, f"{V1}/images/decisions", {"image_ids": ids, "decision": "reject", "note": "all"})
    assert await queries_for_page(12) == one


async def test_a_pool_image_keeps_its_rejection_note(client):
    """An image of the unassigned pool has no feedback row (no character to learn for): its rejection's
    categories and note live on its decision log entry, and go with it when undone."""
    p = await make_project(client)
    files = [(f"{i}.png", image_bytes(size=(32, 32), seed=970 + i), "image/png") for i in range(2)]
    pool = [i["id"] for i in (await upload(client, None, *files, project_id=p["id"]))["created"]]
    rejected = await post(client, f"{V1}/images/{pool[0]}/reject", {"categories": ["not_solo"], "note": "a crowd"})
    assert rejected["character_id"] is None
    assert rejected["last_rejection"]["note"] == "a crowd" and rejected["last_rejection"]["categories"] == ["not_solo"]
    assert rejected["last_rejection"]["character_id"] is None
    listed = await (await client.get(f"{V1}/projects/{p['id']}/images?unassigned=true&status=all")).json()
    assert {i["id"]: i["last_rejection"] and i["last_rejection"]["note"] for i in listed["items"]} == {
        pool[0]: "a crowd", pool[1]: None}
    await post(client, f"{V1}/decisions/undo")
    assert (await (await client.get(f"{V1}/images/{pool[0]}")).json())["last_rejection"] is None


async def test_entries_logged_before_the_reasons_were_take_them_from_feedback(client):
    """A rejection logged before the log held reasons (categories and note NULL on its entry) shows the
    reason its feedback row has; a feedback row with no log entry at all (before the log existed) too."""
    from lora_studio.core.db import utcnow
    from lora_studio.core.schema import feedback, image_decisions

    p = await make_project(client)
    c = await make_character(client, p["id"])
    files = [(f"{i}.png", image_bytes(size=(32, 32), seed=980 + i), "image/png") for i in range(2)]
    old_entry, no_entry = [i["id"] for i in (await upload(client, c["id"], *files))["created"]]
    await post(client, f"{V1}/images/{old_entry}/reject", {"categories": ["wrong_pose"], "note": "leaning"})
    db = client.server.app[STUDIO_KEY].get().db
    with db.begin() as conn:
        conn.execute(image_decisions.update().where(image_decisions.c.image_id == old_entry).values(
            categories=None, note=None))
        conn.execute(feedback.insert().values(image_id=no_entry, character_id=c["id"], categories=["bad_quality"],
                                              note="from long ago", created_at=utcnow()))
    records = {i: (await (await client.get(f"{V1}/images/{i}")).json())["last_rejection"] for i in (old_entry, no_entry)}
    assert (records[old_entry]["note"], records[old_entry]["categories"]) == ("leaning", ["wrong_pose"])
    assert (records[no_entry]["note"], records[no_entry]["categories"]) == ("from long ago", ["bad_quality"])
