"""The studio's generation kinds through the API against the stand-in ComfyUI (which validates every graph
against the recorded /object_info): templates, the pre-send check, lost prompts, batch generation for the
dataset, the GPU policy while a training runs, and the progress watcher's handling of ComfyUI's messages."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from support.api import V1, assert_error, finished, make_character, make_project
from support.comfy_schema import load_object_info, validate_graph
from support.fake_comfyui import create_fake_comfyui, state_of

OBJECT_INFO = load_object_info(Path(__file__).resolve().parents[1] / "fixtures" / "comfyui" / "object_info.json")


@pytest.fixture
async def comfy(aiohttp_server, settings):
    return await aiohttp_server(create_fake_comfyui(OBJECT_INFO, settings.comfyui_output_dir))


@pytest.fixture
async def studio_client(make_client, make_settings, comfy):
    settings = make_settings(comfyui_url=str(comfy.make_url("/")).rstrip("/"))
    return await make_client(settings), settings


async def character(client, **style):
    p = await make_project(client)
    r = await client.patch(f"{V1}/projects/{p['id']}/style",
                           json={"checkpoint": "random_sd15.safetensors", "width": 512, "height": 512, **style})
    assert r.status == 200, await r.text()
    c = await make_character(client, p["id"], design_prompt="1girl, silver hair", trigger_word="aikotnk")
    return p, c


async def until_done(client, gen: dict, timeout: float = 10.0) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while gen["status"] in ("queued", "running"):
        assert loop.time() < deadline, gen
        await asyncio.sleep(0.05)
        gen = await (await client.get(f"{V1}/generations/{gen['id']}")).json()
    return gen


def by_class(graph: dict, class_type: str) -> list[dict]:
    return [n for n in graph.values() if n["class_type"] == class_type]


def user_workflow() -> dict:
    """An API-format export as a user makes it in ComfyUI (their own prompt, seed and sizes)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "their_model.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 9, "cfg": 5.5, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0]}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"filename_prefix": "mine", "images": ["6", 0]}},
    }


async def test_a_template_is_imported_bound_and_filled_with_the_characters_prompt(studio_client, comfy):
    client, _ = studio_client
    p, c = await character(client)
    r = await client.post(f"{V1}/projects/{p['id']}/templates", json={"name": "mine", "workflow": user_workflow()})
    assert r.status == 201, await r.text()
    template = await r.json()
    assert template["bindings"]["positive"] == [["2", "text"]] and template["bindings"]["negative"] == [["3", "text"]]
    assert template["bindings"]["seed"] == [["5", "seed"]] and "image" not in template["bindings"]
    assert {(x["node_id"], x["input_name"]) for x in template["candidates"]["width"]} == {("4", "width")}
    listed = await (await client.get(f"{V1}/projects/{p['id']}/templates")).json()
    assert [t["name"] for t in listed["items"]] == ["mine"]
    await assert_error(await client.post(f"{V1}/projects/{p['id']}/templates",
                                         json={"name": "mine", "workflow": user_workflow()}), 409)

    r = await client.post(f"{V1}/characters/{c['id']}/generate",
                          json={"kind": "template", "template_id": template["id"], "seed": 77})
    assert r.status == 201, await r.text()
    gen = await r.json()
    graph = gen["graph"]
    assert gen["kind"] == "template" and gen["seed"] == 77 and gen["params"]["template_id"] == template["id"]
    assert "aikotnk" in graph["2"]["inputs"]["text"] and "silver hair" in graph["2"]["inputs"]["text"]
    assert graph["3"]["inputs"]["text"].startswith("worst quality")
    assert graph["5"]["inputs"]["seed"] == 77 and graph["5"]["inputs"]["steps"] == 9  # the user's own steps stay
    assert (graph["4"]["inputs"]["width"], graph["1"]["inputs"]["ckpt_name"]) == (512, "random_sd15.safetensors")
    assert validate_graph(graph, OBJECT_INFO) == {}
    assert (await until_done(client, gen))["status"] == "succeeded"

    # a binding to an input the workflow lacks is refused; the editor's format is refused with how to export
    err = await assert_error(await client.put(f"{V1}/templates/{template['id']}/bindings",
                                              json={"bindings": {"seed": [["5", "nope"]]}}), 400)
    assert "nope" in err["message"]
    editor = {"nodes": [{"id": 1, "type": "KSampler"}], "links": []}
    err = await assert_error(await client.post(f"{V1}/projects/{p['id']}/templates",
                                               json={"name": "ui", "workflow": editor}), 400)
    assert "Export (API)" in err["message"]
    # an image that is not there
    await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate", json={
        "kind": "template", "template_id": template["id"], "image_ids": [1]}), 404)
    assert (await (await client.delete(f"{V1}/templates/{template['id']}")).json()) == {"deleted": template["id"]}


