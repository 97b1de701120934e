"""Check an API-format graph against the target ComfyUI's `/object_info` before it is sent.

`validate_graph` answers `{}` for a graph ComfyUI would accept, else the body ComfyUI's
`POST /prompt` answers with HTTP 400: `{"error": {...}, "node_errors": {...}}` with the same error
types, messages and details (see tests/fixtures/comfyui/samples). Like ComfyUI, only nodes that an
output node depends on are checked, and errors are reported on the node that has them (nodes that
are invalid only because an upstream node is invalid are not listed).

`check_graph` is the studio's pre-send check: the same validation, worded for a person and raised as
`GraphNotRunnable` (an InvalidInput, 400) that names every missing node class, input, out-of-range
value and model file, so a graph that cannot run is refused before ComfyUI sees it.

Model files: on a live server the choice lists of the loaders (checkpoints, LoRAs, VAEs, …) are the
files in its model folders, so a name that is not listed is a file the server does not have. The
recorded fixture (tests/fixtures/comfyui/object_info.json) empties those lists and marks them
`"x_lists_server_files": true`: such a list means "any file". Upload widgets (LoadImage's image,
LoadVideo's file) are checked by ComfyUI itself when the prompt runs (their node validates the path,
subfolders included), so any non-empty name passes here: the studio uploads the image just before it
queues the graph.

Differences from ComfyUI, on purpose: literals are not coerced (an INT must be an int, not "20" or
7.5; FLOAT accepts int or float; STRING a str; BOOLEAN a bool), links to missing nodes or outputs are
reported on the linking node instead of raising inside the validator, and a graph with any invalid
output is refused (ComfyUI would run the valid outputs and ignore the others).
(Just over 500 lines: ComfyUI's validation and its wording for people belong together.)
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import InvalidInput
from ..core.samplers import _choices
from .client import summarize_errors

log = logging.getLogger("lora_studio.comfy")

_LONG_LIST = 20  # ComfyUI abbreviates choice lists longer than this in error details
_UPLOAD_WIDGETS = ("image_upload", "video_upload", "audio_upload", "file_upload")
MAX_PROBLEMS = 12  # problems named in one error message

# Model folders ComfyUI lists in loader combos: folder -> (what one file is called, the node input that lists it).
MODEL_FOLDERS: dict[str, tuple[str, tuple[str, str]]] = {
    "checkpoints": ("checkpoint", ("CheckpointLoaderSimple", "ckpt_name")),
    "loras": ("LoRA", ("LoraLoader", "lora_name")),
    "vae": ("VAE", ("VAELoader", "vae_name")),
    "text_encoders": ("text encoder", ("CLIPLoader", "clip_name")),
    "clip_vision": ("CLIP vision model", ("CLIPVisionLoader", "clip_name")),
    "diffusion_models": ("diffusion model", ("UNETLoader", "unet_name")),
    "style_models": ("style model", ("StyleModelLoader", "style_model_name")),
    "controlnet": ("ControlNet model", ("ControlNetLoader", "control_net_name")),
    "upscale_models": ("upscale model", ("UpscaleModelLoader", "model_name")),
    "ipadapter": ("IPAdapter model", ("IPAdapterModelLoader", "ipadapter_file")),
}

# Every loader input that names a file of a model folder (the core nodes', and IPAdapter_plus's).
FILE_INPUTS: dict[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("unCLIPCheckpointLoader", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("CreateHookModelAsLora", "ckpt_name"): "checkpoints",
    ("CreateHookModelAsLoraModelOnly", "ckpt_name"): "checkpoints",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("CreateHookLora", "lora_name"): "loras",
    ("CreateHookLoraModelOnly", "lora_name"): "loras",
    ("VAELoader", "vae_name"): "vae",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name1"): "text_encoders",
    ("TripleCLIPLoader", "clip_name2"): "text_encoders",
    ("TripleCLIPLoader", "clip_name3"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("StyleModelLoader", "style_model_name"): "style_models",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("IPAdapterModelLoader", "ipadapter_file"): "ipadapter",
}

# Why a server may lack a node class, by name: what the user needs to install.
_VIDEO_NODE = re.compile(r"(Wan|LTXV|SVD_|Hunyuan.*Video|Cosmos|Mochi|Video|WEBM|AnimatedWEBP)")


def node_hint(class_type: str) -> str:
    """What a server that lacks `class_type` needs, in a few words."""
    if class_type.startswith(("IPAdapter", "IPAAdapter", "PrepImageForClipVision")):
        return "the ComfyUI_IPAdapter_plus node pack is needed"
    if class_type.startswith("LoraStudio"):
        return "LoRA Studio must be installed in that ComfyUI"
    if _VIDEO_NODE.search(class_type):
        return "a video model pack/ComfyUI update is needed"
    return "a custom node pack or a ComfyUI update is needed"


# -- the server's model files ---------------------------------------------------------------------


def _spec(object_info: Mapping[str, Any], class_type: str, input_name: str) -> list | None:
    node = object_info.get(class_type)
    inputs = node.get("input") if isinstance(node, Mapping) else None
    if not isinstance(inputs, Mapping):
        return None
    for category in ("required", "optional"):
        spec = (inputs.get(category) or {}).get(input_name)
        if spec is not None:
            return spec if isinstance(spec, list) else [spec]
    return None


def _options(spec: list) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _any_name(spec: list) -> bool:
    """Whether a combo accepts any non-empty name: a list of server files emptied in a recording, an
    upload widget (its node checks the file when the prompt runs), or a list the front end fetches."""
    options = _options(spec)
    if any(options.get(flag) for flag in _UPLOAD_WIDGETS) or options.get("remote"):
        return True
    return bool(options.get("x_lists_server_files")) and not _choices(spec)


@dataclass(frozen=True)
class ServerFiles:
    """The files of one model folder a ComfyUI lists. `listed` False: the answer does not list them (a
    recording with the lists emptied): any name is taken to exist, and nothing can be picked by name."""

    folder: str
    names: tuple[str, ...]
    listed: bool

    @property
    def label(self) -> str:
        return MODEL_FOLDERS.get(self.folder, (self.folder, None))[0]

    def has(self, name: str) -> bool:
        return not self.listed or name in self.names

    def matching(self, pattern: str) -> list[str]:
        """Listed names that match a regular expression (case-insensitive), in the server's order."""
        rx = re.compile(pattern, re.IGNORECASE)
        return [n for n in self.names if rx.search(n)]

    def missing_message(self, name: str) -> str:
        message = f"{self.label} '{name}' is not in ComfyUI's models/{self.folder}"
        if not self.names:
            return message + " (it has none)"
        if len(self.names) <= 8:
            return message + " (it has: " + ", ".join(self.names) + ")"
        return message + f" ({len(self.names)} files there)"


