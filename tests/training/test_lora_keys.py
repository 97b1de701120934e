"""LoRA coverage and kohya key names: kohya's default module sets, every exported name one ComfyUI maps.

Full-size SD1.5 / SDXL UNets and text encoders are built on the ``meta`` device (no weights, no memory) and
wrapped with real peft LoRA on exactly our target lists; tiny models check the numbers end to end.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from lora_studio.training.kohya import kohya_module_name, sdxl_unet_ldm_path
from support.tiny_sd import tiny_sdxl_unet_config, tiny_unet_config

HAS_TRAIN_STACK = all(importlib.util.find_spec(m) for m in ("torch", "diffusers", "peft", "safetensors"))
pytestmark = [
    pytest.mark.training,
    pytest.mark.skipif(not HAS_TRAIN_STACK, reason="needs torch and the train extra"),
]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"
RANK, ALPHA, CONV_RANK, CONV_ALPHA = 8, 3.0, 4, 1.0  # alphas differ from ranks on purpose
EXPECTED = {"sd15": (192, [72]), "sdxl": (722, [72, 192])}
TEXT_PREFIXES = {"sd15": ["lora_te"], "sdxl": ["lora_te1", "lora_te2"]}
FORBIDDEN = ("base_model", "lora_A", "lora_B", "unet.", "text_encoder.", ".default")

SD15_UNET = {
    "sample_size": 64,
    "block_out_channels": (320, 640, 1280, 1280),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "layers_per_block": 2,
}
SDXL_UNET = {
    "sample_size": 128,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12}
CLIP_BIGG = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "projection_dim": 1280,
    "hidden_act": "gelu",
}
# SDXL-shaped (same block types, linear projections, text_time embedding) but tiny; one layer per block so the
# original-name arithmetic is exercised with a layout other than SDXL's.
TINY_SDXL_UNET = {
    "sample_size": 8,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (16, 32, 32),
    "layers_per_block": 1,
    "transformer_layers_per_block": (1, 1, 2),
    "attention_head_dim": (2, 4, 4),
    "norm_num_groups": 8,
    "cross_attention_dim": 48,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 32 + 6 * 8,
}


def comfy_names(arch: str) -> set[str]:
    return set((FIXTURES / f"lora_keys_{arch}.txt").read_text(encoding="utf-8").split())


def build_meta(arch: str):
    """Full-size UNet + text encoders of ``arch`` on the meta device, from the configs the package ships."""
    from lora_studio.training.models import build_meta_modules

    modules = build_meta_modules(arch)
    return modules["unet"], modules["text_encoders"]


def build_reference_meta(arch: str):
    """The same from the published SD1.5 / SDXL configs written out above (an independent spec)."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        if arch == "sd15":
            return UNet2DConditionModel(**SD15_UNET), [CLIPTextModel(CLIPTextConfig(**CLIP_L))]
        return UNet2DConditionModel(**SDXL_UNET), [
            CLIPTextModel(CLIPTextConfig(**CLIP_L)),
            CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_BIGG)),
        ]


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_shipped_full_size_modules_match_the_published_architecture(arch: str) -> None:
    def shapes(module) -> dict:
        return {name: tuple(param.shape) for name, param in module.named_parameters()}

    unet, encoders = build_meta(arch)
    ref_unet, ref_encoders = build_reference_meta(arch)
    assert all(p.is_meta for p in unet.parameters())
    assert shapes(unet) == shapes(ref_unet)
    assert [type(te).__name__ for te in encoders] == [type(te).__name__ for te in ref_encoders]
    for te, ref in zip(encoders, ref_encoders, strict=True):
        assert shapes(te) == shapes(ref)


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def full_model(request):
    unet, encoders = build_meta(request.param)
    unet.requires_grad_(False)
    return request.param, unet, encoders


def test_target_counts_match_kohya_defaults(full_model) -> None:
    from lora_studio.training.targets import text_encoder_lora_targets, unet_lora_targets

    arch, unet, encoders = full_model
    unet_targets = unet_lora_targets(unet, arch)
    assert len(unet_targets) == len(set(unet_targets)) == EXPECTED[arch][0]
    assert [len(text_encoder_lora_targets(te)) for te in encoders] == EXPECTED[arch][1]
    assert all(".transformer_blocks." in p or p.endswith((".proj_in", ".proj_out")) for p in unet_targets)
    leaves = {re.sub(r"^.*\.transformer_blocks\.\d+\.", "", p) for p in unet_targets if "transformer_blocks" in p}
    assert leaves == {
        *(f"attn{i}.to_{x}" for i in (1, 2) for x in ("q", "k", "v", "out.0")),
        "ff.net.0.proj",
        "ff.net.2",
    }
    modules = dict(unet.named_modules())
    assert not any(type(modules[p]).__name__ == "Conv2d" and modules[p].kernel_size != (1, 1) for p in unet_targets)


