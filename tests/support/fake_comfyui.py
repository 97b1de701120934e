"""A stand-in ComfyUI for tests: the HTTP and websocket contract of ComfyUI 0.3.64 (Comfy-Org/ComfyUI a125cd8).

tests/fixtures/comfyui/samples/http_and_websocket.json holds the real answers it mimics; the comments name
the ComfyUI function each part copies (server.py, execution.py, main.py, folder_paths.py, nodes.py,
comfy_extras/nodes_video.py, nodes_images.py, comfy_execution/graph.py and progress.py).

- POST /prompt validates graphs with tests/support/comfy_schema.py (400 + ComfyUI's error body) and, like the
  LoadImage/LoadVideo nodes' own VALIDATE_INPUTS, refuses a file that is not in the input folder
  (`custom_validation_failed`); valid prompts run one at a time, lowest number first, in a background task.
- POST /queue deletes pending prompts or clears the queue; POST /interrupt stops the running one; POST
  /upload/image stores into `input_dir`; GET /view serves the output (and temp) folder.
- GET /ws?clientId=… sends "status" to every client and a prompt's execution messages to the client that
  queued it, in the order the recording shows (execution_start, execution_cached, progress_state,
  executing, progress per sampler step, executed, execution_success/error/interrupted, executing null).
- Output nodes write small real files: SaveImage/PreviewImage PNGs with ComfyUI's text chunks, SaveWEBM
  (webm), SaveVideo (mp4 from CreateVideo), SaveAnimatedWEBP and SaveAnimatedPNG, sized and counted from the
  graph (EmptyLatentImage, a loaded image, ImageScale, the video latent node's width/height/length); see
  `fake_output_size` for how a graph's size becomes the written size.
- Test hooks on the state: `fail_next`, `hold`/`release`, `restart`; everything received and sent is kept
  for assertions (`state_of(app)`).

Not mimicked: the output cache (a repeated prompt runs again; execution_cached lists no nodes), previews
(binary frames), partial execution, /view's preview/channel options and type=input (refused, as tests
pin), and prompt-level errors ComfyUI raises for malformed JSON (500 there, 400 here).
(Over 500 lines: it stands in for one program — routes, executor, progress and savers belong together.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import errno
import hashlib
import heapq
import json
import mimetypes
import os
import random
import time
import traceback
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from support.comfy_schema import is_output_node, validate_graph

MAX_UPLOAD_BYTES = 100 * 1024 * 1024  # comfy/cli_args.py --max-upload-size default (100 MB)
MAXIMUM_HISTORY_SIZE = 10000  # execution.py
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")  # execution.py, dropped from history
SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 100 * 1024 * 1024 * 1.0}  # feature_flags.py
SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
# Nodes whose VALIDATE_INPUTS checks a file of the input folder: class -> (input, message) (nodes.py, nodes_video.py).
FILE_INPUT_CHECKS = {
    "LoadImage": ("image", "Invalid image file: {}"),
    "LoadImageMask": ("image", "Invalid image file: {}"),
    "LoadImageOutput": ("image", "Invalid image file: {}"),
    "LoadVideo": ("file", "Invalid video file: {}"),
}
MAX_IMAGES = 64  # images one saver writes (a test fake: a huge batch is cut here)
MAX_FRAMES = 512  # frames one video saver writes


def fake_output_size(width: int, height: int, *, video: bool = False) -> tuple[int, int]:
    """The size the fake writes for a graph size: an eighth, within 8..128 px (even for videos, which
    yuv420p needs). A 512x768 EmptyLatentImage gives 64x96 PNGs; a 832x480 Wan video 104x60 frames."""
    w, h = max(8, min(width // 8, 128)), max(8, min(height // 8, 128))
    if video:
        w, h = w + w % 2, h + h % 2
    return w, h


@dataclass
class FakeComfyUI:
    object_info: dict
    output_dir: Path
    exec_delay: float = 0.02  # seconds each prompt "runs", spread over its sampler steps
    required_headers: dict[str, str] = field(default_factory=dict)
    input_dir: Path | None = None  # ComfyUI's input folder (uploads, LoadImage); default output_dir.parent / "input"
    temp_dir: Path | None = None  # PreviewImage's folder; default output_dir.parent / "temp"
    prompts: list[Any] = field(default_factory=list)  # every POST /prompt body, valid or not
    accepted: list[str] = field(default_factory=list)  # prompt ids queued, in order
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)  # method, path?query, headers
    free_calls: list[dict] = field(default_factory=list)
    interrupt_calls: list[dict] = field(default_factory=list)
    queue_calls: list[Any] = field(default_factory=list)  # every POST /queue body
    uploads: list[dict] = field(default_factory=list)  # every stored upload: name, subfolder, type, path, …
    sent: list[tuple[str, Any, str | None]] = field(default_factory=list)  # websocket messages: type, data, sid (None: all)
    history: dict[str, dict] = field(default_factory=dict)
    pending: list[list] = field(default_factory=list)  # a heap of [number, prompt_id, graph, extra_data, outputs]
    running: list | None = None
    number: int = 0
    client_id: str | None = None  # ComfyUI's server.client_id: the client of the prompt running (or run last)
    last_node_id: str | None = None
    sockets: dict[str, web.WebSocketResponse] = field(default_factory=dict)
    restarts: int = 0
    held: bool = False
    _failures: list[tuple[str, str | None, str]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _worker_task: asyncio.Task | None = None
    _publisher_task: asyncio.Task | None = None
    _messages: asyncio.Queue | None = None
    _wake: asyncio.Event | None = None
    _interrupt: asyncio.Event | None = None
    _gate: asyncio.Event | None = None

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.input_dir = Path(self.input_dir) if self.input_dir is not None else self.output_dir.parent / "input"
        self.temp_dir = Path(self.temp_dir) if self.temp_dir is not None else self.output_dir.parent / "temp"

    # -- test hooks --------------------------------------------------------------------------------

    def fail_next(self, message: str, *, node_id: str | None = None, exception_type: str = "RuntimeError") -> None:
        """The next prompt to run ends with execution_error carrying `message` (ComfyUI appends "\\n"), raised
        by `node_id` or else by its first sampler, else its first output node."""
        self._failures.append((message, node_id, exception_type))

    def hold(self) -> None:
        """Keep the running prompt running: it stops after its next sampler progress message (a graph
        without a sampler: before its first output node saves) until `release()` or /interrupt."""
        self.held = True
        self._on_loop(lambda: self._gate.clear() if self._gate else None)

    def release(self) -> None:
        self.held = False
        self._on_loop(lambda: self._gate.set() if self._gate else None)

    def restart(self) -> None:
        """What a ComfyUI restart loses: the queue, the running prompt (it never ends), the history, the
        prompt counter and the websockets (closed). Files on disk and the test records stay."""
        self._on_loop(self._restart)

    # -- ComfyUI's server ----------------------------------------------------------------------------

    def queue_info(self) -> dict:
        """server.py get_queue_info: pending plus running."""
        return {"exec_info": {"queue_remaining": len(self.pending) + (1 if self.running is not None else 0)}}

    def send(self, event: str, data: Any, sid: str | None = None) -> None:
        """server.py send_sync: queued for the publish loop; sid None goes to every client."""
        self.sent.append((event, data, sid))
        if self._messages is not None:
            self._messages.put_nowait((event, data, sid))

    def queue_updated(self) -> None:
        self.send("status", {"status": self.queue_info()})

    async def send_now(self, event: str, data: Any, sid: str | None = None) -> None:
        """server.py send_json (with send_socket_catch_exception): a closed socket is skipped."""
        self.sent.append((event, data, sid))
        await self._deliver(event, data, sid)

    async def _deliver(self, event: str, data: Any, sid: str | None) -> None:
        message = {"type": event, "data": data}
        targets = list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
        for ws in targets:
            try:
                await ws.send_json(message)
            except (ConnectionError, RuntimeError):
                pass

    def _on_loop(self, fn: Callable[[], Any]) -> None:
        """Run `fn` on the fake's event loop (tests may call the hooks from another thread)."""
        loop = self._loop
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if loop is None or current is loop or loop.is_closed():
            fn()
            return
        done: concurrent.futures.Future = concurrent.futures.Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(call)
        done.result(timeout=10)

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._messages = asyncio.Queue()
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._gate = asyncio.Event()
        if not self.held:
            self._gate.set()
        self._worker_task = asyncio.create_task(_worker(self))
        self._publisher_task = asyncio.create_task(_publish(self))

    def _restart(self) -> None:
        self.restarts += 1
        if self._worker_task is not None:
            self._worker_task.cancel()
        self.pending.clear()
        self.running = None
        self.history.clear()
        self.number = 0
        self.client_id = None
        self.last_node_id = None
        if self._messages is not None:
            while not self._messages.empty():
                self._messages.get_nowait()
        for ws in list(self.sockets.values()):
            asyncio.ensure_future(ws.close(code=WSCloseCode.GOING_AWAY, message=b"restart"))
        self.sockets = {}
        if self._loop is not None:
            self._interrupt = asyncio.Event()
            self._wake = asyncio.Event()
            self._worker_task = asyncio.create_task(_worker(self))