async def test_a_template_of_another_project_is_refused(studio_client, comfy):
    client, _ = studio_client
    p, c = await character(client)
    other = await make_project(client, "Other")
    t = await (await client.post(f"{V1}/projects/{other['id']}/templates",
                                 json={"name": "x", "workflow": user_workflow()})).json()
    err = await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate",
                                               json={"kind": "template", "template_id": t["id"]}), 400)
    assert "another project" in err["message"]


async def test_what_the_server_lacks_is_a_400_before_anything_is_queued(studio_client, comfy):
    client, _ = studio_client
    p, c = await character(client)
    fake = state_of(comfy.app)
    # no approved image: the kinds that start from one say so
    for kind in ("img2img", "video", "reference"):
        err = await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate", json={"kind": kind}), 400)
        assert "image_ids" in err["message"]
    # a scheduler this server does not have (the style was saved against another): named, not sent
    fake.object_info = copy.deepcopy(OBJECT_INFO)
    fake.object_info["KSampler"]["input"]["required"]["scheduler"][0].remove("karras")
    err = await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate", json={}), 400)
    assert "scheduler" in err["message"] and "karras" in err["message"], err
    assert fake.prompts == []  # nothing reached ComfyUI's /prompt


async def test_a_prompt_comfyui_lost_ends_failed_and_generations_are_listed(studio_client, comfy):
    client, _ = studio_client
    p, c = await character(client)
    fake = state_of(comfy.app)
    first = await until_done(client, await (await client.post(f"{V1}/characters/{c['id']}/generate", json={})).json())
    assert first["status"] == "succeeded" and first["progress"] == 1.0
    gen = await (await client.post(f"{V1}/characters/{c['id']}/generate", json={"seed": 5})).json()
    await until_done(client, {**gen, "status": "queued"})
    # as if ComfyUI restarted before the studio looked: the prompt is in neither its queue nor its history
    fake.history.pop(gen["prompt_id"], None)
    from lora_studio.app import STUDIO_KEY
    from lora_studio.core.schema import generations

    studio = client.server.app[STUDIO_KEY].get()
    studio.progress.stop()  # its sweep must not finish an earlier refresh of this row after the change below
    with studio.db.begin() as conn:
        conn.execute(generations.update().where(generations.c.id == gen["id"]).values(status="queued"))
    lost = await (await client.get(f"{V1}/generations/{gen['id']}")).json()
    assert lost["status"] == "failed" and "no longer has prompt" in lost["error"] and gen["prompt_id"] in lost["error"]
    listed = await (await client.get(f"{V1}/characters/{c['id']}/generations?limit=1")).json()
    assert [g["id"] for g in listed["items"]] == [gen["id"]] and listed["next_cursor"] == str(gen["id"])
    rest = await (await client.get(f"{V1}/characters/{c['id']}/generations?cursor={listed['next_cursor']}")).json()
    assert [g["id"] for g in rest["items"]] == [first["id"]]
    # a finished generation cannot be cancelled
    await assert_error(await client.post(f"{V1}/generations/{first['id']}/cancel"), 409)


async def test_batch_generation_puts_images_with_variation_captions_in_the_pending_queue(studio_client, comfy):
    client, _ = studio_client
    p, c = await character(client, variations=["smiling", "from behind", "waving"])
    r = await client.post(f"{V1}/characters/{c['id']}/generate-batch", json={"count": 4, "in_flight": 2, "seed": 10})
    assert r.status == 202, await r.text()
    job = await finished(client, await r.json(), timeout=60)
    assert job["status"] == "succeeded", job
    result = job["result"]
    # the stand-in paints flat colours: the review queue may skip some as near duplicates of the first ones
    assert result["generated"] == 4 and result["failed"] == [] and len(result["created"]) + len(result["skipped"]) == 4
    assert result["created"] and all("duplicate" in s["reason"] for s in result["skipped"]), result
    pending = (await (await client.get(f"{V1}/characters/{c['id']}/images?status=pending")).json())["items"]
    assert sorted(i["id"] for i in pending) == sorted(result["created"])
    assert {i["caption"] for i in pending} <= {"aikotnk, smiling", "aikotnk, from behind", "aikotnk, waving"}
    assert pending[0]["caption"] == "aikotnk, smiling"  # the first generation had the first variation
    assert all(i["source"] == "generation" and i["metadata"].get("generation_id") for i in pending)
    prompts = [b["prompt"] for b in state_of(comfy.app).prompts]
    seeds = sorted(by_class(g, "KSampler")[0]["inputs"]["seed"] for g in prompts)
    assert seeds == [10, 11, 12, 13]  # a fixed seed: one per image
    texts = [by_class(g, "CLIPTextEncode")[0]["inputs"]["text"] for g in prompts]
    assert sum("from behind" in t for t in texts) == 1 and sum("smiling" in t for t in texts) == 2
    await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate-batch",
                                         json={"count": 2, "kind": "video"}), 400)


