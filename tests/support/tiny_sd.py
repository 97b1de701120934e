"""A tiny, random, SD1.5-shaped diffusers model folder built entirely in code (no downloads).

Same classes and module layout names as SD1.5 (CrossAttnDownBlock2D x3 + DownBlock2D, UpBlock2D +
CrossAttnUpBlock2D x3, 8x VAE downsampling, CLIP text encoder + byte-level BPE tokenizer), only tiny
widths, so every LoRA module name it produces also exists in a full-size SD1.5 UNet.
Use a 64 px resolution with it: 64 px -> 8x8 latents, the UNet's ``sample_size``.

Values that weights cannot carry follow the real architectures (so a single-file export of these models
loads through the same code as a full-size checkpoint): GroupNorm with 32 groups, 8 attention heads in the
SD1.5 UNet, 64 channels per head in the SDXL UNet and max(1, width // 64) heads in the text encoders.
``build_tiny_sdxl`` makes the SDXL-shaped sibling (3 levels, no attention in the first, two text encoders).
"""

from __future__ import annotations

import json
from pathlib import Path

TINY_RESOLUTION = 64
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
_MERGES = (("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>"), ("g", "i"), ("gi", "r"), ("gir", "l</w>"))


def byte_unicode_table() -> dict[int, str]:
    """Byte-level BPE alphabet: every byte maps to one printable unicode character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def tiny_vocab() -> tuple[dict[str, int], list[str]]:
    """Vocab (every byte alone and as a word end, a few merges, the two CLIP special tokens) and merges."""
    alphabet = list(byte_unicode_table().values())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(pair) for pair in _MERGES] + list(SPECIAL_TOKENS)
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    return vocab, [" ".join(pair) for pair in _MERGES]


def _build_tokenizer(folder: Path):
    """Write vocab.json + merges.txt (the files SD1.5 ships), load them, and save the full tokenizer."""
    from transformers import CLIPTokenizer

    vocab, merges = tiny_vocab()
    target = folder / "tokenizer"
    target.mkdir(parents=True, exist_ok=True)
    (target / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (target / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(str(target), model_max_length=77, local_files_only=True)
    tokenizer.save_pretrained(target)
    return tokenizer


def _build_text_encoder(vocab_size: int, tokenizer, *, hidden: int = 32, layers: int = 2, act: str = "quick_gelu",
                        projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden + 5,
        projection_dim=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=77,
        hidden_act=act,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def tiny_unet_config() -> dict:
    return {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "block_out_channels": (32, 32, 64, 64),
        "layers_per_block": 1,
        "norm_num_groups": 32,
        "cross_attention_dim": 32,
        "attention_head_dim": 8,
    }


def tiny_sdxl_unet_config() -> dict:
    """SDXL base's layout (text_time added conditioning, linear projections, deeper transformers in the
    last level) at tiny widths: context = CLIP-L tiny (32) + bigG tiny (64); pooled 64 + 6 x 8 time ids."""
    return {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "block_out_channels": (32, 64, 128),
        "layers_per_block": 2,
        "transformer_layers_per_block": (1, 1, 2),
        "attention_head_dim": (1, 1, 2),
        "norm_num_groups": 32,
        "cross_attention_dim": 96,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 64 + 6 * 8,
    }


def _build_vae(scaling_factor: float = 0.18215):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=TINY_RESOLUTION,
        scaling_factor=scaling_factor,
    )


def _scheduler(prediction_type: str):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


def _model_index(diffusers_version: str) -> dict:
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers_version,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def build_tiny_sd15(folder: Path, *, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Save a tiny random SD1.5-shaped diffusers folder at ``folder`` (created if needed) and return it."""
    import diffusers
    import torch
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = _build_tokenizer(folder)
    _build_text_encoder(len(tokenizer), tokenizer).save_pretrained(folder / "text_encoder")
    _build_vae().save_pretrained(folder / "vae")
    UNet2DConditionModel(**tiny_unet_config()).save_pretrained(folder / "unet")
    _scheduler(prediction_type).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(
        json.dumps(_model_index(diffusers.__version__), indent=2), encoding="utf-8"
    )
    return folder


def build_tiny_sdxl(folder: Path, *, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Save a tiny random SDXL-shaped diffusers folder (CLIPTextModel + CLIPTextModelWithProjection, the second
    tokenizer padding with "!" = id 0 as SDXL's does) at ``folder`` and return it."""
    import diffusers
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = _build_tokenizer(folder)
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), pad_token="!", local_files_only=True)
    tokenizer_2.save_pretrained(folder / "tokenizer_2")
    _build_text_encoder(len(tokenizer), tokenizer).save_pretrained(folder / "text_encoder")
    _build_text_encoder(len(tokenizer), tokenizer, hidden=64, layers=3, act="gelu", projection=True).save_pretrained(
        folder / "text_encoder_2"
    )
    _build_vae(0.13025).save_pretrained(folder / "vae")
    UNet2DConditionModel(**tiny_sdxl_unet_config()).save_pretrained(folder / "unet")
    _scheduler(prediction_type).save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": diffusers.__version__,
        "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def tiny_tokenizer_dir(folder: Path) -> Path:
    """The vocab.json + merges.txt folder of a tiny model (single files carry no tokenizer)."""
    return Path(folder) / "tokenizer"


def write_sample_images(folder: Path, count: int = 3, size: tuple[int, int] = (80, 64)) -> list[Path]:
    """Deterministic coloured PNG/JPEG images (non-square, one with alpha) for training tests."""
    from PIL import Image, ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        mode = "RGBA" if index % 3 == 2 else "RGB"
        image = Image.new(mode, size, (40 * index % 256, 90, 200 - 30 * index % 200, 255)[: len(mode)])
        draw = ImageDraw.Draw(image)
        draw.ellipse(
            (8 + 4 * index, 8, size[0] - 8, size[1] - 8 - 2 * index), fill=(250, 220 - 50 * index, 30, 255)[: len(mode)]
        )
        draw.rectangle((0, 0, 12 + 6 * index, 12), fill=(10, 10, 10, 128)[: len(mode)])
        path = folder / f"sample_{index}.{'png' if mode == 'RGBA' or index % 2 == 0 else 'jpg'}"
        image.save(path)
        paths.append(path)
    return paths
