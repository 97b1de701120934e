"""Training requests: the gates (approved count, base model, installed extra) and cancel of a
running job (the worker subprocess stops and leaves no LoRA behind)."""

from __future__ import annotations

import asyncio

import pytest
from support.api import V1, assert_error, make_character, make_project, upload
from support.images import image_bytes


async def approved_character(client, count=2):
    p = await make_project(client)
    c = await make_character(client, p["id"], trigger_word="aikotnk")
    files = [(f"{i}.png", image_bytes(size=(72, 64), seed=60 + i), "image/png") for i in range(count)]
    for img in (await upload(client, c["id"], *files))["created"]:
        await client.post(f"{V1}/images/{img['id']}/approve")
    return c


async def test_training_gates(client, settings, monkeypatch):
    c = await approved_character(client, count=1)
    models = settings.effective_models_dir
    (models / "real-sd15" / "unet").mkdir(parents=True)
    (models / "real-sd15" / "unet" / "config.json").write_text("{}")
    (models / "single.safetensors").write_bytes(b"x")
    url = f"{V1}/characters/{c['id']}/train"
    err = await assert_error(await client.post(url, json={"base_model": "real-sd15"}), 400)
    assert "1 approved image" in err["message"] and "at least 2" in err["message"]

    p2 = await make_project(client, "Two")
    c2 = await make_character(client, p2["id"])
    files = [(f"{i}.png", image_bytes(seed=80 + i), "image/png") for i in range(2)]
    for img in (await upload(client, c2["id"], *files))["created"]:
        await client.post(f"{V1}/images/{img['id']}/approve")
    url = f"{V1}/characters/{c2['id']}/train"
    assert (await (await client.get(f"{V1}/models")).json())["base_models"] == ["real-sd15"]
    await assert_error(await client.post(url, json={"base_model": "missing"}), 404)
    err = await assert_error(await client.post(url, json={"base_model": "single.safetensors"}), 400)
    assert "single-file" in err["message"]
    await assert_error(await client.post(url, json={"base_model": "../real-sd15"}), 400)
    await assert_error(await client.post(url, json={"base_model": "real-sd15", "rank": 0}), 400)
    await assert_error(await client.post(url, json={"base_model": "real-sd15", "learning_rate": 0}), 400)
    await assert_error(await client.post(f"{V1}/characters/999/train", json={"base_model": "real-sd15"}), 404)

    import lora_studio.training.service as service

    monkeypatch.setattr(service, "missing_train_deps", lambda: ["torch", "peft"])
    err = await assert_error(await client.post(url, json={"base_model": "real-sd15"}), 503, "unavailable")
    assert "torch" in err["message"] and "train" in err["message"]


@pytest.mark.training
async def test_cancel_stops_the_worker_and_leaves_no_lora(client, settings):
    pytest.importorskip("diffusers")
    from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15

    build_tiny_sd15(settings.effective_models_dir / "tiny")
    c = await approved_character(client)
    r = await client.post(f"{V1}/characters/{c['id']}/train", json={
        "base_model": "tiny", "steps": 5000, "rank": 4, "alpha": 2.0, "resolution": TINY_RESOLUTION})
    assert r.status == 202, await r.text()
    job_id = (await r.json())["id"]
    for _ in range(600):
        job = await (await client.get(f"{V1}/jobs/{job_id}")).json()
        if job["progress"] > 0:
            break
        assert job["status"] in ("queued", "running"), job
        await asyncio.sleep(0.1)
    assert job["status"] == "running" and job["message"].startswith("step ")
    await client.post(f"{V1}/jobs/{job_id}/cancel")
    for _ in range(600):
        job = await (await client.get(f"{V1}/jobs/{job_id}")).json()
        if job["status"] != "running":
            break
        await asyncio.sleep(0.1)
    assert job["status"] == "cancelled", job
    loras = settings.effective_loras_dir
    assert not loras.exists() or list(loras.iterdir()) == []
    assert (await (await client.get(f"{V1}/characters/{c['id']}/loras")).json())["items"] == []