def test_conv_targets_add_kohya_conv_set(full_model) -> None:
    from lora_studio.training.targets import conv_targets, unet_lora_targets

    arch, unet, _ = full_model
    plain = unet_lora_targets(unet, arch)
    with_conv = unet_lora_targets(unet, arch, conv=True)
    added = [p for p in with_conv if p not in plain]
    assert set(plain) < set(with_conv)
    resnets = [p for p, m in unet.named_modules() if type(m).__name__ == "ResnetBlock2D"]
    samplers = [p for p, m in unet.named_modules() if type(m).__name__ in ("Downsample2D", "Upsample2D")]
    # every resnet's two 3x3 convs and time projection, every down/upsampler conv; never conv_in / conv_out
    assert {f"{r}.{c}" for r in resnets for c in ("conv1", "conv2", "time_emb_proj")} | {
        f"{s}.conv" for s in samplers
    } <= set(added)
    assert not {"conv_in", "conv_out"} & set(with_conv)
    assert all(
        re.search(r"\.(resnets\.\d+\.(conv1|conv2|time_emb_proj|conv_shortcut)|(down|up)samplers\.0\.conv)$", p)
        for p in added
    )
    convs = conv_targets(unet, with_conv)
    assert len(convs) == 2 * len(resnets) + len(samplers)
    assert conv_targets(unet, plain) == []


@pytest.mark.parametrize("conv", [False, True], ids=["default", "conv"])
@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_full_size_export_names_are_all_mapped_by_comfyui(arch: str, conv: bool) -> None:
    """Real peft LoRA on the meta model -> export -> every module name is one ComfyUI's loader maps."""
    from lora_studio.training.kohya import ALPHA_SUFFIX, DOWN_SUFFIX, UP_SUFFIX, export_kohya, module_names
    from lora_studio.training.targets import lora_config, text_encoder_lora_targets, unet_lora_targets
    from peft import get_peft_model, get_peft_model_state_dict

    unet, encoders = build_meta(arch)
    unet.requires_grad_(False)
    targets = unet_lora_targets(unet, arch, conv=conv)
    unet.add_adapter(lora_config(unet, targets, rank=RANK, alpha=ALPHA, conv_rank=CONV_RANK, conv_alpha=CONV_ALPHA))
    assert unet_lora_targets(unet, arch, conv=conv) == targets  # stable on an already-wrapped model
    unet_state = get_peft_model_state_dict(unet)
    text_states = []
    for te in encoders:
        wrapped = get_peft_model(te, lora_config(te, text_encoder_lora_targets(te), rank=RANK, alpha=ALPHA))
        text_states.append(get_peft_model_state_dict(wrapped))
    assert any(key.startswith("base_model.model.") for key in text_states[0])  # the raw layout we must not ship

    tensors = export_kohya(unet_state, text_states, arch=arch, alpha=ALPHA, conv_alpha=CONV_ALPHA)
    names = module_names(tensors)
    accepted = comfy_names(arch)
    assert [n for n in names if n not in accepted] == []
    unet_names = [n for n in names if n.startswith("lora_unet_")]
    assert len(unet_names) == len(targets) and (len(targets) == EXPECTED[arch][0]) is not conv
    for prefix, count in zip(TEXT_PREFIXES[arch], EXPECTED[arch][1], strict=True):
        assert sum(n.startswith(prefix + "_") for n in names) == count
    assert len(names) == len(unet_names) + sum(EXPECTED[arch][1])
    assert set(tensors) == {n + s for n in names for s in (DOWN_SUFFIX, UP_SUFFIX, ALPHA_SUFFIX)}
    assert not [key for key in tensors if any(bad in key for bad in FORBIDDEN)]
    if arch == "sdxl":  # original block names only, as kohya writes SDXL
        assert not [n for n in unet_names if re.match(r"lora_unet_(down_blocks|up_blocks|mid_block)_", n)]
        assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in names
        assert "lora_unet_middle_block_1_transformer_blocks_9_ff_net_2" in names
    else:
        assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in names
    conv_names = set()
    for name in names:
        down, up, alpha = (tensors[name + s] for s in (DOWN_SUFFIX, UP_SUFFIX, ALPHA_SUFFIX))
        is_conv = down.dim() == 4 and tuple(down.shape[2:]) == (3, 3)
        rank = CONV_RANK if is_conv else RANK
        assert down.shape[0] == up.shape[1] == rank
        assert alpha.device.type == "cpu" and alpha.shape == () and alpha.item() == (CONV_ALPHA if is_conv else ALPHA)
        if is_conv:
            conv_names.add(name)
    assert bool(conv_names) is conv
    if conv:  # 3x3 convs: resnet in/out layers and the samplers, under the names ComfyUI maps
        pattern = (
            r"(resnets_\d+_conv[12]|samplers_0_conv)" if arch == "sd15" else r"(in_layers_2|out_layers_3|_op|_\d_conv)"
        )
        assert all(re.search(pattern + "$", n) for n in conv_names)
        assert conv_names <= accepted


