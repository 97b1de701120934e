"""plan_video / build_video: a native video family the server has the nodes and model files for,
saved as one real video (never frames as images), valid on the real /object_info."""

from __future__ import annotations

from typing import Any

import pytest
from lora_studio.core.errors import InvalidInput
from lora_studio.generation.graph import VIDEO_FAMILIES, VideoPlan, build_video, plan_video
from support.comfy_schema import (
    FIXTURES,
    by_class,
    check_graph,
    load_object_info,
    output_classes,
    validate_graph,
    with_server_files,
    without_nodes,
)

WAN_FILES = {
    "diffusion_models": ["flux1-dev.safetensors", "wan2.1_i2v_480p_14B_fp16.safetensors"],
    "text_encoders": ["clip_l.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"],
    "vae": ["pixel_space", "wan_2.1_vae.safetensors"],
    "clip_vision": ["clip_vision_h.safetensors"],
}
LTXV = {"checkpoint": "ltx-video-2b-v0.9.5.safetensors", "text_encoder": "t5xxl_fp16.safetensors"}
VIDEO_SAVES = {"SaveVideo", "SaveWEBM", "SaveAnimatedWEBP"}


@pytest.fixture(scope="module")
def core() -> dict:
    return load_object_info(FIXTURES / "object_info.json")


@pytest.fixture(scope="module")
def wan_server(core: dict) -> dict:
    return with_server_files(core, **WAN_FILES)


def request(**overrides: Any) -> dict:
    base: dict[str, Any] = {"image": "lora_studio/aiko_0001.png", "positive": "aiko waves, smiling",
                            "negative": "static, blurry", "seed": 11}
    base.update(overrides)
    return base


def assert_saved_as_one_video(graph: dict, object_info: dict, saver: str = "SaveVideo") -> None:
    assert output_classes(graph, object_info) == [saver]
    assert not by_class(graph, "SaveImage") and not by_class(graph, "PreviewImage")
    [(decode, _)] = by_class(graph, "VAEDecode")
    if saver == "SaveVideo":
        [(create, create_inputs)] = by_class(graph, "CreateVideo")
        assert create_inputs["images"] == [decode, 0]
        assert by_class(graph, "SaveVideo")[0][1]["video"] == [create, 0]
    else:
        assert by_class(graph, saver)[0][1]["images"] == [decode, 0]


def test_wan_is_picked_from_the_files_a_live_server_lists(wan_server: dict) -> None:
    plan = plan_video(wan_server)
    assert plan.family == "wan" and plan.save == "SaveVideo"
    assert plan.models == {"unet": "wan2.1_i2v_480p_14B_fp16.safetensors",
                           "text_encoder": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                           "vae": "wan_2.1_vae.safetensors", "clip_vision": "clip_vision_h.safetensors"}
    assert plan.reason.startswith("Wan 2.1 image-to-video (wan2.1_i2v_480p_14B_fp16.safetensors")


