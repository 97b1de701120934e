"""The stand-in ComfyUI (tests/support/fake_comfyui.py) against the recorded exchanges of a real ComfyUI 0.3.64:
websocket messages, history, uploads, LoadImage validation, queue deletion, video savers and the test hooks."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import time
from pathlib import Path

import aiohttp
import av
import pytest
from PIL import Image
from support.comfy_schema import load_object_info, validate_graph
from support.fake_comfyui import (
    _Graph,
    create_fake_comfyui,
    execution_order,
    fake_output_size,
    state_of,
    wait_for_history,
    wait_for_message,
    wait_for_running,
)
from support.images import image_bytes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"
SAMPLES = json.loads((FIXTURES / "samples" / "http_and_websocket.json").read_text(encoding="utf-8"))
RECORDED_ID = SAMPLES["post_prompt_ok"]["body"]["prompt_id"]
RECORDED_SID = SAMPLES["websocket_messages"][0]["data"]["sid"]


@pytest.fixture(scope="module")
def object_info() -> dict:
    return load_object_info(FIXTURES / "object_info.json")


@pytest.fixture
def sample_graph() -> dict:
    return copy.deepcopy(SAMPLES["get_queue_while_running"]["queue_running"][0][2])


@pytest.fixture
def start(aiohttp_client, object_info, tmp_path):
    async def start(**options):
        client = await aiohttp_client(create_fake_comfyui(object_info, tmp_path / "output", **options))
        return client, state_of(client.app)
    return start


def normalised(message: dict, prompt_id: str) -> dict:
    """A message with our prompt id written as the recorded one and no timestamps."""
    text = json.dumps(message).replace(prompt_id, RECORDED_ID)
    data = json.loads(text)
    if isinstance(data.get("data"), dict):
        data["data"].pop("timestamp", None)
    return data


async def receive_until(ws, stop, timeout: float = 5.0) -> list[dict]:
    """JSON messages until one for which stop(message) is true (included)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        seen.append(json.loads(msg.data))
        if stop(seen[-1]):
            return seen


def is_end(prompt_id: str):
    return lambda m: m["type"] == "executing" and m["data"] == {"node": None, "prompt_id": prompt_id}


async def queue(client, graph: dict, client_id: str | None = None, **extra) -> dict:
    body = {"prompt": graph, **extra}
    if client_id is not None:
        body["client_id"] = client_id
    r = await client.post("/prompt", json=body)
    assert r.status == 200, await r.text()
    return await r.json()


async def upload(client, data: bytes, name: str = "ref.png", **fields) -> aiohttp.ClientResponse:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    return await client.post("/upload/image", data=form)


