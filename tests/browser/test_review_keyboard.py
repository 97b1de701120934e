"""Keyboard-first review, end to end against the standalone server: 30 images decided in the wide workspace
with the keyboard alone (approvals, rejections with categories toggled by 1–6, a note and a caption typed
after N / E, one undo) and every decision read back through the API; the SSOT prompt, the effective
negative prompt and the top rejection reasons in sight and updated; thumbnails asked for at 256 px and the
next full images fetched ahead; Shift-click and box selection decided as batches by key; keys typed into a
field stay in the field; an image moved to another character from the same view."""

from __future__ import annotations

import random
import re
import time
import uuid

import pytest
from support.images import noise_png
from support.studio_http import call, db_rows, open_panel
from support.studio_http import upload as upload_files

pytestmark = pytest.mark.browser

CATEGORIES = ["wrong_appearance", "wrong_style", "bad_quality", "not_solo", "wrong_pose", "wrong_expression"]


def seed(server, n_images: int, characters: int = 1):
    tag = uuid.uuid4().hex[:8]
    project = call(server, "POST", "/projects", {"name": f"Keys {tag}"})
    chars = [call(server, "POST", f"/projects/{project['id']}/characters",
                  {"name": f"{name} {tag}", "design_prompt": "1girl, silver hair, red scarf"})
             for name in ["Mika", "Rin"][:characters]]
    base = random.Random(tag).randrange(1 << 30)
    answer = upload_files(server, chars[0]["id"], {f"k{i:02d}.png": noise_png(base + i) for i in range(n_images)})
    assert len(answer["created"]) == n_images, answer["skipped"]
    return project, chars, answer["created"]


def image(server, image_id: int) -> dict:
    return call(server, "GET", f"/images/{image_id}")


