"""Generation parameters read from what ComfyUI (and A1111) embed in output files, by following the graph's
links from the sampler that fed the save node; damaged or hostile files yield what could be read."""

from __future__ import annotations

import io
import json
import random
import struct
import zlib

from lora_studio.datasets.comfy_meta import (
    extract_params,
    graph_from_workflow,
    params_from_a1111,
    params_from_graph,
    read_media,
    studio_tag,
)
from lora_studio.generation.graph import build_img2img, build_txt2img
from PIL import Image
from PIL.PngImagePlugin import PngInfo

COMMON = dict(checkpoint="sd15.safetensors", positive="aiko, red hair", negative="blurry", sampler="euler",
              scheduler="karras", steps=20, cfg=7.5, width=512, height=512, seed=12345)


def test_the_studios_own_graphs():
    p = params_from_graph(build_txt2img(**COMMON, lora_name="moon-aiko-v1.safetensors", lora_strength=0.7,
                                        clip_skip=2))
    assert p == {"positive": "aiko, red hair", "negative": "blurry", "seed": 12345, "sampler": "euler",
                 "scheduler": "karras", "steps": 20, "cfg": 7.5, "checkpoint": "sd15.safetensors",
                 "loras": [{"name": "moon-aiko-v1.safetensors", "strength_model": 0.7, "strength_clip": 0.7}]}
    p = params_from_graph(build_img2img(image="lora_studio/image-1.png", denoise=0.5, **COMMON))
    assert (p["positive"], p["seed"], p["loras"]) == ("aiko, red hair", 12345, [])


def test_custom_sampler_primitives_chained_loras_and_the_saver_that_wrote_the_file():
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl.safetensors"}},
        "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": "a.safetensors",
                                                     "strength_model": 1.0, "strength_clip": 0.5}},
        "3": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["2", 0], "lora_name": "b.safetensors",
                                                              "strength_model": 0.25}},
        "4": {"class_type": "PrimitiveString", "inputs": {"value": "a castle at dusk"}},
        "5": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"clip": ["2", 1], "text_g": ["4", 0], "text_l": ""}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["2", 1], "text": "ugly"}},
        "7": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["5", 0], "negative": ["6", 0]}},
        "8": {"class_type": "CFGGuider", "inputs": {"model": ["3", 0], "positive": ["7", 0], "negative": ["7", 1],
                                                    "cfg": 4.0}},
        "9": {"class_type": "Seed (rgthree)", "inputs": {"seed": 987654321987}},
        "10": {"class_type": "RandomNoise", "inputs": {"noise_seed": ["9", 0]}},
        "11": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "dpmpp_2m"}},
        "12": {"class_type": "BasicScheduler", "inputs": {"model": ["3", 0], "scheduler": "sgm_uniform", "steps": 30}},
        "13": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["10", 0], "guider": ["8", 0],
                                                                 "sampler": ["11", 0], "sigmas": ["12", 0]}},
        "14": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0]}},
        "15": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "castle"}},
        # a preview branch with another sampler: not the file's
        "20": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 4, "cfg": 1.0, "sampler_name": "lcm",
                                                    "scheduler": "simple", "model": ["1", 0], "positive": ["6", 0],
                                                    "negative": ["6", 0]}},
        "21": {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": "preview/quick"}},
    }
    p = params_from_graph(graph, "castle_00001_.png")
    assert p == {"positive": "a castle at dusk", "negative": "ugly", "seed": 987654321987, "sampler": "dpmpp_2m",
                 "scheduler": "sgm_uniform", "steps": 30, "cfg": 4.0, "checkpoint": "sdxl.safetensors",
                 "loras": [{"name": "a.safetensors", "strength_model": 1.0, "strength_clip": 0.5},
                           {"name": "b.safetensors", "strength_model": 0.25, "strength_clip": None}]}
    quick = params_from_graph(graph, "preview/quick_00001_.png")
    assert (quick["sampler"], quick["seed"], quick["positive"]) == ("lcm", 1, "ugly")
    assert [lora["name"] for lora in quick["loras"]] == ["a.safetensors"]  # its prompt's CLIP came through LoRA a


