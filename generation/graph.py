"""Build API-format ComfyUI graphs for the studio's generations (pure functions: no I/O).

Kinds: txt2img, img2img, reference refinement (IPAdapter when the server has ComfyUI_IPAdapter_plus,
else CLIP vision + unCLIPConditioning, else img2img from the first reference) and image-to-video
(Wan, LTX-Video or Stable Video Diffusion, whichever the server has the nodes and the model files
for). The `plan_*` functions read the target server's `/object_info` and say what they chose and
why; the `build_*` functions turn a plan and the request into the graph. Every graph is checked
against the server's `/object_info` before it is sent (generation/checks.py: check_graph).

Node ids: the txt2img ones are those of ComfyUI's default workflow (plus 10 LoRA, 11 CLIP skip);
the other kinds reuse them for the same roles and number their extra nodes from 12 upwards.
(Over 500 lines on purpose: the kinds share one set of value checks, node ids and building blocks.)
"""

from __future__ import annotations

import logging
import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import InvalidInput
from ..core.samplers import resolve_sampler
from .checks import has_nodes, missing_nodes, server_files

log = logging.getLogger("lora_studio.comfy")

# Node ids: those of ComfyUI's default txt2img workflow, plus 10 (LoRA) and 11 (CLIP skip).
ID_CHECKPOINT, ID_LORA, ID_CLIP_SKIP = "4", "10", "11"
ID_POSITIVE, ID_NEGATIVE, ID_LATENT = "6", "7", "5"
ID_SAMPLER, ID_DECODE, ID_SAVE = "3", "8", "9"

FIRST_EXTRA_ID = 12  # the other kinds' extra nodes are numbered from here
_RESERVED = {"3", "4", "5", "6", "7", "8", "9", "10", "11"}

MAX_SEED = 2**64 - 1  # KSampler's seed range
MAX_SIZE = 16384
MAX_IMG2IMG_BATCH = 64  # RepeatLatentBatch's maximum
MAX_REFERENCES = 8
MAX_VIDEO_SIZE = 2048
MAX_VIDEO_FRAMES = 1025
DEFAULT_IMG2IMG_DENOISE = 0.6
DEFAULT_REFERENCE_DENOISE = 0.6  # the img2img fallback of reference refinement
DEFAULT_REFERENCE_WEIGHT = 0.8


def _int(name: str, value: Any, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidInput(f"{name} must be a whole number, not {value!r}.")
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}, not {value}.")
    return value


def _float(name: str, value: Any, low: float, high: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a number, not {value!r}.")
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low:g} and {high:g}, not {value:g}.")
    return float(value)


def _size(name: str, value: Any) -> int:
    value = _int(name, value, 16, MAX_SIZE)
    if value % 8:
        raise InvalidInput(f"{name} must be a multiple of 8, not {value}.")
    return value


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be text, not {type(value).__name__}.")
    return value


def _file_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{name} is required.")
    if "\x00" in value:
        raise InvalidInput(f"{name} is not a valid file name.")
    return value