FAKE_COMFYUI = web.AppKey("fake_comfyui", FakeComfyUI)


def state_of(app: web.Application) -> FakeComfyUI:
    return app[FAKE_COMFYUI]


async def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"fake ComfyUI: {what} within {timeout} s")
        await asyncio.sleep(0.005)
    return result


async def wait_for_history(app: web.Application, prompt_id: str, timeout: float = 5.0) -> dict:
    """The history entry of `prompt_id`, once the fake has finished running it."""
    state = state_of(app)
    await _until(lambda: prompt_id in state.history, timeout, f"{prompt_id} did not finish")
    return state.history[prompt_id]


async def wait_for_running(app: web.Application, prompt_id: str | None = None, timeout: float = 5.0) -> list:
    """The running queue entry (of `prompt_id`, when given), once it runs."""
    state = state_of(app)

    def running() -> list | None:
        entry = state.running
        return entry if entry is not None and prompt_id in (None, entry[1]) else None

    return await _until(running, timeout, f"{prompt_id or 'no prompt'} did not start")


async def wait_for_message(app: web.Application, event: str, prompt_id: str | None = None,
                           timeout: float = 5.0) -> dict:
    """The data of the first websocket message of type `event` (for `prompt_id`, when given) sent so far."""
    state = state_of(app)

    def found() -> dict | None:
        for kind, data, _ in state.sent:
            if kind == event and (prompt_id is None or (isinstance(data, dict) and data.get("prompt_id") == prompt_id)):
                return data
        return None

    return await _until(found, timeout, f"no {event!r} message for {prompt_id or 'any prompt'}")


def _now_ms() -> int:
    return int(time.time() * 1000)


def _error_body(type_: str, message: str, details: str = "") -> dict:
    return {"error": {"type": type_, "message": message, "details": details, "extra_info": {}}, "node_errors": {}}


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# -- folders (folder_paths.py) ---------------------------------------------------------------------------


def _dir_by_type(state: FakeComfyUI, kind: str | None) -> Path | None:
    """folder_paths.get_directory_by_type."""
    return {"output": state.output_dir, "input": state.input_dir, "temp": state.temp_dir}.get(kind or "")


def annotated_path(state: FakeComfyUI, name: str) -> Path:
    """folder_paths.get_annotated_filepath: "x.png [output]" is in the output folder, "x.png [input]" (or
    no annotation) in the input folder, "x.png [temp]" in the temp folder."""
    for suffix, kind in ((" [output]", "output"), (" [input]", "input"), (" [temp]", "temp")):
        if name.endswith(suffix.strip()):
            # folder_paths.annotated_filepath cuts len(suffix) characters (with the space) off the end
            return _dir_by_type(state, kind) / name[: -len(suffix)]
    return state.input_dir / name


def _save_path(root: Path, prefix: str, width: int, height: int) -> tuple[Path, str, int, str]:
    """folder_paths.get_save_image_path: (folder, file name base, next counter, subfolder)."""
    if "%" in prefix:  # compute_vars
        now = time.localtime()
        for key, value in (("%width%", width), ("%height%", height), ("%year%", now.tm_year),
                           ("%month%", f"{now.tm_mon:02}"), ("%day%", f"{now.tm_mday:02}"),
                           ("%hour%", f"{now.tm_hour:02}"), ("%minute%", f"{now.tm_min:02}"),
                           ("%second%", f"{now.tm_sec:02}")):
            prefix = prefix.replace(key, str(value))
    normal = os.path.normpath(prefix)
    subfolder, filename = os.path.dirname(normal), os.path.basename(normal)
    output_dir = os.path.abspath(root)
    folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(folder))) != output_dir:
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed."
                        f"\n full_output_folder: {os.path.abspath(folder)}\n         output_dir: {output_dir}")
    counters = []
    try:
        for name in os.listdir(folder):
            head = name[:len(filename) + 1]
            if os.path.normcase(head[:-1]) == os.path.normcase(filename) and head[-1:] == "_":
                try:
                    counters.append(int(name[len(filename) + 1:].split("_")[0]))
                except ValueError:
                    counters.append(0)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
    return Path(folder), filename, max(counters, default=0) + 1, subfolder


# -- POST /prompt validation of input files (LoadImage.VALIDATE_INPUTS through execution.validate_inputs) -----


