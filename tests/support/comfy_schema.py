"""Validate API-format ComfyUI graphs against an `/object_info` answer, the way ComfyUI does.

`validate_graph` answers `{}` for a graph ComfyUI would accept, else the body ComfyUI's
`POST /prompt` answers with HTTP 400: `{"error": {...}, "node_errors": {...}}` with the same error
types, messages and details (see tests/fixtures/comfyui/samples). Like ComfyUI, only nodes that an
output node depends on are checked, and errors are reported on the node that has them (nodes that
are invalid only because an upstream node is invalid are not listed).

Differences from ComfyUI, on purpose: literals are not coerced (an INT must be an int, not "20" or
7.5; FLOAT accepts int or float; STRING a str; BOOLEAN a bool), links to missing nodes or outputs are
reported on the linking node instead of raising inside the validator, and a graph with any invalid
output is refused (ComfyUI would run the valid outputs and ignore the others).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lora_studio.core.samplers import _choices
from lora_studio.generation.client import summarize_errors

log = logging.getLogger("lora_studio.comfy")

_LONG_LIST = 20  # ComfyUI abbreviates choice lists longer than this in error details


def load_object_info(path: str | Path) -> dict:
    """Read a saved `/object_info` answer (node class -> definition)."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an /object_info answer must be a JSON object")
    return data


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
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    choices = _choices(spec)
    if choices is not None:
        if not choices:
            # A list of server files, emptied in the saved object_info (or a server with no such
            # files): any non-empty file name is accepted.
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
    """Raise ValueError with a readable summary when ComfyUI would refuse `graph`."""
    result = validate_graph(graph, object_info)
    if result:
        raise ValueError(f"Invalid ComfyUI graph: {summarize_errors(result)}")
