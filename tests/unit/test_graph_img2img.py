"""build_img2img: LoadImage -> VAEEncode -> KSampler with denoise, valid on the real /object_info."""

from __future__ import annotations

from typing import Any

import pytest
from lora_studio.core.errors import InvalidInput
from lora_studio.generation.graph import build_img2img, build_txt2img
from support.comfy_schema import FIXTURES, by_class, check_graph, load_object_info, validate_graph


@pytest.fixture(scope="module")
def object_info() -> dict:
    return load_object_info(FIXTURES / "object_info.json")


def params(**overrides: Any) -> dict:
    base: dict[str, Any] = {
        "checkpoint": "sd15.safetensors", "positive": "aiko, 1girl, silver hair", "negative": "blurry",
        "sampler": "euler", "scheduler": "normal", "steps": 20, "cfg": 7.0, "width": 512, "height": 768,
        "seed": 42, "lora_name": "aiko.safetensors", "lora_strength": 0.8, "clip_skip": 2,
        "image": "lora_studio/aiko_0001.png", "denoise": 0.45,
    }
    base.update(overrides)
    return base


def test_the_latent_comes_from_the_image_resized_to_the_style(object_info: dict) -> None:
    graph = build_img2img(**params())
    assert validate_graph(graph, object_info) == {}
    check_graph(graph, object_info)
    assert not by_class(graph, "EmptyLatentImage")
    [(load, load_inputs)] = by_class(graph, "LoadImage")
    assert load_inputs == {"image": "lora_studio/aiko_0001.png"}
    [(scale, scale_inputs)] = by_class(graph, "ImageScale")
    assert scale_inputs == {"image": [load, 0], "upscale_method": "lanczos", "width": 512, "height": 768,
                            "crop": "center"}
    [(encode, encode_inputs)] = by_class(graph, "VAEEncode")
    assert encode_inputs == {"pixels": [scale, 0], "vae": ["4", 2]}
    [(sampler, ks)] = by_class(graph, "KSampler")
    assert ks["latent_image"] == [encode, 0] and ks["denoise"] == 0.45
    assert ks["model"] == ["10", 0] and ks["positive"] == ["6", 0] and ks["negative"] == ["7", 0]
    assert by_class(graph, "LoraLoader")[0][1]["clip"] == ["11", 0]  # LoRA after CLIP skip, as in txt2img
    [(decode, decode_inputs)] = by_class(graph, "VAEDecode")
    assert decode_inputs == {"samples": [sampler, 0], "vae": ["4", 2]}
    assert by_class(graph, "SaveImage")[0][1]["images"] == [decode, 0]


def test_shared_nodes_keep_the_txt2img_ids() -> None:
    txt = build_txt2img(**{k: v for k, v in params().items() if k not in ("image", "denoise")})
    img = build_img2img(**params())
    for node_id in ("3", "4", "6", "7", "8", "9", "10", "11"):
        assert img[node_id]["class_type"] == txt[node_id]["class_type"]
    assert "5" not in img  # no empty latent


def test_without_resize_and_with_a_batch(object_info: dict) -> None:
    graph = build_img2img(**params(resize=False, batch_size=3, lora_name=None, clip_skip=1))
    assert validate_graph(graph, object_info) == {}
    assert not by_class(graph, "ImageScale") and not by_class(graph, "LoraLoader")
    [(load, _)] = by_class(graph, "LoadImage")
    [(encode, encode_inputs)] = by_class(graph, "VAEEncode")
    assert encode_inputs["pixels"] == [load, 0]
    [(repeat, repeat_inputs)] = by_class(graph, "RepeatLatentBatch")
    assert repeat_inputs == {"samples": [encode, 0], "amount": 3}
    assert by_class(graph, "KSampler")[0][1]["latent_image"] == [repeat, 0]


@pytest.mark.parametrize("name", ["x.png", "lora_studio/moon/aiko 1.png", "out_00001_.png [output]"])
def test_image_names_comfyui_loads(name: str, object_info: dict) -> None:
    graph = build_img2img(**params(image=name))
    assert by_class(graph, "LoadImage")[0][1]["image"] == name
    assert validate_graph(graph, object_info) == {}


def test_denoise_one_is_allowed() -> None:
    assert by_class(build_img2img(**params(denoise=1)), "KSampler")[0][1]["denoise"] == 1.0


@pytest.mark.parametrize("overrides", [
    {"denoise": 0}, {"denoise": -0.1}, {"denoise": 1.01}, {"denoise": "0.5"}, {"denoise": float("nan")},
    {"image": ""}, {"image": None}, {"image": "../secret.png"}, {"image": "/etc/passwd"}, {"image": "C:/x.png"},
    {"image": "sub/"}, {"image": "a\x00.png"}, {"batch_size": 65}, {"width": 500}, {"seed": -1},
    {"checkpoint": ""}, {"sampler": "Nope Sampler"},
])
def test_bad_values_are_refused(overrides: dict) -> None:
    with pytest.raises(InvalidInput):
        build_img2img(**params(**overrides))


def test_unknown_keywords_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        build_img2img(**params(strength=1))