def _upstream(graph: dict, node_id: str) -> set[str]:
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        current = stack.pop()
        if current in seen or current not in graph:
            continue
        seen.add(current)
        inputs = graph[current].get("inputs")
        stack.extend(v[0] for v in (inputs.values() if isinstance(inputs, dict) else ()) if _is_link(v))
    return seen


def _file_input_errors(state: FakeComfyUI, graph: dict, outputs: list[str]) -> dict[str, dict]:
    """node_errors for loader nodes (that an output depends on) whose file is not there."""
    node_errors: dict[str, dict] = {}
    for output in outputs:
        for node_id in sorted(_upstream(graph, output)):
            node = graph[node_id]
            check = FILE_INPUT_CHECKS.get(node["class_type"])
            value = (node.get("inputs") or {}).get(check[0]) if check else None
            if not isinstance(value, str) or annotated_path(state, value).exists():
                continue
            entry = node_errors.setdefault(node_id, {
                "errors": [{"type": "custom_validation_failed", "message": "Custom validation failed for node",
                            "details": f"{check[0]} - {check[1].format(value)}",
                            "extra_info": {"input_name": check[0]}}],
                "dependent_outputs": [], "class_type": node["class_type"]})
            entry["dependent_outputs"].append(output)
    return node_errors


# -- the executor -------------------------------------------------------------------------------------------


def execution_order(graph: dict, outputs: list[str], object_info: Mapping[str, dict]) -> list[str]:
    """The order ComfyUI runs the nodes in: comfy_execution/graph.py ExecutionList (add_node from each
    output, then ux_friendly_pick_node among the ready nodes), without lazy inputs or a cache."""
    pending: dict[str, bool] = {}
    block_count: dict[str, int] = {}
    blocking: dict[str, dict[str, dict]] = {}

    def lazy(node_id: str, name: str) -> bool:
        inputs = (object_info.get(graph[node_id]["class_type"]) or {}).get("input") or {}
        for category in ("required", "optional"):
            spec = (inputs.get(category) or {}).get(name)
            if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict):
                return bool(spec[1].get("lazy"))
        return False

    def add_strong_link(from_id: str, socket: int, to_id: str) -> None:
        add_node(from_id)
        if to_id not in blocking[from_id]:
            blocking[from_id][to_id] = {}
            block_count[to_id] += 1
        blocking[from_id][to_id][socket] = True

    def add_node(node_id: str) -> None:
        stack, links = [node_id], []
        while stack:
            unique_id = stack.pop()
            if unique_id in pending:
                continue
            pending[unique_id] = True
            block_count[unique_id] = 0
            blocking[unique_id] = {}
            for name, value in (graph[unique_id].get("inputs") or {}).items():
                if _is_link(value) and value[0] in graph and not lazy(unique_id, name):
                    stack.append(value[0])
                    links.append((value[0], value[1], unique_id))
        for link in links:
            add_strong_link(*link)

    def is_output(node_id: str) -> bool:
        return is_output_node(graph[node_id]["class_type"], object_info)

    def pick(ready: list[str]) -> str:
        for node_id in ready:
            if is_output(node_id):
                return node_id
        for node_id in ready:
            if any(is_output(b) for b in blocking[node_id]):
                return node_id
        for node_id in ready:
            if any(is_output(b2) for b in blocking[node_id] for b2 in blocking[b]):
                return node_id
        return ready[0]

    for output in outputs:
        add_node(output)
    order = []
    while pending:
        ready = [n for n in pending if block_count[n] == 0]
        if not ready:
            break  # a cycle: validation refuses those
        node_id = pick(ready)
        order.append(node_id)
        del pending[node_id]
        for blocked in blocking[node_id]:
            block_count[blocked] -= 1
        del blocking[node_id]
    return order


@dataclass(frozen=True)
class _Shape:
    width: int
    height: int
    frames: int
    fps: float | None = None


# Video latent nodes: class prefix -> (spatial, temporal) compression of the VAE that decodes them.
_VIDEO_VAES = (("Wan22", 16, 4), ("Wan", 8, 4), ("Hunyuan", 8, 4), ("EmptyHunyuan", 8, 4), ("LTXV", 32, 8),
               ("EmptyLTXV", 32, 8), ("Cosmos", 8, 8), ("EmptyCosmos", 8, 8), ("EmptyMochi", 8, 6))
_MEDIA = ("IMAGE", "LATENT", "VIDEO")