def eventually(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def open_workspace_by_keyboard(page):
    from playwright.sync_api import expect

    page.get_by_test_id("open-workspace").focus()
    page.keyboard.press("Enter")
    ws = page.get_by_test_id("workspace")
    expect(ws).to_be_visible()
    return ws


def grid_order(ws) -> list[int]:
    return [int(x) for x in ws.locator('[data-testid="pending-grid"] > [data-image-id]').evaluate_all(
        "(els) => els.map((e) => e.dataset.imageId)")]


def test_thirty_images_reviewed_with_the_keyboard_alone(page, studio_server):
    from playwright.sync_api import expect

    project, (mika,), created = seed(studio_server, 32)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    # a listener where ComfyUI's keybindings listen (window, bubble phase): no review key may reach it
    page.add_init_script("window.__leaked = []; window.addEventListener('keydown', (e) => window.__leaked.push(e.key));")
    open_panel(page, studio_server, project, mika)
    ws = open_workspace_by_keyboard(page)
    page.evaluate("window.__leaked = []")  # from here on the workspace is open
    grid = ws.get_by_test_id("pending-grid")
    expect(grid).to_be_focused()
    expect(ws.locator('[data-testid="pending-grid"] > [data-image-id]')).to_have_count(32)
    order = grid_order(ws)
    assert sorted(order) == sorted(img["id"] for img in created)
    expect(grid).to_have_attribute("data-current", str(order[0]))
    positive = ws.get_by_test_id("review-positive")
    expect(positive).to_contain_text("1girl, silver hair, red scarf")  # the SSOT prompt, in sight
    expect(ws.get_by_test_id("review-negative")).to_be_visible()

    # thumbnails are asked for at 256 px (the tile falls back to the file if the route fails), and the next
    # full images are fetched before they are shown
    assert any(f"/images/{order[0]}/thumb?size=256" in u for u in requests)
    page.wait_for_function("""() => [...document.querySelectorAll('[data-testid="workspace"] [data-testid^="pending-img-"]')]
                                .slice(0, 6).every((i) => i.complete && i.naturalWidth > 0)""")
    for ahead in order[1:4]:
        assert eventually(lambda a=ahead: any(u.endswith(f"/images/{a}/file") for u in requests)), ahead

    expected: dict[int, tuple[str, list[str], str]] = {}  # id -> (status, categories, note)
    plan = []
    for i, image_id in enumerate(order[:30]):
        if i % 3 == 1:
            cats = [CATEGORIES[i % 6], CATEGORIES[(i + 2) % 6]]
            plan.append((image_id, "reject", cats))
        else:
            plan.append((image_id, "approve", []))

    def decide(image_id, how, cats):
        expect(grid).to_have_attribute("data-current", str(image_id))
        if how == "approve":
            page.keyboard.press("a")
            expected[image_id] = ("approved", [], "")
        else:
            for cat in cats:
                page.keyboard.press(str(CATEGORIES.index(cat) + 1))
            page.keyboard.press("r")
            expected[image_id] = ("rejected", cats, "")

    for step, (image_id, how, cats) in enumerate(plan):
        if step == 12:
            # a rejection with a note typed after N: the "a"s and "r"s in it stay in the field
            expect(grid).to_have_attribute("data-current", str(image_id))
            page.keyboard.press("3")
            page.keyboard.press("n")
            expect(ws.get_by_test_id(f"reject-note-{image_id}")).to_be_focused()
            page.keyboard.type("hands are a bit wrong")
            page.keyboard.press("Enter")  # rejects, back to the keys
            expected[image_id] = ("rejected", ["bad_quality"], "hands are a bit wrong")
            continue
        if step == 15:
            # a caption typed after E (Enter saves), then the decision
            expect(grid).to_have_attribute("data-current", str(image_id))
            page.keyboard.press("e")
            caption = ws.get_by_test_id(f"caption-{image_id}")
            expect(caption).to_be_focused()
            page.keyboard.type("1girl, arms up, reading")
            page.keyboard.press("Enter")
            expect(grid).to_be_focused()
            assert eventually(lambda i=image_id: image(studio_server, i)["caption"] == "1girl, arms up, reading")
        decide(image_id, how, cats)
        if step == 20:
            # one undo: the last decision is taken back and the image is current again; decided anew
            page.keyboard.press("u")
            expect(grid).to_have_attribute("data-current", str(image_id))
            expect(ws.get_by_test_id(f"approve-{image_id}")).to_be_visible()
            assert eventually(lambda i=image_id: image(studio_server, i)["status"] == "pending")
            page.keyboard.press("2")
            page.keyboard.press("r")
            expected[image_id] = ("rejected", ["wrong_style"], "")

    # the two left are still pending and the current one is the first of them
    expect(grid).to_have_attribute("data-current", str(order[30]))
    expect(ws.locator('[data-testid="pending-grid"] > [data-image-id]')).to_have_count(2)

    # the database, through the API, reflects every decision
    def all_done():
        return all(image(studio_server, i)["status"] == want[0] for i, want in expected.items())
    assert eventually(all_done), {i: image(studio_server, i)["status"] for i in expected}
    assert len(expected) == 30
    for image_id, (status, cats, note) in expected.items():
        record = image(studio_server, image_id)
        assert record["status"] == status, (image_id, record)
        if status == "rejected":
            assert sorted(record["last_rejection"]["categories"]) == sorted(cats), (image_id, record)
            assert record["last_rejection"]["note"] == note
        else:
            assert record["last_rejection"] is None, record
    assert {image(studio_server, i)["status"] for i in order[30:]} == {"pending"}

    # the reasons in sight follow the rejections; the effective negative prompt has learned from them
    prompt = call(studio_server, "GET", f"/characters/{mika['id']}/prompt")
    top = max(prompt["category_counts"].items(), key=lambda kv: kv[1])
    expect(ws.get_by_test_id(f"top-reason-{top[0]}")).to_have_attribute("data-count", str(top[1]))
    expect(ws.get_by_test_id("review-negative")).to_have_text(prompt["negative"])
    assert "wrong art style" in prompt["negative"]
    expect(ws.get_by_test_id("rejection-notes")).to_contain_text("hands are a bit wrong")
    counts = call(studio_server, "GET", "/characters?limit=500")["items"]
    mine = next(c for c in counts if c["id"] == mika["id"])["counts"]
    assert mine == {"pending": 2, "approved": sum(1 for s, _, _ in expected.values() if s == "approved")}
    expect(page.get_by_test_id("pending-count")).to_have_text("2")

    # nothing reached the window's keydown listeners (ComfyUI's keybindings) while the workspace was open
    assert page.evaluate("window.__leaked") == []


def test_shift_click_and_box_select_are_decided_by_key(page, studio_server):
    from playwright.sync_api import expect

    project, (mika,), created = seed(studio_server, 9)
    open_panel(page, studio_server, project, mika)
    page.get_by_test_id("open-workspace").click()
    ws = page.get_by_test_id("workspace")
    tiles = ws.locator('[data-testid="pending-grid"] > [data-image-id]')
    expect(tiles).to_have_count(9)
    order = grid_order(ws)

    # click the first, Shift-click the fourth: four selected; A approves them as one batch
    tiles.nth(0).locator(".ls-thumb").click()
    tiles.nth(3).locator(".ls-thumb").click(modifiers=["Shift"])
    expect(ws.get_by_test_id("selected-count")).to_have_text("4 selected")
    for i in range(4):
        expect(ws.get_by_test_id(f"select-{order[i]}")).to_be_checked()
    page.keyboard.press("a")
    expect(tiles).to_have_count(5)
    statuses = {i: image(studio_server, i)["status"] for i in order}
    assert [statuses[i] for i in order] == ["approved"] * 4 + ["pending"] * 5
    marks = ",".join("?" * 4)
    batches = db_rows(studio_server, f"SELECT DISTINCT batch FROM image_decisions WHERE image_id IN ({marks})", *order[:4])
    assert len(batches) == 1  # one transaction

    # a box drawn across the next two tiles selects them; R asks for a reason, 3 chooses one, R rejects
    first, second = tiles.nth(0).bounding_box(), tiles.nth(1).bounding_box()
    page.mouse.move(first["x"] + first["width"] / 2, first["y"] + first["height"] / 2)
    page.mouse.down()
    page.mouse.move(first["x"] + first["width"] - 3, first["y"] + first["height"] / 2 + 4, steps=3)
    page.mouse.move(second["x"] + second["width"] / 2, second["y"] + second["height"] / 2 + 6, steps=4)
    expect(page.get_by_test_id("box-select")).to_be_visible()
    page.mouse.up()
    expect(page.get_by_test_id("box-select")).to_have_count(0)
    expect(ws.get_by_test_id("selected-count")).to_have_text("2 selected")
    page.keyboard.press("r")
    expect(ws.get_by_test_id("batch-reject-form")).to_be_visible()
    page.keyboard.press("3")
    expect(ws.get_by_test_id("batch-cat-bad_quality")).to_be_checked()
    page.keyboard.press("r")
    expect(tiles).to_have_count(3)
    for i in order[4:6]:
        record = image(studio_server, i)
        assert record["status"] == "rejected" and record["last_rejection"]["categories"] == ["bad_quality"], record
    assert {image(studio_server, i)["status"] for i in order[6:]} == {"pending"}


def test_keys_stay_in_fields_and_an_image_moves_from_the_same_view(page, studio_server):
    from playwright.sync_api import expect

    project, (mika, rin), created = seed(studio_server, 3, characters=2)
    open_panel(page, studio_server, project, mika)  # the sidebar: keys work there too
    grid = page.get_by_test_id("pending-grid")
    first = created[0]["id"]
    expect(page.get_by_test_id(f"pending-card-{first}")).to_be_visible()
    grid.focus()
    order = [int(x) for x in page.locator('[data-testid="pending-grid"] > [data-image-id]').evaluate_all(
        "(els) => els.map((e) => e.dataset.imageId)")]
    expect(grid).to_have_attribute("data-current", str(order[0]))

    page.keyboard.press("ArrowRight")
    expect(grid).to_have_attribute("data-current", str(order[1]))
    expect(page.get_by_test_id(f"pending-card-{order[1]}")).to_have_class(re.compile(r"\bls-current\b"))
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("e")  # caption of the current image
    expect(page.get_by_test_id(f"caption-{order[0]}")).to_be_focused()
    page.keyboard.type("a u r 1 2")  # review keys, typed as text
    page.keyboard.press("Escape")  # back to the keys, the caption not saved
    expect(grid).to_be_focused()
    expect(page.get_by_test_id(f"caption-save-{order[0]}")).to_be_enabled()
    assert {image(studio_server, i)["status"] for i in order} == {"pending"}
    assert image(studio_server, order[0])["caption"] == ""

    page.keyboard.press("n")  # the note of the current image: the reject form opens
    expect(page.get_by_test_id(f"reject-note-{order[0]}")).to_be_focused()
    page.keyboard.type("a")
    page.keyboard.press("Escape")
    page.keyboard.press("r")  # a note is given: R rejects
    expect(page.get_by_test_id(f"pending-card-{order[0]}")).to_have_count(0)
    assert eventually(lambda: image(studio_server, order[0])["status"] == "rejected")
    assert image(studio_server, order[0])["last_rejection"]["note"] == "a"
    expect(grid).to_have_attribute("data-current", str(order[1]))

    # reassign from the workspace's detail, the same view the keys work in, by keys too
    page.keyboard.press("w")
    ws = page.get_by_test_id("workspace")
    expect(ws).to_be_visible()
    page.keyboard.press("m")  # "Move to…" opens its list; typing the name picks it, Enter moves the image
    expect(ws.get_by_test_id(f"move-{order[1]}")).to_be_focused()
    page.keyboard.type(rin["name"])
    page.keyboard.press("Enter")
    expect(ws.get_by_test_id(f"pending-card-{order[1]}")).to_have_count(0)
    assert eventually(lambda: image(studio_server, order[1])["character_id"] == rin["id"])
    expect(ws.get_by_test_id("pending-grid")).to_have_attribute("data-current", str(order[2]))
    expect(ws.get_by_test_id("review-detail")).to_have_attribute("data-image-id", str(order[2]))
    expect(ws.get_by_test_id("pending-grid")).to_be_focused()  # back to the keys


def test_the_queue_loads_on_as_the_keys_reach_its_end_and_thumbnails_fall_back(page, studio_server):
    from playwright.sync_api import expect

    project, (mika,), created = seed(studio_server, 52)  # more than a page (48)
    # a server whose thumbnails fail: each tile shows the file instead (one swap, no loop)
    thumbs: list[str] = []

    def refuse(route):
        thumbs.append(route.request.url)
        route.fulfill(status=404, content_type="application/json", body='{"error": {"code": "not_found"}}')
    page.route("**/thumb?size=256", refuse)
    open_panel(page, studio_server, project, mika)
    ws = open_workspace_by_keyboard(page)
    tiles = ws.locator('[data-testid="pending-grid"] > [data-image-id]')
    expect(tiles).to_have_count(48)
    first = tiles.first.locator("img")
    page.wait_for_function("""() => { const i = document.querySelector('[data-testid="workspace"] [data-testid="pending-grid"] img');
                                      return i && i.complete && i.naturalWidth > 0; }""")
    assert first.get_attribute("src").endswith(f"/images/{tiles.first.get_attribute('data-image-id')}/file")
    assert thumbs and all("/thumb?size=256" in u for u in thumbs)

    # End goes to the last loaded image; being near the end loads the next page, and the keys go on into it
    page.keyboard.press("End")
    expect(tiles).to_have_count(52)
    order = grid_order(ws)
    assert sorted(order) == sorted(img["id"] for img in created)
    expect(ws.get_by_test_id("pending-grid")).to_have_attribute("data-current", str(order[47]))
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    expect(ws.get_by_test_id("pending-grid")).to_have_attribute("data-current", str(order[51]))
    page.keyboard.press("a")
    assert eventually(lambda: image(studio_server, order[51])["status"] == "approved")
    expect(ws.get_by_test_id("pending-grid")).to_have_attribute("data-current", str(order[50]))  # the one before
