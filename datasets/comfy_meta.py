"""What an output file says about itself, read cheaply for the gallery index: its kind and size in
pixels, and the generation parameters ComfyUI embedded (the API-format `prompt` graph and the editor's
`workflow`, PNG text chunks, WebP EXIF or video container tags; A1111's `parameters` text as well).

Reading never decodes pixels: a PNG's chunks are walked with seeks (its text chunks come before the
image data, an animated PNG's `comf` chunks after it), other images are opened lazily by PIL and
videos by PyAV for their container tags. Anything unreadable, oversized or hostile yields what could be
read (possibly nothing): one odd file never stops an indexing pass."""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
               ".gif": "image/gif"}
VIDEO_TYPES = {".webm": "video/webm", ".mp4": "video/mp4", ".mov": "video/quicktime"}
MEDIA_TYPES = {**IMAGE_TYPES, **VIDEO_TYPES}

MAX_TEXT = 4 * 1024 * 1024  # one embedded text (a graph) larger than this is not read
MAX_CHUNKS = 20000  # chunks walked in one PNG (an APNG has two per frame)
MAX_DEPTH = 64  # links followed through a graph
PARAM_KEYS = ("positive", "negative", "seed", "sampler", "scheduler", "steps", "cfg", "checkpoint", "loras")
MAX_PROMPT = 20000  # characters of a prompt kept

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TEXT_CHUNKS = {b"tEXt", b"iTXt", b"zTXt", b"comf"}


@dataclass
class MediaInfo:
    """A file as the index records it; `texts` are the embedded texts by key (JSON still as text)."""

    kind: str  # image | video
    media_type: str
    width: int | None = None
    height: int | None = None
    texts: dict[str, str] = field(default_factory=dict)


def media_type(path: str | Path) -> str | None:
    """The content type of a file the gallery lists, None for any other."""
    return MEDIA_TYPES.get(Path(path).suffix.lower())


def read_media(path: Path) -> MediaInfo:
    """Kind, size and embedded texts of an output file (never raises for a bad file)."""
    suffix = path.suffix.lower()
    mtype = MEDIA_TYPES.get(suffix, "application/octet-stream")
    if suffix in VIDEO_TYPES:
        return _read_video(path, mtype)
    info = MediaInfo("image", mtype)
    try:
        if suffix == ".png":
            _read_png(path, info)
        else:
            _read_with_pil(path, info)
    except (OSError, ValueError, EOFError, struct.error, zlib.error, MemoryError):
        pass
    except Exception:  # PIL raises its own errors for damaged files; a bad file must not stop a pass
        pass
    return info


def _read_png(path: Path, info: MediaInfo) -> None:
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return
        for _ in range(MAX_CHUNKS):
            head = f.read(8)
            if len(head) < 8:
                return
            length, ctype = struct.unpack(">I4s", head)
            if ctype == b"IHDR" and length >= 8:
                info.width, info.height = struct.unpack(">II", f.read(8))
                f.seek(length - 8 + 4, 1)
            elif ctype == b"acTL":  # an animated PNG (ComfyUI's SaveAnimatedPNG)
                info.kind = "video"
                f.seek(length + 4, 1)
            elif ctype in _TEXT_CHUNKS and length <= MAX_TEXT + 1024:
                data = f.read(length)
                f.seek(4, 1)
                key, text = _text_chunk(ctype, data)
                if key and text is not None and key not in info.texts:
                    info.texts[key] = text
            elif ctype == b"IEND":
                return
            else:
                f.seek(length + 4, 1)


def _text_chunk(ctype: bytes, data: bytes) -> tuple[str | None, str | None]:
    key, sep, rest = data.partition(b"\0")
    if not sep:
        return None, None
    name = key.decode("latin-1")
    if ctype in (b"tEXt", b"comf"):
        return name, rest.decode("latin-1" if ctype == b"tEXt" else "utf-8", "replace")
    if ctype == b"zTXt":
        return name, _inflate(rest[1:]).decode("latin-1")
    # iTXt: compression flag, method, language\0, translated keyword\0, text (UTF-8)
    if len(rest) < 2:
        return None, None
    compressed, body = rest[0], rest[2:]
    body = body.split(b"\0", 2)[-1] if body.count(b"\0") >= 2 else b""
    return name, (_inflate(body) if compressed else body).decode("utf-8", "replace")


def _inflate(data: bytes) -> bytes:
    d = zlib.decompressobj()
    out = d.decompress(data, MAX_TEXT)
    if d.unconsumed_tail:
        raise ValueError("an embedded text larger than its limit")
    return out