class _Graph:
    """What the fake needs to know of a graph: each node's output size and frame count, and sampler steps."""

    def __init__(self, state: FakeComfyUI, graph: dict):
        self.state, self.graph, self.info = state, graph, state.object_info

    def output_type(self, link: list) -> str | None:
        node = self.graph.get(link[0])
        outputs = (self.info.get(node["class_type"]) or {}).get("output") or [] if node else []
        return outputs[link[1]] if 0 <= link[1] < len(outputs) else None

    def shape(self, link: Any, depth: int = 0) -> _Shape | None:
        """The size and frame count of the IMAGE/LATENT/VIDEO a link carries, in pixels."""
        if not _is_link(link) or link[0] not in self.graph or depth > 64:
            return None
        node = self.graph[link[0]]
        kind, inputs = node["class_type"], node.get("inputs") or {}
        src = (lambda name: self.shape(inputs.get(name), depth + 1))  # noqa: E731
        width, height = _int(inputs.get("width")), _int(inputs.get("height"))
        if kind in ("LoadImage", "LoadImageMask", "LoadImageOutput") and isinstance(inputs.get("image"), str):
            path = annotated_path(self.state, inputs["image"])
            try:
                with Image.open(path) as img:  # nodes.py LoadImage: every frame of the first frame's size
                    return _Shape(img.width, img.height, getattr(img, "n_frames", 1) if img.format != "MPO" else 1)
            except OSError:
                return None
        if kind == "LoadVideo" and isinstance(inputs.get("file"), str):
            return _probe_video(annotated_path(self.state, inputs["file"]))
        if kind in ("ImageScale", "LatentUpscale") and width is not None and height is not None:
            source = src("image" if kind == "ImageScale" else "samples")
            if source is None:
                return _Shape(width or height or 512, height or width or 512, 1)
            if width == 0 and height == 0:
                return source
            if width == 0:  # comfy.utils.common_upscale callers keep the aspect ratio when one side is 0
                width = max(1, round(source.width * height / source.height))
            elif height == 0:
                height = max(1, round(source.height * width / source.width))
            return _Shape(width, height, source.frames, source.fps)
        if kind in ("ImageScaleBy", "LatentUpscaleBy") and _number(inputs.get("scale_by")) is not None:
            source = src("image" if kind == "ImageScaleBy" else "samples")
            scale = _number(inputs["scale_by"])
            return source and _Shape(max(1, round(source.width * scale)), max(1, round(source.height * scale)),
                                     source.frames, source.fps)
        if kind.startswith("VAEEncode"):  # comfy/sd.py vae_encode_crop_pixels: multiples of 8
            source = src("pixels")
            return source and _Shape(max(8, source.width // 8 * 8), max(8, source.height // 8 * 8), source.frames)
        if kind in ("RepeatLatentBatch", "RepeatImageBatch") and _int(inputs.get("amount")):
            source = src("samples" if kind == "RepeatLatentBatch" else "image")
            return source and _Shape(source.width, source.height, source.frames * inputs["amount"], source.fps)
        if kind == "CreateVideo":
            source = src("images")
            return source and _Shape(source.width, source.height, source.frames, _number(inputs.get("fps")))
        if width and height and self.output_type(link) == "LATENT":
            return self._latent(kind, inputs, width, height)
        for value in inputs.values():  # KSampler, VAEDecode, GetVideoComponents, …: the media they were given
            if _is_link(value) and self.output_type(value) in _MEDIA:
                found = self.shape(value, depth + 1)
                if found is not None:
                    return found
        if width and height:  # EmptyImage and the like
            return _Shape(width, height, _int(inputs.get("batch_size")) or 1)
        return None

    @staticmethod
    def _latent(kind: str, inputs: dict, width: int, height: int) -> _Shape:
        """EmptyLatentImage and the video latent nodes: the size and frames their VAE decodes to."""
        batch = _int(inputs.get("batch_size")) or 1
        spatial, temporal = next(((s, t) for prefix, s, t in _VIDEO_VAES if kind.startswith(prefix)), (8, 1))
        length = _int(inputs.get("length"))
        if length is None:
            frames = _int(inputs.get("video_frames")) or 1  # SVD_img2vid_Conditioning: one latent per frame
        else:  # latent frames ((length - 1) // t) + 1, decoded back to (latent - 1) * t + 1 frames
            frames = ((length - 1) // temporal) * temporal + 1
        return _Shape(max(spatial, width // spatial * spatial), max(spatial, height // spatial * spatial),
                      max(1, frames) * batch)

    def media_shape(self, node_id: str, name: str) -> _Shape:
        """The shape of an output node's media input; without a known source, the first EmptyLatentImage
        of the graph (what the fake always did), else 512x512x1."""
        found = self.shape((self.graph[node_id].get("inputs") or {}).get(name))
        if found is not None:
            return found
        for node in self.graph.values():
            inputs = node.get("inputs") or {}
            if node.get("class_type") == "EmptyLatentImage" and _int(inputs.get("width")) and _int(inputs.get("height")):
                return _Shape(inputs["width"], inputs["height"], _int(inputs.get("batch_size")) or 1)
        return _Shape(512, 512, 1)

    def steps(self, node_id: str) -> int:
        """Progress steps of a sampler: ComfyUI's progress bar counts the sigmas it samples."""
        node = self.graph[node_id]
        kind, inputs = node["class_type"], node.get("inputs") or {}
        if kind == "KSampler":
            return self._literal_int(node_id, "steps", 20)
        if kind == "KSamplerAdvanced":
            steps = self._literal_int(node_id, "steps", 20)
            start, end = _int(inputs.get("start_at_step")) or 0, _int(inputs.get("end_at_step"))
            return max(0, min(steps, end if end is not None else steps) - start)
        link, depth = inputs.get("sigmas"), 0
        while _is_link(link) and link[0] in self.graph and depth < 16:  # BasicScheduler, KarrasScheduler, …
            if "steps" in (self.graph[link[0]].get("inputs") or {}):
                return self._literal_int(link[0], "steps", 20)
            link, depth = (self.graph[link[0]].get("inputs") or {}).get("sigmas"), depth + 1
        return 1

    def _literal_int(self, node_id: str, name: str, default: int) -> int:
        value = (self.graph[node_id].get("inputs") or {}).get(name)
        if _int(value) is not None:
            return max(0, value)
        if _is_link(value) and value[0] in self.graph:  # a primitive node feeding it
            inner = self.graph[value[0]].get("inputs") or {}
            if _int(inner.get("value")) is not None:
                return max(0, inner["value"])
        return default


def _probe_video(path: Path) -> _Shape | None:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = stream.frames or sum(1 for _ in container.decode(stream))
            return _Shape(stream.width, stream.height, max(1, frames), float(stream.average_rate or 24))
    except (OSError, IndexError, av.error.FFmpegError):
        return None


def _frames(prompt_id: str, node_id: str, shape: _Shape, video: bool, limit: int) -> list[Image.Image]:
    """Small frames of a graph's size, one colour per frame (so a video is not a still)."""
    width, height = fake_output_size(shape.width, shape.height, video=video)
    shade = zlib.crc32(f"{prompt_id}/{node_id}".encode()) % 200
    return [Image.new("RGB", (width, height), (shade, (40 + 10 * i) % 256, (120 + 7 * i) % 256))
            for i in range(max(1, min(shape.frames, limit)))]


def _png_info(graph: dict, extra_data: dict) -> PngInfo:
    """nodes.py SaveImage: the prompt and each extra_pnginfo entry as PNG text chunks."""
    info = PngInfo()
    info.add_text("prompt", json.dumps(graph))
    for key, value in (extra_data.get("extra_pnginfo") or {}).items():
        info.add_text(key, json.dumps(value))
    return info


def _save_images(state: FakeComfyUI, prompt_id: str, node_id: str, graph: dict, extra_data: dict,
                 shape: _Shape, preview: bool) -> dict:
    """nodes.py SaveImage.save_images (PreviewImage: the temp folder, prefix ComfyUI_temp_xxxxx)."""
    inputs = graph[node_id].get("inputs") or {}
    if preview:
        prefix = "ComfyUI_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
        root, kind = state.temp_dir, "temp"
    else:
        prefix = inputs.get("filename_prefix") if isinstance(inputs.get("filename_prefix"), str) else "ComfyUI"
        root, kind = state.output_dir, "output"
    frames = _frames(prompt_id, node_id, shape, False, MAX_IMAGES)
    folder, filename, counter, subfolder = _save_path(root, prefix, frames[0].width, frames[0].height)
    info = _png_info(graph, extra_data)
    images = []
    for batch_number, image in enumerate(frames):
        name = f"{filename.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        image.save(folder / name, pnginfo=info, compress_level=1 if preview else 4)
        images.append({"filename": name, "subfolder": subfolder, "type": kind})
        counter += 1
    return {"images": images}


def _prefix(inputs: dict, default: str) -> str:
    value = inputs.get("filename_prefix")
    return value if isinstance(value, str) else default


def _save_webm(state: FakeComfyUI, prompt_id: str, node_id: str, graph: dict, extra_data: dict,
               shape: _Shape) -> dict:
    """comfy_extras/nodes_video.py SaveWEBM.execute: ui.PreviewVideo -> {"images": [...], "animated": [true]}."""
    import av

    inputs = graph[node_id].get("inputs") or {}
    frames = _frames(prompt_id, node_id, shape, True, MAX_FRAMES)
    folder, filename, counter, subfolder = _save_path(state.output_dir, _prefix(inputs, "ComfyUI"),
                                                      frames[0].width, frames[0].height)
    file = f"{filename}_{counter:05}_.webm"
    fps = _number(inputs.get("fps")) or 24.0
    codec = {"vp9": "libvpx-vp9", "av1": "libsvtav1"}.get(inputs.get("codec"), "libvpx-vp9")
    metadata = {"prompt": json.dumps(graph)}
    metadata.update({k: json.dumps(v) for k, v in (extra_data.get("extra_pnginfo") or {}).items()})
    try:
        _encode(folder / file, "webm", codec, fps, frames, metadata, {"crf": str(_number(inputs.get("crf")) or 32)})
    except (av.error.FFmpegError, ValueError):  # SVT-AV1 refuses the fake's tiny frames: VP9 then
        _encode(folder / file, "webm", "libvpx-vp9", fps, frames, metadata, {"crf": "32"})
    return {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}], "animated": [True]}


def _save_video(state: FakeComfyUI, prompt_id: str, node_id: str, graph: dict, extra_data: dict,
                shape: _Shape) -> dict:
    """comfy_extras/nodes_video.py SaveVideo.execute + VideoFromComponents.save_to (mp4, h264, metadata
    with movflags use_metadata_tags): ui.PreviewVideo -> {"images": [...], "animated": [true]}."""
    inputs = graph[node_id].get("inputs") or {}
    if inputs.get("format", "auto") not in ("auto", "mp4"):
        raise ValueError("Only MP4 format is supported for now")
    if inputs.get("codec", "auto") not in ("auto", "h264"):
        raise ValueError("Only H264 codec is supported for now")
    frames = _frames(prompt_id, node_id, shape, True, MAX_FRAMES)
    folder, filename, counter, subfolder = _save_path(state.output_dir, _prefix(inputs, "video/ComfyUI"),
                                                      frames[0].width, frames[0].height)
    file = f"{filename}_{counter:05}_.mp4"
    metadata = dict(extra_data.get("extra_pnginfo") or {})
    metadata["prompt"] = graph
    _encode(folder / file, "mp4", "h264", shape.fps or 30.0, frames, {k: json.dumps(v) for k, v in metadata.items()},
            {}, container_options={"movflags": "use_metadata_tags"})
    return {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}], "animated": [True]}


