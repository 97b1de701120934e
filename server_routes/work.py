"""Long work: jobs, training runs and LoRAs, generations on ComfyUI."""

from __future__ import annotations

from ..core.specs import GENERATE_SPEC, TRAIN_SPEC
from ..core.validation import parse_id_cursor, parse_limit
from .api import Req, api


@api.route("GET", "/jobs", "Jobs, newest first", query={"status": "filter", "kind": "filter", "limit": "1-500",
                                                       "cursor": "from next_cursor"}, tag="jobs")
async def list_jobs(r: Req):
    status, kind = r.q("status") or None, r.q("kind") or None
    limit, cursor = parse_limit(r.q("limit")), parse_id_cursor(r.q("cursor"))
    return await r.call(lambda s: s.jobs.list(status=status, kind=kind, limit=limit, cursor=cursor))


@api.route("GET", "/jobs/{job_id}", "Get a job (status, progress, message, error, result)", tag="jobs")
async def get_job(r: Req):
    jid = r.int_param("job_id")
    return await r.call(lambda s: s.jobs.get(jid))


@api.route("POST", "/jobs/{job_id}/cancel", "Cancel a queued or running job", tag="jobs")
async def cancel_job(r: Req):
    jid = r.int_param("job_id")
    return await r.call(lambda s: s.jobs.cancel(jid))


@api.route("GET", "/models", "Base models available for training", tag="training")
async def models(r: Req):
    return await r.call(lambda s: {"base_models": s.training.base_models()})


@api.route("POST", "/characters/{character_id}/train", "Start a LoRA training job on the approved images",
           body=TRAIN_SPEC, tag="training", status=202)
async def train(r: Req):
    cid, body = r.int_param("character_id"), await r.json()
    return await r.call(lambda s: s.training.start(cid, body))


@api.route("GET", "/characters/{character_id}/loras", "LoRAs trained for a character, newest first", tag="training")
async def loras(r: Req):
    cid = r.int_param("character_id")
    return await r.call(lambda s: s.training.loras(cid))


@api.route("POST", "/characters/{character_id}/generate",
           "Queue a txt2img graph (style + SSOT prompt + effective negatives + current LoRA) on ComfyUI",
           body=GENERATE_SPEC, tag="generation", status=201)
async def generate(r: Req):
    cid, body = r.int_param("character_id"), await r.json()
    return await r.call(lambda s: s.generation.generate(cid, body))


@api.route("GET", "/generations/{generation_id}", "A generation, refreshed from ComfyUI's history",
           tag="generation")
async def get_generation(r: Req):
    gid = r.int_param("generation_id")
    return await r.call(lambda s: s.generation.get(gid, refresh=True))
