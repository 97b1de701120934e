"""Generation: graphs the studio queues on ComfyUI (txt2img, img2img, reference, video, a project's
templates), their state, cancel, batch generation for the dataset, and the templates themselves."""

from __future__ import annotations

from typing import Any

from ..core.errors import InvalidInput
from ..core.validation import ID_MAX, Field, Spec, parse_id_cursor, parse_limit, validate
from .api import Api, Req

KINDS = ("txt2img", "img2img", "reference", "video", "template")

GENERATE_SPEC: Spec = {
    "kind": Field(str, choices=KINDS, description="what to make (default txt2img)"),
    "seed": Field(int, min=0, max=2**63 - 1),
    "batch_size": Field(int, min=1, max=16),
    "use_lora": Field(bool, description="load the character's current LoRA (default true)"),
    "image_ids": Field(list, item=Field(int, required=True, min=1, max=ID_MAX), max_items=8,
                       description="approved images of the character: img2img and video use one, reference 1-8, "
                                   "a template the first (bound to its image input)"),
    "denoise": Field(float, min=0.01, max=1.0, description="img2img/reference: how much to change (default 0.6)"),
    "weight": Field(float, min=0.0, max=2.0, description="reference: how strongly the references steer"),
    "method": Field(str, choices=("ipadapter", "unclip", "img2img"),
                    description="reference: how (default: the best this ComfyUI has)"),
    "template_id": Field(int, min=1, max=ID_MAX, description="template: one of the project's templates"),
    "prompt_extra": Field(str, max_len=2000, description="added to the positive prompt"),
    "frames": Field(int, min=1, max=1025, description="video: frame count (the model family's default)"),
    "fps": Field(float, min=1.0, max=60.0, description="video: frames per second"),
}

BATCH_SPEC: Spec = {
    **{k: v for k, v in GENERATE_SPEC.items() if k not in ("batch_size", "frames", "fps")},
    "kind": Field(str, choices=("txt2img", "img2img", "reference", "template"), description="default txt2img"),
    "count": Field(int, required=True, min=1, max=200, description="how many images"),
    "in_flight": Field(int, min=1, max=8, description="at most this many queued on ComfyUI at once (default 2)"),
}

TEMPLATE_SPEC: Spec = {
    "name": Field(str, required=True, max_len=200),
    "workflow": Field(dict, required=True, description="the API-format workflow (ComfyUI: Export (API))"),
    "bindings": Field(dict, description="{field: [node_id, input] or [[node_id, input], ...]}; default: the ones "
                                        "the studio can tell (see the answer's bindings and candidates)"),
}
BINDINGS_SPEC: Spec = {"bindings": Field(dict, required=True, description="{field: [[node_id, input], ...]}")}

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


def _request(data: dict[str, Any]):
    from ..generation.service import GenerationRequest

    data = dict(data)
    if "image_ids" in data:
        data["image_ids"] = tuple(data["image_ids"])
    return GenerationRequest(**data)


@routes.route("POST", "/characters/{character_id}/generate",
              "Queue a graph on ComfyUI: style + SSOT prompt + effective negatives + current LoRA, as txt2img, img2img "
              "or reference refinement from approved images, image-to-video, or one of the project's templates; "
              "checked against ComfyUI's /object_info first (a 400 names what the server lacks)",
              body=GENERATE_SPEC, tag="generation", status=201, errors=(409, 502), response="Generation")
async def generate(r: Req):
    cid, data = r.int_param("character_id"), validate(await r.json(), GENERATE_SPEC)
    request = _request(data)
    return await r.call(lambda s: s.generation.generate(cid, request))


@routes.route("GET", "/characters/{character_id}/generations", "A character's generations, newest first",
              query={"limit": "1-500 (default 50)", "cursor": "from next_cursor"}, tag="generation",
              response="GenerationPage")
async def list_generations(r: Req):
    cid, limit, cursor = r.int_param("character_id"), parse_limit(r.q("limit")), parse_id_cursor(r.q("cursor"))
    return await r.call(lambda s: s.generation.list(cid, limit, cursor))


@routes.route("POST", "/characters/{character_id}/generate-batch",
              "Generate images for the dataset: count images, each with the next of the project style's variations, "
              "a few queued on ComfyUI at a time; they land in the character's pending queue (a job)",
              body=BATCH_SPEC, tag="generation", status=202, errors=(409,), response="Job")
async def generate_batch(r: Req):
    cid, data = r.int_param("character_id"), validate(await r.json(), BATCH_SPEC)
    count, in_flight = data.pop("count"), data.pop("in_flight", 2)
    request = _request(data)
    return await r.call(lambda s: s.batch_generation.start(cid, count, request, in_flight))


@routes.route("GET", "/generations/{generation_id}", "A generation, refreshed from ComfyUI's queue and history",
              tag="generation", errors=(502,), response="Generation")
async def get_generation(r: Req):
    gid = r.int_param("generation_id")
    return await r.call(lambda s: s.generation.get(gid, refresh=True))


@routes.route("POST", "/generations/{generation_id}/cancel",
              "Cancel a queued (taken off ComfyUI's queue) or running (interrupted) generation",
              tag="generation", errors=(409, 502), response="Generation")
async def cancel_generation(r: Req):
    gid = r.int_param("generation_id")
    return await r.call(lambda s: s.generation.cancel(gid))


@routes.route("GET", "/projects/{project_id}/templates", "The project's workflow templates, by name",
              tag="generation", response="TemplateList")
async def list_templates(r: Req):
    pid = r.int_param("project_id")
    items = await r.call(lambda s: s.templates.list(pid))
    return {"items": items}


@routes.route("POST", "/projects/{project_id}/templates",
              "Import a workflow exported from ComfyUI with Export (API) as a template, with its inputs bound to "
              "studio fields (positive, negative, seed, checkpoint, lora_name, lora_strength, width, height, image)",
              body=TEMPLATE_SPEC, tag="generation", status=201, errors=(409, 413), response="Template")
async def create_template(r: Req):
    pid, data = r.int_param("project_id"), validate(await r.json(), TEMPLATE_SPEC)
    return await r.call(lambda s: s.templates.create(pid, data["name"], data["workflow"], data.get("bindings")))


@routes.route("PUT", "/templates/{template_id}/bindings", "Set a template's bindings", body=BINDINGS_SPEC,
              tag="generation", response="Template")
async def set_template_bindings(r: Req):
    tid, data = r.int_param("template_id"), validate(await r.json(), BINDINGS_SPEC)
    if not data["bindings"]:
        raise InvalidInput("bindings must bind at least one field")
    return await r.call(lambda s: s.templates.set_bindings(tid, data["bindings"]))


@routes.route("DELETE", "/templates/{template_id}", "Delete a template", tag="generation", response="Deleted")
async def delete_template(r: Req):
    tid = r.int_param("template_id")
    return await r.call(lambda s: s.templates.delete(tid))
