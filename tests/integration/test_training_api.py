"""Training through the HTTP API: the gates (approved count, base model, options, ComfyUI busy), a
real tiny run (progress pushed as events and stored on the job, samples served, the LoRA recorded
and made current, ComfyUI asked to free its models first), cancel + resume from the last
checkpoint, one training at a time, and a hard-killed worker leaving a failed job with its log."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest
from lora_studio.app import STUDIO_KEY
from lora_studio.training.request import TrainRequest
from support.api import V1, assert_error, finished, make_character, make_project, upload
from support.comfy_schema import load_object_info
from support.fake_comfyui import create_fake_comfyui, state_of
from support.images import image_bytes

OBJECT_INFO = load_object_info(Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "object_info.json")


async def approved_character(client, count=2, name="Moon Academy"):
    p = await make_project(client, name)
    c = await make_character(client, p["id"], trigger_word="aikotnk", design_prompt="1girl, silver hair")
    files = [(f"{i}.png", image_bytes(size=(72, 64), seed=60 + i + 7 * len(name)), "image/png") for i in range(count)]
    for img in (await upload(client, c["id"], *files))["created"]:
        await client.post(f"{V1}/images/{img['id']}/approve")
    return c


def fake_sd15_folder(folder: Path) -> Path:
    """The config files a diffusers SD1.5 folder has (enough to be listed and detected, not loaded)."""
    for sub, config in {"": ("model_index.json", {"_class_name": "StableDiffusionPipeline"}),
                        "unet": ("config.json", {"in_channels": 4, "cross_attention_dim": 768}),
                        "text_encoder": ("config.json", {"hidden_size": 768, "hidden_act": "quick_gelu"})}.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        (folder / sub / config[0]).write_text(json.dumps(config[1]))
    return folder


async def wait_job(client, job_id, until, timeout=240.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        job = await (await client.get(f"{V1}/jobs/{job_id}")).json()
        if until(job):
            return job
        assert loop.time() < deadline, f"job {job_id} never got there: {job}"
        await asyncio.sleep(0.1)


async def test_training_gates_and_defaults(client, settings, monkeypatch):
    c = await approved_character(client, count=1)
    models = settings.effective_models_dir
    fake_sd15_folder(models / "real-sd15")
    (models / "not-a-model").mkdir()
    (models / "single.safetensors").write_bytes(b"x")
    (models / "old.ckpt").write_bytes(b"x")
    url = f"{V1}/characters/{c['id']}/train"
    err = await assert_error(await client.post(url, json={"base_model": "real-sd15"}), 400)
    assert "1 approved image" in err["message"] and "at least 2" in err["message"]

    c2 = await approved_character(client, name="Two")
    url = f"{V1}/characters/{c2['id']}/train"
    listing = await (await client.get(f"{V1}/models")).json()
    assert listing["base_models"] == ["real-sd15", "single.safetensors"]
    assert listing["min_approved_images"] == 2  # the gate, so the panel can say it before a run is refused
    # what the panel says up front: nothing missing here (the test environment has the train extra), and where models go
    assert listing["missing_dependencies"] == []
    assert str(settings.effective_models_dir) in listing["model_dirs"]
    assert {m["name"]: m["source"] for m in listing["items"]} == {"real-sd15": "diffusers",
                                                                   "single.safetensors": "single_file"}
    await assert_error(await client.post(url, json={"base_model": "missing"}), 404)
    err = await assert_error(await client.post(url, json={"base_model": "single.safetensors"}), 400)
    assert "single.safetensors" in err["message"] and "cannot" in err["message"]  # not a readable checkpoint
    await assert_error(await client.post(url, json={"base_model": "old.ckpt"}), 400)
    await assert_error(await client.post(url, json={"base_model": "not-a-model"}), 400)
    for bad in ("../real-sd15", "/etc/passwd", "real-sd15/../real-sd15", "", "a\\..\\b"):
        await assert_error(await client.post(url, json={"base_model": bad}), 400)
    for body in ({"rank": 0}, {"learning_rate": 0}, {"resolution": 500}, {"lr_scheduler": "linear"},
                 {"min_snr_gamma": -1}, {"device": "tpu"}, {"sample_size": 100}, {"steps": "many"}):
        await assert_error(await client.post(url, json={"base_model": "real-sd15", **body}), 400)
    await assert_error(await client.post(f"{V1}/characters/999/train", json={"base_model": "real-sd15"}), 404)

    # a single file inside ComfyUI's checkpoints folder is listed with its subfolder, like ComfyUI does
    studio = client.server.app[STUDIO_KEY].get()
    ckpts = settings.data_dir / "checkpoints"
    (ckpts / "SD1.5").mkdir(parents=True)
    (ckpts / "SD1.5" / "anime.safetensors").write_bytes(b"x")
    monkeypatch.setattr(studio.host, "checkpoint_dirs", lambda: [ckpts])
    assert "SD1.5/anime.safetensors" in (await (await client.get(f"{V1}/models")).json())["base_models"]
    err = await assert_error(await client.post(url, json={"base_model": "SD1.5/anime.safetensors"}), 400)
    assert "anime.safetensors" in err["message"]

    # defaults for a character LoRA, resolved for the detected architecture
    r = await client.post(url, json={"base_model": "real-sd15", "device": "cpu"})
    assert r.status == 202, await r.text()
    job = await r.json()
    await client.post(f"{V1}/jobs/{job['id']}/cancel")
    p = job["payload"]
    assert (p["arch"], p["rank"], p["alpha"], p["steps"], p["resolution"]) == ("sd15", 16, 8.0, 1500, 512)
    assert (p["lr_scheduler"], p["min_snr_gamma"], p["warmup_steps"], p["bucketing"]) == ("cosine", 5.0, 75, True)
    await finished(client, job)
    runs = await (await client.get(f"{V1}/jobs?kind=train&character_id={c2['id']}")).json()
    assert [j["id"] for j in runs["items"]] == [job["id"]]
    assert (await (await client.get(f"{V1}/jobs?kind=train&character_id={c['id']}")).json())["items"] == []
    await assert_error(await client.get(f"{V1}/jobs?character_id=x"), 400)

    import lora_studio.training.service as service

    monkeypatch.setattr(service, "missing_train_deps", lambda: ["torch", "peft"])
    err = await assert_error(await client.post(url, json={"base_model": "real-sd15"}), 503, "unavailable")
    assert "torch" in err["message"] and "train" in err["message"]


@pytest.fixture
async def comfy(aiohttp_server, settings):
    return await aiohttp_server(create_fake_comfyui(OBJECT_INFO, settings.comfyui_output_dir))


@pytest.fixture
async def comfy_client(make_client, make_settings, comfy):
    """The studio as inside ComfyUI: training shares ComfyUI's GPU (the stand-in ComfyUI answers)."""
    client = await make_client(make_settings(comfyui_url=str(comfy.make_url("/")).rstrip("/")))
    client.server.app[STUDIO_KEY].get().host.comfyui_shares_device = True
    return client


