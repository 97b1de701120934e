"""kohya export: key names ComfyUI maps, alpha semantics, metadata and atomic saving."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
from lora_studio.training.config import TrainConfig
from lora_studio.training.errors import TrainingCancelled, TrainingError
from lora_studio.training.kohya import RunFacts, build_metadata, kohya_module_name, split_peft_key
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
    config = _config(rank=8, alpha=4, steps=100, learning_rate=1e-4, resolution=512, seed=7, trigger_word="akane_v1",
                     metadata={"ss_network_alpha": "999", "lora_studio_character": "Akane"})  # fmt: skip
    metadata = build_metadata(config, _facts(num_train_images=12, output_name="akane-v1", started_at=1.5,
                                             finished_at=2.5))  # fmt: skip
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
    digest = save_lora_atomic(tensors, out, {"ss_network_dim": "2"}, model_hashes=False)
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


def test_metadata_sdxl_with_training_options() -> None:
    import json

    from lora_studio.training.kohya import dataset_sha256

    dataset = [("a" * 64, "akane, Red Hair, smile"), ("b" * 64, "akane_v1, red hair,  , school uniform")]
    config = _config(
        rank=16,
        alpha=8,
        steps=400,
        learning_rate=1e-4,
        resolution=1024,
        seed=1,
        trigger_word="akane_v1",
        conv=True,
        conv_rank=4,
        conv_alpha=1,
        batch_size=2,
        grad_accum=3,
        train_text_encoder=True,
        text_encoder_lr=5e-5,
        lr_scheduler="cosine",
        warmup_steps=20,
        noise_offset=0.05,
        min_snr_gamma=5,
        shuffle_tags=True,
        keep_tokens=1,
        tag_dropout=0.1,
        caption_dropout=0.05,
        flip=False,
    )
    facts = RunFacts(
        arch="sdxl",
        started_at=1700000000.0,
        finished_at=1700000100.0,
        num_train_images=2,
        output_name="akane-v2",
        base_model_name="sd_xl_base_1.0.safetensors",
        prediction_type="v_prediction",
        epochs=200,
        optimizer="adamw8bit",
        dataset=dataset,
        dataset_name="akane",
    )
    metadata = build_metadata(config, facts)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0"
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert metadata["ss_sd_model_name"] == "sd_xl_base_1.0.safetensors"
    assert metadata["ss_v_parameterization"] == "True" and metadata["modelspec.prediction_type"] == "v"
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "4", "conv_alpha": "1.0"}
    assert metadata["ss_network_dim"] == "16" and metadata["ss_network_alpha"] == "8.0"
    assert metadata["ss_resolution"] == "(1024, 1024)" and metadata["modelspec.resolution"] == "1024x1024"
    assert metadata["ss_text_encoder_lr"] == "5e-05" and metadata["ss_network_train_unet_only"] == "False"
    assert metadata["ss_num_epochs"] == "200" and metadata["ss_batch_size_per_device"] == "2"
    assert metadata["ss_total_batch_size"] == "6" and metadata["ss_gradient_accumulation_steps"] == "3"
    assert metadata["ss_optimizer"] == "adamw8bit" and metadata["ss_lr_scheduler"] == "cosine"
    assert metadata["ss_lr_warmup_steps"] == "20" and metadata["ss_noise_offset"] == "0.05"
    assert metadata["ss_min_snr_gamma"] == "5.0" and metadata["ss_shuffle_caption"] == "True"
    assert metadata["ss_keep_tokens"] == "1" and metadata["ss_caption_tag_dropout_rate"] == "0.1"
    assert metadata["ss_caption_dropout_rate"] == "0.05" and metadata["ss_flip_aug"] == "False"
    assert metadata["modelspec.date"].startswith("2023-11-14T22:")
    assert metadata["lora_studio_dataset_sha256"] == dataset_sha256(dataset)
    assert json.loads(metadata["ss_dataset_dirs"]) == {"akane": {"n_repeats": 1, "img_count": 2}}
    # kohya's counting: split on commas, strip, lower-case, skip empties; the prepended trigger counts too
    assert json.loads(metadata["ss_tag_frequency"]) == {
        "akane": {"akane_v1": 2, "akane": 1, "red hair": 2, "smile": 1, "school uniform": 1}
    }


def test_metadata_leaves_out_what_was_not_used() -> None:
    metadata = build_metadata(_config(rank=4, alpha=4, steps=10, min_snr_gamma=0), _facts(num_train_images=3))
    for key in ("ss_network_args", "ss_text_encoder_lr", "ss_min_snr_gamma", "ss_tag_frequency", "ss_optimizer",
                "lora_studio_dataset_sha256", "ss_v_parameterization", "ss_sd_model_name"):  # fmt: skip
        assert key not in metadata
    assert metadata["ss_network_train_unet_only"] == "True" and metadata["modelspec.prediction_type"] == "epsilon"
    assert "ss_network_args" not in build_metadata(_config(conv_rank=4), _facts())  # conv off: its rank unused
    with pytest.raises(ValueError):
        build_metadata(_config(), _facts(arch="sd3"))


def _config(**fields) -> TrainConfig:
    """A TrainConfig for the metadata tests (not validated: no file is read)."""
    defaults = dict(base_model=Path("/models/base.safetensors"), items=(), output_path=Path("/out/x.safetensors"),
                    steps=1, rank=4, alpha=4.0, learning_rate=1e-4, resolution=512)  # fmt: skip
    return TrainConfig(**{**defaults, **fields})


def _facts(**fields) -> RunFacts:
    """The run facts of the metadata tests: an SD1.5 run of one image named x."""
    defaults = dict(arch="sd15", started_at=0.0, finished_at=1.0, num_train_images=1, output_name="x")
    return RunFacts(**{**defaults, **fields})


def test_dataset_hash_covers_images_and_captions_not_order(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from lora_studio.training.kohya import dataset_entries, dataset_sha256

    (tmp_path / "a.png").write_bytes(b"image a")
    (tmp_path / "b.png").write_bytes(b"image b")
    items = [
        SimpleNamespace(image=tmp_path / "a.png", caption="x, y"),
        SimpleNamespace(image=tmp_path / "b.png", caption="z"),
    ]
    entries = dataset_entries(items)
    assert entries[0] == (hashlib.sha256(b"image a").hexdigest(), "x, y")
    digest = dataset_sha256(entries)
    assert dataset_sha256(list(reversed(entries))) == digest
    assert dataset_sha256([entries[0], (entries[1][0], "z, w")]) != digest
    (tmp_path / "b.png").write_bytes(b"image b, edited")
    assert dataset_sha256(dataset_entries(items)) != digest


@heavy
@pytest.mark.training
def test_export_kohya_refuses_bad_input() -> None:
    import torch
    from lora_studio.training.kohya import export_kohya

    state = {"mid_block.attentions.0.proj_in.lora_A.weight": torch.zeros(2, 8),
             "mid_block.attentions.0.proj_in.lora_B.weight": torch.zeros(8, 2)}  # fmt: skip
    with pytest.raises(ValueError, match="unknown arch"):
        export_kohya(state, arch="sd3", alpha=1)
    with pytest.raises(ValueError, match="text encoder"):
        export_kohya(state, [{}, {}], arch="sd15", alpha=1)
    with pytest.raises(ValueError, match="nothing to export"):
        export_kohya({}, [{}], arch="sd15", alpha=1)
    out = export_kohya(state, arch="sdxl", alpha=1)
    assert sorted(out) == [
        f"lora_unet_middle_block_1_proj_in.{s}" for s in ("alpha", "lora_down.weight", "lora_up.weight")
    ]


@heavy
@pytest.mark.training
def test_save_lora_atomic_adds_kohya_model_hashes(tmp_path: Path) -> None:
    import torch
    from lora_studio.training.kohya import save_lora_atomic
    from safetensors import safe_open
    from safetensors.torch import save

    torch.manual_seed(0)
    tensors = {"lora_unet_x.lora_down.weight": torch.randn(8, 40000), "lora_unet_x.alpha": torch.tensor(4.0)}
    ss = {"ss_network_dim": "8", "ss_network_alpha": "4.0"}
    first = tmp_path / "a.safetensors"
    save_lora_atomic(tensors, first, {**ss, "lora_studio_character": "A"})  # hashes are on by default
    data = first.read_bytes()
    with safe_open(str(first), "pt") as handle:
        metadata = handle.metadata()
    header = int.from_bytes(data[:8], "little")
    assert metadata["sshs_model_hash"] == hashlib.sha256(data[8 + header :]).hexdigest()  # the tensor data
    assert metadata["sshs_legacy_hash"] == hashlib.sha256(save(tensors, ss)[0x100000:0x110000]).hexdigest()[:8]
    second = tmp_path / "b.safetensors"
    save_lora_atomic(tensors, second, {**ss, "lora_studio_character": "B"}, model_hashes=True)
    with safe_open(str(second), "pt") as handle:
        other = handle.metadata()
    assert (other["sshs_model_hash"], other["sshs_legacy_hash"]) == (
        metadata["sshs_model_hash"],
        metadata["sshs_legacy_hash"],
    )
    third = tmp_path / "c.safetensors"
    save_lora_atomic({**tensors, "lora_unet_x.alpha": torch.tensor(2.0)}, third, ss, model_hashes=True)
    with safe_open(str(third), "pt") as handle:
        assert handle.metadata()["sshs_model_hash"] != metadata["sshs_model_hash"]
