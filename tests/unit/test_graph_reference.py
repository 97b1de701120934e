"""plan_reference / build_reference: IPAdapter when the server has ComfyUI_IPAdapter_plus (its schema
transcribed from source in ipadapter_object_info.json), else CLIP vision + unCLIP, else img2img."""

from __future__ import annotations

from typing import Any

import pytest
from lora_studio.core.errors import InvalidInput
from lora_studio.generation.graph import ReferencePlan, build_reference, plan_reference
from support.comfy_schema import (
    FIXTURES,
    by_class,
    check_graph,
    load_object_info,
    merged_object_info,
    validate_graph,
    with_server_files,
    without_nodes,
)

REFS = ["lora_studio/ref_a.png", "lora_studio/ref_b.png", "lora_studio/ref_c.png"]


@pytest.fixture(scope="module")
def core() -> dict:
    return load_object_info(FIXTURES / "object_info.json")


@pytest.fixture(scope="module")
def with_pack() -> dict:
    return merged_object_info("object_info.json", "ipadapter_object_info.json")


def common(**overrides: Any) -> dict:
    base: dict[str, Any] = {
        "checkpoint": "sdxl.safetensors", "positive": "aiko, 1girl", "negative": "blurry", "sampler": "euler",
        "scheduler": "normal", "steps": 20, "cfg": 6.5, "width": 832, "height": 1216, "seed": 7,
        "lora_name": "aiko.safetensors", "lora_strength": 0.9,
    }
    base.update(overrides)
    return base


def test_the_pack_schema_is_what_the_builders_rely_on(with_pack: dict) -> None:
    loader = with_pack["IPAdapterUnifiedLoader"]
    assert loader["output"] == ["MODEL", "IPADAPTER"]
    assert "PLUS (high strength)" in loader["input"]["required"]["preset"][0]
    advanced = with_pack["IPAdapterAdvanced"]["input"]
    assert set(advanced["required"]) == {"model", "ipadapter", "image", "weight", "weight_type", "combine_embeds",
                                         "start_at", "end_at", "embeds_scaling"}
    assert set(advanced["optional"]) == {"image_negative", "attn_mask", "clip_vision"}
    assert with_pack["IPAdapterModelLoader"]["input"]["required"]["ipadapter_file"][1]["x_lists_server_files"]


def test_ipadapter_is_chosen_when_the_server_has_it(with_pack: dict) -> None:
    plan = plan_reference(with_pack, references=3)
    assert plan == ReferencePlan("ipadapter", "ComfyUI_IPAdapter_plus, preset 'PLUS (high strength)'",
                                 preset="PLUS (high strength)")


def test_ipadapter_graph_batches_the_references_into_the_model(with_pack: dict, core: dict) -> None:
    graph = build_reference(plan_reference(with_pack, references=3), images=REFS, weight=0.7, **common())
    assert validate_graph(graph, with_pack) == {}
    check_graph(graph, with_pack)
    with pytest.raises(InvalidInput, match="no node 'IPAdapterUnifiedLoader'"):
        check_graph(graph, core)  # the same graph on a server without the pack
    loads = by_class(graph, "LoadImage")
    assert [inputs["image"] for _, inputs in loads] == REFS
    (first, _), (second, _), (third, _) = loads
    [(batch1, b1), (batch2, b2)] = by_class(graph, "ImageBatch")
    assert b1 == {"image1": [first, 0], "image2": [second, 0]}
    assert b2 == {"image1": [batch1, 0], "image2": [third, 0]}
    [(loader, loader_inputs)] = by_class(graph, "IPAdapterUnifiedLoader")
    assert loader_inputs == {"model": ["10", 0], "preset": "PLUS (high strength)"}  # after the LoRA
    [(apply, apply_inputs)] = by_class(graph, "IPAdapterAdvanced")
    assert apply_inputs["model"] == [loader, 0] and apply_inputs["ipadapter"] == [loader, 1]
    assert apply_inputs["image"] == [batch2, 0] and apply_inputs["weight"] == 0.7
    [(_, ks)] = by_class(graph, "KSampler")
    assert ks["model"] == [apply, 0] and ks["denoise"] == 1.0
    assert ks["latent_image"] == ["5", 0] and graph["5"]["class_type"] == "EmptyLatentImage"