async def test_the_studios_generations_wait_while_a_training_uses_the_shared_gpu(make_client, make_settings, comfy):
    from lora_studio.app import STUDIO_KEY
    from lora_studio.core.db import utcnow
    from lora_studio.core.schema import jobs

    settings = make_settings(comfyui_url=str(comfy.make_url("/")).rstrip("/"))
    client = await make_client(settings)
    p, c = await character(client)
    studio = client.server.app[STUDIO_KEY].get()
    studio.host.comfyui_shares_device = True  # as inside ComfyUI on one GPU
    now = utcnow()
    with studio.db.begin() as conn:
        job_id = conn.execute(jobs.insert().values(
            kind="train", status="running", progress=0.1, message="step 1", payload={"device": "cuda"},
            character_id=c["id"], cancel_requested=False, worker="elsewhere:1", created_at=now, updated_at=now,
            started_at=now)).inserted_primary_key[0]
    err = await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate", json={}), 409)
    assert f"job {job_id}" in err["message"] and "GPU" in err["message"]
    await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate-batch", json={"count": 1}), 409)
    assert state_of(comfy.app).prompts == []
    with studio.db.begin() as conn:  # a training on the CPU takes nothing from ComfyUI
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(payload={"device": "cpu"}))
    r = await client.post(f"{V1}/characters/{c['id']}/generate", json={})
    assert r.status == 201, await r.text()


def test_the_progress_watcher_turns_comfyuis_messages_into_the_generation_state(studio):
    from lora_studio.core.db import utcnow
    from lora_studio.core.schema import generations
    from lora_studio.generation.progress import ProgressWatcher

    project = studio.projects.create("Moon")
    cid = studio.characters.create(project.id, "Aiko").id
    now = utcnow()
    with studio.db.begin() as conn:
        gid = conn.execute(generations.insert().values(
            character_id=cid, prompt_id="p-1", status="queued", graph={}, kind="txt2img", progress=0.0,
            created_at=now, updated_at=now)).inserted_primary_key[0]
    watcher = ProgressWatcher(studio.generation)
    watcher.handle(json.dumps({"type": "execution_start", "data": {"prompt_id": "p-1", "timestamp": 1}}))
    assert studio.generation.get(gid).status == "running"
    watcher.handle(json.dumps({"type": "progress", "data": {"value": 5, "max": 20, "prompt_id": "p-1", "node": "3"}}))
    assert studio.generation.get(gid).progress == 0.25
    watcher.handle(json.dumps({"type": "progress", "data": {"value": 5, "max": 20, "prompt_id": "other", "node": "3"}}))
    watcher.handle("not json")
    watcher.handle(json.dumps({"type": "progress", "data": {"value": 5, "max": 0, "prompt_id": "p-1"}}))
    assert studio.generation.get(gid).progress == 0.25
    # the end as ComfyUI's history records it: an error names the exception; a finished row stays as it ended
    studio.generation.record_history(gid, {"outputs": {}, "status": {"status_str": "error", "completed": False,
                                                                     "messages": [["execution_error", {
                                                                         "exception_message": "CUDA out of memory"}]]}})
    ended = studio.generation.get(gid)
    assert ended.status == "failed" and "CUDA out of memory" in ended.error
    watcher.handle(json.dumps({"type": "progress", "data": {"value": 9, "max": 10, "prompt_id": "p-1"}}))
    assert studio.generation.get(gid).status == "failed"
    with studio.db.begin() as conn:
        assert conn.execute(sa.select(generations.c.progress).where(generations.c.id == gid)).scalar() == 0.25


# -- kinds that start from approved images, cancel, progress (the stand-in's upload, queue, websocket and hooks) --

async def approved_image(client, cid: int, seed: int = 3) -> dict:
    from support.api import upload
    from support.images import image_bytes

    img = (await upload(client, cid, (f"ref{seed}.png", image_bytes(seed=seed), "image/png")))["created"][0]
    r = await client.post(f"{V1}/images/{img['id']}/approve")
    assert r.status == 200, await r.text()
    return img


