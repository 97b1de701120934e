"""GET /models lists exactly the base models training accepts: one resolver decides both. A symlink
into another configured model folder (ComfyUI's extra_model_paths setups) is listed and accepted; a
symlink leading out of every model folder is neither."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lora_studio.app import STUDIO_KEY
from lora_studio.core.errors import NotFound
from support.api import V1, assert_error, make_character, make_project, upload
from support.images import image_bytes


def diffusers_folder(folder: Path) -> Path:
    """The config files of a diffusers SD1.5 folder (enough to be listed and detected, not loaded)."""
    for sub, (name, config) in {"": ("model_index.json", {"_class_name": "StableDiffusionPipeline"}),
                                "unet": ("config.json", {"in_channels": 4, "cross_attention_dim": 768}),
                                "text_encoder": ("config.json", {"hidden_size": 768})}.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / name).write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # file-system logic: one database is enough
async def test_models_listed_are_the_models_training_accepts(client, settings, tmp_path, monkeypatch):
    studio = client.server.app[STUDIO_KEY].get()
    models, ckpts, elsewhere = settings.effective_models_dir, tmp_path / "checkpoints", tmp_path / "elsewhere"
    monkeypatch.setattr(studio.host, "checkpoint_dirs", lambda: [ckpts])
    (ckpts / "SD1.5").mkdir(parents=True)
    (ckpts / "SD1.5" / "anime.safetensors").write_bytes(b"x")
    diffusers_folder(ckpts / "shared-sd15")
    elsewhere.mkdir()
    (elsewhere / "stray.safetensors").write_bytes(b"x")
    diffusers_folder(elsewhere / "stray-sd15")
    models.mkdir(parents=True, exist_ok=True)
    inside = {"anime-link.safetensors": ckpts / "SD1.5" / "anime.safetensors", "linked-sd15": ckpts / "shared-sd15"}
    outside = {"out-link.safetensors": elsewhere / "stray.safetensors", "out-sd15": elsewhere / "stray-sd15"}
    for name, target in {**inside, **outside}.items():
        (models / name).symlink_to(target, target_is_directory=target.is_dir())
    (ckpts / "SD1.5" / "out.safetensors").symlink_to(elsewhere / "stray.safetensors")

    listing = await (await client.get(f"{V1}/models")).json()
    assert listing["base_models"] == sorted(["SD1.5/anime.safetensors", *inside])
    for name in inside:
        assert studio.base_models.resolve(name) == inside[name].resolve()
    for name in [*outside, "SD1.5/out.safetensors"]:
        with pytest.raises(NotFound):
            studio.base_models.resolve(name)

    # the same through the training request: found (then refused as unreadable) vs not found
    p = await make_project(client)
    c = await make_character(client, p["id"])
    created = (await upload(client, c["id"], *[(f"{i}.png", image_bytes(seed=70 + i), "image/png")
                                               for i in range(2)]))["created"]
    for image in created:
        await client.post(f"{V1}/images/{image['id']}/approve")
    url = f"{V1}/characters/{c['id']}/train"
    err = await assert_error(await client.post(url, json={"base_model": "anime-link.safetensors"}), 400)
    assert "cannot be" in err["message"]  # resolved: the fake checkpoint's content is what is refused
    for name in [*outside, "SD1.5/out.safetensors"]:
        await assert_error(await client.post(url, json={"base_model": name}), 404)