def server_files(object_info: Mapping[str, Any], folder: str) -> ServerFiles | None:
    """The files of a model folder (`MODEL_FOLDERS`) the server lists, or None when it has no node that
    lists that folder (e.g. no IPAdapter pack: no "ipadapter" folder)."""
    if folder not in MODEL_FOLDERS:
        raise ValueError(f"unknown model folder {folder!r}")
    class_type, input_name = MODEL_FOLDERS[folder][1]
    spec = _spec(object_info, class_type, input_name)
    if spec is None:
        return None
    names = tuple(c for c in (_choices(spec) or []) if isinstance(c, str))
    return ServerFiles(folder, names, listed=not _any_name(spec))


def missing_nodes(object_info: Mapping[str, Any], classes: Iterable[str]) -> list[str]:
    """The node classes of `classes` the server does not have, in order."""
    return [c for c in classes if c not in object_info]


def has_nodes(object_info: Mapping[str, Any], *classes: str) -> bool:
    return not missing_nodes(object_info, classes)


# -- ComfyUI's validation -------------------------------------------------------------------------


def _prompt_error(type_: str, message: str, details: str = "") -> dict:
    return {"error": {"type": type_, "message": message, "details": details, "extra_info": {}}, "node_errors": {}}


def _err(type_: str, message: str, details: str, **extra: Any) -> dict:
    return {"type": type_, "message": message, "details": details, "extra_info": extra}


def _is_link(value: Any) -> bool:
    return isinstance(value, list)


def _type_name(type_: Any) -> str:
    """Input/output types: a str ("MODEL", "IMAGE,MASK", "*"), or a choice list (a COMBO)."""
    return "COMBO" if isinstance(type_, list) else str(type_)


def _types_match(received: Any, expected: Any) -> bool:
    got, want = _type_name(received), _type_name(expected)
    if got == want:
        return True
    got_set = {t.strip() for t in got.split(",")}
    want_set = {t.strip() for t in want.split(",")}
    if "*" in got_set or "*" in want_set:
        return True
    return got_set <= want_set or want_set <= got_set


