"""The graph validator for tests: the production one (lora_studio.generation.checks), plus reading a
saved `/object_info` answer and merging answers (the core recording + a node pack's schema)."""

from __future__ import annotations

import json
from pathlib import Path

from lora_studio.generation.checks import (  # noqa: F401  (re-exported for the tests)
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
