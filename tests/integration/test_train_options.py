"""The training doors agree (issue 10): the same request through the HTTP API, the Train LoRA node and the
`train` command makes the same worker config (the config.json the job writes for the worker), for SD1.5 and
SDXL; GET /training/options says the defaults a request without options gets; `train --config` gets them too.

The base models are config-only stand-ins without a vae/ folder: the studio detects them, each job writes its
worker config, then the worker refuses the model when it checks its config (before importing torch), which is
all these tests need."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from lora_studio.app import STUDIO_KEY
from support.api import V1, make_character, make_project, upload
from support.images import image_bytes
from support.train_cfg import fake_model_folder

pytest.importorskip("diffusers")  # training's dependencies: without them the studio refuses every training (503)

# one request per architecture, in the API's words; alpha is derived in the first, given by kohya's name in the second
REQUESTS = {
    "sd15": {"steps": 20, "rank": 8, "learning_rate": 2e-4, "train_text_encoder": True, "sample_every": 5,
             "compile": True, "lr_scheduler": "constant", "device": "cpu"},
    "sdxl": {"steps": 30, "rank": 4, "network_alpha": 3.0, "learning_rate": 1e-4, "resolution": 768,
             "min_snr_gamma": 0.0, "flip": True, "checkpoint_every": 10, "device": "cpu"},
}
NODE_NAMES = {"network_alpha": "network_alpha", "alpha": "network_alpha", "compile": "torch_compile"}


async def approved_character(client) -> dict:
    p = await make_project(client, "Moon Academy")
    c = await make_character(client, p["id"], trigger_word="aikotnk", design_prompt="1girl, silver hair")
    files = [(f"{i}.png", image_bytes(size=(72, 64), seed=80 + i), "image/png") for i in range(2)]
    for img in (await upload(client, c["id"], *files))["created"]:
        await client.post(f"{V1}/images/{img['id']}/approve")
    return c


def stand_in_model(settings, arch: str) -> str:
    folder = fake_model_folder(settings.effective_models_dir / f"base-{arch}", arch)
    (folder / "vae").rmdir()  # the worker stops at its config check: no torch, no weights
    return folder.name


def worker_config(settings, job_id: int) -> dict:
    """The job's config.json, its job-specific folders written as <job>."""
    folder = settings.data_dir / "jobs" / str(job_id)
    text = (folder / "config.json").read_text(encoding="utf-8")
    return json.loads(text.replace(json.dumps(str(folder))[1:-1], "<job>"))


async def wait_done(client, job_id: int) -> dict:
    for _ in range(1200):
        job = await (await client.get(f"{V1}/jobs/{job_id}")).json()
        if job["status"] not in ("queued", "running"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError(f"job {job_id} never ended")


def latest_job_id(studio) -> int:
    return studio.jobs.list(kind="train").items[0].id


def through_the_node(studio, character: dict, base_model: str, request: dict) -> int:
    """The node as ComfyUI runs it: every widget's value (its default unless the request sets it)."""
    from lora_studio.core.errors import StudioError
    from lora_studio.nodes import bind_studio
    from lora_studio.nodes.training import TrainLoRA

    class Ref:
        def get(self):
            return studio

    bind_studio(Ref())
    try:
        inputs = TrainLoRA.INPUT_TYPES()
        values = {name: spec[1]["default"] for name, spec in {**inputs["required"], **inputs["optional"]}.items()
                  if len(spec) > 1 and "default" in spec[1]}
        values.update({NODE_NAMES.get(k, k): v for k, v in request.items()})
        from lora_studio.nodes.labels import character_labels

        label = next(label for label, cid in character_labels(studio).items() if cid == character["id"])
        args = [values.pop(k) for k in ("steps", "rank", "learning_rate")]
        with pytest.raises(StudioError, match="missing vae/"):  # the worker refuses the stand-in model
            TrainLoRA().run(label, base_model, *args, **values)
        return latest_job_id(studio)
    finally:
        bind_studio(None)


def through_the_cli(settings, character: dict, studio, base_model: str, request: dict) -> int:
    flags = []
    for name, value in request.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    project = character["project_slug"]
    command = [sys.executable, "-m", "lora_studio", "train", "--character", f"{project}/{character['slug']}",
               "--base-model", base_model, *flags, "--data", str(settings.data_dir),
               "--models-dir", str(settings.effective_models_dir), "--loras-dir", str(settings.effective_loras_dir)]
    if settings.database_url:
        command += ["--database-url", settings.database_url.get()]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "LORA_STUDIO_MIN_APPROVED_IMAGES": "2"})
    assert run.returncode == 1 and "missing vae/" in run.stderr, run.stderr[-3000:]
    return latest_job_id(studio)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
