"""The whole loop through the HTTP API of a real standalone server (a subprocess started as a
user starts it), on SQLite and PostgreSQL: upload → review with feedback → train a real LoRA
(diffusers + peft on a tiny random SD1.5-shaped model, a few CPU steps, in the worker subprocess)
→ generate on (a stand-in for) ComfyUI with that LoRA → the output in the gallery."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from support.api import V1, finished, form
from support.comfy_schema import load_object_info, validate_graph
from support.fake_comfyui import create_fake_comfyui, state_of
from support.images import image_bytes
from support.tiny_sd import TINY_RESOLUTION, build_tiny_sd15

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"
OBJECT_INFO = load_object_info(FIXTURES / "object_info.json")
COMFY_LORA_KEYS = set((FIXTURES / "lora_keys_sd15.txt").read_text().split())

pytestmark = pytest.mark.training


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def poll(session, url, done, timeout=240.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        body = await (await session.get(url)).json()
        if done(body):
            return body
        assert loop.time() < deadline, body
        await asyncio.sleep(0.25)


@pytest.fixture
async def studio_server(tmp_path, database_url, aiohttp_server):
    pytest.importorskip("diffusers")
    out = tmp_path / "comfy_output"
    comfy = await aiohttp_server(create_fake_comfyui(OBJECT_INFO, out))
    build_tiny_sd15(tmp_path / "models" / "tiny-sd15")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORA_STUDIO_", "VAULT_"))}
    env["LORA_STUDIO_MIN_APPROVED_IMAGES"] = "2"
    if database_url:
        env["LORA_STUDIO_DATABASE_URL"] = database_url
    cmd = [sys.executable, "-m", "lora_studio", "serve", "--port", str(port), "--data", str(tmp_path / "data"),
           "--comfyui-url", str(comfy.make_url("")).rstrip("/"), "--comfyui-output", str(out),
           "--models-dir", str(tmp_path / "models"), "--loras-dir", str(tmp_path / "loras")]
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(base) as session:
            for _ in range(200):
                try:
                    if (await session.get(f"{V1}/health")).status == 200:
                        break
                except aiohttp.ClientConnectionError:
                    pass
                assert proc.poll() is None, (tmp_path / "server.log").read_text()
                await asyncio.sleep(0.1)
            yield session, comfy, tmp_path
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


async def test_whole_loop(studio_server):
    s, comfy, tmp = studio_server
    project = await (await s.post(f"{V1}/projects", json={"name": "Moon Academy"})).json()
    r = await s.patch(f"{V1}/projects/{project['id']}/style",
                      json={"checkpoint": "random_sd15.safetensors", "width": 512, "height": 512, "steps": 20})
    assert r.status == 200
    char = await (await s.post(f"{V1}/projects/{project['id']}/characters", json={
        "name": "Aiko", "design_prompt": "1girl, silver hair, red eyes", "trigger_word": "aikotnk"})).json()
    cid = char["id"]

    # 1. upload → pending
    files = [(f"aiko_{i}.png", image_bytes("PNG", size=(80, 64), seed=i), "image/png") for i in range(3)]
    r = await s.post(f"{V1}/characters/{cid}/images", data=form(*files, caption="aikotnk, 1girl"))
    assert r.status == 202, await r.text()
    job = await finished(s, await r.json())
    assert job["status"] == "succeeded", job
    created = job["result"]["created"]
    pending = await (await s.get(f"{V1}/characters/{cid}/images?status=pending")).json()
    assert len(pending["items"]) == 3

    # 2. review: approve two, reject one (its categories teach the negative prompt)
    for img in created[:2]:
        assert (await s.post(f"{V1}/images/{img['id']}/approve")).status == 200
    r = await s.post(f"{V1}/images/{created[2]['id']}/reject", json={"categories": ["wrong_pose"], "note": "stiff"})
    assert r.status == 200

    # 3. train: a real subprocess job
    assert "tiny-sd15" in (await (await s.get(f"{V1}/models")).json())["base_models"]
    r = await s.post(f"{V1}/characters/{cid}/train", json={
        "base_model": "tiny-sd15", "steps": 3, "rank": 4, "alpha": 2.0, "learning_rate": 1e-3,
        "resolution": TINY_RESOLUTION})
    assert r.status == 202, await r.text()
    job = await poll(s, f"{V1}/jobs/{(await r.json())['id']}", lambda j: j["status"] not in ("queued", "running"))
    assert job["status"] == "succeeded", job
    lora_file = tmp / "loras" / job["result"]["file_name"]
    assert lora_file.name == "moon-academy-aiko-v1.safetensors" and lora_file.is_file()
    from safetensors import safe_open

    with safe_open(str(lora_file), "pt") as f:
        modules = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in f.keys()}
        assert f.metadata()["ss_network_alpha"] in ("2.0", "2")
    assert modules and modules <= COMFY_LORA_KEYS
    loras = (await (await s.get(f"{V1}/characters/{cid}/loras")).json())["items"]
    assert [x["file_name"] for x in loras] == [lora_file.name] and loras[0]["image_count"] == 2
    assert (await (await s.get(f"{V1}/characters/{cid}")).json())["current_lora_id"] == loras[0]["id"]

    # 4. generate with that LoRA on ComfyUI's /prompt
    r = await s.post(f"{V1}/characters/{cid}/generate", json={"seed": 7})
    assert r.status == 201, await r.text()
    gen = await r.json()
    fake = state_of(comfy.app)
    assert fake.accepted == [gen["prompt_id"]]
    graph = fake.prompts[-1]["prompt"]
    assert validate_graph(graph, OBJECT_INFO) == {}
    lora_nodes = [n for n in graph.values() if n["class_type"] == "LoraLoader"]
    assert [n["inputs"]["lora_name"] for n in lora_nodes] == [lora_file.name]
    negative = [n["inputs"]["text"] for n in graph.values() if n["class_type"] == "CLIPTextEncode"][1]
    assert "awkward pose" in negative and "unnatural position" in negative
    gen = await poll(s, f"{V1}/generations/{gen['id']}", lambda g: g["status"] not in ("queued", "running"), timeout=20)
    assert gen["status"] == "succeeded"

    # 5. the output shows in the gallery, newest first
    gallery = await (await s.get(f"{V1}/gallery")).json()
    assert gallery["items"][0]["name"] == gen["outputs"][0]["filename"]
