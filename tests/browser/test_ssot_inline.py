"""The character's SSOT design prompt and negative prompt edited inline in the Approvals tab: saved
through PATCH /characters/{id}, persisted across a reload, the effective negative prompt (style
negative + character negative + learned terms) shown and updated after a save and after a
rejection from the same view, and a refused save reported as an error toast with the server's
message while the database keeps the old value."""

from __future__ import annotations

import uuid

import pytest
from support.images import image_bytes
from support.studio_http import call, db_rows, open_panel, upload

pytestmark = pytest.mark.browser


def seed(server):
    tag = uuid.uuid4().hex[:8]
    project = call(server, "POST", "/projects", {"name": f"SSOT {tag}"})
    character = call(server, "POST", f"/projects/{project['id']}/characters",
                     {"name": f"Mika {tag}", "design_prompt": "1girl, silver hair", "negative_prompt": "lowres"})
    created = upload(server, character["id"], {f"ssot{i}.png": image_bytes("PNG", (64, 64), seed=9300 + i)
                                               for i in range(2)})["created"]
    assert len(created) == 2, created
    return project, character, created


def saved_prompts(server, character_id: int):
    return db_rows(server, "SELECT design_prompt, negative_prompt FROM characters WHERE id = ?", character_id)


def test_ssot_prompt_is_edited_inline_while_reviewing(page, studio_server):
    from playwright.sync_api import expect

    project, mika, (first, second) = seed(studio_server)
    call(studio_server, "POST", f"/images/{first['id']}/reject", {"categories": ["wrong_style"]})
    style_negative = call(studio_server, "GET", f"/projects/{project['id']}/style")["negative_template"]
    open_panel(page, studio_server, project, mika)  # Approvals is the first tab

    box = page.get_by_test_id("ssot-box")
    expect(box).to_be_visible()
    expect(page.get_by_test_id("ssot-character")).to_have_text(mika["name"])
    design, negative = page.get_by_test_id("ssot-design"), page.get_by_test_id("ssot-negative")
    effective = page.get_by_test_id("ssot-effective-negative")
    expect(design).to_have_value("1girl, silver hair")
    expect(negative).to_have_value("lowres")
    expect(effective).to_contain_text("lowres")
    expect(effective).to_contain_text("wrong art style")  # learned from the rejection
    expect(page.get_by_test_id("ssot-save")).to_be_disabled()  # nothing changed yet

    design.fill("1girl, silver hair, <b>red scarf</b>")
    negative.fill("lowres, extra fingers")
    expect(page.get_by_test_id("ssot-dirty")).to_be_visible()
    page.get_by_test_id("ssot-save").click()
    expect(page.get_by_test_id("toast").filter(has_text="SSOT prompt saved")).to_be_visible()
    expect(effective).to_contain_text("extra fingers")
    expect(page.get_by_test_id("ssot-save")).to_be_disabled()
    expect(page.get_by_test_id("ssot-dirty")).to_be_hidden()
    assert saved_prompts(studio_server, mika["id"]) == [("1girl, silver hair, <b>red scarf</b>", "lowres, extra fingers")]
    prompt = call(studio_server, "GET", f"/characters/{mika['id']}/prompt")
    assert prompt["negative"] == effective.text_content()  # exactly what generation uses
    first_style_term = next((t.strip() for t in style_negative.split(",") if t.strip()), "")
    if first_style_term:
        assert first_style_term in prompt["negative"]
    assert prompt["negative"].index("lowres") < prompt["negative"].index("wrong art style")  # stable order
    assert "red scarf" in prompt["positive"]

    # the page reloaded: the saved values come back from the server
    page.reload()
    expect(design).to_have_value("1girl, silver hair, <b>red scarf</b>")
    expect(negative).to_have_value("lowres, extra fingers")
    expect(effective).to_contain_text("extra fingers")
    expect(effective).to_contain_text("wrong art style")
    assert page.locator('[data-testid="ssot-box"] b').count() == 0  # text, never HTML

    # a rejection from the same view teaches a term: the effective negative follows
    page.get_by_test_id(f"reject-{second['id']}").click()
    page.get_by_test_id(f"reject-cat-{second['id']}-not_solo").check()
    page.get_by_test_id(f"reject-confirm-{second['id']}").click()
    expect(page.get_by_test_id(f"pending-card-{second['id']}")).to_have_count(0)
    expect(effective).to_contain_text("multiple characters")

    # the Characters tab shows the same SSOT
    page.get_by_test_id("tab-characters").click()
    expect(page.get_by_test_id("edit-design-prompt")).to_have_value("1girl, silver hair, <b>red scarf</b>")
    expect(page.get_by_test_id("effective-negative")).to_contain_text("extra fingers")


def test_a_refused_save_is_an_error_toast_and_keeps_the_edit(page, studio_server):
    from playwright.sync_api import expect

    project, mika, _ = seed(studio_server)
    open_panel(page, studio_server, project, mika)
    design = page.get_by_test_id("ssot-design")
    expect(design).to_have_value("1girl, silver hair")

    too_long = "x" * 10_001  # over the route's 10,000 characters
    design.fill(too_long)
    page.get_by_test_id("ssot-save").click()
    toast = page.get_by_test_id("toast").filter(has_text="Cannot save the SSOT prompt")
    expect(toast).to_be_visible()
    expect(toast).to_contain_text("design_prompt")
    expect(page.get_by_test_id("ssot-error")).to_contain_text("design_prompt")
    expect(page.get_by_test_id("ssot-save")).to_be_enabled()  # the edit is kept, to fix and retry
    expect(design).to_have_value(too_long)
    assert saved_prompts(studio_server, mika["id"]) == [("1girl, silver hair", "lowres")]

    page.get_by_test_id("ssot-revert").click()
    expect(design).to_have_value("1girl, silver hair")
    expect(page.get_by_test_id("ssot-save")).to_be_disabled()