def _read_with_pil(path: Path, info: MediaInfo) -> None:
    from PIL import Image

    with Image.open(path) as im:
        info.width, info.height = im.size
        if getattr(im, "is_animated", False):  # an animated WebP/GIF (SaveAnimatedWEBP): a clip
            info.kind = "video"
        try:  # SaveAnimatedWEBP: EXIF 0x0110 "prompt:<json>", 0x010f "workflow:<json>", 0x010e, … (extra_pnginfo)
            exif = im.getexif()
        except Exception:
            exif = {}
        for tag in range(0x0100, 0x0111):
            value = exif.get(tag)
            if isinstance(value, bytes):
                value = value.decode("utf-8", "replace")
            if isinstance(value, str) and len(value) <= MAX_TEXT:
                key, sep, text = value.partition(":")
                if sep and re.fullmatch(r"[\w.-]{1,64}", key) and text.lstrip()[:1] in ("{", "["):
                    info.texts.setdefault(key, text)
        for key in ("prompt", "workflow", "parameters"):  # a JPEG or WebP with text in its comment/XMP
            value = im.info.get(key)
            if isinstance(value, str) and len(value) <= MAX_TEXT:
                info.texts.setdefault(key, value)


def _read_video(path: Path, mtype: str) -> MediaInfo:
    """Dimensions and the container tags ComfyUI writes (SaveWEBM/SaveVideo: `prompt`, `workflow`, …)."""
    info = MediaInfo("video", mtype)
    try:
        import av

        with av.open(str(path), metadata_errors="ignore") as container:
            for key, value in (container.metadata or {}).items():  # Matroska may hand keys back in capitals
                if isinstance(value, str) and len(value) <= MAX_TEXT:
                    info.texts.setdefault(str(key).lower(), value)
            video = next(iter(container.streams.video), None)
            if video is not None and video.codec_context is not None:
                info.width = video.codec_context.width or None
                info.height = video.codec_context.height or None
    except Exception:  # not a video PyAV can open (or PyAV missing): kind and type from the name
        pass
    return info


# -- parameters ------------------------------------------------------------------------------------

def empty_params() -> dict:
    return {k: ([] if k == "loras" else None) for k in PARAM_KEYS}


def parse_json_text(text: str | None) -> Any:
    if not text or len(text) > MAX_TEXT:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def extract_params(texts: dict[str, str], file_name: str = "") -> dict:
    """The generation parameters in a file's embedded texts: from the API graph (`prompt`), else the
    editor's graph (`workflow`), else A1111's `parameters`. Unknown values are None."""
    graph = parse_json_text(texts.get("prompt"))
    if isinstance(graph, dict) and graph:
        params = params_from_graph(graph, file_name)
        if any(params[k] not in (None, []) for k in PARAM_KEYS):
            return params
    workflow = parse_json_text(texts.get("workflow"))
    if isinstance(workflow, dict):
        graph = graph_from_workflow(workflow)
        if graph:
            params = params_from_graph(graph, file_name)
            if any(params[k] not in (None, []) for k in PARAM_KEYS):
                return params
    if isinstance(texts.get("parameters"), str):
        return params_from_a1111(texts["parameters"])
    return empty_params()


def studio_tag(texts: dict[str, str]) -> dict:
    """The studio's own mark (`extra_pnginfo.lora_studio`: {character_id, kind}), {} when none."""
    value = parse_json_text(texts.get("lora_studio"))
    return value if isinstance(value, dict) else {}


_SAMPLERS = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"}


def _nodes(graph: dict) -> dict[str, dict]:
    return {str(k): v for k, v in graph.items()
            if isinstance(v, dict) and isinstance(v.get("class_type"), str) and isinstance(v.get("inputs"), dict)}


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str | int)
            and not isinstance(value[0], bool) and isinstance(value[1], int))


def _is_sampler(node: dict) -> bool:
    inputs = node["inputs"]
    return node["class_type"] in _SAMPLERS or ("steps" in inputs and ("seed" in inputs or "noise_seed" in inputs)
                                               and "model" in inputs)


def _upstream(nodes: dict[str, dict], start: str) -> list[str]:
    """Node ids reachable through links from `start` (itself first), nearest first."""
    seen, order, queue = {start}, [start], [start]
    while queue and len(order) < 5000:
        nid = queue.pop(0)
        for value in nodes[nid]["inputs"].values():
            if _is_link(value) and str(value[0]) in nodes and str(value[0]) not in seen:
                seen.add(str(value[0]))
                order.append(str(value[0]))
                queue.append(str(value[0]))
    return order