def img2img_graph(sample: dict, image: str, scale: tuple[int, int] | None = None) -> dict:
    """The recorded txt2img graph with its EmptyLatentImage replaced by LoadImage (-> ImageScale) -> VAEEncode."""
    graph = copy.deepcopy(sample)
    del graph["5"]
    graph["20"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    pixels = ["20", 0]
    if scale:
        graph["21"] = {"class_type": "ImageScale", "inputs": {"image": ["20", 0], "upscale_method": "bilinear",
                                                               "width": scale[0], "height": scale[1], "crop": "disabled"}}
        pixels = ["21", 0]
    graph["22"] = {"class_type": "VAEEncode", "inputs": {"pixels": pixels, "vae": ["4", 2]}}
    graph["3"]["inputs"].update(latent_image=["22", 0], denoise=0.6)
    return graph


# -- the websocket and the executor against the recording -----------------------------------------------


async def test_websocket_messages_are_the_recorded_ones(start, sample_graph) -> None:
    client, state = await start()
    ws = await client.ws_connect("/ws", params={"clientId": RECORDED_SID})
    answer = await queue(client, sample_graph, client_id=RECORDED_SID,
                         extra_data={"extra_pnginfo": {"workflow": {"note": "api-format submission"}}})
    assert set(answer) == set(SAMPLES["post_prompt_ok"]["body"]) and answer["node_errors"] == {}
    seen = await receive_until(ws, is_end(answer["prompt_id"]))
    recorded = [normalised(m, RECORDED_ID) for m in SAMPLES["websocket_messages"]]
    ours = [normalised(m, answer["prompt_id"]) for m in seen]
    # everything the recording shows, in order and equal (node order 4 5 10 7 6 3 8 9, progress 1/2 2/2,
    # the executed output, every progress_state) ...
    assert ours[:len(recorded)] == recorded
    # ... then what ComfyUI sends after it (the recording stops at execution_success): PromptQueue.task_done's
    # status and main.py's executing null
    assert ours[len(recorded):] == [
        {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}},
        {"type": "executing", "data": {"node": None, "prompt_id": RECORDED_ID}}]
    assert execution_order(sample_graph, ["9"], state.object_info) == ["4", "5", "10", "7", "6", "3", "8", "9"]

    entry = (await (await client.get(f"/history/{answer['prompt_id']}")).json())[answer["prompt_id"]]
    recorded_entry = SAMPLES["get_history_id"][RECORDED_ID]
    assert list(entry) == list(recorded_entry)  # prompt, outputs, status, meta
    assert normalised({"data": entry["outputs"]}, answer["prompt_id"]) == {"data": recorded_entry["outputs"]}
    assert entry["meta"] == recorded_entry["meta"]
    assert [[m[0], sorted(m[1])] for m in entry["status"]["messages"]] == [
        [m[0], sorted(m[1])] for m in recorded_entry["status"]["messages"]]
    await ws.close()


async def test_status_goes_to_every_client_and_a_prompts_messages_to_its_own(start, sample_graph) -> None:
    client, state = await start()
    mine = await client.ws_connect("/ws", params={"clientId": "mine"})
    other = await client.ws_connect("/ws")  # no clientId: ComfyUI names the session
    first = json.loads((await other.receive(timeout=2)).data)
    assert first["type"] == "status" and len(first["data"]["sid"]) == 32
    assert json.loads((await mine.receive(timeout=2)).data)["data"]["sid"] == "mine"
    answer = await queue(client, sample_graph, client_id="mine")
    on_mine = await receive_until(mine, is_end(answer["prompt_id"]))
    assert {"execution_start", "executing", "progress", "executed", "execution_success"} <= {m["type"] for m in on_mine}
    await wait_for_history(client.app, answer["prompt_id"])
    await asyncio.sleep(0.05)
    on_other = []
    while (msg := await other.receive(timeout=0.2)).type == aiohttp.WSMsgType.TEXT:
        on_other.append(json.loads(msg.data))
        if on_other[-1]["data"].get("status", {}).get("exec_info", {}).get("queue_remaining") == 0:
            break
    assert [(m["type"], m["data"]["status"]["exec_info"]["queue_remaining"]) for m in on_other] == [
        ("status", 1), ("status", 1), ("status", 0)]

    # a prompt queued without a client id: ComfyUI sends its progress to everyone (sid None) and no
    # execution_start/executing/executed at all
    answer = await queue(client, sample_graph)
    await wait_for_history(client.app, answer["prompt_id"])
    kinds = {(kind, sid) for kind, data, sid in state.sent
             if isinstance(data, dict) and data.get("prompt_id") == answer["prompt_id"]}
    assert kinds == {("progress_state", None), ("progress", None)}
    await mine.close()
    await other.close()


