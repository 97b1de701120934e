"""kohya export: key names ComfyUI maps, alpha semantics, metadata and atomic saving."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
from lora_studio.training.errors import TrainingCancelled, TrainingError
from lora_studio.training.kohya import build_metadata, kohya_module_name, split_peft_key
from support.tiny_sd import tiny_unet_config

HAS_TRAIN_STACK = all(importlib.util.find_spec(m) for m in ("torch", "diffusers", "peft", "safetensors"))
heavy = pytest.mark.skipif(not HAS_TRAIN_STACK, reason="needs torch and the train extra")
COMFY_KEYS = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "lora_keys_sd15.txt"
ATTENTION_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]



def comfy_sd15_names() -> set[str]:
    return set(COMFY_KEYS.read_text(encoding="utf-8").split())


def test_kohya_module_name() -> None:
    path = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"
    assert kohya_module_name(path) == "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0"
    assert kohya_module_name("mid_block.attentions.0.proj_in") == "lora_unet_mid_block_attentions_0_proj_in"
    assert kohya_module_name("text_model.encoder.layers.0.mlp.fc1", prefix="lora_te") == (
        "lora_te_text_model_encoder_layers_0_mlp_fc1"
    )
    with pytest.raises(ValueError):
        kohya_module_name("")


@pytest.mark.parametrize(
    "key",
    [
        "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.lora_A.weight",
        "unet.up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.lora_A.weight",
        "base_model.model.up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.lora_A.default.weight",
    ],
)
def test_split_peft_key_accepts_peft_layouts(key: str) -> None:
    assert split_peft_key(key) == ("up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k", "A")


def test_split_peft_key_rejects_other_tensors() -> None:
    for key in ("conv_in.weight", "x.to_q.lora_magnitude_vector", "x.to_q.lora_A.bias"):
        with pytest.raises(ValueError):
            split_peft_key(key)


def test_metadata_is_all_strings_and_truthful() -> None:
    metadata = build_metadata(
        rank=8,
        alpha=4,
        steps=100,
        learning_rate=1e-4,
        resolution=512,
        num_train_images=12,
        output_name="akane-v1",
        seed=7,
        trigger_word="akane_v1",
        started_at=1.5,
        finished_at=2.5,
        extra={"ss_network_alpha": "999", "lora_studio_character": "Akane"},
    )
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    assert metadata["ss_network_module"] == "networks.lora"
    assert metadata["ss_network_dim"] == "8" and metadata["ss_network_alpha"] == "4.0"
    assert metadata["ss_base_model_version"] == "sd_v1" and metadata["ss_resolution"] == "(512, 512)"
    assert metadata["ss_steps"] == "100" and metadata["ss_num_train_images"] == "12" and metadata["ss_seed"] == "7"
    assert metadata["ss_training_started_at"] == "1.5" and metadata["ss_training_finished_at"] == "2.5"
    assert metadata["lora_studio_trigger_word"] == "akane_v1" and metadata["lora_studio_character"] == "Akane"


@heavy
@pytest.mark.training
def test_peft_to_kohya_maps_down_up_and_trained_alpha() -> None:
    import torch
    from lora_studio.training.kohya import peft_to_kohya

    a, b = torch.randn(4, 32), torch.randn(64, 4)
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    out = peft_to_kohya({f"{module}.lora_A.weight": a, f"{module}.lora_B.weight": b}, alpha=2)
    name = kohya_module_name(module)
    assert set(out) == {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"}
    assert torch.equal(out[f"{name}.lora_down.weight"], a) and torch.equal(out[f"{name}.lora_up.weight"], b)
    assert out[f"{name}.alpha"].shape == () and out[f"{name}.alpha"].item() == 2.0  # alpha, not the rank (4)


@heavy
@pytest.mark.training
def test_peft_to_kohya_refuses_incomplete_or_foreign_state() -> None:
    import torch
    from lora_studio.training.kohya import peft_to_kohya

    with pytest.raises(ValueError, match="only one of"):
        peft_to_kohya({"m.to_q.lora_A.weight": torch.zeros(4, 8)}, alpha=4)
    with pytest.raises(ValueError, match="cannot export"):
        peft_to_kohya({"m.to_q.lora_embedding_A": torch.zeros(4, 8)}, alpha=4)


@heavy
@pytest.mark.training
def test_full_size_sd15_lora_keys_are_all_mapped_by_comfyui() -> None:
    """Real SD1.5 UNet shape on the meta device: 16 transformer blocks x 2 attentions x 4 projections."""
    import torch
    from diffusers import UNet2DConditionModel
    from lora_studio.training.kohya import module_names, peft_to_kohya
    from peft import LoraConfig, get_peft_model_state_dict

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            cross_attention_dim=768,
            attention_head_dim=8,
            layers_per_block=2,
        )
    unet.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=2.0, target_modules=ATTENTION_TARGETS, init_lora_weights="gaussian"))
    tensors = peft_to_kohya(get_peft_model_state_dict(unet), alpha=2.0)
    names = module_names(tensors)
    assert len(names) == 128
    assert set(names) <= comfy_sd15_names()
    for name in names:
        assert tensors[f"{name}.lora_down.weight"].shape[0] == 4
        assert tensors[f"{name}.lora_up.weight"].shape[1] == 4
        assert tensors[f"{name}.alpha"].item() == 2.0
    assert len(tensors) == 3 * 128


def apply_kohya(unet, tensors: dict, strength: float = 1.0) -> int:
    """Merge a kohya LoRA into the weights as ComfyUI does: W += strength * alpha / rank * up @ down."""
    import torch
    from lora_studio.training.kohya import module_names

    modules = {kohya_module_name(path): module for path, module in unet.named_modules() if path}
    with torch.no_grad():
        for name in module_names(tensors):
            down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
            weight = modules[name].weight
            delta = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
            weight += strength * tensors[f"{name}.alpha"].item() / down.shape[0] * delta
    return len(module_names(tensors))


@heavy
@pytest.mark.training
def test_merged_export_reproduces_the_peft_model() -> None:
    """Exported weights merged ComfyUI-style give the same UNet output as peft's adapter (alpha 2 != rank 4)."""
    import torch
    from diffusers import UNet2DConditionModel
    from lora_studio.training.kohya import peft_to_kohya
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(0)
    base = UNet2DConditionModel(**tiny_unet_config()).eval()
    plain = UNet2DConditionModel(**tiny_unet_config()).eval()
    plain.load_state_dict(base.state_dict())
    base.add_adapter(LoraConfig(r=4, lora_alpha=2.0, target_modules=ATTENTION_TARGETS, init_lora_weights="gaussian"))
    with torch.no_grad():
        for name, param in base.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)  # peft starts B at zero; make the adapter do something
    sample, text = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
    with torch.no_grad():
        expected = base(sample, 500, encoder_hidden_states=text).sample
        before = plain(sample, 500, encoder_hidden_states=text).sample
    assert apply_kohya(plain, peft_to_kohya(get_peft_model_state_dict(base), alpha=2.0)) == 80
    with torch.no_grad():
        merged = plain(sample, 500, encoder_hidden_states=text).sample
    assert (expected - before).abs().max() > 1e-3
    torch.testing.assert_close(merged, expected, atol=1e-4, rtol=1e-4)


@heavy
@pytest.mark.training
def test_save_lora_atomic(tmp_path: Path) -> None:
    import torch
    from lora_studio.training.kohya import save_lora_atomic
    from safetensors import safe_open

    tensors = {"lora_unet_x.lora_down.weight": torch.ones(2, 3), "lora_unet_x.alpha": torch.tensor(1.0)}
    out = tmp_path / "a.safetensors"
    digest = save_lora_atomic(tensors, out, {"ss_network_dim": "2"})
    assert digest == hashlib.sha256(out.read_bytes()).hexdigest()
    with safe_open(str(out), "pt") as handle:
        assert handle.metadata() == {"ss_network_dim": "2"}
        assert torch.equal(handle.get_tensor("lora_unet_x.lora_down.weight"), torch.ones(2, 3))
    with pytest.raises(TrainingError, match="already exists"):
        save_lora_atomic(tensors, out, {})
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest

    def cancel() -> None:
        raise TrainingCancelled()

    with pytest.raises(TrainingCancelled):
        save_lora_atomic(tensors, tmp_path / "b.safetensors", {}, before_commit=cancel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]
