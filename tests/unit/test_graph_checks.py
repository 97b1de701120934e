"""check_graph, the pre-send check: every reason a server cannot run a graph, named, as a 400."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from lora_studio.core.errors import InvalidInput
from lora_studio.generation.checks import GraphNotRunnable, check_graph, graph_problems, server_files
from lora_studio.generation.graph import build_txt2img
from support.comfy_schema import load_object_info, merged_object_info, with_server_files, without_nodes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"


@pytest.fixture(scope="module")
def object_info() -> dict:
    return load_object_info(FIXTURES / "object_info.json")


def txt2img(**overrides: Any) -> dict:
    params: dict[str, Any] = {
        "checkpoint": "sd15.safetensors", "positive": "1girl", "negative": "blurry", "sampler": "euler",
        "scheduler": "normal", "steps": 20, "cfg": 7.0, "width": 512, "height": 512, "seed": 1,
        "lora_name": "aiko.safetensors",
    }
    params.update(overrides)
    return build_txt2img(**params)


def refusal(graph: dict, object_info: dict) -> GraphNotRunnable:
    with pytest.raises(GraphNotRunnable) as caught:
        check_graph(graph, object_info)
    error = caught.value
    assert isinstance(error, InvalidInput) and error.status == 400 and error.code == "graph_not_runnable"
    return error


def test_a_runnable_graph_passes(object_info: dict) -> None:
    graph = txt2img()
    assert check_graph(graph, object_info) is None
    assert graph_problems(graph, object_info) == []


def test_every_missing_node_class_is_named_with_what_is_needed(object_info: dict) -> None:
    graph = txt2img()
    graph["20"] = {"class_type": "WanImageToVideo", "inputs": {}}
    graph["21"] = {"class_type": "IPAdapterAdvanced", "inputs": {}}
    graph["22"] = {"class_type": "IPAdapterAdvanced", "inputs": {}}
    error = refusal(graph, without_nodes(object_info, "WanImageToVideo"))  # a ComfyUI older than Wan
    assert error.problems == [
        "ComfyUI at this server has no node 'WanImageToVideo' (a video model pack/ComfyUI update is needed)",
        "ComfyUI at this server has no node 'IPAdapterAdvanced' (the ComfyUI_IPAdapter_plus node pack is needed)",
    ]
    assert error.message.startswith("ComfyUI at this server has no node 'WanImageToVideo'")
    assert "IPAdapterAdvanced" in error.message


def test_a_class_the_server_lost_is_named(object_info: dict) -> None:
    error = refusal(txt2img(), without_nodes(object_info, "LoraLoader"))
    assert error.problems == ["ComfyUI at this server has no node 'LoraLoader' (a custom node pack or a ComfyUI "
                              "update is needed)"]


def test_the_recording_accepts_any_model_file(object_info: dict) -> None:
    assert check_graph(txt2img(checkpoint="whatever/we/ask.safetensors"), object_info) is None


def test_a_live_server_names_each_missing_model_file(object_info: dict) -> None:
    live = with_server_files(object_info, checkpoints=["sd15.safetensors", "sdxl.safetensors"], loras=[])
    error = refusal(txt2img(checkpoint="x.safetensors", lora_name="aiko_v3.safetensors"), live)
    assert error.problems == [
        "checkpoint 'x.safetensors' is not in ComfyUI's models/checkpoints (it has: sd15.safetensors, "
        "sdxl.safetensors)",
        "LoRA 'aiko_v3.safetensors' is not in ComfyUI's models/loras (it has none)",
    ]
    live = with_server_files(object_info, checkpoints=["sd15.safetensors"], loras=["aiko.safetensors"])
    assert check_graph(txt2img(), live) is None


def test_a_long_file_list_is_counted_not_listed(object_info: dict) -> None:
    live = with_server_files(object_info, checkpoints=[f"m{i}.safetensors" for i in range(30)])
    [problem] = refusal(txt2img(checkpoint="x.safetensors"), live).problems
    assert problem == "checkpoint 'x.safetensors' is not in ComfyUI's models/checkpoints (30 files there)"


def test_upload_widgets_take_any_name_even_on_a_live_server(object_info: dict) -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "lora_studio/ref 1.png"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    live = copy.deepcopy(object_info)
    live["LoadImage"]["input"]["required"]["image"] = [["example.png"], {"image_upload": True}]
    assert check_graph(graph, live) is None  # ComfyUI's LoadImage checks the file itself when it runs
    graph["1"]["inputs"]["image"] = ""
    [problem] = refusal(graph, live).problems
    assert problem.startswith("node 1 (LoadImage): input 'image'")


def test_wrong_inputs_are_named_by_node_and_input(object_info: dict) -> None:
    graph = txt2img()
    del graph["3"]["inputs"]["model"]
    graph["3"]["inputs"]["steps"] = 0
    graph["3"]["inputs"]["scheduler"] = "fancy"
    graph["5"]["inputs"]["width"] = "512"
    graph["10"]["inputs"]["strength_model"] = 101.0
    error = refusal(graph, object_info)
    assert error.problems == [
        "node 3 (KSampler): required input 'model' is missing",
        "node 3 (KSampler): input 'scheduler' is 'fancy', not one of its choices ('simple', 'sgm_uniform', "
        "'karras', 'exponential', 'ddim_uniform', 'beta', 'normal', 'linear_quadratic', 'kl_optimal')",
        "node 3 (KSampler): input 'steps' is 0, below its minimum 1",
        "node 5 (EmptyLatentImage): input 'width' is '512': expected an integer",
        "node 10 (LoraLoader): input 'strength_model' is 101.0, above its maximum 100.0",
    ]
    assert error.body["error"]["type"] == "prompt_outputs_failed_validation"  # ComfyUI's own body, kept
    assert set(error.body["node_errors"]) == {"3", "5", "10"}


def test_a_link_of_the_wrong_type_is_named(object_info: dict) -> None:
    graph = txt2img()
    graph["3"]["inputs"]["model"] = ["4", 1]
    [problem] = refusal(graph, object_info).problems
    assert problem.startswith("node 3 (KSampler): input 'model' is linked to ['4', 1]")
    assert "received_type(CLIP) mismatch input_type(MODEL)" in problem


def test_no_output_and_not_a_graph(object_info: dict) -> None:
    graph = txt2img()
    del graph["9"]
    assert refusal(graph, object_info).problems == [
        "the graph has no output node (SaveImage, SaveVideo, PreviewImage, …): it would produce nothing"]
    assert refusal({}, object_info).problems == ["the graph must be a non-empty object of nodes"]
    assert refusal({"1": {"inputs": {}}}, object_info).problems == ["node 1 has no class_type"]


def test_many_problems_are_cut_short_in_the_message(object_info: dict) -> None:
    graph = {str(i): {"class_type": f"Missing{i}", "inputs": {}} for i in range(20)}
    error = refusal(graph, object_info)
    assert len(error.problems) == 20
    assert error.message.endswith("; and 8 more problem(s)")


def test_server_files(object_info: dict) -> None:
    recorded = server_files(object_info, "checkpoints")
    assert recorded is not None and not recorded.listed and recorded.has("anything.safetensors")
    vae = server_files(object_info, "vae")  # that server had no VAE files: only the built-in choice
    assert vae is not None and vae.listed and vae.names == ("pixel_space",) and not vae.has("wan_2.1_vae.safetensors")
    assert server_files(object_info, "ipadapter") is None  # no IPAdapter pack
    with_pack = server_files(merged_object_info("object_info.json", "ipadapter_object_info.json"), "ipadapter")
    assert with_pack is not None and not with_pack.listed
    live = server_files(with_server_files(object_info, diffusion_models=["Wan/wan2.1_i2v_480p_14B_fp16.safetensors",
                                                                         "flux.safetensors"]), "diffusion_models")
    assert live is not None and live.listed
    assert live.matching(r"wan.*i2v") == ["Wan/wan2.1_i2v_480p_14B_fp16.safetensors"]
    assert live.has("flux.safetensors") and not live.has("other.safetensors")
    with pytest.raises(ValueError):
        server_files(object_info, "nonsense")
