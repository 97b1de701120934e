"""The OpenAPI 3 document, generated from the route declarations (`api.route`): every path and
query parameter with its type and bounds, JSON and multipart bodies, and every status a route
answers with its shape. The fuzz test (tests/integration/test_fuzz_api.py) holds the server to it."""

from __future__ import annotations

import copy
import re
from typing import Any

from ..core.validation import ID_MAX, Field, spec_schema
from .api import PREFIX, STATE_CHANGING, Api, RouteSpec

# Path ids are read by `parse_id` (ASCII digits, at most ID_MAX).
ID_SCHEMA = {"type": "integer", "minimum": 0, "maximum": ID_MAX}
# Other path parameters are names (e.g. a training sample's file name).
NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 255}

ERROR_TEXT = {
    400: "bad input (a malformed id, parameter or body)",
    403: "a Host name the studio does not serve, or a state-changing request from a page of another origin",
    404: "something the request names does not exist",
    409: "the request conflicts with the current state",
    413: "the body is larger than its limit",
    415: "a body that is not JSON (multipart/form-data for uploads)",
    502: "ComfyUI (or another upstream) answered with an error",
    503: "a component the request needs is missing or unreachable (the studio, ComfyUI, torch)",
}


# -- success responses ----------------------------------------------------------------------------
# The records the API answers with, as OpenAPI 3.0 schemas. Objects stay open (additionalProperties:
# true), so a field added later is not a breaking change; `required` lists every key a record always
# has. A route names its answer with `api.route(..., response="Image")` (or gives a schema).


def _obj(props: dict[str, Any], optional: tuple[str, ...] = ()) -> dict:
    """An open object: every property required except those in `optional`."""
    return {"type": "object", "additionalProperties": True,
            "required": [k for k in props if k not in optional], "properties": props}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def _array(items: dict) -> dict:
    return {"type": "array", "items": items}


def _page(item: dict) -> dict:
    """A list page: `next_cursor` is null on the last page (pass it back as `cursor` for the next)."""
    return _obj({"items": _array(item), "next_cursor": _nullable(STR)})


INT, NUM, STR, BOOL = {"type": "integer"}, {"type": "number"}, {"type": "string"}, {"type": "boolean"}
TIME = {"type": "string", "description": "ISO 8601, UTC"}
ANY_OBJECT = {"type": "object", "additionalProperties": True}
TERMS = {"type": "object", "additionalProperties": STR, "description": "{category: comma-separated terms}"}

STYLE = _obj({"project_id": INT, "checkpoint": STR, "sampler": STR, "scheduler": STR, "steps": INT, "cfg": NUM,
              "width": INT, "height": INT, "clip_skip": INT, "positive_template": STR, "negative_template": STR,
              "lora_strength": NUM, "updated_at": TIME, "variations": _array(STR)})
IMAGE = _obj({
    "id": INT, "project_id": INT, "character_id": _nullable(INT),
    "unassigned": {"type": "boolean", "description": "no character: the image is in its project's pool"},
    "rel_path": STR, "sha256": STR, "status": {"type": "string", "enum": ["pending", "approved", "rejected"]},
    "caption": STR, "source": STR, "width": INT, "height": INT, "metadata": ANY_OBJECT, "created_at": TIME,
    "updated_at": TIME, "decided_at": _nullable(TIME), "file_missing": BOOL,
    "suggestion": _nullable({**_obj({"character_id": _nullable(INT), "confidence": NUM}),
                             "description": "the classifier's suggested character, null when none"}),
    "last_rejection": _nullable({**_obj({"categories": _array(STR), "note": STR, "character_id": _nullable(INT),
                                         "rejected_at": _nullable(TIME)}),
                                 "description": "the latest rejection that still stands, null when none"})})
GALLERY_LORA = _obj({"name": STR, "strength_model": _nullable(NUM), "strength_clip": _nullable(NUM)})
GALLERY_ITEM = _obj({
    "id": INT, "path": {**STR, "description": "relative to the output folder, with '/' (a trashed file: in the trash)"},
    "name": STR, "subfolder": STR, "kind": {"type": "string", "enum": ["image", "video"]},
    "media_type": STR, "size": INT, "width": _nullable(INT), "height": _nullable(INT),
    "mtime": {**NUM, "description": "seconds since the epoch"}, "favourite": BOOL, "trashed": BOOL,
    "original_path": _nullable({**STR, "description": "a trashed file's place to go back to"}),
    "params": {**_obj({"positive": _nullable(STR), "negative": _nullable(STR), "seed": _nullable(INT),
                       "sampler": _nullable(STR), "scheduler": _nullable(STR), "steps": _nullable(INT),
                       "cfg": _nullable(NUM), "checkpoint": _nullable(STR), "loras": _array(GALLERY_LORA)}),
               "description": "read from the file's embedded graph; null when unknown"},
    "generation_id": _nullable(INT), "character_id": _nullable(INT), "project_id": _nullable(INT),
    "thumb_url": {**STR, "description": "below the API prefix"}})
REGENERATION = _obj({"character_id": INT, "queued": _nullable({**INT, "description": "the job's id"}),
                     "reason": _nullable({**STR, "description": "why nothing was queued"})})