def _check_literal(name: str, value: Any, spec: list) -> dict | None:
    """The error for a literal (non-link) input value, or None when it is acceptable."""
    type_ = spec[0] if spec else None
    options = _options(spec)
    choices = _choices(spec)
    if choices is not None:
        if _any_name(spec):
            if isinstance(value, str) and value.strip():
                return None
            return _err("value_not_in_list", "Value not in list",
                        f"{name}: '{value}' is not a file name",
                        input_name=name, input_config=spec, received_value=value)
        if value in choices and not isinstance(value, bool):
            return None
        long = len(choices) > _LONG_LIST
        list_info = f"(list of length {len(choices)})" if long else str(choices)
        return _err("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {list_info}",
                    input_name=name, input_config=None if long else spec, received_value=value)

    if type_ == "INT":
        ok = isinstance(value, int) and not isinstance(value, bool)
        reason = "expected an integer"
    elif type_ == "FLOAT":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        reason = "expected a finite number"
    elif type_ == "STRING":
        ok, reason = isinstance(value, str), "expected a string"
    elif type_ == "BOOLEAN":
        ok, reason = isinstance(value, bool), "expected true or false"
    else:
        return None  # other widget types (WEBCAM, …) take whatever ComfyUI's front end sends
    if not ok:
        return _err("invalid_input_type", f"Failed to convert an input value to a {type_} value",
                    f"{name}, {value!r}, {reason}", input_name=name, input_config=spec,
                    received_value=value, exception_message=reason)

    if type_ in ("INT", "FLOAT"):
        low, high = options.get("min"), options.get("max")
        if isinstance(low, (int, float)) and value < low:
            return _err("value_smaller_than_min", f"Value {value} smaller than min of {low}", name,
                        input_name=name, input_config=spec, received_value=value)
        if isinstance(high, (int, float)) and value > high:
            return _err("value_bigger_than_max", f"Value {value} bigger than max of {high}", name,
                        input_name=name, input_config=spec, received_value=value)
    return None


