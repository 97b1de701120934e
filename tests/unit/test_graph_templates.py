"""User templates: API-format workflows imported, bound to the studio's fields, filled, and valid."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from lora_studio.core.errors import InvalidInput, PayloadTooLarge
from lora_studio.generation.templates import (
    MAX_TEMPLATE_NODES,
    check_bindings,
    fill_template,
    find_bindings,
    parse_template,
    suggest_bindings,
)
from support.comfy_schema import FIXTURES, check_graph, load_object_info, validate_graph

VALUES: dict[str, Any] = {
    "positive": "aiko, 1girl, silver hair", "negative": "worst quality", "seed": 123456789,
    "checkpoint": "moon_sd15.safetensors", "lora_name": "moon-academy-aiko-v3.safetensors", "lora_strength": 0.7,
    "width": 512, "height": 768, "image": "lora_studio/aiko_0001.png",
}


@pytest.fixture(scope="module")
def object_info() -> dict:
    return load_object_info(FIXTURES / "object_info.json")


@pytest.fixture
def exported() -> dict:
    """The txt2img + LoRA graph a real ComfyUI ran, with the `_meta` titles Export (API) writes."""
    samples = json.loads((FIXTURES / "samples" / "http_and_websocket.json").read_text(encoding="utf-8"))
    graph = copy.deepcopy(samples["get_queue_while_running"]["queue_running"][0][2])
    for node in graph.values():
        node["_meta"] = {"title": node["class_type"]}
    return graph


@pytest.fixture
def two_pass() -> dict:
    """img2img from a loaded image, refined by a second sampler; the positive prompt is two texts
    combined; a text feeds both samplers' negatives."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a castle", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "sunset", "clip": ["1", 1]}},
        "4": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": ["2", 0], "conditioning_2": ["3", 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly", "clip": ["1", 1]}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "7": {"class_type": "VAEEncode", "inputs": {"pixels": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.7,
            "model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["7", 0]}},
        "9": {"class_type": "KSampler", "inputs": {
            "seed": 2, "steps": 10, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.3,
            "model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["8", 0]}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"filename_prefix": "castle", "images": ["10", 0]}},
    }


def test_candidates_of_an_exported_workflow(exported: dict) -> None:
    found = find_bindings(exported)
    places = {field: [(c.node_id, c.input_name) for c in candidates] for field, candidates in found.items()}
    assert places == {
        "positive": [("6", "text")], "negative": [("7", "text")], "seed": [("3", "seed")],
        "checkpoint": [("4", "ckpt_name")], "lora_name": [("10", "lora_name")],
        "lora_strength": [("10", "strength_model"), ("10", "strength_clip")],
        "width": [("5", "width")], "height": [("5", "height")], "image": [],
    }
    [positive] = found["positive"]
    assert (positive.class_type, positive.title, positive.value) == (
        "CLIPTextEncode", "CLIPTextEncode", "1girl, solo, silver hair, red eyes, school uniform")


def test_suggested_bindings_fill_into_a_valid_graph(exported: dict, object_info: dict) -> None:
    original = copy.deepcopy(exported)
    bindings = suggest_bindings(exported)
    assert bindings == {
        "positive": [["6", "text"]], "negative": [["7", "text"]], "seed": [["3", "seed"]],
        "checkpoint": [["4", "ckpt_name"]], "lora_name": [["10", "lora_name"]],
        "lora_strength": [["10", "strength_model"], ["10", "strength_clip"]],
        "width": [["5", "width"]], "height": [["5", "height"]],
    }
    graph = fill_template(exported, bindings, VALUES)
    assert exported == original  # the template is not changed
    assert graph["6"]["inputs"]["text"] == "aiko, 1girl, silver hair"
    assert graph["7"]["inputs"]["text"] == "worst quality"
    assert graph["3"]["inputs"]["seed"] == 123456789
    assert graph["4"]["inputs"]["ckpt_name"] == "moon_sd15.safetensors"
    assert graph["10"]["inputs"]["lora_name"] == "moon-academy-aiko-v3.safetensors"
    assert graph["10"]["inputs"]["strength_model"] == graph["10"]["inputs"]["strength_clip"] == 0.7
    assert (graph["5"]["inputs"]["width"], graph["5"]["inputs"]["height"]) == (512, 768)
    assert graph["3"]["inputs"]["positive"] == ["6", 0]  # links untouched
    assert validate_graph(graph, object_info) == {}
    check_graph(graph, object_info)


def test_roles_through_conditioning_nodes_and_several_samplers(two_pass: dict, object_info: dict) -> None:
    found = find_bindings(two_pass)
    assert [c.node_id for c in found["positive"]] == ["2", "3"]  # both feed positive through the combine
    assert [c.node_id for c in found["negative"]] == ["5"]
    assert [(c.node_id, c.input_name) for c in found["image"]] == [("6", "image")]
    suggested = suggest_bindings(two_pass)
    assert "positive" not in suggested  # two texts: the user says which
    assert suggested["negative"] == [["5", "text"]]
    assert suggested["seed"] == [["8", "seed"], ["9", "seed"]]  # every sampler's seed
    assert suggested["image"] == [["6", "image"]]
    assert "width" not in suggested and "lora_name" not in suggested
    bindings = {**suggested, "positive": ["2", "text"]}
    graph = fill_template(two_pass, bindings, VALUES)
    assert graph["2"]["inputs"]["text"] == VALUES["positive"] and graph["3"]["inputs"]["text"] == "sunset"
    assert graph["8"]["inputs"]["seed"] == graph["9"]["inputs"]["seed"] == VALUES["seed"]
    assert graph["6"]["inputs"]["image"] == "lora_studio/aiko_0001.png"
    assert validate_graph(graph, object_info) == {}


def test_a_text_feeding_both_roles_is_offered_for_both(two_pass: dict) -> None:
    two_pass["9"]["inputs"]["positive"] = ["5", 0]
    found = find_bindings(two_pass)
    assert "5" in [c.node_id for c in found["positive"]] and "5" in [c.node_id for c in found["negative"]]
    assert "negative" not in suggest_bindings(two_pass)


def test_unbound_fields_and_none_values_leave_the_template(exported: dict) -> None:
    graph = fill_template(exported, {"seed": ["3", "seed"]}, {**VALUES, "positive": None})
    assert graph["3"]["inputs"]["seed"] == VALUES["seed"]
    assert graph["6"]["inputs"]["text"] == exported["6"]["inputs"]["text"]
    assert graph["4"]["inputs"]["ckpt_name"] == exported["4"]["inputs"]["ckpt_name"]


def test_json_text_is_accepted(exported: dict) -> None:
    assert parse_template(json.dumps(exported)) == exported
    assert parse_template(json.dumps(exported).encode()) == exported


def test_the_editor_format_is_refused_with_how_to_export() -> None:
    ui = {"last_node_id": 9, "last_link_id": 9, "nodes": [
        {"id": 4, "type": "CheckpointLoaderSimple", "pos": [26, 474], "size": [315, 98], "flags": {}, "order": 0,
         "mode": 0, "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1], "slot_index": 0}],
         "properties": {"Node name for S&R": "CheckpointLoaderSimple"}, "widgets_values": ["v1-5.safetensors"]}],
        "links": [[1, 4, 0, 3, 0, "MODEL"]], "groups": [], "config": {}, "extra": {}, "version": 0.4}
    with pytest.raises(InvalidInput, match=r"Export \(API\)") as caught:
        parse_template(ui)
    assert caught.value.code == "ui_workflow"
    with pytest.raises(InvalidInput, match=r"Export \(API\)"):
        parse_template(json.dumps(ui))


@pytest.mark.parametrize("data", [
    [], {}, "not json", b"\xff\xfe", 3, {"1": "x"}, {"1": {"inputs": {}}}, {"1": {"class_type": "", "inputs": {}}},
    {"1": {"class_type": "X", "inputs": []}}, {"1": {"class_type": "X", "inputs": {"a": ["2", 0]}}},
    {"1": {"class_type": "X", "inputs": {"a": float("nan")}}}, {"x" * 65: {"class_type": "X", "inputs": {}}},
])
def test_malformed_templates_are_refused(data: Any) -> None:
    with pytest.raises(InvalidInput):
        parse_template(data)


def test_the_size_cap() -> None:
    many = {str(i): {"class_type": "PrimitiveInt", "inputs": {"value": i}} for i in range(MAX_TEMPLATE_NODES + 1)}
    with pytest.raises(PayloadTooLarge):
        parse_template(many)
    big = {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "x" * 1_000_001}}}
    with pytest.raises(PayloadTooLarge):
        parse_template(big)
    with pytest.raises(PayloadTooLarge):
        parse_template(json.dumps(big))


@pytest.mark.parametrize(("bindings", "message"), [
    ({"prompt": ["6", "text"]}, "Unknown template field 'prompt'"),
    ({"seed": ["99", "seed"]}, "node '99' is not in the template"),
    ({"seed": ["3", "sed"]}, r"node 3 \(KSampler\) has no input 'sed'"),
    ({"positive": ["3", "positive"]}, "is fed by node 6"),
    ({"seed": "3"}, "must be \\[node_id, input_name\\]"),
    ({"seed": ["3"]}, "must be \\[node_id, input_name\\]"),
    ({"seed": [["3", "seed"], ["3"]]}, "must be \\[node_id, input_name\\]"),
    ({"seed": [["3", "seed"]] * 17}, "at most 16"),
    (["seed"], "bindings must be an object"),
])
def test_bad_bindings_are_refused(exported: dict, bindings: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_bindings(exported, bindings)
    with pytest.raises(InvalidInput, match=message):
        fill_template(exported, bindings, VALUES)


@pytest.mark.parametrize("values", [
    {"seed": -1}, {"seed": "1"}, {"width": 500}, {"lora_strength": 101}, {"checkpoint": ""},
    {"image": "../../etc/passwd"}, {"image": "/abs.png"}, {"positive": 3}, {"style": "x"},
])
def test_bad_values_are_refused(two_pass: dict, values: dict) -> None:
    two_pass["12"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}}
    two_pass["13"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": "x",
                                                            "strength_model": 1.0, "strength_clip": 1.0}}
    bindings = suggest_bindings(two_pass)
    assert {"seed", "width", "lora_strength", "checkpoint", "image", "negative"} <= set(bindings)
    with pytest.raises(InvalidInput):
        fill_template(two_pass, {**bindings, "positive": ["2", "text"]}, values)