JOB = _obj({
    "id": INT, "kind": STR, "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed",
                                                                    "cancelled"]},
    "progress": {"type": "number", "minimum": 0, "maximum": 1}, "message": STR, "error": _nullable(STR),
    "payload": ANY_OBJECT, "result": _nullable(ANY_OBJECT), "character_id": _nullable(INT),
    "cancel_requested": BOOL, "created_at": TIME, "started_at": _nullable(TIME), "finished_at": _nullable(TIME),
    "updated_at": TIME})
LORA = _obj({"id": INT, "character_id": INT, "job_id": _nullable(INT), "file_name": STR, "base_model": STR,
             "rank": INT, "alpha": NUM, "steps": INT, "learning_rate": NUM, "sha256": STR, "image_count": INT,
             "created_at": TIME})
DECISION = _obj({
    "batch": _nullable({**STR, "description": "the batch to undo; null when nothing changed"}),
    "changed": _array(INT), "unchanged": _array(INT), "images": _array(_ref("Image")),
    "regeneration": {**_array(_ref("Regeneration")), "description": "rejections only"}}, optional=("regeneration",))

RESPONSE_SCHEMAS: dict[str, dict] = {
    "Deleted": _obj({"deleted": INT}),
    "Project": _obj({"id": INT, "name": STR, "slug": STR, "description": STR, "created_at": TIME, "updated_at": TIME}),
    "ProjectPage": _page(_ref("Project")),
    "Style": STYLE,
    "Character": _obj({"id": INT, "project_id": INT, "name": STR, "slug": STR, "design_prompt": STR,
                       "negative_prompt": STR, "trigger_word": STR, "current_lora_id": _nullable(INT),
                       "project_slug": STR, "created_at": TIME, "updated_at": TIME}),
    "CharacterListItem": {"allOf": [_ref("Character"), _obj({"counts": {
        **_obj({"pending": INT, "approved": INT}), "description": "the character's images by status"}})]},
    "CharacterPage": _page(_ref("CharacterListItem")),
    "CharacterDeleted": _obj({"deleted": INT, "images_to_pool": {**_array(INT), "description": "ids of the "
                                                                "images moved to the project's unassigned pool"}}),
    "CharacterPrompt": _obj({
        "character_id": INT, "project_slug": STR, "character_slug": STR, "positive": STR, "negative": STR,
        "learned_terms": _array(STR), "dropped_terms": _array(STR),
        "category_counts": {"type": "object", "additionalProperties": INT},
        "rejection_notes": _array(_obj({"image_id": INT, "note": STR, "categories": _array(STR),
                                        "rejected_at": TIME})),
        "lora_name": _nullable(STR), "style": _ref("Style")}),
    "FeedbackTerms": _obj({"project_id": INT, "terms": TERMS, "defaults": TERMS}),
    "Categories": _obj({"categories": TERMS}),
    "Checkpoints": _obj({"items": _array(STR), "source": {"type": "string", "enum": ["comfyui", "unavailable"]},
                         "message": STR}, optional=("message",)),
    "Samplers": _obj({"samplers": _array(STR), "schedulers": _array(STR),
                      "source": {"type": "string", "enum": ["comfyui", "known"]},
                      "human": {"type": "object", "additionalProperties": _array(STR),
                                "description": "{human name: [sampler, scheduler]}"}}),
    "Image": IMAGE,
    "ImagePage": _page(_ref("Image")),
    "Regeneration": REGENERATION,
    "RejectedImage": {"allOf": [_ref("Image"), _obj({"regeneration": _array(_ref("Regeneration"))})]},
    "DecisionResult": DECISION,
    "UndoResult": _obj({"batch": STR, "reverted": _array(INT), "images": _array(_ref("Image"))}),
    "Job": JOB,
    "JobPage": _page(_ref("Job")),
    "Models": _obj({"base_models": _array(STR),
                    "items": _array(_obj({"name": STR, "source": {"type": "string",
                                                                  "enum": ["diffusers", "single_file"]}})),
                    "min_approved_images": INT,
                    "missing_dependencies": {**_array(STR), "description": "Python packages training needs that "
                                             "are not installed (empty: it can run)"},
                    "model_dirs": {**_array(STR), "description": "folders for diffusers folders and checkpoints"},
                    "checkpoint_dirs": {**_array(STR), "description": "ComfyUI's checkpoint folders"}}),
    # a sample as the training job's result stores it (step and prompt: every sample this version records)
    "TrainingSamplePage": _page(_obj({"file": STR, "url": {**STR, "description": "below the API prefix"},
                                      "step": INT, "prompt": STR}, optional=("step", "prompt"))),
    "Lora": LORA,
    "LoraPage": _page(_ref("Lora")),
    "Generation": _obj({
        "id": INT, "character_id": INT, "lora_model_id": _nullable(INT), "prompt_id": _nullable(STR),
        "status": {"type": "string", "enum": ["queued", "running", "succeeded", "failed", "cancelled"]},
        "graph": ANY_OBJECT, "outputs": _nullable(_array(ANY_OBJECT)), "error": _nullable(STR), "created_at": TIME,
        "updated_at": TIME, "kind": {"type": "string", "enum": ["txt2img", "img2img", "reference", "video", "template"]},
        "seed": _nullable(INT), "progress": {**NUM, "description": "0..1 while ComfyUI runs it"},
        "params": {**ANY_OBJECT, "description": "what was asked (images, denoise, template, …)"}}),
    "GenerationPage": _page(_ref("Generation")),
    "Template": _obj({
        "id": INT, "project_id": INT, "name": STR, "graph": ANY_OBJECT,
        "bindings": {"type": "object", "additionalProperties": _array(_array(STR)),
                     "description": "{field: [[node_id, input_name], ...]}"},
        "candidates": {"type": "object", "additionalProperties": _array(ANY_OBJECT),
                       "description": "{field: [{node_id, input_name, class_type, title}]}: where each field could go"},
        "created_at": TIME, "updated_at": TIME}),
    "TemplateList": _obj({"items": _array(_ref("Template"))}),
    "GalleryItem": GALLERY_ITEM,
    "GalleryPage": _page(_ref("GalleryItem")),
    "GalleryLoras": _obj({"items": _array(_obj({"name": STR, "count": INT}))}),
    "GalleryTrashEmptied": _obj({"deleted": {**INT, "description": "trashed files deleted for good"}}),
    "Health": _obj({"status": {"type": "string", "enum": ["ok"]}, "version": STR,
                    "host": {"type": "string", "enum": ["comfyui", "standalone"]},
                    "database": {"type": "string", "enum": ["sqlite", "postgresql"]}, "schema_version": INT}),
    "OpenApiDocument": _obj({"openapi": STR, "info": ANY_OBJECT, "paths": ANY_OBJECT, "components": ANY_OBJECT}),
}