class _Validator:
    def __init__(self, graph: Mapping[str, dict], object_info: Mapping[str, dict]):
        self.graph = graph
        self.info = object_info
        self.results: dict[str, tuple[bool, list[dict]]] = {}
        self.visiting: set[str] = set()

    def _check_link(self, name: str, link: list, spec: list) -> tuple[dict | None, bool]:
        """(error, follow): the error for a link, and whether the linked node should be validated."""
        input_type = spec[0] if spec else None
        if (len(link) != 2 or not isinstance(link[0], str) or not isinstance(link[1], int)
                or isinstance(link[1], bool)):
            return _err("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                        name, input_name=name, input_config=spec, received_value=link), False
        node_id, index = link
        if node_id not in self.graph:
            return _err("return_type_mismatch", "Linked node does not exist",
                        f"{name}, node '{node_id}' is not in the graph",
                        input_name=name, input_config=spec, received_type=None, linked_node=link), False
        class_type = self.graph[node_id]["class_type"]
        outputs = self.info[class_type].get("output") or []
        if not 0 <= index < len(outputs):
            return _err("return_type_mismatch", "Linked output does not exist",
                        f"{name}, {class_type} has {len(outputs)} output(s), no output {index}",
                        input_name=name, input_config=spec, received_type=None, linked_node=link), True
        received = outputs[index]
        if not _types_match(received, input_type):
            return _err("return_type_mismatch", "Return type mismatch between linked nodes",
                        f"{name}, received_type({_type_name(received)}) mismatch "
                        f"input_type({_type_name(input_type)})",
                        input_name=name, input_config=spec, received_type=received, linked_node=link), True
        return None, True

    def node(self, node_id: str) -> bool:
        """Validate one node and, first, every node it links to. True when it and its inputs are valid."""
        if node_id in self.results:
            return self.results[node_id][0]
        if node_id in self.visiting:
            return False  # reported on the node that closes the cycle
        self.visiting.add(node_id)
        node = self.graph[node_id]
        definition = self.info[node["class_type"]].get("input") or {}
        inputs = node.get("inputs", {})
        errors: list[dict] = []
        valid = True
        if not isinstance(inputs, dict):
            errors.append(_err("invalid_input_type", "Node inputs must be an object", "inputs"))
            inputs = {}
        for category in ("required", "optional"):  # hidden inputs are filled in by ComfyUI
            for name, spec in (definition.get(category) or {}).items():
                spec = spec if isinstance(spec, list) else [spec]
                if name not in inputs:
                    if category == "required":
                        errors.append(_err("required_input_missing", "Required input is missing", name,
                                           input_name=name))
                    continue
                value = inputs[name]
                if _is_link(value):
                    error, follow = self._check_link(name, value, spec)
                    if error:
                        errors.append(error)
                    if follow:
                        linked = value[0]
                        if linked in self.visiting:
                            errors.append(_err("dependency_cycle", "Dependency cycle detected",
                                               f"{name}, node '{linked}' depends on node '{node_id}'",
                                               input_name=name, linked_node=value))
                        elif not self.node(linked):
                            valid = False
                    continue
                error = _check_literal(name, value, spec)
                if error:
                    errors.append(error)
        self.visiting.discard(node_id)
        ok = valid and not errors
        self.results[node_id] = (ok, errors)
        return ok

    def upstream(self, node_id: str) -> set[str]:
        """The node and every node it depends on, through links to nodes of the graph."""
        seen: set[str] = set()
        stack = [node_id]
        while stack:
            current = stack.pop()
            if current in seen or current not in self.graph:
                continue
            seen.add(current)
            inputs = self.graph[current].get("inputs")
            for value in (inputs.values() if isinstance(inputs, dict) else ()):
                if _is_link(value) and value and isinstance(value[0], str):
                    stack.append(value[0])
        return seen


def is_output_node(class_type: str, object_info: Mapping[str, dict]) -> bool:
    return bool((object_info.get(class_type) or {}).get("output_node"))


def validate_graph(graph: dict, object_info: dict) -> dict:
    """`{}` when ComfyUI would accept `graph`, else the error body ComfyUI answers (HTTP 400)."""
    if not isinstance(graph, dict):
        return _prompt_error("invalid_prompt", "Cannot execute because the prompt is not an object of nodes.")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return _prompt_error("invalid_prompt",
                                 "Cannot execute because a node is missing the class_type property.",
                                 f"Node ID '#{node_id}'")
        class_type = node["class_type"]
        if not isinstance(class_type, str) or class_type not in object_info:
            return _prompt_error("invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                                 f"Node ID '#{node_id}'")

    outputs = [node_id for node_id, node in graph.items() if is_output_node(node["class_type"], object_info)]
    if not outputs:
        return _prompt_error("prompt_no_outputs", "Prompt has no outputs")

    checker = _Validator(graph, object_info)
    node_errors: dict[str, dict] = {}
    failed_outputs: list[str] = []
    for output in outputs:
        if checker.node(output):
            continue
        failed_outputs.append(output)
        for node_id in checker.upstream(output):
            ok, errors = checker.results.get(node_id, (True, []))
            if ok or not errors:
                continue
            entry = node_errors.setdefault(node_id, {"errors": errors, "dependent_outputs": [],
                                                     "class_type": graph[node_id]["class_type"]})
            entry["dependent_outputs"].append(output)
    if not failed_outputs:
        return {}
    # ComfyUI's details list the errors of the failing output nodes themselves.
    details = "\n".join(f"{e['message']}: {e['details']}"
                        for output in failed_outputs for e in checker.results[output][1])
    log.debug("graph refused: %d node(s) with errors", len(node_errors))
    return {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                  "details": details, "extra_info": {}},
        "node_errors": node_errors,
    }


def assert_valid(graph: dict, object_info: dict) -> None:
    """Raise ValueError with ComfyUI's errors in one line when ComfyUI would refuse `graph` (for tests)."""
    result = validate_graph(graph, object_info)
    if result:
        raise ValueError(f"Invalid ComfyUI graph: {summarize_errors(result)}")


# -- the pre-send check ---------------------------------------------------------------------------


class GraphNotRunnable(InvalidInput):
    """A graph the target ComfyUI cannot run. `problems`: one sentence each; `body`: the
    validate_graph result (ComfyUI's own 400 body) when the node classes were all there."""

    code = "graph_not_runnable"

    def __init__(self, problems: list[str], body: dict | None = None):
        shown = problems[:MAX_PROBLEMS]
        more = len(problems) - len(shown)
        message = "; ".join(shown) + (f"; and {more} more problem(s)" if more > 0 else "")
        super().__init__(message[:1].upper() + message[1:])
        self.problems = list(problems)
        self.body = body or {}


def _node_label(node_id: str, class_type: str) -> str:
    return f"node {node_id} ({class_type})"


def _order(node_id: str) -> tuple:
    return (0, int(node_id), "") if node_id.isdigit() else (1, 0, node_id)


def _problem(node_id: str, class_type: str, error: dict, object_info: Mapping[str, Any]) -> str:
    """One node error of validate_graph, in words."""
    label = _node_label(node_id, class_type)
    extra = error.get("extra_info") or {}
    name = extra.get("input_name") or error.get("details") or "?"
    value = extra.get("received_value")
    kind = error.get("type")
    if kind == "value_not_in_list":
        folder = FILE_INPUTS.get((class_type, name))
        files = server_files(object_info, folder) if folder else None
        if files is not None and isinstance(value, str) and value.strip():
            return files.missing_message(value)
        if folder:
            return f"{label}: input '{name}' needs a {MODEL_FOLDERS[folder][0]} file name, not {value!r}"
        spec = _spec(object_info, class_type, name) or []
        choices = [c for c in (_choices(spec) or []) if isinstance(c, str)]
        shown = ", ".join(repr(c) for c in choices[:10]) + (", …" if len(choices) > 10 else "")
        return f"{label}: input '{name}' is {value!r}, not one of its choices ({shown or 'none'})"
    if kind == "required_input_missing":
        return f"{label}: required input '{name}' is missing"
    if kind in ("value_smaller_than_min", "value_bigger_than_max"):
        spec = _spec(object_info, class_type, name) or []
        bound = _options(spec).get("min" if kind == "value_smaller_than_min" else "max")
        word = "below its minimum" if kind == "value_smaller_than_min" else "above its maximum"
        return f"{label}: input '{name}' is {value!r}, {word} {bound!r}"
    if kind == "invalid_input_type":
        reason = extra.get("exception_message") or error.get("message")
        return f"{label}: input '{name}' is {value!r}: {reason}"
    if kind == "return_type_mismatch":
        linked = extra.get("linked_node")
        return f"{label}: input '{name}' is linked to {linked!r}: {error.get('message')} ({error.get('details')})"
    return f"{label}: {error.get('message')}" + (f" ({error['details']})" if error.get("details") else "")


def graph_problems(graph: Any, object_info: Mapping[str, Any]) -> list[str]:
    """Every reason the target ComfyUI (its `/object_info` answer) cannot run `graph`, one sentence each;
    [] when it can. Missing node classes are all named first (nothing else is checked while any is
    missing: the inputs of an unknown node cannot be checked)."""
    if not isinstance(graph, dict) or not graph:
        return ["the graph must be a non-empty object of nodes"]
    problems: list[str] = []
    absent: dict[str, list[str]] = {}
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            problems.append(f"node {node_id} has no class_type")
        elif node["class_type"] not in object_info:
            absent.setdefault(node["class_type"], []).append(node_id)
    for class_type in absent:
        problems.append(f"ComfyUI at this server has no node '{class_type}' ({node_hint(class_type)})")
    if problems:
        return problems
    result = validate_graph(graph, dict(object_info))
    if not result:
        return []
    node_errors = result.get("node_errors") or {}
    if not node_errors:
        error = result.get("error") or {}
        if error.get("type") == "prompt_no_outputs":
            return ["the graph has no output node (SaveImage, SaveVideo, PreviewImage, …): it would produce nothing"]
        return [summarize_errors(result)]
    for node_id in sorted(node_errors, key=_order):
        entry = node_errors[node_id]
        for error in entry.get("errors") or []:
            problems.append(_problem(node_id, entry.get("class_type", "?"), error, object_info))
    return problems


def check_graph(graph: Any, object_info: Mapping[str, Any]) -> None:
    """Raise GraphNotRunnable (InvalidInput, 400) naming every problem when the ComfyUI whose
    `/object_info` this is cannot run `graph`; return None when it can."""
    problems = graph_problems(graph, object_info)
    if problems:
        body = validate_graph(graph, dict(object_info)) if isinstance(graph, dict) else {}
        log.info("graph refused before sending: %s", "; ".join(problems[:3]))
        raise GraphNotRunnable(problems, body)
