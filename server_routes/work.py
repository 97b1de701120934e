"""Long work: jobs, training runs and LoRAs, generations on ComfyUI."""

from __future__ import annotations

from ..core.specs import GENERATE_SPEC, TRAIN_SPEC
from ..core.validation import ID_MAX, Field, parse_id, parse_id_cursor, parse_limit
from .api import Req, api
from .files import file_response

ID = Field(int, min=0, max=ID_MAX)


@api.route("GET", "/jobs", "Jobs, newest first",
           query={"status": "filter", "kind": "filter", "limit": Field(int, min=1, max=500, description="1-500"),
                  "character_id": ID, "cursor": ID}, tag="jobs", response="JobPage")
async def list_jobs(r: Req):
    status, kind = r.q("status") or None, r.q("kind") or None
    limit, cursor = parse_limit(r.q("limit")), parse_id_cursor(r.q("cursor"))
    cid = parse_id(r.q("character_id"), "character_id") if r.q("character_id") else None
    return await r.call(lambda s: s.jobs.list(status=status, kind=kind, character_id=cid, limit=limit, cursor=cursor))


@api.route("GET", "/jobs/{job_id}", "Get a job (status, progress, message, error, result)", tag="jobs", response="Job")
async def get_job(r: Req):
    jid = r.int_param("job_id")
    return await r.call(lambda s: s.jobs.get(jid))


@api.route("POST", "/jobs/{job_id}/cancel", "Cancel a queued or running job", tag="jobs", response="Job")
async def cancel_job(r: Req):
    jid = r.int_param("job_id")
    return await r.call(lambda s: s.jobs.cancel(jid))


@api.route("GET", "/models", "Base models for training: diffusers folders and single-file checkpoints",
           tag="training", response="Models")
async def models(r: Req):
    def listing(s):
        items = s.training.base_model_list()
        return {"base_models": [m["name"] for m in items], "items": items,
                "min_approved_images": s.training.min_images}

    return await r.call(listing)


@api.route("POST", "/characters/{character_id}/train", "Start a LoRA training job on the approved images",
           body=TRAIN_SPEC, tag="training", status=202, response="Job")
async def train(r: Req):
    cid, body = r.int_param("character_id"), await r.json()
    return await r.call(lambda s: s.training.start(cid, body))


@api.route("POST", "/train/{job_id}/resume",
           "Continue a failed or cancelled training from its last checkpoint (a new job)", tag="training",
           status=202, response="Job")
async def resume_training(r: Req):
    jid = r.int_param("job_id")
    return await r.call(lambda s: s.training.resume(jid))


@api.route("GET", "/jobs/{job_id}/samples", "Sample images a training job rendered, oldest first",
           query={"limit": "1-500 (default 50)", "cursor": "from next_cursor"}, tag="training",
           response="TrainingSamplePage")
async def training_samples(r: Req):
    jid, limit, cursor = r.int_param("job_id"), parse_limit(r.q("limit")), r.q("cursor")
    return await r.call(lambda s: s.training.samples(jid, limit, cursor))


@api.route("GET", "/jobs/{job_id}/samples/{name}", "One sample image of a training job", tag="training",
           binary=True, media="image/*")
async def training_sample_file(r: Req):
    jid, name = r.int_param("job_id"), r.request.match_info.get("name", "")
    path = await r.call(lambda s: s.training.sample_path(jid, name))
    return file_response(path)


@api.route("GET", "/characters/{character_id}/loras", "LoRAs trained for a character, newest first",
           query={"limit": "1-500 (default 50)", "cursor": "from next_cursor"}, tag="training", response="LoraPage")
async def loras(r: Req):
    cid, limit, cursor = r.int_param("character_id"), parse_limit(r.q("limit")), parse_id_cursor(r.q("cursor"))
    return await r.call(lambda s: s.training.loras(cid, limit, cursor))


@api.route("POST", "/characters/{character_id}/generate",
           "Queue a txt2img graph (style + SSOT prompt + effective negatives + current LoRA) on ComfyUI",
           body=GENERATE_SPEC, tag="generation", status=201, errors=(502,), response="Generation")
async def generate(r: Req):
    cid, body = r.int_param("character_id"), await r.json()
    return await r.call(lambda s: s.generation.generate(cid, body))


@api.route("GET", "/generations/{generation_id}", "A generation, refreshed from ComfyUI's history",
           tag="generation", errors=(502,), response="Generation")
async def get_generation(r: Req):
    gid = r.int_param("generation_id")
    return await r.call(lambda s: s.generation.get(gid, refresh=True))
