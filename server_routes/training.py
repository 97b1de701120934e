"""Training: base models, training jobs, their samples and the LoRAs they made."""

from __future__ import annotations

from ..core.validation import parse_id_cursor, parse_limit
from ..training import config
from ..training.request import TRAIN_SPEC, TrainRequest
from .api import Api, Req
from .files import file_response

routes = Api()


def add_routes(api: Api) -> None:
    api.include(routes)


@routes.route("GET", "/models", "Base models for training: diffusers folders and single-file checkpoints",
              tag="training", response="Models")
async def models(r: Req):
    def listing(s):
        from ..training.service import missing_train_deps

        items = s.base_models.listing()
        return {"base_models": [m["name"] for m in items], "items": items,
                "min_approved_images": s.training.min_images,
                # why training cannot run here, said up front: libraries to install, folders a base model goes in
                "missing_dependencies": missing_train_deps(),
                "model_dirs": [str(d) for d in s.host.model_dirs()],
                "checkpoint_dirs": [str(d) for d in s.host.checkpoint_dirs()]}

    return await r.call(listing)

_NUMBER = {"type": "number"}
_DEFAULTS = {"type": "object", "additionalProperties": True, "required": list(config.ARCHITECTURES),
             "properties": {arch: {"description": f"the default for {config.ARCH_LABELS[arch]}"}
                            for arch in config.ARCHITECTURES}}
OPTION_SCHEMA = {
    "type": "object", "additionalProperties": True,
    "required": ["name", "type", "help", "advanced", "default", "derived", "by_arch"],
    "properties": {
        "name": {"type": "string"},
        "type": {"type": "string", "enum": sorted(set(config.KINDS.values()))},
        "help": {"type": "string"}, "advanced": {"type": "boolean", "description": "the panel folds it away"},
        "default": _DEFAULTS,
        "derived": {"type": "string", "nullable": True,
                    "description": "the default is found from other options (e.g. 'rank / 2'); null otherwise"},
        "by_arch": {"type": "boolean", "description": "the default depends on the base model's architecture"},
        "min": _NUMBER, "max": _NUMBER, "below": {"type": "boolean", "description": "max itself is not allowed"},
        "multiple_of": {"type": "integer"}, "step": _NUMBER,
        "choices": {"type": "array", "items": {"type": "string"}},
        "aliases": {"type": "array", "items": {"type": "string"}, "description": "other names (kohya's)"},
    },
}
OPTIONS_SCHEMA = {"type": "object", "additionalProperties": True, "required": ["architectures", "options"],
                  "properties": {"architectures": {"type": "array", "items": {"type": "string"}},
                                 "options": {"type": "array", "items": OPTION_SCHEMA}}}


@routes.route("GET", "/training/options", "The training options: type, bounds, choices, default per architecture, "
              "help; the panel's training form is built from this", tag="training", response=OPTIONS_SCHEMA)
async def training_options(r: Req):
    return {"architectures": list(config.ARCHITECTURES), "options": config.user_options()}


@routes.route("POST", "/characters/{character_id}/train", "Start a LoRA training job on the approved images",
              body=TRAIN_SPEC, tag="training", status=202, response="Job")
async def train(r: Req):
    cid, request = r.int_param("character_id"), TrainRequest.check(await r.json())
    return await r.call(lambda s: s.training.start(cid, request))


@routes.route("POST", "/train/{job_id}/resume",
              "Continue a failed or cancelled training from its last checkpoint (a new job)", tag="training",
              status=202, response="Job")
async def resume_training(r: Req):
    jid = r.int_param("job_id")
    return await r.call(lambda s: s.training.resume(jid))


@routes.route("GET", "/jobs/{job_id}/samples", "Sample images a training job rendered, oldest first",
              query={"limit": "1-500 (default 50)", "cursor": "from next_cursor"}, tag="training",
              response="TrainingSamplePage")
async def training_samples(r: Req):
    jid, limit, cursor = r.int_param("job_id"), parse_limit(r.q("limit")), r.q("cursor")
    return await r.call(lambda s: s.training.samples(jid, limit, cursor))


@routes.route("GET", "/jobs/{job_id}/samples/{name}", "One sample image of a training job", tag="training",
              binary=True, media="image/*")
async def training_sample_file(r: Req):
    jid, name = r.int_param("job_id"), r.request.match_info.get("name", "")
    path = await r.call(lambda s: s.training.sample_path(jid, name))
    return file_response(path)


@routes.route("GET", "/characters/{character_id}/loras", "LoRAs trained for a character, newest first",
              query={"limit": "1-500 (default 50)", "cursor": "from next_cursor"}, tag="training", response="LoraPage")
async def loras(r: Req):
    cid, limit, cursor = r.int_param("character_id"), parse_limit(r.q("limit")), parse_id_cursor(r.q("cursor"))
    return await r.call(lambda s: s.training.loras(cid, limit, cursor))