def _pick_sampler(nodes: dict[str, dict], file_name: str) -> str | None:
    savers = [nid for nid, n in nodes.items() if isinstance(n["inputs"].get("filename_prefix"), str)]
    stem = file_name.rsplit("/", 1)[-1]
    savers.sort(key=lambda nid: (not stem.startswith(str(nodes[nid]["inputs"]["filename_prefix"]).rsplit("/", 1)[-1]),
                                 _numeric(nid)))
    for saver in savers:
        for nid in _upstream(nodes, saver):
            if _is_sampler(nodes[nid]):
                return nid
    samplers = sorted((nid for nid, n in nodes.items() if _is_sampler(n)), key=_numeric)
    return samplers[0] if samplers else None


def _numeric(nid: str) -> tuple[int, str]:
    head = nid.split(":", 1)[0]
    return (int(head), nid) if head.isdigit() else (1 << 30, nid)


def _scalar(nodes: dict[str, dict], value: Any, names: tuple[str, ...], depth: int = 0) -> Any:
    """A literal input value, following a link to the node that holds it (a primitive or seed node)."""
    if not _is_link(value):
        return value
    if depth > MAX_DEPTH or str(value[0]) not in nodes:
        return None
    inputs = nodes[str(value[0])]["inputs"]
    for name in (*names, "value", "seed", "int", "float", "string", "text", "number"):
        if name in inputs:
            return _scalar(nodes, inputs[name], names, depth + 1)
    literals = [v for v in inputs.values() if not _is_link(v)]
    return literals[0] if len(literals) == 1 else None


def _find(nodes: dict[str, dict], order: list[str], names: tuple[str, ...]) -> Any:
    for nid in order:
        inputs = nodes[nid]["inputs"]
        for name in names:
            if name in inputs:
                value = _scalar(nodes, inputs[name], names)
                if value is not None:
                    return value
    return None


_TEXT_INPUTS = ("text", "text_g", "text_l", "prompt", "positive_prompt", "string")
_CONDITIONING_INPUTS = ("conditioning", "conditioning_to", "conditioning_1", "base", "cond", "conditioning_from")


def _prompt_text(nodes: dict[str, dict], link: Any, role: str) -> str | None:
    """Follow a conditioning link (through ControlNet, Wan/SVD conditioning, combine nodes, …) to the text
    encoder and read its text."""
    for _ in range(MAX_DEPTH):
        if not _is_link(link) or str(link[0]) not in nodes:
            return None
        inputs = nodes[str(link[0])]["inputs"]
        for name in _TEXT_INPUTS:
            if name in inputs:
                text = _scalar(nodes, inputs[name], (name,))
                if isinstance(text, str):
                    if name == "text_g" and isinstance(inputs.get("text_l"), str) and inputs["text_l"] not in text:
                        text = f"{text}, {inputs['text_l']}" if inputs["text_l"] else text
                    return text
        nxt = inputs.get(role)
        if not _is_link(nxt):
            nxt = next((inputs[n] for n in _CONDITIONING_INPUTS if _is_link(inputs.get(n))), None)
        if nxt is None:
            nxt = next((v for v in inputs.values() if _is_link(v)), None)
        link = nxt
    return None