def _encode(path: Path, fmt: str, codec: str, fps: float, frames: list[Image.Image], metadata: dict[str, str],
            options: dict[str, str], container_options: dict[str, str] | None = None) -> None:
    import av

    with av.open(str(path), mode="w", format=fmt, options=container_options or {}) as container:
        for key, value in metadata.items():
            container.metadata[key] = value
        stream = container.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p10le" if codec == "libsvtav1" else "yuv420p"
        if codec.startswith("libvpx"):
            stream.bit_rate = 0
            options = {**options, "deadline": "realtime", "cpu-used": "8"}
        stream.options = options
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        container.mux(stream.encode())


def _save_animated(state: FakeComfyUI, prompt_id: str, node_id: str, graph: dict, extra_data: dict,
                   shape: _Shape, webp: bool) -> dict:
    """comfy_extras/nodes_images.py SaveAnimatedWEBP ("animated": [more than one frame]) and SaveAnimatedPNG
    ("animated": [true]): one file of every frame, the prompt in EXIF (webp) or "comf" chunks (png)."""
    inputs = graph[node_id].get("inputs") or {}
    frames = _frames(prompt_id, node_id, shape, False, MAX_FRAMES)
    folder, filename, counter, subfolder = _save_path(state.output_dir, _prefix(inputs, "ComfyUI"),
                                                      frames[0].width, frames[0].height)
    duration = int(1000.0 / (_number(inputs.get("fps")) or 6.0))
    extra = extra_data.get("extra_pnginfo") or {}
    if webp:
        file = f"{filename}_{counter:05}_.webp"
        exif = frames[0].getexif()
        exif[0x0110] = f"prompt:{json.dumps(graph)}"
        for offset, (key, value) in enumerate(extra.items()):
            exif[0x010F - offset] = f"{key}:{json.dumps(value)}"
        lossless = inputs.get("lossless", True)
        quality = _int(inputs.get("quality"))
        method = {"default": 4, "fastest": 0, "slowest": 6}.get(inputs.get("method"), 4)
        frames[0].save(folder / file, save_all=True, duration=duration, append_images=frames[1:], exif=exif,
                       lossless=bool(lossless), quality=80 if quality is None else quality, method=method)
        return {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}],
                "animated": [len(frames) != 1]}
    file = f"{filename}_{counter:05}_.png"
    info = PngInfo()
    info.add(b"comf", b"prompt\0" + json.dumps(graph).encode("latin-1", "strict"), after_idat=True)
    for key, value in extra.items():
        info.add(b"comf", key.encode("latin-1", "strict") + b"\0" + json.dumps(value).encode("latin-1", "strict"),
                 after_idat=True)
    level = _int(inputs.get("compress_level"))
    frames[0].save(folder / file, pnginfo=info, compress_level=4 if level is None else level, save_all=True,
                   duration=duration, append_images=frames[1:])
    return {"images": [{"filename": file, "subfolder": subfolder, "type": "output"}], "animated": [True]}


class _Interrupted(Exception):
    """comfy.model_management.InterruptProcessingException."""


class _Failure(Exception):
    """An error a test asked for (`fail_next`)."""

    def __init__(self, message: str, exception_type: str):
        super().__init__(message)
        self.exception_type = exception_type


def _format_value(value: Any) -> Any:
    """execution.py format_value."""
    return value if value is None or isinstance(value, (int, float, bool, str)) else str(value)