def _success_schema(spec: RouteSpec) -> dict:
    """The route's declared answer; a bare object when it declares none (tests/unit/test_openapi_responses.py
    fails on that)."""
    if spec.response is None:
        return {"type": "object"}
    return _ref(spec.response) if isinstance(spec.response, str) else spec.response


def _statuses(spec: RouteSpec) -> list[int]:
    """Error statuses a route answers: 400, 403 (a foreign Host name) and 503 (the studio could not
    start) for every route, 404 for those that name something, 409 and 415 (a body of another media
    type, see perimeter.py) for writes, 413 for bodies, and what the route declares."""
    codes = {400, 403, 503, *spec.errors}
    if "{" in spec.path:
        codes.add(404)
    if spec.method in STATE_CHANGING:
        codes |= {409, 415}
    if spec.body is not None or spec.body_schema is not None or spec.form is not None:
        codes.add(413)
    return sorted(codes)


def _query_param(name: str, decl: str | Field) -> dict:
    if isinstance(decl, Field):
        schema = decl.json_schema()
        return {"name": name, "in": "query", "required": False, "description": schema.pop("description", ""),
                "schema": schema}
    return {"name": name, "in": "query", "required": False, "description": decl, "schema": {"type": "string"}}


def _operation(spec: RouteSpec) -> dict:
    op: dict[str, Any] = {"summary": spec.summary, "tags": [spec.tag] if spec.tag else [],
                          "operationId": spec.handler.__name__}
    params = [{"name": n, "in": "path", "required": True, "schema": ID_SCHEMA if n.endswith("_id") else NAME_SCHEMA}
              for n in re.findall(r"{(\w+)}", spec.path)]
    params += [_query_param(n, d) for n, d in spec.query.items()]
    if params:
        op["parameters"] = params
    if spec.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": spec_schema(spec.body)}}}
    elif spec.body_schema is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": spec.body_schema}}}
    elif spec.form is not None:
        schema = spec_schema(spec.form)
        schema.pop("additionalProperties")  # a form may carry fields the route ignores
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    if spec.binary:
        ok = {"description": "the file", "content": {spec.media: {"schema": {"type": "string", "format": "binary"}}}}
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": _success_schema(spec)}}}
    responses: dict[str, Any] = {str(spec.status): ok}
    for code in _statuses(spec):
        responses[str(code)] = {"description": ERROR_TEXT.get(code, "error"),
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op["responses"] = responses
    return op


def openapi_document(api: Api) -> dict:
    paths: dict[str, dict] = {}
    for spec in api.routes:
        paths.setdefault(PREFIX + spec.path, {})[spec.method.lower()] = _operation(spec)
    error = {"type": "object", "additionalProperties": False, "required": ["error"], "properties": {"error": {
        "type": "object", "additionalProperties": False, "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
    return copy.deepcopy({  # the schemas above are shared module state: a caller may change its copy
        "openapi": "3.0.3",
        "info": {"title": "LoRA Studio API", "version": "1",
                 "description": "Errors are {\"error\": {\"code\", \"message\"}} with a 4xx status (503/502 when "
                                "a component or ComfyUI is unavailable), never a 500."},
        "paths": paths,
        "components": {"schemas": {"Error": error, **RESPONSE_SCHEMAS}},
    })