def test_ipadapter_with_named_files_uses_the_explicit_loaders(with_pack: dict) -> None:
    plan = plan_reference(with_pack, ipadapter_file="ip-adapter-plus_sdxl_vit-h.safetensors",
                          clip_vision="CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors")
    graph = build_reference(plan, images=REFS[:1], denoise=0.5, **common())
    assert validate_graph(graph, with_pack) == {}
    assert not by_class(graph, "ImageBatch") and not by_class(graph, "IPAdapterUnifiedLoader")
    [(model_loader, ml)] = by_class(graph, "IPAdapterModelLoader")
    [(vision, cv)] = by_class(graph, "CLIPVisionLoader")
    assert ml == {"ipadapter_file": "ip-adapter-plus_sdxl_vit-h.safetensors"}
    assert cv == {"clip_name": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"}
    [(_, apply)] = by_class(graph, "IPAdapterAdvanced")
    assert apply["ipadapter"] == [model_loader, 0] and apply["clip_vision"] == [vision, 0]
    assert apply["model"] == ["10", 0]
    [(load, _)] = by_class(graph, "LoadImage")
    assert apply["image"] == [load, 0]
    [(encode, _)] = by_class(graph, "VAEEncode")  # denoise < 1: starts from the first reference
    [(_, ks)] = by_class(graph, "KSampler")
    assert ks["latent_image"] == [encode, 0] and ks["denoise"] == 0.5


def test_a_live_server_without_the_preset_files_falls_back(with_pack: dict) -> None:
    live = with_server_files(with_pack, ipadapter=["ip-adapter_sd15.safetensors"],
                             clip_vision=["CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"])
    plan = plan_reference(live, preset="PLUS FACE (portraits)")
    assert plan.method == "unclip"  # the server lists a CLIP vision model
    assert "ipadapter: ComfyUI's models/ipadapter has no model for the preset 'PLUS FACE (portraits)'" in plan.reason
    assert plan_reference(live, preset="STANDARD (medium strength)").method == "ipadapter"
    assert plan_reference(live, preset="STANDARD (medium strength)", architecture="sd15").method == "ipadapter"
    with pytest.raises(InvalidInput, match="no model for the preset"):
        plan_reference(live, preset="STANDARD (medium strength)", architecture="sdxl", method="ipadapter")
    with pytest.raises(InvalidInput, match="IPAdapter model 'other.bin' is not in ComfyUI's models/ipadapter"):
        plan_reference(live, method="ipadapter", ipadapter_file="other.bin")


def test_unclip_when_the_server_lists_a_clip_vision_model(core: dict) -> None:
    live = with_server_files(core, clip_vision=["clip_vision_h.safetensors", "clip_vision_g.safetensors"])
    plan = plan_reference(live, references=2)
    assert plan.method == "unclip" and plan.clip_vision == "clip_vision_g.safetensors"  # SDXL's revision model
    assert "ipadapter: the server has no IPAdapterUnifiedLoader, IPAdapterAdvanced" in plan.reason
    graph = build_reference(plan, images=REFS[:2], weight=1.2, **common())
    assert validate_graph(graph, live) == {}
    check_graph(graph, live)
    [(vision, cv)] = by_class(graph, "CLIPVisionLoader")
    assert cv == {"clip_name": "clip_vision_g.safetensors"}
    (load_a, _), (load_b, _) = by_class(graph, "LoadImage")
    [(enc_a, ea), (enc_b, eb)] = by_class(graph, "CLIPVisionEncode")
    assert ea == {"clip_vision": [vision, 0], "image": [load_a, 0], "crop": "center"}
    assert eb["image"] == [load_b, 0]
    [(un_a, ua), (un_b, ub)] = by_class(graph, "unCLIPConditioning")
    assert ua == {"conditioning": ["6", 0], "clip_vision_output": [enc_a, 0], "strength": 1.2,
                  "noise_augmentation": 0.0}
    assert ub["conditioning"] == [un_a, 0] and ub["clip_vision_output"] == [enc_b, 0]
    [(_, ks)] = by_class(graph, "KSampler")
    assert ks["positive"] == [un_b, 0] and ks["negative"] == ["7", 0] and ks["model"] == ["10", 0]


def test_img2img_fallback_on_the_recording_and_for_sd15(core: dict) -> None:
    plan = plan_reference(core, references=2)  # no pack; CLIP vision files not listed in the recording
    assert plan.method == "img2img"
    assert plan.reason.startswith("img2img from the first reference image (not ipadapter: the server has no ")
    assert "unclip: the server does not list its CLIP vision models" in plan.reason
    graph = build_reference(plan, images=REFS[:2], **common())
    assert validate_graph(graph, core) == {}
    [(_, load)] = by_class(graph, "LoadImage")
    assert load == {"image": REFS[0]}
    [(encode, _)] = by_class(graph, "VAEEncode")
    [(_, ks)] = by_class(graph, "KSampler")
    assert ks["latent_image"] == [encode, 0] and ks["denoise"] == 0.6
    live = with_server_files(core, clip_vision=["clip_vision_h.safetensors"])
    assert plan_reference(live, architecture="sd15").method == "img2img"  # unCLIP does nothing on SD1.5
    with pytest.raises(InvalidInput, match="denoise below 1"):
        build_reference(plan, images=REFS[:1], denoise=1.0, **common())


def test_a_named_clip_vision_model_makes_unclip_possible_on_the_recording(core: dict) -> None:
    plan = plan_reference(core, clip_vision="clip_vision_g.safetensors")
    assert plan.method == "unclip"
    assert validate_graph(build_reference(plan, images=REFS[:1], **common()), core) == {}


def test_a_named_method_the_server_cannot_run_says_why(core: dict) -> None:
    with pytest.raises(InvalidInput, match="cannot refine from references with ipadapter: the server has no "
                                           "IPAdapterUnifiedLoader, IPAdapterAdvanced") as caught:
        plan_reference(core, method="ipadapter")
    assert caught.value.code == "reference_method_unavailable"
    with pytest.raises(InvalidInput, match="no ImageBatch"):
        plan_reference(without_nodes(merged_object_info("object_info.json", "ipadapter_object_info.json"),
                                     "ImageBatch"), references=2, method="ipadapter")


@pytest.mark.parametrize("kwargs", [
    {"references": 0}, {"references": 9}, {"method": "magic"}, {"architecture": "sd3"},
    {"preset": "NOPE"}, {"ipadapter_file": ""},
])
def test_bad_plan_requests(with_pack: dict, kwargs: dict) -> None:
    with pytest.raises(InvalidInput):
        plan_reference(with_pack, **kwargs)


@pytest.mark.parametrize("kwargs", [
    {"images": []}, {"images": "one.png"}, {"images": ["../x.png"]}, {"images": ["a.png"] * 9},
    {"weight": -0.1}, {"weight": 3.5}, {"denoise": 0}, {"denoise": 1.5},
])
def test_bad_build_requests(with_pack: dict, kwargs: dict) -> None:
    request: dict[str, Any] = {"images": REFS[:1], **kwargs}
    with pytest.raises(InvalidInput):
        build_reference(plan_reference(with_pack), **request, **common())


def test_a_plan_is_required() -> None:
    with pytest.raises(InvalidInput, match="plan_reference"):
        build_reference("ipadapter", images=REFS, **common())  # type: ignore[arg-type]
