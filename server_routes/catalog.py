"""Projects, their generation style, characters and the characters' SSOT prompts."""

from __future__ import annotations

from typing import Any

from ..core.categories import CATEGORIES, validate_categories
from ..core.errors import InvalidInput
from ..core.style import StyleChanges
from ..core.validation import Field, Spec, parse_limit, validate
from .api import Api, Req

PROJECT_SPEC: Spec = {
    "name": Field(str, required=True, max_len=200),
    "description": Field(str, max_len=5000),
}

STYLE_SPEC: Spec = {
    "checkpoint": Field(str, max_len=500, description="checkpoint file name as ComfyUI lists it"),
    "sampler": Field(str, max_len=100, description="a sampler ComfyUI has (GET /samplers) or a human name like "
                     "'DPM++ 2M Karras' (which brings its scheduler); others are refused with close matches"),
    "scheduler": Field(str, max_len=100, description="a scheduler ComfyUI has (GET /samplers), e.g. karras"),
    "steps": Field(int, min=1, max=200),
    "cfg": Field(float, min=0.0, max=100.0),
    "width": Field(int, min=64, max=4096),
    "height": Field(int, min=64, max=4096),
    "clip_skip": Field(int, min=1, max=12),
    "positive_template": Field(str, max_len=5000),
    "negative_template": Field(str, max_len=5000),
    "lora_strength": Field(float, min=-10.0, max=10.0),
    "variations": Field(list, item=Field(str, required=True, max_len=500), max_items=200,
                        description="pose/expression snippets batch generation adds, one per image in turn"),
}

CHARACTER_SPEC: Spec = {
    "name": Field(str, required=True, max_len=200),
    "design_prompt": Field(str, max_len=10000, description="the single source of truth for the character's look"),
    "negative_prompt": Field(str, max_len=10000),
    "trigger_word": Field(str, max_len=200),
}

DROPPED_TERMS_SPEC: Spec = {
    "terms": Field(list, required=True, item=Field(str, required=True, max_len=200)),
}

TERMS_MAX_LEN = 2000
FEEDBACK_TERMS_SCHEMA = {"type": "object", "additionalProperties": False, "properties": {
    c: {"type": "string", "maxLength": TERMS_MAX_LEN, "nullable": True} for c in CATEGORIES}}