async def test_busy_comfyui_refuses_a_training_except_its_own_prompt(comfy_client, comfy, settings):
    client = comfy_client
    c = await approved_character(client)
    fake_sd15_folder(settings.effective_models_dir / "real-sd15")
    state = state_of(comfy.app)
    state.pending.append([7, "someone-elses-prompt", {}, {}, []])
    url = f"{V1}/characters/{c['id']}/train"
    err = await assert_error(await client.post(url, json={"base_model": "real-sd15"}), 409, "conflict")
    assert "ComfyUI is busy" in err["message"] and "1 other prompt" in err["message"]
    # on the CPU ComfyUI's GPU is not needed: no check
    r = await client.post(url, json={"base_model": "real-sd15", "device": "cpu", "steps": 1})
    assert r.status == 202, await r.text()
    await client.post(f"{V1}/jobs/{(await r.json())['id']}/cancel")
    await finished(client, await r.json())
    # the Train LoRA node's own prompt is running the node: it does not count, nor do the prompts queued behind it
    state.pending.clear()
    state.running = [6, "the-nodes-prompt", {}, {}, []]
    state.pending.append([7, "queued-behind", {}, {}, []])
    studio = client.server.app[STUDIO_KEY].get()
    job = await asyncio.get_running_loop().run_in_executor(None, lambda: studio.training.start(
        c["id"], TrainRequest("real-sd15"), comfy_prompt_id="the-nodes-prompt"))
    assert job.status == "queued" and job.payload["comfy_prompt_id"] == "the-nodes-prompt"
    await client.post(f"{V1}/jobs/{job.id}/cancel")
    await finished(client, job.id)
    # from the panel or the API, a prompt running or queued in ComfyUI would run alongside the training
    err = await assert_error(await client.post(url, json={"base_model": "real-sd15"}), 409, "conflict")
    assert "2 other prompt" in err["message"]
    state.running = None


