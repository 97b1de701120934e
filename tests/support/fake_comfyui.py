"""A stand-in ComfyUI for tests: the HTTP contract and answer shapes of ComfyUI 0.3.64.

See tests/fixtures/comfyui/samples/http_and_websocket.json for the real answers it mimics. POST
/prompt validates graphs with tests/support/comfy_schema.py (400 + ComfyUI's error body when invalid) and runs
valid ones one at a time in a background task: every SaveImage node writes small real PNGs, with the
`prompt` and extra_pnginfo text chunks ComfyUI writes, into `output_dir`. Everything received is
kept in the app's FakeComfyUI state (`app[FAKE_COMFYUI]` or `state_of(app)`) for assertions.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from support.comfy_schema import is_output_node, validate_graph


@dataclass
class FakeComfyUI:
    object_info: dict
    output_dir: Path
    exec_delay: float = 0.02  # seconds each prompt "runs"
    required_headers: dict[str, str] = field(default_factory=dict)
    prompts: list[Any] = field(default_factory=list)  # every POST /prompt body, valid or not
    accepted: list[str] = field(default_factory=list)  # prompt ids queued, in order
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # method, path?query, headers
    free_calls: list[dict] = field(default_factory=list)
    interrupt_calls: list[dict] = field(default_factory=list)
    history: dict[str, dict] = field(default_factory=dict)
    pending: list[list] = field(default_factory=list)  # [number, prompt_id, graph, extra_data, outputs]
    running: list | None = None
    number: int = 0
    _queue: asyncio.Queue | None = None
    _interrupt: asyncio.Event | None = None


FAKE_COMFYUI = web.AppKey("fake_comfyui", FakeComfyUI)


def state_of(app: web.Application) -> FakeComfyUI:
    return app[FAKE_COMFYUI]


async def wait_for_history(app: web.Application, prompt_id: str, timeout: float = 5.0) -> dict:
    """The history entry of `prompt_id`, once the fake has finished running it."""
    state = state_of(app)
    deadline = time.monotonic() + timeout
    while prompt_id not in state.history:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fake ComfyUI did not finish {prompt_id} within {timeout} s")
        await asyncio.sleep(0.005)
    return state.history[prompt_id]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _error_body(type_: str, message: str, details: str = "") -> dict:
    return {"error": {"type": type_, "message": message, "details": details, "extra_info": {}}, "node_errors": {}}


# -- execution ----------------------------------------------------------------------------------


def _latent_size(graph: dict) -> tuple[int, int, int]:
    """(width, height, batch) of the first EmptyLatentImage, as a small image size."""
    for node in graph.values():
        if node.get("class_type") == "EmptyLatentImage":
            inputs = node.get("inputs", {})
            values = [inputs.get(k) for k in ("width", "height", "batch_size")]
            if all(isinstance(v, int) for v in values):
                width, height, batch = values
                return max(8, min(width // 8, 128)), max(8, min(height // 8, 128)), max(1, min(batch, 16))
    return 8, 8, 1


def _next_counter(folder: Path, base: str) -> int:
    pattern = re.compile(re.escape(base) + r"_(\d{5,})_\.png$")
    counters = [int(m.group(1)) for p in folder.glob("*.png") if (m := pattern.match(p.name))]
    return max(counters, default=0) + 1


def _save_images(state: FakeComfyUI, prompt_id: str, node_id: str, graph: dict, extra_data: dict) -> list[dict]:
    """What ComfyUI's SaveImage does, with tiny images: returns the history `images` list."""
    prefix = graph[node_id].get("inputs", {}).get("filename_prefix")
    prefix = prefix if isinstance(prefix, str) and prefix else "ComfyUI"
    subfolder, _, base = prefix.replace("\\", "/").rpartition("/")
    root = state.output_dir.resolve()
    folder = (root / subfolder).resolve()
    if folder != root and root not in folder.parents:
        raise ValueError(f"Saving image outside the output folder is not allowed. full_output_folder: {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    width, height, batch = _latent_size(graph)
    info = PngInfo()
    info.add_text("prompt", json.dumps(graph))
    for key, value in (extra_data.get("extra_pnginfo") or {}).items():
        info.add_text(key, json.dumps(value))
    relative = folder.relative_to(root).as_posix()
    images = []
    counter = _next_counter(folder, base)
    shade = zlib.crc32(f"{prompt_id}/{node_id}".encode()) % 200
    for index in range(batch):
        name = f"{base}_{counter + index:05}_.png"
        colour = (shade, (40 + 10 * index) % 256, 120)
        Image.new("RGB", (width, height), colour).save(folder / name, pnginfo=info)
        images.append({"filename": name, "subfolder": "" if relative == "." else relative, "type": "output"})
    return images


async def _run(state: FakeComfyUI, entry: list) -> dict:
    number, prompt_id, graph, extra_data, outputs = entry
    messages: list[list] = [["execution_start", {"prompt_id": prompt_id, "timestamp": _now_ms()}],
                            ["execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": _now_ms()}]]
    record: dict[str, Any] = {"prompt": entry, "outputs": {}, "meta": {}}
    assert state._interrupt is not None
    try:
        await asyncio.wait_for(state._interrupt.wait(), timeout=state.exec_delay)
        interrupted = True
    except asyncio.TimeoutError:
        interrupted = False
    if interrupted:
        messages.append(["execution_interrupted", {"prompt_id": prompt_id, "node_id": outputs[0],
                                                   "node_type": graph[outputs[0]]["class_type"],
                                                   "executed": [], "timestamp": _now_ms()}])
        record["status"] = {"status_str": "error", "completed": False, "messages": messages}
        return record
    try:
        for node_id in outputs:
            if graph[node_id]["class_type"] == "SaveImage":
                images = _save_images(state, prompt_id, node_id, graph, extra_data)
                record["outputs"][node_id] = {"images": images}
                record["meta"][node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None,
                                           "real_node_id": node_id}
    except (OSError, ValueError) as exc:
        messages.append(["execution_error", {"prompt_id": prompt_id, "node_id": node_id,
                                             "node_type": graph[node_id]["class_type"], "executed": [],
                                             "exception_message": str(exc), "exception_type": type(exc).__name__,
                                             "traceback": [], "current_inputs": {}, "current_outputs": {},
                                             "timestamp": _now_ms()}])
        record["status"] = {"status_str": "error", "completed": False, "messages": messages}
        return record
    messages.append(["execution_success", {"prompt_id": prompt_id, "timestamp": _now_ms()}])
    record["status"] = {"status_str": "success", "completed": True, "messages": messages}
    return record


