"""Generation: graphs the studio queues on ComfyUI, and their state."""

from __future__ import annotations

from ..core.validation import Field, Spec, validate
from .api import Api, Req

GENERATE_SPEC: Spec = {
    "seed": Field(int, min=0, max=2**63 - 1),
    "batch_size": Field(int, min=1, max=16),
    "use_lora": Field(bool, description="load the character's current LoRA (default true)"),
}

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


@routes.route("POST", "/characters/{character_id}/generate",
              "Queue a txt2img graph (style + SSOT prompt + effective negatives + current LoRA) on ComfyUI",
              body=GENERATE_SPEC, tag="generation", status=201, errors=(502,), response="Generation")
async def generate(r: Req):
    cid, data = r.int_param("character_id"), validate(await r.json(), GENERATE_SPEC)
    return await r.call(lambda s: s.generation.generate(cid, **data))


@routes.route("GET", "/generations/{generation_id}", "A generation, refreshed from ComfyUI's history",
              tag="generation", errors=(502,), response="Generation")
async def get_generation(r: Req):
    gid = r.int_param("generation_id")
    return await r.call(lambda s: s.generation.get(gid, refresh=True))
