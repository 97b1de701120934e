"""An exported LoRA loaded back into a diffusers pipeline (kohya keys, converted by diffusers) changes the model's
output, the strength scales the change, and diffusers agrees with a ComfyUI-style merge of the same file."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("peft")

from lora_studio.training.config import parse_config  # noqa: E402
from lora_studio.training.kohya import kohya_module_name, sdxl_unet_ldm_path  # noqa: E402
from lora_studio.training.trainer import train  # noqa: E402
from support.tiny_sd import build_tiny_sd15, build_tiny_sdxl, write_sample_images  # noqa: E402
from support.train_cfg import item_dicts, train_fields  # noqa: E402

pytestmark = pytest.mark.training

BUILDERS = {"sd15": build_tiny_sd15, "sdxl": build_tiny_sdxl}


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A tiny model and a LoRA trained on it (UNet incl. conv layers + text encoders), with a high learning rate
    so the LoRA moves the weights visibly in 3 steps."""
    arch = request.param
    work = tmp_path_factory.mktemp(f"roundtrip-{arch}")
    model = BUILDERS[arch](work / "model")
    items = item_dicts(write_sample_images(work / "images", count=2))
    config = parse_config(
        train_fields(model, items, work / "lora.safetensors", steps=3, rank=4, alpha=2.0, learning_rate=2e-3,
                     conv=True, conv_rank=2, conv_alpha=1.0, train_text_encoder=True)
    )
    return arch, model, train(config)


def unet_inputs(unet) -> dict:
    generator = torch.Generator().manual_seed(0)
    inputs = {
        # 32x32, not 8x8: 1x1 maps would make GroupNorm normalise a handful of values, far from linear
        "sample": torch.randn(1, 4, 32, 32, generator=generator),
        "timestep": 500,
        "encoder_hidden_states": torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator),
    }
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        inputs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(1, pooled, generator=generator),
            "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]),
        }
    return inputs


def unet_output(unet, inputs: dict):
    with torch.no_grad():
        return unet(**inputs).sample


def load_pipeline(model: Path):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(model), local_files_only=True, safety_checker=None)


def lora_modules(module, adapter: str) -> int:
    return sum(1 for m in module.modules() if hasattr(m, "lora_A") and adapter in m.lora_A)


def file_modules(tensors: dict, prefix: str) -> int:
    return sum(1 for key in tensors if key.startswith(prefix) and key.endswith(".alpha"))


def test_diffusers_loads_every_module_and_strength_scales_the_change(trained) -> None:
    from safetensors.torch import load_file

    arch, model, result = trained
    tensors = load_file(str(result.output_path))
    pipe = load_pipeline(model)
    inputs = unet_inputs(pipe.unet)
    base = unet_output(pipe.unet, inputs)
    prompt_ids = pipe.tokenizer(["akane, smile"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        text_base = pipe.text_encoder(prompt_ids)[0]

    pipe.load_lora_weights(str(result.output_path), adapter_name="akane")
    # kohya keys converted by diffusers: every module of the file is wrapped, none silently dropped
    assert lora_modules(pipe.unet, "akane") == file_modules(tensors, "lora_unet_") > 0
    te_prefixes = {"sd15": [("text_encoder", "lora_te_")],
                   "sdxl": [("text_encoder", "lora_te1_"), ("text_encoder_2", "lora_te2_")]}[arch]
    for component, prefix in te_prefixes:
        assert lora_modules(getattr(pipe, component), "akane") == file_modules(tensors, prefix) > 0
    full = unet_output(pipe.unet, inputs)
    with torch.no_grad():
        text_full = pipe.text_encoder(prompt_ids)[0]
    pipe.set_adapters(["akane"], adapter_weights=[0.5])
    half = unet_output(pipe.unet, inputs)
    pipe.set_adapters(["akane"], adapter_weights=[0.0])
    off = unet_output(pipe.unet, inputs)

    change = (full - base).norm()
    assert change > 1e-3 * base.norm()  # the LoRA changes the output
    assert (text_full - text_base).abs().max() > 1e-5  # and the text encoder's
    ratio = ((half - base).norm() / change).item()
    assert 0.4 < ratio < 0.6, ratio  # strength 0.5 -> about half the change (1.0 if strength were ignored)
    assert ((half - base) - 0.5 * (full - base)).norm() < 0.1 * change  # in the same direction
    assert torch.allclose(off, base, atol=1e-6)


def comfy_merge(unet, tensors: dict, strength: float, arch: str) -> None:
    """What ComfyUI does with a kohya LoRA: W += strength * (alpha / rank) * up @ down, per module."""
    config = dict(unet.config)
    modules = {}
    for path, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            try:
                name = sdxl_unet_ldm_path(path, config) if arch == "sdxl" else path
            except ValueError:
                continue
            modules[kohya_module_name(name)] = module
    names = sorted(key[: -len(".alpha")] for key in tensors if key.startswith("lora_unet_") and key.endswith(".alpha"))
    with torch.no_grad():
        for name in names:
            down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
            scale = strength * tensors[f"{name}.alpha"].item() / down.shape[0]
            weight = modules[name].weight  # KeyError: a key ComfyUI-style mapping cannot place
            delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
            weight += scale * delta


def test_comfyui_style_merge_matches_diffusers(trained) -> None:
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    arch, model, result = trained
    tensors = load_file(str(result.output_path))
    pipe = load_pipeline(model)
    inputs = unet_inputs(pipe.unet)
    pipe.load_lora_weights(str(result.output_path), adapter_name="akane")
    outputs = {}
    for strength in (1.0, 0.5):
        pipe.set_adapters(["akane"], adapter_weights=[strength])
        outputs[strength] = unet_output(pipe.unet, inputs)

    def merged(strength: float):
        unet = UNet2DConditionModel.from_pretrained(str(model), subfolder="unet", local_files_only=True).eval()
        comfy_merge(unet, tensors, strength, arch)
        return unet_output(unet, inputs)

    base_unet = UNet2DConditionModel.from_pretrained(str(model), subfolder="unet", local_files_only=True).eval()
    base = unet_output(base_unet, inputs)
    for strength, expected in outputs.items():
        got = merged(strength)
        assert (got - expected).norm() < 0.02 * (expected - base).norm(), strength
