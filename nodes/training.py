"""Train LoRA: starts the same training job as the panel and the API, follows it on ComfyUI's own
progress bar (with the latest sample image as the preview), and returns the LoRA's file name.
ComfyUI's Cancel raises its interrupt through the progress call: the job is cancelled, then the
interrupt goes on up so ComfyUI stops the prompt.

The same node with the same inputs and the same approved images is a cache hit in ComfyUI (IS_CHANGED is the
training's fingerprint) and, when ComfyUI runs it anyway (after a restart), returns the LoRA that training made
without starting a job: no retraining, ComfyUI's models stay loaded. `force` trains again."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ..core.errors import StudioError
from ..training import config
from ..training.request import TrainRequest
from .combos import lora_names
from .context import choices, classproperty, studio
from .labels import character_input, find_character
from .results import sample_preview, ui
from .train_reuse import approved_set, fingerprint, trained_like

if TYPE_CHECKING:
    from ..core.jobs import Job

log = logging.getLogger("lora_studio.nodes.training")

NO_MODEL = "(no base models in models/checkpoints or models/diffusers)"
PREVIEW_MAX_SIZE = 512
POLL_SECONDS = 0.5
CANCEL_WAIT_SECONDS = 60  # after Cancel, wait this long for the worker to let go of the GPU

# The node's inputs are the training options (training/config.py), described there. Two keep the names saved
# workflows use; the required ones and the first optional ones keep their places (ComfyUI saves widget values by
# position), then `force`, then every other user option in the descriptions' order, folded away as "advanced".
NODE_NAMES = {"alpha": "network_alpha", "compile": "torch_compile"}
REQUIRED = ("steps", "rank", "learning_rate")
FIRST_OPTIONAL = ("resolution", "alpha", "train_text_encoder", "sample_every", "compile")
OPTIONAL = FIRST_OPTIONAL + tuple(n for n in config.USER_OPTIONS if n not in REQUIRED + FIRST_OPTIONAL)
FORCE = ("BOOLEAN", {"default": False, "tooltip": "train again even when a LoRA trained with these inputs on the "
                     "same approved images exists (off: that LoRA is returned at once)"})


def current_prompt_id() -> str | None:
    """The ComfyUI prompt running this node: it does not count as ComfyUI being busy."""
    try:
        from comfy_execution.utils import get_executing_context

        context = get_executing_context()
        if context is not None and context.prompt_id:
            return context.prompt_id
    except ImportError:
        pass
    try:
        from server import PromptServer

        return getattr(PromptServer.instance, "last_prompt_id", None)
    except (ImportError, AttributeError):
        return None


def _comfy():
    """(comfy.utils, comfy.model_management), or (None, None) outside ComfyUI."""
    try:
        import comfy.model_management as mm
        import comfy.utils as utils
    except ImportError:
        return None, None
    return utils, mm


def unload_comfyui_models(s, request: TrainRequest) -> bool:
    """Give the training ComfyUI's memory, in-process: ComfyUI's /free (which the training job asks for) only acts
    between prompts, and this node runs inside one until the training ends. Only when training shares ComfyUI's
    device (the job's own rule); a reused LoRA never gets here, so a cache hit keeps ComfyUI's models loaded."""
    _, mm = _comfy()
    if mm is None or not s.host.comfyui_shares_device or request.options.get("device") == "cpu":
        return False
    mm.unload_all_models()
    mm.soft_empty_cache()
    return True


def _load_preview(path):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return ("PNG", im.convert("RGB"), PREVIEW_MAX_SIZE)


def follow_job(s, job: Job, node_id: str | None = None, poll: float = POLL_SECONDS) -> Job:
    """Wait for a training job, relaying step/total and new sample images to ComfyUI's progress bar.
    Any exception from ComfyUI (its interrupt) cancels the job and is re-raised."""
    utils, mm = _comfy()
    total = int((job.payload or {}).get("steps") or 1)
    bar = utils.ProgressBar(total, node_id=node_id) if utils is not None else None
    shown_step, shown_sample = -1, None
    job_id = job.id
    try:
        while True:
            job = s.jobs.get(job_id)
            result = job.result or {}
            progress = result.get("progress") or {}
            total = int(progress.get("total_steps") or total)
            step = int(progress.get("step") or 0)
            preview = None
            samples = [x for x in result.get("samples") or [] if isinstance(x, dict) and x.get("file")]
            if samples and samples[-1]["file"] != shown_sample:
                shown_sample = samples[-1]["file"]
                try:
                    preview = _load_preview(s.training.sample_path(job_id, shown_sample))
                except Exception:  # a preview is a nicety: never stop the training for it
                    log.exception("cannot load sample %s of job %s", shown_sample, job_id)
            if bar is not None and (step != shown_step or preview is not None):
                bar.update_absolute(step, total, preview)  # ComfyUI's hook raises its interrupt here
                shown_step = step
            if job.status not in ("queued", "running"):
                return job
            if mm is not None:  # also while no step moves (loading, caching)
                mm.throw_exception_if_processing_interrupted()
            time.sleep(poll)
    except BaseException:
        _cancel_and_wait(s, job_id)
        raise


def _cancel_and_wait(s, job_id: int) -> None:
    try:
        job = s.jobs.cancel(job_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while job.status in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = s.jobs.get(job_id)
    except Exception:
        log.exception("cannot cancel training job %s", job_id)


def auto_value(name: str) -> int | None:
    """The widget value that means "the default for the model" for an option whose default is derived or
    depends on the architecture: 0, or -1 where 0 is a value of its own (no warm-up)."""
    o = config.option(name)
    if o.derive is None and o.by_arch is None:
        return None
    return 0 if (o.min or 0) > 0 else -1


def widget(name: str) -> tuple:
    """The ComfyUI input of one training option, from its description."""
    o = config.option(name)
    tip = f"{o.help} (default {config.default_text(name)})"
    extra: dict = {"tooltip": tip} if name in REQUIRED + FIRST_OPTIONAL else {"tooltip": tip, "advanced": True}
    if o.choices:
        return (list(o.choices), {"default": o.default, **extra})
    if o.kind == "bool":
        return ("BOOLEAN", {"default": o.default, **extra})
    auto = auto_value(name)
    low = o.min if auto is None else auto
    high = o.max if not o.below else o.max - (o.step or 0.01)
    default = o.default if auto is None else auto
    if o.kind == "float":
        low, default = float(low), float(default)
    spec = {"default": default, "min": low, "max": high, **extra}
    if auto is not None:
        spec["tooltip"] = f"{auto}: the default ({config.default_text(name)}). {o.help}"
    if o.kind == "int":
        if name == "seed":  # ComfyUI's editor gives any INT named seed a "randomize" control unless told not to:
            spec["control_after_generate"] = False  # a new seed every queue would be a new training every time
        return ("INT", {**spec, "step": int(o.step or 1)})
    return ("FLOAT", {**spec, "step": o.step or 0.01, "round": False})


def request_from_inputs(base_model: str, inputs: dict) -> TrainRequest:
    """The training request the widgets make (the auto values left out: the model's defaults), checked."""
    body: dict = {"base_model": base_model}
    for name in REQUIRED + OPTIONAL:
        key = NODE_NAMES.get(name, name)
        if key not in inputs:
            continue
        value = inputs[key]
        if value == auto_value(name) and not isinstance(value, bool):
            continue
        body[name] = value
    return TrainRequest.check(body)


def last_sample(job: Job) -> list[dict]:
    """The job's newest sample image, as a preview on the node."""
    samples = [x for x in (job.result or {}).get("samples") or [] if isinstance(x, dict) and x.get("file")]
    return [sample_preview(job.id, samples[-1]["file"])] if samples else []


def _request(base_model: str, steps, rank, learning_rate, options: dict) -> TrainRequest:
    return request_from_inputs(base_model, {"steps": steps, "rank": rank, "learning_rate": learning_rate, **options})


class TrainLoRA:
    CATEGORY = "LoRA Studio/training"
    DESCRIPTION = ("Trains a LoRA on the character's approved images (a subprocess job, the same as the panel's) "
                   "and returns its file name; progress and sample images show on the node. A LoRA already trained "
                   "with the same inputs on the same approved images is returned without training (unless force).")
    RETURN_NAMES = ("lora_name",)
    OUTPUT_TOOLTIPS = ("the LoRA's file name in the loras folder: LoraLoader's lora_name",)
    FUNCTION = "run"
    OUTPUT_NODE = True

    @classproperty
    def RETURN_TYPES(cls):  # noqa: N802 - ComfyUI's name; combo-typed, read when ComfyUI asks
        return (lora_names(),)

    @classmethod
    def INPUT_TYPES(cls):
        optional = {NODE_NAMES.get(n, n): widget(n) for n in FIRST_OPTIONAL}
        optional["force"] = FORCE
        optional.update({NODE_NAMES.get(n, n): widget(n) for n in OPTIONAL if n not in FIRST_OPTIONAL})
        return {
            "required": {
                "character": character_input(),
                "base_model": (choices(lambda s: s.base_models.names(), NO_MODEL),
                               {"tooltip": "SD1.5 or SDXL: a .safetensors checkpoint or a diffusers folder"}),
                **{NODE_NAMES.get(n, n): widget(n) for n in REQUIRED},
            },
            "optional": optional,
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def IS_CHANGED(cls, character, base_model, steps, rank, learning_rate, force=False, unique_id=None, **options):
        if force:
            return float("nan")  # never equal to itself: ComfyUI runs the node every time
        s = studio()
        char = find_character(s, character)
        request = _request(base_model, steps, rank, learning_rate, options)
        return fingerprint(char.id, request, approved_set(s, char.id))

    def run(self, character, base_model, steps, rank, learning_rate, force=False, unique_id=None, **options):
        s = studio()
        char = find_character(s, character)
        request = _request(base_model, steps, rank, learning_rate, options)
        if not force:
            approved = approved_set(s, char.id)
            found = trained_like(s, char.id, request, approved)
            if found is not None:
                text = (f"{found.file_name}: trained with these inputs on the same {approved.count} approved images "
                        f"(job {found.job.id}); not trained again (turn force on to retrain)")
                return {"ui": ui(text, last_sample(found.job)), "result": (found.file_name,)}
        job = s.training.start(char.id, request, comfy_prompt_id=current_prompt_id())
        unload_comfyui_models(s, request)
        job = follow_job(s, job, node_id=unique_id)
        if job.status != "succeeded":
            raise StudioError(f"training job {job.id} {job.status}: {job.error or job.message}")
        name = job.result["file_name"]
        return {"ui": ui(f"trained {name}", last_sample(job)), "result": (name,)}
