"""Generation: graphs the studio queues on ComfyUI, and their state."""

from __future__ import annotations

from ..core.specs import GENERATE_SPEC
from .api import Api, Req

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


@routes.route("POST", "/characters/{character_id}/generate",
           "Queue a txt2img graph (style + SSOT prompt + effective negatives + current LoRA) on ComfyUI",
           body=GENERATE_SPEC, tag="generation", status=201, errors=(502,), response="Generation")
async def generate(r: Req):
    cid, body = r.int_param("character_id"), await r.json()
    return await r.call(lambda s: s.generation.generate(cid, body))

@routes.route("GET", "/generations/{generation_id}", "A generation, refreshed from ComfyUI's history",
           tag="generation", errors=(502,), response="Generation")
async def get_generation(r: Req):
    gid = r.int_param("generation_id")
    return await r.call(lambda s: s.generation.get(gid, refresh=True))
