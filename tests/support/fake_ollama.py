"""A stand-in Ollama server for tests: POST /api/chat, POST /api/generate and GET /api/tags, with
Ollama's request and answer shapes (non-streaming).

The model's answer comes from a function the test supplies, `answer(call) -> str | dict | Response`:
a str is the model's text (message.content / response), a dict is sent as its JSON text, an aiohttp
Response (e.g. `error_response(500, "boom")`) is sent as is. `chat=False` makes /api/chat answer 404
like a server that only has /api/generate; `models` (when given) makes unknown models answer 404 as
Ollama does. Every request that reached a handler is kept in `state_of(app).calls`.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class OllamaCall:
    path: str  # /api/chat or /api/generate
    model: str | None
    prompt: str  # the (last) user message's content, or the generate prompt
    images: list[str]  # base64 images as received
    format: Any
    stream: Any
    headers: dict[str, str]
    body: dict

    @property
    def image_count(self) -> int:
        return len(self.images)


Answer = Callable[[OllamaCall], "str | dict | web.StreamResponse | Awaitable[str | dict | web.StreamResponse]"]


@dataclass
class FakeOllama:
    answer: Answer
    chat: bool = True
    models: list[str] | None = None
    calls: list[OllamaCall] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)  # paths answered 404 because chat=False

    def paths(self) -> list[str]:
        return [c.path for c in self.calls]


FAKE_OLLAMA = web.AppKey("fake_ollama", FakeOllama)


def state_of(app: web.Application) -> FakeOllama:
    return app[FAKE_OLLAMA]


def error_response(status: int, message: str) -> web.Response:
    """An Ollama-style error answer: {"error": message} with `status`."""
    return web.json_response({"error": message}, status=status)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())


async def _read(request: web.Request) -> dict | web.Response:
    try:
        body = json.loads(await request.read())
    except ValueError:
        return error_response(400, "invalid JSON in request body")
    if not isinstance(body, dict):
        return error_response(400, "request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return error_response(400, "model is required")
    return body


async def _respond(state: FakeOllama, call: OllamaCall, wrap: Callable[[str], dict]) -> web.StreamResponse:
    state.calls.append(call)
    if state.models is not None and call.model not in state.models:
        return error_response(404, f"model '{call.model}' not found")
    result = state.answer(call)
    if inspect.isawaitable(result):
        result = await result
    if isinstance(result, web.StreamResponse):
        return result
    text = result if isinstance(result, str) else json.dumps(result)
    return web.json_response({"model": call.model, "created_at": _now(), **wrap(text), "done": True,
                              "done_reason": "stop"})


async def post_chat(request: web.Request) -> web.StreamResponse:
    state = state_of(request.app)
    if not state.chat:
        state.not_found.append(request.path)
        return web.Response(status=404, text="404 page not found")
    body = await _read(request)
    if isinstance(body, web.Response):
        return body
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return error_response(400, "messages must be a list of objects")
    user = [m for m in messages if m.get("role") == "user"]
    last = user[-1] if user else {}
    call = OllamaCall("/api/chat", body["model"], str(last.get("content", "")), list(last.get("images") or []),
                      body.get("format"), body.get("stream"), dict(request.headers), body)
    return await _respond(state, call, lambda text: {"message": {"role": "assistant", "content": text}})


async def post_generate(request: web.Request) -> web.StreamResponse:
    state = state_of(request.app)
    body = await _read(request)
    if isinstance(body, web.Response):
        return body
    call = OllamaCall("/api/generate", body["model"], str(body.get("prompt", "")), list(body.get("images") or []),
                      body.get("format"), body.get("stream"), dict(request.headers), body)
    return await _respond(state, call, lambda text: {"response": text})


async def get_tags(request: web.Request) -> web.Response:
    names = state_of(request.app).models or ["llava:latest"]
    return web.json_response({"models": [
        {"name": n, "model": n, "modified_at": _now(), "size": 0, "digest": "0" * 64,
         "details": {"format": "gguf", "family": "llama", "families": ["llama", "clip"]}}
        for n in names
    ]})


def create_fake_ollama(answer: Answer, *, chat: bool = True, models: list[str] | None = None) -> web.Application:
    app = web.Application()
    app[FAKE_OLLAMA] = FakeOllama(answer=answer, chat=chat, models=models)
    app.router.add_post("/api/chat", post_chat)
    app.router.add_post("/api/generate", post_generate)
    app.router.add_get("/api/tags", get_tags)
    return app