class _Run:
    """One prompt through execution.py PromptExecutor.execute_async and execute(), with the progress
    messages of comfy_execution/progress.py WebUIProgressHandler and main.py hijack_progress."""

    def __init__(self, state: FakeComfyUI, entry: list):
        self.state = state
        _, self.prompt_id, self.graph, self.extra_data, self.outputs_to_run = entry
        self.nodes = _Graph(state, self.graph)
        self.messages: list[list] = []
        self.outputs: dict[str, dict] = {}
        self.meta: dict[str, dict] = {}
        self.progress: dict[str, dict] = {}
        self.executed: list[str] = []
        self.success = False

    def add_message(self, event: str, data: dict, broadcast: bool) -> None:
        """PromptExecutor.add_message: kept for the history; sent to the prompt's client (or, if broadcast
        and the prompt has none, to everyone)."""
        data = {**data, "timestamp": _now_ms()}
        self.messages.append([event, data])
        if self.state.client_id is not None or broadcast:
            self.state.send(event, data, self.state.client_id)

    def _progress_state(self) -> None:
        """WebUIProgressHandler._send_progress_state: every started node (sid None when no client: all)."""
        nodes = {node_id: {"value": p["value"], "max": p["max"], "state": p["state"], "node_id": node_id,
                           "prompt_id": self.prompt_id, "display_node_id": node_id, "parent_node_id": None,
                           "real_node_id": node_id} for node_id, p in self.progress.items()}
        self.state.send("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, self.state.client_id)

    def _check_interrupt(self) -> None:
        if self.state._interrupt.is_set():
            raise _Interrupted()

    async def _pause(self, seconds: float) -> None:
        """Work that takes `seconds`, cut short by /interrupt."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self.state._interrupt.wait(), timeout=seconds)
            except asyncio.TimeoutError:
                pass
        self._check_interrupt()

    async def _held(self) -> None:
        """While the test holds the prompt: wait for release() or /interrupt."""
        state = self.state
        if not state._gate.is_set():
            gate, interrupt = asyncio.ensure_future(state._gate.wait()), asyncio.ensure_future(state._interrupt.wait())
            try:
                await asyncio.wait({gate, interrupt}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gate.cancel()
                interrupt.cancel()
        self._check_interrupt()

    async def execute(self) -> None:
        state = self.state
        state._interrupt.clear()  # nodes.interrupt_processing(False)
        state.client_id = self.extra_data.get("client_id")
        self.add_message("execution_start", {"prompt_id": self.prompt_id}, broadcast=False)
        self.add_message("execution_cached", {"nodes": [], "prompt_id": self.prompt_id}, broadcast=False)
        order = execution_order(self.graph, self.outputs_to_run, state.object_info)
        samplers = [n for n in order if self.graph[n]["class_type"] in SAMPLERS]
        outputs = [n for n in order if is_output_node(self.graph[n]["class_type"], state.object_info)]
        failure = state._failures.pop(0) if state._failures else None
        fail_at = None
        if failure is not None:
            fail_at = failure[1] if failure[1] in order else (samplers or outputs or order or [None])[0]
        total_steps = sum(self.nodes.steps(n) for n in samplers)
        self.step_delay = state.exec_delay / total_steps if total_steps else 0.0
        self.wait_at = None if total_steps else (outputs or order or [None])[0]
        for node_id in order:
            class_type = self.graph[node_id]["class_type"]
            self.progress[node_id] = {"value": 0.0, "max": 1.0, "state": "running"}  # start_progress
            self._progress_state()
            if state.client_id is not None:
                state.last_node_id = node_id
                state.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id},
                           state.client_id)
            try:
                self._check_interrupt()  # nodes.before_node_execution
                if node_id == fail_at:
                    raise _Failure(failure[0], failure[2])
                ui = await self._run_node(node_id, class_type)
            except _Interrupted:
                self._error(node_id, None)
                break
            except Exception as exc:  # noqa: BLE001 - ComfyUI reports any node exception as execution_error
                self._error(node_id, exc)
                break
            if ui:
                self.outputs[node_id] = ui
                self.meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None,
                                      "real_node_id": node_id}
                if state.client_id is not None:
                    state.send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                            "prompt_id": self.prompt_id}, state.client_id)
            entry = self.progress[node_id]  # finish_progress
            entry["state"], entry["value"] = "finished", entry["max"]
            self._progress_state()
            self.executed.append(node_id)
        else:
            self.success = True
            self.add_message("execution_success", {"prompt_id": self.prompt_id}, broadcast=False)
        state.last_node_id = None

    def _error(self, node_id: str, exc: Exception | None) -> None:
        """PromptExecutor.handle_execution_error."""
        base = {"prompt_id": self.prompt_id, "node_id": node_id, "node_type": self.graph[node_id]["class_type"],
                "executed": list(self.executed)}
        if exc is None:
            self.add_message("execution_interrupted", base, broadcast=True)
            return
        if isinstance(exc, _Failure):
            exception_type = exc.exception_type
        else:
            module = type(exc).__module__
            exception_type = type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"
        inputs = self.graph[node_id].get("inputs") or {}
        current_inputs = {name: [f"<{self.nodes.output_type(v)}>" if _is_link(v) else _format_value(v)]
                          for name, v in inputs.items()}
        self.add_message("execution_error", {
            **base, "exception_message": f"{exc}\n", "exception_type": exception_type,
            "traceback": traceback.format_tb(exc.__traceback__), "current_inputs": current_inputs,
            "current_outputs": []}, broadcast=False)

    async def _run_node(self, node_id: str, class_type: str) -> dict | None:
        state, inputs = self.state, self.graph[node_id].get("inputs") or {}
        if class_type in SAMPLERS:
            steps = self.nodes.steps(node_id)
            for step in range(1, steps + 1):  # the sampler's callback: comfy.utils.ProgressBar.update_absolute
                await self._pause(self.step_delay)
                self.progress[node_id] = {"value": step, "max": steps, "state": "running"}
                self._progress_state()
                state.send("progress", {"value": step, "max": steps, "prompt_id": self.prompt_id, "node": node_id},
                           state.client_id)
                await self._held()
            return None
        if node_id == self.wait_at:
            await self._pause(state.exec_delay)
            await self._held()
        if class_type in FILE_INPUT_CHECKS:  # the file may have gone since POST /prompt
            name = inputs.get(FILE_INPUT_CHECKS[class_type][0])
            path = annotated_path(state, name) if isinstance(name, str) else None
            if path is not None and not path.is_file():
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
            return None
        args = (state, self.prompt_id, node_id, self.graph, self.extra_data)
        if class_type in ("SaveImage", "PreviewImage"):
            shape = self.nodes.media_shape(node_id, "images")
            return await asyncio.to_thread(_save_images, *args, shape, class_type == "PreviewImage")
        if class_type == "SaveWEBM":
            return await asyncio.to_thread(_save_webm, *args, self.nodes.media_shape(node_id, "images"))
        if class_type == "SaveVideo":
            return await asyncio.to_thread(_save_video, *args, self.nodes.media_shape(node_id, "video"))
        if class_type in ("SaveAnimatedWEBP", "SaveAnimatedPNG"):
            shape = self.nodes.media_shape(node_id, "images")
            return await asyncio.to_thread(_save_animated, *args, shape, class_type == "SaveAnimatedWEBP")
        return None


async def _worker(state: FakeComfyUI) -> None:
    """main.py prompt_worker with execution.py PromptQueue.get/task_done."""
    assert state._wake is not None
    while True:
        while not state.pending:
            state._wake.clear()
            await state._wake.wait()
        entry = copy.deepcopy(heapq.heappop(state.pending))
        state.running = entry
        state.queue_updated()
        run = _Run(state, entry)
        await run.execute()
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            entry[3].pop(key, None)
        if len(state.history) > MAXIMUM_HISTORY_SIZE:
            state.history.pop(next(iter(state.history)))
        state.history[entry[1]] = {
            "prompt": entry, "outputs": run.outputs,
            "status": {"status_str": "success" if run.success else "error", "completed": run.success,
                       "messages": run.messages},
            "meta": run.meta}
        state.running = None
        state.queue_updated()
        if state.client_id is not None:
            state.send("executing", {"node": None, "prompt_id": entry[1]}, state.client_id)


async def _publish(state: FakeComfyUI) -> None:
    """server.py publish_loop."""
    assert state._messages is not None
    while True:
        event, data, sid = await state._messages.get()
        await state._deliver(event, data, sid)


# -- routes -------------------------------------------------------------------------------------


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    return json.loads(raw)


def _enqueue(state: FakeComfyUI, entry: list) -> None:
    """PromptQueue.put."""
    heapq.heappush(state.pending, entry)
    state.queue_updated()
    if state._wake is not None:
        state._wake.set()


async def post_prompt(request: web.Request) -> web.Response:
    """server.py post_prompt."""
    state = state_of(request.app)
    try:
        body = await _json_body(request)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response(_error_body("invalid_prompt", "Invalid JSON in request body"), status=400)
    state.prompts.append(body)
    if not isinstance(body, dict):
        return web.json_response(_error_body("no_prompt", "No prompt provided", "No prompt provided"), status=400)
    if "number" in body and _number(body["number"]) is not None:
        number: float | int = float(body["number"])
    else:  # every parsed request takes a number, valid or not (the recording's OK answer is number 2)
        number = -state.number if body.get("front") else state.number
        state.number += 1
    if "prompt" not in body:
        return web.json_response(_error_body("no_prompt", "No prompt provided", "No prompt provided"), status=400)
    graph = body["prompt"]
    errors = validate_graph(graph, state.object_info)
    if errors:
        if errors["error"]["type"] == "prompt_outputs_failed_validation":  # ComfyUI validates every node
            outputs = [nid for nid, node in graph.items() if is_output_node(node["class_type"], state.object_info)]
            for node_id, entry in _file_input_errors(state, graph, outputs).items():
                errors["node_errors"].setdefault(node_id, entry)
        return web.json_response(errors, status=400)
    prompt_id = body.get("prompt_id") if isinstance(body.get("prompt_id"), str) else str(uuid.uuid4())
    extra_data = dict(body.get("extra_data") or {})
    if "client_id" in body:
        extra_data["client_id"] = body["client_id"]
    outputs = [nid for nid, node in graph.items() if is_output_node(node["class_type"], state.object_info)]
    node_errors = _file_input_errors(state, graph, outputs)
    good = [o for o in outputs if not any(o in e["dependent_outputs"] for e in node_errors.values())]
    if not good:  # execution.validate_prompt: details list the failing outputs' own errors (none here)
        return web.json_response({"error": {"type": "prompt_outputs_failed_validation",
                                             "message": "Prompt outputs failed validation", "details": "",
                                             "extra_info": {}}, "node_errors": node_errors}, status=400)
    state.accepted.append(prompt_id)
    _enqueue(state, [number, prompt_id, graph, extra_data, good])
    return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})


async def post_queue(request: web.Request) -> web.Response:
    """server.py post_queue: {"clear": true} empties the pending queue, {"delete": [ids]} drops those
    pending prompts (PromptQueue.wipe_queue / delete_queue_item); the running prompt is not touched."""
    state = state_of(request.app)
    body = await request.json()  # invalid JSON: 500, as ComfyUI
    state.queue_calls.append(body)
    if body.get("clear"):
        state.pending.clear()
        state.queue_updated()
    for prompt_id in body.get("delete") or []:
        for index, entry in enumerate(state.pending):
            if entry[1] == prompt_id:
                if len(state.pending) == 1:
                    state.pending.clear()
                    state.queue_updated()
                else:
                    state.pending.pop(index)
                    heapq.heapify(state.pending)
                state.queue_updated()
                break
    return web.Response(status=200)


async def get_history(request: web.Request) -> web.Response:
    """server.py get_history / PromptQueue.get_history."""
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


async def post_history(request: web.Request) -> web.Response:
    """server.py post_history: clear, or delete some entries."""
    history = state_of(request.app).history
    body = await request.json()
    if body.get("clear"):
        history.clear()
    for prompt_id in body.get("delete") or []:
        history.pop(prompt_id, None)
    return web.Response(status=200)


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
    """server.py post_interrupt: a prompt_id interrupts only that prompt, none interrupts whatever runs."""
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


def _object_info_now(state: FakeComfyUI) -> dict:
    """The answer of a server with these input files: LoadImage's and LoadVideo's lists name them
    (nodes.py LoadImage.INPUT_TYPES: sorted top-level files of the input folder, by content type)."""
    info = state.object_info
    files = sorted(p.name for p in state.input_dir.iterdir() if p.is_file()) if state.input_dir.is_dir() else []
    if not files:
        return info
    info = dict(info)
    lists = {"image": [f for f in files if (mimetypes.guess_type(f, strict=False)[0] or "").startswith("image/")],
             "video": [f for f in files if (mimetypes.guess_type(f, strict=False)[0] or "").startswith("video/")]}
    for class_type, (name, _) in FILE_INPUT_CHECKS.items():
        if class_type == "LoadImageOutput" or class_type not in info:
            continue
        node = info[class_type] = copy.deepcopy(info[class_type])
        spec = (node.get("input", {}).get("required") or {}).get(name)
        if not isinstance(spec, list) or not spec:
            continue
        options = {k: v for k, v in (spec[1] if len(spec) > 1 else {}).items() if k != "x_lists_server_files"}
        names = lists["video" if class_type == "LoadVideo" else "image"]
        if spec[0] == "COMBO":  # a V3 node lists its choices in the options
            spec[:] = ["COMBO", {**options, "options": names}]
        else:
            spec[:] = [names, options]
    return info


async def get_object_info(request: web.Request) -> web.Response:
    return web.json_response(_object_info_now(state_of(request.app)))


async def get_object_info_node(request: web.Request) -> web.Response:
    node_class = request.match_info["node_class"]
    info = _object_info_now(state_of(request.app))
    return web.json_response({node_class: info[node_class]} if node_class in info else {})


async def get_view(request: web.Request) -> web.StreamResponse:
    """server.py view_image, without previews/channels; type=input is refused (400)."""
    state = state_of(request.app)
    if "filename" not in request.query:
        raise web.HTTPNotFound()
    filename = request.query["filename"]
    base: Path | None = None
    for suffix, kind in (("[output]", "output"), ("[input]", "input"), ("[temp]", "temp")):
        if filename.endswith(suffix):
            filename, base = filename[: -len(suffix) - 1], _dir_by_type(state, kind)
            if kind == "input":
                raise web.HTTPBadRequest(text="this fake ComfyUI does not serve its input folder")
    if not filename or filename[0] == "/" or ".." in filename:
        raise web.HTTPBadRequest()
    if base is None:
        kind = request.query.get("type", "output")
        if kind not in ("output", "temp"):
            raise web.HTTPBadRequest(text="this fake ComfyUI serves type=output and type=temp")
        base = _dir_by_type(state, kind)
    root = os.path.abspath(base)
    folder = root
    if "subfolder" in request.query:
        folder = os.path.join(root, request.query["subfolder"])
        if os.path.commonpath((os.path.abspath(folder), root)) != root:
            raise web.HTTPForbidden()
    name = os.path.basename(filename)
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise web.HTTPNotFound()
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type in {"text/html", "text/html-sandboxed", "application/xhtml+xml", "text/javascript", "text/css"}:
        content_type = "application/octet-stream"
    return web.FileResponse(path, headers={"Content-Disposition": f'filename="{name}"', "Content-Type": content_type})


async def post_upload_image(request: web.Request) -> web.Response:
    """server.py upload_image / image_upload: stored as `name` in the type's folder (input by default) under
    `subfolder`; a clash gets "name (1).ext" unless `overwrite` is "true"/"1" — or the same bytes are
    already there (compare_image_hash), which answers the existing name without writing."""
    state = state_of(request.app)
    post = await request.post()
    image, overwrite, kind = post.get("image"), post.get("overwrite"), post.get("type")
    kind = "input" if kind is None else kind
    upload_dir = _dir_by_type(state, kind)
    if upload_dir is None:  # ComfyUI's get_dir_by_type leaves type_dir unbound: an UnboundLocalError
        raise web.HTTPInternalServerError()
    if not isinstance(image, web.FileField):
        if image:  # a plain form field has no .file: AttributeError in ComfyUI
            raise web.HTTPInternalServerError()
        return web.Response(status=400)
    filename = image.filename
    if not filename:
        return web.Response(status=400)
    subfolder = post.get("subfolder", "")
    upload_dir.mkdir(parents=True, exist_ok=True)
    root = os.path.abspath(upload_dir)
    folder = os.path.join(root, os.path.normpath(subfolder))
    filepath = os.path.abspath(os.path.join(folder, filename))
    if os.path.commonpath((root, filepath)) != root:
        return web.Response(status=400)
    os.makedirs(folder, exist_ok=True)
    data = image.file.read()
    stem, ext = os.path.splitext(filename)
    duplicate = False
    if overwrite not in ("true", "1"):
        i = 1
        while os.path.exists(filepath):
            with open(filepath, "rb") as fh:
                if hashlib.sha256(fh.read()).digest() == hashlib.sha256(data).digest():
                    duplicate = True
                    break
            filename = f"{stem} ({i}){ext}"
            filepath = os.path.join(folder, filename)
            i += 1
    if not duplicate:
        with open(filepath, "wb") as fh:
            fh.write(data)
    state.uploads.append({"name": filename, "subfolder": subfolder, "type": kind, "path": Path(filepath),
                          "overwrite": overwrite in ("true", "1"), "duplicate": duplicate, "size": len(data)})
    return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})


async def get_ws(request: web.Request) -> web.WebSocketResponse:
    """server.py websocket_handler: clientId names the session (else a new hex id); "status" with the sid
    first, "executing" again on reconnect while that client's prompt runs, feature flags on request."""
    state = state_of(request.app)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    sid = request.query.get("clientId", "")
    sockets = state.sockets  # restart() gives the state a new table: this one is the old "process"'s
    if sid:
        sockets.pop(sid, None)
    else:
        sid = uuid.uuid4().hex
    sockets[sid] = ws
    try:
        await state.send_now("status", {"status": state.queue_info(), "sid": sid}, sid)
        if state.client_id == sid and state.last_node_id is not None:
            await state.send_now("executing", {"node": state.last_node_id}, sid)
        first = True
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except json.JSONDecodeError:
                continue
            if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                await state.send_now("feature_flags", dict(SERVER_FEATURES), sid)
            first = False
    finally:
        sockets.pop(sid, None)  # as ComfyUI: even when a newer socket took the same sid
    return ws


@web.middleware
async def _record_and_check(request: web.Request, handler: Any) -> web.StreamResponse:
    state = state_of(request.app)
    state.requests.append((request.method, request.path_qs, dict(request.headers)))
    for name, value in state.required_headers.items():
        if request.headers.get(name) != value:
            raise web.HTTPUnauthorized(text="401: Unauthorized")
    return await handler(request)


def create_fake_comfyui(object_info: dict, output_dir: Path, *, exec_delay: float = 0.02,
                        required_headers: Mapping[str, str] | None = None,
                        input_dir: Path | None = None) -> web.Application:
    """An aiohttp app answering like ComfyUI; `required_headers` makes it answer 401 without them;
    `input_dir` is its input folder (uploads, LoadImage), by default output_dir.parent / "input"."""
    app = web.Application(middlewares=[_record_and_check], client_max_size=MAX_UPLOAD_BYTES)
    state = FakeComfyUI(object_info=object_info, output_dir=Path(output_dir), exec_delay=exec_delay,
                        required_headers=dict(required_headers or {}), input_dir=input_dir)
    app[FAKE_COMFYUI] = state

    async def close_sockets(app: web.Application) -> None:
        """aiohttp waits for open websockets when it stops: close them first (ComfyUI's clients reconnect)."""
        for ws in list(state.sockets.values()):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"shutdown")

    async def worker_ctx(app: web.Application) -> AsyncIterator[None]:
        state._start()
        yield
        for task in (state._worker_task, state._publisher_task):
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    app.on_shutdown.append(close_sockets)
    app.cleanup_ctx.append(worker_ctx)
    app.router.add_post("/prompt", post_prompt)
    app.router.add_post("/queue", post_queue)
    app.router.add_get("/history", get_history)
    app.router.add_post("/history", post_history)
    app.router.add_get("/history/{prompt_id}", get_history_id)
    app.router.add_get("/queue", get_queue)
    app.router.add_post("/free", post_free)
    app.router.add_post("/interrupt", post_interrupt)
    app.router.add_post("/upload/image", post_upload_image)
    app.router.add_get("/object_info", get_object_info)
    app.router.add_get("/object_info/{node_class}", get_object_info_node)
    app.router.add_get("/view", get_view)
    app.router.add_get("/ws", get_ws)
    return app
