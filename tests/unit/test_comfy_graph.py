"""build_txt2img / resolve_sampler: graphs the real ComfyUI accepts, and refused inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lora_studio.core.errors import InvalidInput
from lora_studio.core.samplers import HUMAN_SAMPLERS, resolve_sampler
from lora_studio.generation.graph import build_txt2img
from support.comfy_schema import load_object_info, validate_graph

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"


@pytest.fixture(scope="module")
def object_info() -> dict:
    return load_object_info(FIXTURES / "object_info.json")


def params(**overrides: Any) -> dict:
    base: dict[str, Any] = {
        "checkpoint": "random_sd15.safetensors", "positive": "1girl, solo, silver hair",
        "negative": "worst quality", "sampler": "DPM++ 2M Karras", "scheduler": "normal", "steps": 20,
        "cfg": 7.0, "width": 512, "height": 768, "seed": 176941029,
    }
    base.update(overrides)
    return base


def by_class(graph: dict, class_type: str) -> list[tuple[str, dict]]:
    return [(node_id, node["inputs"]) for node_id, node in graph.items() if node["class_type"] == class_type]


@pytest.mark.parametrize(("human", "expected"), [
    ("DPM++ 2M Karras", ("dpmpp_2m", "karras")),
    ("DPM++ 2M SDE Karras", ("dpmpp_2m_sde", "karras")),
    ("DPM++ 2S a Karras", ("dpmpp_2s_ancestral", "karras")),
    ("DPM++ SDE Karras", ("dpmpp_sde", "karras")),
    ("DPM++ 2M", ("dpmpp_2m", "normal")),
    ("Euler a", ("euler_ancestral", "normal")),
    ("Euler", ("euler", "normal")),
    ("DDIM", ("ddim", "ddim_uniform")),
])
def test_human_sampler_names_map_and_win_over_the_scheduler(human: str, expected: tuple[str, str]) -> None:
    assert resolve_sampler(human, None) == expected
    assert resolve_sampler(human, "exponential") == expected
    assert resolve_sampler(f"  {human.upper()} ", "beta") == expected


def test_human_names_map_to_samplers_and_schedulers_comfyui_has(object_info: dict) -> None:
    required = object_info["KSampler"]["input"]["required"]
    for sampler, scheduler in HUMAN_SAMPLERS.values():
        assert sampler in required["sampler_name"][0]
        assert scheduler in required["scheduler"][0]


def test_comfyui_sampler_names_keep_the_given_scheduler() -> None:
    assert resolve_sampler("dpmpp_2m", "karras") == ("dpmpp_2m", "karras")
    assert resolve_sampler("euler", None) == ("euler", "normal")
    assert resolve_sampler("uni_pc_bh2", "") == ("uni_pc_bh2", "normal")
    # ComfyUI's own lower-case names are not the human "Euler" / "DDIM"
    assert resolve_sampler("euler", "simple") == ("euler", "simple")
    assert resolve_sampler("ddim", "karras") == ("ddim", "karras")


@pytest.mark.parametrize(("sampler", "scheduler"), [
    ("", None), ("Heun++ Turbo", None), ("euler", "Karras!"), ("euler", 3), (None, None),
])
def test_unknown_samplers_and_schedulers_are_refused(sampler: Any, scheduler: Any) -> None:
    with pytest.raises(InvalidInput):
        resolve_sampler(sampler, scheduler)


def test_plain_graph_is_valid_and_wired(object_info: dict) -> None:
    graph = build_txt2img(**params())
    assert validate_graph(graph, object_info) == {}
    assert all(isinstance(node_id, str) for node_id in graph)
    assert not by_class(graph, "LoraLoader") and not by_class(graph, "CLIPSetLastLayer")
    [(ckpt, ckpt_inputs)] = by_class(graph, "CheckpointLoaderSimple")
    assert ckpt_inputs == {"ckpt_name": "random_sd15.safetensors"}
    encoders = by_class(graph, "CLIPTextEncode")
    assert sorted(inputs["text"] for _, inputs in encoders) == ["1girl, solo, silver hair", "worst quality"]
    assert all(inputs["clip"] == [ckpt, 1] for _, inputs in encoders)
    [(_, latent)] = by_class(graph, "EmptyLatentImage")
    assert latent == {"width": 512, "height": 768, "batch_size": 1}
    [(sampler_id, ks)] = by_class(graph, "KSampler")
    assert (ks["sampler_name"], ks["scheduler"]) == ("dpmpp_2m", "karras")
    assert (ks["seed"], ks["steps"], ks["cfg"], ks["denoise"]) == (176941029, 20, 7.0, 1.0)
    assert ks["model"] == [ckpt, 0]
    positive_id = next(i for i, inputs in encoders if inputs["text"].startswith("1girl"))
    assert ks["positive"] == [positive_id, 0]
    [(decode_id, decode)] = by_class(graph, "VAEDecode")
    assert decode == {"samples": [sampler_id, 0], "vae": [ckpt, 2]}
    [(_, save)] = by_class(graph, "SaveImage")
    assert save == {"filename_prefix": "lora_studio/out", "images": [decode_id, 0]}


def test_lora_routes_model_and_clip(object_info: dict) -> None:
    graph = build_txt2img(**params(lora_name="aiko_v1.safetensors", lora_strength=0.8))
    assert validate_graph(graph, object_info) == {}
    [(ckpt, _)] = by_class(graph, "CheckpointLoaderSimple")
    [(lora, lora_inputs)] = by_class(graph, "LoraLoader")
    assert lora_inputs == {"model": [ckpt, 0], "clip": [ckpt, 1], "lora_name": "aiko_v1.safetensors",
                           "strength_model": 0.8, "strength_clip": 0.8}
    assert all(inputs["clip"] == [lora, 1] for _, inputs in by_class(graph, "CLIPTextEncode"))
    [(_, ks)] = by_class(graph, "KSampler")
    assert ks["model"] == [lora, 0]


def test_clip_skip_without_lora(object_info: dict) -> None:
    graph = build_txt2img(**params(clip_skip=2))
    assert validate_graph(graph, object_info) == {}
    [(ckpt, _)] = by_class(graph, "CheckpointLoaderSimple")
    [(skip, skip_inputs)] = by_class(graph, "CLIPSetLastLayer")
    assert skip_inputs == {"clip": [ckpt, 1], "stop_at_clip_layer": -2}
    assert all(inputs["clip"] == [skip, 0] for _, inputs in by_class(graph, "CLIPTextEncode"))


def test_clip_skip_with_lora(object_info: dict) -> None:
    graph = build_txt2img(**params(clip_skip=2, lora_name="aiko.safetensors", sampler="euler",
                                   scheduler="simple", batch_size=4, filename_prefix="lora_studio/aiko/run1"))
    assert validate_graph(graph, object_info) == {}
    [(skip, _)] = by_class(graph, "CLIPSetLastLayer")
    [(lora, lora_inputs)] = by_class(graph, "LoraLoader")
    assert lora_inputs["clip"] == [skip, 0]
    assert all(inputs["clip"] == [lora, 1] for _, inputs in by_class(graph, "CLIPTextEncode"))
    [(_, ks)] = by_class(graph, "KSampler")
    assert (ks["sampler_name"], ks["scheduler"], ks["model"]) == ("euler", "simple", [lora, 0])
    assert by_class(graph, "EmptyLatentImage")[0][1]["batch_size"] == 4
    assert by_class(graph, "SaveImage")[0][1]["filename_prefix"] == "lora_studio/aiko/run1"


def test_int_cfg_and_strength_become_floats(object_info: dict) -> None:
    graph = build_txt2img(**params(cfg=7, lora_name="x.safetensors", lora_strength=1))
    [(_, ks)] = by_class(graph, "KSampler")
    assert isinstance(ks["cfg"], float)
    assert isinstance(by_class(graph, "LoraLoader")[0][1]["strength_model"], float)
    assert validate_graph(graph, object_info) == {}


def test_empty_lora_name_means_no_lora() -> None:
    assert not by_class(build_txt2img(**params(lora_name="")), "LoraLoader")


@pytest.mark.parametrize("overrides", [
    {"checkpoint": ""}, {"checkpoint": "   "}, {"checkpoint": None},
    {"width": 500}, {"height": 513}, {"width": 8}, {"width": 16392}, {"width": 512.0},
    {"steps": 0}, {"steps": True}, {"steps": "20"},
    {"cfg": -1}, {"cfg": "7"}, {"cfg": float("nan")},
    {"seed": -1}, {"seed": 2**64}, {"clip_skip": 0}, {"clip_skip": 25}, {"batch_size": 0},
    {"lora_name": "   "}, {"lora_name": "x", "lora_strength": 101},
    {"positive": None}, {"negative": 3},
    {"filename_prefix": ""}, {"filename_prefix": "../escape"}, {"filename_prefix": "/abs/out"},
    {"filename_prefix": "folder/"}, {"sampler": "Nope Sampler"},
])
def test_bad_values_are_refused(overrides: dict) -> None:
    with pytest.raises(InvalidInput):
        build_txt2img(**params(**overrides))


def test_refusal_message_names_the_field() -> None:
    with pytest.raises(InvalidInput, match="width must be a multiple of 8"):
        build_txt2img(**params(width=500))