@pytest.fixture
async def live_comfy(aiohttp_server, settings):
    """A stand-in that lists its model files as a live server does, with a Wan video model and IPAdapter."""
    from support.comfy_schema import merged_object_info, with_server_files

    info = with_server_files(
        merged_object_info("object_info.json", "ipadapter_object_info.json"),
        checkpoints=["random_sd15.safetensors"], diffusion_models=["wan2.1_i2v_480p_14B_fp16.safetensors"],
        text_encoders=["umt5_xxl_fp8_e4m3fn_scaled.safetensors"], vae=["wan_2.1_vae.safetensors"],
        clip_vision=["CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"],
        ipadapter=["ip-adapter-plus_sd15.safetensors"])
    return await aiohttp_server(create_fake_comfyui(info, settings.comfyui_output_dir))


@pytest.fixture
async def live_client(make_client, make_settings, live_comfy):
    settings = make_settings(comfyui_url=str(live_comfy.make_url("/")).rstrip("/"))
    return await make_client(settings)


async def test_img2img_uploads_the_approved_image_and_starts_from_it(live_client, live_comfy):
    client = live_client
    p, c = await character(client)
    img = await approved_image(client, c["id"])
    r = await client.post(f"{V1}/characters/{c['id']}/generate",
                          json={"kind": "img2img", "image_ids": [img["id"]], "denoise": 0.45, "seed": 3})
    assert r.status == 201, await r.text()
    gen = await r.json()
    fake = state_of(live_comfy.app)
    assert fake.uploads[-1]["name"] == f"image-{img['id']}.png" and fake.uploads[-1]["subfolder"] == "lora_studio"
    assert fake.uploads[-1]["path"].read_bytes() == (await (await client.get(f"{V1}/images/{img['id']}/file")).read())
    (load,) = by_class(gen["graph"], "LoadImage")
    assert load["inputs"]["image"] == f"lora_studio/image-{img['id']}.png"
    (ks,) = by_class(gen["graph"], "KSampler")
    assert ks["inputs"]["denoise"] == 0.45 and gen["graph"][ks["inputs"]["latent_image"][0]]["class_type"] in (
        "VAEEncode", "RepeatLatentBatch")
    assert gen["params"] == {"batch_size": 1, "use_lora": True, "image_ids": [img["id"]], "denoise": 0.45}
    done = await until_done(client, gen)
    assert done["status"] == "succeeded" and done["outputs"][0]["filename"].endswith(".png")
    # a pending (not approved) image, or one of another character, is refused
    other = await make_character(client, p["id"], name="Beni")
    theirs = await approved_image(client, other["id"], seed=4)
    for iid in (theirs["id"],):
        err = await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate",
                                                   json={"kind": "img2img", "image_ids": [iid]}), 400)
        assert "not an approved image" in err["message"]


async def test_reference_uses_ipadapter_when_the_server_has_it(live_client, live_comfy):
    client = live_client
    p, c = await character(client)
    a, b = await approved_image(client, c["id"], 5), await approved_image(client, c["id"], 6)
    r = await client.post(f"{V1}/characters/{c['id']}/generate",
                          json={"kind": "reference", "image_ids": [a["id"], b["id"]], "weight": 0.7})
    assert r.status == 201, await r.text()
    gen = await r.json()
    classes = {n["class_type"] for n in gen["graph"].values()}
    assert "ImageBatch" in classes and any(c.startswith("IPAdapter") for c in classes), classes
    assert len(by_class(gen["graph"], "LoadImage")) == 2
    assert (await until_done(client, gen))["status"] == "succeeded"
    # an unknown method: a 400 that says why
    err = await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate", json={
        "kind": "reference", "image_ids": [a["id"]], "method": "bogus"}), 400)
    assert "method" in err["message"]