def test_wan_graph(wan_server: dict) -> None:
    plan = plan_video(wan_server)
    graph = build_video(plan, width=480, height=832, frames=33, fps=16, **request())
    assert validate_graph(graph, wan_server) == {}
    check_graph(graph, wan_server)
    [(load, _)] = by_class(graph, "LoadImage")
    [(unet, unet_inputs)] = by_class(graph, "UNETLoader")
    assert unet_inputs == {"unet_name": "wan2.1_i2v_480p_14B_fp16.safetensors", "weight_dtype": "default"}
    [(shift, _)] = by_class(graph, "ModelSamplingSD3")
    [(clip, clip_inputs)] = by_class(graph, "CLIPLoader")
    assert clip_inputs["type"] == "wan"
    assert all(inputs["clip"] == [clip, 0] for _, inputs in by_class(graph, "CLIPTextEncode"))
    [(encode, encode_inputs)] = by_class(graph, "CLIPVisionEncode")
    assert encode_inputs["image"] == [load, 0]
    [(i2v, cond)] = by_class(graph, "WanImageToVideo")
    assert cond["start_image"] == [load, 0] and cond["clip_vision_output"] == [encode, 0]
    assert (cond["width"], cond["height"], cond["length"]) == (480, 832, 33)
    [(sampler, ks)] = by_class(graph, "KSampler")
    assert ks["model"] == [shift, 0]
    assert (ks["positive"], ks["negative"], ks["latent_image"]) == ([i2v, 0], [i2v, 1], [i2v, 2])
    assert (ks["sampler_name"], ks["scheduler"], ks["cfg"], ks["seed"]) == ("uni_pc", "simple", 6.0, 11)
    [(vae, _)] = by_class(graph, "VAELoader")
    assert by_class(graph, "VAEDecode")[0][1] == {"samples": [sampler, 0], "vae": [vae, 0]}
    assert_saved_as_one_video(graph, wan_server)
    assert by_class(graph, "CreateVideo")[0][1]["fps"] == 16.0
    assert by_class(graph, "SaveVideo")[0][1]["filename_prefix"] == "lora_studio/video"


def test_the_recording_cannot_run_wan_it_has_no_vae_file(core: dict) -> None:
    # That ComfyUI listed no VAE files (VAELoader offers only "pixel_space"): Wan cannot run there.
    with pytest.raises(InvalidInput, match="VAE 'wan_2.1_vae.safetensors' is not in ComfyUI's models/vae"):
        plan_video(core, family="wan", models={"unet": "wan.safetensors", "text_encoder": "umt5.safetensors",
                                               "vae": "wan_2.1_vae.safetensors"})


def test_ltxv_with_named_files_on_the_recording(core: dict) -> None:
    plan = plan_video(core, family="ltxv", models=LTXV)
    graph = build_video(plan, **request(fps=25))
    assert validate_graph(graph, core) == {}
    [(ckpt, ckpt_inputs)] = by_class(graph, "CheckpointLoaderSimple")
    assert ckpt_inputs == {"ckpt_name": LTXV["checkpoint"]}
    [(_, clip_inputs)] = by_class(graph, "CLIPLoader")
    assert clip_inputs == {"clip_name": LTXV["text_encoder"], "type": "ltxv"}
    [(load, _)] = by_class(graph, "LoadImage")
    [(i2v, cond)] = by_class(graph, "LTXVImgToVideo")
    assert cond["image"] == [load, 0] and cond["vae"] == [ckpt, 2]
    assert (cond["width"], cond["height"], cond["length"]) == (768, 512, 97)  # the family's defaults
    [(conditioned, c2)] = by_class(graph, "LTXVConditioning")
    assert c2 == {"positive": [i2v, 0], "negative": [i2v, 1], "frame_rate": 25.0}
    [(sampler, custom)] = by_class(graph, "SamplerCustom")
    assert custom["latent_image"] == [i2v, 2] and custom["positive"] == [conditioned, 0]
    assert custom["model"] == [ckpt, 0] and custom["noise_seed"] == 11
    assert by_class(graph, "LTXVScheduler")[0][1]["latent"] == [i2v, 2]
    assert by_class(graph, "VAEDecode")[0][1]["samples"] == [sampler, 0]
    assert_saved_as_one_video(graph, core)


def test_svd_on_a_live_server(core: dict) -> None:
    live = with_server_files(core, checkpoints=["sd15.safetensors", "svd_xt.safetensors"], diffusion_models=[])
    plan = plan_video(live)
    assert plan.family == "svd" and plan.models == {"checkpoint": "svd_xt.safetensors"}
    assert "wan: ComfyUI's models/diffusion_models has no diffusion model" in plan.reason
    assert "ltxv: ComfyUI's models/checkpoints has no checkpoint" in plan.reason
    graph = build_video(plan, frames=25, **request())
    assert validate_graph(graph, live) == {}
    [(ckpt, _)] = by_class(graph, "ImageOnlyCheckpointLoader")
    [(guided, _)] = by_class(graph, "VideoLinearCFGGuidance")
    [(cond, cond_inputs)] = by_class(graph, "SVD_img2vid_Conditioning")
    assert cond_inputs["clip_vision"] == [ckpt, 1] and cond_inputs["video_frames"] == 25
    [(_, ks)] = by_class(graph, "KSampler")
    assert ks["model"] == [guided, 0] and ks["latent_image"] == [cond, 2]
    assert_saved_as_one_video(graph, live)


