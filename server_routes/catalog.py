"""Projects, their generation style, characters and the characters' SSOT prompts."""

from __future__ import annotations

from ..core.categories import CATEGORIES
from ..core.specs import CHARACTER_SPEC, PROJECT_SPEC, STYLE_SPEC
from ..core.validation import Field, parse_limit
from .api import Api, Req

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
    body = await r.json()
    return await r.call(lambda s: s.projects.create(body))


@routes.route("GET", "/projects/{project_id}", "Get a project", tag="projects", response="Project")
async def get_project(r: Req):
    pid = r.int_param("project_id")
    return await r.call(lambda s: s.projects.get(pid))


@routes.route("PATCH", "/projects/{project_id}", "Update a project", body=PROJECT_SPEC, tag="projects", response="Project")
async def update_project(r: Req):
    pid, body = r.int_param("project_id"), await r.json()
    return await r.call(lambda s: s.projects.update(pid, body))


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
    pid, body = r.int_param("project_id"), await r.json()
    return await r.call(lambda s: s.projects.update_style(pid, body))


@routes.route("GET", "/samplers",
           "Sampler and scheduler names for the style: ComfyUI's (from its /object_info, cached briefly; its standard "
           "lists while it does not answer) and the human names that map to them", tag="projects", response="Samplers")
async def list_samplers(r: Req):
    return await r.call(lambda s: s.samplers.lists())


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
    pid, body = r.int_param("project_id"), await r.json()
    return await r.call(lambda s: s.characters.create(pid, body))


@routes.route("GET", "/characters/{character_id}", "Get a character", tag="characters", response="Character")
async def get_character(r: Req):
    cid = r.int_param("character_id")
    return await r.call(lambda s: s.characters.get(cid))


@routes.route("PATCH", "/characters/{character_id}", "Update a character (the SSOT design prompt lives here)",
           body=CHARACTER_SPEC, tag="characters", response="Character")
async def update_character(r: Req):
    cid, body = r.int_param("character_id"), await r.json()
    return await r.call(lambda s: s.characters.update(cid, body))


@routes.route("DELETE", "/characters/{character_id}",
           "Delete a character; its images (files and statuses) move to the project's unassigned pool",
           tag="characters", response="CharacterDeleted")
async def delete_character(r: Req):
    cid = r.int_param("character_id")
    return await r.call(lambda s: s.delete_character(cid))


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
           body_schema={"type": "object", "additionalProperties": False, "properties": {
               c: {"type": "string", "maxLength": 2000, "nullable": True} for c in CATEGORIES}},
           response="FeedbackTerms")
async def set_feedback_terms(r: Req):
    pid, body = r.int_param("project_id"), await r.json()
    return await r.call(lambda s: s.feedback.set_terms(pid, body))


@routes.route("PUT", "/characters/{character_id}/dropped-terms",
           "Learned negative terms to leave out of the character's prompt ({\"terms\": [...]})", tag="feedback",
           body={"terms": Field(list, required=True, item=Field(str, required=True, max_len=200))},
           response="CharacterPrompt")
async def set_dropped_terms(r: Req):
    cid, body = r.int_param("character_id"), await r.json()
    return await r.call(lambda s: s.feedback.set_dropped(cid, body))