async def test_the_api_the_node_and_the_cli_make_the_same_worker_config(client, settings, arch):
    stand_in_model(settings, arch)
    studio = client.server.app[STUDIO_KEY].get()
    character = await approved_character(client)
    request = REQUESTS[arch]

    r = await client.post(f"{V1}/characters/{character['id']}/train", json={"base_model": f"base-{arch}", **request})
    assert r.status == 202, await r.text()
    api_job = await wait_done(client, (await r.json())["id"])
    assert api_job["status"] == "failed" and "missing vae/" in api_job["error"]
    node_job = await asyncio.to_thread(through_the_node, studio, character, f"base-{arch}", request)
    cli_job = await asyncio.to_thread(through_the_cli, settings, character, studio, f"base-{arch}", request)

    api, node, cli = (worker_config(settings, job) for job in (api_job["id"], node_job, cli_job))
    assert api == node == cli
    assert len({api_job["id"], node_job, cli_job}) == 3
    # what the request said, and the defaults of the model's architecture for the rest
    assert api["resolution"] == (512 if arch == "sd15" else 768) and api["sample_size"] == api["resolution"]
    assert api["alpha"] == (4.0 if arch == "sd15" else 3.0)
    assert api["lr_scheduler"] == ("constant" if arch == "sd15" else "cosine")
    assert api["checkpoint_dir"] == "<job>/checkpoints" and api["sample_dir"] == "<job>/samples"


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
async def test_the_options_route_says_what_a_request_without_options_gets(client, settings, arch):
    stand_in_model(settings, arch)
    character = await approved_character(client)
    described = await (await client.get(f"{V1}/training/options")).json()
    defaults = {o["name"]: o["default"][arch] for o in described["options"]}
    r = await client.post(f"{V1}/characters/{character['id']}/train", json={"base_model": f"base-{arch}"})
    assert r.status == 202, await r.text()
    job = await r.json()
    assert {name: job["payload"][name] for name in defaults} == defaults
    await wait_done(client, job["id"])
    config = worker_config(settings, job["id"])
    assert {name: config[name] for name in defaults} == defaults
    assert defaults["resolution"] == (512 if arch == "sd15" else 1024)
    assert (defaults["alpha"], defaults["lr_scheduler"], defaults["min_snr_gamma"]) == (8.0, "cosine", 5.0)
    assert (defaults["checkpoint_every"], defaults["sample_every"]) == (250, 250)


def test_train_config_gets_the_same_defaults(tmp_path):
    """`train --config`: a config file without options trains with the API's defaults for its architecture
    (what the worker parses from it, read through the engine's own loader)."""
    from lora_studio.training import config as cfg
    from PIL import Image

    image = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(image)
    for arch in ("sd15", "sdxl"):
        model = fake_model_folder(tmp_path / f"model-{arch}", arch)
        path = tmp_path / arch / "job.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"base_model": str(model), "items": [{"image": str(image)}],
                                    "output_path": str(tmp_path / f"{arch}.safetensors"), "trigger_word": "aiko"}))
        loaded = cfg.load_config(path)
        assert {name: getattr(loaded, name) for name in cfg.USER_OPTIONS} == cfg.defaults(arch)
        assert loaded.checkpoint_dir == path.parent / "checkpoints" and loaded.sample_dir == path.parent / "samples"
