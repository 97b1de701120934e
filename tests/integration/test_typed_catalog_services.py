"""The catalogue and generation services take typed arguments (the routes validate request bodies with
their specs), records cross services as dataclasses, and the composition root only builds and wires:
every Studio attribute is declared with its type, and no workflow is left on it."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["core/projects.py", "core/characters.py", "core/feedback.py", "generation/service.py",
            "generation/regenerate.py", "datasets/export.py", "datasets/character_removal.py"]


@pytest.mark.parametrize("path", SERVICES)
def test_the_services_validate_no_request_bodies(path):
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    imported = {((node.module or "").lstrip("."), alias.name) for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert not [m for m, _ in imported if m.endswith("specs")], f"{path} imports request specs"
    assert not [n for m, n in imported if n == "validate"], f"{path} validates bodies"
    bodies = [f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)
              and any(a.arg == "body" for a in f.args.args + f.args.kwonlyargs)]
    assert not bodies, f"{path}: {bodies} take a raw body"


def _params(fn, skip: int) -> set[str]:
    return set(list(inspect.signature(fn).parameters)[skip:])


def test_the_route_specs_name_the_typed_arguments():
    """Each spec's fields are exactly the keywords the routes pass on (`**validate(body, SPEC)`)."""
    from lora_studio.core.characters import CharacterService
    from lora_studio.core.projects import ProjectService
    from lora_studio.core.style import DEFAULT_STYLE, StyleChanges
    from lora_studio.generation.service import GenerationRequest
    from lora_studio.server_routes.catalog import CHARACTER_SPEC, PROJECT_SPEC, STYLE_SPEC
    from lora_studio.server_routes.generation import BATCH_SPEC, GENERATE_SPEC

    assert _params(ProjectService.create, 1) == set(PROJECT_SPEC) == _params(ProjectService.update, 2)
    assert _params(CharacterService.create, 2) == set(CHARACTER_SPEC) == _params(CharacterService.update, 2)
    assert {f.name for f in dataclasses.fields(StyleChanges)} == set(STYLE_SPEC) == set(DEFAULT_STYLE)
    assert {f.name for f in dataclasses.fields(GenerationRequest)} == set(GENERATE_SPEC)
    assert set(BATCH_SPEC) - {"count", "in_flight"} <= set(GENERATE_SPEC)


def test_typed_calls(studio):
    from lora_studio.core.characters import Character, CharacterPrompt
    from lora_studio.core.errors import Conflict, InvalidInput, NotFound
    from lora_studio.core.style import StyleChanges

    project = studio.projects.create("Moon", "night sky")
    assert (project.name, project.slug, project.description) == ("Moon", "moon", "night sky")
    assert studio.projects.update(project.id, name="Moon II").description == "night sky"  # None: unchanged
    with pytest.raises(InvalidInput, match="at least one letter or digit"):
        studio.projects.create("!!!")
    style = studio.projects.update_style(project.id, StyleChanges(steps=30, width=512))
    assert (style.steps, style.width, style.height) == (30, 512, 768)
    with pytest.raises(InvalidInput, match="multiple of 8"):  # a rule the spec cannot say stays in the service
        studio.projects.update_style(project.id, StyleChanges(height=100))

    aiko = studio.characters.create(project.id, "Aiko", trigger_word="aikotnk")
    assert isinstance(aiko, Character) and dataclasses.is_dataclass(aiko)
    assert (aiko.slug, aiko.trigger_word, aiko.design_prompt, aiko.project_slug) == ("aiko", "aikotnk", "", "moon")
    with pytest.raises(dataclasses.FrozenInstanceError):
        aiko.name = "Beni"  # type: ignore[misc]
    changed = studio.characters.update(aiko.id, design_prompt="1girl, silver hair")
    assert (changed.design_prompt, changed.trigger_word, changed.slug) == ("1girl, silver hair", "aikotnk", "aiko")
    assert studio.characters.find("moon", "Aiko") == studio.characters.get(aiko.id) == changed
    with pytest.raises(Conflict):
        studio.characters.create(project.id, "aiko")
    with pytest.raises(NotFound):
        studio.characters.create(12345, "Beni")

    studio.feedback.set_terms(project.id, {"not_solo": "2girls", "bad_quality": None})
    with pytest.raises(InvalidInput, match="unknown rejection categories"):
        studio.feedback.set_terms(project.id, {"ugly": "x"})
    prompt = studio.feedback.set_dropped(aiko.id, [" blurry ", "blurry"])
    assert isinstance(prompt, CharacterPrompt) and prompt.dropped_terms == ["blurry"]
    assert "2girls" not in prompt.negative  # nothing rejected yet: nothing learned

    studio.jobs.submit("regenerate", {"character_id": aiko.id}, character_id=aiko.id)  # queued: no runner started
    with pytest.raises(Conflict, match="regenerate job"):
        studio.character_removal.delete(aiko.id)


def test_the_studio_declares_every_attribute_and_holds_no_workflow():
    from lora_studio.studio import Studio

    tree = ast.parse((REPO / "studio.py").read_text(encoding="utf-8"))
    init = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assigned = {t.attr for n in ast.walk(init) if isinstance(n, ast.Assign) for t in n.targets
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    assert assigned and assigned <= set(Studio.__annotations__), assigned - set(Studio.__annotations__)
    methods = {n for n, v in vars(Studio).items() if inspect.isfunction(v)}
    assert methods <= {"__init__", "comfyui", "health", "start", "close"}, methods
