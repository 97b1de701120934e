"""validate_graph against the real /object_info and the real answers of ComfyUI 0.3.64."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from support.comfy_schema import assert_valid, load_object_info, summarize_errors, validate_graph

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"


@pytest.fixture(scope="module")
def object_info() -> dict:
    return load_object_info(FIXTURES / "object_info.json")


@pytest.fixture(scope="module")
def samples() -> dict:
    return json.loads((FIXTURES / "samples" / "http_and_websocket.json").read_text(encoding="utf-8"))


@pytest.fixture
def graph(samples: dict) -> dict:
    """The txt2img + LoRA graph the real ComfyUI ran (deep copy, tests may edit it)."""
    return copy.deepcopy(samples["get_queue_while_running"]["queue_running"][0][2])


def only_error(result: dict, node_id: str) -> dict:
    assert result["error"]["type"] == "prompt_outputs_failed_validation"
    assert list(result["node_errors"]) == [node_id], result
    errors = result["node_errors"][node_id]["errors"]
    assert len(errors) == 1, errors
    return errors[0]


def test_load_object_info_reads_the_real_answer(object_info: dict) -> None:
    assert len(object_info) == 477
    assert object_info["KSampler"]["output"] == ["LATENT"]


def test_load_object_info_refuses_non_objects(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError):
        load_object_info(path)


def test_graph_comfyui_ran_is_valid(graph: dict, object_info: dict) -> None:
    assert validate_graph(graph, object_info) == {}
    assert_valid(graph, object_info)  # does not raise


def test_invalid_graph_gives_exactly_comfyuis_answer(graph: dict, object_info: dict, samples: dict) -> None:
    del graph["6"]["inputs"]["clip"]
    graph["3"]["inputs"]["sampler_name"] = "DPM++ 2M Karras"
    expected = samples["post_prompt_invalid"]["body"]
    assert samples["post_prompt_invalid"]["status"] == 400
    assert validate_graph(graph, object_info) == expected


def test_unknown_node_class_gives_exactly_comfyuis_answer(object_info: dict, samples: dict) -> None:
    result = validate_graph({"1": {"class_type": "NoSuchNode", "inputs": {}}}, object_info)
    assert result == samples["post_prompt_unknown_node"]["body"]


def test_unknown_node_class_among_valid_nodes(graph: dict, object_info: dict) -> None:
    graph["12"] = {"class_type": "NoSuchNode", "inputs": {}}
    result = validate_graph(graph, object_info)
    assert result["error"]["message"] == "Cannot execute because node NoSuchNode does not exist."
    assert result["error"]["details"] == "Node ID '#12'"


def test_missing_class_type(graph: dict, object_info: dict) -> None:
    del graph["5"]["class_type"]
    result = validate_graph(graph, object_info)
    assert result["error"]["type"] == "invalid_prompt"
    assert result["error"]["details"] == "Node ID '#5'"
    assert result["node_errors"] == {}


def test_no_output_node(graph: dict, object_info: dict) -> None:
    del graph["9"]
    result = validate_graph(graph, object_info)
    assert result == {"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                                "extra_info": {}}, "node_errors": {}}


@pytest.mark.parametrize(("node_id", "name", "value", "type_name"), [
    ("3", "steps", "20", "INT"),
    ("3", "steps", 20.0, "INT"),
    ("3", "seed", True, "INT"),
    ("3", "cfg", "7", "FLOAT"),
    ("3", "cfg", False, "FLOAT"),
    ("6", "text", 5, "STRING"),
])
def test_wrong_literal_types(graph: dict, object_info: dict, node_id: str, name: str, value: object,
                             type_name: str) -> None:
    graph[node_id]["inputs"][name] = value
    error = only_error(validate_graph(graph, object_info), node_id)
    assert error["type"] == "invalid_input_type"
    assert error["message"] == f"Failed to convert an input value to a {type_name} value"
    assert error["extra_info"]["input_name"] == name
    assert error["extra_info"]["received_value"] == value


def test_float_accepts_int(graph: dict, object_info: dict) -> None:
    graph["3"]["inputs"]["cfg"] = 7
    graph["10"]["inputs"]["strength_model"] = 1
    assert validate_graph(graph, object_info) == {}


def test_boolean_and_optional_inputs(object_info: dict) -> None:
    graph = {
        "1": {"class_type": "RegexReplace", "inputs": {"string": "a", "regex_pattern": "a", "replace": "b"}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }
    assert validate_graph(graph, object_info) == {}  # optional inputs may be left out
    graph["1"]["inputs"]["case_insensitive"] = False
    graph["1"]["inputs"]["count"] = 3
    assert validate_graph(graph, object_info) == {}
    graph["1"]["inputs"]["case_insensitive"] = 1
    error = only_error(validate_graph(graph, object_info), "1")
    assert (error["type"], error["extra_info"]["input_name"]) == ("invalid_input_type", "case_insensitive")
    graph["1"]["inputs"]["case_insensitive"] = True
    graph["1"]["inputs"]["count"] = 101  # optional, max 100
    error = only_error(validate_graph(graph, object_info), "1")
    assert (error["type"], error["message"]) == ("value_bigger_than_max", "Value 101 bigger than max of 100")


@pytest.mark.parametrize(("node_id", "name", "value", "type_", "message"), [
    ("3", "steps", 0, "value_smaller_than_min", "Value 0 smaller than min of 1"),
    ("3", "seed", -1, "value_smaller_than_min", "Value -1 smaller than min of 0"),
    ("3", "denoise", 1.5, "value_bigger_than_max", "Value 1.5 bigger than max of 1.0"),
    ("5", "width", 8, "value_smaller_than_min", "Value 8 smaller than min of 16"),
    ("10", "strength_clip", 100.5, "value_bigger_than_max", "Value 100.5 bigger than max of 100.0"),
])
def test_numbers_out_of_range(graph: dict, object_info: dict, node_id: str, name: str, value: object,
                              type_: str, message: str) -> None:
    graph[node_id]["inputs"][name] = value
    error = only_error(validate_graph(graph, object_info), node_id)
    assert (error["type"], error["message"], error["details"]) == (type_, message, name)
    assert error["extra_info"]["received_value"] == value


def test_range_bounds_are_inclusive(graph: dict, object_info: dict) -> None:
    graph["3"]["inputs"].update(steps=1, denoise=1.0, seed=18446744073709551615)
    graph["5"]["inputs"]["width"] = 16
    assert validate_graph(graph, object_info) == {}


def test_short_choice_list_is_spelled_out(graph: dict, object_info: dict) -> None:
    graph["3"]["inputs"]["scheduler"] = "bogus"
    error = only_error(validate_graph(graph, object_info), "3")
    choices = object_info["KSampler"]["input"]["required"]["scheduler"][0]
    assert error["type"] == "value_not_in_list"
    assert error["details"] == f"scheduler: 'bogus' not in {choices}"
    assert error["extra_info"]["input_config"] == object_info["KSampler"]["input"]["required"]["scheduler"]


def test_combo_with_options(object_info: dict) -> None:
    graph = {
        "2": {"class_type": "AlignYourStepsScheduler", "inputs": {"model_type": "SD1", "steps": 10, "denoise": 1.0}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    assert validate_graph(graph, object_info) == {}
    graph["2"]["inputs"]["model_type"] = "SD3"
    error = only_error(validate_graph(graph, object_info), "2")
    assert error["details"] == "model_type: 'SD3' not in ['SD1', 'SDXL', 'SVD']"


def test_server_file_lists_accept_any_name_but_not_empty(graph: dict, object_info: dict) -> None:
    graph["4"]["inputs"]["ckpt_name"] = "anything/at all.safetensors"
    assert validate_graph(graph, object_info) == {}
    graph["10"]["inputs"]["lora_name"] = ""
    error = only_error(validate_graph(graph, object_info), "10")
    assert (error["type"], error["extra_info"]["input_name"]) == ("value_not_in_list", "lora_name")


def test_link_type_mismatch(graph: dict, object_info: dict) -> None:
    graph["3"]["inputs"]["model"] = ["4", 1]  # CLIP into MODEL
    error = only_error(validate_graph(graph, object_info), "3")
    assert error["type"] == "return_type_mismatch"
    assert error["message"] == "Return type mismatch between linked nodes"
    assert error["details"] == "model, received_type(CLIP) mismatch input_type(MODEL)"
    assert error["extra_info"]["linked_node"] == ["4", 1]


def test_link_to_missing_node_and_missing_output(graph: dict, object_info: dict) -> None:
    graph["3"]["inputs"]["latent_image"] = ["99", 0]
    error = only_error(validate_graph(graph, object_info), "3")
    assert error["type"] == "return_type_mismatch"
    assert "'99'" in error["details"]
    graph["3"]["inputs"]["latent_image"] = ["5", 1]  # EmptyLatentImage has one output
    error = only_error(validate_graph(graph, object_info), "3")
    assert error["type"] == "return_type_mismatch"
    assert error["details"].startswith("latent_image, EmptyLatentImage has 1 output")


@pytest.mark.parametrize("link", [["4"], ["4", 0, 1], [4, 0], ["4", "0"], ["4", True]])
def test_malformed_links(graph: dict, object_info: dict, link: list) -> None:
    graph["8"]["inputs"]["vae"] = link
    error = only_error(validate_graph(graph, object_info), "8")
    assert error["type"] == "bad_linked_input"


def test_any_type_accepts_every_link(object_info: dict) -> None:
    graph = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
             "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    assert validate_graph(graph, object_info) == {}


def test_errors_reported_on_the_node_that_has_them_with_dependent_outputs(graph: dict, object_info: dict) -> None:
    graph["20"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    graph["5"]["inputs"]["height"] = 12
    result = validate_graph(graph, object_info)
    assert list(result["node_errors"]) == ["5"]  # not 3, 8, 9 or 20, which are only downstream
    entry = result["node_errors"]["5"]
    assert entry["class_type"] == "EmptyLatentImage"
    assert sorted(entry["dependent_outputs"]) == ["20", "9"]
    assert result["error"]["details"] == ""


def test_output_node_own_errors_are_in_details(graph: dict, object_info: dict) -> None:
    del graph["9"]["inputs"]["filename_prefix"]
    result = validate_graph(graph, object_info)
    assert result["error"]["details"] == "Required input is missing: filename_prefix"
    assert result["node_errors"]["9"]["dependent_outputs"] == ["9"]


def test_nodes_no_output_needs_are_not_checked(graph: dict, object_info: dict) -> None:
    graph["30"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 3}}  # dangling, like ComfyUI ignores
    assert validate_graph(graph, object_info) == {}


def test_hidden_inputs_are_ignored(graph: dict, object_info: dict) -> None:
    assert "hidden" in object_info["SaveImage"]["input"]
    graph["9"]["inputs"]["prompt"] = 12345  # hidden PROMPT input: neither required nor checked
    assert validate_graph(graph, object_info) == {}


def test_cycles_are_refused(graph: dict, object_info: dict) -> None:
    graph["30"] = {"class_type": "DifferentialDiffusion", "inputs": {"model": ["31", 0]}}
    graph["31"] = {"class_type": "DifferentialDiffusion", "inputs": {"model": ["30", 0]}}
    graph["3"]["inputs"]["model"] = ["30", 0]
    result = validate_graph(graph, object_info)
    types = [e["type"] for entry in result["node_errors"].values() for e in entry["errors"]]
    assert types == ["dependency_cycle"]


def test_summary_and_assert_valid(graph: dict, object_info: dict) -> None:
    del graph["6"]["inputs"]["clip"]
    graph["3"]["inputs"]["sampler_name"] = "DPM++ 2M Karras"
    summary = summarize_errors(validate_graph(graph, object_info))
    assert summary == ("Prompt outputs failed validation — node 3 (KSampler): Value not in list: sampler_name: "
                       "'DPM++ 2M Karras' not in (list of length 42); node 6 (CLIPTextEncode): Required input "
                       "is missing: clip")
    with pytest.raises(ValueError, match=r"node 6 \(CLIPTextEncode\): Required input is missing: clip"):
        assert_valid(graph, object_info)


def test_summary_of_odd_bodies() -> None:
    assert summarize_errors({"error": "no prompt", "node_errors": []}) == "no prompt"
    assert summarize_errors({"error": {"message": "Cannot execute because node X does not exist.",
                                       "details": "Node ID '#1'"}, "node_errors": {}}) == (
        "Cannot execute because node X does not exist. (Node ID '#1')")
    assert summarize_errors("plain text") == "plain text"