@pytest.mark.training
async def test_tiny_run_reports_progress_samples_and_records_the_lora(comfy_client, comfy, settings):
    pytest.importorskip("diffusers")
    from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15

    client = comfy_client
    build_tiny_sd15(settings.effective_models_dir / "tiny")
    c = await approved_character(client)
    ws = await client.ws_connect(f"{V1}/events")
    r = await client.post(f"{V1}/characters/{c['id']}/train", json={
        "base_model": "tiny", "steps": 8, "rank": 4, "alpha": 2.0, "resolution": TINY_RESOLUTION,
        "sample_every": 4, "sample_size": TINY_RESOLUTION, "sample_steps": 2, "checkpoint_every": 4})
    assert r.status == 202, await r.text()
    job_id = (await r.json())["id"]
    seen = []
    while not seen or seen[-1]["status"] in ("queued", "running"):
        event = json.loads((await asyncio.wait_for(ws.receive(), 240)).data)
        if event["type"] == "lora_studio.job" and event["data"]["id"] == job_id:
            seen.append(event["data"])
    await ws.close()
    job = seen[-1]
    assert job["status"] == "succeeded", job
    # progress pushed live: step messages with loss, and the structured record on the job
    steps = [e["result"]["progress"]["step"] for e in seen if e["status"] == "running" and e["result"]]
    assert steps == sorted(steps) and 0 < max(steps) <= 8
    assert any(e["message"].startswith("step ") and "loss" in e["message"] and "it/s" in e["message"] for e in seen)
    record = job["result"]["progress"]
    assert record["step"] == record["total_steps"] == 8 and isinstance(record["loss"], float)
    assert job["result"]["arch"] == "sd15" and job["result"]["checkpoint"]["step"] in (4, 8)
    # ComfyUI unloaded its models before the training took the GPU
    assert state_of(comfy.app).free_calls == [{"unload_models": True, "free_memory": True}]
    # samples: listed on the job (the character's SSOT prompt), served from the job's folder only
    samples = (await (await client.get(f"{V1}/jobs/{job_id}/samples")).json())["items"]
    assert [s["step"] for s in samples] == [4, 8]
    assert "aikotnk" in samples[0]["prompt"] and "silver hair" in samples[0]["prompt"]
    image = await client.get(V1 + samples[-1]["url"])
    assert image.status == 200 and (await image.read()).startswith(b"\x89PNG")
    for bad in ("..%2Fconfig.json", "config.json", "..%2F..%2F1%2Fworker.log", "x.png"):
        assert (await client.get(f"{V1}/jobs/{job_id}/samples/{bad}")).status in (400, 404)
    await assert_error(await client.get(f"{V1}/jobs/999/samples"), 404)
    # the LoRA: recorded, current for the character, in the loras folder under a versioned name
    loras = (await (await client.get(f"{V1}/characters/{c['id']}/loras")).json())["items"]
    assert [lora["file_name"] for lora in loras] == [job["result"]["file_name"]] == ["moon-academy-aiko-tanaka-v1.safetensors"]
    assert (loras[0]["rank"], loras[0]["alpha"], loras[0]["steps"]) == (4, 2.0, 8)
    assert (settings.effective_loras_dir / loras[0]["file_name"]).is_file()
    prompt = await (await client.get(f"{V1}/characters/{c['id']}/prompt")).json()
    assert prompt["lora_name"] == loras[0]["file_name"]
    # a finished run cannot be resumed
    await assert_error(await client.post(f"{V1}/train/{job_id}/resume"), 409)