async def test_progress_counts_the_sampler_steps_over_exec_delay(start, sample_graph) -> None:
    client, state = await start(exec_delay=0.3)
    sample_graph["3"]["inputs"]["steps"] = 5
    began = time.monotonic()
    answer = await queue(client, sample_graph, client_id="c")
    await wait_for_history(client.app, answer["prompt_id"])
    assert time.monotonic() - began >= 0.3
    progress = [data for kind, data, _ in state.sent if kind == "progress"]
    assert progress == [{"value": i, "max": 5, "prompt_id": answer["prompt_id"], "node": "3"} for i in range(1, 6)]
    assert set(progress[0]) == set(next(m["data"] for m in SAMPLES["websocket_messages"] if m["type"] == "progress"))
    # SamplerCustom counts its scheduler's steps; KSamplerAdvanced the steps between start and end
    graph = {"1": {"class_type": "BasicScheduler", "inputs": {"steps": 7, "denoise": 0.5}},
             "2": {"class_type": "SamplerCustom", "inputs": {"sigmas": ["1", 0]}},
             "3": {"class_type": "KSamplerAdvanced", "inputs": {"steps": 30, "start_at_step": 10, "end_at_step": 25}}}
    nodes = _Graph(state, graph)
    assert (nodes.steps("2"), nodes.steps("3")) == (7, 15)


# -- failures and the test hooks ------------------------------------------------------------------------


async def test_fail_next_ends_the_next_prompt_with_execution_error(start, sample_graph) -> None:
    client, state = await start()
    state.fail_next("CUDA out of memory")
    ws = await client.ws_connect("/ws", params={"clientId": "c"})
    answer = await queue(client, sample_graph, client_id="c")
    seen = await receive_until(ws, is_end(answer["prompt_id"]))
    error = next(m["data"] for m in seen if m["type"] == "execution_error")
    # execution.py handle_execution_error's keys; the message as ComfyUI formats it ("{ex}\n{tips}")
    assert set(error) == {"prompt_id", "node_id", "node_type", "executed", "exception_message", "exception_type",
                          "traceback", "current_inputs", "current_outputs", "timestamp"}
    assert error["exception_message"] == "CUDA out of memory\n" and error["exception_type"] == "RuntimeError"
    assert (error["node_id"], error["node_type"]) == ("3", "KSampler")
    assert error["executed"] == ["4", "5", "10", "7", "6"] and error["current_inputs"]["steps"] == [2]
    assert "execution_success" not in {m["type"] for m in seen}
    entry = await wait_for_history(client.app, answer["prompt_id"])
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached", "execution_error"]
    assert entry["outputs"] == {}
    # only the next prompt
    again = await queue(client, sample_graph)
    assert (await wait_for_history(client.app, again["prompt_id"]))["status"]["status_str"] == "success"
    await ws.close()


