"""The feedback loop: per-project category terms, dropping a learned term, counts per category."""

from __future__ import annotations

from support.api import V1, assert_error, make_character, make_project, upload
from support.images import image_bytes


async def rejected_character(client, categories_per_image):
    p = await make_project(client)
    c = await make_character(client, p["id"], negative_prompt="extra fingers")
    files = [(f"{i}.png", image_bytes(size=(32, 32), seed=300 + i), "image/png") for i in range(len(categories_per_image))]
    created = (await upload(client, c["id"], *files))["created"]
    for img, cats in zip(created, categories_per_image, strict=True):
        r = await client.post(f"{V1}/images/{img['id']}/reject", json={"categories": cats})
        assert r.status == 200
    return p, c


async def prompt_of(client, c):
    return await (await client.get(f"{V1}/characters/{c['id']}/prompt")).json()


async def test_project_terms_replace_the_defaults(client):
    p, c = await rejected_character(client, [["not_solo"], ["wrong_pose", "not_solo"]])
    before = await prompt_of(client, c)
    assert before["learned_terms"] == ["multiple characters", "crowd", "group shot", "awkward pose", "unnatural position"]
    assert before["category_counts"]["not_solo"] == 2 and before["category_counts"]["wrong_pose"] == 1
    r = await client.patch(f"{V1}/projects/{p['id']}/feedback-terms", json={"not_solo": "2girls, multiple girls"})
    terms = await r.json()
    assert terms["terms"]["not_solo"] == "2girls, multiple girls"
    assert terms["defaults"]["not_solo"] == "multiple characters, crowd, group shot"
    after = await prompt_of(client, c)
    assert after["learned_terms"] == ["2girls", "multiple girls", "awkward pose", "unnatural position"]
    assert after["negative"] == ("worst quality, low quality, blurry, deformed, extra fingers, 2girls, multiple girls, "
                                 "awkward pose, unnatural position")
    # null restores the default
    await client.patch(f"{V1}/projects/{p['id']}/feedback-terms", json={"not_solo": None})
    assert (await prompt_of(client, c))["learned_terms"][0] == "multiple characters"
    await assert_error(await client.patch(f"{V1}/projects/{p['id']}/feedback-terms", json={"ugly": "x"}), 400)
    await assert_error(await client.patch(f"{V1}/projects/{p['id']}/feedback-terms", json={"not_solo": 5}), 400)
    await assert_error(await client.patch(f"{V1}/projects/999/feedback-terms", json={}), 404)


async def test_a_user_can_drop_a_learned_term(client):
    _, c = await rejected_character(client, [["bad_quality"]])
    r = await client.put(f"{V1}/characters/{c['id']}/dropped-terms", json={"terms": ["Blurry", "artifacts"]})
    body = await r.json()
    assert body["learned_terms"] == ["low quality", "distorted"]
    assert body["dropped_terms"] == ["Blurry", "artifacts"]
    # the style's own "blurry" stays: only the learned term is dropped
    assert body["negative"] == "worst quality, low quality, blurry, deformed, extra fingers, distorted"
    body = await (await client.put(f"{V1}/characters/{c['id']}/dropped-terms", json={"terms": []})).json()
    assert body["learned_terms"] == ["blurry", "low quality", "artifacts", "distorted"]
    await assert_error(await client.put(f"{V1}/characters/{c['id']}/dropped-terms", json={"terms": [""]}), 400)
    await assert_error(await client.put(f"{V1}/characters/{c['id']}/dropped-terms", json={}), 400)
