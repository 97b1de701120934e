"""A tiny, random CLIP vision model folder built in code (no downloads), for the embedding classifier."""

from __future__ import annotations

from pathlib import Path

TINY_CLIP_SIZE = 32


def build_tiny_clip_vision(folder: Path | str, seed: int = 0) -> Path:
    """Save a seeded random CLIPVisionModelWithProjection (32 px, 8 px patches, 32 wide, 2 layers,
    2 heads, 16-d projection) and its CLIPImageProcessor into `folder`; returns the folder."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = CLIPVisionConfig(
        image_size=TINY_CLIP_SIZE,
        patch_size=8,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(config).eval()
    model.save_pretrained(folder)
    processor = CLIPImageProcessor(
        size={"shortest_edge": TINY_CLIP_SIZE},
        crop_size={"height": TINY_CLIP_SIZE, "width": TINY_CLIP_SIZE},
    )
    processor.save_pretrained(folder)
    return folder
