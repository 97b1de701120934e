"""User templates: an API-format workflow exported from ComfyUI, with the studio's fields bound to its inputs.

A project imports a workflow saved with ComfyUI's "Export (API)" ({node_id: {"class_type", "inputs"}});
the editor's own format ({"nodes": [...], "links": [...]}) is refused with a message saying so. The
studio proposes bindings (`find_bindings`, `suggest_bindings`): which literal input of which node
takes each studio field — CLIPTextEncode texts as positive/negative by the sampler input they feed,
the sampler's seed, the checkpoint, the LoRA and its strength, the empty latent's size, LoadImage's
image. The user may set them explicitly as {field: [node_id, input_name]} (or a list of such pairs,
to put one value in several places). `fill_template` returns a new graph with the studio's values in
the bound inputs; the result is checked against the server's `/object_info` before it is sent, like
every built-in graph (checks.check_graph). Pure functions: no I/O.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..core.errors import InvalidInput, PayloadTooLarge
from .graph import MAX_SEED, _file_name, _float, _image_name, _int, _size, _text

log = logging.getLogger("lora_studio.comfy")

FIELDS = ("positive", "negative", "seed", "checkpoint", "lora_name", "lora_strength", "width", "height", "image")
MAX_TEMPLATE_NODES = 500
MAX_TEMPLATE_BYTES = 1_000_000  # the template as compact JSON
MAX_TARGETS = 16  # inputs one field may be bound to
_MAX_ID = 64  # characters of a node id or input name
_ROLE_DEPTH = 8  # conditioning nodes followed from a text encoder to the sampler input it feeds

# Where each field usually lives: field -> ((class_type, input_name), ...). positive/negative are the
# text encoders' texts, told apart by the sampler input they end in.
CANDIDATE_INPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "positive": (("CLIPTextEncode", "text"),),
    "negative": (("CLIPTextEncode", "text"),),
    "seed": (("KSampler", "seed"), ("KSamplerAdvanced", "noise_seed"), ("SamplerCustom", "noise_seed"),
             ("RandomNoise", "noise_seed")),
    "checkpoint": (("CheckpointLoaderSimple", "ckpt_name"), ("ImageOnlyCheckpointLoader", "ckpt_name")),
    "lora_name": (("LoraLoader", "lora_name"), ("LoraLoaderModelOnly", "lora_name")),
    "lora_strength": (("LoraLoader", "strength_model"), ("LoraLoader", "strength_clip"),
                      ("LoraLoaderModelOnly", "strength_model")),
    "width": (("EmptyLatentImage", "width"), ("EmptySD3LatentImage", "width")),
    "height": (("EmptyLatentImage", "height"), ("EmptySD3LatentImage", "height")),
    "image": (("LoadImage", "image"),),
}


def _check_value(field: str, value: Any) -> Any:
    """A studio value for `field`, checked as the built-in graphs check it."""
    if field in ("positive", "negative"):
        return _text(field, value)
    if field == "seed":
        return _int("seed", value, 0, MAX_SEED)
    if field in ("checkpoint", "lora_name"):
        return _file_name(field, value)
    if field == "lora_strength":
        return _float("lora_strength", value, -100.0, 100.0)
    if field in ("width", "height"):
        return _size(field, value)
    return _image_name("image", value)


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _is_ui_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and (
        "links" in data or "last_node_id" in data or "version" in data)


def parse_template(data: Any) -> dict:
    """An imported workflow, checked: a deep copy of the API-format graph (JSON text or the parsed object).

    Refused (InvalidInput): the editor's format (with how to export the API one), anything that is not
    an object of {class_type, inputs} nodes, links to nodes that are not there; PayloadTooLarge over
    MAX_TEMPLATE_NODES nodes or MAX_TEMPLATE_BYTES.
    """
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_TEMPLATE_BYTES:
            raise PayloadTooLarge(f"A template may be at most {MAX_TEMPLATE_BYTES} bytes.")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("The template is not UTF-8 text.") from None
    if isinstance(data, str):
        if len(data) > MAX_TEMPLATE_BYTES:
            raise PayloadTooLarge(f"A template may be at most {MAX_TEMPLATE_BYTES} bytes.")
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"The template is not JSON: {e.msg} (line {e.lineno}).") from None
    if _is_ui_format(data):
        raise InvalidInput("This is the graph editor's format of a workflow, not the API format the studio "
                           "queues. In ComfyUI, open the workflow and use Workflow → Export (API) (enable the "
                           "dev mode options in older versions), then import that file.", code="ui_workflow")
    if not isinstance(data, dict) or not data:
        raise InvalidInput("A template must be an API-format workflow: an object of nodes "
                           "{id: {\"class_type\", \"inputs\"}} as ComfyUI's Export (API) saves it.")
    if len(data) > MAX_TEMPLATE_NODES:
        raise PayloadTooLarge(f"A template may have at most {MAX_TEMPLATE_NODES} nodes, not {len(data)}.")
    try:
        size = len(json.dumps(data, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError):
        raise InvalidInput("The template holds values that are not JSON.") from None
    if size > MAX_TEMPLATE_BYTES:
        raise PayloadTooLarge(f"A template may be at most {MAX_TEMPLATE_BYTES} bytes of JSON, not {size}.")
    graph = copy.deepcopy(data)
    for node_id, node in graph.items():
        if not isinstance(node_id, str) or len(node_id) > _MAX_ID or not node_id.strip():
            raise InvalidInput(f"Node id {str(node_id)[:_MAX_ID]!r} is not a valid node id.")
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) or not node["class_type"]:
            raise InvalidInput(f"Node {node_id} has no class_type: is this an API-format workflow "
                               "(ComfyUI's Export (API))?")
        inputs = node.setdefault("inputs", {})
        if not isinstance(inputs, dict):
            raise InvalidInput(f"Node {node_id} ({node['class_type']}): inputs must be an object.")
        for name, value in inputs.items():
            if _is_link(value) and value[0] not in graph:
                raise InvalidInput(f"Node {node_id} ({node['class_type']}): input '{name}' is linked to node "
                                   f"{value[0]}, which is not in the template.")
    return graph


@dataclass(frozen=True)
class Candidate:
    """An input a field could be bound to: where, what the node is called, and its value now."""

    field: str
    node_id: str
    input_name: str
    class_type: str
    title: str | None
    value: Any


def _consumers(graph: Mapping[str, dict]) -> dict[str, list[tuple[str, str]]]:
    """node id -> [(id of a node that takes one of its outputs, the input it takes it in)]."""
    found: dict[str, list[tuple[str, str]]] = {}
    for node_id, node in graph.items():
        for name, value in node["inputs"].items():
            if _is_link(value):
                found.setdefault(value[0], []).append((node_id, name))
    return found


def _text_role(node_id: str, consumers: Mapping[str, list[tuple[str, str]]]) -> str | None:
    """"positive" or "negative": the sampler input the text's conditioning ends in (through conditioning
    nodes such as ConditioningCombine or WanImageToVideo), or None when it feeds neither or both."""
    roles: set[str] = set()
    frontier, seen = [node_id], {node_id}
    for _ in range(_ROLE_DEPTH):
        following: list[str] = []
        for current in frontier:
            for consumer, name in consumers.get(current, ()):
                if name in ("positive", "negative"):
                    roles.add(name)
                elif consumer not in seen:
                    seen.add(consumer)
                    following.append(consumer)
        frontier = following
    return roles.pop() if len(roles) == 1 else None


def find_bindings(template: Any) -> dict[str, list[Candidate]]:
    """Every input of the template each field could be bound to (literal values only: an input fed by
    another node is not the studio's to set). Texts go to positive or negative by what they feed; a text
    whose role cannot be told is offered for both."""
    graph = parse_template(template)
    consumers = _consumers(graph)
    found: dict[str, list[Candidate]] = {f: [] for f in FIELDS}
    for node_id, node in graph.items():
        class_type, inputs = node["class_type"], node["inputs"]
        meta = node.get("_meta")
        title = meta.get("title") if isinstance(meta, dict) and isinstance(meta.get("title"), str) else None
        role = _text_role(node_id, consumers) if class_type == "CLIPTextEncode" else None
        for field, places in CANDIDATE_INPUTS.items():
            for place_class, input_name in places:
                if place_class != class_type or input_name not in inputs or _is_link(inputs[input_name]):
                    continue
                if field in ("positive", "negative") and role not in (None, field):
                    continue
                found[field].append(Candidate(field, node_id, input_name, class_type, title, inputs[input_name]))
    return found


def suggest_bindings(template: Any) -> dict[str, list[list[str]]]:
    """The bindings the studio can propose without asking: a field whose candidates are all on one node
    (lora_strength: both strengths of the one LoRA loader), and the seed of every sampler. Texts need a
    known role. Fields with no or several candidate nodes are left for the user."""
    found = find_bindings(template)
    graph = parse_template(template)
    consumers = _consumers(graph)
    suggested: dict[str, list[list[str]]] = {}
    for field, candidates in found.items():
        if field in ("positive", "negative"):
            candidates = [c for c in candidates if _text_role(c.node_id, consumers) == field]
        nodes = {c.node_id for c in candidates}
        if candidates and (len(nodes) == 1 or field == "seed"):
            suggested[field] = [[c.node_id, c.input_name] for c in candidates]
    return suggested


def check_bindings(template: Any, bindings: Any) -> dict[str, list[tuple[str, str]]]:
    """The bindings, checked against the template: {field: [(node_id, input_name), ...]}.

    Refused (InvalidInput): unknown fields, malformed targets, nodes or inputs the template does not
    have, inputs fed by another node (a link is not a value), more than MAX_TARGETS targets per field.
    """
    graph = parse_template(template)
    if not isinstance(bindings, Mapping):
        raise InvalidInput("bindings must be an object {field: [node_id, input_name]}.")
    checked: dict[str, list[tuple[str, str]]] = {}
    for field, target in bindings.items():
        if field not in FIELDS:
            raise InvalidInput(f"Unknown template field {field!r}; the fields are: {', '.join(FIELDS)}.")
        if isinstance(target, (list, tuple)) and len(target) == 2 and all(isinstance(t, str) for t in target):
            pairs = [target]
        elif isinstance(target, (list, tuple)) and target and all(isinstance(t, (list, tuple)) for t in target):
            pairs = list(target)
        else:
            raise InvalidInput(f"The binding of {field} must be [node_id, input_name] or a list of them.")
        if len(pairs) > MAX_TARGETS:
            raise InvalidInput(f"{field} may be bound to at most {MAX_TARGETS} inputs.")
        checked[field] = []
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(t, str) for t in pair):
                raise InvalidInput(f"The binding of {field} must be [node_id, input_name] or a list of them.")
            node_id, input_name = pair
            node = graph.get(node_id)
            if node is None:
                raise InvalidInput(f"The binding of {field}: node {node_id[:_MAX_ID]!r} is not in the template.")
            label = f"node {node_id} ({node['class_type']})"
            if input_name not in node["inputs"]:
                raise InvalidInput(f"The binding of {field}: {label} has no input {input_name[:_MAX_ID]!r} "
                                   f"(it has: {', '.join(node['inputs']) or 'none'}).")
            if _is_link(node["inputs"][input_name]):
                raise InvalidInput(f"The binding of {field}: input '{input_name}' of {label} is fed by node "
                                   f"{node['inputs'][input_name][0]}; bind a value typed into a node, not a "
                                   "connection.")
            checked[field].append((node_id, input_name))
    return checked


def fill_template(template: Any, bindings: Any, values: Mapping[str, Any]) -> dict:
    """A new graph: the template with each bound field's value put in its inputs (the template is not
    changed). Values are checked as the built-in graphs check them; a field without a binding, or a
    value of None, leaves the template as it is; an unknown field is refused."""
    graph = parse_template(template)
    targets = check_bindings(graph, bindings)
    if not isinstance(values, Mapping):
        raise InvalidInput("values must be an object {field: value}.")
    for field, value in values.items():
        if field not in FIELDS:
            raise InvalidInput(f"Unknown template field {field!r}; the fields are: {', '.join(FIELDS)}.")
        if value is None or field not in targets:
            continue
        value = _check_value(field, value)
        for node_id, input_name in targets[field]:
            graph[node_id]["inputs"][input_name] = value
    log.debug("template filled: %s", ", ".join(f for f in values if f in targets and values[f] is not None))
    return graph