def _prefix(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("filename_prefix is required.")
    cleaned = value.replace("\\", "/")
    parts = cleaned.split("/")
    if cleaned.startswith("/") or ".." in parts or "\x00" in cleaned or not parts[-1].strip():
        raise InvalidInput(f"filename_prefix {value!r} must be a relative path inside ComfyUI's output folder "
                           "ending with a file name, e.g. 'lora_studio/out'.")
    return posixpath.normpath(cleaned)


def _video_size(name: str, value: Any, multiple: int, low: int) -> int:
    value = _int(name, value, low, MAX_VIDEO_SIZE)
    if value % multiple:
        raise InvalidInput(f"{name} must be a multiple of {multiple} for this video model, not {value}.")
    return value


_ANNOTATION = re.compile(r" \[(input|output|temp)\]$")


def _image_name(name: str, value: Any) -> str:
    """An image name as ComfyUI's LoadImage takes it: relative to its input folder ("sub/x.png", as
    /upload/image answers), or to the output/temp folder with ComfyUI's " [output]" annotation."""
    value = _file_name(name, value)
    bare = _ANNOTATION.sub("", value).replace("\\", "/")
    parts = bare.split("/")
    if bare.startswith("/") or re.match(r"^[A-Za-z]:", bare) or ".." in parts or not parts[-1].strip():
        raise InvalidInput(f"{name} {value!r} must be an image name inside ComfyUI's input folder, e.g. "
                           "'lora_studio/ref.png' (as /upload/image answers it), or an output with ' [output]'.")
    return value


def _denoise(value: Any) -> float:
    value = _float("denoise", value, 0.0, 1.0)
    if value <= 0:
        raise InvalidInput("denoise must be more than 0 (0 would return the image unchanged).")
    return value


@dataclass(frozen=True)
class _Common:
    """The validated inputs every image graph shares (build_txt2img's keywords)."""

    checkpoint: str
    positive: str
    negative: str
    sampler_name: str
    scheduler: str
    steps: int
    cfg: float
    width: int
    height: int
    clip_skip: int
    seed: int
    batch_size: int
    lora: str | None
    strength: float
    prefix: str


def _common(*, checkpoint: str, positive: str, negative: str, sampler: str, scheduler: str | None, steps: int,
            cfg: float, width: int, height: int, clip_skip: int = 1, seed: int, batch_size: int = 1,
            lora_name: str | None = None, lora_strength: float = 1.0,
            filename_prefix: str = "lora_studio/out") -> _Common:
    sampler_name, scheduler_name = resolve_sampler(sampler, scheduler)
    return _Common(
        checkpoint=_file_name("checkpoint", checkpoint), positive=_text("positive", positive),
        negative=_text("negative", negative), sampler_name=sampler_name, scheduler=scheduler_name,
        steps=_int("steps", steps, 1, 10000), cfg=_float("cfg", cfg, 0.0, 100.0), width=_size("width", width),
        height=_size("height", height), clip_skip=_int("clip_skip", clip_skip, 1, 24),
        seed=_int("seed", seed, 0, MAX_SEED), batch_size=_int("batch_size", batch_size, 1, 4096),
        lora=None if lora_name is None or lora_name == "" else _file_name("lora_name", lora_name),
        strength=_float("lora_strength", lora_strength, -100.0, 100.0), prefix=_prefix(filename_prefix),
    )


class _Graph:
    """An API-format graph being built: fixed ids for the txt2img roles, the next free number for the rest."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}
        self._next = FIRST_EXTRA_ID

    def add(self, class_type: str, inputs: dict, node_id: str | None = None) -> str:
        if node_id is None:
            while str(self._next) in self.nodes or str(self._next) in _RESERVED:
                self._next += 1
            node_id = str(self._next)
            self._next += 1
        self.nodes[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id


def _checkpoint_chain(g: _Graph, c: _Common) -> tuple[list, list, list]:
    """CheckpointLoaderSimple -> [CLIPSetLastLayer] -> [LoraLoader]: the (model, clip, vae) links."""
    g.add("CheckpointLoaderSimple", {"ckpt_name": c.checkpoint}, ID_CHECKPOINT)
    model: list = [ID_CHECKPOINT, 0]
    clip: list = [ID_CHECKPOINT, 1]
    vae: list = [ID_CHECKPOINT, 2]
    if c.clip_skip > 1:
        g.add("CLIPSetLastLayer", {"clip": clip, "stop_at_clip_layer": -c.clip_skip}, ID_CLIP_SKIP)
        clip = [ID_CLIP_SKIP, 0]
    if c.lora is not None:
        g.add("LoraLoader", {"model": model, "clip": clip, "lora_name": c.lora,
                             "strength_model": c.strength, "strength_clip": c.strength}, ID_LORA)
        model, clip = [ID_LORA, 0], [ID_LORA, 1]
    return model, clip, vae


def _prompts(g: _Graph, positive: str, negative: str, clip: list) -> tuple[list, list]:
    g.add("CLIPTextEncode", {"text": positive, "clip": list(clip)}, ID_POSITIVE)
    g.add("CLIPTextEncode", {"text": negative, "clip": list(clip)}, ID_NEGATIVE)
    return [ID_POSITIVE, 0], [ID_NEGATIVE, 0]


def _sample_and_save(g: _Graph, c: _Common, model: list, positive: list, negative: list, latent: list,
                     vae: list, denoise: float) -> None:
    g.add("KSampler", {
        "seed": c.seed, "steps": c.steps, "cfg": c.cfg, "sampler_name": c.sampler_name, "scheduler": c.scheduler,
        "denoise": denoise, "model": model, "positive": positive, "negative": negative, "latent_image": latent,
    }, ID_SAMPLER)
    g.add("VAEDecode", {"samples": [ID_SAMPLER, 0], "vae": vae}, ID_DECODE)
    g.add("SaveImage", {"filename_prefix": c.prefix, "images": [ID_DECODE, 0]}, ID_SAVE)


def _load_image(g: _Graph, image: str) -> list:
    return [g.add("LoadImage", {"image": image}), 0]


def _encode(g: _Graph, c: _Common, pixels: list, vae: list, resize: bool) -> list:
    """[ImageScale to the style's size] -> VAEEncode -> [RepeatLatentBatch]: the latent link."""
    if resize:
        pixels = [g.add("ImageScale", {"image": pixels, "upscale_method": "lanczos", "width": c.width,
                                       "height": c.height, "crop": "center"}), 0]
    latent = [g.add("VAEEncode", {"pixels": pixels, "vae": vae}), 0]
    if c.batch_size > 1:
        latent = [g.add("RepeatLatentBatch", {"samples": latent, "amount": c.batch_size}), 0]
    return latent


def _img2img_batch(c: _Common) -> None:
    if c.batch_size > MAX_IMG2IMG_BATCH:
        raise InvalidInput(f"batch_size must be between 1 and {MAX_IMG2IMG_BATCH} for img2img, not {c.batch_size}.")


def build_txt2img(
    *,
    checkpoint: str,
    positive: str,
    negative: str,
    sampler: str,
    scheduler: str | None,
    steps: int,
    cfg: float,
    width: int,
    height: int,
    clip_skip: int = 1,
    seed: int,
    batch_size: int = 1,
    lora_name: str | None = None,
    lora_strength: float = 1.0,
    filename_prefix: str = "lora_studio/out",
) -> dict:
    """The API-format txt2img graph (node id -> {"class_type", "inputs"}) for ComfyUI's POST /prompt.

    CheckpointLoaderSimple -> [CLIPSetLastLayer when clip_skip > 1] -> [LoraLoader when lora_name,
    on both the model and the CLIP] -> CLIPTextEncode x2 -> EmptyLatentImage -> KSampler -> VAEDecode
    -> SaveImage. `lora_name` None or "" means no LoRA. Raises InvalidInput for bad values.
    """
    c = _common(checkpoint=checkpoint, positive=positive, negative=negative, sampler=sampler, scheduler=scheduler,
                steps=steps, cfg=cfg, width=width, height=height, clip_skip=clip_skip, seed=seed,
                batch_size=batch_size, lora_name=lora_name, lora_strength=lora_strength,
                filename_prefix=filename_prefix)
    g = _Graph()
    model, clip, vae = _checkpoint_chain(g, c)
    positive_link, negative_link = _prompts(g, c.positive, c.negative, clip)
    g.add("EmptyLatentImage", {"width": c.width, "height": c.height, "batch_size": c.batch_size}, ID_LATENT)
    _sample_and_save(g, c, model, positive_link, negative_link, [ID_LATENT, 0], vae, 1.0)
    log.debug("txt2img graph: %s, %s/%s, %dx%d, lora=%s", c.checkpoint, c.sampler_name, c.scheduler,
              c.width, c.height, c.lora)
    return g.nodes


def build_img2img(*, image: str, denoise: float = DEFAULT_IMG2IMG_DENOISE, resize: bool = True,
                  **common: Any) -> dict:
    """The img2img graph: build_txt2img's keywords (`common`) plus the image to start from.

    `image` is a name in ComfyUI's input folder (the service uploads the approved image through
    /upload/image first and passes the name it answers; "sub/x.png"). LoadImage -> [ImageScale to the
    style's width x height, lanczos, centre crop, when `resize`: the checkpoint works best at the style's
    size and VAEEncode needs multiples of 8; `resize=False` keeps the image's own size] -> VAEEncode ->
    [RepeatLatentBatch when batch_size > 1] -> KSampler with `denoise` (0 < denoise <= 1; lower keeps more
    of the image) -> VAEDecode -> SaveImage.
    """
    c = _common(**common)
    image = _image_name("image", image)
    denoise = _denoise(denoise)
    _img2img_batch(c)
    g = _Graph()
    model, clip, vae = _checkpoint_chain(g, c)
    positive, negative = _prompts(g, c.positive, c.negative, clip)
    latent = _encode(g, c, _load_image(g, image), vae, bool(resize))
    _sample_and_save(g, c, model, positive, negative, latent, vae, denoise)
    return g.nodes


# -- reference refinement ------------------------------------------------------------------------

# ComfyUI_IPAdapter_plus's presets (IPAdapterUnifiedLoader) and the files each looks for (its utils.py:
# get_ipadapter_file per architecture, get_clipvision_file), to tell beforehand whether a server has them.
_CLIP_VISION_H = r"(ViT.H.14.*s32B.b79K|ipadapter.*sd15|sd1.?5.*model)\.(bin|safetensors)"
_CLIP_VISION_G = r"(ViT.bigG.14.*39B.b160k|ipadapter.*sdxl|sdxl.*model)\.(bin|safetensors)"
IPADAPTER_PRESETS: dict[str, dict[str, Any]] = {
    "LIGHT - SD1.5 only (low strength)": {"sd15": r"sd15.light(.v11)?\.(safetensors|bin)$", "sdxl": None,
                                          "clip_vision": _CLIP_VISION_H},
    "STANDARD (medium strength)": {"sd15": r"ip.adapter.sd15\.(safetensors|bin)$",
                                   "sdxl": r"ip.adapter.sdxl.vit.h\.(safetensors|bin)$", "clip_vision": _CLIP_VISION_H},
    "VIT-G (medium strength)": {"sd15": r"sd15.vit.g\.(safetensors|bin)$",
                                "sdxl": r"ip.adapter.sdxl\.(safetensors|bin)$", "clip_vision": _CLIP_VISION_G},
    "PLUS (high strength)": {"sd15": r"ip.adapter.plus.sd15\.(safetensors|bin)$",
                             "sdxl": r"plus.sdxl.vit.h\.(safetensors|bin)$", "clip_vision": _CLIP_VISION_H},
    "PLUS FACE (portraits)": {"sd15": r"plus.face.sd15\.(safetensors|bin)$",
                              "sdxl": r"plus.face.sdxl.vit.h\.(safetensors|bin)$", "clip_vision": _CLIP_VISION_H},
    "FULL FACE - SD1.5 only (portraits stronger)": {"sd15": r"full.face.sd15\.(safetensors|bin)$", "sdxl": None,
                                                    "clip_vision": _CLIP_VISION_H},
}
DEFAULT_PRESET = "PLUS (high strength)"
REFERENCE_METHODS = ("ipadapter", "unclip", "img2img")
ARCHITECTURES = ("sd15", "sdxl")


@dataclass(frozen=True)
class ReferencePlan:
    """How a server refines from reference images, and why (`reason`, for the user and the log).

    method "ipadapter": ComfyUI_IPAdapter_plus; with `preset` (IPAdapterUnifiedLoader finds the files),
    or with `ipadapter_file` + `clip_vision` (IPAdapterModelLoader + CLIPVisionLoader). "unclip": core
    CLIPVisionLoader(`clip_vision`) -> CLIPVisionEncode -> unCLIPConditioning on the positive prompt (SDXL
    "revision" and unCLIP checkpoints; no effect on SD1.5). "img2img": from the first reference.
    """

    method: str
    reason: str
    preset: str | None = None
    ipadapter_file: str | None = None
    clip_vision: str | None = None


def _ipadapter_plan(info: Mapping[str, Any], architecture: str | None, preset: str,
                    ipadapter_file: str | None, clip_vision: str | None) -> ReferencePlan | str:
    """The IPAdapter plan, or why this server cannot run one."""
    archs = [architecture] if architecture else list(ARCHITECTURES)
    if ipadapter_file is not None:
        absent = missing_nodes(info, ("IPAdapterModelLoader", "CLIPVisionLoader", "IPAdapterAdvanced"))
        if absent:
            return f"the server has no {', '.join(absent)} (the ComfyUI_IPAdapter_plus node pack is needed)"
        files = server_files(info, "ipadapter")
        if files is not None and not files.has(ipadapter_file):
            return files.missing_message(ipadapter_file)
        vision = server_files(info, "clip_vision")
        if clip_vision is None:
            rules = IPADAPTER_PRESETS.get(preset) or IPADAPTER_PRESETS[DEFAULT_PRESET]
            found = vision.matching(rules["clip_vision"]) if vision is not None and vision.listed else []
            if not found:
                return "name the CLIP vision model that goes with the IPAdapter model (clip_vision)"
            clip_vision = found[0]
        elif vision is not None and not vision.has(clip_vision):
            return vision.missing_message(clip_vision)
        return ReferencePlan("ipadapter", f"ComfyUI_IPAdapter_plus with {ipadapter_file} and {clip_vision}",
                             ipadapter_file=ipadapter_file, clip_vision=clip_vision)
    absent = missing_nodes(info, ("IPAdapterUnifiedLoader", "IPAdapterAdvanced"))
    if absent:
        return f"the server has no {', '.join(absent)} (the ComfyUI_IPAdapter_plus node pack is needed)"
    rules = IPADAPTER_PRESETS.get(preset)
    if rules is None:
        raise InvalidInput(f"Unknown IPAdapter preset {preset!r}; one of: {', '.join(IPADAPTER_PRESETS)}.")
    patterns = [rules[a] for a in archs if rules.get(a)]
    if not patterns:
        return f"the IPAdapter preset {preset!r} does not work with {architecture} checkpoints"
    files = server_files(info, "ipadapter")
    if files is not None and files.listed and not any(files.matching(p) for p in patterns):
        return (f"ComfyUI's models/ipadapter has no model for the preset {preset!r} "
                f"(it looks for a name matching {' or '.join(patterns)})")
    vision = server_files(info, "clip_vision")
    if vision is not None and vision.listed and not vision.matching(rules["clip_vision"]):
        return (f"ComfyUI's models/clip_vision has no CLIP vision model for the preset {preset!r} "
                f"(it looks for a name matching {rules['clip_vision']})")
    return ReferencePlan("ipadapter", f"ComfyUI_IPAdapter_plus, preset {preset!r}", preset=preset)


def _unclip_plan(info: Mapping[str, Any], architecture: str | None, clip_vision: str | None) -> ReferencePlan | str:
    if architecture == "sd15":
        return "unCLIP conditioning has no effect on SD1.5 checkpoints"
    absent = missing_nodes(info, ("CLIPVisionLoader", "CLIPVisionEncode", "unCLIPConditioning"))
    if absent:
        return f"the server has no {', '.join(absent)}"
    vision = server_files(info, "clip_vision")
    if clip_vision is not None:
        if vision is not None and not vision.has(clip_vision):
            return vision.missing_message(clip_vision)
    elif vision is None or not vision.listed:
        return "the server does not list its CLIP vision models: name one (clip_vision) to use unCLIP"
    elif not vision.names:
        return "ComfyUI's models/clip_vision is empty"
    else:  # SDXL's revision uses ViT-bigG; take it when there, else the first listed
        clip_vision = (vision.matching(r"clip.vision.g|bigG") or list(vision.names))[0]
    return ReferencePlan("unclip", f"CLIP vision ({clip_vision}) + unCLIPConditioning", clip_vision=clip_vision)


def plan_reference(object_info: Mapping[str, Any], *, references: int = 1, method: str | None = None,
                   architecture: str | None = None, preset: str = DEFAULT_PRESET,
                   ipadapter_file: str | None = None, clip_vision: str | None = None) -> ReferencePlan:
    """Choose how the server whose `/object_info` this is refines from `references` reference images.

    `method` None picks the first the server can run, in this order: "ipadapter" (the server has
    ComfyUI_IPAdapter_plus's nodes and, when it lists them, the preset's model files), "unclip" (core
    nodes and a CLIP vision model: one the server lists, or `clip_vision`; skipped for an `architecture`
    of "sd15"), "img2img" from the first reference (always). A named `method` the server cannot run is an
    InvalidInput saying why. The plan's `reason` says what was chosen and why the others were not.
    """
    references = _int("references", references, 1, MAX_REFERENCES)
    if architecture is not None and architecture not in ARCHITECTURES:
        raise InvalidInput(f"architecture must be one of {', '.join(ARCHITECTURES)}, not {architecture!r}.")
    if method is not None and method not in REFERENCE_METHODS:
        raise InvalidInput(f"method must be one of {', '.join(REFERENCE_METHODS)}, not {method!r}.")
    if ipadapter_file is not None:
        ipadapter_file = _file_name("ipadapter_file", ipadapter_file)
    if clip_vision is not None:
        clip_vision = _file_name("clip_vision", clip_vision)
    why_not: list[str] = []
    for candidate in ([method] if method else REFERENCE_METHODS):
        if candidate == "ipadapter":
            plan: ReferencePlan | str = _ipadapter_plan(object_info, architecture, preset, ipadapter_file, clip_vision)
        elif candidate == "unclip":
            plan = _unclip_plan(object_info, architecture, clip_vision)
        else:
            absent = missing_nodes(object_info, ("LoadImage", "VAEEncode"))
            plan = (f"the server has no {', '.join(absent)}" if absent else
                    ReferencePlan("img2img", "img2img from the first reference image"))
        if isinstance(plan, ReferencePlan):
            if references > 1 and plan.method != "img2img" and not has_nodes(object_info, "ImageBatch"):
                plan = "the server has no ImageBatch node to combine several references"
            else:
                if why_not:
                    plan = ReferencePlan(plan.method, f"{plan.reason} (not {'; not '.join(why_not)})", plan.preset,
                                         plan.ipadapter_file, plan.clip_vision)
                log.info("reference refinement: %s", plan.reason)
                return plan
        why_not.append(f"{candidate}: {plan}")
    raise InvalidInput(f"This ComfyUI cannot refine from references with {method}: {plan}.",
                       code="reference_method_unavailable")


def _batch_images(g: _Graph, loaded: list[list]) -> list:
    """One IMAGE link for several: ImageBatch(image1, image2) chained (ComfyUI rescales to the first's size)."""
    batch = loaded[0]
    for image in loaded[1:]:
        batch = [g.add("ImageBatch", {"image1": batch, "image2": image}), 0]
    return batch


def build_reference(plan: ReferencePlan, *, images: Sequence[str], weight: float = DEFAULT_REFERENCE_WEIGHT,
                    denoise: float | None = None, resize: bool = True, **common: Any) -> dict:
    """The reference refinement graph for `plan` (plan_reference): build_txt2img's keywords (`common`)
    plus the reference images (names in ComfyUI's input folder, as for build_img2img).

    ipadapter: the model after the LoRA goes through IPAdapterUnifiedLoader (or IPAdapterModelLoader +
    CLIPVisionLoader) -> IPAdapterAdvanced with every reference batched (ImageBatch) at `weight`.
    unclip: each reference -> CLIPVisionEncode -> unCLIPConditioning chained on the positive prompt at
    `weight`. Both start from an empty latent (denoise None or 1), or from the first reference with
    `denoise` < 1. img2img: build_img2img on the first reference, `denoise` default 0.6 (1 would ignore it).
    """
    if not isinstance(plan, ReferencePlan) or plan.method not in REFERENCE_METHODS:
        raise InvalidInput("A reference plan from plan_reference() is required.")
    if isinstance(images, str) or not isinstance(images, Sequence) or not images:
        raise InvalidInput("images must be a list of one or more reference image names.")
    if len(images) > MAX_REFERENCES:
        raise InvalidInput(f"At most {MAX_REFERENCES} reference images, not {len(images)}.")
    names = [_image_name(f"images[{i}]", name) for i, name in enumerate(images)]
    weight = _float("weight", weight, 0.0, 3.0)
    if plan.method == "img2img":
        denoise = DEFAULT_REFERENCE_DENOISE if denoise is None else _denoise(denoise)
        if denoise >= 1:
            raise InvalidInput("img2img from a reference needs denoise below 1 (1 would ignore the reference).")
        return build_img2img(image=names[0], denoise=denoise, resize=resize, **common)
    denoise = 1.0 if denoise is None else _denoise(denoise)
    c = _common(**common)
    g = _Graph()
    model, clip, vae = _checkpoint_chain(g, c)
    positive, negative = _prompts(g, c.positive, c.negative, clip)
    loaded = [_load_image(g, name) for name in names]
    if plan.method == "ipadapter":
        inputs: dict[str, Any] = {"image": _batch_images(g, loaded), "weight": weight, "weight_type": "linear",
                                  "combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0,
                                  "embeds_scaling": "V only"}
        if plan.preset is not None:
            loader = g.add("IPAdapterUnifiedLoader", {"model": model, "preset": plan.preset})
            inputs.update(model=[loader, 0], ipadapter=[loader, 1])
        else:
            loader = g.add("IPAdapterModelLoader", {"ipadapter_file": plan.ipadapter_file})
            vision = g.add("CLIPVisionLoader", {"clip_name": plan.clip_vision})
            inputs.update(model=model, ipadapter=[loader, 0], clip_vision=[vision, 0])
        model = [g.add("IPAdapterAdvanced", inputs), 0]
    else:
        vision = g.add("CLIPVisionLoader", {"clip_name": plan.clip_vision})
        for image in loaded:
            encoded = g.add("CLIPVisionEncode", {"clip_vision": [vision, 0], "image": image, "crop": "center"})
            positive = [g.add("unCLIPConditioning", {"conditioning": positive, "clip_vision_output": [encoded, 0],
                                                     "strength": weight, "noise_augmentation": 0.0}), 0]
    if denoise < 1:
        _img2img_batch(c)
        latent = _encode(g, c, loaded[0], vae, bool(resize))
    else:
        latent = [g.add("EmptyLatentImage", {"width": c.width, "height": c.height, "batch_size": c.batch_size},
                        ID_LATENT), 0]
    _sample_and_save(g, c, model, positive, negative, latent, vae, denoise)
    return g.nodes


# -- image to video ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Role:
    """A model file a video family needs: its folder, the name pattern that picks it from a live
    server's list (ComfyUI's example file names), and whether the graph can do without it."""

    folder: str
    pattern: str
    required: bool = True


@dataclass(frozen=True)
class VideoFamily:
    name: str
    label: str
    nodes: tuple[str, ...]
    roles: dict[str, _Role]
    size_multiple: int
    min_size: int
    frame_step: int  # frames = frame_step * k + 1
    min_frames: int
    width: int
    height: int
    frames: int
    fps: float
    steps: int
    cfg: float
    sampler: str
    scheduler: str


# In the order plan_video prefers them. Defaults follow ComfyUI's example workflows for each model.
VIDEO_FAMILIES: dict[str, VideoFamily] = {
    "wan": VideoFamily(
        "wan", "Wan 2.1 image-to-video",
        ("WanImageToVideo", "UNETLoader", "CLIPLoader", "VAELoader", "ModelSamplingSD3", "KSampler", "VAEDecode"),
        {"unet": _Role("diffusion_models", r"wan2?[._]?1.*i2v"), "text_encoder": _Role("text_encoders", r"umt5"),
         "vae": _Role("vae", r"wan.*vae"), "clip_vision": _Role("clip_vision", r"clip.vision.h", required=False)},
        size_multiple=16, min_size=16, frame_step=4, min_frames=1, width=832, height=480, frames=81, fps=16.0,
        steps=20, cfg=6.0, sampler="uni_pc", scheduler="simple"),
    "ltxv": VideoFamily(
        "ltxv", "LTX-Video image-to-video",
        ("LTXVImgToVideo", "LTXVConditioning", "LTXVScheduler", "KSamplerSelect", "SamplerCustom",
         "CheckpointLoaderSimple", "CLIPLoader", "VAEDecode"),
        {"checkpoint": _Role("checkpoints", r"ltx.?v"), "text_encoder": _Role("text_encoders", r"t5.?xxl")},
        size_multiple=32, min_size=64, frame_step=8, min_frames=9, width=768, height=512, frames=97, fps=24.0,
        steps=30, cfg=3.0, sampler="euler", scheduler="normal"),
    "svd": VideoFamily(
        "svd", "Stable Video Diffusion",
        ("SVD_img2vid_Conditioning", "ImageOnlyCheckpointLoader", "VideoLinearCFGGuidance", "KSampler", "VAEDecode"),
        {"checkpoint": _Role("checkpoints", r"svd")},
        size_multiple=8, min_size=16, frame_step=1, min_frames=1, width=1024, height=576, frames=14, fps=6.0,
        steps=20, cfg=2.5, sampler="euler", scheduler="karras"),
}
# How a video is saved, best first: CreateVideo+SaveVideo (mp4/h264), SaveWEBM (vp9), SaveAnimatedWEBP.
VIDEO_SAVERS: dict[str, tuple[str, ...]] = {
    "SaveVideo": ("CreateVideo", "SaveVideo"),
    "SaveWEBM": ("SaveWEBM",),
    "SaveAnimatedWEBP": ("SaveAnimatedWEBP",),
}


@dataclass(frozen=True)
class VideoPlan:
    """The video family a server can run (`family`), its model files by role, how the video is saved
    (`save`, a VIDEO_SAVERS key), and why (`reason`)."""

    family: str
    models: dict[str, str] = field(default_factory=dict)
    save: str = "SaveVideo"
    reason: str = ""


def _video_plan(info: Mapping[str, Any], family: VideoFamily, given: Mapping[str, str]) -> VideoPlan | str:
    absent = missing_nodes(info, family.nodes)
    if absent:
        return f"the server has no {', '.join(absent)}"
    unknown = sorted(set(given) - set(family.roles))
    if unknown:
        raise InvalidInput(f"{family.label} has no model role {', '.join(unknown)}; its roles: "
                           f"{', '.join(family.roles)}.")
    models: dict[str, str] = {}
    for role, spec in family.roles.items():
        files = server_files(info, spec.folder)
        label = files.label if files is not None else spec.folder
        if role in given:
            name = _file_name(f"models.{role}", given[role])
            if files is not None and not files.has(name):
                return files.missing_message(name)
            models[role] = name
        elif files is not None and files.listed:
            found = files.matching(spec.pattern)
            if found:
                models[role] = found[0]
            elif spec.required:
                return f"ComfyUI's models/{spec.folder} has no {label} for it (a name matching {spec.pattern!r})"
        elif spec.required:
            return f"the server does not list its {label} files: name the {role} (models.{role})"
    return VideoPlan(family.name, models)


def plan_video(object_info: Mapping[str, Any], *, family: str | None = None,
               models: Mapping[str, str] | None = None) -> VideoPlan:
    """Choose the native image-to-video family the server whose `/object_info` this is can run.

    A family is usable when the server has its nodes and its model files: named in `models` (role ->
    file; checked against the server's lists when it lists them) or picked from the server's lists by
    name (VIDEO_FAMILIES' patterns: "wan2.1…i2v", "umt5", "wan…vae"; "ltx-video", "t5xxl"; "svd").
    `family` None tries wan, ltxv, svd in that order (`models` then needs `family`). The video is saved
    with the best saver the server has (VIDEO_SAVERS), never as separate frames. InvalidInput (code
    "no_video_model") naming why each family cannot run when none can.
    """
    given = dict(models or {})
    if not isinstance(given, dict) or not all(isinstance(k, str) for k in given):
        raise InvalidInput("models must map model roles to file names.")
    if family is not None and family not in VIDEO_FAMILIES:
        raise InvalidInput(f"family must be one of {', '.join(VIDEO_FAMILIES)}, not {family!r}.")
    if given and family is None:
        raise InvalidInput("Name the video family (wan, ltxv or svd) the model files are for.")
    saver = next((name for name, nodes in VIDEO_SAVERS.items() if has_nodes(object_info, *nodes)), None)
    if saver is None:
        raise InvalidInput("ComfyUI at this server has no node to save a video (SaveVideo, SaveWEBM or "
                           "SaveAnimatedWEBP): a ComfyUI update is needed.", code="no_video_model")
    why_not: list[str] = []
    for name in [family] if family else list(VIDEO_FAMILIES):
        spec = VIDEO_FAMILIES[name]
        plan = _video_plan(object_info, spec, given if family else {})
        if isinstance(plan, VideoPlan):
            files = ", ".join(plan.models.values())
            reason = f"{spec.label} ({files}), saved with {saver}"
            if why_not:
                reason += f" (not {'; not '.join(why_not)})"
            log.info("image to video: %s", reason)
            return VideoPlan(name, plan.models, saver, reason)
        why_not.append(f"{name}: {plan}")
    raise InvalidInput("ComfyUI at this server cannot make a video from an image — " + "; ".join(why_not)
                       + ". A video model pack (Wan 2.1 i2v, LTX-Video or SVD files in its models folders) "
                       "or a ComfyUI update is needed.", code="no_video_model")


def _save_video(g: _Graph, saver: str, images: list, fps: float, prefix: str) -> None:
    if saver == "SaveVideo":
        video = g.add("CreateVideo", {"images": images, "fps": fps})
        g.add("SaveVideo", {"video": [video, 0], "filename_prefix": prefix, "format": "mp4", "codec": "h264"},
              ID_SAVE)
    elif saver == "SaveWEBM":
        g.add("SaveWEBM", {"images": images, "filename_prefix": prefix, "codec": "vp9", "fps": fps, "crf": 32.0},
              ID_SAVE)
    elif saver == "SaveAnimatedWEBP":
        g.add("SaveAnimatedWEBP", {"images": images, "filename_prefix": prefix, "fps": fps, "lossless": False,
                                   "quality": 90, "method": "default"}, ID_SAVE)
    else:
        raise InvalidInput(f"Unknown video saver {saver!r}; one of {', '.join(VIDEO_SAVERS)}.")


def build_video(plan: VideoPlan, *, image: str, positive: str, negative: str, seed: int,
                width: int | None = None, height: int | None = None, frames: int | None = None,
                fps: float | None = None, steps: int | None = None, cfg: float | None = None,
                sampler: str | None = None, scheduler: str | None = None,
                filename_prefix: str = "lora_studio/video") -> dict:
    """The image-to-video graph for `plan` (plan_video) from one image (a name in ComfyUI's input folder).

    Size, frames, fps, steps, cfg, sampler and scheduler default to the family's (VIDEO_FAMILIES); width
    and height must be multiples of the family's `size_multiple` (at most MAX_VIDEO_SIZE), frames
    `frame_step * k + 1` (at most MAX_VIDEO_FRAMES), fps 1–60. The frames are decoded and saved as one
    video (plan.save). The character's LoRA does not apply (it was trained for an image checkpoint): the
    image carries the character. SVD takes no text: its prompts are checked and not used.
    """
    if not isinstance(plan, VideoPlan) or plan.family not in VIDEO_FAMILIES:
        raise InvalidInput("A video plan from plan_video() is required.")
    f = VIDEO_FAMILIES[plan.family]
    image = _image_name("image", image)
    positive, negative = _text("positive", positive), _text("negative", negative)
    seed = _int("seed", seed, 0, MAX_SEED)
    width = _video_size("width", f.width if width is None else width, f.size_multiple, f.min_size)
    height = _video_size("height", f.height if height is None else height, f.size_multiple, f.min_size)
    frames = _int("frames", f.frames if frames is None else frames, f.min_frames, MAX_VIDEO_FRAMES)
    if (frames - 1) % f.frame_step:
        raise InvalidInput(f"frames must be {f.frame_step}·k + 1 for {f.label} (e.g. {f.frames}), not {frames}.")
    fps = _float("fps", f.fps if fps is None else fps, 1.0, 60.0)
    steps = _int("steps", f.steps if steps is None else steps, 1, 10000)
    cfg = _float("cfg", f.cfg if cfg is None else cfg, 0.0, 100.0)
    sampler_name, scheduler_name = resolve_sampler(sampler or f.sampler, scheduler or f.scheduler)
    prefix = _prefix(filename_prefix)
    for role, spec in f.roles.items():
        if spec.required and not plan.models.get(role):
            raise InvalidInput(f"The video plan names no {role} model.")

    g = _Graph()
    start = _load_image(g, image)
    sampler_inputs = {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler_name,
                      "scheduler": scheduler_name, "denoise": 1.0}
    if f.name == "wan":
        unet = g.add("UNETLoader", {"unet_name": plan.models["unet"], "weight_dtype": "default"})
        model = [g.add("ModelSamplingSD3", {"model": [unet, 0], "shift": 8.0}), 0]
        clip = [g.add("CLIPLoader", {"clip_name": plan.models["text_encoder"], "type": "wan"}), 0]
        vae = [g.add("VAELoader", {"vae_name": plan.models["vae"]}), 0]
        pos, neg = _prompts(g, positive, negative, clip)
        cond: dict[str, Any] = {"positive": pos, "negative": neg, "vae": vae, "width": width, "height": height,
                                "length": frames, "batch_size": 1, "start_image": start}
        if plan.models.get("clip_vision"):
            vision = g.add("CLIPVisionLoader", {"clip_name": plan.models["clip_vision"]})
            cond["clip_vision_output"] = [g.add("CLIPVisionEncode", {"clip_vision": [vision, 0], "image": start,
                                                                     "crop": "none"}), 0]
        i2v = g.add("WanImageToVideo", cond)
        g.add("KSampler", {**sampler_inputs, "model": model, "positive": [i2v, 0], "negative": [i2v, 1],
                           "latent_image": [i2v, 2]}, ID_SAMPLER)
        samples: list = [ID_SAMPLER, 0]
    elif f.name == "ltxv":
        ckpt = g.add("CheckpointLoaderSimple", {"ckpt_name": plan.models["checkpoint"]}, ID_CHECKPOINT)
        model, vae = [ckpt, 0], [ckpt, 2]
        clip = [g.add("CLIPLoader", {"clip_name": plan.models["text_encoder"], "type": "ltxv"}), 0]
        pos, neg = _prompts(g, positive, negative, clip)
        i2v = g.add("LTXVImgToVideo", {"positive": pos, "negative": neg, "vae": vae, "image": start, "width": width,
                                       "height": height, "length": frames, "batch_size": 1, "strength": 1.0})
        conditioned = g.add("LTXVConditioning", {"positive": [i2v, 0], "negative": [i2v, 1], "frame_rate": fps})
        select = g.add("KSamplerSelect", {"sampler_name": sampler_name})
        sigmas = g.add("LTXVScheduler", {"steps": steps, "max_shift": 2.05, "base_shift": 0.95, "stretch": True,
                                         "terminal": 0.1, "latent": [i2v, 2]})
        g.add("SamplerCustom", {"model": model, "add_noise": True, "noise_seed": seed, "cfg": cfg,
                                "positive": [conditioned, 0], "negative": [conditioned, 1], "sampler": [select, 0],
                                "sigmas": [sigmas, 0], "latent_image": [i2v, 2]}, ID_SAMPLER)
        samples = [ID_SAMPLER, 0]
    else:  # svd
        ckpt = g.add("ImageOnlyCheckpointLoader", {"ckpt_name": plan.models["checkpoint"]}, ID_CHECKPOINT)
        vae = [ckpt, 2]
        model = [g.add("VideoLinearCFGGuidance", {"model": [ckpt, 0], "min_cfg": 1.0}), 0]
        cond_id = g.add("SVD_img2vid_Conditioning", {
            "clip_vision": [ckpt, 1], "init_image": start, "vae": vae, "width": width, "height": height,
            "video_frames": frames, "motion_bucket_id": 127, "fps": max(1, round(fps)), "augmentation_level": 0.0})
        g.add("KSampler", {**sampler_inputs, "model": model, "positive": [cond_id, 0], "negative": [cond_id, 1],
                           "latent_image": [cond_id, 2]}, ID_SAMPLER)
        samples = [ID_SAMPLER, 0]
    g.add("VAEDecode", {"samples": samples, "vae": vae}, ID_DECODE)
    _save_video(g, plan.save, [ID_DECODE, 0], fps, prefix)
    log.debug("video graph: %s %dx%d, %d frames at %g fps, saved with %s", f.name, width, height, frames, fps,
              plan.save)
    return g.nodes