@pytest.mark.parametrize(
    ("diffusers_path", "original"),
    [
        (
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
            "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
        ),
        ("down_blocks.1.attentions.1.proj_in", "input_blocks.5.1.proj_in"),
        (
            "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.0.proj",
            "input_blocks.8.1.transformer_blocks.9.ff.net.0.proj",
        ),
        ("down_blocks.0.resnets.0.conv1", "input_blocks.1.0.in_layers.2"),
        ("down_blocks.0.resnets.1.time_emb_proj", "input_blocks.2.0.emb_layers.1"),
        ("down_blocks.1.resnets.0.conv_shortcut", "input_blocks.4.0.skip_connection"),
        ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
        ("down_blocks.1.downsamplers.0.conv", "input_blocks.6.0.op"),
        ("mid_block.resnets.0.conv2", "middle_block.0.out_layers.3"),
        ("mid_block.attentions.0.transformer_blocks.3.attn2.to_k", "middle_block.1.transformer_blocks.3.attn2.to_k"),
        ("mid_block.resnets.1.norm1", "middle_block.2.in_layers.0"),
        ("up_blocks.0.attentions.2.proj_out", "output_blocks.2.1.proj_out"),
        ("up_blocks.0.resnets.0.conv1", "output_blocks.0.0.in_layers.2"),
        ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.2.conv"),
        (
            "up_blocks.1.attentions.0.transformer_blocks.1.attn2.to_out.0",
            "output_blocks.3.1.transformer_blocks.1.attn2.to_out.0",
        ),
        ("up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
        ("up_blocks.2.resnets.2.conv_shortcut", "output_blocks.8.0.skip_connection"),
        ("conv_in", "input_blocks.0.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("conv_out", "out.2"),
    ],
)
def test_sdxl_original_names_by_hand(diffusers_path: str, original: str) -> None:
    assert sdxl_unet_ldm_path(diffusers_path) == original


def test_sdxl_original_names_reject_unknown_modules() -> None:
    for path in ("down_blocks.0.resnets.2.conv1", "mid_block.attentions.1.proj_in", "up_blocks.0.foo.0.bar", "x"):
        with pytest.raises(ValueError):
            sdxl_unet_ldm_path(path)
    assert kohya_module_name(sdxl_unet_ldm_path("mid_block.attentions.0.proj_in")) == "lora_unet_middle_block_1_proj_in"


@pytest.mark.parametrize("config", [SDXL_UNET, TINY_SDXL_UNET], ids=["full", "tiny-1-layer"])
def test_sdxl_names_agree_with_diffusers_ldm_converter(config: dict) -> None:
    """Oracle: an LDM checkpoint keyed by our names, converted by diffusers' own single-file converter, lands
    every parameter back on the diffusers parameter it came from (and covers every parameter)."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    checkpoint, origin = {}, {}
    for index, (name, _) in enumerate(unet.named_parameters()):
        module, _, leaf = name.rpartition(".")
        checkpoint[f"model.diffusion_model.{sdxl_unet_ldm_path(module, unet.config)}.{leaf}"] = torch.tensor([index])
        origin[name] = index
    assert len(checkpoint) == len(origin)  # injective
    converted = convert_ldm_unet_checkpoint(checkpoint, dict(unet.config))
    assert {key: int(value.reshape(-1)[0]) for key, value in converted.items()} == origin


def test_every_sdxl_unet_module_has_a_mapped_original_name() -> None:
    """Not only the LoRA targets: every weight-bearing SDXL UNet module gets a name ComfyUI maps."""
    import torch

    unet, _ = build_meta("sdxl")
    accepted = comfy_names("sdxl")
    kinds = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm)
    paths = [p for p, m in unet.named_modules() if isinstance(m, kinds) and p]
    names = {kohya_module_name(sdxl_unet_ldm_path(p)) for p in paths}
    assert len(names) == len(paths) > 1000
    assert sorted(names - accepted) == []


def _bump_lora_b(model) -> None:
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)  # peft starts B at zero; make the adapter do something


def _merge(named_modules: dict, tensors: dict, strength: float = 1.0) -> int:
    """Apply a kohya LoRA to plain weights as ComfyUI does: W += strength * alpha / rank * up @ down."""
    import torch
    from lora_studio.training.kohya import module_names

    with torch.no_grad():
        for name in module_names(tensors):
            down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
            weight = named_modules[name].weight
            delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
            weight += strength * tensors[f"{name}.alpha"].item() / down.shape[0] * delta
    return len(module_names(tensors))


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_tiny_export_with_conv_and_text_encoder_reproduces_peft(arch: str) -> None:
    """Real peft on tiny models (conv LoRA with its own rank/alpha, text-encoder LoRA): the exported file merged
    ComfyUI-style gives the same outputs as the peft-wrapped models."""
    import torch
    from diffusers import UNet2DConditionModel
    from lora_studio.training.kohya import export_kohya
    from lora_studio.training.targets import lora_config, text_encoder_lora_targets, unet_lora_targets
    from peft import get_peft_model, get_peft_model_state_dict
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    config = tiny_unet_config() if arch == "sd15" else tiny_sdxl_unet_config()
    unet = UNet2DConditionModel(**config).eval()
    plain = UNet2DConditionModel(**config).eval()
    plain.load_state_dict(unet.state_dict())
    te_config = CLIPTextConfig(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
    )
    te, te_plain = CLIPTextModel(te_config).eval(), CLIPTextModel(te_config).eval()
    te_plain.load_state_dict(te.state_dict())

    targets = unet_lora_targets(unet, arch, conv=True)
    unet.add_adapter(lora_config(unet, targets, rank=4, alpha=2.0, conv_rank=2, conv_alpha=3.0))
    te_wrapped = get_peft_model(te, lora_config(te, text_encoder_lora_targets(te), rank=4, alpha=2.0))
    _bump_lora_b(unet)
    _bump_lora_b(te_wrapped)
    text_states = [get_peft_model_state_dict(te_wrapped)] + ([{}] if arch == "sdxl" else [])
    tensors = export_kohya(
        get_peft_model_state_dict(unet), text_states, arch=arch, alpha=2.0, conv_alpha=3.0, unet_config=unet.config
    )
    assert {t.item() for k, t in tensors.items() if k.endswith(".alpha")} == {2.0, 3.0}
    assert not [k for k in tensors if k.startswith("lora_te2_")]

    rename = (lambda p: sdxl_unet_ldm_path(p, plain.config)) if arch == "sdxl" else (lambda p: p)
    te_prefix = "lora_te" if arch == "sd15" else "lora_te1"
    weighted = (torch.nn.Linear, torch.nn.Conv2d)
    modules = {kohya_module_name(rename(p)): m for p, m in plain.named_modules() if isinstance(m, weighted)}
    modules.update(
        {
            kohya_module_name(re.sub(r"^(?!text_model\.)", "text_model.", p), te_prefix): m
            for p, m in te_plain.named_modules()
            if p
        }
    )
    merged = _merge(modules, tensors)
    assert merged == len(targets) + 12

    ids = torch.randint(0, 99, (1, 77))
    sample = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        hidden = te_wrapped(ids).last_hidden_state
        torch.testing.assert_close(te_plain(ids).last_hidden_state, hidden, atol=1e-4, rtol=1e-4)
        text = torch.randn(1, 77, config["cross_attention_dim"])
        extra = {}
        if arch == "sdxl":
            pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
            extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, pooled), "time_ids": torch.randn(1, 6)}}
        expected = unet(sample, 500, encoder_hidden_states=text, **extra).sample
        unet.disable_adapters()
        before = unet(sample, 500, encoder_hidden_states=text, **extra).sample
        got = plain(sample, 500, encoder_hidden_states=text, **extra).sample
    assert (expected - before).abs().max() > 1e-3
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