async def _worker(state: FakeComfyUI) -> None:
    assert state._queue is not None and state._interrupt is not None
    while True:
        entry = await state._queue.get()
        state.pending.remove(entry)
        state.running = entry
        state._interrupt.clear()
        try:
            state.history[entry[1]] = await _run(state, entry)
        finally:
            state.running = None


# -- routes -------------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    return json.loads(raw)


async def post_prompt(request: web.Request) -> web.Response:
    state = state_of(request.app)
    try:
        body = await _json_body(request)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response(_error_body("invalid_prompt", "Invalid JSON in request body"), status=400)
    state.prompts.append(body)
    if not isinstance(body, dict) or "prompt" not in body:
        return web.json_response(_error_body("no_prompt", "No prompt provided", "No prompt provided"), status=400)
    graph = body["prompt"]
    errors = validate_graph(graph, state.object_info)
    if errors:
        return web.json_response(errors, status=400)
    prompt_id = body.get("prompt_id") if isinstance(body.get("prompt_id"), str) else str(uuid.uuid4())
    extra_data = dict(body.get("extra_data") or {})
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    outputs = [nid for nid, node in graph.items() if is_output_node(node["class_type"], state.object_info)]
    number = state.number
    state.number += 1
    entry = [number, prompt_id, graph, extra_data, outputs]
    state.pending.append(entry)
    state.accepted.append(prompt_id)
    assert state._queue is not None
    state._queue.put_nowait(entry)
    return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": {}})


