"""Offline base-model loading (training/models.py, architecture.py, clip_tokenizer.py): detection, single-file LDM checkpoints, diffusers folders,
CLIP tokenizers, text conditioning and full-size configs on the meta device."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

import torch  # noqa: E402
from lora_studio.training import architecture, clip_tokenizer, models  # noqa: E402
from lora_studio.training.errors import TrainingError  # noqa: E402
from support.ldm_export import diffusers_to_ldm, export_single_file, open_clip_to_ldm, unet_to_ldm, vae_to_ldm  # noqa: E402
from support.tiny_sd import build_tiny_sd15, build_tiny_sdxl, tiny_tokenizer_dir  # noqa: E402

pytestmark = pytest.mark.training

# sha256 of ComfyUI's comfy/sd1_tokenizer vocab.json (json.dumps sort_keys, ensure_ascii=False) and merges.txt
# (merge lines joined by "\n"): the rebuilt tokenizer must be exactly this one.
COMFY_VOCAB_SHA = "f3494b2b345fa180ca51ec80ab47d1bbb0218d60089264d5ee9bb0619af4a4b7"
COMFY_MERGES_SHA = "f61f2adf497e6f5357c347aeb4646fabe82f341e946de5bdec5d2858e41bef4a"


@pytest.fixture()
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 and any socket connection fails loudly."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(clip_tokenizer.TOKENIZER_ENV, raising=False)

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    sd15 = build_tiny_sd15(root / "sd15")
    sdxl = build_tiny_sdxl(root / "sdxl")
    return {
        "root": root,
        "sd15": sd15,
        "sdxl": sdxl,
        "sd15_file": export_single_file(sd15, root / "ckpt" / "tiny_sd15.safetensors"),
        "sdxl_file": export_single_file(sdxl, root / "ckpt" / "tiny_sdxl.safetensors", dtype=torch.float16),
    }


def _source_modules(folder: Path) -> dict:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    out = {
        "unet": UNet2DConditionModel.from_pretrained(str(folder / "unet"), local_files_only=True).eval(),
        "vae": AutoencoderKL.from_pretrained(str(folder / "vae"), local_files_only=True).eval(),
        "text_encoders": [CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)],
    }
    if (folder / "text_encoder_2").is_dir():
        out["text_encoders"].append(
            CLIPTextModelWithProjection.from_pretrained(str(folder / "text_encoder_2"), local_files_only=True)
        )
    # from_pretrained may leave weights in unaligned (memory-mapped) buffers, which take other BLAS kernels and
    # change the last bits of outputs; aligned copies make bit-exact comparisons meaningful.
    for module in (out["unet"], out["vae"], *out["text_encoders"]):
        for param in module.parameters():
            param.data = param.data.clone()
    return out


def _assert_same_weights(loaded, source, cast=None) -> None:
    a, b = loaded.state_dict(), source.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        expected = b[key].to(cast) if cast is not None else b[key]
        assert torch.equal(a[key], expected.to(a[key].dtype)), key


def _unet_inputs(arch: str, unet):
    g = torch.Generator().manual_seed(3)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    kwargs = {}
    if arch == "sdxl":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        time_ids = torch.tensor([models.sdxl_time_ids((64, 80), (0, 8), (64, 64))] * 2, dtype=torch.float32)
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(2, pooled, generator=g), "time_ids": time_ids}
    return sample, torch.tensor([10, 700]), context, kwargs


# ------------------------------------------------------------------------------------------ detection


def test_detect_single_files_and_folders(tiny):
    assert architecture.detect_model(tiny["sd15_file"]) == architecture.ModelInfo("sd15", "epsilon", "single_file")
    assert architecture.detect_model(tiny["sdxl_file"]) == architecture.ModelInfo("sdxl", "epsilon", "single_file")
    assert architecture.detect_model(tiny["sd15"]) == architecture.ModelInfo("sd15", "epsilon", "diffusers")
    assert architecture.detect_model(tiny["sdxl"]) == architecture.ModelInfo("sdxl", "epsilon", "diffusers")


def test_detect_v_prediction(tiny, tmp_path):
    marked = export_single_file(tiny["sd15"], tmp_path / "vpred_key.safetensors", v_pred_key=True)
    assert architecture.detect_model(marked).prediction_type == "v_prediction"
    spec = export_single_file(tiny["sdxl"], tmp_path / "vpred_meta.safetensors",
                              metadata={"modelspec.prediction_type": "v"})
    assert architecture.detect_model(spec) == architecture.ModelInfo("sdxl", "v_prediction", "single_file")
    eps = export_single_file(tiny["sdxl"], tmp_path / "eps_meta.safetensors",
                             metadata={"modelspec.prediction_type": "epsilon"})
    assert architecture.detect_model(eps).prediction_type == "epsilon"

    folder = tmp_path / "vpred_folder"
    shutil.copytree(tiny["sd15"], folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "prediction_type": "v_prediction"}))
    assert architecture.detect_model(folder) == architecture.ModelInfo("sd15", "v_prediction", "diffusers")


def test_zero_terminal_snr_and_legacy_clip_layout(tiny, tmp_path, offline):
    path = export_single_file(tiny["sd15"], tmp_path / "old.safetensors", v_pred_key=True, ztsnr_key=True,
                              legacy_clip=True)
    info = architecture.detect_model(path)
    assert info == architecture.ModelInfo("sd15", "v_prediction", "single_file", zero_terminal_snr=True)
    base = models.load_base_model(path, tokenizer_dir=tiny_tokenizer_dir(tiny["sd15"]))
    assert base.noise_scheduler.config.prediction_type == "v_prediction"
    assert base.noise_scheduler.alphas_cumprod[-1].item() == pytest.approx(0.0, abs=1e-6)  # zero SNR at t=T
    plain = models.load_base_model(tiny["sd15"])
    assert plain.noise_scheduler.alphas_cumprod[-1].item() > 1e-3
    _assert_same_weights(base.text_encoders[0], _source_modules(tiny["sd15"])["text_encoders"][0])


def _save(path: Path, state: dict) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_refuses_other_architectures_clearly(tiny, tmp_path):
    from transformers import CLIPTextModelWithProjection

    sd15_state, _ = diffusers_to_ldm(tiny["sd15"])
    bigg = CLIPTextModelWithProjection.from_pretrained(str(tiny["sdxl"] / "text_encoder_2"), local_files_only=True)

    sd2 = {k: v for k, v in sd15_state.items() if not k.startswith("cond_stage_model.")}
    sd2.update(open_clip_to_ldm(bigg.state_dict(), "cond_stage_model.model."))
    with pytest.raises(TrainingError, match=r"SD2\.x checkpoint \(OpenCLIP-H"):
        architecture.detect_model(_save(tmp_path / "sd2.safetensors", sd2))

    inpaint = dict(sd15_state)
    weight = inpaint["model.diffusion_model.input_blocks.0.0.weight"]
    inpaint["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(weight.shape[0], 9, 3, 3)
    with pytest.raises(TrainingError, match="9 input channels"):
        architecture.detect_model(_save(tmp_path / "inpaint.safetensors", inpaint))

    unet_only = {k: v for k, v in sd15_state.items() if k.startswith("model.diffusion_model.")}
    with pytest.raises(TrainingError, match="without its VAE"):
        architecture.detect_model(_save(tmp_path / "unet_only.safetensors", unet_only))

    with pytest.raises(TrainingError, match="Flux"):
        architecture.detect_model(_save(tmp_path / "flux.safetensors", {"double_blocks.0.img_attn.qkv.weight": torch.ones(3, 2)}))
    with pytest.raises(TrainingError, match="SD3"):
        architecture.detect_model(_save(tmp_path / "sd3.safetensors", {"model.diffusion_model.joint_blocks.0.x": torch.ones(2)}))
    with pytest.raises(TrainingError, match=r"only SD1\.5 and SDXL.*no Stable Diffusion UNet"):
        architecture.detect_model(_save(tmp_path / "random.safetensors", {"foo.weight": torch.randn(4, 4)}))
    with pytest.raises(TrainingError, match="a LoRA, not a base model"):
        architecture.detect_model(_save(tmp_path / "lora.safetensors", {"lora_unet_x.lora_down.weight": torch.ones(2, 2)}))

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK\x03\x04 pickle")
    with pytest.raises(TrainingError, match=r"only \.safetensors"):
        architecture.detect_model(ckpt)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(TrainingError, match="not a valid .safetensors"):
        models.load_base_model(garbage)
    with pytest.raises(TrainingError, match="not found"):
        architecture.detect_model(tmp_path / "missing.safetensors")

    sd2_folder = tmp_path / "sd2_folder"
    shutil.copytree(tiny["sd15"], sd2_folder)
    te_config = json.loads((sd2_folder / "text_encoder" / "config.json").read_text())
    (sd2_folder / "text_encoder" / "config.json").write_text(json.dumps({**te_config, "hidden_act": "gelu"}))
    with pytest.raises(TrainingError, match="SD2"):
        architecture.detect_model(sd2_folder)


# ------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_single_file_loads_offline_with_identical_weights_and_outputs(tiny, offline, arch):
    folder = tiny[arch]
    base = models.load_base_model(tiny[f"{arch}_file"], tokenizer_dir=tiny_tokenizer_dir(folder))
    assert base.info == architecture.ModelInfo(arch, "epsilon", "single_file")
    source = _source_modules(folder)
    # The SDXL export was saved in fp16: the loader upcasts to fp32 (dtype=None) bit-exactly from fp16 values.
    cast = torch.float16 if arch == "sdxl" else None
    _assert_same_weights(base.unet, source["unet"], cast)
    _assert_same_weights(base.vae, source["vae"], cast)
    assert len(base.text_encoders) == len(source["text_encoders"]) == (2 if arch == "sdxl" else 1)
    for loaded, original in zip(base.text_encoders, source["text_encoders"], strict=True):
        assert type(loaded) is type(original)
        _assert_same_weights(loaded, original, cast)
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in base.unet.parameters())
    for key in ("block_out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim",
                "transformer_layers_per_block", "down_block_types", "up_block_types", "use_linear_projection",
                "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
                "norm_num_groups"):
        assert base.unet.config[key] == source["unet"].config[key], key
    assert base.noise_scheduler.config.prediction_type == "epsilon"

    if cast is not None:  # compare outputs against the fp16-rounded source
        for param in source["unet"].parameters():
            param.data = param.data.to(cast).float()
    sample, steps, context, kwargs = _unet_inputs(arch, base.unet)
    with torch.no_grad():
        got = base.unet(sample, steps, context, **kwargs).sample
        want = source["unet"](sample, steps, context, **kwargs).sample
    # the weights are bit-identical (above); oneDNN's vectorised sums may still round differently with the
    # tensors' alignment in memory, so the outputs agree to float rounding, not bit for bit
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert latent_shape_ok(base)


def latent_shape_ok(base) -> bool:
    with torch.no_grad():
        latents = base.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    return tuple(latents.shape) == (1, 4, 8, 8)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_diffusers_folder_loads_offline(tiny, offline, arch):
    base = models.load_base_model(tiny[arch])
    assert base.info == architecture.ModelInfo(arch, "epsilon", "diffusers")
    source = _source_modules(tiny[arch])
    _assert_same_weights(base.unet, source["unet"])
    for loaded, original in zip(base.text_encoders, source["text_encoders"], strict=True):
        _assert_same_weights(loaded, original)
    assert [t.pad_token_id for t in base.tokenizers] == ([520] if arch == "sd15" else [520, 0])


def test_single_file_matches_folder_text_conditioning(tiny, offline):
    for arch, width, pooled in (("sd15", 32, None), ("sdxl", 96, 64)):
        from_file = models.load_base_model(tiny[f"{arch}_file"], tokenizer_dir=tiny_tokenizer_dir(tiny[arch]))
        from_folder = models.load_base_model(tiny[arch])
        a = models.encode_text(from_file, ["the cat", "a girl, the cat"])
        b = models.encode_text(from_folder, ["the cat", "a girl, the cat"])
        assert tuple(a.hidden.shape) == (2, 77, width)
        assert (a.pooled is None) if pooled is None else tuple(a.pooled.shape) == (2, pooled)
        assert not a.hidden.requires_grad
        if arch == "sdxl":
            # same CLIP-L + bigG as the folder, but fp16-rounded weights: close, not equal
            assert torch.allclose(a.hidden, b.hidden, atol=2e-2) and torch.allclose(a.pooled, b.pooled, atol=2e-2)
        else:
            assert torch.equal(a.hidden, b.hidden)
        assert from_file.fingerprint != from_folder.fingerprint


def test_encode_text_sdxl_uses_penultimate_layers_and_pooled_projection(tiny, offline):
    base = models.load_base_model(tiny["sdxl"])
    out = models.encode_text(base, ["the girl"])
    ids = [clip_tokenizer.tokenize(t, ["the girl"]) for t in base.tokenizers]
    assert ids[0][0, -1].item() == 520 and ids[1][0, -1].item() == 0  # pad ids: "<|endoftext|>" and "!"
    with torch.no_grad():
        first = base.text_encoders[0](ids[0], output_hidden_states=True)
        second = base.text_encoders[1](ids[1], output_hidden_states=True)
    assert torch.equal(out.hidden[..., :32], first.hidden_states[-2])
    assert torch.equal(out.hidden[..., 32:], second.hidden_states[-2])
    assert not torch.equal(out.hidden[..., :32], first.last_hidden_state)
    assert torch.equal(out.pooled, second.text_embeds)


def test_encode_text_override_encoders_carry_gradients(tiny, offline):
    import copy

    base = models.load_base_model(tiny["sd15"])
    trainable = copy.deepcopy(base.text_encoders[0]).requires_grad_(True)
    out = models.encode_text(base, ["the cat"], text_encoders=[trainable])
    out.hidden.sum().backward()
    assert trainable.embeddings.token_embedding.weight.grad is not None
    frozen = models.encode_text(base, ["the cat"])
    assert torch.allclose(frozen.hidden, out.hidden.detach())
    with pytest.raises(TrainingError, match="expected 1 text encoders"):
        models.encode_text(base, ["x"], text_encoders=[trainable, trainable])


def test_helpers_time_ids_latent_scale_and_fingerprint(tiny, tmp_path, offline):
    assert models.sdxl_time_ids((768, 1024), (0, 32), (704, 960)) == [768, 1024, 0, 32, 704, 960]
    sd15 = models.load_base_model(tiny["sd15_file"], tokenizer_dir=tiny_tokenizer_dir(tiny["sd15"]))
    assert models.latent_scale(sd15) == pytest.approx(0.18215)
    assert models.latent_scale(models.load_base_model(tiny["sdxl"])) == pytest.approx(0.13025)

    copy_path = tmp_path / "copy.safetensors"
    shutil.copyfile(tiny["sd15_file"], copy_path)
    assert models.model_fingerprint(copy_path) == sd15.fingerprint  # same bytes, same id
    changed = export_single_file(tiny["sd15"], tmp_path / "changed.safetensors", v_pred_key=True)
    assert models.model_fingerprint(changed) != sd15.fingerprint
    data = bytearray(copy_path.read_bytes())
    data[-1] ^= 0xFF  # flip a weight byte: header and size unchanged
    copy_path.write_bytes(bytes(data))
    assert models.model_fingerprint(copy_path) != sd15.fingerprint


def test_tokenizer_must_match_the_text_encoder(tiny, offline):
    with pytest.raises(TrainingError, match="tokens but the CLIP tokenizer found has 49408"):
        models.load_base_model(tiny["sd15_file"])  # open_clip's full vocab vs the tiny 521-token encoder


# ------------------------------------------------------------------------------------------ tokenizer


def test_clip_tokenizer_rebuilt_from_open_clip_bpe(monkeypatch):
    monkeypatch.delenv(clip_tokenizer.TOKENIZER_ENV, raising=False)
    assert clip_tokenizer.open_clip_bpe_path() is not None, "open_clip_torch must be installed (pip install --no-deps)"
    vocab, merges, origin = clip_tokenizer.load_clip_vocab()
    assert origin.endswith("bpe_simple_vocab_16e6.txt.gz")
    assert len(vocab) == clip_tokenizer.CLIP_VOCAB_SIZE and len(merges) == clip_tokenizer.CLIP_MERGES
    assert hashlib.sha256(json.dumps(vocab, sort_keys=True, ensure_ascii=False).encode()).hexdigest() == COMFY_VOCAB_SHA
    assert hashlib.sha256("\n".join(merges).encode()).hexdigest() == COMFY_MERGES_SHA

    first = clip_tokenizer.build_clip_tokenizer("sdxl", vocab, merges)
    second = clip_tokenizer.build_clip_tokenizer("sdxl", vocab, merges, second=True)
    assert len(first) == 49408
    assert first("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert first("1girl, solo, long hair, blue eyes").input_ids == [
        49406, 272, 1611, 267, 5797, 267, 1538, 2225, 267, 1746, 3095, 49407]
    assert first("Hatsune Miku, masterpiece").input_ids == [49406, 3447, 41096, 37703, 267, 12066, 49407]
    padded = [clip_tokenizer.tokenize(t, ["a cat"])[0].tolist() for t in (first, second)]
    assert padded[0][:4] == padded[1][:4] == [49406, 320, 2368, 49407]
    assert set(padded[0][4:]) == {49407} and set(padded[1][4:]) == {0} and len(padded[1]) == 77


def test_tokenizer_sources_explicit_and_env(tmp_path, monkeypatch, tiny):
    folder = tiny_tokenizer_dir(tiny["sd15"])
    monkeypatch.setenv(clip_tokenizer.TOKENIZER_ENV, str(folder))
    vocab, merges, origin = clip_tokenizer.load_clip_vocab()
    assert origin == str(folder) and len(vocab) == 521
    monkeypatch.setenv(clip_tokenizer.TOKENIZER_ENV, str(tmp_path))
    with pytest.raises(TrainingError, match="lacks vocab.json/merges.txt"):
        clip_tokenizer.load_clip_vocab()
    assert clip_tokenizer.load_clip_vocab(folder)[2] == str(folder)  # explicit beats the env var


def test_tokenizer_found_in_the_comfyui_install_around_the_pack(tmp_path, monkeypatch, tiny):
    monkeypatch.delenv(clip_tokenizer.TOKENIZER_ENV, raising=False)
    comfy = tmp_path / "ComfyUI"
    tokenizer = comfy / "comfy" / "sd1_tokenizer"
    shutil.copytree(tiny_tokenizer_dir(tiny["sd15"]), tokenizer)
    module = comfy / "custom_nodes" / "lora-studio" / "training" / "clip_tokenizer.py"
    monkeypatch.setattr(clip_tokenizer, "__file__", str(module))
    assert clip_tokenizer.comfyui_tokenizer_dir() == tokenizer
    assert clip_tokenizer.load_clip_vocab()[2] == str(tokenizer)
    monkeypatch.setattr(clip_tokenizer, "__file__", str(tmp_path / "elsewhere" / "training" / "clip_tokenizer.py"))
    assert clip_tokenizer.comfyui_tokenizer_dir() is None
    assert clip_tokenizer.load_clip_vocab()[2].endswith("bpe_simple_vocab_16e6.txt.gz")


# ------------------------------------------------------------------------------------------ full size, meta


def _full_ldm_shapes(arch: str) -> dict:
    from diffusers import AutoencoderKL

    meta = models.build_meta_modules(arch)
    with torch.device("meta"):
        vae = AutoencoderKL(**architecture.shipped_config(arch, "vae"))
    state = {**unet_to_ldm(meta["unet"].state_dict(), dict(meta["unet"].config)),
             **vae_to_ldm(vae.state_dict(), dict(vae.config))}
    te = {k: v for k, v in meta["text_encoders"][0].state_dict().items() if not k.endswith("position_ids")}
    if arch == "sd15":
        state.update({"cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v
                      for k, v in te.items()})
    else:
        state.update({"conditioner.embedders.0.transformer.text_model." + k.removeprefix("text_model."): v
                      for k, v in te.items()})
        state.update(open_clip_to_ldm(meta["text_encoders"][1].state_dict(), "conditioner.embedders.1.model."))
    return {key: tuple(value.shape) for key, value in state.items()}


@pytest.mark.parametrize(("arch", "unet_params", "te_params"), [
    ("sd15", 859_520_964, [123_060_480]),
    ("sdxl", 2_567_463_684, [123_060_480, 694_659_840]),
])
def test_full_size_configs_on_meta_device(arch, unet_params, te_params):
    meta = models.build_meta_modules(arch)
    assert sum(p.numel() for p in meta["unet"].parameters()) == unet_params
    assert [sum(p.numel() for p in t.parameters()) for t in meta["text_encoders"]] == te_params
    assert all(p.is_meta for p in meta["unet"].parameters())

    # A full-size checkpoint's shapes derive exactly the shipped configs (same code as for tiny models).
    shapes = _full_ldm_shapes(arch)
    assert architecture._arch_from_shapes(Path("full.safetensors"), shapes) == arch
    derived = architecture.derive_unet_config(arch, shapes)
    shipped = architecture.shipped_config(arch, "unet")
    assert {k: (list(v) if isinstance(v, tuple) else v) for k, v in derived.items()} == shipped
    assert architecture.derive_vae_config(arch, shapes) == architecture.shipped_config(arch, "vae")
    prefix = "cond_stage_model.transformer." if arch == "sd15" else "conditioner.embedders.0.transformer."
    te_config = architecture.shipped_config(arch, "text_encoder")
    assert architecture.derive_clip_config(te_config, shapes, prefix) == te_config
    if arch == "sdxl":
        te2_config = architecture.shipped_config(arch, "text_encoder_2")
        assert architecture.derive_open_clip_config(te2_config, shapes, "conditioner.embedders.1.model.") == te2_config


@pytest.mark.parametrize(("arch", "unet_params"), [("sd15", 859_520_964), ("sdxl", 2_567_463_684)])
def test_full_size_checkpoint_keys_load_strictly_on_meta(arch, unet_params, monkeypatch):
    """The whole single-file path (derivation, key conversion, strict loading) on a full-size LDM key set,
    with meta tensors standing in for the weights."""
    monkeypatch.delenv(clip_tokenizer.TOKENIZER_ENV, raising=False)
    shapes = _full_ldm_shapes(arch)

    def fetch(prefix):
        return {k: torch.empty(shape, device="meta") for k, shape in shapes.items() if k.startswith(prefix)}

    vocab, merges, _ = clip_tokenizer.load_clip_vocab()
    tokenizers = [clip_tokenizer.build_clip_tokenizer(arch, vocab, merges, second=i == 1) for i in range(1 + (arch == "sdxl"))]
    unet, vae, encoders = models.modules_from_ldm(arch, shapes, fetch, tokenizers, name="full")
    assert sum(p.numel() for p in unet.parameters()) == unet_params
    assert list(unet.config["block_out_channels"]) == architecture.shipped_config(arch, "unet")["block_out_channels"]
    assert [type(e).__name__ for e in encoders] == ["CLIPTextModel", "CLIPTextModelWithProjection"][: len(encoders)]
    assert encoders[-1].config.eos_token_id == 49407
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863

    missing = dict(shapes)
    missing.pop(next(k for k in shapes if k.endswith("attn2.to_k.weight")))
    with pytest.raises(TrainingError, match="cannot load the UNet: 1 missing weights"):
        models.modules_from_ldm(arch, missing, lambda p: {k: v for k, v in fetch(p).items() if k in missing},
                                tokenizers, name="broken")