def feedback_terms_body(body: Any) -> dict[str, str | None]:
    """{"<category>": "term, term" | null (back to the default)}, checked (FEEDBACK_TERMS_SCHEMA)."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    validate_categories(list(body))  # unknown categories are refused
    for category, terms in body.items():
        if terms is not None and (not isinstance(terms, str) or len(terms) > TERMS_MAX_LEN):
            raise InvalidInput(f"'{category}' must be a string of terms (at most {TERMS_MAX_LEN} characters) or null")
    return body

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


PAGE = {"limit": "1-500 (default 50)", "cursor": "from next_cursor"}


@routes.route("GET", "/projects", "List projects, by name", query=PAGE, tag="projects", response="ProjectPage")
async def list_projects(r: Req):
    limit, cursor = parse_limit(r.q("limit")), r.q("cursor")
    return await r.call(lambda s: s.projects.list(limit, cursor))


@routes.route("POST", "/projects", "Create a project (with the default generation style)", body=PROJECT_SPEC,
              tag="projects", status=201, response="Project")
async def create_project(r: Req):
    data = validate(await r.json(), PROJECT_SPEC)
    return await r.call(lambda s: s.projects.create(**data))


@routes.route("GET", "/projects/{project_id}", "Get a project", tag="projects", response="Project")
async def get_project(r: Req):
    pid = r.int_param("project_id")
    return await r.call(lambda s: s.projects.get(pid))


@routes.route("PATCH", "/projects/{project_id}", "Update a project", body=PROJECT_SPEC, tag="projects", response="Project")
async def update_project(r: Req):
    pid, data = r.int_param("project_id"), validate(await r.json(), PROJECT_SPEC, partial=True)
    return await r.call(lambda s: s.projects.update(pid, **data))


@routes.route("DELETE", "/projects/{project_id}", "Delete a project without characters", tag="projects",
              response="Deleted")
async def delete_project(r: Req):
    pid = r.int_param("project_id")
    return await r.call(lambda s: s.projects.delete(pid))


@routes.route("GET", "/projects/{project_id}/style", "Get the project's generation style", tag="projects",
              response="Style")
async def get_style(r: Req):
    pid = r.int_param("project_id")
    return await r.call(lambda s: s.projects.get_style(pid))


@routes.route("PATCH", "/projects/{project_id}/style", "Change fields of the project's generation style",
              body=STYLE_SPEC, tag="projects", response="Style")
async def update_style(r: Req):
    pid, changes = r.int_param("project_id"), StyleChanges(**validate(await r.json(), STYLE_SPEC, partial=True))
    return await r.call(lambda s: s.projects.update_style(pid, changes))


@routes.route("GET", "/samplers",
              "Sampler and scheduler names for the style: ComfyUI's (from its /object_info, cached briefly; its standard "
              "lists while it does not answer) and the human names that map to them", tag="projects", response="Samplers")
async def list_samplers(r: Req):
    return await r.call(lambda s: s.samplers.lists())


@routes.route("GET", "/checkpoints",
              "The checkpoints ComfyUI offers (its CheckpointLoaderSimple list, asked each time with a 2 s limit), for "
              "the style's checkpoint; source 'unavailable' (and no items) while ComfyUI does not answer",
              tag="projects", response="Checkpoints")
async def list_checkpoints(r: Req):
    def ask(s):
        from ..core.errors import StudioError
        from ..core.samplers import combo_choices

        try:
            info = s.comfyui().object_info("CheckpointLoaderSimple", timeout=2.0)
        except StudioError as e:
            return {"items": [], "source": "unavailable", "message": e.message}
        return {"items": combo_choices(info, "CheckpointLoaderSimple", "ckpt_name") or [], "source": "comfyui"}

    return await r.call(ask)


@routes.route("GET", "/projects/{project_id}/characters", "List a project's characters, by name", query=PAGE,
              tag="characters", response="CharacterPage")
async def list_project_characters(r: Req):
    pid, limit, cursor = r.int_param("project_id"), parse_limit(r.q("limit")), r.q("cursor")
    return await r.call(lambda s: s.characters.list(pid, limit, cursor))


@routes.route("GET", "/characters", "List all characters, by name", query=PAGE, tag="characters", response="CharacterPage")
async def list_characters(r: Req):
    limit, cursor = parse_limit(r.q("limit")), r.q("cursor")
    return await r.call(lambda s: s.characters.list(None, limit, cursor))


@routes.route("POST", "/projects/{project_id}/characters", "Create a character", body=CHARACTER_SPEC,
              tag="characters", status=201, response="Character")
async def create_character(r: Req):
    pid, data = r.int_param("project_id"), validate(await r.json(), CHARACTER_SPEC)
    return await r.call(lambda s: s.characters.create(pid, **data))


@routes.route("GET", "/characters/{character_id}", "Get a character", tag="characters", response="Character")
async def get_character(r: Req):
    cid = r.int_param("character_id")
    return await r.call(lambda s: s.characters.get(cid))


@routes.route("PATCH", "/characters/{character_id}", "Update a character (the SSOT design prompt lives here)",
              body=CHARACTER_SPEC, tag="characters", response="Character")
async def update_character(r: Req):
    cid, data = r.int_param("character_id"), validate(await r.json(), CHARACTER_SPEC, partial=True)
    return await r.call(lambda s: s.characters.update(cid, **data))


@routes.route("DELETE", "/characters/{character_id}",
              "Delete a character; its images (files and statuses) move to the project's unassigned pool",
              tag="characters", response="CharacterDeleted")
async def delete_character(r: Req):
    cid = r.int_param("character_id")
    return await r.call(lambda s: s.character_removal.delete(cid))


@routes.route("GET", "/characters/{character_id}/prompt",
              "The prompts generation uses: style + SSOT design prompt, and the effective negative prompt",
              tag="characters", response="CharacterPrompt")
async def character_prompt(r: Req):
    cid = r.int_param("character_id")
    return await r.call(lambda s: s.characters.prompt(cid))


@routes.route("GET", "/projects/{project_id}/feedback-terms",
              "The negative terms each rejection category teaches this project's characters", tag="feedback",
              response="FeedbackTerms")
async def get_feedback_terms(r: Req):
    pid = r.int_param("project_id")
    return await r.call(lambda s: s.feedback.terms(pid))


@routes.route("PATCH", "/projects/{project_id}/feedback-terms",
              "Set a category's terms for this project ({category: \"terms\" | null for the default})", tag="feedback",
              body_schema=FEEDBACK_TERMS_SCHEMA, response="FeedbackTerms")
async def set_feedback_terms(r: Req):
    pid, terms = r.int_param("project_id"), feedback_terms_body(await r.json())
    return await r.call(lambda s: s.feedback.set_terms(pid, terms))


@routes.route("PUT", "/characters/{character_id}/dropped-terms",
              "Learned negative terms to leave out of the character's prompt ({\"terms\": [...]})", tag="feedback",
              body=DROPPED_TERMS_SPEC, response="CharacterPrompt")
async def set_dropped_terms(r: Req):
    cid, terms = r.int_param("character_id"), validate(await r.json(), DROPPED_TERMS_SPEC)["terms"]
    return await r.call(lambda s: s.feedback.set_dropped(cid, terms))