async def get_history(request: web.Request) -> web.Response:
    history = state_of(request.app).history
    max_items = request.query.get("max_items")
    items = list(history.items())
    if max_items and max_items.isdigit():
        items = items[-int(max_items):] if int(max_items) else []
    return web.json_response(dict(items))


async def get_history_id(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    entry = state_of(request.app).history.get(prompt_id)
    return web.json_response({prompt_id: entry} if entry is not None else {})


async def get_queue(request: web.Request) -> web.Response:
    state = state_of(request.app)
    running = [state.running] if state.running is not None else []
    return web.json_response({"queue_running": running, "queue_pending": list(state.pending)})


async def post_free(request: web.Request) -> web.Response:
    try:
        body = await _json_body(request)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    state_of(request.app).free_calls.append(body if isinstance(body, dict) else {})
    return web.Response(status=200)


async def post_interrupt(request: web.Request) -> web.Response:
    state = state_of(request.app)
    try:
        body = await _json_body(request)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    body = body if isinstance(body, dict) else {}
    state.interrupt_calls.append(body)
    wanted = body.get("prompt_id")
    if state.running is not None and (not wanted or wanted == state.running[1]) and state._interrupt:
        state._interrupt.set()
    return web.Response(status=200)


async def get_object_info(request: web.Request) -> web.Response:
    return web.json_response(state_of(request.app).object_info)


async def get_object_info_node(request: web.Request) -> web.Response:
    node_class = request.match_info["node_class"]
    info = state_of(request.app).object_info
    return web.json_response({node_class: info[node_class]} if node_class in info else {})


async def get_view(request: web.Request) -> web.StreamResponse:
    state = state_of(request.app)
    filename = request.query.get("filename", "")
    subfolder = request.query.get("subfolder", "")
    if request.query.get("type", "output") != "output":
        raise web.HTTPBadRequest(text="this fake ComfyUI only serves type=output")
    if not filename or "/" in filename or "\\" in filename or ".." in filename or filename.startswith("."):
        raise web.HTTPBadRequest()
    root = state.output_dir.resolve()
    path = (root / subfolder / filename).resolve()
    if root not in path.parents:
        raise web.HTTPForbidden()
    if not path.is_file():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Content-Disposition": f'filename="{filename}"'})


@web.middleware
async def _record_and_check(request: web.Request, handler: Any) -> web.StreamResponse:
    state = state_of(request.app)
    state.requests.append((request.method, request.path_qs, dict(request.headers)))
    for name, value in state.required_headers.items():
        if request.headers.get(name) != value:
            raise web.HTTPUnauthorized(text="401: Unauthorized")
    return await handler(request)


def create_fake_comfyui(object_info: dict, output_dir: Path, *, exec_delay: float = 0.02,
                        required_headers: Mapping[str, str] | None = None) -> web.Application:
    """An aiohttp app answering like ComfyUI; `required_headers` makes it answer 401 without them."""
    app = web.Application(middlewares=[_record_and_check])
    state = FakeComfyUI(object_info=object_info, output_dir=Path(output_dir), exec_delay=exec_delay,
                        required_headers=dict(required_headers or {}))
    app[FAKE_COMFYUI] = state

    async def worker_ctx(app: web.Application) -> AsyncIterator[None]:
        state._queue = asyncio.Queue()
        state._interrupt = asyncio.Event()
        task = asyncio.create_task(_worker(state))
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    app.cleanup_ctx.append(worker_ctx)
    app.router.add_post("/prompt", post_prompt)
    app.router.add_get("/history", get_history)
    app.router.add_get("/history/{prompt_id}", get_history_id)
    app.router.add_get("/queue", get_queue)
    app.router.add_post("/free", post_free)
    app.router.add_post("/interrupt", post_interrupt)
    app.router.add_get("/object_info", get_object_info)
    app.router.add_get("/object_info/{node_class}", get_object_info_node)
    app.router.add_get("/view", get_view)
    return app