@pytest.mark.parametrize(("missing", "saver"), [(("CreateVideo",), "SaveWEBM"),
                                                (("SaveVideo", "SaveWEBM"), "SaveAnimatedWEBP")])
def test_older_servers_save_with_what_they_have(core: dict, missing: tuple, saver: str) -> None:
    server = without_nodes(core, *missing)
    plan = plan_video(server, family="ltxv", models=LTXV)
    assert plan.save == saver
    graph = build_video(plan, **request())
    assert validate_graph(graph, server) == {}
    assert_saved_as_one_video(graph, server, saver)


def test_a_server_without_a_video_family_is_refused(core: dict) -> None:
    with pytest.raises(InvalidInput) as caught:
        plan_video(core)  # the recording lists no model files to pick from
    error = caught.value
    assert error.code == "no_video_model" and error.status == 400
    assert error.message.startswith("ComfyUI at this server cannot make a video from an image — wan: ")
    assert "ltxv: the server does not list its checkpoint files" in error.message
    old = without_nodes(core, *[node for f in VIDEO_FAMILIES.values() for node in f.nodes
                                if node.startswith(("Wan", "LTXV", "SVD_"))])
    with pytest.raises(InvalidInput, match="wan: the server has no WanImageToVideo"):
        plan_video(with_server_files(old, **WAN_FILES))
    with pytest.raises(InvalidInput, match="no node to save a video"):
        plan_video(without_nodes(core, "SaveVideo", "SaveWEBM", "SaveAnimatedWEBP"))


def test_a_named_file_the_live_server_lacks_is_named(wan_server: dict) -> None:
    with pytest.raises(InvalidInput, match="diffusion model 'wan2.2.safetensors' is not in ComfyUI's "
                                           "models/diffusion_models"):
        plan_video(wan_server, family="wan", models={"unet": "wan2.2.safetensors"})


@pytest.mark.parametrize("kwargs", [{"family": "sora"}, {"models": {"unet": "x"}},
                                    {"family": "svd", "models": {"unet": "x"}}])
def test_bad_plan_requests(wan_server: dict, kwargs: dict) -> None:
    with pytest.raises(InvalidInput):
        plan_video(wan_server, **kwargs)


@pytest.mark.parametrize("overrides", [
    {"width": 840}, {"height": 8}, {"width": 4096}, {"frames": 32}, {"frames": 0}, {"frames": 2000},
    {"fps": 0}, {"fps": 61}, {"fps": "16"}, {"image": "../x.png"}, {"image": ""}, {"seed": -1}, {"steps": 0},
    {"cfg": 101}, {"positive": None}, {"sampler": "Nope Sampler"}, {"filename_prefix": "../out"},
])
def test_bad_video_values_are_refused(wan_server: dict, overrides: dict) -> None:
    with pytest.raises(InvalidInput):
        build_video(plan_video(wan_server), **request(**overrides))


def test_family_bounds() -> None:
    ltxv = VideoPlan("ltxv", dict(LTXV))
    with pytest.raises(InvalidInput, match="multiple of 32"):
        build_video(ltxv, width=528, **request())
    with pytest.raises(InvalidInput, match="8·k \\+ 1"):
        build_video(ltxv, frames=96, **request())
    build_video(ltxv, width=544, frames=9, **request())
    with pytest.raises(InvalidInput, match="names no checkpoint"):
        build_video(VideoPlan("svd", {}), **request())
    with pytest.raises(InvalidInput, match="plan_video"):
        build_video("wan", **request())  # type: ignore[arg-type]
