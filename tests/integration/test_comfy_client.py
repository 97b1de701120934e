"""ComfyUIClient (synchronous, urllib) against the fake ComfyUI on a real port."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from lora_studio.core.errors import InvalidInput, NotFound, Unavailable, UpstreamError
from lora_studio.generation.client import ComfyUIClient, GraphRefused
from lora_studio.generation.graph import build_txt2img
from PIL import Image
from support.comfy_schema import load_object_info
from support.fake_comfyui import FakeComfyUI, create_fake_comfyui, state_of, wait_for_history

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "comfyui"
SAMPLES = json.loads((FIXTURES / "samples" / "http_and_websocket.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def object_info() -> dict:
    return load_object_info(FIXTURES / "object_info.json")


@pytest.fixture
def sample_graph() -> dict:
    return copy.deepcopy(SAMPLES["get_queue_while_running"]["queue_running"][0][2])


async def start(aiohttp_server, object_info: dict, output_dir: Path, **options) -> tuple[TestServer, FakeComfyUI]:
    server = await aiohttp_server(create_fake_comfyui(object_info, output_dir, **options))
    return server, state_of(server.app)


def base_url(server: TestServer) -> str:
    return str(server.make_url("/"))


def graph_for(prefix: str = "lora_studio/out", **overrides) -> dict:
    params = {"checkpoint": "random_sd15.safetensors", "positive": "1girl, solo", "negative": "blurry",
              "sampler": "Euler a", "scheduler": "normal", "steps": 2, "cfg": 7.0, "width": 64, "height": 64,
              "seed": 1, "lora_name": "aiko.safetensors", "lora_strength": 0.8, "filename_prefix": prefix}
    params.update(overrides)
    return build_txt2img(**params)


def poll_history(client: ComfyUIClient, prompt_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while (entry := client.history(prompt_id)) is None:
        assert time.monotonic() < deadline, "no history entry"
        time.sleep(0.01)
    return entry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_txt2img_round_trip(aiohttp_server, object_info: dict, tmp_path: Path) -> None:
    server, state = await start(aiohttp_server, object_info, tmp_path)
    client = ComfyUIClient(base_url(server))
    graph = graph_for(batch_size=2)
    workflow = {"note": "ui graph", "nodes": [1, 2]}
    answer = await asyncio.to_thread(client.queue_prompt, graph, client_id="cid-1",
                                     extra_pnginfo={"workflow": workflow})
    assert set(answer) == set(SAMPLES["post_prompt_ok"]["body"])
    assert (answer["number"], answer["node_errors"]) == (0, {})
    assert state.prompts == [{"prompt": graph, "client_id": "cid-1", "extra_data": {"extra_pnginfo": {"workflow": workflow}}}]

    entry = await asyncio.to_thread(poll_history, client, answer["prompt_id"])
    assert entry["prompt"] == [0, answer["prompt_id"], graph,
                               {"extra_pnginfo": {"workflow": workflow}, "client_id": "cid-1"}, ["9"]]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                           "execution_success"]
    images = entry["outputs"]["9"]["images"]
    assert images == [{"filename": "out_00001_.png", "subfolder": "lora_studio", "type": "output"},
                      {"filename": "out_00002_.png", "subfolder": "lora_studio", "type": "output"}]

    with Image.open(tmp_path / "lora_studio" / "out_00001_.png") as png:
        assert json.loads(png.text["prompt"]) == graph
        assert json.loads(png.text["workflow"]) == workflow
    data = await asyncio.to_thread(client.view, "out_00002_.png", "lora_studio")
    assert data.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(data)) as png:
        assert json.loads(png.text["prompt"]) == graph
    url = client.view_url("out_00001_.png", "lora_studio")
    assert url == base_url(server).rstrip("/") + "/view?filename=out_00001_.png&subfolder=lora_studio&type=output"

    # ComfyUI's counter continues from the files already in the folder
    again = await asyncio.to_thread(client.queue_prompt, graph_for(seed=2))
    assert again["number"] == 1
    entry = await asyncio.to_thread(poll_history, client, again["prompt_id"])
    assert entry["outputs"]["9"]["images"][0]["filename"] == "out_00003_.png"
    assert "client_id" not in state.prompts[-1] and "extra_data" not in state.prompts[-1]


async def test_refused_graph_is_one_readable_line(aiohttp_server, object_info: dict, tmp_path: Path,
                                                  sample_graph: dict) -> None:
    server, state = await start(aiohttp_server, object_info, tmp_path)
    client = ComfyUIClient(base_url(server))
    del sample_graph["6"]["inputs"]["clip"]
    sample_graph["3"]["inputs"]["sampler_name"] = "DPM++ 2M Karras"
    with pytest.raises(UpstreamError) as caught:
        await asyncio.to_thread(client.queue_prompt, sample_graph)
    error = caught.value
    assert isinstance(error, GraphRefused) and error.status == 502
    assert error.message == (
        "ComfyUI refused the graph: Prompt outputs failed validation — node 3 (KSampler): Value not in list: "
        "sampler_name: 'DPM++ 2M Karras' not in (list of length 42); node 6 (CLIPTextEncode): Required input "
        "is missing: clip")
    assert error.body == SAMPLES["post_prompt_invalid"]["body"]
    assert set(error.node_errors) == {"3", "6"}
    assert state.accepted == [] and state.history == {}


async def test_unknown_node_class_is_refused(aiohttp_server, object_info: dict, tmp_path: Path) -> None:
    server, _ = await start(aiohttp_server, object_info, tmp_path)
    client = ComfyUIClient(base_url(server))
    with pytest.raises(GraphRefused) as caught:
        await asyncio.to_thread(client.queue_prompt, {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    assert caught.value.message == ("ComfyUI refused the graph: Cannot execute because node NoSuchNode does "
                                    "not exist. (Node ID '#1')")
    assert caught.value.body == SAMPLES["post_prompt_unknown_node"]["body"]


async def test_history_queue_object_info(aiohttp_server, object_info: dict, tmp_path: Path) -> None:
    server, state = await start(aiohttp_server, object_info, tmp_path, exec_delay=1.0)
    client = ComfyUIClient(base_url(server))
    assert await asyncio.to_thread(client.history, "0b667594-1ca0-4f49-9f2e-2535f012e064") is None
    assert await asyncio.to_thread(client.queue) == SAMPLES["get_queue_idle"]
    info = await asyncio.to_thread(client.object_info)
    assert info["KSampler"] == object_info["KSampler"] and len(info) == len(object_info)

    graph = graph_for()
    first = await asyncio.to_thread(client.queue_prompt, graph, client_id="c")
    second = await asyncio.to_thread(client.queue_prompt, graph)
    queue = await asyncio.to_thread(client.queue)
    assert [entry[1] for entry in queue["queue_running"]] == [first["prompt_id"]]
    assert [entry[1] for entry in queue["queue_pending"]] == [second["prompt_id"]]
    running = queue["queue_running"][0]
    assert running[0] == first["number"] and running[2] == graph and running[3] == {"client_id": "c"}
    assert running[4] == ["9"]

    await wait_for_history(server.app, second["prompt_id"], timeout=5)
    assert await asyncio.to_thread(client.queue) == SAMPLES["get_queue_idle"]
    assert set(await asyncio.to_thread(client.history, first["prompt_id"])) >= {"prompt", "outputs", "status"}


async def test_free_and_interrupt(aiohttp_server, object_info: dict, tmp_path: Path) -> None:
    server, state = await start(aiohttp_server, object_info, tmp_path, exec_delay=5)
    client = ComfyUIClient(base_url(server))
    assert await asyncio.to_thread(client.free) is None
    await asyncio.to_thread(client.free, unload_models=False, free_memory=True)
    assert state.free_calls == [{"unload_models": True, "free_memory": True},
                                {"unload_models": False, "free_memory": True}]

    answer = await asyncio.to_thread(client.queue_prompt, graph_for())
    while state.running is None:
        await asyncio.sleep(0.01)
    assert await asyncio.to_thread(client.interrupt) is None
    entry = await wait_for_history(server.app, answer["prompt_id"], timeout=2)  # long before exec_delay
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert entry["outputs"] == {}
    await asyncio.to_thread(client.interrupt, "some-prompt-id")
    assert state.interrupt_calls == [{}, {"prompt_id": "some-prompt-id"}]


async def test_headers_and_credentials(aiohttp_server, object_info: dict, tmp_path: Path) -> None:
    secret = "Bearer s3cr3t-token"
    server, state = await start(aiohttp_server, object_info, tmp_path, required_headers={"Authorization": secret})
    good = ComfyUIClient(base_url(server), headers={"Authorization": secret})
    assert await asyncio.to_thread(good.queue) == SAMPLES["get_queue_idle"]
    assert state.requests[-1][2]["Authorization"] == secret

    bad = ComfyUIClient(base_url(server), headers={"Authorization": "Bearer wrong-token"})
    with pytest.raises(UpstreamError) as caught:
        await asyncio.to_thread(bad.queue)
    assert "401" in caught.value.message and "wrong-token" not in caught.value.message

    # user:password in the URL becomes Basic auth, and never shows in messages
    url = base_url(server).replace("http://", "http://aiko:pa55word@")
    client = ComfyUIClient(url)
    assert "pa55word" not in client.base_url and "pa55word" not in repr(client)
    with pytest.raises(UpstreamError) as caught:  # the fake wants the bearer token
        await asyncio.to_thread(client.free)
    assert "pa55word" not in caught.value.message and "aiko" not in caught.value.message
    expected = "Basic " + base64.b64encode(b"aiko:pa55word").decode()
    assert state.requests[-1][2]["Authorization"] == expected
    assert state.free_calls == []


async def test_view_of_missing_file_and_path_safety(aiohttp_server, aiohttp_client, object_info: dict,
                                                    tmp_path: Path) -> None:
    output = tmp_path / "output"
    output.mkdir()
    (tmp_path / "secret.png").write_bytes(b"not yours")
    server, _ = await start(aiohttp_server, object_info, output)
    client = ComfyUIClient(base_url(server))
    with pytest.raises(NotFound):
        await asyncio.to_thread(client.view, "nothing_00001_.png", "lora_studio")
    http = await aiohttp_client(server)
    for query in ({"filename": "../secret.png"}, {"filename": "secret.png", "subfolder": ".."},
                  {"filename": "secret.png", "subfolder": "../"}, {"filename": "x.png", "type": "input"}):
        response = await http.get("/view", params=query)
        assert response.status in (400, 403), query
    response = await http.post("/prompt", data=b"{")
    assert response.status == 400


async def test_prefix_outside_output_folder_fails_the_run(aiohttp_server, object_info: dict, tmp_path: Path,
                                                          sample_graph: dict) -> None:
    output = tmp_path / "output"
    server, _ = await start(aiohttp_server, object_info, output)
    client = ComfyUIClient(base_url(server))
    sample_graph["9"]["inputs"]["filename_prefix"] = "../escaped/x"
    answer = await asyncio.to_thread(client.queue_prompt, sample_graph)
    entry = await asyncio.to_thread(poll_history, client, answer["prompt_id"])
    assert entry["status"]["status_str"] == "error"
    assert not (tmp_path / "escaped").exists()


async def test_unreachable_port_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = ComfyUIClient(url, timeout=2)
    with pytest.raises(Unavailable) as caught:
        await asyncio.to_thread(client.queue)
    assert caught.value.status == 503
    assert caught.value.message.startswith(f"ComfyUI at {url} is not reachable: ")
    with pytest.raises(Unavailable):
        await asyncio.to_thread(client.queue_prompt, graph_for())


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_timeout_is_unavailable(silent_port: int) -> None:
    client = ComfyUIClient(f"http://user:hunter2@127.0.0.1:{silent_port}", timeout=0.3)
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        await asyncio.to_thread(client.history, "abc")
    assert time.monotonic() - started < 5
    assert "not reachable" in caught.value.message and "0.3 s" in caught.value.message
    assert "hunter2" not in caught.value.message


@pytest.mark.parametrize("url", ["", "localhost:8188", "ftp://127.0.0.1:8188", "file:///etc/passwd",
                                 "http://", "http://host:notaport", None])
def test_only_http_urls(url) -> None:
    with pytest.raises(InvalidInput):
        ComfyUIClient(url)


def test_base_url_is_normalised() -> None:
    assert ComfyUIClient("http://127.0.0.1:8188/").base_url == "http://127.0.0.1:8188"
    assert ComfyUIClient("https://box.lan/comfy/").view_url("a.png") == (
        "https://box.lan/comfy/view?filename=a.png&subfolder=&type=output")