async def test_image_to_video_is_one_real_video(live_client, live_comfy):
    import av

    client = live_client
    p, c = await character(client)
    img = await approved_image(client, c["id"])
    r = await client.post(f"{V1}/characters/{c['id']}/generate",
                          json={"kind": "video", "image_ids": [img["id"]], "frames": 9, "fps": 8})
    assert r.status == 201, await r.text()
    gen = await r.json()
    assert gen["kind"] == "video" and gen["lora_model_id"] is None
    assert by_class(gen["graph"], "WanImageToVideo") and not by_class(gen["graph"], "SaveImage")
    done = await until_done(client, gen, timeout=30)
    assert done["status"] == "succeeded", done
    (out,) = done["outputs"]
    assert out["filename"].endswith((".mp4", ".webm")) and out["animated"] is True
    video = await client.get(f"{V1}/gallery/file", params={"path": f"{out['subfolder']}/{out['filename']}"})
    assert video.status == 200, await video.text()
    data = await video.read()
    import io

    with av.open(io.BytesIO(data)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 9


async def test_a_server_without_a_video_model_says_what_is_missing(studio_client, comfy):
    client, _ = studio_client
    p, c = await character(client)
    img = await approved_image(client, c["id"])
    err = await assert_error(await client.post(f"{V1}/characters/{c['id']}/generate",
                                               json={"kind": "video", "image_ids": [img["id"]]}), 400, "no_video_model")
    assert "wan" in err["message"] and "svd" in err["message"]
    assert state_of(comfy.app).prompts == [] and state_of(comfy.app).uploads == []


async def test_cancel_a_running_and_a_queued_generation_and_follow_progress(live_client, live_comfy):
    from support.fake_comfyui import wait_for_running

    client = live_client
    p, c = await character(client)
    fake = state_of(live_comfy.app)
    from lora_studio.app import STUDIO_KEY

    studio = client.server.app[STUDIO_KEY].get()
    # one generation starts the studio's websocket client; it stays connected a while after
    await until_done(client, await (await client.post(f"{V1}/characters/{c['id']}/generate", json={})).json())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while studio.generation.client_id not in fake.sockets:
        assert loop.time() < deadline, fake.sockets
        await asyncio.sleep(0.05)
    fake.hold()
    first = await (await client.post(f"{V1}/characters/{c['id']}/generate", json={})).json()
    second = await (await client.post(f"{V1}/characters/{c['id']}/generate", json={})).json()
    await wait_for_running(live_comfy.app, first["prompt_id"])
    # the websocket's progress reaches the row without anyone asking ComfyUI
    deadline = loop.time() + 10
    while True:
        row = studio.generation.get(first["id"])
        if row.status == "running" and row.progress > 0:
            break
        assert loop.time() < deadline, row
        await asyncio.sleep(0.05)
    cancelled = await (await client.post(f"{V1}/generations/{second['id']}/cancel")).json()
    assert cancelled["status"] == "cancelled"
    assert {"delete": [second["prompt_id"]]} in fake.queue_calls
    stopped = await (await client.post(f"{V1}/generations/{first['id']}/cancel")).json()
    assert stopped["status"] == "cancelled"
    assert any(call.get("prompt_id") == first["prompt_id"] for call in fake.interrupt_calls)
    fake.release()
    await asyncio.sleep(0.3)
    assert second["prompt_id"] not in fake.history  # taken off the queue: it never ran
    assert (await (await client.get(f"{V1}/generations/{first['id']}")).json())["status"] == "cancelled"


async def test_a_failing_graph_and_a_restarted_comfyui_end_the_generation(live_client, live_comfy):
    client = live_client
    p, c = await character(client)
    fake = state_of(live_comfy.app)
    fake.fail_next("CUDA out of memory")
    failed = await until_done(client, await (await client.post(f"{V1}/characters/{c['id']}/generate", json={})).json())
    assert failed["status"] == "failed" and "CUDA out of memory" in failed["error"]
    fake.hold()
    gen = await (await client.post(f"{V1}/characters/{c['id']}/generate", json={})).json()
    fake.restart()
    lost = await until_done(client, gen)
    assert lost["status"] == "failed" and "no longer has prompt" in lost["error"]


def test_generations_end_failed_when_comfyui_stays_silent(studio):
    """ComfyUI went away after taking the prompt: the watcher keeps the generation while it may come back, then
    ends it failed with the reason instead of leaving it queued for ever."""
    from lora_studio.core.db import utcnow
    from lora_studio.core.errors import Unavailable
    from lora_studio.core.schema import generations
    from lora_studio.generation.progress import ProgressWatcher

    project = studio.projects.create("Moon")
    cid = studio.characters.create(project.id, "Aiko").id
    now = utcnow()
    with studio.db.begin() as conn:
        gid = conn.execute(generations.insert().values(
            character_id=cid, prompt_id="p-9", status="running", graph={}, kind="txt2img", progress=0.5,
            created_at=now, updated_at=now)).inserted_primary_key[0]

    class Down:
        base_url = "http://127.0.0.1:9"

        def queue(self):
            raise Unavailable("ComfyUI at http://127.0.0.1:9 is not reachable: connection refused")

    studio.generation.client = Down
    watcher = ProgressWatcher(studio.generation, give_up_seconds=0.3)
    watcher.sweep()
    assert studio.generation.get(gid).status == "running"  # it may come back
    import time

    time.sleep(0.35)
    watcher.sweep()
    ended = studio.generation.get(gid)
    assert ended.status == "failed" and "has not answered" in ended.error and "connection refused" in ended.error