@pytest.mark.training
async def test_cancel_then_resume_continues_from_the_last_checkpoint(client, settings):
    pytest.importorskip("diffusers")
    from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15

    build_tiny_sd15(settings.effective_models_dir / "tiny")
    c = await approved_character(client)
    r = await client.post(f"{V1}/characters/{c['id']}/train", json={
        "base_model": "tiny", "steps": 40, "rank": 4, "alpha": 2.0, "resolution": TINY_RESOLUTION,
        "checkpoint_every": 2, "sample_every": 0})
    assert r.status == 202, await r.text()
    job_id = (await r.json())["id"]
    await assert_error(await client.post(f"{V1}/train/{job_id}/resume"), 409)  # still queued or running
    job = await wait_job(client, job_id, lambda j: (j["result"] or {}).get("checkpoint") or j["status"] not in (
        "queued", "running"))
    assert job["status"] == "running" and job["message"].startswith("step "), job
    await client.post(f"{V1}/jobs/{job_id}/cancel")
    job = await finished(client, job_id, timeout=120)
    assert job["status"] == "cancelled", job
    loras = settings.effective_loras_dir
    assert not loras.exists() or list(loras.iterdir()) == []
    assert (await (await client.get(f"{V1}/characters/{c['id']}/loras")).json())["items"] == []

    r = await client.post(f"{V1}/train/{job_id}/resume")
    assert r.status == 202, await r.text()
    resumed = await r.json()
    assert resumed["id"] != job_id and resumed["payload"]["resumed_from_job"] == job_id
    assert Path(resumed["payload"]["resume_from"]).is_relative_to(settings.data_dir / "jobs" / str(job_id))
    done = await finished(client, resumed, timeout=240)
    assert done["status"] == "succeeded", done
    assert done["result"]["resume_step"] >= 2 and done["result"]["progress"]["step"] == 40
    assert done["result"]["resumed_from_job"] == job_id
    assert [lora["job_id"] for lora in (await (await client.get(f"{V1}/characters/{c['id']}/loras")).json())["items"]] == [
        resumed["id"]]
    await assert_error(await client.post(f"{V1}/train/999/resume"), 404)


@pytest.mark.training
async def test_one_training_at_a_time_and_a_killed_worker_fails_with_its_log(client, settings):
    pytest.importorskip("diffusers")
    from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15

    build_tiny_sd15(settings.effective_models_dir / "tiny")
    c = await approved_character(client)
    body = {"base_model": "tiny", "steps": 5000, "rank": 4, "alpha": 2.0, "resolution": TINY_RESOLUTION,
            "sample_every": 0, "checkpoint_every": 0}
    first = await (await client.post(f"{V1}/characters/{c['id']}/train", json=body)).json()
    second = await (await client.post(f"{V1}/characters/{c['id']}/train", json=body)).json()
    job = await wait_job(client, first["id"], lambda j: j["progress"] > 0 or j["status"] not in ("queued", "running"))
    assert job["status"] == "running", job
    other = await (await client.get(f"{V1}/jobs/{second['id']}")).json()
    assert other["status"] == "queued"  # the job runner has a free thread, but one training runs at a time
    os.kill(job["result"]["pid"], signal.SIGKILL)
    job = await finished(client, first["id"], timeout=60)
    assert job["status"] == "failed"
    assert "exited with code -9" in job["error"] and job["error"].split("worker log (last lines) ---")[1].strip()
    assert not settings.effective_loras_dir.exists() or list(settings.effective_loras_dir.iterdir()) == []
    # the queued one starts once the slot is free
    other = await wait_job(client, second["id"], lambda j: j["status"] != "queued", timeout=60)
    assert other["status"] == "running"
    await client.post(f"{V1}/jobs/{second['id']}/cancel")
    assert (await finished(client, second["id"], timeout=120))["status"] == "cancelled"