async def test_hold_keeps_a_prompt_running_until_release_or_interrupt(start, sample_graph) -> None:
    client, state = await start(exec_delay=0)
    state.hold()
    ws = await client.ws_connect("/ws", params={"clientId": "c"})
    first = await queue(client, sample_graph, client_id="c")
    second = await queue(client, sample_graph, client_id="c")
    await wait_for_message(client.app, "progress", first["prompt_id"])
    await asyncio.sleep(0.05)
    body = await (await client.get("/queue")).json()
    assert [e[1] for e in body["queue_running"]] == [first["prompt_id"]]
    assert [e[1] for e in body["queue_pending"]] == [second["prompt_id"]]
    assert first["prompt_id"] not in state.history

    r = await client.post("/interrupt", json={"prompt_id": first["prompt_id"]})
    assert r.status == 200
    seen = await receive_until(ws, is_end(first["prompt_id"]))
    interrupted = next(m["data"] for m in seen if m["type"] == "execution_interrupted")
    assert set(interrupted) == {"prompt_id", "node_id", "node_type", "executed", "timestamp"}
    assert (interrupted["node_id"], interrupted["executed"]) == ("3", ["4", "5", "10", "7", "6"])
    entry = state.history[first["prompt_id"]]
    assert entry["status"]["status_str"] == "error" and entry["status"]["messages"][-1][0] == "execution_interrupted"

    # the second one runs, stops at its first step while held, and finishes once released
    await wait_for_message(client.app, "progress", second["prompt_id"])
    assert state.running[1] == second["prompt_id"]
    state.release()
    entry = await wait_for_history(client.app, second["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    await ws.close()


async def test_queue_delete_and_clear_drop_pending_prompts_for_good(start, sample_graph) -> None:
    client, state = await start(exec_delay=0)
    state.hold()
    ids = [(await queue(client, sample_graph))["prompt_id"] for _ in range(4)]
    await wait_for_running(client.app, ids[0])
    assert (await client.post("/queue", json={"delete": [ids[1], "not-queued"]})).status == 200
    body = await (await client.get("/queue")).json()
    assert [e[1] for e in body["queue_pending"]] == ids[2:]
    assert (await client.post("/queue", json={"delete": [ids[0]]})).status == 200  # running: not touched
    assert state.running[1] == ids[0]
    assert (await client.post("/queue", json={"clear": True})).status == 200
    assert (await (await client.get("/queue")).json())["queue_pending"] == []
    state.release()
    await wait_for_history(client.app, ids[0])
    await asyncio.sleep(0.1)
    assert list(state.history) == [ids[0]]
    assert state.queue_calls == [{"delete": [ids[1], "not-queued"]}, {"delete": [ids[0]]}, {"clear": True}]
    statuses = [d["status"]["exec_info"]["queue_remaining"] for kind, d, _ in state.sent if kind == "status"]
    assert statuses[-3:] == [3, 1, 0]  # after the delete, the clear and task_done (the 2nd delete sent none)
    assert (await client.post("/queue", data=b"{")).status == 500  # as ComfyUI: request.json() raises


async def test_restart_forgets_queue_running_prompt_and_history(start, sample_graph) -> None:
    client, state = await start(exec_delay=0)
    done = await queue(client, sample_graph)
    await wait_for_history(client.app, done["prompt_id"])
    ws = await client.ws_connect("/ws", params={"clientId": "c"})
    await ws.receive(timeout=2)
    state.hold()
    running = await queue(client, sample_graph, client_id="c")
    pending = await queue(client, sample_graph)
    await wait_for_message(client.app, "progress", running["prompt_id"])
    state.restart()
    assert state.restarts == 1 and state.history == {} and state.running is None and state.pending == []
    while (msg := await ws.receive(timeout=2)).type == aiohttp.WSMsgType.TEXT:
        pass  # what was sent before the restart
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert await (await client.get("/queue")).json() == SAMPLES["get_queue_idle"]
    assert await (await client.get(f"/history/{done['prompt_id']}")).json() == {}
    state.release()
    fresh = await queue(client, sample_graph)
    assert fresh["number"] == 0  # a new process counts from 0
    await wait_for_history(client.app, fresh["prompt_id"])
    await asyncio.sleep(0.05)
    assert running["prompt_id"] not in state.history and pending["prompt_id"] not in state.history
    again = await client.ws_connect("/ws", params={"clientId": "c"})
    status = json.loads((await again.receive(timeout=2)).data)
    assert status == {"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "c"}}
    await again.close()


# -- uploads, LoadImage and img2img sizes -----------------------------------------------------------------


async def test_upload_image_answers_like_comfyui(start, tmp_path) -> None:
    client, state = await start()
    png = image_bytes(size=(40, 20), seed=1)
    r = await upload(client, png)
    assert r.status == 200 and await r.json() == {"name": "ref.png", "subfolder": "", "type": "input"}
    assert (tmp_path / "input" / "ref.png").read_bytes() == png
    other = image_bytes(size=(40, 20), seed=2)
    assert await (await upload(client, other)).json() == {"name": "ref (1).png", "subfolder": "", "type": "input"}
    assert await (await upload(client, other)).json() == {"name": "ref (1).png", "subfolder": "", "type": "input"}
    assert state.uploads[-1]["duplicate"] is True  # compare_image_hash: the same bytes are not stored twice
    r = await upload(client, other, overwrite="true")
    assert await r.json() == {"name": "ref.png", "subfolder": "", "type": "input"}
    assert (tmp_path / "input" / "ref.png").read_bytes() == other
    r = await upload(client, png, subfolder="studio/aiko", type="temp")
    assert await r.json() == {"name": "ref.png", "subfolder": "studio/aiko", "type": "temp"}
    assert (tmp_path / "temp" / "studio" / "aiko" / "ref.png").is_file()
    assert [(u["name"], u["type"]) for u in state.uploads] == [
        ("ref.png", "input"), ("ref (1).png", "input"), ("ref (1).png", "input"), ("ref.png", "input"),
        ("ref.png", "temp")]
    assert (await upload(client, png, subfolder="../..")).status == 400
    raw = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="../escape.png"\r\n\r\n' + png
           + b"\r\n--b--\r\n")  # aiohttp's FormData would percent-encode the slash
    r = await client.post("/upload/image", data=raw, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status == 400
    assert (await client.post("/upload/image", data={"subfolder": "x"})).status == 400
    assert not (tmp_path / "escape.png").exists()
    # a live server lists its input images in LoadImage's choices
    info = await (await client.get("/object_info/LoadImage")).json()
    assert info["LoadImage"]["input"]["required"]["image"] == [["ref (1).png", "ref.png"], {"image_upload": True}]


async def test_load_image_of_a_missing_file_is_refused_at_queue_time(start, sample_graph, object_info) -> None:
    client, state = await start()
    graph = img2img_graph(sample_graph, "nope.png")
    assert validate_graph(graph, object_info) == {}  # the schema takes any name for an upload widget
    r = await client.post("/prompt", json={"prompt": graph})
    assert r.status == 400
    body = await r.json()
    assert body["error"] == {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                             "details": "", "extra_info": {}}
    assert body["node_errors"] == {"20": {
        "errors": [{"type": "custom_validation_failed", "message": "Custom validation failed for node",
                    "details": "image - Invalid image file: nope.png", "extra_info": {"input_name": "image"}}],
        "dependent_outputs": ["9"], "class_type": "LoadImage"}}
    assert set(body) == set(SAMPLES["post_prompt_invalid"]["body"])
    assert set(body["node_errors"]["20"]) == set(SAMPLES["post_prompt_invalid"]["body"]["node_errors"]["3"])
    assert state.accepted == []
    # together with schema errors, both are listed
    del graph["6"]["inputs"]["clip"]
    body = await (await client.post("/prompt", json={"prompt": graph})).json()
    assert set(body["node_errors"]) == {"6", "20"}


async def test_an_output_without_its_file_is_dropped_and_the_others_run(start, sample_graph, tmp_path) -> None:
    """execution.validate_prompt: outputs that validate run; the answer lists the others' node_errors."""
    client, state = await start()
    graph = copy.deepcopy(sample_graph)
    graph["20"] = {"class_type": "LoadImage", "inputs": {"image": "nope.png"}}
    graph["30"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}
    answer = await queue(client, graph)
    assert list(answer["node_errors"]) == ["20"] and answer["node_errors"]["20"]["dependent_outputs"] == ["30"]
    entry = await wait_for_history(client.app, answer["prompt_id"])
    assert entry["prompt"][4] == ["9"] and list(entry["outputs"]) == ["9"]
    # with the file there, PreviewImage writes to the temp folder (type "temp"), which /view serves
    await upload(client, image_bytes(size=(128, 64), seed=6), name="nope.png")
    entry = await wait_for_history(client.app, (await queue(client, graph))["prompt_id"])
    [preview] = entry["outputs"]["30"]["images"]
    assert preview["type"] == "temp" and preview["filename"].startswith("ComfyUI_temp_")
    r = await client.get("/view", params={**preview})
    with Image.open(io.BytesIO(await r.read())) as png:
        assert png.size == (16, 8)
    assert (tmp_path / "temp" / preview["filename"]).is_file()


async def test_img2img_outputs_take_the_loaded_images_size(start, sample_graph, tmp_path) -> None:
    client, state = await start()
    assert (await upload(client, image_bytes(size=(256, 128), seed=3), name="wide.png")).status == 200
    answer = await queue(client, img2img_graph(sample_graph, "wide.png"))
    entry = await wait_for_history(client.app, answer["prompt_id"])
    image = entry["outputs"]["9"]["images"][0]
    with Image.open(tmp_path / "output" / image["subfolder"] / image["filename"]) as png:
        assert png.size == fake_output_size(256, 128) == (32, 16)
    answer = await queue(client, img2img_graph(sample_graph, "wide.png", scale=(512, 768)))
    image = (await wait_for_history(client.app, answer["prompt_id"]))["outputs"]["9"]["images"][0]
    with Image.open(tmp_path / "output" / image["subfolder"] / image["filename"]) as png:
        assert png.size == (64, 96)
    # "name [output]": an output of an earlier prompt, as ComfyUI's folder_paths reads annotations
    answer = await queue(client, img2img_graph(sample_graph, f"{image['subfolder']}/{image['filename']} [output]"))
    entry = await wait_for_history(client.app, answer["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    assert (await client.post("/prompt", json={"prompt": img2img_graph(sample_graph, "wide.png [output]")})).status == 400
    # a file gone between queueing and running fails the run, as LoadImage's open does
    state.hold()
    await wait_for_running(client.app, (await queue(client, sample_graph))["prompt_id"])
    answer = await queue(client, img2img_graph(sample_graph, "wide.png"))
    (tmp_path / "input" / "wide.png").unlink()
    state.release()
    entry = await wait_for_history(client.app, answer["prompt_id"])
    error = entry["status"]["messages"][-1]
    assert error[0] == "execution_error" and error[1]["exception_type"] == "FileNotFoundError"
    assert error[1]["node_id"] == "20"


# -- video savers -----------------------------------------------------------------------------------------


def video_graph(latent: dict, saver: dict, create_video: bool = False) -> dict:
    """LoadImage -> a video latent node (id 30, its LATENT at output 2) -> KSampler -> VAEDecode -> saver (id 9)."""
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "video.safetensors"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "aiko waves", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "20": {"class_type": "LoadImage", "inputs": {"image": "ref.png"}},
        "30": latent,
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 1, "steps": 2, "cfg": 6.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["30", 0], "negative": ["30", 1], "latent_image": ["30", 2]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": saver,
    }
    if create_video:
        graph["31"] = {"class_type": "CreateVideo", "inputs": {"images": ["8", 0], "fps": 12.0}}
    return graph


def wan(length: int) -> dict:
    return {"class_type": "WanImageToVideo", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "start_image": ["20", 0],
        "width": 832, "height": 480, "length": length, "batch_size": 1}}


def probe(path: Path) -> tuple[int, tuple[int, int], str]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, (stream.width, stream.height), stream.codec_context.name


async def run_video(client, graph: dict, object_info: dict) -> dict:
    assert validate_graph(graph, object_info) == {}, validate_graph(graph, object_info)
    answer = await queue(client, graph, client_id="v")
    entry = await wait_for_history(client.app, answer["prompt_id"], timeout=10)
    assert entry["status"]["status_str"] == "success", entry["status"]
    return entry


async def test_save_webm_writes_a_real_webm_with_the_latent_nodes_frames(start, object_info, tmp_path) -> None:
    client, state = await start()
    await upload(client, image_bytes(size=(64, 64), seed=4))
    saver = {"class_type": "SaveWEBM", "inputs": {"images": ["8", 0], "filename_prefix": "lora_studio/clip",
                                                  "codec": "vp9", "fps": 16.0, "crf": 32.0}}
    entry = await run_video(client, video_graph(wan(9), saver), object_info)
    # nodes_video.py SaveWEBM: ui.PreviewVideo
    assert entry["outputs"]["9"] == {"images": [{"filename": "clip_00001_.webm", "subfolder": "lora_studio",
                                                 "type": "output"}], "animated": [True]}
    assert probe(tmp_path / "output" / "lora_studio" / "clip_00001_.webm") == (9, (104, 60), "vp9")
    executed = next(d for kind, d, _ in state.sent if kind == "executed")
    assert executed["output"] == entry["outputs"]["9"]
    r = await client.get("/view", params={"filename": "clip_00001_.webm", "subfolder": "lora_studio", "type": "output"})
    assert r.status == 200 and r.content_type == "video/webm"
    assert (await r.read()).startswith(b"\x1a\x45\xdf\xa3")  # EBML
    # Wan decodes ((length - 1) // 4) * 4 + 1 frames
    entry = await run_video(client, video_graph(wan(11), saver), object_info)
    assert probe(tmp_path / "output" / "lora_studio" / entry["outputs"]["9"]["images"][0]["filename"])[0] == 9


async def test_save_video_animated_webp_and_png(start, object_info, tmp_path) -> None:
    client, _ = await start()
    await upload(client, image_bytes(size=(64, 64), seed=5))
    out = tmp_path / "output"
    # CreateVideo -> SaveVideo: an h264 mp4, under "images" with "animated" (ui.PreviewVideo)
    ltxv = {"class_type": "LTXVImgToVideo", "inputs": {
        "positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2], "image": ["20", 0], "width": 768,
        "height": 512, "length": 17, "batch_size": 1, "strength": 1.0}}
    saver = {"class_type": "SaveVideo", "inputs": {"video": ["31", 0], "filename_prefix": "video/aiko",
                                                   "format": "auto", "codec": "auto"}}
    entry = await run_video(client, video_graph(ltxv, saver, create_video=True), object_info)
    assert entry["outputs"]["9"] == {"images": [{"filename": "aiko_00001_.mp4", "subfolder": "video",
                                                 "type": "output"}], "animated": [True]}
    assert probe(out / "video" / "aiko_00001_.mp4") == (17, (96, 64), "h264")
    # SVD's video_frames -> SaveAnimatedWEBP: "animated" is whether there is more than one frame
    svd = {"class_type": "SVD_img2vid_Conditioning", "inputs": {
        "clip_vision": ["40", 1], "init_image": ["20", 0], "vae": ["4", 2], "width": 1024, "height": 576,
        "video_frames": 6, "motion_bucket_id": 127, "fps": 6, "augmentation_level": 0.0}}
    webp = {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["8", 0], "filename_prefix": "anim", "fps": 6.0,
                                                         "lossless": False, "quality": 80, "method": "default"}}
    graph = video_graph(svd, webp)
    graph["40"] = {"class_type": "ImageOnlyCheckpointLoader", "inputs": {"ckpt_name": "svd.safetensors"}}
    entry = await run_video(client, graph, object_info)
    assert entry["outputs"]["9"] == {"images": [{"filename": "anim_00001_.webp", "subfolder": "",
                                                 "type": "output"}], "animated": [True]}
    with Image.open(out / "anim_00001_.webp") as image:
        assert (image.n_frames, image.size) == (6, (128, 72))
        assert image.getexif()[0x0110].startswith("prompt:")
    png = {"class_type": "SaveAnimatedPNG", "inputs": {"images": ["8", 0], "filename_prefix": "anim", "fps": 6.0,
                                                       "compress_level": 4}}
    entry = await run_video(client, video_graph(wan(5), png), object_info)
    # the counter continues over every file of the prefix, whatever its extension (get_save_image_path)
    assert entry["outputs"]["9"] == {"images": [{"filename": "anim_00002_.png", "subfolder": "",
                                                 "type": "output"}], "animated": [True]}
    with Image.open(out / "anim_00002_.png") as image:
        assert image.n_frames == 5
    r = await client.get("/view", params={"filename": "anim_00002_.png [output]"})
    with Image.open(io.BytesIO(await r.read())) as image:
        assert r.content_type == "image/png" and image.n_frames == 5