def test_the_editors_workflow_when_there_is_no_api_graph():
    workflow = {
        "nodes": [
            {"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["any.safetensors"]},
            {"id": 10, "type": "LoraLoader", "widgets_values": ["x.safetensors", 0.6, 0.4],
             "inputs": [{"name": "model", "link": 1}, {"name": "clip", "link": 2}]},
            {"id": 6, "type": "CLIPTextEncode", "widgets_values": ["1girl, solo"], "inputs": [{"name": "clip", "link": 3}]},
            {"id": 7, "type": "CLIPTextEncode", "widgets_values": ["lowres"], "inputs": [{"name": "clip", "link": 4}]},
            {"id": 3, "type": "KSampler", "widgets_values": [42, "randomize", 25, 6.5, "euler_ancestral", "normal", 1],
             "inputs": [{"name": "model", "link": 5}, {"name": "positive", "link": 6}, {"name": "negative", "link": 7}]},
        ],
        "links": [[1, 4, 0, 10, 0, "MODEL"], [2, 4, 1, 10, 1, "CLIP"], [3, 10, 1, 6, 0, "CLIP"],
                  [4, 10, 1, 7, 0, "CLIP"], [5, 10, 0, 3, 0, "MODEL"], [6, 6, 0, 3, 1, "CONDITIONING"],
                  [7, 7, 0, 3, 2, "CONDITIONING"]],
    }
    assert graph_from_workflow(workflow)["3"]["inputs"]["positive"] == ["6", 0]
    p = extract_params({"workflow": json.dumps(workflow)})
    assert p == {"positive": "1girl, solo", "negative": "lowres", "seed": 42, "sampler": "euler_ancestral",
                 "scheduler": "normal", "steps": 25, "cfg": 6.5, "checkpoint": "any.safetensors",
                 "loras": [{"name": "x.safetensors", "strength_model": 0.6, "strength_clip": 0.4}]}


def test_a1111_parameters():
    p = params_from_a1111("1girl, <lora:aiko:0.7>, <lora:style:1:0.5>\nNegative prompt: bad hands\n"
                          "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 42, "
                          "Size: 512x768, Model: anything-v5, Lora hashes: \"aiko: 1234, style: 99\"")
    assert p == {"positive": "1girl, <lora:aiko:0.7>, <lora:style:1:0.5>", "negative": "bad hands", "seed": 42,
                 "sampler": "DPM++ 2M", "scheduler": "Karras", "steps": 28, "cfg": 6.5, "checkpoint": "anything-v5",
                 "loras": [{"name": "aiko", "strength_model": 0.7, "strength_clip": 0.7},
                           {"name": "style", "strength_model": 1.0, "strength_clip": 0.5}]}
    assert extract_params({"parameters": "just a prompt"})["positive"] == "just a prompt"


def _png(**texts) -> bytes:
    info = PngInfo()
    for key, value in texts.items():
        info.add_text(key, value, zip=key == "workflow")  # zTXt for one of them
    buf = io.BytesIO()
    Image.new("RGB", (40, 30)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def test_png_text_chunks_and_the_studios_mark(tmp_path):
    graph = build_txt2img(**COMMON)
    path = tmp_path / "a.png"
    path.write_bytes(_png(prompt=json.dumps(graph), workflow=json.dumps({"nodes": []}),
                          lora_studio=json.dumps({"character_id": 3, "kind": "txt2img"}), note="ünïcode ✓"))
    info = read_media(path)
    assert (info.kind, info.media_type, info.width, info.height) == ("image", "image/png", 40, 30)
    assert json.loads(info.texts["prompt"]) == graph and info.texts["workflow"] == '{"nodes": []}'
    assert info.texts["note"] == "ünïcode ✓"  # iTXt
    assert studio_tag(info.texts) == {"character_id": 3, "kind": "txt2img"}
    assert extract_params(info.texts)["seed"] == 12345


def test_animations_count_as_videos_and_keep_their_graph(tmp_path):
    graph = build_txt2img(**COMMON)
    frames = [Image.new("RGB", (20, 10), (i * 60, 0, 0)) for i in range(3)]
    info = PngInfo()
    info.add(b"comf", b"prompt\0" + json.dumps(graph).encode(), after_idat=True)  # SaveAnimatedPNG
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:], pnginfo=info, duration=100)
    exif = Image.Exif()
    exif[0x0110] = "prompt:" + json.dumps(graph)  # SaveAnimatedWEBP
    exif[0x010F] = "lora_studio:" + json.dumps({"character_id": 5})
    frames[0].save(tmp_path / "a.webp", save_all=True, append_images=frames[1:], exif=exif, duration=100)
    frames[0].save(tmp_path / "still.webp", exif=exif)
    for name, kind in (("a.png", "video"), ("a.webp", "video"), ("still.webp", "image")):
        info = read_media(tmp_path / name)
        assert (info.kind, info.width, info.height) == (kind, 20, 10), name
        assert extract_params(info.texts)["seed"] == 12345, name
    assert studio_tag(read_media(tmp_path / "a.webp").texts) == {"character_id": 5}


def test_damaged_and_hostile_files_never_raise(tmp_path):
    rng = random.Random(5)
    good = _png(prompt=json.dumps(build_txt2img(**COMMON)))
    samples = {
        "empty.png": b"", "text.png": b"hello", "sig.png": good[:8], "cut.png": good[: len(good) // 2],
        "huge-length.png": good[:8] + struct.pack(">I", 0xFFFFFFF0) + b"tEXt" + b"x" * 20,
        "bomb.png": good[:33] + struct.pack(">I", 2000) + b"zTXt" + b"prompt\0\0"
        + zlib.compress(b"{" * 50_000_000)[:1990] + b"\0\0\0\0",
        "jpeg.jpg": b"\xff\xd8\xff\xe0garbage", "video.webm": b"\x1aE\xdf\xa3not really", "video.mp4": b"",
    }
    samples.update({f"noise{i}.png": good[:8] + rng.randbytes(rng.randrange(1, 400)) for i in range(30)})
    samples.update({f"flip{i}.png": bytes(b ^ (rng.random() < 0.02) * 0xFF for b in good) for i in range(30)})
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
        info = read_media(tmp_path / name)
        extract_params(info.texts)
        assert info.kind in ("image", "video"), name
    for graph in ({"1": {"class_type": "KSampler", "inputs": {"seed": ["1", 0], "model": ["1", 0], "steps": ["1", 0],
                                                              "positive": ["1", 0]}}},
                  {"1": None, "2": {"class_type": [], "inputs": 3}}, {"x": {"class_type": "LoraLoader",
                                                                           "inputs": {"lora_name": ["x", 0]}}}):
        params_from_graph(graph)
    assert extract_params({"prompt": "[1, 2]", "workflow": '{"nodes": 5, "links": []}'})["seed"] is None
