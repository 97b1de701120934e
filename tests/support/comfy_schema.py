"""The graph validator for tests: the production one (lora_studio.generation.checks), plus reading a
saved `/object_info` answer and merging answers (the core recording + a node pack's schema)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from lora_studio.generation.checks import (  # noqa: F401  (re-exported for the tests)
    FILE_INPUTS,
    GraphNotRunnable,
    assert_valid,
    check_graph,
    graph_problems,
    is_output_node,
    server_files,
    validate_graph,
)
from lora_studio.generation.client import summarize_errors  # noqa: F401

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"


def load_object_info(path: str | Path) -> dict:
    """Read a saved `/object_info` answer (node class -> definition)."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an /object_info answer must be a JSON object")
    return data


def merged_object_info(*names: str) -> dict:
    """The answers of tests/fixtures/comfyui/<name> merged, as one server with those nodes would answer."""
    info: dict = {}
    for name in names:
        info.update(load_object_info(FIXTURES / name))
    return info


def with_server_files(object_info: dict, **folders: list[str]) -> dict:
    """A copy of `object_info` as a live server with these files answers it: every loader input of each
    model folder (checks.FILE_INPUTS, e.g. checkpoints=[...], vae=[...]) lists exactly those names (the
    recording's "any file" mark goes). Folders not named keep their lists."""
    info = copy.deepcopy(object_info)
    for (class_type, input_name), folder in FILE_INPUTS.items():
        if folder not in folders or class_type not in info:
            continue
        for category in ("required", "optional"):
            spec = (info[class_type]["input"].get(category) or {}).get(input_name)
            if spec is not None:
                options = {k: v for k, v in (spec[1] if len(spec) > 1 else {}).items() if k != "x_lists_server_files"}
                spec[:] = [list(folders[folder]), options]
    return info


def without_nodes(object_info: dict, *classes: str) -> dict:
    """A copy of `object_info` for a server that lacks these node classes."""
    return {name: node for name, node in object_info.items() if name not in classes}


def by_class(graph: dict, class_type: str) -> list[tuple[str, dict]]:
    """(node id, inputs) of every node of a class, in the graph's order."""
    return [(node_id, node["inputs"]) for node_id, node in graph.items() if node["class_type"] == class_type]


def output_classes(graph: dict, object_info: dict) -> list[str]:
    """The classes of the graph's output nodes."""
    return [node["class_type"] for node in graph.values() if is_output_node(node["class_type"], object_info)]