def _number(value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind is int:
        return int(value) if float(value).is_integer() else None
    return float(value) if value == value and abs(value) != float("inf") else None


def _text(value: Any, limit: int = 500) -> str | None:
    return value[:limit] if isinstance(value, str) else None


def params_from_graph(graph: dict, file_name: str = "") -> dict:
    """Parameters from an API-format graph ({id: {class_type, inputs}}), following links from the
    sampler that fed the file's save node."""
    params = empty_params()
    nodes = _nodes(graph)
    sampler = _pick_sampler(nodes, file_name)
    order = _upstream(nodes, sampler) if sampler else sorted(nodes, key=_numeric)
    if sampler:
        for role in ("positive", "negative"):
            holder = next((nid for nid in order if _is_link(nodes[nid]["inputs"].get(role))), None)
            if holder is not None:
                params[role] = _text(_prompt_text(nodes, nodes[holder]["inputs"][role], role), MAX_PROMPT)
    params["seed"] = _number(_find(nodes, order, ("seed", "noise_seed")), int)
    params["steps"] = _number(_find(nodes, order, ("steps",)), int)
    params["cfg"] = _number(_find(nodes, order, ("cfg",)), float)
    params["sampler"] = _text(_find(nodes, order, ("sampler_name",)))
    params["scheduler"] = _text(_find(nodes, order, ("scheduler",)))
    params["checkpoint"] = _text(_find(nodes, order, ("ckpt_name", "unet_name")))
    loras, seen = [], set()
    for nid in reversed(order):  # from the checkpoint towards the sampler
        inputs = nodes[nid]["inputs"]
        name = _scalar(nodes, inputs.get("lora_name"), ("lora_name",))
        if isinstance(name, str) and name and name.lower() != "none" and (name, nid) not in seen:
            seen.add((name, nid))
            loras.append({"name": name[:500],
                          "strength_model": _number(_scalar(nodes, inputs.get("strength_model"), ("strength_model",)),
                                                    float),
                          "strength_clip": _number(_scalar(nodes, inputs.get("strength_clip"), ("strength_clip",)),
                                                   float)})
    params["loras"] = loras[:50]
    return params


# The editor's widget order for the nodes whose values the parameters need (its `widgets_values`).
_WIDGETS = {
    "KSampler": ("seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"),
    "KSamplerAdvanced": ("add_noise", "noise_seed", None, "steps", "cfg", "sampler_name", "scheduler"),
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": ("width", "height", "crop_w", "crop_h", "target_width", "target_height", "text_g", "text_l"),
    "CheckpointLoaderSimple": ("ckpt_name",),
    "UNETLoader": ("unet_name",),
    "LoraLoader": ("lora_name", "strength_model", "strength_clip"),
    "LoraLoaderModelOnly": ("lora_name", "strength_model"),
    "RandomNoise": ("noise_seed",),
    "KSamplerSelect": ("sampler_name",),
    "BasicScheduler": ("scheduler", "steps", "denoise"),
    "CFGGuider": ("cfg",),
    "SaveImage": ("filename_prefix",),
    "PrimitiveNode": ("value",),
}


def graph_from_workflow(workflow: dict) -> dict:
    """An API-like graph from the editor's workflow (nodes with widgets_values, links), for the node types
    whose widget order is known; other nodes keep their links only."""
    nodes = workflow.get("nodes")
    links = workflow.get("links")
    if not isinstance(nodes, list) or not isinstance(links, list):
        return {}
    by_link = {}
    for link in links:
        if isinstance(link, list) and len(link) >= 5:
            by_link[link[0]] = [str(link[1]), link[2] if isinstance(link[2], int) else 0]
        elif isinstance(link, dict) and "id" in link:
            by_link[link["id"]] = [str(link.get("origin_id")), link.get("origin_slot") or 0]
    graph: dict[str, dict] = {}
    for node in nodes[:5000]:
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            continue
        inputs: dict[str, Any] = {}
        names = _WIDGETS.get(node["type"], ())
        values = node.get("widgets_values")
        if isinstance(values, list):
            for name, value in zip(names, values, strict=False):
                if name:
                    inputs[name] = value
        for slot in node.get("inputs") or []:
            if isinstance(slot, dict) and isinstance(slot.get("name"), str) and slot.get("link") in by_link:
                inputs[slot["name"]] = by_link[slot["link"]]
        graph[str(node.get("id"))] = {"class_type": node["type"], "inputs": inputs}
    return graph


_A1111_KEYS = {"Steps": ("steps", int), "Sampler": ("sampler", str), "Schedule type": ("scheduler", str),
               "CFG scale": ("cfg", float), "Seed": ("seed", int), "Model": ("checkpoint", str)}
_A1111_LORA = re.compile(r"<lora:([^:>]+):([-+0-9.eE]+)(?::([-+0-9.eE]+))?>")


def params_from_a1111(text: str) -> dict:
    """A1111/Forge's `parameters` text: the prompt, "Negative prompt: …", then "Key: value, …"."""
    params = empty_params()
    lines = text.strip().split("\n")
    settings = lines.pop() if lines and re.match(r"^\s*Steps:", lines[-1]) else ""
    body = "\n".join(lines)
    positive, sep, negative = body.partition("Negative prompt:")
    params["positive"] = positive.strip()[:MAX_PROMPT] or None
    params["negative"] = negative.strip()[:MAX_PROMPT] if sep else None
    for key, value in re.findall(r"\s*([\w ]+):\s*(\"(?:[^\"\\]|\\.)*\"|[^,]*)(?:,|$)", settings):
        target = _A1111_KEYS.get(key.strip())
        if target:
            name, kind = target
            try:
                params[name] = kind(value.strip()) if kind is not str else value.strip()[:500]
            except ValueError:
                continue
    for m in _A1111_LORA.finditer(params["positive"] or ""):
        try:
            strength = float(m.group(2))
            params["loras"].append({"name": m.group(1)[:500], "strength_model": strength,
                                    "strength_clip": float(m.group(3)) if m.group(3) else strength})
        except ValueError:
            continue
    params["loras"] = params["loras"][:50]
    return params
